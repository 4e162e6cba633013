//! The mapping files as tables (placements in, files out), and the
//! directory on a temporary one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use orch_core::gpu::{ReplicaKey, Slice};
use orch_core::units::{ByteSize, Percent};

use super::dir::{FILE_MAX_BYTES, MANIFEST, MANIFEST_MAX_BYTES, MappingDir, Synced};
use super::*;

fn mps(gpu: u32) -> Slice {
    Slice::Mps {
        gpu_index: gpu,
        gpu_uuid: format!("GPU-{gpu}"),
        memory: ByteSize(4 << 30),
        compute: Percent::whole(25),
    }
}

fn whole(gpu: u32) -> Slice {
    Slice::Exclusive {
        gpu_index: gpu,
        gpu_uuid: format!("GPU-{gpu}"),
    }
}

fn time_slice(gpu: u32) -> Slice {
    Slice::TimeSlice {
        gpu_index: gpu,
        gpu_uuid: format!("GPU-{gpu}"),
    }
}

fn mig(gpu: u32, gi: Option<u32>) -> Slice {
    Slice::Mig {
        gpu_index: gpu,
        gpu_uuid: format!("GPU-{gpu}"),
        profile: "1g.10gb".into(),
        profile_id: 19,
        placement_start: 0,
        gi_id: gi,
        ci_id: gi.map(|_| 0),
        device_uuid: gi.map(|g| format!("MIG-{gpu}-{g}")),
    }
}

/// `(group, agent, replica, slice)` rows to files, as `name: line, line`.
fn files(rows: &[(&str, &str, u32, Slice)]) -> Vec<String> {
    let keys: Vec<ReplicaKey> = rows
        .iter()
        .map(|(_, a, r, _)| ReplicaKey::new(*a, *r))
        .collect();
    let placed: Vec<Placed<'_>> = rows
        .iter()
        .zip(&keys)
        .map(|((g, _, _, s), key)| Placed {
            group: g,
            key,
            slice: s,
        })
        .collect();
    job_files("h", &placed)
        .into_iter()
        .map(|(name, lines)| format!("{name}: {}", lines.join(", ")))
        .collect()
}

#[test]
fn no_replica_no_file() {
    assert!(files(&[]).is_empty());
}

#[test]
fn one_file_per_gpu_with_its_replicas_sorted() {
    assert_eq!(
        files(&[
            ("vision", "Eyes", 0, mps(0)),
            ("llm", "Chat", 0, mps(0)),
            ("llm", "Big", 0, whole(1)),
            ("misc", "Shared", 0, time_slice(3)),
        ]),
        [
            "0: h/llm/Chat, h/vision/Eyes",
            "1: h/llm/Big",
            "3: h/misc/Shared",
        ]
    );
}

#[test]
fn replicas_of_one_agent_on_one_gpu_are_qualified_there_only() {
    assert_eq!(
        files(&[
            ("llm", "Chat", 0, mps(0)),
            ("llm", "Chat", 1, mps(0)),
            ("llm", "Chat", 2, mps(1)),
        ]),
        ["0: h/llm/Chat#0, h/llm/Chat#1", "1: h/llm/Chat"]
    );
}

#[test]
fn agents_of_one_name_in_two_groups_are_not_replicas() {
    assert_eq!(
        files(&[("a", "Worker", 0, mps(0)), ("b", "Worker", 0, mps(0))]),
        ["0: h/a/Worker, h/b/Worker"]
    );
}

#[test]
fn a_mig_replica_is_in_its_instance_file_and_its_gpu_file() {
    assert_eq!(
        files(&[
            ("vision", "Eyes", 0, mig(2, Some(1))),
            ("vision", "Eyes", 1, mig(2, Some(7))),
            ("llm", "Chat", 0, mig(2, Some(13))),
        ]),
        [
            "2: h/llm/Chat, h/vision/Eyes#0, h/vision/Eyes#1",
            "2.1: h/vision/Eyes#0",
            "2.13: h/llm/Chat",
            "2.7: h/vision/Eyes#1",
        ]
    );
}

#[test]
fn a_mig_slice_without_its_instance_yet_is_on_its_gpu_only() {
    assert_eq!(
        files(&[("vision", "Eyes", 0, mig(0, None))]),
        ["0: h/vision/Eyes"]
    );
}

#[test]
fn mapping_names_are_what_dcgm_exporter_reads() {
    for name in ["0", "12", "2.0", "3.10"] {
        assert!(is_mapping_name(name), "{name}");
    }
    for name in [
        "", ".", "0.", ".1", "a", "1.2.3", "-1", "1a", MANIFEST, ".0.tmp-1",
    ] {
        assert!(!is_mapping_name(name), "{name}");
    }
}

