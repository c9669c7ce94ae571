//! Standby: the chain stream applied to the sequencer's own database.
//!
//! A standby (or a newly appointed sequencer with an empty disk) writes every event from the
//! stream exactly as the active sequencer's committer wrote it (state diff + event, block +
//! event + the last-block position, a handover's epoch), after the checks every follower makes
//! ([`verity_chain::Cursor::advance`]: the signature and epoch of the sequencer in force, the
//! hash over the contents, the links, a handover against genesis's governance). An event at or
//! below its cursor must be the one it stored: a sequencer stores what it produces before the
//! stream has it ([`Redelivered::MustMatch`]). When it takes over,
//! [`crate::producer::Producer`] resumes from this database as if it had produced the chain
//! itself.

use verity_chain::{ChainError, CheckedEvent, Cursor, Layout, Redelivered};
use verity_primitives::{ChainEventKind, governance::Sequencing};
use verity_proto::v1;
use verity_storage::{Database, StorageError, WriteTx};

use crate::producer::{META_LAST_BLOCK_SEQ, ProducerError, Recovered};

/// How a sequencer keeps the chain: as its committer writes it (the latest state only, every
/// event, and the position of the last block event, where recovery starts).
#[derive(Debug, Clone, Copy, Default)]
pub struct Standby;

impl Layout for Standby {
    fn history(&self) -> bool {
        false
    }

    fn keeps_events(&self) -> bool {
        true
    }

    fn write_event(
        &mut self,
        write: &mut WriteTx<'_>,
        event: &CheckedEvent<'_>,
    ) -> Result<(), StorageError> {
        if let ChainEventKind::Block(_) = event.event().kind {
            write.set_meta_u64(META_LAST_BLOCK_SEQ, event.event().seq)?;
        }
        Ok(())
    }
}

impl From<&Recovered> for Cursor {
    /// The cursor at the end of a recovered chain.
    fn from(recovered: &Recovered) -> Self {
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
) -> Result<(), ChainError> {
    apply_batch(db, rules, cursor, std::slice::from_ref(wire))
}

/// [`apply`] for consecutive events in one durable MDBX transaction (one fsync for the batch):
/// all of them or, on the first refused one, none; the cursor moves only when they are on disk.
pub fn apply_batch(
    db: &Database,
    rules: &Sequencing,
    cursor: &mut Cursor,
    wires: &[v1::ChainEvent],
) -> Result<(), ChainError> {
    verity_chain::apply_batch(
        db,
        rules,
        cursor,
        wires,
        Redelivered::MustMatch,
        &mut Standby,
    )?;
    Ok(())
}

/// The local cursor after recovering `db`.
pub fn cursor(db: &Database, rules: &Sequencing) -> Result<Cursor, ProducerError> {
    Ok(Cursor::from(&crate::producer::recover(db, rules)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::B256;
    use verity_primitives::{
        ChainSpec, SigningKey,
        governance::{Appointment, Governance, SignedAppointment},
    };
    use verity_testkit::chain::ChainBuilder;

    use super::*;

    /// What a standby applied is a chain the producer resumes from as if it had produced it:
    /// the open block, the epoch a handover opened; and a local event the stream replaced is a
    /// divergence, not a redelivery. (The rules every follower enforces are `verity-chain`'s
    /// suite.)
    #[test]
    fn the_producer_resumes_from_what_a_standby_applied() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let first = SigningKey::random();
        let second = SigningKey::random();
        let governor = SigningKey::random();
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

        let appointment = Appointment {
            chain_id: 31337,
            epoch: 1,
            sequencer: second.address(),
            first_height: 0,
            parent_hash: B256::ZERO,
        };
        let appointment = SignedAppointment {
            signatures: vec![appointment.sign(&governor)],
            appointment,
        };
        let mut chain = ChainBuilder::new(spec.genesis_block());
        let first_event = chain.push_mini_block(&first);
        let batch = [
            first_event.clone(),
            chain.push_block(&first),
            chain.push_mini_block(&first),
            chain.push_handover(appointment, &second),
            chain.push_mini_block(&second),
        ];
        apply_batch(&db, &rules, &mut cursor, &batch).unwrap();

        let recovered = crate::producer::recover(&db, &rules).unwrap();
        assert_eq!(Cursor::from(&recovered), cursor);
        assert_eq!(
            (
                recovered.last_seq,
                recovered.parent.number(),
                recovered.open_minis.len(),
                recovered.epoch.number,
            ),
            (5, 1, 2, 1)
        );

        // The same event again is recognised; another one at that position is a divergence.
        apply(&db, &rules, &mut cursor, &first_event).unwrap();
        let mut other = ChainBuilder::new(spec.genesis_block()).mini_block(&first);
        other.timestamp_ms += 1;
        other.seal(&first);
        let other = ChainBuilder::new(spec.genesis_block())
            .wire(ChainEventKind::MiniBlock(Box::new(other)));
        assert!(matches!(
            apply(&db, &rules, &mut cursor, &other),
            Err(ChainError::Diverged { seq: 1, .. })
        ));
    }
}
