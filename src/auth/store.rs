//! Where the auth secrets live: the installer password's bcrypt hash and the token
//! signing key, each from a file or from a Kubernetes Secret.
//!
//! Both are shared by every controller through Kubernetes, so a token issued by one
//! daemon is accepted by all. The signing key is created on first start; when two
//! controllers race to create it, the loser's create answers AlreadyExists and it reads
//! the winner's key, so all end up with the same one. It is re-read every 30 s (as the
//! password hash is), so a Secret recreated or rotated by hand reaches every controller;
//! a deleted Secret is recreated with the key the daemon holds; `/v1/ready` fails while
//! this daemon's key differs from the stored one. `joinery key rotate` makes a new key
//! and keeps the old one, accepted for 24 h (the longest token lifetime), then dropped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::key::SigningKey;
use super::password;
use crate::kube;

/// Secret holding the installer password (Embedded Cluster's own).
pub const PASSWORD_SECRET: &str = "kotsadm-password";
/// Key of the bcrypt hash inside [`PASSWORD_SECRET`].
pub const PASSWORD_KEY: &str = "passwordBcrypt";
/// Secret holding joinery's token signing key, in joinery's namespace.
pub const SIGNING_KEY_SECRET: &str = "joinery-signing-key";
/// Key of the 32 key bytes inside [`SIGNING_KEY_SECRET`].
pub const SIGNING_KEY_KEY: &str = "key";

/// How long a hash read from Kubernetes is reused: a changed password takes effect
/// within this time, and a burst of logins costs one API call.
const HASH_TTL: Duration = Duration::from_secs(30);

/// Why an auth secret could not be had.
#[derive(Debug)]
pub enum StoreError {
    /// The Kubernetes API failed.
    Kube(kube::Error),
    /// The secret does not exist or lacks the key; the message says which.
    Missing(String),
    /// The secret exists but holds something unusable; the message says what.
    Corrupt(String),
    /// A fresh key was needed and the OS gave no randomness.
    Random(crate::random::Unavailable),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Kube(e) => write!(f, "{e}"),
            StoreError::Missing(m) | StoreError::Corrupt(m) => f.write_str(m),
            StoreError::Random(e) => write!(f, "{e}"),
        }
    }
}

enum HashSource {
    /// Read once at start-up from `--password-hash-file`.
    Fixed(String),
    Secret {
        kube: kube::Client,
        namespace: String,
    },
}

/// The installer password's bcrypt hash.
pub struct PasswordHashes {
    source: HashSource,
    cached: Mutex<Option<(String, Instant)>>,
}

impl PasswordHashes {
    /// From `--password-hash-file`: read and checked now, so a bad file stops start-up.
    pub fn from_file(path: &Path) -> Result<PasswordHashes, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--password-hash-file {}: {e}", path.display()))?;
        let hash = password::parse_hash_file(&text)
            .map_err(|e| format!("--password-hash-file {}: {e}", path.display()))?;
        Ok(PasswordHashes {
            source: HashSource::Fixed(hash),
            cached: Mutex::new(None),
        })
    }

    /// From Embedded Cluster's Secret `kotsadm-password` in `namespace`.
    pub fn from_secret(kube: kube::Client, namespace: &str) -> PasswordHashes {
        PasswordHashes {
            source: HashSource::Secret {
                kube,
                namespace: namespace.to_string(),
            },
            cached: Mutex::new(None),
        }
    }

    /// The current hash.
    pub fn current(&self) -> Result<String, StoreError> {
        let (kube, namespace) = match &self.source {
            HashSource::Fixed(h) => return Ok(h.clone()),
            HashSource::Secret { kube, namespace } => (kube, namespace),
        };
        if let Some((hash, at)) = &*lock(&self.cached) {
            if at.elapsed() < HASH_TTL {
                return Ok(hash.clone());
            }
        }
        let secret = kube
            .get_secret(namespace, PASSWORD_SECRET)
            .map_err(StoreError::Kube)?
            .ok_or_else(|| {
                StoreError::Missing(format!(
                    "Secret {namespace}/{PASSWORD_SECRET} does not exist: is this an Embedded \
                     Cluster? Otherwise start joinery with --password-hash-file"
                ))
            })?;
        let raw = secret.data.get(PASSWORD_KEY).ok_or_else(|| {
            StoreError::Missing(format!(
                "Secret {namespace}/{PASSWORD_SECRET} has no key {PASSWORD_KEY}"
            ))
        })?;
        let text = std::str::from_utf8(raw).unwrap_or("");
        let hash = password::parse_hash_file(text).map_err(|e| {
            StoreError::Corrupt(format!(
                "Secret {namespace}/{PASSWORD_SECRET} key {PASSWORD_KEY}: {e}"
            ))
        })?;
        *lock(&self.cached) = Some((hash.clone(), Instant::now()));
        Ok(hash)
    }
}

