//! Logs and traces of the daemon process.
//!
//! Logs go to stderr as text (ANSI colour only when stderr is a terminal)
//! or as JSON lines (`--log-format json`), filtered by `RUST_LOG`
//! (default `info`). Traces are exported over OTLP (HTTP/protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set, with the other standard `OTEL_*` variables (headers, timeout,
//! `OTEL_SERVICE_NAME`) read by the exporter; without them nothing is
//! exported and no exporter runs. The resource names the process:
//! `service.name` (`orchestratord` unless `OTEL_SERVICE_NAME` says
//! otherwise), `host.name` (the config's host name) and
//! `service.instance.id` (the host name, the process id and its start
//! time, so a restarted daemon is a new instance), over what
//! `OTEL_RESOURCE_ATTRIBUTES` and the SDK add. The exporter's own HTTP
//! client (hyper, h2, reqwest) is kept out of both, so exporting never
//! logs or traces itself.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use opentelemetry::KeyValue;
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

/// The resource attributes of this process's spans (`host`: the config's
/// host name, if known).
pub fn resource_attributes(host: Option<&str>, pid: u32, started_ms: u128) -> Vec<KeyValue> {
    let service =
        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "orchestratord".to_string());
    let mut attrs = vec![KeyValue::new("service.name", service)];
    let instance = match host {
        Some(h) => {
            attrs.push(KeyValue::new("host.name", h.to_string()));
            format!("{h}-{pid}-{started_ms}")
        }
        None => format!("{pid}-{started_ms}"),
    };
    attrs.push(KeyValue::new("service.instance.id", instance));
    attrs
}

fn tracer_provider(host: Option<&str>) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("cannot set up the OTLP trace exporter")?;
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let resource = opentelemetry_sdk::Resource::builder()
        .with_attributes(resource_attributes(host, std::process::id(), started_ms))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber; `host` (the config's host name) names
/// where the spans come from. Must run before any async runtime starts:
/// the exporter's blocking client makes its own.
pub fn init(format: LogFormat, host: Option<&str>) -> TelemetryGuard {
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
        match tracer_provider(host) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value(attrs: &[KeyValue], key: &str) -> Option<String> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
    }

    #[test]
    fn the_resource_names_the_host_and_the_process() {
        let attrs = resource_attributes(Some("pc2"), 4242, 1_700_000_000_123);
        assert_eq!(value(&attrs, "host.name").as_deref(), Some("pc2"));
        assert_eq!(
            value(&attrs, "service.instance.id").as_deref(),
            Some("pc2-4242-1700000000123")
        );
        assert!(value(&attrs, "service.name").is_some());
        // Another process of the same host is another instance.
        let again = resource_attributes(Some("pc2"), 4243, 1_700_000_000_123);
        assert_ne!(
            value(&again, "service.instance.id"),
            value(&attrs, "service.instance.id")
        );
        // Before the config is read, there is no host to name.
        let early = resource_attributes(None, 7, 1);
        assert_eq!(value(&early, "host.name"), None);
        assert_eq!(value(&early, "service.instance.id").as_deref(), Some("7-1"));
    }
}
