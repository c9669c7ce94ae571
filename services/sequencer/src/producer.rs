//! The block producer: the one writer of the chain.
//!
//! Every mini-block interval it takes the ready transactions from the mempool, executes them on
//! revm, and signs the mini-block; every block interval it seals the mini-blocks since the
//! previous block into a signed EVM block. It runs on a dedicated OS thread (execution is
//! blocking work) and hands each signed mini-block or block to the [`Committer`], a second thread
//! that writes its state diff and chain event in one durable MDBX transaction and only then
//! hands the event to stream subscribers. The two overlap: mini-block n+1 executes while n is
//! being committed, reading the committed state with n's diff laid over it ([`Overlay`]). The
//! producer never runs more than one mini-block ahead of the disk, and waits for a sealed block
//! to be committed before it executes the next block's first mini-block (`BLOCKHASH` reads it).
//!
//! Nothing is published before it is durable, so a crash loses only transactions that no client
//! got a receipt for; they were never announced.

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex, mpsc},
    thread::JoinHandle,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use alloy_primitives::{Address, B256};
use tokio::sync::watch;
use verity_execution::BlockEnvSpec;
use verity_primitives::{
    Block, BlockRoots, BlockTemplate, ChainEventKind, ChainSpec, Header, MiniBlock, Overlay,
    SigningKey, StateDiff, StateView as _, Transaction, genesis_diff,
    governance::{EPOCH_META_KEY, Epoch, Sequencing},
};
use verity_proto::v1;
use verity_storage::{Database, StorageError};

use crate::SharedState;

/// Mini-blocks with fewer transactions are executed on the producer thread alone.
const PARALLEL_MIN_TXS: usize = 16;

/// Meta key: hash of the genesis this database was initialised with.
const META_GENESIS_HASH: &str = "genesis_hash";
/// Meta key: sequence of the last block event (0 before the first block).
pub const META_LAST_BLOCK_SEQ: &str = "last_block_seq";

/// Errors of the producer.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Execution failed (not a transaction's fault: the state could not be read).
    #[error("execution: {0}")]
    Execution(#[from] verity_execution::ExecutionError),
    /// The data directory belongs to another chain.
    #[error(
        "the data directory holds the chain with genesis {stored}, but --genesis describes {configured}; use another --data-dir or the matching genesis"
    )]
    GenesisMismatch {
        /// Genesis hash in the database.
        stored: B256,
        /// Genesis hash of the configured spec.
        configured: B256,
    },
    /// The stored chain is inconsistent.
    #[error("stored chain is inconsistent: {0}")]
    Corrupt(String),
    /// The commit thread stopped (after a failed commit, or it could not start).
    #[error("the commit thread stopped: {0}")]
    CommitterGone(String),
    /// A commit needed more room than the database has (its size ceiling, `--max-db-size-mib`,
    /// or the disk). Nothing of that commit was written.
    #[error(
        "storage full: {0}; nothing of the failed commit was written. Give the database room (raise --max-db-size-mib or grow its volume) and restart the sequencer"
    )]
    StorageFull(String),
    /// This node's key is not the sequencer of the epoch in force.
    #[error(
        "key {key} is not the sequencer of epoch {} ({}): only an appointment can make it one",
        epoch.number,
        epoch.sequencer
    )]
    NotAppointed {
        /// This node's key.
        key: Address,
        /// The epoch in force.
        epoch: Epoch,
    },
}

/// The chain as stored: what a producer or a follower resumes from.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Last event sequence.
    pub last_seq: u64,
    /// The last sealed block.
    pub parent: Block,
    /// The mini-blocks of the open block.
    pub open_minis: Vec<Arc<MiniBlock>>,
    /// The epoch in force.
    pub epoch: Epoch,
}

impl Recovered {
    /// Hash of the last mini-block (the chain of mini-blocks runs across blocks).
    pub fn last_mini_hash(&self) -> B256 {
        self.open_minis
            .last()
            .map_or(self.parent.header.mix_hash, |m| m.hash)
    }

    /// Number of the next mini-block.
    pub fn next_mini_block(&self) -> u64 {
        self.open_minis.last().map_or(
            self.parent.first_mini_block + self.parent.mini_block_count,
            |m| m.number + 1,
        )
    }

    /// Transactions in the open block so far.
    pub fn open_transactions(&self) -> u64 {
        self.open_minis
            .iter()
            .map(|m| m.transactions.len() as u64)
            .sum()
    }
}

