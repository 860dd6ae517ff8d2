//! Join tickets: what makes a join token single-use across every controller, and the
//! ledger of joins.
//!
//! Issuing a join command records a ticket, a Secret named `joinery-ticket-<jti>` in
//! joinery's namespace, before the token is handed out. Its state lives in annotations
//! and moves only by a PUT carrying the resourceVersion that was read, so of two
//! controllers racing on one ticket exactly one wins:
//!
//! ```text
//! issued ──(first download: client address, start time)──▶ downloading
//!    │                                                        │ (stream ended: completed)
//!    └──────────────(DELETE /v1/joins/{id})──▶ revoked ◀───────┘
//! ```
//!
//! The per-join members of the bundle (signed seed, k0s token, bundle time, ETag) are
//! made once, after the ticket was won, and kept in the ticket's data, so a resumed
//! download is byte-identical. Only the client that started a download may continue it,
//! within [`DOWNLOAD_WINDOW_SECS`] of its start. Tickets stay for
//! [`KEEP_FINISHED_SECS`] after they are finished (the ledger) and are then swept.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::kube;

/// Name prefix of ticket Secrets.
pub const PREFIX: &str = "joinery-ticket-";
/// Label that marks ticket Secrets, for listing and sweeping.
pub const LABEL: &str = "joinery.replicated.com/join-ticket";
const A: &str = "joinery.replicated.com/";
/// Annotation holding the expiry in Unix seconds.
pub const EXPIRES: &str = "joinery.replicated.com/expires";
/// Annotation holding the roles, comma-separated (for operators reading the Secret).
pub const ROLES: &str = "joinery.replicated.com/roles";

/// How long a started download may be resumed, from its first byte.
pub const DOWNLOAD_WINDOW_SECS: i64 = 3600;
/// How long finished joins stay in the ledger.
pub const KEEP_FINISHED_SECS: i64 = 7 * 24 * 3600;

/// How often the sweep of finished tickets runs at most.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The state written in a ticket (the ledger derives `expired`, `downloaded` and
/// `joined` from it and the clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Issued,
    Downloading,
    Revoked,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Issued => "issued",
            State::Downloading => "downloading",
            State::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<State> {
        match s {
            "issued" => Some(State::Issued),
            "downloading" => Some(State::Downloading),
            "revoked" => Some(State::Revoked),
            _ => None,
        }
    }
}

/// The bundle members made once per join and kept with its ticket.
#[derive(Clone, PartialEq, Eq)]
pub struct Members {
    /// The signed cluster seed (`cluster-seed.json`).
    pub seed: Vec<u8>,
    /// The k0s join token (`k0s-join-token`, without the newline).
    pub k0s_token: String,
    /// The id of the bootstrap-token Secret behind it, for revocation.
    pub bootstrap_id: String,
    /// The bundle's time: mtime of the small entries and the file name's stamp.
    pub time: i64,
}

/// One ticket as read from Kubernetes.
#[derive(Clone)]
pub struct Ticket {
    pub id: String,
    pub roles: Vec<String>,
    pub requested_by: String,
    pub created: i64,
    pub expires: i64,
    pub state: State,
    /// The downloading client's address.
    pub client: Option<String>,
    /// When the download started (first byte).
    pub started: Option<i64>,
    /// When a download last ran to its end.
    pub completed: Option<i64>,
    /// Highest byte offset served (exclusive).
    pub bytes: u64,
    /// The ETag of the bundle last sent whole or started: a resume must match it.
    pub etag: Option<String>,
    pub revoked_at: Option<i64>,
    pub members: Option<Members>,
    resource_version: String,
}

impl Ticket {
    /// Whether `client` may (re)start this ticket's download at `now`.
    pub fn resumable_by(&self, client: &str, now: i64) -> bool {
        self.state == State::Downloading
            && self.client.as_deref() == Some(client)
            && self.started.is_some_and(|s| now < s + DOWNLOAD_WINDOW_SECS)
    }

    /// When the ticket stops mattering: after this, plus [`KEEP_FINISHED_SECS`], it is
    /// swept.
    fn finished_at(&self) -> i64 {
        let window = self.started.map_or(0, |s| s + DOWNLOAD_WINDOW_SECS);
        self.expires
            .max(window)
            .max(self.revoked_at.unwrap_or(0))
            .max(self.completed.unwrap_or(0))
    }

