//! One drain driver per node: a `coordination.k8s.io/v1` Lease `joinery-drain-<node>`
//! in joinery's namespace, held by the daemon doing the evictions.
//!
//! The holder renews it every [`RENEW_AFTER`]; another daemon takes it over only once
//! `renewTime + leaseDurationSeconds` has passed, and every write carries the Lease's
//! resourceVersion, so two daemons racing for it cannot both win. A daemon keeps its
//! identity across restarts (`joinery@<node>`), so a restarted daemon resumes its own
//! Lease at once instead of waiting for it to expire.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::kube::{self, Lease};
use crate::time;

/// `leaseDurationSeconds` of a drain Lease.
pub const LEASE_SECONDS: i64 = 15;
/// The holder renews this often (a third of the duration, as client-go does).
pub const RENEW_AFTER: Duration = Duration::from_secs(5);

/// The Lease name for a node. Names past what fits are replaced by a digest.
pub fn lease_name(node: &str) -> String {
    let name = format!("joinery-drain-{node}");
    if name.len() <= 253 {
        return name;
    }
    let digest = Sha256::digest(node.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("joinery-drain-{hex}")
}

/// What to do about a node's Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// It expired (or was released): take it over.
    TakeOver,
    /// Another daemon holds it and it is current.
    HeldBy(String),
}

/// Decides from the Lease as read (if any), our identity and the time now.
pub fn decide(existing: Option<&Lease>, me: &str, now: f64) -> Decision {
    let Some(l) = existing else {
        return Decision::Create;
    };
    let Some(holder) = l.holder.as_deref() else {
        return Decision::TakeOver;
    };
    if holder == me {
        return Decision::Renew;
    }
    let renewed = l
        .renew_time
        .as_deref()
        .or(l.acquire_time.as_deref())
        .and_then(time::parse_rfc3339);
    let duration = l.duration_seconds.unwrap_or(LEASE_SECONDS).max(1) as f64;
    match renewed {
        Some(t) if t + duration > now => Decision::HeldBy(holder.to_string()),
        _ => Decision::TakeOver,
    }
}

/// A Lease this daemon holds, and when it last wrote it.
#[derive(Debug, Clone)]
pub struct Held {
    pub lease: Lease,
    pub renewed: Instant,
}

/// What [`acquire`] found: whether this daemon may drive the node.
#[derive(Debug)]
pub enum Acquired {
    /// We hold the Lease: drive the node, and keep the [`Held`] to renew it.
    Drive(Held),
    /// Another daemon holds it (or won a race for it just now): leave the node to that
    /// holder, named here for the log.
    LeaveTo(String),
}

/// Make sure we hold the node's Lease. An error means Kubernetes could not be asked:
/// nothing is known, try again later.
pub fn acquire(
    kube: &kube::Client,
    ns: &str,
    node: &str,
    me: &str,
    held: Option<Held>,
) -> Result<Acquired, kube::Error> {
    if let Some(h) = &held {
        if h.renewed.elapsed() < RENEW_AFTER {
            return Ok(Acquired::Drive(h.clone()));
        }
    }
    let name = lease_name(node);
    let current = match held {
        // Renew straight from what we wrote last; a conflict means someone else wrote.
        Some(h) => Some(h.lease),
        None => kube.get_lease(ns, &name)?,
    };
    let now = time::now_f64();
    let stamp = time::rfc3339_micros(now);
    let decision = decide(current.as_ref(), me, now);
    let result = match (decision, current) {
        (Decision::HeldBy(h), _) => return Ok(Acquired::LeaveTo(h)),
        (Decision::Create, _) => kube.create_lease(&Lease {
            namespace: ns.to_string(),
            name,
            resource_version: String::new(),
            holder: Some(me.to_string()),
            duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(stamp.clone()),
            renew_time: Some(stamp),
            transitions: 0,
        }),
        (Decision::Renew, Some(l)) => kube.update_lease(&Lease {
            renew_time: Some(stamp),
            duration_seconds: Some(LEASE_SECONDS),
            ..l
        }),
        (Decision::TakeOver, Some(l)) => kube.update_lease(&Lease {
            holder: Some(me.to_string()),
            duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(stamp.clone()),
            renew_time: Some(stamp),
            transitions: l.transitions.saturating_add(1),
            ..l
        }),
        (_, None) => unreachable_lease(),
    };
    match result {
        Ok(lease) => Ok(Acquired::Drive(Held {
            lease,
            renewed: Instant::now(),
        })),
        Err(kube::Error::Conflict | kube::Error::AlreadyExists | kube::Error::NotFound) => {
            Ok(Acquired::LeaveTo("another daemon".to_string()))
        }
        Err(e) => Err(e),
    }
}

/// `decide` answers Renew or TakeOver only for an existing Lease; this keeps the match
/// total without a panic.
fn unreachable_lease() -> Result<Lease, kube::Error> {
    Err(kube::Error::Protocol("lease vanished between reads".into()))
}

/// Give a Lease up: delete it if it is still the version we wrote, so a Lease another
/// daemon has since taken over is never touched. Failures only cost the others a wait.
pub fn release(kube: &kube::Client, held: &Held) {
    let l = &held.lease;
    match kube.delete_lease(&l.namespace, &l.name, &l.resource_version) {
        Ok(()) | Err(kube::Error::NotFound | kube::Error::Conflict) => {}
        Err(e) => crate::log::warn(
            "could not release a drain lease; it expires by itself",
            &[
                ("lease", l.name.clone().into()),
                ("error", e.to_string().into()),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renew: Option<&str>, dur: Option<i64>) -> Lease {
        Lease {
            holder: holder.map(str::to_string),
            renew_time: renew.map(str::to_string),
            duration_seconds: dur,
            ..Lease::default()
        }
    }

    #[test]
    fn decisions() {
        let t0 = time::parse_rfc3339("2026-01-15T12:00:00Z").unwrap();
        let me = "joinery@node-1";
        assert_eq!(decide(None, me, t0), Decision::Create);
        let ours = lease(Some(me), Some("2000-01-01T00:00:00.000000Z"), Some(15));
        assert_eq!(
            decide(Some(&ours), me, t0),
            Decision::Renew,
            "ours even if stale"
        );
        let theirs = lease(
            Some("joinery@node-2"),
            Some("2026-01-15T11:59:50.000000Z"),
            Some(15),
        );
        assert_eq!(
            decide(Some(&theirs), me, t0),
            Decision::HeldBy("joinery@node-2".into()),
            "renewed 10 s ago, 15 s lease"
        );
        assert_eq!(
            decide(Some(&theirs), me, t0 + 5.0),
            Decision::TakeOver,
            "expired"
        );
        let no_time = lease(Some("joinery@node-2"), None, Some(15));
        assert_eq!(decide(Some(&no_time), me, t0), Decision::TakeOver);
        let released = lease(None, Some("2026-01-15T12:00:00.000000Z"), Some(15));
        assert_eq!(decide(Some(&released), me, t0), Decision::TakeOver);
    }

    #[test]
    fn lease_names_fit() {
        assert_eq!(lease_name("node-1"), "joinery-drain-node-1");
        let long = "a".repeat(250);
        let n = lease_name(&long);
        assert!(n.len() <= 253 && n.starts_with("joinery-drain-"), "{n}");
        assert_ne!(lease_name(&long), lease_name(&"b".repeat(250)));
    }
}
