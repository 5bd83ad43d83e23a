#!/usr/bin/env bash
# Creates (idempotently) the git-ignored Python virtual environment that holds the test
# clients (pymongo, pymongocrypt) and the PyKMIP test server (ops/kmip.sh), and prints its
# python path. PyKMIP 0.11.0 declares no upper bounds: the SQLAlchemy and cryptography
# pins are the versions it was tried with on Python 3.11 (create, get, register, locate,
# query and discover versions all work; cryptography already warns it will drop ciphers
# PyKMIP imports).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CIPHERTAIL_CACHE:-$ROOT/.cache}"
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pymongo, pymongocrypt, kmip, sqlalchemy' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "pymongo[encryption]==4.6.3" "pymongocrypt==1.21.2" \
    "pykmip==0.11.0" "SQLAlchemy==2.1.9" "cryptography==50.0.2" >&2
fi
echo "$VENV/bin/python"
