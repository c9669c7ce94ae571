//! Applying the chain stream to the replica's own state, without executing any transaction.
//!
//! Each event is checked as every follower checks it ([`verity_chain`]: sequencer signature and
//! epoch, hash over the contents, its place in the chain, a handover against genesis's
//! governance), then applied in one MDBX transaction together with the replica's position, so a
//! crash at any point leaves either the whole event applied or none of it, and redelivered
//! events are recognised and skipped. What is the replica's own is here: where it keeps its
//! position ([`meta`]), what it stores besides the chain data (transactions and receipts by
//! hash, state history, the witness's job), and that a block seal or a handover is applied on
//! its own.

use alloy_primitives::B256;
use prost::Message as _;
use verity_chain::{ChainError, CheckedEvent, Cursor, Layout, Redelivered};
use verity_primitives::{
    ChainEventKind, ChainSpec, MiniBlock, genesis_diff,
    governance::{EPOCH_META_KEY, Sequencing},
};
use verity_proto::v1;
use verity_storage::{Database, ReadTx, StorageError, WriteTx};

/// Enters block `number`'s transactions (`hashes`, in order) into the address index, with the
/// addresses their receipts name ([`verity_primitives::Receipt::addresses`]).
fn index_block(write: &mut WriteTx<'_>, number: u64, hashes: &[B256]) -> Result<(), StorageError> {
    for (index, hash) in hashes.iter().enumerate() {
        if let Some(receipt) = write.receipt(*hash)? {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            write.index_transaction(receipt.addresses(), number, index, *hash)?;
        }
    }
    Ok(())
}

/// Indexes every sealed block a database written before the address index holds, once (the
/// index then grows with each seal). One MDBX transaction: a crash leaves it to the next start.
/// Returns the transactions indexed.
pub fn complete_address_index(db: &Database) -> Result<u64, StorageError> {
    use verity_storage::tables::META_ADDRESS_INDEX_COMPLETE;
    if db.read()?.meta(META_ADDRESS_INDEX_COMPLETE)?.is_some() {
        return Ok(0);
    }
    let mut write = db.write()?;
    let mut indexed = 0u64;
    if let Some(last) = write.last_block_number()? {
        for number in 0..=last {
            let hashes = write.block_transaction_hashes(number)?;
            indexed += hashes.len() as u64;
            index_block(&mut write, number, &hashes)?;
        }
    }
    write.set_meta(META_ADDRESS_INDEX_COMPLETE, &[1])?;
    write.commit()?;
    Ok(indexed)
}

/// Meta keys of the replica's position.
pub mod meta {
    /// Set once a witness has recorded the stream positions of the seals and handovers an
    /// older release applied without recording them ([`super::record_stream_positions`]).
    pub const STREAM_POSITIONS_BACKFILLED: &str = "stream_positions_backfilled";
    /// The key of the chain-stream position of block `number`'s seal.
    pub fn block_seq(number: u64) -> String {
        format!("block_seq/{number}")
    }
    /// The key of the chain-stream position of the handover that opened epoch `number`.
    pub fn epoch_seq(number: u64) -> String {
        format!("epoch_seq/{number}")
    }

    /// Hash of the genesis the database was initialised with.
    pub const GENESIS_HASH: &str = "genesis_hash";
    /// Set (to 1) in the database of a light verifier, which keeps no state.
    pub const NO_STATE: &str = "no_state";
    /// Last applied event sequence.
    pub const LAST_SEQ: &str = "last_seq";
    /// Number of the next mini-block expected.
    pub const NEXT_MINI_BLOCK: &str = "next_mini_block";
    /// Hash of the last applied mini-block.
    pub const LAST_MINI_HASH: &str = "last_mini_hash";
    /// Transactions applied so far in the block being built.
    pub const OPEN_BLOCK_TXS: &str = "open_block_txs";
    /// Witness role: the encoded job of the last applied mini-block, stored with it so a job
    /// built but not yet published when the replica stops is published on the next start.
    pub const LAST_JOB: &str = "last_job";
}

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Storage failed ([`ChainError::Storage`]), or the event is not valid
    /// ([`ChainError::Invalid`]: wrong signer, wrong hash, or not the next link of the chain; the
    /// replica refuses it and everything after it).
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The witness could not build the job of a valid mini-block.
    #[error("witness: cannot build the job of mini-block {number}: {reason}")]
    Witness {
        /// Mini-block number.
        number: u64,
        /// Why.
        reason: String,
    },
    /// The database was made by a light verifier (no state) and opened by a role that needs
    /// state, or the other way round.
    #[error(
        "the data directory was made by a {stored}, which keeps {kept}; this role needs a data directory of its own"
    )]
    RoleMismatch {
        /// Who made the database.
        stored: &'static str,
        /// What it keeps.
        kept: &'static str,
    },
    /// The database belongs to another chain.
    #[error(
        "the data directory holds the chain with genesis {stored}, but --genesis describes {configured}"
    )]
    GenesisMismatch {
        /// Stored genesis hash.
        stored: B256,
        /// Configured genesis hash.
        configured: B256,
    },
}

