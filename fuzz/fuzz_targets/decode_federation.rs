//! Any frames given to the federation decoder: it must answer with a
//! message or a refusal of a known kind, never panic or hang; whatever
//! decodes must encode and decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orch_federation::wire::{decode, encode};

fuzz_target!(|data: &[u8]| {
    // Each frame is a length byte and that many bytes (fewer at the end),
    // so the fuzzer controls both the frame count and every byte.
    let mut frames: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        frames.push(&tail[..n]);
        rest = &tail[n..];
    }
    if let Ok(envelope) = decode(&frames) {
        let again = encode(&envelope).expect("a decoded message encodes");
        assert_eq!(decode(&again).as_ref(), Ok(&envelope));
    }
});
