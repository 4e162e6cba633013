//! Spans that outlive one call, and W3C trace context across hosts.
//!
//! The daemon only emits `tracing` spans; whether they leave the process
//! (OTLP) is the binary's choice. The spans that matter to an operator:
//! `group_start` (from the request until the group is ready or stopped),
//! one `agent_start` per replica launched or started under it (on the
//! operation's own task), `gpu_prepare` inside an agent start, and
//! `reconcile` for each supervisor decision that acted. [`GroupSpans`]
//! keeps a group start's span while its waves of agents start, so the
//! agents' spans are its children however late they begin.
//!
//! [`traceparent`] and [`set_remote_parent`] carry a span's context in a
//! W3C `traceparent` / `tracestate` pair, as the federation bus does for
//! remote commands (`00-<trace id>-<span id>-<flags>`).

use std::collections::HashMap;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The open `group_start` span of each group being started.
#[derive(Debug, Default)]
pub struct GroupSpans {
    open: HashMap<String, Span>,
}

impl GroupSpans {
    /// `span` covers the start of `group` until [`GroupSpans::close`].
    pub fn open(&mut self, group: &str, span: Span) {
        self.open.insert(group.to_string(), span);
    }

    /// The group's start is over (ready, stopping or stopped): its span
    /// ends once no other group started by the same command holds it.
    pub fn close(&mut self, group: &str) {
        self.open.remove(group);
    }

    /// The span an agent of `group` starts under: the group's start if
    /// one is open, else none (a restart, an adoption).
    pub fn parent_of(&self, group: &str) -> Option<&Span> {
        self.open.get(group)
    }
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
