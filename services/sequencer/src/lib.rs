//! The Verity sequencer: the one writer of the chain.
//!
//! - [`mempool`]: per-sender nonce queues, replacement by fee, fair selection.
//! - [`producer`]: execution on revm, signed mini-blocks and blocks, committed to MDBX before
//!   anyone sees them.
//! - [`service`]: the gRPC API: transaction intake from ingress, the resumable chain stream,
//!   account and head queries.

pub mod config;
pub mod mempool;
pub mod producer;
pub mod service;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_primitives::{Address, B256};
use anyhow::Context as _;
pub use config::Config;
use mempool::{Mempool, MempoolLimits};
use producer::{Committer, Head, Producer};
use tokio::sync::{broadcast, watch};
use verity_primitives::{ChainSpec, MiniBlock, SequencerKey};
use verity_proto::v1;
use verity_storage::Database;

/// A W3C trace context carried as a string map.
pub type TraceContext = HashMap<String, String>;

/// How many chain events a slow stream subscriber may fall behind before it is switched to
/// reading from storage.
const EVENT_BUFFER: usize = 4096;
/// Most trace contexts kept for waiting transactions.
const MAX_TRACES: usize = 100_000;

/// State shared by the producer thread and the gRPC handlers.
#[derive(Debug)]
pub struct SharedState {
    /// The database (the producer is its only writer).
    pub db: Database,
    /// The chain spec.
    pub spec: ChainSpec,
    mempool: Mutex<Mempool>,
    traces: Mutex<HashMap<B256, TraceContext>>,
    /// The signed mini-block the committer is writing, if any (its nonces count as pending).
    uncommitted: Mutex<Option<Arc<MiniBlock>>>,
    /// New chain events, after they were committed.
    pub events: broadcast::Sender<Arc<v1::ChainEvent>>,
    /// The head after the last commit.
    pub head: watch::Receiver<Head>,
}

impl SharedState {
    /// The state of a sequencer over `db` with an empty mempool bounded by `limits`; `head` is
    /// what the producer's committer publishes to.
    pub fn new(
        db: Database,
        spec: ChainSpec,
        limits: MempoolLimits,
        head: watch::Receiver<Head>,
    ) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Self {
            db,
            spec,
            mempool: Mutex::new(Mempool::new(limits)),
            traces: Mutex::new(HashMap::new()),
            uncommitted: Mutex::new(None),
            events,
            head,
        }
    }

    /// Locks the mempool (critical sections are short; a poisoned lock is recovered because the
    /// mempool's invariants hold between its methods).
    pub fn lock_mempool(&self) -> MutexGuard<'_, Mempool> {
        self.mempool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the trace context of a waiting transaction.
    pub fn remember_trace(&self, hash: B256, context: TraceContext) {
        if context.is_empty() {
            return;
        }
        let mut traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        if traces.len() >= MAX_TRACES {
            traces.clear();
        }
        traces.insert(hash, context);
    }

    /// Records the mini-block handed to the committer.
    pub fn set_uncommitted(&self, mini: Option<Arc<MiniBlock>>) {
        *self.uncommitted.lock().unwrap_or_else(|e| e.into_inner()) = mini;
    }

    /// Called by the committer once `mini` is on disk.
    pub fn committed(&self, mini: &Arc<MiniBlock>) {
        let mut uncommitted = self.uncommitted.lock().unwrap_or_else(|e| e.into_inner());
        if uncommitted.as_ref().is_some_and(|u| Arc::ptr_eq(u, mini)) {
            *uncommitted = None;
        }
    }

    /// The nonce `sender` has after the mini-block being committed, if that one changed it.
    /// Read it *before* the committed state: whichever way the commit races the two reads,
    /// the larger of both is the sender's nonce.
    pub fn uncommitted_nonce(&self, sender: Address) -> Option<u64> {
        self.uncommitted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|mini| mini.diff.accounts.get(&sender))
            .and_then(|change| change.nonce)
    }

    /// Takes the trace contexts of transactions leaving the mempool.
    pub fn take_traces(&self, hashes: impl Iterator<Item = B256>) -> HashMap<B256, TraceContext> {
        let mut traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        hashes
            .filter_map(|h| traces.remove(&h).map(|c| (h, c)))
            .collect()
    }
}

/// A sequencer ready to serve.
#[derive(Debug)]
pub struct Sequencer {
    config: Config,
    shared: Arc<SharedState>,
    producer: Producer,
    head_tx: watch::Sender<Head>,
}

