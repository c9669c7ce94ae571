//! Verity replica: follows the chain on JetStream and applies each state diff to its own MDBX
//! state without executing transactions ([`apply`]); serves reads and calls over gRPC
//! ([`query`]).
//!
//! Roles: `full`; `witness` ([`witness`]: the state tree and the proving jobs); `verifier`
//! ([`verifier`]: checks proofs and attests blocks `safe`); `light-verifier` (the same checks
//! and attestations, over the chain's events and blocks alone: it applies no diff, keeps no
//! state and serves no reads). Every role counts the verifiers' attestations into its `safe`
//! and `finalized` heads ([`heads`]).

pub mod apply;
pub mod heads;
pub mod proof;
pub mod query;
pub mod verifier;
pub mod witness;

use std::{path::PathBuf, sync::Arc, time::Duration};

use alloy_primitives::Address;
use anyhow::Context as _;
use futures::{FutureExt as _, StreamExt};
use tracing::Instrument as _;
use verity_primitives::{ChainSpec, governance::Sequencing};
use verity_proto::v1;
use verity_server::{Backoff, CancellationToken, ServiceArgs};
use verity_storage::Database;

use apply::{Applied, ApplyError};
use verity_chain::ChainError;

/// Default gRPC port of a replica.
pub const DEFAULT_PORT: u16 = 7300;

/// Who may query a replica over mutual TLS (ADR 0014): gateways the chain's data (and the
/// admin everything: the `verity` CLI, tests); the state digest is the admin's, as on the
/// sequencer.
pub const POLICY: verity_server::tls::Policy = {
    use verity_server::tls::Role;
    const GATEWAY: &[Role] = &[Role::Gateway];
    verity_server::tls::Policy {
        rules: &[
            ("/verity.v1.Replica/GetHead", GATEWAY),
            ("/verity.v1.Replica/WatchApplied", GATEWAY),
            ("/verity.v1.Replica/GetAccount", GATEWAY),
            ("/verity.v1.Replica/GetStorage", GATEWAY),
            ("/verity.v1.Replica/GetCode", GATEWAY),
            ("/verity.v1.Replica/GetBlock", GATEWAY),
            ("/verity.v1.Replica/GetTransaction", GATEWAY),
            ("/verity.v1.Replica/GetReceipt", GATEWAY),
            ("/verity.v1.Replica/GetBlockReceipts", GATEWAY),
            ("/verity.v1.Replica/GetLogs", GATEWAY),
            ("/verity.v1.Replica/Call", GATEWAY),
            ("/verity.v1.Replica/Trace", GATEWAY),
            ("/verity.v1.Replica/Simulate", GATEWAY),
            ("/verity.v1.Replica/SearchTransactions", GATEWAY),
            ("/verity.v1.Replica/GetProof", GATEWAY),
        ],
    }
};

/// What a replica does.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Applies diffs at once and serves reads.
    Full,
    /// Also verifies chunk proofs and attests the blocks they make safe.
    Verifier,
    /// Also maintains the state tree and publishes a proving job per mini-block.
    Witness,
    /// Verifies chunk proofs and attests blocks like `verifier`, from the chain's checked events
    /// and blocks alone: it never applies a diff, keeps no state and serves no reads (its gRPC
    /// port answers health checks only).
    LightVerifier,
}

impl Role {
    /// Whether the role verifies proofs.
    pub fn verifies(self) -> bool {
        matches!(self, Role::Verifier | Role::LightVerifier)
    }

    /// What the role keeps of the chain it follows.
    pub fn keeps(self) -> apply::Keep {
        match self {
            Role::Full | Role::Witness => apply::Keep::State,
            Role::Verifier => apply::Keep::StateAndEvents,
            Role::LightVerifier => apply::Keep::Events,
        }
    }
}

