//! HS256 JSON Web Tokens (RFC 7519 over RFC 7515), written by hand on `hmac` + `sha2`.
//!
//! joinery both issues and checks its tokens, so one symmetric algorithm is enough, and
//! supporting exactly one removes the classic JWT mistakes: a token cannot pick `none`
//! or an asymmetric algorithm, because a header that does not say `HS256` is refused.
//!
//! Invariant: [`verify`] works in a fixed order — size, shape, header, signature, claims —
//! so no claim is ever parsed out of bytes the signature has not vouched for, and an
//! oversized token costs nothing to refuse.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Tokens longer than this are refused before any decoding. Ours are a few hundred
/// bytes; the limit only bounds the work a stranger can make us do.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds, because the controllers'
/// clocks are not perfectly in step.
pub const LEEWAY_SECS: i64 = 60;

/// The only header [`sign`] writes.
const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The payload of a joinery token. Every field but `roles` is required on input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued the token (joinery writes `"joinery"`).
    pub iss: String,
    /// Who the token is for (for example `"admin"`).
    pub sub: String,
    /// Which service must accept it. On input a JSON array is also accepted (RFC 7519
    /// §4.1.3); [`verify`] then reports the expected audience here.
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
    /// Unique token id, from [`random_id`].
    pub jti: String,
    /// Permission level; see [`crate::auth::Scope`].
    pub scope: String,
    /// Node roles a join-bundle token is limited to; absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// Why a token was refused. Messages never quote the token or the key, so they are
/// safe to log and to return to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// The token is longer than [`MAX_TOKEN_BYTES`]; nothing in it was decoded.
    TooLarge,
    /// The token is not three segments of unpadded base64url separated by dots.
    Malformed,
    /// The header segment is not a JSON object.
    Header,
    /// The header's `alg` is missing or anything but `HS256` (`none` included).
    Algorithm,
    /// The header's `typ` is present and not `JWT`.
    Type,
    /// The header has a `crit` member; no critical extension is understood here.
    Critical,
    /// The signature was not made with our key over this header and payload.
    Signature,
    /// The signed payload is not a JSON object with every required claim of the right type.
    Claims,
    /// The `aud` claim does not name this service.
    Audience,
    /// The `exp` claim is in the past, beyond the leeway.
    Expired,
    /// The `nbf` claim is in the future, beyond the leeway.
    NotYetValid,
    /// The `iat` claim is in the future, beyond the leeway.
    IssuedInFuture,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtError::TooLarge => "token is longer than 8 KiB",
            JwtError::Malformed => "token is not three base64url segments separated by dots",
            JwtError::Header => "token header is not a JSON object",
            JwtError::Algorithm => "token algorithm must be HS256",
            JwtError::Type => "token type must be JWT",
            JwtError::Critical => "token header has critical extensions, which are not supported",
            JwtError::Signature => "token signature does not match",
            JwtError::Claims => "token claims are missing or have the wrong type",
            JwtError::Audience => "token audience is not accepted here",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token is not valid yet",
            JwtError::IssuedInFuture => "token was issued in the future",
        })
    }
}

impl std::error::Error for JwtError {}

/// Sign `claims` into a compact JWT with the header `{"alg":"HS256","typ":"JWT"}`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    // Strings and integers only: serializing this struct cannot fail.
    let payload = serde_json::to_vec(claims).expect("Claims always serialize to JSON");
    let mut token = URL_SAFE_NO_PAD.encode(HEADER_JSON);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = sign_input(key, &token);
    token.push('.');
    token.push_str(&signature);
    token
}

