#!/usr/bin/env bash
# `make bench`: xcam's Grad-CAM against forward-only inference and against pytorch-grad-cam, on a
# DenseNet-121 bundle (torchvision architecture, 18 outputs, random weights), batch 8, from one run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
batch="${BENCH_BATCH:-8}"
seconds="${BENCH_SECONDS:-10}"
bundle="target/bench-models/densenet121"
# BENCH_GRID_ONLY=1: the GPU grid below alone (scripts/gpu-kit.sh, where device time is short).
if [[ -z "${BENCH_GRID_ONLY:-}" ]]; then
if [[ ! -f "$bundle/reference.npz" ]]; then
  python3 models/tools/export.py --arch densenet121 --num-classes 18 --out "$bundle" --reference-synthetic 200
fi
echo "==> xcam-worker bench (batch $batch, ${seconds}s per loop, 11 loops): one model copy, as pytorch-grad-cam runs"
xcam=$(target/release/xcam-worker bench --model "$bundle" --device cpu --batch "$batch" --seconds "$seconds" --replicas 1 --json)
echo "==> xcam-worker bench: the replicas \`xcam-worker run\` starts by default"
auto=$(target/release/xcam-worker bench --model "$bundle" --device cpu --batch "$batch" --seconds "$seconds" --json)
echo "==> pytorch-grad-cam on the same bundle and input"
ref=$(python3 scripts/bench_reference.py --bundle "$bundle" --batch "$batch" --seconds "$seconds")
python3 - "$xcam" "$ref" "$auto" <<'PY'
import json, os, platform, sys, datetime
x, r, a = (json.loads(v) for v in sys.argv[1:4])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print()
print(f"DenseNet-121 (18 outputs), batch {x['batch']}, {x['device']} — {cpu}, {os.cpu_count()} cores, {datetime.date.today()}")
print(f"| {'':52} | {'images/s':>9} | {'vs xcam forward':>15} |")
print(f"|{'-'*54}|{'-'*11}|{'-'*17}|")
one = f"1 copy × {x['threads']} threads"
rows = [
    (f"xcam forward only ({one})", x["forward_images_per_s"]),
    (f"xcam Grad-CAM ({one})", x["gradcam_images_per_s"]),
    (f"pytorch-grad-cam GradCAM ({r['threads']} threads)", r["gradcam_images_per_s"]),
    (f"torch forward only, Python ({r['threads']} threads)", r["forward_images_per_s"]),
    (f"xcam Grad-CAM, worker default ({a['replicas']} copies × {a['threads']} threads)", a["gradcam_images_per_s"]),
]
for name, v in rows:
    print(f"| {name:52} | {v:9.1f} | {v / x['forward_images_per_s']:14.2f}x |")
print()
ood = "with the out-of-distribution score" if x["ood_score"] else "the bundle has no reference"
print(f"Every method and setting, xcam, {one} ({ood} unless said):")
print(f"| {'':52} | {'images/s':>9} | {'vs forward':>15} |")
print(f"|{'-'*54}|{'-'*11}|{'-'*17}|")
for l in x["loops"]:
    print(f"| {l['name']:52} | {l['images_per_s']:9.1f} | {l['ratio']:14.2f}x |")
print()
target = {l["name"]: l["ratio"] for l in x["loops"]}
for m in ["gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam"]:
    print(f"{m + ' / forward-only:':32} {target[m]:.2f}  (target >= 0.9, faithfulness off)")
if x["ood_score"]:
    cost = 1 - target[x["method"]] / target[x["method"] + ", no OOD score"]
    print(f"{'OOD score cost:':32} {100 * cost:.1f} %  (target < 5 %)")
print()
print(f"Grad-CAM / forward-only (xcam, 1 copy):       {x['gradcam_images_per_s'] / x['forward_images_per_s']:.2f}  (target >= 0.9)")
print(f"Grad-CAM / forward-only (xcam, default):      {a['gradcam_images_per_s'] / a['forward_images_per_s']:.2f}")
print(f"xcam Grad-CAM / pytorch-grad-cam, like for like: {x['gradcam_images_per_s'] / r['gradcam_images_per_s']:.2f}  (target >= 2.5)")
print(f"xcam worker default / pytorch-grad-cam:          {a['gradcam_images_per_s'] / r['gradcam_images_per_s']:.2f}")
PY
fi