impl From<StorageError> for ApplyError {
    fn from(error: StorageError) -> Self {
        Self::Chain(error.into())
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was applied.
    Applied,
    /// The event was applied before (a redelivery) and skipped.
    AlreadyApplied,
}

/// Initialises genesis in an empty database (its state too unless `keep` is
/// [`Keep::Events`]), or checks that the stored one matches and was made for the same `keep`
/// (a light verifier's database has no state; a replica's stops being complete state the moment
/// a light verifier skips a diff in it).
pub fn init_genesis(db: &Database, spec: &ChainSpec, keep: Keep) -> Result<(), ApplyError> {
    let (genesis, no_state) = {
        let read = db.read()?;
        (
            read.meta(meta::GENESIS_HASH)?,
            read.meta(meta::NO_STATE)?.is_some(),
        )
    };
    match genesis {
        Some(_) if no_state == keep.state() => Err(if no_state {
            ApplyError::RoleMismatch {
                stored: "light verifier",
                kept: "no state",
            }
        } else {
            ApplyError::RoleMismatch {
                stored: "replica",
                kept: "state a light verifier would stop applying",
            }
        }),
        Some(stored) => {
            let stored = B256::try_from(stored.as_slice()).unwrap_or_default();
            if stored != spec.genesis_hash {
                return Err(ApplyError::GenesisMismatch {
                    stored,
                    configured: spec.genesis_hash,
                });
            }
            let read = db.read()?;
            if read.history_from()?.is_none() {
                // Written before state history existed: past states are readable from the
                // first block whose changes are all recorded.
                let from = read.last_block_number()?.unwrap_or(0) + 1;
                drop(read);
                let mut write = db.write()?;
                write.set_history_from(from)?;
                write.commit()?;
                tracing::info!(
                    from,
                    "state history starts now: past blocks' state is readable from this block on"
                );
            }
            Ok(())
        }
        None => {
            let mut write = db.write()?;
            if keep.state() {
                write.apply_diff(&genesis_diff(&spec.genesis))?;
            } else {
                write.set_meta(meta::NO_STATE, &[1])?;
            }
            write.set_history_from(0)?;
            write.put_block(&spec.genesis_block())?;
            write.set_meta(meta::GENESIS_HASH, spec.genesis_hash.as_slice())?;
            write.set_meta_u64(meta::LAST_SEQ, 0)?;
            write.set_meta_u64(meta::NEXT_MINI_BLOCK, 0)?;
            write.set_meta(meta::LAST_MINI_HASH, B256::ZERO.as_slice())?;
            write.set_meta_u64(meta::OPEN_BLOCK_TXS, 0)?;
            write.commit()?;
            Ok(())
        }
    }
}

/// The last applied event sequence.
pub fn last_seq(db: &Database) -> Result<u64, StorageError> {
    Ok(db.read()?.meta_u64(meta::LAST_SEQ)?.unwrap_or(0))
}

/// What the witness role stores with a mini-block it applies.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The encoded chunk job, stored under [`meta::LAST_JOB`].
    pub job: Vec<u8>,
    /// State-tree keys the mini-block leaves holding zero, stored in `TreeTombstones`.
    pub tree_tombstones: Vec<B256>,
    /// The chunk's entry of the state-tree journal (`TreeJournal`, `TreeRoots`).
    pub tree_journal: TreeJournal,
}

