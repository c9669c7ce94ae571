//! The outcome of one executed transaction, as the sequencer produced it and replicas store it.

use alloy_consensus::{Eip658Value, ReceiptEnvelope, ReceiptWithBloom, TxType};
use alloy_primitives::{Address, B256, Bloom, Log};

/// What executing one transaction produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Hash of the transaction.
    pub tx_hash: B256,
    /// EIP-2718 type of the transaction.
    pub tx_type: TxType,
    /// Whether execution succeeded (EIP-658 status).
    pub success: bool,
    /// Gas this transaction used.
    pub gas_used: u64,
    /// Gas used by this and every earlier transaction of the same EVM block.
    pub cumulative_gas_used: u64,
    /// Price per gas actually paid.
    pub effective_gas_price: u128,
    /// Logs emitted, in order.
    pub logs: Vec<Log>,
    /// Address of the contract this transaction created, if any.
    pub contract_address: Option<Address>,
    /// The sender.
    pub from: Address,
    /// The recipient; `None` for contract creation.
    pub to: Option<Address>,
}

impl Receipt {
    /// The addresses the transaction took part in, as its receipt shows them: sender,
    /// recipient, the contract it created, and every log's emitter; each once, in that order.
    pub fn addresses(&self) -> Vec<Address> {
        let mut found = vec![self.from];
        let named = self
            .to
            .into_iter()
            .chain(self.contract_address)
            .chain(self.logs.iter().map(|log| log.address));
        for address in named {
            if !found.contains(&address) {
                found.push(address);
            }
        }
        found
    }

    /// The bloom filter over this receipt's logs.
    pub fn bloom(&self) -> Bloom {
        let mut bloom = Bloom::ZERO;
        for log in &self.logs {
            bloom.accrue_log(log);
        }
        bloom
    }

    /// The consensus receipt envelope, as it enters the block's receipts root.
    pub fn envelope(&self) -> ReceiptEnvelope {
        let receipt = alloy_consensus::Receipt {
            status: Eip658Value::Eip658(self.success),
            cumulative_gas_used: self.cumulative_gas_used,
            logs: self.logs.clone(),
        };
        ReceiptEnvelope::from_typed(self.tx_type, ReceiptWithBloom::new(receipt, self.bloom()))
    }
}
