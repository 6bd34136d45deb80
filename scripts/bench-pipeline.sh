#!/usr/bin/env bash
# `make bench-pipeline`: the whole pipeline against the engine alone, from one run.
#   1. The demo bundle (an engine fast enough to stand in for a GPU): 8 000 synthetic radiographs
#      through producer → Redis → one worker → Postgres, with the worker's Postgres statements
#      and Redis round trips per image. (At 2 000 images/s a 3 000-image run lasts a second and
#      a half, and its first and last batches weigh on it.)
#   2. DenseNet-121: 500 radiographs, batch 8, the same way.
#   3. A worker's resident memory over 100 000 images (BENCH_MEMORY_IMAGES; BENCH_MEMORY_BATCHES
#      archives of them at once), demo bundle.
#   4. The producer's peak memory while it ingests a 1 GiB ZIP.
# Each engine figure is `xcam-worker bench` for the same bundle, batch size and replicas, run
# just before and just after its pipeline: on a shared machine a noisy neighbour during one of
# them shows as a gap between the two, and the pipeline is held to their mean.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
: "${DATABASE_URL:?run through make bench-pipeline}" "${REDIS_URL:?run through make bench-pipeline}"
work="$root/target/bench-pipeline"
models="$root/target/bench-models"
rm -rf "$work"; mkdir -p "$work/models"
[[ -f "$models/densenet121/model.toml" ]] || python3 models/tools/export.py --arch densenet121 --num-classes 18 --out "$models/densenet121"
ln -s "$models/densenet121" "$work/models/densenet121"
ln -s "$root/models/demo" "$work/models/demo"

psql_() { PGOPTIONS=--client-min-messages=warning psql "$DATABASE_URL" -qtAX "$@"; }
if [[ "$(psql_ -c 'SHOW shared_preload_libraries')" != *pg_stat_statements* ]]; then
  echo "Postgres was started without pg_stat_statements, which counts the worker's statements:" >&2
  echo "restart it with 'make down' and run 'make bench-pipeline' again." >&2
  exit 1
fi
psql_ -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'
# The worker connects as a role of its own, so its statements are counted apart from the
# producer's (which answers the client's polls meanwhile).
psql_ -c "DO \$\$ BEGIN CREATE ROLE xcam_bench_worker LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" \
      -c "GRANT $(psql_ -c 'SELECT current_user') TO xcam_bench_worker"
worker_db=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p._replace(netloc="xcam_bench_worker@" + p.netloc.rsplit("@", 1)[-1]).geturl())' "$DATABASE_URL")
worker_statements() {
  psql_ -c "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = 'xcam_bench_worker'"
}

prefix="bench$(date +%s)"
export XCAM_QUEUE_PREFIX="$prefix" XCAM_BLOB_URL="file://$work/blobs" XCAM_MODELS_DIR="$work/models"
# BENCH_S3=1: the blobs on the services' S3 server instead of a local directory.
if [[ -n "${BENCH_S3:-}" ]]; then
  : "${XCAM_S3_ENDPOINT:?BENCH_S3 needs the S3 server of make services: run through make bench-pipeline}"
  export XCAM_BLOB_URL="s3://xcam/$prefix" AWS_ENDPOINT="$XCAM_S3_ENDPOINT" AWS_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID="$XCAM_S3_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$XCAM_S3_SECRET_ACCESS_KEY" AWS_ALLOW_HTTP=true
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); metrics_port=$(free_port)
api="http://127.0.0.1:$port"
# Every request answers to a token: an admin of the project `bench`, made for this run.
. scripts/bench-common.sh
XCAM_BIND="127.0.0.1:$port" target/release/xcam serve > "$work/api.log" 2>&1 & api_pid=$!
trap 'kill $api_pid ${worker_pid:-} 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fsS "$api/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
round_trips() { curl -fsS "http://127.0.0.1:$metrics_port/metrics" | awk '$1 == "xcam_redis_round_trips_total" {print $2}'; }

