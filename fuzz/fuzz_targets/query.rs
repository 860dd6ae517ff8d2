//! The shared query-string and form parser (`joinery::Params`): any bytes give a
//! parse or a refusal, never a panic, and a refusal's message stays bounded whatever
//! the input (it quotes at most five clipped keys, never values).
#![no_main]

use joinery::{Params, QUERY_CLIP as CLIP};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Params::parse(&text, &["role", "ready", "watch"]) {
        Ok(p) => {
            let _ = p.bool("ready");
            let _ = p.number("watch", 3600);
        }
        // At most five keys of CLIP characters, each at worst a 10-byte escape such as
        // `\u{10ffff}`, plus the fixed text: bounded whatever the input's length.
        Err(e) => assert!(
            e.message().len() <= 5 * (CLIP * 10 + 4) + 200,
            "{} bytes",
            e.message().len()
        ),
    }
    let _ = Params::parse_form(&text);
});
