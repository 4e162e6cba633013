//! What `top` shows, as data: the daemon's replies (one host's agents and
//! GPU report, or every host's snapshot) turned into sections, one per GPU
//! (and one for the agents without a GPU slice), each a sorted list of
//! rows; then into the lines of the screen. Pure: the terminal and the
//! plain printer both draw these lines.

use std::cmp::Ordering;

use orch_api::wire::{Health, Phase, Slice};
use orch_api::{AgentStatus, GpuReport, PeerState};

use crate::commands::gpu::{human_size, used_of};

/// What the rows are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// GPU memory used, most first.
    Mem,
    /// GPU utilisation, busiest first.
    Gpu,
    /// CPU use, busiest first.
    Cpu,
    /// Group, agent, replica.
    Name,
    /// Unhealthy first, then not yet probed, then healthy.
    Health,
}

impl SortKey {
    fn word(self) -> &'static str {
        match self {
            SortKey::Mem => "GPU memory",
            SortKey::Gpu => "GPU utilisation",
            SortKey::Cpu => "CPU",
            SortKey::Name => "name",
            SortKey::Health => "health",
        }
    }
}

/// How the rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub key: SortKey,
    pub reverse: bool,
}

/// One host's figures as the daemon gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFigures {
    pub host: String,
    /// How the local daemon sees it (`--all-hosts`); `None` for one host.
    pub state: Option<PeerState>,
    /// How old the figures are (a peer's snapshot).
    pub age_ms: Option<u64>,
    /// `None`: no snapshot received from that host yet.
    pub agents: Option<Vec<AgentStatus>>,
    pub gpu: Option<GpuReport>,
}

/// Everything one refresh read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    pub hosts: Vec<HostFigures>,
    /// Several hosts: rows and GPUs name their host.
    pub fleet: bool,
}

/// One replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub host: String,
    pub group: String,
    pub agent: String,
    pub replica: u32,
    /// Its slice without the GPU (`mps 4.0g 25%`, `mig 1g.10gb @0`).
    pub slice: String,
    pub mem_used: Option<u64>,
    pub mem_limit: Option<u64>,
    pub util_bp: Option<u32>,
    /// CPU use, percent of one core (100 = one core busy).
    pub cpu_percent: Option<f64>,
    pub health: Health,
    pub phase: String,
}

impl Row {
    /// `group/agent`, `group/agent#2` for a replica past the first.
    pub fn name(&self) -> String {
        if self.replica == 0 {
            format!("{}/{}", self.group, self.agent)
        } else {
            format!("{}/{}#{}", self.group, self.agent, self.replica)
        }
    }

    fn by_name(&self, other: &Row) -> Ordering {
        (&self.host, &self.group, &self.agent, self.replica).cmp(&(
            &other.host,
            &other.group,
            &other.agent,
            other.replica,
        ))
    }
}

/// A GPU and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuHead {
    pub index: u32,
    pub name: String,
    pub mem_used: Option<u64>,
    pub mem_total: u64,
    pub util_bp: Option<u32>,
    pub lost: bool,
}

/// The replicas on one GPU of one host, or (`gpu: None`) those with no
/// GPU slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    pub host: String,
    pub gpu: Option<GpuHead>,
    pub rows: Vec<Row>,
}

fn health_rank(h: Health) -> u8 {
    match h {
        Health::Unhealthy => 0,
        Health::Unknown => 1,
        Health::Healthy => 2,
    }
}

