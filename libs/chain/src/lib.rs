//! The one path that verifies and applies chain events, for every node that follows the chain
//! stream: the standby sequencer, every replica, and (for the signature alone) the gateway's feed.
//!
//! A node keeps a [`Cursor`]: where its copy of the chain ends and the epoch in force there.
//! [`Cursor::advance`] holds the rules an event must meet to extend it: the next sequence; a
//! mini-block or block signed by the key of the epoch in force, under that epoch, its hash over
//! its contents ([`check_signer`], which the gateway calls too and which refuses everything when
//! the epoch is unknown); the mini-block's number, parent and block height, the block's parent,
//! height and the mini-blocks and transactions it seals; a handover against genesis's governance
//! (the appointment's signatures, its epoch above the one in force, its place in the chain, the
//! appointed key's own signature). [`check_batch`] runs a batch of events through them and
//! [`commit`] writes what passed in one MDBX transaction, with what the node's [`Layout`] adds;
//! [`apply_batch`] does both.

mod apply;
mod cursor;

#[cfg(test)]
mod tests;

use alloy_primitives::B256;
use verity_storage::StorageError;

pub use apply::{Checked, CheckedEvent, Layout, Redelivered, apply_batch, check_batch, commit};
pub use cursor::{Cursor, check_signer};

/// Why a chain event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Storage failed (not the event's fault: worth retrying).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The event is not valid at its position: undecodable, signed by another key or under
    /// another epoch than the one in force, a hash that does not match its contents, not the next
    /// link of the chain, or a handover governance did not appoint. It and everything after it
    /// are refused.
    #[error("refused event {seq}: {reason}")]
    Invalid {
        /// Stream sequence.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// The epoch in force is not known, so who may sign the event cannot be checked: it is
    /// refused rather than let through unchecked.
    #[error("refused event {seq}: the epoch in force is unknown, so its signer cannot be checked")]
    UnknownEpoch {
        /// Stream sequence.
        seq: u64,
    },
    /// The local database holds a different event at this position (only under
    /// [`Redelivered::MustMatch`]): this node produced events that never reached the stream (it
    /// was deposed before publishing them).
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
