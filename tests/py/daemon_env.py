"""Helpers shared by the Flux, metrics and OpenAPI tests: join inputs, tokens, HTTPS calls.

`join_inputs(dir)` uses the shared Embedded Cluster Config in tests/data/ (controller
plus the custom roles `worker`, `gpu` and `app`), writes a multi-node License and an
artifacts directory, and returns the daemon flags that turn joins on. `session_token` signs a token the way the daemon does (the tests start
the daemon with --signing-key-file), so a test can hold a `read`-scoped token, which no
endpoint hands out yet.
"""

import base64
import json
import os
import ssl
import time
import urllib.error
import urllib.request
import uuid

import jwt

TIMEOUT_SECONDS = 60

# The Embedded Cluster Config every join test serves (the Rust tests read it too).
EC_CONFIG = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "data", "ec-config.yaml"))

LICENSE = """\
apiVersion: kots.io/v1beta1
kind: License
spec:
  appSlug: demo-app
  licenseID: test-license
  isEmbeddedClusterMultiNodeEnabled: true
"""


def join_inputs(directory):
    """Writes the join inputs under `directory`; returns the flags that use them."""
    os.makedirs(directory, exist_ok=True)
    license_ = os.path.join(directory, "license.yaml")
    artifacts = os.path.join(directory, "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with open(license_, "w") as f:
        f.write(LICENSE)
    with open(os.path.join(artifacts, "demo-app"), "wb") as f:
        f.write(b"#!/bin/sh\necho demo-app\n" + os.urandom(2048))
    return ["--ec-config", EC_CONFIG, "--license", license_, "--artifacts-dir", artifacts]


def signing_key_file(directory):
    """Writes a base64 signing key file; returns (path, key bytes)."""
    key = os.urandom(32)
    path = os.path.join(directory, "signing.key")
    with open(path, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return path, key


def session_token(key, scope, subject="flux-operator"):
    """A session token as the daemon signs them (HS256, iss and aud `joinery`)."""
    now = int(time.time())
    claims = {"iss": "joinery", "sub": subject, "aud": "joinery", "iat": now, "nbf": now,
              "exp": now + 3600, "jti": uuid.uuid4().hex, "scope": scope}
    return jwt.encode(claims, key, algorithm="HS256")


def call(daemon, method, path, token=None, body=None, headers=None):
    """(status, headers, body bytes) of one HTTPS request to the daemon, trusting its CA."""
    hdrs = dict(headers or {})
    data = None
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    if body is not None:
        hdrs["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    req = urllib.request.Request(daemon.url + path, data=data, headers=hdrs, method=method)
    tls = ssl.create_default_context(cafile=daemon.ca)
    try:
        with urllib.request.urlopen(req, context=tls, timeout=TIMEOUT_SECONDS) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def wait_until(what, check, timeout=30.0):
    """Calls `check` every 50 ms until it returns a true value, and returns that value;
    fails the test after `timeout` seconds, naming `what`. The one way these tests wait
    for something (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
