//! `keys generate` and `keys rotate`: the files they write and the steps
//! they print.

use std::process::{Command, Output};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs")
}

fn text(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn generate_names_the_shipped_federation_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let shown = text(&ctl(&["keys", "generate", "pc2", "--out", d]));
    assert!(shown.contains("tcp://pc2:7300"), "{shown}");
    assert!(!shown.contains("7100"), "{shown}");
}

#[test]
fn rotate_writes_the_next_pair_and_prints_the_procedure_with_both_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let refused = ctl(&["keys", "rotate", "pc2", "--dir", d]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("keys generate"),
        "{refused:?}"
    );
    text(&ctl(&["keys", "generate", "pc2", "--out", d]));
    let old = std::fs::read_to_string(dir.path().join("pc2.pub")).expect("pub");
    let shown = text(&ctl(&["keys", "rotate", "pc2", "--dir", d]));
    let new = std::fs::read_to_string(dir.path().join("pc2.next.pub")).expect("next pub");
    assert_ne!(old, new);
    assert!(dir.path().join("pc2.next.key").exists());
    let both = format!("public_keys: [\"{}\", \"{}\"]", old.trim(), new.trim());
    assert!(shown.contains(&both), "{shown}");
    assert!(
        shown.contains(&format!("public_key: \"{}\"", new.trim())),
        "{shown}"
    );
    assert!(shown.contains("restart orchestratord"), "{shown}");

    let json = ctl(&["-o", "json", "keys", "rotate", "pc2", "--dir", d]);
    assert!(!json.status.success(), "the next pair exists already");

    std::fs::remove_file(dir.path().join("pc2.next.key")).expect("rm");
    std::fs::remove_file(dir.path().join("pc2.next.pub")).expect("rm");
    let json = ctl(&["-o", "json", "keys", "rotate", "pc2", "--dir", d]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v["current_public_key"], old.trim());
    assert_ne!(v["next_public_key"], old.trim());
}
