//! Verity gateway: Ethereum JSON-RPC 2.0 over HTTP for ordinary Ethereum tooling.
//!
//! Writes (`eth_sendRawTransaction`) go to ingress; reads go to a replica; `pending` nonces come
//! from the sequencer, the only one that knows its mempool. The gateway keeps no state and
//! scales horizontally, except for polling filters (see [`filters`]). Method coverage is listed
//! in the README.

pub mod debug;
pub mod eth;
pub mod feed;
pub mod fees;
pub mod filters;
pub mod jsonrpc;
pub mod limits;
pub mod ots;
pub mod proof;
pub mod realtime;
pub mod simulate;
pub mod submit;
pub mod txpool;
pub mod ws;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::Value;
use tonic::Status;
use tracing::Instrument as _;
use verity_proto::v1;
use verity_server::{CancellationToken, ServiceArgs};

use jsonrpc::RpcError;

/// Default gRPC (health) port of the gateway.
pub const DEFAULT_GRPC_PORT: u16 = 7600;
/// Chain events the feed buffers for its slowest subscription before that one is cut off.
const FEED_CAPACITY: usize = 4_096;

/// `verity-gateway` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// Address of the JSON-RPC HTTP server.
    #[arg(long, env = "VERITY_HTTP_ADDR", default_value = "127.0.0.1:8545")]
    pub http_addr: SocketAddr,
    /// gRPC URL of ingress (writes).
    #[arg(
        long,
        env = "VERITY_INGRESS_URL",
        default_value = "http://127.0.0.1:7200"
    )]
    pub ingress_url: String,
    /// gRPC URL of a replica (reads).
    #[arg(
        long,
        env = "VERITY_REPLICA_URL",
        default_value = "http://127.0.0.1:7300"
    )]
    pub replica_url: String,
    /// gRPC URL of a witness replica, which keeps the state tree's journal: `eth_getProof` is
    /// answered from it (without one, `eth_getProof` says it is not served here).
    #[arg(long, env = "VERITY_PROOF_REPLICA_URL")]
    pub proof_replica_url: Option<String>,
    /// gRPC URL of the sequencer (pending nonces); without it, the gateway follows the
    /// sequencer lease on `--nats-url` to whichever sequencer is active.
    #[arg(long, env = "VERITY_SEQUENCER_URL")]
    pub sequencer_url: Option<String>,
    /// Most WebSocket connections open at once.
    #[arg(long, env = "VERITY_MAX_WS_CONNECTIONS", default_value_t = 1_000)]
    pub max_ws_connections: usize,
    /// Most WebSocket connections open at once from one client IP.
    #[arg(long, env = "VERITY_MAX_WS_CONNECTIONS_PER_IP", default_value_t = 50)]
    pub max_ws_connections_per_ip: usize,
    /// Seconds a WebSocket connection with no subscription may stay silent before it is closed
    /// (code 1001); one with subscriptions stays open while they report.
    #[arg(long, env = "VERITY_WS_IDLE_SECS", default_value_t = 300)]
    pub ws_idle_secs: u64,
    /// Most subscriptions on one WebSocket connection.
    #[arg(long, env = "VERITY_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub max_subscriptions_per_connection: usize,
    /// Messages queued for one WebSocket connection before its client counts as too slow and is
    /// disconnected (close code 1008).
    #[arg(long, env = "VERITY_WS_QUEUE", default_value_t = 4_096)]
    pub ws_queue: usize,
    /// How long `eth_sendRawTransactionSync`, `realtime_sendRawTransaction` and `eth_callAfter`
    /// wait when the caller names no timeout, in milliseconds.
    #[arg(long, env = "VERITY_SYNC_TIMEOUT_MS", default_value_t = 5_000)]
    pub sync_timeout_ms: u64,
    /// The longest wait a caller may ask of those methods, in milliseconds.
    #[arg(long, env = "VERITY_MAX_SYNC_TIMEOUT_MS", default_value_t = 30_000)]
    pub max_sync_timeout_ms: u64,
    /// Largest request body (HTTP) or message (WebSocket), in bytes.
    #[arg(long, env = "VERITY_MAX_BODY_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most calls in one JSON-RPC batch.
    #[arg(long, env = "VERITY_MAX_BATCH_SIZE", default_value_t = 1_000)]
    pub max_batch_size: usize,
    /// Most calls of one HTTP batch answered at once (the others wait their turn). A batch as a
    /// whole has the request timeout: calls it has not answered by then get -32002.
    #[arg(long, env = "VERITY_MAX_BATCH_CONCURRENCY", default_value_t = 4)]
    pub max_batch_concurrency: usize,
    /// A call not answered within this many milliseconds fails with -32002 "request timed out"
    /// (the realtime methods wait by their own timeout instead).
    #[arg(long, env = "VERITY_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Load shedding at the edge: the sends this gateway has in flight (the realtime ones until
    /// their receipt) are bounded by what completed over the last second times this many
    /// milliseconds; past it a send is refused at once with "txpool is full" (-32000) before
    /// any work for it (0: no bound). 500 ms, like the sequencer's `--max-queue-delay-ms`:
    /// measured on two cores it halved the accepted latency at 2x against 1,000 ms with the
    /// same throughput (docs/benchmarks.md, "Capacity and overload").
    #[arg(long, env = "VERITY_MAX_SEND_DELAY_MS", default_value_t = 500)]
    pub max_send_delay_ms: u64,
    /// The fewest sends in flight the edge bound allows, whatever the measured rate (an idle
    /// gateway has measured none). Twice the largest batch by default: the sends of one
    /// JSON-RPC batch all go at once, and a full batch arriving at an idle gateway is not load
    /// to shed.
    #[arg(long, env = "VERITY_MIN_SENDS_IN_FLIGHT", default_value_t = 2048)]
    pub min_sends_in_flight: usize,
    /// Most transactions one `txpool_content`, `txpool_contentFrom` or `txpool_inspect`
    /// answer lists; past it the call is refused with -32005 (`txpool_status` still counts).
    #[arg(long, env = "VERITY_MAX_TXPOOL_CONTENT", default_value_t = 10_000)]
    pub max_txpool_content: usize,
    /// Transactions per second one client IP may send (0: no limit).
    #[arg(long, env = "VERITY_SEND_RATE_PER_IP", default_value_t = 0)]
    pub send_rate_per_ip: u32,
    /// Transactions per second one sender account may send (0: no limit).
    #[arg(long, env = "VERITY_SEND_RATE_PER_SENDER", default_value_t = 0)]
    pub send_rate_per_sender: u32,
    /// Take the client IP from `X-Forwarded-For` (behind trusted proxies or load balancers)
    /// rather than from the connection: the address the outermost trusted proxy saw, which is
    /// `--forwarded-hops` from the right. Addresses further left are the client's to write.
    #[arg(long, env = "VERITY_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// How many trusted proxies append to `X-Forwarded-For` in front of this gateway (with
    /// `--trust-forwarded-for`). A header with fewer addresses than that is ignored.
    #[arg(long, env = "VERITY_FORWARDED_HOPS", default_value_t = 1)]
    pub forwarded_hops: usize,
    /// Most pending-transaction filters installed at once (each keeps up to 10,000 hashes
    /// between polls: 32 MB for the default 100).
    #[arg(long, env = "VERITY_MAX_PENDING_FILTERS", default_value_t = filters::DEFAULT_MAX_PENDING_FILTERS)]
    pub max_pending_filters: usize,
    /// Most blocks one `eth_getLogs` (or filter poll) may span.
    #[arg(long, env = "VERITY_MAX_LOGS_BLOCK_RANGE", default_value_t = 10_000)]
    pub max_logs_block_range: u64,
    /// Most logs one `eth_getLogs` may return.
    #[arg(long, env = "VERITY_MAX_LOGS", default_value_t = 10_000)]
    pub max_logs: usize,
    /// A filter (`eth_newFilter`, `eth_newBlockFilter`) nobody polls for this long is removed.
    #[arg(long, env = "VERITY_FILTER_TIMEOUT_SECS", default_value_t = 300)]
    pub filter_timeout_secs: u64,
    /// Most filters installed at once on this gateway.
    #[arg(long, env = "VERITY_MAX_FILTERS", default_value_t = 10_000)]
    pub max_filters: usize,
    /// Most filters one client IP may have installed at once on this gateway, so that one
    /// client cannot take them all.
    #[arg(long, env = "VERITY_MAX_FILTERS_PER_IP", default_value_t = filters::DEFAULT_MAX_FILTERS_PER_IP)]
    pub max_filters_per_ip: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lease_trust: verity_bus::lease::LeaseTrustArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs,
}

