//! OAuth2 refresh tokens that rotate: each is usable once, and using one twice revokes
//! everything descended from the same login (its *family*), as RFC 6819 §5.2.2.3 and the
//! OAuth 2.0 Security BCP (RFC 9700 §4.14.2) recommend for public clients.
//!
//! A refresh token reads `<family>.<secret>`: 20 hex digits naming the family, a dot, and
//! 43 base64url characters (256 random bits). Each family is one Secret
//! `joinery-refresh-<family>` in joinery's namespace holding the SHA-256 of the family's
//! current token (never the token), a generation counter, the subject, the scope granted
//! at login and the expiry. State lives in Kubernetes, so every controller sees the same
//! families and they survive restarts.
//!
//! Rotation reads the Secret, checks the hash, and replaces it with a PUT carrying the
//! `resourceVersion` it read: if two controllers race on the same token, Kubernetes lets
//! exactly one PUT through and the other gets a conflict. A conflict, or a token that
//! matches one of the family's *earlier* generations (the Secret keeps the hashes of the
//! last [`HISTORY`]), means a token was presented twice: the family is deleted
//! (uid-preconditioned), so the attacker's and the victim's newer tokens both die and
//! the user logs in again. A secret that matches no generation is only refused
//! (`Unknown`): the family id is not secret (it is the Secret's name and the token's
//! visible prefix), so a made-up secret must not be able to revoke anyone's family.
//!
//! The ambiguous case: the PUT of a rotation fails with a timeout or 5xx, yet may have
//! gone through; the client got an error and retries with the same token, which is now
//! the family's previous one. The daemon that attempted the PUT remembers the token it
//! tried to install for [`RETRY_GRACE`]; a retry within that time, when the Secret shows
//! the PUT landed, gets that very token (its first delivery: the failed request never
//! carried it), so nothing is honoured twice and the family lives. Retries of the same
//! family on one daemon are serialised, so a retry never races the slow PUT it repeats.
//! Only unanswered rotations get this grace (RFC 9700 §4.14.2 allows a grace period):
//! presenting the previous token after a rotation that *was* answered is reuse, as
//! before, so replay detection stays exact. A retry that lands on another controller
//! has no such record and is treated as reuse (the user logs in again).
//!
//! Each refresh token is valid [`REFRESH_TTL_SECS`] (30 days) from when it was issued;
//! expired families are swept when new ones are made.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Scope;
use crate::kube;

/// How long a refresh token is valid after it is issued (each rotation starts anew).
pub const REFRESH_TTL_SECS: i64 = 30 * 86_400;
/// Name prefix of family Secrets.
pub const SECRET_PREFIX: &str = "joinery-refresh-";
/// Label marking family Secrets, for sweeping.
pub const LABEL: &str = "joinery.replicated.com/refresh-family";

const HASH_KEY: &str = "sha256";
/// Data key of the earlier generations' hashes, newest first, comma-separated.
const HISTORY_KEY: &str = "history";
/// How many earlier generations are remembered (a token older than that is `Unknown`).
pub const HISTORY: usize = 16;
/// How long a daemon remembers a rotation whose PUT failed ambiguously, for the retry.
pub const RETRY_GRACE: Duration = Duration::from_secs(60);
/// At most this many such rotations are remembered at once.
const MAX_UNANSWERED: usize = 256;
/// How long a family id with no Secret is remembered, so repeating a made-up refresh
/// token costs no API call (many different ones meet the per-address budget of failed
/// bearer credentials in `throttle.rs`).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Bounds the map of absent families.
const MAX_ABSENT: usize = 4096;
const ANN_GENERATION: &str = "joinery.replicated.com/generation";
const ANN_SUBJECT: &str = "joinery.replicated.com/subject";
const ANN_SCOPE: &str = "joinery.replicated.com/scope";
const ANN_EXPIRES: &str = "joinery.replicated.com/expires";
const FAMILY_HEX: usize = 20;
const SECRET_CHARS: usize = 43;
/// How often, at most, expired families are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Why a refresh token was refused. All but `Kube` and `Random` are OAuth2 `invalid_grant`.
#[derive(Debug)]
pub enum RefreshError {
    /// Not a refresh token of ours, or its family no longer exists.
    Unknown,
    /// The family's time is up (it has been deleted).
    Expired,
    /// The token was used before: the whole family has been revoked.
    Reused,
    /// The token is good but does not cover the scope asked for (nothing was spent).
    Scope(Scope),
    Kube(kube::Error),
    /// A fresh token was needed and the OS gave no randomness.
    Random(crate::random::Unavailable),
}

