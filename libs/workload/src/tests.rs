use alloy_primitives::{Address, U256};
use verity_execution::{BlockEnvSpec, execute};
use verity_primitives::{InMemoryState, StateView};

use super::*;

const PARAMS: TxParams = TxParams {
    chain_id: 31337,
    max_fee_per_gas: 2_000_000_000,
    max_priority_fee_per_gas: 1_000_000,
};

fn env() -> BlockEnvSpec {
    BlockEnvSpec {
        chain_id: 31337,
        number: 1,
        timestamp: 1_700_000_000,
        base_fee: 1_000_000_000,
        gas_limit: 30_000_000,
        beneficiary: Address::repeat_byte(0xfe),
    }
}

fn run(
    kind: Kind,
    accounts: &Accounts,
    count: usize,
) -> (InMemoryState, verity_execution::ExecutionOutcome) {
    let mut state = InMemoryState::default();
    state.apply(&accounts.genesis(U256::from(10u128.pow(21)), U256::from(1_000u64)));
    let txs = accounts
        .sign(kind, 0..count, &PARAMS, |_| 0)
        .expect("sign")
        .iter()
        .map(Signed::transaction)
        .collect();
    let outcome = execute(&state, &env(), txs, 0).expect("execute");
    state.apply(&outcome.diff);
    (state, outcome)
}

#[test]
fn every_workload_runs_to_success_on_its_genesis() {
    let accounts = Accounts::new(4);
    for kind in Kind::ALL {
        let (_, outcome) = run(kind, &accounts, 20);
        assert!(
            outcome.rejected.is_empty(),
            "{kind}: {:?}",
            outcome.rejected
        );
        assert_eq!(outcome.receipts.len(), 20, "{kind}");
        assert!(outcome.receipts.iter().all(|r| r.success), "{kind}");
    }
}

#[test]
fn the_erc20_moves_balances_and_logs_transfers() {
    let accounts = Accounts::new(3);
    let (state, outcome) = run(Kind::Erc20, &accounts, 6);
    for sender in 0..3 {
        let paid = state
            .storage(TOKEN, token_balance_slot(Accounts::recipient(sender)))
            .expect("read");
        assert_eq!(
            paid,
            U256::from(2u64),
            "two transfers of 1 to recipient {sender}"
        );
        let left = state
            .storage(TOKEN, token_balance_slot(accounts.address(sender)))
            .expect("read");
        assert_eq!(left, U256::from(998u64));
    }
    for receipt in &outcome.receipts {
        assert_eq!(receipt.logs.len(), 1, "one Transfer event");
        assert_eq!(receipt.logs[0].address, TOKEN);
    }
}

#[test]
fn the_counter_counts_every_call() {
    let accounts = Accounts::new(5);
    let (state, _) = run(Kind::Counter, &accounts, 12);
    assert_eq!(
        state.storage(COUNTER, U256::ZERO).expect("read"),
        U256::from(12u64)
    );
}

#[test]
fn transactions_rotate_senders_with_consecutive_nonces() {
    let accounts = Accounts::new(3);
    let signed = accounts
        .sign(Kind::Mixed, 0..7, &PARAMS, |sender| 10 * sender as u64)
        .expect("sign");
    let nonces: Vec<_> = signed
        .iter()
        .map(|s| (s.sender, alloy_consensus::Transaction::nonce(&s.envelope)))
        .collect();
    assert_eq!(nonces[0], (accounts.address(0), 0));
    assert_eq!(nonces[1], (accounts.address(1), 10));
    assert_eq!(nonces[4], (accounts.address(1), 11));
    assert_eq!(nonces[6], (accounts.address(0), 2));
    assert_eq!(
        Accounts::new(3).address(2),
        accounts.address(2),
        "deterministic keys"
    );
    assert_eq!("erc20".parse::<Kind>().expect("known"), Kind::Erc20);
    assert!("nft".parse::<Kind>().is_err());
}

#[test]
fn the_deploy_code_installs_the_token_with_its_holders_balance() {
    let accounts = Accounts::new(2);
    let mut state = InMemoryState::default();
    state.apply(&accounts.genesis(U256::from(10u128.pow(21)), U256::ZERO));
    let deployer = accounts.key(0);
    let create = alloy_consensus::TxEip1559 {
        chain_id: PARAMS.chain_id,
        nonce: 0,
        gas_limit: 1_000_000,
        max_fee_per_gas: PARAMS.max_fee_per_gas,
        max_priority_fee_per_gas: 0,
        to: alloy_primitives::TxKind::Create,
        value: U256::ZERO,
        input: token_deploy_code(deployer.address(), U256::from(5_000u64)),
        access_list: Default::default(),
    };
    use alloy_consensus::SignableTransaction as _;
    use alloy_signer::SignerSync as _;
    let signature = deployer
        .sign_hash_sync(&create.signature_hash())
        .expect("sign");
    let tx = verity_primitives::Transaction::new_unchecked(
        create.into_signed(signature).into(),
        deployer.address(),
    );
    let outcome = execute(&state, &env(), vec![tx], 0).expect("execute");
    let token = outcome.receipts[0].contract_address.expect("created");
    state.apply(&outcome.diff);
    let code_hash = state.accounts[&token].code_hash;
    assert_eq!(state.code[&code_hash], token_code());
    assert_eq!(
        state
            .storage(token, token_balance_slot(deployer.address()))
            .expect("read"),
        U256::from(5_000u64)
    );
    // And it works: a workload ERC-20 transfer against it.
    let targets = Targets {
        token,
        counter: COUNTER,
    };
    let transfer = accounts
        .sign_for(Kind::Erc20, 0..1, &PARAMS, &targets, |_| 1)
        .expect("sign");
    let outcome = execute(&state, &env(), vec![transfer[0].transaction()], 0).expect("execute");
    assert!(outcome.receipts[0].success);
}
