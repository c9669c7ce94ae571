//! Observability shared by every Verity service.
//!
//! - Logs: `tracing` with an env-filter, as text or JSON lines (`--log-format json`).
//! - Traces: when `--otlp-endpoint` is set, every span is exported over OTLP/gRPC, and the
//!   W3C trace context travels in gRPC metadata ([`grpc_client_interceptor`],
//!   [`grpc_server_span`]), HTTP headers ([`link_http_parent`]), NATS message headers
//!   ([`inject_nats`], [`link_nats_parent`]) and protobuf maps ([`inject_map`],
//!   [`link_map_parent`]), so one transaction is one trace from the gateway to the replica.
//! - Metrics: the `metrics` facade, rendered by the Prometheus exporter at `GET /metrics` on
//!   `--metrics-addr`.
//!
//! Tests check what is exported with `verity_testkit::otlp`, an in-process OTLP receiver.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Observability flags every service flattens into its configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = "VERITY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter, in `tracing`'s env-filter syntax (e.g. `info,verity_sequencer=debug`).
    #[arg(long, env = "VERITY_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP/gRPC endpoint traces are exported to (e.g. `http://otel-collector:4317`); no
    /// export when absent.
    #[arg(long, env = "VERITY_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Address of the Prometheus `/metrics` endpoint; port 0 picks a free port. Not served
    /// when absent.
    #[arg(long, env = "VERITY_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for TelemetryArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            metrics_addr: None,
        }
    }
}

/// Why telemetry could not start (a configuration error: the service exits).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid --log-filter / VERITY_LOG {filter:?}: {reason}")]
    Filter {
        /// The filter given.
        filter: String,
        /// The parse error.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("invalid --otlp-endpoint / VERITY_OTLP_ENDPOINT {endpoint:?}: {reason}")]
    Otlp {
        /// The endpoint given.
        endpoint: String,
        /// The reason.
        reason: String,
    },
    /// The metrics address could not be bound.
    #[error("cannot listen on --metrics-addr / VERITY_METRICS_ADDR {addr}: {source}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A global (logger, recorder) was already installed.
    #[error("telemetry is already initialised: {0}")]
    AlreadyInitialised(String),
    /// The histogram buckets were refused.
    #[error("metric buckets: {0}")]
    Buckets(String),
    /// The exporter runtime could not start.
    #[error("cannot start the trace export thread: {0}")]
    Runtime(std::io::Error),
}

/// Where this process serves `/metrics`, once [`init`] has bound it.
static METRICS_ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// Seconds from a wall-clock time in Unix milliseconds (a mini-block's `timestamp_ms`, taken
/// when the sequencer started producing it) to now; zero if it lies in the future. Services
/// record it as `*_mini_block_age_seconds` where a mini-block passes them, which gives the
/// hot path's per-stage latency on one clock. Across machines it includes their clock offset.
pub fn age_seconds(timestamp_ms: u64) -> f64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    ((now_ms - timestamp_ms as f64) / 1000.0).max(0.0)
}

/// The bound `/metrics` address of this process, if [`init`] serves one.
pub fn metrics_addr() -> Option<SocketAddr> {
    METRICS_ADDR.get().copied()
}

/// Keeps telemetry running; dropping it flushes and stops trace export.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    metrics_addr: Option<SocketAddr>,
}

impl Telemetry {
    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Flushing blocks: do it on a plain thread, never on a runtime worker.
            let _ = std::thread::spawn(move || {
                if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
                    tracing::debug!(%error, "trace export shutdown");
                }
            })
            .join();
        }
    }
}

/// Installs logging, trace export and the metrics endpoint for service `service`. Call once,
/// inside the Tokio runtime.
pub async fn init(
    service: &'static str,
    args: &TelemetryArgs,
) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_new(&args.log_filter).map_err(|e| TelemetryError::Filter {
        filter: args.log_filter.clone(),
        reason: e.to_string(),
    })?;
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = match &args.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(service, endpoint)?),
        None => None,
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;

    let metrics_addr = match args.metrics_addr {
        Some(addr) => {
            let bound = serve_metrics(addr).await?;
            let _ = METRICS_ADDR.set(bound);
            Some(bound)
        }
        None => None,
    };
    tracing::info!(
        service,
        otlp = args.otlp_endpoint.as_deref().unwrap_or("off"),
        metrics = %metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        "telemetry ready"
    );
    Ok(Telemetry {
        provider,
        metrics_addr,
    })
}

