//! The control socket: mode 0660, and a user outside its group is refused,
//! both by the file mode and, if the file is loosened, by the peer check.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use e2e::{Daemon, Host, binaries, chain_config};

fn id_of(user: &str) -> (u32, u32) {
    let uid = Command::new("id").args(["-u", user]).output().unwrap();
    let gid = Command::new("id").args(["-g", user]).output().unwrap();
    let parse = |o: std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    (parse(uid), parse(gid))
}

fn ensure_user(name: &str) -> (u32, u32) {
    if !Command::new("id")
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
    {
        let ok = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .expect("useradd (these tests run as root)");
        assert!(ok.success(), "useradd {name} failed");
    }
    id_of(name)
}

fn ensure_group(name: &str) -> u32 {
    let g = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    if !g.status.success() {
        assert!(
            Command::new("groupadd")
                .args(["--system", name])
                .status()
                .unwrap()
                .success()
        );
    }
    let g = Command::new("getent")
        .args(["group", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&g.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn ctl_as(uid: u32, gid: u32, groups: &[u32], socket: &std::path::Path) -> std::process::Output {
    let (_, ctl) = binaries();
    let groups_arg = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            &groups_arg,
        ])
        .arg(ctl)
        .arg("--socket")
        .arg(socket)
        .arg("status")
        .env("NO_COLOR", "1")
        .output()
        .expect("setpriv")
}

#[test]
fn a_user_outside_the_socket_group_is_refused() {
    let group = "orch-e2e-ctl";
    let gid = ensure_group(group);
    let (outsider_uid, outsider_gid) = ensure_user("orch-e2e-outsider");
    let host = Host::new("socket");
    std::fs::create_dir_all(host.path("ctl")).unwrap();
    // Let other users reach the socket's directory; the socket decides.
    std::fs::set_permissions(host.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = chain_config(&host.name, &host.path("ctl"))
        + &format!("control: {{socket: /run/unused.sock, group: {group}}}\n");
    let daemon = Daemon::start(&host, &text, &[]);

    let meta = std::fs::metadata(&daemon.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);

    // Outside the group: the file mode refuses.
    let out = ctl_as(outsider_uid, outsider_gid, &[], &daemon.socket);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));

    // In the group: allowed.
    let out = ctl_as(outsider_uid, outsider_gid, &[gid], &daemon.socket);
    assert!(
        out.status.success(),
        "a member is let in: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A loosened socket file still refuses strangers: the peer check answers 403.
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = ctl_as(outsider_uid, outsider_gid, &[], &daemon.socket);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!(
            "permission denied: uid {outsider_uid} is neither root"
        )),
        "{err}"
    );
}
