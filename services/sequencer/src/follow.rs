//! Standby: the chain stream applied to the sequencer's own database.
//!
//! A standby (or a newly appointed sequencer with an empty disk) writes every event from the
//! stream exactly as the active sequencer's committer wrote it (state diff + event, block +
//! event + the last-block position, a handover's epoch), after the checks every replica makes:
//! the signature and epoch of the sequencer in force, the hash over the contents, and the links
//! (sequence, mini-block number, parent hashes). When it takes over, [`crate::producer::Producer`]
//! resumes from this database as if it had produced the chain itself.

use alloy_primitives::B256;
use verity_primitives::{
    Block, ChainEvent, ChainEventKind,
    block::{check_block_link, check_mini_block_link},
    governance::{EPOCH_META_KEY, Epoch, Sequencing},
};
use verity_proto::v1;
use verity_storage::{Database, StorageError, WriteTx};

use crate::producer::{META_LAST_BLOCK_SEQ, Recovered};

/// Why an event from the stream was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The event is not valid at its position.
    #[error("refused event {seq}: {reason}")]
    Invalid {
        /// Stream sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The local database holds a different event at this position: this node produced events
    /// that never reached the stream (it was deposed before publishing them).
    #[error(
        "the data directory holds event {seq} = {local}, but the chain stream holds {stream}: \
         this node produced events that never reached the stream before another sequencer took \
         over; move the data directory away and start again (the node rebuilds from the stream)"
    )]
    Diverged {
        /// Stream sequence.
        seq: u64,
        /// Local event hash.
        local: B256,
        /// The stream's.
        stream: B256,
    },
}

/// Where the local chain ends, as the checks need it.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// Last applied event.
    pub last_seq: u64,
    /// Next mini-block number.
    pub next_mini: u64,
    /// Hash of the last mini-block.
    pub last_mini_hash: B256,
    /// The last sealed block.
    pub head: Block,
    /// Transactions in the open block.
    pub open_txs: u64,
    /// The epoch in force.
    pub epoch: Epoch,
}

impl Cursor {
    /// The cursor at the end of a recovered chain.
    pub fn of(recovered: &Recovered) -> Self {
        Self {
            last_seq: recovered.last_seq,
            next_mini: recovered.next_mini_block(),
            last_mini_hash: recovered.last_mini_hash(),
            head: recovered.parent.clone(),
            open_txs: recovered.open_transactions(),
            epoch: recovered.epoch,
        }
    }
}

/// Checks `wire` (the stream's event at `wire.seq`) and writes it, in one durable MDBX
/// transaction. An event at or below the cursor must be the one stored locally.
pub fn apply(
    db: &Database,
    rules: &Sequencing,
    cursor: &mut Cursor,
    wire: &v1::ChainEvent,
) -> Result<(), FollowError> {
    apply_batch(db, rules, cursor, std::slice::from_ref(wire))
}

/// [`apply`] for consecutive events in one durable MDBX transaction (one fsync for the batch):
/// all of them or, on the first refused one, none; the cursor moves only when they are on disk.
pub fn apply_batch(
    db: &Database,
    rules: &Sequencing,
    cursor: &mut Cursor,
    wires: &[v1::ChainEvent],
) -> Result<(), FollowError> {
    let mut next = cursor.clone();
    let mut write = db.write()?;
    for wire in wires {
        apply_in(&mut write, rules, &mut next, wire)?;
    }
    write.commit()?;
    *cursor = next;
    Ok(())
}

fn apply_in(
    write: &mut WriteTx<'_>,
    rules: &Sequencing,
    cursor: &mut Cursor,
    wire: &v1::ChainEvent,
) -> Result<(), FollowError> {
    let seq = wire.seq;
    let invalid = |reason: String| FollowError::Invalid { seq, reason };
    let event = ChainEvent::try_from(wire).map_err(|e| invalid(e.to_string()))?;
    if seq <= cursor.last_seq {
        let local = write
            .events_from(seq, 1)?
            .into_iter()
            .next()
            .and_then(|e| ChainEvent::try_from(&e).ok())
            .map(|e| e.hash())
            .unwrap_or_default();
        if local != event.hash() {
            return Err(FollowError::Diverged {
                seq,
                local,
                stream: event.hash(),
            });
        }
        return Ok(());
    }
    if seq != cursor.last_seq + 1 {
        return Err(invalid(format!(
            "expected event {} next",
            cursor.last_seq + 1
        )));
    }
    event
        .verify(&cursor.epoch)
        .map_err(|e| invalid(e.to_string()))?;
    match &event.kind {
        ChainEventKind::MiniBlock(mini) => {
            check_mini_block_link(
                mini,
                cursor.next_mini,
                cursor.last_mini_hash,
                cursor.head.number(),
            )
            .map_err(invalid)?;
            write.apply_diff(&mini.diff)?;
            write.put_event(wire)?;
            cursor.next_mini = mini.number + 1;
            cursor.last_mini_hash = mini.hash;
            cursor.open_txs += mini.transactions.len() as u64;
        }
        ChainEventKind::Block(block) => {
            check_block_link(
                block,
                &cursor.head,
                cursor.next_mini,
                cursor.last_mini_hash,
                cursor.open_txs,
            )
            .map_err(invalid)?;
            write.put_block(block)?;
            write.put_event(wire)?;
            write.set_meta_u64(META_LAST_BLOCK_SEQ, seq)?;
            cursor.head = block.as_ref().clone();
            cursor.open_txs = 0;
        }
        ChainEventKind::Handover(handover) => {
            let epoch = rules
                .check_handover(
                    &cursor.epoch,
                    handover,
                    cursor.head.number() + 1,
                    cursor.head.hash,
                )
                .map_err(|e| invalid(format!("handover refused: {e}")))?;
            write.put_event(wire)?;
            write.set_meta(EPOCH_META_KEY, &epoch.to_bytes())?;
            tracing::info!(
                seq,
                epoch = epoch.number,
                sequencer = %epoch.sequencer,
                block = cursor.head.number() + 1,
                "sequencer handover applied"
            );
            cursor.epoch = epoch;
        }
    }
    cursor.last_seq = seq;
    Ok(())
}

