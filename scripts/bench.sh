#!/usr/bin/env bash
# joinery's benchmark against real peers on this machine: /v1/health over TLS beside
# nginx, /v1/nodes beside the fake Kubernetes API server's own time, logins under load,
# join bundles beside `tar cf - | pigz -1` (first) and nginx serving the same file (cached),
# the TLS ceiling of the negotiated suite (`openssl speed`), memory, start-up time and
# binary size, and the watch-fed view beside `kubectl get nodes -o json`. Prints one
# table and writes it to BENCHMARKS.md with the machine, date and commit. Takes about
# 12 minutes; loopback only. Never part of the tests: a missed goal is reported, not
# failed.
#
#   scripts/bench.sh                     # the static build from scripts/build-static.sh
#   JOINERY_BIN=target/release/joinery scripts/bench.sh   # another binary
#   scripts/bench.sh --out /tmp/b.md     # extra flags go to scripts/bench.py
#   scripts/bench.sh --proto             # also issue 16's epoll prototype (bench/epoll-proto)
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages of the peers and tools.
need=()
for tool in wrk:wrk nginx:nginx-light pigz:pigz openssl:openssl curl:curl tar:tar file:file kubectl:kubernetes-client; do
    command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if [ -n "${JOINERY_BIN:-}" ]; then
    bin=$JOINERY_BIN static=()
else
    bin=$(bash scripts/build-static.sh | tail -n1) static=(--static)
fi
exec python3 scripts/bench.py all --bin "$bin" "${static[@]}" --out BENCHMARKS.md "$@"