// The directory.

fn want(rows: &[(&str, &[&str])]) -> JobFiles {
    rows.iter()
        .map(|(n, lines)| (n.to_string(), lines.iter().map(|l| l.to_string()).collect()))
        .collect()
}

/// Every file of `dir` and its content.
fn listing(dir: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read_to_string(e.path()).unwrap_or_default())
        })
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn files_are_written_whole_and_the_manifest_names_them() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("jobs");
    let mut dir = MappingDir::open(&path).unwrap();
    let done = dir
        .sync(&want(&[("0", &["h/g/A", "h/g/B"]), ("1.2", &["h/g/C"])]))
        .unwrap();
    assert_eq!(done.written, names(&["0", "1.2"]));
    assert_eq!(
        listing(&path),
        BTreeMap::from([
            (MANIFEST.to_string(), "0\n1.2\n".to_string()),
            ("0".to_string(), "h/g/A\nh/g/B\n".to_string()),
            ("1.2".to_string(), "h/g/C\n".to_string()),
        ])
    );
}

#[test]
fn the_same_files_again_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    let files = want(&[("0", &["h/g/A"])]);
    dir.sync(&files).unwrap();
    let before = std::fs::metadata(tmp.path().join("0")).unwrap();
    assert_eq!(dir.sync(&files).unwrap(), Synced::default());
    // Not replaced: the same inode.
    let after = std::fs::metadata(tmp.path().join("0")).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(before.ino(), after.ino());
}

#[test]
fn a_changed_file_is_replaced_by_a_rename() {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    dir.sync(&want(&[("0", &["h/g/A"])])).unwrap();
    let before = std::fs::metadata(tmp.path().join("0")).unwrap().ino();
    let done = dir.sync(&want(&[("0", &["h/g/A", "h/g/B"])])).unwrap();
    assert_eq!(done.written, names(&["0"]));
    assert_ne!(
        std::fs::metadata(tmp.path().join("0")).unwrap().ino(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("0")).unwrap(),
        "h/g/A\nh/g/B\n"
    );
}

#[test]
fn a_file_changed_by_hand_is_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    let files = want(&[("0", &["h/g/A"])]);
    dir.sync(&files).unwrap();
    std::fs::write(tmp.path().join("0"), "someone else\n").unwrap();
    assert_eq!(dir.sync(&files).unwrap().written, names(&["0"]));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("0")).unwrap(),
        "h/g/A\n"
    );
}

#[test]
fn files_of_gpus_without_replicas_are_removed_and_others_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("5"), "slurm-job-9\n").unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine\n").unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    dir.sync(&want(&[("0", &["h/g/A"]), ("1", &["h/g/B"])]))
        .unwrap();
    let done = dir.sync(&want(&[("1", &["h/g/B"])])).unwrap();
    assert_eq!(done.removed, names(&["0"]));
    let done = dir.sync(&JobFiles::new()).unwrap();
    assert_eq!(done.removed, names(&["1"]));
    assert_eq!(
        listing(tmp.path()),
        BTreeMap::from([
            (MANIFEST.to_string(), String::new()),
            ("5".to_string(), "slurm-job-9\n".to_string()),
            ("notes.txt".to_string(), "mine\n".to_string()),
        ])
    );
}

#[test]
fn a_file_another_program_wrote_is_not_taken_over_and_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("0"), "slurm-job-9\n").unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    let files = want(&[("0", &["h/g/A"]), ("1", &["h/g/B"])]);
    let done = dir.sync(&files).unwrap();
    assert_eq!(done.foreign, names(&["0"]));
    assert_eq!(done.written, names(&["1"]));
    assert_eq!(dir.sync(&files).unwrap(), Synced::default());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("0")).unwrap(),
        "slurm-job-9\n"
    );
    // Gone, the name is free for the daemon.
    std::fs::remove_file(tmp.path().join("0")).unwrap();
    assert_eq!(dir.sync(&files).unwrap().written, names(&["0"]));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("0")).unwrap(),
        "h/g/A\n"
    );
}

#[test]
fn a_new_daemon_removes_the_files_its_last_run_left() {
    let tmp = tempfile::tempdir().unwrap();
    MappingDir::open(tmp.path())
        .unwrap()
        .sync(&want(&[("0", &["h/g/A"]), ("3.1", &["h/g/B"])]))
        .unwrap();
    let mut next = MappingDir::open(tmp.path()).unwrap();
    assert_eq!(next.owned().len(), 2);
    let done = next.sync(&want(&[("3.1", &["h/g/B"])])).unwrap();
    assert_eq!(done.removed, names(&["0"]));
    assert!(done.written.is_empty());
    assert_eq!(
        listing(tmp.path()).keys().cloned().collect::<Vec<_>>(),
        names(&[MANIFEST, "3.1"])
    );
}

