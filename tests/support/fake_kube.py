#!/usr/bin/env python3
"""A fake Kubernetes API server for joinery's tests (Python 3.11, standard library only).

It answers the way a real kube-apiserver (1.35, k0s flavour) does for the resources the
daemon touches: same paths, same wire shapes (list items without kind/apiVersion, Status
objects on every error, opaque continue tokens), same reasons and codes.

Usage:
    python3 tests/support/fake_kube.py --port 0 --dir DIR [--nodes N | --nodes-file F.json]
        [--controllers C] [--token T] [--token-user U] [--password-bcrypt HASH | --password P]
        [--latency-ms MS] [--pod-delete-delay-ms MS] [--seed-pods] [--no-anonymous] [--quiet]

--nodes N (default 3) makes node-1..node-N with InternalIPs 10.0.0.11 onwards, all Ready;
the first C (--controllers, default 1) are k0s controllers with Embedded Cluster's
controller role labels, the rest workers, and with N >= 3 the last one has no role labels.
Controllers also get an EtcdMember and kube-node-lease/k0s-ctrl-<name> Leases, the first
one holding kube-node-lease/k0s-endpoint-reconciler. Namespaces default, kube-system,
kube-public, kube-node-lease and kotsadm each hold ConfigMap kube-root-ca.crt (the CA).

Once ready it prints exactly one line `listening on https://127.0.0.1:PORT` to stdout and
then logs one line per request to stderr. DIR receives (certificates are made once with
the `openssl` CLI and reused): ca.crt ca.key server.crt server.key client.crt client.key,
token, kubeconfig (bearer token) and kubeconfig-cert (client certificate CN=kubernetes-admin,
O=system:masters), both shaped like k0s's admin.conf.

Resources: core v1 nodes, namespaces, secrets, configmaps, pods (+eviction, +status);
coordination.k8s.io/v1 leases; policy/v1 poddisruptionbudgets; apps/v1 daemonsets;
etcd.k0sproject.io/v1beta1 etcdmembers (a cluster-scoped CRD). Verbs: list (limit/continue,
labelSelector, fieldSelector), get, create, update, patch (merge, strategic, json), delete.
Small simulated controllers: a kubelet marks scheduled pods Running and removes deleted pods
after --pod-delete-delay-ms; a PDB controller keeps PodDisruptionBudget status current;
k0s's etcd controller answers `spec.leave: true` with condition Joined=False.

Authentication: `Authorization: Bearer <token>` or a client certificate signed by the CA
(user = CN, groups = O; system:masters bypasses the deny list like RBAC). No credentials at
all means system:anonymous, who may only read /version, /healthz, /livez, /readyz (the real
default); --no-anonymous turns that into 401. A wrong token is always 401.

Discovery: /api, /apis, /api/v1 and /apis/GROUP/VERSION (legacy shape), so kubectl works.
Watch (`?watch=1`): from resourceVersion (events after it), or from ""/"0" with the current
objects first as ADDED; BOOKMARK events every bookmarkMs with allowWatchBookmarks=true; a
version older than the last 20000 changes (or than /_fake/compact) gets one ERROR event with
a 410 Expired Status; timeoutSeconds ends the stream cleanly.

Not modelled: consistent snapshots for continued lists (a later page
shows current data), managedFields, admission beyond "the namespace must exist".

Control API (same port, no auth, never faulted), all JSON:
    POST   /_fake/faults        append rules [{method?, path (regex on path?query), kind:
                                status|latency|drop|reset|lost, code?, reason?, message?,
                                retryAfter?, delayMs?, times?}]; "lost" serves the request
                                (a write lands) and then drops the answer after delayMs
    DELETE /_fake/faults        clear rules;  GET /_fake/faults lists them
    POST   /_fake/rotate-token  {"token"?} -> {"token"}; the old token gets 401 from now on
    POST   /_fake/objects       upsert objects (apiVersion+kind, or {"path","object"}) as given
    DELETE /_fake/objects       remove objects at once [{apiVersion, kind, metadata}]
    GET    /_fake/requests      the last 2000 API requests [{method, path, query, status,
                                user, body?}]; status is "drop"/"reset" for those faults
    DELETE /_fake/requests      clear that log
    GET    /_fake/inflight      the API requests being served now [{method, path, query}]
                                (so a test can act while one is held by a latency fault)
    POST   /_fake/deny          replace the deny list [{verb?, resource?, subresource?,
                                namespace?, name?, user?, group?}]; absent = any, "*" = any,
                                but "pods" does not cover "pods/eviction" (as in RBAC)
    POST   /_fake/node-ready    {"name", "ready": true|false|"Unknown"}
    POST   /_fake/compact       expire every continue token and watch version issued so far (410)
    POST   /_fake/watch-reset   cut every open watch stream (RST)
    POST   /_fake/down          {"seconds"}: cut open watches, reset every API request meanwhile
    GET|POST /_fake/config      {"latencyMs", "bookmarkMs", "podDeleteDelayMs", "etcdLeaveDelayMs"}
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import gzip
import hmac
import ipaddress
import json
import os
import queue
import random
import re
import secrets
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

K8S_VERSION = "v1.35.1+k0s"
GZIP_MIN = 128 * 1024  # the apiserver compresses responses above this size
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DATA_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
SEL_KEY_RE = re.compile(r"([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def now_ts(offset: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def now_micro() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def clone(o):
    return json.loads(json.dumps(o))


# ---------------------------------------------------------------------------------------
# Resources and errors
# ---------------------------------------------------------------------------------------

@dataclass
class Res:
    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    status_sub: bool = False  # writes to the main resource keep the stored status
    returns_deleted: bool = False  # DELETE answers the object, not a Status
    generation: bool = False
    crd: bool = False  # unstructured: list items keep kind, no strategic merge patch
    fields: dict = field(default_factory=dict)  # extra field selectors: name -> getter

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def details(self, name: str | None = None, **extra) -> dict:
        d = {"name": name} if name else {}
        if self.group:
            d["group"] = self.group
        d["kind"] = self.plural
        d.update(extra)
        return d


def _get(*path):
    def getter(o):
        for p in path:
            o = o.get(p) if isinstance(o, dict) else None
        return "" if o is None else (str(o).lower() if isinstance(o, bool) else str(o))
    return getter


RESOURCES = [
    Res("nodes", "Node", "", "v1", False, status_sub=True,
        fields={"spec.unschedulable": lambda o: str(bool(o.get("spec", {}).get("unschedulable"))).lower()}),
    Res("namespaces", "Namespace", "", "v1", False, status_sub=True, returns_deleted=True,
        fields={"status.phase": _get("status", "phase")}),
    Res("secrets", "Secret", "", "v1", True, fields={"type": _get("type")}),
    Res("configmaps", "ConfigMap", "", "v1", True),
    Res("pods", "Pod", "", "v1", True, status_sub=True, returns_deleted=True, generation=True,
        fields={"spec.nodeName": _get("spec", "nodeName"), "status.phase": _get("status", "phase"),
                "spec.restartPolicy": _get("spec", "restartPolicy"),
                "spec.schedulerName": _get("spec", "schedulerName"),
                "spec.serviceAccountName": _get("spec", "serviceAccountName"),
                "status.podIP": _get("status", "podIP")}),
    Res("leases", "Lease", "coordination.k8s.io", "v1", True),
    Res("poddisruptionbudgets", "PodDisruptionBudget", "policy", "v1", True, status_sub=True, generation=True),
    Res("daemonsets", "DaemonSet", "apps", "v1", True, status_sub=True, generation=True),
    Res("etcdmembers", "EtcdMember", "etcd.k0sproject.io", "v1beta1", False, status_sub=True,
        generation=True, crd=True),
]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}
RES = {r.plural: r for r in RESOURCES}


class ApiError(Exception):
    """An error answered as a metav1.Status, exactly as the apiserver words it."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None,
                 headers: list | None = None, meta: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers, self.meta = details, headers or [], meta or {}

    def status(self) -> dict:
        s = {"kind": "Status", "apiVersion": "v1", "metadata": self.meta, "status": "Failure",
             "message": self.message}
        if self.reason:
            s["reason"] = self.reason
        if self.details is not None:
            s["details"] = self.details
        s["code"] = self.code
        return s


