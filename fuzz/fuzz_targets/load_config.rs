//! Any bytes given to the config loader: it must answer with a config or
//! with located diagnostics, never panic, hang or blow the stack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match orch_config::load_str("fuzz.yaml", text, &orch_config::LoadOptions::default()) {
            Ok(loaded) => {
                // Whatever loads must also survive being written and read back.
                let again = orch_config::convert::to_v1_yaml(&loaded.config);
                let reread = orch_config::load_str("again.yaml", &again, &orch_config::LoadOptions::default());
                assert!(reread.is_ok(), "a loaded config did not survive conversion");
            }
            Err(e) => assert!(!e.diagnostics().is_empty() || !matches!(e, orch_config::ConfigError::Invalid { .. })),
        }
    }
});
