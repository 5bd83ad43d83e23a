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

mkdir -p bench-results
exec "$BIN/ciphertail-bench" --uri "$URI" --json-out bench-results/latest.json "$@"
