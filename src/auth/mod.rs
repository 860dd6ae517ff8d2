//! Authentication: the pure pieces (no sockets, no Kubernetes), and the stores that
//! keep auth state in Kubernetes Secrets (`store`, `apitoken`, `refresh`).
//!
//! - [`jwt`]: HS256 tokens, signed and checked by hand with `hmac` + `sha2`.
//! - [`password`]: the installer password as a bcrypt hash (`$2a$` from Embedded
//!   Cluster, `$2b$` from us).
//! - [`key`]: the 32-byte signing key, loaded from a file and never printed.
//! - [`scope`]: what a token lets its holder do.
//! - [`apitoken`]: opaque `jnr_` API tokens, stored as SHA-256 hashes in Secrets.
//! - [`refresh`]: rotating OAuth2 refresh-token families, one Secret each.
//! - [`throttle`]: per-address password-guessing lockouts and the cap on concurrent
//!   bcrypt checks.
//! - [`bearer_token`]: the token out of an `Authorization` header.
//!
//! Invariant: no log line or error message carries a token, password, hash or key (the
//! stores log ids only), so callers may log and return these errors as they are.

pub mod apitoken;
pub mod join;
pub mod jwt;
pub mod key;
pub mod password;
pub mod refresh;
pub mod scope;
pub mod session;
pub mod store;
pub mod throttle;

pub use scope::Scope;

/// The token in an `Authorization: Bearer <token>` header value, or `None` if the scheme
/// is not `Bearer` (compared case-insensitively, RFC 7235) or no token follows it.
/// Surrounding whitespace is ignored; a token with whitespace inside is refused.
pub fn bearer_token(authorization_header: &str) -> Option<&str> {
    let value = authorization_header.trim();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let rest = &value[6..];
    // The scheme must be followed by whitespace: "Bearerabc" is no bearer token.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return None;
    }
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    fn check(header: &str, expected: Option<&str>) {
        assert_eq!(bearer_token(header), expected, "{header:?}");
    }

    #[test]
    fn bearer_token_table() {
        check("Bearer abc.def.ghi", Some("abc.def.ghi"));
        check("bearer abc", Some("abc"));
        check("BEARER abc", Some("abc"));
        check("BeArEr abc", Some("abc"));
        check("  Bearer   abc  ", Some("abc"));
        check("Bearer\tabc", Some("abc"));
        check("Bearer abc\r\n", Some("abc"));

        check("", None);
        check("Bearer", None);
        check("Bearer ", None);
        check("Bearer    ", None);
        check("Bearerabc", None);
        check("Basic YWRtaW46cGFzcw==", None);
        check("Token abc", None);
        check("abc.def.ghi", None);
        check("Bearer abc def", None);
        // Multi-byte text where the scheme would be must not panic.
        check("Beaéer abc", None);
        check("ééé", None);
    }
}