use verity_server::tls::{Role, Tls};
use verity_telemetry::TracedChannel as Traced;

/// Clients of the services behind the gateway.
#[derive(Debug, Clone)]
pub struct Backends {
    ingress: v1::ingress_client::IngressClient<Traced>,
    /// Sends to ingress, coalesced.
    submitter: Arc<submit::Submitter>,
    replica: v1::replica_client::ReplicaClient<Traced>,
    proofs: Option<v1::replica_client::ReplicaClient<Traced>>,
    /// State roots of blocks, from the witness.
    pub roots: Arc<proof::RootCache>,
    sequencer: SequencerEndpoint,
    /// The chain id (fixed by genesis).
    pub chain_id: u64,
    /// Installed polling filters.
    pub filters: Arc<filters::Filters>,
    /// `eth_getLogs` limits.
    pub log_limits: filters::LogLimits,
    /// The chain feed (WebSocket subscriptions, pending-transaction filters, realtime sends).
    pub feed: feed::Feed,
    /// Waiting limits of the realtime methods.
    pub wait_limits: realtime::WaitLimits,
    /// Callers waiting for a receipt (`eth_sendRawTransactionSync`).
    pub waiters: Arc<realtime::Waiters>,
    /// WebSocket limits and the open-connection count.
    pub ws: Arc<ws::WsLimits>,
    /// Request limits.
    pub serving: Arc<Serving>,
    /// Whether this gateway can serve fresh data (its gRPC health, `verity_status`).
    pub ready: verity_server::ReadinessSender,
    readiness: verity_server::Readiness,
}

