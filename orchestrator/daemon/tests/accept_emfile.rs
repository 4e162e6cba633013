//! A listener out of file descriptors waits between accepts instead of
//! spinning, and takes the connection once a descriptor is free. Alone in
//! its file: it lowers this process's RLIMIT_NOFILE.

#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_daemon::accept::{self, Backoff, Listener};
use tokio::net::{TcpListener, TcpStream};

/// A real listener that counts accepts and the EMFILE among them.
struct Counted {
    inner: TcpListener,
    tried: AtomicU64,
    emfile: AtomicU64,
}

impl Listener for Counted {
    type Conn = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        self.tried.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.accept().await.map(|(s, _)| s);
        if r.as_ref().err().and_then(io::Error::raw_os_error) == Some(libc::EMFILE) {
            self.emfile.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

fn set_nofile(soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit that outlives the call; setrlimit
    // only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
}

fn nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(rc, 0);
    (limit.rlim_cur, limit.rlim_max)
}

#[tokio::test]
async fn out_of_descriptors_an_accept_waits_and_then_takes_the_connection() {
    let l = Counted {
        inner: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tried: AtomicU64::new(0),
        emfile: AtomicU64::new(0),
    };
    let addr = l.inner.local_addr().unwrap();
    let (_, hard) = nofile();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    set_nofile(open + 64, hard);
    // Fill every descriptor but one, which the client's socket takes.
    let mut spare = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        spare.push(f);
    }
    spare.pop();
    let client = TcpStream::connect(addr).await.unwrap();

    let accepted = tokio::spawn(async move {
        let mut backoff = Backoff::default();
        let conn = accept::next(&l, &mut backoff, "test").await;
        (conn, l)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!accepted.is_finished(), "no descriptor to accept with");
    // Free one: the waiting accept takes the connection.
    spare.pop();
    let (conn, l) = tokio::time::timeout(Duration::from_secs(5), accepted)
        .await
        .expect("accepted once a descriptor was free")
        .unwrap();
    drop(spare);
    let (tried, emfile) = (
        l.tried.load(Ordering::SeqCst),
        l.emfile.load(Ordering::SeqCst),
    );
    assert!(emfile >= 1, "the accept failed for want of descriptors");
    assert_eq!(
        tried,
        emfile + 1,
        "every failure was EMFILE, then one success"
    );
    // 10 ms doubling: about 5 tries in 300 ms; a loop without a wait makes
    // thousands.
    assert!(tried < 20, "{tried} accepts: the listener spun");
    assert_eq!(conn.peer_addr().unwrap(), client.local_addr().unwrap());
}
