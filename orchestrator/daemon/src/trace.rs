//! Spans that outlive one call, and W3C trace context across hosts.
//!
//! The daemon only emits `tracing` spans; whether they leave the process
//! (OTLP) is the binary's choice. The spans that matter to an operator:
//! one span per operator command (`group_start`, `group_stop`,
//! `group_restart`, `agent_restart`, `apply`, `reload`), one span per
//! Docker operation on a replica (`agent_start` for a launch, create,
//! start or recreate; `agent_stop`, `agent_remove`, `container_restart`;
//! [`op_span`]) on the operation's own task, `gpu_prepare` inside an agent
//! start, and `reconcile` for each supervisor decision that acted.
//!
//! A command's work goes on after its request is answered: a restart's
//! replicas start once the old ones have stopped, a group start's waves
//! once their dependencies are healthy. [`CommandSpans`] keeps, for each
//! group a command changed, that command's span context until the group
//! has settled, so the operations of every later decision on the group
//! are children of the command's span (however late they begin; the
//! parent span has ended by then, which OpenTelemetry allows).
//!
//! [`traceparent`] and [`set_remote_parent`] carry a span's context in a
//! W3C `traceparent` / `tracestate` pair, as the federation bus does for
//! remote commands (`00-<trace id>-<span id>-<flags>`).

use std::collections::HashMap;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use orch_core::gpu::ReplicaKey;
use orch_core::supervise::OpKind;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// For each group whose change an operator command set going, the
/// context of that command's span.
#[derive(Debug, Default)]
pub struct CommandSpans {
    open: HashMap<String, opentelemetry::Context>,
}

impl CommandSpans {
    /// The work on `group` from now on is `span`'s (the latest command on
    /// a group takes it over). A span that is not traced keeps nothing.
    pub fn open(&mut self, group: &str, span: &Span) {
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            self.open.insert(group.to_string(), cx);
        } else {
            self.open.remove(group);
        }
    }

    /// The command's work on `group` is over (ready, stopped, settled).
    pub fn close(&mut self, group: &str) {
        self.open.remove(group);
    }

    /// The command context the operations of `group` belong to, if any (a
    /// crash restart or an adoption has none).
    pub fn parent_of(&self, group: &str) -> Option<&opentelemetry::Context> {
        self.open.get(group)
    }

    /// The groups with a command's work going on.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.open.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// The span of one Docker operation on `replica` of `group`: a child of
/// `parent` (the command it is part of) or a root of its own.
pub fn op_span(
    replica: &ReplicaKey,
    group: &str,
    op: OpKind,
    parent: Option<&opentelemetry::Context>,
) -> Span {
    let span = match op {
        OpKind::Launch | OpKind::Create | OpKind::Start | OpKind::Recreate => {
            tracing::info_span!(parent: None, "agent_start", replica = %replica, group = group, op = ?op)
        }
        OpKind::Stop => {
            tracing::info_span!(parent: None, "agent_stop", replica = %replica, group = group, op = ?op)
        }
        OpKind::Remove => {
            tracing::info_span!(parent: None, "agent_remove", replica = %replica, group = group, op = ?op)
        }
        OpKind::Restart => {
            tracing::info_span!(parent: None, "container_restart", replica = %replica, group = group, op = ?op)
        }
    };
    if let Some(cx) = parent {
        let _ = span.set_parent(cx.clone());
    }
    span
}

/// The span's W3C context: (`traceparent`, `tracestate`), or `None` when
/// the span is not being traced (no OpenTelemetry layer, or disabled).
pub fn traceparent(span: &Span) -> Option<(String, Option<String>)> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some((
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ),
        (!state.is_empty()).then_some(state),
    ))
}

/// Why a `traceparent` was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent: `{0}`")]
pub struct BadTraceparent(pub String);

/// Makes `span` a child of the remote span a `traceparent` names.
pub fn set_remote_parent(
    span: &Span,
    traceparent: &str,
    tracestate: Option<&str>,
) -> Result<(), BadTraceparent> {
    let bad = || BadTraceparent(traceparent.chars().take(80).collect());
    let parts: Vec<&str> = traceparent.split('-').collect();
    let [version, trace, id, flags] = parts[..] else {
        return Err(bad());
    };
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || id.len() != 16
        || flags.len() != 2
    {
        return Err(bad());
    }
    let trace = TraceId::from_hex(trace).map_err(|_| bad())?;
    let id = SpanId::from_hex(id).map_err(|_| bad())?;
    let flags = u8::from_str_radix(flags, 16).map_err(|_| bad())?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let sc = SpanContext::new(trace, id, TraceFlags::new(flags), true, state);
    if !sc.is_valid() {
        return Err(bad());
    }
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn a_span_continues_the_trace_its_traceparent_names() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let remote = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            let span = tracing::info_span!("remote_command");
            set_remote_parent(&span, remote, Some("vendor=x")).unwrap();
            let child = span.in_scope(|| tracing::info_span!("step"));
            let (tp, state) = traceparent(&child).unwrap();
            // The same trace, a new span of this process.
            assert!(
                tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{tp}"
            );
            assert!(!tp.contains("b7ad6b7169203331"), "{tp}");
            assert!(tp.ends_with("-01"), "{tp}");
            assert_eq!(state.as_deref(), Some("vendor=x"));

            // A local root has a trace of its own.
            let (other, _) = traceparent(&tracing::info_span!("local")).unwrap();
            assert!(!other.contains("0af7651916cd43dd8448eb211c80319c"));
        });
    }

    #[test]
    fn operations_join_the_command_whose_work_they_do() {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut open = CommandSpans::default();
            let key = ReplicaKey::new("A", 0);
            {
                let command = tracing::info_span!("group_restart", group = "g");
                open.open("g", &command);
            }
            // The command's span has ended; later operations still join it.
            op_span(&key, "g", OpKind::Stop, open.parent_of("g"));
            op_span(&key, "g", OpKind::Launch, open.parent_of("g"));
            assert_eq!(open.groups().collect::<Vec<_>>(), ["g"]);
            open.close("g");
            assert!(open.is_empty());
            // A crash restart belongs to no command.
            op_span(&key, "g", OpKind::Restart, open.parent_of("g"));
            // Untraced, nothing is kept.
            open.open("h", &Span::none());
            assert!(open.parent_of("h").is_none());
        });
        let spans = exporter.get_finished_spans().unwrap();
        let find = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        let command = find("group_restart");
        for name in ["agent_stop", "agent_start"] {
            let s = find(name);
            assert_eq!(
                s.span_context.trace_id(),
                command.span_context.trace_id(),
                "{name}"
            );
            assert_eq!(s.parent_span_id, command.span_context.span_id(), "{name}");
        }
        let alone = find("container_restart");
        assert_ne!(
            alone.span_context.trace_id(),
            command.span_context.trace_id()
        );
        assert_eq!(alone.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        let span = Span::none();
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-zzzzzzzzzzzzzzzz-01",
        ] {
            assert!(set_remote_parent(&span, bad, None).is_err(), "{bad}");
        }
        // Without a tracing layer there is nothing to carry.
        assert_eq!(traceparent(&Span::none()), None);
    }
}
