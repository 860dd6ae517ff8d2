#!/usr/bin/env bash
# Builds the release binaries: static musl joinery for x86_64 and arm64 (each through
# scripts/build-static.sh, which installs its C compiler and Rust target and enforces
# the size budget), copies them to DIR as joinery-VERSION-ARCH-linux, and writes
# DIR/SHA256SUMS. Then checks the result: `sha256sum -c SHA256SUMS` passes and the
# x86_64 binary reports the version it is named after.
#
#   scripts/release.sh [--out DIR]      # DIR defaults to dist/ (emptied first)
#
# The last line of output is DIR. How operators check the files on a controller is in
# docs/operator-guide.md ("Prebuilt binaries").
set -euo pipefail
cd "$(dirname "$0")/.."

out=dist
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "release.sh: unknown argument '$1'; expected --out DIR (try --help)" >&2; exit 2 ;;
    esac
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[ -n "$version" ] || { echo "release.sh: no version in Cargo.toml" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
names=()
for arch in x86_64 aarch64; do
    echo "== $arch" >&2
    bin=$(bash scripts/build-static.sh --target "$arch-unknown-linux-musl" | tail -n 1)
    name="joinery-$version-$arch-linux"
    install -m 0755 "$bin" "$out/$name"
    names+=("$name")
done

# Relative names, so `sha256sum -c SHA256SUMS` works wherever the files are copied.
(cd "$out" && sha256sum "${names[@]}" >SHA256SUMS)
(cd "$out" && sha256sum -c SHA256SUMS) >&2

if [ "$(uname -m)" = x86_64 ]; then
    reported=$("$out/joinery-$version-x86_64-linux" version)
    case "$reported" in
        "joinery $version"*) echo "$reported" >&2 ;;
        *) echo "release.sh: the x86_64 binary says '$reported', not version $version" >&2; exit 1 ;;
    esac
fi
echo "== release files in $out:" >&2
(cd "$out" && ls -l "${names[@]}" SHA256SUMS && cat SHA256SUMS) >&2
echo "$out"
