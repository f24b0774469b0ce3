//! How every binary tells people what happens: logs (plain or JSON lines on stderr), one
//! OpenTelemetry span per flow exported over OTLP/gRPC when an endpoint is configured,
//! errors rendered with their causes ([`report`]), and repeated warnings kept to a few lines
//! ([`throttle`]).

pub mod pem;
pub mod report;
pub mod throttle;

pub use pem::pem_problem;
pub use report::Report;
pub use throttle::{Suppressed, Throttle};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The `log` section of a configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    pub format: LogFormat,
    /// An `EnvFilter` directive, such as `info` or `van_router=debug`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Plain,
            level: "info".into(),
        }
    }
}

impl LogSection {
    /// Says what is wrong with `level`, if anything.
    pub fn check(&self) -> Result<(), String> {
        filter(&self.level).map(drop)
    }
}

/// A log filter from a directive, refusing first what tracing-subscriber's parser handles
/// badly (found by fuzzing, fuzz/README.md): non-ASCII text can make it panic, and a span
/// field filter (`[span{field=value}]`) compiles a regular expression that can take minutes.
/// Directives are ASCII, and target=level ones are all this project's spans need.
pub fn filter(directive: &str) -> Result<EnvFilter, String> {
    if !directive.is_ascii() {
        return Err("must be ASCII text: a directive such as info or van_router=debug".into());
    }
    if directive.contains(['{', '}']) {
        return Err("span field filters ({...}) are not supported; use target=level".into());
    }
    EnvFilter::try_new(directive).map_err(|e| format!("invalid filter: {e}"))
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Plain,
    Json,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("a global tracing subscriber is already installed")]
    AlreadySet,
}

/// Keeps the span exporter alive; flushes pending spans when shut down.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber. Must run inside a Tokio runtime when `otlp_endpoint` is
/// set (the gRPC exporter needs one).
pub fn init(
    log: &LogSection,
    otlp_endpoint: Option<&str>,
    router_id: &str,
) -> Result<Telemetry, TelemetryError> {
    let filter = std::env::var("VAN_LOG")
        .ok()
        .and_then(|v| filter(&v).ok())
        .or_else(|| filter(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match log.format {
        LogFormat::Json => Box::new(fmt.json().with_filter(filter)),
        LogFormat::Plain => Box::new(fmt.with_filter(filter)),
    };
    let (otel, provider) = match otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| TelemetryError::Exporter {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?;
            let resource = opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("van-router")
                .with_attribute(opentelemetry::KeyValue::new(
                    "van.router.id",
                    router_id.to_string(),
                ))
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("van-router");
            // Export flows only: per-frame or per-task spans would swamp a collector.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter_fn(|meta| meta.is_span() && meta.name() == "flow"));
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|_| TelemetryError::AlreadySet)?;
    Ok(Telemetry { provider })
}

/// Makes `span` continue the trace an incoming request names in its W3C `traceparent` (and
/// `tracestate`) headers, read with `header`. Without a valid `traceparent`, or without an
/// OTLP exporter, nothing changes.
/// The W3C `traceparent` of `span`, for the next router of a flow to continue; `None` when
/// the span is not exported (no OpenTelemetry layer, or disabled).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct One(Option<String>);
    impl opentelemetry::propagation::Injector for One {
        fn set(&mut self, key: &str, value: String) {
            if key == "traceparent" {
                self.0 = Some(value);
            }
        }
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut out = One(None);
    opentelemetry_sdk::propagation::TraceContextPropagator::new().inject_context(&cx, &mut out);
    out.0
}

pub fn continue_trace(span: &tracing::Span, header: impl Fn(&str) -> Option<String>) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    struct Headers(Vec<(&'static str, String)>);
    impl opentelemetry::propagation::Extractor for Headers {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| *k).collect()
        }
    }
    let Some(parent) = header("traceparent") else {
        return;
    };
    let mut h = vec![("traceparent", parent)];
    if let Some(state) = header("tracestate") {
        h.push(("tracestate", state));
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(h));
    use opentelemetry::trace::TraceContextExt;
    if cx.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_the_parser_handles_badly_are_refused_before_it_sees_them() {
        // Both made tracing-subscriber panic or spin for seconds (fuzz/README.md).
        assert!(
            super::filter("I, [{\u{a48b}}")
                .unwrap_err()
                .contains("ASCII")
        );
        let slow = super::filter("[{x=a................}]").unwrap_err();
        assert!(slow.contains("span field filters"), "{slow}");
        assert!(super::filter("info,van_router=debug").is_ok());
    }
}
