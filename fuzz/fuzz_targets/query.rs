//! The shared query-string and form parser (`joinery::http::query`): any bytes give a
//! parse or a refusal, never a panic, and a refusal's message stays short whatever the
//! input (it quotes clipped keys, never values).
#![no_main]

use joinery::http::query::Params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Params::parse(&text, &["role", "ready", "watch"]) {
        Ok(p) => {
            let _ = p.bool("ready");
            let _ = p.number("watch", 3600);
        }
        Err(e) => assert!(e.message().len() < 600, "{}", e.message()),
    }
    let _ = Params::parse_form(&text);
});
