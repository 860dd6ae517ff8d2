#!/usr/bin/env bash
# The seed document's flow, end to end on this machine: builds joinery, starts the fake
# Kubernetes API server with a few nodes and the installer password Secret, starts
# joinery against it, then calls each endpoint with curl and prints what it answers.
#
#   scripts/demo.sh            # uses port 30081 (JOINERY_API_PORT to change it; 0 = any)
set -euo pipefail
cd "$(dirname "$0")/.."

PASSWORD=${DEMO_PASSWORD:-demo-password}
PORT=${JOINERY_API_PORT:-30081}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

bash scripts/install-test-deps.sh >/dev/null
echo "== building joinery"
cargo build --quiet
bin=target/debug/joinery

hash=$(printf '%s' "$PASSWORD" | "$bin" hash-password)

echo "== starting the fake Kubernetes API server (3 nodes)"
python3 tests/support/fake_kube.py --port 0 --dir "$work/kube" --nodes 3 \
    --password-bcrypt "$hash" >"$work/kube.out" 2>"$work/kube.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening on' "$work/kube.out" 2>/dev/null && break; sleep 0.1; done
grep '^listening on' "$work/kube.out"

# Join inputs: an Embedded Cluster config with two roles, a multi-node license, and an
# artifacts directory holding a stand-in application binary.
mkdir -p "$work/artifacts"
cat >"$work/config.yaml" <<'YAML'
apiVersion: embeddedcluster.replicated.com/v1beta1
kind: Config
spec:
  roles:
    controller:
      name: controller
    custom:
    - name: worker
      labels:
        tier: app
YAML
cat >"$work/license.yaml" <<'YAML'
apiVersion: kots.io/v1beta1
kind: License
spec:
  appSlug: demo-app
  licenseID: demo
  isEmbeddedClusterMultiNodeEnabled: true
YAML
printf '#!/bin/sh\necho "demo-app $*: this is where the node would join"\n' >"$work/artifacts/demo-app"
chmod 755 "$work/artifacts/demo-app"

echo "== starting joinery on 127.0.0.1:$PORT"
"$bin" serve --api-port "$PORT" --bind-address 127.0.0.1 \
    --kubeconfig "$work/kube/kubeconfig" --data-dir "$work/joinery" --node-name node-1 \
    --ec-config "$work/config.yaml" --license "$work/license.yaml" \
    --artifacts-dir "$work/artifacts" --socket "$work/joinery.sock" \
    2>"$work/joinery.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '"msg":"listening"' "$work/joinery.log" 2>/dev/null && break; sleep 0.1; done
grep '"msg":"listening"' "$work/joinery.log" || { cat "$work/joinery.log"; exit 1; }

# The address as joinery logged it (the port may have been picked by the kernel).
API=$(grep '"msg":"listening"' "$work/joinery.log" | sed -E 's/.*"address":"([^"]+)".*/\1/')
CURL=(curl -sS --cacert "$work/joinery/tls.crt")
show() { if command -v jq >/dev/null; then jq .; else cat; echo; fi; }

echo; echo "\$ curl $API/v1/health"
"${CURL[@]}" "$API/v1/health" | show

echo; echo "\$ curl $API/v1/version"
"${CURL[@]}" "$API/v1/version" | show

echo; echo "\$ curl -X POST $API/v1/auth/token -H 'Content-Type: application/json' -d '{\"password\":\"<installer-password>\"}'"
login=$("${CURL[@]}" -X POST "$API/v1/auth/token" -H 'Content-Type: application/json' \
    -d "{\"password\":\"$PASSWORD\"}")
echo "$login" | sed -E 's/("token": ?")([^.]{10})[^"]*/\1\2.../' | show
TOKEN=$(echo "$login" | sed -E 's/.*"token": ?"([^"]+)".*/\1/')

echo; echo "\$ curl $API/v1/nodes -H \"Authorization: Bearer \$TOKEN\""
"${CURL[@]}" "$API/v1/nodes" -H "Authorization: Bearer $TOKEN" | show

echo; echo "\$ curl $API/v1/nodes   # no token"
"${CURL[@]}" "$API/v1/nodes" | show

echo; echo "\$ curl -X POST $API/v1/create-join-command -H \"Authorization: Bearer \$TOKEN\" -H 'Content-Type: application/json' -d '{\"roles\":[\"worker\"]}'"
steps=$("${CURL[@]}" -X POST "$API/v1/create-join-command" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' -d '{"roles":["worker"]}')
echo "$steps" | sed -E 's/(Bearer )([^.]{10})[^'"'"']*/\1\2.../' | show

echo; echo "== running the three join steps in a scratch directory (sudo shimmed)"
host="$work/new-host"
mkdir -p "$host/bin"
printf '#!/bin/sh\nexec "$@"\n' >"$host/bin/sudo"; chmod 755 "$host/bin/sudo"
echo "$steps" | python3 -c 'import json,sys; [print(s["command"]) for s in json.load(sys.stdin)["joinSteps"]]' \
    >"$host/steps.sh"
(cd "$host" && PATH="$host/bin:$PATH" sh -e steps.sh)
(cd "$host" && ls -l && sha256sum -c SHA256SUMS)

echo; echo "== done; joinery's log:"
cat "$work/joinery.log"
