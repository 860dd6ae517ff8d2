//! Join tokens: the policy of the credential a join command carries.
//!
//! A join token is an HS256 JWT with audience [`JOIN_AUDIENCE`], the roles it joins
//! with, and a lifetime of [`JOIN_TTL_SECS`]; its `jti` names the join's ticket
//! (`crate::join::ticket`), which is what makes it single-use. This module only signs
//! and checks the token; whether its ticket still lets it download is the ticket's
//! business.

use super::jwt::{self, Claims, JwtError};

/// Audience of join tokens.
pub const JOIN_AUDIENCE: &str = "join-bundle";
/// How long a join token (and its ticket) may be used to start a download.
pub const JOIN_TTL_SECS: i64 = 3600;

/// Why a token is not a usable join token.
#[derive(Debug)]
pub enum JoinTokenError {
    /// Well-signed, for these roles, but its time is up. The claims are kept: a download
    /// that started in time may still be resumed.
    Expired(Box<Claims>),
    /// Not a join token at all (another audience): maybe a session token.
    NotJoin,
    /// A join token, but for other roles than the request names.
    Roles(Vec<String>),
    /// Forged, mangled or otherwise refused.
    Refused(JwtError),
}

/// Signs the join token for ticket `jti`, issued at `now`.
pub fn issue(key: &[u8], jti: &str, roles: &[String], now: i64, issuer: &str) -> String {
    jwt::sign(
        key,
        &Claims {
            iss: issuer.into(),
            sub: "join".into(),
            aud: JOIN_AUDIENCE.into(),
            iat: now,
            nbf: now,
            exp: now + JOIN_TTL_SECS,
            jti: jti.into(),
            scope: JOIN_AUDIENCE.into(),
            roles: roles.to_vec(),
        },
    )
}

/// Checks a join token for a download of `roles` at `now`.
pub fn verify(
    key: &[u8],
    token: &str,
    roles: &[String],
    now: i64,
) -> Result<Claims, JoinTokenError> {
    let claims = match jwt::verify_checked(key, token, JOIN_AUDIENCE, now) {
        Ok(c) => c,
        Err((JwtError::Audience, _)) => return Err(JoinTokenError::NotJoin),
        Err((JwtError::Expired, Some(c))) => {
            if c.roles != roles {
                return Err(JoinTokenError::Roles(c.roles));
            }
            return Err(JoinTokenError::Expired(c));
        }
        Err((e, _)) => return Err(JoinTokenError::Refused(e)),
    };
    if claims.roles != roles {
        return Err(JoinTokenError::Roles(claims.roles));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn join_token_checks() {
        let key = [3u8; 32];
        let t = issue(&key, "abc", &s(&["worker"]), 1000, "joinery");
        assert_eq!(verify(&key, &t, &s(&["worker"]), 1001).unwrap().jti, "abc");
        assert!(matches!(
            verify(&key, &t, &s(&["gpu"]), 1001),
            Err(JoinTokenError::Roles(r)) if r == ["worker"]
        ));
        assert!(matches!(
            verify(&key, &t, &s(&["worker"]), 1000 + JOIN_TTL_SECS + 120),
            Err(JoinTokenError::Expired(c)) if c.jti == "abc"
        ));
        assert!(matches!(
            verify(&[4u8; 32], &t, &s(&["worker"]), 1001),
            Err(JoinTokenError::Refused(JwtError::Signature))
        ));
        // An expired forgery is refused, not "expired".
        assert!(matches!(
            verify(&[4u8; 32], &t, &s(&["worker"]), 1000 + JOIN_TTL_SECS + 120),
            Err(JoinTokenError::Refused(JwtError::Signature))
        ));
        let session = jwt::sign(
            &key,
            &Claims {
                iss: "joinery".into(),
                sub: "admin".into(),
                aud: "joinery".into(),
                iat: 1000,
                nbf: 1000,
                exp: 2000,
                jti: "x".into(),
                scope: "admin".into(),
                roles: vec![],
            },
        );
        assert!(matches!(
            verify(&key, &session, &s(&["worker"]), 1001),
            Err(JoinTokenError::NotJoin)
        ));
    }
}
