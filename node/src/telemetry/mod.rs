//! Logging, traces and metrics.
//!
//! Logs are human-readable tracing on stderr (stdout belongs to `--json` output);
//! `RUST_LOG` picks the level (default `warn`, or `info` with `-v`).
//!
//! Traces and metrics go out over OTLP/HTTP (protobuf) when the standard variables ask for
//! it: `OTEL_EXPORTER_OTLP_ENDPOINT` (both), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`; `OTEL_SERVICE_NAME` names the node (default
//! `introducer`), `OTEL_SDK_DISABLED=true` turns it all off. The exporters run on threads of
//! their own with bounded queues (a backend that is slow or gone costs dropped spans, never
//! a stalled node), and are built here, before the node's actix system starts: the batch
//! processor must not be created inside it. [`Telemetry::shutdown`] flushes them on exit.
//!
//! Crates: `tracing-opentelemetry` turns the node's tracing spans into OpenTelemetry spans,
//! and `opentelemetry-otlp` (its blocking reqwest client) exports them; both maintained by
//! the projects that define the formats, so the node writes no OTLP itself.

pub mod spans;
pub mod stats;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::io::IsTerminal;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// What could not be set up (the node runs on without it).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter { signal: &'static str, source: opentelemetry_otlp::ExporterBuildError },
}

/// The exporters; [`Telemetry::shutdown`] (or dropping it) sends what they hold.
#[derive(Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
    metrics: Option<SdkMeterProvider>,
}

fn set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

fn resource() -> Resource {
    let builder = Resource::builder();
    match set("OTEL_SERVICE_NAME") {
        true => builder.build(),
        false => builder.with_service_name("introducer").build(),
    }
}

/// Logs to stderr, and traces and metrics to the OTLP endpoint the environment names.
/// An exporter that cannot be built is reported and left out; logging still starts.
pub fn init(verbose: bool) -> (Telemetry, Option<TelemetryError>) {
    let default = if verbose { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    let enabled = !std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let (telemetry, error) = match enabled {
        true => exporters(),
        false => (Telemetry::default(), None),
    };
    let traces = telemetry.traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("introducer"))
            // What a backend needs is in the spans' own attributes; the rest is noise.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(|meta| meta.target() == spans::TARGET))
    });
    let _ = tracing_subscriber::registry().with(logs).with(traces).try_init();
    (telemetry, error)
}

fn exporters() -> (Telemetry, Option<TelemetryError>) {
    let mut telemetry = Telemetry::default();
    let mut error = None;
    if set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        match opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build() {
            Ok(exporter) => {
                let provider =
                    SdkTracerProvider::builder().with_resource(resource()).with_batch_exporter(exporter).build();
                telemetry.traces = Some(provider);
            }
            Err(source) => error = Some(TelemetryError::Exporter { signal: "traces", source }),
        }
    }
    if set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        match opentelemetry_otlp::MetricExporter::builder().with_http().with_protocol(Protocol::HttpBinary).build() {
            Ok(exporter) => {
                let provider =
                    SdkMeterProvider::builder().with_resource(resource()).with_periodic_exporter(exporter).build();
                stats::export(&provider.meter("introducer"));
                telemetry.metrics = Some(provider);
            }
            Err(source) => error = Some(TelemetryError::Exporter { signal: "metrics", source }),
        }
    }
    (telemetry, error)
}

impl Telemetry {
    /// Sends what the exporters hold and stops them (what the node did last is in the
    /// backend once this returns, or the backend could not be reached).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            let _ = metrics.shutdown();
        }
        if let Some(traces) = self.traces.take() {
            let _ = traces.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}