fn tracer_provider(
    service: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let otlp_error = |reason: String| TelemetryError::Otlp {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(otlp_error("must start with http:// or https://".into()));
    }
    // The SDK's batch processor exports from its own OS thread, where the tonic exporter finds
    // no Tokio reactor. It gets one of its own: a one-thread runtime that every export runs on.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(TelemetryError::Runtime)?;
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| otlp_error(e.to_string()))?
    };
    let exporter = RuntimeExporter {
        inner: std::sync::Arc::new(exporter),
        runtime: Some(runtime),
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// An exporter whose exports run on a runtime of its own.
#[derive(Debug)]
struct RuntimeExporter {
    inner: std::sync::Arc<opentelemetry_otlp::SpanExporter>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SpanExporter for RuntimeExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        use opentelemetry_sdk::error::OTelSdkError;
        let Some(runtime) = &self.runtime else {
            return Err(OTelSdkError::AlreadyShutdown);
        };
        let inner = self.inner.clone();
        match runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, while the provider is built and before any export holds a clone.
        if let Some(inner) = std::sync::Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

impl Drop for RuntimeExporter {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed from async code; this never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Bucket bounds of every `*_seconds` histogram: exported as Prometheus histograms (not
/// summaries), so they aggregate across pods and `verity bench` can take percentiles of the
/// difference between two scrapes. From half a millisecond (one stage of the hot path) to ten
/// minutes (a proof).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Binds `addr` and serves the Prometheus text format at `GET /metrics`; returns the bound
/// address.
async fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, TelemetryError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            SECONDS_BUCKETS,
        )
        .map_err(|e| TelemetryError::Buckets(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Metrics { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| TelemetryError::Metrics { addr, source })?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                record_process_cpu();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

/// Sets `process_cpu_seconds_total` (user + system CPU time of this process, the name
/// Prometheus client libraries use) from `/proc/self/stat`, right before each scrape. Linux only;
/// elsewhere the gauge is absent. `/proc` counts in USER_HZ, which is 100 on every Linux ABI.
fn record_process_cpu() {
    if let Some(seconds) = process_cpu_seconds() {
        metrics::gauge!("process_cpu_seconds_total").set(seconds);
    }
}

/// User + system CPU seconds this process has used (Linux; `None` elsewhere).
pub fn process_cpu_seconds() -> Option<f64> {
    cpu_seconds_of_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User + system seconds from the text of `/proc/<pid>/stat`.
fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    // Field 3 is then index 0, so utime (14) and stime (15) are indices 11 and 12.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the signal to drain and stop.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// service that announced itself ready (its ready file) before a task got to poll it would
/// otherwise die of a SIGTERM sent right then, by the default action, without draining (seen in
/// CI: `k8s_lease::an_unreachable_api_server_does_not_stop_it_from_starting`). Call it inside a
/// Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .inspect_err(|error| tracing::error!(%error, "cannot listen for {name}"))
                .ok()
        };
        let mut int = install(SignalKind::interrupt(), "SIGINT");
        let mut term = install(SignalKind::terminate(), "SIGTERM");
        async move {
            async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = next(int.as_mut()) => tracing::info!("SIGINT: shutting down"),
                () = next(term.as_mut()) => tracing::info!("SIGTERM: shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
        tracing::info!("SIGINT: shutting down");
    }
}

// ---------------------------------------------------------------------------------------------
// Trace-context propagation.
// ---------------------------------------------------------------------------------------------

fn inject_context(cx: &Context, injector: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(cx, injector);
}

fn extract_context(extractor: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(extractor)
}

/// Sets `span`'s parent to the remote context in `extractor`, if it carries a valid one.
fn link(extractor: &dyn Extractor, span: &tracing::Span) {
    let cx = extract_context(extractor);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The current span's context as W3C `traceparent`/`tracestate` entries (empty when no trace
/// is being recorded).
pub fn inject_map() -> HashMap<String, String> {
    let mut map = HashMap::new();
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        inject_context(&cx, &mut map);
    }
    map
}

/// Sets `span`'s parent to the context in `map` (from [`inject_map`]).
pub fn link_map_parent(map: &HashMap<String, String>, span: &tracing::Span) {
    link(map, span);
}

/// The current trace id in hex, if a trace is being recorded.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// A gRPC client channel whose requests carry the current trace context.
pub type TracedChannel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
>;

/// Wraps a channel so every request carries the current span's trace context.
pub fn traced(channel: tonic::transport::Channel) -> TracedChannel {
    tonic::service::interceptor::InterceptedService::new(channel, grpc_client_interceptor)
}

/// A tonic client interceptor adding the current span's context to the request metadata.
#[allow(clippy::result_large_err)]
pub fn grpc_client_interceptor(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        inject_context(&cx, &mut MetadataInjector(request.metadata_mut()));
    }
    Ok(request)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A span for one incoming gRPC request, child of the caller's trace if it sent one (for
/// tonic's `Server::trace_fn`).
pub fn grpc_server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %request.uri().path(),
        rpc.system = "grpc",
    );
    link(&HeaderExtractor(request.headers()), &span);
    span
}

/// Sets `span`'s parent to the trace context in HTTP request headers, if any.
pub fn link_http_parent(headers: &http::HeaderMap, span: &tracing::Span) {
    link(&HeaderExtractor(headers), span);
}

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Adds the current span's context to NATS message headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        inject_context(&cx, &mut NatsInjector(headers));
    }
}

/// Sets `span`'s parent to the trace context in NATS message headers, if any.
pub fn link_nats_parent(headers: Option<&async_nats::HeaderMap>, span: &tracing::Span) {
    if let Some(headers) = headers {
        link(&NatsExtractor(headers), span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn remote() -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
            SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    /// utime and stime are read after the parenthesised command name, spaces in it included.
    #[test]
    fn cpu_seconds_come_from_utime_and_stime() {
        let stat = "4242 (verity seq) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 125 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_of_stat(stat), Some(3.75));
        assert_eq!(cpu_seconds_of_stat("garbage"), None);
        let own = std::fs::read_to_string("/proc/self/stat").ok();
        if let Some(own) = own {
            assert!(cpu_seconds_of_stat(&own).is_some(), "{own}");
        }
    }

    /// Ages are measured against the wall clock and never negative.
    #[test]
    fn ages_are_seconds_since_a_unix_millisecond_time() {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let age = age_seconds(now_ms - 1500);
        assert!((1.4..60.0).contains(&age), "{age}");
        assert_eq!(age_seconds(now_ms + 60_000), 0.0);
    }

    #[test]
    fn contexts_round_trip_through_every_carrier() {
        let cx = remote();
        let mut map = HashMap::new();
        inject_context(&cx, &mut map);
        assert_eq!(
            map.get("traceparent").map(String::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = extract_context(&map);
        assert_eq!(
            back.span().span_context().trace_id(),
            cx.span().span_context().trace_id()
        );

        let mut nats = async_nats::HeaderMap::new();
        inject_context(&cx, &mut NatsInjector(&mut nats));
        let back = extract_context(&NatsExtractor(&nats));
        assert_eq!(
            back.span().span_context().span_id(),
            cx.span().span_context().span_id()
        );

        let mut metadata = tonic::metadata::MetadataMap::new();
        inject_context(&cx, &mut MetadataInjector(&mut metadata));
        let headers = metadata.into_headers();
        let back = extract_context(&HeaderExtractor(&headers));
        assert!(back.span().span_context().is_valid());
        assert!(back.span().span_context().is_remote());
    }

    #[test]
    fn no_context_means_no_headers() {
        assert!(inject_map().is_empty());
        assert!(current_trace_id().is_none());
        let empty = HashMap::new();
        assert!(!extract_context(&empty).span().span_context().is_valid());
    }
}
