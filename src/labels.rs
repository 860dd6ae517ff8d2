//! Kubernetes label syntax, checked before anything is written to a node.
//!
//! A key is an optional DNS-subdomain prefix and `/`, then a name of at most 63
//! characters; a value is empty or a name. The same grammar bounds Embedded Cluster role
//! names, which become label values and appear in shell commands: letters, digits, `-`,
//! `_` and `.` are all safe there.

/// Why a label key or value is refused; the text completes "label key X is invalid: ...".
pub type Problem = &'static str;

/// Checks a label name segment (the part after any prefix) or a non-empty value.
pub fn check_name(s: &str) -> Result<(), Problem> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    let ok_inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = s.as_bytes();
    if !bytes.iter().all(|&b| ok_inner(b)) {
        return Err("only letters, digits, '-', '_' and '.' are allowed");
    }
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

/// Checks a DNS subdomain (RFC 1123): the prefix of a label key, a node name.
pub fn check_dns_subdomain(s: &str) -> Result<(), Problem> {
    if s.is_empty() || s.len() > 253 {
        return Err("it must be 1 to 253 characters");
    }
    for part in s.split('.') {
        let b = part.as_bytes();
        let valid = !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !valid {
            return Err("it must be lowercase letters, digits, '-' and '.' (a DNS name)");
        }
    }
    Ok(())
}

/// Checks a label key: `[prefix/]name`.
pub fn check_key(key: &str) -> Result<(), Problem> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            check_dns_subdomain(prefix).map_err(|_| "its prefix before '/' must be a DNS name")?;
            check_name(name)
        }
        None => check_name(key),
    }
}

/// Checks a label value (empty is allowed).
pub fn check_value(value: &str) -> Result<(), Problem> {
    if value.is_empty() {
        Ok(())
    } else {
        check_name(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for (key, ok) in [
            ("app", true),
            ("example.com/app", true),
            ("kots.io/embedded-cluster-role-0", true),
            ("a_b.c-d", true),
            ("", false),
            ("-app", false),
            ("app-", false),
            ("Example.com/app", false),
            ("example.com/", false),
            ("/app", false),
            ("a/b/c", false),
            ("sp ace", false),
            ("x;rm -rf /", false),
        ] {
            assert_eq!(check_key(key).is_ok(), ok, "{key:?}");
        }
        assert!(check_key(&"a".repeat(63)).is_ok());
        assert!(check_key(&"a".repeat(64)).is_err());
    }

    #[test]
    fn values() {
        for (v, ok) in [
            ("", true),
            ("true", true),
            ("total-2", true),
            ("a b", false),
            ("$(x)", false),
        ] {
            assert_eq!(check_value(v).is_ok(), ok, "{v:?}");
        }
    }
}
