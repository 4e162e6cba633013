//! Secrets in a config: files on this machine are checked (exist, owner
//! only), agents get the file of each name, and nothing but paths is kept.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use orch_config::{LoadOptions, load_file, load_str};
use orch_core::model::SecretMount;

fn config(secret_path: &str) -> String {
    format!(
        "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img}}\nsecrets:\n  HF_TOKEN: {secret_path}\ngroups:\n  g:\n    agents:\n      A: {{secrets: [HF_TOKEN]}}\n      B: {{}}\n"
    )
}

#[test]
fn an_owner_only_file_is_given_to_the_agents_that_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hf_token");
    std::fs::write(&secret, "hf_live_value").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.path().join("startup_config.yaml");
    std::fs::write(&path, config(secret.to_str().unwrap())).unwrap();
    let loaded = load_file(&path, &LoadOptions::default()).unwrap();
    let a = loaded.config.agent("A").unwrap();
    assert_eq!(
        a.secrets,
        [SecretMount {
            name: "HF_TOKEN".into(),
            source: secret.to_str().unwrap().into(),
        }]
    );
    assert!(loaded.config.agent("B").unwrap().secrets.is_empty());
    // Written back as names and paths, and read again the same.
    let yaml = orch_config::convert::to_v1_yaml(&loaded.config);
    assert!(!yaml.contains("hf_live_value"));
    let again = load_str("again.yaml", &yaml, &LoadOptions::default()).unwrap();
    assert_eq!(again.config.agent("A").unwrap().secrets, a.secrets);
    assert_eq!(again.config.secrets, loaded.config.secrets);
}

#[test]
fn a_file_others_can_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hf_token");
    std::fs::write(&secret, "v").unwrap();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = load_str(
            "c.yaml",
            &config(secret.to_str().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap_err();
        let d = err.diagnostics();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].message.contains("secret `HF_TOKEN`"),
            "{}",
            d[0].message
        );
        assert!(d[0].message.contains(secret.to_str().unwrap()));
        assert!(
            d[0].message.contains(&format!("mode {mode:03o}")),
            "{}",
            d[0].message
        );
        assert_eq!((d[0].line, d[0].code), (5, "secret-mode"));
    }
}

#[test]
fn a_directory_is_not_a_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_str(
        "c.yaml",
        &config(dir.path().to_str().unwrap()),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(
        err.diagnostics()[0]
            .message
            .contains("is not a regular file")
    );
}

#[test]
fn files_are_not_checked_for_a_config_meant_for_another_machine() {
    let opts = LoadOptions {
        check_files: false,
        ..LoadOptions::default()
    };
    let loaded = load_str("c.yaml", &config("/nonexistent/hf_token"), &opts).unwrap();
    assert_eq!(loaded.config.agent("A").unwrap().secrets.len(), 1);
}