/// Limits on every request.
#[derive(Debug)]
pub struct Serving {
    /// Largest body or message, in bytes.
    pub max_body_bytes: usize,
    /// Most calls in a batch.
    pub max_batch_size: usize,
    /// Most calls of one HTTP batch answered at once.
    pub batch_concurrency: usize,
    /// Time allowed per call, and per batch.
    pub request_timeout: Duration,
    /// Send rates.
    pub sends: limits::SendLimits,
    /// Sends in flight (load shedding at the edge).
    pub in_flight: limits::InFlightSends,
    /// Most transactions a `txpool_*` answer lists.
    pub max_txpool_content: usize,
    /// Whether `X-Forwarded-For` names the client.
    pub trust_forwarded_for: bool,
    /// Trusted proxies appending to `X-Forwarded-For`.
    pub forwarded_hops: usize,
}

impl Backends {
    /// Clients of the services `config` names (connected lazily, on first use), for chain
    /// `chain_id`, with an empty filter table and a chain feed nobody fills yet (see
    /// [`Gateway::serve`]).
    pub fn new(config: &Config, chain_id: u64) -> anyhow::Result<Self> {
        let tls = config.service.tls.load()?;
        let (ready, readiness) = verity_server::ReadinessSender::new();
        let ingress = v1::ingress_client::IngressClient::new(channel(
            "--ingress-url",
            &config.ingress_url,
            tls.as_ref(),
            Role::Ingress,
        )?);
        Ok(Self {
            ready,
            readiness,
            submitter: Arc::new(submit::Submitter::new(ingress.clone())),
            ingress,
            replica: v1::replica_client::ReplicaClient::new(channel(
                "--replica-url",
                &config.replica_url,
                tls.as_ref(),
                Role::Replica,
            )?)
            .max_decoding_message_size(64 * 1024 * 1024),
            proofs: config
                .proof_replica_url
                .as_ref()
                .map(|url| {
                    channel("--proof-replica-url", url, tls.as_ref(), Role::Witness)
                        .map(v1::replica_client::ReplicaClient::new)
                })
                .transpose()?,
            roots: Default::default(),
            sequencer: SequencerEndpoint::new(config, tls)?,
            chain_id,
            filters: Arc::new(
                filters::Filters::new(
                    Duration::from_secs(config.filter_timeout_secs),
                    config.max_filters,
                )
                .with_pending_limit(config.max_pending_filters)
                .with_client_limit(config.max_filters_per_ip),
            ),
            log_limits: filters::LogLimits {
                max_block_range: config.max_logs_block_range.max(1),
                max_results: config.max_logs,
            },
            feed: feed::Feed::new(FEED_CAPACITY),
            waiters: Arc::new(realtime::Waiters::default()),
            wait_limits: realtime::WaitLimits {
                default: Duration::from_millis(
                    config.sync_timeout_ms.min(config.max_sync_timeout_ms),
                ),
                max: Duration::from_millis(config.max_sync_timeout_ms),
            },
            ws: Arc::new(ws::WsLimits {
                max_connections: config.max_ws_connections,
                max_per_ip: config.max_ws_connections_per_ip.max(1),
                idle: Duration::from_secs(config.ws_idle_secs.max(1)),
                per_ip: std::sync::Mutex::new(std::collections::HashMap::new()),
                max_subscriptions: config.max_subscriptions_per_connection,
                queue: config.ws_queue,
                max_message_bytes: config.max_body_bytes,
                open: std::sync::atomic::AtomicUsize::new(0),
            }),
            serving: Arc::new(Serving {
                max_body_bytes: config.max_body_bytes,
                max_batch_size: config.max_batch_size.max(1),
                batch_concurrency: config.max_batch_concurrency.max(1),
                request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
                sends: limits::SendLimits::new(
                    config.send_rate_per_ip,
                    config.send_rate_per_sender,
                ),
                in_flight: limits::InFlightSends::new(
                    (config.max_send_delay_ms > 0)
                        .then(|| Duration::from_millis(config.max_send_delay_ms)),
                    config.min_sends_in_flight,
                ),
                max_txpool_content: config.max_txpool_content,
                trust_forwarded_for: config.trust_forwarded_for,
                forwarded_hops: config.forwarded_hops.max(1),
            }),
        })
    }

