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
//! mempool's fair selection hands them over) and `VERITY_BENCH_REPS` (default 7) change the run.

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

/// Plain revm: the batch committed transaction by transaction; returns the gas used.
fn plain_revm(db: CacheDB<EmptyDB>, txs: &[Transaction]) -> u64 {
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
    gas
}

#[derive(Debug, Clone, Copy)]
struct Figure {
    tx_per_s: f64,
    gas_per_s: f64,
}

/// The median of `reps` timed runs of `run`, which returns the gas it used.
fn measure(txs: usize, reps: usize, mut run: impl FnMut() -> u64) -> Figure {
    let mut times = Vec::with_capacity(reps);
    let mut gas = 0;
    for _ in 0..reps {
        let started = Instant::now();
        gas = run();
        times.push(started.elapsed());
    }
    times.sort();
    let median: Duration = times[times.len() / 2];
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
    let reps = env_usize("VERITY_BENCH_REPS", 7);
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
    for kind in Kind::ALL {
        let txs: Vec<Transaction> = accounts
            .sign(kind, 0..accounts_n, &params, |_| 0)
            .unwrap()
            .iter()
            .map(verity_workload::Signed::transaction)
            .collect();
        let db = revm_db(&genesis);
        let revm = measure(txs.len(), reps, || plain_revm(db.clone(), &txs));
        let sequential = measure(txs.len(), reps, || {
            let outcome = execute(&state, &env, txs.clone(), 0).unwrap();
            assert_eq!(outcome.executed.len(), txs.len());
            outcome.receipts.last().unwrap().cumulative_gas_used
        });
        let mut stats = Default::default();
        let parallel = measure(txs.len(), reps, || {
            let outcome = execute_parallel(&state, &env, txs.clone(), 0, threads).unwrap();
            assert_eq!(outcome.executed.len(), txs.len());
            stats = outcome.speculation;
            outcome.receipts.last().unwrap().cumulative_gas_used
        });
        let speedup = parallel.tx_per_s / sequential.tx_per_s;
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
         (one per sender), median of {reps} runs; parallel on {threads} threads.\n\n\
         | workload | plain revm tx/s | Mgas/s | sequential tx/s | Mgas/s | parallel tx/s | Mgas/s | parallel / sequential | speculations kept |\n\
         |---|---|---|---|---|---|---|---|---|\n{}\n",
        report::machine(),
        report::today(),
        rows.join("\n")
    );
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
    match report::write_section(&doc, "execution", &body) {
        Ok(()) => println!("written to {}", doc.display()),
        Err(e) => println!("could not write {}: {e}", doc.display()),
    }
}
