//! What verification costs next to execution, on one mini-block of transfers:
//!
//! - the sequencer's CPU time executing it (revm);
//! - a full node's CPU time re-executing it: recovering every sender, executing, updating its
//!   state commitment (the same Poseidon2 tree) and writing its state (the same MDBX apply):
//!   the denominator of issue 23's goal (verifier at most 0.1x of it);
//! - a verifier replica's CPU time for it: applying its diff to MDBX plus checking its proofs
//!   (statement from its own mini-block, attestation, batch verification);
//!   the seed article's claim is that this is at most a tenth of execution;
//! - the witness replica's CPU time building its job;
//! - the prover's CPU time (all cores) proving it: prover core-seconds per 1,000 transfers.
//!
//! `cargo bench -p verity-chunk --bench verify_cost` (part of `make bench`). Multi-threaded
//! work (proving, batch verification) is measured as this process's user + system CPU time from
//! /proc/self/stat (10 ms resolution); single-threaded work (execution, the MDBX apply) as wall
//! time. Prints figures; asserts nothing about time.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use common::{CHAIN_ID, GAS_LIMIT, empty_mini_block, measure, transfer};
use verity_chunk::{StateTree, block_env, build_job, check_claim, prove_job, verify_proofs, wire};
use verity_circuits::{KeyRing, Params, Shape};
use verity_commitment::{account_key, account_value};
use verity_primitives::{Account, InMemoryState, SigningKey, StateDiff};

const ACCOUNTS: usize = 100_000;
const TRANSFERS: usize = 24;

