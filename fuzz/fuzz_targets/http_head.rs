//! Request-head parsing: any bytes give a head, "need more", or a rejection; never a
//! panic. A head, when found, never claims more bytes than it was given.
#![no_main]

use joinery::parse_head;
use joinery::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    // As the server calls it: never with more than max_head bytes.
    let buf = &data[..data.len().min(limits.max_head)];
    if let Ok(Some((_, n))) = parse_head(buf, &limits) {
        assert!(n <= buf.len());
    }
});
