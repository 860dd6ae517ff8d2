#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), starting from the
# committed seed corpus in fuzz/corpus/<target>/ (new inputs go to fuzz/corpus-work/, which
# is not committed). Fails on the first crash, hang (-timeout) or allocation beyond
# -rss_limit_mb / -malloc_limit_mb; the reproducer lands in fuzz/artifacts/<target>/.
#
# cargo fuzz wants nightly; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept the
# nightly-only flags (-Zsanitizer=address) it passes.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
# The fuzz crate has its own workspace and target directory.
unset CARGO_TARGET_DIR

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

mkdir -p fuzz/logs
for t in "${targets[@]}"; do
    echo "== fuzz $t (${seconds}s)"
    mkdir -p "fuzz/corpus-work/$t"
    log="fuzz/logs/$t.log"
    set +e
    (cd fuzz && cargo fuzz run "$t" "corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=1024 -malloc_limit_mb=512 \
        -max_len=65536 -print_final_stats=1) >"$log" 2>&1
    status=$?
    set -e
    grep -E '^(stat::number_of_executed_units|Done )' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $t failed (exit $status); full log $log, reproducer under fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no failures"