/// The outcome of a rotation: who the family belongs to and the token that replaces
/// the one presented.
#[derive(Debug)]
pub struct Rotated {
    pub subject: String,
    /// The scope granted at login; the access token may be narrower.
    pub scope: Scope,
    pub refresh_token: String,
}

/// Splits a refresh token into (family, secret) if it has our shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (family, secret) = token.split_once('.')?;
    let family_ok = family.len() == FAMILY_HEX
        && family
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (family_ok && secret_ok).then_some((family, secret))
}

fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_token(family: &str) -> Result<String, RefreshError> {
    let secret = crate::random::base64url(32).map_err(RefreshError::Random)?;
    Ok(format!("{family}.{secret}"))
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The Secret of a family at `generation` whose current token is `token`, and whose
/// earlier generations' hashes are `history` (newest first).
fn family_secret(
    family: &str,
    token: &str,
    subject: &str,
    scope: Scope,
    generation: u64,
    expires: i64,
    history: &[String],
) -> kube::NewSecret {
    kube::NewSecret {
        name: format!("{SECRET_PREFIX}{family}"),
        labels: BTreeMap::from([
            (LABEL.to_string(), "true".to_string()),
            ("app.kubernetes.io/name".to_string(), "joinery".to_string()),
        ]),
        annotations: BTreeMap::from([
            (ANN_GENERATION.to_string(), generation.to_string()),
            (ANN_SUBJECT.to_string(), subject.to_string()),
            (ANN_SCOPE.to_string(), scope.as_str().to_string()),
            (ANN_EXPIRES.to_string(), expires.to_string()),
        ]),
        data: BTreeMap::from([
            (HASH_KEY.to_string(), hash_hex(token).into_bytes()),
            (
                HISTORY_KEY.to_string(),
                history[..history.len().min(HISTORY)].join(",").into_bytes(),
            ),
        ]),
        type_: Some("Opaque".into()),
    }
}

/// A rotation whose PUT failed in a way that may have let it through: the token it
/// tried to install, kept for the client's retry ([`RETRY_GRACE`]).
struct Unanswered {
    /// Hash of the token that was presented (now the family's previous one, if the
    /// PUT landed).
    presented: String,
    rotated: Rotated,
    at: Instant,
}

/// The refresh-token families, in one namespace.
pub struct RefreshTokens {
    kube: kube::Client,
    namespace: String,
    sweeps: crate::time::AtMostEvery,
    /// By family.
    unanswered: Mutex<HashMap<String, Unanswered>>,
    /// Families with a rotation running in this daemon, so a retry waits for it.
    busy: Mutex<HashSet<String>>,
    idle: Condvar,
    /// Families found missing, and when.
    absent: Mutex<HashMap<String, Instant>>,
}

/// Holds a family's in-process rotation lock; released on drop.
struct FamilyLock<'a> {
    tokens: &'a RefreshTokens,
    family: String,
}

