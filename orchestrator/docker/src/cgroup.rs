//! Which Docker container a process runs in, from its `/proc/<pid>/cgroup`.
//!
//! NVML names the processes using a GPU by host pid; the daemon knows its
//! agents by container. The kernel's cgroup file of a pid bridges the two:
//! Docker puts each container's processes in a cgroup named after the
//! container's 64-hex id, in one of two shapes, whatever the cgroup version:
//!
//! - the `systemd` cgroup driver: a scope unit `docker-<id>.scope`
//!   (`0::/system.slice/docker-<id>.scope` on cgroup v2,
//!   `1:name=systemd:/system.slice/docker-<id>.scope` and every controller
//!   line on v1);
//! - the `cgroupfs` driver: a `docker` directory holding `<id>`
//!   (`0::/docker/<id>`, `4:memory:/docker/<id>`).
//!
//! Either may sit under a parent (`--cgroup-parent`, a nested engine) and
//! hold sub-cgroups (a container that runs systemd or its own engine).
//! [`parse`] returns every Docker container id on the path, outermost
//! first, and calls the innermost the process's container: a daemon that
//! talks to the host's engine matches [`DockerCgroup::outer`] too.
//! Anything else (a host process, a desktop session, a container of
//! Podman, containerd or CRI-O, an id that is not 64 hex digits, lines that
//! disagree) is `None`: a pid is never pinned on the wrong container.
//!
//! Reading the file is behind [`ProcCgroups`] (a configurable proc root,
//! so a daemon in a container can read the host's `/proc` mounted
//! elsewhere) with the real [`ProcFs`] and, for tests, `FakeProcCgroups`.

use std::fmt::Debug;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// The most of a cgroup file that is read: a real one is a few hundred
/// bytes (a dozen v1 controllers with a nested path); anything longer is
/// refused rather than held.
pub const MAX_CGROUP_FILE: u64 = 16 * 1024;

/// Length of a full Docker container id (hex digits).
const ID_LEN: usize = 64;

/// The Docker containers a process is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerCgroup {
    /// The innermost container on the cgroup path: the process's own.
    pub id: String,
    /// The containers enclosing it, outermost first (empty unless nested).
    pub outer: Vec<String>,
}

/// Why a cgroup file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The process is gone (or never was).
    #[error("no process {pid} under {proc_root}")]
    NoSuchProcess { pid: u32, proc_root: PathBuf },
    /// The file is longer than [`MAX_CGROUP_FILE`].
    #[error("{path} is longer than {limit} bytes; not a cgroup file")]
    TooLarge { path: PathBuf, limit: u64 },
    /// Any other read failure.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads `/proc/<pid>/cgroup`.
pub trait ProcCgroups: Send + Sync + Debug {
    /// The text of the pid's cgroup file.
    fn read_cgroup(&self, pid: u32) -> Result<String, CgroupError>;

    /// The Docker containers the pid runs in (`None`: not in one).
    fn docker_cgroup(&self, pid: u32) -> Result<Option<DockerCgroup>, CgroupError> {
        Ok(parse(&self.read_cgroup(pid)?))
    }
}

/// The kernel's `/proc` (or a host `/proc` mounted elsewhere).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcFs {
    /// A proc file system mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where it is mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl ProcCgroups for ProcFs {
    fn read_cgroup(&self, pid: u32) -> Result<String, CgroupError> {
        let path = self.root.join(pid.to_string()).join("cgroup");
        let gone = || CgroupError::NoSuchProcess {
            pid,
            proc_root: self.root.clone(),
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(gone()),
            // ESRCH: the process exited between the lookup and the open.
            Err(e) if e.raw_os_error() == Some(3) => return Err(gone()),
            Err(source) => return Err(CgroupError::Io { path, source }),
        };
        let mut bytes = Vec::new();
        match file.take(MAX_CGROUP_FILE + 1).read_to_end(&mut bytes) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(3) => return Err(gone()),
            Err(source) => return Err(CgroupError::Io { path, source }),
        }
        if bytes.len() as u64 > MAX_CGROUP_FILE {
            return Err(CgroupError::TooLarge {
                path,
                limit: MAX_CGROUP_FILE,
            });
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// The Docker containers named by a cgroup file's text (see the module
/// doc); `None` for anything that is not unambiguously Docker's.
pub fn parse(text: &str) -> Option<DockerCgroup> {
    let mut found: Option<Vec<&str>> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // hierarchy-id:controllers:path; the path may itself hold ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let ids = path_ids(path);
        if ids.is_empty() {
            // A controller the container's cgroup is not in (`/`), or
            // the line of a hierarchy Docker does not use.
            continue;
        }
        match &found {
            None => found = Some(ids),
            Some(seen) if *seen == ids => {}
            // Lines that name different containers: refuse to guess.
            Some(_) => return None,
        }
    }
    let mut ids = found?;
    let id = ids.pop()?.to_owned();
    Some(DockerCgroup {
        id,
        outer: ids.into_iter().map(str::to_owned).collect(),
    })
}

