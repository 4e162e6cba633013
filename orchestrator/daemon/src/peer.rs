//! Who may use the control socket. The socket file is mode 0660 (owner and
//! its group); on top of that every connection's peer credentials are
//! checked, so a socket someone loosened by hand still refuses strangers.

use nix::unistd::{Gid, Uid};

/// The credentials of a connecting process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, from `/proc/<pid>/status`.
    pub groups: Vec<u32>,
}

/// The policy: root, the daemon's own user, or a member of the socket's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub daemon_uid: u32,
    pub group: u32,
}

impl Policy {
    pub fn current(group: Gid) -> Self {
        Policy {
            daemon_uid: Uid::effective().as_raw(),
            group: group.as_raw(),
        }
    }

    pub fn allows(&self, p: &Peer) -> bool {
        p.uid == 0
            || p.uid == self.daemon_uid
            || p.gid == self.group
            || p.groups.contains(&self.group)
    }

    /// Why `p` is refused (its words are `orch_api::text`'s).
    pub fn refusal(&self, p: &Peer) -> orch_api::Forbidden {
        orch_api::Forbidden::Stranger {
            uid: p.uid,
            group: group_name(self.group),
            gid: self.group,
        }
    }
}

pub fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// Supplementary groups of a process, or none if it cannot be read.
pub fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: None,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn who_gets_in() {
        let policy = Policy {
            daemon_uid: 998,
            group: 995,
        };
        assert!(policy.allows(&peer(0, 0, &[])), "root");
        assert!(policy.allows(&peer(998, 998, &[])), "the daemon's user");
        assert!(policy.allows(&peer(1000, 995, &[])), "primary group");
        assert!(
            policy.allows(&peer(1000, 1000, &[27, 995])),
            "supplementary group"
        );
        assert!(!policy.allows(&peer(1000, 1000, &[27, 100])), "a stranger");
        assert!(matches!(
            policy.refusal(&peer(1000, 1000, &[])),
            orch_api::Forbidden::Stranger {
                uid: 1000,
                gid: 995,
                ..
            }
        ));
    }

    #[test]
    fn reads_this_process_groups() {
        let pid = std::process::id() as i32;
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut read = supplementary_groups(pid);
        read.sort_unstable();
        let mut mine = mine;
        mine.sort_unstable();
        assert_eq!(read, mine);
    }
}