/// Most first; a row without a figure after every row with one.
fn most_first<T: Ord>(a: Option<T>, b: Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => b.cmp(&a),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Sorts rows by `order`; ties by name, so the order is total and stable
/// across refreshes.
pub fn sort(rows: &mut [Row], order: Order) {
    rows.sort_by(|a, b| {
        let first = match order.key {
            SortKey::Mem => most_first(a.mem_used, b.mem_used),
            SortKey::Gpu => most_first(a.util_bp, b.util_bp),
            SortKey::Cpu => most_first(tenths(a.cpu_percent), tenths(b.cpu_percent)),
            SortKey::Name => Ordering::Equal,
            SortKey::Health => health_rank(a.health).cmp(&health_rank(b.health)),
        };
        first.then_with(|| a.by_name(b))
    });
    if order.reverse {
        rows.reverse();
    }
}

/// A percentage in tenths, to order by (the daemon gives tenths).
fn tenths(p: Option<f64>) -> Option<i64> {
    p.map(|p| (p * 10.0).round() as i64)
}

fn phase_word(a: &AgentStatus) -> String {
    let p = match &a.phase {
        Phase::Pending => "pending",
        Phase::Held { .. } => "held",
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::BackingOff { .. } => "backing off",
        Phase::Exited { .. } => "exited",
        Phase::Failed { .. } => "failed",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
    };
    if a.crashloop {
        format!("CRASH-LOOP {p}")
    } else {
        p.to_string()
    }
}

/// A slice as shown under its GPU's line: its text less the GPU.
fn slice_word(s: &Slice) -> String {
    let text = s.to_string();
    let prefix = format!("GPU {} ", s.gpu_index());
    text.strip_prefix(&prefix).unwrap_or(&text).to_string()
}

fn row(host: &str, a: &AgentStatus) -> Row {
    Row {
        host: host.to_string(),
        group: a.group.clone(),
        agent: a.agent.clone(),
        replica: a.replica,
        slice: a.slice.as_ref().map(slice_word).unwrap_or_default(),
        mem_used: a.gpu_use.map(|u| u.memory_used_bytes),
        mem_limit: a.gpu_use.and_then(|u| u.memory_limit_bytes),
        util_bp: a.gpu_use.and_then(|u| u.utilization_basis_points),
        cpu_percent: a.cpu_percent,
        health: a.health,
        phase: phase_word(a),
    }
}

/// The sections of every host, in the hosts' order: each GPU by index,
/// then the replicas without a slice; rows sorted by `order` within each.
/// A replica whose slice names a GPU the report lacks gets a section of
/// its own for that GPU, so no replica is left out.
pub fn sections(figures: &Figures, order: Order) -> Vec<Section> {
    let mut out = Vec::new();
    for h in &figures.hosts {
        let agents = h.agents.as_deref().unwrap_or_default();
        let mut gpus: Vec<GpuHead> = h
            .gpu
            .iter()
            .flat_map(|r| r.gpus.iter())
            .map(|g| GpuHead {
                index: g.info.index,
                name: g.info.name.clone(),
                mem_used: g.telemetry.as_ref().map(|t| t.memory_used_bytes),
                mem_total: g.info.memory_total_bytes,
                util_bp: g.telemetry.as_ref().map(|t| t.utilization_gpu_basis_points),
                lost: g.info.lost,
            })
            .collect();
        for a in agents {
            if let Some(s) = &a.slice
                && !gpus.iter().any(|g| g.index == s.gpu_index())
            {
                gpus.push(GpuHead {
                    index: s.gpu_index(),
                    name: "?".into(),
                    mem_used: None,
                    mem_total: 0,
                    util_bp: None,
                    lost: false,
                });
            }
        }
        gpus.sort_by_key(|g| g.index);
        for g in gpus {
            let mut rows: Vec<Row> = agents
                .iter()
                .filter(|a| a.slice.as_ref().map(Slice::gpu_index) == Some(g.index))
                .map(|a| row(&h.host, a))
                .collect();
            sort(&mut rows, order);
            out.push(Section {
                host: h.host.clone(),
                gpu: Some(g),
                rows,
            });
        }
        let mut rows: Vec<Row> = agents
            .iter()
            .filter(|a| a.slice.is_none())
            .map(|a| row(&h.host, a))
            .collect();
        if !rows.is_empty() {
            sort(&mut rows, order);
            out.push(Section {
                host: h.host.clone(),
                gpu: None,
                rows,
            });
        }
    }
    out
}

/// What a line of the screen is, for its style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    Title,
    Columns,
    Host,
    Gpu,
    Agent(Health),
    /// Rows that did not fit.
    More,
    /// An error, or the keys.
    Status {
        error: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    pub text: String,
}

impl Line {
    fn new(kind: LineKind, text: impl Into<String>) -> Line {
        Line {
            kind,
            text: text.into(),
        }
    }
}

/// What the screen shows besides the figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Screen {
    pub figures: Figures,
    /// `HH:MM:SS` (UTC) of the figures; `None` before the first answer.
    pub as_of: Option<String>,
    /// The last error (the daemon's, or a connection's); the figures shown
    /// are then the last good ones.
    pub error: Option<String>,
    /// A remark on the last key (a key that does nothing here).
    pub note: Option<String>,
}

/// The keys, for the status line.
pub const KEYS: &str = "q quit  m/M memory  g/P GPU util  c CPU  n name  h health  r reverse";

