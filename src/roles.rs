//! Embedded Cluster roles, as they are written on nodes.
//!
//! A node joined with roles `[controller, gpu]` carries
//! `kots.io/embedded-cluster-role=total-2`, `kots.io/embedded-cluster-role-0=controller`
//! and `kots.io/embedded-cluster-role-1=gpu`. Reading them back means parsing `total-N`
//! and then exactly the keys `-0` .. `-(N-1)`; anything else is ignored, so a stray or
//! half-written label never invents a role.

use std::collections::BTreeMap;

/// The label holding `total-N`; the per-role keys are this plus `-0`, `-1`, ...
pub const ROLE_LABEL: &str = "kots.io/embedded-cluster-role";

/// At most this many role keys are read, whatever `total-N` claims.
const MAX_ROLES: usize = 64;

/// The roles recorded on a node, in join order; empty when the node has none.
pub fn roles_from_labels(labels: &BTreeMap<String, String>) -> Vec<String> {
    let Some(total) = labels
        .get(ROLE_LABEL)
        .and_then(|v| v.strip_prefix("total-"))
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Vec::new();
    };
    (0..total.min(MAX_ROLES))
        .filter_map(|i| labels.get(&format!("{ROLE_LABEL}-{i}")))
        .filter(|r| !r.is_empty())
        .cloned()
        .collect()
}

/// The one rule for "is this node a controller": k0s labels it
/// `node.k0sproject.io/role=control-plane`, Kubernetes tooling marks it
/// `node-role.kubernetes.io/control-plane`, or it was joined with Embedded Cluster's
/// controller role (its name comes from the EC config, when joinery has one).
pub fn is_controller(labels: &BTreeMap<String, String>, ec_controller_role: Option<&str>) -> bool {
    labels.get("node.k0sproject.io/role").map(String::as_str) == Some("control-plane")
        || labels.contains_key("node-role.kubernetes.io/control-plane")
        || ec_controller_role
            .is_some_and(|role| roles_from_labels(labels).iter().any(|r| r == role))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(labels: &[(&str, &str)], expected: &[&str]) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(roles_from_labels(&labels), expected, "{labels:?}");
    }

    #[test]
    fn reads_roles_in_order() {
        check(&[], &[]);
        check(&[("kots.io/embedded-cluster-role-0", "controller")], &[]);
        check(
            &[
                ("kots.io/embedded-cluster-role", "total-1"),
                ("kots.io/embedded-cluster-role-0", "controller"),
            ],
            &["controller"],
        );
        check(
            &[
                ("kots.io/embedded-cluster-role", "total-2"),
                ("kots.io/embedded-cluster-role-1", "gpu"),
                ("kots.io/embedded-cluster-role-0", "controller"),
                ("kots.io/embedded-cluster-role-2", "stray"),
            ],
            &["controller", "gpu"],
        );
        check(&[("kots.io/embedded-cluster-role", "total-x")], &[]);
        check(
            &[("kots.io/embedded-cluster-role", "total-99999999999")],
            &[],
        );
    }
}
