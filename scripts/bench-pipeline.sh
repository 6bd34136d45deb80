#!/usr/bin/env bash
# `make bench-pipeline`: the whole pipeline against the engine alone, from one run.
#   1. 500 synthetic radiographs through producer → Redis → one worker → Postgres, DenseNet-121
#      bundle, batch 8; beside `xcam-worker bench` for the same bundle, batch size and replicas.
#   2. The producer's peak memory while it ingests a 1 GiB ZIP.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
: "${DATABASE_URL:?run through make bench-pipeline}" "${REDIS_URL:?run through make bench-pipeline}"
images="${BENCH_IMAGES:-500}"
batch="${BENCH_BATCH:-8}"
work="$root/target/bench-pipeline"
models="$root/target/bench-models"
rm -rf "$work"; mkdir -p "$work"
[[ -f "$models/densenet121/model.toml" ]] || python3 models/tools/export.py --arch densenet121 --num-classes 18 --out "$models/densenet121"

echo "==> drawing $images radiographs"
python3 - "$work" "$images" <<'PY'
import sys, zipfile
from pathlib import Path
sys.path.insert(0, "models/tools")
import synth
out = Path(sys.argv[1]); n = int(sys.argv[2])
synth.write_set(out / "images", seed=31337, count=n, sizes=((512, 512), (480, 400), (448, 448)))
with zipfile.ZipFile(out / "images.zip", "w", zipfile.ZIP_STORED) as z:
    for f in sorted((out / "images").glob("cxr_*")):
        z.write(f, f.name)
PY

prefix="bench$(date +%s)"
export XCAM_QUEUE_PREFIX="$prefix" XCAM_BLOB_URL="file://$work/blobs" XCAM_MODELS_DIR="$models"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port"
# Every request answers to a token: an admin of the project `bench`, made for this run.
. scripts/bench-common.sh
XCAM_BIND="127.0.0.1:$port" target/release/xcam serve > "$work/api.log" 2>&1 & api_pid=$!
trap 'kill $api_pid ${worker_pid:-} 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fsS "$api/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
# The engine alone, before and after the pipeline: on a shared machine a noisy neighbour during
# one of them shows as a gap between the two, and the pipeline is held to their mean.
echo "==> engine alone (before): xcam-worker bench, same bundle, batch size and replicas"
engine_before=$(target/release/xcam-worker bench --model densenet121 --device cpu --batch "$batch" --seconds 10 --json)
target/release/xcam-worker run --model densenet121 --device cpu --max-batch "$batch" > "$work/worker.log" 2>&1 & worker_pid=$!
for _ in $(seq 300); do [[ "$(get "$api/v1/workers")" != "[]" ]] && break; sleep 0.2; done

echo "==> pipeline: $images images, one worker, batch $batch"
start=$(date +%s.%N)
# One long-lived client follows the batch, as a user would, rather than a process per poll.
out=$(XCAM_URL="$api" target/release/xcam submit --wait --model densenet121 "$work/images.zip") || [[ $? == 3 ]]
end=$(date +%s.%N)
id=$(sed -n 's/^batch \([0-9a-f-]*\):.*/\1/p' <<<"$out" | head -1)
view=$(get "$api/v1/batches/$id")
kill $worker_pid; wait $worker_pid 2>/dev/null || true; unset worker_pid

echo "==> engine alone (after)"
engine_after=$(target/release/xcam-worker bench --model densenet121 --device cpu --batch "$batch" --seconds 10 --json)

echo "==> producer memory while ingesting a 1 GiB ZIP"
python3 - "$work/big.zip" <<'PY'
import sys, zipfile, numpy as np
from io import BytesIO
from PIL import Image
rng = np.random.default_rng(7)
buf = BytesIO()
Image.fromarray(rng.integers(0, 65535, (2048, 2048), dtype=np.uint16)).save(buf, format="PNG")
png = buf.getvalue()
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    i = 0
    while z.fp.tell() < (1 << 30):
        z.writestr(f"big_{i:04d}.png", png); i += 1
PY
rss() { awk '/^'"$1"':/ {print $2}' /proc/$api_pid/status; }
before=$(rss VmRSS)
# The worker has stopped by now: these jobs are only ingested, then the batch is deleted.
big=$(get -F model=densenet121 -F file=@"$work/big.zip" "$api/v1/batches" | json 'd["id"]')
while [[ "$(get "$api/v1/batches/$big" | json 'd["status"]')" == ingesting ]]; do sleep 0.5; done
get -X DELETE "$api/v1/batches/$big" >/dev/null
peak=$(rss VmHWM)
zip_bytes=$(stat -c %s "$work/big.zip")

python3 - "$view" "$engine_before" "$engine_after" "$start" "$end" "$before" "$peak" "$zip_bytes" <<'PY'
import json, sys, os, datetime
view, engine, after = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
start, end, before, peak, zip_bytes = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
n = view["counts"]["succeeded"]
wall = end - start
steady = view["throughput_per_s"]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print()
print(f"DenseNet-121 (18 outputs), batch {engine['batch']}, {engine['device']}, {engine['replicas']} replica(s) × {engine['threads']} thread(s) — {cpu}, {os.cpu_count()} cores, {datetime.date.today()}")
print(f"| {'':52} | {'images/s':>9} |")
print(f"|{'-'*54}|{'-'*11}|")
fwd = (engine['forward_images_per_s'] + after['forward_images_per_s']) / 2
cam = (engine['gradcam_images_per_s'] + after['gradcam_images_per_s']) / 2
print(f"| {'engine alone: forward only (mean of before/after)':52} | {fwd:9.1f} |")
pair = f"{engine['gradcam_images_per_s']:.1f}/{after['gradcam_images_per_s']:.1f}"
print(f"| {'engine alone: Grad-CAM (before/after)':52} | {pair:>9} |")
print(f"| {'engine alone: Grad-CAM (mean)':52} | {cam:9.1f} |")
print(f"| {f'pipeline, first start to last finish ({n} images)':52} | {steady:9.1f} |")
print(f"| {'pipeline, upload to batch done':52} | {n / wall:9.1f} |")
print()
print(f"pipeline / engine Grad-CAM: {steady / cam:.2f} (target >= 0.9); with upload and ingestion: {n / wall / cam:.2f}")
print(f"producer RSS: {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB peak while ingesting a {zip_bytes / 2**30:.2f} GiB ZIP")
PY
bench_done
