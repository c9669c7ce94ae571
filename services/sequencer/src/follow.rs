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
use verity_storage::{Database, StorageError};

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
    let seq = wire.seq;
    let invalid = |reason: String| FollowError::Invalid { seq, reason };
    let event = ChainEvent::try_from(wire).map_err(|e| invalid(e.to_string()))?;
    if seq <= cursor.last_seq {
        let local = db
            .read()?
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
    let mut write = db.write()?;
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
            write.commit()?;
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
            write.commit()?;
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
            write.commit()?;
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