/// Initialises genesis in an empty database, or checks that the stored one is `spec`'s.
pub fn init_genesis(db: &Database, spec: &ChainSpec) -> Result<(), ProducerError> {
    let stored = db.read()?.meta(META_GENESIS_HASH)?;
    match stored {
        None => {
            let mut write = db.write()?;
            write.apply_diff(&genesis_diff(&spec.genesis))?;
            write.put_block(&spec.genesis_block())?;
            write.set_meta(META_GENESIS_HASH, spec.genesis_hash.as_slice())?;
            write.set_meta_u64(META_LAST_BLOCK_SEQ, 0)?;
            write.commit()?;
            tracing::info!(genesis = %spec.genesis_hash, chain_id = spec.chain_id(), "initialised genesis");
        }
        Some(bytes) => {
            let stored = B256::try_from(bytes.as_slice())
                .map_err(|_| ProducerError::Corrupt("genesis hash is not 32 bytes".into()))?;
            if stored != spec.genesis_hash {
                return Err(ProducerError::GenesisMismatch {
                    stored,
                    configured: spec.genesis_hash,
                });
            }
        }
    }
    Ok(())
}

/// Reads the head, the open block and the epoch in force from what was committed.
pub fn recover(db: &Database, rules: &Sequencing) -> Result<Recovered, ProducerError> {
    let read = db.read()?;
    let last_seq = read.last_event_seq()?;
    let last_block_seq = read.meta_u64(META_LAST_BLOCK_SEQ)?.unwrap_or(0);
    let epoch = rules.current(read.meta(EPOCH_META_KEY)?.as_deref());
    let parent_number = read
        .last_block_number()?
        .ok_or_else(|| ProducerError::Corrupt("no genesis block".into()))?;
    let parent = read
        .block_by_number(parent_number)?
        .ok_or_else(|| ProducerError::Corrupt(format!("block {parent_number} missing")))?;
    let mut open_minis = Vec::new();
    let mut next = last_block_seq + 1;
    while next <= last_seq {
        let events = read.events_from(next, 512)?;
        if events.is_empty() {
            break;
        }
        for event in &events {
            let event = verity_primitives::ChainEvent::try_from(event)
                .map_err(|e| ProducerError::Corrupt(e.to_string()))?;
            match event.kind {
                ChainEventKind::MiniBlock(mini) => open_minis.push(Arc::new(*mini)),
                ChainEventKind::Handover(_) => {}
                ChainEventKind::Block(_) => {
                    return Err(ProducerError::Corrupt(format!(
                        "block event {} after the last recorded block event {last_block_seq}",
                        event.seq
                    )));
                }
            }
            next = event.seq + 1;
        }
    }
    Ok(Recovered {
        last_seq,
        parent,
        open_minis,
        epoch,
    })
}

/// What the rest of the sequencer may read about the head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    /// Last event sequence.
    pub last_seq: u64,
    /// Number of the block being built.
    pub block_number: u64,
    /// Number of the next mini-block.
    pub next_mini_block: u64,
    /// Base fee of the block being built.
    pub base_fee: u64,
}

#[derive(Debug)]
struct OpenBlock {
    number: u64,
    base_fee: u64,
    /// Decided by the first mini-block; `None` while the block is empty.
    timestamp: Option<u64>,
    first_mini_block: u64,
    /// Its mini-blocks' roots, built as they are produced: sealing does not hash the whole
    /// block on the producer's thread.
    roots: BlockRoots,
}

/// A change made to a mini-block's writes after execution, before signing.
///
/// Exists only with the `fault-injection` feature, which only the end-to-end tests enable (for
/// a sequencer that signs a tampered diff): no production build can call it.
#[cfg(feature = "fault-injection")]
pub type Tamper = std::sync::Arc<dyn Fn(u64, &mut verity_primitives::StateDiff) + Send + Sync>;

#[cfg(feature = "fault-injection")]
#[derive(Clone)]
struct TamperHook(Tamper);

#[cfg(feature = "fault-injection")]
impl std::fmt::Debug for TamperHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TamperHook")
    }
}

/// Most bytes one mini-block's chain event may take unless set otherwise
/// ([`Producer::set_max_bytes`], `--max-mini-block-bytes`): its transactions, receipts with
/// their logs and state diff ([`event_bytes`]). With its job's witness it must stay below
/// NATS's max_payload (the devnet's and the chart's 8 MiB). A mini-block of one transaction may
/// exceed it, by what that transaction's gas buys (logs cost 8 gas a byte).
pub const DEFAULT_MAX_MINI_BLOCK_BYTES: usize = 2 * 1024 * 1024;

