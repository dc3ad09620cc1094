//! Traces and metrics across the coordinator, the bus and the workers.
//!
//! The library crates create `tracing` spans and use this crate's API only: [`traceparent`]
//! turns a span into the W3C `traceparent` that travels with an assignment (a NATS header, or
//! the in-process queue) and reaches an agent as `TRACEPARENT`; [`set_parent`] joins a span to
//! one. Both do nothing when no OpenTelemetry layer is installed, and spans are then not even
//! made unless the log filter asks for them.
//!
//! The binaries (feature `export`) install the pipeline with [`export::init`]: OTLP over gRPC or
//! HTTP/protobuf, configured by the standard `OTEL_*` variables, on only when an OTLP endpoint
//! is set.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[cfg(feature = "export")]
pub mod export;

/// The OpenTelemetry API the instruments are made with.
pub use opentelemetry;

/// The meter grove's own instruments come from (a no-op until [`export::init`] installs one).
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter("grove")
}

/// `span` as a W3C `traceparent` (`00-<trace>-<span>-<flags>`), `None` when nothing records it.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// The span context a `traceparent` names, when it is well formed (version 00, non-zero ids).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2
    {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(hex(trace) && hex(span) && hex(flags)) {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let sc = SpanContext::new(trace, span, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// Make `span` a child of the remote span `traceparent` names; nothing when it names none
/// or no OpenTelemetry layer records spans.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(sc) = traceparent.and_then(parse_traceparent) {
        let _ = span.set_parent(Context::new().with_remote_span_context(sc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_none() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(tp).expect("a valid traceparent");
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn without_a_telemetry_layer_nothing_is_propagated() {
        let span = tracing::info_span!("dispatch");
        assert_eq!(traceparent(&span), None);
        set_parent(&span, Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert_eq!(traceparent(&tracing::Span::none()), None);
    }
}