/// `verity-replica` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// The replica's role.
    #[arg(long, env = "VERITY_ROLE", value_enum, default_value = "full")]
    pub role: Role,
    /// Directory of the replica's MDBX database.
    #[arg(long, env = "VERITY_DATA_DIR", default_value = ".devnet/replica")]
    pub data_dir: PathBuf,
    /// Genesis JSON file (the same the sequencer uses).
    #[arg(long, env = "VERITY_GENESIS")]
    pub genesis: PathBuf,
    /// Address of the epoch-0 sequencer key, for a genesis that names none
    /// (`config.verity.sequencer`); later epochs come from handovers in the chain stream.
    #[arg(long, env = "VERITY_SEQUENCER_ADDRESS")]
    pub sequencer_address: Option<Address>,
    /// The name this replica shows NATS (its connection's client name, in the server's
    /// monitoring and logs). Its consumers of the chain stream are ephemeral and named by the
    /// server.
    #[arg(long, env = "VERITY_CONSUMER_NAME", default_value = "replica-full")]
    pub consumer_name: String,
    /// Seconds the oldest chain event this replica has not applied may wait before the replica
    /// reports itself not ready (gRPC health NOT_SERVING, `not_ready` in `GetHead`): a replica
    /// far behind serves stale state.
    #[arg(long, env = "VERITY_MAX_LAG_SECS", default_value_t = 30)]
    pub max_lag_secs: u64,
    /// How `eth_call` and `eth_estimateGas` are bounded (docs/json-rpc.md, "Limits").
    #[command(flatten)]
    pub calls: query::CallBounds,
    /// Registered verifier addresses (comma-separated): their attestations make blocks `safe`
    /// and `finalized`. Empty: this replica has no `safe` or `finalized` head.
    #[arg(long, env = "VERITY_VERIFIER_ADDRESSES", value_delimiter = ',')]
    pub verifier_addresses: Vec<Address>,
    /// Registered verifiers that must attest a block before it is `finalized`.
    #[arg(long, env = "VERITY_FINALITY_QUORUM", default_value_t = 1)]
    pub finality_quorum: usize,
    /// Role witness: close a chunk (one proving job) once its mini-blocks hold this many
    /// transactions; 0 makes every mini-block a chunk. A chunk also closes at the end of its
    /// EVM block and when no mini-block arrived for `--chunk-idle-ms`, so under light load
    /// chunks stay single mini-blocks and under heavy load the witness hashes shared tree paths
    /// once per chunk.
    #[arg(long, env = "VERITY_CHUNK_TRANSACTIONS", default_value_t = 0)]
    pub chunk_transactions: usize,
    /// Role witness: a chunk of several mini-blocks closes before the one that would take its
    /// chain events past this many bytes, so that its job (those events and their witness)
    /// stays below the NATS server's max_payload; a single mini-block is bounded by the
    /// sequencer's `--max-mini-block-bytes`.
    #[arg(long, env = "VERITY_CHUNK_MAX_BYTES", default_value_t = witness::DEFAULT_CHUNK_MAX_BYTES)]
    pub chunk_max_bytes: usize,
    /// Role witness: close a chunk when no mini-block arrived for this many milliseconds.
    #[arg(long, env = "VERITY_CHUNK_IDLE_MS", default_value_t = 5)]
    pub chunk_idle_ms: u64,
    /// Role verifier: registered prover addresses (comma-separated) whose attestations count.
    #[arg(long, env = "VERITY_PROVER_ADDRESSES", value_delimiter = ',')]
    pub prover_addresses: Vec<Address>,
    /// Role verifier: agreeing proofs from distinct registered provers a chunk needs (R) before
    /// it is verified. With R = 1 one dishonest prover decides alone; R must not exceed the
    /// provers registered.
    #[arg(long, env = "VERITY_PROOF_QUORUM", default_value_t = 1)]
    pub proof_quorum: usize,
    /// Role verifier: file of this verifier's attestation key (hex; created when missing).
    #[arg(
        long,
        env = "VERITY_VERIFIER_KEY_FILE",
        default_value = ".devnet/verifier.key"
    )]
    pub key_file: PathBuf,
    /// Role verifier: tree steps per halo2 proof (the provers' circuit shape).
    #[arg(long, env = "VERITY_STEPS_PER_PROOF", default_value_t = verity_circuits::Shape::DEFAULT.steps)]
    pub steps_per_proof: usize,
    /// Role verifier: deepest tree path (the provers' circuit shape).
    #[arg(long, env = "VERITY_MAX_DEPTH", default_value_t = verity_circuits::Shape::DEFAULT.depth)]
    pub max_depth: usize,
    /// Role verifier: the provers' larger segment shapes, in steps per proof (comma-separated);
    /// a segment of a shape not listed is refused.
    #[arg(long, env = "VERITY_LARGER_SEGMENTS", value_delimiter = ',')]
    pub larger_segments: Vec<usize>,
    /// Role verifier: the KZG parameters the provers use (a public ceremony's in production;
    /// `verity devnet` makes an insecure local one).
    #[arg(long, env = "VERITY_KZG_PARAMS", default_value = ".devnet/kzg.params")]
    pub kzg_params: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs,
}