#[test]
fn a_manifest_over_its_bound_names_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("0"), "slurm-job-9\n").unwrap();
    let mut text = "0\n".repeat(usize::try_from(MANIFEST_MAX_BYTES).unwrap() / 2);
    text.push('\n');
    std::fs::write(tmp.path().join(MANIFEST), &text).unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    assert!(dir.owned().is_empty());
    assert_eq!(dir.sync(&JobFiles::new()).unwrap(), Synced::default());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("0")).unwrap(),
        "slurm-job-9\n"
    );
}

#[test]
fn a_manifest_at_its_bound_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = "0\n".repeat(usize::try_from(MANIFEST_MAX_BYTES).unwrap() / 2);
    text.truncate(usize::try_from(MANIFEST_MAX_BYTES).unwrap());
    std::fs::write(tmp.path().join(MANIFEST), &text).unwrap();
    let dir = MappingDir::open(tmp.path()).unwrap();
    assert_eq!(dir.owned().iter().collect::<Vec<_>>(), ["0"]);
}

#[test]
fn a_manifest_names_only_mapping_files() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine\n").unwrap();
    std::fs::write(tmp.path().join(MANIFEST), "notes.txt\n../x\n0\n").unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    assert_eq!(dir.owned().iter().collect::<Vec<_>>(), ["0"]);
    dir.sync(&JobFiles::new()).unwrap();
    assert!(tmp.path().join("notes.txt").exists());
}

#[test]
fn a_mapping_file_over_its_bound_is_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    let files = want(&[("0", &["h/g/A"])]);
    dir.sync(&files).unwrap();
    // Over the bound, even beginning with the right content.
    let mut big = b"h/g/A\n".to_vec();
    big.resize(usize::try_from(FILE_MAX_BYTES).unwrap() + 1, b'x');
    std::fs::write(tmp.path().join("0"), &big).unwrap();
    assert_eq!(dir.sync(&files).unwrap().written, names(&["0"]));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("0")).unwrap(),
        "h/g/A\n"
    );
}

#[test]
fn a_failed_write_says_so_and_a_later_sync_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dir = MappingDir::open(tmp.path()).unwrap();
    dir.sync(&want(&[("0", &["h/g/A"])])).unwrap();
    // A directory where the file goes: the rename over it fails.
    std::fs::remove_file(tmp.path().join("0")).unwrap();
    std::fs::create_dir(tmp.path().join("0")).unwrap();
    let files = want(&[("0", &["h/g/B"])]);
    assert!(dir.sync(&files).is_err());
    std::fs::remove_dir(tmp.path().join("0")).unwrap();
    assert_eq!(dir.sync(&files).unwrap().written, names(&["0"]));
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("0")).unwrap(),
        "h/g/B\n"
    );
}

#[test]
fn a_missing_directory_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a/b");
    MappingDir::open(&path)
        .unwrap()
        .sync(&want(&[("0", &["h/g/A"])]))
        .unwrap();
    assert_eq!(std::fs::read_to_string(path.join("0")).unwrap(), "h/g/A\n");
}

// The writer task.

#[tokio::test]
async fn the_writer_writes_the_last_files_it_was_given_before_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, task) = writer::spawn(tmp.path().join("jobs"));
    tx.send(Some(std::sync::Arc::new(want(&[("0", &["h/g/A"])]))))
        .unwrap();
    tx.send(Some(std::sync::Arc::new(want(&[("1", &["h/g/B"])]))))
        .unwrap();
    drop(tx);
    task.await.unwrap();
    let found = listing(&tmp.path().join("jobs"));
    assert_eq!(found.get("1").map(String::as_str), Some("h/g/B\n"));
    assert!(!found.contains_key("0"));
}

#[tokio::test(start_paused = true)]
async fn the_writer_tries_a_failed_write_again() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("jobs");
    // A file where the directory goes: it cannot be made.
    std::fs::write(&path, "in the way").unwrap();
    let (tx, _task) = writer::spawn(path.clone());
    tx.send(Some(std::sync::Arc::new(want(&[("0", &["h/g/A"])]))))
        .unwrap();
    // The writer works on a blocking thread: the paused clock runs ahead
    // while this waits on it.
    tokio::time::sleep(writer::RETRY_EVERY / 2).await;
    assert!(path.is_file());
    std::fs::remove_file(&path).unwrap();
    for _ in 0..600 {
        if std::fs::read_to_string(path.join("0")).ok().as_deref() == Some("h/g/A\n") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("never written: {:?}", listing(tmp.path()));
}
