//! What every Verity service binary shares: the runner ([`run`], [`main!`]) that parses the
//! flags, starts telemetry, opens the service and serves it until SIGINT/SIGTERM cancels its
//! [`CancellationToken`]; gRPC serving (the standard health service `grpc.health.v1`,
//! reflection so `grpcurl` works, a tracing span per request linked to the caller's trace,
//! shutdown that drains in-flight requests); the ready file; and the one map from errors to
//! gRPC statuses ([`status`]).
//!
//! The ready file is how the devnet and the end-to-end tests learn where a service listens
//! without racing for fixed ports: a service bound to port 0 writes its real addresses there,
//! atomically, once it accepts requests.

pub mod rate;
pub mod status;
pub mod tls;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use clap::FromArgMatches as _;
use tokio::net::TcpListener;
pub use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{service::Routes, transport::server::TcpIncoming};
use verity_bus::NatsArgs;
use verity_telemetry::TelemetryArgs;

#[doc(hidden)]
pub use {anyhow, mimalloc::MiMalloc};

/// The flags every service flattens into its configuration: the bus, where it listens, how it
/// reports.
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: tls::TlsArgs,
}

/// A service binary: opened from its flags, then served until its token is cancelled.
pub trait Service: Sized {
    /// The binary's flags (clap derive; every flag has a `VERITY_*` env var). They flatten
    /// [`ServiceArgs`] in, which the runner reads for itself.
    type Config: clap::Parser;
    /// The name telemetry reports (`service.name`).
    const NAME: &'static str;
    /// Validates the configuration, opens storage, connects.
    fn open(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>>;
    /// Serves until `stop` is cancelled, then drains and returns.
    fn serve(self, stop: CancellationToken) -> impl Future<Output = anyhow::Result<()>>;
}

/// A service's `main` in five steps: parse the flags, start telemetry (kept alive until the
/// end), open the service, serve it, and on SIGINT/SIGTERM cancel its token so it drains.
pub fn run<S: Service>() -> anyhow::Result<()> {
    let matches = <S::Config as clap::CommandFactory>::command().get_matches();
    let parsed = <S::Config as clap::FromArgMatches>::from_arg_matches(&matches)
        .and_then(|config| Ok((config, ServiceArgs::from_arg_matches(&matches)?)));
    let (config, shared) = parsed.unwrap_or_else(|error| error.exit());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let _telemetry = verity_telemetry::init(S::NAME, &shared.telemetry).await?;
            let service = S::open(config).await?;
            service
                .serve(stop_when(verity_telemetry::shutdown_signal()))
                .await
        })
}

/// The whole `main.rs` of a service binary: mimalloc as the allocator (under load glibc's
/// malloc took 10-20 % of a service's CPU in profiles, ADR 0008) and [`run`].
#[macro_export]
macro_rules! main {
    ($service:ty) => {
        #[global_allocator]
        static ALLOCATOR: $crate::MiMalloc = $crate::MiMalloc;

        fn main() -> $crate::anyhow::Result<()> {
            $crate::run::<$service>()
        }
    };
}

/// Listening flags every service flattens into its configuration.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address of the gRPC server; port 0 picks a free port (see --ready-file).
    #[arg(long, env = "VERITY_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// A JSON file written once the service is ready, with the addresses it bound.
    #[arg(long, env = "VERITY_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Also serve the gRPC health service alone, in plaintext, on this address: for probes
    /// that cannot speak TLS (kubelet's gRPC probes) when --tls-cert is given.
    #[arg(long, env = "VERITY_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
}

impl ServerArgs {
    /// The gRPC address, or the service's default port on 127.0.0.1.
    pub fn grpc_addr_or(&self, default_port: u16) -> SocketAddr {
        self.grpc_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)))
    }

    /// Binds the gRPC listener (`--grpc-addr`, or `default_port` on 127.0.0.1): the listener
    /// and the address it got.
    pub async fn bind(&self, default_port: u16) -> Result<(TcpListener, SocketAddr), ServeError> {
        let listener = bind(self.grpc_addr_or(default_port)).await?;
        let addr = local_addr(&listener);
        Ok((listener, addr))
    }
}

