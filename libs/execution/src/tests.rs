#![allow(clippy::unwrap_used)]

use alloy_consensus::{SignableTransaction, TxEip1559, TxLegacy};
use alloy_primitives::{Address, Bytes, TxKind, U256, address, hex};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use verity_primitives::{Account, InMemoryState, StateView, Transaction, TxEnvelope};

use super::*;

const CHAIN_ID: u64 = 31337;
const ETH: u128 = 1_000_000_000_000_000_000;

fn env() -> BlockEnvSpec {
    BlockEnvSpec {
        chain_id: CHAIN_ID,
        number: 1,
        timestamp: 1_700_000_000,
        base_fee: 1_000_000_000,
        gas_limit: 30_000_000,
        beneficiary: address!("0x00000000000000000000000000000000000fee00"),
    }
}

fn funded(signer: &PrivateKeySigner) -> InMemoryState {
    let mut state = InMemoryState::default();
    state.insert_account(
        signer.address(),
        Account {
            balance: U256::from(10 * ETH),
            ..Account::default()
        },
    );
    state
}

fn sign_1559(
    signer: &PrivateKeySigner,
    nonce: u64,
    to: TxKind,
    value: U256,
    input: Bytes,
    gas: u64,
) -> Transaction {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000,
        to,
        value,
        input,
        access_list: Default::default(),
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    Transaction::new_unchecked(envelope, signer.address())
}

fn transfer(signer: &PrivateKeySigner, nonce: u64, to: Address, value: u128) -> Transaction {
    sign_1559(
        signer,
        nonce,
        TxKind::Call(to),
        U256::from(value),
        Bytes::new(),
        21_000,
    )
}

/// Init code deploying a contract that stores calldata[0..32] at slot 0 when called with
/// data, and returns slot 0 when called without.
/// Runtime: CALLDATASIZE ISZERO PUSH1 0x0c JUMPI; PUSH1 0 CALLDATALOAD PUSH1 0 SSTORE STOP;
/// JUMPDEST PUSH1 0 SLOAD PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
const RUNTIME: [u8; 24] = hex!("3615600c57600035600055005b60005460005260206000f3");

fn init_code() -> Bytes {
    // PUSH1 len DUP1 PUSH1 offset PUSH1 0 CODECOPY PUSH1 0 RETURN ++ runtime
    let mut code = vec![
        0x60,
        RUNTIME.len() as u8,
        0x80,
        0x60,
        12,
        0x60,
        0,
        0x39,
        0x60,
        0,
        0xf3,
    ];
    code.push(0x00);
    code.extend_from_slice(&RUNTIME);
    Bytes::from(code)
}

#[test]
fn a_transfer_moves_value_and_charges_gas() {
    let alice = PrivateKeySigner::random();
    let bob = Address::repeat_byte(0xb0);
    let mut state = funded(&alice);
    let outcome = execute(&state, &env(), vec![transfer(&alice, 0, bob, ETH)], 0).unwrap();
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(outcome.receipts.len(), 1);
    let receipt = &outcome.receipts[0];
    assert!(receipt.success);
    assert_eq!(receipt.gas_used, 21_000);
    assert_eq!(receipt.cumulative_gas_used, 21_000);
    assert_eq!(receipt.effective_gas_price, 1_001_000_000);
    state.apply(&outcome.diff);
    assert_eq!(
        state.account(bob).unwrap().unwrap().balance,
        U256::from(ETH)
    );
    let alice_after = state.account(alice.address()).unwrap().unwrap();
    assert_eq!(alice_after.nonce, 1);
    assert_eq!(
        alice_after.balance,
        U256::from(10 * ETH - ETH - 21_000 * 1_001_000_000)
    );
    // The beneficiary gets the priority fee only; the base fee is burnt.
    assert_eq!(
        state.account(env().beneficiary).unwrap().unwrap().balance,
        U256::from(21_000u64 * 1_000_000)
    );
}

