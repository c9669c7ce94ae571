//! Sequencer execution alone (`make bench`; printed and written to docs/benchmarks.md, never
//! asserted): recovered transactions, in process, no network, no storage.
//!
//! For each workload of `verity-workload` (independent ETH transfers, independent ERC-20
//! transfers, one contended counter, the mix) it runs the same batch through:
//! - plain revm: one `transact_commit` per transaction over revm's own in-memory `CacheDB`, the
//!   floor any executor on revm starts from;
//! - the sequential executor (`execute`): the same plus receipts and the state diff;
//! - the parallel executor (`execute_parallel`) on 2 threads;
//!
//! and reports transactions/s, gas/s, the parallel speedup over the sequential executor and how
//! many speculations were committed as they were.
//!
//! `VERITY_BENCH_ACCOUNTS` (default 10,000: one transaction per sender per batch, as the
//! mempool's fair selection hands them over) and `VERITY_BENCH_REPS` (default 11) change the run;
//! `VERITY_BENCH_KINDS` (comma-separated names, say `transfers,erc20`) runs only those workloads
//! and then leaves docs/benchmarks.md alone (a partial table is not the figures of a run).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    path::Path,
    time::{Duration, Instant},
};

use alloy_primitives::{Address, U256};
use revm::{
    Context, ExecuteCommitEvm, MainBuilder, MainContext,
    bytecode::Bytecode,
    database::{CacheDB, EmptyDB},
    state::AccountInfo,
};
use verity_execution::{BlockEnvSpec, block_env, cfg_env, execute, execute_parallel, tx_env};
use verity_primitives::{InMemoryState, StateDiff, Transaction};
use verity_workload::{Accounts, Kind, TxParams, report};

/// The allocator the sequencer binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHAIN_ID: u64 = 31337;
const BASE_FEE: u64 = 1_000_000_000;

fn env() -> BlockEnvSpec {
    BlockEnvSpec {
        chain_id: CHAIN_ID,
        number: 1,
        timestamp: 1_700_000_000,
        base_fee: BASE_FEE,
        gas_limit: u64::MAX / 2,
        beneficiary: Address::repeat_byte(0xfe),
    }
}

/// revm's own in-memory database holding `genesis`.
fn revm_db(genesis: &StateDiff) -> CacheDB<EmptyDB> {
    let mut db = CacheDB::new(EmptyDB::default());
    for (address, account) in &genesis.accounts {
        let code = account.code.clone().map(Bytecode::new_raw);
        let info = AccountInfo {
            balance: account.balance.unwrap_or_default(),
            nonce: account.nonce.unwrap_or_default(),
            code_hash: code
                .as_ref()
                .map_or(revm::primitives::KECCAK_EMPTY, |c| c.hash_slow()),
            code,
            ..AccountInfo::default()
        };
        db.insert_account_info(*address, info);
        for (slot, value) in &account.storage {
            db.insert_account_storage(*address, *slot, *value).unwrap();
        }
    }
    db
}

/// Plain revm: the batch committed transaction by transaction; returns the gas used and the
/// EVM (its state is freed untimed, like the executors' outcomes).
fn plain_revm(db: CacheDB<EmptyDB>, txs: &[Transaction]) -> (u64, impl Sized) {
    let env = env();
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_block(block_env(&env))
        .with_cfg(cfg_env(env.chain_id))
        .build_mainnet();
    let mut gas = 0;
    for tx in txs {
        let result = evm.transact_commit(tx_env(tx)).unwrap();
        assert!(result.is_success(), "{result:?}");
        gas += result.tx_gas_used();
    }
    (gas, evm)
}

#[derive(Debug, Clone, Copy)]
struct Figure {
    tx_per_s: f64,
    gas_per_s: f64,
}

/// One timed run of `run` over an input `prepare` builds (untimed); `run` returns the gas it
/// used and what it produced, and dropping that is not timed either. The executors take their
/// batch by value, and the sequencer hands it over: cloning 10,000 signed transactions and
/// freeing 10,000 receipts are serial work that is not execution.
fn timed<I, O>(prepare: impl FnOnce() -> I, run: impl FnOnce(I) -> (u64, O)) -> (Duration, u64) {
    let input = prepare();
    let started = Instant::now();
    let (gas, output) = run(input);
    let elapsed = started.elapsed();
    drop(output);
    (elapsed, gas)
}

