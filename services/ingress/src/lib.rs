//! Verity ingress: the public transaction intake.
//!
//! Each submitted envelope is validated statelessly ([`validate`]: encoding, signature recovery,
//! chain id, intrinsic gas, fee floor), then forwarded to the sequencer over one long-lived
//! stream, whose admission check against the committed state and its mempool (nonce, balance,
//! replacement, pool limits) answers the caller. Ingress keeps no state and scales
//! horizontally. (It used to read the sender's account from the sequencer first: that was a
//! second round trip per transaction for the very checks admission makes again.)

pub mod validate;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, transport::Channel};
use tracing::Instrument as _;
use verity_primitives::Transaction;
use verity_proto::{u256_from, v1};
use verity_server::{Backoff, ServerArgs};
use verity_telemetry::TelemetryArgs;

pub use validate::{ChainRules, DEFAULT_MAX_TX_BYTES, Rejection, validate};

/// Default gRPC port of ingress.
pub const DEFAULT_PORT: u16 = 7200;
/// How long a submission waits for the sequencer's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the chain rules (base fee) are reused before asking the sequencer again.
const RULES_TTL: Duration = Duration::from_millis(250);

/// `verity-ingress` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "verity-ingress",
    version,
    about = "Verity ingress: validates and forwards transactions"
)]
pub struct Config {
    /// gRPC URL of the sequencer.
    #[arg(
        long,
        env = "VERITY_SEQUENCER_URL",
        default_value = "http://127.0.0.1:7100"
    )]
    pub sequencer_url: String,
    /// Largest accepted transaction envelope in bytes.
    #[arg(long, env = "VERITY_MAX_TX_BYTES", default_value_t = DEFAULT_MAX_TX_BYTES)]
    pub max_tx_bytes: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<v1::ForwardResponse>>>>;

/// A connected ingress.
#[derive(Debug, Clone)]
pub struct Ingress {
    inner: Arc<Inner>,
    config: Arc<Config>,
}

#[derive(Debug)]
struct Inner {
    sequencer: v1::sequencer_client::SequencerClient<verity_telemetry::TracedChannel>,
    max_tx_bytes: usize,
    rules: Mutex<(Instant, ChainRules)>,
    next_id: AtomicU64,
    pending: Pending,
    outgoing: Arc<Mutex<Option<mpsc::Sender<v1::ForwardRequest>>>>,
}

impl Ingress {
    /// Connects to the sequencer (waiting up to a minute for it) and starts the forward stream.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        if config.max_tx_bytes == 0 {
            anyhow::bail!("invalid --max-tx-bytes 0: must be at least 1");
        }
        let endpoint = Channel::from_shared(config.sequencer_url.clone()).map_err(|e| {
            anyhow::anyhow!("invalid --sequencer-url {:?}: {e}", config.sequencer_url)
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        let sequencer =
            v1::sequencer_client::SequencerClient::new(verity_telemetry::traced(channel));
        let mut probe = sequencer.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        let rules = loop {
            match fetch_rules(&mut probe, config.max_tx_bytes).await {
                Ok(rules) => break rules,
                Err(status) if Instant::now() < deadline => {
                    tracing::info!(%status, url = %config.sequencer_url, "waiting for the sequencer");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(status) => anyhow::bail!(
                    "sequencer at --sequencer-url {} is unreachable: {status}",
                    config.sequencer_url
                ),
            }
        };
        let inner = Arc::new(Inner {
            sequencer,
            max_tx_bytes: config.max_tx_bytes,
            rules: Mutex::new((Instant::now(), rules)),
            next_id: AtomicU64::new(1),
            pending: Arc::default(),
            outgoing: Arc::default(),
        });
        tokio::spawn(run_forward_stream(inner.clone()));
        Ok(Self {
            inner,
            config: Arc::new(config),
        })
    }

    /// Serves the Ingress gRPC API until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let listener = verity_server::bind(self.config.server.grpc_addr_or(DEFAULT_PORT)).await?;
        let addr = verity_server::local_addr(&listener);
        let routes =
            tonic::service::Routes::new(v1::ingress_server::IngressServer::new(self.clone()));
        verity_server::write_ready_file(
            self.config.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        tracing::info!(%addr, "ingress serving");
        verity_server::serve_grpc(routes, &["verity.v1.Ingress"], listener, shutdown).await?;
        Ok(())
    }

    /// Validates and forwards one envelope; returns the transaction hash.
    pub async fn submit(&self, raw: &[u8]) -> Result<alloy_primitives::B256, Rejection> {
        let span = tracing::info_span!("ingress.submit", tx_hash = tracing::field::Empty);
        self.submit_in(raw, &span).instrument(span.clone()).await
    }

    async fn submit_in(
        &self,
        raw: &[u8],
        span: &tracing::Span,
    ) -> Result<alloy_primitives::B256, Rejection> {
        let started = Instant::now();
        let rules = self.rules().await?;
        let tx = validate(raw, &rules).inspect_err(|r| {
            metrics::counter!("verity_ingress_rejected_total", "stage" => "stateless").increment(1);
            tracing::debug!(reason = %r, "rejected");
        })?;
        let hash = *tx.tx_hash();
        span.record("tx_hash", tracing::field::display(hash));
        let validated = Instant::now();
        metrics::histogram!("verity_ingress_validate_seconds")
            .record((validated - started).as_secs_f64());
        self.forward(&tx).await?;
        metrics::histogram!("verity_ingress_forward_seconds")
            .record(validated.elapsed().as_secs_f64());
        metrics::counter!("verity_ingress_accepted_total").increment(1);
        Ok(hash)
    }

    async fn rules(&self) -> Result<ChainRules, Rejection> {
        {
            let cached = self.inner.rules.lock().unwrap_or_else(|e| e.into_inner());
            if cached.0.elapsed() < RULES_TTL {
                return Ok(cached.1);
            }
        }
        let mut client = self.inner.sequencer.clone();
        let rules = fetch_rules(&mut client, self.inner.max_tx_bytes)
            .await
            .map_err(unavailable)?;
        *self.inner.rules.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), rules);
        Ok(rules)
    }

    async fn forward(&self, tx: &Transaction) -> Result<(), Rejection> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        let outgoing = self
            .inner
            .outgoing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| unavailable("sequencer stream is reconnecting"))?;
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, answer_tx);
        let request = v1::ForwardRequest {
            id,
            transaction: Some(v1::Transaction::from(tx)),
            trace_context: verity_telemetry::inject_map(),
        };
        if outgoing.send(request).await.is_err() {
            self.forget(id);
            return Err(unavailable("sequencer stream closed"));
        }
        let answer = match tokio::time::timeout(FORWARD_TIMEOUT, answer_rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return Err(unavailable("sequencer stream closed before answering")),
            Err(_) => {
                self.forget(id);
                return Err(unavailable(format!(
                    "sequencer did not answer within {FORWARD_TIMEOUT:?}"
                )));
            }
        };
        if answer.error.is_empty() {
            Ok(())
        } else {
            metrics::counter!("verity_ingress_rejected_total", "stage" => "sequencer").increment(1);
            Err(Rejection {
                code: tonic::Code::from_i32(answer.code),
                message: answer.error,
            })
        }
    }

    fn forget(&self, id: u64) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

