#!/usr/bin/env bash
# Builds the static, size-tuned release binary (Cargo profile `static`: opt-level z, LTO,
# one codegen unit, stripped, panic = unwind) for a musl target, checks that it is
# statically linked, prints its path and size, and fails when it is over the size
# budget.
#
#   scripts/build-static.sh                                   # x86_64-unknown-linux-musl
#   scripts/build-static.sh --target aarch64-unknown-linux-musl   # installs its cross gcc
#
# Environment: JOINERY_SIZE_BUDGET (bytes, default 3670016 = 3.5 MiB); CARGO_TARGET_DIR
# as usual. The last line of output is the binary's path, so other scripts can use
# `bin=$(scripts/build-static.sh | tail -n1)`.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=${2:?--target needs a target triple}; shift 2 ;;
        --target=*) target=${1#--target=}; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-static.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
budget=${JOINERY_SIZE_BUDGET:-3670016}

SUDO=
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO=sudo
apt_install() {
    command -v apt-get >/dev/null || { echo "build-static.sh: install $* first" >&2; exit 1; }
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# The Rust standard library for the target.
if ! rustup target list --installed | grep -qx "$target"; then
    echo "== rustup target add $target" >&2
    rustup target add "$target" >&2
fi

# ring compiles C and assembly, so the target needs a C compiler. For the host's
# architecture the host's gcc with musl's headers (musl-tools) does; another
# architecture needs its own cross compiler: CC_<target> (cargo's cc crate convention)
# when set, else one on PATH, else Debian's gcc-<arch>-linux-gnu, installed here.
arch=${target%%-*}
cc_var="CC_${target//-/_}"
if [ -z "${!cc_var:-}" ]; then
    if [ "$arch" = "$(uname -m)" ]; then
        command -v musl-gcc >/dev/null || apt_install musl-tools
        export "$cc_var"=musl-gcc
    elif command -v "$arch-linux-musl-gcc" >/dev/null; then
        export "$cc_var"="$arch-linux-musl-gcc"
    else
        if ! command -v "$arch-linux-gnu-gcc" >/dev/null; then
            echo "== installing the cross compiler gcc-${arch//_/-}-linux-gnu" >&2
            apt_install "gcc-${arch//_/-}-linux-gnu"
        fi
        export "$cc_var"="$arch-linux-gnu-gcc"
    fi
fi
# The x86_64 link uses lld (.cargo/config.toml says why).
if [ "$target" = x86_64-unknown-linux-musl ]; then
    command -v ld.lld >/dev/null || apt_install lld
fi

# Cross targets also need a linker; the C compiler links musl binaries fine (Rust
# ships musl's crt objects and libc itself).
if [ "$arch" != "$(uname -m)" ]; then
    linker_var="CARGO_TARGET_$(echo "${target//-/_}" | tr '[:lower:]' '[:upper:]')_LINKER"
    [ -n "${!linker_var:-}" ] || export "$linker_var"="${!cc_var}"
fi

echo "== cargo build --profile static --target $target" >&2
cargo build --locked --quiet --profile static --target "$target" >&2

bin="${CARGO_TARGET_DIR:-target}/$target/static/joinery"
command -v file >/dev/null || apt_install file
kind=$(file -b "$bin")
echo "$kind" >&2
case "$kind" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "build-static.sh: $bin is not statically linked" >&2; exit 1 ;;
esac

size=$(stat -c %s "$bin")
awk -v t="$target" -v s="$size" -v b="$budget" 'BEGIN { printf "== %s: %d bytes (%.2f MiB), budget %d bytes (%.2f MiB)\n", t, s, s / 1048576, b, b / 1048576 }' >&2
if [ "$size" -gt "$budget" ]; then
    echo "build-static.sh: the binary is $((size - budget)) bytes over the size budget" >&2
    exit 1
fi
echo "$bin"