/// The local cursor after recovering `db`.
pub fn cursor(db: &Database, rules: &Sequencing) -> Result<Cursor, crate::producer::ProducerError> {
    Ok(Cursor::of(&crate::producer::recover(db, rules)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::{Address, U256};
    use verity_primitives::{
        AccountDiff, ChainSpec, MiniBlock, SequencerKey, StateDiff,
        governance::{Appointment, Governance, Handover, SignedAppointment},
    };

    use super::*;

    fn mini(number: u64, epoch: u64, parent: B256, key: &SequencerKey) -> MiniBlock {
        let mut mini = MiniBlock {
            number,
            block_number: 1,
            index: number as u32,
            epoch,
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

    fn wire(seq: u64, kind: ChainEventKind) -> v1::ChainEvent {
        (&ChainEvent { seq, kind }).into()
    }

    /// A standby applies what the epoch's key signed, refuses anything else, notices a local
    /// event the stream replaced, and switches keys at a handover.
    #[test]
    fn a_standby_applies_the_appointed_chain_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let first = SequencerKey::random();
        let second = SequencerKey::random();
        let governor = SequencerKey::random();
        let spec = ChainSpec::dev(31337, 2, 100)
            .unwrap()
            .with_sequencing(
                first.address(),
                Some(Governance::new(vec![governor.address()], 1).unwrap()),
            )
            .unwrap();
        let rules = spec.sequencing(None).unwrap();
        crate::producer::init_genesis(&db, &spec).unwrap();
        let mut cursor = cursor(&db, &rules).unwrap();
        let parent = cursor.last_mini_hash;

        let a = mini(0, 0, parent, &first);
        apply(
            &db,
            &rules,
            &mut cursor,
            &wire(1, ChainEventKind::MiniBlock(Box::new(a.clone()))),
        )
        .unwrap();
        // The same event again is recognised; another one at that position is a divergence.
        apply(
            &db,
            &rules,
            &mut cursor,
            &wire(1, ChainEventKind::MiniBlock(Box::new(a.clone()))),
        )
        .unwrap();
        let mut other = mini(0, 0, parent, &first);
        other.timestamp_ms += 1;
        other.seal(&first);
        assert!(matches!(
            apply(
                &db,
                &rules,
                &mut cursor,
                &wire(1, ChainEventKind::MiniBlock(Box::new(other)))
            ),
            Err(FollowError::Diverged { seq: 1, .. })
        ));
        // Signed by a key that is not the epoch's.
        let stranger = mini(1, 0, a.hash, &second);
        assert!(matches!(
            apply(
                &db,
                &rules,
                &mut cursor,
                &wire(2, ChainEventKind::MiniBlock(Box::new(stranger)))
            ),
            Err(FollowError::Invalid { seq: 2, .. })
        ));
        // A handover to the second key under a standing appointment.
        let appointment = Appointment {
            chain_id: 31337,
            epoch: 1,
            sequencer: second.address(),
            first_height: 0,
            parent_hash: B256::ZERO,
        };
        let signed = SignedAppointment {
            signatures: vec![appointment.sign(&governor)],
            appointment,
        };
        let handover = Handover::new(signed, 1, cursor.head.hash, &second);
        apply(
            &db,
            &rules,
            &mut cursor,
            &wire(2, ChainEventKind::Handover(Box::new(handover))),
        )
        .unwrap();
        assert_eq!(cursor.epoch.sequencer, second.address());
        // The deposed key is refused from here on, the new one accepted.
        let late = mini(1, 0, a.hash, &first);
        assert!(matches!(
            apply(
                &db,
                &rules,
                &mut cursor,
                &wire(3, ChainEventKind::MiniBlock(Box::new(late)))
            ),
            Err(FollowError::Invalid { seq: 3, .. })
        ));
        let next = mini(1, 1, a.hash, &second);
        apply(
            &db,
            &rules,
            &mut cursor,
            &wire(3, ChainEventKind::MiniBlock(Box::new(next))),
        )
        .unwrap();
        // A batch is applied whole or not at all.
        let fine = mini(2, 1, cursor.last_mini_hash, &second);
        let broken = mini(3, 1, B256::repeat_byte(1), &second);
        let before = cursor.clone();
        assert!(matches!(
            apply_batch(
                &db,
                &rules,
                &mut cursor,
                &[
                    wire(4, ChainEventKind::MiniBlock(Box::new(fine.clone()))),
                    wire(5, ChainEventKind::MiniBlock(Box::new(broken))),
                ],
            ),
            Err(FollowError::Invalid { seq: 5, .. })
        ));
        assert_eq!(cursor.last_seq, before.last_seq);
        assert_eq!(db.read().unwrap().last_event_seq().unwrap(), 3);
        // And the producer resumes from what was applied, under the new epoch.
        let recovered = crate::producer::recover(&db, &rules).unwrap();
        assert_eq!((recovered.last_seq, recovered.epoch.number), (3, 1));
        assert_eq!(recovered.open_minis.len(), 2);
    }
}
