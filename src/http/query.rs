//! The one parser of query strings (and of `application/x-www-form-urlencoded` bodies,
//! which share the grammar), used by every endpoint that takes parameters.
//!
//! One rule everywhere: a malformed `%`-escape, a value that is not UTF-8 once decoded,
//! a key given twice and a key the endpoint does not take are each refused, so a typo
//! (`roles=` for `role=`, `Ready=`) or a smuggled second value never changes what a
//! request means without the client hearing of it. The single exception is the OAuth
//! token endpoint, which RFC 6749 §3.2 requires to ignore unknown parameters
//! ([`Params::parse_form`]). Decoding is `percent-encoding`'s, after `+` → space.
//!
//! Pure: no I/O, so table tests and the `query` fuzz target drive it directly. Messages
//! quote at most [`CLIP`] characters of a key, never a value (values can be secrets).

use percent_encoding::percent_decode_str;

/// The most characters of a client's key quoted in an error message.
pub const CLIP: usize = 40;

/// The decoded parameters of one query string or form body, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Why a query string (or form body) was refused. Messages never quote a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// A `%` not followed by two hex digits.
    Malformed,
    /// A key or value that is not UTF-8 once decoded.
    NotUtf8,
    /// This key appears more than once.
    Repeated(String),
    /// Keys this endpoint does not take (at most five are kept), and the ones it does.
    Unknown {
        keys: Vec<String>,
        known: &'static [&'static str],
    },
    /// A value of the wrong shape: the key and what it must be.
    Invalid { key: String, expected: &'static str },
}

impl QueryError {
    /// The stable error code: unknown keys are their own code (scripts fix a typo
    /// differently from a bad value); everything else is `invalid_query`.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Unknown { .. } => "unknown_parameter",
            QueryError::Malformed
            | QueryError::NotUtf8
            | QueryError::Repeated(_)
            | QueryError::Invalid { .. } => "invalid_query",
        }
    }

    /// A sentence for the client; quotes keys (clipped), never values.
    pub fn message(&self) -> String {
        match self {
            QueryError::Malformed => {
                "the query has a malformed %-escape (% must be followed by two hex digits)".into()
            }
            QueryError::NotUtf8 => "a query parameter is not UTF-8 once %-decoded".into(),
            QueryError::Repeated(k) => {
                format!("the parameter {k:?} is given more than once; give it once")
            }
            QueryError::Unknown { keys, known } => {
                let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
                let takes = if known.is_empty() {
                    "this endpoint takes no query parameters".to_string()
                } else {
                    format!("this endpoint takes {}", known.join(", "))
                };
                format!("unknown query parameter {}; {takes}", keys.join(", "))
            }
            QueryError::Invalid { key, expected } => format!("{key} must be {expected}"),
        }
    }
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl Params {
    /// Parses a query string (without the `?`). Refuses malformed escapes, non-UTF-8, a
    /// repeated key and any key not in `known`.
    pub fn parse(raw: &str, known: &'static [&'static str]) -> Result<Params, QueryError> {
        let pairs = decode_pairs(raw)?;
        let mut unknown: Vec<String> = Vec::new();
        for (k, _) in &pairs {
            if !known.contains(&k.as_str()) && unknown.len() < 5 && !unknown.contains(&clip(k)) {
                unknown.push(clip(k));
            }
        }
        if !unknown.is_empty() {
            return Err(QueryError::Unknown {
                keys: unknown,
                known,
            });
        }
        Ok(Params { pairs })
    }

    /// Parses an `application/x-www-form-urlencoded` body for the OAuth token endpoint:
    /// the same grammar and the same refusal of repeats (RFC 6749 §3.1), but unknown
    /// keys are kept rather than refused (RFC 6749 §3.2 says to ignore them).
    pub fn parse_form(raw: &str) -> Result<Params, QueryError> {
        Ok(Params {
            pairs: decode_pairs(raw)?,
        })
    }

    /// The value of `key`, if given (`key` alone, without `=`, gives `""`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` as a boolean: `true`/`1` or `false`/`0`; `None` when absent.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, QueryError> {
        match self.get(key) {
            None => Ok(None),
            // Exactly the words OpenAPI's boolean documents, so the schema and the
            // parser agree (schemathesis sends `0` and expects a refusal).
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(QueryError::Invalid {
                key: key.to_string(),
                expected: "true or false",
            }),
        }
    }

    /// `key` as a whole number in `0..=max`; `None` when absent.
    pub fn number(&self, key: &str, max: u64) -> Result<Option<u64>, QueryError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if n <= max && v.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
            _ => Err(QueryError::Invalid {
                key: key.to_string(),
                expected: "a whole number in range",
            }),
        }
    }

    /// Every pair, in arrival order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Splits on `&`, skips empty pairs, decodes each side and refuses repeats.
