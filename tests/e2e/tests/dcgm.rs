//! dcgm-exporter's job mapping files, end to end: a real daemon on the
//! real Docker engine and a simulated RTX 4090 keeps `--dcgm-job-mapping-dir`
//! equal to the agents running on each GPU, and leaves a file it did not
//! write alone.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, sim_env};

fn config(name: &str) -> String {
    format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: {IMAGE}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 2s, retries: 3, start_period: 2s}}
  stop_timeout: 1s
gpus:
  - select: {{index: 0}}
    sharing: mps
groups:
  vision_gpu:
    agents:
      FaceRecognitionAgent:
        replicas: 2
        gpu: {{slice: mps, memory: 4g, compute: 25%}}
      Cpu: {{}}
"#
    )
}

#[test]
fn the_mapping_files_follow_the_running_agents() {
    let host = Host::new("dcgm");
    let dir = host.path("dcgm-jobs");
    std::fs::create_dir_all(&dir).unwrap();
    // Another program's file, for a GPU this host's agents do not use.
    std::fs::write(dir.join("7"), "slurm-job-1\n").unwrap();
    let env = sim_env(&host, "config/mainpc/gpus.sim.yaml");
    let daemon = Daemon::start_with_env(
        &host,
        &config(&host.name),
        &["--dcgm-job-mapping-dir", dir.to_str().unwrap()],
        &env,
    );
    daemon.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);
    let want = format!(
        "{h}/vision_gpu/FaceRecognitionAgent#0\n{h}/vision_gpu/FaceRecognitionAgent#1\n",
        h = host.name
    );
    daemon.wait_until(
        "GPU 0's file lists both replicas",
        Duration::from_secs(30),
        |_| std::fs::read_to_string(dir.join("0")).ok().as_deref() == Some(want.as_str()),
    );

    daemon.ctl_ok(&["scale", "vision_gpu/FaceRecognitionAgent", "1"]);
    let one = format!("{}/vision_gpu/FaceRecognitionAgent\n", host.name);
    daemon.wait_until(
        "GPU 0's file lists one replica",
        Duration::from_secs(30),
        |_| std::fs::read_to_string(dir.join("0")).ok().as_deref() == Some(one.as_str()),
    );

    daemon.ctl_ok(&["group", "stop", "vision_gpu", "--wait", "--timeout", "60"]);
    daemon.wait_until("GPU 0's file removed", Duration::from_secs(30), |_| {
        !dir.join("0").exists()
    });
    assert_eq!(
        std::fs::read_to_string(dir.join("7")).unwrap(),
        "slurm-job-1\n"
    );
}