#[test]
fn refused_transactions_get_geth_messages_and_leave_no_trace() {
    let alice = PrivateKeySigner::random();
    let poor = PrivateKeySigner::random();
    let bob = Address::repeat_byte(0xb0);
    let state = funded(&alice);
    let txs = vec![
        transfer(&alice, 0, bob, 1),
        transfer(&alice, 0, bob, 2),
        transfer(&alice, 5, bob, 3),
        transfer(&poor, 0, bob, 1),
        transfer(&alice, 1, bob, 100 * ETH),
    ];
    let outcome = execute(&state, &env(), txs, 0).unwrap();
    assert_eq!(outcome.executed.len(), 1);
    let messages: Vec<&str> = outcome
        .rejected
        .iter()
        .map(|(_, r)| r.message.as_str())
        .collect();
    assert!(messages[0].starts_with("nonce too low"), "{messages:?}");
    assert!(messages[1].starts_with("nonce too high"), "{messages:?}");
    assert!(
        messages[2].starts_with("insufficient funds for gas * price + value"),
        "{messages:?}"
    );
    assert!(
        messages[3].starts_with("insufficient funds for gas * price + value"),
        "{messages:?}"
    );
    assert!(!outcome.diff.accounts.contains_key(&poor.address()));
}

#[test]
fn a_batch_that_overflows_the_block_is_cut_with_gas_limit_reached() {
    let alice = PrivateKeySigner::random();
    let bob = Address::repeat_byte(0xb0);
    let state = funded(&alice);
    let mut small = env();
    small.gas_limit = 50_000;
    let txs = vec![
        transfer(&alice, 0, bob, 1),
        transfer(&alice, 1, bob, 1),
        transfer(&alice, 2, bob, 1),
    ];
    let outcome = execute(&state, &small, txs, 0).unwrap();
    assert_eq!(outcome.executed.len(), 2);
    assert_eq!(outcome.rejected[0].1.message, "gas limit reached");
}

#[test]
fn contract_code_and_storage_land_in_the_diff_and_calls_read_them() {
    let alice = PrivateKeySigner::random();
    let mut state = funded(&alice);
    let deploy = sign_1559(&alice, 0, TxKind::Create, U256::ZERO, init_code(), 200_000);
    let outcome = execute(&state, &env(), vec![deploy], 0).unwrap();
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    let receipt = &outcome.receipts[0];
    assert!(receipt.success);
    let contract = receipt.contract_address.unwrap();
    assert_eq!(contract, alice.address().create(0));
    assert_eq!(
        outcome.diff.accounts[&contract].code.as_ref(),
        Some(&Bytes::from_static(&RUNTIME))
    );
    state.apply(&outcome.diff);

    let value = U256::from(0xdead_beefu64);
    let store = sign_1559(
        &alice,
        1,
        TxKind::Call(contract),
        U256::ZERO,
        Bytes::from(value.to_be_bytes::<32>().to_vec()),
        100_000,
    );
    let outcome = execute(&state, &env(), vec![store], 0).unwrap();
    assert!(outcome.receipts[0].success);
    assert_eq!(outcome.diff.accounts[&contract].storage[&U256::ZERO], value);
    state.apply(&outcome.diff);
    assert_eq!(state.storage(contract, U256::ZERO).unwrap(), value);

    let read = call(
        &state,
        &env(),
        &CallRequest {
            to: Some(contract),
            ..CallRequest::default()
        },
    )
    .unwrap();
    assert!(read.success, "{read:?}");
    assert_eq!(read.output.as_ref(), &value.to_be_bytes::<32>()[..]);
}

#[test]
fn estimate_gas_of_a_transfer_is_21000_and_failures_are_reported() {
    let alice = PrivateKeySigner::random();
    let state = funded(&alice);
    let request = CallRequest {
        from: Some(alice.address()),
        to: Some(Address::repeat_byte(0xb0)),
        value: U256::from(1),
        ..CallRequest::default()
    };
    assert_eq!(estimate_gas(&state, &env(), &request).unwrap(), Ok(21_000));

    let broke = CallRequest {
        from: Some(Address::repeat_byte(0x77)),
        value: U256::from(ETH),
        ..request.clone()
    };
    let failed = estimate_gas(&state, &env(), &broke).unwrap().unwrap_err();
    assert!(!failed.success);
    assert!(failed.error.is_some());

    // Init code that reverts with one byte of data.
    let reverting = call(
        &state,
        &env(),
        &CallRequest {
            data: Bytes::from_static(&[0x60, 0x01, 0x60, 0x00, 0xfd]),
            ..CallRequest::default()
        },
    )
    .unwrap();
    assert!(reverting.reverted);
    assert_eq!(reverting.error.as_deref(), Some("execution reverted"));
}

