//! Where a node's copy of the chain ends, and the rules an event must meet to extend it.
//!
//! The rules need nothing but the cursor and the chain's sequencing rules (from genesis), so
//! every follower enforces exactly the same ones, in memory, before anything is written.

use alloy_primitives::B256;
use verity_primitives::{
    Block, ChainEvent, ChainEventKind,
    block::{check_block_link, check_mini_block_link},
    governance::{Epoch, Sequencing},
};

use crate::ChainError;

/// Where the local chain ends, as the checks need it.
#[derive(Debug, Clone, PartialEq)]
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
    /// The chain at genesis: no event applied, `genesis` (block 0) sealed, `epoch` in force.
    pub fn genesis(genesis: Block, epoch: Epoch) -> Self {
        Self {
            last_seq: 0,
            next_mini: genesis.first_mini_block + genesis.mini_block_count,
            last_mini_hash: genesis.header.mix_hash,
            head: genesis,
            open_txs: 0,
            epoch,
        }
    }

    /// Checks that `event` extends the chain here and moves past it; refused, the cursor does
    /// not move. The event must be the next sequence. A mini-block must be signed by the key of
    /// the epoch in force, under that epoch, with a hash over its contents ([`check_signer`]),
    /// and be the next mini-block on the last one, of the block being built. A block likewise
    /// signed, on the last block, sealing exactly the mini-blocks and transactions applied since.
    /// A handover must carry an appointment `rules`' governance signed, for an epoch above the
    /// one in force, placed where the chain is, and the appointed key's signature; the epoch it
    /// opens is in force from the next event on.
    pub fn advance(&mut self, rules: &Sequencing, event: &ChainEvent) -> Result<(), ChainError> {
        let seq = event.seq;
        let invalid = |reason: String| ChainError::Invalid { seq, reason };
        if seq != self.last_seq + 1 {
            return Err(invalid(format!(
                "expected event {} next",
                self.last_seq + 1
            )));
        }
        check_signer(event, Some(&self.epoch))?;
        match &event.kind {
            ChainEventKind::MiniBlock(mini) => {
                check_mini_block_link(
                    mini,
                    self.next_mini,
                    self.last_mini_hash,
                    self.head.number(),
                )
                .map_err(invalid)?;
                self.next_mini = mini.number + 1;
                self.last_mini_hash = mini.hash;
                self.open_txs += mini.transactions.len() as u64;
            }
            ChainEventKind::Block(block) => {
                check_block_link(
                    block,
                    &self.head,
                    self.next_mini,
                    self.last_mini_hash,
                    self.open_txs,
                )
                .map_err(invalid)?;
                self.head = block.as_ref().clone();
                self.open_txs = 0;
            }
            ChainEventKind::Handover(handover) => {
                self.epoch = rules
                    .check_handover(
                        &self.epoch,
                        handover,
                        self.head.number() + 1,
                        self.head.hash,
                    )
                    .map_err(|e| invalid(format!("handover refused: {e}")))?;
            }
        }
        self.last_seq = seq;
        Ok(())
    }
}

/// Checks that the sequencer of `epoch` signed `event`: a mini-block's or block's hash over its
/// contents, its signature by the epoch's key and the epoch it claims. A handover carries its own
/// signatures, which only the chain's position and governance can judge ([`Cursor::advance`]);
/// it passes here. An unknown epoch (`None`) refuses every event: nothing is let through
/// unchecked.
pub fn check_signer(event: &ChainEvent, epoch: Option<&Epoch>) -> Result<(), ChainError> {
    let epoch = epoch.ok_or(ChainError::UnknownEpoch { seq: event.seq })?;
    event.verify(epoch).map_err(|e| ChainError::Invalid {
        seq: event.seq,
        reason: e.to_string(),
    })
}