fn decode_pairs(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_component(k)?;
        let value = decode_component(v)?;
        if pairs.iter().any(|(seen, _)| *seen == key) {
            return Err(QueryError::Repeated(clip(&key)));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// One form component: `+` is a space; every `%` must start a two-hex-digit escape
/// (`percent-encoding` alone would pass a broken escape through as text).
pub fn decode_component(s: &str) -> Result<String, QueryError> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'%' {
            let ok = b
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(QueryError::Malformed);
            }
        }
    }
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| QueryError::NotUtf8)
}

fn clip(s: &str) -> String {
    s.chars().take(CLIP).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["role", "ready", "watch"];

    #[test]
    fn parses() {
        let check = |raw: &str, want: &[(&str, &str)]| {
            let p = Params::parse(raw, KNOWN).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let got: Vec<(&str, &str)> = p.pairs().collect();
            assert_eq!(got, want, "{raw}");
        };
        check("", &[]);
        check("&&", &[]);
        check("role=a", &[("role", "a")]);
        check("role=a&ready=true", &[("role", "a"), ("ready", "true")]);
        check("role=a%2Cb", &[("role", "a,b")]);
        check("role=a+b", &[("role", "a b")]);
        check("role=a%2Bb", &[("role", "a+b")]);
        check("role", &[("role", "")]);
        check("role=a=b", &[("role", "a=b")]);
        check("r%6Fle=x", &[("role", "x")]);
        check("role=%C3%A9", &[("role", "é")]);
    }

    #[test]
    fn refuses() {
        let check = |raw: &str, want: QueryError| {
            assert_eq!(Params::parse(raw, KNOWN).unwrap_err(), want, "{raw}");
        };
        check("role=%", QueryError::Malformed);
        check("role=%4", QueryError::Malformed);
        check("role=%zz", QueryError::Malformed);
        check("%=a", QueryError::Malformed);
        check("role=%FF", QueryError::NotUtf8);
        check("role=a&role=b", QueryError::Repeated("role".into()));
        // A repeat spelled differently is still a repeat once decoded.
        check("role=a&r%6Fle=b", QueryError::Repeated("role".into()));
        check("role=a&role", QueryError::Repeated("role".into()));
        check(
            "limit=5&roles=x&limit=6",
            QueryError::Repeated("limit".into()),
        );
        check(
            "limit=5&roles=x",
            QueryError::Unknown {
                keys: vec!["limit".into(), "roles".into()],
                known: KNOWN,
            },
        );
        check(
            "Role=a",
            QueryError::Unknown {
                keys: vec!["Role".into()],
                known: KNOWN,
            },
        );
    }

    #[test]
    fn messages_clip_keys_and_never_quote_values() {
        let long = "k".repeat(5000);
        let e = Params::parse(&format!("{long}=1"), KNOWN).unwrap_err();
        assert!(e.message().len() < 200, "{}", e.message());
        assert_eq!(e.code(), "unknown_parameter");
        let e = Params::parse("role=s3cret&role=s3cret", KNOWN).unwrap_err();
        assert!(!e.message().contains("s3cret"));
        assert_eq!(e.code(), "invalid_query");
        let e = Params::parse("x=1", &[]).unwrap_err();
        assert!(e.message().contains("takes no query parameters"), "{e}");
    }

    #[test]
    fn typed_values() {
        let p = Params::parse("watch=true&ready=false&role=x", KNOWN).unwrap();
        assert_eq!(p.bool("watch"), Ok(Some(true)));
        assert_eq!(p.bool("ready"), Ok(Some(false)));
        for word in ["0", "1", "yes", "TRUE", ""] {
            let p = Params::parse(&format!("ready={word}"), KNOWN).unwrap();
            assert!(p.bool("ready").is_err(), "{word}");
        }
        assert_eq!(p.bool("absent"), Ok(None));
        assert!(p.bool("role").is_err());
        let p = Params::parse("watch=30", KNOWN).unwrap();
        assert_eq!(p.number("watch", 60), Ok(Some(30)));
        assert!(p.number("watch", 10).is_err());
        for bad in [
            "watch=-1",
            "watch=+1",
            "watch=1e3",
            "watch=",
            "watch=99999999999999999999",
        ] {
            let p = Params::parse(bad, KNOWN).unwrap();
            assert!(p.number("watch", u64::MAX).is_err(), "{bad}");
        }
    }

    #[test]
    fn form_keeps_unknown_keys_but_refuses_repeats() {
        let p = Params::parse_form("grant_type=password&extra=1").unwrap();
        assert_eq!(p.get("extra"), Some("1"));
        assert_eq!(
            Params::parse_form("a=1&a=1").unwrap_err(),
            QueryError::Repeated("a".into())
        );
    }
}
