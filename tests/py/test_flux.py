"""GET /v1/flux/nodes as Flux Operator's ResourceSetInputProvider (type ExternalService) reads it.

`flux_operator_fetch` mirrors the operator's `callExternalServiceProvider`
(controlplaneio-fluxcd/flux-operator, internal/controller/resourcesetinputprovider_controller.go):
a GET with `Accept: application/json` and `User-Agent: flux-operator/<version>`; the bearer
token is the Secret's `token` key with surrounding space trimmed; TLS trusts the `ca.crt` of
the certSecretRef Secret (here the daemon's self-signed certificate); a non-2xx status
fails; the body is read through a 900 KiB cap and anything longer fails; the JSON must be an
object whose `inputs` is a present, non-null array of objects, each with a string `id`,
unique in the list; then `filter.limit` (default 100) keeps the first inputs and
`defaultValues` fill keys the input lacks.
"""

import json
import os
import ssl
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, Daemon, Fake
from daemon_env import call, session_token, signing_key_file, wait_until

MAX_EXTERNAL_SERVICE_PAYLOAD = 900 * 1024  # maxExternalServicePayloadSize
DEFAULT_FILTER_LIMIT = 100  # DefaultResourceSetInputProviderFilterLimit
OPERATOR_VERSION = "v0.40.0"


class ContractError(Exception):
    """What the operator would put in the provider's Ready=False condition."""


def flux_operator_fetch(url, secret_data, ca_crt, filter_limit=None, default_values=None):
    """The exported inputs the operator would store, or ContractError."""
    if not url.startswith("https://"):
        raise ContractError("spec.url must use 'https://' unless spec.insecure is true")
    headers = {"Accept": "application/json", "User-Agent": f"flux-operator/{OPERATOR_VERSION}"}
    if secret_data is not None:
        if "token" in secret_data:
            headers["Authorization"] = "Bearer " + secret_data["token"].decode().strip()
        else:
            raise ContractError("basic auth is not what joinery expects")
    tls = ssl.create_default_context(cadata=ca_crt.decode())
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, context=tls, timeout=60) as response:
            status = response.status
            body = response.read(MAX_EXTERNAL_SERVICE_PAYLOAD + 1)
    except urllib.error.HTTPError as error:
        raise ContractError(f"external service '{url}' returned HTTP {error.code}") from None
    if not 200 <= status < 300:
        raise ContractError(f"external service '{url}' returned HTTP {status}")
    if len(body) > MAX_EXTERNAL_SERVICE_PAYLOAD:
        raise ContractError(f"external service '{url}' response body exceeds the maximum allowed size "
                            f"of {MAX_EXTERNAL_SERVICE_PAYLOAD} bytes")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise ContractError(f"failed to parse JSON response: {error}") from None
    # Go's json.Unmarshal into struct{Inputs []map[string]any}.
    if not isinstance(document, dict):
        raise ContractError("failed to parse JSON response: not an object")
    inputs = document.get("inputs")
    if inputs is None:
        raise ContractError(f"external service '{url}' response does not contain an 'inputs' field")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ContractError("failed to parse JSON response: inputs is not an array of objects")
    seen = set()
    for index, item in enumerate(inputs):
        if "id" not in item:
            raise ContractError(f"input at index {index} is missing the required 'id' field")
        if not isinstance(item["id"], str):
            raise ContractError(f"input at index {index} has a non-string 'id' field")
        if item["id"] in seen:
            raise ContractError(f"input at index {index} has a duplicate 'id' value '{item['id']}'")
        seen.add(item["id"])
    limit = filter_limit if filter_limit and filter_limit > 0 else DEFAULT_FILTER_LIMIT
    return [{**(default_values or {}), **item} for item in inputs[:limit]]


@pytest.fixture(scope="module")
def env():
    fake = Fake(nodes=4, extra=["--controllers", "1"])
    key_file, key = signing_key_file(fake.dir)
    daemon = Daemon(fake, extra=["--signing-key-file", key_file])
    with open(daemon.ca, "rb") as f:
        ca_crt = f.read()
    token = session_token(key, "read")
    yield {"fake": fake, "daemon": daemon, "ca": ca_crt, "key": key,
           # As a Secret stores it, often with a trailing newline the operator trims.
           "secret": {"token": (token + "\n").encode()}}
    daemon.stop()
    fake.stop()


