//! The probe against real loopback sockets: canned HTTP answers from a
//! plain listener, a silent server, a closed port, and the SDK's own server.

// Test helpers outside #[test] functions are test code too; a failed
// unwrap there is a test failure with its location, which is what we want.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use agent_sdk::probe::{self, EXIT_BAD_URL, EXIT_UNHEALTHY, ProbeError, ProbeTarget};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Serves one connection with `answer` and returns the address and the
/// request it received.
fn one_shot(answer: &'static [u8]) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
        }
        let _ = stream.write_all(answer);
        let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
    });
    (addr, rx)
}

#[test]
fn urls_parse_to_targets() {
    let cases = [
        (
            "http://127.0.0.1:8200/health",
            ProbeTarget::Http {
                addr: "127.0.0.1:8200".parse().unwrap(),
                path: "/health".into(),
            },
        ),
        (
            "HTTP://127.0.0.1:80",
            ProbeTarget::Http {
                addr: "127.0.0.1:80".parse().unwrap(),
                path: "/".into(),
            },
        ),
        (
            "http://[::1]:9000/ready?full=1",
            ProbeTarget::Http {
                addr: "[::1]:9000".parse().unwrap(),
                path: "/ready?full=1".into(),
            },
        ),
        (
            "tcp://127.0.0.1:7200",
            ProbeTarget::Tcp {
                addr: "127.0.0.1:7200".parse().unwrap(),
            },
        ),
    ];
    for (url, want) in cases {
        assert_eq!(ProbeTarget::parse(url).unwrap(), want, "{url}");
    }
    assert_eq!(
        ProbeTarget::parse("http://127.0.0.1:8200/health")
            .unwrap()
            .to_string(),
        "http://127.0.0.1:8200/health"
    );
}

#[test]
fn bad_urls_are_refused_with_exit_code_2() {
    for (url, says) in [
        ("127.0.0.1:8080", "no scheme"),
        ("https://127.0.0.1:8443/health", "`https` is not supported"),
        ("http://localhost:8080/health", "not an IP address"),
        ("http://127.0.0.1/health", "port is missing"),
        ("http://127.0.0.1:0/health", "not a port number"),
        ("http://127.0.0.1:70000/health", "not a port number"),
        ("http://[::1/health", "closing `]`"),
        ("http://user@127.0.0.1:80/", "user information"),
        ("http://127.0.0.1:80/a b", "whitespace"),
        ("http://127.0.0.1:80/a\r\nX: y", "whitespace"),
        ("tcp://127.0.0.1:80/health", "no path"),
    ] {
        let err = probe::probe(url, TIMEOUT).unwrap_err();
        assert!(matches!(err, ProbeError::BadUrl { .. }), "{url}: {err}");
        assert_eq!(err.exit_code(), EXIT_BAD_URL, "{url}");
        assert!(err.to_string().contains(says), "{url}: {err}");
    }
}

#[test]
fn a_2xx_answer_is_healthy_and_the_request_is_a_plain_get() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"[..],
        b"HTTP/1.0 204 No Content\r\n\r\n",
    ] {
        let (addr, request) = one_shot(answer);
        let healthy = probe::probe(&format!("http://{addr}/health"), TIMEOUT).unwrap();
        assert!(healthy.status.unwrap() / 100 == 2);
        let request = request.recv_timeout(TIMEOUT).unwrap();
        assert!(
            request.starts_with("GET /health HTTP/1.1\r\n"),
            "{request:?}"
        );
        assert!(
            request.contains(&format!("\r\nHost: {addr}\r\n")),
            "{request:?}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request:?}");
    }
}

#[test]
fn other_statuses_and_non_http_answers_are_unhealthy() {
    let (addr, _rx) = one_shot(b"HTTP/1.1 503 Service Unavailable\r\n\r\nloading\n");
    let err = probe::probe(&format!("http://{addr}/health"), TIMEOUT).unwrap_err();
    assert!(
        matches!(err, ProbeError::Status { status: 503, .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), EXIT_UNHEALTHY);

    let (addr, _rx) = one_shot(b"HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n");
    let err = probe::probe(&format!("http://{addr}/"), TIMEOUT).unwrap_err();
    assert!(
        matches!(err, ProbeError::Status { status: 301, .. }),
        "{err}"
    );

    let (addr, _rx) = one_shot(b"SSH-2.0-OpenSSH_9.2\r\n");
    let err = probe::probe(&format!("http://{addr}/"), TIMEOUT).unwrap_err();
    assert!(matches!(err, ProbeError::NotHttp { .. }), "{err}");
    assert_eq!(err.exit_code(), EXIT_UNHEALTHY);

    // Closed without a word.
    let (addr, _rx) = one_shot(b"");
    let err = probe::probe(&format!("http://{addr}/"), TIMEOUT).unwrap_err();
    assert!(matches!(err, ProbeError::NotHttp { .. }), "{err}");
}

#[test]
fn a_silent_server_times_out_on_time() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts (the kernel does, through the backlog) and never answers.
    let started = Instant::now();
    let err =
        probe::probe(&format!("http://{addr}/health"), Duration::from_millis(300)).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
    assert_eq!(err.exit_code(), EXIT_UNHEALTHY);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "took {took:?}"
    );
    drop(listener);
}

#[test]
fn a_closed_port_is_unhealthy_for_both_kinds() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    for url in [format!("http://{addr}/health"), format!("tcp://{addr}")] {
        let err = probe::probe(&url, TIMEOUT).unwrap_err();
        assert!(matches!(err, ProbeError::Connect { .. }), "{url}: {err}");
        assert_eq!(err.exit_code(), EXIT_UNHEALTHY);
    }
}

#[test]
fn tcp_is_healthy_when_a_connection_opens() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let healthy = probe::probe(&format!("tcp://{addr}"), TIMEOUT).unwrap();
    assert_eq!(healthy.status, None);
    assert!(healthy.elapsed < TIMEOUT);
}

#[test]
fn probes_the_sdk_server() {
    use agent_sdk::env::{GpuEnv, Identity, ListenConfig};
    use agent_sdk::{HealthState, Registry, Routes, ServeConfig, Server};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let health = HealthState::new();
    let config = ServeConfig::new(
        Identity::default(),
        GpuEnv::default(),
        ListenConfig {
            host: "127.0.0.1".parse().unwrap(),
            ports: vec![0],
        },
        "test",
    );
    let server = runtime
        .block_on(Server::bind(
            config,
            health.clone(),
            Registry::new(),
            Routes::new(),
        ))
        .unwrap();
    let addr = server.local_addrs()[0];
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = thread::spawn(move || {
        runtime.block_on(server.run(async {
            let _ = stop_rx.await;
        }))
    });

    let healthy = probe::probe(&format!("http://{addr}/health"), TIMEOUT).unwrap();
    assert_eq!(healthy.status, Some(200));
    health.set_unhealthy("disk full");
    let err = probe::probe(&format!("http://{addr}/health"), TIMEOUT).unwrap_err();
    assert!(
        matches!(err, ProbeError::Status { status: 503, .. }),
        "{err}"
    );
    let err = probe::probe(&format!("http://{addr}/nowhere"), TIMEOUT).unwrap_err();
    assert!(
        matches!(err, ProbeError::Status { status: 404, .. }),
        "{err}"
    );

    stop_tx.send(()).unwrap();
    serving.join().unwrap();
}
