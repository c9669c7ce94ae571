//! Role `witness`: maintains the state tree over the replica's state and publishes one proving
//! job per chunk on `VERITY_CHUNK_JOBS`.
//!
//! The job is built from the checked mini-block and the state *before* it, in the same step that
//! applies the mini-block, and stored with it (meta `last_job`); it is published before the
//! chain message is acknowledged. A replica that stops between applying and publishing publishes
//! the stored job when it starts again (JetStream drops the duplicate if it had been published),
//! so no chunk is left without a job. The tree lives in memory and is rebuilt from the MDBX
//! state (plus the leaves that hold zero, stored with each mini-block in `TreeTombstones`) at
//! start, or whenever it may have diverged from it (an apply that failed after the job was
//! built). Each mini-block's writes enter the tree as one batch; the per-key steps the circuit
//! proves are derived by the provers from the job's pre-state proofs. The sequencer never waits
//! for any of this.

use std::{collections::BTreeMap, time::Instant};

use alloy_primitives::B256;
use anyhow::Context as _;
use async_nats::{HeaderMap, jetstream::Context};
use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message as _;
use verity_chunk::StateTree;
use verity_commitment::{EMPTY, account_key, account_value, storage_key, storage_value};
use verity_primitives::{ChainSpec, MiniBlock};
use verity_proto::v1;
use verity_storage::{Database, ReadTx, StorageError};

use crate::apply::{self, Applied, ApplyError, Prepared};

/// The state tree of everything in `read`: the plain state's accounts and slots, and the
/// leaves that hold zero (destroyed accounts and cleared slots that had a leaf), which the plain
/// state no longer has.
pub fn tree_of_state(read: &ReadTx<'_>) -> Result<StateTree, StorageError> {
    let (mut accounts, mut slots) = (Vec::new(), Vec::new());
    read.for_each_state(
        |address, account| accounts.push((account_key(address), Some(account_value(&account)))),
        |address, slot, value| slots.push((storage_key(address, slot), Some(storage_value(value)))),
    )?;
    // A key recreated after it held zero is in both: its present value, applied last, wins.
    let zeros = read
        .tree_tombstones()?
        .into_iter()
        .map(|key| (key, Some(EMPTY)));
    let mut tree = StateTree::default();
    tree.apply(zeros.chain(accounts).chain(slots));
    Ok(tree)
}

/// The keys of `writes` (applied to `tree`) that left a leaf holding zero: what
/// [`tree_of_state`] needs besides the plain state.
pub fn zero_leaves(writes: &BTreeMap<B256, B256>, tree: &StateTree) -> Vec<B256> {
    writes
        .iter()
        .filter(|(key, value)| **value == EMPTY && tree.get(key) == Some(&EMPTY))
        .map(|(key, _)| *key)
        .collect()
}

/// The journal entry of `job` once `tree` took its `writes`: each written key's leaf before
/// (from the job's pre-state proof of it) and after, where they differ.
pub fn journal(
    job: &verity_chunk::ChunkJob,
    writes: &BTreeMap<B256, B256>,
    tree: &StateTree,
) -> apply::TreeJournal {
    let changes = writes
        .keys()
        .filter_map(|key| {
            let before = job
                .pre_proofs
                .binary_search_by(|(k, _)| k.cmp(key))
                .ok()
                .and_then(|i| job.pre_proofs[i].1.terminal)
                .filter(|(k, _)| k == key)
                .map(|(_, value)| value);
            let after = tree.get(key).copied();
            (before != after).then_some((*key, before, after))
        })
        .collect();
    apply::TreeJournal {
        start: (job.chunk, job.pre_root),
        version: job.mini_blocks.last().map_or(job.chunk, |m| m.number + 1),
        root: job.post_root,
        changes,
    }
}

/// A job built while applying a mini-block.
#[derive(Debug)]
pub struct BuiltJob {
    chunk: u64,
    mini_block_hash: B256,
    bytes: Vec<u8>,
}

/// How the witness groups mini-blocks into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    /// Close a chunk once it holds this many transactions; 0: every mini-block is a chunk.
    pub transactions: usize,
    /// Close a chunk before the mini-block that would take its events past this many bytes.
    pub max_bytes: usize,
    /// Close a chunk when no mini-block arrived for this long.
    pub idle: std::time::Duration,
}

/// The bytes of chain events a chunk of several mini-blocks holds at most unless set otherwise
/// (`--chunk-max-bytes`): with their witness, its job stays below NATS's 8 MiB max_payload.
pub const DEFAULT_CHUNK_MAX_BYTES: usize = 2 * 1024 * 1024;

