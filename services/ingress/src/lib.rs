//! Verity ingress: the public transaction intake.
//!
//! Each submitted envelope is validated statelessly ([`validate`]: encoding, chain id, intrinsic
//! gas, fee floor; the signature is the sequencer's to recover), then forwarded to the sequencer
//! over one long-lived stream, whose admission check against the committed state and its mempool (nonce, balance,
//! replacement, pool limits) answers the caller. Ingress keeps no state and scales
//! horizontally.
//!
//! With `--nats-url` and no `--sequencer-url`, ingress follows the sequencer lease: it forwards to
//! whichever sequencer is active, and when another one takes over it waits for it (up to
//! `FAILOVER_WAIT`, then a retryable error). Whenever the forward stream reopens (a restarted
//! or a new sequencer), the transactions accepted in the last `REFORWARD_WINDOW` are forwarded
//! once more: any that a lost mempool held are admitted again, those already in the chain are
//! refused as known nonces. (It used to read the sender's account from the sequencer first: that was a
//! second round trip per transaction for the very checks admission makes again.)

pub mod validate;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use verity_proto::{u256_from, v1};
use verity_server::{Backoff, CancellationToken, ServiceArgs};

pub use validate::{ChainRules, DEFAULT_MAX_TX_BYTES, Rejection, validate};

/// Default gRPC port of ingress.
pub const DEFAULT_PORT: u16 = 7200;

/// Who may submit to ingress over mutual TLS (ADR 0014): gateways (and the admin).
pub const POLICY: verity_server::tls::Policy = verity_server::tls::Policy {
    rules: &[("/verity.v1.Ingress/", &[verity_server::tls::Role::Gateway])],
};
/// How long a submission waits for the sequencer's answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the chain rules (base fee) are reused before asking the sequencer again.
const RULES_TTL: Duration = Duration::from_millis(250);
/// How long older rules still serve while no sequencer answers (a handover in progress).
const STALE_RULES_TTL: Duration = Duration::from_secs(10);
/// How long a submission waits for a sequencer to forward to.
const FAILOVER_WAIT: Duration = Duration::from_secs(3);
/// When ingress recovers senders (for a sequencer of the previous release), batches of fewer
/// transactions are validated on the calling task and larger ones on every core; otherwise all
/// are (checks without a recovery cost less than the thread hop).
const PARALLEL_RECOVERY_MIN: usize = 8;
/// Most transactions forwarded in one message of the forward stream: what was queued when the
/// stream wrote, up to this many.
const MAX_FORWARD_BATCH: usize = 512;
/// Accepted transactions kept for forwarding again to a sequencer that takes over.
const REFORWARD_WINDOW: Duration = Duration::from_secs(10);

/// `verity-ingress` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// gRPC URL of the sequencer; without it, ingress follows the sequencer lease on
    /// `--nats-url` to whichever sequencer is active.
    #[arg(long, env = "VERITY_SEQUENCER_URL")]
    pub sequencer_url: Option<String>,
    /// Largest accepted transaction envelope in bytes.
    #[arg(long, env = "VERITY_MAX_TX_BYTES", default_value_t = DEFAULT_MAX_TX_BYTES)]
    pub max_tx_bytes: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub lease_trust: verity_bus::lease::LeaseTrustArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<v1::ForwardResponse>>>>;

/// A connected ingress.
#[derive(Debug, Clone)]
pub struct Ingress {
    inner: Arc<Inner>,
    config: Arc<Config>,
}

type Client = v1::sequencer_client::SequencerClient<verity_telemetry::TracedChannel>;

#[derive(Debug)]
struct Inner {
    /// The sender of a fixed `--sequencer-url` (kept so the target stays).
    _fixed: Option<watch::Sender<Option<String>>>,
    /// The active sequencer's URL (fixed, or from the lease).
    target: watch::Receiver<Option<String>>,
    /// A client for the last target seen.
    client: Mutex<Option<(String, Client)>>,
    max_tx_bytes: usize,
    /// This ingress's certificate, presented to the sequencer (whose own must name its role).
    tls: Option<verity_server::tls::Tls>,
    rules: Mutex<(Instant, ChainRules)>,
    next_id: AtomicU64,
    pending: Pending,
    outgoing: watch::Sender<Option<mpsc::Sender<v1::ForwardRequest>>>,
    /// The sequencer last asked for the rules admits forwarded batches.
    forward_batches: std::sync::atomic::AtomicBool,
    /// The sequencer last asked for the rules recovers senders itself (forwarded unnamed).
    recovers_senders: std::sync::atomic::AtomicBool,
    /// Recently accepted transactions, oldest first.
    recent: Mutex<VecDeque<(Instant, v1::Transaction)>>,
}

