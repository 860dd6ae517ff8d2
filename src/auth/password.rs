//! The installer password, stored only as a bcrypt hash.
//!
//! Embedded Cluster (Go's `x/crypto/bcrypt`) writes `$2a$` hashes; the Rust `bcrypt`
//! crate writes `$2b$`. For passwords shorter than 255 bytes the two compute the same
//! thing, so both verify here, as does `$2y$` (PHP's name for the same fix).
//!
//! bcrypt only reads the first 72 bytes of a password: two passwords that share those
//! 72 bytes verify the same. This matches every other bcrypt implementation, which is
//! what keeps hashes written by Embedded Cluster usable.

use base64::Engine;

/// The work factor of hashes we write; also what Go's `bcrypt.DefaultCost` uses.
pub const BCRYPT_COST: u32 = 10;

/// bcrypt's own limits on the cost; a hash outside them cannot be checked.
const COST_RANGE: std::ops::RangeInclusive<u32> = 4..=31;

/// Why a password could not be hashed or a hash file was refused. Messages never quote
/// the password or the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordError {
    /// Hashing failed because the operating system gave no random salt.
    Hash,
    /// The hash file holds nothing but whitespace.
    Empty,
    /// The hash file's content is not a bcrypt hash.
    NotBcrypt,
    /// The hash's cost is outside bcrypt's range of 4 to 31.
    Cost(u32),
}

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordError::Hash => {
                f.write_str("password: could not hash: the OS random number generator failed")
            }
            PasswordError::Empty => f.write_str(
                "password hash: the file is empty; expected a bcrypt hash such as `$2a$10$` followed by 53 characters",
            ),
            PasswordError::NotBcrypt => f.write_str(
                "password hash: not a bcrypt hash; expected `$2a$`, `$2b$` or `$2y$`, a two-digit cost, `$` and 53 characters of bcrypt base64",
            ),
            PasswordError::Cost(cost) => {
                write!(f, "password hash: cost {cost} is outside bcrypt's range of 4 to 31")
            }
        }
    }
}

impl std::error::Error for PasswordError {}

/// Hash `password` with bcrypt at [`BCRYPT_COST`], as a `$2b$10$...` string.
/// Only the first 72 bytes of `password` count.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    // The salt from `random`, like every other random value joinery makes.
    let salt = crate::random::bytes::<16>().map_err(|_| PasswordError::Hash)?;
    bcrypt::hash_with_salt(password, BCRYPT_COST, salt)
        .map(|parts| parts.format_for_version(bcrypt::Version::TwoB))
        .map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches `bcrypt_hash` (`$2a$`, `$2b$` or `$2y$`). A malformed hash
/// gives `false`, never a panic. Only the first 72 bytes of `password` count. The time
/// taken grows with the hash's cost, so pass hashes checked by [`parse_hash_file`].
pub fn verify_password(password: &str, bcrypt_hash: &str) -> bool {
    // Our own check first: the crate alone would accept oddities such as a trailing `$`.
    // The crate compares the final digests in constant time.
    check_hash(bcrypt_hash).is_ok() && bcrypt::verify(password, bcrypt_hash).unwrap_or(false)
}

/// The bcrypt hash in a password-hash file: the content with surrounding whitespace
/// trimmed, checked to be a hash [`verify_password`] can use.
pub fn parse_hash_file(contents: &str) -> Result<String, PasswordError> {
    let hash = contents.trim();
    if hash.is_empty() {
        return Err(PasswordError::Empty);
    }
    check_hash(hash)?;
    Ok(hash.to_owned())
}