/// What a chunk did to the state tree, journaled so the tree at any later-proven block can be
/// recovered (`eth_getProof`).
#[derive(Debug, Clone, Default)]
pub struct TreeJournal {
    /// The version before the chunk (its first mini-block number) and the root there.
    pub start: (u64, B256),
    /// The version after it (its last mini-block number + 1).
    pub version: u64,
    /// The root after it.
    pub root: B256,
    /// Each key whose leaf changed: (key, before, after).
    pub changes: Vec<(B256, Option<B256>, Option<B256>)>,
}

/// Builds something from checked mini-blocks and the state before them (the witness role's
/// chunk job); what it returns is stored in the same transaction as the mini-blocks.
pub type Prepare<'a> =
    &'a mut dyn FnMut(&ReadTx<'_>, &[(u64, &MiniBlock)]) -> Result<Prepared, String>;

/// What a replica keeps of the chain it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The state with its history, and transactions and receipts by hash (roles full and
    /// witness).
    State,
    /// That, and the events themselves (`ChainEvents`), for a verifier to walk the chain it
    /// applied.
    StateAndEvents,
    /// The events and blocks alone, checked like every follower's: no state, no transaction
    /// index (a light verifier, which walks the chain without ever applying a diff).
    Events,
}

impl Keep {
    fn state(self) -> bool {
        self != Keep::Events
    }

    fn events(self) -> bool {
        self != Keep::State
    }
}

/// Checks and applies one event received at stream position `seq`, keeping what `keep` says.
pub fn apply_event(
    db: &Database,
    rules: &Sequencing,
    wire: &v1::ChainEvent,
    prepare: Option<Prepare<'_>>,
    keep: Keep,
) -> Result<Applied, ApplyError> {
    apply_events(db, rules, std::slice::from_ref(wire), prepare, keep)
}

/// Checks and applies consecutive events in one MDBX transaction: one event of any kind, or
/// several mini-blocks (a witness's chunk; `prepare` sees them all against the state before
/// the first). Events applied before (a redelivery) are skipped. The checks are every
/// follower's ([`verity_chain::Cursor::advance`]): mini-blocks and blocks signed by the
/// sequencer of the epoch in force under that epoch, each the next link of the chain; a
/// handover (checked against `rules`) changes the epoch from its position on.
pub fn apply_events(
    db: &Database,
    rules: &Sequencing,
    wires: &[v1::ChainEvent],
    prepare: Option<Prepare<'_>>,
    keep: Keep,
) -> Result<Applied, ApplyError> {
    let read = db.read()?;
    let last = read.meta_u64(meta::LAST_SEQ)?.unwrap_or(0);
    let Some(first_new) = wires.iter().find(|w| w.seq > last) else {
        return Ok(Applied::AlreadyApplied);
    };
    let cursor = cursor(&read, rules, last, first_new.seq)?;
    let checked = verity_chain::check_batch(&read, rules, &cursor, wires, Redelivered::Skip)?;
    if checked.events().len() > 1 {
        // A block seal or a handover closes what came before it: it is applied on its own.
        for event in checked.events() {
            let alone = match event.event().kind {
                ChainEventKind::MiniBlock(_) => continue,
                ChainEventKind::Block(_) => "a block seal is applied on its own",
                ChainEventKind::Handover(_) => "a handover is applied on its own",
            };
            return Err(ChainError::Invalid {
                seq: event.event().seq,
                reason: alone.into(),
            }
            .into());
        }
    }
    let minis: Vec<(u64, &MiniBlock)> = checked.mini_blocks().collect();
    let prepared =
        match (prepare, minis.first()) {
            (Some(prepare), Some((_, first))) => Some(prepare(&read, &minis).map_err(
                |reason| ApplyError::Witness {
                    number: first.number,
                    reason,
                },
            )?),
            _ => None,
        };
    drop(minis);
    drop(read);
    verity_chain::commit(db, checked, &mut ReplicaLayout { keep, prepared })?;
    Ok(Applied::Applied)
}