fn host_heading(h: &HostFigures) -> String {
    let state = match h.state {
        None | Some(PeerState::Local) => "this host",
        Some(PeerState::Alive) => "alive",
        Some(PeerState::Suspect) => "suspect (heartbeats missed)",
        Some(PeerState::Down) => "DOWN; last known state",
        Some(PeerState::Unknown) => "not heard from",
    };
    let age = match h.age_ms {
        Some(ms) if ms > 0 => format!(", as of {:.1}s ago", ms as f64 / 1000.0),
        _ => String::new(),
    };
    let none = if h.agents.is_none() {
        ": no state received from this host yet"
    } else {
        ""
    };
    format!("== {} ({state}{age}){none}", h.host)
}

fn gpu_heading(g: Option<&GpuHead>, n: usize) -> String {
    let replicas = format!("{n} replica(s)");
    match g {
        None => format!("no GPU slice  {replicas}"),
        Some(g) => {
            let mem = match g.mem_used {
                Some(u) if g.mem_total > 0 => format!("memory {}", used_of(u, Some(g.mem_total))),
                Some(u) => format!("memory {}", human_size(u)),
                None if g.mem_total > 0 => format!("memory ?/{}", human_size(g.mem_total)),
                None => "memory ?".into(),
            };
            let util = g
                .util_bp
                .map(|b| format!("util {}%", b / 100))
                .unwrap_or_else(|| "util ?".into());
            let lost = if g.lost { "  LOST" } else { "" };
            format!(
                "GPU {}  {}  {mem}  {util}  {replicas}{lost}",
                g.index, g.name
            )
        }
    }
}

/// The columns of the rows, and each row's cells.
fn cells(r: &Row, fleet: bool) -> Vec<String> {
    let mut c = Vec::with_capacity(8);
    if fleet {
        c.push(r.host.clone());
    }
    c.push(r.name());
    c.push(if r.slice.is_empty() {
        "-".into()
    } else {
        r.slice.clone()
    });
    c.push(
        r.cpu_percent
            .map(|p| format!("{p:.0}%"))
            .unwrap_or_else(|| "-".into()),
    );
    c.push(
        r.mem_used
            .map(|u| used_of(u, r.mem_limit))
            .unwrap_or_else(|| "-".into()),
    );
    c.push(
        r.util_bp
            .map(|b| format!("{}%", b / 100))
            .unwrap_or_else(|| "-".into()),
    );
    c.push(
        match r.health {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unknown => "-",
        }
        .into(),
    );
    c.push(r.phase.clone());
    c
}

fn columns(fleet: bool) -> Vec<String> {
    let mut c: Vec<String> = Vec::new();
    if fleet {
        c.push("HOST".into());
    }
    for h in [
        "AGENT", "SLICE", "CPU", "GPU MEM", "GPU UTIL", "HEALTH", "PHASE",
    ] {
        c.push(h.into());
    }
    c
}

fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            let mut s = String::from("  ");
            for (i, c) in r.iter().enumerate() {
                s.push_str(c);
                if i + 1 < r.len() {
                    s.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
                }
            }
            s
        })
        .collect()
}

/// The title line.
pub fn title(screen: &Screen, order: Order) -> String {
    let f = &screen.figures;
    let replicas: usize = f
        .hosts
        .iter()
        .map(|h| h.agents.as_ref().map_or(0, Vec::len))
        .sum();
    let hosts = if f.fleet {
        format!("{} host(s), ", f.hosts.len())
    } else {
        String::new()
    };
    let dir = if order.reverse { ", reversed" } else { "" };
    let at = screen
        .as_of
        .as_deref()
        .map(|t| format!(", as of {t}"))
        .unwrap_or_default();
    format!(
        "orchestratorctl top: {hosts}{replicas} replica(s), by {}{dir}{at}",
        order.key.word()
    )
}

/// The body: the column header, then per host (with several) a heading,
/// per GPU a heading and its rows.
pub fn body(screen: &Screen, order: Order) -> Vec<Line> {
    let fleet = screen.figures.fleet;
    let sections = sections(&screen.figures, order);
    // Every row's cells, so the columns line up over all sections.
    let mut table = vec![columns(fleet)];
    for s in &sections {
        for r in &s.rows {
            table.push(cells(r, fleet));
        }
    }
    let mut texts = aligned(&table).into_iter();
    let mut lines = Vec::new();
    if let Some(h) = texts.next() {
        lines.push(Line::new(LineKind::Columns, h));
    }
    let mut section = sections.iter().peekable();
    for h in &screen.figures.hosts {
        if fleet {
            lines.push(Line::new(LineKind::Host, host_heading(h)));
        }
        while let Some(s) = section.next_if(|s| s.host == h.host) {
            lines.push(Line::new(
                LineKind::Gpu,
                gpu_heading(s.gpu.as_ref(), s.rows.len()),
            ));
            for r in &s.rows {
                if let Some(t) = texts.next() {
                    lines.push(Line::new(LineKind::Agent(r.health), t));
                }
            }
        }
    }
    lines
}

