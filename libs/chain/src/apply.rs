//! Applying checked events to a node's MDBX database: one durable transaction per batch, all of
//! it or (on the first refused event) none of it, and the cursor moves only once it is on disk.
//!
//! Every node writes the same chain data (the state diff of each mini-block, each block, the
//! epoch a handover opens); a [`Layout`] says whether state history and the events themselves
//! are kept, and adds what only that node keeps (the sequencer's last block position, the
//! replica's transaction index and its own position).

use verity_primitives::{
    ChainEvent, ChainEventKind, MiniBlock,
    governance::{EPOCH_META_KEY, Epoch, Sequencing},
};
use verity_proto::v1;
use verity_storage::{Database, ReadTx, StorageError, WriteTx};

use crate::{ChainError, Cursor};

/// What an event at or below the cursor is taken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivered {
    /// A redelivery of an event applied before: skipped (a replica, whose durable consumer
    /// redelivers what it did not acknowledge).
    Skip,
    /// The stream's copy of an event this node stored: it must be the one stored locally, or
    /// the chain diverged ([`ChainError::Diverged`]; a sequencer, which stores what it produces
    /// before the stream has it).
    MustMatch,
}

/// How a node keeps the chain in its database beyond what every node writes.
pub trait Layout {
    /// Whether state diffs record the values they replace, for reads at past blocks (a
    /// replica), or only change the latest state (the sequencer).
    fn history(&self) -> bool;

    /// Whether the events themselves are stored (`ChainEvents`).
    fn keeps_events(&self) -> bool;

    /// Whether mini-blocks' state diffs are applied at all: false for a node that keeps the
    /// chain's events and blocks but no state (a light verifier).
    fn keeps_state(&self) -> bool {
        true
    }

    /// Writes what else this node keeps of `event`, in the batch's transaction, after the
    /// chain data every node writes.
    fn write_event(
        &mut self,
        write: &mut WriteTx<'_>,
        event: &CheckedEvent<'_>,
    ) -> Result<(), StorageError> {
        let _ = (write, event);
        Ok(())
    }

    /// The batch's last writes before it commits, with the cursor after it: the node's record of
    /// where it is, and anything it stores with the batch.
    fn finish(&mut self, write: &mut WriteTx<'_>, cursor: &Cursor) -> Result<(), StorageError> {
        let _ = (write, cursor);
        Ok(())
    }
}

/// An event that passed the checks, with where the chain stood around it.
#[derive(Debug, Clone)]
pub struct CheckedEvent<'w> {
    wire: &'w v1::ChainEvent,
    event: ChainEvent,
    open_txs: u64,
    epoch: Epoch,
}

impl CheckedEvent<'_> {
    /// The decoded event.
    pub fn event(&self) -> &ChainEvent {
        &self.event
    }

    /// Transactions of the open block before this event (for a mini-block: the index of its
    /// first transaction in its block).
    pub fn open_txs_before(&self) -> u64 {
        self.open_txs
    }
}

/// A batch of events that passed the checks, and the cursor after them. Only [`check_batch`]
/// makes one, so [`commit`] writes nothing that was not checked.
#[derive(Debug)]
pub struct Checked<'w> {
    events: Vec<CheckedEvent<'w>>,
    cursor: Cursor,
}

impl<'w> Checked<'w> {
    /// The events to write, in order (redeliveries left out).
    pub fn events(&self) -> &[CheckedEvent<'w>] {
        &self.events
    }

    /// The mini-blocks among the events, in order, each with its stream position.
    pub fn mini_blocks(&self) -> impl Iterator<Item = (u64, &MiniBlock)> {
        self.events.iter().filter_map(|e| match &e.event.kind {
            ChainEventKind::MiniBlock(mini) => Some((e.event.seq, mini.as_ref())),
            ChainEventKind::Block(_) | ChainEventKind::Handover(_) => None,
        })
    }
}

