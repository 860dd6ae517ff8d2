#!/usr/bin/env bash
# Runs every test of joinery: Rust unit and integration tests, and the Python tests
# (the fake Kubernetes API server's own checks, and clients such as PyJWT talking to
# the real daemon). Installs what the tests need first; no test skips itself because
# a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "== cargo test"
cargo test --all-targets

echo "== python tests"
cargo build --quiet  # the Python tests start target/debug/joinery
python3 -m pytest -q -p no:cacheprovider tests/support tests/py
