//! JWT verification of any text: no panic, and nothing but a token signed with the key
//! is ever accepted (the fuzzer cannot forge HMAC, so any `Ok` is a bug).
#![no_main]

use joinery::jwt_verify;
use libfuzzer_sys::fuzz_target;

const KEY: &[u8; 32] = b"fuzzing-key-fuzzing-key-fuzzing!";

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    for aud in ["joinery", "join-bundle"] {
        if let Ok(claims) = jwt_verify(KEY, token, aud, 1_800_000_000) {
            // Only the seed corpus's genuinely signed tokens may get here.
            assert_eq!(claims.aud, aud);
        }
    }
});
