//! Conversions between wire messages and domain types, with validation of every field.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Bytes, Log, LogData, Signature, U256};
use verity_primitives::{
    self as domain, AccountDiff, ChainEventKind, Header, Receipt, StateDiff, Transaction,
    TxEnvelope,
    governance::{Appointment, Handover, SignedAppointment},
};

use crate::v1;

/// A wire message that does not describe a valid domain value.
#[derive(Debug, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct ConversionError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConversionError {
    /// An error about `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl From<ConversionError> for tonic::Status {
    fn from(error: ConversionError) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// Parses a 20-byte address.
pub fn address_from(bytes: &[u8], field: &'static str) -> Result<Address, ConversionError> {
    Address::try_from(bytes)
        .map_err(|_| ConversionError::new(field, format!("expected 20 bytes, got {}", bytes.len())))
}

/// Parses an address that may be absent (empty bytes).
pub fn opt_address_from(
    bytes: &[u8],
    field: &'static str,
) -> Result<Option<Address>, ConversionError> {
    if bytes.is_empty() {
        Ok(None)
    } else {
        address_from(bytes, field).map(Some)
    }
}

/// Parses a 32-byte hash.
pub fn b256_from(bytes: &[u8], field: &'static str) -> Result<B256, ConversionError> {
    B256::try_from(bytes)
        .map_err(|_| ConversionError::new(field, format!("expected 32 bytes, got {}", bytes.len())))
}

/// Parses a big-endian U256 of at most 32 bytes; empty means zero.
pub fn u256_from(bytes: &[u8], field: &'static str) -> Result<U256, ConversionError> {
    U256::try_from_be_slice(bytes)
        .ok_or_else(|| ConversionError::new(field, format!("{} bytes exceed 32", bytes.len())))
}

/// Encodes a U256 as 32 big-endian bytes.
pub fn u256_bytes(value: U256) -> Vec<u8> {
    value.to_be_bytes::<32>().to_vec()
}

fn u128_from(bytes: &[u8], field: &'static str) -> Result<u128, ConversionError> {
    let value = u256_from(bytes, field)?;
    u128::try_from(value).map_err(|_| ConversionError::new(field, "exceeds 128 bits"))
}

fn u64_from_u256(bytes: &[u8], field: &'static str) -> Result<u64, ConversionError> {
    let value = u256_from(bytes, field)?;
    u64::try_from(value).map_err(|_| ConversionError::new(field, "exceeds 64 bits"))
}

/// Parses a 65-byte r||s||v signature.
pub fn signature_from(bytes: &[u8], field: &'static str) -> Result<Signature, ConversionError> {
    Signature::from_raw(bytes).map_err(|e| ConversionError::new(field, e.to_string()))
}

// --- transactions ---

impl From<&Transaction> for v1::Transaction {
    fn from(tx: &Transaction) -> Self {
        Self {
            raw: domain::block::encode_transaction(tx),
            sender: tx.signer().to_vec(),
            hash: tx.tx_hash().to_vec(),
        }
    }
}

/// The envelope of a wire transaction, its hash checked; the sender field is not looked at.
/// What the sequencer decodes a forwarded transaction with before it recovers the sender itself.
pub fn envelope_from(tx: &v1::Transaction) -> Result<TxEnvelope, ConversionError> {
    use alloy_eips::eip2718::Decodable2718;
    let envelope = TxEnvelope::decode_2718_exact(&tx.raw)
        .map_err(|e| ConversionError::new("transaction.raw", e.to_string()))?;
    let hash = b256_from(&tx.hash, "transaction.hash")?;
    if *envelope.tx_hash() != hash {
        return Err(ConversionError::new(
            "transaction.hash",
            format!("{hash} is not the envelope's hash {}", envelope.tx_hash()),
        ));
    }
    Ok(envelope)
}

impl TryFrom<&v1::Transaction> for Transaction {
    type Error = ConversionError;