/// The base64url HS256 signature of a JWS signing input (`header.payload`, both segments
/// already encoded). Exposed so published vectors such as RFC 7515 A.1 can be checked.
pub fn sign_input(key: &[u8], signing_input: &str) -> String {
    let mut mac = new_mac(key);
    mac.update(signing_input.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `token`'s signature segment is `key`'s HS256 over its first two segments.
/// Only picks which of several keys to [`verify`] with; `verify` does every check.
pub fn signed_with(key: &[u8], token: &str) -> bool {
    if token.len() > MAX_TOKEN_BYTES {
        return false;
    }
    let Some((input, signature_b64)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature_b64) else {
        return false;
    };
    let mut mac = new_mac(key);
    mac.update(input.as_bytes());
    mac.verify_slice(&signature).is_ok()
}

/// Check `token` and return its claims if it was signed with `key`, names `expected_aud`
/// as its audience, and is valid at `now` (Unix seconds) within `LEEWAY_SECS`.
pub fn verify(key: &[u8], token: &str, expected_aud: &str, now: i64) -> Result<Claims, JwtError> {
    verify_checked(key, token, expected_aud, now).map_err(|(e, _)| e)
}

/// Like [`verify`], but a token that is well-signed and only expired also carries its
/// claims, so a caller can tell "your time is up" from "this is no token of ours" (a
/// join being resumed after its token expired, or a precise 410).
pub fn verify_checked(
    key: &[u8],
    token: &str,
    expected_aud: &str,
    now: i64,
) -> Result<Claims, (JwtError, Option<Box<Claims>>)> {
    let claims = verify_signed(key, token, expected_aud, now).map_err(|e| (e, None))?;
    // Saturating: the claims are signed, but a huge value must not overflow into a panic.
    if claims.exp.saturating_add(LEEWAY_SECS) <= now {
        return Err((JwtError::Expired, Some(Box::new(claims))));
    }
    Ok(claims)
}

/// Every check of [`verify`] but the expiry.
fn verify_signed(
    key: &[u8],
    token: &str,
    expected_aud: &str,
    now: i64,
) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }

    // Shape: exactly three segments, each canonical unpadded base64url. The engine
    // refuses padding, other alphabets and non-zero trailing bits, so one token has
    // exactly one spelling.
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwtError::Malformed);
    };
    let decode = |segment: &str| {
        URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| JwtError::Malformed)
    };
    let header = decode(header_b64)?;
    let payload = decode(payload_b64)?;
    let signature = decode(signature_b64)?;

    check_header(&header)?;

    // The signing input is the segments exactly as received, not a re-encoding.
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    let mut mac = new_mac(key);
    mac.update(signing_input.as_bytes());
    // verify_slice compares in constant time and refuses a tag of the wrong length.
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;

    let raw: WireClaims = serde_json::from_slice(&payload).map_err(|_| JwtError::Claims)?;
    let audience_ok = match &raw.aud {
        Audience::One(aud) => aud == expected_aud,
        Audience::Many(auds) => auds.iter().any(|aud| aud == expected_aud),
    };
    if !audience_ok {
        return Err(JwtError::Audience);
    }
    if raw.nbf > now.saturating_add(LEEWAY_SECS) {
        return Err(JwtError::NotYetValid);
    }
    if raw.iat > now.saturating_add(LEEWAY_SECS) {
        return Err(JwtError::IssuedInFuture);
    }

    Ok(Claims {
        iss: raw.iss,
        sub: raw.sub,
        aud: expected_aud.to_owned(),
        iat: raw.iat,
        nbf: raw.nbf,
        exp: raw.exp,
        jti: raw.jti,
        scope: raw.scope,
        roles: raw.roles,
    })
}

/// A fresh token id: 16 random bytes from the OS as 22 characters of base64url.
pub fn random_id() -> Result<String, crate::random::Unavailable> {
    crate::random::base64url(16)
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (long ones are hashed first), so this cannot fail.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The header rules: a JSON object, `alg` exactly "HS256", no `crit`, `typ` "JWT" if present.
fn check_header(header: &[u8]) -> Result<(), JwtError> {
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|_| JwtError::Header)?;
    if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256") {
        return Err(JwtError::Algorithm);
    }
    if header.contains_key("crit") {
        return Err(JwtError::Critical);
    }
    match header.get("typ") {
        None => Ok(()),
        Some(typ) if typ.as_str() == Some("JWT") => Ok(()),
        Some(_) => Err(JwtError::Type),
    }
}

/// The payload as it may arrive: like [`Claims`], but `aud` may be an array.
#[derive(Deserialize)]
struct WireClaims {
    iss: String,
    sub: String,
    aud: Audience,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    scope: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_700_000_000;
    const AUD: &str = "joinery";

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn claims() -> Claims {
        Claims {
            iss: "joinery".into(),
            sub: "admin".into(),
            aud: AUD.into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 86_400,
            jti: "id-1".into(),
            scope: "admin".into(),
            roles: vec![],
        }
    }

    fn good() -> String {
        sign(KEY, &claims())
    }

    /// A token signed with KEY whose claims were changed by `change`.
    fn with(change: impl FnOnce(&mut Claims)) -> String {
        let mut c = claims();
        change(&mut c);
        sign(KEY, &c)
    }