    /// Ingress client.
    pub fn ingress(&self) -> v1::ingress_client::IngressClient<Traced> {
        self.ingress.clone()
    }

    /// Submits one envelope to ingress (coalesced with concurrent ones); its hash.
    pub async fn submit(
        &self,
        raw: alloy_primitives::Bytes,
    ) -> Result<alloy_primitives::B256, RpcError> {
        self.submitter.submit(raw).await
    }

    /// Replica client.
    pub fn replica(&self) -> v1::replica_client::ReplicaClient<Traced> {
        self.replica.clone()
    }

    /// Client of the witness replica that answers `eth_getProof`, if one is configured.
    pub fn proofs(&self) -> Option<v1::replica_client::ReplicaClient<Traced>> {
        self.proofs.clone()
    }

    /// A client of the active sequencer; unavailable while none holds the lease.
    pub fn sequencer(&self) -> Result<v1::sequencer_client::SequencerClient<Traced>, Status> {
        self.sequencer.client()
    }

    /// The replica's head.
    pub async fn head(&self) -> Result<v1::ReplicaHead, RpcError> {
        self.replica()
            .get_head(v1::GetHeadRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| RpcError::internal(format!("replica: {}", s.message())))
    }
}

type SequencerClient = v1::sequencer_client::SequencerClient<Traced>;

/// Where the sequencer is: a fixed `--sequencer-url`, or the lease's holder.
#[derive(Debug, Clone)]
struct SequencerEndpoint {
    /// The sender of a fixed URL (kept so the target stays).
    _fixed: Option<Arc<tokio::sync::watch::Sender<Option<String>>>>,
    target: tokio::sync::watch::Receiver<Option<String>>,
    cache: Arc<std::sync::Mutex<Option<(String, SequencerClient)>>>,
    tls: Option<Tls>,
}