enum KeySource {
    Fixed,
    Secret {
        kube: kube::Client,
        namespace: String,
    },
}

/// Data key of the previous signing key, kept after `joinery key rotate` so tokens it
/// signed keep verifying until [`ANN_PREVIOUS_UNTIL`].
pub const PREVIOUS_KEY_KEY: &str = "previous";
/// Annotation: Unix seconds after which the previous key is no longer accepted.
pub const ANN_PREVIOUS_UNTIL: &str = "joinery.replicated.com/previous-until";
/// Annotation naming the current key's id (for people; joinery derives it from the key).
pub const ANN_KID: &str = "joinery.replicated.com/kid";
/// How long after a rotation the previous key still verifies: the longest lifetime of a
/// token joinery signs (a session, 24 h) and the clock leeway.
pub const PREVIOUS_KEY_SECS: i64 = 24 * 3600 + crate::auth::jwt::LEEWAY_SECS;

/// How long the stored key is trusted before it is read again, so a key recreated or
/// rotated in Kubernetes reaches every controller within this time.
const KEY_TTL: Duration = Duration::from_secs(30);
/// A token no loaded key signed triggers a re-read at most this often (a key rotated
/// on another controller is then accepted at once, without letting strangers with bad
/// signatures make an API call each).
const MISMATCH_REREAD: Duration = Duration::from_secs(5);

/// A key's id: the first 8 bytes of its SHA-256, in hex. Derived, so it needs no
/// storage and names the same key on every controller; it reveals nothing usable.
pub fn kid(key: &SigningKey) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The keys this daemon signs with (current) and also accepts (previous, until a time).
#[derive(Clone)]
struct KeyRing {
    current: Arc<SigningKey>,
    previous: Option<(Arc<SigningKey>, i64)>,
}

impl KeyRing {
    /// Current first, then the previous one while it is still accepted.
    fn accepted(&self, now: i64) -> impl Iterator<Item = &Arc<SigningKey>> {
        std::iter::once(&self.current).chain(
            self.previous
                .iter()
                .filter(move |(_, until)| *until > now)
                .map(|(k, _)| k),
        )
    }
}

/// The token signing key (and, after a rotation, the previous one), read from the
/// Secret and re-read every [`KEY_TTL`], or fixed from a file.
pub struct SigningKeys {
    source: KeySource,
    /// The ring and when it was read.
    ring: Mutex<Option<(KeyRing, Instant)>>,
}

impl SigningKeys {
    /// From `--signing-key-file`: read and checked now.
    pub fn from_file(path: &Path) -> Result<SigningKeys, String> {
        let key = SigningKey::from_file(path).map_err(|e| e.to_string())?;
        let ring = KeyRing {
            current: Arc::new(key),
            previous: None,
        };
        Ok(SigningKeys {
            source: KeySource::Fixed,
            ring: Mutex::new(Some((ring, Instant::now()))),
        })
    }

    /// From the Secret `joinery-signing-key` in `namespace`, created when absent. Nothing
    /// is fetched until [`SigningKeys::get`], so the daemon starts while Kubernetes is down.
    pub fn from_secret(kube: kube::Client, namespace: &str) -> SigningKeys {
        SigningKeys {
            source: KeySource::Secret {
                kube,
                namespace: namespace.to_string(),
            },
            ring: Mutex::new(None),
        }
    }

    /// The key to sign with, fetching or creating it on first use and re-reading it
    /// once [`KEY_TTL`] has passed.
    pub fn get(&self) -> Result<Arc<SigningKey>, StoreError> {
        Ok(self.ring(KEY_TTL)?.current)
    }