# pipeline NAME MODEL IMAGES BATCH: one run, its figures as a JSON line on stdout.
pipeline() {
  local name=$1 model=$2 images=$3 batch=$4 dir="$work/$1"
  mkdir -p "$dir"
  # The set is drawn once per size (synth.py is deterministic, and slow: a minute a 3 000).
  local drawn="$root/target/bench-images/$images.zip"
  if [[ ! -f "$drawn" ]]; then
    echo "==> $name: drawing $images radiographs" >&2
    mkdir -p "${drawn%/*}"
    python3 - "$dir" "$images" "$drawn" <<'PY'
import sys, zipfile
from pathlib import Path
sys.path.insert(0, "models/tools")
import synth
out = Path(sys.argv[1]); n = int(sys.argv[2]); drawn = Path(sys.argv[3])
synth.write_set(out / "images", seed=31337, count=n, sizes=((512, 512), (480, 400), (448, 448)))
with zipfile.ZipFile(drawn.with_suffix(".part"), "w", zipfile.ZIP_STORED) as z:
    for f in sorted((out / "images").glob("cxr_*")):
        z.write(f, f.name)
drawn.with_suffix(".part").rename(drawn)
PY
  fi
  ln -s "$drawn" "$dir/images.zip"
  echo "==> $name: engine alone (before)" >&2
  target/release/xcam-worker bench --model "$model" --device cpu --batch "$batch" --seconds 10 --headline --json > "$dir/engine_before.json"
  DATABASE_URL="$worker_db" target/release/xcam-worker run --model "$model" --device cpu --max-batch "$batch" \
    --health-bind "127.0.0.1:$metrics_port" > "$dir/worker.log" 2>&1 & worker_pid=$!
  for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  local statements_before trips_before start end out id
  statements_before=$(worker_statements); trips_before=$(round_trips)
  echo "==> $name: pipeline, $images images, one worker, batch $batch" >&2
  start=$(date +%s.%N)
  # One long-lived client follows the batch, as a user would, rather than a process per poll.
  out=$(XCAM_URL="$api" target/release/xcam submit --wait --model "$model" "$dir/images.zip") || [[ $? == 3 ]]
  end=$(date +%s.%N)
  local statements=$(( $(worker_statements) - statements_before ))
  local trips=$(( $(round_trips) - trips_before ))
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" > "$dir/metrics.txt"
  kill $worker_pid; wait $worker_pid 2>/dev/null || true; unset worker_pid
  id=$(sed -n 's/^batch \([0-9a-f-]*\):.*/\1/p' <<<"$out" | head -1)
  get "$api/v1/batches/$id" > "$dir/view.json"
  echo "==> $name: engine alone (after)" >&2
  target/release/xcam-worker bench --model "$model" --device cpu --batch "$batch" --seconds 10 --headline --json > "$dir/engine_after.json"
  # Its planes go with it (on S3 nothing else would remove them).
  get -X DELETE "$api/v1/batches/$id" >/dev/null
  python3 - "$dir" "$name" "$start" "$end" "$statements" "$trips" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
view, before, after = (json.loads((d / f).read_text()) for f in ("view.json", "engine_before.json", "engine_after.json"))
metrics = {}
for l in (d / "metrics.txt").read_text().splitlines():
    if l and not l.startswith("#"):
        name, value = l.rsplit(" ", 1)
        metrics[name.split("{")[0]] = metrics.get(name.split("{")[0], 0) + float(value)
batch = metrics.get("xcam_worker_dynamic_batch_size_sum", 0) / max(metrics.get("xcam_worker_dynamic_batch_size_count", 0), 1)
print(json.dumps(dict(name=sys.argv[2], view=view, before=before, after=after, wall=float(sys.argv[4]) - float(sys.argv[3]),
                      statements=int(sys.argv[5]), round_trips=int(sys.argv[6]), mean_batch=batch)))
PY
}

runs="$work/runs.jsonl"
pipeline demo demo "${BENCH_DEMO_IMAGES:-8000}" "${BENCH_DEMO_BATCH:-32}" >> "$runs"
# BENCH_QUICK=1: the demo pipeline only.
quick="${BENCH_QUICK:-}"
[[ -n "$quick" ]] || pipeline densenet densenet121 "${BENCH_IMAGES:-500}" "${BENCH_BATCH:-8}" >> "$runs"

