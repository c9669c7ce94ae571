//! Sender recovery, the largest CPU cost of a transaction on its way in (`make bench`; printed,
//! never asserted): alloy's recovery as the sequencer calls it (libsecp256k1, alloy-consensus's
//! `secp256k1` feature) against the pure-Rust k256 backend, on one core, and ingress's whole
//! `validate` (decode, hash, checks; the sequencer recovers the sender) on one core and on every
//! core.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, transaction::SignerRecoverable};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use rayon::prelude::*;
use verity_ingress::{ChainRules, validate};

const N: usize = 20_000;

fn main() {
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(7)).unwrap();
    let envelopes: Vec<TxEnvelope> = (0..N as u64)
        .map(|nonce| {
            let tx = TxEip1559 {
                chain_id: 31337,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1_000_000,
                to: TxKind::Call(Address::repeat_byte(1)),
                value: U256::from(1u64),
                ..Default::default()
            };
            let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
            tx.into_signed(signature).into()
        })
        .collect();
    let raws: Vec<Vec<u8>> = envelopes.iter().map(|e| e.encoded_2718()).collect();

    let started = Instant::now();
    for envelope in &envelopes {
        assert_eq!(envelope.recover_signer().unwrap(), signer.address());
    }
    let secp = N as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    for envelope in &envelopes {
        let TxEnvelope::Eip1559(signed) = envelope else {
            unreachable!()
        };
        let hash = signed.signature_hash();
        // Returns k256's key type: this is the k256 backend whatever features are on.
        let key = signed.signature().recover_from_prehash(&hash).unwrap();
        assert_eq!(Address::from_public_key(&key), signer.address());
    }
    let k256 = N as f64 / started.elapsed().as_secs_f64();

    let rules = ChainRules {
        chain_id: 31337,
        base_fee: 1_000_000_000,
        block_gas_limit: 30_000_000,
        max_tx_bytes: verity_ingress::DEFAULT_MAX_TX_BYTES,
    };
    let started = Instant::now();
    for raw in &raws {
        validate(raw, &rules).unwrap();
    }
    let one_core = N as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    raws.par_iter().for_each(|raw| {
        validate(raw, &rules).unwrap();
    });
    let every_core = N as f64 / started.elapsed().as_secs_f64();
    println!("sender recovery, {N} EIP-1559 transfers:");
    println!("  libsecp256k1 (alloy, what the sequencer uses)      {secp:>9.0} /s per core");
    println!("  k256 (pure Rust)                                   {k256:>9.0} /s per core");
    println!("  ingress validate (decode, hash, checks), one core  {one_core:>9.0} /s");
    println!(
        "  ingress validate on {} cores                       {every_core:>9.0} /s",
        rayon::current_num_threads()
    );
}
