//! The SDK server on real loopback sockets: every contract endpoint on
//! every port, author routes, metrics as scraped, and graceful shutdown.

// Test helpers outside #[test] functions are test code too; a failed
// unwrap there is a test failure with its location, which is what we want.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_sdk::env::{GpuEnv, Identity, ListenConfig};
use agent_sdk::{
    HealthState, Method, Registry, Routes, ServeConfig, ServeError, Server, StatusCode, Stopped,
    text,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a Content-Length body from `stream`.
async fn read_reply(stream: &mut TcpStream) -> std::io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

async fn send(stream: &mut TcpStream, method: &str, path: &str, close: bool) {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: {connection}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
}

async fn call(addr: SocketAddr, method: &str, path: &str) -> Reply {
    tokio::time::timeout(DEADLINE, async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        send(&mut stream, method, path, true).await;
        read_reply(&mut stream).await.unwrap()
    })
    .await
    .expect("response within the deadline")
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path).await
}

/// A running server and the means to stop it.
struct Running {
    addrs: Vec<SocketAddr>,
    health: HealthState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Stopped>,
}

impl Running {
    async fn start(ports: &[u16], routes: Routes, grace: Duration) -> Self {
        let identity = Identity {
            host: Some("mainpc".into()),
            group: Some("vision_gpu".into()),
            agent: Some("FaceRecognitionAgent".into()),
            replica: Some(1),
            gpu_slice: Some("mig:MIG-0001".into()),
        };
        let gpu = GpuEnv {
            nvidia_visible_devices: Some("MIG-0001".into()),
            ..GpuEnv::default()
        };
        let listen = ListenConfig {
            host: "127.0.0.1".parse().unwrap(),
            ports: ports.to_vec(),
        };
        let mut config = ServeConfig::new(identity, gpu, listen, "9.9.9");
        config.shutdown_grace = grace;
        let health = HealthState::new();
        let server = Server::bind(config, health.clone(), Registry::new(), routes)
            .await
            .unwrap();
        let addrs = server.local_addrs();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addrs,
            health,
            stop: Some(stop),
            task,
        }
    }

    /// Asks for shutdown and returns how the server ended, and how long it took.
    async fn stop(mut self) -> (Stopped, Duration) {
        let started = Instant::now();
        self.stop.take().unwrap().send(()).unwrap();
        let stopped = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("server stops within the deadline")
            .unwrap();
        (stopped, started.elapsed())
    }
}

fn demo_routes() -> Routes {
    Routes::new()
        .route("/echo", |req| async move {
            text(StatusCode::OK, format!("{}\n", req.method()))
        })
        .unwrap()
        .route("/boom", |_req| async {
            text(StatusCode::INTERNAL_SERVER_ERROR, "boom\n")
        })
        .unwrap()
}