/// Checks consecutive `wires` against the chain at `cursor` ([`Cursor::advance`]), in memory;
/// `read` holds the events stored before them. Events at or below the cursor are skipped or
/// compared with the stored ones, per `redelivered`. Refused at the first event that fails.
pub fn check_batch<'w>(
    read: &ReadTx<'_>,
    rules: &Sequencing,
    cursor: &Cursor,
    wires: &'w [v1::ChainEvent],
    redelivered: Redelivered,
) -> Result<Checked<'w>, ChainError> {
    let stored = cursor.last_seq;
    let mut next = cursor.clone();
    let mut events: Vec<CheckedEvent<'w>> = Vec::with_capacity(wires.len());
    for wire in wires {
        let seq = wire.seq;
        // Skipped: only what was stored before this batch. A sequence repeated inside the batch
        // goes on to `advance`, which refuses it as out of order.
        if seq <= stored && redelivered == Redelivered::Skip {
            continue;
        }
        let event = ChainEvent::try_from(wire).map_err(|e| ChainError::Invalid {
            seq,
            reason: e.to_string(),
        })?;
        if seq <= next.last_seq && redelivered == Redelivered::MustMatch {
            // Stored before this batch, or checked earlier in it.
            let local = if seq <= stored {
                read.event(seq)?
                    .and_then(|e| ChainEvent::try_from(&e).ok())
                    .map(|e| e.hash())
            } else {
                events
                    .iter()
                    .find(|e| e.event.seq == seq)
                    .map(|e| e.event.hash())
            }
            .unwrap_or_default();
            if local != event.hash() {
                return Err(ChainError::Diverged {
                    seq,
                    local,
                    stream: event.hash(),
                });
            }
            continue;
        }
        let open_txs = next.open_txs;
        next.advance(rules, &event)?;
        events.push(CheckedEvent {
            wire,
            event,
            open_txs,
            epoch: next.epoch,
        });
    }
    Ok(Checked {
        events,
        cursor: next,
    })
}

/// Writes `checked` in one durable MDBX transaction: each mini-block's state diff (unless
/// `layout` keeps no state), each block, the epoch each handover opens, the events if `layout` keeps them, and what `layout` adds.
/// Returns the cursor after the batch once it is on disk; nothing is written when every event
/// was a redelivery.
pub fn commit(
    db: &Database,
    checked: Checked<'_>,
    layout: &mut impl Layout,
) -> Result<Cursor, ChainError> {
    let Checked { events, cursor } = checked;
    if events.is_empty() {
        return Ok(cursor);
    }
    let mut write = db.write()?;
    for checked in &events {
        match &checked.event.kind {
            ChainEventKind::MiniBlock(_) if !layout.keeps_state() => {}
            ChainEventKind::MiniBlock(mini) => {
                if layout.history() {
                    write.apply_diff_at(&mini.diff, mini.block_number)?;
                } else {
                    write.apply_diff(&mini.diff)?;
                }
            }
            ChainEventKind::Block(block) => write.put_block(block)?,
            ChainEventKind::Handover(_) => {
                write.set_meta(EPOCH_META_KEY, &checked.epoch.to_bytes())?;
            }
        }
        if layout.keeps_events() {
            write.put_event(checked.wire)?;
        }
        layout.write_event(&mut write, checked)?;
    }
    layout.finish(&mut write, &cursor)?;
    write.commit()?;
    for checked in &events {
        if let ChainEventKind::Handover(handover) = &checked.event.kind {
            tracing::info!(
                seq = checked.event.seq,
                epoch = checked.epoch.number,
                sequencer = %checked.epoch.sequencer,
                block = handover.block_number,
                "sequencer handover applied"
            );
        }
    }
    Ok(cursor)
}

/// [`check_batch`] then [`commit`]: applies consecutive `wires` in one durable MDBX transaction,
/// all of them or, on the first refused one, none; `cursor` moves only once they are on disk.
/// Returns how many events were applied (redeliveries are not counted).
pub fn apply_batch(
    db: &Database,
    rules: &Sequencing,
    cursor: &mut Cursor,
    wires: &[v1::ChainEvent],
    redelivered: Redelivered,
    layout: &mut impl Layout,
) -> Result<usize, ChainError> {
    let checked = {
        let read = db.read()?;
        check_batch(&read, rules, cursor, wires, redelivered)?
    };
    let applied = checked.events.len();
    *cursor = commit(db, checked, layout)?;
    Ok(applied)
}
