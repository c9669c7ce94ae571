//! The parallel executor against the sequential one: random batches with controlled conflict
//! rates (one sender for everything, one hot slot, the beneficiary as sender and recipient,
//! self-destructs, reverts, nested calls, creations, refused and out-of-gas transactions) must
//! give the same outcome, field for field, on 2 and 4 threads.
#![allow(clippy::unwrap_used)]

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use proptest::prelude::*;
use verity_execution::{
    BlockEnvSpec, ExecutionOutcome, Schedule, execute, execute_parallel, execute_scheduled,
};
use verity_primitives::{AccountDiff, InMemoryState, StateDiff, Transaction};

const CHAIN_ID: u64 = 31337;
const ETH: u128 = 1_000_000_000_000_000_000;
const BASE_FEE: u64 = 1_000_000_000;

/// slot0 += 1
const COUNTER: &[u8] = &[0x5f, 0x54, 0x60, 0x01, 0x01, 0x5f, 0x55, 0x00];
/// slot[caller] = callvalue + 1, then LOG1(topic 0xaa) of 32 bytes
const KEYED: &[u8] = &[
    0x34, 0x60, 0x01, 0x01, 0x33, 0x55, 0x60, 0x2a, 0x5f, 0x52, 0x60, 0xaa, 0x60, 0x20, 0x5f, 0xa1,
    0x00,
];
/// slot0 = 1, then REVERT
const REVERTER: &[u8] = &[0x60, 0x01, 0x5f, 0x55, 0x5f, 0x5f, 0xfd];
/// CALL(gas, COUNTER, 0, 0, 0, 0, 0); slot1 = success
const NESTED: &[u8] = &[
    0x5f, 0x5f, 0x5f, 0x5f, 0x5f, 0x60, 0xc0, 0x5a, 0xf1, 0x60, 0x01, 0x55, 0x00,
];
/// slot0 = balance(COINBASE)
const COINBASE_READER: &[u8] = &[0x41, 0x31, 0x5f, 0x55, 0x00];
/// SELFDESTRUCT(caller): sends its balance to the caller (it stays, EIP-6780)
const DESTRUCTOR: &[u8] = &[0x33, 0xff];

fn contract(n: u8) -> Address {
    Address::with_last_byte(0xc0 + n)
}

fn beneficiary(keys: &[PrivateKeySigner], sender_is_beneficiary: bool) -> Address {
    if sender_is_beneficiary {
        keys[0].address()
    } else {
        Address::repeat_byte(0xfe)
    }
}

fn keys() -> Vec<PrivateKeySigner> {
    (1..=8u8)
        .map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(i)).unwrap())
        .collect()
}

fn genesis(keys: &[PrivateKeySigner]) -> InMemoryState {
    let mut diff = StateDiff::default();
    for key in keys {
        diff.accounts.insert(
            key.address(),
            AccountDiff {
                balance: Some(U256::from(100 * ETH)),
                nonce: Some(0),
                ..AccountDiff::default()
            },
        );
    }
    for (n, code) in [
        COUNTER,
        KEYED,
        REVERTER,
        NESTED,
        COINBASE_READER,
        DESTRUCTOR,
    ]
    .iter()
    .enumerate()
    {
        diff.accounts.insert(
            contract(n as u8),
            AccountDiff {
                balance: Some(U256::from(ETH)),
                nonce: Some(1),
                code: Some(Bytes::copy_from_slice(code)),
                storage: [(U256::from(7), U256::from(7))].into_iter().collect(),
                ..AccountDiff::default()
            },
        );
    }
    let mut state = InMemoryState::default();
    state.apply(&diff);
    state
}

/// One generated transaction: what it does, who sends it, and how its nonce and fee are chosen.
#[derive(Debug, Clone)]
struct Spec {
    kind: u8,
    sender: usize,
    target: u8,
    value: u8,
    tip: bool,
    nonce: u8,
}

fn spec() -> impl Strategy<Value = Spec> {
    (0u8..14, 0usize..8, 0u8..12, 0u8..4, any::<bool>(), 0u8..24).prop_map(
        |(kind, sender, target, value, tip, nonce)| Spec {
            kind,
            sender,
            target,
            value,
            tip,
            nonce,
        },
    )
}

