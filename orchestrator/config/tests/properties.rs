//! Property tests: no input makes loading panic, every failure carries a
//! located error, and every valid model survives write-then-read.

use std::collections::BTreeMap;

use orch_config::{LoadOptions, Severity, load_str};
use orch_core::gpu::{GpuRequest, MigProfileName, SliceRequest};
use orch_core::model::{
    Agent, AgentDefaults, ControlSettings, Group, HealthCheck, HostConfig, HostInfo,
    MetricsSettings, PortMapping, Probe, Protocol, Resources, RestartPolicy, RuntimeSettings,
    Security,
};
use orch_core::units::{ByteSize, Duration, Percent};
use proptest::prelude::*;

const MAINPC: &str = include_str!("data/legacy/mainpc/startup_config.yaml");
const PC2: &str = include_str!("data/legacy/pc2/startup_config.yaml");

fn check_outcome(text: &str) {
    match load_str("p.yaml", text, &LoadOptions::default()) {
        Ok(l) => assert!(l.warnings.iter().all(|w| w.severity == Severity::Warning)),
        Err(e) => {
            let diags = e.diagnostics();
            assert!(
                diags.iter().any(|d| d.severity == Severity::Error),
                "failed without an error: {e}"
            );
            let lines = orch_config::diag::source_lines(text).len() as u32 + 1;
            for d in diags {
                assert!(
                    d.line <= lines.max(1),
                    "line {} beyond the file ({lines})",
                    d.line
                );
            }
        }
    }
}

/// Fragments of our schema and of YAML syntax, so generated documents get
/// past the parser and exercise the decoder.
fn yamlish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "version: 1\n",
        "host: {name: h}\n",
        "groups:\n",
        "  g:\n",
        "    agents:\n",
        "      A: {image: i}\n",
        "      B: {image: i, depends_on: [A]}\n",
        "depends_on: [x]\n",
        "gpu: {slice: mig, profile: 1g.10gb}\n",
        "gpu: {slice: mps, memory: 4g, compute: 25%}\n",
        "health: {http: {port: 80}}\n",
        "ports: [\"80:80\"]\n",
        "  - a\n",
        "- b\n",
        "{",
        "}",
        "[",
        "]",
        ": ",
        "&a ",
        "*a ",
        "'",
        "\"",
        "\t",
        "  ",
        "\n",
        "~",
        "null",
        "8080",
        "1g.5gb",
        "defaults: {image: i}\n",
        "restart: {backoff: {initial: 0s}}\n",
        "replicas: 99999\n",
        "agent_groups:\n",
        "docker_groups:\n",
        "pc2_services:\n",
        "${PORT_OFFSET}+",
        "---\n",
    ]);
    prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        check_outcome(&text);
    }

    #[test]
    fn schema_shaped_text_never_panics(text in yamlish()) {
        check_outcome(&text);
    }

    #[test]
    fn mutated_legacy_files_never_panic(
        which in 0..2usize,
        cuts in prop::collection::vec((0..20_000usize, 0..40usize, ".{0,8}"), 1..4),
    ) {
        let mut text = if which == 0 { MAINPC } else { PC2 }.to_string();
        for (at, len, insert) in cuts {
            let mut start = at.min(text.len());
            while !text.is_char_boundary(start) { start -= 1; }
            let mut end = (start + len).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(start..end, &insert);
        }
        check_outcome(&text);
    }
}

// ---- write-then-read over generated valid models ----

fn name() -> impl Strategy<Value = String> {
    "[A-Z][a-zA-Z0-9]{0,10}"
}

fn gpu_request() -> impl Strategy<Value = Option<GpuRequest>> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "1g.10gb",
            "3g.40gb",
            "1g.5gb+me",
            "7g.80gb",
            "2g.12gb"
        ])
        .prop_map(|p| SliceRequest::Mig {
            profile: MigProfileName::parse(p).expect("catalog profile name")
        }),
        (1u64..48, 1u32..=100).prop_map(|(g, c)| SliceRequest::Mps {
            memory: ByteSize::gib(g),
            compute: Percent::whole(c)
        }),
        Just(SliceRequest::Exclusive),
        Just(SliceRequest::TimeSlice),
    ];
    prop::option::of((leaf.clone(), prop::option::of(leaf)).prop_map(|(a, b)| {
        let r = GpuRequest::new(a);
        match b {
            Some(b) => r.with_fallback(GpuRequest::new(b)),
            None => r,
        }
    }))
}

fn probe() -> impl Strategy<Value = Probe> {
    prop_oneof![
        Just(Probe::None),
        (1u16..=65535, "/[a-z]{0,8}").prop_map(|(port, path)| Probe::Http { port, path }),
        (1u16..=65535).prop_map(|port| Probe::Tcp { port }),
        prop::collection::vec("[a-z]{1,6}", 1..3).prop_map(|command| Probe::Exec { command }),
    ]
}

#[derive(Debug, Clone)]
struct AgentShape {
    name: String,
    gpu: Option<GpuRequest>,
    probe: Probe,
    interval_ms: u64,
    env: BTreeMap<String, String>,
    replicas: u32,
    required: bool,
    cpus: Option<f64>,
    memory_mib: Option<u64>,
    dep_picks: Vec<usize>,
    container_port: Option<u16>,
}