#[test]
fn intrinsic_gas_counts_calldata_and_creation() {
    let alice = PrivateKeySigner::random();
    let plain = transfer(&alice, 0, Address::ZERO, 1);
    assert_eq!(intrinsic_gas(plain.inner()), 21_000);
    let with_data = sign_1559(
        &alice,
        0,
        TxKind::Call(Address::ZERO),
        U256::ZERO,
        Bytes::from_static(&[0, 1]),
        50_000,
    );
    // Standard cost 21000 + 4 + 16 = 21020; the EIP-7623 floor 21000 + 10 * (1 + 4) = 21050
    // is higher, so it applies.
    assert_eq!(intrinsic_gas(with_data.inner()), 21_050);
    let legacy = TxLegacy {
        chain_id: Some(CHAIN_ID),
        nonce: 0,
        gas_price: 1,
        gas_limit: 100_000,
        to: TxKind::Create,
        value: U256::ZERO,
        input: Bytes::new(),
    };
    let signature = alice.sign_hash_sync(&legacy.signature_hash()).unwrap();
    let envelope: TxEnvelope = legacy.into_signed(signature).into();
    assert_eq!(intrinsic_gas(&envelope), 53_000);
}

/// A caller that forwards all its gas to a callee storing a new slot (22,100 gas, of which only
/// 63/64 of what is left reaches the callee), and reverts if that call failed: the gas such a
/// transaction needs is well above what it uses, so only a real search finds it.
#[test]
fn estimate_gas_is_the_least_limit_the_transaction_then_succeeds_with() {
    let alice = PrivateKeySigner::random();
    let mut state = funded(&alice);
    let callee = Address::repeat_byte(0xc1);
    let caller = Address::repeat_byte(0xc2);
    // PUSH1 1 PUSH1 0 SSTORE STOP
    let callee_code = Bytes::from_static(&hex!("600160005500"));
    // CALL(GAS, callee, 0, 0, 0, 0, 0); if it failed, REVERT(0, 0).
    let mut caller_code = hex!("60006000600060006000").to_vec();
    caller_code.push(0x73);
    caller_code.extend_from_slice(callee.as_slice());
    // GAS CALL ISZERO PUSH1 38 JUMPI STOP; 38: JUMPDEST PUSH1 0 DUP1 REVERT
    caller_code.extend_from_slice(&hex!("5af115602657005b600080fd"));
    for (address, code) in [(callee, callee_code), (caller, Bytes::from(caller_code))] {
        let diff = verity_primitives::StateDiff {
            accounts: [(
                address,
                verity_primitives::AccountDiff {
                    code: Some(code),
                    nonce: Some(1),
                    ..Default::default()
                },
            )]
            .into_iter()
            .collect(),
        };
        state.apply(&diff);
    }
    let request = CallRequest {
        from: Some(alice.address()),
        to: Some(caller),
        ..CallRequest::default()
    };
    let estimate = estimate_gas(&state, &env(), &request).unwrap().unwrap();
    let used = call(&state, &env(), &request).unwrap().gas_used;
    assert!(
        estimate > used,
        "the 63/64 rule needs headroom: {estimate} vs {used}"
    );

    let run = |gas: u64| {
        let tx = sign_1559(
            &alice,
            0,
            TxKind::Call(caller),
            U256::ZERO,
            Bytes::new(),
            gas,
        );
        let outcome = execute(&state, &env(), vec![tx], 0).unwrap();
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        outcome.receipts[0].clone()
    };
    let enough = run(estimate);
    assert!(enough.success, "the estimate is enough");
    assert_eq!(
        enough.gas_used, used,
        "and the transaction uses what the call used"
    );
    assert!(!run(estimate - 1).success, "one gas less is not");
}