/// Signs the batch; `senders` limits how many distinct senders take part (1: every transaction
/// from the same account, in nonce order).
fn batch(
    keys: &[PrivateKeySigner],
    specs: &[Spec],
    senders: usize,
    beneficiary: Address,
) -> Vec<Transaction> {
    let mut nonces = vec![0u64; keys.len()];
    specs
        .iter()
        .map(|spec| {
            let sender = spec.sender % senders;
            let key = &keys[sender];
            let nonce = match spec.nonce {
                // A gap: refused ("nonce too high").
                0 => nonces[sender] + 1,
                // Reused: refused ("nonce too low") once the first one is in.
                1 => nonces[sender].saturating_sub(1),
                _ => {
                    nonces[sender] += 1;
                    nonces[sender] - 1
                }
            };
            let recipient = match spec.target % 4 {
                0 => beneficiary,
                1 => keys[usize::from(spec.target) % keys.len()].address(),
                _ => Address::with_last_byte(0x10 + spec.target),
            };
            let value = match spec.value {
                0 => U256::ZERO,
                1 => U256::from(1u64),
                2 => U256::from(ETH),
                // More than anyone has: refused for funds.
                _ => U256::from(1_000 * ETH),
            };
            let (to, input, gas) = match spec.kind {
                0..=3 => (TxKind::Call(recipient), Bytes::new(), 21_000),
                4 => (TxKind::Call(contract(0)), Bytes::new(), 60_000),
                5 | 6 => (TxKind::Call(contract(1)), Bytes::new(), 80_000),
                7 => (TxKind::Call(contract(2)), Bytes::new(), 60_000),
                8 => (TxKind::Call(contract(3)), Bytes::new(), 120_000),
                9 => (TxKind::Call(contract(4)), Bytes::new(), 60_000),
                10 => (TxKind::Call(contract(5)), Bytes::new(), 60_000),
                // Out of gas inside the counter (included, failed).
                11 => (TxKind::Call(contract(0)), Bytes::new(), 21_100),
                // Creates a contract whose init code destroys it at once (EIP-6780: gone).
                12 => (TxKind::Create, Bytes::copy_from_slice(DESTRUCTOR), 100_000),
                // Deploys the counter.
                _ => (TxKind::Create, deploy(COUNTER), 200_000),
            };
            let tx = TxEip1559 {
                chain_id: CHAIN_ID,
                nonce,
                gas_limit: gas,
                max_fee_per_gas: 2 * u128::from(BASE_FEE),
                max_priority_fee_per_gas: if spec.tip { 1_000_000 } else { 0 },
                to,
                value: if matches!(spec.kind, 0..=3) || spec.value != 3 {
                    value
                } else {
                    U256::ZERO
                },
                input,
                access_list: Default::default(),
            };
            let signature = key.sign_hash_sync(&tx.signature_hash()).unwrap();
            let envelope: TxEnvelope = tx.into_signed(signature).into();
            Transaction::new_unchecked(envelope, key.address())
        })
        .collect()
}

/// Init code returning `runtime`.
fn deploy(runtime: &[u8]) -> Bytes {
    let len = u8::try_from(runtime.len()).unwrap();
    // PUSH1 len, PUSH1 offset, PUSH0, CODECOPY, PUSH1 len, PUSH0, RETURN, runtime
    let mut code = vec![
        0x60, len, 0x60, 12, 0x5f, 0x39, 0x60, len, 0x5f, 0xf3, 0x00, 0x00,
    ];
    code.extend_from_slice(runtime);
    Bytes::from(code)
}

fn env(beneficiary: Address, gas_limit: u64) -> BlockEnvSpec {
    BlockEnvSpec {
        chain_id: CHAIN_ID,
        number: 7,
        timestamp: 1_700_000_000,
        base_fee: BASE_FEE,
        gas_limit,
        beneficiary,
    }
}

fn assert_same(sequential: &ExecutionOutcome, parallel: &ExecutionOutcome) {
    let hashes = |o: &ExecutionOutcome| o.executed.iter().map(|t| *t.tx_hash()).collect::<Vec<_>>();
    assert_eq!(
        hashes(sequential),
        hashes(parallel),
        "included transactions"
    );
    assert_eq!(sequential.receipts, parallel.receipts, "receipts");
    assert_eq!(sequential.rejected, parallel.rejected, "rejections");
    assert_eq!(sequential.diff, parallel.diff, "state diff");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn parallel_execution_equals_sequential(
        specs in prop::collection::vec(spec(), 1..48),
        senders in 1usize..=8,
        sender_is_beneficiary in any::<bool>(),
        tight_block in any::<bool>(),
        start_gas in 0u64..2,
    ) {
        let keys = keys();
        let state = genesis(&keys);
        let beneficiary = beneficiary(&keys, sender_is_beneficiary);
        let txs = batch(&keys, &specs, senders, beneficiary);
        // A tight block cuts the batch with "gas limit reached" part-way.
        let env = env(beneficiary, if tight_block { 400_000 } else { 30_000_000 });
        let start = start_gas * 100_000;
        let sequential = execute(&state, &env, txs.clone(), start).unwrap();
        for threads in [2, 4] {
            let parallel = execute_parallel(&state, &env, txs.clone(), start, threads).unwrap();
            assert_same(&sequential, &parallel);
            // Every transaction speculated and validated (none executed by the committer
            // first), so validation is what decides each one.
            let schedule = Schedule { threads, committer_executes: false };
            let speculated = execute_scheduled(&state, &env, txs.clone(), start, schedule).unwrap();
            assert_same(&sequential, &speculated);
            prop_assert_eq!(speculated.speculation.direct, 0);
        }
    }
}

