//! Logs and traces of the daemon process.
//!
//! Logs go to stderr as text (ANSI colour only when stderr is a terminal)
//! or as JSON lines (`--log-format json`), filtered by `RUST_LOG`
//! (default `info`). Traces are exported over OTLP (HTTP/protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, with the other standard `OTEL_*` variables (headers, timeout,
//! `OTEL_SERVICE_NAME`) read by the exporter; without them nothing is
//! exported and no exporter runs. The exporter's own HTTP client (hyper,
//! h2, reqwest) is kept out of both, so exporting never logs or traces
//! itself.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flushes and stops the trace exporter when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("orchestratord: traces not all exported: {e}");
        }
    }
}

/// The exporter's own client, never logged or traced.
fn quiet_clients() -> Targets {
    Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
        .with_target("hyper_util", tracing::level_filters::LevelFilter::OFF)
        .with_target("h2", tracing::level_filters::LevelFilter::OFF)
        .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
        .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF)
        .with_target(
            "opentelemetry_sdk",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry_otlp",
            tracing::level_filters::LevelFilter::OFF,
        )
        .with_target(
            "opentelemetry-otlp",
            tracing::level_filters::LevelFilter::OFF,
        )
}

/// Whether the standard variables ask for traces.
pub fn otlp_requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "orchestratord".into()),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber. Must run before any async runtime
/// starts: the exporter's blocking client makes its own.
pub fn init(format: LogFormat) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,bollard=warn"));
    let log = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
    .with_filter(filter)
    .with_filter(quiet_clients());
    let (provider, problem) = if otlp_requested() {
        match tracer_provider() {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    } else {
        (None, None)
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("orchestratord"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            .with_filter(quiet_clients())
    });
    tracing_subscriber::registry().with(log).with(otel).init();
    if let Some(p) = problem {
        tracing::warn!("traces are not exported: {p}");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    TelemetryGuard { provider }
}