/// The whole screen in `height` lines at most: the title, the body cut to
/// what fits (the last line saying how many did not), and the status line
/// (the error, else the note, else the keys).
pub fn screen_lines(screen: &Screen, order: Order, height: usize) -> Vec<Line> {
    let mut lines = vec![Line::new(LineKind::Title, title(screen, order))];
    let body = body(screen, order);
    let room = height.saturating_sub(2);
    if body.len() <= room {
        lines.extend(body);
    } else if room > 0 {
        let shown = room - 1;
        let hidden = body.len() - shown;
        lines.extend(body.into_iter().take(shown));
        lines.push(Line::new(
            LineKind::More,
            format!("  ... {hidden} more line(s); a taller terminal shows them"),
        ));
    }
    let status = match (&screen.error, &screen.note) {
        (Some(e), _) => Line::new(LineKind::Status { error: true }, e.clone()),
        (None, Some(n)) => Line::new(LineKind::Status { error: false }, n.clone()),
        (None, None) => Line::new(LineKind::Status { error: false }, KEYS),
    };
    if height >= 2 {
        lines.push(status);
    }
    lines.truncate(height);
    lines
}

/// The plain form (no terminal): the title and the whole body.
pub fn plain(screen: &Screen, order: Order) -> String {
    let mut s = title(screen, order);
    s.push('\n');
    for l in body(screen, order) {
        s.push_str(l.text.trim_end());
        s.push('\n');
    }
    s
}

/// What a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyed {
    Quit,
    /// The order changed: redraw.
    Sorted,
    Ignored,
}

/// A key pressed (`ctrl`: with Control), as top users expect it: `q` and
/// Ctrl-C quit; `m`/`M` memory, `g`/`P` GPU utilisation, `c` CPU, `n`
/// name, `h` health, `r` reverses.
pub fn key(c: char, ctrl: bool, order: &mut Order) -> Keyed {
    if ctrl {
        return if c == 'c' {
            Keyed::Quit
        } else {
            Keyed::Ignored
        };
    }
    let by = match c {
        'q' | 'Q' => return Keyed::Quit,
        'r' | 'R' => {
            order.reverse = !order.reverse;
            return Keyed::Sorted;
        }
        'm' | 'M' => SortKey::Mem,
        'g' | 'G' | 'P' | 'p' => SortKey::Gpu,
        'c' | 'C' => SortKey::Cpu,
        'n' | 'N' => SortKey::Name,
        'h' | 'H' => SortKey::Health,
        _ => return Keyed::Ignored,
    };
    *order = Order {
        key: by,
        reverse: false,
    };
    Keyed::Sorted
}

/// Figures to test with, shared with the view's tests.
#[cfg(test)]
pub mod sample {
    use orch_api::wire::{GpuInfo, Health, Mig, Phase, Slice};
    use orch_api::{AgentGpuUse, AgentStatus, FreeCapacity, GpuReport, GpuStatus, GpuTelemetry};

    pub const GIB: u64 = 1 << 30;

    pub fn mps(gpu: u32, gib: u64) -> Slice {
        Slice::Mps {
            gpu_index: gpu,
            gpu_uuid: format!("GPU-{gpu}"),
            memory_bytes: gib * GIB,
            compute_basis_points: 2500,
        }
    }

    /// A running replica; `used`: GiB of GPU memory and utilisation in %.
    pub fn agent(
        name: &str,
        replica: u32,
        slice: Option<Slice>,
        used: Option<(u64, u32)>,
        health: Health,
    ) -> AgentStatus {
        let (group, agent) = name.split_once('/').unwrap_or(("g", name));
        let limit = match &slice {
            Some(Slice::Mps { memory_bytes, .. }) => Some(*memory_bytes),
            _ => None,
        };
        AgentStatus {
            group: group.into(),
            agent: agent.into(),
            replica,
            phase: Phase::Running,
            pending: None,
            health,
            container: Some("c0ffee".into()),
            image: "agent:1".into(),
            restarts: 0,
            crashloop: false,
            required: true,
            slice,
            ports: Vec::new(),
            config_hash: None,
            scaled: None,
            autoscale: None,
            remote: Vec::new(),
            gpu_use: used.map(|(gib, pct)| AgentGpuUse {
                memory_used_bytes: gib * GIB,
                memory_limit_bytes: limit,
                share_basis_points: None,
                utilization_basis_points: Some(pct * 100),
                per_process: true,
            }),
            cpu_percent: None,
            cpu_limit_percent: None,
        }
    }