fn main() {
    // A state of 100,000 funded accounts, and its tree.
    let signers: Vec<PrivateKeySigner> =
        (0..TRANSFERS).map(|_| PrivateKeySigner::random()).collect();
    let mut state = InMemoryState::default();
    let funded = Account {
        balance: U256::from(10u128.pow(20)),
        ..Account::default()
    };
    let others: Vec<Address> = (0..ACCOUNTS - TRANSFERS)
        .map(|i| Address::left_padding_from(&(i as u64 + 1).to_be_bytes()))
        .collect();
    for address in signers
        .iter()
        .map(|s| s.address())
        .chain(others.iter().copied())
    {
        state.insert_account(address, funded);
    }
    let mut tree = StateTree::default();
    let (_, _, wall) = measure(|| {
        tree.apply(
            signers
                .iter()
                .map(|s| s.address())
                .chain(others.iter().copied())
                .map(|a| (account_key(a), Some(account_value(&funded)))),
        )
    });
    println!("state of {ACCOUNTS} accounts; its Poseidon tree built in {wall:.1} s");

    // The sequencer executes one mini-block of transfers to existing accounts.
    let key = SigningKey::random();
    let txs: Vec<_> = signers
        .iter()
        .zip(&others)
        .map(|(s, to)| transfer(s, 0, *to))
        .collect();
    let mut mini = empty_mini_block(0);
    let env = block_env(CHAIN_ID, GAS_LIMIT, &mini);
    // Warm up revm once, then measure the best of several runs.
    let _ = verity_execution::execute(&state, &env, txs.clone(), 0).unwrap();
    let mut execute_cpu = f64::MAX;
    let mut outcome = None;
    for _ in 0..20 {
        // Single-threaded and shorter than a clock tick: wall time is its CPU time.
        let (o, _, wall) =
            measure(|| verity_execution::execute(&state, &env, txs.clone(), 0).unwrap());
        execute_cpu = execute_cpu.min(wall);
        outcome = Some(o);
    }
    let outcome = outcome.unwrap();
    assert!(outcome.rejected.is_empty());
    mini.transactions = outcome.executed;
    mini.receipts = outcome.receipts;
    mini.diff = outcome.diff;
    mini.seal(&key);

    // The witness builds the job.
    let pre_tree = tree.clone();
    let pre_root = tree.root();
    let (job, witness_cpu, _) =
        measure(|| build_job(&state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini.clone()]).unwrap());

    // The verifier applies the diff to MDBX.
    let dir = tempfile::tempdir().unwrap();
    let db = verity_storage::Database::open(&dir.path().join("db")).unwrap();
    let mut genesis = StateDiff::default();
    for address in signers
        .iter()
        .map(|s| s.address())
        .chain(others.iter().copied())
    {
        genesis.accounts.insert(
            address,
            verity_primitives::AccountDiff {
                balance: Some(funded.balance),
                nonce: Some(0),
                ..Default::default()
            },
        );
    }
    let mut write = db.write().unwrap();
    write.apply_diff(&genesis).unwrap();
    write.commit().unwrap();
    let (_, _, apply) = measure(|| {
        let mut write = db.write().unwrap();
        write.apply_diff(&mini.diff).unwrap();
        write.commit().unwrap();
    });

    // A full node re-executes instead: every sender recovered, the transactions executed, the
    // tree updated by their writes, the diff applied to MDBX (the same apply as the verifier).
    let recover = best_of(20, || {
        use alloy_consensus::transaction::SignerRecoverable as _;
        for tx in &mini.transactions {
            tx.inner().recover_signer().unwrap();
        }
    });
    let accounts_before = mini
        .diff
        .accounts
        .keys()
        .map(|a| (*a, job.witness.accounts.get(a).copied().flatten()))
        .collect();
    let commit = best_of(5, || {
        let mut tree = pre_tree.clone();
        let writes = verity_chunk::tree_writes(&mini.diff, &accounts_before);
        let started = std::time::Instant::now();
        tree.apply(
            writes
                .into_iter()
                .map(|(k, v)| (k, (v != verity_commitment::EMPTY).then_some(v))),
        );
        started.elapsed().as_secs_f64()
    });
    let full_node = recover + execute_cpu + commit + apply;
    println!(
        "full node re-executes in {:.2} ms: recovers {TRANSFERS} senders {:.2} ms, executes \
         {:.2} ms, updates the tree {:.2} ms, applies to MDBX {:.2} ms",
        full_node * 1e3,
        recover * 1e3,
        execute_cpu * 1e3,
        commit * 1e3,
        apply * 1e3
    );

    let steps = job.steps().unwrap();
    for per_proof in [8usize, 16] {
        let shape = Shape {
            steps: per_proof,
            depth: 32,
        };
        let keys = KeyRing::generate(shape, &Params::setup_insecure(KeyRing::k_of(shape))).unwrap();
        let prover = SigningKey::random();
        let (mut proof, prove_cpu, prove_wall) =
            measure(|| prove_job(&keys, &job, &steps, |_, _| {}).unwrap());
        proof.prover = prover.address();
        proof.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &proof));
        let provers = [prover.address()];
        // The verifier's checks, as it runs them: statement, attestation, one batch.
        let (_, verify_cpu, verify_wall) = measure(|| {
            let statement = check_claim(
                CHAIN_ID,
                shape,
                &provers,
                pre_root,
                std::slice::from_ref(&mini),
                &proof,
            )
            .unwrap();
            verify_proofs(&keys, &[(&statement, &proof)])
                .remove(0)
                .unwrap();
        });
        // Batch verification uses every core: CPU time, unless below the clock's resolution.
        let verify = if verify_cpu > 0.0 {
            verify_cpu
        } else {
            verify_wall
        };
        let verifier = apply + verify;
        println!(
            "{TRANSFERS} transfers, {} tree steps, {per_proof} steps/proof ({} proofs, k={}): \
             sequencer executes in {:.2} ms CPU; witness builds the job in {:.1} ms CPU; \
             verifier applies in {:.2} ms + verifies in {:.1} ms CPU = {:.1}x execution, \
             {:.2}x a re-executing full node; prover {:.1} s wall, {:.1} core-s = {:.0} core-s \
             per 1,000 transfers",
            steps.len(),
            proof.segments.len(),
            keys.main().k(),
            execute_cpu * 1e3,
            witness_cpu * 1e3,
            apply * 1e3,
            verify * 1e3,
            verifier / execute_cpu,
            verifier / full_node,
            prove_wall,
            prove_cpu,
            prove_cpu / TRANSFERS as f64 * 1000.0,
        );
    }
}

/// The best wall time of `runs` runs of `f` (single-threaded work shorter than a clock tick of
/// the CPU counters); `f` may return its own measured part.
fn best_of<T: Into<Seconds>>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..runs)
        .map(|_| {
            let (out, _, wall) = measure(&mut f);
            match out.into() {
                Seconds::Whole => wall,
                Seconds::Part(part) => part,
            }
        })
        .fold(f64::MAX, f64::min)
}

/// What a measured closure reports: nothing (its whole run counts) or the part that counts.
enum Seconds {
    Whole,
    Part(f64),
}

impl From<()> for Seconds {
    fn from((): ()) -> Self {
        Seconds::Whole
    }
}

impl From<f64> for Seconds {
    fn from(part: f64) -> Self {
        Seconds::Part(part)
    }
}