/// An opened replica.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    db: Database,
    spec: Arc<ChainSpec>,
    rules: Arc<Sequencing>,
    stream: async_nats::jetstream::stream::Stream,
    js: async_nats::jetstream::Context,
    witness: Option<witness::Witness>,
    verifier: Option<verifier::Settings>,
}

impl verity_server::Service for Replica {
    type Config = Config;
    const NAME: &'static str = "replica";

    /// Validates the configuration, opens the database (initialising genesis) and connects to
    /// NATS.
    async fn open(config: Config) -> anyhow::Result<Self> {
        if config.finality_quorum == 0 {
            anyhow::bail!("invalid --finality-quorum 0: at least one verifier must attest");
        }
        if config.role.verifies() {
            if config.prover_addresses.is_empty() {
                anyhow::bail!(
                    "role verifier needs --prover-addresses (VERITY_PROVER_ADDRESSES): the provers whose attestations count"
                );
            }
            if config.proof_quorum == 0 || config.proof_quorum > config.prover_addresses.len() {
                anyhow::bail!(
                    "invalid --proof-quorum {}: between 1 and the {} registered provers",
                    config.proof_quorum,
                    config.prover_addresses.len()
                );
            }
            if config.steps_per_proof == 0 || config.max_depth == 0 || config.max_depth > 128 {
                anyhow::bail!(
                    "invalid circuit shape: --steps-per-proof must be at least 1 and --max-depth between 1 and 128"
                );
            }
            verity_circuits::Shape {
                steps: config.steps_per_proof,
                depth: config.max_depth,
            }
            .check_larger(&config.larger_segments)
            .context("flags --larger-segments and --steps-per-proof")?;
        }
        let spec = ChainSpec::load(&config.genesis).context("flag --genesis / VERITY_GENESIS")?;
        let rules = Arc::new(
            spec.sequencing(config.sequencer_address)
                .context("flags --genesis / --sequencer-address")?,
        );
        let data_dir = config.data_dir.clone();
        let init_spec = spec.clone();
        let keep = config.role.keeps();
        // A replica's state is replayed from the chain stream from its own stored position:
        // it need not fsync every apply (a synced point each second bounds what a machine
        // crash takes back). A witness keeps durable commits: it publishes proving jobs of what
        // it applied.
        let replayable = config.role != Role::Witness;
        let db = tokio::task::spawn_blocking(move || -> anyhow::Result<Database> {
            let open = if replayable {
                Database::open_replayable
            } else {
                Database::open
            };
            let db = open(&data_dir)
                .with_context(|| format!("cannot open --data-dir {}", data_dir.display()))?;
            apply::init_genesis(&db, &init_spec, keep)
                .with_context(|| format!("--data-dir {}", data_dir.display()))?;
            Ok(db)
        })
        .await??;
        let (_client, js) = config.service.nats.connect(&config.consumer_name).await?;
        let stream = verity_bus::ensure_chain_stream(&js).await?;
        let witness = match config.role {
            Role::Witness => Some(
                witness::Witness::new(
                    js.clone(),
                    &spec,
                    witness::Chunking {
                        transactions: config.chunk_transactions,
                        max_bytes: config.chunk_max_bytes,
                        idle: Duration::from_millis(config.chunk_idle_ms),
                    },
                )
                .await?,
            ),
            Role::Full | Role::Verifier | Role::LightVerifier => None,
        };
        let verifier = match config.role {
            Role::Verifier | Role::LightVerifier => {
                let (key, created) =
                    verity_primitives::SigningKey::load_or_create(&config.key_file)
                        .context("flag --key-file / VERITY_VERIFIER_KEY_FILE")?;
                if created {
                    tracing::info!(path = %config.key_file.display(), address = %key.address(), "created a verifier key");
                }
                let shape = verity_circuits::Shape {
                    steps: config.steps_per_proof,
                    depth: config.max_depth,
                };
                let path = config.kzg_params.clone();
                let larger = config.larger_segments.clone();
                let params = tokio::task::spawn_blocking(move || {
                    verity_circuits::Params::read_for_larger(&path, shape, &larger)
                })
                .await?
                .context("flag --kzg-params / VERITY_KZG_PARAMS")?;
                tracing::info!(path = %config.kzg_params.display(), k = params.k(), "KZG parameters loaded");
                Some(verifier::Settings {
                    chain_id: spec.chain_id(),
                    gas_limit: spec.gas_limit(),
                    shape,
                    larger_segments: config.larger_segments.clone(),
                    params: Arc::new(params),
                    provers: config.prover_addresses.clone(),
                    proof_quorum: config.proof_quorum,
                    key,
                    genesis_root: verity_chunk::genesis_tree(&verity_primitives::genesis_diff(
                        &spec.genesis,
                    ))
                    .root(),
                })
            }
            Role::Full | Role::Witness => None,
        };
        Ok(Self {
            config,
            db,
            spec: Arc::new(spec),
            rules,
            stream,
            js,
            witness,
            verifier,
        })
    }

