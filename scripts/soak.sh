#!/usr/bin/env bash
# Soak test on loopback: the real daemon against the fake Kubernetes API server under
# mixed load and switched faults for a fixed time, then checks for crashes, stray 5xx,
# lost tickets, leaked descriptors and memory (see scripts/soak.py for the details).
# Prints one summary line of counts; exits non-zero on a failed check.
#
# Usage: scripts/soak.sh [--short|--full|--seconds N]
#   --short   60 s of load, under 2 minutes in all (CI runs this)
#   --full    30 minutes of load
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
case "${1:---short}" in
    --short) seconds=60 ;;
    --full) seconds=1800 ;;
    --seconds) seconds="${2:?--seconds needs a number}" ;;
    *) echo "usage: scripts/soak.sh [--short|--full|--seconds N]" >&2; exit 2 ;;
esac

# The soak measures the daemon as built for tests (debug); JOINERY_BIN may name another.
if [ -z "${JOINERY_BIN:-}" ]; then
    cargo build --quiet
    export JOINERY_BIN="${CARGO_TARGET_DIR:-target}/debug/joinery"
fi
exec python3 scripts/soak.py --seconds "$seconds"
