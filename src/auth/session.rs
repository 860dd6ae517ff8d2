//! Session tokens: the policy of joinery's own bearer JWTs, those `POST /v1/auth/token`
//! hands out (24 hours) and the OAuth2 access tokens of `POST /oauth/token` (1 hour).
//! Issuer and audience are both [`AUDIENCE`]; the scope says what the token allows.

use super::jwt::{self, Claims, JwtError};
use super::Scope;

/// Issuer and audience of session tokens.
pub const AUDIENCE: &str = "joinery";
/// How long a login's session token lives.
pub const SESSION_TTL_SECS: i64 = 24 * 3600;
/// How long an OAuth2 access token lives: shorter than a session, since a refresh token
/// renews it.
pub const ACCESS_TTL_SECS: i64 = 3600;

/// The claims of a session token for `subject`, valid `ttl` seconds from `now`.
pub fn claims(
    subject: &str,
    scope: Scope,
    now: i64,
    ttl: i64,
) -> Result<Claims, crate::random::Unavailable> {
    Ok(Claims {
        iss: AUDIENCE.into(),
        sub: subject.into(),
        aud: AUDIENCE.into(),
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: jwt::random_id()?,
        scope: scope.as_str().into(),
        roles: Vec::new(),
    })
}

/// Checks a session token (signature, audience, times) at `now`.
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, JwtError> {
    jwt::verify(key, token, AUDIENCE, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_round_trip_and_expire() {
        let key = [5u8; 32];
        let t = jwt::sign(
            &key,
            &claims("admin", Scope::Read, 1000, SESSION_TTL_SECS).unwrap(),
        );
        let c = verify(&key, &t, 1001).unwrap();
        assert_eq!((c.sub.as_str(), c.scope.as_str()), ("admin", "read"));
        assert!(matches!(
            verify(&key, &t, 1000 + SESSION_TTL_SECS + 120),
            Err(JwtError::Expired)
        ));
        let join = super::super::join::issue(&key, "j", &["w".to_string()], 1000, AUDIENCE);
        assert!(matches!(verify(&key, &join, 1001), Err(JwtError::Audience)));
    }
}