def fake_control(fake, method, path, body):
    request = urllib.request.Request(fake.url + path, data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    tls = ssl.create_default_context(cafile=os.path.join(fake.dir, "ca.crt"))
    with urllib.request.urlopen(request, context=tls, timeout=30) as response:
        return json.loads(response.read())


def test_the_operator_accepts_the_nodes_with_a_read_token(env):
    url = env["daemon"].url + "/v1/flux/nodes"
    inputs = flux_operator_fetch(url, env["secret"], env["ca"], default_values={"cluster": "demo"})
    assert [i["id"] for i in inputs] == ["node-1", "node-2", "node-3", "node-4"]
    first = inputs[0]
    assert first["name"] == "node-1"
    assert first["roles"] == ["controller"]
    assert first["internalIP"] == "10.0.0.11"
    assert first["ready"] is True
    assert first["labels"]["kubernetes.io/hostname"] == "node-1"
    assert first["cluster"] == "demo"  # defaultValues fill what the input lacks
    assert inputs[3]["roles"] == []  # the last of >= 3 fake nodes has no role labels


def test_filters_narrow_the_inputs(env):
    base = env["daemon"].url + "/v1/flux/nodes"
    fetch = lambda query: [i["id"] for i in flux_operator_fetch(base + query, env["secret"], env["ca"])]
    assert fetch("?role=controller") == ["node-1"]
    assert fetch("?role=no-such-role") == []
    fake_control(env["fake"], "POST", "/_fake/node-ready", {"name": "node-3", "ready": False})
    try:
        assert fetch("?ready=false") == ["node-3"]
        assert fetch("?ready=true") == ["node-1", "node-2", "node-4"]
    finally:
        fake_control(env["fake"], "POST", "/_fake/node-ready", {"name": "node-3", "ready": True})


@pytest.mark.parametrize(("query", "code", "needle"), [
    ("?ready=yes", "invalid_filter", "true or false"),
    ("?role=a%20b", "invalid_filter", "not a role name"),
    ("?role=a&role=b", "invalid_query", "once"),
    ("?limit=5&roles=x", "unknown_parameter", '"limit", "roles"'),
])
def test_bad_filters_are_refused_clearly(env, query, code, needle):
    status, _, body = call(env["daemon"], "GET", "/v1/flux/nodes" + query,
                           token=env["secret"]["token"].decode().strip())
    assert status == 400, body
    error = json.loads(body)
    assert error["error"] == code
    assert needle in error["message"]
    with pytest.raises(ContractError, match="returned HTTP 400"):
        flux_operator_fetch(env["daemon"].url + "/v1/flux/nodes" + query, env["secret"], env["ca"])


def test_without_a_valid_token_the_operator_gets_401(env):
    url = env["daemon"].url + "/v1/flux/nodes"
    with pytest.raises(ContractError, match="returned HTTP 401"):
        flux_operator_fetch(url, None, env["ca"])
    with pytest.raises(ContractError, match="returned HTTP 401"):
        flux_operator_fetch(url, {"token": b"not-a-token"}, env["ca"])
    # A token for a scope joinery does not know grants nothing.
    with pytest.raises(ContractError, match="returned HTTP 401"):
        flux_operator_fetch(url, {"token": session_token(env["key"], "flux").encode()}, env["ca"])


def test_an_unknown_ca_is_refused_by_the_operator(env):
    with open(os.path.join(env["fake"].dir, "ca.crt"), "rb") as f:
        other_ca = f.read()
    with pytest.raises(urllib.error.URLError):
        flux_operator_fetch(env["daemon"].url + "/v1/flux/nodes", env["secret"], other_ca)


def big_node(name, ip, labels):
    """A worker node (the fake's own builder) carrying `labels` on top of its usual ones."""
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    import fake_kube  # noqa: E402 (standard library only)
    node = fake_kube.make_node(name, ip, "app", fake_kube.now_ts())
    node["apiVersion"], node["kind"] = "v1", "Node"
    node["metadata"]["labels"].update(labels)
    return node


def test_more_than_900_kib_is_a_clear_422_and_filters_narrow_it():
    fake = Fake(nodes=3)
    key_file, key = signing_key_file(fake.dir)
    daemon = Daemon(fake, extra=["--signing-key-file", key_file])
    try:
        # 40 workers with 100 long labels each: about 1.1 MB of inputs.
        prefix = ".".join(["p" * 60] * 3)
        labels = {f"{prefix}/label-{i:03}": "v" * 63 for i in range(100)}
        nodes = [big_node(f"big-{n:02}", f"10.0.1.{n + 1}", labels) for n in range(40)]
        fake_control(fake, "POST", "/_fake/objects", nodes)
        token = session_token(key, "read")
        secret = {"token": token.encode()}
        with open(daemon.ca, "rb") as f:
            ca = f.read()

        # The nodes really are over the limit: the plain node list is larger still. The
        # daemon reads a watch-fed view, so wait (bounded) until it shows all 43 nodes.
        def all_nodes():
            status, _, listing = call(daemon, "GET", "/v1/nodes", token=token)
            assert status == 200
            return listing if len(json.loads(listing)["nodes"]) == 43 else None

        listing = wait_until("the view to show all 43 nodes", all_nodes)
        assert len(listing) > MAX_EXTERNAL_SERVICE_PAYLOAD

        status, headers, body = call(daemon, "GET", "/v1/flux/nodes", token=token)
        assert status == 422, body[:300]
        assert headers["Content-Type"] == "application/json"
        error = json.loads(body)
        assert error["error"] == "inputs_too_large"
        assert "role=<role>" in error["message"] and "ready=true" in error["message"]
        with pytest.raises(ContractError, match="returned HTTP 422"):
            flux_operator_fetch(daemon.url + "/v1/flux/nodes", secret, ca)

        # Still too large with one filter: the message names only the other one.
        status, _, body = call(daemon, "GET", "/v1/flux/nodes?role=app", token=token)
        assert status == 422
        message = json.loads(body)["message"]
        assert "ready=true" in message and "role=<role>" not in message

        inputs = flux_operator_fetch(daemon.url + "/v1/flux/nodes?role=controller", secret, ca)
        assert [i["id"] for i in inputs] == ["node-1"]
    finally:
        daemon.stop()
        fake.stop()