/// The replica's position (its meta keys, the last block, the epoch in force), as the checks
/// need it; the events from `first_new` on are not applied yet.
fn cursor(
    read: &ReadTx<'_>,
    rules: &Sequencing,
    last_seq: u64,
    first_new: u64,
) -> Result<Cursor, ApplyError> {
    let head_number = read.last_block_number()?.unwrap_or(0);
    let head = read
        .block_by_number(head_number)?
        .ok_or_else(|| ChainError::Invalid {
            seq: first_new,
            reason: format!("block {head_number} missing locally"),
        })?;
    Ok(Cursor {
        last_seq,
        next_mini: read.meta_u64(meta::NEXT_MINI_BLOCK)?.unwrap_or(0),
        last_mini_hash: read
            .meta(meta::LAST_MINI_HASH)?
            .and_then(|b| B256::try_from(b.as_slice()).ok())
            .unwrap_or_default(),
        head,
        open_txs: read.meta_u64(meta::OPEN_BLOCK_TXS)?.unwrap_or(0),
        epoch: rules.current(read.meta(EPOCH_META_KEY)?.as_deref()),
    })
}

/// How a replica keeps the chain: state with its history (reads at past blocks), transactions
/// and receipts by hash, its position in its meta keys, the events when it is a verifier (and
/// only they and the blocks for a light verifier), and what the witness built for the batch.
#[derive(Debug)]
struct ReplicaLayout {
    keep: Keep,
    prepared: Option<Prepared>,
}

impl Layout for ReplicaLayout {
    fn history(&self) -> bool {
        true
    }

    fn keeps_events(&self) -> bool {
        self.keep.events()
    }

    fn keeps_state(&self) -> bool {
        self.keep.state()
    }