/// An `eth_call` from anyone cannot hold a thread past its deadline: an endless loop given more
/// gas than it could burn in minutes is stopped at its timeout with geth's error, and so is a
/// nested call running it (the caller's frame stops too).
#[test]
fn a_call_is_stopped_at_its_deadline() {
    // JUMPDEST PUSH1 0 JUMP: forever.
    let endless = Bytes::from_static(&[0x5b, 0x60, 0x00, 0x56]);
    let mut block = env();
    block.gas_limit = 1 << 40;
    let request = CallRequest {
        data: endless,
        gas: Some(1 << 40),
        limits: CallLimits {
            timeout: Some(std::time::Duration::from_millis(50)),
            ..CallLimits::default()
        },
        ..CallRequest::default()
    };
    let state = InMemoryState::default();
    let started = std::time::Instant::now();
    let outcome = call(&state, &block, &request);
    let elapsed = started.elapsed();
    assert!(
        matches!(outcome, Err(ExecutionError::TimedOut(t)) if t.as_millis() == 50),
        "{outcome:?}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "ran {elapsed:?}"
    );
    assert_eq!(
        ExecutionError::TimedOut(std::time::Duration::from_millis(50)).to_string(),
        "execution aborted (timeout = 50ms)"
    );
    // An estimate shares one deadline over its runs.
    let started = std::time::Instant::now();
    assert!(matches!(
        estimate_gas(&state, &block, &request),
        Err(ExecutionError::TimedOut(_))
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // Without a deadline a short loop still ends by gas.
    let bounded = CallRequest {
        gas: Some(100_000),
        limits: CallLimits::default(),
        ..request
    };
    let outcome = call(&state, &block, &bounded).unwrap();
    assert_eq!(outcome.error.as_deref(), Some("out of gas"));
}

/// A call that could pay for a gigabyte of EVM memory (its gas and the block's limit raised by
/// overrides) halts at the memory limit instead of allocating it.
#[test]
fn a_call_past_the_memory_limit_halts_without_allocating() {
    // PUSH4 0x40000000 MLOAD: touch the word at 1 GiB.
    let touch = Bytes::from_static(&[0x63, 0x40, 0x00, 0x00, 0x00, 0x51, 0x00]);
    let mut block = env();
    block.gas_limit = 1 << 44;
    let request = CallRequest {
        data: touch,
        gas: Some(1 << 44),
        limits: CallLimits {
            memory_bytes: 32 << 20,
            ..CallLimits::default()
        },
        ..CallRequest::default()
    };
    let outcome = call(&InMemoryState::default(), &block, &request).unwrap();
    assert!(!outcome.success, "{outcome:?}");
    assert_eq!(outcome.error.as_deref(), Some("out of gas"));
}

/// `eth_blobBaseFee` answers `verity_primitives::BLOB_BASE_FEE`: what BLOBBASEFEE gives here.
#[test]
fn blobbasefee_is_the_chains_blob_base_fee() {
    // BLOBBASEFEE PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN, run as init code.
    let code = Bytes::from_static(&[0x4a, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3]);
    let request = CallRequest {
        data: code,
        gas: Some(100_000),
        ..CallRequest::default()
    };
    let outcome = call(&InMemoryState::default(), &env(), &request).unwrap();
    assert_eq!(outcome.error, None);
    assert_eq!(
        U256::from_be_slice(&outcome.output),
        U256::from(verity_primitives::BLOB_BASE_FEE)
    );
}

/// `eth_createAccessList`: A calls B, which reads its slot 0. The list names B and the slot
/// (A, the recipient, is left out as geth does), and the message costs less with it.
#[test]
fn an_access_list_names_what_a_call_touches_and_makes_it_cheaper() {
    let (a, b) = (Address::repeat_byte(0xaa), Address::repeat_byte(0xbb));
    // PUSH1 0 x4, PUSH20 b, GAS, STATICCALL, POP, STOP
    let mut caller = vec![0x60, 0, 0x60, 0, 0x60, 0, 0x60, 0, 0x73];
    caller.extend_from_slice(b.as_slice());
    caller.extend_from_slice(&[0x5a, 0xfa, 0x50, 0x00]);
    // PUSH1 0 SLOAD POP STOP
    let reader = vec![0x60, 0, 0x54, 0x50, 0x00];
    let mut state = InMemoryState::default();
    for (address, code) in [(a, caller), (b, reader)] {
        let code = Bytes::from(code);
        let hash = alloy_primitives::keccak256(&code);
        state.code.insert(hash, code);
        state.insert_account(
            address,
            Account {
                code_hash: hash,
                ..Account::default()
            },
        );
    }
    let request = CallRequest {
        to: Some(a),
        gas: Some(100_000),
        ..CallRequest::default()
    };
    let found = create_access_list(&state, &env(), &request).unwrap();
    assert_eq!(
        found.access_list,
        alloy_eips::eip2930::AccessList(vec![alloy_eips::eip2930::AccessListItem {
            address: b,
            storage_keys: vec![B256::ZERO],
        }])
    );
    assert!(found.outcome.success, "{found:?}");
    let without = call(&state, &env(), &request).unwrap();
    let with = call(
        &state,
        &env(),
        &CallRequest {
            access_list: found.access_list.clone(),
            ..request
        },
    )
    .unwrap();
    assert_eq!(with.gas_used, found.outcome.gas_used);
    // Cold account 2,600 + cold slot 2,100 against 2,400 + 1,900 listed and two warm reads.
    assert_eq!(
        without.gas_used - with.gas_used,
        200,
        "{without:?} {with:?}"
    );
}

/// A state with `signer` funded and the storing contract of [`RUNTIME`] at `at`.
fn with_store(signer: &PrivateKeySigner, at: Address) -> InMemoryState {
    let mut state = funded(signer);
    let code = Bytes::from_static(&RUNTIME);
    let hash = alloy_primitives::keccak256(&code);
    state.code.insert(hash, code);
    state.insert_account(
        at,
        Account {
            code_hash: hash,
            ..Account::default()
        },
    );
    state
}

fn store(signer: &PrivateKeySigner, nonce: u64, at: Address, value: u64) -> Transaction {
    sign_1559(
        signer,
        nonce,
        TxKind::Call(at),
        U256::ZERO,
        Bytes::from(U256::from(value).to_be_bytes_vec()),
        100_000,
    )
}

fn options(json: serde_json::Value) -> trace::GethDebugTracingOptions {
    serde_json::from_value(json).unwrap()
}

const TRACE_LIMITS: trace::TraceLimits = trace::TraceLimits {
    timeout: std::time::Duration::from_secs(10),
    max_steps: 100_000,
};

/// The third transaction of a block, traced: the two before it are replayed first, so the
/// prestate tracer sees the slot the second one wrote, and the call tracer's gas is the gas the
/// block executor charged it.
#[test]
fn a_traced_transaction_runs_over_what_the_block_before_it_wrote() {
    let signer = PrivateKeySigner::random();
    let at = Address::repeat_byte(0x5e);
    let state = with_store(&signer, at);
    let txs = vec![
        store(&signer, 0, at, 7),
        store(&signer, 1, at, 9),
        store(&signer, 2, at, 11),
    ];
    let executed = execute(&state, &env(), txs.clone(), 0).unwrap();
    assert_eq!(executed.receipts.len(), 3);

    let diff = trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        2..3,
        &options(serde_json::json!({
            "tracer": "prestateTracer", "tracerConfig": {"diffMode": true}
        })),
        TRACE_LIMITS,
        None,
    )
    .unwrap();
    let diff = serde_json::to_value(&diff[0]).unwrap();
    let slot = format!("0x{}", hex::encode(B256::ZERO));
    assert_eq!(
        diff["pre"][&format!("0x{}", hex::encode(at))]["storage"][&slot],
        serde_json::json!(format!("0x{}", hex::encode(B256::from(U256::from(9))))),
        "{diff}"
    );
    assert_eq!(
        diff["post"][&format!("0x{}", hex::encode(at))]["storage"][&slot],
        serde_json::json!(format!("0x{}", hex::encode(B256::from(U256::from(11))))),
        "{diff}"
    );

    let calls = trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        0..3,
        &options(serde_json::json!({"tracer": "callTracer"})),
        TRACE_LIMITS,
        None,
    )
    .unwrap();
    for (trace, receipt) in calls.iter().zip(&executed.receipts) {
        let trace = serde_json::to_value(trace).unwrap();
        assert_eq!(
            trace["gasUsed"],
            serde_json::json!(format!("{:#x}", receipt.gas_used)),
            "{trace}"
        );
    }
}