/// Whether `hash` is exactly a bcrypt hash the crate can check, with nothing around it.
fn check_hash(hash: &str) -> Result<(), PasswordError> {
    // `$2a$10$` + 22 characters of salt + 31 of digest: 60 ASCII bytes in all.
    let (prefix, rest) = hash.split_at_checked(4).ok_or(PasswordError::NotBcrypt)?;
    if !matches!(prefix, "$2a$" | "$2b$" | "$2y$") {
        return Err(PasswordError::NotBcrypt);
    }
    let (cost, rest) = rest.split_at_checked(2).ok_or(PasswordError::NotBcrypt)?;
    if !cost.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PasswordError::NotBcrypt);
    }
    let Some(encoded) = rest.strip_prefix('$') else {
        return Err(PasswordError::NotBcrypt);
    };
    if encoded.len() != 53 || !encoded.is_char_boundary(22) {
        return Err(PasswordError::NotBcrypt);
    }
    // The same decoder the crate uses when verifying, so a hash accepted here (16 bytes
    // of salt, 23 of digest, canonical encoding) is one it can check.
    let (salt, digest) = encoded.split_at(22);
    let salt_ok = matches!(bcrypt::BASE_64.decode(salt), Ok(s) if s.len() == 16);
    let digest_ok = matches!(bcrypt::BASE_64.decode(digest), Ok(d) if d.len() == 23);
    if !salt_ok || !digest_ok {
        return Err(PasswordError::NotBcrypt);
    }
    let cost: u32 = cost.parse().map_err(|_| PasswordError::NotBcrypt)?;
    if !COST_RANGE.contains(&cost) {
        return Err(PasswordError::Cost(cost));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From the test suite of Go's `x/crypto/bcrypt` (TestBcryptingIsCorrect), the library
    /// Embedded Cluster hashes with; also checked with Python's `bcrypt.checkpw`.
    const GO_HASH: &str = "$2a$10$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga";
    const GO_PASSWORD: &str = "allmine";

    #[test]
    fn hash_then_verify_round_trips() {
        let hash = hash_password("correct horse battery staple").unwrap();
        assert!(hash.starts_with("$2b$10$"), "{hash}");
        assert_eq!(parse_hash_file(&hash), Ok(hash.clone()));
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("correct horse battery stapler", &hash));
        assert!(!verify_password("", &hash));
        // A fresh salt each time.
        assert_ne!(hash, hash_password("correct horse battery staple").unwrap());
    }

    #[test]
    fn go_written_2a_hash_verifies() {
        assert!(verify_password(GO_PASSWORD, GO_HASH));
        assert!(!verify_password("allmine2", GO_HASH));
        assert!(!verify_password("Allmine", GO_HASH));
        // The version letter does not change the computation.
        for version in ["$2b$", "$2y$"] {
            let relabelled = format!("{version}{}", &GO_HASH[4..]);
            assert!(verify_password(GO_PASSWORD, &relabelled), "{version}");
        }
    }

    #[test]
    fn only_the_first_72_bytes_count() {
        let long = "p".repeat(72);
        let hash = hash_password(&long).unwrap();
        assert!(verify_password(&format!("{long}anything"), &hash));
        assert!(!verify_password(&long[..71], &hash));
    }

    #[test]
    fn malformed_hashes_give_false() {
        for hash in [
            "",
            "$2a$",
            "$2a$10$",
            "$2a$10$short",
            "not a hash at all",
            "$2a$99$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga",
            "$2a$03$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga",
            "$2a$1x$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga",
            "$1$10$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga",
            "$2a$10$XajjQvNhvvRt5GSeFk1xF!yqRrsxkhBkUiQeg0dt.wU1qD4aFDcga",
            "$2a$10$XajjQvNhvvRt5GSeFk1xFéyqRrsxkhBkUiQeg0dt.wU1qD4aFDcg",
            "$2a$10$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga$",
            "$$2a$$10$$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga",
            " $2a$10$XajjQvNhvvRt5GSeFk1xFeyqRrsxkhBkUiQeg0dt.wU1qD4aFDcga",
        ] {
            assert!(!verify_password(GO_PASSWORD, hash), "{hash:?}");
        }
    }

    fn check(contents: &str, expected: Result<&str, PasswordError>) {
        assert_eq!(
            parse_hash_file(contents),
            expected.map(str::to_owned),
            "{contents:?}"
        );
    }

    #[test]
    fn parse_hash_file_table() {
        let relabel = |v: &str| format!("{v}{}", &GO_HASH[4..]);
        check(GO_HASH, Ok(GO_HASH));
        check(&format!("  {GO_HASH}\n"), Ok(GO_HASH));
        check(&format!("{GO_HASH}\r\n"), Ok(GO_HASH));
        check(&relabel("$2b$"), Ok(&relabel("$2b$")));
        check(&relabel("$2y$"), Ok(&relabel("$2y$")));
        check("", Err(PasswordError::Empty));
        check(" \n\t", Err(PasswordError::Empty));
        // The plain password by mistake, or another scheme.
        check("allmine", Err(PasswordError::NotBcrypt));
        check(&relabel("$2x$"), Err(PasswordError::NotBcrypt));
        check(&relabel("$1$a"), Err(PasswordError::NotBcrypt));
        check(
            &GO_HASH.replace("$10$", "$1$"),
            Err(PasswordError::NotBcrypt),
        );
        check(
            &GO_HASH.replace("$10$", "$ab$"),
            Err(PasswordError::NotBcrypt),
        );
        check(
            &GO_HASH.replace("$10$", "$10x"),
            Err(PasswordError::NotBcrypt),
        );
        check(&GO_HASH[..59], Err(PasswordError::NotBcrypt));
        check(&format!("{GO_HASH}a"), Err(PasswordError::NotBcrypt));
        check(
            &format!("{GO_HASH} {GO_HASH}"),
            Err(PasswordError::NotBcrypt),
        );
        check(&GO_HASH.replace('.', "+"), Err(PasswordError::NotBcrypt));
        check(&GO_HASH.replace("Fe", "Fé"), Err(PasswordError::NotBcrypt));
        // The salt's last character carries 4 spare bits that must be zero ("e" → "f").
        check(
            &GO_HASH.replace("xFey", "xFfy"),
            Err(PasswordError::NotBcrypt),
        );
        assert!(!verify_password(
            GO_PASSWORD,
            &GO_HASH.replace("xFey", "xFfy")
        ));
        check(
            &GO_HASH.replace("$10$", "$03$"),
            Err(PasswordError::Cost(3)),
        );
        check(
            &GO_HASH.replace("$10$", "$32$"),
            Err(PasswordError::Cost(32)),
        );
    }

    #[test]
    fn errors_never_quote_the_file() {
        let secret = "hunter2-the-password-itself";
        let message = parse_hash_file(secret).unwrap_err().to_string();
        assert!(!message.contains(secret), "{message}");
        assert!(message.contains("bcrypt"), "{message}");
    }
}
