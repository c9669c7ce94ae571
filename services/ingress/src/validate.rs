//! Stateless validation of a submitted transaction, in the order geth's txpool checks, with
//! geth's error texts so Ethereum libraries recognise them.

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::Address;
use verity_primitives::Transaction;
use verity_proto::v1::TxRejection;

/// Largest accepted envelope (geth's txpool limit is 128 KiB).
pub const DEFAULT_MAX_TX_BYTES: usize = 128 * 1024;

/// What the chain allows, as the sequencer reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChainRules {
    /// Chain id transactions must be signed for.
    pub chain_id: u64,
    /// Block gas limit.
    pub block_gas_limit: u64,
    /// Base fee of the block being built.
    pub base_fee: u64,
    /// Largest accepted envelope.
    pub max_tx_bytes: usize,
}

/// A rejected transaction: why, typed, and geth's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// Why.
    pub reason: TxRejection,
    /// The message a client sees.
    pub message: String,
}

impl Rejection {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            reason: TxRejection::Invalid,
            message: message.into(),
        }
    }

    /// The gRPC code it maps to.
    pub fn code(&self) -> tonic::Code {
        verity_server::status::rejection_code(self.reason)
    }
}

impl From<Rejection> for tonic::Status {
    fn from(rejection: Rejection) -> Self {
        verity_server::status::rejected(rejection.reason, rejection.message)
    }
}

/// Decodes, checks and recovers the sender of a raw EIP-2718 envelope.
pub fn validate(raw: &[u8], rules: &ChainRules) -> Result<Transaction, Rejection> {
    if raw.len() > rules.max_tx_bytes {
        return Err(Rejection::invalid("oversized data"));
    }
    if raw.is_empty() {
        return Err(Rejection::invalid("typed transaction too short"));
    }
    let envelope = TxEnvelope::decode_2718_exact(raw).map_err(|e| decode_rejection(raw, &e))?;
    match &envelope {
        TxEnvelope::Legacy(_) | TxEnvelope::Eip2930(_) | TxEnvelope::Eip1559(_) => {}
        _ => return Err(Rejection::invalid("transaction type not supported")),
    }
    match envelope.chain_id() {
        None => {
            return Err(Rejection::invalid(
                "only replay-protected (EIP-155) transactions allowed over RPC",
            ));
        }
        Some(id) if id != rules.chain_id => {
            return Err(Rejection::invalid(format!(
                "invalid chain id for signer: have {id} want {}",
                rules.chain_id
            )));
        }
        Some(_) => {}
    }
    if envelope.gas_limit() > rules.block_gas_limit {
        return Err(Rejection::invalid("exceeds block gas limit"));
    }
    let cap = verity_primitives::chain_spec::MAX_TX_GAS;
    if envelope.gas_limit() > cap {
        return Err(Rejection::invalid(format!(
            "transaction gas limit too high (cap: {cap}, tx: {})",
            envelope.gas_limit()
        )));
    }
    if let Some(tip) = envelope.max_priority_fee_per_gas()
        && tip > envelope.max_fee_per_gas()
    {
        return Err(Rejection::invalid(
            "max priority fee per gas higher than max fee per gas",
        ));
    }
    let sender: Address =
        alloy_consensus::transaction::SignerRecoverable::recover_signer(&envelope)
            .map_err(|_| Rejection::invalid("invalid sender"))?;
    let intrinsic = verity_execution::intrinsic_gas(&envelope);
    if envelope.gas_limit() < intrinsic {
        return Err(Rejection::invalid(format!(
            "intrinsic gas too low: gas {}, minimum needed {intrinsic}",
            envelope.gas_limit()
        )));
    }
    if envelope.max_fee_per_gas() < u128::from(rules.base_fee) {
        return Err(Rejection::invalid(format!(
            "max fee per gas less than block base fee: address {sender}, maxFeePerGas: {}, baseFee: {}",
            envelope.max_fee_per_gas(),
            rules.base_fee
        )));
    }
    Ok(Transaction::new_unchecked(envelope, sender))
}

fn decode_rejection(raw: &[u8], error: &alloy_eips::eip2718::Eip2718Error) -> Rejection {
    match raw.first() {
        // Typed envelope of a type this chain does not know.
        Some(&t) if t < 0x7f && t > 0x04 => Rejection::invalid("transaction type not supported"),
        _ => Rejection::invalid(format!("rlp: {error}")),
    }
}