/// The struct logger is refused past its step bound (not cut short); a tracer whose record does
/// not grow with every opcode is not counted against it.
#[test]
fn the_struct_logger_is_refused_past_its_step_bound() {
    let signer = PrivateKeySigner::random();
    let at = Address::repeat_byte(0x5e);
    let state = with_store(&signer, at);
    let txs = vec![store(&signer, 0, at, 7)];
    let tight = trace::TraceLimits {
        max_steps: 3,
        ..TRACE_LIMITS
    };
    let logged = trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        0..1,
        &options(serde_json::json!({})),
        tight,
        None,
    );
    assert!(
        matches!(logged, Err(trace::TraceError::TooManySteps(3))),
        "{logged:?}"
    );
    let steps = trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        0..1,
        &options(serde_json::json!({})),
        TRACE_LIMITS,
        None,
    )
    .unwrap();
    let steps = serde_json::to_value(&steps[0]).unwrap();
    assert_eq!(steps["structLogs"].as_array().unwrap().len(), 9, "{steps}");
    trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        0..1,
        &options(serde_json::json!({"tracer": "callTracer"})),
        tight,
        None,
    )
    .unwrap();
}

/// `debug_traceCall` with the call tracer: a message that reverts shows as a reverted frame
/// with geth's error, and a message refused before running is the caller's error.
#[test]
fn a_traced_call_reports_its_revert_and_a_refused_one_is_an_error() {
    // PUSH1 0 PUSH1 0 REVERT
    let at = Address::repeat_byte(0x77);
    let code = Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xfd]);
    let hash = alloy_primitives::keccak256(&code);
    let mut state = InMemoryState::default();
    state.code.insert(hash, code);
    state.insert_account(
        at,
        Account {
            code_hash: hash,
            ..Account::default()
        },
    );
    let request = CallRequest {
        to: Some(at),
        gas: Some(100_000),
        ..CallRequest::default()
    };
    let tracer = options(serde_json::json!({"tracer": "callTracer"}));
    let trace = trace::trace_call(&state, &env(), &request, &tracer, 100).unwrap();
    let trace = serde_json::to_value(&trace).unwrap();
    assert_eq!(trace["error"], "execution reverted", "{trace}");
    assert_eq!(trace["type"], "CALL", "{trace}");
    let poor = CallRequest {
        value: U256::from(1),
        from: Some(Address::repeat_byte(1)),
        ..request
    };
    let refused = trace::trace_call(&state, &env(), &poor, &tracer, 100);
    assert!(
        matches!(&refused, Err(trace::TraceError::Rejected(m)) if m.starts_with("insufficient funds")),
        "{refused:?}"
    );
}

