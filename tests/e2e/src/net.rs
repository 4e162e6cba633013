//! Hosts on their own network: one network namespace per host, each with a
//! veth pair into a bridge that lives in a namespace of its own, on a
//! private /24. A host can be cut off (its link down) and put back; the
//! link between two hosts can be cut alone (blackhole routes both ways).
//! Everything is removed when the [`Lan`] drops. Needs root and iproute2.

use std::process::Command;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether this machine lets us make network namespaces (root, iproute2).
pub fn available() -> bool {
    let name = format!("orchprobe{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
    }
    ok
}

#[derive(Debug)]
pub struct Lan {
    tag: String,
    subnet: u8,
    hosts: Vec<String>,
}

impl Lan {
    /// `n` hosts, named `<tag>h1`..; addresses 10.77.<subnet>.11, .12, ...
    pub fn new(n: usize) -> Lan {
        let tag = format!("o{:05}", rand::random::<u32>() % 100_000);
        let subnet = (rand::random::<u8>() % 200) + 20;
        let lan = Lan {
            tag,
            subnet,
            hosts: (1..=n).map(|i| format!("h{i}")).collect(),
        };
        let br = lan.bridge_ns();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for (i, _) in lan.hosts.iter().enumerate() {
            let ns = lan.ns(i);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let (inner, outer) = (format!("{}e{i}", lan.tag), format!("{}b{i}", lan.tag));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "netns", &br]);
            ip(&["-n", &br, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", &br, "link", "set", &outer, "up"]);
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lan.ip(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lan
    }

    fn bridge_ns(&self) -> String {
        format!("{}br", self.tag)
    }

    /// The namespace of host `i` (0-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{}{}", self.tag, self.hosts[i])
    }

    pub fn ip(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, 11 + i)
    }

    /// Cuts host `i` off from every other host.
    pub fn cut_off(&self, i: usize) {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            &format!("{}b{i}", self.tag),
            "down",
        ]);
    }

    pub fn reconnect(&self, i: usize) {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            &format!("{}b{i}", self.tag),
            "up",
        ]);
    }

    /// Cuts only the link between hosts `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) {
        ip(&[
            "-n",
            &self.ns(a),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.ip(b)),
        ]);
        ip(&[
            "-n",
            &self.ns(b),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", self.ip(a)),
        ]);
    }

    pub fn heal(&self, a: usize, b: usize) {
        ip(&[
            "-n",
            &self.ns(a),
            "route",
            "del",
            "blackhole",
            &format!("{}/32", self.ip(b)),
        ]);
        ip(&[
            "-n",
            &self.ns(b),
            "route",
            "del",
            "blackhole",
            &format!("{}/32", self.ip(a)),
        ]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns()])
            .output();
    }
}
