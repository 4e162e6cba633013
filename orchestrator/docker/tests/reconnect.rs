//! The reconnecting runtime against the real Docker Engine, through a
//! socket path that comes and goes (a restarted dockerd, a socket that
//! came back).

#![allow(clippy::unwrap_used)]

use orch_docker::{ContainerRuntime, Endpoint, Reconnecting};

/// The engine's socket, as `DOCKER_HOST` (or the default) names it.
fn engine_socket() -> std::path::PathBuf {
    match Endpoint::from_env().unwrap() {
        Endpoint::Unix(path) => path,
        other => panic!("these tests need a unix socket, not {other}"),
    }
}

#[tokio::test]
async fn a_call_after_the_engine_came_back_connects_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("docker.sock");
    let rt = Reconnecting::new(Endpoint::Unix(link.clone()));

    let err = rt.ping().await.unwrap_err();
    assert!(err.is_unreachable(), "no socket yet: {err}");

    std::os::unix::fs::symlink(engine_socket(), &link).unwrap();
    rt.ping().await.expect("the engine is there now");

    std::fs::remove_file(&link).unwrap();
    let err = rt.version().await.unwrap_err();
    assert!(err.is_unreachable(), "the socket is gone: {err}");

    std::os::unix::fs::symlink(engine_socket(), &link).unwrap();
    let v = rt.version().await.expect("connected again");
    assert!(!v.api_version.is_empty());
}
