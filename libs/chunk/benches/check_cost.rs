//! What a prover spends checking a chunk before proving it, per 1,000 transfers: recovering
//! every sender from its signature (a prover never takes a sender from its job) and re-executing
//! statelessly against the job's witness (`verity_chunk::check_job`), next to what the
//! sequencer spent executing the same transfers.
//!
//! `cargo bench -p verity-chunk --bench check_cost` (part of `make bench`). Single-threaded:
//! wall time is CPU time; best of several runs. Prints figures; asserts nothing about time.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use alloy_consensus::transaction::SignerRecoverable as _;
use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use common::{CHAIN_ID, GAS_LIMIT, empty_mini_block, measure, transfer};
use verity_chunk::{StateTree, Verdict, block_env, build_job, check_job, genesis_tree};
use verity_primitives::{Account, AccountDiff, InMemoryState, SigningKey, StateDiff};

const TRANSFERS: usize = 1_000;
const RUNS: usize = 5;

fn best(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| measure(&mut f).2)
        .fold(f64::MAX, f64::min)
}

fn main() {
    let signers: Vec<PrivateKeySigner> =
        (0..TRANSFERS).map(|_| PrivateKeySigner::random()).collect();
    let funded = Account {
        balance: U256::from(10u128.pow(20)),
        ..Account::default()
    };
    let mut state = InMemoryState::default();
    let mut genesis = StateDiff::default();
    for signer in &signers {
        state.insert_account(signer.address(), funded);
        genesis.accounts.insert(
            signer.address(),
            AccountDiff {
                balance: Some(funded.balance),
                nonce: Some(0),
                ..Default::default()
            },
        );
    }
    let txs: Vec<_> = signers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            transfer(
                s,
                0,
                Address::left_padding_from(&(i as u64 + 1).to_be_bytes()),
            )
        })
        .collect();

    let mut mini = empty_mini_block(0);
    let env = block_env(CHAIN_ID, GAS_LIMIT, &mini);
    let execute = best(RUNS, || {
        verity_execution::execute(&state, &env, txs.clone(), 0).unwrap();
    });
    let outcome = verity_execution::execute(&state, &env, txs.clone(), 0).unwrap();
    assert!(outcome.rejected.is_empty());
    mini.transactions = outcome.executed;
    mini.receipts = outcome.receipts;
    mini.diff = outcome.diff;
    mini.seal(&SigningKey::random());

    let mut tree: StateTree = genesis_tree(&genesis);
    let job = build_job(&state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini.clone()]).unwrap();
    let recover = best(RUNS, || {
        for tx in &mini.transactions {
            assert_eq!(tx.inner().recover_signer().unwrap(), tx.signer());
        }
    });
    let check = best(RUNS, || {
        assert_eq!(
            check_job(&job, CHAIN_ID, GAS_LIMIT).unwrap(),
            Verdict::Valid
        );
    });
    let per_thousand = |seconds: f64| seconds * 1e3 / TRANSFERS as f64 * 1_000.0;
    println!(
        "{TRANSFERS} transfers: the sequencer executes them in {:.1} ms; a prover's check takes \
         {:.1} ms ({:.1}x execution), of which sender recovery {:.1} ms ({:.0} us per \
         transaction); per 1,000 transfers: check {:.1} ms, recovery {:.1} ms",
        execute * 1e3,
        check * 1e3,
        check / execute,
        recover * 1e3,
        recover * 1e6 / TRANSFERS as f64,
        per_thousand(check),
        per_thousand(recover),
    );
}
