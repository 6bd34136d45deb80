#!/usr/bin/env bash
# `make bench`: xcam's Grad-CAM against forward-only inference and against pytorch-grad-cam, on a
# DenseNet-121 bundle (torchvision architecture, 18 outputs, random weights), batch 8, from one run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
batch="${BENCH_BATCH:-8}"
seconds="${BENCH_SECONDS:-10}"
bundle="target/bench-models/densenet121"
if [[ ! -f "$bundle/model.toml" ]]; then
  python3 models/tools/export.py --arch densenet121 --num-classes 18 --out "$bundle"
fi
echo "==> xcam-worker bench (batch $batch, ${seconds}s per loop)"
xcam=$(target/release/xcam-worker bench --model "$bundle" --device cpu --batch "$batch" --seconds "$seconds" --json)
echo "==> pytorch-grad-cam on the same bundle and input"
ref=$(python3 scripts/bench_reference.py --bundle "$bundle" --batch "$batch" --seconds "$seconds")
python3 - "$xcam" "$ref" <<'PY'
import json, os, platform, sys, datetime
x, r = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print()
print(f"DenseNet-121 (18 outputs), batch {x['batch']}, {x['device']}, {x['threads']} threads — {cpu}, {os.cpu_count()} cores, {datetime.date.today()}")
print(f"| {'':34} | {'images/s':>9} | {'vs xcam forward':>15} |")
print(f"|{'-'*36}|{'-'*11}|{'-'*17}|")
rows = [
    ("xcam forward only", x["forward_images_per_s"]),
    ("xcam Grad-CAM", x["gradcam_images_per_s"]),
    ("pytorch-grad-cam GradCAM", r["gradcam_images_per_s"]),
    ("torch forward only (Python)", r["forward_images_per_s"]),
]
for name, v in rows:
    print(f"| {name:34} | {v:9.1f} | {v / x['forward_images_per_s']:14.2f}x |")
print()
print(f"Grad-CAM / forward-only (xcam):     {x['gradcam_images_per_s'] / x['forward_images_per_s']:.2f}  (target >= 0.9)")
print(f"xcam Grad-CAM / pytorch-grad-cam:   {x['gradcam_images_per_s'] / r['gradcam_images_per_s']:.2f}  (target >= 2.5)")
PY
