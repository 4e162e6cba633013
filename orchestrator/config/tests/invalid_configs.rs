//! Every file under `tests/data/invalid/` is a broken config whose trailing
//! `# expect: LINE:COL: error: MESSAGE` lines list, in order, every
//! diagnostic loading it must produce, and nothing else.

use std::path::Path;

use orch_config::{LoadOptions, load_str};

#[test]
fn every_broken_config_reports_exactly_its_expected_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} broken configs", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .map(|l| format!("{name}:{l}"))
            .collect();
        assert!(!expected.is_empty(), "{name} has no `# expect:` line");
        let got: Vec<String> = match load_str(&name, &text, &LoadOptions::default()) {
            Ok(_) => vec!["<loaded without error>".to_string()],
            Err(e) => e.diagnostics().iter().map(|d| d.headline()).collect(),
        };
        if got != expected {
            failures.push(format!(
                "{name}\n  expected:\n    {}\n  got:\n    {}",
                expected.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn diagnostics_carry_a_fix() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid/03-unknown-health-key.yaml"),
    )
    .unwrap();
    let err = load_str("c.yaml", &text, &LoadOptions::default()).unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(d.help.as_deref(), Some("did you mean `retries`?"));
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid/04-unknown-dependency.yaml"),
    )
    .unwrap();
    let err = load_str("c.yaml", &text, &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.diagnostics()[0].help.as_deref(),
        Some("did you mean `ServiceRegistry`?")
    );
    let rendered = orch_config::diag::render(err.diagnostics(), &text, false);
    assert!(
        rendered.contains(
            "9 |         depends_on: [ServiceRegistri]\n  |                      ^^^^^^^^^^^^^^^"
        ),
        "{rendered}"
    );
}