fn median<T: PartialOrd + Copy>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// The figure of the median of `times`.
fn figure(txs: usize, gas: u64, times: &[Duration]) -> Figure {
    let median = median(times.to_vec());
    Figure {
        tx_per_s: txs as f64 / median.as_secs_f64(),
        gas_per_s: gas as f64 / median.as_secs_f64(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let accounts_n = env_usize("VERITY_BENCH_ACCOUNTS", 10_000);
    let reps = env_usize("VERITY_BENCH_REPS", 11);
    let threads = 2;
    println!(
        "execution benchmark: {accounts_n} accounts, batches of {accounts_n} transactions, median of {reps} runs"
    );
    let accounts = Accounts::new(accounts_n);
    let genesis = accounts.genesis(U256::from(10u128.pow(24)), U256::from(10u128.pow(24)));
    let mut state = InMemoryState::default();
    state.apply(&genesis);
    let params = TxParams {
        chain_id: CHAIN_ID,
        max_fee_per_gas: 2 * u128::from(BASE_FEE),
        max_priority_fee_per_gas: 1_000_000,
    };
    let env = env();
    let mut rows = Vec::new();
    println!(
        "{:<10} {:>13} {:>10} {:>13} {:>10} {:>13} {:>10} {:>8} {:>22}",
        "workload",
        "revm tx/s",
        "Mgas/s",
        "seq tx/s",
        "Mgas/s",
        "par tx/s",
        "Mgas/s",
        "speedup",
        "speculations kept"
    );
    let only: Option<Vec<Kind>> = std::env::var("VERITY_BENCH_KINDS").ok().map(|names| {
        names
            .split(',')
            .map(|n| n.trim().parse().unwrap())
            .collect()
    });
    for kind in Kind::ALL {
        if only.as_ref().is_some_and(|only| !only.contains(&kind)) {
            continue;
        }
        let txs: Vec<Transaction> = accounts
            .sign(kind, 0..accounts_n, &params, |_| 0)
            .unwrap()
            .iter()
            .map(verity_workload::Signed::transaction)
            .collect();
        let db = revm_db(&genesis);
        // The three run in turn, `reps` times: this machine's speed drifts by tens of percent
        // within a minute (a shared host), so the speedup is the median of each round's ratio,
        // both executors timed under the same conditions.
        let (mut revm_times, mut sequential_times, mut parallel_times) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut revm_gas, mut gas) = (0, 0);
        let mut stats = Default::default();
        for _ in 0..reps {
            let (time, used) = timed(|| db.clone(), |db| plain_revm(db, &txs));
            revm_times.push(time);
            revm_gas = used;
            let (time, used) = timed(
                || txs.clone(),
                |batch| {
                    let outcome = execute(&state, &env, batch, 0).unwrap();
                    assert_eq!(outcome.executed.len(), txs.len());
                    let gas = outcome.receipts.last().unwrap().cumulative_gas_used;
                    (gas, outcome)
                },
            );
            sequential_times.push(time);
            gas = used;
            let (time, _) = timed(
                || txs.clone(),
                |batch| {
                    let outcome = execute_parallel(&state, &env, batch, 0, threads).unwrap();
                    assert_eq!(outcome.executed.len(), txs.len());
                    assert_eq!(outcome.receipts.last().unwrap().cumulative_gas_used, gas);
                    stats = outcome.speculation;
                    (gas, outcome)
                },
            );
            parallel_times.push(time);
        }
        let revm = figure(txs.len(), revm_gas, &revm_times);
        let sequential = figure(txs.len(), gas, &sequential_times);
        let parallel = figure(txs.len(), gas, &parallel_times);
        let speedup = median(
            sequential_times
                .iter()
                .zip(&parallel_times)
                .map(|(s, p)| s.as_secs_f64() / p.as_secs_f64())
                .collect(),
        );
        let kept = format!(
            "{}/{} ({} redone)",
            stats.committed,
            stats.committed + stats.reexecuted + stats.direct,
            stats.reexecuted
        );
        let cells = [
            format!("{:.0}", revm.tx_per_s),
            format!("{:.0}", revm.gas_per_s / 1e6),
            format!("{:.0}", sequential.tx_per_s),
            format!("{:.0}", sequential.gas_per_s / 1e6),
            format!("{:.0}", parallel.tx_per_s),
            format!("{:.0}", parallel.gas_per_s / 1e6),
            format!("{speedup:.2}x"),
            kept,
        ];
        let widths = [13, 10, 13, 10, 13, 10, 8, 22];
        let printed: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:>width$}"))
            .collect();
        println!("{:<10} {}", kind.name(), printed.join(" "));
        rows.push(format!("| {} | {} |", kind.name(), cells.join(" | ")));
    }
    let body = format!(
        "Command: `cargo bench -p verity-execution --bench execution` (part of `make bench`). \
         Machine: {}. Date: {}. {accounts_n} accounts, one batch of {accounts_n} transactions \
         (one per sender); the three run in turn {reps} times, figures are medians, and the \
         speedup is the median of each round's sequential/parallel ratio; parallel on {threads} \
         threads.\n\n\
         | workload | plain revm tx/s | Mgas/s | sequential tx/s | Mgas/s | parallel tx/s | Mgas/s | parallel / sequential | speculations kept |\n\
         |---|---|---|---|---|---|---|---|---|\n{}\n",
        report::machine(),
        report::today(),
        rows.join("\n")
    );
    if only.is_some() {
        println!("a partial run: docs/benchmarks.md left as it was");
        return;
    }
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
    match report::write_section(&doc, "execution", &body) {
        Ok(()) => println!("written to {}", doc.display()),
        Err(e) => println!("could not write {}: {e}", doc.display()),
    }
}
