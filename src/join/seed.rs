//! `cluster-seed.json`: what a joining node needs to know about the cluster, signed by
//! the cluster's token key so the node can tell it came from a controller.
//!
//! The file is a JWS in the flattened JSON serialization of RFC 7515 section 7.2.2
//! (`{"protected","payload","signature"}`, HS256), so it stays a JSON file while its
//! payload is covered by the same HMAC as every token joinery issues.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;

use super::inputs::Roles;
use crate::roles::ROLE_LABEL;

/// A controller the joining node will talk to.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub name: String,
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
}

/// A TCP connection the joining node must be able to open.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Connection {
    pub to: String,
    pub port: u16,
    pub purpose: &'static str,
}

/// The seed's payload.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seed {
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    pub versions: BTreeMap<String, String>,
    pub controllers: Vec<Endpoint>,
    pub roles: Vec<String>,
    pub node_labels: BTreeMap<String, String>,
    pub connections: Vec<Connection>,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// The labels a node joined with `requested` roles carries, in Embedded Cluster's
/// convention: `role=total-N`, `role-0..N-1` with the controller role first, then each
/// role's own labels in that order, later roles winning on a shared key.
pub fn node_labels(roles: &Roles, requested: &[String]) -> BTreeMap<String, String> {
    let ordered = ordered_roles(roles, requested);
    let mut labels = BTreeMap::new();
    labels.insert(ROLE_LABEL.to_string(), format!("total-{}", ordered.len()));
    for (i, r) in ordered.iter().enumerate() {
        labels.insert(format!("{ROLE_LABEL}-{i}"), r.to_string());
    }
    for r in &ordered {
        if let Some(def) = roles.get(r) {
            labels.extend(def.labels.clone());
        }
    }
    labels
}

/// The requested roles with the controller role moved first.
pub fn ordered_roles<'a>(roles: &Roles, requested: &'a [String]) -> Vec<&'a str> {
    let ctl = roles.controller.name.as_str();
    let mut out: Vec<&str> = requested
        .iter()
        .map(String::as_str)
        .filter(|r| *r == ctl)
        .collect();
    out.extend(requested.iter().map(String::as_str).filter(|r| *r != ctl));
    out
}

/// The connections a node needs: every node reaches controllers on 6443 and 9443;
/// a controller also reaches other controllers on 2380 and 10250, and workers on 10250.
pub fn connections(
    controllers: &[Endpoint],
    workers: &[Endpoint],
    is_controller: bool,
) -> Vec<Connection> {
    let mut out = Vec::new();
    for c in controllers {
        out.push(Connection {
            to: c.internal_ip.clone(),
            port: 6443,
            purpose: "kubernetes api",
        });
        out.push(Connection {
            to: c.internal_ip.clone(),
            port: 9443,
            purpose: "k0s join api",
        });
        if is_controller {
            out.push(Connection {
                to: c.internal_ip.clone(),
                port: 2380,
                purpose: "etcd peers",
            });
            out.push(Connection {
                to: c.internal_ip.clone(),
                port: 10250,
                purpose: "kubelet",
            });
        }
    }
    if is_controller {
        for w in workers {
            out.push(Connection {
                to: w.internal_ip.clone(),
                port: 10250,
                purpose: "kubelet",
            });
        }
    }
    out
}

/// Signs the seed as a flattened JWS JSON document (pretty enough to read).
pub fn sign(key: &[u8], seed: &Seed) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let protected = b64.encode(br#"{"alg":"HS256"}"#);
    let payload = b64.encode(serde_json::to_vec(seed).unwrap_or_default());
    let signature = crate::auth::jwt::sign_input(key, &format!("{protected}.{payload}"));
    let doc = serde_json::json!({
        "protected": protected,
        "payload": payload,
        "signature": signature,
    });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::inputs::parse_roles;

    fn roles() -> Roles {
        parse_roles(
            "apiVersion: embeddedcluster.replicated.com/v1beta1\nkind: Config\nspec:\n  roles:\n    controller:\n      name: ctl\n      labels: {tier: control, shared: ctl}\n    custom:\n    - name: app\n      labels: {app: \"true\", shared: app}\n    - name: gpu\n      labels: {shared: gpu}\n",
        )
        .unwrap()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn labels_put_the_controller_first_and_later_roles_win() {
        let l = node_labels(&roles(), &s(&["gpu", "ctl", "app"]));
        assert_eq!(l["kots.io/embedded-cluster-role"], "total-3");
        assert_eq!(l["kots.io/embedded-cluster-role-0"], "ctl");
        assert_eq!(l["kots.io/embedded-cluster-role-1"], "gpu");
        assert_eq!(l["kots.io/embedded-cluster-role-2"], "app");
        assert_eq!(l["tier"], "control");
        assert_eq!(l["shared"], "app", "the last role in order wins");
        // The labels read back as the same roles.
        assert_eq!(crate::roles::roles_from_labels(&l), ["ctl", "gpu", "app"]);
    }

    #[test]
    fn connection_matrix() {
        let c = vec![Endpoint {
            name: "c0".into(),
            internal_ip: "10.0.0.11".into(),
        }];
        let w = vec![Endpoint {
            name: "w1".into(),
            internal_ip: "10.0.0.12".into(),
        }];
        let ports =
            |v: Vec<Connection>| v.iter().map(|c| (c.to.clone(), c.port)).collect::<Vec<_>>();
        assert_eq!(
            ports(connections(&c, &w, false)),
            [("10.0.0.11".into(), 6443), ("10.0.0.11".into(), 9443)]
        );
        assert_eq!(
            ports(connections(&c, &w, true)),
            [
                ("10.0.0.11".into(), 6443),
                ("10.0.0.11".into(), 9443),
                ("10.0.0.11".into(), 2380),
                ("10.0.0.11".into(), 10250),
                ("10.0.0.12".into(), 10250)
            ]
        );
    }

    #[test]
    fn signed_seed_verifies() {
        let key = [9u8; 32];
        let seed = Seed {
            cluster_id: "uid".into(),
            versions: BTreeMap::new(),
            controllers: vec![],
            roles: s(&["ctl"]),
            node_labels: BTreeMap::new(),
            connections: vec![],
            issued_at: 1,
            expires_at: 2,
        };
        let doc: serde_json::Value = serde_json::from_slice(&sign(&key, &seed)).unwrap();
        let input = format!(
            "{}.{}",
            doc["protected"].as_str().unwrap(),
            doc["payload"].as_str().unwrap()
        );
        assert_eq!(
            doc["signature"].as_str().unwrap(),
            crate::auth::jwt::sign_input(&key, &input)
        );
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(doc["payload"].as_str().unwrap())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["clusterID"], "uid");
        assert_eq!(v["roles"][0], "ctl");
    }
}