impl SequencerEndpoint {
    fn new(config: &Config, tls: Option<Tls>) -> anyhow::Result<Self> {
        let (fixed, target) = match &config.sequencer_url {
            Some(url) => {
                channel("--sequencer-url", url, tls.as_ref(), Role::Sequencer)?;
                let (tx, rx) = tokio::sync::watch::channel(Some(url.clone()));
                (Some(Arc::new(tx)), rx)
            }
            None => (
                None,
                verity_bus::lease::follow_holder(
                    config.service.nats.clone(),
                    "verity-gateway",
                    config.lease_trust.rules()?,
                ),
            ),
        };
        Ok(Self {
            _fixed: fixed,
            target,
            cache: Arc::default(),
            tls,
        })
    }

    fn client(&self) -> Result<v1::sequencer_client::SequencerClient<Traced>, Status> {
        let url = self.target.borrow().clone().ok_or_else(|| {
            Status::unavailable("no sequencer is active (a handover may be in progress); retry")
        })?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, client)) = cache.as_ref()
            && *cached == url
        {
            return Ok(client.clone());
        }
        let client = v1::sequencer_client::SequencerClient::new(
            channel(
                "the lease's sequencer URL",
                &url,
                self.tls.as_ref(),
                Role::Sequencer,
            )
            .map_err(|e| Status::unavailable(e.to_string()))?,
        );
        *cache = Some((url, client.clone()));
        Ok(client)
    }
}