impl Drop for FamilyLock<'_> {
    fn drop(&mut self) {
        lock(&self.tokens.busy).remove(&self.family);
        self.tokens.idle.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RefreshTokens {
    pub fn new(kube: kube::Client, namespace: &str) -> RefreshTokens {
        RefreshTokens {
            kube,
            namespace: namespace.to_string(),
            sweeps: crate::time::AtMostEvery::new(SWEEP_EVERY),
            unanswered: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            idle: Condvar::new(),
            absent: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until no other rotation of `family` runs in this daemon, then takes its turn.
    fn lock_family(&self, family: &str) -> FamilyLock<'_> {
        let mut busy = lock(&self.busy);
        while busy.contains(family) {
            busy = self.idle.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.insert(family.to_string());
        FamilyLock {
            tokens: self,
            family: family.to_string(),
        }
    }

    /// Starts a family for a fresh login and returns its first refresh token. The token
    /// may be handed out only once this returned Ok (the Secret exists).
    /// Fails only with `Kube` or `Random`.
    pub fn issue(&self, subject: &str, scope: Scope, now: i64) -> Result<String, RefreshError> {
        self.sweep(now);
        for _ in 0..3 {
            let family = crate::random::hex(FAMILY_HEX / 2).map_err(RefreshError::Random)?;
            let token = new_token(&family)?;
            let new = family_secret(
                &family,
                &token,
                subject,
                scope,
                1,
                now + REFRESH_TTL_SECS,
                &[],
            );
            match self.kube.create_secret(&self.namespace, &new) {
                Ok(_) => return Ok(token),
                // 80 random bits collided: draw again.
                Err(kube::Error::AlreadyExists) => continue,
                Err(e) => return Err(RefreshError::Kube(e)),
            }
        }
        Err(RefreshError::Kube(kube::Error::AlreadyExists))
    }

    /// Spends `token` and returns its replacement, if `token` is its family's current
    /// token, unexpired, and its family's scope covers `wanted` (when given).
    pub fn rotate(
        &self,
        token: &str,
        wanted: Option<Scope>,
        now: i64,
    ) -> Result<Rotated, RefreshError> {
        let (family, _) = parse(token).ok_or(RefreshError::Unknown)?;
        if lock(&self.absent)
            .get(family)
            .is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
        {
            return Err(RefreshError::Unknown);
        }
        let _turn = self.lock_family(family);
        let name = format!("{SECRET_PREFIX}{family}");
        let Some(secret) = self
            .kube
            .get_secret(&self.namespace, &name)
            .map_err(RefreshError::Kube)?
        else {
            let mut absent = lock(&self.absent);
            if absent.len() >= MAX_ABSENT {
                absent.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
                if absent.len() >= MAX_ABSENT {
                    absent.clear();
                }
            }
            absent.insert(family.to_string(), Instant::now());
            return Err(RefreshError::Unknown);
        };
        let a = &secret.annotations;
        let stored = secret.data.get(HASH_KEY).map(Vec::as_slice).unwrap_or(b"");
        let presented = hash_hex(token);
        let history: Vec<String> = secret
            .data
            .get(HISTORY_KEY)
            .and_then(|h| std::str::from_utf8(h).ok())
            .map(|h| {
                h.split(',')
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if !same(stored, presented.as_bytes()) {
            let earlier = history
                .iter()
                .any(|h| same(h.as_bytes(), presented.as_bytes()));
            if !earlier {
                // A secret no generation ever had: refused, and nothing revoked.
                return Err(RefreshError::Unknown);
            }
            if let Some(done) = self.take_unanswered(family, &presented, stored) {
                crate::log::info(
                    "refresh token rotation completed on retry",
                    &[("family", family.into())],
                );
                return Ok(done);
            }
            self.revoke(
                family,
                &secret.uid,
                "an old refresh token was presented again",
            );
            return Err(RefreshError::Reused);
        }
        // The presented token is current: any rotation remembered for it never landed.
        lock(&self.unanswered).remove(family);
        let expires = a.get(ANN_EXPIRES).and_then(|v| v.parse::<i64>().ok());
        let scope = a.get(ANN_SCOPE).and_then(|s| Scope::parse(s));
        let subject = a.get(ANN_SUBJECT).cloned().unwrap_or_default();
        let generation = a.get(ANN_GENERATION).and_then(|v| v.parse::<u64>().ok());
        let (Some(expires), Some(scope), Some(generation)) = (expires, scope, generation) else {
            self.revoke(family, &secret.uid, "the family's Secret is damaged");
            return Err(RefreshError::Unknown);
        };
        if expires <= now {
            self.revoke(family, &secret.uid, "the refresh token expired");
            return Err(RefreshError::Expired);
        }
        if let Some(w) = wanted {
            if !scope.allows(w) {
                return Err(RefreshError::Scope(scope));
            }
        }
        let fresh = new_token(family)?;
        let next = generation.saturating_add(1);
        let mut older = vec![presented.clone()];
        older.extend(history);
        let new = family_secret(
            family,
            &fresh,
            &subject,
            scope,
            next,
            now + REFRESH_TTL_SECS,
            &older,
        );
        let rotated = Rotated {
            subject,
            scope,
            refresh_token: fresh,
        };
        match self
            .kube
            .replace_secret(&self.namespace, &secret.resource_version, &new)
        {
            Ok(_) => Ok(rotated),
            // Another request spent this very token between our read and our write.
            Err(kube::Error::Conflict) => {
                self.revoke(
                    family,
                    &secret.uid,
                    "the same refresh token was used twice at once",
                );
                Err(RefreshError::Reused)
            }
            Err(kube::Error::NotFound) => Err(RefreshError::Unknown),
            Err(e) => {
                // The write may have landed: keep its token for the client's retry.
                if matches!(
                    e,
                    kube::Error::Unavailable(_) | kube::Error::TooManyRequests { .. }
                ) {
                    self.remember_unanswered(family, presented, rotated);
                }
                Err(RefreshError::Kube(e))
            }
        }
    }

    fn remember_unanswered(&self, family: &str, presented: String, rotated: Rotated) {
        let mut map = lock(&self.unanswered);
        map.retain(|_, u| u.at.elapsed() < RETRY_GRACE);
        if map.len() >= MAX_UNANSWERED {
            return;
        }
        map.insert(
            family.to_string(),
            Unanswered {
                presented,
                rotated,
                at: Instant::now(),
            },
        );
    }

    /// The rotation remembered for `family`, if it spent the token hashed `presented`,
    /// is recent, and landed (the family's current hash is its token's).
    fn take_unanswered(&self, family: &str, presented: &str, current: &[u8]) -> Option<Rotated> {
        let mut map = lock(&self.unanswered);
        let u = map.get(family)?;
        let landed = same(hash_hex(&u.rotated.refresh_token).as_bytes(), current);
        if u.presented != presented || u.at.elapsed() >= RETRY_GRACE || !landed {
            return None;
        }
        map.remove(family).map(|u| u.rotated)
    }

    /// Deletes a family; best effort (a failure is logged, and the token is refused anyway).
    fn revoke(&self, family: &str, uid: &str, why: &str) {
        let name = format!("{SECRET_PREFIX}{family}");
        let result = match self.kube.delete_secret(&self.namespace, &name, Some(uid)) {
            Ok(()) | Err(kube::Error::NotFound) => "revoked".to_string(),
            Err(e) => format!("revoke failed: {e}"),
        };
        crate::log::warn(
            "refresh token family revoked",
            &[
                ("family", family.into()),
                ("reason", why.into()),
                ("result", result.into()),
            ],
        );
    }

    /// Deletes expired families, at most once an hour; failures wait for the next sweep.
    fn sweep(&self, now: i64) {
        if !self.sweeps.due() {
            return;
        }
        self.kube
            .sweep_secrets(&self.namespace, &format!("{LABEL}=true"), |s| {
                let expires = s
                    .annotations
                    .get(ANN_EXPIRES)
                    .and_then(|v| v.parse::<i64>().ok());
                expires.is_none_or(|e| e <= now)
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_a_family_and_a_secret() {
        let t = new_token("0123456789abcdef0123").unwrap();
        let (family, secret) = parse(&t).unwrap();
        assert_eq!(family, "0123456789abcdef0123");
        assert_eq!(secret.len(), SECRET_CHARS);
        assert_ne!(t, new_token(family).unwrap());
    }

    #[test]
    fn other_shapes_are_refused() {
        let good_secret = "A".repeat(SECRET_CHARS);
        for bad in [
            String::new(),
            "0123456789abcdef0123".to_string(),
            format!("0123456789abcdef0123{good_secret}"),
            format!("0123456789ABCDEF0123.{good_secret}"),
            format!("0123456789abcdef012.{good_secret}"),
            format!("../../etc/passwd0123.{good_secret}"),
            format!("0123456789abcdef0123.{good_secret}A"),
            format!("0123456789abcdef0123.{}+", "A".repeat(SECRET_CHARS - 1)),
            format!("0123456789abcdef0123.{good_secret}.x"),
            // A session JWT is not a refresh token.
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2ln".to_string(),
        ] {
            assert!(parse(&bad).is_none(), "{bad:?}");
        }
        assert!(parse(&format!("0123456789abcdef0123.{good_secret}")).is_some());
    }

    #[test]
    fn the_family_secret_stores_only_a_hash() {
        let token = new_token("0123456789abcdef0123").unwrap();
        let history = vec!["ab".repeat(32); HISTORY + 3];
        let s = family_secret(
            "0123456789abcdef0123",
            &token,
            "admin",
            Scope::Read,
            7,
            99,
            &history,
        );
        // The history is capped.
        assert_eq!(s.data[HISTORY_KEY].split(|b| *b == b',').count(), HISTORY);
        assert_eq!(s.name, "joinery-refresh-0123456789abcdef0123");
        assert_eq!(s.data[HASH_KEY], hash_hex(&token).into_bytes());
        let everything = format!("{:?}{:?}", s.annotations, s.data);
        assert!(!everything.contains(parse(&token).unwrap().1));
        assert_eq!(s.annotations[ANN_GENERATION], "7");
        assert_eq!(s.annotations[ANN_SCOPE], "read");
        assert_eq!(s.labels[LABEL], "true");
    }
}
