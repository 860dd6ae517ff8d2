//! The Embedded Cluster config and license parsers on any text: no panic, and whatever
//! they accept passes their own grammar (role names and the app slug are shell-safe).
#![no_main]

use joinery::{parse_license, parse_roles};
use libfuzzer_sys::fuzz_target;

fn shell_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(roles) = parse_roles(text) {
        for name in roles.names() {
            assert!(shell_safe(name), "{name:?}");
        }
    }
    if let Ok(license) = parse_license(text) {
        assert!(shell_safe(&license.app_slug), "{:?}", license.app_slug);
    }
});