    /// Decodes the envelope and checks the hash; the sender is taken as recovered upstream (a
    /// mini-block's signature covers it; the sequencer recovered it).
    fn try_from(tx: &v1::Transaction) -> Result<Self, Self::Error> {
        let envelope = envelope_from(tx)?;
        let sender = address_from(&tx.sender, "transaction.sender")?;
        Ok(Transaction::new_unchecked(envelope, sender))
    }
}

// --- receipts and logs ---

impl From<&Log> for v1::Log {
    fn from(log: &Log) -> Self {
        Self {
            address: log.address.to_vec(),
            topics: log.topics().iter().map(|t| t.to_vec()).collect(),
            data: log.data.data.to_vec(),
        }
    }
}

impl TryFrom<&v1::Log> for Log {
    type Error = ConversionError;

    fn try_from(log: &v1::Log) -> Result<Self, Self::Error> {
        let topics = log
            .topics
            .iter()
            .map(|t| b256_from(t, "log.topics"))
            .collect::<Result<Vec<_>, _>>()?;
        if topics.len() > 4 {
            return Err(ConversionError::new("log.topics", "more than 4 topics"));
        }
        Ok(Log {
            address: address_from(&log.address, "log.address")?,
            data: LogData::new_unchecked(topics, Bytes::copy_from_slice(&log.data)),
        })
    }
}

impl From<&Receipt> for v1::Receipt {
    fn from(r: &Receipt) -> Self {
        Self {
            tx_hash: r.tx_hash.to_vec(),
            tx_type: r.tx_type as u32,
            success: r.success,
            gas_used: r.gas_used,
            cumulative_gas_used: r.cumulative_gas_used,
            effective_gas_price: u256_bytes(U256::from(r.effective_gas_price)),
            logs: r.logs.iter().map(v1::Log::from).collect(),
            contract_address: r.contract_address.map(|a| a.to_vec()).unwrap_or_default(),
            from: r.from.to_vec(),
            to: r.to.map(|a| a.to_vec()).unwrap_or_default(),
        }
    }
}

impl TryFrom<&v1::Receipt> for Receipt {
    type Error = ConversionError;

    fn try_from(r: &v1::Receipt) -> Result<Self, Self::Error> {
        let tx_type = u8::try_from(r.tx_type)
            .ok()
            .and_then(|t| domain::TxType::try_from(t).ok())
            .ok_or_else(|| ConversionError::new("receipt.tx_type", r.tx_type.to_string()))?;
        Ok(Receipt {
            tx_hash: b256_from(&r.tx_hash, "receipt.tx_hash")?,
            tx_type,
            success: r.success,
            gas_used: r.gas_used,
            cumulative_gas_used: r.cumulative_gas_used,
            effective_gas_price: u128_from(&r.effective_gas_price, "receipt.effective_gas_price")?,
            logs: r.logs.iter().map(Log::try_from).collect::<Result<_, _>>()?,
            contract_address: opt_address_from(&r.contract_address, "receipt.contract_address")?,
            from: address_from(&r.from, "receipt.from")?,
            to: opt_address_from(&r.to, "receipt.to")?,
        })
    }
}

// --- state diffs ---

impl From<&StateDiff> for v1::StateDiff {
    fn from(diff: &StateDiff) -> Self {
        Self {
            accounts: diff
                .accounts
                .iter()
                .map(|(address, a)| v1::AccountDiff {
                    address: address.to_vec(),
                    balance: a.balance.map(u256_bytes),
                    nonce: a.nonce,
                    code: a.code.as_ref().map(|c| c.to_vec()),
                    storage: a
                        .storage
                        .iter()
                        .map(|(slot, value)| v1::StorageWrite {
                            slot: u256_bytes(*slot),
                            value: u256_bytes(*value),
                        })
                        .collect(),
                    destroyed: a.destroyed,
                })
                .collect(),
        }
    }
}

impl TryFrom<&v1::StateDiff> for StateDiff {
    type Error = ConversionError;

