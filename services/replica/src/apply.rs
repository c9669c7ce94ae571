//! Applying the chain stream to the replica's own state, without executing any transaction.
//!
//! Each event is checked (sequencer signature over the hash, hash over the contents, and its
//! place in the chain: sequence, mini-block number and parent hash), then applied in one MDBX
//! transaction together with the replica's position, so a crash at any point leaves either the
//! whole event applied or none of it, and redelivered events are recognised and skipped.

use alloy_primitives::B256;
use verity_primitives::{
    ChainEvent, ChainEventKind, ChainSpec, MiniBlock, genesis_diff,
    governance::{EPOCH_META_KEY, Sequencing},
};
use verity_proto::v1;
use verity_storage::{Database, ReadTx, StorageError};

/// Meta keys of the replica's position.
pub mod meta {
    /// Hash of the genesis the database was initialised with.
    pub const GENESIS_HASH: &str = "genesis_hash";
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
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The event is not valid: wrong signer, wrong hash, or not the next link of the chain. The
    /// replica refuses it and everything after it.
    #[error("refused event {seq}: {reason}")]
    Invalid {
        /// Event sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The witness could not build the job of a valid mini-block.
    #[error("witness: cannot build the job of mini-block {number}: {reason}")]
    Witness {
        /// Mini-block number.
        number: u64,
        /// Why.
        reason: String,
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

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was applied.
    Applied,
    /// The event was applied before (a redelivery) and skipped.
    AlreadyApplied,
}

/// Initialises genesis in an empty database, or checks that the stored one matches.
pub fn init_genesis(db: &Database, spec: &ChainSpec) -> Result<(), ApplyError> {
    match db.read()?.meta(meta::GENESIS_HASH)? {
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
            write.apply_diff(&genesis_diff(&spec.genesis))?;
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
}

/// Builds something from checked mini-blocks and the state before them (the witness role's
/// chunk job); what it returns is stored in the same transaction as the mini-blocks.
pub type Prepare<'a> = &'a mut dyn FnMut(&ReadTx<'_>, &[&MiniBlock]) -> Result<Prepared, String>;

/// Checks and applies one event received at stream position `seq`. With `store_event` the event
/// itself is kept too (`ChainEvents`), for a verifier to walk the chain it applied.
pub fn apply_event(
    db: &Database,
    rules: &Sequencing,
    wire: &v1::ChainEvent,
    prepare: Option<Prepare<'_>>,
    store_event: bool,
) -> Result<Applied, ApplyError> {
    apply_events(db, rules, std::slice::from_ref(wire), prepare, store_event)
}

/// Checks and applies consecutive events in one MDBX transaction: one event of any kind, or
/// several mini-blocks (a witness's chunk; `prepare` sees them all against the state before
/// the first). Events applied before (a redelivery) are skipped. Mini-blocks and blocks must be
/// signed by the sequencer of the epoch in force under that epoch; a handover (checked against
/// `rules`) changes the epoch from its position on.
pub fn apply_events(
    db: &Database,
    rules: &Sequencing,
    wires: &[v1::ChainEvent],
    prepare: Option<Prepare<'_>>,
    store_event: bool,
) -> Result<Applied, ApplyError> {
    let read = db.read()?;
    let last = read.meta_u64(meta::LAST_SEQ)?.unwrap_or(0);
    let wires: Vec<&v1::ChainEvent> = wires.iter().filter(|w| w.seq > last).collect();
    if wires.is_empty() {
        return Ok(Applied::AlreadyApplied);
    }
    let mut next_mini = read.meta_u64(meta::NEXT_MINI_BLOCK)?.unwrap_or(0);
    let mut last_mini_hash = read
        .meta(meta::LAST_MINI_HASH)?
        .and_then(|b| B256::try_from(b.as_slice()).ok())
        .unwrap_or_default();
    let mut open_txs = read.meta_u64(meta::OPEN_BLOCK_TXS)?.unwrap_or(0);
    let mut epoch = rules.current(read.meta(EPOCH_META_KEY)?.as_deref());
    let head_number = read.last_block_number()?.unwrap_or(0);
    let head = read
        .block_by_number(head_number)?
        .ok_or_else(|| ApplyError::Invalid {
            seq: wires[0].seq,
            reason: format!("block {head_number} missing locally"),
        })?;
    let mut events = Vec::with_capacity(wires.len());
    for (i, wire) in wires.iter().enumerate() {
        let seq = wire.seq;
        let invalid = |reason: String| ApplyError::Invalid { seq, reason };
        if seq != last + 1 + i as u64 {
            return Err(invalid(format!(
                "expected event {} next",
                last + 1 + i as u64
            )));
        }
        let event = ChainEvent::try_from(*wire).map_err(|e| invalid(e.to_string()))?;
        event.verify(&epoch).map_err(|e| invalid(e.to_string()))?;
        match &event.kind {
            ChainEventKind::MiniBlock(mini) => {
                verity_primitives::block::check_mini_block_link(
                    mini,
                    next_mini,
                    last_mini_hash,
                    head_number,
                )
                .map_err(invalid)?;
                next_mini = mini.number + 1;
                last_mini_hash = mini.hash;
            }
            ChainEventKind::Block(block) => {
                if wires.len() > 1 {
                    return Err(invalid("a block seal is applied on its own".into()));
                }
                verity_primitives::block::check_block_link(
                    block,
                    &head,
                    next_mini,
                    last_mini_hash,
                    open_txs,
                )
                .map_err(invalid)?;
            }
            ChainEventKind::Handover(handover) => {
                if wires.len() > 1 {
                    return Err(invalid("a handover is applied on its own".into()));
                }
                epoch = rules
                    .check_handover(&epoch, handover, head_number + 1, head.hash)
                    .map_err(|e| invalid(format!("handover refused: {e}")))?;
                tracing::info!(
                    seq,
                    epoch = epoch.number,
                    sequencer = %epoch.sequencer,
                    block = head_number + 1,
                    "sequencer handover"
                );
            }
        }
        events.push(event);
    }
    let minis: Vec<&MiniBlock> = events
        .iter()
        .filter_map(|e| match &e.kind {
            ChainEventKind::MiniBlock(mini) => Some(mini.as_ref()),
            ChainEventKind::Block(_) | ChainEventKind::Handover(_) => None,
        })
        .collect();
    let prepared = match (prepare, minis.first()) {
        (Some(prepare), Some(first)) => {
            Some(
                prepare(&read, &minis).map_err(|reason| ApplyError::Witness {
                    number: first.number,
                    reason,
                })?,
            )
        }
        _ => None,
    };
    drop(read);

    let mut write = db.write()?;
    for (wire, event) in wires.iter().zip(&events) {
        match &event.kind {
            ChainEventKind::MiniBlock(mini) => {
                write.apply_diff_at(&mini.diff, mini.block_number)?;
                let base_fee =
                    verity_proto::u256_bytes(alloy_primitives::U256::from(mini.base_fee));
                for (i, (tx, receipt)) in mini.transactions.iter().zip(&mini.receipts).enumerate() {
                    write.put_transaction(
                        *tx.tx_hash(),
                        &v1::StoredTransaction {
                            transaction: Some(tx.into()),
                            block_number: mini.block_number,
                            block_hash: Vec::new(),
                            index: open_txs + i as u64,
                            base_fee: base_fee.clone(),
                        },
                    )?;
                    write.put_receipt(receipt)?;
                }
                open_txs += mini.transactions.len() as u64;
                write.set_meta_u64(meta::NEXT_MINI_BLOCK, mini.number + 1)?;
                write.set_meta(meta::LAST_MINI_HASH, mini.hash.as_slice())?;
                write.set_meta_u64(meta::OPEN_BLOCK_TXS, open_txs)?;
            }
            ChainEventKind::Block(block) => {
                write.put_block(block)?;
                // Transactions learn their block hash now that it exists.
                for hash in &block.transaction_hashes {
                    if let Some(mut stored) = write.transaction(*hash)? {
                        stored.block_hash = block.hash.to_vec();
                        write.put_transaction(*hash, &stored)?;
                    }
                }
                write.set_meta_u64(meta::OPEN_BLOCK_TXS, 0)?;
            }
            ChainEventKind::Handover(handover) => {
                let opened = verity_primitives::governance::Epoch {
                    number: handover.epoch(),
                    sequencer: handover.sequencer(),
                };
                write.set_meta(EPOCH_META_KEY, &opened.to_bytes())?;
            }
        }
        if store_event {
            write.put_event(wire)?;
        }
    }
    if let Some(prepared) = &prepared {
        write.set_meta(meta::LAST_JOB, &prepared.job)?;
        write.put_tree_tombstones(&prepared.tree_tombstones)?;
    }
    let last_seq = wires.last().map_or(last, |w| w.seq);
    write.set_meta_u64(meta::LAST_SEQ, last_seq)?;
    write.commit()?;
    Ok(Applied::Applied)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::{Address, U256};
    use verity_primitives::{AccountDiff, SequencerKey, StateDiff, governance::Epoch};

    use super::*;

    fn mini(number: u64, parent: B256, key: &SequencerKey) -> MiniBlock {
        let mut mini = MiniBlock {
            number,
            block_number: 1,
            index: number as u32,
            epoch: 0,
            timestamp_ms: 1_700_000_000_000 + number,
            parent_hash: parent,
            base_fee: 1_000_000_000,
            block_timestamp: 1_700_000_000,
            beneficiary: Address::ZERO,
            transactions: vec![],
            receipts: vec![],
            diff: StateDiff {
                accounts: [(
                    Address::repeat_byte(0x10 + number as u8),
                    AccountDiff {
                        balance: Some(U256::from(number + 1)),
                        ..Default::default()
                    },
                )]
                .into(),
            },
            hash: B256::ZERO,
            signature: verity_primitives::UNSIGNED,
        };
        mini.seal(key);
        mini
    }

    fn wire(seq: u64, mini: &MiniBlock) -> v1::ChainEvent {
        (&ChainEvent {
            seq,
            kind: ChainEventKind::MiniBlock(Box::new(mini.clone())),
        })
            .into()
    }

    /// A witness's chunk of mini-blocks is applied, with its job, in one transaction or not at
    /// all; its job is built over the state before the first of them.
    #[test]
    fn a_chunk_of_mini_blocks_is_applied_at_once_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        init_genesis(&db, &ChainSpec::dev(31337, 2, 100).unwrap()).unwrap();
        let key = SequencerKey::random();
        let rules = Sequencing {
            chain_id: 31337,
            governance: None,
            genesis: Epoch {
                number: 0,
                sequencer: key.address(),
            },
        };
        let a = mini(0, B256::ZERO, &key);
        let b = mini(1, a.hash, &key);
        let c = mini(2, b.hash, &key);
        let unlinked = mini(2, B256::repeat_byte(9), &key);

        let mut prepared = 0;
        let mut prepare = |_: &ReadTx<'_>, _: &[&MiniBlock]| -> Result<Prepared, String> {
            prepared += 1;
            Ok(Prepared::default())
        };
        let refused = apply_events(
            &db,
            &rules,
            &[wire(1, &a), wire(2, &b), wire(3, &unlinked)],
            Some(&mut prepare),
            false,
        );
        assert!(matches!(refused, Err(ApplyError::Invalid { seq: 3, .. })));
        assert_eq!(prepared, 0, "nothing is built for a refused chunk");
        assert_eq!(last_seq(&db).unwrap(), 0);
        assert_eq!(
            db.read()
                .unwrap()
                .account(Address::repeat_byte(0x10))
                .unwrap(),
            None
        );

        let mut seen = vec![];
        let mut prepare = |read: &ReadTx<'_>, minis: &[&MiniBlock]| -> Result<Prepared, String> {
            // The state before the chunk: none of its writes yet.
            assert_eq!(read.account(Address::repeat_byte(0x11)).unwrap(), None);
            seen.extend(minis.iter().map(|m| m.number));
            Ok(Prepared {
                job: b"job".to_vec(),
                tree_tombstones: vec![],
            })
        };
        let events = [wire(1, &a), wire(2, &b), wire(3, &c)];
        let applied = apply_events(&db, &rules, &events, Some(&mut prepare), false);
        assert!(matches!(applied, Ok(Applied::Applied)));
        assert_eq!(seen, [0, 1, 2]);
        let read = db.read().unwrap();
        assert_eq!(read.meta_u64(meta::LAST_SEQ).unwrap(), Some(3));
        assert_eq!(read.meta_u64(meta::NEXT_MINI_BLOCK).unwrap(), Some(3));
        assert_eq!(read.meta(meta::LAST_JOB).unwrap(), Some(b"job".to_vec()));
        assert_eq!(
            read.account(Address::repeat_byte(0x12))
                .unwrap()
                .map(|a| a.balance),
            Some(U256::from(3))
        );
        drop(read);
        // Delivered again (a crash before the acks): already applied.
        assert!(matches!(
            apply_events(&db, &rules, &events[1..], None, false),
            Ok(Applied::AlreadyApplied)
        ));
    }
}