impl Sequencer {
    /// Validates the configuration, loads genesis and key, and opens (or initialises) the chain.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let spec = ChainSpec::load(&config.genesis).context("flag --genesis / VERITY_GENESIS")?;
        let key_text = std::fs::read_to_string(&config.key_file).with_context(|| {
            format!(
                "cannot read --key-file / VERITY_SEQUENCER_KEY_FILE {}",
                config.key_file.display()
            )
        })?;
        let key = SequencerKey::from_hex(&key_text).with_context(|| {
            format!(
                "--key-file {} does not hold a hex secp256k1 private key",
                config.key_file.display()
            )
        })?;
        let fee_recipient = config.fee_recipient.unwrap_or_else(|| key.address());
        let data_dir = config.data_dir.clone();
        let max_txs = config.max_mini_block_txs;
        let threads = config.execution_threads();
        let (db, producer) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let db = Database::open(&data_dir)
                .with_context(|| format!("cannot open --data-dir {}", data_dir.display()))?;
            let mut producer = Producer::open(db.clone(), spec, key, fee_recipient, max_txs)?;
            producer.set_execution_threads(threads);
            Ok((db, producer))
        })
        .await??;
        let (head_tx, head) = watch::channel(producer.head());
        let limits = MempoolLimits {
            per_sender: config.mempool_per_sender,
            total: config.mempool_max_txs,
            total_bytes: config.mempool_max_bytes,
            ..MempoolLimits::default()
        };
        tracing::info!(
            sequencer = %producer_address(&config)?,
            chain_id = producer.spec().chain_id(),
            head = ?producer.head(),
            "sequencer opened"
        );
        Ok(Self {
            shared: Arc::new(SharedState::new(db, producer.spec().clone(), limits, head)),
            producer,
            head_tx,
            config,
        })
    }

    /// Makes this sequencer tamper with its mini-blocks' writes (test builds only: the
    /// `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    pub fn tamper_with(&mut self, tamper: producer::Tamper) {
        self.producer.tamper_with(tamper);
    }

    /// The shared state (for tests).
    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    /// Runs the producer and the gRPC server until `shutdown` resolves; then stops producing,
    /// finishes the mini-block in progress, and drains the server.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            config,
            shared,
            producer,
            head_tx,
        } = self;
        let listener =
            verity_server::bind(config.server.grpc_addr_or(config::DEFAULT_PORT)).await?;
        let addr = verity_server::local_addr(&listener);
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(tokio::sync::Notify::new());
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            let failed = failed.clone();
            let mini = config.mini_block_interval();
            let block = config.block_interval();
            std::thread::Builder::new()
                .name("producer".into())
                .spawn(move || {
                    let result = run_producer(producer, &shared, head_tx, mini, block, &stop);
                    if result.is_err() {
                        failed.notify_one();
                    }
                    result
                })?
        };
        let routes = tonic::service::Routes::new(
            v1::sequencer_server::SequencerServer::new(service::SequencerService::new(shared))
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        );
        verity_server::write_ready_file(
            config.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        tracing::info!(%addr, "sequencer serving");
        let stop_on_shutdown = {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = failed.notified() => {
                        tracing::error!("producer stopped on an error; shutting down");
                    }
                }
                stop.store(true, Ordering::SeqCst);
            }
        };
        let served =
            verity_server::serve_grpc(routes, &["verity.v1.Sequencer"], listener, stop_on_shutdown)
                .await;
        stop.store(true, Ordering::SeqCst);
        let produced = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))?;
        served?;
        produced?;
        tracing::info!("sequencer stopped");
        Ok(())
    }
}

fn producer_address(config: &Config) -> anyhow::Result<alloy_primitives::Address> {
    let text = std::fs::read_to_string(&config.key_file)?;
    Ok(SequencerKey::from_hex(&text)?.address())
}

/// The producer loop: a mini-block every `mini` when transactions wait, a block every `block`.
/// Returns when `stop` is set (after everything produced is committed), or on a storage error
/// (the sequencer must not go on after a failed commit: its in-memory head would no longer match
/// the disk).
fn run_producer(
    mut producer: Producer,
    shared: &Arc<SharedState>,
    head: watch::Sender<Head>,
    mini: Duration,
    block: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let committer = Committer::spawn(shared.clone(), head, producer.head().last_seq)?;
    let produced = produce(&mut producer, shared, &committer, mini, block, stop);
    let committed = committer.finish();
    produced?;
    committed?;
    Ok(())
}

fn produce(
    producer: &mut Producer,
    shared: &SharedState,
    committer: &Committer,
    mini: Duration,
    block: Duration,
    stop: &AtomicBool,
) -> Result<(), producer::ProducerError> {
    let mut next_block = Instant::now() + block;
    let mut next_mini = Instant::now() + mini;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next_mini {
            std::thread::sleep(next_mini - now);
            continue;
        }
        next_mini += mini;
        if next_mini < now {
            next_mini = now + mini;
        }
        producer.produce_mini_block(shared, committer)?;
        if Instant::now() >= next_block {
            producer.seal_block(committer)?;
            next_block += block;
            if next_block < Instant::now() {
                next_block = Instant::now() + block;
            }
        }
    }
    Ok(())
}