fn read_slot(at: Address) -> CallRequest {
    CallRequest {
        to: Some(at),
        gas: Some(100_000),
        ..CallRequest::default()
    }
}

fn write_slot(at: Address, value: u64) -> CallRequest {
    CallRequest {
        to: Some(at),
        data: Bytes::from(U256::from(value).to_be_bytes_vec()),
        gas: Some(100_000),
        ..CallRequest::default()
    }
}

const SIM_LIMITS: simulate::SimulationLimits = simulate::SimulationLimits {
    timeout: std::time::Duration::from_secs(10),
    gas_budget: 50_000_000,
};

/// Each simulated call runs over what the calls before it wrote, across blocks; a block's
/// overrides apply over that state; the block's first transactions are replayed first.
#[test]
fn simulated_calls_run_over_what_the_ones_before_them_wrote() {
    let signer = PrivateKeySigner::random();
    let at = Address::repeat_byte(0x5e);
    let state = with_store(&signer, at);
    let block = |calls, overrides| simulate::SimulatedBlock {
        env: env(),
        base_fee_from_parent: false,
        overrides,
        calls,
    };
    let results = simulate::simulate(
        &state,
        Some(simulate::Replay {
            env: &env(),
            transactions: &[store(&signer, 0, at, 7)],
            receipts_gas: None,
        }),
        &[],
        &[
            block(
                vec![read_slot(at), write_slot(at, 8), read_slot(at)],
                vec![],
            ),
            block(
                vec![read_slot(at)],
                vec![simulate::AccountOverride {
                    address: at,
                    storage: Some(simulate::StorageOverride::Diff(vec![(
                        U256::ZERO,
                        U256::from(9),
                    )])),
                    ..Default::default()
                }],
            ),
        ],
        SIM_LIMITS,
        simulate::SimulationMode::default(),
    )
    .unwrap();
    let value = |call: &simulate::SimulatedCall| U256::from_be_slice(&call.outcome.output);
    assert_eq!(
        value(&results[0].calls[0]),
        U256::from(7),
        "the replayed write"
    );
    assert!(results[0].calls[1].outcome.success);
    assert_eq!(
        value(&results[0].calls[2]),
        U256::from(8),
        "the call before it"
    );
    assert_eq!(
        value(&results[1].calls[0]),
        U256::from(9),
        "the block's override"
    );
    // Nothing was written to the state itself.
    assert_eq!(state.storage(at, U256::ZERO).unwrap(), U256::ZERO);
}