impl Chunking {
    /// Whether a chunk holding `held` bytes of events must close before a mini-block of `next`
    /// bytes joins it (a chunk holding nothing takes any mini-block).
    pub fn full_before(&self, held: usize, next: usize) -> bool {
        held > 0 && held.saturating_add(next) > self.max_bytes
    }
}

/// The witness role's state.
#[derive(Debug)]
pub struct Witness {
    js: Context,
    chain_id: u64,
    gas_limit: u64,
    chunking: Chunking,
    /// The tree and the last applied event it reflects.
    tree: Option<(StateTree, u64)>,
    /// Whether the stream positions jobs name are all recorded (no job is built before).
    backfilled: bool,
}

/// Blocks back from the head whose seal positions a witness backfills: as far as `BLOCKHASH`
/// reads.
const BLOCKHASH_WINDOW: u64 = 256;

/// Positions recorded per MDBX transaction while backfilling.
const BACKFILL_BATCH: usize = 1024;

/// Longest wait for the next chain-stream message while backfilling: a stream that stops
/// delivering leaves the backfill for the next start.
const BACKFILL_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

impl Witness {
    /// Creates the proving streams if needed.
    pub async fn new(js: Context, spec: &ChainSpec, chunking: Chunking) -> anyhow::Result<Self> {
        verity_bus::proving::ensure_proving_streams(&js).await?;
        Ok(Self {
            js,
            chain_id: spec.chain_id(),
            gas_limit: spec.gas_limit(),
            chunking,
            tree: None,
            backfilled: false,
        })
    }

    /// How this witness groups mini-blocks into chunks.
    pub fn chunking(&self) -> Chunking {
        self.chunking
    }

