#!/usr/bin/env bash
# The seed document's flow, end to end on this machine: builds joinery, starts the fake
# Kubernetes API server with three nodes and the installer password Secret, starts
# joinery against it with the join inputs in examples/, then calls each endpoint with
# curl, printing each command (runnable as printed) and its answer, and ends by joining
# a node-4 through a join command's three steps.
#
#   scripts/demo.sh          # run the walk, then stop everything
#   scripts/demo.sh --keep   # leave the fake cluster and joinery running in
#                            # /tmp/joinery-demo (JOINERY_DEMO_DIR) and write its env file
#   scripts/demo.sh --stop   # stop a kept demo and remove its directory
#
# joinery listens on 127.0.0.1:30081 (JOINERY_API_PORT to change it; 0 = any free port).
# Needs a Rust toolchain; installs curl, jq and python3 with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=walk
case "${1:-}" in
    '') ;;
    --keep) mode=keep ;;
    --stop) mode=stop ;;
    -h | --help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$1'; expected --keep, --stop or nothing" >&2; exit 2 ;;
esac
kept_dir=${JOINERY_DEMO_DIR:-/tmp/joinery-demo}

# Stops the processes a kept demo recorded in DIR/pids ("PID WHAT" lines), checking that
# each PID still runs a command line naming DIR, so a reused PID is never signalled.
stop_kept() {
    local dir=$1 pid what n
    [ -f "$dir/pids" ] || return 0
    while read -r pid what; do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir"; then
            kill -TERM "$pid" 2>/dev/null || true
            for n in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
            if [ -d "/proc/$pid" ]; then
                echo "$what (pid $pid) did not stop within 10 s of SIGTERM; killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            echo "stopped $what (pid $pid)"
        fi
    done <"$dir/pids"
}

if [ "$mode" = stop ]; then
    if [ ! -f "$kept_dir/pids" ]; then
        echo "no kept demo in $kept_dir (nothing to stop)"
        exit 0
    fi
    stop_kept "$kept_dir"
    rm -rf "$kept_dir"
    echo "removed $kept_dir"
    exit 0
fi

PASSWORD=${DEMO_PASSWORD:-demo-password}
PORT=${JOINERY_API_PORT:-30081}
if [ "$mode" = keep ]; then
    if [ -f "$kept_dir/pids" ]; then
        echo "== stopping the demo already kept in $kept_dir"
        stop_kept "$kept_dir"
    fi
    rm -rf "$kept_dir"
    mkdir -p "$kept_dir"
    dir=$(cd "$kept_dir" && pwd)
else
    dir=$(mktemp -d)
fi
chmod 700 "$dir"
export JOINERY_DEMO_DIR=$dir  # examples/artifacts/demo-app finds the fake API through it

started=()
done_ok=0
cleanup() {
    # A walk always stops what it started; a kept demo only when setting it up failed.
    if [ "$mode" = walk ] || [ "$done_ok" = 0 ]; then
        for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        if [ "$mode" = walk ]; then rm -rf "$dir"; fi
    fi
}
trap cleanup EXIT

# Only what the demo itself runs (not the test suite's packages).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (apt-get)"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== building joinery (cargo build; a first build takes a few minutes)"
cargo build
bin=$root/target/debug/joinery
[ -x "$bin" ] || { echo "cargo build made no $bin" >&2; exit 1; }
mkdir -p "$dir/bin"
ln -sf "$bin" "$dir/bin/joinery"

# Secrets go to files (mode 0600), never onto a command line.
umask 077
printf '%s\n' "$PASSWORD" >"$dir/password"
jq -n --rawfile p "$dir/password" '{password: ($p | rtrimstr("\n"))}' >"$dir/login.json"
hash=$("$bin" hash-password <"$dir/password")
umask 022

# Starts a background process that outlives this script when the demo is kept (its own
# session, no terminal, output to files) and records it for --stop.
spawn() {
    local what=$1
    shift
    setsid "$@" </dev/null &
    started+=($!)
    echo "$! $what" >>"$dir/pids"
}

echo "== starting the fake Kubernetes API server (3 nodes: node-1 a controller, node-2 and node-3 workers)"
spawn "the fake Kubernetes API" python3 "$root/tests/support/fake_kube.py" --port 0 \
    --dir "$dir/kube" --nodes 3 --password-bcrypt "$hash" >"$dir/kube.out" 2>"$dir/kube.log"
for _ in $(seq 100); do grep -q '^listening on' "$dir/kube.out" 2>/dev/null && break; sleep 0.1; done
grep '^listening on' "$dir/kube.out" || { cat "$dir/kube.log"; exit 1; }

echo "== starting joinery on 127.0.0.1:$PORT (join inputs from examples/)"
spawn "joinery" "$bin" serve --api-port "$PORT" --bind-address 127.0.0.1 \
    --kubeconfig "$dir/kube/kubeconfig" --data-dir "$dir/joinery" --node-name node-1 \
    --ec-config "$root/examples/ec-config.yaml" --license "$root/examples/license.yaml" \
    --artifacts-dir "$root/examples/artifacts" \
    --socket "$dir/joinery.sock" --socket-uid "$(id -u)" >/dev/null 2>"$dir/joinery.log"
