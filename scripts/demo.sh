#!/usr/bin/env bash
# `make demo`: the main job end to end on the private Redis and Postgres — start the API and one
# worker, make a project and an admin token for it, submit the demo sample archive with that
# token, watch it run, export the CSV report.
# The producer and worker keep running afterwards; `make down` stops everything.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
run="$root/.xcam/run"
mkdir -p "$run"
: "${DATABASE_URL:?run through make demo}" "${REDIS_URL:?run through make demo}"
export XCAM_BLOB_URL="${XCAM_BLOB_URL:-file://$root/.xcam/blobs}"
port_file="$run/api.port"

stop() { [[ -f "$run/$1.pid" ]] && kill "$(cat "$run/$1.pid")" 2>/dev/null || true; rm -f "$run/$1.pid"; }
alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

# Restart both so the demo always runs the binaries just built.
stop worker; stop api
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "$port" > "$port_file"
api="http://127.0.0.1:$port"
# The key entry-name pseudonyms are made with: random, kept with the demo's data.
key_file="$root/.xcam/pseudonym.key"
[[ -s "$key_file" ]] || (umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' > "$key_file")
echo "==> starting the API on $api (log: .xcam/run/api.log)"
XCAM_PSEUDONYM_KEY="$(cat "$key_file")" XCAM_BIND="127.0.0.1:$port" nohup target/release/xcam serve > "$run/api.log" 2>&1 &
echo $! > "$run/api.pid"
echo "==> starting one worker for the demo model (log: .xcam/run/worker.log)"
nohup target/release/xcam-worker run --model demo > "$run/worker.log" 2>&1 &
echo $! > "$run/worker.pid"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
for _ in $(seq 100); do curl -fsS "$api/readyz" >/dev/null 2>&1 && break; alive api || { cat "$run/api.log"; exit 1; }; sleep 0.2; done
echo "==> ready: $(curl -fsS "$api/readyz")"
echo "==> durability: Postgres fsync=$("${XCAM_PG_BIN:-/usr/bin}/psql" "$DATABASE_URL" -tAc 'SHOW fsync'), Redis appendonly=$(redis-cli -u "$REDIS_URL" config get appendonly | tail -n 1) appendfsync=$(redis-cli -u "$REDIS_URL" config get appendfsync | tail -n 1)"

# Every request answers to a token. The demo's is an admin of the project `demo`, remade on
# each run (only its hash is stored, so the old one cannot be shown again).
echo "==> xcam project create demo; xcam token create --name demo-admin --role admin --project demo"
target/release/xcam project list | grep -qx 'demo .*' || target/release/xcam project create demo
target/release/xcam token revoke demo-admin >/dev/null 2>&1 || true
token_file="$root/.xcam/demo.token"
(umask 077; target/release/xcam token create --name demo-admin --role admin --project demo --expires 30d | tail -n 1 > "$token_file")
export XCAM_TOKEN="$(cat "$token_file")"
export XCAM_URL="$api"
for _ in $(seq 150); do
  n=$(curl -fsS -H "Authorization: Bearer $XCAM_TOKEN" "$api/v1/workers" | json 'len(d)')
  [[ "$n" -ge 1 ]] && break
  alive worker || { cat "$run/worker.log"; exit 1; }
  sleep 0.2
done
echo "==> xcam workers"
target/release/xcam workers

echo "==> xcam submit models/demo/samples/samples.zip --model demo --wait --csv .xcam/demo-results.csv"
set +e
target/release/xcam submit models/demo/samples/samples.zip --model demo --wait --csv .xcam/demo-results.csv
status=$?
set -e
echo "==> CSV report: .xcam/demo-results.csv ($(($(wc -l < .xcam/demo-results.csv) - 1)) rows)"
python3 - .xcam/demo-results.csv <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"    {'entry':14} {'top label':10} {'p':>6}  {'peak':>11}  box")
for r in rows[:8]:
    print(f"    {r['entry_name']:14} {r['top_label']:10} {float(r['top_probability']):6.3f}  ({r['peak_x']:>4},{r['peak_y']:>4})  [{r['bbox_x0']}, {r['bbox_y0']}, {r['bbox_x1']}, {r['bbox_y1']}]")
print(f"    … {len(rows) - 8} more")
PY
first=$(python3 -c "import csv; r=next(csv.DictReader(open('.xcam/demo-results.csv'))); print(r['overlay_url'])")
echo "==> an overlay: $api$first"
echo "==> the inference log, from the command line:"
target/release/xcam logs --since 1h --limit 5
echo "==> the audit trail: who did what"
target/release/xcam audit --limit 5
echo
echo "The API ($api) and the worker keep running. The dashboard is $api/ (sign in with the token)."
echo "Use the command line with:"
echo "  export XCAM_URL=$api XCAM_TOKEN=\$(cat .xcam/demo.token)"
echo "  target/release/xcam status; target/release/xcam workers; target/release/xcam stats --since 1d --bucket hour"
echo "Stop everything with: make down"
exit "$status"
