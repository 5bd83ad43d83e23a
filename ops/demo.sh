#!/usr/bin/env bash
# The main job on an embedded default, from a fresh clone: installs what is missing, builds,
# starts a local mongod replica set, seeds a small demo database, backs it up, shows the
# archive summary, verifies it, restores it into a second database and shows they match.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ops/setup.sh
swift build -q --product ciphertail
CT="$(swift build --show-bin-path)/ciphertail"
URI="$(ops/mongod.sh start demo 27217)"
REPO="$ROOT/.cache/demo-repo"
PY="$(ops/pyenv.sh)"
rm -rf "$REPO"

echo "== seeding demo database 'shop' on $URI"
"$PY" "$ROOT/ops/demo_data.py" seed "$URI"

echo "== ciphertail backup"
ID="$("$CT" backup --uri "$URI" --repo "$REPO" --ns 'shop.*')"
echo "backup id: $ID"

echo "== ciphertail list"
"$CT" list --repo "$REPO"

echo "== ciphertail verify"
"$CT" verify --repo "$REPO"

echo "== ciphertail restore into shop_restored"
"$CT" restore --uri "$URI" --repo "$REPO" --ns-from 'shop.*' --ns-to 'shop_restored.*' --drop

echo "== comparing shop and shop_restored"
"$PY" "$ROOT/ops/demo_data.py" compare "$URI" shop shop_restored
echo "(the demo replica set keeps running: ops/mongod.sh stop demo)"