for _ in $(seq 100); do grep -q '"msg":"listening"' "$dir/joinery.log" 2>/dev/null && break; sleep 0.1; done
grep '"msg":"listening"' "$dir/joinery.log" || { cat "$dir/joinery.log"; exit 1; }

# The address as joinery logged it (the port may have been picked by the kernel).
listening=$(grep '"msg":"listening"' "$dir/joinery.log")
API=$(echo "$listening" | sed -E 's/.*"address":"([^"]+)".*/\1/')
PIN=$(echo "$listening" | sed -E 's/.*"pin":"([^"]+)".*/\1/')
CACERT=$dir/joinery/tls.crt

# Prints a command, runs it, and pretty-prints its JSON answer (jq); on failure the
# script stops (set -e) with curl's message.
run() {
    echo
    echo "\$ $*"
    "$@" | jq .
}
C=(curl -sS --fail-with-body --cacert "$CACERT")

run "${C[@]}" "$API/v1/health"
run "${C[@]}" "$API/v1/version"

echo
echo "\$ ${C[*]} -X POST $API/v1/auth/token -H 'Content-Type: application/json' -d @$dir/login.json"
login=$("${C[@]}" -X POST "$API/v1/auth/token" -H 'Content-Type: application/json' -d @"$dir/login.json")
echo "$login" | sed -E 's/("token": ?")([^.]{10})[^"]*/\1\2.../' | jq .
TOKEN=$(echo "$login" | jq -er .token)

echo
echo "\$ ${C[*]} $API/v1/nodes -H \"Authorization: Bearer \$TOKEN\""
"${C[@]}" "$API/v1/nodes" -H "Authorization: Bearer $TOKEN" | jq .

echo
echo "\$ curl -sS --cacert $CACERT $API/v1/nodes   # no token: 401 and what to do"
curl -sS --cacert "$CACERT" "$API/v1/nodes" | jq .

echo
echo "\$ curl -sS --unix-socket $dir/joinery.sock http://localhost/v1/health   # the local socket, no token"
curl -sS --fail-with-body --unix-socket "$dir/joinery.sock" http://localhost/v1/health | jq .

echo
echo "\$ ${C[*]} -X POST $API/v1/create-join-command -H \"Authorization: Bearer \$TOKEN\" -H 'Content-Type: application/json' -d '{\"roles\":[\"worker\"]}'"
steps=$("${C[@]}" -X POST "$API/v1/create-join-command" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"roles":["worker"]}')
echo "$steps" | sed -E 's/(Bearer )([^.]{10})[^'"'"']*/\1\2.../' | jq .

echo
echo "== joining node-4: the three steps, run by examples/local-ssh (an ssh stand-in) in $dir/node-4"
mkdir -p "$dir/node-4"
echo "$steps" | jq -r '.joinSteps[].command' >"$dir/node-4/steps.sh"
(cd "$dir/node-4" && "$root/examples/local-ssh" admin@node-4 sh -e -s <steps.sh)
(cd "$dir/node-4" && rm steps.sh && sha256sum -c SHA256SUMS)

echo
echo "\$ ${C[*]} $API/v1/nodes -H \"Authorization: Bearer \$TOKEN\" | jq -c '.nodes[] | {name, roles, ready}'"
"${C[@]}" "$API/v1/nodes" -H "Authorization: Bearer $TOKEN" | jq -c '.nodes[] | {name, roles, ready}'

if [ "$mode" = walk ]; then
    echo
    echo "== done; joinery's log:"
    cat "$dir/joinery.log"
    exit 0
fi

cat >"$dir/env" <<EOF
# The kept joinery demo (scripts/demo.sh --keep). Load with: . $dir/env
# Stop it with: scripts/demo.sh --stop
export JOINERY_DEMO_DIR='$dir'
export JOINERY_API='$API'
export JOINERY_PIN='$PIN'
export JOINERY_CACERT='$CACERT'
export JOINERY_PASSWORD_FILE='$dir/password'
export JOINERY_SOCKET='$dir/joinery.sock'
export JOINERY_KUBECONFIG='$dir/kube/kubeconfig'
export PATH='$dir/bin':"\$PATH"
EOF
done_ok=1
cat <<EOF

== the demo keeps running
API:            $API
pin:            $PIN
CA certificate: $CACERT
password file:  $dir/password (login body: $dir/login.json)
socket:         $dir/joinery.sock
logs:           $dir/joinery.log, $dir/kube.log
env file:       . $dir/env   # sets JOINERY_API, JOINERY_PIN, JOINERY_CACERT,
                # JOINERY_PASSWORD_FILE, JOINERY_SOCKET, JOINERY_KUBECONFIG; joinery on PATH
stop it with:   scripts/demo.sh --stop
EOF