impl Inner {
    /// A client for the current target, if there is one.
    fn client(&self) -> Option<Client> {
        let url = self.target.borrow().clone()?;
        let mut cached = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_url, client)) = cached.as_ref()
            && *cached_url == url
        {
            return Some(client.clone());
        }
        let channel = verity_server::tls::endpoint(
            &url,
            self.tls.as_ref(),
            verity_server::tls::Role::Sequencer,
        )
        .ok()?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
        let client = Client::new(verity_telemetry::traced(channel));
        *cached = Some((url, client.clone()));
        Some(client)
    }

    fn remember(&self, tx: v1::Transaction) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REFORWARD_WINDOW)
        {
            recent.pop_front();
        }
        recent.push_back((now, tx));
    }

    fn recent(&self) -> Vec<v1::Transaction> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        recent
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= REFORWARD_WINDOW)
            .map(|(_, tx)| tx.clone())
            .collect()
    }
}

impl verity_server::Service for Ingress {
    type Config = Config;
    const NAME: &'static str = "ingress";

    /// Connects to the sequencer (waiting up to a minute for it) and starts the forward stream.
    async fn open(config: Config) -> anyhow::Result<Self> {
        if config.max_tx_bytes == 0 {
            anyhow::bail!("invalid --max-tx-bytes 0: must be at least 1");
        }
        let tls = config.service.tls.load()?;
        let (fixed, target) = match &config.sequencer_url {
            Some(url) => {
                verity_server::tls::endpoint(
                    url,
                    tls.as_ref(),
                    verity_server::tls::Role::Sequencer,
                )
                .map_err(|e| anyhow::anyhow!("invalid --sequencer-url {url:?}: {e}"))?;
                let (tx, rx) = watch::channel(Some(url.clone()));
                (Some(tx), rx)
            }
            None => (
                None,
                verity_bus::lease::follow_holder(
                    config.service.nats.clone(),
                    "verity-ingress",
                    config.lease_trust.rules()?,
                ),
            ),
        };
        let (outgoing, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            _fixed: fixed,
            target,
            client: Mutex::new(None),
            max_tx_bytes: config.max_tx_bytes,
            tls,
            rules: Mutex::new((Instant::now(), ChainRules::default())),
            next_id: AtomicU64::new(1),
            pending: Arc::default(),
            outgoing,
            forward_batches: std::sync::atomic::AtomicBool::new(false),
            recovers_senders: std::sync::atomic::AtomicBool::new(false),
            recent: Mutex::new(VecDeque::new()),
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let rules = loop {
            let fetched = match inner.client() {
                Some(mut client) => fetch_rules(&mut client, &inner).await,
                None => Err(Status::unavailable("no sequencer holds the lease yet")),
            };
            match fetched {
                Ok(rules) => break rules,
                Err(status) if Instant::now() < deadline => {
                    tracing::info!(%status, "waiting for the sequencer");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(status) => anyhow::bail!(
                    "no sequencer reachable (--sequencer-url {:?}, or the lease on --nats-url {}): {status}",
                    config.sequencer_url,
                    config.service.nats.url
                ),
            }
        };
        *inner.rules.lock().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), rules);
        tokio::spawn(run_forward_stream(inner.clone()));
        Ok(Self {
            inner,
            config: Arc::new(config),
        })
    }

    /// Serves the Ingress gRPC API until `stop` is cancelled.
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let security = verity_server::Security::load(&self.config.service, POLICY)?;
        let (listener, addr) = self.config.service.server.bind(DEFAULT_PORT).await?;
        let routes =
            tonic::service::Routes::new(v1::ingress_server::IngressServer::new(self.clone()));
        verity_server::write_ready_file(
            self.config.service.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        tracing::info!(%addr, "ingress serving");
        verity_server::serve_grpc(
            routes,
            &["verity.v1.Ingress"],
            listener,
            stop.cancelled_owned(),
            security,
        )
        .await?;
        Ok(())
    }
}

