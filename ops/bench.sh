#!/usr/bin/env bash
# The benchmark, from a fresh clone: installs what is missing (ops/setup.sh), starts the
# local replica set (ops/mongod.sh), builds ciphertail and ciphertail-bench in release, and
# runs the benchmark on bench.profiles (~300,000 documents, seeded on first use and reused
# after). Figures print as a table and land in bench-results/latest.json.
#
#   bash ops/bench.sh                  # the standard run
#   bash ops/bench.sh --docs 50000     # any ciphertail-bench option (see --help)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ -f ops/setup.sh ]; then bash ops/setup.sh; fi
URI="$(ops/mongod.sh start)"

swift build -c release --product ciphertail-bench
swift build -c release --product ciphertail
BIN="$(swift build -c release --show-bin-path)"

# A PyKMIP server for the key-manager figures.
ops/kmip.sh start ct-bench-kmip 55796 >/dev/null
KMIP_PKI="$(ops/kmip.sh dir)"

mkdir -p bench-results
status=0
"$BIN/ciphertail-bench" --uri "$URI" --json-out bench-results/latest.json \
  --kmip-server 127.0.0.1:55796 --kmip-pki "$KMIP_PKI" "$@" || status=$?
ops/kmip.sh stop ct-bench-kmip >/dev/null || true
exit $status