/// A lazily connected channel to the server of role `peer` at `url` (over mutual TLS when this
/// gateway has a certificate).
fn channel(flag: &str, url: &str, tls: Option<&Tls>, peer: Role) -> anyhow::Result<Traced> {
    let channel = verity_server::tls::endpoint(url, tls, peer)
        .map_err(|e| anyhow::anyhow!("invalid {flag}: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy();
    Ok(verity_telemetry::traced(channel))
}

/// A gateway connected to its backends.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    backends: Backends,
}

impl verity_server::Service for Gateway {
    type Config = Config;
    const NAME: &'static str = "gateway";

    /// Validates the configuration and learns the chain id from the replica (waiting up to a
    /// minute for it).
    async fn open(config: Config) -> anyhow::Result<Self> {
        let mut backends = Backends::new(&config, 0)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let head = loop {
            match backends.replica().get_head(v1::GetHeadRequest {}).await {
                Ok(head) => break head.into_inner(),
                Err(status) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(%status, url = %config.replica_url, "waiting for the replica");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(status) => {
                    anyhow::bail!(
                        "replica at --replica-url {} is unreachable: {status}",
                        config.replica_url
                    )
                }
            }
        };
        backends.chain_id = head.chain_id;
        Ok(Self { backends, config })
    }

    /// Serves JSON-RPC (and gRPC health) until `stop` is cancelled.
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let http = tokio::net::TcpListener::bind(self.config.http_addr)
            .await
            .with_context(|| format!("cannot listen on --http-addr {}", self.config.http_addr))?;
        let http_addr = http.local_addr()?;
        let (grpc, grpc_addr) = self.config.service.server.bind(DEFAULT_GRPC_PORT).await?;
        let app = router(self.backends.clone());
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(feed::run(
            self.config.service.nats.clone(),
            self.backends.feed.clone(),
            self.backends.clone(),
            stop.clone(),
        ));
        let security = verity_server::Security::load(
            &self.config.service,
            verity_server::tls::Policy::HEALTH_ONLY,
        )?;
        tasks.spawn(watch_replica(self.backends.clone(), stop.clone()));
        let grpc_server = tokio::spawn(verity_server::serve_health_ready(
            grpc,
            stop.clone(),
            security,
            self.backends.readiness.clone(),
        ));
        // Realtime sends and subscriptions rely on the feed: announce readiness once it
        // follows the stream (or after a grace period, so JSON-RPC serves even without NATS).
        if !self
            .backends
            .feed
            .wait_following(Duration::from_secs(10))
            .await
        {
            tracing::warn!(
                url = %self.config.service.nats.url,
                "the chain feed does not follow the stream yet: subscriptions and realtime sends wait for it"
            );
        }
        verity_server::write_ready_file(
            self.config.service.server.ready_file.as_deref(),
            &[
                ("http", http_addr.to_string()),
                ("grpc", grpc_addr.to_string()),
            ],
        )?;
        tracing::info!(%http_addr, %grpc_addr, "gateway serving JSON-RPC");
        tasks.spawn({
            let serving = self.backends.serving.clone();
            let stop = stop.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => serving.sends.retain_recent(),
                        _ = stop.cancelled() => return,
                    }
                }
            }
        });
        // No Nagle: an answer hyper writes in two parts (a batch's, a receipt's) would wait for
        // the client's delayed ACK, 40 ms on Linux, before its second part.
        let http = axum::serve::ListenerExt::tap_io(http, |tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(
            http,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await?;
        grpc_server.await??;
        // A task that panicked fails the service, as before (JoinSet also aborts the others
        // if this returns early).
        while let Some(joined) = tasks.join_next().await {
            joined?;
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// The HTTP routes: JSON-RPC on `/` (POST, or a WebSocket upgrade on GET), WebSocket on `/ws`,
/// liveness on `/health`.
pub fn router(backends: Backends) -> Router {
    Router::new()
        .route("/", post(handle_http).get(ws::upgrade))
        .route("/ws", get(ws::upgrade))
        .route("/health", get(|| async { "ok" }))
        // Bodies are limited in `handle_http`, which answers with a JSON-RPC error.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(backends)
}

/// The client's IP: the connection's peer, or the address the outermost trusted proxy wrote in
/// `X-Forwarded-For` when the gateway is told to trust it; `None` when neither is known.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl axum::extract::FromRequestParts<Backends> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        backends: &Backends,
    ) -> Result<Self, Self::Rejection> {
        if backends.serving.trust_forwarded_for
            && let Some(ip) = forwarded_client(&parts.headers, backends.serving.forwarded_hops)
        {
            return Ok(Self(Some(ip)));
        }
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// The address `hops` from the right of every `X-Forwarded-For` header's addresses in order:
/// each trusted proxy appends the address it was connected from, so the outermost one's is
/// `hops` from the right, and anything left of it the client wrote. `None` when the headers
/// hold fewer addresses than that, or that one does not parse.
fn forwarded_client(headers: &http::HeaderMap, hops: usize) -> Option<std::net::IpAddr> {
    let addresses: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let index = addresses.len().checked_sub(hops.max(1))?;
    addresses[index].parse().ok()
}

async fn handle_http(
    State(backends): State<Backends>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let limit = backends.serving.max_body_bytes;
    let json = |status: StatusCode, value: Value| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            let error = RpcError::new(
                jsonrpc::LIMIT_EXCEEDED,
                format!("request body too large: the limit is {limit} bytes"),
            );
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpc::response(Value::Null, Err(error)),
            );
        }
    };
    let span = tracing::info_span!("gateway.request", method = tracing::field::Empty);
    verity_telemetry::link_http_parent(&headers, &span);
    let response = handle_body(&backends, &body, ip, &span)
        .instrument(span.clone())
        .await;
    match response {
        Some(value) => json(StatusCode::OK, value),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Answers a request body: one call or a batch. `None` when nothing is to be sent back (only
/// notifications).
pub async fn handle_body(
    backends: &Backends,
    body: &[u8],
    ip: Option<std::net::IpAddr>,
    span: &tracing::Span,
) -> Option<Value> {
    match jsonrpc::parse_body(body) {
        Err(response) => Some(response),
        Ok(jsonrpc::Body::Batch(calls)) if calls.len() > backends.serving.max_batch_size => {
            Some(batch_too_large(backends, calls.len()))
        }
        Ok(jsonrpc::Body::Batch(calls)) => {
            use futures::{FutureExt as _, StreamExt as _};
            // A few calls at a time, in order, and all of them within one request timeout:
            // a batch of a thousand heavy calls neither floods the replica nor holds the
            // connection for a thousand timeouts.
            // Sends (`eth_sendRawTransaction`) all at once instead: each costs the gateway a
            // parse, and together they reach ingress as one coalesced call ([`submit`]).
            let deadline = batch_deadline(backends);
            let (sends, others): (Vec<_>, Vec<_>) =
                calls.into_iter().enumerate().partition(|(_, call)| {
                    call.get("method").and_then(Value::as_str) == Some("eth_sendRawTransaction")
                });
            let answer = |call: Value| {
                let id = call.get("id").cloned();
                within_batch(
                    backends,
                    deadline,
                    id,
                    handle_call(backends, call, ip, None),
                )
            };
            let sent = futures::future::join_all(
                sends
                    .into_iter()
                    .map(|(i, call)| answer(call).map(move |a| (i, a))),
            );
            let rest = futures::stream::iter(others)
                .map(|(i, call)| answer(call).map(move |a| (i, a)))
                .buffered(backends.serving.batch_concurrency)
                .collect::<Vec<_>>();
            let (sent, rest) = futures::future::join(sent, rest).await;
            let mut answers: Vec<(usize, Option<Value>)> = sent.into_iter().chain(rest).collect();
            answers.sort_by_key(|(i, _)| *i);
            let answers: Vec<Value> = answers.into_iter().filter_map(|(_, a)| a).collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
        Ok(jsonrpc::Body::Single(single)) => handle_call(backends, single, ip, Some(span)).await,
    }
}

/// Every second, asks the replica for its head: this gateway is not ready (gRPC health
/// NOT_SERVING, `verity_status`) while the replica cannot be reached or says it is not ready
/// (halted, or behind the chain), since every read it answers comes from there.
async fn watch_replica(backends: Backends, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let reason = match backends.head().await {
            Err(error) => Some(format!("the replica cannot be read: {}", error.message)),
            Ok(head) => replica_not_ready(&head),
        };
        metrics::gauge!("verity_gateway_ready").set(if reason.is_none() { 1.0 } else { 0.0 });
        backends.ready.set(reason);
    }
}

/// Why a gateway whose replica reported `head` should not be read from, if it should not.
pub(crate) fn replica_not_ready(head: &v1::ReplicaHead) -> Option<String> {
    (!head.not_ready.is_empty()).then(|| format!("the replica is not ready: {}", head.not_ready))
}

/// When a batch received now must be answered: one request timeout from now.
pub(crate) fn batch_deadline(backends: &Backends) -> tokio::time::Instant {
    tokio::time::Instant::now() + backends.serving.request_timeout
}

/// One call of a batch (whose `id` it is: `None` for a notification), answered by `work`
/// unless the batch's `deadline` passes first: then -32002 without waiting any longer.
pub(crate) async fn within_batch(
    backends: &Backends,
    deadline: tokio::time::Instant,
    id: Option<Value>,
    work: impl Future<Output = Option<Value>>,
) -> Option<Value> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(answer) => answer,
        Err(_) => {
            metrics::counter!("verity_gateway_batch_calls_timed_out_total").increment(1);
            let id = id?;
            Some(jsonrpc::response(
                id,
                Err(RpcError::new(
                    jsonrpc::TIMEOUT,
                    format!(
                        "request timed out: the batch was not answered within {} ms",
                        backends.serving.request_timeout.as_millis()
                    ),
                )),
            ))
        }
    }
}

/// The answer to a batch over `--max-batch-size`.
pub(crate) fn batch_too_large(backends: &Backends, len: usize) -> Value {
    jsonrpc::response(
        Value::Null,
        Err(RpcError::new(
            jsonrpc::LIMIT_EXCEEDED,
            format!(
                "batch too large: {len} calls, the limit is {}",
                backends.serving.max_batch_size
            ),
        )),
    )
}

async fn handle_call(
    backends: &Backends,
    value: Value,
    ip: Option<std::net::IpAddr>,
    span: Option<&tracing::Span>,
) -> Option<Value> {
    let call = match jsonrpc::parse_call(value) {
        Ok(call) => call,
        Err(response) => return Some(response),
    };
    if let Some(span) = span {
        span.record("method", call.method.as_str());
    }
    let result = answer(backends, &call, ip).await;
    call.id.map(|id| jsonrpc::response(id, result))
}

/// Answers one call under the serving limits: send rates, then the request timeout (the
/// realtime methods are bounded by their own wait instead).
pub(crate) async fn answer(
    backends: &Backends,
    call: &jsonrpc::Call,
    ip: Option<std::net::IpAddr>,
) -> Result<Value, RpcError> {
    let method = call.method.as_str();
    let params = &call.params;
    let work = async {
        if limits::SEND_METHODS.contains(&method) {
            // Shedding first: a refusal here costs the parse of the request and nothing more.
            let slot = backends.serving.in_flight.enter()?;
            let raw: alloy_primitives::Bytes = jsonrpc::param(params, 0)?;
            backends.serving.sends.check(ip, &raw)?;
            let sent = if method == "eth_sendRawTransaction" {
                within_request_timeout(backends, eth::dispatch(backends, method, params)).await
            } else {
                eth::dispatch(backends, method, params).await
            };
            if sent.is_ok() {
                slot.completed();
            }
            return sent;
        }
        if matches!(method, "eth_callAfter") {
            return eth::dispatch(backends, method, params).await;
        }
        within_request_timeout(backends, eth::dispatch(backends, method, params)).await
    };
    measured(method, filters::CLIENT_IP.scope(ip, work)).await
}

/// `work`, or -32002 "request timed out" after the request timeout.
async fn within_request_timeout(
    backends: &Backends,
    work: impl Future<Output = Result<Value, RpcError>>,
) -> Result<Value, RpcError> {
    let timeout = backends.serving.request_timeout;
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(RpcError::new(
                jsonrpc::TIMEOUT,
                format!("request timed out after {} ms", timeout.as_millis()),
            ))
        })
}