    /// Applies the chain and serves reads until `stop` is cancelled.
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let security = verity_server::Security::load(&self.config.service, POLICY)?;
        let (listener, addr) = self.config.service.server.bind(DEFAULT_PORT).await?;
        let (ready, readiness) = verity_server::ReadinessSender::new();
        if self.config.role != Role::LightVerifier {
            // A database from before the address index gets its sealed blocks indexed once.
            let db = self.db.clone();
            let indexed =
                tokio::task::spawn_blocking(move || apply::complete_address_index(&db)).await??;
            if indexed > 0 {
                tracing::info!(indexed, "address index built over the stored blocks");
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watch_lag(
            self.db.clone(),
            self.stream.clone(),
            ready.clone(),
            Duration::from_secs(self.config.max_lag_secs.max(1)),
            stop.clone(),
        ));
        let applied = {
            let db = self.db.clone();
            let last = tokio::task::spawn_blocking(move || apply::last_seq(&db))
                .await?
                .unwrap_or(0);
            Arc::new(tokio::sync::watch::Sender::new(last))
        };
        // What a replayable database committed reaches the disk once a second.
        tasks.spawn({
            let db = self.db.clone();
            let stop = stop.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => break,
                    }
                    let db = db.clone();
                    if let Ok(Err(error)) = tokio::task::spawn_blocking(move || db.sync()).await {
                        tracing::warn!(%error, "cannot sync the database to disk");
                    }
                }
                let db = db.clone();
                let _ = tokio::task::spawn_blocking(move || db.sync()).await;
            }
        });
        tasks.spawn(follow_chain(
            self.db.clone(),
            self.stream.clone(),
            Reporting {
                ready: ready.clone(),
                applied: applied.clone(),
            },
            self.rules.clone(),
            self.witness,
            self.config.role.keeps(),
            stop.clone(),
        ));
        if !self.config.verifier_addresses.is_empty() {
            tasks.spawn(heads::follow(
                self.db.clone(),
                self.js.clone(),
                heads::Settings {
                    chain_id: self.spec.chain_id(),
                    verifiers: self.config.verifier_addresses.clone(),
                    quorum: self.config.finality_quorum,
                },
                stop.clone(),
            ));
        }
        if let Some(settings) = self.verifier.clone() {
            tasks.spawn(verifier::run(
                self.db.clone(),
                self.js.clone(),
                settings,
                stop.clone(),
            ));
        }
        // A light verifier has no state to read: it serves health checks alone (a read sent to
        // it is UNIMPLEMENTED, never an answer from state it does not have).
        let light = self.config.role == Role::LightVerifier;
        let routes = if light {
            tonic::service::Routes::default()
        } else {
            tonic::service::Routes::new(
                v1::replica_server::ReplicaServer::new(
                    query::QueryService::new(
                        self.db.clone(),
                        self.spec.clone(),
                        self.rules.clone(),
                    )
                    .with_call_bounds(&self.config.calls)
                    .with_readiness(ready.clone())
                    .with_applied(applied.subscribe()),
                )
                .max_encoding_message_size(64 * 1024 * 1024),
            )
        };
        verity_server::write_ready_file(
            self.config.service.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        tracing::info!(%addr, "replica serving");
        verity_server::serve_grpc_ready(
            routes,
            if light { &[] } else { &["verity.v1.Replica"] },
            listener,
            stop.cancelled_owned(),
            security,
            readiness,
        )
        .await?;
        // A task that panicked fails the service, as before (JoinSet also aborts the others
        // if this returns early).
        while let Some(joined) = tasks.join_next().await {
            joined?;
        }
        tracing::info!("replica stopped");
        Ok(())
    }
}

