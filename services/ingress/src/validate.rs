//! Stateless validation of a submitted transaction, in the order geth's txpool checks, with
//! geth's error texts so Ethereum libraries recognise them.

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::Address;
use verity_proto::v1::{self, TxRejection};

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

/// Decodes and checks a raw EIP-2718 envelope statelessly, in geth's order, with geth's texts.
///
/// The signature is not recovered for a transaction that passes: the sequencer recovers every
/// sender itself (it trusts no forwarded one), and a recovery here as well would only double the
/// chain's largest cost per transaction. It shields the sequencer from nothing: anyone can make
/// it recover as often as they like with correctly signed transactions that fail later (from
/// unfunded keys, or replays). A transaction refused by a check geth makes after the signature's
/// (intrinsic gas, fee floor) is recovered first, so a bad signature is still what it is told.
pub fn validate(raw: &[u8], rules: &ChainRules) -> Result<TxEnvelope, Rejection> {
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
    let intrinsic = verity_execution::intrinsic_gas(&envelope);
    if envelope.gas_limit() < intrinsic {
        sender(&envelope)?;
        return Err(Rejection::invalid(format!(
            "intrinsic gas too low: gas {}, minimum needed {intrinsic}",
            envelope.gas_limit()
        )));
    }
    if envelope.max_fee_per_gas() < u128::from(rules.base_fee) {
        let sender = sender(&envelope)?;
        return Err(Rejection::invalid(format!(
            "max fee per gas less than block base fee: address {sender}, maxFeePerGas: {}, baseFee: {}",
            envelope.max_fee_per_gas(),
            rules.base_fee
        )));
    }
    Ok(envelope)
}

/// [`validate`]s `raw` and makes it what ingress forwards ([`forwarded`]).
pub fn to_forward(
    raw: &[u8],
    rules: &ChainRules,
    name_sender: bool,
) -> Result<v1::Transaction, Rejection> {
    forwarded(raw, &validate(raw, rules)?, name_sender)
}

/// The sender of `envelope`, recovered from its signature.
pub fn sender(envelope: &TxEnvelope) -> Result<Address, Rejection> {
    alloy_consensus::transaction::SignerRecoverable::recover_signer(envelope)
        .map_err(|_| Rejection::invalid("invalid sender"))
}

/// What ingress forwards for a validated `envelope` whose encoding is `raw`: the sender named
/// only when `name_sender` (a sequencer of the previous release, which does not recover it).
pub fn forwarded(
    raw: &[u8],
    envelope: &TxEnvelope,
    name_sender: bool,
) -> Result<v1::Transaction, Rejection> {
    Ok(v1::Transaction {
        raw: raw.to_vec(),
        sender: if name_sender {
            sender(envelope)?.to_vec()
        } else {
            Vec::new()
        },
        hash: envelope.tx_hash().to_vec(),
    })
}

fn decode_rejection(raw: &[u8], error: &alloy_eips::eip2718::Eip2718Error) -> Rejection {
    match raw.first() {
        // Typed envelope of a type this chain does not know.
        Some(&t) if t < 0x7f && t > 0x04 => Rejection::invalid("transaction type not supported"),
        _ => Rejection::invalid(format!("rlp: {error}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_consensus::{SignableTransaction as _, TxEip1559};
    use alloy_eips::eip2718::Encodable2718 as _;
    use alloy_primitives::{B256, Signature, TxKind, U256};
    use alloy_signer::SignerSync as _;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;

    const RULES: ChainRules = ChainRules {
        chain_id: 1337,
        block_gas_limit: 30_000_000,
        base_fee: 1_000,
        max_tx_bytes: DEFAULT_MAX_TX_BYTES,
    };

    fn transfer(gas_limit: u64, max_fee_per_gas: u128) -> TxEip1559 {
        TxEip1559 {
            chain_id: RULES.chain_id,
            gas_limit,
            max_fee_per_gas,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::from(1u64),
            ..Default::default()
        }
    }

    fn signed(tx: TxEip1559) -> (Vec<u8>, Address) {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
        let signature = key.sign_hash_sync(&tx.signature_hash()).unwrap();
        (
            TxEnvelope::from(tx.into_signed(signature)).encoded_2718(),
            key.address(),
        )
    }

    /// Signed with an s of zero: a signature that recovers to no key.
    fn unsigned(tx: TxEip1559) -> Vec<u8> {
        let signature = Signature::new(U256::from(1u64), U256::ZERO, false);
        TxEnvelope::from(tx.into_signed(signature)).encoded_2718()
    }

    #[test]
    fn a_transaction_is_forwarded_unnamed_unless_the_sequencer_needs_its_sender() {
        let (raw, signer) = signed(transfer(21_000, 2_000));
        let envelope = validate(&raw, &RULES).unwrap();
        let unnamed = forwarded(&raw, &envelope, false).unwrap();
        assert_eq!(unnamed.raw, raw);
        assert!(unnamed.sender.is_empty());
        assert_eq!(unnamed.hash, alloy_primitives::keccak256(&raw).to_vec());
        let named = forwarded(&raw, &envelope, true).unwrap();
        assert_eq!(named.sender, signer.to_vec());
    }

    #[test]
    fn a_bad_signature_is_told_before_the_checks_geth_makes_after_it() {
        // Passing every stateless check, it goes to the sequencer, which recovers the sender.
        let raw = unsigned(transfer(21_000, 2_000));
        let envelope = validate(&raw, &RULES).unwrap();
        assert_eq!(
            forwarded(&raw, &envelope, true).unwrap_err().message,
            "invalid sender"
        );
        // Refused for intrinsic gas or the fee floor, the signature is what it is told.
        for tx in [transfer(20_000, 2_000), transfer(21_000, 999)] {
            assert_eq!(
                validate(&unsigned(tx), &RULES).unwrap_err().message,
                "invalid sender"
            );
        }
        let (raw, signer) = signed(transfer(21_000, 999));
        assert_eq!(
            validate(&raw, &RULES).unwrap_err().message,
            format!(
                "max fee per gas less than block base fee: address {signer}, maxFeePerGas: 999, baseFee: 1000"
            )
        );
        let (raw, _) = signed(transfer(20_000, 2_000));
        assert_eq!(
            validate(&raw, &RULES).unwrap_err().message,
            "intrinsic gas too low: gas 20000, minimum needed 21000"
        );
    }
}
