//! The Verity sequencer: the one writer of the chain.
//!
//! - [`mempool`]: per-sender nonce queues, replacement by fee, fair selection.
//! - [`producer`]: execution on revm, signed mini-blocks and blocks, committed to MDBX before
//!   anyone sees them.
//! - [`service`]: the gRPC API: transaction intake from ingress, the resumable chain stream,
//!   account and head queries.
//! - [`publish`]: the active sequencer's compare-and-set publishing onto JetStream.
//! - [`follow`]: a standby's application of the chain stream to its own database.
//! - [`node`]: standby and active: the lease, takeovers, handovers, stepping down.

pub mod config;
pub mod follow;
pub mod mempool;
pub mod node;
pub mod producer;
pub mod publish;
pub mod service;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_primitives::{Address, B256};
pub use config::Config;
use mempool::{Mempool, MempoolLimits};
use producer::{Committer, Head, Producer};
use tokio::sync::{broadcast, watch};
use verity_primitives::{ChainSpec, MiniBlock};
use verity_proto::v1;
use verity_server::CancellationToken;
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
    /// Whether this node is the active sequencer (a standby refuses transactions).
    active: watch::Sender<bool>,
    /// Until when (milliseconds since `started`) the lease is surely ours.
    lease_until: AtomicU64,
    started: Instant,
    /// The last event JetStream acknowledged.
    published: AtomicU64,
    /// Why this node stopped producing for want of room, if it did (transactions are refused
    /// with it, and health reports NOT_SERVING).
    storage_full: Mutex<Option<String>>,
    /// What the gRPC health service reports.
    ready: verity_server::ReadinessSender,
    /// Test builds: admit a forwarded transaction's sender without recovering it (a dishonest
    /// sequencer, for the e2e scenario that shows provers catch it).
    #[cfg(feature = "fault-injection")]
    pub(crate) trust_forwarded_senders: AtomicBool,
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
            active: watch::Sender::new(true),
            lease_until: AtomicU64::new(u64::MAX),
            started: Instant::now(),
            published: AtomicU64::new(0),
            storage_full: Mutex::new(None),
            ready: verity_server::ReadinessSender::new().0,
            #[cfg(feature = "fault-injection")]
            trust_forwarded_senders: AtomicBool::new(false),
        }
    }

    /// Records that this node stopped producing because its database is full: transactions
    /// are refused with `reason` and health reports NOT_SERVING.
    pub fn set_storage_full(&self, reason: String) {
        metrics::gauge!("verity_sequencer_storage_full").set(1.0);
        self.ready.set(Some(reason.clone()));
        *self.storage_full.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    /// Why this node stopped producing for want of room, if it did.
    pub fn storage_full(&self) -> Option<String> {
        self.storage_full
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the gRPC health service reports (`None`: SERVING).
    pub fn readiness(&self) -> verity_server::Readiness {
        self.ready.subscribe()
    }

    /// The last event JetStream acknowledged.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Records an acknowledged event.
    pub fn set_published(&self, seq: u64) {
        self.published.fetch_max(seq, Ordering::SeqCst);
    }

    /// Whether this node is the active sequencer.
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Waits up to `within` for this node to be the active sequencer.
    pub async fn wait_active(&self, within: Duration) -> bool {
        let mut active = self.active.subscribe();
        tokio::time::timeout(within, active.wait_for(|a| *a))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Marks this node active or standby.
    pub fn set_active(&self, active: bool) {
        self.active.send_replace(active);
    }

    /// Records that the lease is ours until `until`.
    pub fn hold_lease_until(&self, until: Instant) {
        let ms = until.saturating_duration_since(self.started).as_millis() as u64;
        self.lease_until.store(ms, Ordering::SeqCst);
    }

    /// Whether the lease is surely still ours (always, for a node without a lease).
    pub fn lease_held(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now < self.lease_until.load(Ordering::SeqCst)
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

    /// `sender`'s committed account and its next nonce counting the mini-block being
    /// committed. Read in place, not on the blocking pool: one account is a B-tree lookup in
    /// MDBX's memory map (microseconds), while a hop to a blocking thread and back cost more
    /// than a whole admission and serialised a forward stream's admissions behind it under load.
    pub fn account_with_next_nonce(
        &self,
        sender: Address,
    ) -> Result<(verity_primitives::Account, u64), verity_storage::StorageError> {
        // The uncommitted nonce first: whichever way the commit races the two reads, the larger
        // of both is the sender's nonce.
        let uncommitted = self.uncommitted_nonce(sender).unwrap_or(0);
        let account = self.db.read()?.account(sender)?.unwrap_or_default();
        let nonce = account.nonce.max(uncommitted);
        Ok((account, nonce))
    }

    /// Takes the trace contexts of transactions leaving the mempool.
    pub fn take_traces(&self, hashes: impl Iterator<Item = B256>) -> HashMap<B256, TraceContext> {
        let mut traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        hashes
            .filter_map(|h| traces.remove(&h).map(|c| (h, c)))
            .collect()
    }
}

/// A sequencer ready to serve: its database opened (genesis initialised), connected to NATS.
#[derive(Debug)]
pub struct Sequencer {
    config: Config,
    node: node::Node,
}

/// What `--version` prints. A build with the test-only `fault-injection` feature says so: `make
/// test` (`scripts/check-production.sh`) refuses a production binary whose version says it.
#[cfg(not(feature = "fault-injection"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What `--version` prints: this build has the test-only `fault-injection` feature, which no
/// production binary may have (`scripts/check-production.sh`).
#[cfg(feature = "fault-injection")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (test build: fault-injection)");

/// Who may call the sequencer over mutual TLS (ADR 0014; docs/security.md): ingress forwards
/// transactions, ingress and gateways read the head, gateways read pending nonces and the
/// mempool (`txpool_*`); the chain
/// stream and the state digest are the admin's (the devnet's tools and tests).
pub const POLICY: verity_server::tls::Policy = {
    use verity_server::tls::Role;
    verity_server::tls::Policy {
        rules: &[
            ("/verity.v1.Sequencer/Forward", &[Role::Ingress]),
            (
                "/verity.v1.Sequencer/GetHead",
                &[Role::Ingress, Role::Gateway],
            ),
            ("/verity.v1.Sequencer/GetAccount", &[Role::Gateway]),
            ("/verity.v1.Sequencer/GetPool", &[Role::Gateway]),
        ],
    }
};

impl verity_server::Service for Sequencer {
    type Config = Config;
    const NAME: &'static str = "sequencer";

    /// Validates the configuration, loads genesis, key and appointments, opens (or initialises)
    /// the database and connects to NATS.
    async fn open(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let node = node::Node::open(&config).await?;
        Ok(Self { config, node })
    }

    /// Serves gRPC and runs the node until `stop` is cancelled: a standby following the chain
    /// until it may take over, then the active sequencer (producing, publishing, holding the
    /// lease). On shutdown it finishes and publishes what it produced and releases the lease.
    /// Returns an error when it was deposed (another sequencer took over).
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self { config, node } = self;
        let security = verity_server::Security::load(&config.service, POLICY)?;
        let (listener, addr) = config.service.server.bind(config::DEFAULT_PORT).await?;
        let shared = node.shared.clone();
        let server_stop = CancellationToken::new();
        let _server_stop_on_drop = server_stop.clone().drop_guard();
        let routes = tonic::service::Routes::new(
            v1::sequencer_server::SequencerServer::new(service::SequencerService::new(shared))
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        );
        let readiness = node.shared.readiness();
        let server = tokio::spawn(verity_server::serve_grpc_ready(
            routes,
            &["verity.v1.Sequencer"],
            listener,
            server_stop.clone().cancelled_owned(),
            security,
            readiness,
        ));
        verity_server::write_ready_file(
            config.service.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        let advertise = config
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        tracing::info!(%addr, %advertise, "sequencer serving");
        let ran = node.run(&config, advertise, stop).await;
        server_stop.cancel();
        server.await??;
        ran?;
        tracing::info!("sequencer stopped");
        Ok(())
    }
}

impl Sequencer {
    /// Makes this sequencer tamper with its mini-blocks' writes (test builds only: the
    /// `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    pub fn tamper_with(&mut self, tamper: producer::Tamper) {
        self.node.tamper = Some(node::TamperSlot(tamper));
    }

    /// Makes this sequencer admit forwarded transactions as from whatever sender they claim,
    /// without recovering it (test builds only: the `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    pub fn trust_forwarded_senders(&self) {
        self.node
            .shared
            .trust_forwarded_senders
            .store(true, Ordering::SeqCst);
    }
}

/// The producer loop: a mini-block every `mini` when transactions wait, a block every `block`.
/// Returns when `stop` is set (after everything produced is committed), or on a storage error
/// (the sequencer must not go on after a failed commit: its in-memory head would no longer match
/// the disk).
pub(crate) fn run_producer(
    mut producer: Producer,
    shared: &Arc<SharedState>,
    head: Arc<watch::Sender<Head>>,
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
        if !shared.lease_held() {
            // Not renewed in time: another sequencer may be taking over. Produce nothing until
            // the lease is renewed (or the node learns it was deposed and stops).
            std::thread::sleep(mini);
            continue;
        }
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
