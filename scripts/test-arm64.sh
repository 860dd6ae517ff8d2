#!/usr/bin/env bash
# Builds the static arm64 binary (scripts/build-static.sh --target
# aarch64-unknown-linux-musl, which checks it is static and under the size budget) and
# runs it under qemu-aarch64: `joinery version`, then `joinery serve` against the fake
# Kubernetes API, answering `GET /v1/health` over TLS, a login and the node list.
#
#   scripts/test-arm64.sh                                    # arm64, under qemu
#   scripts/test-arm64.sh --target x86_64-unknown-linux-musl # the x86_64 release binary, natively
#
# Installs what it needs when missing (qemu-user-static here; build-static.sh installs
# the cross compiler and the Rust target). Prints how long the build took.
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-musl
case "${1:-}" in
    --target) target=${2:?--target needs a target triple} ;;
    --target=*) target=${1#--target=} ;;
    "") ;;
    *) echo "usage: scripts/test-arm64.sh [--target TRIPLE]" >&2; exit 2 ;;
esac
arch=${target%%-*}
SUDO=
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo
missing=()
if [ "$arch" != "$(uname -m)" ]; then
    command -v "qemu-$arch-static" >/dev/null || command -v "qemu-$arch" >/dev/null || missing+=(qemu-user-static)
fi
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# A binary of this machine's architecture runs as it is.
qemu=()
[ "$arch" = "$(uname -m)" ] || qemu=("$(command -v "qemu-$arch-static" || command -v "qemu-$arch")")

start=$(date +%s)
bin=$(bash scripts/build-static.sh --target "$target" | tail -n1)
echo "== $arch build took $(($(date +%s) - start)) s"
case "$arch:$(file -b "$bin")" in
    aarch64:*"ARM aarch64"* | x86_64:*x86-64*) ;;
    *) echo "test-arm64.sh: $bin is not an $arch binary" >&2; exit 1 ;;
esac

echo "== ${qemu[*]} $bin version"
version=$("${qemu[@]}" "$bin" version)
echo "$version"
case $version in "joinery "*) ;; *) echo "test-arm64.sh: unexpected version output" >&2; exit 1 ;; esac

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== ${qemu[*]} $bin hash-password"
hash=$(printf demo | "${qemu[@]}" "$bin" hash-password)
python3 tests/support/fake_kube.py --port 0 --dir "$work/kube" --nodes 1 --password-bcrypt "$hash" --quiet \
    >"$work/kube.out" 2>"$work/kube.log" &
pids+=($!)
for _ in $(seq 300); do grep -q '^listening on' "$work/kube.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^listening on' "$work/kube.out" || { cat "$work/kube.log"; exit 1; }

echo "== ${qemu[*]} $bin serve (against the fake Kubernetes API)"
"${qemu[@]}" "$bin" serve --api-port 0 --bind-address 127.0.0.1 --node-name node-1 \
    --kubeconfig "$work/kube/kubeconfig" --data-dir "$work/data" 2>"$work/joinery.log" &
pids+=($!)
for _ in $(seq 600); do grep -q '"msg":"listening"' "$work/joinery.log" 2>/dev/null && break; sleep 0.1; done
grep '"msg":"listening"' "$work/joinery.log" || { cat "$work/joinery.log"; exit 1; }
api=$(grep '"msg":"listening"' "$work/joinery.log" | sed -E 's/.*"address":"([^"]+)".*/\1/')
health=$(curl -sS --max-time 30 --cacert "$work/data/tls.crt" "$api/v1/health")
echo "$health"
echo "$health" | grep -q '"status": *"ok"' || { cat "$work/joinery.log"; exit 1; }
# bcrypt, JWT signing and the Kubernetes client, all in the static binary.
token=$(curl -sS --max-time 60 --cacert "$work/data/tls.crt" -X POST "$api/v1/auth/token" \
    -H 'Content-Type: application/json' -d '{"password":"demo"}' | sed -E 's/.*"token": ?"([^"]+)".*/\1/')
nodes=$(curl -sS --max-time 60 --cacert "$work/data/tls.crt" "$api/v1/nodes" -H "Authorization: Bearer $token")
echo "$nodes" | grep -q '"name": *"node-1"' || { echo "$nodes"; cat "$work/joinery.log"; exit 1; }
echo "login and node list OK"
echo "== $arch binary OK"