/// The value of one sample line in a metrics exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn serves_the_contract_on_every_port() {
    let server = Running::start(&[0, 0], demo_routes(), Duration::from_millis(500)).await;
    assert_eq!(server.addrs.len(), 2);
    assert_ne!(server.addrs[0].port(), server.addrs[1].port());

    for &addr in &server.addrs {
        let health = get(addr, "/health").await;
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        assert_eq!(
            health.header("content-type"),
            Some("text/plain; charset=utf-8")
        );

        let ready = get(addr, "/ready").await;
        assert_eq!(ready.status, 503, "not ready until the author says so");

        let echo = call(addr, "POST", "/echo").await;
        assert_eq!((echo.status, echo.body.as_str()), (200, "POST\n"));

        assert_eq!(get(addr, "/boom").await.status, 500);
        assert_eq!(get(addr, "/nope").await.status, 404);

        let wrong = call(addr, "POST", "/health").await;
        assert_eq!(wrong.status, 405);
        assert_eq!(wrong.header("allow"), Some("GET, HEAD"));
    }

    server.health.set_ready(true);
    for &addr in &server.addrs {
        let ready = get(addr, "/ready").await;
        assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    }

    let info = get(server.addrs[1], "/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.header("content-type"), Some("application/json"));
    let info: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["host"], "mainpc");
    assert_eq!(info["group"], "vision_gpu");
    assert_eq!(info["agent"], "FaceRecognitionAgent");
    assert_eq!(info["replica"], 1);
    assert_eq!(info["gpu_slice"], "mig:MIG-0001");
    assert_eq!(info["nvidia_visible_devices"], "MIG-0001");
    assert!(info["cuda_mps_pipe_directory"].is_null());
    assert!(info["cuda_mps_active_thread_percentage"].is_null());
    assert!(info["cuda_mps_pinned_device_mem_limit"].is_null());
    assert_eq!(
        info["listen_ports"],
        serde_json::json!([server.addrs[0].port(), server.addrs[1].port()])
    );
    assert_eq!(info["pid"], std::process::id());
    assert!(info["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(info["version"], "9.9.9");
    assert_eq!(info["healthy"], true);
    assert_eq!(info["ready"], true);

    let scrape = get(server.addrs[0], "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert_eq!(
        scrape.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = scrape.body;
    let count = |endpoint: &str| {
        sample(
            &m,
            &format!("agent_requests_total{{endpoint=\"{endpoint}\"}}"),
        )
    };
    // Two of each per port, plus the scrape itself.
    assert_eq!(count("/health"), Some(4.0), "{m}");
    assert_eq!(count("/ready"), Some(4.0), "{m}");
    assert_eq!(count("/echo"), Some(2.0), "{m}");
    assert_eq!(count("/boom"), Some(2.0), "{m}");
    assert_eq!(count("/info"), Some(1.0), "{m}");
    assert_eq!(count("/metrics"), Some(1.0), "{m}");
    assert_eq!(count("unmatched"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "agent_errors_total"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "agent_up"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "agent_healthy"), Some(1.0), "{m}");
    let start = sample(&m, "agent_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now && start > now - 60.0, "{start} vs {now}");
    for family in [
        "agent_requests_total counter",
        "agent_errors_total counter",
        "agent_up gauge",
        "agent_healthy gauge",
        "agent_start_time_seconds gauge",
    ] {
        assert!(m.contains(&format!("# TYPE {family}\n")), "{family}: {m}");
    }
    assert_eq!(m.matches("# HELP ").count(), m.matches("# TYPE ").count());

    let (stopped, _) = server.stop().await;
    assert_eq!(stopped, Stopped { cut_connections: 0 });
}

#[tokio::test]
async fn health_follows_the_state_and_checks() {
    let server = Running::start(&[0], Routes::new(), Duration::from_millis(500)).await;
    let addr = server.addrs[0];
    let disk_gone = Arc::new(AtomicBool::new(false));
    let flag = disk_gone.clone();
    server.health.add_check(move || {
        if flag.load(Ordering::SeqCst) {
            Err("scratch disk missing".into())
        } else {
            Ok(())
        }
    });
    assert_eq!(get(addr, "/health").await.status, 200);

    server.health.set_unhealthy("model weights corrupted");
    let reply = get(addr, "/health").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "model weights corrupted\n")
    );
    let metrics = get(addr, "/metrics").await.body;
    assert_eq!(sample(&metrics, "agent_healthy"), Some(0.0), "{metrics}");

    disk_gone.store(true, Ordering::SeqCst);
    server.health.set_healthy();
    let reply = get(addr, "/health").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "scratch disk missing\n")
    );

    disk_gone.store(false, Ordering::SeqCst);
    assert_eq!(get(addr, "/health").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let routes = Routes::new()
        .route("/slow", move |_req| {
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(());
                tokio::time::sleep(Duration::from_millis(300)).await;
                text(StatusCode::OK, "finished\n")
            }
        })
        .unwrap();
    let server = Running::start(&[0], routes, Duration::from_secs(2)).await;
    let addr = server.addrs[0];

    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    send(&mut idle, "GET", "/health", false).await;
    assert_eq!(read_reply(&mut idle).await.unwrap().status, 200);

    let in_flight = tokio::spawn(async move { call(addr, "GET", "/slow").await });
    tokio::time::timeout(DEADLINE, entered.recv())
        .await
        .unwrap()
        .unwrap();

    let stopping = tokio::spawn(server.stop());
    // New connections are refused once the listener closes.
    let deadline = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect(addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(Instant::now() < deadline, "listener still open");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    let reply = in_flight.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "finished\n"));
    let (stopped, took) = stopping.await.unwrap();
    assert_eq!(stopped, Stopped { cut_connections: 0 });
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // The idle connection was closed by the server.
    let mut rest = Vec::new();
    let n = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn grace_period_cuts_stuck_requests() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel::<()>();
    let routes = Routes::new()
        .route("/stuck", move |_req| {
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(());
                tokio::time::sleep(Duration::from_secs(30)).await;
                text(StatusCode::OK, "too late\n")
            }
        })
        .unwrap();
    let server = Running::start(&[0], routes, Duration::from_millis(100)).await;
    let addr = server.addrs[0];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    send(&mut stream, "GET", "/stuck", true).await;
    tokio::time::timeout(DEADLINE, entered.recv())
        .await
        .unwrap()
        .unwrap();

    let (stopped, took) = server.stop().await;
    assert_eq!(stopped, Stopped { cut_connections: 1 });
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(1),
        "took {took:?}"
    );
    let cut = tokio::time::timeout(DEADLINE, read_reply(&mut stream))
        .await
        .unwrap();
    assert!(cut.is_err(), "no response after the cut: {cut:?}");
}

