"""Tests that the fake Kubernetes API server answers like a real one.

Each test starts tests/support/fake_kube.py as a subprocess on port 0 (certificates are made
once per session and shared), talks real HTTPS to it, and checks bodies against the upstream
1.35 OpenAPI schemas in strict mode (unknown fields are errors) as well as against the
real wire samples in /work/shared/kube.

Run: python3 -m pytest tests/support -q
"""

from __future__ import annotations

import base64
import copy
import gzip
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_kube.py")
KUBE = os.environ.get("JOINERY_KUBE_REFS", "/work/shared/kube")
SPEC_PATH = os.path.join(KUBE, "kubernetes-release-1.35_api__v1_openapi.json")
NODELIST_SAMPLE = os.path.join(KUBE, "starburst_readme_kind_nodelist_wire.json")
NODE_SAMPLE = os.path.join(KUBE, "k9s_render_testdata_no.json")


# ---------------------------------------------------------------------------------------
# OpenAPI validation
# ---------------------------------------------------------------------------------------

def _strict(node):
    """Forbid properties a schema does not name, so a misspelt field in the fake fails."""
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for v in node.values():
            _strict(v)
    elif isinstance(node, list):
        for v in node:
            _strict(v)


_checker = jsonschema.FormatChecker(formats=())


@_checker.checks("date-time", raises=ValueError)
def _date_time(v):
    if not isinstance(v, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", v):
        raise ValueError(f"not RFC 3339: {v!r}")
    return True


@_checker.checks("byte", raises=ValueError)
def _byte(v):
    if isinstance(v, str):
        base64.b64decode(v, validate=True)
    return True


@_checker.checks("int32")
def _int32(v):
    return not isinstance(v, int) or -(2**31) <= v < 2**31


@pytest.fixture(scope="session")
def schema():
    with open(SPEC_PATH) as f:
        spec = json.load(f)
    _strict(spec["components"]["schemas"])
    registry = Registry().with_resource("urn:k8s", Resource(contents=spec, specification=DRAFT4))

    def validate(instance, name):
        ref = {"$ref": f"urn:k8s#/components/schemas/{name}"}
        jsonschema.Draft4Validator(ref, registry=registry, format_checker=_checker).validate(instance)

    return validate


CORE = "io.k8s.api.core.v1."
STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"


# ---------------------------------------------------------------------------------------
# Starting the fake and talking to it
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def certdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fake-kube-certs"))


class Fake:
    def __init__(self, d: str, args: list[str]):
        self.dir = d
        self.proc = subprocess.Popen([sys.executable, FAKE, "--port", "0", "--dir", d, *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on https://127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"fake did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.crt"))

    @property
    def token(self) -> str:
        with open(os.path.join(self.dir, "token")) as f:
            return f.read()

    def conn(self, ctx=None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx or self.ctx, timeout=10)

    def call(self, method, path, body=None, token=..., ctype="application/json", conn=None, headers=None):
        """-> (status, headers, parsed JSON or text)."""
        h = dict(headers or {})
        if token is ...:
            token = self.token
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h["Content-Type"] = ctype
        c = conn or self.conn()
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        if conn is None:
            c.close()
        if r.getheader("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        text = raw.decode()
        return r.status, r, (json.loads(text) if r.getheader("Content-Type", "").startswith("application/json")
                             else text)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def control(self, method, path, body=None):
        return self.call(method, "/_fake/" + path, body, token=None)[2]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for s in (self.proc.stdout, self.proc.stderr):
            s.close()


@pytest.fixture
def start(certdir):
    started = []

    def go(*args):
        f = Fake(certdir, list(args))
        started.append(f)
        return f

    yield go
    for f in started:
        f.stop()


@pytest.fixture
def fake(start):
    return start("--nodes", "5")


def wait_for(cond, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def names(lst):
    return [i["metadata"]["name"] for i in lst["items"]]


def q(path, **params):
    return path + "?" + urllib.parse.urlencode(params)


# ---------------------------------------------------------------------------------------
# Wire shapes
# ---------------------------------------------------------------------------------------

def test_schema_check_accepts_the_real_samples_and_rejects_a_typo(schema):
    # The validator itself must pass real server output and fail a misspelt field.
    with open(NODELIST_SAMPLE) as f:
        schema(json.load(f), CORE + "NodeList")
    with open(NODE_SAMPLE) as f:
        node = json.load(f)
    schema(node, CORE + "Node")
    node["status"]["conditions"][0]["lastHeartbeatTme"] = node["status"]["conditions"][0]["lastHeartbeatTime"]
    with pytest.raises(jsonschema.ValidationError):
        schema(node, CORE + "Node")
    with pytest.raises(jsonschema.ValidationError):
        schema({"kind": "Status", "code": "404"}, STATUS)


def test_node_list_has_the_real_wire_shape(fake, schema):
    status, _, lst = fake.get("/api/v1/nodes")
    assert status == 200
    schema(lst, CORE + "NodeList")
    assert (lst["kind"], lst["apiVersion"]) == ("NodeList", "v1")
    assert lst["metadata"]["resourceVersion"].isdigit()
    with open(NODELIST_SAMPLE) as f:
        real = json.load(f)["items"][0]
    for node in lst["items"]:
        # Like the real list: items carry no kind/apiVersion, and the same sections and keys.
        assert list(node) == list(real)
        assert set(real["metadata"]) - {"managedFields"} <= set(node["metadata"])
        assert set(real["status"]) <= set(node["status"])
        assert set(real["status"]["nodeInfo"]) == set(node["status"]["nodeInfo"])
        for c, rc in zip(node["status"]["conditions"], real["status"]["conditions"]):
            assert list(c) == list(rc) and c["type"] == rc["type"]
            schema(c, CORE + "NodeCondition")
        for a in node["status"]["addresses"]:
            schema(a, CORE + "NodeAddress")
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.35.1+k0s"
        assert {"type": "Ready", "status": "True"}.items() <= node["status"]["conditions"][-1].items()
    ips = [next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP") for n in lst["items"]]
    assert ips == ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14", "10.0.0.15"]
    roles = [n["metadata"]["labels"].get("kots.io/embedded-cluster-role-0") for n in lst["items"]]
    assert roles == ["controller", "worker", "worker", "worker", None]
    first = lst["items"][0]["metadata"]["labels"]
    assert first["node.k0sproject.io/role"] == "control-plane"
    assert first["node-role.kubernetes.io/control-plane"] == "true"
    assert first["kots.io/embedded-cluster-role"] == "total-1"
    assert "node-role.kubernetes.io/control-plane" not in lst["items"][1]["metadata"]["labels"]


def test_get_node_carries_kind_and_matches_list_item(fake, schema):
    status, r, node = fake.get("/api/v1/nodes/node-2")
    assert status == 200 and r.getheader("Content-Type") == "application/json"
    schema(node, CORE + "Node")
    assert list(node)[:3] == ["kind", "apiVersion", "metadata"]
    item = next(i for i in fake.get("/api/v1/nodes")[2]["items"] if i["metadata"]["name"] == "node-2")
    assert {k: v for k, v in node.items() if k not in ("kind", "apiVersion")} == item


def test_nodes_file_serves_the_real_sample_unchanged(start, schema):
    f = start("--nodes-file", NODELIST_SAMPLE)
    with open(NODELIST_SAMPLE) as fh:
        real = json.load(fh)["items"][0]
    node = f.get("/api/v1/nodes/onprem-control-plane")[2]
    schema(node, CORE + "Node")
    for k in ("spec", "status"):
        assert node[k] == real[k]
    assert node["metadata"]["uid"] == real["metadata"]["uid"]
    assert node["metadata"]["labels"] == real["metadata"]["labels"]


def test_not_found_status_is_exactly_the_real_one(fake, schema):
    status, _, body = fake.get("/api/v1/nodes/n9")
    assert status == 404
    schema(body, STATUS)
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "nodes \"n9\" not found", "reason": "NotFound",
                    "details": {"name": "n9", "kind": "nodes"}, "code": 404}
    _, _, body = fake.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/nope")
    assert body["message"] == 'leases.coordination.k8s.io "nope" not found'
    assert body["details"] == {"name": "nope", "group": "coordination.k8s.io", "kind": "leases"}
    for path in ("/api/v1/widgets", "/apis/example.com/v1/things", "/api/v1/namespaces/default/nodes/x"):
        status, _, body = fake.get(path)
        assert status == 404 and body["reason"] == "NotFound"
        assert body["message"] == "the server could not find the requested resource"


def test_health_and_version(fake):
    assert fake.get("/readyz", token=None)[::2] == (200, "ok")
    assert fake.get("/livez")[::2] == (200, "ok")
    status, _, v = fake.get("/version")
    assert status == 200 and v["gitVersion"] == "v1.35.1+k0s" and (v["major"], v["minor"]) == ("1", "35")


def test_keep_alive_serves_many_requests_on_one_connection(fake):
    c = fake.conn()
    for _ in range(5):
        status, r, _ = fake.get("/api/v1/nodes/node-1", conn=c)
        assert status == 200 and int(r.getheader("Content-Length")) > 0
    fake.get("/api/v1/nodes/nope", conn=c)
    assert fake.get("/api/v1/namespaces/kube-system", conn=c)[0] == 200
    c.close()


def test_root_ca_configmaps_and_password_secret(start, schema):
    f = start("--nodes", "1", "--password-bcrypt", "$2a$10$abcdefghijklmnopqrstuu5zMX3U9tsvWAqCK2hJ0wOUqqsN6Wrpy")
    with open(os.path.join(f.dir, "ca.crt")) as fh:
        ca = fh.read()
    for ns in ("kube-system", "kotsadm"):
        status, _, cm = f.get(f"/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt")
        assert status == 200 and cm["data"]["ca.crt"] == ca
        schema(cm, CORE + "ConfigMap")
    status, _, s = f.get("/api/v1/namespaces/kotsadm/secrets/kotsadm-password")
    assert status == 200
    schema(s, CORE + "Secret")
    assert base64.b64decode(s["data"]["passwordBcrypt"]).decode().startswith("$2a$10$")


# ---------------------------------------------------------------------------------------
# Lists: paging and selectors
# ---------------------------------------------------------------------------------------

def test_paging_with_limit_and_continue(fake, schema):
    full = names(fake.get("/api/v1/nodes")[2])
    pages, token, rvs = [], None, set()
    while True:
        path = q("/api/v1/nodes", limit=2, **({"continue": token} if token else {}))
        status, _, page = fake.get(path)
        assert status == 200
        schema(page, CORE + "NodeList")
        pages.append(page)
        rvs.add(page["metadata"]["resourceVersion"])
        token = page["metadata"].get("continue")
        if not token:
            break
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [p["metadata"].get("remainingItemCount") for p in pages] == [3, 1, None]
    assert "continue" not in pages[-1]["metadata"]
    assert sum((names(p) for p in pages), []) == full
    assert len(rvs) == 1  # every page reports the first page's resourceVersion


def test_bad_and_expired_continue_tokens(fake):
    status, _, body = fake.get(q("/api/v1/nodes", limit=1, **{"continue": "garbage"}))
    assert (status, body["reason"]) == (400, "BadRequest")
    token = fake.get(q("/api/v1/nodes", limit=1))[2]["metadata"]["continue"]
    fake.control("POST", "compact")
    status, _, body = fake.get(q("/api/v1/nodes", limit=1, **{"continue": token}))
    assert (status, body["reason"], body["code"]) == (410, "Expired", 410)


@pytest.mark.parametrize("selector,expected", [
    ("kots.io/embedded-cluster-role-0=controller", ["node-1"]),
    ("kots.io/embedded-cluster-role-0==worker", ["node-2", "node-3", "node-4"]),
    ("kots.io/embedded-cluster-role-0!=worker", ["node-1", "node-5"]),
    ("node-role.kubernetes.io/control-plane", ["node-1"]),
    ("!kots.io/embedded-cluster-role", ["node-5"]),
    ("kots.io/embedded-cluster-role-0 in (controller, worker),kubernetes.io/hostname notin (node-2)",
     ["node-1", "node-3", "node-4"]),
    ("kubernetes.io/os=linux,kubernetes.io/hostname=node-4", ["node-4"]),
])
def test_label_selectors(fake, selector, expected):
    assert names(fake.get(q("/api/v1/nodes", labelSelector=selector))[2]) == expected


def test_selector_paging_and_errors(fake):
    page = fake.get(q("/api/v1/nodes", labelSelector="kots.io/embedded-cluster-role-0=worker", limit=2))[2]
    assert names(page) == ["node-2", "node-3"] and "remainingItemCount" not in page["metadata"]
    nxt = fake.get(q("/api/v1/nodes", labelSelector="kots.io/embedded-cluster-role-0=worker", limit=2,
                     **{"continue": page["metadata"]["continue"]}))[2]
    assert names(nxt) == ["node-4"] and "continue" not in nxt["metadata"]
    status, _, body = fake.get(q("/api/v1/nodes", labelSelector="a=b=c"))
    assert (status, body["reason"]) == (400, "BadRequest")
    status, _, body = fake.get(q("/api/v1/nodes", fieldSelector="spec.providerID=x"))
    assert (status, body["reason"]) == (400, "BadRequest")


def test_field_selectors_and_cordon(fake):
    assert names(fake.get(q("/api/v1/nodes", fieldSelector="metadata.name=node-3"))[2]) == ["node-3"]
    assert len(fake.get(q("/api/v1/nodes", fieldSelector="spec.unschedulable=false"))[2]["items"]) == 5
    status, _, node = fake.call("PATCH", "/api/v1/nodes/node-3", {"spec": {"unschedulable": True}},
                                ctype="application/strategic-merge-patch+json")
    assert status == 200 and node["spec"]["unschedulable"] is True
    assert names(fake.get(q("/api/v1/nodes", fieldSelector="spec.unschedulable=true"))[2]) == ["node-3"]
    assert names(fake.get(q("/api/v1/nodes", fieldSelector="spec.unschedulable!=false,metadata.name!=node-1"))[2]) \
        == ["node-3"]
    status, _, node = fake.call("PATCH", "/api/v1/nodes/node-3", {"spec": {"unschedulable": None}},
                                ctype="application/merge-patch+json")
    assert status == 200 and "unschedulable" not in node["spec"]  # absent when false, as on a real node
    assert node["status"]["conditions"]  # status survives a spec patch


def test_pods_by_node_and_across_namespaces(fake):
    for ns, name, node in (("default", "a", "node-2"), ("default", "b", "node-3"), ("kotsadm", "c", "node-2")):
        status, _, pod = fake.call("POST", f"/api/v1/namespaces/{ns}/pods", pod_body(name, node))
        assert status == 201 and pod["status"]["phase"] == "Running"
    lst = fake.get(q("/api/v1/pods", fieldSelector="spec.nodeName=node-2"))[2]
    assert (lst["kind"], names(lst)) == ("PodList", ["a", "c"])
    assert [i["metadata"]["namespace"] for i in lst["items"]] == ["default", "kotsadm"]
    assert names(fake.get(q("/api/v1/namespaces/default/pods", fieldSelector="spec.nodeName=node-2"))[2]) == ["a"]
    assert names(fake.get(q("/api/v1/pods", fieldSelector="metadata.namespace=kotsadm"))[2]) == ["c"]
    pages = [fake.get(q("/api/v1/pods", limit=2))[2]]
    pages.append(fake.get(q("/api/v1/pods", limit=2, **{"continue": pages[0]["metadata"]["continue"]}))[2])
    assert names(pages[0]) + names(pages[1]) == ["a", "b", "c"] and "continue" not in pages[1]["metadata"]


def test_five_thousand_nodes_page_quickly(start):
    f = start("--nodes", "5000")
    t, token, seen, c = time.monotonic(), None, 0, f.conn()
    while True:
        page = f.get(q("/api/v1/nodes", limit=500, **({"continue": token} if token else {})), conn=c)[2]
        seen += len(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            break
    c.close()
    assert seen == 5000
    assert time.monotonic() - t < 15


def test_large_responses_are_gzipped_when_asked(start):
    f = start("--nodes", "200")
    status, r, lst = f.get("/api/v1/nodes", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and r.getheader("Content-Encoding") == "gzip" and len(lst["items"]) == 200
    assert f.get("/api/v1/nodes")[1].getheader("Content-Encoding") is None


# ---------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------

def pod_body(name, node, labels=None):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}


def test_secret_create_conflict_update_and_delete(fake, schema):
    path = "/api/v1/namespaces/kotsadm/secrets"
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "stringData": {"k": "v"}}
    status, _, s = fake.call("POST", path, body)
    assert status == 201
    schema(s, CORE + "Secret")
    assert s["data"] == {"k": base64.b64encode(b"v").decode()} and "stringData" not in s and s["type"] == "Opaque"
    assert s["metadata"]["uid"] and s["metadata"]["creationTimestamp"] and s["metadata"]["namespace"] == "kotsadm"

    status, _, err = fake.call("POST", path, body)
    schema(err, STATUS)
    assert (status, err["reason"], err["message"]) == (409, "AlreadyExists", 'secrets "s1" already exists')
    assert err["details"] == {"name": "s1", "kind": "secrets"}

    stale = copy.deepcopy(s)
    s["data"]["k2"] = base64.b64encode(b"x").decode()
    status, _, s2 = fake.call("PUT", f"{path}/s1", s)
    assert status == 200 and int(s2["metadata"]["resourceVersion"]) > int(s["metadata"]["resourceVersion"])
    status, _, err = fake.call("PUT", f"{path}/s1", stale)
    assert (status, err["reason"]) == (409, "Conflict")
    assert err["message"] == ('Operation cannot be fulfilled on secrets "s1": the object has been modified; '
                              'please apply your changes to the latest version and try again')

    status, _, err = fake.call("DELETE", f"{path}/s1", {"preconditions": {"uid": "not-the-uid"}})
    assert (status, err["reason"]) == (409, "Conflict") and "Precondition failed: UID" in err["message"]
    status, _, err = fake.call("DELETE", f"{path}/s1", {"preconditions": {"resourceVersion": "1"}})
    assert (status, err["reason"]) == (409, "Conflict")
    status, _, done = fake.call("DELETE", f"{path}/s1", {"preconditions": {"uid": s["metadata"]["uid"]}})
    assert status == 200
    schema(done, STATUS)
    assert done == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": "s1", "kind": "secrets", "uid": s["metadata"]["uid"]}}
    assert fake.get(f"{path}/s1")[0] == 404


def test_create_validation_and_generate_name(fake, schema):
    path = "/api/v1/namespaces/default/configmaps"
    status, _, err = fake.call("POST", path, {"metadata": {"name": "Bad_Name"}, "data": {}})
    schema(err, STATUS)
    assert (status, err["reason"], err["details"]["kind"]) == (422, "Invalid", "ConfigMap")
    assert err["details"]["causes"][0]["field"] == "metadata.name"
    assert err["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"')
    status, _, err = fake.call("POST", path, {"metadata": {}})
    assert (status, err["reason"]) == (422, "Invalid")
    status, _, cm = fake.call("POST", path, {"metadata": {"generateName": "cfg-"}, "data": {"a": "b"}})
    assert status == 201 and re.fullmatch(r"cfg-[a-z0-9]{5}", cm["metadata"]["name"])
    status, _, err = fake.call("POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}})
    assert (status, err["message"]) == (404, 'namespaces "nowhere" not found')
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/secrets",
                               {"metadata": {"name": "x"}, "data": {"k": "not base64!"}})
    assert (status, err["reason"]) == (400, "BadRequest")
    status, _, err = fake.call("POST", path, b"{not json")
    assert (status, err["reason"]) == (400, "BadRequest")


def test_patch_flavours(fake):
    path = "/api/v1/namespaces/default/configmaps"
    fake.call("POST", path, {"metadata": {"name": "p", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}})
    _, _, cm = fake.call("PATCH", f"{path}/p", {"data": {"x": None, "z": "3"}}, ctype="application/merge-patch+json")
    assert cm["data"] == {"y": "2", "z": "3"}
    _, _, cm = fake.call("PATCH", f"{path}/p", [{"op": "replace", "path": "/data/y", "value": "9"},
                                                {"op": "add", "path": "/metadata/labels/b", "value": "2"}],
                         ctype="application/json-patch+json")
    assert cm["data"]["y"] == "9" and cm["metadata"]["labels"] == {"a": "1", "b": "2"}
    status, _, err = fake.call("PATCH", f"{path}/p", [{"op": "test", "path": "/data/y", "value": "0"}],
                               ctype="application/json-patch+json")
    assert (status, err["reason"]) == (422, "Invalid")
    status, _, err = fake.call("PATCH", f"{path}/p", {"metadata": {"resourceVersion": "5"}, "data": {"q": "1"}},
                               ctype="application/merge-patch+json")
    assert (status, err["reason"]) == (409, "Conflict")
    status, _, err = fake.call("PATCH", f"{path}/p", {"data": {}}, ctype="text/plain")
    assert (status, err["reason"]) == (415, "UnsupportedMediaType")
    status, _, err = fake.call("PATCH", f"{path}/nope", {"data": {}}, ctype="application/merge-patch+json")
    assert (status, err["reason"]) == (404, "NotFound")


def test_strategic_merge_patch_merges_conditions_by_type(fake):
    cond = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "x"}
    status, _, node = fake.call("PATCH", "/api/v1/nodes/node-2/status", {"status": {"conditions": [cond]}},
                                ctype="application/strategic-merge-patch+json")
    assert status == 200
    conds = {c["type"]: c for c in node["status"]["conditions"]}
    assert len(conds) == 4 and conds["Ready"]["status"] == "False" and conds["Ready"]["lastHeartbeatTime"]


def test_pod_delete_returns_the_pod_and_graceful_deletion_lingers(start):
    f = start("--nodes", "3", "--pod-delete-delay-ms", "300")
    f.call("POST", "/api/v1/namespaces/default/pods", pod_body("web", "node-2"))
    status, _, pod = f.call("DELETE", "/api/v1/namespaces/default/pods/web")
    assert status == 200 and pod["kind"] == "Pod" and pod["metadata"]["deletionTimestamp"]
    status, _, still = f.get("/api/v1/namespaces/default/pods/web")
    assert status == 200 and still["metadata"]["deletionGracePeriodSeconds"] == 30
    assert wait_for(lambda: f.get("/api/v1/namespaces/default/pods/web")[0] == 404)


# ---------------------------------------------------------------------------------------
# Eviction and PodDisruptionBudgets
# ---------------------------------------------------------------------------------------

def eviction(name, ns="default"):
    return {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}


def test_eviction_blocked_by_pdb_then_allowed_after_relaxing(fake, schema):
    for n in ("web-1", "web-2"):
        fake.call("POST", "/api/v1/namespaces/default/pods", pod_body(n, "node-2", {"app": "web"}))
    pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
    status, _, pdb = fake.call("POST", pdbs, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                              "metadata": {"name": "web"},
                                              "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    assert status == 201
    pdb = fake.get(f"{pdbs}/web")[2]
    assert {k: pdb["status"][k] for k in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods")} \
        == {"disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2}

    body = eviction("web-1")
    schema(body, "io.k8s.api.policy.v1.Eviction")
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/pods/web-1/eviction", body)
    schema(err, STATUS)
    assert (status, err["reason"], err["code"]) == (429, "TooManyRequests", 429)
    assert err["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert err["details"]["causes"] == [{"reason": "DisruptionBudget",
                                         "message": "The disruption budget web needs 2 healthy pods and has 2 "
                                                    "currently"}]
    assert fake.get("/api/v1/namespaces/default/pods/web-1")[0] == 200

    status, _, _ = fake.call("PATCH", f"{pdbs}/web", {"spec": {"minAvailable": 1}},
                             ctype="application/merge-patch+json")
    assert status == 200
    status, _, ok = fake.call("POST", "/api/v1/namespaces/default/pods/web-1/eviction", body)
    schema(ok, STATUS)
    assert status == 201
    assert ok == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    assert fake.get("/api/v1/namespaces/default/pods/web-1")[0] == 404
    # Now only one healthy pod is left, which minAvailable 1 protects.
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/pods/web-2/eviction", eviction("web-2"))
    assert (status, err["details"]["causes"][0]["reason"]) == (429, "DisruptionBudget")


def test_eviction_edge_cases(fake):
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/pods/gone/eviction", eviction("gone"))
    assert (status, err["reason"], err["details"]) == (404, "NotFound", {"name": "gone", "kind": "pods"})
    fake.call("POST", "/api/v1/namespaces/default/pods", pod_body("lone", "node-2", {"app": "x"}))
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/pods/lone/eviction", eviction("other"))
    assert (status, err["reason"]) == (400, "BadRequest")
    for n in ("a", "b"):
        fake.control("POST", "objects", {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                         "metadata": {"name": n, "namespace": "default"},
                                         "spec": {"selector": {"matchLabels": {"app": "x"}}},
                                         "status": {"disruptionsAllowed": 5}})
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/pods/lone/eviction", eviction("lone"))
    assert status == 500 and "more than one PodDisruptionBudget" in err["message"]


def test_unready_pods_may_be_evicted_when_the_budget_is_met_or_always_allowed(fake):
    fake.call("POST", "/api/v1/namespaces/default/pods", pod_body("r1", "node-2", {"app": "r"}))
    fake.call("POST", "/api/v1/namespaces/default/pods", pod_body("r2", "node-2", {"app": "r"}))
    fake.control("POST", "objects", {"apiVersion": "v1", "kind": "Pod",
                                     "metadata": {"name": "sick", "namespace": "default", "labels": {"app": "r"}},
                                     "spec": {"nodeName": "node-3"},
                                     "status": {"phase": "Running", "conditions": [{"type": "Ready",
                                                                                    "status": "False"}]}})
    pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
    fake.call("POST", pdbs, {"metadata": {"name": "r"},
                             "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "r"}}}})
    # 2 healthy of 3 wanted: nothing may go, not even the sick pod under the default policy.
    assert fake.call("POST", "/api/v1/namespaces/default/pods/sick/eviction", eviction("sick"))[0] == 429
    fake.call("PATCH", f"{pdbs}/r", {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}},
              ctype="application/merge-patch+json")
    assert fake.call("POST", "/api/v1/namespaces/default/pods/sick/eviction", eviction("sick"))[0] == 201
    assert fake.call("POST", "/api/v1/namespaces/default/pods/r1/eviction", eviction("r1"))[0] == 429


def test_manual_pdb_status_is_honoured_and_decremented(fake):
    fake.call("POST", "/api/v1/namespaces/default/pods", pod_body("m1", "node-2", {"app": "m"}))
    fake.call("POST", "/api/v1/namespaces/default/pods", pod_body("m2", "node-3", {"app": "m"}))
    fake.control("POST", "objects", {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                     "metadata": {"name": "m", "namespace": "default"},
                                     "spec": {"selector": {"matchLabels": {"app": "m"}}},
                                     "status": {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1}})
    assert fake.call("POST", "/api/v1/namespaces/default/pods/m1/eviction", eviction("m1"))[0] == 201
    assert fake.call("POST", "/api/v1/namespaces/default/pods/m2/eviction", eviction("m2"))[0] == 429


# ---------------------------------------------------------------------------------------
# Authentication and authorisation
# ---------------------------------------------------------------------------------------

def test_wrong_token_is_401_and_no_token_is_anonymous(start):
    f = start("--nodes", "1")
    status, _, err = f.get("/api/v1/nodes", token="wrong")
    assert status == 401 and err == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                     "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    status, _, err = f.get("/api/v1/nodes", token=None)
    assert (status, err["reason"]) == (403, "Forbidden") and 'User "system:anonymous"' in err["message"]
    assert f.get("/version", token=None)[0] == 200
    strict = start("--nodes", "1", "--no-anonymous")
    assert strict.get("/api/v1/nodes", token=None)[0] == 401


def test_deny_list_answers_like_rbac(fake, schema):
    fake.control("POST", "deny", [{"verb": "create", "resource": "secrets", "namespace": "kotsadm"},
                                  {"verb": "list", "resource": "nodes"},
                                  {"verb": "get", "resource": "leases"}])
    status, _, err = fake.call("POST", "/api/v1/namespaces/kotsadm/secrets", {"metadata": {"name": "x"}})
    schema(err, STATUS)
    assert (status, err["reason"]) == (403, "Forbidden")
    assert err["message"] == ('secrets is forbidden: User "system:serviceaccount:kotsadm:joinery" cannot create '
                              'resource "secrets" in API group "" in the namespace "kotsadm"')
    assert err["details"] == {"kind": "secrets"}
    _, _, err = fake.get("/api/v1/nodes")
    assert err["message"].endswith('cannot list resource "nodes" in API group "" at the cluster scope')
    _, _, err = fake.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/k0s-endpoint-reconciler")
    assert err["message"].startswith('leases.coordination.k8s.io "k0s-endpoint-reconciler" is forbidden: ')
    assert err["details"] == {"name": "k0s-endpoint-reconciler", "group": "coordination.k8s.io", "kind": "leases"}
    assert fake.get("/api/v1/nodes/node-1")[0] == 200  # get is still allowed
    fake.control("POST", "deny", [])
    assert fake.get("/api/v1/nodes")[0] == 200


def test_deny_on_pods_does_not_cover_eviction_and_vice_versa(fake):
    fake.call("POST", "/api/v1/namespaces/default/pods", pod_body("p", "node-2"))
    fake.control("POST", "deny", [{"verb": "create", "resource": "pods/eviction"}])
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/pods/p/eviction", eviction("p"))
    assert (status, err["message"]) == (403, 'pods "p" is forbidden: User "system:serviceaccount:kotsadm:joinery" '
                                             'cannot create resource "pods/eviction" in API group "" in the '
                                             'namespace "default"')
    assert fake.call("POST", "/api/v1/namespaces/default/pods", pod_body("q", "node-2"))[0] == 201
    fake.control("POST", "deny", [{"verb": "create", "resource": "pods"}])
    assert fake.call("POST", "/api/v1/namespaces/default/pods/p/eviction", eviction("p"))[0] == 201


def cert_context(fake: Fake, tmp_path) -> ssl.SSLContext:
    """Client certificate and key taken from kubeconfig-cert, the way a client would."""
    with open(os.path.join(fake.dir, "kubeconfig-cert")) as f:
        kc = f.read()
    vals = dict(re.findall(r"^\s+(client-certificate-data|client-key-data|certificate-authority-data): (\S+)$", kc,
                           re.M))
    assert re.search(rf"^    server: {re.escape(fake.url)}$", kc, re.M)
    for k, fn in (("client-certificate-data", "c.crt"), ("client-key-data", "c.key")):
        (tmp_path / fn).write_bytes(base64.b64decode(vals[k]))
    ctx = ssl.create_default_context(cadata=base64.b64decode(vals["certificate-authority-data"]).decode())
    ctx.load_cert_chain(str(tmp_path / "c.crt"), str(tmp_path / "c.key"))
    return ctx


def test_client_certificate_kubeconfig(fake, tmp_path):
    ctx = cert_context(fake, tmp_path)
    fake.control("POST", "deny", [{"resource": "nodes"}])  # system:masters is above RBAC
    status, _, lst = fake.get("/api/v1/nodes", token=None, conn=fake.conn(ctx))
    assert status == 200 and len(lst["items"]) == 5
    assert fake.control("GET", "requests")[-1]["user"] == "kubernetes-admin"
    assert fake.get("/api/v1/nodes")[0] == 403  # while the token's user is denied


def test_token_kubeconfig_and_rotation(fake):
    with open(os.path.join(fake.dir, "kubeconfig")) as f:
        kc = f.read()
    old = fake.token
    assert f"    token: {old}\n" in kc and f"server: {fake.url}\n" in kc
    assert fake.get("/api/v1/nodes", token=old)[0] == 200
    new = fake.control("POST", "rotate-token")["token"]
    assert new != old and fake.token == new
    assert fake.get("/api/v1/nodes", token=old)[0] == 401
    assert fake.get("/api/v1/nodes", token=new)[0] == 200
    with open(os.path.join(fake.dir, "kubeconfig")) as f:
        assert f"    token: {new}\n" in f.read()


# ---------------------------------------------------------------------------------------
# Fault injection and the control API
# ---------------------------------------------------------------------------------------

def test_status_faults_with_times_and_retry_after(fake, schema):
    fake.control("POST", "faults", [{"method": "GET", "path": "^/api/v1/nodes$", "kind": "status", "code": 503,
                                     "times": 1},
                                    {"path": "limit=7", "kind": "status", "code": 429, "retryAfter": 2}])
    status, _, err = fake.get("/api/v1/nodes")
    schema(err, STATUS)
    assert (status, err["reason"], err["code"]) == (503, "ServiceUnavailable", 503)
    assert fake.get("/api/v1/nodes")[0] == 200  # times: 1 is used up
    status, r, err = fake.get(q("/api/v1/nodes", limit=7))
    assert (status, err["reason"], err["details"]["retryAfterSeconds"]) == (429, "TooManyRequests", 2)
    assert r.getheader("Retry-After") == "2"
    fake.control("DELETE", "faults")
    assert fake.get(q("/api/v1/nodes", limit=7))[0] == 200


def test_latency_drop_and_reset_faults(fake):
    fake.control("POST", "faults", [{"path": "node-1", "kind": "latency", "delayMs": 300}])
    t = time.monotonic()
    assert fake.get("/api/v1/nodes/node-1")[0] == 200
    assert time.monotonic() - t >= 0.3
    fake.control("POST", "faults", [{"path": "node-2", "kind": "drop", "times": 1},
                                    {"path": "node-3", "kind": "reset", "times": 1}])
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        fake.get("/api/v1/nodes/node-2")
    with pytest.raises((ConnectionResetError, ssl.SSLError, http.client.RemoteDisconnected)):
        fake.get("/api/v1/nodes/node-3")
    assert fake.get("/api/v1/nodes/node-2")[0] == 200 and fake.get("/api/v1/nodes/node-3")[0] == 200


def test_inflight_shows_a_request_held_by_a_latency_fault_until_it_is_answered(fake):
    assert fake.control("GET", "inflight") == []
    fake.control("POST", "faults", [{"path": "node-1", "kind": "latency", "delayMs": 1500}])
    held = threading.Thread(target=fake.get, args=("/api/v1/nodes/node-1",))
    held.start()
    deadline = time.monotonic() + 5
    while fake.control("GET", "inflight") != [{"method": "GET", "path": "/api/v1/nodes/node-1", "query": ""}]:
        assert time.monotonic() < deadline, fake.control("GET", "inflight")
        time.sleep(0.02)
    held.join()
    assert fake.control("GET", "inflight") == []


def test_lost_fault_lands_the_write_and_drops_the_answer(fake):
    fake.control("POST", "faults", [{"method": "POST", "path": "/secrets", "kind": "lost", "delayMs": 200,
                                     "times": 1}])
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "landed"}, "data": {}}
    t = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
        fake.call("POST", "/api/v1/namespaces/default/secrets", body)
    assert time.monotonic() - t >= 0.2
    # The write took effect although its answer never came; the next one is answered.
    assert fake.get("/api/v1/namespaces/default/secrets/landed")[0] == 200
    status, _, err = fake.call("POST", "/api/v1/namespaces/default/secrets", body)
    assert (status, err["reason"]) == (409, "AlreadyExists")


def test_reset_fault_sends_rst(fake):
    # Python's TLS layer reports an RST as a plain EOF, so read the TCP socket underneath.
    fake.control("POST", "faults", [{"path": "reset-me", "kind": "reset"}, {"path": "drop-me", "kind": "drop"}])
    for path, expect_rst in (("reset-me", True), ("drop-me", False)):
        s = fake.ctx.wrap_socket(socket.create_connection(("127.0.0.1", fake.port)), server_hostname="127.0.0.1")
        s.sendall(f"GET /api/v1/nodes/{path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # The fault has been applied once the fake logs the request.
        assert wait_for(lambda: any(r["path"].endswith(path) for r in fake.control("GET", "requests")))
        raw = socket.socket(fileno=os.dup(s.fileno()))
        try:
            got = b""
            while chunk := raw.recv(1 << 16):  # queued TLS session tickets come first
                got += chunk
            assert not expect_rst and len(got) < 1000  # drop: EOF after the tickets, no answer
        except ConnectionResetError:
            assert expect_rst
        finally:
            raw.close()
            s.close()


def test_request_log_and_objects_control(fake):
    fake.control("DELETE", "requests")
    fake.get(q("/api/v1/nodes", limit=2))
    fake.call("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "logged"}})
    log = fake.control("GET", "requests")
    assert [(e["method"], e["path"], e["query"], e["status"]) for e in log] == [
        ("GET", "/api/v1/nodes", "limit=2", 200), ("POST", "/api/v1/namespaces/default/configmaps", "", 201)]
    assert log[1]["body"] == {"metadata": {"name": "logged"}}
    out = fake.control("POST", "objects", [{"path": "/api/v1/namespaces/kotsadm/pods",
                                            "object": {"metadata": {"name": "done"}, "spec": {"nodeName": "node-2"},
                                                       "status": {"phase": "Succeeded"}}}])
    assert out[0]["status"] == {"phase": "Succeeded"}
    assert fake.get("/api/v1/namespaces/kotsadm/pods/done")[2]["status"]["phase"] == "Succeeded"
    assert fake.control("DELETE", "objects", [{"apiVersion": "v1", "kind": "Pod",
                                               "metadata": {"name": "done", "namespace": "kotsadm"}}]) == [True]
    assert fake.get("/api/v1/namespaces/kotsadm/pods/done")[0] == 404


def test_node_ready_flip(fake, schema):
    before = fake.get("/api/v1/nodes/node-4")[2]
    node = fake.control("POST", "node-ready", {"name": "node-4", "ready": False})
    schema(node, CORE + "Node")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")
    old = next(c for c in before["status"]["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] >= old["lastTransitionTime"] and ready["lastTransitionTime"] != \
        old["lastTransitionTime"]
    assert {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"} in node["spec"]["taints"]
    node = fake.control("POST", "node-ready", {"name": "node-4", "ready": "Unknown"})
    assert next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] == "Unknown"
    node = fake.get("/api/v1/nodes/node-4")[2]
    assert node["spec"]["taints"][0]["key"] == "node.kubernetes.io/unreachable"
    fake.control("POST", "node-ready", {"name": "node-4", "ready": True})
    node = fake.get("/api/v1/nodes/node-4")[2]
    assert "taints" not in node["spec"]


# ---------------------------------------------------------------------------------------
# k0s specifics: etcd members and leases
# ---------------------------------------------------------------------------------------

def test_etcd_member_leave_and_leader_leases(start):
    f = start("--nodes", "4", "--controllers", "2")
    path = "/apis/etcd.k0sproject.io/v1beta1/etcdmembers"
    lst = f.get(path)[2]
    assert names(lst) == ["node-1", "node-2"] and lst["items"][0]["kind"] == "EtcdMember"  # CR items keep kind
    status, _, err = f.call("PATCH", f"{path}/node-2", {"spec": {"leave": True}},
                            ctype="application/strategic-merge-patch+json")
    assert (status, err["reason"]) == (415, "UnsupportedMediaType")
    status, _, m = f.call("PATCH", f"{path}/node-2", {"spec": {"leave": True}}, ctype="application/merge-patch+json")
    assert status == 200 and m["spec"]["leave"] is True and m["metadata"]["generation"] == 2
    def joined():
        m = f.get(f"{path}/node-2")[2]
        return next(c for c in m["status"]["conditions"] if c["type"] == "Joined")["status"]
    assert joined() == "True"  # leaving takes the etcd controller a moment
    assert wait_for(lambda: joined() == "False")
    leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    holder = f.get(f"{leases}/k0s-endpoint-reconciler")[2]["spec"]["holderIdentity"]
    assert holder == f.get(f"{leases}/k0s-ctrl-node-1")[2]["spec"]["holderIdentity"]
    assert holder != f.get(f"{leases}/k0s-ctrl-node-2")[2]["spec"]["holderIdentity"]


# ---------------------------------------------------------------------------------------
# Watch and discovery
# ---------------------------------------------------------------------------------------

class Watch:
    """A raw watch stream: one JSON event per line over chunked encoding."""

    def __init__(self, fake, path):
        self.conn = fake.conn()
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {fake.token}"})
        self.resp = self.conn.getresponse()

    def next(self):
        line = self.resp.readline()
        return json.loads(line) if line else None

    def close(self):
        self.conn.close()


def test_watch_from_a_list_version_sees_changes_and_bookmarks(fake, schema):
    _, _, lst = fake.get("/api/v1/nodes")
    rv = lst["metadata"]["resourceVersion"]
    fake.control("POST", "config", {"bookmarkMs": 200})
    w = Watch(fake, q("/api/v1/nodes", watch="1", resourceVersion=rv, allowWatchBookmarks="true",
                      timeoutSeconds="5"))
    assert w.resp.status == 200 and w.resp.getheader("Transfer-Encoding") == "chunked"
    fake.control("POST", "node-ready", {"name": "node-2", "ready": False})
    ev = w.next()
    assert ev["type"] == "MODIFIED" and ev["object"]["metadata"]["name"] == "node-2"
    assert ev["object"]["kind"] == "Node" and int(ev["object"]["metadata"]["resourceVersion"]) > int(rv)
    fake.control("DELETE", "objects", [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-3"}}])
    ev = w.next()
    assert ev["type"] == "DELETED" and ev["object"]["metadata"]["name"] == "node-3"
    ev = w.next()
    assert ev["type"] == "BOOKMARK" and set(ev["object"]["metadata"]) == {"resourceVersion"}
    w.close()


def test_watch_from_zero_lists_first_and_an_old_version_is_410_in_the_stream(fake):
    w = Watch(fake, q("/api/v1/nodes", watch="true", timeoutSeconds="1"))
    got = [w.next() for _ in range(5)]
    assert [e["type"] for e in got] == ["ADDED"] * 5
    assert w.next() is None  # timeoutSeconds ends it cleanly
    w.close()
    _, _, lst = fake.get("/api/v1/nodes")
    fake.control("POST", "node-ready", {"name": "node-1", "ready": False})
    fake.control("POST", "compact", {})
    w = Watch(fake, q("/api/v1/nodes", watch="1", resourceVersion=lst["metadata"]["resourceVersion"]))
    assert w.resp.status == 200
    ev = w.next()
    assert ev["type"] == "ERROR"
    st = ev["object"]
    assert (st["kind"], st["code"], st["reason"], st["status"]) == ("Status", 410, "Expired", "Failure")
    assert w.next() is None
    w.close()


def test_watch_reset_and_downtime_cut_streams(fake):
    w = Watch(fake, q("/api/v1/nodes", watch="1", timeoutSeconds="30"))
    for _ in range(5):
        w.next()
    fake.control("POST", "watch-reset", {})
    with pytest.raises((ConnectionError, http.client.IncompleteRead, ssl.SSLError)):
        while w.next() is not None:
            pass
        raise ConnectionError("ended without the chunked terminator")  # pragma: no cover
    w.close()
    fake.control("POST", "down", {"seconds": 1})
    with pytest.raises((ConnectionError, ssl.SSLError, http.client.RemoteDisconnected)):
        fake.get("/api/v1/nodes")

    def up():
        try:
            return fake.get("/version")[0] == 200
        except (ConnectionError, ssl.SSLError, http.client.HTTPException):
            return False
    assert wait_for(up, 5)


def test_discovery_answers_like_the_apiserver(fake):
    _, _, api = fake.get("/api")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    _, _, apis = fake.get("/apis")
    groups = {g["name"]: g["preferredVersion"]["version"] for g in apis["groups"]}
    assert groups["coordination.k8s.io"] == "v1" and groups["etcd.k0sproject.io"] == "v1beta1"
    _, _, core = fake.get("/api/v1")
    nodes = next(r for r in core["resources"] if r["name"] == "nodes")
    assert (nodes["kind"], nodes["namespaced"], nodes["shortNames"]) == ("Node", False, ["no"])
    assert "watch" in nodes["verbs"]
    status, _, _ = fake.get("/apis/nothing.example/v1")
    assert status == 404
