//! The Docker API cut (through a socket proxy this test controls) and
//! restored: the daemon notices, waits, reconnects, reconciles what
//! happened meanwhile, and creates no duplicate.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{Daemon, Host, chain_config, docker_ok};
use orch_api::EventKind;

/// Forwards a unix socket to Docker's; can cut every connection and refuse new ones.
struct Proxy {
    path: PathBuf,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<UnixStream>>>,
}

impl Proxy {
    fn start(path: &Path) -> Proxy {
        let listener = UnixListener::bind(path).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (c, l) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(upstream) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                let mut guard = l.lock().unwrap();
                guard.push(client.try_clone().unwrap());
                guard.push(upstream.try_clone().unwrap());
                drop(guard);
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Proxy {
            path: path.to_path_buf(),
            cut,
            live,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

#[test]
fn docker_cut_and_restored_reconnects_and_reconciles_without_duplicates() {
    let host = Host::new("cut");
    std::fs::create_dir_all(host.path("ctl")).unwrap();
    let proxy = Proxy::start(&host.path("docker.sock"));
    let endpoint = format!("unix://{}", proxy.path.display());
    let daemon = Daemon::start(
        &host,
        &chain_config(&host.name, &host.path("ctl")),
        &["--docker-host", &endpoint],
    );
    daemon.ctl_ok(&["group", "start", "base", "--wait", "--timeout", "60"]);
    let before = host.containers();
    assert_eq!(before.len(), 3);

    proxy.cut();
    daemon.wait_until(
        "the daemon sees Docker gone",
        Duration::from_secs(30),
        |d| !d.status().docker.connected,
    );
    // Meanwhile: an agent dies behind the daemon's back, and an operator asks for more.
    let top = host.container_of("Top").unwrap();
    docker_ok(&["kill", &top.id]);
    daemon.ctl_ok(&["group", "start", "extra"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        host.container_of("Side").is_none(),
        "nothing can be created while Docker is cut"
    );

    proxy.restore();
    daemon.wait_until(
        "reconnected, Top back and Side started",
        Duration::from_secs(60),
        |d| {
            let s = d.status();
            s.docker.connected && s.agents.healthy == 4 && s.agents.wanted == 4
        },
    );
    host.assert_no_duplicates();
    assert_eq!(host.containers().len(), 4);
    for c in &before {
        let now = host
            .containers()
            .into_iter()
            .find(|x| x.agent == c.agent)
            .unwrap();
        assert_eq!(now.id, c.id, "{} kept its container", c.agent);
    }
    let events = daemon.events();
    let down = events
        .iter()
        .position(|e| e.kind == EventKind::DockerDown)
        .expect("docker-down event");
    assert!(
        events[down..].iter().any(|e| e.kind == EventKind::DockerUp),
        "docker-up after docker-down"
    );
}
