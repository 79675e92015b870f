//! Logs and traces. Logs go to stderr (plain text off a terminal). When
//! `MESHWORK_OTLP_ENDPOINT` is set, the command path's spans are exported over OTLP/gRPC:
//! `meshwork.command` (one per submitted batch) with children `meshwork.verify_order`,
//! `meshwork.persist` and `meshwork.fanout`. Unset, those spans are TRACE-level callsites that
//! no layer enables, so they cost nothing.

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The log filter when `MESHWORK_LOG` is unset: info, except webrtc-rs internals, which warn
/// on every normal connection (the DTLS server name, the first SCTP packet before the
/// association exists, ICE checks before the remote candidates are known).
pub const DEFAULT_LOG: &str = "info,rtc_dtls=error,rtc_ice=error,rtc_sctp=error,rtc=error";

/// Span target of the command path.
pub const TARGET: &str = "meshwork.trace";

/// Keeps the exporter alive; flush it with [`Telemetry::shutdown`].
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. Must run inside a tokio runtime when exporting.
    ///
    /// # Errors
    /// A sentence when the OTLP exporter cannot be built.
    pub fn init() -> Result<Self, String> {
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(
                tracing_subscriber::EnvFilter::try_from_env("MESHWORK_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
            );
        let endpoint = std::env::var("MESHWORK_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty());
        let Some(endpoint) = endpoint else {
            tracing_subscriber::registry().with(logs).init();
            return Ok(Self::default());
        };
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("meshwork-server")
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("meshwork-server");
        let traces = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::TRACE),
            );
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .init();
        tracing::info!(%endpoint, "exporting traces over OTLP");
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("meshwork-server: flushing traces: {e}");
        }
    }
}