/// Where the chain follower reports: the replica's readiness (halted), and the last event it
/// applied (`WatchApplied`).
struct Reporting {
    ready: verity_server::ReadinessSender,
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Follows the chain stream until `stop` is cancelled. Transient NATS errors are retried; an invalid
/// event halts following (the replica keeps serving the last valid state and reports the alarm).
async fn follow_chain(
    db: Database,
    stream: async_nats::jetstream::stream::Stream,
    report: Reporting,
    rules: Arc<Sequencing>,
    mut witness: Option<witness::Witness>,
    keep: apply::Keep,
    stop: CancellationToken,
) {
    let Reporting { ready, applied } = report;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    metrics::gauge!("verity_replica_halted").set(0.0);
    while !stop.is_cancelled() {
        match follow_once(&db, &stream, &rules, &mut witness, keep, &applied, &stop).await {
            Ok(()) => break,
            Err(FollowError::Refused(error)) => {
                tracing::error!(%error, "chain refused: following halted at the last valid state");
                metrics::gauge!("verity_replica_halted").set(1.0);
                ready.set(Some(format!("{HALTED}: {error}")));
                return;
            }
            Err(FollowError::Transient(error)) => {
                tracing::warn!(%error, "chain consumer interrupted; retrying");
                backoff.wait(&stop).await;
            }
        }
    }
}

/// How a halted replica's not-ready reason starts (the lag watch leaves such a reason alone).
const HALTED: &str = "halted: the chain stream holds an event this replica refuses";

/// Every second, compares what this replica applied with the chain stream: not ready while the
/// oldest event it has not applied was published more than `bound` ago (a new replica catching
/// up, one that cannot keep up, one cut off from NATS), ready again once it is within it.
async fn watch_lag(
    db: Database,
    mut stream: async_nats::jetstream::stream::Stream,
    ready: verity_server::ReadinessSender,
    bound: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when NATS could not be asked (a replica cut off from it is as stale as one behind).
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if ready.reason().is_some_and(|r| r.starts_with(HALTED)) {
            return;
        }
        let applied = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || apply::last_seq(&db)).await
        };
        let Ok(Ok(applied)) = applied else { continue };
        let oldest = async {
            let info = stream.info().await?;
            // A server without the stream's leader may still answer from its own copy, which
            // nothing can extend: as stale as no answer.
            let replicas = info.config.num_replicas;
            if replicas > 1 && info.cluster.as_ref().is_none_or(|c| c.leader.is_none()) {
                anyhow::bail!(
                    "it has no leader: fewer than a majority of the {replicas} NATS servers \
                     keeping it are up, so no event can be stored"
                );
            }
            let last = info.state.last_sequence;
            if applied >= last {
                return Ok::<_, anyhow::Error>(None);
            }
            let message = stream.get_raw_message(applied + 1).await?;
            let published = i64::try_from(message.time.unix_timestamp_nanos() / 1_000_000)?;
            Ok(Some((last - applied, published)))
        }
        .await;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let reason = match oldest {
            Ok(behind) => {
                unreachable_since = None;
                lag_reason(behind, now_ms, bound)
            }
            Err(error) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                (since.elapsed() > bound).then(|| {
                    format!(
                        "cannot compare with the chain stream for {:.0?}: {error:#}",
                        since.elapsed()
                    )
                })
            }
        };
        metrics::gauge!("verity_replica_ready").set(if reason.is_none() { 1.0 } else { 0.0 });
        ready.set(reason);
    }
}