/// Docker container ids along one cgroup path, outermost first.
fn path_ids(path: &str) -> Vec<&str> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut ids = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        // systemd driver: a scope unit named after the container.
        if let Some(id) = part
            .strip_prefix("docker-")
            .and_then(|rest| rest.strip_suffix(".scope"))
            .filter(|id| is_id(id))
        {
            ids.push(id);
            continue;
        }
        // cgroupfs driver: `docker/<id>`.
        if i > 0 && parts[i - 1] == "docker" && is_id(part) {
            ids.push(part);
        }
    }
    ids
}

fn is_id(text: &str) -> bool {
    text.len() == ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(any(test, feature = "fake"))]
pub use fake::FakeProcCgroups;

#[cfg(any(test, feature = "fake"))]
mod fake {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::{Mutex, MutexGuard};

    use super::{CgroupError, ProcCgroups};

    /// Cgroup files in memory, by pid, recording every pid asked for.
    #[derive(Debug, Default)]
    pub struct FakeProcCgroups {
        // Held for one call only.
        state: Mutex<(BTreeMap<u32, String>, Vec<u32>)>,
    }

    impl FakeProcCgroups {
        /// No processes.
        pub fn new() -> Self {
            Self::default()
        }

        fn lock(&self) -> MutexGuard<'_, (BTreeMap<u32, String>, Vec<u32>)> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// A process with this cgroup file.
        pub fn set(&self, pid: u32, text: &str) {
            self.lock().0.insert(pid, text.to_owned());
        }

        /// The process exits.
        pub fn remove(&self, pid: u32) {
            self.lock().0.remove(&pid);
        }

        /// Every pid read so far, in order.
        pub fn reads(&self) -> Vec<u32> {
            self.lock().1.clone()
        }
    }

    impl ProcCgroups for FakeProcCgroups {
        fn read_cgroup(&self, pid: u32) -> Result<String, CgroupError> {
            let mut state = self.lock();
            state.1.push(pid);
            state
                .0
                .get(&pid)
                .cloned()
                .ok_or_else(|| CgroupError::NoSuchProcess {
                    pid,
                    proc_root: PathBuf::from("fake:/proc"),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ae2b1bcb4551b04e809eafe7449a3ac7ce2c8ca80fa7209a473a5ee65c23eddb";
    const B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn check(text: &str, want: Option<(&str, &[&str])>) {
        let got = parse(text);
        let want = want.map(|(id, outer)| DockerCgroup {
            id: id.to_owned(),
            outer: outer.iter().map(|s| (*s).to_owned()).collect(),
        });
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn docker_paths_of_both_drivers_and_versions() {
        check(
            &format!("0::/system.slice/docker-{A}.scope\n"),
            Some((A, &[])),
        );
        check(&format!("0::/docker/{A}\n"), Some((A, &[])));
        check(
            &format!("12:memory:/docker/{A}\n1:name=systemd:/docker/{A}\n0::/\n"),
            Some((A, &[])),
        );
        check(
            &format!(
                "5:devices:/system.slice/docker-{A}.scope\n1:name=systemd:/system.slice/docker-{A}.scope\n"
            ),
            Some((A, &[])),
        );
        // --cgroup-parent and sub-cgroups inside the container.
        check(
            &format!("0::/my.slice/docker-{A}.scope/init.scope\n"),
            Some((A, &[])),
        );
        check(
            &format!("0::/docker/{A}/system.slice/foo.service\n"),
            Some((A, &[])),
        );
    }

    #[test]
    fn nested_containers_are_listed_outermost_first() {
        check(&format!("0::/docker/{A}/docker/{B}\n"), Some((B, &[A])));
        check(
            &format!("0::/system.slice/docker-{A}.scope/docker/{B}\n"),
            Some((B, &[A])),
        );
    }

    #[test]
    fn anything_else_is_refused() {
        check("0::/init.scope\n", None);
        check("0::/user.slice/user-1000.slice/session-2.scope\n", None);
        check("0::/system.slice/docker.service\n", None);
        check(&format!("0::/machine.slice/libpod-{A}.scope\n"), None);
        check(
            &format!("0::/system.slice/cri-containerd-{A}.scope\n"),
            None,
        );
        check(
            &format!("0::/kubepods/besteffort/pod1/crio-{A}.scope\n"),
            None,
        );
        check(&format!("0::/kubepods/besteffort/pod1/{A}\n"), None);
        check("0::/docker/abc123\n", None);
        check(&format!("0::/docker/{}\n", A.to_uppercase()), None);
        check(&format!("0::/docker-{}.scope\n", &A[..63]), None);
        check(&format!("4:memory:/docker/{A}\n5:cpu:/docker/{B}\n"), None);
        check("garbage\n", None);
        check("", None);
    }

    #[test]
    fn the_fake_answers_and_records() {
        let fake = FakeProcCgroups::new();
        fake.set(7, &format!("0::/docker/{A}\n"));
        assert_eq!(
            fake.docker_cgroup(7).expect("read").map(|c| c.id),
            Some(A.to_owned())
        );
        fake.remove(7);
        assert!(matches!(
            fake.docker_cgroup(7),
            Err(CgroupError::NoSuchProcess { pid: 7, .. })
        ));
        assert_eq!(fake.reads(), [7, 7]);
    }
}