fn unavailable(error: impl std::fmt::Display) -> Rejection {
    Rejection {
        code: tonic::Code::Unavailable,
        message: format!("sequencer unavailable, retry: {error}"),
    }
}

async fn fetch_rules(
    client: &mut v1::sequencer_client::SequencerClient<verity_telemetry::TracedChannel>,
    max_tx_bytes: usize,
) -> Result<ChainRules, Status> {
    let head = client.get_head(v1::GetHeadRequest {}).await?.into_inner();
    let base_fee = u256_from(&head.base_fee, "base_fee")
        .ok()
        .and_then(|f| u64::try_from(f).ok())
        .ok_or_else(|| Status::internal("sequencer reported a base fee above 64 bits"))?;
    Ok(ChainRules {
        chain_id: head.chain_id,
        block_gas_limit: head.block_gas_limit,
        base_fee,
        max_tx_bytes,
    })
}

/// Keeps one forward stream open to the sequencer, reconnecting with back-off; answers are
/// matched to waiting submissions by id. When the stream breaks, every waiting submission gets
/// a retryable error instead of waiting for its timeout.
async fn run_forward_stream(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let (tx, rx) = mpsc::channel(4096);
        let mut client = inner.sequencer.clone();
        match client.forward(ReceiverStream::new(rx)).await {
            Ok(response) => {
                backoff.reset();
                *inner.outgoing.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
                tracing::info!("forward stream to the sequencer open");
                let mut answers = response.into_inner();
                while let Some(answer) = answers.next().await {
                    match answer {
                        Ok(answer) => {
                            let waiter = inner
                                .pending
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&answer.id);
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(answer);
                            }
                        }
                        Err(status) => {
                            tracing::warn!(%status, "forward stream broke");
                            break;
                        }
                    }
                }
                *inner.outgoing.lock().unwrap_or_else(|e| e.into_inner()) = None;
                // Dropping the waiters' senders tells each submission the stream closed.
                inner
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clear();
            }
            Err(status) => {
                tracing::warn!(%status, "cannot open forward stream; retrying");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

#[tonic::async_trait]
impl v1::ingress_server::Ingress for Ingress {
    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let hash = Ingress::submit(self, &request.into_inner().raw).await?;
        Ok(Response::new(v1::SubmitResponse {
            tx_hash: hash.to_vec(),
        }))
    }

    async fn submit_batch(
        &self,
        request: Request<v1::SubmitBatchRequest>,
    ) -> Result<Response<v1::SubmitBatchResponse>, Status> {
        let raws = request.into_inner().raw;
        let results = futures::future::join_all(raws.iter().map(|raw| self.submit(raw)))
            .await
            .into_iter()
            .map(|result| v1::SubmitResult {
                result: Some(match result {
                    Ok(hash) => v1::submit_result::Result::TxHash(hash.to_vec()),
                    Err(r) => v1::submit_result::Result::Error(v1::SubmitError {
                        code: r.code as i32,
                        message: r.message,
                    }),
                }),
            })
            .collect();
        Ok(Response::new(v1::SubmitBatchResponse { results }))
    }
}
