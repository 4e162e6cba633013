//! The Prometheus text format 0.0.4 of a [`Snapshot`], written by hand.
//!
//! Why not the `prometheus` crate: its registry holds live metric objects
//! that are updated in place, while the values here are a snapshot made
//! by the owner; copying a snapshot into a registry at every scrape costs
//! more than writing the text, and keeping a registry up to date from the
//! owner would put locking on the owner's path. The format is small:
//! `# HELP` and `# TYPE` once per family, then one line per sample with
//! label values escaped (`\\`, `\"`, `\n`). `promtool check metrics` on a
//! live daemon's output is part of the tests.

use std::fmt::Write as _;

use super::{AGENT_STATES, Histogram, Snapshot};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The snapshot as text.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(64 * 1024);
    render_into(s, &mut out);
    out
}

struct Writer<'a> {
    out: &'a mut String,
    host: String,
}

impl Writer<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(help);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
    }

    /// `name{host="…",k="v",…} `: the value follows.
    fn start(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.out.push_str(name);
        self.out.push_str("{host=\"");
        self.out.push_str(&self.host);
        self.out.push('"');
        for (k, v) in labels {
            self.out.push(',');
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(self.out, v);
            self.out.push('"');
        }
        self.out.push_str("} ");
    }

    fn int(&mut self, name: &str, labels: &[(&str, &str)], v: u64) {
        self.start(name, labels);
        let _ = write!(self.out, "{v}");
        self.out.push('\n');
    }

    fn float(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.start(name, labels);
        float_into(self.out, v);
        self.out.push('\n');
    }

    fn flag(&mut self, name: &str, labels: &[(&str, &str)], v: bool) {
        self.start(name, labels);
        self.out.push_str(if v { "1\n" } else { "0\n" });
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        let mut le = String::new();
        let line = |w: &mut Self, le: &str, n: u64| {
            w.start(&bucket, labels);
            // `start` closed the label set; reopen it for `le`.
            w.out.truncate(w.out.len() - 2);
            w.out.push_str(",le=\"");
            w.out.push_str(le);
            w.out.push_str("\"} ");
            let _ = write!(w.out, "{n}");
            w.out.push('\n');
        };
        for (bound, n) in h.cumulative() {
            le.clear();
            float_into(&mut le, bound);
            line(self, &le, n);
        }
        line(self, "+Inf", h.count());
        self.float(&format!("{name}_sum"), labels, h.sum());
        self.int(&format!("{name}_count"), labels, h.count());
    }
}

