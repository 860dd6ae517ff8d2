//! API tokens: long-lived opaque bearer tokens for scripts (`jnr_` + 32 base62 characters).
//!
//! Each token is one Secret `joinery-token-<id>` in joinery's namespace, made by a single
//! create call carrying everything (hash, name, scopes, times), so a token exists whole or
//! not at all, and every controller accepts and revokes the same tokens. The Secret holds
//! only the SHA-256 of the token: a token carries about 190 random bits, so no password
//! hashing (bcrypt, salts) is needed — nobody can search that space from a leaked hash,
//! and SHA-256 keeps a check to microseconds instead of bcrypt's ~100 ms per request.
//!
//! The id is the first 16 hex digits of that hash, so a presented token names its own
//! Secret (one GET, no list) and the id reveals nothing usable about the token.
//!
//! Verified tokens are cached for [`CACHE_TTL`] (5 s), so a token revoked on one
//! controller stops working on every other within that time plus one API call. The
//! `last used` time is written at most once per [`LAST_USED_EVERY`] per token per
//! controller, best effort, so using a token does not cost a Kubernetes write per request.
//!
//! Ids with no Secret are remembered for [`NEGATIVE_TTL`], so repeating an invented
//! token costs no API call; a token's id is a hash of ~190 random bits, so no real
//! token can be made in that time under an id someone already tried. (Many *different*
//! invented tokens are stopped by the per-address budget of failed bearer credentials
//! in `throttle.rs`.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Scope;
use crate::kube;

/// Every API token starts with this, so scanners and people can tell what it is.
pub const PREFIX: &str = "jnr_";
/// Random characters after [`PREFIX`] (base62: about 190 bits).
pub const RANDOM_CHARS: usize = 32;
/// Name prefix of token Secrets.
pub const SECRET_PREFIX: &str = "joinery-token-";
/// Label marking token Secrets, for listing.
pub const LABEL: &str = "joinery.replicated.com/api-token";
/// How long a verified token is trusted without asking Kubernetes again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// How long an id with no Secret is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How often, at most, `last used` is written per token by one controller.
pub const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// The longest expiry a token can be given: ten years.
pub const MAX_EXPIRES_IN_SECS: u64 = 10 * 365 * 86_400;
/// The longest token name.
pub const MAX_NAME_CHARS: usize = 100;

const HASH_KEY: &str = "sha256";
const ANN_NAME: &str = "joinery.replicated.com/token-name";
const ANN_SCOPES: &str = "joinery.replicated.com/scopes";
const ANN_CREATED: &str = "joinery.replicated.com/created";
const ANN_EXPIRES: &str = "joinery.replicated.com/expires";
const ANN_LAST_FOUR: &str = "joinery.replicated.com/last-four";
const ANN_LAST_USED: &str = "joinery.replicated.com/last-used";
/// Bounds the in-memory maps; past it they are pruned (and cleared if still full).
const MAP_MAX: usize = 4096;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a listing shows of a token (never the token or its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds; `None` never expires.
    pub expires: Option<i64>,
    pub last_four: String,
    /// Unix seconds, to the minute (see [`LAST_USED_EVERY`]).
    pub last_used: Option<i64>,
}

impl TokenInfo {
    /// The widest scope the token holds: what a request made with it may do.
    pub fn scope(&self) -> Scope {
        effective_scope(&self.scopes)
    }
}

/// Why a token operation failed.
#[derive(Debug)]
pub enum TokenError {
    /// The request is wrong (name, scopes, expiry); the text says how.
    Invalid(String),
    /// The token is unknown, revoked or expired; the text says which, never the token.
    Refused(&'static str),
    /// No token has that id.
    NotFound,
    Kube(kube::Error),
    /// A fresh token was needed and the OS gave no randomness.
    Random(crate::random::Unavailable),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Invalid(m) => f.write_str(m),
            TokenError::Refused(m) => f.write_str(m),
            TokenError::NotFound => f.write_str("no API token has that id"),
            TokenError::Kube(e) => write!(f, "{e}"),
            TokenError::Random(e) => write!(f, "{e}"),
        }
    }
}

/// A fresh token: [`PREFIX`] and [`RANDOM_CHARS`] base62 characters from the OS.
pub fn generate() -> Result<String, crate::random::Unavailable> {
    Ok(format!(
        "{PREFIX}{}",
        crate::random::chars(BASE62, RANDOM_CHARS)?
    ))
}