/// Why a replica `behind` (events not applied, and when the oldest was published, in unix ms)
/// is not ready at `now_ms`; `None` when the oldest waited at most `bound`.
fn lag_reason(behind: Option<(u64, i64)>, now_ms: i64, bound: Duration) -> Option<String> {
    let (events, published_ms) = behind?;
    let waited = Duration::from_millis(u64::try_from(now_ms - published_ms).unwrap_or(0));
    (waited > bound).then(|| {
        format!(
            "{events} chain events behind; the oldest not applied was published {:.1} s ago \
             (--max-lag-secs {})",
            waited.as_secs_f64(),
            bound.as_secs()
        )
    })
}

enum FollowError {
    Refused(ApplyError),
    Transient(anyhow::Error),
}

/// How long a follower waits for the next chain event before it checks whether the stream
/// holds events it was not given (blocks are sealed every few seconds even when empty).
const SILENCE: Duration = Duration::from_secs(5);

async fn follow_once(
    db: &Database,
    stream: &async_nats::jetstream::stream::Stream,
    rules: &Arc<Sequencing>,
    witness: &mut Option<witness::Witness>,
    keep: apply::Keep,
    applied: &tokio::sync::watch::Sender<u64>,
    stop: &CancellationToken,
) -> Result<(), FollowError> {
    let transient = |e: anyhow::Error| FollowError::Transient(e);
    let last = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || apply::last_seq(&db))
            .await
            .map_err(|e| transient(e.into()))?
            .map_err(|e| transient(e.into()))?
    };
    if let Some(witness) = witness.as_mut() {
        witness.resume(db, last).await.map_err(transient)?;
    }
    let consumer = verity_bus::ordered_chain_consumer(stream, last + 1)
        .await
        .map_err(|e| transient(e.into()))?;
    let mut messages = consumer.messages().await.map_err(|e| transient(e.into()))?;
    tracing::info!(from_seq = last + 1, "following the chain");
    let mut expected = last + 1;
    // A witness that groups mini-blocks into chunks holds them here, unapplied and unacked,
    // until the chunk closes: at `--chunk-transactions`, at a block seal, or when no mini-block
    // arrived for `--chunk-idle-ms`. Held events are redelivered after a crash (the consumer
    // restarts after the last applied event), so nothing is lost.
    let chunking = witness
        .as_ref()
        .map(|w| w.chunking())
        .filter(|c| c.transactions > 0);
    // A witness's jobs follow its chunking; only a plain replica batches what has arrived.
    let batching = witness.is_none();
    let mut pending = Held::default();
    loop {
        let next = match (pending.is_empty(), chunking) {
            (false, Some(chunking)) => tokio::select! {
                next = tokio::time::timeout(chunking.idle, messages.next()) => next.ok(),
                _ = stop.cancelled() => return Ok(()),
            },
            // Without chunks, the mini-blocks that have already arrived are applied together in
            // one MDBX transaction (one fsync), so a replica that falls behind catches up
            // instead of paying a durable commit per event; with nothing else waiting, at once.
            (false, None) if batching && pending.events.len() < MAX_APPLY_BATCH => {
                messages.next().now_or_never()
            }
            (false, None) => None,
            _ => tokio::select! {
                next = tokio::time::timeout(SILENCE, messages.next()) => match next {
                    Ok(next) => Some(next),
                    // Silent for long: fine if nothing was published, but a consumer whose NATS
                    // server went down can stall without an error: then the stream holds events
                    // this replica was not given, and it follows again from the first.
                    Err(_) => {
                        let mut stream = stream.clone();
                        let last = verity_bus::last_chain_seq(&mut stream)
                            .await
                            .map_err(|e| transient(e.into()))?;
                        if last >= expected {
                            return Err(transient(anyhow::anyhow!(
                                "no chain event delivered for {SILENCE:?} while the stream \
                                 holds {last} (next {expected}); following again"
                            )));
                        }
                        continue;
                    }
                },
                _ = stop.cancelled() => return Ok(()),
            },
        };
        let Some(next) = next else {
            // Nothing more waiting: the chunk closes.
            flush(db, rules, witness, keep, applied, &mut pending).await?;
            continue;
        };
        let message = match next {
            None => return Err(transient(anyhow::anyhow!("consumer ended"))),
            Some(Err(e)) => return Err(transient(e.into())),
            Some(Ok(message)) => message,
        };
        let seq = message
            .info()
            .map_err(|e| transient(anyhow::anyhow!("message info: {e}")))?
            .stream_sequence;
        if seq > expected {
            // A gap in delivery (a redelivery overtaken by newer messages): resubscribe from
            // the first missing event rather than refuse the chain.
            return Err(transient(anyhow::anyhow!(
                "delivery skipped from event {expected} to {seq}; resubscribing"
            )));
        }
        if seq < expected && !pending.is_empty() {
            // A redelivery of an event applied or held already.
            metrics::counter!("verity_replica_redelivered_events_total").increment(1);
            continue;
        }
        let event = match verity_bus::decode_event(seq, &message.payload) {
            Ok(event) => event,
            Err(e) => {
                return Err(FollowError::Refused(
                    ChainError::Invalid {
                        seq,
                        reason: e.to_string(),
                    }
                    .into(),
                ));
            }
        };
        let is_mini_block = transactions(&event).is_some();
        if !is_mini_block && !pending.is_empty() {
            // A block seal closes the chunk before it is applied on its own.
            flush(db, rules, witness, keep, applied, &mut pending).await?;
        }
        if let Some(chunking) = chunking
            && chunking.full_before(pending.bytes(), message.payload.len())
        {
            // This mini-block would take the chunk's job past its byte bound: it starts the
            // next chunk.
            flush(db, rules, witness, keep, applied, &mut pending).await?;
        }
        expected = expected.max(seq + 1);
        pending.messages.push(message);
        pending.events.push(event);
        // A block seal is applied on its own (the pending mini-blocks were flushed above).
        let hold = match chunking {
            Some(c) => {
                is_mini_block
                    && pending.transactions() < c.transactions
                    && pending.bytes() < c.max_bytes
            }
            None => batching && is_mini_block,
        };
        if !hold {
            flush(db, rules, witness, keep, applied, &mut pending).await?;
        }
    }
}