fn escape_into(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn float_into(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Appends the snapshot's text to `out`.
pub fn render_into(s: &Snapshot, out: &mut String) {
    let mut host = String::new();
    escape_into(&mut host, &s.host);
    let mut w = Writer { out, host };

    // Daemon.
    w.family(
        "orchestrator_build_info",
        "gauge",
        "Build of the running daemon (always 1).",
    );
    w.int("orchestrator_build_info", &[("version", &s.version)], 1);
    w.family(
        "orchestrator_reconcile_duration_seconds",
        "histogram",
        "Time the owner task spends handling one input (decide and dispatch).",
    );
    w.histogram("orchestrator_reconcile_duration_seconds", &[], &s.reconcile);
    w.family(
        "orchestrator_state_write_failures_total",
        "counter",
        "Failed writes of the desired-state file.",
    );
    w.int(
        "orchestrator_state_write_failures_total",
        &[],
        s.state_write_failures,
    );

    // Agents.
    let mut replica_no = String::new();
    let replica_labels = |r: &super::ReplicaRow, no: &mut String| {
        no.clear();
        let _ = write!(no, "{}", r.replica);
    };
    w.family(
        "orchestrator_agent_up",
        "gauge",
        "1 when the replica runs and is healthy (or runs with no probe), else 0.",
    );
    for r in &s.replicas {
        replica_labels(r, &mut replica_no);
        let l = [
            ("group", r.group.as_str()),
            ("agent", &r.agent),
            ("replica", &replica_no),
        ];
        w.flag("orchestrator_agent_up", &l, r.up);
    }
    w.family(
        "orchestrator_agent_state",
        "gauge",
        "1 for the replica's current state, 0 for the others.",
    );
    for r in &s.replicas {
        replica_labels(r, &mut replica_no);
        for state in AGENT_STATES {
            let l = [
                ("group", r.group.as_str()),
                ("agent", &r.agent),
                ("replica", &replica_no),
                ("state", state),
            ];
            w.flag("orchestrator_agent_state", &l, r.state == state);
        }
    }
    w.family(
        "orchestrator_agent_crashlooping",
        "gauge",
        "1 while the replica is crash-looping.",
    );
    for r in &s.replicas {
        replica_labels(r, &mut replica_no);
        let l = [
            ("group", r.group.as_str()),
            ("agent", &r.agent),
            ("replica", &replica_no),
        ];
        w.flag("orchestrator_agent_crashlooping", &l, r.crashlooping);
    }
    w.family(
        "orchestrator_agent_restarts_total",
        "counter",
        "Restarts of the replica done by the supervisor.",
    );
    for r in &s.replicas {
        replica_labels(r, &mut replica_no);
        let l = [
            ("group", r.group.as_str()),
            ("agent", &r.agent),
            ("replica", &replica_no),
        ];
        w.int("orchestrator_agent_restarts_total", &l, r.restarts);
    }
    w.family(
        "orchestrator_agent_failures_total",
        "counter",
        "Failures of the agent, by reason.",
    );
    for (group, agent, reason, n) in &s.failures {
        let l = [
            ("group", group.as_str()),
            ("agent", agent),
            ("reason", reason),
        ];
        w.int("orchestrator_agent_failures_total", &l, *n);
    }
    w.family(
        "orchestrator_agent_health_check_duration_seconds",
        "histogram",
        "Duration of the agent's health checks.",
    );
    for (group, agent, h) in &s.health {
        let l = [("group", group.as_str()), ("agent", agent)];
        w.histogram("orchestrator_agent_health_check_duration_seconds", &l, h);
    }

    // Groups.
    w.family(
        "orchestrator_group_started",
        "gauge",
        "1 when the group is started (desired state).",
    );
    for g in &s.groups {
        w.flag(
            "orchestrator_group_started",
            &[("group", &g.group)],
            g.started,
        );
    }
    w.family(
        "orchestrator_group_ready",
        "gauge",
        "1 when the group is ready (every required agent healthy).",
    );
    for g in &s.groups {
        w.flag("orchestrator_group_ready", &[("group", &g.group)], g.ready);
    }
    w.family(
        "orchestrator_group_agents",
        "gauge",
        "Replicas of the group: wanted, running, healthy.",
    );
    for g in &s.groups {
        for (state, n) in [
            ("wanted", g.wanted),
            ("running", g.running),
            ("healthy", g.healthy),
        ] {
            let l = [("group", g.group.as_str()), ("state", state)];
            w.int("orchestrator_group_agents", &l, n as u64);
        }
    }

    // GPUs.
    let mut index = String::new();
    w.family(
        "orchestrator_gpu_info",
        "gauge",
        "One series per GPU (always 1).",
    );
    for g in &s.gpus {
        index.clear();
        let _ = write!(index, "{}", g.index);
        let l = [
            ("gpu", index.as_str()),
            ("uuid", &g.uuid),
            ("name", &g.name),
            ("mig", g.mig),
        ];
        w.int("orchestrator_gpu_info", &l, 1);
    }
    type GpuValue = fn(&super::GpuRow) -> Option<f64>;
    let per_gpu: [(&str, &str, GpuValue); 5] = [
        (
            "orchestrator_gpu_memory_total_bytes",
            "Memory of the GPU.",
            |g| Some(g.memory_total_bytes as f64),
        ),
        (
            "orchestrator_gpu_memory_used_bytes",
            "Memory in use on the GPU.",
            |g| g.telemetry.map(|t| t.memory_used_bytes as f64),
        ),
        (
            "orchestrator_gpu_utilization_ratio",
            "GPU utilisation (0..1).",
            |g| g.telemetry.map(|t| f64::from(t.utilization_gpu) / 100.0),
        ),
        (
            "orchestrator_gpu_temperature_celsius",
            "GPU temperature.",
            |g| g.telemetry.map(|t| f64::from(t.temperature_c)),
        ),
        ("orchestrator_gpu_power_watts", "GPU power draw.", |g| {
            g.telemetry.map(|t| f64::from(t.power_mw) / 1000.0)
        }),
    ];
    for (name, help, value) in per_gpu {
        w.family(name, "gauge", help);
        for g in &s.gpus {
            if let Some(v) = value(g) {
                index.clear();
                let _ = write!(index, "{}", g.index);
                w.float(name, &[("gpu", &index), ("uuid", &g.uuid)], v);
            }
        }
    }
    w.family(
        "orchestrator_gpu_slice_info",
        "gauge",
        "One series per GPU slice held, naming its holder (always 1).",
    );
    for sl in &s.slices {
        index.clear();
        let _ = write!(index, "{}", sl.gpu);
        replica_no.clear();
        let _ = write!(replica_no, "{}", sl.replica);
        let l = [
            ("gpu", index.as_str()),
            ("uuid", &sl.uuid),
            ("kind", sl.kind),
            ("profile", &sl.profile),
            ("group", &sl.group),
            ("agent", &sl.agent),
            ("replica", &replica_no),
        ];
        w.int("orchestrator_gpu_slice_info", &l, 1);
    }
    w.family(
        "orchestrator_gpu_slice_memory_bytes",
        "gauge",
        "Memory promised to each GPU slice held.",
    );
    for sl in &s.slices {
        let Some(m) = sl.memory_bytes else { continue };
        index.clear();
        let _ = write!(index, "{}", sl.gpu);
        replica_no.clear();
        let _ = write!(replica_no, "{}", sl.replica);
        let l = [
            ("gpu", index.as_str()),
            ("uuid", &sl.uuid),
            ("kind", sl.kind),
            ("group", &sl.group),
            ("agent", &sl.agent),
            ("replica", &replica_no),
        ];
        w.int("orchestrator_gpu_slice_memory_bytes", &l, m);
    }
    w.family(
        "orchestrator_gpu_mps_free_memory_bytes",
        "gauge",
        "GPU memory not yet promised to MPS clients.",
    );
    for g in &s.gpus {
        if let Some((m, _)) = g.mps_free {
            index.clear();
            let _ = write!(index, "{}", g.index);
            let l = [("gpu", index.as_str()), ("uuid", &g.uuid)];
            w.int("orchestrator_gpu_mps_free_memory_bytes", &l, m);
        }
    }
    w.family(
        "orchestrator_gpu_mps_free_compute_ratio",
        "gauge",
        "Compute share not yet promised to MPS clients (0..1).",
    );
    for g in &s.gpus {
        if let Some((_, c)) = g.mps_free {
            index.clear();
            let _ = write!(index, "{}", g.index);
            let l = [("gpu", index.as_str()), ("uuid", &g.uuid)];
            w.float("orchestrator_gpu_mps_free_compute_ratio", &l, c);
        }
    }
    w.family(
        "orchestrator_gpu_mig_free_memory_slices",
        "gauge",
        "MIG memory slices not used by any instance.",
    );
    for g in &s.gpus {
        if let Some(n) = g.mig_free_slices {
            index.clear();
            let _ = write!(index, "{}", g.index);
            let l = [("gpu", index.as_str()), ("uuid", &g.uuid)];
            w.int("orchestrator_gpu_mig_free_memory_slices", &l, u64::from(n));
        }
    }

    // Federation: only once the daemon has peers.
    if !s.peers.is_empty() {
        render_peers(&mut w, s);
    }

    // SLOs.
    w.family(
        "orchestrator_slo_objective_ratio",
        "gauge",
        "The SLO's objective: the share of good events aimed for.",
    );
    for r in &s.slos {
        let l = [("group", r.group.as_str()), ("slo", r.slo.as_str())];
        w.float("orchestrator_slo_objective_ratio", &l, r.objective);
    }
    w.family(
        "orchestrator_slo_events_total",
        "counter",
        "Every SLI event (good and bad).",
    );
    for r in &s.slos {
        let l = [("group", r.group.as_str()), ("slo", r.slo.as_str())];
        w.int("orchestrator_slo_events_total", &l, r.events);
    }
    w.family(
        "orchestrator_slo_errors_total",
        "counter",
        "Bad SLI events.",
    );
    for r in &s.slos {
        let l = [("group", r.group.as_str()), ("slo", r.slo.as_str())];
        w.int("orchestrator_slo_errors_total", &l, r.errors);
    }
    w.family(
        "orchestrator_slo_sli_error_ratio",
        "gauge",
        "Bad over all SLI events in each window, as the daemon counts them.",
    );
    for r in &s.slos {
        for (window, ratio, _) in &r.windows {
            let l = [
                ("group", r.group.as_str()),
                ("slo", r.slo.as_str()),
                ("window", window),
            ];
            w.float("orchestrator_slo_sli_error_ratio", &l, *ratio);
        }
    }
    w.family(
        "orchestrator_slo_burn_rate",
        "gauge",
        "Error ratio over the error budget in each window (1 spends the budget exactly over the SLO window).",
    );
    for r in &s.slos {
        for (window, _, burn) in &r.windows {
            let l = [
                ("group", r.group.as_str()),
                ("slo", r.slo.as_str()),
                ("window", window),
            ];
            w.float("orchestrator_slo_burn_rate", &l, *burn);
        }
    }
    w.family(
        "orchestrator_slo_error_budget_remaining_ratio",
        "gauge",
        "Share of the error budget left over the SLO window (negative once overspent).",
    );
    for r in &s.slos {
        if let Some(b) = r.budget_remaining {
            let l = [("group", r.group.as_str()), ("slo", r.slo.as_str())];
            w.float("orchestrator_slo_error_budget_remaining_ratio", &l, b);
        }
    }
}

fn render_peers(w: &mut Writer<'_>, s: &Snapshot) {
    w.family(
        "orchestrator_peer_up",
        "gauge",
        "1 while the peer is alive.",
    );
    for p in &s.peers {
        w.flag(
            "orchestrator_peer_up",
            &[("peer", &p.peer)],
            p.state == "alive",
        );
    }
    w.family(
        "orchestrator_peer_state",
        "gauge",
        "1 for the peer's current state, 0 for the others.",
    );
    for p in &s.peers {
        for state in ["unknown", "alive", "suspect", "down"] {
            let l = [("peer", p.peer.as_str()), ("state", state)];
            w.flag("orchestrator_peer_state", &l, p.state == state);
        }
    }
    w.family(
        "orchestrator_peer_heartbeat_age_seconds",
        "gauge",
        "Seconds since the peer's last heartbeat.",
    );
    for p in &s.peers {
        if let Some(age) = p.heartbeat_age_seconds {
            w.float(
                "orchestrator_peer_heartbeat_age_seconds",
                &[("peer", &p.peer)],
                age,
            );
        }
    }
    w.family(
        "orchestrator_federation_messages_total",
        "counter",
        "Federation messages, by direction.",
    );
    for p in &s.peers {
        for (direction, n) in [("in", p.messages_in), ("out", p.messages_out)] {
            let l = [("peer", p.peer.as_str()), ("direction", direction)];
            w.int("orchestrator_federation_messages_total", &l, n);
        }
    }
    w.family(
        "orchestrator_federation_decode_errors_total",
        "counter",
        "Federation messages that could not be decoded.",
    );
    for p in &s.peers {
        w.int(
            "orchestrator_federation_decode_errors_total",
            &[("peer", &p.peer)],
            p.decode_errors,
        );
    }
    w.family(
        "orchestrator_federation_refused_total",
        "counter",
        "Connections, messages and requests this daemon refused, by peer (empty: no configured peer) and reason.",
    );
    for p in &s.peers {
        for (reason, n) in &p.refused {
            let l = [("peer", p.peer.as_str()), ("reason", reason)];
            w.int("orchestrator_federation_refused_total", &l, *n);
        }
    }
    for (reason, n) in &s.strangers {
        let l = [("peer", ""), ("reason", reason)];
        w.int("orchestrator_federation_refused_total", &l, *n);
    }
}