impl Ingress {
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
        let name_sender = !self.inner.recovers_senders.load(Ordering::Relaxed);
        let tx = validate::to_forward(raw, &rules, name_sender).inspect_err(|r| {
            metrics::counter!("verity_ingress_rejected_total", "stage" => "stateless").increment(1);
            tracing::debug!(reason = %r, "rejected");
        })?;
        let hash = alloy_primitives::B256::from_slice(&tx.hash);
        span.record("tx_hash", tracing::field::display(hash));
        let validated = Instant::now();
        metrics::histogram!("verity_ingress_validate_seconds")
            .record((validated - started).as_secs_f64());
        self.forward(tx).await?;
        metrics::histogram!("verity_ingress_forward_seconds")
            .record(validated.elapsed().as_secs_f64());
        metrics::counter!("verity_ingress_accepted_total").increment(1);
        Ok(hash)
    }

    /// Validates and forwards many envelopes, each answered on its own, in order; the forward
    /// stream carries what is queued together.
    pub async fn submit_many(
        &self,
        raws: Vec<Vec<u8>>,
    ) -> Vec<Result<alloy_primitives::B256, Rejection>> {
        let count = raws.len();
        let rules = match self.rules().await {
            Ok(rules) => rules,
            Err(rejection) => return vec![Err(rejection); count],
        };
        let started = Instant::now();
        let name_sender = !self.inner.recovers_senders.load(Ordering::Relaxed);
        let check = move |raw: &Vec<u8>| validate::to_forward(raw, &rules, name_sender);
        // Checked here (decoding and hashing); when senders are recovered too (for a sequencer
        // of the previous release) and there are more than a few, on every core (a thread hop
        // costs more than a few recoveries).
        let validated = if !name_sender || count < PARALLEL_RECOVERY_MIN {
            raws.iter().map(check).collect()
        } else {
            tokio::task::spawn_blocking(move || {
                use rayon::prelude::*;
                raws.par_iter().map(check).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|_| vec![Err(unavailable("validation panicked")); count])
        };
        let each = started.elapsed().as_secs_f64() / count.max(1) as f64;
        let forwards = validated.into_iter().map(|tx| async move {
            metrics::histogram!("verity_ingress_validate_seconds").record(each);
            let tx = tx.inspect_err(|r| {
                metrics::counter!("verity_ingress_rejected_total", "stage" => "stateless")
                    .increment(1);
                tracing::debug!(reason = %r, "rejected");
            })?;
            let forwarding = Instant::now();
            let hash = alloy_primitives::B256::from_slice(&tx.hash);
            self.forward(tx).await?;
            metrics::histogram!("verity_ingress_forward_seconds")
                .record(forwarding.elapsed().as_secs_f64());
            metrics::counter!("verity_ingress_accepted_total").increment(1);
            Ok(hash)
        });
        futures::future::join_all(forwards).await
    }

    async fn rules(&self) -> Result<ChainRules, Rejection> {
        {
            let cached = self.inner.rules.lock().unwrap_or_else(|e| e.into_inner());
            if cached.0.elapsed() < RULES_TTL {
                return Ok(cached.1);
            }
        }
        let fetched = match self.inner.client() {
            Some(mut client) => fetch_rules(&mut client, &self.inner).await,
            None => Err(Status::unavailable("no sequencer holds the lease")),
        };
        match fetched {
            Ok(rules) => {
                *self.inner.rules.lock().unwrap_or_else(|e| e.into_inner()) =
                    (Instant::now(), rules);
                Ok(rules)
            }
            Err(status) => {
                // A handover in progress: the base fee moves slowly, keep validating with the
                // last rules for a while (admission checks again).
                let cached = self.inner.rules.lock().unwrap_or_else(|e| e.into_inner());
                if cached.0.elapsed() < STALE_RULES_TTL {
                    Ok(cached.1)
                } else {
                    Err(unavailable(status))
                }
            }
        }
    }

    async fn forward(&self, wire: v1::Transaction) -> Result<(), Rejection> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        let outgoing = {
            let mut open = self.inner.outgoing.subscribe();
            match tokio::time::timeout(FAILOVER_WAIT, open.wait_for(Option::is_some)).await {
                Ok(Ok(sender)) => sender.clone(),
                _ => None,
            }
        }
        .ok_or_else(|| unavailable("no sequencer to forward to (a handover may be in progress)"))?;
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, answer_tx);
        let request = v1::ForwardRequest {
            id,
            transaction: Some(wire.clone()),
            trace_context: verity_telemetry::inject_map(),
            batch: Vec::new(),
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
        match forward_answer(&answer) {
            None => {
                self.inner.remember(wire);
                Ok(())
            }
            Some(rejection) => {
                metrics::counter!("verity_ingress_rejected_total", "stage" => "sequencer")
                    .increment(1);
                Err(rejection)
            }
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

/// The sequencer's answer to one forwarded transaction: `None` when admitted.
fn forward_answer(answer: &v1::ForwardResponse) -> Option<Rejection> {
    match v1::TxRejection::try_from(answer.rejection) {
        Ok(v1::TxRejection::None) if answer.error.is_empty() => None,
        // A sequencer of the previous release: only the legacy fields.
        Ok(v1::TxRejection::None) => Some(Rejection {
            reason: legacy_reason(answer.code, &answer.error),
            message: answer.error.clone(),
        }),
        Ok(reason) => Some(Rejection {
            reason,
            message: answer.message.clone(),
        }),
        // A reason this ingress does not know (a newer sequencer): refused, not its fault as far
        // as it can tell.
        Err(_) => Some(Rejection {
            reason: v1::TxRejection::Internal,
            message: answer.message.clone(),
        }),
    }
}

/// The reason a previous release's refusal (a gRPC code and geth's text) stands for. Reading the
/// text is what the typed reason replaced; it is done here only for that release's peers.
fn legacy_reason(code: i32, message: &str) -> v1::TxRejection {
    use v1::TxRejection as R;
    match tonic::Code::from_i32(code) {
        tonic::Code::InvalidArgument => R::Invalid,
        tonic::Code::AlreadyExists => R::AlreadyKnown,
        tonic::Code::ResourceExhausted if message.starts_with("transaction underpriced") => {
            R::Underpriced
        }
        tonic::Code::ResourceExhausted => R::PoolFull,
        tonic::Code::FailedPrecondition if message.starts_with("nonce too low") => R::NonceTooLow,
        tonic::Code::FailedPrecondition if message.starts_with("nonce too high") => R::NonceTooHigh,
        tonic::Code::FailedPrecondition if message.starts_with("insufficient funds") => {
            R::InsufficientFunds
        }
        tonic::Code::FailedPrecondition => R::ReplacementUnderpriced,
        tonic::Code::Unavailable => R::Unavailable,
        _ => R::Internal,
    }
}

fn unavailable(error: impl std::fmt::Display) -> Rejection {
    Rejection {
        reason: v1::TxRejection::Unavailable,
        message: format!("sequencer unavailable, retry: {error}"),
    }
}

/// The chain's rules as the sequencer reports them, noting what it takes (batches, unnamed senders).
async fn fetch_rules(
    client: &mut v1::sequencer_client::SequencerClient<verity_telemetry::TracedChannel>,
    inner: &Inner,
) -> Result<ChainRules, Status> {
    let head = client.get_head(v1::GetHeadRequest {}).await?.into_inner();
    inner
        .forward_batches
        .store(head.forward_batches, Ordering::Relaxed);
    inner
        .recovers_senders
        .store(head.recovers_senders, Ordering::Relaxed);
    let max_tx_bytes = inner.max_tx_bytes;
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

/// Keeps one forward stream open to the active sequencer, reconnecting with back-off and
/// switching when another sequencer takes over; answers are matched to waiting submissions by
/// id. When the stream breaks, every waiting submission gets a retryable error instead of
/// waiting for its timeout. A new sequencer first gets the recently accepted transactions again.
async fn run_forward_stream(inner: Arc<Inner>) {
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    let mut target = inner.target.clone();
    let mut reconnected = false;
    loop {
        let url = match target.wait_for(Option::is_some).await {
            Ok(url) => url.clone().unwrap_or_default(),
            Err(_) => return,
        };
        let Some(mut client) = inner.client() else {
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        let (tx, rx) = mpsc::channel(4096);
        match client.forward(coalesced(rx, inner.clone())).await {
            Ok(response) => {
                backoff.reset();
                // After a broken stream (a restarted or a new sequencer), the transactions
                // accepted lately go once more: a mempool may have been lost with them.
                if reconnected {
                    let again = inner.recent();
                    tracing::info!(
                        %url,
                        transactions = again.len(),
                        "sequencer stream reopened: forwarding recent transactions again"
                    );
                    metrics::counter!("verity_ingress_reforwarded_total")
                        .increment(again.len() as u64);
                    for transaction in again {
                        // Answers to id 0 have no waiter: already-known nonces are expected.
                        let request = v1::ForwardRequest {
                            id: 0,
                            transaction: Some(transaction),
                            trace_context: Default::default(),
                            batch: Vec::new(),
                        };
                        if tx.send(request).await.is_err() {
                            break;
                        }
                    }
                }
                reconnected = true;
                inner.outgoing.send_replace(Some(tx));
                tracing::info!(%url, "forward stream to the sequencer open");
                let mut answers = response.into_inner();
                loop {
                    let answer = tokio::select! {
                        answer = answers.next() => answer,
                        changed = target.changed() => {
                            if changed.is_err() || target.borrow().as_ref() != Some(&url) {
                                tracing::info!("the sequencer lease moved; switching");
                                break;
                            }
                            continue;
                        }
                    };
                    match answer {
                        Some(Ok(mut answer)) => {
                            let batch = std::mem::take(&mut answer.batch);
                            let mut pending =
                                inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                            for answer in batch.into_iter().chain(std::iter::once(answer)) {
                                if let Some(waiter) = pending.remove(&answer.id) {
                                    let _ = waiter.send(answer);
                                }
                            }
                        }
                        Some(Err(status)) => {
                            tracing::warn!(%status, "forward stream broke");
                            break;
                        }
                        None => break,
                    }
                }
                inner.outgoing.send_replace(None);
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

/// The forward stream's messages: whatever is queued when the stream writes goes as one
/// message (up to [`MAX_FORWARD_BATCH`] transactions), when the sequencer admits batches; one
/// transaction per message otherwise. Under load that is one message, one sender recovery pass
/// on every core and one answer per batch instead of per transaction; a lone transaction goes
/// at once.
fn coalesced(
    rx: mpsc::Receiver<v1::ForwardRequest>,
    inner: Arc<Inner>,
) -> impl futures::Stream<Item = v1::ForwardRequest> {
    futures::stream::unfold(rx, move |mut rx| {
        let inner = inner.clone();
        async move {
            let first = rx.recv().await?;
            if !inner.forward_batches.load(Ordering::Relaxed) {
                return Some((first, rx));
            }
            let mut batch = vec![first];
            while batch.len() < MAX_FORWARD_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            metrics::histogram!("verity_ingress_forward_batch_size").record(batch.len() as f64);
            let message = if batch.len() == 1 {
                batch.pop().unwrap_or_default()
            } else {
                v1::ForwardRequest {
                    batch,
                    ..Default::default()
                }
            };
            Some((message, rx))
        }
    })
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
        let results = self
            .submit_many(raws)
            .await
            .into_iter()
            .map(|result| v1::SubmitResult {
                result: Some(match result {
                    Ok(hash) => v1::submit_result::Result::TxHash(hash.to_vec()),
                    Err(r) => v1::submit_result::Result::Error(v1::SubmitError {
                        rejection: r.reason as i32,
                        message: r.message,
                    }),
                }),
            })
            .collect();
        Ok(Response::new(v1::SubmitBatchResponse { results }))
    }
}

#[cfg(test)]
mod forward_answer_tests {
    use super::*;

    fn answer(
        rejection: v1::TxRejection,
        message: &str,
        error: &str,
        code: tonic::Code,
    ) -> v1::ForwardResponse {
        v1::ForwardResponse {
            id: 1,
            error: error.into(),
            code: code as i32,
            rejection: rejection as i32,
            message: message.into(),
            batch: Vec::new(),
        }
    }

    #[test]
    fn an_admitted_transaction_has_no_rejection() {
        assert_eq!(forward_answer(&v1::ForwardResponse::default()), None);
    }

    #[test]
    fn the_typed_reason_wins_over_the_legacy_fields() {
        let refused = answer(
            v1::TxRejection::InsufficientFunds,
            "insufficient funds for gas * price + value",
            "insufficient funds for gas * price + value",
            tonic::Code::FailedPrecondition,
        );
        let rejection = forward_answer(&refused).expect("refused");
        assert_eq!(rejection.reason, v1::TxRejection::InsufficientFunds);
        assert_eq!(rejection.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn a_previous_releases_refusal_is_still_a_refusal() {
        use tonic::Code;
        use v1::TxRejection as R;
        let cases = [
            (
                "nonce too low: address 0x01, tx: 0 state: 1",
                Code::FailedPrecondition,
                R::NonceTooLow,
            ),
            (
                "replacement transaction underpriced",
                Code::FailedPrecondition,
                R::ReplacementUnderpriced,
            ),
            ("already known", Code::AlreadyExists, R::AlreadyKnown),
            ("txpool is full", Code::ResourceExhausted, R::PoolFull),
            ("storage: disk full", Code::Internal, R::Internal),
        ];
        for (text, code, reason) in cases {
            let legacy = answer(v1::TxRejection::None, "", text, code);
            let rejection = forward_answer(&legacy).expect("refused");
            assert_eq!(rejection.reason, reason, "{text}");
            assert_eq!(rejection.code(), code, "{text}");
            assert_eq!(rejection.message, text);
        }
    }

    #[test]
    fn an_unknown_reason_is_a_refusal() {
        let mut newer = answer(
            v1::TxRejection::None,
            "something new",
            "something new",
            tonic::Code::Aborted,
        );
        newer.rejection = 99;
        let rejection = forward_answer(&newer).expect("refused");
        assert_eq!(rejection.reason, v1::TxRejection::Internal);
    }
}