/// Runs one call's work, recording its latency and outcome per method.
pub(crate) async fn measured(
    method: &str,
    work: impl Future<Output = Result<Value, RpcError>>,
) -> Result<Value, RpcError> {
    let started = std::time::Instant::now();
    let result = work.await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!("verity_gateway_request_seconds", "method" => method_label(method), "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        tracing::debug!(%method, %error, "request failed");
    }
    result
}

/// Bounds the metric label set to known method names.
fn method_label(method: &str) -> String {
    if method.len() <= 48
        && method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        method.to_string()
    } else {
        "invalid".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for value in values {
            map.append(
                "x-forwarded-for",
                http::HeaderValue::from_str(value).expect("header"),
            );
        }
        map
    }

    /// The client writes whatever it likes left of what the trusted proxies append: the
    /// address taken is the one the outermost trusted proxy appended, never the left-most.
    #[test]
    fn the_client_ip_is_the_outermost_trusted_proxys_entry_not_the_left_most() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
        // A client claiming 1.1.1.1, seen by the load balancer as 203.0.113.7.
        let forged = headers(&["1.1.1.1, 203.0.113.7"]);
        assert_eq!(forwarded_client(&forged, 1), ip("203.0.113.7"));
        // Two proxies: the client, then the edge's view of it, then the inner proxy's of the
        // edge; several headers count in order.
        let two = headers(&["1.1.1.1, 203.0.113.7", "10.0.0.2"]);
        assert_eq!(forwarded_client(&two, 2), ip("203.0.113.7"));
        assert_eq!(forwarded_client(&two, 1), ip("10.0.0.2"));
        // Fewer entries than trusted proxies, none at all, or junk: not taken.
        assert_eq!(forwarded_client(&headers(&["203.0.113.7"]), 2), None);
        assert_eq!(forwarded_client(&headers(&[]), 1), None);
        assert_eq!(forwarded_client(&headers(&["1.1.1.1, not-an-ip"]), 1), None);
    }
}
