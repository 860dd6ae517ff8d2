"""GET /metrics read by an independent parser (prometheus_client's), and its counters moving.

What it shows: the page is the text exposition format 0.0.4 with its media type; it needs
a token with the `read` scope; requests are counted by route pattern (an unknown path is
`unmatched`, never itself a label), with a latency histogram; a Kubernetes outage counts
under `joinery_kubernetes_errors_total{kind="unavailable"}`; a join command, its ticket
and the bundle it downloads move the join counters, and the bundle bytes counted equal
the bytes the client received.
"""

import json
import re
import os
import ssl
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PASSWORD, Daemon, Fake
from daemon_env import call, join_inputs, session_token, signing_key_file


@pytest.fixture(scope="module")
def env():
    fake = Fake(nodes=3)
    key_file, key = signing_key_file(fake.dir)
    daemon = Daemon(fake, extra=["--signing-key-file", key_file, "--node-name", "node-1",
                                 *join_inputs(os.path.join(fake.dir, "join"))])
    yield {"fake": fake, "daemon": daemon, "read": session_token(key, "read"), "key": key}
    daemon.stop()
    fake.stop()


def scrape(env):
    """{(name, frozenset(labels)): value} of one scrape, parsed by prometheus_client."""
    status, headers, body = call(env["daemon"], "GET", "/metrics", token=env["read"])
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def fake_faults(fake, method, rules=None):
    data = json.dumps(rules).encode() if rules is not None else None
    request = urllib.request.Request(fake.url + "/_fake/faults", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    tls = ssl.create_default_context(cafile=os.path.join(fake.dir, "ca.crt"))
    with urllib.request.urlopen(request, context=tls, timeout=30) as response:
        response.read()


def test_metrics_need_a_read_token(env):
    status, _, body = call(env["daemon"], "GET", "/metrics")
    assert status == 401
    assert json.loads(body)["error"] == "missing_token"


def test_requests_are_counted_by_route_pattern(env):
    before = scrape(env)
    for _ in range(3):
        assert call(env["daemon"], "GET", "/v1/nodes", token=env["read"])[0] == 200
    assert call(env["daemon"], "GET", "/v1/nodes")[0] == 401
    assert call(env["daemon"], "GET", "/no/such/path-4711")[0] == 404
    after = scrape(env)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("joinery_http_requests_total", route="/v1/nodes", method="GET", status="200") == 3
    assert delta("joinery_http_requests_total", route="/v1/nodes", method="GET", status="401") == 1
    assert delta("joinery_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert delta("joinery_http_request_duration_seconds_count", route="/v1/nodes", method="GET") == 4
    inf = value(after, "joinery_http_request_duration_seconds_bucket", route="/v1/nodes", method="GET",
                le="+Inf")
    assert inf == value(after, "joinery_http_request_duration_seconds_count", route="/v1/nodes",
                        method="GET")
    # The raw path never becomes a label value: cardinality stays bounded.
    assert not any("4711" in v for (_, labels) in after for _, v in labels)
    # This very scrape holds a connection open.
    assert value(after, "joinery_http_open_connections") >= 1
    assert value(after, "joinery_http_connections_accepted_total") >= 6


def test_kubernetes_errors_are_counted_by_kind(env):
    # Node reads answer from the watch-fed view; listing API tokens reads Secrets live.
    before = value(scrape(env), "joinery_kubernetes_errors_total", kind="unavailable")
    fake_faults(env["fake"], "POST", [{"method": "GET", "path": "^/api/v1/namespaces/[^/]+/secrets",
                                       "kind": "status", "code": 503}])
    try:
        status, _, body = call(env["daemon"], "GET", "/v1/auth/tokens",
                               token=session_token(env["key"], "admin"))
        assert status == 503, body
    finally:
        fake_faults(env["fake"], "DELETE")
    assert value(scrape(env), "joinery_kubernetes_errors_total", kind="unavailable") == before + 1


def test_join_counters_move(env):
    before = scrape(env)
    status, _, body = call(env["daemon"], "POST", "/v1/auth/token", body={"password": PASSWORD})
    admin = json.loads(body)["token"]
    status, _, body = call(env["daemon"], "POST", "/v1/create-join-command", token=admin,
                           body={"roles": ["app"]})
    assert status == 200, body
    steps = json.loads(body)["joinSteps"]
    join_token = next(s["command"] for s in steps if "join-bundle" in s["command"])
    # The step hands the token to curl on stdin: printf '<config line>' '<token>' | curl -K -
    join_token = re.search(r"printf '[^']*Bearer %s[^']*' '([^']+)'", join_token).group(1)
    status, headers, bundle = call(env["daemon"], "GET", "/v1/join-bundle?roles=app", token=join_token)
    assert status == 200, bundle[:300]
    assert headers["Content-Type"] == "application/gzip"
    after = scrape(env)

    def delta(name):
        return value(after, name) - value(before, name)

    assert delta("joinery_join_commands_issued_total") == 1
    assert delta("joinery_join_tickets_consumed_total") == 1
    assert delta("joinery_join_bundles_streamed_total") == 1
    assert delta("joinery_join_bundle_bytes_total") == len(bundle)