/// The calls share one gas budget: once it is spent, the next call cannot run.
#[test]
fn simulated_calls_share_one_gas_budget() {
    let signer = PrivateKeySigner::random();
    let at = Address::repeat_byte(0x5e);
    let state = with_store(&signer, at);
    let results = simulate::simulate(
        &state,
        None,
        &[],
        &[simulate::SimulatedBlock {
            env: env(),
            base_fee_from_parent: false,
            overrides: vec![],
            calls: vec![write_slot(at, 1), write_slot(at, 2)],
        }],
        simulate::SimulationLimits {
            gas_budget: 50_000,
            ..SIM_LIMITS
        },
        simulate::SimulationMode::default(),
    )
    .unwrap();
    assert!(
        results[0].calls[0].outcome.success,
        "{:?}",
        results[0].calls[0]
    );
    let second = &results[0].calls[1].outcome;
    assert!(!second.success, "{second:?}");
}

/// geth's validation: a call priced below the base fee, with a used nonce, a future nonce or
/// without funds is refused with geth's code; one priced right takes the sender's nonce and
/// pays; a block's base fee can follow its parent's; a call asking for more gas than its block
/// has left is refused. Without validation the underpriced call runs.
#[test]
fn validation_checks_nonces_fees_and_funds_as_geth_does() {
    let signer = PrivateKeySigner::random();
    let at = Address::repeat_byte(0x5e);
    let state = with_store(&signer, at);
    let from = |request: CallRequest| CallRequest {
        from: Some(signer.address()),
        ..request
    };
    let priced = |nonce: Option<u64>| CallRequest {
        gas_price: Some(2_000_000_000),
        nonce,
        ..from(write_slot(at, 1))
    };
    let calls = vec![
        from(read_slot(at)),
        priced(None),
        priced(Some(0)),
        priced(Some(5)),
        CallRequest {
            from: Some(Address::repeat_byte(1)),
            ..priced(None)
        },
        CallRequest {
            gas: Some(31_000_000),
            ..priced(None)
        },
    ];
    let next = |parent: &simulate::ParentFees| parent.base_fee + parent.gas_used;
    let mode = simulate::SimulationMode {
        validation: true,
        block_gas: true,
        fees: Some((
            simulate::ParentFees {
                gas_limit: 30_000_000,
                gas_used: 0,
                base_fee: 1,
            },
            &next,
        )),
    };
    let blocks = [
        simulate::SimulatedBlock {
            env: env(),
            base_fee_from_parent: false,
            overrides: vec![],
            calls,
        },
        simulate::SimulatedBlock {
            env: env(),
            base_fee_from_parent: true,
            overrides: vec![],
            calls: vec![],
        },
    ];
    let results = simulate::simulate(&state, None, &[], &blocks, SIM_LIMITS, mode).unwrap();
    let codes: Vec<Option<i64>> = results[0]
        .calls
        .iter()
        .map(|c| c.outcome.refusal_code)
        .collect();
    assert_eq!(
        codes,
        vec![
            Some(-32602),
            None,
            Some(-38010),
            Some(-38011),
            Some(-38014),
            Some(-38015)
        ],
        "{:?}",
        results[0].calls
    );
    let error = |i: usize| {
        results[0].calls[i]
            .outcome
            .error
            .clone()
            .unwrap_or_default()
    };
    assert!(
        error(0).starts_with("max fee per gas less than block base fee: address"),
        "{}",
        error(0)
    );
    assert!(error(2).starts_with("nonce too low"), "{}", error(2));
    assert!(
        error(5).starts_with("block gas limit reached"),
        "{}",
        error(5)
    );
    let used = results[0].calls[1].outcome.gas_used;
    assert!(results[0].calls[1].outcome.success);
    assert_eq!(results[0].gas_used, used);
    assert_eq!(results[0].base_fee, env().base_fee);
    assert_eq!(
        results[1].base_fee,
        env().base_fee + used,
        "the parent's successor"
    );

    // Without validation the same underpriced call runs.
    let results = simulate::simulate(
        &state,
        None,
        &[],
        &blocks[..1],
        SIM_LIMITS,
        simulate::SimulationMode::default(),
    )
    .unwrap();
    assert_eq!(results[0].calls[0].outcome.refusal_code, None);
    assert!(results[0].calls[0].outcome.success);
}