/// An upper bound of the bytes a mini-block of these transactions, receipts and diff takes
/// encoded as a chain event: every field at its largest encoding. Cheap (no encoding), so it is
/// checked after each execution.
pub fn event_bytes(
    transactions: &[Transaction],
    receipts: &[verity_primitives::Receipt],
    diff: &StateDiff,
) -> usize {
    // A length-delimited field: its tag and a length of up to 5 bytes.
    const FIELD: usize = 6;
    // The header fields, the signature and the event around the mini-block.
    const HEADER: usize = 512;
    // A receipt's fixed fields: hashes and addresses of 32 and 20 bytes, numbers up to 10.
    const RECEIPT: usize = FIELD + 3 * (FIELD + 32) + 3 * (FIELD + 20) + 3 * 11;
    // An account diff's fixed fields: address, balance, nonce, destroyed.
    const ACCOUNT: usize = FIELD + (FIELD + 20) + (FIELD + 32) + 11 + 2;
    const SLOT: usize = FIELD + 2 * (FIELD + 32);
    let txs: usize = transactions
        .iter()
        .map(|tx| 2 * FIELD + crate::mempool::size(tx))
        .sum();
    let receipts: usize = receipts
        .iter()
        .map(|receipt| {
            RECEIPT
                + receipt
                    .logs
                    .iter()
                    .map(|log| {
                        2 * FIELD
                            + 20
                            + log.topics().len() * (FIELD + 32)
                            + FIELD
                            + log.data.data.len()
                    })
                    .sum::<usize>()
        })
        .sum();
    let accounts: usize = diff
        .accounts
        .values()
        .map(|account| {
            ACCOUNT
                + account.code.as_ref().map_or(0, |code| FIELD + code.len())
                + account.storage.len() * SLOT
        })
        .sum();
    HEADER + txs + receipts + FIELD + accounts
}

