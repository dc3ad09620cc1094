//! The export pipeline the binaries install: OTLP traces and metrics, configured by the
//! standard variables (`OTEL_EXPORTER_OTLP_ENDPOINT` and its per-signal forms,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` = `grpc` or `http/protobuf`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_METRIC_EXPORT_INTERVAL`,
//! `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` = `none`, `OTEL_SDK_DISABLED`).
//!
//! Off unless an endpoint is set: then no layer is installed, no span is made for telemetry's
//! sake and every [`crate::meter`] instrument is a no-op.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;

/// Why the pipeline could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// An OTLP exporter could not be built from the configuration.
    #[error("OpenTelemetry {signal} exporter: {source}")]
    Build {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Which signals the environment asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    pub traces: bool,
    pub metrics: bool,
}

impl Wanted {
    /// Read from the variables `env` gives (the process's in [`init`]).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
        let none = |k: &str| env(k).is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Self::default();
        }
        let any = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        Self {
            traces: (any || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !none("OTEL_TRACES_EXPORTER"),
            metrics: (any || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) && !none("OTEL_METRICS_EXPORTER"),
        }
    }
}

/// The installed providers; [`Telemetry::shutdown`] (or drop) flushes what is still buffered.
/// Call it while the Tokio runtime the exporters were made in is still running.
#[derive(Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Whether anything is exported.
    pub fn is_on(&self) -> bool {
        self.tracer.is_some() || self.meter.is_some()
    }

    /// Flush and stop the exporters.
    pub fn shutdown(&mut self) {
        if let Some(t) = self.tracer.take()
            && let Err(e) = t.shutdown()
        {
            eprintln!("warning: flushing traces: {e}");
        }
        if let Some(m) = self.meter.take()
            && let Err(e) = m.shutdown()
        {
            eprintln!("warning: flushing metrics: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A boxed layer of the subscriber `S`.
pub type BoxLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// Install what the environment asks for. `service` is the default `service.name`
/// (`OTEL_SERVICE_NAME` wins). Must be called inside a Tokio runtime (the gRPC exporter's
/// channel lives on it). The layer records grove's own spans only (targets `grove*`, debug
/// and above), not those of the libraries under it.
pub fn init<S>(service: &str) -> Result<(Option<BoxLayer<S>>, Telemetry), ExportError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync + 'static,
{
    let wanted = Wanted::from_env(|k| std::env::var(k).ok());
    let mut telemetry = Telemetry::default();
    if !wanted.traces && !wanted.metrics {
        return Ok((None, telemetry));
    }
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let resource = resource.build();
    let mut layer = None;
    if wanted.traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .build()
            .map_err(|source| ExportError::Build { signal: "trace", source })?;
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("grove");
        let targets = Targets::new().with_target("grove", tracing::Level::DEBUG);
        layer = Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(targets).boxed());
        telemetry.tracer = Some(provider);
    }
    if wanted.metrics {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .build()
            .map_err(|source| ExportError::Build { signal: "metric", source })?;
        let provider =
            SdkMeterProvider::builder().with_resource(resource).with_periodic_exporter(exporter).build();
        opentelemetry::global::set_meter_provider(provider.clone());
        telemetry.meter = Some(provider);
    }
    Ok((layer, telemetry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_endpoint_turns_export_on() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(Wanted::from_env(env(&[])), Wanted::default());
        assert_eq!(Wanted::from_env(env(&[("OTEL_SERVICE_NAME", "x")])), Wanted::default());
        let both = Wanted { traces: true, metrics: true };
        assert_eq!(Wanted::from_env(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")])), both);
        assert_eq!(
            Wanted::from_env(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://h/v1/traces")])),
            Wanted { traces: true, metrics: false }
        );
        assert_eq!(
            Wanted::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
                ("OTEL_METRICS_EXPORTER", "none")
            ])),
            Wanted { traces: true, metrics: false }
        );
        assert_eq!(
            Wanted::from_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h"),
                ("OTEL_SDK_DISABLED", "TRUE")
            ])),
            Wanted::default()
        );
    }
}
