//! What goes into one join's bundle, in order: the artifacts (each still the file the
//! start-up scan saw), `license.yaml`, the signed `cluster-seed.json`, the
//! `k0s-join-token` and `SHA256SUMS` over all of them; plus the seed itself and the
//! bundle's file name. The HTTP handler only decides who may download; this module
//! decides what they get.

use std::collections::BTreeMap;
use std::io;

use super::command;
use super::entry::Entry;
use super::seed::{self, Endpoint, Seed};
use super::service::JoinService;
use crate::kube;
use crate::roles;

/// The cluster as a joining node needs to see it, from one node listing.
pub struct ClusterView<'a> {
    pub nodes: &'a [kube::Node],
    /// `metadata.uid` of `kube-system`: the cluster's stable id.
    pub cluster_id: String,
}

/// The cluster seed for a join of `requested` roles at `now`, valid until `expires`.
pub fn seed(
    svc: &JoinService,
    cluster: &ClusterView<'_>,
    requested: &[String],
    now: i64,
    expires: i64,
) -> Seed {
    let ctl_role = svc.roles.controller.name.as_str();
    let (controllers, workers): (Vec<&kube::Node>, Vec<&kube::Node>) = cluster
        .nodes
        .iter()
        .partition(|n| roles::is_controller(&n.labels, Some(ctl_role)));
    let endpoint = |n: &&kube::Node| Endpoint {
        name: n.name.clone(),
        internal_ip: n.internal_ip.clone().unwrap_or_default(),
    };
    let joins_controller = requested.iter().any(|r| r == ctl_role);
    let mut versions = BTreeMap::new();
    versions.insert("joinery".to_string(), crate::version::VERSION.to_string());
    if let Some(k) = controllers
        .iter()
        .map(|n| n.node_info.kubelet_version.clone())
        .find(|v| !v.is_empty())
    {
        versions.insert("kubernetes".to_string(), k);
    }
    let controller_eps: Vec<Endpoint> = controllers.iter().map(endpoint).collect();
    let worker_eps: Vec<Endpoint> = workers.iter().map(endpoint).collect();
    Seed {
        cluster_id: cluster.cluster_id.clone(),
        versions,
        connections: seed::connections(&controller_eps, &worker_eps, joins_controller),
        controllers: controller_eps,
        roles: seed::ordered_roles(&svc.roles, requested)
            .into_iter()
            .map(String::from)
            .collect(),
        node_labels: seed::node_labels(&svc.roles, requested),
        issued_at: now,
        expires_at: expires,
    }
}

/// Whether a join of `requested` roles makes a controller.
pub fn joins_controller(svc: &JoinService, requested: &[String]) -> bool {
    requested.contains(&svc.roles.controller.name)
}

/// The bundle's entries with `SHA256SUMS` last. Fails, before anything is sent, if an
/// artifact is not the file scanned at start-up or cannot be hashed.
pub fn entries(svc: &JoinService, signed_seed: &[u8], k0s_token: &str) -> io::Result<Vec<Entry>> {
    let mut entries = svc.artifact_entries();
    entries.push(Entry::bytes("license.yaml", svc.license.raw.clone(), 0o644));
    entries.push(Entry::bytes(
        "cluster-seed.json",
        signed_seed.to_vec(),
        0o644,
    ));
    entries.push(Entry::bytes(
        "k0s-join-token",
        format!("{k0s_token}\n"),
        0o600,
    ));
    let sums = svc.cache.sha256sums(&entries)?;
    entries.push(Entry::bytes("SHA256SUMS", sums, 0o644));
    Ok(entries)
}

/// UTC `YYYYMMDD-HHMMSS` of `now`, for file names.
pub fn stamp(now: i64) -> String {
    let (date, time) = crate::time::civil(now);
    format!("{}-{}", date.replace('-', ""), time.replace(':', ""))
}

/// The bundle's file name for a join made at `time`.
pub fn file_name(svc: &JoinService, requested: &[String], time: i64) -> String {
    command::bundle_file_name(&svc.license.app_slug, requested, &stamp(time))
}

/// The bundle's strong ETag: a digest of the ticket, the bundle's time, its
/// `SHA256SUMS` (which covers every byte of content) and its length.
pub fn etag(ticket: &str, time: i64, entries: &[Entry], total: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(ticket.as_bytes());
    h.update(time.to_le_bytes());
    h.update(total.to_le_bytes());
    if let Some(Entry {
        source: super::entry::Source::Bytes { data, .. },
        ..
    }) = entries.last()
    {
        h.update(data);
    }
    let d = h.finalize();
    format!(
        "\"{}\"",
        d[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// A `Range` header's single byte range, `bytes=N-` or `bytes=N-M`: (first, last).
/// Anything else (several ranges, suffix ranges, other units, nonsense) is `None`,
/// and the whole bundle is sent, as RFC 9110 allows.
pub fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !(b.is_empty() || digits(b)) {
        return None;
    }
    let first = a.parse().ok()?;
    let last = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    match last {
        Some(l) if l < first => None,
        _ => Some((first, last)),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-"), Some((0, None)));
        assert_eq!(parse_range("bytes=100-199"), Some((100, Some(199))));
        for ignored in [
            "bytes=-5",
            "bytes=5-1",
            "bytes=1-2,4-5",
            "items=0-",
            "bytes=x-",
            "bytes=99999999999999999999999-",
            "",
        ] {
            assert_eq!(parse_range(ignored), None, "{ignored}");
        }
    }
}
