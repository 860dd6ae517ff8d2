//! Where the auth secrets live: the installer password's bcrypt hash and the token
//! signing key, each from a file or from a Kubernetes Secret.
//!
//! Both are shared by every controller through Kubernetes, so a token issued by one
//! daemon is accepted by all. The signing key is created on first start; when two
//! controllers race to create it, the loser's create answers AlreadyExists and it reads
//! the winner's key, so all end up with the same one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::key::SigningKey;
use super::password;
use crate::api::{ApiError, Code};
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
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Kube(e) => write!(f, "{e}"),
            StoreError::Missing(m) | StoreError::Corrupt(m) => f.write_str(m),
        }
    }
}

impl StoreError {
    /// What a client hears: Kubernetes trouble as usual, a missing or broken secret as 503
    /// (the daemon is not ready to authenticate anyone) with the detail in the log.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            StoreError::Kube(e) => ApiError::from_kube(e),
            StoreError::Missing(m) | StoreError::Corrupt(m) => {
                crate::log::error("auth secret unusable", &[("detail", m.as_str().into())]);
                ApiError::new(
                    Code::AuthUnavailable,
                    "joinery cannot check credentials right now: an auth secret is missing or \
                     unusable; the daemon's log says which",
                )
            }
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

/// The token signing key, loaded (or created) once and then kept.
pub struct SigningKeys {
    source: KeySource,
    key: Mutex<Option<Arc<SigningKey>>>,
}

impl SigningKeys {
    /// From `--signing-key-file`: read and checked now.
    pub fn from_file(path: &Path) -> Result<SigningKeys, String> {
        let key = SigningKey::from_file(path).map_err(|e| e.to_string())?;
        Ok(SigningKeys {
            source: KeySource::Fixed,
            key: Mutex::new(Some(Arc::new(key))),
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
            key: Mutex::new(None),
        }
    }

    /// Whether the key is loaded (for readiness).
    pub fn is_loaded(&self) -> bool {
        lock(&self.key).is_some()
    }

    /// The key, fetching or creating it on first use.
    pub fn get(&self) -> Result<Arc<SigningKey>, StoreError> {
        // Held across the fetch so concurrent first requests make one API round trip.
        let mut slot = lock(&self.key);
        if let Some(key) = &*slot {
            return Ok(key.clone());
        }
        let KeySource::Secret { kube, namespace } = &self.source else {
            unreachable!("a fixed key is loaded at construction");
        };
        let key = Arc::new(load_or_create(kube, namespace)?);
        *slot = Some(key.clone());
        Ok(key)
    }
}

fn load_or_create(kube: &kube::Client, namespace: &str) -> Result<SigningKey, StoreError> {
    if let Some(secret) = kube
        .get_secret(namespace, SIGNING_KEY_SECRET)
        .map_err(StoreError::Kube)?
    {
        return key_from_secret(namespace, &secret.data);
    }
    let fresh = SigningKey::generate().map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let new = kube::NewSecret {
        name: SIGNING_KEY_SECRET.into(),
        labels: BTreeMap::from([("app.kubernetes.io/name".into(), "joinery".into())]),
        annotations: BTreeMap::new(),
        data: BTreeMap::from([(SIGNING_KEY_KEY.into(), fresh.as_bytes().to_vec())]),
        type_: Some("Opaque".into()),
    };
    match kube.create_secret(namespace, &new) {
        Ok(_) => {
            crate::log::info(
                "created the token signing key",
                &[("secret", format!("{namespace}/{SIGNING_KEY_SECRET}").into())],
            );
            Ok(fresh)
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
            key_from_secret(namespace, &secret.data)
        }
        Err(e) => Err(StoreError::Kube(e)),
    }
}

fn key_from_secret(
    namespace: &str,
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<SigningKey, StoreError> {
    let raw = data.get(SIGNING_KEY_KEY).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "Secret {namespace}/{SIGNING_KEY_SECRET} has no key {SIGNING_KEY_KEY}; delete it \
             and restart joinery to make a new one (every session token will be refused)"
        ))
    })?;
    SigningKey::from_bytes(raw).map_err(|e| {
        StoreError::Corrupt(format!(
            "Secret {namespace}/{SIGNING_KEY_SECRET} key {SIGNING_KEY_KEY}: {e}"
        ))
    })
}

/// Locks a mutex, recovering from poisoning: the data is a cache, always safe to reuse.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