    fn try_from(diff: &v1::StateDiff) -> Result<Self, Self::Error> {
        let mut accounts = BTreeMap::new();
        for a in &diff.accounts {
            let address = address_from(&a.address, "account_diff.address")?;
            let mut storage = BTreeMap::new();
            for write in &a.storage {
                storage.insert(
                    u256_from(&write.slot, "storage_write.slot")?,
                    u256_from(&write.value, "storage_write.value")?,
                );
            }
            let account = AccountDiff {
                balance: a
                    .balance
                    .as_deref()
                    .map(|b| u256_from(b, "account_diff.balance"))
                    .transpose()?,
                nonce: a.nonce,
                code: a.code.as_deref().map(Bytes::copy_from_slice),
                storage,
                destroyed: a.destroyed,
            };
            if accounts.insert(address, account).is_some() {
                return Err(ConversionError::new(
                    "state_diff.accounts",
                    format!("{address} appears twice"),
                ));
            }
        }
        Ok(StateDiff { accounts })
    }
}

// --- mini-blocks, blocks, chain events ---

impl From<&domain::MiniBlock> for v1::MiniBlock {
    fn from(m: &domain::MiniBlock) -> Self {
        Self {
            number: m.number,
            block_number: m.block_number,
            index: m.index,
            epoch: m.epoch,
            timestamp_ms: m.timestamp_ms,
            parent_hash: m.parent_hash.to_vec(),
            transactions: m.transactions.iter().map(v1::Transaction::from).collect(),
            receipts: m.receipts.iter().map(v1::Receipt::from).collect(),
            diff: Some(v1::StateDiff::from(&m.diff)),
            base_fee: u256_bytes(U256::from(m.base_fee)),
            block_timestamp: m.block_timestamp,
            beneficiary: m.beneficiary.to_vec(),
            hash: m.hash.to_vec(),
            signature: m.signature.as_bytes().to_vec(),
        }
    }
}

impl TryFrom<&v1::MiniBlock> for domain::MiniBlock {
    type Error = ConversionError;

    fn try_from(m: &v1::MiniBlock) -> Result<Self, Self::Error> {
        if m.receipts.len() != m.transactions.len() {
            return Err(ConversionError::new(
                "mini_block.receipts",
                format!(
                    "{} receipts for {} transactions",
                    m.receipts.len(),
                    m.transactions.len()
                ),
            ));
        }
        Ok(Self {
            number: m.number,
            block_number: m.block_number,
            index: m.index,
            epoch: m.epoch,
            timestamp_ms: m.timestamp_ms,
            parent_hash: b256_from(&m.parent_hash, "mini_block.parent_hash")?,
            base_fee: u64_from_u256(&m.base_fee, "mini_block.base_fee")?,
            block_timestamp: m.block_timestamp,
            beneficiary: address_from(&m.beneficiary, "mini_block.beneficiary")?,
            transactions: m
                .transactions
                .iter()
                .map(Transaction::try_from)
                .collect::<Result<_, _>>()?,
            receipts: m
                .receipts
                .iter()
                .map(Receipt::try_from)
                .collect::<Result<_, _>>()?,
            diff: m
                .diff
                .as_ref()
                .map(StateDiff::try_from)
                .transpose()?
                .unwrap_or_default(),
            hash: b256_from(&m.hash, "mini_block.hash")?,
            signature: signature_from(&m.signature, "mini_block.signature")?,
        })
    }
}

impl From<&domain::Block> for v1::Block {
    fn from(b: &domain::Block) -> Self {
        Self {
            header_rlp: alloy_rlp::encode(&b.header),
            hash: b.hash.to_vec(),
            first_mini_block: b.first_mini_block,
            mini_block_count: b.mini_block_count,
            transaction_hashes: b.transaction_hashes.iter().map(|h| h.to_vec()).collect(),
            signature: b.signature.as_bytes().to_vec(),
        }
    }
}

impl TryFrom<&v1::Block> for domain::Block {
    type Error = ConversionError;

