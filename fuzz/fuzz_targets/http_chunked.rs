//! Chunked body decoding, fed in pieces split where the input says: never a panic,
//! never more output than the body cap, and never more input consumed than given.
#![no_main]

use joinery::ChunkedDecoder;
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split).max(1);
    let mut dec = ChunkedDecoder::new(MAX_BODY);
    let mut out = Vec::new();
    for piece in rest.chunks(step) {
        match dec.feed(piece, &mut out) {
            Ok(n) => assert!(n <= piece.len()),
            Err(_) => break,
        }
        assert!(out.len() <= MAX_BODY);
        if dec.is_done() {
            break;
        }
    }
});
