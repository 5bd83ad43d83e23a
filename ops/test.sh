#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, starts a
# throwaway mongod replica set (and a second one, the replication target) and two PyKMIP servers for the tests, runs `swift test`,
# stops them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ops/setup.sh
swift build -q --build-tests
export CIPHERTAIL_TEST_URI="$(ops/mongod.sh start ct-test 27117)"
export CIPHERTAIL_TEST_STANDALONE_PORT=27118
# A second replica set: the target of ReplicationTests.
export CIPHERTAIL_TEST_TARGET_URI="$(ops/mongod.sh start ct-target 27119)"
trap 'ops/mongod.sh stop ct-test; ops/mongod.sh stop ct-target; ops/mongod.sh stop ct-standalone; ops/kmip.sh stop ct-kmip-a; ops/kmip.sh stop ct-kmip-b' EXIT
# Two PyKMIP servers for KMIPClientTests (failover needs two).
ops/kmip.sh start ct-kmip-a 55696 >/dev/null
ops/kmip.sh start ct-kmip-b 55697 >/dev/null
export CIPHERTAIL_TEST_KMIP_DIR="$(ops/kmip.sh dir)"
export CIPHERTAIL_TEST_KMIP_PORTS=55696,55697
swift test --skip-build --disable-swift-testing "$@"