fn agent_shape() -> impl Strategy<Value = AgentShape> {
    (
        name(),
        gpu_request(),
        probe(),
        1u64..600_000,
        prop::collection::btree_map("[A-Z_]{1,6}", "[ -~]{0,12}", 0..3),
        1u32..4,
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![0.25f64, 0.5, 1.0, 2.0, 0.8])),
        prop::option::of(6u64..65536),
        prop::collection::vec(any::<usize>(), 0..3),
        prop::option::of(1u16..=65535),
    )
        .prop_map(
            |(
                name,
                gpu,
                probe,
                interval_ms,
                env,
                replicas,
                required,
                cpus,
                memory_mib,
                dep_picks,
                container_port,
            )| {
                AgentShape {
                    name,
                    gpu,
                    probe,
                    interval_ms,
                    env,
                    replicas,
                    required,
                    cpus,
                    memory_mib,
                    dep_picks,
                    container_port,
                }
            },
        )
}

fn model() -> impl Strategy<Value = HostConfig> {
    prop::collection::vec((name(), prop::collection::vec(agent_shape(), 1..5)), 1..4).prop_map(
        |groups| {
            let defaults = AgentDefaults {
                image: Some("img:1".into()),
                ..AgentDefaults::default()
            };
            let mut seen = std::collections::BTreeSet::new();
            let mut earlier: Vec<String> = Vec::new();
            let mut out_groups = Vec::new();
            for (gi, (gname, agents)) in groups.into_iter().enumerate() {
                let gname = format!("{}_{gi}", gname.to_lowercase());
                let mut out_agents = Vec::new();
                for a in agents {
                    if !seen.insert(a.name.clone()) {
                        continue;
                    }
                    // Depending only on agents declared earlier keeps the graph
                    // acyclic at agent and group level.
                    let mut depends_on: Vec<String> = Vec::new();
                    if !earlier.is_empty() {
                        for p in &a.dep_picks {
                            let dep = earlier[p % earlier.len()].clone();
                            if !depends_on.contains(&dep) {
                                depends_on.push(dep);
                            }
                        }
                    }
                    let mut env = a.env.clone();
                    env.retain(|k, _| !k.starts_with("ORCH_"));
                    out_agents.push(Agent {
                        name: a.name.clone(),
                        group: gname.clone(),
                        image: "img:1".into(),
                        command: None,
                        env,
                        ports: a
                            .container_port
                            .map(|p| {
                                vec![PortMapping {
                                    host_ip: None,
                                    host_port: None,
                                    host_port_end: None,
                                    container_port: p,
                                    protocol: Protocol::Tcp,
                                }]
                            })
                            .unwrap_or_default(),
                        volumes: Vec::new(),
                        depends_on,
                        gpu: a.gpu.clone(),
                        restart: RestartPolicy::default(),
                        health: HealthCheck {
                            probe: a.probe.clone(),
                            interval: Duration::from_millis(a.interval_ms),
                            ..HealthCheck::default()
                        },
                        resources: Resources {
                            cpus: a.cpus,
                            memory: a.memory_mib.map(ByteSize::mib),
                            pids: None,
                        },
                        security: Security::default(),
                        replicas: a.replicas,
                        required: a.required,
                        labels: BTreeMap::new(),
                        stop_timeout: defaults.stop_timeout,
                        config: None,
                        script_path: None,
                        secrets: vec![],
                        autoscale: None,
                        gpu_over_limit: Default::default(),
                    });
                }
                for a in &out_agents {
                    earlier.push(a.name.clone());
                }
                out_groups.push(Group {
                    name: gname,
                    description: Some("generated".into()),
                    depends_on: Vec::new(),
                    slo: None,
                    rollout: Default::default(),
                    min_healthy: orch_core::model::DEFAULT_MIN_HEALTHY,
                    agents: out_agents,
                });
            }
            HostConfig {
                host: HostInfo {
                    name: "gen".into(),
                    labels: BTreeMap::new(),
                },
                defaults,
                gpus: Vec::new(),
                groups: out_groups,
                runtime: RuntimeSettings::defaults_for("gen"),
                federation: None,
                metrics: MetricsSettings::default(),
                control: ControlSettings::default(),
                secrets: BTreeMap::new(),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn written_models_read_back_identical(config in model()) {
        let text = orch_config::convert::to_v1_yaml(&config);
        let loaded = load_str("gen.yaml", &text, &LoadOptions::default());
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => panic!("{text}\n{:#?}", e.diagnostics()),
        };
        prop_assert_eq!(loaded.config, config);
    }
}

#[test]
fn the_dcgm_job_mapping_dir_reads_back() {
    let text = "version: 1\nhost: {name: h}\ndefaults: {image: img}\ngroups:\n  g:\n    agents:\n      A: {}\nmetrics: {dcgm_job_mapping_dir: /run/orchestrator/dcgm-jobs}\n";
    let loaded = load_str("m.yaml", text, &LoadOptions::default()).unwrap();
    let m = &loaded.config.metrics;
    assert_eq!(
        m.dcgm_job_mapping_dir.as_deref(),
        Some("/run/orchestrator/dcgm-jobs")
    );
    assert_eq!(m.listen.as_deref(), Some("127.0.0.1:9464"));
    let written = orch_config::convert::to_v1_yaml(&loaded.config);
    let again = load_str("again.yaml", &written, &LoadOptions::default()).unwrap();
    assert_eq!(again.config, loaded.config);
}
