#!/usr/bin/env bash
# `make bench-redis`: what Redis holds around a 10 000-image batch, from one run — an empty queue
# with two workers registered, the batch's jobs all queued, and the batch done once a sweep has
# run. Finished jobs must leave nothing behind but the workers' registrations.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
: "${DATABASE_URL:?run through make bench-redis}" "${REDIS_URL:?run through make bench-redis}"
images="${BENCH_IMAGES:-10000}"
work="$root/target/bench-redis"
rm -rf "$work"; mkdir -p "$work"

echo "==> drawing $images distinct 64×64 radiograph stand-ins"
python3 - "$work/images.zip" "$images" <<'PY'
import sys, zipfile, io, numpy as np
from PIL import Image
rng = np.random.default_rng(2026)
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    for i in range(int(sys.argv[2])):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
        z.writestr(f"img_{i:05d}.png", buf.getvalue())
PY

prefix="redis$(date +%s)"
export XCAM_QUEUE_PREFIX="$prefix" XCAM_BLOB_URL="file://$work/blobs" XCAM_MODELS_DIR="$root/models" XCAM_SWEEP_EVERY=2s
. scripts/bench-common.sh
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port"
export XCAM_URL="$api"
XCAM_BIND="127.0.0.1:$port" target/release/xcam serve > "$work/api.log" 2>&1 & pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -fsS "$api/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
for w in a b; do
  target/release/xcam-worker run --model demo --device cpu --replicas 1 > "$work/worker-$w.log" 2>&1 & pids+=($!)
done
for _ in $(seq 300); do [[ "$(get "$api/v1/workers" | json 'len(d)')" == 2 ]] && break; sleep 0.2; done

rcli() { redis-cli -u "$REDIS_URL" "$@"; }
# keys of this run, the bytes they take (MEMORY USAGE), and the server's used_memory
measure() {
  local keys bytes used
  keys=$(rcli --scan --pattern "$prefix.*" | wc -l)
  bytes=$(rcli --scan --pattern "$prefix.*" | sed 's/^/MEMORY USAGE /' | rcli | awk '{s += $1} END {print s + 0}')
  used=$(rcli info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  echo "$keys $bytes $used"
}
empty=$(measure)
echo "==> $images images through two workers"
id=$(target/release/xcam submit --model demo "$work/images.zip" | sed -n 's/^batch \([0-9a-f-]*\).*/\1/p' | head -1)
while [[ "$(get "$api/v1/batches/$id" | json 'd["status"]')" == ingesting ]]; do sleep 0.2; done
queued=$(measure)
while true; do
  status=$(get "$api/v1/batches/$id" | json 'd["status"]')
  [[ "$status" == succeeded || "$status" == completed_with_errors || "$status" == failed ]] && break
  sleep 0.5
done
for _ in $(seq 60); do [[ -z "$(rcli --scan --pattern "$prefix.*:meta:*" | head -1)" ]] && break; sleep 0.5; done
done_=$(measure)
succeeded=$(get "$api/v1/batches/$id" | json 'd["counts"]["succeeded"]')
remaining=$(rcli --scan --pattern "$prefix.*" | sort | tr '\n' ' ')

python3 - "$empty" "$queued" "$done_" "$succeeded" "$images" <<'PY'
import sys, os, datetime
rows = [("empty queue, two workers registered", sys.argv[1]), ("all jobs queued", sys.argv[2]), ("batch done, after one sweep", sys.argv[3])]
print()
print(f"Redis around a {sys.argv[5]}-image batch ({sys.argv[4]} succeeded) — {os.cpu_count()} cores, {datetime.date.today()}")
print(f"| {'':38} | {'keys':>6} | {'bytes of its keys':>17} | {'used_memory':>12} |")
print(f"|{'-'*40}|{'-'*8}|{'-'*19}|{'-'*14}|")
base = None
for name, m in rows:
    keys, size, used = (int(x) for x in m.split())
    print(f"| {name:38} | {keys:6} | {size:17,} | {used:12,} |")
e, d = [tuple(int(x) for x in m.split()) for m in (sys.argv[1], sys.argv[3])]
print()
print(f"after / empty: {d[0] - e[0]:+d} keys, {d[1] - e[1]:+,} bytes of its keys, used_memory {(d[2] - e[2]) / 2**20:+.2f} MiB")
PY
echo "keys left: $remaining"
bench_done
