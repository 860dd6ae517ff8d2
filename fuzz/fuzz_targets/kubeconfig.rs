//! The kubeconfig parser on any text: no panic (files it names are never read here).
#![no_main]

use joinery::parse_kubeconfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_kubeconfig(text);
    }
});