def not_found(res: Res, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', res.details(name))


def conflict(res: Res, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
                    res.details(name))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(msg: str) -> ApiError:
    return ApiError(400, "BadRequest", msg)


def invalid(res: Res, name: str, causes: list) -> ApiError:
    """causes: [(field, kind, detail)] like field.ErrorList, e.g. ("metadata.name", "Required value", "...")."""
    parts = [f"{f}: {k}: {d}" if d else f"{f}: {k}" for f, k, d in causes]
    msg = f'{res.kind} "{name}" is invalid: ' + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")
    det = {"name": name} if name else {}
    if res.group:
        det["group"] = res.group
    det["kind"] = res.kind
    reasons = {"Required value": "FieldValueRequired", "Invalid value": "FieldValueInvalid",
               "Forbidden": "FieldValueForbidden"}
    det["causes"] = [{"reason": reasons.get(k, "FieldValueInvalid"), "message": f"{k}: {d}" if d else k,
                      "field": f} for f, k, d in causes]
    return ApiError(422, "Invalid", msg, det)


NOT_FOUND_PATH = ApiError(404, "NotFound", "the server could not find the requested resource", {})
METHOD_NOT_ALLOWED = ApiError(405, "MethodNotAllowed",
                              "the server does not allow this method on the requested resource", {})
FAULT_DEFAULTS = {
    400: ("BadRequest", "the server rejected our request for an unknown reason"),
    409: ("Conflict", "the server reported a conflict"),
    410: ("Expired", "the resource has expired"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: injected fault"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: ("Timeout", "the server was unable to return a response in the time allotted, "
                     "but may still be processing the request"),
}


# ---------------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------------

def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value lists."""
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [p.strip() for p in out if p.strip()]


def parse_label_selector(s: str) -> list:
    reqs = []
    for part in _split_top(s):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^()]*)\)", part):
            reqs.append((m[1], m[2], {v.strip() for v in m[3].split(",") if v.strip()}))
        elif m := re.fullmatch(r"!\s*(\S+)", part):
            reqs.append((m[1], "!", None))
        elif m := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)", part):
            reqs.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
        elif re.fullmatch(r"[^=!\s(),]+", part):
            reqs.append((part, "exists", None))
        else:
            raise bad_request(f"unable to parse requirement: found '{part}', expected: "
                              "in, notin, =, ==, !=, gt, lt")
    for key, _, _ in reqs:
        if not SEL_KEY_RE.fullmatch(key):
            raise bad_request(f"unable to parse requirement: invalid label key \"{key}\": name part must "
                              "consist of alphanumeric characters, '-', '_' or '.'")
    return reqs


def labels_match(reqs: list, labels: dict) -> bool:
    for key, op, val in reqs:
        have = labels.get(key)
        ok = {"=": have == val, "!=": have != val, "exists": have is not None, "!": have is None,
              "in": have is not None and have in (val or ()), "notin": have is None or have not in (val or ())}[op]
        if not ok:
            return False
    return True


def parse_field_selector(res: Res, s: str) -> list:
    reqs = []
    for part in _split_top(s):
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{s}'; can't understand '{part}'")
        fname = m[1].strip()
        if fname == "metadata.name":
            getter = _get("metadata", "name")
        elif fname == "metadata.namespace":
            getter = _get("metadata", "namespace")
        elif fname in res.fields:
            getter = res.fields[fname]
        else:
            raise bad_request(f'field label not supported: {fname}')
        reqs.append((getter, m[2] == "!=", m[3]))
    return reqs


def fields_match(reqs: list, obj: dict) -> bool:
    return all((g(obj) == v) != neg for g, neg, v in reqs)


def selector_matches(sel: dict | None, labels: dict) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions); empty selects nothing (as eviction does)."""
    if not sel or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        return False
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for e in sel.get("matchExpressions") or []:
        if not labels_match([(e.get("key"), ops.get(e.get("operator"), "in"), set(e.get("values") or []))], labels):
            return False
    return True


# ---------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------

def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return clone(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


SMP_MERGE_KEYS = {"conditions": "type", "addresses": "type", "containers": "name", "initContainers": "name",
                  "volumes": "name", "env": "name", "ownerReferences": "uid", "tolerations": "key"}


def strategic_merge_patch(target, patch):
    """Merge patch plus merge-by-key for the well-known lists; `$` directives are dropped."""
    if not isinstance(patch, dict):
        return clone(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            continue
        if v is None:
            out.pop(k, None)
        elif k in SMP_MERGE_KEYS and isinstance(v, list) and isinstance(out.get(k), list):
            key = SMP_MERGE_KEYS[k]
            merged = [clone(x) for x in out[k]]
            for item in v:
                idx = next((i for i, x in enumerate(merged) if isinstance(x, dict) and isinstance(item, dict)
                            and x.get(key) == item.get(key)), None)
                if isinstance(item, dict) and item.get("$patch") == "delete":
                    if idx is not None:
                        merged.pop(idx)
                elif idx is None:
                    merged.append(strategic_merge_patch({}, item))
                else:
                    merged[idx] = strategic_merge_patch(merged[idx], item)
            out[k] = merged
        else:
            out[k] = strategic_merge_patch(out.get(k), v)
    return out


def json_patch(doc, ops):
    """RFC 6902; raises ValueError with a message like evanphx/json-patch's."""
    doc = clone(doc)

    def walk(path):
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not path.startswith("/") or not parts:
            raise ValueError(f"invalid JSON pointer: {path!r}")
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        return parent, parts[-1]

    def get(path):
        parent, key = walk(path)
        return parent[int(key)] if isinstance(parent, list) else parent[key]

    def add(path, value):
        parent, key = walk(path)
        if isinstance(parent, list):
            parent.insert(len(parent) if key == "-" else int(key), value)
        else:
            parent[key] = value

    def remove(path):
        parent, key = walk(path)
        return parent.pop(int(key) if isinstance(parent, list) else key)

    if not isinstance(ops, list):
        raise ValueError("json patch must be a list of operations")
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        try:
            if kind == "add":
                add(path, clone(op.get("value")))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, clone(op.get("value")))
            elif kind == "move":
                add(path, remove(op["from"]))
            elif kind == "copy":
                add(path, clone(get(op["from"])))
            elif kind == "test":
                if get(path) != op.get("value"):
                    raise ValueError(f"testing value {path} failed: test failed")
            else:
                raise ValueError(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"{kind} operation does not apply: doc is missing path: {path}: {e}") from None
    return doc


# ---------------------------------------------------------------------------------------
# Object store (thread-safe; stored dicts are never mutated in place, so readers may
# serialise what they got after releasing the lock)
# ---------------------------------------------------------------------------------------

META_ORDER = ["name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
              "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
              "ownerReferences", "finalizers", "managedFields"]


def ordered(res: Res, obj: dict) -> dict:
    """Field order as the apiserver writes it: metadata first, status last; CRDs sorted like Go maps."""
    obj = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
    meta = obj.get("metadata") or {}
    meta = {**{k: meta[k] for k in META_ORDER if k in meta}, **{k: v for k, v in meta.items() if k not in META_ORDER}}
    out = {"metadata": meta, **{k: v for k, v in obj.items() if k not in ("metadata", "status")}}
    if "status" in obj:
        out["status"] = obj["status"]
    return json.loads(json.dumps(out, sort_keys=True)) if res.crd else out


def wire(res: Res, obj: dict) -> dict:
    return {"apiVersion": res.api_version, "kind": res.kind, **obj} if res.crd else \
        {"kind": res.kind, "apiVersion": res.api_version, **obj}


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.rv = 1000
        self.compacted_rv = 0
        self.objs: dict[str, dict] = {r.plural: {} for r in RESOURCES}
        self._keys: dict[str, list | None] = {r.plural: None for r in RESOURCES}
        self.manual_pdbs: set = set()  # PDBs whose status a test set by hand: the controller leaves them be
        self.pod_delete_delay = 0.0
        self.etcd_leave_delay = 0.3
        # The watch cache: recent changes as (rv, type, plural, wire object). A watch from
        # a version older than `events_floor` is answered with an ERROR event carrying a
        # 410 Expired Status, as the apiserver's watch cache does.
        self.events = collections.deque(maxlen=20000)
        self.events_floor = self.rv
        self.changed = threading.Condition(self.lock)

    # -- primitives ------------------------------------------------------------------
    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def keys(self, res: Res) -> list:
        ks = self._keys[res.plural]
        if ks is None:
            ks = self._keys[res.plural] = sorted(self.objs[res.plural])
        return ks

    def _store(self, res: Res, obj: dict) -> dict:
        obj = {**obj, "metadata": {**obj.get("metadata", {}), "resourceVersion": self.next_rv()}}
        obj = ordered(res, obj)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if key not in self.objs[res.plural]:
            self._keys[res.plural] = None
            self._event("ADDED", res, obj)
        else:
            self._event("MODIFIED", res, obj)
        self.objs[res.plural][key] = obj
        self._after_write(res, obj)
        return obj

    def _event(self, type_: str, res: Res, obj: dict) -> None:
        """Record a change for watchers (called with the lock held)."""
        if len(self.events) == self.events.maxlen:
            self.events_floor = self.events[0][0]
        self.events.append((int(obj["metadata"]["resourceVersion"]), type_, res.plural, wire(res, obj)))
        self.changed.notify_all()

    def _remove(self, res: Res, key: tuple) -> dict | None:
        obj = self.objs[res.plural].pop(key, None)
        if obj is not None:
            self._keys[res.plural] = None
            gone = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self.next_rv()}}
            self._event("DELETED", res, gone)
            if res.plural == "namespaces":  # the namespace controller empties it
                for r in RESOURCES:
                    if r.namespaced:
                        for k in [k for k in self.objs[r.plural] if k[0] == key[1]]:
                            self._remove(r, k)
            self._after_write(res, obj, removed=True)
        return obj

    def lookup(self, res: Res, ns: str, name: str) -> dict:
        obj = self.objs[res.plural].get((ns, name))
        if obj is None:
            raise not_found(res, name)
        return obj

    # -- verbs -----------------------------------------------------------------------
    def get(self, res: Res, ns: str, name: str) -> dict:
        with self.lock:
            return wire(res, self.lookup(res, ns, name))

    def list(self, res: Res, ns: str | None, q: dict) -> dict:
        lsel = parse_label_selector(q["labelSelector"]) if q.get("labelSelector") else []
        fsel = parse_field_selector(res, q["fieldSelector"]) if q.get("fieldSelector") else []
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise bad_request(f"limit: Invalid value: {q.get('limit')!r}") from None
        with self.lock:
            keys, list_rv, start = self.keys(res), self.rv, 0
            if q.get("continue"):
                list_rv, start_key = self._decode_continue(q["continue"], res, ns)
                start = bisect.bisect_right(keys, start_key)
            elif ns is not None and res.namespaced:
                start = bisect.bisect_left(keys, (ns, ""))
            items, last, i = [], None, start
            store = self.objs[res.plural]
            while i < len(keys):
                key = keys[i]
                i += 1
                if ns is not None and res.namespaced and key[0] != ns:
                    break  # past this namespace: nothing after it can match
                obj = store[key]
                if lsel and not labels_match(lsel, obj["metadata"].get("labels") or {}):
                    continue
                if fsel and not fields_match(fsel, obj):
                    continue
                items.append(wire(res, obj) if res.crd else obj)
                last = key
                if limit and len(items) >= limit:
                    break
            remaining = sum(1 for k in keys[i:] if ns is None or not res.namespaced or k[0] == ns)
        meta = {"resourceVersion": str(list_rv)}
        if limit and len(items) >= limit and remaining:
            start_str = f"{last[0]}/{last[1]}" if (res.namespaced and ns is None) else last[1]
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"v": "meta.k8s.io/v1", "rv": list_rv, "start": start_str + "\x00"},
                separators=(",", ":")).encode()).decode().rstrip("=")
            if not lsel and not fsel:
                meta["remainingItemCount"] = remaining
        return {"kind": res.kind + "List", "apiVersion": res.api_version, "metadata": meta, "items": items}

    def _decode_continue(self, token: str, res: Res, ns: str | None) -> tuple:
        try:
            c = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            rv, start = int(c["rv"]), c["start"]
            if c["v"] != "meta.k8s.io/v1" or not start.endswith("\x00"):
                raise ValueError
        except Exception:
            raise bad_request("continue key is not valid: incorrect encoded start resourceVersion "
                              "(version meta.k8s.io/v1)") from None
        if rv <= self.compacted_rv:
            raise ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                           "list result. You can start a new list without the continue parameter, or use the "
                           "continue token in this response to retrieve the remainder of the results. Continuing "
                           "with the provided token results in an inconsistent list - objects that were created, "
                           "modified, or deleted between the time the first chunk was returned and now may show "
                           "up in the list.")
        start = start[:-1]
        if res.namespaced and ns is None:
            sns, _, sname = start.partition("/")
            return rv, (sns, sname)
        return rv, (ns or "", start)

    def create(self, res: Res, ns: str, body: dict) -> dict:
        meta = body.setdefault("metadata", {}) if isinstance(body.get("metadata"), dict) else None
        if meta is None:
            raise bad_request(f"{res.kind} in version \"{res.version}\" cannot be handled as a {res.kind}: "
                              "metadata must be an object")
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on "
                                  "the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        with self.lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            self._validate(res, body)
            if res.namespaced and ("", ns) not in self.objs["namespaces"]:
                raise not_found(RES["namespaces"], ns)
            if (meta.get("namespace", ""), meta["name"]) in self.objs[res.plural]:
                raise ApiError(409, "AlreadyExists", f'{res.qualified} "{meta["name"]}" already exists',
                               res.details(meta["name"]))
            for k in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_ts()
            if res.generation:
                meta["generation"] = 1
            if res.status_sub and res.plural != "nodes":
                body.pop("status", None)
            self._defaults(res, body)
            return wire(res, self._store(res, body))

    def _validate(self, res: Res, body: dict) -> None:
        name = body["metadata"].get("name") or ""
        if not name:
            raise invalid(res, "", [("metadata.name", "Required value", "name or generateName is required")])
        rx, what = (LABEL_RE, "RFC 1123 label") if res.plural == "namespaces" else (NAME_RE, "RFC 1123 subdomain")
        if not rx.fullmatch(name) or len(name) > (63 if rx is LABEL_RE else 253):
            raise invalid(res, name, [("metadata.name", "Invalid value",
                                       f'"{name}": a lowercase {what} must consist of lower case alphanumeric '
                                       "characters, '-' or '.', and must start and end with an alphanumeric "
                                       f"character (e.g. 'example.com', regex used for validation is "
                                       f"'{rx.pattern}')")])
        if res.plural in ("secrets", "configmaps"):
            for section in ("data", "stringData", "binaryData"):
                for k in body.get(section) or {}:
                    if not DATA_KEY_RE.fullmatch(k):
                        raise invalid(res, name, [(f"{section}[{k}]", "Invalid value",
                                                   f"\"{k}\": a valid config key must consist of alphanumeric "
                                                   "characters, '-', '_' or '.' (e.g. 'key.name',  or "
                                                   "'KEY_NAME',  or 'key-name', regex used for validation is "
                                                   "'[-._a-zA-Z0-9]+')")])
        if res.plural == "secrets":
            for v in (body.get("data") or {}).values():
                try:
                    base64.b64decode(v, validate=True)
                except Exception:
                    raise bad_request('Secret in version "v1" cannot be handled as a Secret: illegal base64 '
                                      'data at input byte 0') from None
            for k, v in (body.pop("stringData", None) or {}).items():
                body.setdefault("data", {})[k] = b64(str(v))
            body.setdefault("type", "Opaque")

    def _defaults(self, res: Res, body: dict) -> None:
        if res.plural == "namespaces":
            body.setdefault("spec", {"finalizers": ["kubernetes"]})
            body["status"] = {"phase": "Active"}
        elif res.plural == "pods":
            spec = body.setdefault("spec", {})
            for k, v in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30),
                         ("dnsPolicy", "ClusterFirst"), ("schedulerName", "default-scheduler")):
                spec.setdefault(k, v)
            body["status"] = self._kubelet_status(spec)

    def _kubelet_status(self, spec: dict) -> dict:
        """What scheduler + kubelet would soon report: Running and Ready when bound to a node."""
        if not spec.get("nodeName"):
            return {"phase": "Pending", "qosClass": "BestEffort"}
        t = now_ts()
        node = self.objs["nodes"].get(("", spec["nodeName"]))
        ip = next((a["address"] for a in ((node or {}).get("status", {}).get("addresses") or [])
                   if a.get("type") == "InternalIP"), "10.0.0.1")
        conds = [{"type": c, "status": "True", "lastProbeTime": None, "lastTransitionTime": t}
                 for c in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        return {"phase": "Running", "conditions": conds, "hostIP": ip, "hostIPs": [{"ip": ip}],
                "podIP": f"10.244.{random.randint(0, 255)}.{random.randint(2, 254)}", "startTime": t,
                "qosClass": "BestEffort"}

    def update(self, res: Res, ns: str, name: str, body: dict, sub: str | None) -> dict:
        if not isinstance(body.get("metadata"), dict):
            body["metadata"] = {}
        meta = body["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if res.namespaced and meta.get("namespace") and meta["namespace"] != ns:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        with self.lock:
            cur = self.lookup(res, ns, name)
            rv = meta.get("resourceVersion")
            if not rv and res.crd:
                raise invalid(res, name, [("metadata.resourceVersion", "Invalid value",
                                           "0x0: must be specified for an update")])
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise conflict(res, name, STALE)
            return wire(res, self._write_over(res, cur, clone(body), sub))

    def _write_over(self, res: Res, cur: dict, new: dict, sub: str | None) -> dict:
        """Shared tail of update and patch: keep system fields and the right half of spec/status."""
        if sub == "status":
            new = {**clone(cur), "status": new.get("status", {})}
        elif res.status_sub and "status" in cur:
            new["status"] = clone(cur["status"])
        elif res.status_sub:
            new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if k in cur["metadata"]:
                meta[k] = cur["metadata"][k]
            else:
                meta.pop(k, None)
        if res.generation and sub != "status" and \
                {k: v for k, v in new.items() if k not in ("metadata", "status")} != \
                {k: v for k, v in cur.items() if k not in ("metadata", "status")}:
            meta["generation"] = cur["metadata"].get("generation", 1) + 1
        if res.plural == "secrets":
            for k, v in (new.pop("stringData", None) or {}).items():
                new.setdefault("data", {})[k] = b64(str(v))
        if res.plural == "poddisruptionbudgets":
            self.manual_pdbs.discard((meta.get("namespace", ""), meta["name"]))
        obj = self._store(res, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and \
                not (res.plural == "pods" and self.pod_delete_delay > 0):
            self._remove(res, (meta.get("namespace", ""), meta["name"]))
        return obj

    def patch(self, res: Res, ns: str, name: str, ctype: str, raw: bytes, sub: str | None) -> dict:
        ctype = ctype.split(";")[0].strip()
        kinds = ["application/json-patch+json", "application/merge-patch+json"]
        if not res.crd:
            kinds.append("application/strategic-merge-patch+json")
        if ctype not in kinds:
            accepted = kinds[:2] + ["application/apply-patch+yaml"] + kinds[2:]
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                           f"accepted media types include: {', '.join(accepted)}", {})
        try:
            patch = json.loads(raw or b"null")
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}") from None
        with self.lock:
            cur = self.lookup(res, ns, name)
            doc = wire(res, cur)
            try:
                if ctype == "application/json-patch+json":
                    new = json_patch(doc, patch)
                elif not isinstance(patch, dict):
                    raise bad_request("error decoding patch: the patch must be a JSON object")
                elif ctype == "application/merge-patch+json":
                    new = merge_patch(doc, patch)
                else:
                    new = strategic_merge_patch(doc, patch)
            except ValueError as e:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request "
                               f"({e})", {}) from None
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
                raise conflict(res, name, STALE)
            if (new.get("metadata") or {}).get("name", name) != name:
                raise bad_request(f"metadata.name: Invalid value: {new['metadata']['name']!r}: field is immutable")
            return wire(res, self._write_over(res, cur, new, sub))

    def delete(self, res: Res, ns: str, name: str, opts: dict) -> tuple[int, dict]:
        with self.lock:
            cur = self.lookup(res, ns, name)
            pre = (opts or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
                raise conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                          f"object meta: {cur['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
                raise conflict(res, name, f"Precondition failed: ResourceVersion in precondition: "
                                          f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                          f"{cur['metadata']['resourceVersion']}")
            key = (ns if res.namespaced else "", name)
            grace = opts.get("gracePeriodSeconds")
            graceful = (res.plural == "pods" and self.pod_delete_delay > 0 and grace != 0
                        and cur.get("spec", {}).get("nodeName")
                        and cur.get("status", {}).get("phase") not in ("Succeeded", "Failed"))
            if cur["metadata"].get("deletionTimestamp"):
                return 200, wire(res, cur)  # already terminating: the real server answers the object again
            if graceful or cur["metadata"].get("finalizers"):
                obj = clone(cur)
                g = grace if grace is not None else cur.get("spec", {}).get("terminationGracePeriodSeconds", 30)
                obj["metadata"]["deletionTimestamp"] = now_ts(g if graceful else 0)
                obj["metadata"]["deletionGracePeriodSeconds"] = g if graceful else 0
                obj = self._store(res, obj)
                if graceful:
                    uid = cur["metadata"]["uid"]
                    t = threading.Timer(self.pod_delete_delay, self._finish_pod_delete, (key, uid))
                    t.daemon = True
                    t.start()
                return 200, wire(res, obj)
            if res.plural == "pods":
                obj = clone(cur)
                obj["metadata"]["deletionTimestamp"] = now_ts()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                cur = obj
            self._remove(res, key)
            if res.plural == "namespaces":
                cur = clone(cur)
                cur["metadata"]["deletionTimestamp"] = now_ts()
                cur["status"] = {"phase": "Terminating"}
            if res.returns_deleted:
                return 200, wire(res, cur)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": res.details(name, uid=cur["metadata"]["uid"])}

    def _finish_pod_delete(self, key: tuple, uid: str) -> None:
        with self.lock:
            obj = self.objs["pods"].get(key)
            if obj is not None and obj["metadata"]["uid"] == uid:
                self._remove(RES["pods"], key)

    # -- eviction (pkg/registry/core/pod/storage/eviction.go) --------------------------
    def evict(self, ns: str, name: str, body: dict) -> tuple[int, dict]:
        if not isinstance(body, dict) or (body.get("metadata") or {}).get("name") != name:
            raise bad_request("name in URL does not match name in Eviction object")
        opts = body.get("deleteOptions") or {}
        success = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        with self.lock:
            pod = self.lookup(RES["pods"], ns, name)
            st = pod.get("status") or {}
            if st.get("phase") in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
                self.delete(RES["pods"], ns, name, opts)
                return 201, success
            labels = pod["metadata"].get("labels") or {}
            pdbs = [p for (pns, _), p in sorted(self.objs["poddisruptionbudgets"].items())
                    if pns == ns and selector_matches((p.get("spec") or {}).get("selector"), labels)]
            if len(pdbs) > 1:
                return 500, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": "This pod has more than one PodDisruptionBudget, which the eviction "
                                        "subresource does not support.", "code": 500}
            if pdbs:
                pdb = pdbs[0]
                ps = pdb.get("status") or {}
                healthy, desired = ps.get("currentHealthy", 0), ps.get("desiredHealthy", 0)
                unhealthy_ok = not pod_ready(pod) and (
                    healthy >= desired > 0 or (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow")
                if not unhealthy_ok:
                    if ps.get("disruptionsAllowed", 0) <= 0:
                        err = ApiError(429, "TooManyRequests",
                                       "Cannot evict pod as it would violate the pod's disruption budget.",
                                       {"causes": [{"reason": "DisruptionBudget",
                                                    "message": f"The disruption budget {pdb['metadata']['name']} "
                                                               f"needs {desired} healthy pods and has {healthy} "
                                                               "currently"}]})
                        raise err
                    new = clone(pdb)
                    new["status"]["disruptionsAllowed"] = ps["disruptionsAllowed"] - 1
                    new["status"].setdefault("disruptedPods", {})[name] = now_ts()
                    self._store(RES["poddisruptionbudgets"], new)
            self.delete(RES["pods"], ns, name, opts)
            return 201, success

    # -- simulated controllers -----------------------------------------------------------
    def _after_write(self, res: Res, obj: dict, removed: bool = False) -> None:
        if res.plural in ("pods", "poddisruptionbudgets"):
            self._sync_pdbs(obj["metadata"].get("namespace", ""))
        elif res.plural == "etcdmembers" and not removed and (obj.get("spec") or {}).get("leave"):
            joined = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Joined"]
            if not joined or joined[0].get("status") != "False":
                t = threading.Timer(self.etcd_leave_delay, self._etcd_left, (obj["metadata"]["name"],))
                t.daemon = True
                t.start()

    def _sync_pdbs(self, ns: str) -> None:
        """The disruption controller: status from the pods a PDB selects (expected = those not finished)."""
        if not any(k[0] == ns for k in self.objs["poddisruptionbudgets"]):
            return
        pods = [p for (pns, _), p in self.objs["pods"].items() if pns == ns]
        for key, pdb in list(self.objs["poddisruptionbudgets"].items()):
            if key[0] != ns or key in self.manual_pdbs:
                continue
            spec = pdb.get("spec") or {}
            sel = [p for p in pods if selector_matches(spec.get("selector"), p["metadata"].get("labels") or {})]
            expected = sum(1 for p in sel if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))
            healthy = sum(1 for p in sel if pod_ready(p) and not p["metadata"].get("deletionTimestamp"))
            if "minAvailable" in spec:
                desired = scaled(spec["minAvailable"], expected)
            elif "maxUnavailable" in spec:
                desired = max(0, expected - scaled(spec["maxUnavailable"], expected))
            else:
                desired = expected
            allowed = max(0, healthy - desired)
            old = pdb.get("status") or {}
            cond_status = "True" if allowed > 0 else "False"
            old_cond = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {})
            status = {"observedGeneration": pdb["metadata"].get("generation", 1), "disruptionsAllowed": allowed,
                      "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
                      "conditions": [{"type": "DisruptionAllowed", "status": cond_status,
                                      "observedGeneration": pdb["metadata"].get("generation", 1),
                                      "lastTransitionTime": old_cond.get("lastTransitionTime", now_ts())
                                      if old_cond.get("status") == cond_status else now_ts(),
                                      "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                                      "message": ""}]}
            if {k: v for k, v in old.items() if k != "disruptedPods"} != status:
                self.objs["poddisruptionbudgets"][key] = {**pdb, "metadata": {
                    **pdb["metadata"], "resourceVersion": self.next_rv()}, "status": status}

    def _etcd_left(self, name: str) -> None:
        with self.lock:
            cur = self.objs["etcdmembers"].get(("", name))
            if cur is None or not (cur.get("spec") or {}).get("leave"):
                return
            new = clone(cur)
            st = new.setdefault("status", {})
            st["conditions"] = [c for c in st.get("conditions") or [] if c.get("type") != "Joined"] + [
                {"type": "Joined", "status": "False", "lastTransitionTime": now_ts(),
                 "message": "Member removed from the etcd cluster"}]
            st["reconcileStatus"] = "Success"
            self._store(RES["etcdmembers"], new)

    # -- control API helpers ------------------------------------------------------------
    def upsert_raw(self, res: Res, obj: dict) -> dict:
        """Store an object as given (status included), filling only what the server always sets."""
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise bad_request("object has no metadata.name")
        if res.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
        if res.plural == "secrets":
            for k, v in (obj.pop("stringData", None) or {}).items():
                obj.setdefault("data", {})[k] = b64(str(v))
        with self.lock:
            cur = self.objs[res.plural].get((meta.get("namespace", ""), meta["name"]))
            meta.setdefault("uid", cur["metadata"]["uid"] if cur else str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", cur["metadata"]["creationTimestamp"] if cur else now_ts())
            if res.generation:
                meta.setdefault("generation", 1)
            if res.plural == "poddisruptionbudgets" and "disruptionsAllowed" in (obj.get("status") or {}):
                self.manual_pdbs.add((meta["namespace"], meta["name"]))
            return wire(res, self._store(res, obj))

    def remove_raw(self, res: Res, ns: str, name: str) -> bool:
        with self.lock:
            return self._remove(res, (ns if res.namespaced else "", name)) is not None

    def set_node_ready(self, name: str, ready) -> dict:
        status = {True: "True", False: "False"}.get(ready, "Unknown")
        with self.lock:
            node = clone(self.lookup(RES["nodes"], "", name))
            t = now_ts()
            for c in node.setdefault("status", {}).setdefault("conditions", []):
                if c.get("type") == "Ready":
                    if c.get("status") != status:
                        c["lastTransitionTime"] = t
                    c["status"], c["lastHeartbeatTime"] = status, t
                    c["reason"], c["message"] = {
                        "True": ("KubeletReady", "kubelet is posting ready status"),
                        "False": ("KubeletNotReady", "container runtime network not ready: NetworkReady=false"),
                        "Unknown": ("NodeStatusUnknown", "Kubelet stopped posting node status.")}[status]
            # The node lifecycle controller taints nodes that are not ready.
            spec = node.setdefault("spec", {})
            taints = [x for x in spec.get("taints") or [] if x.get("key") not in
                      ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
            if status != "True":
                key = "node.kubernetes.io/not-ready" if status == "False" else "node.kubernetes.io/unreachable"
                taints += [{"key": key, "effect": "NoSchedule"}, {"key": key, "effect": "NoExecute", "timeAdded": t}]
            if taints:
                spec["taints"] = taints
            else:
                spec.pop("taints", None)
            return wire(RES["nodes"], self._store(RES["nodes"], node))


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def scaled(v, total: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent with rounding up."""
    if isinstance(v, str) and v.endswith("%"):
        return -(-int(v[:-1]) * total // 100)
    return int(v)


# ---------------------------------------------------------------------------------------
# Seed data in the real wire shape (see /work/shared/kube/*.json)
# ---------------------------------------------------------------------------------------

ROLE = "kots.io/embedded-cluster-role"


def make_node(name: str, ip: str, role: str | None, created: str) -> dict:
    labels = {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if role:
        labels.update({ROLE: "total-1", ROLE + "-0": role})
    if role == "controller":
        labels.update({"node-role.kubernetes.io/control-plane": "true", "node.k0sproject.io/role": "control-plane"})
    alloc = {"cpu": "4", "ephemeral-storage": "73608360Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0",
             "memory": "16266588Ki", "pods": "110"}
    cond = [(t, "False", r, m) for t, r, m in (
        ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))]
    cond.append(("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    n = int(ipaddress.IPv4Address(ip)) & 0xFFFF
    images = [("quay.io/k0sproject/kube-proxy", "v1.35.1", 30_867_414), ("quay.io/k0sproject/coredns", "1.12.2",
              22_384_805), ("quay.io/k0sproject/kube-router", "v2.5.0-iptables1.8.11-0", 37_871_902),
              ("registry.k8s.io/pause", "3.10", 320_368)]
    return {
        "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), "creationTimestamp": created,
                     "labels": labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                     "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"podCIDR": f"10.244.{n % 256}.0/24", "podCIDRs": [f"10.244.{n % 256}.0/24"]},
        "status": {
            "capacity": {**alloc, "ephemeral-storage": "79869928Ki", "memory": "16368988Ki"},
            "allocatable": alloc,
            "conditions": [{"type": t, "status": s, "lastHeartbeatTime": now_ts(), "lastTransitionTime": created,
                            "reason": r, "message": m} for t, s, r, m in cond],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": uuid.uuid5(uuid.NAMESPACE_OID, name).hex,
                         "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_X500, name)),
                         "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                         "kernelVersion": "6.8.0-60-generic", "osImage": "Ubuntu 24.04.2 LTS",
                         "containerRuntimeVersion": "containerd://1.7.27", "kubeletVersion": K8S_VERSION,
                         "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            "images": [{"names": [f"{i}:{v}"], "sizeBytes": sz} for i, v, sz in images],
            "features": {"supplementalGroupsPolicy": True},
            "runtimeHandlers": [{"name": "", "features": {"recursiveReadOnlyMounts": True, "userNamespaces": True}},
                                {"name": "runc", "features": {"recursiveReadOnlyMounts": True,
                                                              "userNamespaces": True}}]}}


def seed(store: Store, args, ca_pem: str) -> None:
    created = now_ts(-86400)
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease", "kotsadm"):
        store.upsert_raw(RES["namespaces"], {"metadata": {"name": ns, "creationTimestamp": created, "labels": {
            "kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        store.upsert_raw(RES["configmaps"], {"metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                                                          "creationTimestamp": created,
                                                          "annotations": {"kubernetes.io/description": (
                                                              "Contains a CA bundle that can be used to verify the "
                                                              "kube-apiserver when using internal endpoints such as "
                                                              "the internal service IP or kubernetes.default.svc. "
                                                              "No other usage is guaranteed across distributions of "
                                                              "Kubernetes clusters.")}},
                                             "data": {"ca.crt": ca_pem}})
    nodes = []
    if args.nodes_file:
        with open(args.nodes_file) as f:
            data = json.load(f)
        nodes = data["items"] if isinstance(data, dict) else data
    else:
        for i in range(args.nodes):
            role = "controller" if i < args.controllers else "worker"
            if args.nodes >= 3 and i == args.nodes - 1:
                role = None  # a node that joined without Embedded Cluster's role labels
            nodes.append(make_node(f"node-{i + 1}", str(ipaddress.IPv4Address(0x0A00000B + i)), role, created))
    ctrl_ids = {}
    for node in nodes:
        store.upsert_raw(RES["nodes"], node)
        name = node["metadata"]["name"]
        store.upsert_raw(RES["leases"], {"metadata": {"name": name, "namespace": "kube-node-lease",
                                                      "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                                           "name": name,
                                                                           "uid": node["metadata"]["uid"]}]},
                                         "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                                                  "renewTime": now_micro()}})
        if "node.k0sproject.io/role" in (node["metadata"].get("labels") or {}):
            ctrl_ids[name] = uuid.uuid5(uuid.NAMESPACE_OID, "k0s-ctrl-" + name).hex[:16]
            ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
            store.upsert_raw(RES["etcdmembers"], {
                "apiVersion": "etcd.k0sproject.io/v1beta1", "kind": "EtcdMember",
                "metadata": {"name": name}, "spec": {"leave": False},
                "status": {"peerAddress": ip, "memberID": uuid.uuid5(uuid.NAMESPACE_DNS, "etcd-" + name).hex[:16],
                           "reconcileStatus": "Success",
                           "conditions": [{"type": "Joined", "status": "True", "lastTransitionTime": created}]}})
    for name, ident in ctrl_ids.items():
        store.upsert_raw(RES["leases"], {"metadata": {"name": "k0s-ctrl-" + name, "namespace": "kube-node-lease"},
                                         "spec": {"holderIdentity": ident, "leaseDurationSeconds": 60,
                                                  "acquireTime": now_micro(), "renewTime": now_micro(),
                                                  "leaseTransitions": 0}})
    if ctrl_ids:
        leader = next(iter(ctrl_ids.values()))
        store.upsert_raw(RES["leases"], {"metadata": {"name": "k0s-endpoint-reconciler", "namespace":
                                                      "kube-node-lease"},
                                         "spec": {"holderIdentity": leader, "leaseDurationSeconds": 60,
                                                  "acquireTime": now_micro(), "renewTime": now_micro(),
                                                  "leaseTransitions": 0}})
    password_hash = args.password_bcrypt
    if args.password and not password_hash:
        import bcrypt  # optional dependency; --password-bcrypt keeps the fake stdlib-only
        password_hash = bcrypt.hashpw(args.password.encode(), bcrypt.gensalt(10)).decode()
    if password_hash:
        store.upsert_raw(RES["secrets"], {"metadata": {"name": "kotsadm-password", "namespace": "kotsadm", "labels": {
            "kots.io/backup": "velero", "kots.io/kotsadm": "true"}}, "data": {"passwordBcrypt": b64(password_hash)},
            "type": "Opaque"})
    if args.seed_pods:
        ds = store.upsert_raw(RES["daemonsets"], {"metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                                                  "spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}}}})
        for node in nodes:
            name = node["metadata"]["name"]
            spec = {"nodeName": name, "containers": [{"name": "kube-proxy", "image": "quay.io/k0sproject/kube-proxy"}]}
            store.upsert_raw(RES["pods"], {
                "metadata": {"name": f"kube-proxy-{uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:5]}",
                             "namespace": "kube-system", "labels": {"k8s-app": "kube-proxy"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "kube-proxy",
                                                  "uid": ds["metadata"]["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "spec": spec, "status": store._kubelet_status(spec)})


# ---------------------------------------------------------------------------------------
# TLS material (openssl CLI, once per DIR) and kubeconfigs
# ---------------------------------------------------------------------------------------

OPENSSL_CNF = """[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature,keyEncipherment,keyCertSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def ensure_certs(d: str) -> None:
    import fcntl
    with open(os.path.join(d, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two fakes sharing DIR make one CA, not two
        if all(os.path.exists(os.path.join(d, f)) for f in ("ca.crt", "server.crt", "client.crt", "client.key")):
            return
        cnf = os.path.join(d, "openssl.cnf")
        with open(cnf, "w") as f:
            f.write(OPENSSL_CNF)
        p = lambda f: os.path.join(d, f)  # noqa: E731

        def run(*a):
            subprocess.run(["openssl", *a], check=True, capture_output=True)

        def serial():
            return "0x" + secrets.token_hex(16)

        run("req", "-x509", "-config", cnf, "-extensions", "ca", "-newkey", "rsa:2048", "-nodes", "-keyout",
            p("ca.key"), "-out", p("ca.crt"), "-days", "3650", "-subj", "/CN=kubernetes-ca", "-set_serial", serial())
        for who, subj in (("server", "/CN=kube-apiserver"), ("client", "/O=system:masters/CN=kubernetes-admin")):
            # PKCS#1 keys, as k0s writes them (admin.conf's client-key-data is "BEGIN RSA PRIVATE KEY").
            run("genrsa", "-traditional", "-out", p(f"{who}.key"), "2048")
            run("req", "-new", "-config", cnf, "-key", p(f"{who}.key"), "-out", p(f"{who}.csr"), "-subj", subj)
            run("x509", "-req", "-in", p(f"{who}.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-set_serial",
                serial(), "-days", "3650", "-extfile", cnf, "-extensions", who, "-out", p(f"{who}.crt"))
            os.remove(p(f"{who}.csr"))
        for k in ("ca.key", "server.key", "client.key"):
            os.chmod(p(k), 0o600)


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
    os.replace(tmp, path)


def kubeconfig(server: str, ca_pem: str, user: dict) -> str:
    """Shaped like k0s's admin.conf (cluster "local", user "user", context "Default")."""
    user_yaml = "".join(f"    {k}: {v}\n" for k, v in user.items())
    return (f"apiVersion: v1\nclusters:\n- cluster:\n    server: {server}\n    certificate-authority-data: "
            f"{b64(ca_pem)}\n  name: local\ncontexts:\n- context:\n    cluster: local\n    namespace: default\n"
            f"    user: user\n  name: Default\ncurrent-context: Default\nkind: Config\npreferences: {{}}\nusers:\n"
            f"- name: user\n  user:\n{user_yaml}")


# ---------------------------------------------------------------------------------------
# HTTP: routing, authentication, authorisation, faults, control API
# ---------------------------------------------------------------------------------------

LOG_QUEUE: queue.Queue = queue.Queue(maxsize=10000)


def log(line: str) -> None:
    """Never blocks a request: if nobody drains our stderr pipe, lines are dropped instead."""
    try:
        LOG_QUEUE.put_nowait(line)
    except queue.Full:
        pass


def _log_writer() -> None:
    while True:
        line = LOG_QUEUE.get()
        try:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


class Abort(Exception):
    """Close the connection without an answer (drop) or with an RST (reset)."""

    def __init__(self, rst: bool):
        super().__init__("abort")
        self.rst = rst


def route(path: str):
    """Path -> (resource, namespace or None, name or None, subresource or None)."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise NOT_FOUND_PATH
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        ns, rest = urllib.parse.unquote(rest[1]), rest[2:]
    res = BY_PATH.get((group, version, rest[0])) if rest else None
    if res is None or len(rest) > 3 or (ns is not None and not res.namespaced) or \
            (res.namespaced and ns is None and len(rest) > 1):
        raise NOT_FOUND_PATH
    name = urllib.parse.unquote(rest[1]) if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub and not (sub == "status" and res.status_sub or sub == "eviction" and res.plural == "pods"):
        raise NOT_FOUND_PATH
    return res, ns, name, sub


SHORT_NAMES = {"nodes": ["no"], "namespaces": ["ns"], "configmaps": ["cm"], "pods": ["po"],
               "poddisruptionbudgets": ["pdb"], "daemonsets": ["ds"]}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def discovery(path: str) -> dict | None:
    """Legacy discovery, as kubectl reads it: /api, /apis, /api/v1 and /apis/GROUP/VERSION
    (an aggregated-discovery Accept header gets these too, which clients accept)."""
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}
    groups = {}
    for r in RESOURCES:
        if r.group:
            groups.setdefault(r.group, r.version)
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
             "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in groups.items()]}
    parts = [p for p in path.split("/") if p]
    if parts == ["api", "v1"]:
        gv, mine = "v1", [r for r in RESOURCES if not r.group]
    elif len(parts) == 3 and parts[0] == "apis" and groups.get(parts[1]) == parts[2]:
        gv, mine = f"{parts[1]}/{parts[2]}", [r for r in RESOURCES if r.group == parts[1]]
    else:
        return None
    resources = []
    for r in mine:
        resources.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                          "kind": r.kind, "verbs": VERBS, **({"shortNames": SHORT_NAMES[r.plural]}
                                                             if r.plural in SHORT_NAMES else {})})
        if r.status_sub:
            resources.append({"name": f"{r.plural}/status", "singularName": "", "namespaced": r.namespaced,
                              "kind": r.kind, "verbs": ["get", "patch", "update"]})
        if r.plural == "pods":
            resources.append({"name": "pods/eviction", "singularName": "", "namespaced": True,
                              "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


class Fake:
    """Server-wide state that is not objects: credentials, deny list, faults, request log."""

    def __init__(self, args, store: Store):
        self.args, self.store, self.lock = args, store, threading.Lock()
        self.token = args.token or secrets.token_urlsafe(32)
        self.deny: list[dict] = []
        self.faults: list[dict] = []
        self.requests = collections.deque(maxlen=2000)
        self.inflight: dict[int, dict] = {}  # id(handler) -> request, while served
        self.latency = args.latency_ms / 1000
        self.url = ""
        self.watch_gen = 0          # bumped to cut every open watch (RST)
        self.down_until = 0.0       # monotonic time until which every API request is reset
        self.bookmark_s = 1.0       # BOOKMARK interval (the apiserver's is about a minute)

    def write_credentials(self) -> None:
        d = self.args.dir
        with open(os.path.join(d, "ca.crt")) as f:
            ca = f.read()
        write_atomic(os.path.join(d, "token"), self.token)
        write_atomic(os.path.join(d, "kubeconfig"), kubeconfig(self.url, ca, {"token": self.token}))
        cert = {}
        for k, f in (("client-certificate-data", "client.crt"), ("client-key-data", "client.key")):
            with open(os.path.join(d, f), "rb") as fh:
                cert[k] = b64(fh.read())
        write_atomic(os.path.join(d, "kubeconfig-cert"), kubeconfig(self.url, ca, cert))

    def take_fault(self, method: str, target: str) -> dict | None:
        with self.lock:
            for rule in self.faults:
                if rule.get("method", "*").upper() not in ("*", method) or \
                        not re.search(rule.get("path", ""), target):
                    continue
                if rule.get("times") is not None:
                    if rule["times"] <= 0:
                        continue
                    rule["times"] -= 1
                return dict(rule)
        return None

    def denied(self, user: str, groups: list, verb: str, res: Res, sub, ns, name) -> bool:
        if "system:masters" in groups:
            return False  # RBAC is never consulted for system:masters
        with self.lock:
            rules = list(self.deny)
        want = {"verb": verb, "resource": res.plural, "subresource": sub, "namespace": ns, "name": name,
                "user": user, "group": res.group}
        for r in rules:
            r = dict(r)
            if "/" in r.get("resource", ""):
                r["resource"], r["subresource"] = r["resource"].split("/", 1)
            r.setdefault("subresource", None)  # like RBAC: "pods" does not cover "pods/eviction"
            if all(r[k] in ("*", want[k]) for k in want if k in r):
                return True
        return False


def forbidden(user: str, verb: str, res: Res, sub, ns, name) -> ApiError:
    resource = f"{res.plural}/{sub}" if sub else res.plural
    where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
    why = f'User "{user}" cannot {verb} resource "{resource}" in API group "{res.group}" {where}'
    msg = f'{res.qualified} "{name}" is forbidden: {why}' if name else f"{res.qualified} is forbidden: {why}"
    return ApiError(403, "Forbidden", msg, res.details(name))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Server"

    def setup(self):
        self.request.settimeout(60)
        self.tls_ok = True
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.tls_ok = False
        super().setup()

    def handle(self):
        if self.tls_ok:
            try:
                super().handle()
            except (ConnectionError, ssl.SSLError, TimeoutError):
                pass

    def log_message(self, fmt, *a):  # access lines are written by _log instead
        pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = lambda self: self._serve()

    # -- plumbing --------------------------------------------------------------------
    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
                if len(out) > 16 << 20:
                    self.close_connection = True
                    raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        n = int(self.headers.get("Content-Length") or 0)
        if n > 16 << 20:
            self.close_connection = True  # the unread body would be taken for the next request
            raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, obj=None, raw: bytes | None = None, ctype="application/json", headers=()):
        lost = getattr(self, "lost_answer", None)
        if lost:
            # The request took effect; its answer comes late (delayMs) and then never.
            self.lost_answer = None
            time.sleep(lost.get("delayMs", 0) / 1000)
            raise Abort(False)
        body = raw if raw is not None else json.dumps(obj, separators=(",", ":")).encode()
        self.send_response_only(code)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", ctype)
        if len(body) > GZIP_MIN and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, 1)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        self.send_header("Date", self.date_time_string())
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self._headers_buffer.append(b"\r\n" + body)  # one write: headers and body leave together
        self.flush_headers()
        self.status_sent = code

    def _user(self, fake: Fake):
        auth = self.headers.get("Authorization")
        if auth is not None:
            scheme, _, tok = auth.partition(" ")
            with fake.lock:
                good = fake.token
            if scheme.lower() == "bearer" and hmac.compare_digest(tok.strip().encode(), good.encode()):
                return fake.args.token_user, ["system:serviceaccounts", "system:authenticated"]
            raise ApiError(401, "Unauthorized", "Unauthorized")
        cert = self.request.getpeercert() if isinstance(self.request, ssl.SSLSocket) else None
        if cert:
            subj = [kv for rdn in cert.get("subject", ()) for kv in rdn]
            cn = next((v for k, v in subj if k == "commonName"), "")
            return cn, [v for k, v in subj if k == "organizationName"] + ["system:authenticated"]
        if fake.args.no_anonymous:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return "system:anonymous", ["system:unauthenticated"]

    # -- one request -------------------------------------------------------------------
    def _serve(self):
        fake: Fake = self.server.fake
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, url.query
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        self.status_sent, user, body = 0, "", b""
        try:
            body = self._body()
            if path.startswith("/_fake/"):
                return self._control(fake, path, body)
            with fake.lock:
                fake.inflight[id(self)] = {"method": self.command, "path": path, "query": query}
            if time.monotonic() < fake.down_until:
                raise Abort(True)
            fault = fake.take_fault(self.command, self.path)
            self.lost_answer = None
            if fault and fault.get("kind") == "lost":
                self.lost_answer = fault  # served below; _send then withholds the answer
            elif fault:
                self._fault(fault)
            if fake.latency:
                time.sleep(fake.latency)
            user, groups = self._user(fake)
            self._api(fake, path, q, body, user, groups)
        except ApiError as e:
            self._send(e.code, e.status(), headers=e.headers)
        except Abort as a:
            self.close_connection = True
            self.request.fake_abort = a.rst
            if a.rst:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.status_sent = "reset" if a.rst else "drop"
        except (ConnectionError, ssl.SSLError, TimeoutError):
            raise
        except Exception as e:  # a bug in the fake: answer like the apiserver does, and say so on stderr
            log(f"fake_kube: internal error: {e!r}")
            self._send(500, ApiError(500, "InternalError", f"Internal error occurred: {e}", {}).status())
        finally:
            if not path.startswith("/_fake/"):
                with fake.lock:
                    fake.inflight.pop(id(self), None)
                entry = {"method": self.command, "path": path, "query": query, "status": self.status_sent,
                         "user": user}
                if self.command in ("POST", "PUT", "PATCH", "DELETE") and body:
                    try:
                        entry["body"] = json.loads(body[:65536])
                    except ValueError:
                        entry["body"] = None
                fake.requests.append(entry)
                ms = (time.monotonic() - started) * 1000
                log(f"{self.command} {self.path} {self.status_sent} {ms:.1f}ms user={user or '-'}")

    def _fault(self, f: dict):
        kind = f.get("kind", "status")
        if kind == "latency":
            time.sleep(f.get("delayMs", 1000) / 1000)
            return
        if kind in ("drop", "reset"):
            raise Abort(kind == "reset")
        code = int(f.get("code", 503))
        reason, msg = FAULT_DEFAULTS.get(code, ("", f"injected fault {code}"))
        details, headers = None, []
        if f.get("retryAfter") is not None or code == 429:
            ra = int(f.get("retryAfter", 1))
            details = {"retryAfterSeconds": ra}
            headers.append(("Retry-After", str(ra)))
        raise ApiError(code, f.get("reason", reason), f.get("message", msg), details, headers)

    def _api(self, fake: Fake, path: str, q: dict, body: bytes, user: str, groups: list):
        m = self.command
        if path in ("/readyz", "/livez", "/healthz"):
            return self._send(200, raw=b"ok", ctype="text/plain; charset=utf-8")
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "35", "emulationMajor": "1", "emulationMinor": "35",
                                    "minCompatibilityMajor": "1", "minCompatibilityMinor": "34",
                                    "gitVersion": K8S_VERSION, "gitCommit": "3eb8d8d7e8c7c1ba3b4e7b81c2ab5e9f40c9a1d2",
                                    "gitTreeState": "clean", "buildDate": "2026-02-10T12:00:00Z",
                                    "goVersion": "go1.25.6", "compiler": "gc", "platform": "linux/amd64"})
        if m == "GET" and user != "system:anonymous":
            doc = discovery(path)
            if doc is not None:
                return self._send(200, doc)
        try:
            res, ns, name, sub = route(path)
        except ApiError:
            if user == "system:anonymous":
                raise ApiError(403, "Forbidden", f'forbidden: User "system:anonymous" cannot {m.lower()} path '
                               f'"{path}"', {})
            raise
        verb = {"GET": "list" if name is None else "get", "POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}[m]
        if m == "GET" and q.get("watch") in ("1", "true"):
            verb = "watch"  # as kube-apiserver's RBAC sees it: a watch is not a list
        if user == "system:anonymous" or fake.denied(user, groups, verb, res, sub, ns, name):
            raise forbidden(user, verb, res, sub, ns, name)
        st = fake.store
        if q.get("watch") in ("1", "true"):
            if m != "GET" or name is not None:
                raise METHOD_NOT_ALLOWED
            return self._watch(fake, res, ns, q)
        if m == "GET" and name is None:
            return self._send(200, st.list(res, ns, q))
        if m == "GET" and sub in (None, "status"):
            return self._send(200, st.get(res, ns or "", name))
        if m == "POST" and name is None and (ns is not None or not res.namespaced):
            return self._send(201, st.create(res, ns or "", self._json(res, body)))
        if m == "POST" and sub == "eviction":
            code, out = st.evict(ns, name, self._json(res, body, "Eviction"))
            return self._send(code, out)
        if m == "PUT" and name:
            return self._send(200, st.update(res, ns or "", name, self._json(res, body), sub))
        if m == "PATCH" and name:
            return self._send(200, st.patch(res, ns or "", name, self.headers.get("Content-Type") or "", body, sub))
        if m == "DELETE" and name and sub is None:
            opts = self._json(res, body, "DeleteOptions") if body.strip() else {}
            if "gracePeriodSeconds" in q:
                opts["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
            code, out = st.delete(res, ns or "", name, opts)
            return self._send(code, out)
        raise METHOD_NOT_ALLOWED

    def _chunk(self, obj) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, fake: Fake, res: Res, ns: str | None, q: dict):
        """A watch as the apiserver serves it: 200, chunked, one JSON event per line; from
        resourceVersion ""/"0" the current objects first as ADDED; BOOKMARK events when
        allowWatchBookmarks=true; a version older than the watch cache: one ERROR event
        (Status 410 Expired), then the end; the stream ends cleanly at timeoutSeconds.
        /_fake/watch-reset and /_fake/down cut open streams with an RST."""
        st = fake.store
        lsel = parse_label_selector(q["labelSelector"]) if q.get("labelSelector") else []
        rv_param = q.get("resourceVersion") or ""
        try:
            timeout = int(q.get("timeoutSeconds") or 1800)
            start = int(rv_param) if rv_param not in ("", "0") else None
        except ValueError:
            raise bad_request(f"resourceVersion: Invalid value: {rv_param!r}") from None
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")

        def wanted(plural: str, obj: dict) -> bool:
            meta = obj["metadata"]
            return plural == res.plural and (ns is None or not res.namespaced or meta.get("namespace") == ns) \
                and (not lsel or labels_match(lsel, meta.get("labels") or {}))

        with st.lock:
            gen = fake.watch_gen
            initial, expired = [], False
            if start is None:
                initial = [wire(res, o) for k, o in sorted(st.objs[res.plural].items()) if wanted(res.plural, wire(res, o))]
                start = st.rv
            elif start < st.events_floor:
                expired = True
        self.send_response_only(200)
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")
        self.send_header("Date", self.date_time_string())
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.status_sent = 200
        if expired:
            self._chunk({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f"too old resource version: {start} ({st.events_floor})", "reason": "Expired",
                "code": 410}})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        for o in initial:
            self._chunk({"type": "ADDED", "object": o})
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + fake.bookmark_s
        while True:
            with st.lock:
                while True:
                    now = time.monotonic()
                    if fake.watch_gen != gen:
                        raise Abort(True)
                    pending = [e for e in st.events if e[0] > start]
                    if pending or now >= deadline or (bookmarks and now >= next_bookmark):
                        break
                    st.changed.wait(min(deadline, next_bookmark if bookmarks else deadline) - now)
                if pending and pending[0][0] <= st.events_floor and start < st.events_floor:
                    pending = []  # fell behind the cache while waiting: expire below
                current = st.rv
            for rv, type_, plural, obj in pending:
                start = rv
                if wanted(plural, obj):
                    self._chunk({"type": type_, "object": obj})
            if now >= deadline:
                break
            if bookmarks and time.monotonic() >= next_bookmark:
                start = max(start, current)
                self._chunk({"type": "BOOKMARK", "object": {
                    "kind": res.kind, "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(start)}}})
                next_bookmark = time.monotonic() + fake.bookmark_s
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    @staticmethod
    def _json(res: Res, body: bytes, kind: str | None = None) -> dict:
        kind = kind or res.kind
        try:
            obj = json.loads(body)
        except ValueError as e:
            raise bad_request(f'{kind} in version "{res.version}" cannot be handled as a {kind}: {e}') from None
        if not isinstance(obj, dict):
            raise bad_request(f'{kind} in version "{res.version}" cannot be handled as a {kind}: '
                              'json: cannot unmarshal into Go value of type struct')
        return obj

    # -- control API -------------------------------------------------------------------
    def _control(self, fake: Fake, path: str, body: bytes):
        m, st = self.command, fake.store
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError as e:
            return self._send(400, {"error": f"bad JSON: {e}"})
        if path == "/_fake/faults":
            with fake.lock:
                if m == "POST":
                    fake.faults.extend(data if isinstance(data, list) else [data])
                elif m == "DELETE":
                    fake.faults.clear()
                return self._send(200, fake.faults)
        if path == "/_fake/rotate-token" and m == "POST":
            with fake.lock:
                fake.token = (data or {}).get("token") or secrets.token_urlsafe(32)
            fake.write_credentials()
            return self._send(200, {"token": fake.token})
        if path == "/_fake/inflight":
            with fake.lock:
                now = list(fake.inflight.values())
            return self._send(200, now)
        if path == "/_fake/requests":
            if m == "DELETE":
                fake.requests.clear()
            return self._send(200, list(fake.requests))
        if path == "/_fake/deny" and m == "POST":
            with fake.lock:
                fake.deny = data if isinstance(data, list) else []
            return self._send(200, fake.deny)
        if path == "/_fake/compact" and m == "POST":
            with st.lock:
                st.compacted_rv = st.rv
                st.events_floor = st.rv
                st.events.clear()
            return self._send(200, {"compactedResourceVersion": str(st.compacted_rv)})
        if path == "/_fake/watch-reset" and m == "POST":
            with st.lock:
                fake.watch_gen += 1
                st.changed.notify_all()
            return self._send(200, {})
        if path == "/_fake/down" and m == "POST":
            with st.lock:
                fake.down_until = time.monotonic() + float((data or {}).get("seconds", 30))
                fake.watch_gen += 1
                st.changed.notify_all()
            return self._send(200, {})
        if path == "/_fake/config":
            if m == "POST" and isinstance(data, dict):
                fake.bookmark_s = data.get("bookmarkMs", fake.bookmark_s * 1000) / 1000
                fake.latency = data.get("latencyMs", fake.latency * 1000) / 1000
                st.pod_delete_delay = data.get("podDeleteDelayMs", st.pod_delete_delay * 1000) / 1000
                st.etcd_leave_delay = data.get("etcdLeaveDelayMs", st.etcd_leave_delay * 1000) / 1000
            return self._send(200, {"latencyMs": fake.latency * 1000, "bookmarkMs": fake.bookmark_s * 1000,
                                    "podDeleteDelayMs": st.pod_delete_delay * 1000,
                                    "etcdLeaveDelayMs": st.etcd_leave_delay * 1000})
        try:
            if path == "/_fake/node-ready" and m == "POST":
                return self._send(200, st.set_node_ready(data["name"], data.get("ready", True)))
            if path == "/_fake/objects" and m in ("POST", "DELETE"):
                items = data.get("items", [data]) if isinstance(data, dict) else data or []
                out = []
                for item in items:
                    obj = item.get("object", item)
                    if "path" in item:
                        res, ns, _, _ = route(item["path"])
                        if ns:
                            obj.setdefault("metadata", {}).setdefault("namespace", ns)
                    else:
                        res = BY_KIND.get((obj.get("apiVersion"), obj.get("kind")))
                    if res is None:
                        return self._send(400, {"error": f"unknown apiVersion/kind in {obj.get('apiVersion')!r} "
                                                         f"{obj.get('kind')!r}"})
                    meta = obj.get("metadata") or {}
                    if m == "POST":
                        out.append(st.upsert_raw(res, obj))
                    else:
                        out.append(st.remove_raw(res, meta.get("namespace", "default"), meta.get("name", "")))
                return self._send(200, out)
        except (ApiError, KeyError, TypeError) as e:
            return self._send(400, {"error": e.message if isinstance(e, ApiError) else repr(e)})
        return self._send(404, {"error": f"no control endpoint {m} {path}"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, fake: Fake, ctx: ssl.SSLContext):
        self.fake, self.ctx = fake, ctx
        super().__init__(addr, Handler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's reverse DNS lookup
        self.server_name, self.server_port = self.server_address[:2]

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake runs in the connection's own thread (Handler.setup), never in accept.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def shutdown_request(self, request):
        if hasattr(request, "fake_abort"):
            request.close()  # no FIN-then-data dance: a drop is a bare close, a reset an RST
        else:
            super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # clients hanging up mid-request are routine in fault tests


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", required=True, help="certificates, token and kubeconfigs go here")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--nodes", type=int, default=3, help="generate N nodes (default 3)")
    src.add_argument("--nodes-file", help="JSON list of Node objects, or a NodeList")
    ap.add_argument("--controllers", type=int, default=1, help="how many of the generated nodes are controllers")
    ap.add_argument("--token", help="bearer token (default: random)")
    ap.add_argument("--token-user", default="system:serviceaccount:kotsadm:joinery",
                    help="user name the bearer token authenticates as")
    ap.add_argument("--password-bcrypt", help="bcrypt hash stored in kotsadm/kotsadm-password")
    ap.add_argument("--password", help="plain password (needs the bcrypt module)")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--pod-delete-delay-ms", type=float, default=0,
                    help="graceful pod deletion: pods linger, terminating, this long")
    ap.add_argument("--seed-pods", action="store_true", help="a kube-proxy DaemonSet pod on every node")
    ap.add_argument("--no-anonymous", action="store_true", help="no credentials -> 401 instead of anonymous")
    ap.add_argument("--quiet", action="store_true", help="no request log on stderr")
    args = ap.parse_args(argv)
    if not args.quiet:
        threading.Thread(target=_log_writer, daemon=True).start()

    os.makedirs(args.dir, exist_ok=True)
    ensure_certs(args.dir)
    with open(os.path.join(args.dir, "ca.crt")) as f:
        ca_pem = f.read()
    store = Store()
    store.pod_delete_delay = args.pod_delete_delay_ms / 1000
    seed(store, args, ca_pem)
    fake = Fake(args, store)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.join(args.dir, "server.crt"), os.path.join(args.dir, "server.key"))
    ctx.load_verify_locations(os.path.join(args.dir, "ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    server = Server(("127.0.0.1", args.port), fake, ctx)
    fake.url = f"https://127.0.0.1:{server.server_port}"
    fake.write_credentials()
    print(f"listening on {fake.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
