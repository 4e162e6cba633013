//! PID to Docker container: `ProcFs` over recorded `/proc` fixtures for the
//! four layouts Docker produces (cgroup v1 and v2, systemd and cgroupfs
//! drivers), a nested engine and the processes that are not Docker's; the
//! size bound; and a live container of the agent image on the real Docker
//! Engine, whose `State.Pid` must map back to its id through the real /proc.

use std::path::Path;
use std::process::Command;

use orch_docker::cgroup::{CgroupError, DockerCgroup, MAX_CGROUP_FILE, ProcCgroups, ProcFs};

const A: &str = "ae2b1bcb4551b04e809eafe7449a3ac7ce2c8ca80fa7209a473a5ee65c23eddb";
const S: &str = "5e1f0c3d2b4a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn fixtures(layout: &str) -> ProcFs {
    ProcFs::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/proc")
            .join(layout),
    )
}

fn check(layout: &str, pid: u32, want: Option<(&str, &[&str])>) {
    let got = fixtures(layout).docker_cgroup(pid).expect("fixture reads");
    let want = want.map(|(id, outer)| DockerCgroup {
        id: id.to_owned(),
        outer: outer.iter().map(|s| (*s).to_owned()).collect(),
    });
    assert_eq!(got, want, "{layout}/{pid}");
}

#[test]
fn the_four_docker_layouts_map_to_their_container() {
    check("v1-cgroupfs", 4242, Some((A, &[])));
    check("v1-systemd", 4243, Some((S, &[])));
    check("v2-cgroupfs", 4244, Some((A, &[])));
    check("v2-systemd", 4245, Some((S, &[])));
}

#[test]
fn a_nested_engine_names_both_containers() {
    check("v2-nested", 4246, Some((A, &[S])));
}

#[test]
fn host_desktop_and_other_runtimes_are_not_docker() {
    check("v2-host", 1, None);
    check("v2-desktop", 2001, None);
    check("v2-podman", 3001, None);
}

#[test]
fn a_missing_process_and_an_oversized_file_are_errors() {
    let e = fixtures("v2-host").read_cgroup(99).expect_err("no pid 99");
    assert!(
        matches!(e, CgroupError::NoSuchProcess { pid: 99, .. }),
        "{e:?}"
    );
    let root = Scratch(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cgroup-{}", std::process::id())),
    );
    std::fs::create_dir_all(root.path().join("5")).expect("pid dir");
    let line = format!("0::/docker/{A}\n");
    let big = line.repeat(MAX_CGROUP_FILE as usize / line.len() + 1);
    std::fs::write(root.path().join("5/cgroup"), big).expect("write");
    let e = ProcFs::new(root.path())
        .read_cgroup(5)
        .expect_err("too large");
    assert!(
        matches!(
            e,
            CgroupError::TooLarge {
                limit: MAX_CGROUP_FILE,
                ..
            }
        ),
        "{e:?}"
    );
    std::fs::write(root.path().join("5/cgroup"), &line).expect("write");
    assert!(
        ProcFs::new(root.path())
            .docker_cgroup(5)
            .expect("fits")
            .is_some()
    );
}

/// A scratch proc root, removed at the end.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: it lives under the target directory.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the container even when the test failed.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        // Best effort: the test's assertions already decided.
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[test]
fn a_live_agent_container_maps_back_from_its_pid() {
    const IMAGE: &str = "orchestrator-agent:latest";
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .expect("the docker CLI");
    assert!(
        present.status.success(),
        "{IMAGE} is missing: run scripts/build-agent-image.sh"
    );
    let name = format!("orch-cgroup-test-{}", std::process::id());
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "io.orchestrator.test-run=cgroup",
        IMAGE,
    ]);
    let _container = Container(id.clone());
    let pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", &id])
        .parse()
        .expect("a pid");
    assert!(pid > 0, "the container runs");
    let found = ProcFs::default()
        .docker_cgroup(pid)
        .expect("read its cgroup");
    assert_eq!(
        found,
        Some(DockerCgroup {
            id: id.clone(),
            outer: Vec::new()
        }),
        "pid {pid} of container {id}"
    );
    docker(&["rm", "-f", &id]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let gone = loop {
        match ProcFs::default().read_cgroup(pid) {
            Err(CgroupError::NoSuchProcess { .. }) => break true,
            _ if std::time::Instant::now() > deadline => break false,
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert!(gone, "pid {pid} outlived its container");
}