# A worker's memory over a long run: sampled while it explains $BENCH_MEMORY_IMAGES small images
# (distinct, so none is deduplicated), demo bundle. BENCH_MEMORY_BATCHES=N uploads N such
# archives at once (N × the images, each archive within the producer's 100 000 entries).
memory_images="${BENCH_MEMORY_IMAGES:-100000}"
memory_batches="${BENCH_MEMORY_BATCHES:-1}"
[[ -z "$quick" ]] || memory_images=0
: > "$work/memory.tsv"; memory_peak=0; before=0; peak=0; zip_bytes=0
if (( memory_images > 0 )); then
echo "==> memory: drawing $memory_batches × $memory_images images"
for k in $(seq 0 $((memory_batches - 1))); do
python3 - "$work/memory-$k.zip" "$memory_images" "$k" <<'PY'
import sys, zipfile, zlib, struct
import numpy as np
rng = np.random.default_rng(11)
def png(pixels):
    h, w = pixels.shape
    raw = b"".join(b"\0" + row.tobytes() for row in pixels)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
base = rng.integers(0, 256, (96, 96), dtype=np.uint8)
first = int(sys.argv[3]) * int(sys.argv[2])
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    for i in range(int(sys.argv[2])):
        n = first + i
        img = base.copy(); img.flat[i % img.size] ^= 1 + (i // img.size) % 255; img[0, :4] = np.frombuffer(struct.pack(">I", n), np.uint8)
        z.writestr(f"m_{i:06d}.png", png(img))
PY
done
DATABASE_URL="$worker_db" target/release/xcam-worker run --model demo --device cpu --max-batch 32 \
  --health-bind "127.0.0.1:$metrics_port" > "$work/memory-worker.log" 2>&1 & worker_pid=$!
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
uploads=()
for k in $(seq 0 $((memory_batches - 1))); do
  get -F model=demo -F file=@"$work/memory-$k.zip" "$api/v1/batches" | json 'd["id"]' > "$work/memory-$k.batch" & uploads+=($!)
done
# Every 2 s: images explained (the worker's own count), its resident set, what the allocator's
# heaps hold (KiB, as /proc says) and its threads. A resident set that climbs over a level heap
# is free memory the allocator keeps, not memory the worker keeps.
while :; do
  metrics=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics")
  done_count=$(awk '$1 ~ /^xcam_worker_images_total/ { n += $2 } END { printf "%d", n }' <<<"$metrics")
  heap=$(awk '$1 == "xcam_worker_heap_in_use_bytes" { printf "%d", $2 / 1024 }' <<<"$metrics")
  echo -e "$done_count\t$(awk '/^(VmRSS|Threads):/ { printf "%s\t", $2 }' /proc/$worker_pid/status)${heap:-0}" >> "$work/memory.tsv"
  (( done_count >= memory_batches * memory_images )) && break
  sleep 2
done
wait "${uploads[@]}"
memory_peak=$(awk '/^VmHWM:/ {print $2}' /proc/$worker_pid/status)
kill $worker_pid; wait $worker_pid 2>/dev/null || true; unset worker_pid
for k in $(seq 0 $((memory_batches - 1))); do get -X DELETE "$api/v1/batches/$(cat "$work/memory-$k.batch")" >/dev/null; done

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
# No worker runs now: these jobs are only ingested, then the batch is deleted.
big=$(get -F model=densenet121 -F file=@"$work/big.zip" "$api/v1/batches" | json 'd["id"]')
while [[ "$(get "$api/v1/batches/$big" | json 'd["status"]')" == ingesting ]]; do sleep 0.5; done
get -X DELETE "$api/v1/batches/$big" >/dev/null
peak=$(rss VmHWM)
zip_bytes=$(stat -c %s "$work/big.zip")
fi

python3 - "$before" "$peak" "$zip_bytes" "$work/memory.tsv" "$memory_peak" "$runs" <<'PY'
import json, sys, os, datetime
before, peak, zip_bytes = (int(a) for a in sys.argv[1:4])
memory = [tuple(int(v) for v in l.split()) for l in open(sys.argv[4]) if len(l.split()) == 4]
memory_peak = int(sys.argv[5])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print()
store = "S3 (the services' server)" if os.environ["XCAM_BLOB_URL"].startswith("s3://") else "a local directory"
print(f"{cpu}, {os.cpu_count()} cores, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; blobs in {store}")
targets = {"demo": 0.6, "densenet": 0.9}
for line in open(sys.argv[6]):
    r = json.loads(line)
    view, engine, after = r["view"], r["before"], r["after"]
    n = view["counts"]["succeeded"]
    steady = view["throughput_per_s"]
    fwd = (engine["forward_images_per_s"] + after["forward_images_per_s"]) / 2
    cam = (engine["gradcam_images_per_s"] + after["gradcam_images_per_s"]) / 2
    print()
    print(f"{engine['model']} bundle, batch {engine['batch']}, {engine['device']} {engine['precision']}, "
          f"{engine['replicas']} replica(s) × {engine['threads']} thread(s)")
    print(f"| {'':52} | {'images/s':>11} |")
    print(f"|{'-'*54}|{'-'*13}|")
    print(f"| {'engine alone: forward only (mean of before/after)':52} | {fwd:11.1f} |")
    pair = f"{engine['gradcam_images_per_s']:.1f}/{after['gradcam_images_per_s']:.1f}"
    print(f"| {'engine alone: Grad-CAM (before/after)':52} | {pair:>11} |")
    print(f"| {'engine alone: Grad-CAM (mean)':52} | {cam:11.1f} |")
    print(f"| {f'pipeline, first start to last finish ({n} images)':52} | {steady:11.1f} |")
    print(f"| {'pipeline, upload to batch done':52} | {n / r['wall']:11.1f} |")
    print(f"pipeline / engine Grad-CAM: {steady / cam:.2f} (target >= {targets.get(r['name'], 0.9)}); "
          f"with upload and ingestion: {n / r['wall'] / cam:.2f}")
    print(f"mean dynamic batch in the pipeline: {r['mean_batch']:.1f} of {engine['batch']}")
    print(f"worker per image: {r['statements'] / max(n, 1):.2f} Postgres statements, "
          f"{r['round_trips'] / max(n, 1):.2f} Redis round trips (targets <= 1)")
print()
if zip_bytes:
    print(f"producer RSS: {before / 1024:.0f} MiB before, {peak / 1024:.0f} MiB peak while ingesting a {zip_bytes / 2**30:.2f} GiB ZIP")
if memory:
    total = memory[-1][0]
    at = lambda share: next((m[1] for m in memory if m[0] >= share * total), memory[-1][1])
    print(f"worker RSS over {total} images (demo, batch 32): {at(0.1) / 1024:.0f} MiB at 10 %, "
          f"{at(0.5) / 1024:.0f} MiB at 50 %, {memory[-1][1] / 1024:.0f} MiB at the end, peak {memory_peak / 1024:.0f} MiB")
    # Flat means no trend once warm: the least-squares slope of the samples past 10 %, and
    # their range (the allocator's releases make a sawtooth).
    warm = [m for m in memory if m[0] >= 0.1 * total]
    def trend(what, column):
        points = [(m[0], m[column]) for m in warm]
        mn = sum(n for n, _ in points) / len(points); mv = sum(v for _, v in points) / len(points)
        slope = sum((n - mn) * (v - mv) for n, v in points) / max(sum((n - mn) ** 2 for n, _ in points), 1)
        print(f"  {what} past 10 %: {min(v for _, v in points) / 1024:.0f}–{max(v for _, v in points) / 1024:.0f} MiB, "
              f"trend {slope * 10000 / 1024:+.1f} MiB per 10 000 images")
    if len(warm) >= 3:
        trend("resident set", 1)
        trend("heaps in use", 3)
        print(f"  threads past 10 %: {min(m[2] for m in warm)}–{max(m[2] for m in warm)}")
PY
bench_done
