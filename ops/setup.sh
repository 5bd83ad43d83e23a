#!/usr/bin/env bash
# Installs what ciphertail needs on Debian 12 (idempotent; root or sudo): the official C
# libraries, zstd, the openssl tool (test PKI for the KMIP servers), and the Python test
# clients (pymongo, PyKMIP). mongod itself comes from ops/mongod.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(pkg-config libmongoc-dev libbson-dev libmongocrypt-dev libzstd-dev libssl-dev openssl libcurl4 zstd python3-venv)
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }
"$ROOT/ops/pyenv.sh" >/dev/null
