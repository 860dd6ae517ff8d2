//! The secret that signs and checks session tokens: 32 bytes that are never printed.
//!
//! A key file may hold the 32 bytes themselves (as a Kubernetes Secret mounts them) or
//! base64 text of them (as `openssl rand -base64 32` writes). Errors name the file and
//! the expected format but never show what the file holds.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// The key length: HMAC-SHA256 gains nothing from more, and less would weaken it.
pub const KEY_LEN: usize = 32;

/// More than this is no key file; reading stops there, so a wrong path to a huge file
/// costs nothing.
const MAX_FILE_BYTES: u64 = 4096;

/// A 32-byte HS256 signing key. `Debug` prints `SigningKey(redacted)`.
#[derive(Clone)]
pub struct SigningKey([u8; KEY_LEN]);

/// Why a signing key could not be made or loaded. Messages never include key material.
#[derive(Debug)]
pub enum KeyError {
    /// [`SigningKey::from_bytes`] was given this many bytes instead of 32.
    Length(usize),
    /// The key file could not be read.
    Read {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The key file holds neither 32 raw bytes nor base64 text of 32 bytes.
    Format {
        /// The file named in the configuration.
        path: PathBuf,
    },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Length(len) => {
                write!(f, "signing key: must be exactly {KEY_LEN} bytes, got {len}")
            }
            KeyError::Read { path, source } => {
                write!(
                    f,
                    "signing key file {}: could not read it: {source}",
                    path.display()
                )
            }
            KeyError::Format { path } => write!(
                f,
                "signing key file {}: expected exactly {KEY_LEN} raw bytes, or base64 text of \
                 {KEY_LEN} bytes (for example from `openssl rand -base64 32`)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { source, .. } => Some(source),
            KeyError::Length(_) | KeyError::Format { .. } => None,
        }
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<SigningKey, crate::random::Unavailable> {
        Ok(SigningKey(crate::random::bytes()?))
    }

    /// The key made of exactly these 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SigningKey, KeyError> {
        let bytes: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(SigningKey(bytes))
    }

    /// Load a key file holding either exactly 32 raw bytes, or base64 text (standard or
    /// URL-safe alphabet, padded or not, surrounding whitespace ignored) of 32 bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SigningKey, KeyError> {
        let path = path.as_ref();
        let read_error = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let mut contents = Vec::new();
        std::fs::File::open(path)
            .map_err(read_error)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut contents)
            .map_err(read_error)?;

        // Raw first: 32 bytes can never be base64 of 32 bytes (that takes 43 characters).
        if let Ok(key) = SigningKey::from_bytes(&contents) {
            return Ok(key);
        }
        let text = std::str::from_utf8(&contents).unwrap_or("").trim();
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .and_then(|decoded| SigningKey::from_bytes(&decoded).ok())
            .ok_or_else(|| KeyError::Format {
                path: path.to_owned(),
            })
    }

    /// The key bytes, for signing and verifying.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the temp dir, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("joinery-key-test-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// 32 bytes whose base64 forms differ between alphabets and need padding.
    const BYTES: [u8; 32] = [
        0xfb, 0xff, 0xbf, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
        0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
        0x1b, 0xfe,
    ];

    fn check(name: &str, contents: &[u8], expected: Option<[u8; 32]>) {
        let file = TempFile::new(name, contents);
        match (SigningKey::from_file(&file.0), expected) {
            (Ok(key), Some(bytes)) => assert_eq!(key.as_bytes(), &bytes, "{name}"),
            (Err(KeyError::Format { path }), None) => assert_eq!(path, file.0, "{name}"),
            (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn from_file_table() {
        let std_padded = STANDARD.encode(BYTES);
        assert!(std_padded.contains('+') && std_padded.contains('/') && std_padded.ends_with('='));
        check("raw", &BYTES, Some(BYTES));
        check("std", std_padded.as_bytes(), Some(BYTES));
        check(
            "std-newline",
            format!("{std_padded}\n").as_bytes(),
            Some(BYTES),
        );
        check(
            "std-spaces",
            format!("  {std_padded} \r\n").as_bytes(),
            Some(BYTES),
        );
        check(
            "std-nopad",
            STANDARD_NO_PAD.encode(BYTES).as_bytes(),
            Some(BYTES),
        );
        check("url", URL_SAFE.encode(BYTES).as_bytes(), Some(BYTES));
        check(
            "url-nopad",
            URL_SAFE_NO_PAD.encode(BYTES).as_bytes(),
            Some(BYTES),
        );
        // 32 printable bytes are taken as the key itself.
        check(
            "raw-text",
            b"0123456789abcdef0123456789abcdef",
            Some(*b"0123456789abcdef0123456789abcdef"),
        );

        check("empty", b"", None);
        check("raw-31", &BYTES[..31], None);
        check("raw-33", &[BYTES.as_slice(), b"\n"].concat(), None);
        check("b64-of-31", STANDARD.encode(&BYTES[..31]).as_bytes(), None);
        check("b64-of-33", STANDARD.encode([0u8; 33]).as_bytes(), None);
        check("hex", hex(&BYTES).as_bytes(), None);
        check("not-utf8", &[0xff; 44], None);
        check("huge", &vec![b'A'; 1 << 20], None);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn errors_name_the_file_and_format_but_not_the_content() {
        let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LWlzLXRvby1sb25nLWZvci0zMg==";
        let file = TempFile::new("bad", secret.as_bytes());
        let message = SigningKey::from_file(&file.0).unwrap_err().to_string();
        assert!(message.contains(&file.0.display().to_string()), "{message}");
        assert!(message.contains("32 raw bytes"), "{message}");
        assert!(message.contains("base64"), "{message}");
        assert!(!message.contains(secret), "{message}");

        let missing = std::env::temp_dir().join("joinery-key-test-does-not-exist");
        let err = SigningKey::from_file(&missing).unwrap_err();
        assert!(
            matches!(&err, KeyError::Read { path, .. } if *path == missing),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("joinery-key-test-does-not-exist"),
            "{err}"
        );
    }

    #[test]
    fn from_bytes_wants_exactly_32() {
        assert_eq!(SigningKey::from_bytes(&BYTES).unwrap().as_bytes(), &BYTES);
        for len in [0, 16, 31, 33, 64] {
            let err = SigningKey::from_bytes(&vec![7; len]).unwrap_err();
            assert!(matches!(err, KeyError::Length(n) if n == len), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("signing key: must be exactly 32 bytes, got {len}")
            );
        }
    }

    #[test]
    fn generated_keys_differ_and_debug_is_redacted() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let key = SigningKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
        let debug = format!("{key:?} {:?}", Some(key.clone()));
        assert_eq!(debug, "SigningKey(redacted) Some(SigningKey(redacted))");
    }
}