/// Independent transfers are committed from speculation, not re-executed (so the property test
/// above exercises the speculative path, not only the fallback).
#[test]
fn independent_transfers_commit_their_speculations() {
    let keys = keys();
    let state = genesis(&keys);
    let beneficiary = Address::repeat_byte(0xfe);
    // Eight senders paying eight distinct recipients.
    let mut txs = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let inner = TxEip1559 {
            chain_id: CHAIN_ID,
            nonce: 0,
            gas_limit: 21_000,
            max_fee_per_gas: 2 * u128::from(BASE_FEE),
            max_priority_fee_per_gas: 1_000_000,
            to: TxKind::Call(Address::with_last_byte(0x40 + i as u8)),
            value: U256::from(1u64),
            input: Bytes::new(),
            access_list: Default::default(),
        };
        let signature = key.sign_hash_sync(&inner.signature_hash()).unwrap();
        txs.push(Transaction::new_unchecked(
            inner.into_signed(signature).into(),
            key.address(),
        ));
    }
    let env = env(beneficiary, 30_000_000);
    let sequential = execute(&state, &env, txs.clone(), 0).unwrap();
    let schedule = Schedule {
        threads: 2,
        committer_executes: false,
    };
    let parallel = execute_scheduled(&state, &env, txs, 0, schedule).unwrap();
    assert_same(&sequential, &parallel);
    let stats = parallel.speculation;
    assert_eq!(stats.committed, 8, "every speculation kept: {stats:?}");
}

/// One sender, one hot slot: every speculation after the first conflicts and is re-executed,
/// and the outcome is still the sequential one.
#[test]
fn fully_contended_batches_fall_back_to_order() {
    let keys = keys();
    let state = genesis(&keys);
    let beneficiary = Address::repeat_byte(0xfe);
    let specs: Vec<Spec> = (0..64)
        .map(|_| Spec {
            kind: 4,
            sender: 0,
            target: 0,
            value: 0,
            tip: true,
            nonce: 2,
        })
        .collect();
    let txs = batch(&keys, &specs, 1, beneficiary);
    let env = env(beneficiary, 30_000_000);
    let sequential = execute(&state, &env, txs.clone(), 0).unwrap();
    let schedule = Schedule {
        threads: 2,
        committer_executes: false,
    };
    let parallel = execute_scheduled(&state, &env, txs.clone(), 0, schedule).unwrap();
    assert_same(&sequential, &parallel);
    assert!(
        parallel.speculation.reexecuted >= 62,
        "every speculation after the first conflicts: {:?}",
        parallel.speculation
    );
    assert_same(
        &sequential,
        &execute_parallel(&state, &env, txs, 0, 2).unwrap(),
    );
    assert_eq!(parallel.executed.len(), 64);
    assert_eq!(
        parallel.diff.accounts[&contract(0)].storage[&U256::ZERO],
        U256::from(64u64)
    );
}

/// A batch large enough that the parallel executor merges its writes on every thread (each
/// thread the accounts of its share of the address space, in commit order): the same diff as
/// the sequential executor's merge, with conflicts, destroyed and re-created accounts, and
/// writes spread over the whole address space.
#[test]
fn a_large_batchs_writes_merged_on_every_thread_equal_the_sequential_merge() {
    let keys = keys();
    let state = genesis(&keys);
    // A small deterministic generator: the same batch on every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let specs: Vec<Spec> = (0..1_200)
        .map(|_| Spec {
            kind: next(14) as u8,
            sender: next(8) as usize,
            target: next(12) as u8,
            value: next(3) as u8,
            tip: next(2) == 0,
            // Mostly the next nonce; now and then a gap or a reused one.
            nonce: (next(24) as u8).max(1),
        })
        .collect();
    for sender_is_beneficiary in [false, true] {
        let beneficiary = beneficiary(&keys, sender_is_beneficiary);
        let txs = batch(&keys, &specs, 8, beneficiary);
        let env = env(beneficiary, 1_000_000_000);
        let sequential = execute(&state, &env, txs.clone(), 0).unwrap();
        // Past the executor's threshold for merging on every thread (512 writes).
        assert!(
            sequential.executed.len() >= 600,
            "{}",
            sequential.executed.len()
        );
        let first_bytes: std::collections::BTreeSet<u8> =
            sequential.diff.accounts.keys().map(|a| a[0]).collect();
        assert!(
            first_bytes.first() < Some(&0x40) && first_bytes.last() >= Some(&0xc0),
            "writes over the whole address space: {first_bytes:?}"
        );
        for threads in [2, 3, 4] {
            let parallel = execute_parallel(&state, &env, txs.clone(), 0, threads).unwrap();
            assert_same(&sequential, &parallel);
            let schedule = Schedule {
                threads,
                committer_executes: false,
            };
            let speculated = execute_scheduled(&state, &env, txs.clone(), 0, schedule).unwrap();
            assert_same(&sequential, &speculated);
        }
    }
}
