#!/usr/bin/env bash
# Installs the tools the tests use, when missing: curl, openssl, busybox (a second tar
# implementation), jq, systemd (systemd-analyze), util-linux (unshare and mount, for the
# unit's sandbox), and the Python packages in tests/support/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v busybox >/dev/null || missing+=(busybox)
command -v jq >/dev/null || missing+=(jq)  # headless-join.sh's jq path (its awk path runs without)
command -v systemd-analyze >/dev/null || missing+=(systemd)  # `verify` of the installed unit
command -v unshare >/dev/null || missing+=(util-linux)  # the unit's sandbox, emulated (unshare -m, mount)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -c 'import pytest, jsonschema, jwt, requests, requests_oauthlib, prometheus_client, schemathesis, sslyze' 2>/dev/null; then
    echo "installing Python test packages"
    python3 -m pip install -q --disable-pip-version-check -r tests/support/requirements.txt
fi
