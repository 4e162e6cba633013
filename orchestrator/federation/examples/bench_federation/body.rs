//! Snapshot bodies: a small one (a host's counters and the one agent that
//! changed) and a large one shaped like a host's full status with 54 agents
//! (the mainpc layout: groups, agents with their GPU slices, GPUs with
//! telemetry), which is tens of KB of JSON.
//!
//! Each published body carries a `bench` object with its sequence number and
//! the microseconds since the benchmark's start when it was published, so
//! the receiver can tell the latency without a clock of its own.

use std::time::Instant;

use orch_federation::Bytes;
use serde_json::{Map, Value, json};

/// How many agents the large body describes.
pub const AGENTS: usize = 54;
const GROUPS: [&str; 9] = [
    "core",
    "perception",
    "vision_gpu",
    "speech",
    "planning",
    "memory",
    "tools",
    "monitoring",
    "ui",
];

/// Which body a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Small,
    Large,
    /// One large body in every 100 messages, small ones between: a host
    /// sends its full state now and then and small changes in between.
    Mixed,
}

impl Kind {
    pub fn parse(label: &str) -> Option<Self> {
        [Kind::Small, Kind::Large, Kind::Mixed]
            .into_iter()
            .find(|k| k.label() == label)
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Small => "small",
            Kind::Large => "large",
            Kind::Mixed => "mixed",
        }
    }
}

/// Makes the bodies of one stream of messages.
#[derive(Debug)]
pub struct Bodies {
    kind: Kind,
    small: Value,
    large: Value,
    base: Instant,
}

impl Bodies {
    pub fn new(kind: Kind, host: &str, base: Instant) -> Self {
        Bodies {
            kind,
            small: small(host),
            large: large(host),
            base,
        }
    }

    /// The body of message `seq`, stamped as published now and encoded
    /// (as the daemon encodes its typed snapshot).
    pub fn next(&self, seq: u64) -> Bytes {
        let large = match self.kind {
            Kind::Small => false,
            Kind::Large => true,
            Kind::Mixed => seq % 100 == 0,
        };
        let mut body = if large {
            self.large.clone()
        } else {
            self.small.clone()
        };
        let sent_us = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        if let Some(map) = body.as_object_mut() {
            map.insert("bench".into(), json!({"seq": seq, "sent_us": sent_us}));
        }
        serde_json::to_vec(&body).unwrap_or_default().into()
    }
}

/// When the body was published, in microseconds since the benchmark's
/// start, if it is one of ours.
pub fn sent_us(body: &[u8]) -> Option<u64> {
    let body: Value = serde_json::from_slice(body).ok()?;
    body.get("bench")?.get("sent_us")?.as_u64()
}

/// Serialized size in bytes.
pub fn size_of(kind: Kind) -> usize {
    let body = match kind {
        Kind::Small | Kind::Mixed => small("mainpc"),
        Kind::Large => large("mainpc"),
    };
    serde_json::to_vec(&body).map_or(0, |v| v.len())
}

fn small(host: &str) -> Value {
    json!({
        "host": host,
        "generation": 7,
        "agents": {"wanted": AGENTS, "running": AGENTS, "healthy": AGENTS - 1, "crashlooping": 0},
        "changed": {
            "group": "vision_gpu",
            "agent": "detector",
            "replica": 1,
            "phase": {"state": "running", "since_ms": 1_734_000_123_456_u64},
            "health": "unhealthy",
            "restarts": 3
        }
    })
}