    fn write_event(
        &mut self,
        write: &mut WriteTx<'_>,
        event: &CheckedEvent<'_>,
    ) -> Result<(), StorageError> {
        // A light verifier keeps nothing beyond the events and blocks: it serves no reads and
        // builds no jobs.
        if !self.keep.state() {
            return Ok(());
        }
        match &event.event().kind {
            ChainEventKind::MiniBlock(mini) => {
                let base_fee =
                    verity_proto::u256_bytes(alloy_primitives::U256::from(mini.base_fee));
                let first = event.open_txs_before();
                for (i, (tx, receipt)) in mini.transactions.iter().zip(&mini.receipts).enumerate() {
                    write.put_transaction(
                        *tx.tx_hash(),
                        &v1::StoredTransaction {
                            transaction: Some(tx.into()),
                            block_number: mini.block_number,
                            block_hash: Vec::new(),
                            index: first + i as u64,
                            base_fee: base_fee.clone(),
                        },
                    )?;
                    write.put_receipt(receipt)?;
                    // Into the address index now, with its place in the block: a seal then
                    // costs no work per transaction (searches stop at the sealed head).
                    write.index_transaction(
                        receipt.addresses(),
                        mini.block_number,
                        u32::try_from(first + i as u64).unwrap_or(u32::MAX),
                        *tx.tx_hash(),
                    )?;
                }
            }
            ChainEventKind::Block(block) => {
                // Where its seal stands in the chain stream (a witness names it in jobs that
                // read the block's hash, for provers to check).
                write.set_meta_u64(&meta::block_seq(block.number()), event.event().seq)?;
                // Nothing per transaction: reads find a transaction's block hash by its number
                // and the address index was written with the mini-blocks.
            }
            // Where the epoch's key was handed over (a witness names it in jobs of the epoch, for
            // provers to take the key from).
            ChainEventKind::Handover(handover) => {
                write.set_meta_u64(&meta::epoch_seq(handover.epoch()), event.event().seq)?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, write: &mut WriteTx<'_>, cursor: &Cursor) -> Result<(), StorageError> {
        write.set_meta_u64(meta::NEXT_MINI_BLOCK, cursor.next_mini)?;
        write.set_meta(meta::LAST_MINI_HASH, cursor.last_mini_hash.as_slice())?;
        write.set_meta_u64(meta::OPEN_BLOCK_TXS, cursor.open_txs)?;
        if let Some(prepared) = &self.prepared {
            write.set_meta(meta::LAST_JOB, &prepared.job)?;
            write.put_tree_tombstones(&prepared.tree_tombstones)?;
            let journal = &prepared.tree_journal;
            write.put_tree_changes(
                journal.start,
                journal.version,
                journal.root,
                &journal.changes,
            )?;
        }
        write.set_meta_u64(meta::LAST_SEQ, cursor.last_seq)
    }
}

/// A chain event read only as far as [`stream_position`] needs: a mini-block (field 2), the
/// bulk of the stream, is skipped undecoded.
#[derive(Clone, PartialEq, prost::Message)]
struct SealOrHandover {
    #[prost(message, optional, tag = "3")]
    block: Option<v1::Block>,
    #[prost(message, optional, tag = "5")]
    handover: Option<v1::Handover>,
}

/// The meta key and position a witness records for the chain-stream message at `seq` (see
/// [`meta::block_seq`], [`meta::epoch_seq`]), if it is a handover, or the seal of a block
/// numbered `seals_from` or above (`BLOCKHASH` reads only the last 256 blocks).
pub fn stream_position(seq: u64, payload: &[u8], seals_from: u64) -> Option<(String, u64)> {
    let event = SealOrHandover::decode(payload).ok()?;
    if let Some(block) = &event.block {
        let block = verity_primitives::Block::try_from(block).ok()?;
        return (block.number() >= seals_from).then(|| (meta::block_seq(block.number()), seq));
    }
    let handover =
        verity_primitives::governance::Handover::try_from(event.handover.as_ref()?).ok()?;
    Some((meta::epoch_seq(handover.epoch()), seq))
}

/// Records `positions` ([`stream_position`]) not recorded yet: those of events applied by a
/// release that did not record them. Returns how many it recorded.
pub fn record_stream_positions(
    db: &Database,
    positions: &[(String, u64)],
) -> Result<usize, StorageError> {
    let mut write = db.write()?;
    let mut recorded = 0;
    for (key, seq) in positions {
        if write.meta_u64(key)?.is_none() {
            write.set_meta_u64(key, *seq)?;
            recorded += 1;
        }
    }
    write.commit()?;
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::U256;
    use verity_primitives::SigningKey;
    use verity_testkit::chain::{ChainBuilder, written_account};

    use super::*;

    /// The chain the tests apply.
    fn dev_spec() -> ChainSpec {
        ChainSpec::dev(31337, 2, 100).unwrap()
    }

    /// A database at genesis keeping what `keep` says, the rules (epoch 0 is `key`'s) and a
    /// chain to feed it.
    fn at_genesis(
        keep: Keep,
    ) -> (
        tempfile::TempDir,
        Database,
        Sequencing,
        SigningKey,
        ChainBuilder,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        let spec = dev_spec();
        init_genesis(&db, &spec, keep).unwrap();
        let key = SigningKey::random();
        let rules = spec.sequencing(Some(key.address())).unwrap();
        let chain = ChainBuilder::new(spec.genesis_block());
        (dir, db, rules, key, chain)
    }

    /// A witness's chunk of mini-blocks is applied, with its job, in one transaction or not at
    /// all; its job is built over the state before the first of them. (The rules every follower
    /// enforces are `verity-chain`'s suite.)
    #[test]
    fn a_chunk_of_mini_blocks_is_applied_at_once_or_not_at_all() {
        let (_dir, db, rules, key, mut chain) = at_genesis(Keep::State);
        let a = chain.push_mini_block(&key);
        let b = chain.push_mini_block(&key);
        let mut unlinked = chain.mini_block(&key);
        unlinked.parent_hash = B256::repeat_byte(9);
        unlinked.seal(&key);
        let unlinked = chain.wire(ChainEventKind::MiniBlock(Box::new(unlinked)));
        let c = chain.push_mini_block(&key);

        let mut prepared = 0;
        let mut prepare = |_: &ReadTx<'_>, _: &[(u64, &MiniBlock)]| -> Result<Prepared, String> {
            prepared += 1;
            Ok(Prepared::default())
        };
        let refused = apply_events(
            &db,
            &rules,
            &[a.clone(), b.clone(), unlinked],
            Some(&mut prepare),
            Keep::State,
        );
        assert!(matches!(
            refused,
            Err(ApplyError::Chain(ChainError::Invalid { seq: 3, .. }))
        ));
        assert_eq!(prepared, 0, "nothing is built for a refused chunk");
        assert_eq!(last_seq(&db).unwrap(), 0);
        assert_eq!(
            db.read().unwrap().account(written_account(0)).unwrap(),
            None
        );

        let mut seen = vec![];
        let mut seqs = vec![];
        let mut prepare =
            |read: &ReadTx<'_>, minis: &[(u64, &MiniBlock)]| -> Result<Prepared, String> {
                // The state before the chunk: none of its writes yet.
                assert_eq!(read.account(written_account(1)).unwrap(), None);
                seen.extend(minis.iter().map(|(_, m)| m.number));
                seqs.extend(minis.iter().map(|(seq, _)| *seq));
                Ok(Prepared {
                    job: b"job".to_vec(),
                    tree_tombstones: vec![],
                    tree_journal: Default::default(),
                })
            };
        let events = [a, b, c];
        let applied = apply_events(&db, &rules, &events, Some(&mut prepare), Keep::State);
        assert!(matches!(applied, Ok(Applied::Applied)));
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(seqs, [1, 2, 3], "each mini-block with its stream position");
        let read = db.read().unwrap();
        assert_eq!(read.meta_u64(meta::LAST_SEQ).unwrap(), Some(3));
        assert_eq!(read.meta_u64(meta::NEXT_MINI_BLOCK).unwrap(), Some(3));
        assert_eq!(read.meta(meta::LAST_JOB).unwrap(), Some(b"job".to_vec()));
        assert_eq!(
            read.account(written_account(2)).unwrap().map(|a| a.balance),
            Some(U256::from(3))
        );
        drop(read);
        // Delivered again (a crash before the acks): already applied.
        assert!(matches!(
            apply_events(&db, &rules, &events[1..], None, Keep::State),
            Ok(Applied::AlreadyApplied)
        ));
    }

