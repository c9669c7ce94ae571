//! Verity's domain types, shared by every service: transactions with their recovered sender,
//! receipts, state diffs, mini-blocks, EVM blocks, the ordered chain stream, the chain spec
//! (genesis), and the sequencer's signing key. Wire formats live in `verity-proto`; this crate
//! knows nothing of gRPC or NATS.

pub mod block;
pub use block::{BlockCheckError, BlockTemplate};
pub mod chain_spec;
pub mod diff;
pub mod governance;
pub mod receipt;
pub mod signing;
pub mod state;

pub use alloy_consensus::{Header, TxEnvelope, TxType, transaction::Recovered};
pub use alloy_primitives::{Address, B256, Bloom, Bytes, Log, LogData, Signature, U256};
pub use block::{Block, BlockRoots, ChainEvent, ChainEventKind, MiniBlock};
pub use chain_spec::{ChainSpec, ChainSpecError, DEV_MNEMONIC};
pub use diff::{AccountDiff, StateDiff};
pub use receipt::Receipt;
pub use signing::{SignatureCheckError, SigningKey, UNSIGNED};
pub use state::{Account, InMemoryState, Overlay, StateView, genesis_diff};

/// The blob base fee (`BLOBBASEFEE`, `eth_blobBaseFee`) in wei: no block carries blobs (ingress
/// refuses blob transactions), so the excess blob gas stays zero and the price is EIP-4844's
/// minimum. The execution crate's tests hold revm's block environment to it.
pub const BLOB_BASE_FEE: u64 = 1;

/// A transaction as it travels inside Verity: the signed EIP-2718 envelope with the sender
/// that ingress recovered from its signature.
pub type Transaction = Recovered<TxEnvelope>;