/// The chain writer. Not `Sync`: exactly one exists, on the producer thread.
#[derive(Debug)]
pub struct Producer {
    #[cfg(feature = "fault-injection")]
    tamper: Option<TamperHook>,
    db: Database,
    key: SigningKey,
    spec: ChainSpec,
    /// The epoch it signs under.
    epoch: u64,
    fee_recipient: Address,
    max_txs: usize,
    max_bytes: usize,
    execution_threads: usize,
    last_seq: u64,
    last_mini_hash: B256,
    last_mini_timestamp_ms: u64,
    next_mini_block: u64,
    parent: Header,
    parent_hash: B256,
    open: OpenBlock,
    /// The last mini-block handed to the committer, while it may not be on disk yet (cleared
    /// when a block is sealed after it).
    in_flight: Option<Arc<MiniBlock>>,
    /// Mini-blocks executed while their predecessor was still being committed.
    pipelined: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Producer {
    /// Opens the chain in `db` (initialising genesis on first start) and recovers the head and
    /// the open block from what was committed. Refused unless `key` is the sequencer of the
    /// epoch in force.
    pub fn open(
        db: Database,
        spec: ChainSpec,
        rules: &Sequencing,
        key: SigningKey,
        fee_recipient: Address,
        max_txs: usize,
    ) -> Result<Self, ProducerError> {
        init_genesis(&db, &spec)?;
        let recovered = recover(&db, rules)?;
        let (last_mini_hash, next_mini_block) =
            (recovered.last_mini_hash(), recovered.next_mini_block());
        let Recovered {
            last_seq,
            parent: parent_block,
            open_minis,
            epoch,
        } = recovered;
        if epoch.sequencer != key.address() {
            return Err(ProducerError::NotAppointed {
                key: key.address(),
                epoch,
            });
        }
        let parent_number = parent_block.number();
        let sealed_next_mini = parent_block.first_mini_block + parent_block.mini_block_count;
        let last_mini_timestamp_ms = open_minis.last().map_or(0, |m| m.timestamp_ms);
        let base_fee = spec.next_base_fee(&parent_block.header);
        let timestamp = open_minis
            .first()
            .map(|m| block_timestamp(&parent_block.header, m.timestamp_ms));
        let mut roots = BlockRoots::default();
        for mini in &open_minis {
            roots.push(mini);
        }
        let open = OpenBlock {
            number: parent_number + 1,
            base_fee,
            timestamp,
            first_mini_block: sealed_next_mini,
            roots,
        };
        tracing::info!(
            last_seq,
            block = open.number,
            open_mini_blocks = open.roots.mini_blocks(),
            epoch = epoch.number,
            "chain recovered"
        );
        Ok(Self {
            #[cfg(feature = "fault-injection")]
            tamper: None,
            db,
            key,
            spec,
            epoch: epoch.number,
            fee_recipient,
            max_txs,
            max_bytes: DEFAULT_MAX_MINI_BLOCK_BYTES,
            execution_threads: 1,
            last_seq,
            last_mini_hash,
            last_mini_timestamp_ms,
            next_mini_block,
            parent_hash: parent_block.hash,
            parent: parent_block.header,
            open,
            in_flight: None,
            pipelined: 0,
        })
    }

    /// Installs a tamper hook (test builds only; see [`Tamper`]).
    #[cfg(feature = "fault-injection")]
    pub fn tamper_with(&mut self, tamper: Tamper) {
        tracing::warn!("FAULT INJECTION: this sequencer will sign tampered mini-blocks");
        self.tamper = Some(TamperHook(tamper));
    }

    /// Executes mini-blocks on `threads` threads (see [`verity_execution::execute_parallel`]).
    pub fn set_execution_threads(&mut self, threads: usize) {
        self.execution_threads = threads.max(1);
    }

    /// Bounds the encoded transactions of one mini-block to `bytes` (a larger transaction still
    /// goes alone), so that its chain event and its proving job stay below NATS's max_payload.
    pub fn set_max_bytes(&mut self, bytes: usize) {
        self.max_bytes = bytes.max(1);
    }

    /// How many mini-blocks started executing while their predecessor was still being
    /// committed (over the committed state plus its diff).
    pub fn pipelined(&self) -> u64 {
        self.pipelined
    }

    /// The current head.
    pub fn head(&self) -> Head {
        Head {
            last_seq: self.last_seq,
            block_number: self.open.number,
            next_mini_block: self.next_mini_block,
            base_fee: self.open.base_fee,
        }
    }

    /// Executes the ready transactions into a signed mini-block and hands it to `committer`;
    /// false when no transaction was ready.
    pub fn produce_mini_block(
        &mut self,
        shared: &SharedState,
        committer: &Committer,
    ) -> Result<bool, ProducerError> {
        if shared.lock_mempool().is_empty() {
            return Ok(false);
        }
        // At most one mini-block may be uncommitted while the next executes.
        let waited = Instant::now();
        let on_disk = match self.in_flight {
            Some(_) => self.last_seq - 1,
            None => self.last_seq,
        };
        committer.wait_until(on_disk)?;
        metrics::histogram!("verity_sequencer_commit_wait_seconds")
            .record(waited.elapsed().as_secs_f64());

        let started = Instant::now();
        let remaining_gas = self
            .spec
            .gas_limit()
            .saturating_sub(self.open.roots.gas_used());
        let read = self.db.read()?;
        let nothing = StateDiff::default();
        let uncommitted = match &self.in_flight {
            Some(mini) if read.last_event_seq()? < self.last_seq => Some(&mini.diff),
            _ => None,
        };
        let overlaid = uncommitted.is_some();
        let view = Overlay::new(&read, uncommitted.unwrap_or(&nothing));
        let txs = {
            let mut mempool = shared.lock_mempool();
            metrics::gauge!("verity_sequencer_mempool_transactions").set(mempool.len() as f64);
            mempool.take_ready(self.max_txs, remaining_gas, self.max_bytes, |address| {
                view.account(address)
                    .ok()
                    .flatten()
                    .map(|a| a.nonce)
                    .unwrap_or(0)
            })
        };
        if txs.is_empty() {
            return Ok(false);
        }
        if overlaid {
            self.pipelined += 1;
            metrics::counter!("verity_sequencer_pipelined_mini_blocks_total").increment(1);
        }
        let timestamp_ms = now_ms().max(self.last_mini_timestamp_ms);
        let timestamp = *self
            .open
            .timestamp
            .get_or_insert_with(|| block_timestamp(&self.parent, timestamp_ms));
        let env = BlockEnvSpec {
            chain_id: self.spec.chain_id(),
            number: self.open.number,
            timestamp,
            base_fee: self.open.base_fee,
            gas_limit: self.spec.gas_limit(),
            beneficiary: self.fee_recipient,
        };
        let mut by_hash: HashMap<B256, Transaction> =
            txs.iter().map(|t| (*t.tx_hash(), t.clone())).collect();
        let traces = shared.take_traces(txs.iter().map(|t| *t.tx_hash()));
        // Waking the workers costs more than a few transactions take.
        let gas_used = self.open.roots.gas_used();
        let threads = if txs.len() >= PARALLEL_MIN_TXS {
            self.execution_threads
        } else {
            1
        };
        let execute = |txs| {
            let outcome = verity_execution::execute_parallel(&view, &env, txs, gas_used, threads)?;
            metrics::counter!("verity_sequencer_speculations_kept_total")
                .increment(outcome.speculation.committed as u64);
            metrics::counter!("verity_sequencer_speculations_redone_total")
                .increment(outcome.speculation.reexecuted as u64);
            Ok::<_, ProducerError>(outcome)
        };
        let mut outcome = execute(txs)?;
        // The transactions were taken by their encoded size; their logs and writes are known
        // only now. A mini-block whose event would pass the byte bound keeps a share of its
        // transactions that fits, executed again on their own (the same results: the same
        // state, in the same order), and the others go back to the mempool for the next one.
        while outcome.executed.len() > 1 {
            let bytes = event_bytes(&outcome.executed, &outcome.receipts, &outcome.diff);
            if bytes <= self.max_bytes {
                break;
            }
            let keep = (outcome.executed.len() * self.max_bytes / bytes)
                .clamp(1, outcome.executed.len() - 1);
            let later = outcome.executed.split_off(keep);
            tracing::debug!(
                bytes,
                kept = keep,
                put_back = later.len(),
                "mini-block over its byte bound: cut"
            );
            metrics::counter!("verity_sequencer_mini_blocks_cut_for_size_total").increment(1);
            for tx in &later {
                by_hash.remove(tx.tx_hash());
            }
            shared.lock_mempool().restore(later);
            // What the first execution refused is handled below as always.
            let rejected = std::mem::take(&mut outcome.rejected);
            outcome = execute(std::mem::take(&mut outcome.executed))?;
            outcome.rejected.extend(rejected);
        }
        drop(read);

        let mut retry = Vec::new();
        for (hash, rejection) in &outcome.rejected {
            let Some(tx) = by_hash.remove(hash) else {
                continue;
            };
            let message = rejection.message.as_str();
            if message.starts_with("nonce too high") || message.starts_with("gas limit reached") {
                retry.push(tx);
            } else {
                tracing::info!(tx_hash = %hash, reason = message, "dropped at execution");
                metrics::counter!("verity_sequencer_dropped_transactions_total").increment(1);
            }
        }
        if !retry.is_empty() {
            shared.lock_mempool().restore(retry);
        }
        if outcome.executed.is_empty() {
            return Ok(false);
        }

        let first_trace = outcome
            .executed
            .first()
            .and_then(|t| traces.get(t.tx_hash()))
            .cloned()
            .unwrap_or_default();
        let span = tracing::info_span!(
            "sequencer.mini_block",
            height = self.next_mini_block,
            block = self.open.number,
            txs = outcome.executed.len()
        );
        verity_telemetry::link_map_parent(&first_trace, &span);

        let mut mini = MiniBlock {
            number: self.next_mini_block,
            block_number: self.open.number,
            index: self.open.roots.mini_blocks() as u32,
            epoch: self.epoch,
            timestamp_ms,
            parent_hash: self.last_mini_hash,
            base_fee: self.open.base_fee,
            block_timestamp: timestamp,
            beneficiary: self.fee_recipient,
            transactions: outcome.executed,
            receipts: outcome.receipts,
            diff: outcome.diff,
            hash: B256::ZERO,
            signature: verity_primitives::UNSIGNED,
        };
        #[cfg(feature = "fault-injection")]
        if let Some(TamperHook(tamper)) = &self.tamper {
            tamper(mini.number, &mut mini.diff);
        }
        mini.seal(&self.key);
        let mini = Arc::new(mini);
        metrics::histogram!("verity_sequencer_execute_seconds")
            .record(started.elapsed().as_secs_f64());

        self.last_seq += 1;
        self.last_mini_hash = mini.hash;
        self.last_mini_timestamp_ms = timestamp_ms;
        self.next_mini_block += 1;
        self.in_flight = Some(mini.clone());
        shared.set_uncommitted(Some(mini.clone()));
        tracing::debug!(
            height = mini.number,
            txs = mini.transactions.len(),
            gas = mini.gas_used(),
            "mini-block signed"
        );
        committer.submit(Job {
            seq: self.last_seq,
            head: self.head(),
            work: Work::MiniBlock(mini.clone()),
            started,
            span,
        })?;
        // While it commits: its share of the block's roots, so the seal has nothing to hash.
        let hashing = Instant::now();
        self.open.roots.push(&mini);
        metrics::histogram!("verity_sequencer_block_roots_seconds")
            .record(hashing.elapsed().as_secs_f64());
        Ok(true)
    }

    /// Seals the open block (possibly empty) and hands it to `committer`.
    pub fn seal_block(&mut self, committer: &Committer) -> Result<(), ProducerError> {
        let started = Instant::now();
        let timestamp = self
            .open
            .timestamp
            .unwrap_or_else(|| block_timestamp(&self.parent, now_ms()));
        let template = BlockTemplate {
            number: self.open.number,
            parent_hash: self.parent_hash,
            timestamp,
            gas_limit: self.spec.gas_limit(),
            base_fee: self.open.base_fee,
            beneficiary: self.fee_recipient,
            epoch: self.epoch,
        };
        let block = Block::seal_built(
            template,
            self.open.first_mini_block,
            std::mem::take(&mut self.open.roots),
            self.last_mini_hash,
            &self.key,
        );
        metrics::histogram!("verity_sequencer_seal_block_seconds")
            .record(started.elapsed().as_secs_f64());
        let span =
            tracing::info_span!("sequencer.block", height = block.number(), hash = %block.hash);
        self.last_seq += 1;
        self.open = OpenBlock {
            number: block.number() + 1,
            base_fee: self.spec.next_base_fee(&block.header),
            timestamp: None,
            first_mini_block: self.next_mini_block,
            roots: BlockRoots::default(),
        };
        self.parent_hash = block.hash;
        self.parent = block.header.clone();
        self.in_flight = None;
        tracing::debug!(height = self.parent.number, "block sealed");
        committer.submit(Job {
            seq: self.last_seq,
            head: self.head(),
            work: Work::Block(Box::new(block)),
            started,
            span,
        })
    }

    /// The current chain spec.
    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }
}