# On a GPU: DenseNet-121 at 224 and 512 px, batch 1 to 64, fp32 and bf16 — forward only, xcam
# Grad-CAM and pytorch-grad-cam on the same GPU, one model copy each, in one run.
# BENCH_GRID_DEVICE=cpu runs the same grid on the CPU (slowly), to try the grid without a GPU.
grid_device="${BENCH_GRID_DEVICE:-}"
if [[ -z "$grid_device" ]] && python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  grid_device=cuda:0
fi
if [[ -z "$grid_device" ]]; then
  echo
  echo "No GPU here: the GPU grid (DenseNet-121 at 224 and 512 px, batch 1-64, fp32 and bf16) is not yet measured on a GPU."
  exit 0
fi
grid_seconds="${BENCH_GRID_SECONDS:-3}"
grid="target/bench-grid.jsonl"; : > "$grid"
for size in ${BENCH_GRID_SIZES:-224 512}; do
  # No reference: the grid compares maps alone (the OOD score's cost is in the table above).
  b="target/bench-models/densenet121-${size}px"
  [[ -f "$b/model.toml" ]] || python3 models/tools/export.py --arch densenet121 --num-classes 18 --size "$size" --out "$b"
  for precision in fp32 bf16; do
    for batch in ${BENCH_GRID_BATCHES:-1 2 4 8 16 32 64}; do
      echo "==> grid: ${size} px, $precision, batch $batch on $grid_device"
      x=$(target/release/xcam-worker bench --model "$b" --device "$grid_device" --precision "$precision" --batch "$batch" \
            --seconds "$grid_seconds" --replicas 1 --headline --json)
      r=$(python3 scripts/bench_reference.py --bundle "$b" --batch "$batch" --seconds "$grid_seconds" \
            --device "${grid_device%%:*}" --precision "$precision")
      echo "{\"size\": $size, \"xcam\": $x, \"ref\": $r}" >> "$grid"
    done
  done
done
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
cuda=$(python3 -c 'import torch; print(torch.version.cuda)' 2>/dev/null || true)
python3 - "$grid" "$grid_device" "${gpu:-no GPU}" "$cuda" <<'PY'
import datetime, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print(f"DenseNet-121 (18 outputs) on {sys.argv[2]}: {sys.argv[3]}, CUDA {sys.argv[4]}, {datetime.date.today()}; one model copy")
print(f"| {'px':>4} | {'precision':9} | {'batch':>5} | {'forward/s':>10} | {'xcam CAM/s':>10} | {'pgc CAM/s':>10} | {'xcam/fwd':>8} | {'xcam/pgc':>8} |")
print(f"|{'-'*6}|{'-'*11}|{'-'*7}|{'-'*12}|{'-'*12}|{'-'*12}|{'-'*10}|{'-'*10}|")
worst_fwd, worst_pgc = float("inf"), float("inf")
for r in rows:
    x, p = r["xcam"], r["ref"]
    fwd, cam, pgc = x["forward_images_per_s"], x["gradcam_images_per_s"], p["gradcam_images_per_s"]
    worst_fwd, worst_pgc = min(worst_fwd, cam / fwd), min(worst_pgc, cam / pgc)
    print(f"| {r['size']:>4} | {x['precision']:9} | {x['batch']:>5} | {fwd:10.1f} | {cam:10.1f} | {pgc:10.1f} | {cam / fwd:7.2f}x | {cam / pgc:7.2f}x |")
print()
print(f"lowest Grad-CAM / forward-only over the grid:     {worst_fwd:.2f}  (target >= 0.9 on a GPU)")
print(f"lowest xcam / pytorch-grad-cam, like for like:    {worst_pgc:.2f}  (target >= 3 on a GPU)")
PY