    /// Brings the tree to the database's state after event `last` (rebuilding it when it is not
    /// there already) and publishes the job stored with the last applied mini-block.
    pub async fn resume(&mut self, db: &Database, last: u64) -> anyhow::Result<()> {
        if self.tree.as_ref().is_none_or(|(_, seq)| *seq != last) {
            let started = Instant::now();
            let owned = db.clone();
            let tree = tokio::task::spawn_blocking(move || tree_of_state(&owned.read()?))
                .await?
                .context("rebuilding the state tree")?;
            tracing::info!(
                root = %tree.root(),
                leaves = tree.len(),
                elapsed = ?started.elapsed(),
                "state tree rebuilt from the replica's state"
            );
            self.tree = Some((tree, last));
        }
        if !self.backfilled {
            self.backfill_stream_positions(db, last)
                .await
                .context("recording the stream positions of earlier seals and handovers")?;
            self.backfilled = true;
        }
        let stored = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || db.read()?.meta(apply::meta::LAST_JOB)).await??
        };
        if let Some(bytes) = stored {
            let job = v1::ChunkJob::decode(bytes.as_slice()).context("stored job")?;
            // Jobs are identified by their first mini-block's number and last one's hash.
            let hash = job
                .mini_blocks
                .last()
                .map(|m| B256::try_from(m.hash.as_slice()).unwrap_or_default())
                .unwrap_or_default();
            let fresh = verity_bus::proving::publish_job(
                &self.js,
                job.chunk,
                hash.as_slice(),
                Bytes::from(bytes),
                HeaderMap::new(),
            )
            .await?;
            if fresh {
                tracing::info!(
                    chunk = job.chunk,
                    "published the job left unpublished at stop"
                );
            }
        }
        Ok(())
    }

    /// Once per database: the chain-stream positions of the handovers and of the seals of the
    /// blocks `BLOCKHASH` can still read that were applied without recording them (by an older
    /// release), read from the chain stream up to `last`, so that jobs can name them. A
    /// database that applied nothing yet records every position as it applies. An error (the
    /// stream unreachable, or stopping before `last`) is retried by the caller before any job
    /// is built.
    async fn backfill_stream_positions(&self, db: &Database, last: u64) -> anyhow::Result<()> {
        let done = |db: Database| {
            tokio::task::spawn_blocking(move || {
                let mut write = db.write()?;
                write.set_meta(apply::meta::STREAM_POSITIONS_BACKFILLED, b"1")?;
                write.commit()
            })
        };
        let (flagged, head) = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || {
                let read = db.read()?;
                Ok::<_, StorageError>((
                    read.meta(apply::meta::STREAM_POSITIONS_BACKFILLED)?,
                    read.last_block_number()?.unwrap_or(0),
                ))
            })
            .await??
        };
        if flagged.is_some() {
            return Ok(());
        }
        let stream = verity_bus::ensure_chain_stream(&self.js).await?;
        let held = stream
            .get_info()
            .await
            .map_err(|e| anyhow::anyhow!("chain stream info: {e}"))?
            .state;
        // Nothing applied, or nothing of it left in the stream to read.
        if last == 0 || held.messages == 0 || held.first_sequence > last {
            return Ok(done(db.clone()).await??);
        }
        let last = last.min(held.last_sequence);
        let started = Instant::now();
        let seals_from = head.saturating_sub(BLOCKHASH_WINDOW);
        let mut messages = verity_bus::ordered_chain_consumer(&stream, held.first_sequence)
            .await?
            .messages()
            .await
            .context("reading the chain stream")?;
        let (mut batch, mut recorded) = (Vec::new(), 0);
        loop {
            let message = tokio::time::timeout(BACKFILL_IDLE, messages.next())
                .await
                .ok()
                .flatten()
                .ok_or_else(|| {
                    anyhow::anyhow!("the chain stream stopped delivering before event {last}")
                })?
                .context("reading the chain stream")?;
            let seq = message
                .info()
                .map_err(|e| anyhow::anyhow!("chain stream message: {e}"))?
                .stream_sequence;
            if seq <= last
                && let Some(position) = apply::stream_position(seq, &message.payload, seals_from)
            {
                batch.push(position);
            }
            if batch.len() >= BACKFILL_BATCH || seq >= last {
                let (owned, positions) = (db.clone(), std::mem::take(&mut batch));
                recorded += tokio::task::spawn_blocking(move || {
                    apply::record_stream_positions(&owned, &positions)
                })
                .await??;
            }
            if seq >= last {
                break;
            }
            if seq % 100_000 == 0 {
                tracing::info!(
                    seq,
                    last,
                    "recording stream positions of earlier seals and handovers"
                );
            }
        }
        done(db.clone()).await??;
        tracing::info!(
            recorded,
            elapsed = ?started.elapsed(),
            "recorded the stream positions of earlier block seals and handovers"
        );
        Ok(())
    }

    /// Checks and applies `events` like any replica (one event, or the consecutive mini-blocks
    /// of a chunk), building the chunk job of the mini-blocks from the state before them, in
    /// the same MDBX transaction. Runs on a blocking thread.
    pub fn apply(
        &mut self,
        db: &Database,
        rules: &verity_primitives::governance::Sequencing,
        events: &[v1::ChainEvent],
    ) -> (Result<Applied, ApplyError>, Option<BuiltJob>) {
        let Some((mut tree, at)) = self.tree.take() else {
            return (
                Err(ApplyError::Witness {
                    number: 0,
                    reason: "state tree not loaded".into(),
                }),
                None,
            );
        };
        let (chain_id, gas_limit) = (self.chain_id, self.gas_limit);
        let mut built = None;
        let mut prepare = |read: &ReadTx<'_>,
                           minis: &[(u64, &MiniBlock)]|
         -> Result<Prepared, String> {
            let started = Instant::now();
            let seqs = minis.iter().map(|(seq, _)| *seq).collect();
            let minis = minis.iter().map(|(_, m)| (*m).clone()).collect();
            let mut job = verity_chunk::build_job(read, &mut tree, chain_id, gas_limit, minis)
                .map_err(|e| e.to_string())?;
            job.mini_block_seqs = seqs;
            // A block applied before its position was recorded has none: the job then names
            // fewer positions than hashes and provers refuse it (only `BLOCKHASH` reads of
            // blocks from before an upgrade).
            job.block_hash_seqs = job
                .witness
                .block_hashes
                .keys()
                // Block 0 has no seal: every node derives its hash from the genesis.
                .filter(|n| **n != 0)
                .filter_map(|n| read.meta_u64(&apply::meta::block_seq(*n)).ok().flatten())
                .collect();
            // The handovers of the epochs its mini-blocks and those seals are signed under
            // (epoch 0's key is the genesis's). One without a recorded position is left out:
            // provers then refuse the job, naming the epoch.
            let mut epochs: std::collections::BTreeSet<u64> =
                job.mini_blocks.iter().map(|m| m.epoch).collect();
            for number in job.witness.block_hashes.keys().filter(|n| **n != 0) {
                if let Some(block) = read.block_by_number(*number).map_err(|e| e.to_string())? {
                    epochs.insert(block.epoch());
                }
            }
            for epoch in epochs.into_iter().filter(|epoch| *epoch > 0) {
                match read
                    .meta_u64(&apply::meta::epoch_seq(epoch))
                    .map_err(|e| e.to_string())?
                {
                    Some(seq) => job.epoch_seqs.push(seq),
                    None => tracing::warn!(
                        chunk = job.chunk,
                        epoch,
                        "no recorded stream position of the epoch's handover: provers will refuse this job"
                    ),
                }
            }
            let writes = job.writes();
            let tree_tombstones = zero_leaves(&writes, &tree);
            let tree_journal = journal(&job, &writes, &tree);
            let bytes = v1::ChunkJob::from(&job).encode_to_vec();
            metrics::histogram!("verity_witness_job_build_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("verity_witness_job_steps").record(job.pre_proofs.len() as f64);
            metrics::histogram!("verity_witness_chunk_mini_blocks")
                .record(job.mini_blocks.len() as f64);
            tracing::debug!(
                chunk = job.chunk,
                keys = job.pre_proofs.len(),
                pre_root = %job.pre_root,
                post_root = %job.post_root,
                "chunk job built"
            );
            built = Some(BuiltJob {
                chunk: job.chunk,
                mini_block_hash: job.last_hash(),
                bytes: bytes.clone(),
            });
            Ok(Prepared {
                job: bytes,
                tree_tombstones,
                tree_journal,
            })
        };
        let result = apply::apply_events(db, rules, events, Some(&mut prepare), apply::Keep::State);
        self.tree = match &result {
            // The tree moved with the state.
            Ok(Applied::Applied) => Some((tree, events.last().map_or(at, |e| e.seq))),
            // A redelivery of an event applied before: nothing was built or applied.
            Ok(Applied::AlreadyApplied) => Some((tree, at)),
            // The tree may have advanced without the state: rebuild on resume.
            Err(_) => None,
        };
        (result, built)
    }

    /// Publishes a job; returns once JetStream stored it.
    pub async fn publish(&self, job: BuiltJob, headers: HeaderMap) -> anyhow::Result<()> {
        let fresh = verity_bus::proving::publish_job(
            &self.js,
            job.chunk,
            job.mini_block_hash.as_slice(),
            Bytes::from(job.bytes),
            headers,
        )
        .await
        .inspect_err(|e| {
            if matches!(e, verity_bus::BusError::TooLarge { .. }) {
                // Retrying cannot help until the server or the sequencer is reconfigured: say
                // so loudly; `safe` waits at this chunk meanwhile.
                metrics::counter!("verity_witness_job_too_large_total").increment(1);
                tracing::error!(chunk = job.chunk, error = %e, "chunk job cannot be published");
            }
        })?;
        metrics::counter!("verity_witness_jobs_published_total").increment(u64::from(fresh));
        metrics::gauge!("verity_witness_last_chunk").set(job.chunk as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::{Address, U256};
    use verity_primitives::{AccountDiff, StateDiff};

    use super::*;

    #[test]
    fn a_chunk_closes_before_the_mini_block_that_would_pass_its_byte_bound() {
        let chunking = Chunking {
            transactions: 1_000,
            max_bytes: 100,
            idle: std::time::Duration::from_millis(5),
        };
        assert!(!chunking.full_before(0, 500), "a lone mini-block goes");
        assert!(!chunking.full_before(60, 40));
        assert!(chunking.full_before(60, 41));
        assert!(chunking.full_before(usize::MAX, 1));
    }

    /// A witness that restarts rebuilds the tree its jobs led to, including leaves that hold
    /// zero after a slot was cleared, and a slot set again after that.
    #[test]
    fn the_rebuilt_tree_keeps_leaves_that_hold_zero() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        let a = Address::repeat_byte(0xaa);
        let slots = |pairs: &[(u64, u64)]| StateDiff {
            accounts: [(
                a,
                AccountDiff {
                    balance: Some(U256::from(5)),
                    storage: pairs
                        .iter()
                        .map(|(s, v)| (U256::from(*s), U256::from(*v)))
                        .collect(),
                    ..Default::default()
                },
            )]
            .into(),
        };
        let mut live = StateTree::default();
        for diff in [
            slots(&[(1, 10), (2, 20)]),
            slots(&[(2, 0)]),
            slots(&[(2, 30), (1, 0)]),
        ] {
            let before = [(a, db.read().unwrap().account(a).unwrap())].into();
            let writes = verity_chunk::tree_writes(&diff, &before);
            live.write_batch(writes.clone());
            let mut write = db.write().unwrap();
            write.apply_diff(&diff).unwrap();
            write
                .put_tree_tombstones(&zero_leaves(&writes, &live))
                .unwrap();
            write.commit().unwrap();
            assert_eq!(
                tree_of_state(&db.read().unwrap()).unwrap().root(),
                live.root()
            );
        }
        // Slot 1 was cleared: the plain state lacks it, the tree holds zero there.
        assert_eq!(live.get(&storage_key(a, U256::from(1))), Some(&EMPTY));
        assert_eq!(
            db.read().unwrap().storage(a, U256::from(1)).unwrap(),
            U256::ZERO
        );
    }
}