/// A block's timestamp: the first mini-block's wall-clock second, strictly after the parent.
fn block_timestamp(parent: &Header, first_mini_block_ms: u64) -> u64 {
    (first_mini_block_ms / 1000).max(parent.timestamp + 1)
}

/// What the producer hands to the committer.
#[derive(Debug)]
pub struct Job {
    seq: u64,
    /// The head once this is committed.
    head: Head,
    work: Work,
    /// When producing it started.
    started: Instant,
    span: tracing::Span,
}

#[derive(Debug)]
enum Work {
    MiniBlock(Arc<MiniBlock>),
    Block(Box<Block>),
}

#[derive(Debug, Default)]
struct Progress {
    /// Sequence of the last committed event.
    committed: u64,
    /// Set when the thread stopped on an error.
    failed: Option<String>,
    /// Whether that error was a full database.
    full: bool,
}

impl Progress {
    /// What the producer is told when the commit thread is gone.
    fn gone(&self) -> ProducerError {
        let reason = self.failed.clone().unwrap_or_else(|| "stopped".into());
        if self.full {
            ProducerError::StorageFull(reason)
        } else {
            ProducerError::CommitterGone(reason)
        }
    }
}

/// A storage error that is a full database, as [`ProducerError::StorageFull`].
fn full_storage(error: ProducerError) -> ProducerError {
    match error {
        ProducerError::Storage(e) if e.is_full() => ProducerError::StorageFull(e.to_string()),
        other => other,
    }
}

