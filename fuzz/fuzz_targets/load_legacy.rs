//! The legacy reader, fed legacy documents of every shape built from the
//! fuzzer's bytes: each must import exactly the agents the legacy
//! launcher's rule finds in it, or be refused for a real fault of its own
//! (an agent read twice among them), and whatever loads must survive
//! conversion to version 1. Raw bytes rarely get past YAML into the
//! legacy reader; these documents always do.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The generator and the checks are shared with the property test.
#[path = "../../orchestrator/config/tests/legacy_gen/mod.rs"]
mod legacy_gen;

fuzz_target!(|data: &[u8]| {
    legacy_gen::check(data);
});
