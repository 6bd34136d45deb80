#!/usr/bin/env bash
# `make bench`: xcam's Grad-CAM against forward-only inference and against pytorch-grad-cam, on a
# DenseNet-121 bundle (torchvision architecture, 18 outputs, random weights), batch 8, from one run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
batch="${BENCH_BATCH:-8}"
seconds="${BENCH_SECONDS:-10}"
bundle="target/bench-models/densenet121"
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