/// The transactions of a mini-block event; `None` for another event.
fn transactions(event: &v1::ChainEvent) -> Option<usize> {
    match &event.event {
        Some(v1::chain_event::Event::MiniBlock(mini)) => Some(mini.transactions.len()),
        _ => None,
    }
}

/// Most chain events a replica without chunks applies in one MDBX transaction.
const MAX_APPLY_BATCH: usize = 256;

/// Chain events received but not applied yet, with their messages (for their trace context).
#[derive(Default)]
struct Held {
    messages: Vec<async_nats::jetstream::Message>,
    events: Vec<v1::ChainEvent>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn transactions(&self) -> usize {
        self.events.iter().filter_map(transactions).sum()
    }

    /// The encoded size of the held events.
    fn bytes(&self) -> usize {
        self.messages.iter().map(|m| m.payload.len()).sum()
    }
}

/// Tells `WatchApplied` watchers that events up to `seq` are applied.
fn advance(applied: &tokio::sync::watch::Sender<u64>, seq: u64) {
    applied.send_if_modified(|last| {
        let moved = seq > *last;
        *last = (*last).max(seq);
        moved
    });
}

/// Applies the held events in one MDBX transaction (a witness also builds, stores and
/// publishes their chunk's job), then acknowledges them.
async fn flush(
    db: &Database,
    rules: &Arc<Sequencing>,
    witness: &mut Option<witness::Witness>,
    keep: apply::Keep,
    announce: &tokio::sync::watch::Sender<u64>,
    pending: &mut Held,
) -> Result<(), FollowError> {
    let transient = |e: anyhow::Error| FollowError::Transient(e);
    let (Some(last_message), Some(last_event)) = (pending.messages.last(), pending.events.last())
    else {
        return Ok(());
    };
    let last_seq = last_event.seq;
    let span = tracing::info_span!(
        "replica.apply",
        seq = last_seq,
        kind = event_kind(last_event),
        events = pending.events.len()
    );
    verity_telemetry::link_nats_parent(last_message.headers.as_ref(), &span);
    let events = std::mem::take(&mut pending.events);
    let count = events.len() as u64;
    let produced_ms: Vec<u64> = events
        .iter()
        .filter_map(|event| match &event.event {
            Some(v1::chain_event::Event::MiniBlock(mini)) => Some(mini.timestamp_ms),
            _ => None,
        })
        .collect();
    let (applied, job) = {
        let db = db.clone();
        let rules = rules.clone();
        let mut role = witness.take();
        let (applied, job, role) = tokio::task::spawn_blocking(move || match role.as_mut() {
            Some(w) => {
                let (applied, job) = w.apply(&db, &rules, &events);
                (applied, job, role)
            }
            None => (
                apply::apply_events(&db, &rules, &events, None, keep),
                None,
                role,
            ),
        })
        .instrument(span.clone())
        .await
        .map_err(|e| transient(e.into()))?;
        *witness = role;
        (applied, job)
    };
    if let (Some(w), Some(job)) = (witness.as_ref(), job) {
        // The job is stored with the applied mini-blocks; publish it before acknowledging the
        // chain messages (a failure here resumes by publishing the stored job).
        let mut headers = async_nats::HeaderMap::new();
        span.in_scope(|| verity_telemetry::inject_nats(&mut headers));
        w.publish(job, headers).await.map_err(transient)?;
    }
    match applied {
        Ok(Applied::Applied) => {
            for ms in produced_ms {
                metrics::histogram!("verity_replica_mini_block_age_seconds")
                    .record(verity_telemetry::age_seconds(ms));
            }
            metrics::counter!("verity_replica_applied_events_total").increment(count);
            metrics::gauge!("verity_replica_last_seq").set(last_seq as f64);
            advance(announce, last_seq);
        }
        Ok(Applied::AlreadyApplied) => {
            metrics::counter!("verity_replica_redelivered_events_total").increment(count);
            advance(announce, last_seq);
        }
        Err(ApplyError::Chain(ChainError::Storage(e))) => return Err(transient(e.into())),
        Err(refused) => return Err(FollowError::Refused(refused)),
    }
    pending.messages.clear();
    Ok(())
}