#[tokio::test]
async fn head_gets_headers_only() {
    let server = Running::start(&[0], Routes::new(), Duration::from_millis(500)).await;
    let reply = call(server.addrs[0], "HEAD", "/health").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("3"));
    assert_eq!(reply.body, "", "HEAD has no body");
    server.stop().await;
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let listen = ListenConfig {
        host: "127.0.0.1".parse().unwrap(),
        ports: vec![0, port],
    };
    let config = ServeConfig::new(Identity::default(), GpuEnv::default(), listen, "1");
    let err = Server::bind(config, HealthState::new(), Registry::new(), Routes::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::Bind { addr, .. } if addr.port() == port),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn contract_metrics_clash_is_reported() {
    let registry = Registry::new();
    registry.gauge("agent_up", "Mine.").unwrap();
    let listen = ListenConfig {
        host: "127.0.0.1".parse().unwrap(),
        ports: vec![0],
    };
    let config = ServeConfig::new(Identity::default(), GpuEnv::default(), listen, "1");
    let err = Server::bind(config, HealthState::new(), registry, Routes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ServeError::Metrics(_)), "{err}");
}

#[test]
fn routes_reject_reserved_duplicate_and_relative_paths() {
    let ok = |_req| async { text(StatusCode::OK, "") };
    let reserved = Routes::new().route("/health", ok).unwrap_err();
    assert!(
        matches!(reserved, ServeError::ReservedPath { .. }),
        "{reserved}"
    );
    let relative = Routes::new().route("work", ok).unwrap_err();
    assert!(matches!(relative, ServeError::BadPath { .. }), "{relative}");
    let twice = Routes::new()
        .route("/work", ok)
        .unwrap()
        .route("/work", ok)
        .unwrap_err();
    assert!(matches!(twice, ServeError::DuplicatePath { .. }), "{twice}");
    let routes = Routes::new()
        .route("/b", ok)
        .unwrap()
        .route("/a", ok)
        .unwrap();
    assert_eq!(routes.paths().collect::<Vec<_>>(), ["/a", "/b"]);
    // Method is the handler's concern; the type is re-exported for it.
    assert_eq!(Method::POST.as_str(), "POST");
}