    pub fn gpu(index: u32, name: &str, total_gib: u64, used_gib: u64, util: u32) -> GpuStatus {
        GpuStatus {
            info: GpuInfo {
                index,
                uuid: format!("GPU-{index}"),
                name: name.into(),
                memory_total_bytes: total_gib * GIB,
                mig: Mig::Unsupported,
                lost: false,
                reserved_bytes: None,
            },
            telemetry: Some(GpuTelemetry {
                memory_used_bytes: used_gib * GIB,
                utilization_gpu_basis_points: util * 100,
                utilization_memory_basis_points: 0,
                temperature_celsius: 50,
                power_mw: 100_000,
            }),
            slices: Vec::new(),
            free: FreeCapacity {
                sharing: "mps".into(),
                mps_memory_bytes: None,
                mps_compute_basis_points: None,
                mps_clients: None,
                mig_memory_slices: None,
                mig_compute_slices: None,
                whole_gpu_free: false,
            },
            policy: None,
            usage: Vec::new(),
            unowned: Vec::new(),
        }
    }

    pub fn report(gpus: Vec<GpuStatus>) -> GpuReport {
        GpuReport {
            available: true,
            reason: None,
            library: None,
            driver_version: None,
            gpus,
        }
    }

    /// One host: two GPUs, three replicas on GPU 0, one on GPU 1, one
    /// without a slice.
    pub fn host() -> super::Figures {
        let agents = vec![
            agent(
                "vision/Eyes",
                0,
                Some(mps(0, 8)),
                Some((2, 10)),
                Health::Healthy,
            ),
            agent(
                "vision/Eyes",
                1,
                Some(mps(0, 8)),
                Some((6, 70)),
                Health::Unhealthy,
            ),
            agent(
                "speech/Ears",
                0,
                Some(mps(0, 4)),
                Some((3, 40)),
                Health::Unknown,
            ),
            agent(
                "llm/Big",
                0,
                Some(mps(1, 20)),
                Some((18, 95)),
                Health::Healthy,
            ),
            agent("infra/Memory", 0, None, None, Health::Healthy),
        ];
        // CPU, percent of one core: Ears not read yet.
        let cpu = [Some(12.5), Some(150.0), None, Some(80.0), Some(5.0)];
        let agents = agents
            .into_iter()
            .zip(cpu)
            .map(|(a, cpu_percent)| AgentStatus { cpu_percent, ..a })
            .collect();
        super::Figures {
            fleet: false,
            hosts: vec![super::HostFigures {
                host: String::new(),
                state: None,
                age_ms: None,
                agents: Some(agents),
                gpu: Some(report(vec![
                    gpu(0, "NVIDIA GeForce RTX 4090", 24, 11, 55),
                    gpu(1, "NVIDIA A100-SXM4-40GB", 40, 18, 95),
                ])),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sample::*;
    use super::*;

    fn names(figures: &Figures, key: SortKey, reverse: bool) -> Vec<Vec<String>> {
        sections(figures, Order { key, reverse })
            .iter()
            .map(|s| s.rows.iter().map(Row::name).collect())
            .collect()
    }

    #[test]
    fn rows_are_grouped_per_gpu_and_sorted_within_it() {
        let f = host();
        let by = |key, reverse| names(&f, key, reverse);
        assert_eq!(
            by(SortKey::Mem, false),
            [
                vec!["vision/Eyes#1", "speech/Ears", "vision/Eyes"],
                vec!["llm/Big"],
                vec!["infra/Memory"],
            ]
        );
        assert_eq!(
            by(SortKey::Mem, true)[0],
            ["vision/Eyes", "speech/Ears", "vision/Eyes#1"]
        );
        assert_eq!(
            by(SortKey::Gpu, false)[0],
            ["vision/Eyes#1", "speech/Ears", "vision/Eyes"]
        );
        // CPU: busiest first, the replica not read yet last; on GPU 1
        // and without a slice, one row each.
        assert_eq!(
            by(SortKey::Cpu, false)[0],
            ["vision/Eyes#1", "vision/Eyes", "speech/Ears"]
        );
        assert_eq!(
            by(SortKey::Cpu, true)[0],
            ["speech/Ears", "vision/Eyes", "vision/Eyes#1"]
        );
        assert_eq!(
            by(SortKey::Name, false)[0],
            ["speech/Ears", "vision/Eyes", "vision/Eyes#1"]
        );
        assert_eq!(
            by(SortKey::Health, false)[0],
            ["vision/Eyes#1", "speech/Ears", "vision/Eyes"]
        );
    }

    #[test]
    fn a_row_without_figures_sorts_after_those_with_them() {
        let mut f = host();
        let agents = f.hosts[0].agents.as_mut().unwrap();
        agents.push(agent("a/Idle", 0, Some(mps(0, 1)), None, Health::Healthy));
        assert_eq!(
            names(&f, SortKey::Mem, false)[0].last().map(String::as_str),
            Some("a/Idle")
        );
        assert_eq!(
            names(&f, SortKey::Gpu, false)[0].last().map(String::as_str),
            Some("a/Idle")
        );
    }

    #[test]
    fn a_replica_on_a_gpu_the_report_lacks_is_still_shown() {
        let mut f = host();
        f.hosts[0].gpu = None;
        let s = sections(
            &f,
            Order {
                key: SortKey::Name,
                reverse: false,
            },
        );
        let gpus: Vec<Option<u32>> = s.iter().map(|s| s.gpu.as_ref().map(|g| g.index)).collect();
        assert_eq!(gpus, [Some(0), Some(1), None]);
        assert_eq!(s.iter().map(|s| s.rows.len()).sum::<usize>(), 5);
    }

    #[test]
    fn keys_sort_as_top_users_expect() {
        let mut o = Order {
            key: SortKey::Name,
            reverse: false,
        };
        assert_eq!(key('M', false, &mut o), Keyed::Sorted);
        assert_eq!(o.key, SortKey::Mem);
        assert_eq!(key('P', false, &mut o), Keyed::Sorted);
        assert_eq!(o.key, SortKey::Gpu);
        assert_eq!(key('r', false, &mut o), Keyed::Sorted);
        assert!(o.reverse);
        // A new key starts unreversed.
        assert_eq!(key('h', false, &mut o), Keyed::Sorted);
        assert_eq!(
            o,
            Order {
                key: SortKey::Health,
                reverse: false
            }
        );
        assert_eq!(key('c', false, &mut o), Keyed::Sorted);
        assert_eq!(o.key, SortKey::Cpu);
        assert_eq!(key('c', true, &mut o), Keyed::Quit);
        assert_eq!(key('q', false, &mut o), Keyed::Quit);
        assert_eq!(key('x', false, &mut o), Keyed::Ignored);
    }

    #[test]
    fn the_screen_holds_what_fits_and_says_how_much_does_not() {
        let mut f = host();
        let agents = f.hosts[0].agents.as_mut().unwrap();
        for i in 0..100 {
            agents.push(agent("many/W", i + 1, None, None, Health::Healthy));
        }
        let screen = Screen {
            figures: f,
            ..Screen::default()
        };
        let order = Order {
            key: SortKey::Mem,
            reverse: false,
        };
        for height in [0usize, 1, 2, 3, 10, 40] {
            let lines = screen_lines(&screen, order, height);
            assert_eq!(lines.len(), height, "height {height}");
        }
        let lines = screen_lines(&screen, order, 10);
        assert_eq!(lines[0].kind, LineKind::Title);
        assert_eq!(lines[8].kind, LineKind::More);
        // 1 column header + 3 GPU headings + 105 rows, 7 of them shown.
        assert!(lines[8].text.contains("102 more line(s)"), "{:?}", lines[8]);
        assert_eq!(lines[9].text, KEYS);
        // The plain form has them all.
        assert_eq!(plain(&screen, order).lines().count(), 1 + 1 + 3 + 105);
    }

    #[test]
    fn the_status_line_says_the_error_else_the_note_else_the_keys() {
        let mut screen = Screen {
            figures: host(),
            note: Some("a note".into()),
            ..Screen::default()
        };
        let order = Order {
            key: SortKey::Mem,
            reverse: false,
        };
        let last = |s: &Screen| screen_lines(s, order, 30).pop().unwrap();
        assert_eq!(last(&screen).text, "a note");
        screen.error = Some("gone".into());
        assert_eq!(
            last(&screen),
            Line::new(LineKind::Status { error: true }, "gone")
        );
    }
}