    /// A light verifier's database: the chain's events and blocks, checked like every
    /// follower's, and no state at all (not genesis's, not a diff's); a data directory of one
    /// kind is refused by the other.
    #[test]
    fn a_light_verifier_keeps_the_checked_chain_and_no_state() {
        let (_dir, db, rules, key, mut chain) = at_genesis(Keep::Events);
        let spec = dev_spec();
        let events = [chain.push_mini_block(&key), chain.push_block(&key)];
        for event in &events {
            apply_event(&db, &rules, event, None, Keep::Events).unwrap();
        }
        let funded = spec.genesis.alloc.keys().next().copied().unwrap();
        let read = db.read().unwrap();
        assert_eq!(read.account(funded).unwrap(), None, "no genesis state");
        assert_eq!(read.account(written_account(0)).unwrap(), None, "no diff");
        assert_eq!(read.event(1).unwrap().as_ref(), Some(&events[0]));
        assert_eq!(read.last_block_number().unwrap(), Some(1));
        assert_eq!(read.meta_u64(meta::LAST_SEQ).unwrap(), Some(2));
        drop(read);
        // The checks are every follower's: a mini-block signed by another key is refused.
        let forged = chain.mini_block(&SigningKey::random());
        let forged = chain.wire(ChainEventKind::MiniBlock(Box::new(forged)));
        assert!(matches!(
            apply_event(&db, &rules, &forged, None, Keep::Events),
            Err(ApplyError::Chain(ChainError::Invalid { .. }))
        ));
        assert!(matches!(
            init_genesis(&db, &spec, Keep::StateAndEvents),
            Err(ApplyError::RoleMismatch { .. })
        ));
        let (_dir, replica, ..) = at_genesis(Keep::State);
        assert!(matches!(
            init_genesis(&replica, &spec, Keep::Events),
            Err(ApplyError::RoleMismatch { .. })
        ));
        init_genesis(&replica, &spec, Keep::StateAndEvents).unwrap();
    }

