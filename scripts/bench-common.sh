# Sourced by the pipeline benchmarks: the schema, and an admin token of the project `bench` for
# this run (named after $prefix, revoked by bench_done), sent by `get` and by the CLI.
target/release/xcam migrate >/dev/null
target/release/xcam project list | grep -x 'bench .*' >/dev/null || target/release/xcam project create bench >/dev/null
token=$(target/release/xcam token create --name "$prefix" --role admin --project bench --expires 1d | tail -n 1)
export XCAM_TOKEN="$token"
get() { curl -fsS -H "Authorization: Bearer $token" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# Removes this run's keys from Redis and revokes its token.
bench_done() {
  redis-cli -u "$REDIS_URL" --scan --pattern "$prefix.*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null
  target/release/xcam token revoke "$prefix" >/dev/null
}