/// The commit thread: writes what the producer signed, in order, each in one durable MDBX
/// transaction, then publishes the head and the event. It stops at the first failed commit (the
/// producer's in-memory head would no longer match the disk); the producer learns it at its next
/// [`Committer::submit`] or [`Committer::wait_until`].
#[derive(Debug)]
pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
    progress: Arc<(Mutex<Progress>, Condvar)>,
    thread: Option<JoinHandle<Result<(), ProducerError>>>,
}

impl Committer {
    /// Starts the thread; `committed` is the last event already on disk.
    pub fn spawn(
        shared: Arc<SharedState>,
        head: Arc<watch::Sender<Head>>,
        committed: u64,
    ) -> Result<Self, ProducerError> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let progress = Arc::new((
            Mutex::new(Progress {
                committed,
                failed: None,
                full: false,
            }),
            Condvar::new(),
        ));
        let thread = {
            let progress = progress.clone();
            std::thread::Builder::new()
                .name("committer".into())
                .spawn(move || {
                    let result =
                        run_committer(&shared, &head, &receiver, &progress).map_err(full_storage);
                    let (lock, changed) = &*progress;
                    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(error) = &result {
                        tracing::error!(%error, "commit failed; the producer stops");
                        if let ProducerError::StorageFull(reason) = error {
                            state.full = true;
                            state.failed = Some(reason.clone());
                        } else {
                            state.failed = Some(error.to_string());
                        }
                    } else {
                        state.failed = Some("stopped".into());
                    }
                    changed.notify_all();
                    result
                })
                .map_err(|e| ProducerError::CommitterGone(format!("cannot start: {e}")))?
        };
        Ok(Self {
            jobs: Some(jobs),
            progress,
            thread: Some(thread),
        })
    }

    /// Queues a job (commits happen in submission order).
    pub fn submit(&self, job: Job) -> Result<(), ProducerError> {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if sent { Ok(()) } else { Err(self.gone()) }
    }

    /// Blocks until event `seq` is committed.
    pub fn wait_until(&self, seq: u64) -> Result<(), ProducerError> {
        let (lock, changed) = &*self.progress;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        while state.committed < seq {
            if state.failed.is_some() {
                return Err(state.gone());
            }
            state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    /// Commits everything queued, then stops the thread; its error if a commit failed.
    pub fn finish(mut self) -> Result<(), ProducerError> {
        self.jobs = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ProducerError::CommitterGone("the thread panicked".into())),
            None => Ok(()),
        }
    }

    fn gone(&self) -> ProducerError {
        let (lock, _) = &*self.progress;
        lock.lock().unwrap_or_else(|e| e.into_inner()).gone()
    }
}