    /// A block seal or a handover is applied on its own, never in a batch with mini-blocks.
    #[test]
    fn a_block_seal_is_applied_on_its_own() {
        let (_dir, db, rules, key, mut chain) = at_genesis(Keep::State);
        let events = [chain.push_mini_block(&key), chain.push_block(&key)];
        let refused = apply_events(&db, &rules, &events, None, Keep::State).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refused event 2: a block seal is applied on its own"
        );
        for event in &events {
            apply_event(&db, &rules, event, None, Keep::StateAndEvents).unwrap();
        }
        let read = db.read().unwrap();
        assert_eq!(read.last_block_number().unwrap(), Some(1));
        assert_eq!(read.meta_u64(meta::OPEN_BLOCK_TXS).unwrap(), Some(0));
        assert_eq!(read.event(2).unwrap().as_ref(), Some(&events[1]));
        // Where the seal stands in the chain stream, for jobs that read its hash.
        assert_eq!(read.meta_u64(&meta::block_seq(1)).unwrap(), Some(2));
    }

    /// Seals and handovers applied by a release that did not record their stream positions
    /// get them from the chain stream at the witness's start: handovers all, seals of the
    /// blocks `BLOCKHASH` can still read.
    #[test]
    fn stream_positions_missing_from_an_older_release_are_recorded() {
        let (_dir, _db, _rules, key, mut chain) = at_genesis(Keep::State);
        let standby = SigningKey::random();
        // Unsigned by governance: only positions are recorded here, nothing is judged.
        let appointment = verity_primitives::governance::SignedAppointment {
            appointment: verity_primitives::governance::Appointment {
                chain_id: 31337,
                epoch: 1,
                sequencer: standby.address(),
                first_height: 0,
                parent_hash: B256::ZERO,
            },
            signatures: vec![],
        };
        let events = [
            chain.push_mini_block(&key),
            chain.push_block(&key),
            chain.push_handover(appointment, &standby),
            chain.push_mini_block(&standby),
            chain.push_block(&standby),
        ];
        let positions = |seals_from| -> Vec<(String, u64)> {
            events
                .iter()
                .filter_map(|e| stream_position(e.seq, &e.encode_to_vec(), seals_from))
                .collect()
        };
        // Seals of blocks from 2 on: block 2's only; the handover whatever its block.
        assert_eq!(
            positions(2),
            vec![(meta::epoch_seq(1), 3), (meta::block_seq(2), 5)]
        );
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        assert_eq!(record_stream_positions(&db, &positions(2)).unwrap(), 2);
        let read = db.read().unwrap();
        assert_eq!(read.meta_u64(&meta::block_seq(1)).unwrap(), None);
        assert_eq!(read.meta_u64(&meta::block_seq(2)).unwrap(), Some(5));
        assert_eq!(read.meta_u64(&meta::epoch_seq(1)).unwrap(), Some(3));
        drop(read);
        assert_eq!(record_stream_positions(&db, &positions(0)).unwrap(), 1);
        assert_eq!(
            db.read().unwrap().meta_u64(&meta::block_seq(1)).unwrap(),
            Some(2)
        );
        assert_eq!(
            record_stream_positions(&db, &positions(0)).unwrap(),
            0,
            "nothing left"
        );
    }

    /// A database from before the address index: its sealed blocks are indexed once, with the
    /// addresses their receipts name; a second start has nothing to do.
    #[test]
    fn stored_blocks_are_indexed_once_for_the_searches() {
        let (_dir, db, _rules, _key, _chain) = at_genesis(Keep::State);
        let (alice, bob, token) = (
            alloy_primitives::Address::repeat_byte(0xa1),
            alloy_primitives::Address::repeat_byte(0xb0),
            alloy_primitives::Address::repeat_byte(0x70),
        );
        let hash = B256::repeat_byte(0x11);
        let receipt = verity_primitives::Receipt {
            tx_hash: hash,
            tx_type: verity_primitives::TxType::Eip1559,
            success: true,
            gas_used: 50_000,
            cumulative_gas_used: 50_000,
            effective_gas_price: 1,
            logs: vec![alloy_primitives::Log::new_unchecked(
                token,
                vec![],
                alloy_primitives::Bytes::new(),
            )],
            contract_address: None,
            from: alice,
            to: Some(bob),
        };
        let mut block = dev_spec().genesis_block();
        block.header.number = 1;
        block.transaction_hashes = vec![hash];
        let mut write = db.write().unwrap();
        write.put_block(&block).unwrap();
        write.put_receipt(&receipt).unwrap();
        write.commit().unwrap();

        assert_eq!(complete_address_index(&db).unwrap(), 1);
        let read = db.read().unwrap();
        for address in [alice, bob, token] {
            let (found, more) = read
                .address_transactions(address, verity_storage::AddressSearch::Before(u64::MAX), 10)
                .unwrap();
            assert_eq!(found.len(), 1, "{address}");
            assert_eq!(
                (found[0].block, found[0].index, found[0].hash),
                (1, 0, hash)
            );
            assert!(!more);
        }
        drop(read);
        assert_eq!(complete_address_index(&db).unwrap(), 0, "once");
    }
}