    /// The accepted key `token` is signed with (current first, then the previous one
    /// until it expires); when none is, the stored keys are re-read (at most every
    /// [`MISMATCH_REREAD`]) and tried again; failing that the current key, whose
    /// verification then refuses the token.
    pub fn key_for(&self, token: &str, now: i64) -> Result<Arc<SigningKey>, StoreError> {
        let pick = |ring: &KeyRing| {
            ring.accepted(now)
                .find(|k| crate::auth::jwt::signed_with(k.as_bytes(), token))
                .cloned()
        };
        let ring = self.ring(KEY_TTL)?;
        if let Some(k) = pick(&ring) {
            return Ok(k);
        }
        let ring = self.ring(MISMATCH_REREAD)?;
        Ok(pick(&ring).unwrap_or(ring.current))
    }

    /// For readiness: reads the stored key now and compares it with the one this daemon
    /// signs with. `Ok(true)`: the same (or a fixed key from a file); `Ok(false)`: they
    /// differed, and this daemon has now taken the stored one.
    pub fn matches_stored(&self) -> Result<bool, StoreError> {
        if matches!(self.source, KeySource::Fixed) {
            return Ok(true);
        }
        let before = lock(&self.ring).as_ref().map(|(r, _)| r.current.clone());
        let after = self.ring(Duration::ZERO)?.current;
        Ok(before.is_none_or(|b| b.as_bytes() == after.as_bytes()))
    }

    /// The ring, re-read from the Secret when older than `max_age`. A failed re-read
    /// keeps the loaded ring (a Kubernetes hiccup must not refuse every token); a
    /// deleted Secret is recreated with the loaded key, so sessions survive and every
    /// controller converges on one key.
    fn ring(&self, max_age: Duration) -> Result<KeyRing, StoreError> {
        // Held across the fetch so concurrent requests make one API round trip.
        let mut slot = lock(&self.ring);
        if let Some((ring, at)) = &*slot {
            if at.elapsed() < max_age || matches!(self.source, KeySource::Fixed) {
                return Ok(ring.clone());
            }
        }
        let KeySource::Secret { kube, namespace } = &self.source else {
            unreachable!("a fixed key is loaded at construction");
        };
        let held = slot.as_ref().map(|(r, _)| r.current.clone());
        match load_or_create(kube, namespace, held.as_deref()) {
            Ok(ring) => {
                if let Some(h) = &held {
                    if h.as_bytes() != ring.current.as_bytes() {
                        crate::log::warn(
                            "the stored token signing key differs from this daemon's; using \
                             the stored one",
                            &[("was", kid(h).into()), ("now", kid(&ring.current).into())],
                        );
                    }
                }
                *slot = Some((ring.clone(), Instant::now()));
                Ok(ring)
            }
            Err(e) => match &*slot {
                Some((ring, _)) => {
                    crate::log::warn(
                        "could not re-read the token signing key; keeping the loaded one",
                        &[("error", e.to_string().into())],
                    );
                    Ok(ring.clone())
                }
                None => Err(e),
            },
        }
    }
}

/// Reads the key ring from the Secret, or creates the Secret: with `held` (the key this
/// daemon already signs with, when the Secret was deleted under it) or a fresh key.
fn load_or_create(
    kube: &kube::Client,
    namespace: &str,
    held: Option<&SigningKey>,
) -> Result<KeyRing, StoreError> {
    if let Some(secret) = kube
        .get_secret(namespace, SIGNING_KEY_SECRET)
        .map_err(StoreError::Kube)?
    {
        return ring_from_secret(namespace, &secret);
    }
    let key = match held {
        Some(k) => k.clone(),
        None => SigningKey::generate().map_err(StoreError::Random)?,
    };
    match kube.create_secret(namespace, &key_secret(&key, None)) {
        Ok(_) => {
            crate::log::info(
                if held.is_some() {
                    "recreated the deleted token signing key Secret with this daemon's key"
                } else {
                    "created the token signing key"
                },
                &[
                    ("secret", format!("{namespace}/{SIGNING_KEY_SECRET}").into()),
                    ("kid", kid(&key).into()),
                ],
            );
            Ok(KeyRing {
                current: Arc::new(key),
                previous: None,
            })
        }
        // Another controller created it between our read and our create: use theirs.
        Err(kube::Error::AlreadyExists) => {
            let secret = kube
                .get_secret(namespace, SIGNING_KEY_SECRET)
                .map_err(StoreError::Kube)?
                .ok_or_else(|| {
                    StoreError::Missing(format!(
                        "Secret {namespace}/{SIGNING_KEY_SECRET} vanished right after it was \
                         created by another controller"
                    ))
                })?;
            ring_from_secret(namespace, &secret)
        }
        Err(e) => Err(StoreError::Kube(e)),
    }
}

