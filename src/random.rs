//! Randomness from the operating system, in one place.
//!
//! Every random value joinery makes comes from here: signing keys, token ids, API and
//! refresh tokens, bootstrap tokens, join ids, bcrypt salts, the Lease identity,
//! temporary file names and watch back-off jitter. The source is the kernel's
//! (`getrandom(2)`, through the `getrandom` crate); nothing is seeded or buffered here.
//! The TLS libraries draw their own (rustls handshakes, rcgen's key pair, both on ring).
//!
//! Policy: a failure is never papered over with a zero, a clock or a default. Every
//! function returns [`Unavailable`]; at start-up the daemon stops with its message
//! (`daemon.rs`), at request time the API answers 500 `internal_error` and logs it
//! (`From<Unavailable> for ApiError` in `api/error.rs`). The one caller that may go on
//! without it is back-off jitter, which only spreads reconnects (`kube/watch.rs`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The operating system gave no random bytes (on Linux: no `getrandom(2)` and no
/// readable `/dev/urandom`). Nothing that needs randomness can be done safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no randomness from the OS: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

impl Unavailable {
    /// The error a broken source gives, for tests of what callers do with it.
    #[cfg(test)]
    pub(crate) fn for_test() -> Unavailable {
        Unavailable("ENOSYS".into())
    }
}

/// Where random bytes come from: the OS in the daemon, a failing stand-in in tests of
/// the policy.
type Fill<'a> = &'a mut dyn FnMut(&mut [u8]) -> Result<(), Unavailable>;

fn os(buf: &mut [u8]) -> Result<(), Unavailable> {
    getrandom::fill(buf).map_err(|e| Unavailable(e.to_string()))
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], Unavailable> {
    let mut b = [0u8; N];
    os(&mut b)?;
    Ok(b)
}

/// `n` random bytes as `2n` lowercase hex digits (valid in Kubernetes names).
pub fn hex(n: usize) -> Result<String, Unavailable> {
    hex_with(&mut os, n)
}

/// `n` random bytes as unpadded base64url.
pub fn base64url(n: usize) -> Result<String, Unavailable> {
    let mut b = vec![0u8; n];
    os(&mut b)?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// `n` characters drawn uniformly from `alphabet` (ASCII, at most 256 symbols).
pub fn chars(alphabet: &[u8], n: usize) -> Result<String, Unavailable> {
    chars_with(&mut os, alphabet, n)
}

/// A random whole number below `max` (0 when `max` is 0).
pub fn below(max: u64) -> Result<u64, Unavailable> {
    if max == 0 {
        return Ok(0);
    }
    // Modulo bias is at most max / 2^64: nothing for the small ranges asked for here.
    Ok(u64::from_le_bytes(bytes()?) % max)
}

fn hex_with(fill: Fill, n: usize) -> Result<String, Unavailable> {
    let mut b = vec![0u8; n];
    fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn chars_with(fill: Fill, alphabet: &[u8], n: usize) -> Result<String, Unavailable> {
    assert!(
        !alphabet.is_empty() && alphabet.len() <= 256 && alphabet.is_ascii(),
        "an alphabet of 1 to 256 ASCII symbols"
    );
    // Rejection sampling: only bytes below the largest multiple of the alphabet's size
    // are used, so every symbol is equally likely.
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    let mut pool = [0u8; 64];
    while out.len() < n {
        fill(&mut pool)?;
        for &b in pool.iter().filter(|&&b| usize::from(b) < limit) {
            if out.len() == n {
                break;
            }
            out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken(_: &mut [u8]) -> Result<(), Unavailable> {
        Err(Unavailable::for_test())
    }

    fn all_in(s: &str, alphabet: &[u8]) -> bool {
        s.bytes().all(|b| alphabet.contains(&b))
    }

    #[test]
    fn shapes() {
        let h = hex(16).unwrap();
        assert_eq!(h.len(), 32);
        assert!(all_in(&h, b"0123456789abcdef"));
        assert_eq!(base64url(16).unwrap().len(), 22);
        assert_eq!(base64url(32).unwrap().len(), 43);
        let c = chars(b"abc", 500).unwrap();
        assert_eq!(c.len(), 500);
        assert!(all_in(&c, b"abc"));
        // 500 draws from three symbols use all three.
        assert!(c.contains('a') && c.contains('b') && c.contains('c'));
        assert!((0..100).all(|_| below(7).unwrap() < 7));
        assert_eq!(below(0), Ok(0));
    }

    #[test]
    fn draws_differ() {
        assert_ne!(hex(16).unwrap(), hex(16).unwrap());
        assert_ne!(bytes::<16>().unwrap(), bytes::<16>().unwrap());
        assert_ne!(base64url(16).unwrap(), base64url(16).unwrap());
    }

    #[test]
    fn rejection_sampling_is_uniform_over_the_alphabet() {
        // A source that walks through every byte value: each of the 36 symbols must
        // come out exactly 7 times per 256 bytes (252 used, 4 rejected).
        let mut next = 0u8;
        let mut counting = |buf: &mut [u8]| {
            for b in buf {
                *b = next;
                next = next.wrapping_add(1);
            }
            Ok(())
        };
        let s = chars_with(&mut counting, b"abcdefghijklmnopqrstuvwxyz0123456789", 252).unwrap();
        for sym in "abcdefghijklmnopqrstuvwxyz0123456789".chars() {
            assert_eq!(s.chars().filter(|&c| c == sym).count(), 7, "{sym}");
        }
    }

    #[test]
    fn a_failing_source_is_an_error_never_a_zero_value() {
        assert_eq!(
            hex_with(&mut broken, 8).unwrap_err().to_string(),
            "no randomness from the OS: ENOSYS"
        );
        assert!(chars_with(&mut broken, b"ab", 4).is_err());
    }
}
