#!/usr/bin/env bash
# Creates (idempotently) the git-ignored Python virtual environment that holds the test
# clients (pymongo; later PyKMIP) and prints its python path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CIPHERTAIL_CACHE:-$ROOT/.cache}"
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pymongo, pymongocrypt' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "pymongo[encryption]==4.6.3" "pymongocrypt==1.21.2" >&2
fi
echo "$VENV/bin/python"
