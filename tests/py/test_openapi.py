"""The served OpenAPI document, checked two ways against the running daemon.

1. It is a valid OpenAPI 3.0 document and every operation's security matches what the
   daemon enforces (public ones answer without a token, the others 401).
2. schemathesis (pinned in tests/support/requirements.txt) loads it from /openapi.yaml and
   runs a bounded property-based test of every operation with an admin bearer token: no
   5xx, and every status, content type, header and body conforms to the document.
   `POST /oauth/token` runs separately without that header (its Authorization header is
   OAuth client authentication).
   Joins are configured, so the join endpoints really run (their Kubernetes side effects
   land in the fake).
"""

import json
import os
import shutil
import ssl
import subprocess
import sys
import urllib.request

import pytest
import yaml

from conftest import PASSWORD, Daemon, Fake
from daemon_env import call, join_inputs

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
    "missing_required_header",
    "ignored_auth",
])
# Not `positive_data_acceptance`: which role names exist depends on the Embedded Cluster
# config, so a schema-valid role can rightly be refused (400 invalid_roles).
MAX_EXAMPLES = 20
OAUTH_TOKEN = "/oauth/token"


@pytest.fixture(scope="module")
def env():
    fake = Fake(nodes=3)
    # schemathesis sends many wrong passwords from one address on purpose; a high
    # --login-failures keeps the lockout from hiding the endpoints' own behaviour
    # (the lockout itself is tested in tests/it/throttle.rs).
    daemon = Daemon(
        fake,
        extra=["--node-name", "node-1", "--login-failures", "100000",
               *join_inputs(os.path.join(fake.dir, "join"))],
    )
    status, _, body = call(daemon, "POST", "/v1/auth/token", body={"password": PASSWORD})
    assert status == 200, body
    yield {"fake": fake, "daemon": daemon, "token": json.loads(body)["token"]}
    daemon.stop()
    fake.stop()


def document(env):
    status, headers, body = call(env["daemon"], "GET", "/openapi.yaml")
    assert status == 200
    assert headers["Content-Type"] == "application/yaml"
    return yaml.safe_load(body)


def test_the_document_is_openapi_3_0_and_its_security_is_enforced(env):
    doc = document(env)
    assert doc["openapi"].startswith("3.0.")
    for path, item in doc["paths"].items():
        for method, op in item.items():
            public = op.get("security", doc["security"]) == []
            if "{" in path:
                continue  # needs a real object name; the Rust coverage test checks these
            query = "?roles=controller" if path == "/v1/join-bundle" else ""
            status, _, _ = call(env["daemon"], method.upper(), path + query,
                                body={} if method == "post" else None)
            if public:
                assert status != 401, f"{method.upper()} {path} is documented public but wants a token"
            else:
                assert status == 401, f"{method.upper()} {path} answered {status} without a token"


def run_schemathesis(env, tmp_path, *extra, token=True):
    """One bounded, seeded schemathesis run; fails with its report (token redacted)."""
    exe = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    daemon = env["daemon"]
    auth = ["-H", f"Authorization: Bearer {env['token']}"] if token else []
    cmd = [
        exe, "run", daemon.url + "/openapi.yaml",
        "--url", daemon.url,
        "--tls-verify", daemon.ca,
        *auth,
        "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES),
        "--phases", "examples,coverage,fuzzing",
        "--seed", "1",
        "--workers", "1",
        "--request-timeout", "60",
        "--no-color",
        "--report", "ndjson",
        "--report-dir", str(tmp_path),
        *extra,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "SCHEMATHESIS_HOOKS": ""}, cwd=tmp_path)
    output = run.stdout + run.stderr
    # The token must not be echoed in the report; it is sanitized, but keep the log clean.
    assert run.returncode == 0, output.replace(env["token"], "<token>")[-12000:]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(env, tmp_path):
    # The lifecycle operations really run against the fake: nodes get relabelled, drained,
    # resumed and removed (the examples name node-1..node-3). Every outcome is documented,
    # and the seed and example count keep the run the same each time.
    # The two node reads that can wait (up to 600 s) or stream (until the daemon stops)
    # are left to `test_waits_and_node_streams_match_the_document`, below.
    run_schemathesis(env, tmp_path, "--exclude-path", OAUTH_TOKEN,
                     "--exclude-operation-id", "listNodes",
                     "--exclude-operation-id", "getNode")


def test_waits_and_node_streams_match_the_document(env):
    """listNodes and getNode, with and without their waiting parameters, against the
    document's schemas (jsonschema, with the document's components)."""
    import jsonschema
    doc = document(env)
    daemon, token = env["daemon"], env["token"]

    def check(ref_schema, value):
        schema = {**ref_schema, "components": doc["components"]}
        jsonschema.validate(value, schema)

    nodes_op = doc["paths"]["/v1/nodes"]["get"]
    node_op = doc["paths"]["/v1/nodes/{name}"]["get"]
    listing = nodes_op["responses"]["200"]["content"]
    status, headers, body = call(daemon, "GET", "/v1/nodes", token=token)
    assert status == 200
    check(listing["application/json"]["schema"], json.loads(body))
    # The fuzzing run may have removed nodes: the stream starts with the ones left.
    names = [n["name"] for n in json.loads(body)["nodes"]]
    detail = node_op["responses"]["200"]["content"]["application/json"]["schema"]
    status, _, body = call(daemon, "GET", "/v1/nodes/node-1?waitFor=ready&timeoutSeconds=5",
                           token=token)
    assert status == 200, body
    check(detail, json.loads(body))
    status, _, body = call(daemon, "GET", "/v1/nodes/node-9?waitFor=deleted", token=token)
    assert status == 200, body
    check(detail, json.loads(body))
    status, _, body = call(daemon, "GET", "/v1/nodes/node-9?waitFor=ready&timeoutSeconds=1",
                           token=token)
    assert status == 504 and "504" in node_op["responses"], body
    check(doc["components"]["schemas"]["Error"], json.loads(body))
    for bad in ("waitFor=soon", "timeoutSeconds=5", "waitFor=ready&timeoutSeconds=601"):
        status, _, body = call(daemon, "GET", f"/v1/nodes/node-1?{bad}", token=token)
        assert status == 400 and json.loads(body)["error"] == "invalid_query", (bad, body)
    # The stream: the current nodes as ADDED lines, each a NodeEvent.
    req = urllib.request.Request(daemon.url + "/v1/nodes?watch=true",
                                 headers={"Authorization": f"Bearer {token}"})
    tls = ssl.create_default_context(cafile=daemon.ca)
    with urllib.request.urlopen(req, context=tls, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/x-ndjson"
        event_schema = listing["application/x-ndjson"]["schema"]
        for name in names:
            event = json.loads(resp.readline())
            assert (event["type"], event["node"]["name"]) == ("ADDED", name)
            check(event_schema, event)


def test_schemathesis_on_the_oauth_token_endpoint(env, tmp_path):
    # Without the bearer header: on the token endpoint an Authorization header is client
    # authentication, and a Bearer one is rightly refused as `invalid_client`.
    run_schemathesis(env, tmp_path, "--include-path", OAUTH_TOKEN, token=False)