    fn to_secret(&self) -> kube::NewSecret {
        let mut annotations = BTreeMap::from([
            (EXPIRES.to_string(), self.expires.to_string()),
            (ROLES.to_string(), self.roles.join(",")),
            (format!("{A}created"), self.created.to_string()),
            (format!("{A}requested-by"), self.requested_by.clone()),
            (format!("{A}state"), self.state.as_str().to_string()),
        ]);
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                annotations.insert(format!("{A}{k}"), v);
            }
        };
        put("client", self.client.clone());
        put("started", self.started.map(|v| v.to_string()));
        put("completed", self.completed.map(|v| v.to_string()));
        put("revoked", self.revoked_at.map(|v| v.to_string()));
        put("etag", self.etag.clone());
        if self.bytes > 0 {
            put("bytes", Some(self.bytes.to_string()));
        }
        let mut data = BTreeMap::new();
        if let Some(m) = &self.members {
            data.insert("cluster-seed.json".to_string(), m.seed.clone());
            data.insert(
                "k0s-join-token".to_string(),
                m.k0s_token.as_bytes().to_vec(),
            );
            data.insert(
                "bootstrap-token-id".to_string(),
                m.bootstrap_id.as_bytes().to_vec(),
            );
            data.insert("bundle-time".to_string(), m.time.to_string().into_bytes());
        }
        kube::NewSecret {
            name: format!("{PREFIX}{}", self.id),
            labels: BTreeMap::from([
                (LABEL.to_string(), "true".to_string()),
                ("app.kubernetes.io/name".to_string(), "joinery".to_string()),
            ]),
            annotations,
            data,
            type_: Some("Opaque".into()),
        }
    }

    fn from_secret(s: &kube::Secret) -> Option<Ticket> {
        let id = s.name.strip_prefix(PREFIX)?.to_string();
        let ann = |k: &str| s.annotations.get(&format!("{A}{k}")).cloned();
        let num = |k: &str| ann(k).and_then(|v| v.parse::<i64>().ok());
        let text = |k: &str| {
            s.data
                .get(k)
                .and_then(|v| String::from_utf8(v.clone()).ok())
        };
        let members = match (
            s.data.get("cluster-seed.json"),
            text("k0s-join-token"),
            text("bootstrap-token-id"),
            text("bundle-time").and_then(|v| v.parse().ok()),
        ) {
            (Some(seed), Some(k0s_token), Some(bootstrap_id), Some(time)) => Some(Members {
                seed: seed.clone(),
                k0s_token,
                bootstrap_id,
                time,
            }),
            _ => None,
        };
        Some(Ticket {
            id,
            roles: ann("roles")
                .map(|r| {
                    r.split(',')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            requested_by: ann("requested-by").unwrap_or_default(),
            created: num("created").unwrap_or(0),
            // A ticket without a readable expiry is treated as expired.
            expires: num("expires").unwrap_or(0),
            // Tickets written before states existed are unused ones.
            state: ann("state")
                .and_then(|v| State::parse(&v))
                .unwrap_or(State::Issued),
            client: ann("client"),
            started: num("started"),
            completed: num("completed"),
            bytes: ann("bytes").and_then(|v| v.parse().ok()).unwrap_or(0),
            etag: ann("etag"),
            revoked_at: num("revoked"),
            members,
            resource_version: s.resource_version.clone(),
        })
    }
}

/// The ticket book, in one namespace.
pub struct Tickets {
    kube: kube::Client,
    namespace: String,
    sweeps: crate::time::AtMostEvery,
}

/// A fresh ticket id: 16 random bytes as 32 lowercase hex digits, valid in a Secret name.
pub fn new_id() -> Result<String, crate::random::Unavailable> {
    crate::random::hex(16)
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
            sweeps: crate::time::AtMostEvery::new(SWEEP_EVERY),
        }
    }

    /// Records a ticket; the token may be handed out only once this returned Ok.
    pub fn issue(
        &self,
        id: &str,
        roles: &[String],
        requested_by: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<(), kube::Error> {
        self.sweep(now);
        let t = Ticket {
            id: id.to_string(),
            roles: roles.to_vec(),
            requested_by: requested_by.to_string(),
            created: now,
            expires: expires_at,
            state: State::Issued,
            client: None,
            started: None,
            completed: None,
            bytes: 0,
            revoked_at: None,
            etag: None,
            members: None,
            resource_version: String::new(),
        };
        self.kube
            .create_secret(&self.namespace, &t.to_secret())
            .map(|_| ())
    }

    /// Another handle on the same book (for a download's stream, which outlives the
    /// request handler).
    pub fn handle(&self) -> Tickets {
        Tickets::new(self.kube.clone(), &self.namespace)
    }

    /// The ticket `id`, or None when it does not exist (spent long ago, swept, or
    /// never issued).
    pub fn get(&self, id: &str) -> Result<Option<Ticket>, kube::Error> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(self
            .kube
            .get_secret(&self.namespace, &format!("{PREFIX}{id}"))?
            .as_ref()
            .and_then(Ticket::from_secret))
    }

    /// Writes `t` if nobody wrote the ticket since it was read: [`kube::Error::Conflict`]
    /// when someone did, [`kube::Error::NotFound`] when it is gone.
    pub fn write(&self, t: &Ticket) -> Result<Ticket, kube::Error> {
        let s = self
            .kube
            .replace_secret(&self.namespace, &t.resource_version, &t.to_secret())?;
        Ticket::from_secret(&s).ok_or_else(|| {
            kube::Error::Protocol("a ticket Secret came back under another name".into())
        })
    }

    /// Wins an issued ticket for `client`: Ok for exactly one caller across all
    /// controllers.
    pub fn start(&self, t: &Ticket, client: &str, now: i64) -> Result<Ticket, kube::Error> {
        let mut next = t.clone();
        next.state = State::Downloading;
        next.client = Some(client.to_string());
        next.started = Some(now);
        self.write(&next)
    }

    /// Records how far a download got (merge patch: it never undoes a revocation).
    pub fn progress(&self, id: &str, bytes: u64, completed: Option<i64>) {
        let mut ann = BTreeMap::from([(format!("{A}bytes"), bytes.to_string())]);
        if let Some(at) = completed {
            ann.insert(format!("{A}completed"), at.to_string());
        }
        self.annotate(id, &ann, "recording a join's progress failed");
    }

    /// Merges `ann` into ticket `id`'s annotations; a failure is only logged: these
    /// records feed the ledger and the resume check, never who may download, and a lost
    /// ETag costs at most a resume that `sha256sum -c` then catches.
    fn annotate(&self, id: &str, ann: &BTreeMap<String, String>, failed: &str) {
        if let Err(e) = self
            .kube
            .annotate_secret(&self.namespace, &format!("{PREFIX}{id}"), ann)
        {
            crate::log::warn(
                failed,
                &[("ticket", id.into()), ("error", e.to_string().into())],
            );
        }
    }

    /// Records the ETag of the bundle a download of ticket `id` is sending.
    pub fn record_etag(&self, id: &str, etag: &str) {
        let ann = BTreeMap::from([(format!("{A}etag"), etag.to_string())]);
        self.annotate(id, &ann, "recording a join's ETag failed");
    }

    /// Every ticket, newest first.
    pub fn list(&self) -> Result<Vec<Ticket>, kube::Error> {
        let mut out: Vec<Ticket> = self
            .kube
            .list_secrets(&self.namespace, &format!("{LABEL}=true"))?
            .iter()
            .filter_map(Ticket::from_secret)
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Deletes finished tickets older than [`KEEP_FINISHED_SECS`], at most once a
    /// minute; failures wait for the next sweep.
    pub fn sweep(&self, now: i64) {
        if !self.sweeps.due() {
            return;
        }
        self.kube
            .sweep_secrets(&self.namespace, &format!("{LABEL}=true"), |s| {
                Ticket::from_secret(s).is_none_or(|t| t.finished_at() + KEEP_FINISHED_SECS <= now)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let a = new_id().unwrap();
        assert!(valid_id(&a), "{a}");
        assert_ne!(a, new_id().unwrap());
        for bad in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            "../x",
            &"a".repeat(33),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    fn ticket() -> Ticket {
        Ticket {
            id: "0123456789abcdef0123456789abcdef".into(),
            roles: vec!["controller".into(), "gpu".into()],
            requested_by: "admin".into(),
            created: 100,
            expires: 3700,
            state: State::Downloading,
            client: Some("10.0.0.9".into()),
            started: Some(200),
            completed: None,
            bytes: 42,
            revoked_at: None,
            etag: None,
            members: Some(Members {
                seed: b"{}".to_vec(),
                k0s_token: "H4sI".into(),
                bootstrap_id: "abcdef".into(),
                time: 200,
            }),
            resource_version: "7".into(),
        }
    }

    #[test]
    fn a_ticket_survives_its_secret() {
        let t = ticket();
        let n = t.to_secret();
        let s = kube::Secret {
            name: n.name,
            namespace: "kotsadm".into(),
            uid: "u".into(),
            resource_version: "7".into(),
            type_: n.type_,
            labels: n.labels,
            annotations: n.annotations,
            data: n.data,
            created: None,
        };
        let back = Ticket::from_secret(&s).unwrap();
        assert_eq!(back.roles, t.roles);
        assert_eq!(back.state, State::Downloading);
        assert_eq!(back.client, t.client);
        assert_eq!((back.started, back.bytes), (Some(200), 42));
        assert!(back.members == t.members);
    }

    #[test]
    fn who_may_resume() {
        let t = ticket();
        assert!(t.resumable_by("10.0.0.9", 201));
        assert!(!t.resumable_by("10.0.0.8", 201));
        assert!(!t.resumable_by("10.0.0.9", 200 + DOWNLOAD_WINDOW_SECS));
        let mut r = t.clone();
        r.state = State::Revoked;
        assert!(!r.resumable_by("10.0.0.9", 201));
        assert_eq!(t.finished_at(), 200 + DOWNLOAD_WINDOW_SECS);
    }
}
