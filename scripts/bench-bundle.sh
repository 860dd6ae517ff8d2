#!/usr/bin/env bash
# Join bundle throughput: the first (cold cache) and the cached bundle for the same
# files, beside `tar czf - FILES`, and the daemon's peak RSS. A benchmark, not a test.
#
#   scripts/bench-bundle.sh                    # 256 MiB of generated mixed artifacts
#   scripts/bench-bundle.sh --mb 64            # smaller
#   scripts/bench-bundle.sh --files DIR        # your artifacts (DIR/bench-app must exist)
#   JOINERY_BIN=target/release/joinery scripts/bench-bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "bench-bundle.sh: needs curl" >&2; exit 1; }
if [ -n "${JOINERY_BIN:-}" ]; then
    bin=$JOINERY_BIN
else
    bin=$(bash scripts/build-static.sh | tail -n1)
fi
exec python3 scripts/bench.py bundle --bin "$bin" "$@"
