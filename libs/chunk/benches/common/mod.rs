//! What the chunk benchmarks share: CPU-time measurement and signed transfers.

#![allow(dead_code)]

use std::time::Instant;

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use verity_primitives::{MiniBlock, StateDiff, Transaction, TxEnvelope};

pub const CHAIN_ID: u64 = 31337;
pub const GAS_LIMIT: u64 = 30_000_000;

/// CPU seconds (user + system, every thread) this process has used.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f`; returns its output, the process CPU seconds and the wall seconds it took.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let out = f();
    (out, cpu_seconds() - cpu, wall.elapsed().as_secs_f64())
}

/// A signed transfer of 1,000 wei.
pub fn transfer(signer: &PrivateKeySigner, nonce: u64, to: Address) -> Transaction {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000,
        to: TxKind::Call(to),
        value: U256::from(1_000),
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    Transaction::new_unchecked(envelope, signer.address())
}

/// Mini-block `number` (one every 10 ms, 100 to a block) with no transactions yet.
pub fn empty_mini_block(number: u64) -> MiniBlock {
    MiniBlock {
        number,
        block_number: 1 + number / 100,
        index: (number % 100) as u32,
        epoch: 0,
        timestamp_ms: 1_700_000_000_000 + 10 * number,
        parent_hash: B256::ZERO,
        base_fee: 1_000_000_000,
        block_timestamp: 1_700_000_000,
        beneficiary: Address::repeat_byte(0xfe),
        transactions: vec![],
        receipts: vec![],
        diff: StateDiff::default(),
        hash: B256::ZERO,
        signature: verity_primitives::UNSIGNED,
    }
}
