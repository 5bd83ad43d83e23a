#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, starts a
# throwaway mongod replica set for the tests, runs `swift test`, stops the mongod.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ops/setup.sh
swift build -q --build-tests
export CIPHERTAIL_TEST_URI="$(ops/mongod.sh start ct-test 27117)"
export CIPHERTAIL_TEST_STANDALONE_PORT=27118
trap 'ops/mongod.sh stop ct-test; ops/mongod.sh stop ct-standalone' EXIT
swift test --skip-build --disable-swift-testing "$@"
