//! `MpsControlDaemon` talking to MPS servers: the simulator's MPS control
//! stand-in answers from the simulated GPUs' servers and clients (added
//! with `nvml-simctl process add --kind mps`), so listing servers and
//! clients, reading a server's status, a fault, and terminating a client
//! are checked end to end through the adapter's real code path.

mod common;

use std::path::Path;

use common::{Host, in_child, mps_sim, simctl};
use orch_gpu::{MpsControl, MpsControlDaemon, MpsError, MpsGpu, MpsServer, MpsServerStatus};
use serde_json::Value;

const RTX4090: &str = "GPU-4090a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b";

fn gpu(root: &Path) -> MpsGpu {
    MpsGpu {
        uuid: RTX4090.to_owned(),
        pipe_dir: root.join("pipe"),
        log_dir: root.join("log"),
    }
}

/// Stops the daemon even when an assertion failed half way.
struct Running<'a>(&'a MpsControlDaemon, MpsGpu);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // Best effort: the test's own assertions already decided.
        let _ = self.0.stop(&self.1);
    }
}

/// Every command the stand-in received, in order.
fn sent(g: &MpsGpu) -> Vec<String> {
    let text = std::fs::read_to_string(g.log_dir.join("invocations.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .flat_map(|r| {
            r["commands"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c["command"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn mps_status() -> Value {
    serde_json::from_str(&simctl(&["mps", "status", "--gpu", "0"])).expect("JSON")
}

#[test]
fn servers_clients_status_and_terminate() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("servers_clients_status_and_terminate", &host, || {
        let root = tempfile::tempdir().expect("temp dir");
        let mps = MpsControlDaemon::new(mps_sim());
        let g = gpu(root.path());
        let e = mps.server_pids(&g).expect_err("no daemon yet");
        assert!(matches!(e, MpsError::NotRunning { .. }), "{e:?}");
        mps.ensure_running(&g).expect("start");
        let _running = Running(&mps, g.clone());
        assert_eq!(mps.server_pids(&g).expect("list"), Vec::<u32>::new());

        for (pid, extra) in [("7101", Some("7100")), ("7102", None), ("7103", None)] {
            let mut args = vec![
                "process", "add", "--gpu", "0", "--pid", pid, "--used", "1GiB", "--kind", "mps",
            ];
            if let Some(server) = extra {
                args.extend(["--server-pid", server]);
            }
            simctl(&args);
        }
        assert_eq!(mps.server_pids(&g).expect("list"), [7100]);
        assert_eq!(
            mps.servers(&g).expect("servers"),
            [MpsServer {
                pid: 7100,
                status: MpsServerStatus::Active,
                clients: vec![7101, 7102, 7103],
            }]
        );
        let e = mps.client_pids(&g, 4242).expect_err("no such server");
        assert!(
            matches!(
                e,
                MpsError::NoSuchServer {
                    server_pid: 4242,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = mps.server_status(&g, 4242).expect_err("no such server");
        assert!(
            matches!(
                e,
                MpsError::NoSuchServer {
                    server_pid: 4242,
                    ..
                }
            ),
            "{e:?}"
        );

        mps.terminate_client(&g, 7100, 7102).expect("terminate");
        assert_eq!(mps.client_pids(&g, 7100).expect("clients"), [7101, 7103]);
        assert!(
            sent(&g).contains(&"terminate_client 7100 7102".to_owned()),
            "the stand-in recorded the command: {:?}",
            sent(&g)
        );
        let status = mps_status();
        assert_eq!(status["terminated"][0]["pid"], 7102);
        assert_eq!(
            status["terminated"][0]["error"],
            "CUDA_ERROR_MPS_CLIENT_TERMINATED"
        );
        let e = mps
            .terminate_client(&g, 7100, 7102)
            .expect_err("already gone");
        assert!(
            matches!(
                e,
                MpsError::NoSuchClient {
                    server_pid: 7100,
                    client_pid: 7102,
                    ..
                }
            ),
            "{e:?}"
        );

        // A fatal fault: the server says FAULT until every hit client exits.
        simctl(&["mps", "fault", "--gpu", "0"]);
        assert_eq!(
            mps.server_status(&g, 7100).expect("status"),
            MpsServerStatus::Fault
        );
        assert_eq!(
            mps_status()["new_client_error"],
            "CUDA_ERROR_MPS_SERVER_NOT_READY"
        );
        mps.terminate_client(&g, 7100, 7101)
            .expect("terminate a hit client");
        assert_eq!(
            mps.server_status(&g, 7100).expect("status"),
            MpsServerStatus::Fault
        );
        simctl(&["process", "remove", "--pid", "7103"]);
        assert_eq!(
            mps.server_status(&g, 7100).expect("status"),
            MpsServerStatus::Active
        );

        // `quit` ends the server.
        mps.stop(&g).expect("stop");
        assert!(mps_status().is_null(), "the server went with its daemon");
    });
}

#[test]
fn a_daemon_sees_only_the_servers_of_its_gpu() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child("a_daemon_sees_only_the_servers_of_its_gpu", &host, || {
        let status: Value = serde_json::from_str(&simctl(&["status"])).expect("JSON");
        let uuid = |i: usize| status["gpus"][i]["uuid"].as_str().expect("uuid").to_owned();
        // GPU 3 is the RTX 4090 of the mixed lab; GPU 1 an A100 with MIG off.
        simctl(&["mig-mode", "--gpu", "1", "disable"]);
        simctl(&["reset", "--gpu", "1"]);
        simctl(&[
            "process",
            "add",
            "--gpu",
            "3",
            "--pid",
            "801",
            "--used",
            "1GiB",
            "--kind",
            "mps",
            "--server-pid",
            "800",
        ]);
        simctl(&[
            "process",
            "add",
            "--gpu",
            "1",
            "--pid",
            "901",
            "--used",
            "1GiB",
            "--kind",
            "mps",
            "--server-pid",
            "900",
        ]);
        let root = tempfile::tempdir().expect("temp dir");
        let mps = MpsControlDaemon::new(mps_sim());
        let g3 = MpsGpu {
            uuid: uuid(3),
            pipe_dir: root.path().join("3/pipe"),
            log_dir: root.path().join("3/log"),
        };
        mps.ensure_running(&g3).expect("start");
        let _running = Running(&mps, g3.clone());
        assert_eq!(mps.server_pids(&g3).expect("list"), [800]);
        let e = mps
            .terminate_client(&g3, 900, 901)
            .expect_err("another GPU's server");
        assert!(
            matches!(
                e,
                MpsError::NoSuchServer {
                    server_pid: 900,
                    ..
                }
            ),
            "{e:?}"
        );
    });
}

#[test]
fn an_oversized_reply_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let bin = root.path().join("chatty-mps-control");
    // A "daemon" whose every answer is 1 MiB of pids.
    std::fs::write(
        &bin,
        "#!/bin/sh\nmkdir -p \"$CUDA_MPS_PIPE_DIRECTORY\"\n: > \"$CUDA_MPS_PIPE_DIRECTORY/control\"\n\
         [ \"$1\" = -d ] && exit 0\nhead -c 1048576 /dev/zero | tr '\\0' '7'\n",
    )
    .expect("write script");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mps = MpsControlDaemon::new(&bin);
    let g = gpu(root.path());
    mps.ensure_running(&g)
        .expect("the script pretends to start");
    let e = mps.server_pids(&g).expect_err("too large");
    assert!(
        matches!(
            e,
            MpsError::ReplyTooLarge {
                limit: orch_gpu::mps::MAX_REPLY_BYTES,
                ..
            }
        ),
        "{e:?}"
    );
}