fn event_kind(event: &v1::ChainEvent) -> &'static str {
    match event.event {
        Some(v1::chain_event::Event::MiniBlock(_)) => "mini_block",
        Some(v1::chain_event::Event::Block(_)) => "block",
        Some(v1::chain_event::Event::Handover(_)) => "handover",
        None => "none",
    }
}

#[cfg(test)]
mod readiness_tests {
    use super::*;

    /// A replica is not ready once the oldest event it has not applied waited longer than its
    /// bound, and says how far behind it is; caught up, or behind by less, it is ready.
    #[test]
    fn a_replica_behind_by_more_than_its_bound_is_not_ready() {
        let bound = Duration::from_secs(30);
        let now = 1_700_000_000_000;
        assert_eq!(lag_reason(None, now, bound), None);
        assert_eq!(lag_reason(Some((5, now - 29_000)), now, bound), None);
        let reason = lag_reason(Some((1_234, now - 45_500)), now, bound).expect("not ready");
        assert!(reason.starts_with("1234 chain events behind"), "{reason}");
        assert!(
            reason.contains("45.5 s ago (--max-lag-secs 30)"),
            "{reason}"
        );
        // A clock behind the stream's is no lag.
        assert_eq!(lag_reason(Some((1, now + 5_000)), now, bound), None);
    }
}