    fn try_from(b: &v1::Block) -> Result<Self, Self::Error> {
        let header = <Header as alloy_rlp::Decodable>::decode(&mut b.header_rlp.as_slice())
            .map_err(|e| ConversionError::new("block.header_rlp", e.to_string()))?;
        Ok(Self {
            header,
            hash: b256_from(&b.hash, "block.hash")?,
            first_mini_block: b.first_mini_block,
            mini_block_count: b.mini_block_count,
            transaction_hashes: b
                .transaction_hashes
                .iter()
                .map(|h| b256_from(h, "block.transaction_hashes"))
                .collect::<Result<_, _>>()?,
            signature: signature_from(&b.signature, "block.signature")?,
        })
    }
}

impl From<&SignedAppointment> for v1::SignedAppointment {
    fn from(s: &SignedAppointment) -> Self {
        let a = &s.appointment;
        Self {
            chain_id: a.chain_id,
            epoch: a.epoch,
            sequencer: a.sequencer.to_vec(),
            first_height: a.first_height,
            parent_hash: a.parent_hash.to_vec(),
            signatures: s
                .signatures
                .iter()
                .map(|sig| sig.as_bytes().to_vec())
                .collect(),
        }
    }
}

impl TryFrom<&v1::SignedAppointment> for SignedAppointment {
    type Error = ConversionError;

    fn try_from(s: &v1::SignedAppointment) -> Result<Self, Self::Error> {
        Ok(Self {
            appointment: Appointment {
                chain_id: s.chain_id,
                epoch: s.epoch,
                sequencer: address_from(&s.sequencer, "appointment.sequencer")?,
                first_height: s.first_height,
                parent_hash: b256_from(&s.parent_hash, "appointment.parent_hash")?,
            },
            signatures: s
                .signatures
                .iter()
                .map(|sig| signature_from(sig, "appointment.signatures"))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<&Handover> for v1::Handover {
    fn from(h: &Handover) -> Self {
        Self {
            appointment: Some((&h.appointment).into()),
            block_number: h.block_number,
            parent_hash: h.parent_hash.to_vec(),
            hash: h.hash.to_vec(),
            signature: h.signature.as_bytes().to_vec(),
        }
    }
}

impl TryFrom<&v1::Handover> for Handover {
    type Error = ConversionError;

    fn try_from(h: &v1::Handover) -> Result<Self, Self::Error> {
        Ok(Self {
            appointment: h
                .appointment
                .as_ref()
                .ok_or_else(|| ConversionError::new("handover.appointment", "missing"))?
                .try_into()?,
            block_number: h.block_number,
            parent_hash: b256_from(&h.parent_hash, "handover.parent_hash")?,
            hash: b256_from(&h.hash, "handover.hash")?,
            signature: signature_from(&h.signature, "handover.signature")?,
        })
    }
}

impl From<&domain::ChainEvent> for v1::ChainEvent {
    fn from(e: &domain::ChainEvent) -> Self {
        Self {
            seq: e.seq,
            event: Some(match &e.kind {
                ChainEventKind::MiniBlock(m) => {
                    v1::chain_event::Event::MiniBlock(m.as_ref().into())
                }
                ChainEventKind::Block(b) => v1::chain_event::Event::Block(b.as_ref().into()),
                ChainEventKind::Handover(h) => v1::chain_event::Event::Handover(h.as_ref().into()),
            }),
            trace_context: Default::default(),
        }
    }
}

impl TryFrom<&v1::ChainEvent> for domain::ChainEvent {
    type Error = ConversionError;

    fn try_from(e: &v1::ChainEvent) -> Result<Self, Self::Error> {
        let kind = match &e.event {
            Some(v1::chain_event::Event::MiniBlock(m)) => {
                ChainEventKind::MiniBlock(Box::new(m.try_into()?))
            }
            Some(v1::chain_event::Event::Block(b)) => {
                ChainEventKind::Block(Box::new(b.try_into()?))
            }
            Some(v1::chain_event::Event::Handover(h)) => {
                ChainEventKind::Handover(Box::new(h.try_into()?))
            }
            None => return Err(ConversionError::new("chain_event.event", "missing")),
        };
        if e.seq == 0 {
            return Err(ConversionError::new(
                "chain_event.seq",
                "sequences start at 1",
            ));
        }
        Ok(Self { seq: e.seq, kind })
    }
}