    /// A token signed with KEY over an arbitrary header and payload.
    fn raw(header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = sign_input(KEY, &input);
        format!("{input}.{sig}")
    }

    /// The good token's payload JSON, for tokens that only change the header.
    fn good_payload() -> String {
        serde_json::to_string(&claims()).unwrap()
    }

    fn segment(token: &str, i: usize) -> String {
        token.split('.').nth(i).unwrap().to_owned()
    }

    /// Replace segment `i` of `token` without re-signing.
    fn replace(token: &str, i: usize, new: &str) -> String {
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[i] = new;
        parts.join(".")
    }

    type Case = (&'static str, fn() -> String, Result<(), JwtError>);

    const CASES: &[Case] = &[
        ("valid", good, Ok(())),
        // Algorithm confusion.
        (
            "alg none, empty signature",
            || {
                format!(
                    "{}.{}.",
                    b64(r#"{"alg":"none","typ":"JWT"}"#),
                    segment(&good(), 1)
                )
            },
            Err(JwtError::Algorithm),
        ),
        (
            "alg none, HMAC signature",
            || raw(r#"{"alg":"none"}"#, &good_payload()),
            Err(JwtError::Algorithm),
        ),
        (
            "alg HS512",
            || raw(r#"{"alg":"HS512","typ":"JWT"}"#, &good_payload()),
            Err(JwtError::Algorithm),
        ),
        (
            "alg RS256",
            || raw(r#"{"alg":"RS256","typ":"JWT"}"#, &good_payload()),
            Err(JwtError::Algorithm),
        ),
        (
            "alg lower case",
            || raw(r#"{"alg":"hs256"}"#, &good_payload()),
            Err(JwtError::Algorithm),
        ),
        (
            "alg missing",
            || raw(r#"{"typ":"JWT"}"#, &good_payload()),
            Err(JwtError::Algorithm),
        ),
        (
            "alg not a string",
            || raw(r#"{"alg":256}"#, &good_payload()),
            Err(JwtError::Algorithm),
        ),
        (
            "crit present",
            || raw(r#"{"alg":"HS256","crit":["exp"]}"#, &good_payload()),
            Err(JwtError::Critical),
        ),
        (
            "typ JWS",
            || raw(r#"{"alg":"HS256","typ":"JWS"}"#, &good_payload()),
            Err(JwtError::Type),
        ),
        (
            "typ absent",
            || raw(r#"{"alg":"HS256"}"#, &good_payload()),
            Ok(()),
        ),
        (
            "header not JSON",
            || raw("alg=HS256", &good_payload()),
            Err(JwtError::Header),
        ),
        (
            "header a JSON array",
            || raw(r#"["HS256"]"#, &good_payload()),
            Err(JwtError::Header),
        ),
        // Signature.
        (
            "tampered payload",
            || {
                let payload = b64(&serde_json::to_string(&Claims {
                    sub: "mallory".into(),
                    ..claims()
                })
                .unwrap());
                replace(&good(), 1, &payload)
            },
            Err(JwtError::Signature),
        ),
        (
            "tampered signature",
            || {
                let sig = segment(&good(), 2);
                let first = if sig.starts_with('A') { "B" } else { "A" };
                replace(&good(), 2, &format!("{first}{}", &sig[1..]))
            },
            Err(JwtError::Signature),
        ),
        (
            "signed with another key",
            || sign(b"another key entirely, 32 bytes!!", &claims()),
            Err(JwtError::Signature),
        ),
        (
            "signature empty",
            || replace(&good(), 2, ""),
            Err(JwtError::Signature),
        ),
        (
            "signature truncated to 16 bytes",
            || {
                let sig = URL_SAFE_NO_PAD.decode(segment(&good(), 2)).unwrap();
                replace(&good(), 2, &URL_SAFE_NO_PAD.encode(&sig[..16]))
            },
            Err(JwtError::Signature),
        ),
        (
            "garbage claims, bad signature: signature checked first",
            || replace(&good(), 1, &b64("not json")),
            Err(JwtError::Signature),
        ),
        // Audience.
        (
            "wrong aud",
            || with(|c| c.aud = "joinery-join".into()),
            Err(JwtError::Audience),
        ),
        (
            "aud array containing ours",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace(r#""aud":"joinery""#, r#""aud":["x","joinery"]"#),
                )
            },
            Ok(()),
        ),
        (
            "aud array without ours",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace(r#""aud":"joinery""#, r#""aud":["x","y"]"#),
                )
            },
            Err(JwtError::Audience),
        ),
        (
            "aud empty array",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace(r#""aud":"joinery""#, r#""aud":[]"#),
                )
            },
            Err(JwtError::Audience),
        ),
        // Time, with 60 s of leeway.
        (
            "expired",
            || with(|c| c.exp = NOW - 3_600),
            Err(JwtError::Expired),
        ),
        (
            "expired exactly at the leeway",
            || with(|c| c.exp = NOW - LEEWAY_SECS),
            Err(JwtError::Expired),
        ),
        (
            "expired but within leeway",
            || with(|c| c.exp = NOW - LEEWAY_SECS + 1),
            Ok(()),
        ),
        (
            "not yet valid",
            || with(|c| c.nbf = NOW + LEEWAY_SECS + 1),
            Err(JwtError::NotYetValid),
        ),
        (
            "not yet valid but within leeway",
            || with(|c| c.nbf = NOW + LEEWAY_SECS),
            Ok(()),
        ),
        (
            "issued in the future",
            || with(|c| c.iat = NOW + LEEWAY_SECS + 1),
            Err(JwtError::IssuedInFuture),
        ),
        (
            "issued in the future within leeway",
            || with(|c| c.iat = NOW + LEEWAY_SECS),
            Ok(()),
        ),
        (
            "extreme times do not overflow",
            || {
                with(|c| {
                    c.exp = i64::MAX;
                    c.nbf = i64::MIN;
                    c.iat = i64::MIN;
                })
            },
            Ok(()),
        ),
        (
            "exp i64::MIN",
            || with(|c| c.exp = i64::MIN),
            Err(JwtError::Expired),
        ),
        // Shape.
        (
            "2 segments",
            || good().rsplit_once('.').unwrap().0.to_owned(),
            Err(JwtError::Malformed),
        ),
        (
            "4 segments",
            || format!("{}.{}", good(), segment(&good(), 2)),
            Err(JwtError::Malformed),
        ),
        ("empty string", String::new, Err(JwtError::Malformed)),
        (
            "padding on the signature",
            || format!("{}=", good()),
            Err(JwtError::Malformed),
        ),
        (
            "padding on the header",
            || replace(&good(), 0, &format!("{}=", segment(&good(), 0))),
            Err(JwtError::Malformed),
        ),
        (
            "non-base64 character",
            || replace(&good(), 1, "eyJ*"),
            Err(JwtError::Malformed),
        ),
        (
            "standard alphabet instead of url-safe",
            || replace(&good(), 2, &format!("+/{}", &segment(&good(), 2)[2..])),
            Err(JwtError::Malformed),
        ),
        (
            "surrounding whitespace",
            || format!(" {} ", good()),
            Err(JwtError::Malformed),
        ),
        // Claims (validly signed, so the claims check is what refuses them).
        (
            "claims missing exp",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace(r#","exp":1700086400"#, ""),
                )
            },
            Err(JwtError::Claims),
        ),
        (
            "exp as a string",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace(r#""exp":1700086400"#, r#""exp":"1700086400""#),
                )
            },
            Err(JwtError::Claims),
        ),
        (
            "exp as a float",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace(r#""exp":1700086400"#, r#""exp":1700086400.5"#),
                )
            },
            Err(JwtError::Claims),
        ),
        (
            "roles as a string",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace('}', r#","roles":"controller"}"#),
                )
            },
            Err(JwtError::Claims),
        ),
        (
            "duplicate claim",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace('}', r#","sub":"mallory"}"#),
                )
            },
            Err(JwtError::Claims),
        ),
        (
            "claims not JSON",
            || raw(r#"{"alg":"HS256"}"#, "sub=admin"),
            Err(JwtError::Claims),
        ),
        (
            "unknown claims are ignored",
            || {
                raw(
                    r#"{"alg":"HS256"}"#,
                    &good_payload().replace('}', r#","extra":true}"#),
                )
            },
            Ok(()),
        ),
        // Size, refused before anything else.
        (
            "oversize garbage",
            || "a".repeat(MAX_TOKEN_BYTES + 1),
            Err(JwtError::TooLarge),
        ),
        (
            "oversize but validly signed",
            || with(|c| c.jti = "x".repeat(MAX_TOKEN_BYTES)),
            Err(JwtError::TooLarge),
        ),
    ];

    fn check(name: &str, token: &str, expected: Result<(), JwtError>) {
        let got = verify(KEY, token, AUD, NOW).map(|_| ());
        assert_eq!(got, expected, "case {name:?}");
    }

    #[test]
    fn verify_table() {
        for (name, make, expected) in CASES {
            check(name, &make(), *expected);
        }
    }

    #[test]
    fn signed_with_picks_the_key_that_signed() {
        let token = sign(b"key one", &claims());
        assert!(signed_with(b"key one", &token));
        assert!(!signed_with(b"key two", &token));
        for bad in ["", "a.b", "a.b.!!!", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(!signed_with(b"key one", bad), "{bad:.20}");
        }
    }

    #[test]
    fn verify_returns_the_signed_claims() {
        assert_eq!(verify(KEY, &good(), AUD, NOW), Ok(claims()));
    }

    #[test]
    fn sign_writes_the_fixed_header() {
        let header = URL_SAFE_NO_PAD.decode(segment(&good(), 0)).unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    #[test]
    fn roles_round_trip_and_are_omitted_when_empty() {
        let roles = vec!["controller".to_owned(), "gpu-worker".to_owned()];
        let token = with(|c| c.roles = roles.clone());
        assert_eq!(verify(KEY, &token, AUD, NOW).unwrap().roles, roles);

        let payload = URL_SAFE_NO_PAD.decode(segment(&good(), 1)).unwrap();
        let payload = String::from_utf8(payload).unwrap();
        assert!(!payload.contains("roles"), "{payload}");
        assert_eq!(
            verify(KEY, &good(), AUD, NOW).unwrap().roles,
            Vec::<String>::new()
        );
    }

    /// RFC 7515 appendix A.1: a signature computed by someone else over exact bytes.
    #[test]
    fn rfc7515_a1_hs256_example() {
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let input = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
                     .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(sign_input(&key, input), signature);

        // The whole token passes size, shape, header and signature; its claims are not
        // ours (no sub, aud, ...), so it stops at the claims, proving the order.
        let token = format!("{input}.{signature}");
        assert_eq!(
            verify(&key, &token, AUD, 1_300_819_000),
            Err(JwtError::Claims)
        );
    }

    /// Tokens made by PyJWT 2.15 (`jwt.encode(claims, key, algorithm="HS256")`).
    const PYJWT_KEY: &[u8] = b"joinery-test-key-0123456789abcde";
    const PYJWT_ARRAY_AUD: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJqb2luZXJ5Iiwic3ViIjoiYWRtaW4iLCJhdWQiOlsib3RoZXIiLCJqb2luZXJ5Il0sImlhdCI6MTcwMDAwMDAwMCwibmJmIjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwODY0MDAsImp0aSI6InB5and0LTEiLCJzY29wZSI6ImFkbWluIiwicm9sZXMiOlsiY29udHJvbGxlciJdfQ.93UEOXYad8a8yUeciu8-hPdp-86Nmr9-AHMMGPlbsxw";
    const PYJWT_STRING_AUD: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJqb2luZXJ5Iiwic3ViIjoiYWRtaW4iLCJhdWQiOiJqb2luZXJ5IiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDA4NjQwMCwianRpIjoicHlqd3QtMSIsInNjb3BlIjoiYWRtaW4ifQ.ecTBO8S2O4tdykLqfx_J1thoBVAImR9hFW3an_2VaRo";

    fn pyjwt_claims() -> Claims {
        Claims {
            jti: "pyjwt-1".into(),
            exp: 1_700_086_400,
            ..claims()
        }
    }

    #[test]
    fn interoperates_with_pyjwt() {
        // Same claims in the same order: the bytes must match exactly.
        assert_eq!(sign(PYJWT_KEY, &pyjwt_claims()), PYJWT_STRING_AUD);
        assert_eq!(
            verify(PYJWT_KEY, PYJWT_STRING_AUD, AUD, NOW),
            Ok(pyjwt_claims())
        );

        let expected = Claims {
            roles: vec!["controller".into()],
            ..pyjwt_claims()
        };
        assert_eq!(verify(PYJWT_KEY, PYJWT_ARRAY_AUD, AUD, NOW), Ok(expected));
        assert_eq!(
            verify(PYJWT_KEY, PYJWT_ARRAY_AUD, "joinery-join", NOW),
            Err(JwtError::Audience)
        );
    }

    #[test]
    fn random_ids_are_16_bytes_and_differ() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
        assert_ne!(a, b);
    }
}
