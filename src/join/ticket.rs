//! Join tickets: what makes a join token single-use across every controller.
//!
//! Issuing a join command records a ticket, a Secret named `joinery-ticket-<jti>` in
//! joinery's namespace, before the token is handed out. Downloading a bundle with the
//! token consumes the ticket with a DELETE carrying a uid precondition: Kubernetes lets
//! exactly one DELETE win, whichever controller sends it, and every later attempt finds
//! nothing (410 `join_token_used`). A crash between recording and answering leaves an
//! unused ticket that simply expires; a crash after consuming loses nothing the joining
//! host could still use. Expired tickets are swept when new ones are issued.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::kube;

/// Name prefix of ticket Secrets.
pub const PREFIX: &str = "joinery-ticket-";
/// Label that marks ticket Secrets, for listing and sweeping.
pub const LABEL: &str = "joinery.replicated.com/join-ticket";
/// Annotation holding the expiry in Unix seconds.
pub const EXPIRES: &str = "joinery.replicated.com/expires";
/// Annotation holding the roles, comma-separated (for operators reading the Secret).
pub const ROLES: &str = "joinery.replicated.com/roles";

/// How often the sweep of expired tickets runs at most.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Why a ticket could not be consumed.
#[derive(Debug)]
pub enum ConsumeError {
    /// Already consumed (or never recorded): the token cannot be used again.
    Used,
    /// The ticket exists but its time is up.
    Expired,
    Kube(kube::Error),
}

/// The ticket book, in one namespace.
pub struct Tickets {
    kube: kube::Client,
    namespace: String,
    last_sweep: Mutex<Option<Instant>>,
}

/// A fresh ticket id: 16 random bytes as 32 lowercase hex digits, valid in a Secret name.
pub fn new_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` has the shape [`new_id`] gives (checked before it names a Secret).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Tickets {
    pub fn new(kube: kube::Client, namespace: &str) -> Tickets {
        Tickets {
            kube,
            namespace: namespace.to_string(),
            last_sweep: Mutex::new(None),
        }
    }

    /// Records a ticket; the token may be handed out only once this returned Ok.
    pub fn issue(
        &self,
        id: &str,
        roles: &[String],
        expires_at: i64,
        now: i64,
    ) -> Result<(), kube::Error> {
        self.sweep(now);
        let new = kube::NewSecret {
            name: format!("{PREFIX}{id}"),
            labels: BTreeMap::from([
                (LABEL.to_string(), "true".to_string()),
                ("app.kubernetes.io/name".to_string(), "joinery".to_string()),
            ]),
            annotations: BTreeMap::from([
                (EXPIRES.to_string(), expires_at.to_string()),
                (ROLES.to_string(), roles.join(",")),
            ]),
            data: BTreeMap::new(),
            type_: Some("Opaque".into()),
        };
        self.kube.create_secret(&self.namespace, &new).map(|_| ())
    }

    /// Consumes a ticket: Ok for exactly one caller across all controllers.
    pub fn consume(&self, id: &str, now: i64) -> Result<(), ConsumeError> {
        if !valid_id(id) {
            return Err(ConsumeError::Used);
        }
        let name = format!("{PREFIX}{id}");
        let secret = match self.kube.get_secret(&self.namespace, &name) {
            Ok(Some(s)) => s,
            Ok(None) => return Err(ConsumeError::Used),
            Err(e) => return Err(ConsumeError::Kube(e)),
        };
        let expired = expiry(&secret).is_none_or(|at| at <= now);
        match self
            .kube
            .delete_secret(&self.namespace, &name, Some(&secret.uid))
        {
            Ok(()) if expired => Err(ConsumeError::Expired),
            Ok(()) => Ok(()),
            // Someone else's DELETE won the race.
            Err(kube::Error::NotFound) | Err(kube::Error::Conflict) => Err(ConsumeError::Used),
            Err(e) => Err(ConsumeError::Kube(e)),
        }
    }

    /// Deletes expired tickets, at most once a minute; failures wait for the next sweep.
    pub fn sweep(&self, now: i64) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(list) = self
            .kube
            .list_secrets(&self.namespace, &format!("{LABEL}=true"))
        else {
            return;
        };
        for s in list {
            if expiry(&s).is_none_or(|at| at <= now) {
                let _ = self
                    .kube
                    .delete_secret(&self.namespace, &s.name, Some(&s.uid));
            }
        }
    }
}

fn expiry(s: &kube::Secret) -> Option<i64> {
    s.annotations.get(EXPIRES).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids() {
        let a = super::new_id().unwrap();
        assert!(super::valid_id(&a), "{a}");
        assert_ne!(a, super::new_id().unwrap());
        for bad in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            "../x",
            &"a".repeat(33),
        ] {
            assert!(!super::valid_id(bad), "{bad}");
        }
    }
}
