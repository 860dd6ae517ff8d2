//! Node lifecycle against the fake API server: inspect, relabel, drain (PodDisruptionBudgets,
//! DaemonSet and mirror pods, deadlines, restarts, two daemons), resume, remove, health.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn auth(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn send(d: &Daemon, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let a = auth(token);
    let mut extra: Vec<String> = vec!["-H".into(), a];
    if let Some(b) = body {
        extra.push("-H".into());
        extra.push("Content-Type: application/json".into());
        extra.push("--data-binary".into());
        extra.push(b.to_string());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    d.curl(method, path, &extra)
}

/// Reads an object straight from the fake API server (as joinery's token user).
fn kube_get(fake: &FakeKube, path: &str) -> (u16, Value) {
    let token = std::fs::read_to_string(fake.dir.path().join("token")).unwrap();
    let r = curl_at(
        &fake.dir.path().join("ca.crt"),
        &format!("{}{}", fake.url, path),
        &["-H".into(), auth(token.trim())],
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn pod(name: &str, node: &str, labels: Value, owner: Option<&str>) -> Value {
    let mut meta = json!({"name": name, "namespace": "default", "labels": labels});
    if let Some(kind) = owner {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": "owner",
            "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// A PodDisruptionBudget keeping one `app=web` pod available; the fake's disruption
/// controller computes its status from the pods.
fn live_pdb() -> Value {
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
}

/// [`live_pdb`] with a fixed status (the fake's disruption controller leaves it alone):
/// `allowed` evictions are allowed.
fn fixed_pdb(allowed: u32) -> Value {
    let mut pdb = live_pdb();
    pdb["status"] = json!({"disruptionsAllowed": allowed, "currentHealthy": 1,
        "desiredHealthy": 1, "expectedPods": 1});
    pdb
}

/// The drain most tests start from: pod `web-1` (a ReplicaSet's, `app=web`) on `node`,
/// the PodDisruptionBudget `pdb` over it, and a background drain of `node` with
/// `deadline_seconds`, answered 202 `draining`.
fn start_blocked_drain(
    fake: &FakeKube,
    d: &Daemon,
    token: &str,
    node: &str,
    pdb: Value,
    deadline_seconds: u64,
) {
    let web = pod("web-1", node, json!({"app": "web"}), Some("ReplicaSet"));
    add(fake, vec![web, pdb]);
    let body = json!({ "deadlineSeconds": deadline_seconds });
    let r = send(
        d,
        "POST",
        &format!("/v1/nodes/{node}/drain"),
        token,
        Some(body),
    );
    assert_eq!(
        (r.status, r.json()),
        (202, json!({"drainState": "draining"})),
        "{}",
        r.text()
    );
}

fn add(fake: &FakeKube, objects: Vec<Value>) {
    fake.control("POST", "/_fake/objects", Some(json!({ "items": objects })));
}

fn pod_exists(fake: &FakeKube, ns: &str, name: &str) -> bool {
    kube_get(fake, &format!("/api/v1/namespaces/{ns}/pods/{name}")).0 == 200
}

fn drain_lease(fake: &FakeKube, node: &str) -> Option<Value> {
    let (status, v) = kube_get(
        fake,
        &format!("/apis/coordination.k8s.io/v1/namespaces/kotsadm/leases/joinery-drain-{node}"),
    );
    (status == 200).then_some(v)
}

fn detail(d: &Daemon, token: &str, node: &str) -> Value {
    let r = d.get(&format!("/v1/nodes/{node}"), token);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_drain_state(d: &Daemon, token: &str, node: &str, state: &str, secs: u64) -> Value {
    wait_until(secs, &format!("{node} {state}"), || {
        let v = detail(d, token, node);
        (v["drainState"] == state).then_some(v)
    })
}

/// Eviction requests the fake served for a pod: (user, status).
fn evictions(fake: &FakeKube, pod: &str) -> Vec<(String, Value)> {
    fake.requests()
        .into_iter()
        .filter(|r| {
            r["method"] == "POST"
                && r["path"]
                    .as_str()
                    .unwrap_or("")
                    .ends_with(&format!("/pods/{pod}/eviction"))
        })
        .map(|r| {
            (
                r["user"].as_str().unwrap_or("").to_string(),
                r["status"].clone(),
            )
        })
        .collect()
}

fn audit_lines(d: &Daemon, action: &str) -> Vec<Value> {
    d.output
        .json_lines()
        .into_iter()
        .filter(|l| l["msg"] == "audit" && l["action"] == action)
        .collect()
}

#[test]
fn node_detail_shows_status_drain_and_etcd() {
    let fake = FakeKube::start(3, &[]);
    let d = Daemon::start(&fake);
    let t = d.login();

    let v = detail(&d, &t, "node-1");
    assert_eq!(v["name"], "node-1");
    assert_eq!(v["roles"], json!(["controller"]));
    assert_eq!(v["internalIP"], "10.0.0.11");
    assert_eq!(v["ready"], true);
    assert_eq!(v["unschedulable"], false);
    assert_eq!(v["drainState"], "active");
    assert_eq!(v["nodeInfo"]["kubeletVersion"], "v1.35.1+k0s");
    assert_eq!(v["nodeInfo"]["architecture"], "amd64");
    assert!(v["nodeInfo"]["osImage"]
        .as_str()
        .unwrap()
        .contains("Ubuntu"));
    assert_eq!(v["capacity"]["cpu"], "4");
    assert!(v["capacity"]["memory"].as_str().unwrap().ends_with("Ki"));
    let ready = v["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    assert!(ready["lastTransitionTime"].is_string());
    assert_eq!(
        v["addresses"][0],
        json!({"type": "InternalIP", "address": "10.0.0.11"})
    );
    assert_eq!(v["etcd"]["joined"], true);
    assert_eq!(v["etcd"]["peerAddress"], "10.0.0.11");
    assert!(v["taints"].as_array().unwrap().is_empty());

    // A worker has no etcd membership.
    let w = detail(&d, &t, "node-2");
    assert_eq!(w["roles"], json!(["worker"]));
    assert!(w.get("etcd").is_none(), "{w}");

    d.get("/v1/nodes/node-9", &t)
        .assert_error(404, "node_not_found");
    d.get("/v1/nodes/Node_1", &t)
        .assert_error(400, "invalid_node_name");
    d.get("/v1/nodes/a..b", &t)
        .assert_error(400, "invalid_node_name");
    d.curl("GET", "/v1/nodes/node-1", &[])
        .assert_error(401, "missing_token");
}

#[test]
fn labels_merge_with_validation_and_protection() {
    let fake = FakeKube::start(3, &[]);
    let d = Daemon::start(&fake);
    let t = d.login();

    let r = send(
        &d,
        "PATCH",
        "/v1/nodes/node-2",
        &t,
        Some(json!({"labels": {"tier": "gold", "example.com/zone": "a"}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["labels"]["tier"], "gold");
    let r = send(
        &d,
        "PATCH",
        "/v1/nodes/node-2",
        &t,
        Some(json!({"labels": {"tier": null, "rack": "r1"}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let labels = &r.json()["labels"];
    assert!(labels.get("tier").is_none(), "{labels}");
    assert_eq!(labels["rack"], "r1");
    assert_eq!(labels["example.com/zone"], "a");
    // Embedded Cluster's role labels were not touched.
    assert_eq!(labels["kots.io/embedded-cluster-role-0"], "worker");

    let msg = send(
        &d,
        "PATCH",
        "/v1/nodes/node-2",
        &t,
        Some(json!({"labels": {"bad key": "x"}})),
    )
    .assert_error(422, "invalid_label");
    assert!(msg.contains("\"bad key\""), "{msg}");
    let msg = send(
        &d,
        "PATCH",
        "/v1/nodes/node-2",
        &t,
        Some(json!({"labels": {"ok": "-bad"}})),
    )
    .assert_error(422, "invalid_label");
    assert!(msg.contains("\"ok\""), "{msg}");
    send(
        &d,
        "PATCH",
        "/v1/nodes/node-2",
        &t,
        Some(json!({"labels": {"x": 1}})),
    )
    .assert_error(400, "invalid_body");

    for key in [
        "kubernetes.io/hostname",
        "node-role.kubernetes.io/control-plane",
        "topology.kubernetes.io/zone",
        "k8s.io/x",
        "node.k0sproject.io/role",
        "kots.io/embedded-cluster-role-0",
        "kots.io/embedded-cluster-role",
    ] {
        let msg = send(
            &d,
            "PATCH",
            "/v1/nodes/node-2",
            &t,
            Some(json!({"labels": {key: "x"}})),
        )
        .assert_error(403, "protected_label");
        assert!(msg.contains(key), "{msg}");
        // Removing one is refused as well.
        send(
            &d,
            "PATCH",
            "/v1/nodes/node-2",
            &t,
            Some(json!({"labels": {key: null}})),
        )
        .assert_error(403, "protected_label");
    }
    let (_, node) = kube_get(&fake, "/api/v1/nodes/node-2");
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-2"
    );

    send(
        &d,
        "PATCH",
        "/v1/nodes/node-9",
        &t,
        Some(json!({"labels": {"a": "b"}})),
    )
    .assert_error(404, "node_not_found");
    let lines = audit_lines(&d, "node.relabel");
    assert!(lines.iter().any(|l| l["target"] == "node-2"
        && l["subject"] == "admin"
        && l["result"].as_str().unwrap().contains("rack")));
    assert!(lines
        .iter()
        .any(|l| l["result"] == "refused: protected label"));
}

#[test]
fn drain_leaves_daemonset_mirror_and_finished_pods() {
    let fake = FakeKube::start(3, &["--seed-pods", "--pod-delete-delay-ms", "300"]);
    let d = Daemon::start(&fake);
    let t = d.login();
    let mut mirror = pod("etcd-node-2", "node-2", json!({}), None);
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    let mut done = pod("job-1", "node-2", json!({}), Some("Job"));
    done["status"] = json!({"phase": "Succeeded"});
    add(
        &fake,
        vec![
            pod("web-1", "node-2", json!({"app": "web"}), Some("ReplicaSet")),
            pod("bare", "node-2", json!({}), None),
            pod("other-node", "node-3", json!({}), Some("ReplicaSet")),
            mirror,
            done,
        ],
    );
    let (_, pods) = kube_get(&fake, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-2");
    let ds_pod = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("kube-proxy")
        })
        .expect("the seeded DaemonSet pod")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();

    let r = send(
        &d,
        "POST",
        "/v1/nodes/node-2/drain",
        &t,
        Some(json!({"deadlineSeconds": 0})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"drainState": "drained"}));
    // Evicted pods were waited for: they are gone by the time the answer came.
    assert!(!pod_exists(&fake, "default", "web-1"));
    assert!(!pod_exists(&fake, "default", "bare"));
    assert!(pod_exists(&fake, "kube-system", &ds_pod));
    assert!(pod_exists(&fake, "default", "etcd-node-2"));
    assert!(pod_exists(&fake, "default", "job-1"));
    assert!(pod_exists(&fake, "default", "other-node"));
    for p in [ds_pod.as_str(), "etcd-node-2", "job-1"] {
        assert!(evictions(&fake, p).is_empty(), "{p} was evicted");
    }

    let v = detail(&d, &t, "node-2");
    assert_eq!(v["unschedulable"], true);
    assert_eq!(v["drainState"], "drained");
    assert_eq!(v["drainRemaining"], json!([]));
    assert!(v["drainStarted"].is_string());

    // Draining a drained node changes nothing.
    let (_, before) = kube_get(&fake, "/api/v1/nodes/node-2");
    let r = send(
        &d,
        "POST",
        "/v1/nodes/node-2/drain",
        &t,
        Some(json!({"deadlineSeconds": 30})),
    );
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"drainState": "drained"}))
    );
    let (_, after) = kube_get(&fake, "/api/v1/nodes/node-2");
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );

    send(
        &d,
        "POST",
        "/v1/nodes/node-3/drain",
        &t,
        Some(json!({"deadlineSeconds": 3601})),
    )
    .assert_error(400, "invalid_deadline");
    send(
        &d,
        "POST",
        "/v1/nodes/node-3/drain",
        &t,
        Some(json!({"deadlineSeconds": -1})),
    )
    .assert_error(400, "invalid_deadline");
    // Issue 12 item 8: null was read as "absent" and drained node-3 synchronously.
    let msg = send(
        &d,
        "POST",
        "/v1/nodes/node-3/drain",
        &t,
        Some(json!({"deadlineSeconds": null})),
    )
    .assert_error(400, "invalid_deadline");
    assert!(msg.contains("null"), "{msg}");
    send(&d, "POST", "/v1/nodes/node-9/drain", &t, None).assert_error(404, "node_not_found");
    let lines = audit_lines(&d, "node.drain");
    assert!(lines
        .iter()
        .any(|l| l["target"] == "node-2" && l["result"].as_str().unwrap().starts_with("started")));
    assert!(audit_lines(&d, "node.drain.finish")
        .iter()
        .any(|l| l["result"] == "drained"));
}

#[test]
fn a_disruption_budget_blocks_then_allows_the_eviction() {
    let fake = FakeKube::start(3, &[]);
    let d = Daemon::start(&fake);
    let t = d.login();
    // minAvailable 1 with one healthy pod: the fake's disruption controller allows none.
    start_blocked_drain(&fake, &d, &t, "node-2", live_pdb(), 600);
    // Refused at least twice (so retried), with the pod still there.
    wait_until(30, "two refused evictions", || {
        let e = evictions(&fake, "web-1");
        (e.iter().filter(|(_, s)| *s == 429).count() >= 2).then_some(())
    });
    assert!(pod_exists(&fake, "default", "web-1"));
    assert_eq!(detail(&d, &t, "node-2")["drainState"], "draining");
    d.output.wait_for("the PDB refusal logged", |l| {
        l.contains("eviction refused by a PodDisruptionBudget") && l.contains("web-1")
    });

    // A second healthy replica elsewhere: now one disruption is allowed.
    add(
        &fake,
        vec![pod(
            "web-2",
            "node-3",
            json!({"app": "web"}),
            Some("ReplicaSet"),
        )],
    );
    let v = wait_drain_state(&d, &t, "node-2", "drained", 30);
    assert_eq!(v["drainRemaining"], json!([]));
    assert!(!pod_exists(&fake, "default", "web-1"));
    assert!(pod_exists(&fake, "default", "web-2"));
    assert!(evictions(&fake, "web-1").iter().any(|(_, s)| *s == 201));
    // The Lease is given up once the drain is done.
    wait_until(10, "the lease released", || {
        drain_lease(&fake, "node-2").is_none().then_some(())
    });
}

#[test]
fn deadline_expiry_lists_the_pods_left() {
    let fake = FakeKube::start(3, &[]);
    let d = Daemon::start(&fake);
    let t = d.login();
    start_blocked_drain(&fake, &d, &t, "node-2", fixed_pdb(0), 2);
    let v = wait_drain_state(&d, &t, "node-2", "drained", 30);
    assert_eq!(v["drainRemaining"], json!(["default/web-1"]));
    assert_eq!(v["unschedulable"], true);
    assert!(pod_exists(&fake, "default", "web-1"));
    assert!(audit_lines(&d, "node.drain.finish")
        .iter()
        .any(|l| l["result"].as_str().unwrap().contains("1 pods remaining")));
}

#[test]
fn resume_uncordons_stops_the_drain_and_is_idempotent() {
    let fake = FakeKube::start(3, &[]);
    let d = Daemon::start(&fake);
    let t = d.login();
    start_blocked_drain(&fake, &d, &t, "node-2", fixed_pdb(0), 600);
    // Draining a draining node changes nothing either.
    let r = send(
        &d,
        "POST",
        "/v1/nodes/node-2/drain",
        &t,
        Some(json!({"deadlineSeconds": 5})),
    );
    assert_eq!(
        (r.status, r.json()),
        (202, json!({"drainState": "draining"}))
    );
    wait_until(20, "the worker holding the lease", || {
        drain_lease(&fake, "node-2")
    });

    for _ in 0..2 {
        let r = send(&d, "POST", "/v1/nodes/node-2/resume", &t, None);
        assert_eq!((r.status, r.json()), (200, json!({"drainState": "active"})));
        let v = detail(&d, &t, "node-2");
        assert_eq!(v["drainState"], "active");
        assert_eq!(v["unschedulable"], false);
        assert!(v.get("drainDeadline").is_none(), "{v}");
        let (_, node) = kube_get(&fake, "/api/v1/nodes/node-2");
        let annotations = node["metadata"]["annotations"].as_object().unwrap();
        assert!(
            !annotations
                .keys()
                .any(|k| k.starts_with("joinery.replicated.com/")),
            "{node}"
        );
    }
    // The worker lets go and never flips the node back.
    wait_until(15, "the lease released", || {
        drain_lease(&fake, "node-2").is_none().then_some(())
    });
    fake.control("POST", "/_fake/objects", Some(fixed_pdb(1)));
    // A background drain of another node makes the worker scan again: once node-3 is
    // drained the worker has had its chance to act on node-2, and must not have.
    let r = send(
        &d,
        "POST",
        "/v1/nodes/node-3/drain",
        &t,
        Some(json!({"deadlineSeconds": 600})),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_drain_state(&d, &t, "node-3", "drained", 20);
    assert_eq!(detail(&d, &t, "node-2")["drainState"], "active");
    assert!(pod_exists(&fake, "default", "web-1"));
    let results: Vec<String> = audit_lines(&d, "node.resume")
        .iter()
        .map(|l| l["result"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        results,
        [
            "resumed: uncordoned, drain state cleared",
            "unchanged: already active"
        ]
    );
    send(&d, "POST", "/v1/nodes/node-9/resume", &t, None).assert_error(404, "node_not_found");
}

#[test]
fn a_daemon_killed_mid_drain_finishes_it_after_restart() {
    let fake = FakeKube::start(3, &[]);
    let mut d = Daemon::start(&fake);
    let t = d.login();
    start_blocked_drain(&fake, &d, &t, "node-2", fixed_pdb(0), 600);
    wait_until(20, "a refused eviction", || {
        (!evictions(&fake, "web-1").is_empty()).then_some(())
    });
    d.signal_and_wait("KILL");

    fake.control("POST", "/_fake/objects", Some(fixed_pdb(1)));
    let d = Daemon::start(&fake);
    let t = d.login();
    let v = wait_drain_state(&d, &t, "node-2", "drained", 30);
    assert_eq!(v["drainRemaining"], json!([]));
    assert!(!pod_exists(&fake, "default", "web-1"));
    // The restarted daemon resumed its own Lease rather than waiting for it to expire.
    d.output.wait_for("driving", |l| {
        l.contains("driving drain") && l.contains("node-2")
    });
}

#[test]
fn two_daemons_never_drive_one_node_at_once() {
    let fake = FakeKube::start(3, &["--controllers", "2"]);
    let a = Daemon::start(&fake);
    // B authenticates with the client certificate, so the fake logs its requests apart.
    let cert_kubeconfig = fake
        .dir
        .path()
        .join("kubeconfig-cert")
        .display()
        .to_string();
    let b = Daemon::start_with(
        &fake,
        DaemonOpts {
            args: vec![
                "--node-name".into(),
                "node-2".into(),
                "--kubeconfig".into(),
                cert_kubeconfig,
            ],
            ..DaemonOpts::default()
        },
    );
    let t = a.login();
    start_blocked_drain(&fake, &a, &t, "node-3", fixed_pdb(0), 600);
    // Either daemon may win the Lease: A got the request, B's worker sees the node turn
    // draining through its watch at about the same moment. Exactly one drives.
    let lease = wait_until(20, "a lease", || drain_lease(&fake, "node-3"));
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    let (mut driver, other) = match holder.as_str() {
        "joinery@node-1" => (a, b),
        "joinery@node-2" => (b, a),
        h => panic!("unexpected holder {h}"),
    };
    other
        .output
        .wait_for("the other to see the holder driving", |l| {
            l.contains("drain is driven by another daemon") && l.contains(&holder)
        });
    // Each daemon has its own Kubernetes identity (token vs client certificate), so
    // the fake's log tells whose evictions these are: only the holder's.
    let users = wait_until(20, "the holder's first eviction", || {
        let users: Vec<String> = evictions(&fake, "web-1")
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        (!users.is_empty()).then_some(users)
    });
    let driver_user = users[0].clone();
    // The window is the holder's next two attempts (its retries while the budget
    // refuses): long enough for the other to have tried too, if it ever would.
    let users = wait_until(20, "two more evictions", || {
        let now: Vec<String> = evictions(&fake, "web-1")
            .into_iter()
            .map(|(u, _)| u)
            .collect();
        (now.len() >= users.len() + 2).then_some(now)
    });
    assert!(
        users.iter().all(|u| *u == driver_user),
        "both daemons evicted while {holder} held the lease: {users:?}"
    );

    // The holder dies without releasing; the other takes over only once the lease has
    // expired.
    driver.signal_and_wait("KILL");
    let killed = Instant::now();
    fake.control("POST", "/_fake/objects", Some(fixed_pdb(1)));
    let line = other.output.wait_for("the other taking over", |l| {
        l.contains("driving drain") && l.contains("node-3")
    });
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(5),
        "took over after {took:?}, before the lease expired"
    );
    assert!(line.contains("\"transitions\":1"), "{line}");
    let t2 = other.login();
    wait_drain_state(&other, &t2, "node-3", "drained", 30);
    let users: Vec<String> = evictions(&fake, "web-1")
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    let last = users.last().cloned().unwrap_or_default();
    assert!(last != driver_user, "{users:?}");
}

#[test]
fn the_drain_worker_stops_and_lets_go_on_sigterm() {
    let fake = FakeKube::start(3, &[]);
    let mut d = Daemon::start(&fake);
    let t = d.login();
    start_blocked_drain(&fake, &d, &t, "node-2", fixed_pdb(0), 600);
    wait_until(20, "the worker holding the lease", || {
        drain_lease(&fake, "node-2")
    });
    let started = Instant::now();
    let status = d.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let lines = d.output.lines();
    let stopped = lines
        .iter()
        .position(|l| l.contains("drain worker stopped"));
    let exited = lines.iter().position(|l| l.contains("\"msg\":\"stopped\""));
    assert!(stopped.is_some() && stopped < exited, "{lines:#?}");
    // The Lease was released, and the drain itself lives on in the node.
    assert!(drain_lease(&fake, "node-2").is_none());
    let (_, node) = kube_get(&fake, "/api/v1/nodes/node-2");
    assert_eq!(
        node["metadata"]["annotations"]["joinery.replicated.com/drain-state"],
        "draining"
    );
}

#[test]
fn delete_refusals() {
    let fake = FakeKube::start(4, &["--controllers", "3"]);
    let d = Daemon::start(&fake);
    let t = d.login();

    let msg = send(&d, "DELETE", "/v1/nodes/node-1?force=true", &t, None)
        .assert_error(409, "node_is_self");
    assert!(msg.contains("node-1"), "{msg}");
    send(&d, "DELETE", "/v1/nodes/node-4", &t, None).assert_error(409, "node_not_drained");
    send(&d, "DELETE", "/v1/nodes/node-4?force=false", &t, None)
        .assert_error(409, "node_not_drained");
    send(&d, "DELETE", "/v1/nodes/node-9", &t, None).assert_error(404, "node_not_found");
    send(&d, "DELETE", "/v1/nodes/node-4?force=maybe", &t, None).assert_error(400, "invalid_query");
    // A second force, or a misspelt one, is refused rather than silently ignored.
    send(
        &d,
        "DELETE",
        "/v1/nodes/node-4?force=false&force=true",
        &t,
        None,
    )
    .assert_error(400, "invalid_query");
    send(&d, "DELETE", "/v1/nodes/node-4?froce=true", &t, None)
        .assert_error(400, "unknown_parameter");

    // node-2 down: removing node-3 would leave 1 ready of 2 controllers (quorum 2).
    fake.control(
        "POST",
        "/_fake/node-ready",
        Some(json!({"name": "node-2", "ready": false})),
    );
    let msg = send(&d, "DELETE", "/v1/nodes/node-3?force=true", &t, None)
        .assert_error(409, "would_lose_quorum");
    assert!(msg.contains("2 of 3"), "{msg}");
    // Nothing was touched.
    let (_, member) = kube_get(&fake, "/apis/etcd.k0sproject.io/v1beta1/etcdmembers/node-3");
    assert_eq!(member["spec"]["leave"], false);
    assert_eq!(kube_get(&fake, "/api/v1/nodes/node-3").0, 200);

    // force skips only the drain check: a worker goes, with no etcd step.
    let r = send(&d, "DELETE", "/v1/nodes/node-4?force=true", &t, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"removed": "node-4", "steps": [{"step": "delete-node", "result": "deleted"}]})
    );
    assert_eq!(kube_get(&fake, "/api/v1/nodes/node-4").0, 404);
    let results: Vec<String> = audit_lines(&d, "node.remove")
        .iter()
        .map(|l| l["result"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        results,
        [
            "refused: node_is_self",
            "refused: node_not_drained",
            "refused: node_not_drained",
            "refused: would_lose_quorum",
            "removed"
        ]
    );
}

#[test]
fn removing_a_controller_leaves_etcd_then_deletes_the_node() {
    // node-1..3 are controllers; node-4 joined without roles.
    let fake = FakeKube::start(4, &["--controllers", "3"]);
    let d = Daemon::start(&fake);
    let t = d.login();
    let r = send(
        &d,
        "POST",
        "/v1/nodes/node-3/drain",
        &t,
        Some(json!({"deadlineSeconds": 0})),
    );
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"drainState": "drained"}))
    );
    fake.control("DELETE", "/_fake/requests", None);

    let r = send(&d, "DELETE", "/v1/nodes/node-3", &t, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["removed"], "node-3");
    let steps: Vec<(String, String)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().into(),
                s["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(steps.len(), 3, "{v}");
    assert_eq!(
        steps[0],
        ("etcd-leave".into(), "requested (spec.leave: true)".into())
    );
    assert_eq!(steps[1].0, "etcd-left");
    assert!(steps[1].1.starts_with("Joined=False after"), "{v}");
    assert_eq!(steps[2], ("delete-node".into(), "deleted".into()));

    let (_, member) = kube_get(&fake, "/apis/etcd.k0sproject.io/v1beta1/etcdmembers/node-3");
    assert_eq!(member["spec"]["leave"], true);
    // The etcd member left before the Node was deleted, and the leave was a merge patch.
    let reqs = fake.requests();
    let patch = reqs
        .iter()
        .position(|r| {
            r["method"] == "PATCH" && r["path"].as_str().unwrap().ends_with("etcdmembers/node-3")
        })
        .expect("etcd leave patch");
    let delete = reqs
        .iter()
        .position(|r| r["method"] == "DELETE" && r["path"] == "/api/v1/nodes/node-3")
        .expect("node delete");
    assert!(patch < delete);
    d.get("/v1/nodes/node-3", &t)
        .assert_error(404, "node_not_found");

    let h = d.get("/v1/cluster/health", &t).json();
    assert_eq!(h["controllers"], json!(["node-1", "node-2"]));
    assert_eq!(h["failureTolerance"], 0);
    assert_eq!(h["healthy"], true);
}

#[test]
fn cluster_health_counts_ready_controllers() {
    let fake = FakeKube::start(6, &["--controllers", "5"]);
    let d = Daemon::start(&fake);
    let t = d.login();
    let h = d.get("/v1/cluster/health", &t).json();
    assert_eq!(h["healthy"], true);
    assert_eq!(h["failureTolerance"], 2);
    assert_eq!(h["quorum"], 3);
    assert_eq!(h["leader"], "node-1");
    assert_eq!(
        h["controllers"],
        json!(["node-1", "node-2", "node-3", "node-4", "node-5"])
    );
    let nodes = h["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    assert_eq!(nodes[5]["name"], "node-6");
    assert_eq!(nodes[5]["roles"], json!([]));
    assert!(nodes
        .iter()
        .all(|n| n["stableSince"].is_string() && n["drainState"] == "active"));

    for n in ["node-4", "node-5"] {
        fake.control(
            "POST",
            "/_fake/node-ready",
            Some(json!({"name": n, "ready": false})),
        );
    }
    // Node reads come from the watch-fed view: a change shows within moments.
    let h = wait_until(10, "two controllers NotReady", || {
        let h = d.get("/v1/cluster/health", &t).json();
        (h["readyControllers"] == 3).then_some(h)
    });
    assert_eq!(h["healthy"], false);
    assert_eq!(h["failureTolerance"], 0);
    assert_eq!(h["readyControllers"], 3);
    assert_eq!(h["nodes"][3]["ready"], false);
    // A worker that is not ready does not make the cluster unhealthy.
    for n in ["node-4", "node-5"] {
        fake.control(
            "POST",
            "/_fake/node-ready",
            Some(json!({"name": n, "ready": true})),
        );
    }
    fake.control(
        "POST",
        "/_fake/node-ready",
        Some(json!({"name": "node-6", "ready": false})),
    );
    let h = wait_until(10, "node-6 NotReady", || {
        let h = d.get("/v1/cluster/health", &t).json();
        (h["nodes"][5]["ready"] == false).then_some(h)
    });
    assert_eq!(
        (h["healthy"].clone(), h["failureTolerance"].clone()),
        (json!(true), json!(2))
    );
}