/// Errors while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} (flag --grpc-addr / VERITY_GRPC_ADDR): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The ready file could not be written.
    #[error("cannot write ready file {path}: {source}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
}

/// Binds a TCP listener, naming the flag on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// The local address of a bound listener.
pub fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// How a gRPC server admits callers: over mutual TLS with `tls`, each method only for the roles
/// `policy` names; without TLS, everyone (see [`tls`]).
#[derive(Debug, Clone)]
pub struct Security {
    /// The server's TLS material (`None`: plaintext, nobody authorized).
    pub tls: Option<tls::Tls>,
    /// Who may call what.
    pub policy: tls::Policy,
    /// Where health alone is served in plaintext (`--health-addr`), if anywhere.
    pub health_addr: Option<SocketAddr>,
}

impl Security {
    /// Loads the `--tls-*` flags of `args` for a server applying `policy`; logs when gRPC is
    /// served without TLS.
    pub fn load(args: &ServiceArgs, policy: tls::Policy) -> Result<Self, tls::TlsError> {
        let tls = args.tls.load()?;
        if tls.is_none() {
            tracing::warn!(
                "gRPC without TLS (no --tls-cert): every caller may call every method; give \
                 --tls-cert, --tls-key and --tls-ca outside tests"
            );
        }
        Ok(Self {
            tls,
            policy,
            health_addr: args.server.health_addr,
        })
    }
}

/// Serves `routes` plus health and reflection on `listener` until `shutdown` resolves, then
/// stops accepting and lets in-flight requests finish. `services` are the fully qualified names
/// reported as SERVING by the health service. With TLS in `security`, every call but health's
/// needs a client certificate of a role its policy admits.
pub async fn serve_grpc(
    routes: Routes,
    services: &[&str],
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    security: Security,
) -> Result<(), ServeError> {
    serve_grpc_ready(
        routes,
        services,
        listener,
        shutdown,
        security,
        always_ready(),
    )
    .await
}

/// Whether a service should be sent requests, as its gRPC health reports it: `None` when it
/// is ready, else why not (a probe then sees NOT_SERVING; the reason is logged).
pub type Readiness = tokio::sync::watch::Receiver<Option<String>>;

/// A service's readiness, set by the service.
#[derive(Debug, Clone)]
pub struct ReadinessSender(Arc<tokio::sync::watch::Sender<Option<String>>>);

impl ReadinessSender {
    /// Ready until told otherwise.
    pub fn new() -> (Self, Readiness) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        (Self(Arc::new(tx)), rx)
    }

    /// Sets why the service is not ready (`None`: it is).
    pub fn set(&self, reason: Option<String>) {
        self.0.send_if_modified(|current| {
            let changed = *current != reason;
            *current = reason.clone();
            changed
        });
    }

    /// The reason it is not ready now, if any.
    pub fn reason(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// A receiver of it, for [`serve_grpc_ready`].
    pub fn subscribe(&self) -> Readiness {
        self.0.subscribe()
    }
}

/// Ready for good: the health of a service with nothing that makes it unready (the sender is
/// gone, so the status is set once).
fn always_ready() -> Readiness {
    tokio::sync::watch::channel(None).1
}

