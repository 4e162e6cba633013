//! Secrets in the Compose and Kubernetes exports: a reference to the
//! secret, mounted where the supervisor mounts it, and never its value.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use orch_config::export::compose::{self, ComposeOptions};
use orch_config::export::k8s::{self, K8sOptions};
use orch_config::{LoadOptions, load_file};
use orch_core::model::HostConfig;
use serde::Deserialize;
use serde_yaml::Value;

const VALUE: &str = "sk-export-never-0d6f1c";

/// A host whose `A` uses a real owner-only secret file holding [`VALUE`].
fn host(dir: &std::path::Path) -> (HostConfig, String) {
    let secret = dir.join("api_key");
    std::fs::write(&secret, VALUE).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let path = dir.join("startup_config.yaml");
    let secret = secret.to_str().unwrap().to_string();
    std::fs::write(
        &path,
        format!(
            "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img}}\nsecrets: {{API_KEY: {secret}}}\ngroups:\n  g:\n    agents:\n      A: {{secrets: [API_KEY]}}\n      B: {{}}\n"
        ),
    )
    .unwrap();
    (
        load_file(&path, &LoadOptions::default()).unwrap().config,
        secret,
    )
}

#[test]
fn compose_declares_the_secret_file_and_gives_it_to_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let (config, secret) = host(dir.path());
    let text = compose::render(&config, &ComposeOptions::default()).unwrap();
    assert!(!text.contains(VALUE));
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["secrets"]["API_KEY"]["file"], Value::from(secret));
    let a = &doc["services"]["a"];
    assert_eq!(a["secrets"], Value::from(vec!["API_KEY"]));
    assert_eq!(
        a["environment"]["API_KEY_FILE"],
        Value::from("/run/secrets/API_KEY")
    );
    let b = &doc["services"]["b"];
    assert!(b.get("secrets").is_none());
    assert!(b["environment"].get("API_KEY_FILE").is_none());
}

#[test]
fn k8s_mounts_a_secret_reference_read_only_at_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let (config, secret) = host(dir.path());
    let text = k8s::render(&config, &K8sOptions::default()).unwrap();
    assert!(!text.contains(VALUE));
    assert!(
        !text.contains(&secret),
        "the host path means nothing on a cluster"
    );
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let a = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "a")
        .unwrap();
    let pod = &a["spec"]["template"]["spec"];
    let vol = &pod["volumes"][0];
    assert_eq!(vol["secret"]["secretName"], Value::from("api-key"));
    assert_eq!(vol["secret"]["items"][0]["key"], Value::from("API_KEY"));
    assert_eq!(vol["secret"]["defaultMode"], Value::from(0o400));
    let mount = &pod["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["name"], vol["name"]);
    assert_eq!(mount["mountPath"], Value::from("/run/secrets/API_KEY"));
    assert_eq!(mount["subPath"], Value::from("API_KEY"));
    assert_eq!(mount["readOnly"], Value::from(true));
    let env = pod["containers"][0]["env"].as_sequence().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "API_KEY_FILE" && e["value"] == "/run/secrets/API_KEY")
    );
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "no Secret with a value is written"
    );
}