/// A stable, varied hex string (container ids and hashes look like this).
fn hex(seed: usize, len: usize) -> String {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

fn large(host: &str) -> Value {
    let gpus: Vec<Value> = (0..4)
        .map(|g| {
            json!({
                "info": {
                    "index": g,
                    "uuid": format!("GPU-{}-{}-{}", hex(g, 8), hex(g + 10, 4), hex(g + 20, 12)),
                    "name": if g < 2 { "NVIDIA A100-SXM4-40GB" } else { "NVIDIA GeForce RTX 4090" },
                    "memory_bytes": if g < 2 { 42_949_672_960_u64 } else { 25_757_220_864 },
                    "mig_capable": g < 2,
                    "mig_enabled": g < 2,
                    "compute_capability": if g < 2 { "8.0" } else { "8.9" }
                },
                "telemetry": {
                    "memory_used_bytes": 12_884_901_888_u64 + g as u64 * 1_000_000,
                    "utilization_gpu_basis_points": (37 + g) * 100,
                    "utilization_memory_basis_points": (21 + g) * 100,
                    "temperature_celsius": 61 + g,
                    "power_mw": 212_000 + g * 1000
                },
                "free": {
                    "sharing": if g < 2 { "mig" } else { "mps" },
                    "mps_memory_bytes": if g < 2 { Value::Null } else { json!(8_589_934_592_u64) },
                    "mps_compute_basis_points": if g < 2 { Value::Null } else { json!(3500) },
                    "mps_clients": if g < 2 { Value::Null } else { json!(9) },
                    "mig_memory_slices": if g < 2 { json!(2) } else { Value::Null }
                }
            })
        })
        .collect();
    let agents: Vec<Value> = (0..AGENTS)
        .map(|i| {
            let group = GROUPS[i % GROUPS.len()];
            let gpu = i % 4;
            let slice = if gpu < 2 {
                json!({
                    "gpu_uuid": format!("GPU-{}", hex(gpu, 8)),
                    "kind": "mig",
                    "profile": "1g.5gb",
                    "gpu_instance": i % 7,
                    "compute_instance": 0,
                    "device": format!("MIG-{}-{}", hex(i + 100, 8), hex(i + 200, 12))
                })
            } else {
                json!({
                    "gpu_uuid": format!("GPU-{}", hex(gpu, 8)),
                    "kind": "mps",
                    "memory_bytes": 2_147_483_648_u64,
                    "compute_basis_points": 500,
                    "pipe": "/run/orchestrator/mps"
                })
            };
            json!({
                "group": group,
                "agent": format!("{group}-agent-{i:02}"),
                "replica": i % 2,
                "phase": {"state": "running", "since_ms": 1_734_000_000_000_u64 + i as u64 * 997},
                "health": if i % 17 == 0 { "starting" } else { "healthy" },
                "container": hex(i + 1000, 64),
                "image": format!("registry.local/agents/{group}:2024.12.{}", i % 9),
                "restarts": i % 3,
                "crashloop": false,
                "required": i % 11 != 0,
                "slice": if i % 3 == 0 { slice } else { Value::Null },
                "ports": [format!("127.0.0.1:{}->8080/tcp", 18000 + i)],
                "config_hash": hex(i + 5000, 64),
                "env": {"AGENT_NAME": format!("{group}-agent-{i:02}"), "LOG_LEVEL": "info"}
            })
        })
        .collect();
    let groups: Vec<Value> = GROUPS
        .iter()
        .enumerate()
        .map(|(g, name)| {
            let members: Vec<String> = (0..AGENTS)
                .filter(|i| i % GROUPS.len() == g)
                .map(|i| format!("{name}-agent-{i:02}"))
                .collect();
            json!({
                "name": name,
                "description": format!("{name} agents of the household assistant"),
                "started": true,
                "state": "ready",
                "wanted": members.len(),
                "running": members.len(),
                "healthy": members.len(),
                "depends_on": if g == 0 { json!([]) } else { json!(["core"]) },
                "agents": members,
                "optional_not_ready": []
            })
        })
        .collect();
    let mut status = Map::new();
    status.insert("host".into(), json!(host));
    status.insert("version".into(), json!("0.1.0"));
    status.insert("pid".into(), json!(4242));
    status.insert("uptime_ms".into(), json!(86_400_000));
    status.insert(
        "config_path".into(),
        json!("/etc/orchestrator/startup_config.yaml"),
    );
    status.insert("generation".into(), json!(7));
    status.insert(
        "docker".into(),
        json!({"connected": true, "endpoint": "unix:///var/run/docker.sock",
               "engine_version": "27.3.1", "api_version": "1.47", "gpu_injection": "cdi"}),
    );
    status.insert(
        "gpu".into(),
        json!({"available": true, "reason": null, "gpus": 4, "slices": AGENTS / 3}),
    );
    status.insert(
        "agents".into(),
        json!({"wanted": AGENTS, "running": AGENTS, "healthy": AGENTS - 4, "crashlooping": 0}),
    );
    json!({
        "status": Value::Object(status),
        "groups": groups,
        "agents": agents,
        "gpus": gpus,
        "slo": {"availability_30d": 0.9991, "budget_left": 0.42, "burn_1h": 0.3, "burn_6h": 0.8}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_large_body_is_tens_of_kilobytes_and_lists_every_agent() {
        let size = size_of(Kind::Large);
        assert!((20_000..100_000).contains(&size), "{size} bytes");
        let body = large("mainpc");
        assert_eq!(body["agents"].as_array().map(Vec::len), Some(AGENTS));
    }

    #[test]
    fn the_small_body_is_under_a_kilobyte() {
        assert!(size_of(Kind::Small) < 1024);
    }

    #[test]
    fn a_stamped_body_carries_its_sequence_and_a_send_time_that_grows() {
        let bodies = Bodies::new(Kind::Mixed, "mainpc", Instant::now());
        let first = bodies.next(1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = bodies.next(100);
        let (a, b) = (sent_us(&first), sent_us(&later));
        let first: Value = serde_json::from_slice(&first).expect("JSON");
        let later: Value = serde_json::from_slice(&later).expect("JSON");
        assert_eq!(first["bench"]["seq"], json!(1));
        assert!(first.get("changed").is_some(), "message 1 is small");
        assert!(
            later.get("agents").is_some_and(Value::is_array),
            "message 100 is large"
        );
        assert!(a.is_some() && b > a, "{a:?} then {b:?}");
    }
}