fn run_committer(
    shared: &SharedState,
    head: &watch::Sender<Head>,
    jobs: &mpsc::Receiver<Job>,
    progress: &(Mutex<Progress>, Condvar),
) -> Result<(), ProducerError> {
    for job in jobs {
        let _entered = job.span.enter();
        let committing = Instant::now();
        let mut event = v1::ChainEvent {
            seq: job.seq,
            event: None,
            trace_context: Default::default(),
        };
        let mut write = shared.db.write()?;
        match &job.work {
            Work::MiniBlock(mini) => {
                event.event = Some(v1::chain_event::Event::MiniBlock(mini.as_ref().into()));
                write.apply_diff(&mini.diff)?;
                write.put_event(&event)?;
            }
            Work::Block(block) => {
                event.event = Some(v1::chain_event::Event::Block(block.as_ref().into()));
                write.put_block(block)?;
                write.put_event(&event)?;
                write.set_meta_u64(META_LAST_BLOCK_SEQ, event.seq)?;
            }
        }
        write.commit()?;
        event.trace_context = verity_telemetry::inject_map();
        metrics::histogram!("verity_sequencer_commit_seconds")
            .record(committing.elapsed().as_secs_f64());
        match &job.work {
            Work::MiniBlock(mini) => {
                shared.committed(mini);
                metrics::counter!("verity_sequencer_transactions_total")
                    .increment(mini.transactions.len() as u64);
                metrics::counter!("verity_sequencer_mini_blocks_total").increment(1);
                metrics::counter!("verity_sequencer_gas_used_total")
                    .increment(mini.receipts.iter().map(|r| r.gas_used).sum());
                metrics::histogram!("verity_sequencer_mini_block_seconds")
                    .record(job.started.elapsed().as_secs_f64());
            }
            Work::Block(block) => {
                metrics::counter!("verity_sequencer_blocks_total").increment(1);
                metrics::gauge!("verity_sequencer_block_height").set(block.number() as f64);
            }
        }
        head.send_replace(job.head);
        // No receiver is fine: nobody is streaming right now.
        let _ = shared.events.send(Arc::new(event));
        let (lock, changed) = progress;
        lock.lock().unwrap_or_else(|e| e.into_inner()).committed = job.seq;
        changed.notify_all();
    }
    Ok(())
}