/// [`serve_grpc`], reporting `services` (and the server as a whole, the empty service name
/// probes ask for) SERVING while `ready` says so and NOT_SERVING otherwise.
pub async fn serve_grpc_ready(
    routes: Routes,
    services: &[&str],
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    security: Security,
    mut ready: Readiness,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let names: Vec<String> = std::iter::once(String::new())
        .chain(services.iter().map(|s| s.to_string()))
        .collect();
    let watching = tokio::spawn(async move {
        loop {
            let reason = ready.borrow_and_update().clone();
            let status = match &reason {
                None => tonic_health::ServingStatus::Serving,
                Some(reason) => {
                    tracing::warn!(reason, "not ready: health reports NOT_SERVING");
                    tonic_health::ServingStatus::NotServing
                }
            };
            for name in &names {
                reporter.set_service_status(name, status).await;
            }
            if ready.changed().await.is_err() {
                return;
            }
        }
    });
    let _stop_watching = tokio_util::task::AbortOnDropHandle::new(watching);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(verity_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let routes = routes.add_service(health.clone()).add_service(reflection);
    // The plaintext health-only listener, bound before serving so a bad address fails the
    // start; it stops with the main server.
    let health_only = match security.health_addr {
        Some(addr) => {
            let listener = bind(addr).await?;
            let stop = CancellationToken::new();
            let serving = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_routes(Routes::new(health))
                    .serve_with_incoming_shutdown(
                        TcpIncoming::from(listener).with_nodelay(Some(true)),
                        stop.clone().cancelled_owned(),
                    ),
            );
            Some((stop.drop_guard(), serving))
        }
        None => None,
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    builder
        .trace_fn(verity_telemetry::grpc_server_span)
        .layer(tls::AuthorizeLayer::new(
            security.policy,
            security.tls.is_some(),
        ))
        .add_routes(routes)
        // No Nagle: a small answer written while an earlier one is unacknowledged would wait
        // for the peer's delayed ACK (40 ms on Linux).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    drop(health_only);
    Ok(())
}

/// Serves only health and reflection (a service whose work is not a gRPC API: it still answers
/// probes) on `listener` until `stop` is cancelled; reflection needs an admin certificate when
/// `security` has TLS (load it with [`tls::Policy::HEALTH_ONLY`]).
pub async fn serve_health(
    listener: TcpListener,
    stop: CancellationToken,
    security: Security,
) -> Result<(), ServeError> {
    serve_health_ready(listener, stop, security, always_ready()).await
}

/// [`serve_health`], NOT_SERVING while `ready` gives a reason.
pub async fn serve_health_ready(
    listener: TcpListener,
    stop: CancellationToken,
    security: Security,
    ready: Readiness,
) -> Result<(), ServeError> {
    serve_grpc_ready(
        Routes::default(),
        &[],
        listener,
        stop.cancelled_owned(),
        security,
        ready,
    )
    .await
}

/// Writes the ready file (when configured) atomically: a JSON object of `fields`, plus
/// `metrics` (the Prometheus endpoint) when telemetry serves one.
pub fn write_ready_file(path: Option<&Path>, fields: &[(&str, String)]) -> Result<(), ServeError> {
    let Some(path) = path else { return Ok(()) };
    let mut object: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), serde_json::Value::String(v.clone())))
        .collect();
    if let Some(metrics) = verity_telemetry::metrics_addr() {
        object.insert(
            "metrics".into(),
            serde_json::Value::String(metrics.to_string()),
        );
    }
    let text = serde_json::Value::Object(object).to_string();
    let tmp = path.with_extension("tmp");
    let error = |source| ServeError::ReadyFile {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, text).map_err(error)?;
    std::fs::rename(&tmp, path).map_err(error)
}

/// A token cancelled once `shutdown` resolves (tests pass a future of their own).
pub fn stop_when(shutdown: impl Future<Output = ()> + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn({
        let token = token.clone();
        async move {
            shutdown.await;
            token.cancel();
        }
    });
    token
}

/// Exponential back-off for a loop that retries what failed: the delay doubles after each
/// failure up to a ceiling and returns to the start after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// The delay to wait now; the one after it is twice as long (up to the ceiling).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Waits [`next_delay`](Self::next_delay), or less if `stop` is cancelled meanwhile.
    pub async fn wait(&mut self, stop: &CancellationToken) {
        tokio::select! {
            _ = tokio::time::sleep(self.next_delay()) => {}
            _ = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_its_ceiling_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn waiting_ends_when_the_service_stops() {
        let stop = stop_when(async {});
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        let started = std::time::Instant::now();
        backoff.wait(&stop).await;
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