/// A replay that does not use the gas the block's receipts say is refused as diverged: the
/// state it ran over is not the block's.
#[test]
fn a_replay_that_does_not_reproduce_the_receipts_is_refused() {
    let signer = PrivateKeySigner::random();
    let at = Address::repeat_byte(0x5e);
    let state = with_store(&signer, at);
    let txs = vec![store(&signer, 0, at, 7), store(&signer, 1, at, 9)];
    let executed = execute(&state, &env(), txs.clone(), 0).unwrap();
    let gas: Vec<u64> = executed.receipts.iter().map(|r| r.gas_used).collect();
    let tracer = options(serde_json::json!({"tracer": "callTracer"}));
    trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        1..2,
        &tracer,
        TRACE_LIMITS,
        Some(&gas),
    )
    .unwrap();
    // The first transaction's receipt claims other gas: its replay diverges.
    let wrong = [gas[0] + 1, gas[1]];
    let refused = trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        1..2,
        &tracer,
        TRACE_LIMITS,
        Some(&wrong),
    );
    assert!(
        matches!(refused, Err(trace::TraceError::Diverged { index: 0, .. })),
        "{refused:?}"
    );
    // And the traced one's own.
    let wrong = [gas[0], gas[1] - 1];
    let refused = trace::trace_transactions(
        &state,
        &env(),
        None,
        &txs,
        1..2,
        &tracer,
        TRACE_LIMITS,
        Some(&wrong),
    );
    assert!(
        matches!(refused, Err(trace::TraceError::Diverged { index: 1, .. })),
        "{refused:?}"
    );
}

/// A simulation that starts mid-block replays the block's earlier transactions held to their
/// receipts' gas: a replay that differs is an error, not a simulation over a wrong state.
#[test]
fn a_simulations_replay_is_held_to_the_receipts() {
    let signer = PrivateKeySigner::random();
    let at = Address::repeat_byte(0x5e);
    let state = with_store(&signer, at);
    let txs = [store(&signer, 0, at, 7)];
    let gas = execute(&state, &env(), txs.to_vec(), 0).unwrap().receipts[0].gas_used;
    let run = |claimed: u64| {
        simulate::simulate(
            &state,
            Some(simulate::Replay {
                env: &env(),
                transactions: &txs,
                receipts_gas: Some(&[claimed]),
            }),
            &[],
            &[simulate::SimulatedBlock {
                env: env(),
                base_fee_from_parent: false,
                overrides: vec![],
                calls: vec![read_slot(at)],
            }],
            SIM_LIMITS,
            simulate::SimulationMode::default(),
        )
    };
    assert!(run(gas).is_ok());
    let refused = run(gas + 1);
    assert!(
        matches!(&refused, Err(ExecutionError::Evm(m)) if m.contains("diverged")),
        "{refused:?}"
    );
}