/// The Secret holding `key`, and `previous` with the time it is accepted until.
fn key_secret(key: &SigningKey, previous: Option<(&SigningKey, i64)>) -> kube::NewSecret {
    let mut data = BTreeMap::from([(SIGNING_KEY_KEY.to_string(), key.as_bytes().to_vec())]);
    let mut annotations = BTreeMap::from([(ANN_KID.to_string(), kid(key))]);
    if let Some((old, until)) = previous {
        data.insert(PREVIOUS_KEY_KEY.into(), old.as_bytes().to_vec());
        annotations.insert(ANN_PREVIOUS_UNTIL.into(), until.to_string());
    }
    kube::NewSecret {
        name: SIGNING_KEY_SECRET.into(),
        labels: BTreeMap::from([("app.kubernetes.io/name".into(), "joinery".into())]),
        annotations,
        data,
        type_: Some("Opaque".into()),
    }
}

fn ring_from_secret(namespace: &str, secret: &kube::Secret) -> Result<KeyRing, StoreError> {
    let raw = secret.data.get(SIGNING_KEY_KEY).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "Secret {namespace}/{SIGNING_KEY_SECRET} has no key {SIGNING_KEY_KEY}; delete it \
             and restart joinery to make a new one (every session token will be refused)"
        ))
    })?;
    let current = SigningKey::from_bytes(raw).map_err(|e| {
        StoreError::Corrupt(format!(
            "Secret {namespace}/{SIGNING_KEY_SECRET} key {SIGNING_KEY_KEY}: {e}"
        ))
    })?;
    // A damaged previous key only loses the grace of old tokens; it never stops signing.
    let previous = secret
        .data
        .get(PREVIOUS_KEY_KEY)
        .and_then(|b| SigningKey::from_bytes(b).ok())
        .zip(
            secret
                .annotations
                .get(ANN_PREVIOUS_UNTIL)
                .and_then(|v| v.parse::<i64>().ok()),
        )
        .map(|(k, until)| (Arc::new(k), until));
    Ok(KeyRing {
        current: Arc::new(current),
        previous,
    })
}

/// What `joinery key rotate` did.
#[derive(Debug)]
pub struct Rotation {
    pub old_kid: String,
    pub new_kid: String,
    /// Until when (Unix seconds) tokens signed with the old key are accepted; `None`
    /// when the old key was dropped at once.
    pub old_accepted_until: Option<i64>,
}

/// A planned key rotation: a fresh key becomes current; the current one is kept as the
/// previous key for [`PREVIOUS_KEY_SECS`] (so every token it signed expires before it is
/// dropped); an older previous key is dropped now. With `revoke_old`, the current key is
/// dropped at once too: every token it signed is refused within 30 s (an emergency,
/// when the key may have leaked). One resourceVersion-checked PUT, so two rotations at
/// once cannot lose a key.
pub fn rotate_signing_key(
    kube: &kube::Client,
    namespace: &str,
    now: i64,
    revoke_old: bool,
) -> Result<Rotation, StoreError> {
    let secret = kube
        .get_secret(namespace, SIGNING_KEY_SECRET)
        .map_err(StoreError::Kube)?
        .ok_or_else(|| {
            StoreError::Missing(format!(
                "Secret {namespace}/{SIGNING_KEY_SECRET} does not exist yet: start joinery \
                 once (it creates the key), then rotate"
            ))
        })?;
    let ring = ring_from_secret(namespace, &secret)?;
    let fresh = SigningKey::generate().map_err(StoreError::Random)?;
    let until = (!revoke_old).then_some(now + PREVIOUS_KEY_SECS);
    let new = key_secret(&fresh, until.map(|u| (&*ring.current, u)));
    kube.replace_secret(namespace, &secret.resource_version, &new)
        .map_err(StoreError::Kube)?;
    Ok(Rotation {
        old_kid: kid(&ring.current),
        new_kid: kid(&fresh),
        old_accepted_until: until,
    })
}

/// Locks a mutex, recovering from poisoning: the data is a cache, always safe to reuse.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