/// Whether `token` has the shape [`generate`] gives; anything else is refused unread.
pub fn well_formed(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|rest| {
        rest.len() == RANDOM_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// SHA-256 of the whole token, as lowercase hex (what the Secret stores).
pub fn hash_hex(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The id of a token: the first 16 hex digits of its hash.
pub fn id_of(token: &str) -> String {
    hash_hex(token)[..16].to_string()
}

/// Whether `id` has the shape [`id_of`] gives (checked before it names a Secret).
pub fn valid_id(id: &str) -> bool {
    id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a token name: 1 to [`MAX_NAME_CHARS`] characters, no control characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.trim() != name {
        return Err(format!(
            "the name must be 1 to {MAX_NAME_CHARS} characters without leading or trailing spaces"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name must not contain control characters".into());
    }
    Ok(())
}

/// Parses scope names (`admin`, `read`) into a sorted, deduplicated list.
pub fn parse_scopes<S: AsRef<str>>(names: &[S]) -> Result<Vec<Scope>, String> {
    if names.is_empty() {
        return Err("give at least one scope: \"read\" or \"admin\"".into());
    }
    let mut scopes = Vec::new();
    for name in names {
        let s = Scope::parse(name.as_ref()).ok_or_else(|| {
            format!(
                "unknown scope {:?}: the scopes are \"read\" and \"admin\"",
                name.as_ref()
            )
        })?;
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    scopes.sort_by_key(|s| s.as_str());
    Ok(scopes)
}

/// `admin` if any scope is admin, else `read`.
pub fn effective_scope(scopes: &[Scope]) -> Scope {
    if scopes.contains(&Scope::Admin) {
        Scope::Admin
    } else {
        Scope::Read
    }
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a token Secret back; `None` when it is not one of ours or is damaged.
fn info_from_secret(s: &kube::Secret) -> Option<TokenInfo> {
    let id = s.name.strip_prefix(SECRET_PREFIX)?.to_string();
    let a = &s.annotations;
    let scopes: Vec<&str> = a.get(ANN_SCOPES)?.split(',').collect();
    let num = |k: &str| a.get(k).and_then(|v| v.parse::<i64>().ok());
    Some(TokenInfo {
        id,
        name: a.get(ANN_NAME).cloned().unwrap_or_default(),
        scopes: parse_scopes(&scopes).ok()?,
        created: num(ANN_CREATED).unwrap_or(0),
        expires: num(ANN_EXPIRES).filter(|e| *e > 0),
        last_four: a.get(ANN_LAST_FOUR).cloned().unwrap_or_default(),
        last_used: num(ANN_LAST_USED),
    })
}

struct Cached {
    info: TokenInfo,
    at: Instant,
}

/// The token book, in one namespace, with a short cache of verified tokens.
pub struct ApiTokens {
    kube: kube::Client,
    namespace: String,
    /// Keyed by the token's hash (the token itself is never kept).
    cache: Mutex<HashMap<String, Cached>>,
    /// Token id → when this controller last wrote its `last used`.
    used: Mutex<HashMap<String, Instant>>,
    /// Token id → when its Secret was found missing.
    absent: Mutex<HashMap<String, Instant>>,
}

impl ApiTokens {
    pub fn new(kube: kube::Client, namespace: &str) -> ApiTokens {
        ApiTokens {
            kube,
            namespace: namespace.to_string(),
            cache: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            absent: Mutex::new(HashMap::new()),
        }
    }

    /// Makes a token. Returns the token (to show once) and what a listing shows of it.
    /// `expires_in_secs` 0 means it never expires.
    pub fn create(
        &self,
        name: &str,
        scopes: &[Scope],
        expires_in_secs: u64,
        now: i64,
    ) -> Result<(String, TokenInfo), TokenError> {
        check_name(name).map_err(TokenError::Invalid)?;
        if scopes.is_empty() {
            return Err(TokenError::Invalid(
                "give at least one scope: \"read\" or \"admin\"".into(),
            ));
        }
        if expires_in_secs > MAX_EXPIRES_IN_SECS {
            return Err(TokenError::Invalid(format!(
                "expiresInSeconds must be 0 (never) to {MAX_EXPIRES_IN_SECS} (ten years)"
            )));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort_by_key(|s| s.as_str());
        scopes.dedup();
        // An id collision (2^-64 per pair) is retried with a fresh token.
        for _ in 0..3 {
            let token = generate().map_err(TokenError::Random)?;
            let info = TokenInfo {
                id: id_of(&token),
                name: name.to_string(),
                scopes: scopes.clone(),
                created: now,
                expires: (expires_in_secs > 0).then(|| now + expires_in_secs as i64),
                last_four: token[token.len() - 4..].to_string(),
                last_used: None,
            };
            let scope_list: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            let mut annotations = BTreeMap::from([
                (ANN_NAME.to_string(), info.name.clone()),
                (ANN_SCOPES.to_string(), scope_list.join(",")),
                (ANN_CREATED.to_string(), now.to_string()),
                (ANN_LAST_FOUR.to_string(), info.last_four.clone()),
            ]);
            if let Some(e) = info.expires {
                annotations.insert(ANN_EXPIRES.to_string(), e.to_string());
            }
            let new = kube::NewSecret {
                name: format!("{SECRET_PREFIX}{}", info.id),
                labels: BTreeMap::from([
                    (LABEL.to_string(), "true".to_string()),
                    ("app.kubernetes.io/name".to_string(), "joinery".to_string()),
                ]),
                annotations,
                data: BTreeMap::from([(HASH_KEY.to_string(), hash_hex(&token).into_bytes())]),
                type_: Some("Opaque".into()),
            };
            match self.kube.create_secret(&self.namespace, &new) {
                Ok(_) => return Ok((token, info)),
                Err(kube::Error::AlreadyExists) => continue,
                Err(e) => return Err(TokenError::Kube(e)),
            }
        }
        Err(TokenError::Kube(kube::Error::AlreadyExists))
    }

    /// Every token, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>, kube::Error> {
        let mut all: Vec<TokenInfo> = self
            .kube
            .list_secrets(&self.namespace, &format!("{LABEL}=true"))?
            .iter()
            .filter_map(info_from_secret)
            .collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(all)
    }

    /// Revokes (deletes) the token with this id, on every controller within [`CACHE_TTL`].
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, TokenError> {
        if !valid_id(id) {
            return Err(TokenError::NotFound);
        }
        let name = format!("{SECRET_PREFIX}{id}");
        let secret = self
            .kube
            .get_secret(&self.namespace, &name)
            .map_err(TokenError::Kube)?
            .ok_or(TokenError::NotFound)?;
        let info = info_from_secret(&secret).ok_or(TokenError::NotFound)?;
        match self
            .kube
            .delete_secret(&self.namespace, &name, Some(&secret.uid))
        {
            Ok(()) | Err(kube::Error::NotFound) | Err(kube::Error::Conflict) => {}
            Err(e) => return Err(TokenError::Kube(e)),
        }
        lock(&self.cache).retain(|_, c| c.info.id != id);
        Ok(info)
    }

    /// Checks a presented token: its Secret exists, the hash matches, it has not expired.
    pub fn verify(&self, token: &str, now: i64) -> Result<TokenInfo, TokenError> {
        if !well_formed(token) {
            return Err(TokenError::Refused("the API token is malformed"));
        }
        let hash = hash_hex(token);
        let cached = lock(&self.cache)
            .get(&hash)
            .filter(|c| c.at.elapsed() < CACHE_TTL)
            .map(|c| c.info.clone());
        let info = match cached {
            Some(info) => info,
            None => {
                let info = self.fetch(token, &hash)?;
                let mut cache = lock(&self.cache);
                if cache.len() >= MAP_MAX {
                    cache.retain(|_, c| c.at.elapsed() < CACHE_TTL);
                    if cache.len() >= MAP_MAX {
                        cache.clear();
                    }
                }
                cache.insert(
                    hash,
                    Cached {
                        info: info.clone(),
                        at: Instant::now(),
                    },
                );
                info
            }
        };
        if info.expires.is_some_and(|e| e <= now) {
            return Err(TokenError::Refused("the API token has expired"));
        }
        self.note_use(&info.id, now);
        Ok(info)
    }

    fn fetch(&self, token: &str, hash: &str) -> Result<TokenInfo, TokenError> {
        let id = id_of(token);
        let name = format!("{SECRET_PREFIX}{id}");
        let unknown = TokenError::Refused("the API token is unknown or was revoked");
        if lock(&self.absent)
            .get(&id)
            .is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
        {
            return Err(unknown);
        }
        let Some(secret) = self
            .kube
            .get_secret(&self.namespace, &name)
            .map_err(TokenError::Kube)?
        else {
            let mut absent = lock(&self.absent);
            if absent.len() >= MAP_MAX {
                absent.retain(|_, t| t.elapsed() < NEGATIVE_TTL);
                if absent.len() >= MAP_MAX {
                    absent.clear();
                }
            }
            absent.insert(id, Instant::now());
            return Err(unknown);
        };
        let stored = secret.data.get(HASH_KEY).map(Vec::as_slice).unwrap_or(b"");
        if !same(stored, hash.as_bytes()) {
            return Err(unknown);
        }
        info_from_secret(&secret).ok_or(unknown)
    }

    /// Records `last used`, at most once per [`LAST_USED_EVERY`] per token; best effort.
    fn note_use(&self, id: &str, now: i64) {
        {
            let mut used = lock(&self.used);
            if used.get(id).is_some_and(|t| t.elapsed() < LAST_USED_EVERY) {
                return;
            }
            if used.len() >= MAP_MAX {
                used.retain(|_, t| t.elapsed() < LAST_USED_EVERY);
                if used.len() >= MAP_MAX {
                    used.clear();
                }
            }
            used.insert(id.to_string(), Instant::now());
        }
        let ann = BTreeMap::from([(ANN_LAST_USED.to_string(), now.to_string())]);
        let name = format!("{SECRET_PREFIX}{id}");
        if let Err(e) = self.kube.annotate_secret(&self.namespace, &name, &ann) {
            crate::log::warn(
                "could not record an API token's last use",
                &[("token", id.into()), ("error", e.to_string().into())],
            );
        }
    }
}

/// Locks a mutex, recovering from poisoning: the data is a cache, always safe to reuse.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_well_formed_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(well_formed(&a) && well_formed(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a.len(), PREFIX.len() + RANDOM_CHARS);
        assert!(valid_id(&id_of(&a)));
    }

    #[test]
    fn shapes_other_than_ours_are_refused() {
        for bad in [
            "",
            "jnr_",
            "jnr_short",
            "JNR_0123456789abcdef0123456789abcdef",
            "jnr_0123456789abcdef0123456789abcde-",
            "jnr_0123456789abcdef0123456789abcdef0",
            "xyz_0123456789abcdef0123456789abcdef",
            "jnr_0123456789abcdef0123456789abcdé",
        ] {
            assert!(!well_formed(bad), "{bad:?}");
        }
        assert!(well_formed("jnr_0123456789abcdef0123456789ABCDEF"));
    }

    #[test]
    fn ids_are_hash_prefixes() {
        // SHA-256("jnr_...") checked with `printf %s TOKEN | sha256sum`.
        let t = "jnr_0123456789abcdef0123456789abcdef";
        assert_eq!(
            hash_hex(t),
            "f98807cd08f72ee4364826b5a7a2560b0babd140246cef3093dc4819a37a8979"
        );
        assert_eq!(id_of(t), "f98807cd08f72ee4");
        for bad in ["", "0123456789abcdeF", "0123456789abcde", "../../../etc/pa"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn scopes_parse_strictly() {
        assert_eq!(parse_scopes(&["read"]).unwrap(), vec![Scope::Read]);
        assert_eq!(
            parse_scopes(&["read", "admin", "read"]).unwrap(),
            vec![Scope::Admin, Scope::Read]
        );
        assert!(parse_scopes::<&str>(&[]).is_err());
        assert!(parse_scopes(&["write"]).is_err());
        assert_eq!(effective_scope(&[Scope::Read]), Scope::Read);
        assert_eq!(effective_scope(&[Scope::Read, Scope::Admin]), Scope::Admin);
    }

    #[test]
    fn names() {
        assert!(check_name("ci pipeline").is_ok());
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS)).is_ok());
        for bad in ["", " padded", "tab\there", &"x".repeat(MAX_NAME_CHARS + 1)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_read_back() {
        let s = kube::Secret {
            name: "joinery-token-0123456789abcdef".into(),
            annotations: BTreeMap::from([
                (ANN_NAME.into(), "ci".into()),
                (ANN_SCOPES.into(), "read".into()),
                (ANN_CREATED.into(), "100".into()),
                (ANN_EXPIRES.into(), "0".into()),
                (ANN_LAST_FOUR.into(), "wxyz".into()),
            ]),
            ..Default::default()
        };
        let info = info_from_secret(&s).unwrap();
        assert_eq!(info.id, "0123456789abcdef");
        assert_eq!(info.scope(), Scope::Read);
        assert_eq!(info.expires, None);
        assert_eq!(info.last_used, None);
        let other = kube::Secret {
            name: "joinery-signing-key".into(),
            ..s.clone()
        };
        assert!(info_from_secret(&other).is_none());
    }

    #[test]
    fn same_is_equality() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
