//! What verification costs next to execution, on one mini-block of each workload (plain
//! transfers, ERC-20 transfers, and the mixed load of `verity bench`: transfers, ERC-20
//! transfers and counter calls 6:3:1):
//!
//! - the sequencer's CPU time executing it (revm);
//! - a full node's CPU time re-executing it: recovering every sender, executing, updating its
//!   state commitment (the same Poseidon2 tree) and writing its state (the same MDBX apply):
//!   the denominator of issue 23's goal (verifier at most 0.1x of it);
//! - a verifier replica's CPU time for it: applying its diff to MDBX plus checking its proofs
//!   (statement from its own mini-block, attestation, batch verification);
//!   the seed article's claim is that this is at most a tenth of execution;
//! - a light verifier's (role `light-verifier`): the same checks of the proofs, but instead of
//!   the MDBX apply only the chain check every follower makes (the mini-block's hash over its
//!   contents, the sequencer's signature) and storing the event;
//! - the witness replica's CPU time building its job;
//! - the prover's CPU time (all cores) proving it: prover core-seconds per 1,000 transactions,
//!   the figure a prover pool is sized with.
//!
//! `cargo bench -p verity-chunk --bench verify_cost` (part of `make bench`). Multi-threaded
//! work (proving, batch verification) is measured as this process's user + system CPU time from
//! /proc/self/stat (10 ms resolution); single-threaded work (execution, the MDBX apply) as wall
//! time. Prints figures; asserts nothing about time.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use alloy_primitives::{Address, U256};
use common::{CHAIN_ID, GAS_LIMIT, empty_mini_block, measure};
use verity_chunk::{
    StateTree, block_env, build_job, check_claim, genesis_tree, prove_job, verify_proofs, wire,
};
use verity_circuits::{KeyRing, Params, Shape};
use verity_primitives::{AccountDiff, InMemoryState, SigningKey};
use verity_workload::{Accounts, Kind, TxParams};

const ACCOUNTS: usize = 100_000;
/// Transactions per mini-block of each workload.
const TXS: usize = 24;
/// Transactions of the large mini-block (distinct senders and recipients: ~2 tree steps each),
/// proven with 8-step segments alone and with larger segments of 64 and 256 steps.
const LARGE: usize = 240;
/// Transactions of the block-sized mini-block (issue 23 asks for blocks of 1,000+ transfers),
/// proven with larger segments of 64, 256 and 1,024 steps (k = 20: ~8 GiB while proving).
/// `VERITY_BENCH_BLOCK=0` leaves it out (~15 minutes of both cores).
const BLOCK: usize = 1_000;

/// Steps per proof, and the larger segments' sizes.
type Config = (usize, &'static [usize]);

/// What every workload starts from.
struct Genesis {
    state: InMemoryState,
    tree: StateTree,
    db: verity_storage::Database,
    /// A light verifier's database: the events alone.
    events: verity_storage::Database,
    _dirs: [tempfile::TempDir; 2],
}

fn main() {
    // 100,000 funded accounts: the workload's senders (with ERC-20 balances, beside the token
    // and the counter), their recipients, and others; the tree and an MDBX state of them.
    let accounts = Accounts::new(BLOCK);
    let funds = U256::from(10u128.pow(20));
    let mut diff = accounts.genesis(funds, funds);
    let recipients = (0..BLOCK).map(Accounts::recipient);
    let others = (0..ACCOUNTS - 2 * BLOCK)
        .map(|i| Address::left_padding_from(&(i as u64 + 1).to_be_bytes()));
    for address in recipients.chain(others) {
        diff.accounts.insert(
            address,
            AccountDiff {
                balance: Some(funds),
                nonce: Some(0),
                ..AccountDiff::default()
            },
        );
    }
    let mut state = InMemoryState::default();
    state.apply(&diff);
    let (tree, _, wall) = measure(|| genesis_tree(&diff));
    println!("state of {ACCOUNTS} accounts; its Poseidon tree built in {wall:.1} s");
    let dir = tempfile::tempdir().unwrap();
    let db = verity_storage::Database::open(&dir.path().join("db")).unwrap();
    let mut write = db.write().unwrap();
    write.apply_diff(&diff).unwrap();
    write.commit().unwrap();
    let events_dir = tempfile::tempdir().unwrap();
    let events = verity_storage::Database::open(&events_dir.path().join("db")).unwrap();
    let genesis = Genesis {
        state,
        tree,
        db,
        events,
        _dirs: [dir, events_dir],
    };
    const MAIN: &[usize] = &[];
    const LADDER: &[usize] = &[64, 256];
    const TALL_LADDER: &[usize] = &[64, 256, 1024];
    let runs: [(Kind, usize, &[Config]); 5] = [
        (Kind::Transfers, TXS, &[(8, MAIN), (16, MAIN)]),
        (Kind::Erc20, TXS, &[(8, MAIN)]),
        (Kind::Mixed, TXS, &[(8, MAIN)]),
        (Kind::Transfers, LARGE, &[(8, MAIN), (8, LADDER)]),
        (Kind::Transfers, BLOCK, &[(8, TALL_LADDER)]),
    ];
    let block = !std::env::var("VERITY_BENCH_BLOCK").is_ok_and(|v| v == "0");
    for (kind, txs, configs) in runs.into_iter().filter(|(_, txs, _)| block || *txs < BLOCK) {
        workload(&genesis, &accounts, kind, txs, configs);
    }
}

/// One mini-block of `count` transactions of `kind`, proven with each (steps per proof, larger
/// segments) of `configs`.
fn workload(genesis: &Genesis, accounts: &Accounts, kind: Kind, count: usize, configs: &[Config]) {
    let Genesis {
        state, db, events, ..
    } = genesis;
    let mut tree = genesis.tree.clone();
    // The sequencer executes one mini-block of the workload.
    let params = TxParams {
        chain_id: CHAIN_ID,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000,
    };
    let txs: Vec<_> = accounts
        .sign(kind, 0..count, &params, |_| 0)
        .unwrap()
        .iter()
        .map(verity_workload::Signed::transaction)
        .collect();
    let key = SigningKey::random();
    let mut mini = empty_mini_block(0);
    let env = block_env(CHAIN_ID, GAS_LIMIT, &mini);
    // Warm up revm once, then measure the best of several runs.
    let _ = verity_execution::execute(state, &env, txs.clone(), 0).unwrap();
    let mut execute_cpu = f64::MAX;
    let mut outcome = None;
    for _ in 0..20 {
        // Single-threaded and shorter than a clock tick: wall time is its CPU time.
        let (o, _, wall) =
            measure(|| verity_execution::execute(state, &env, txs.clone(), 0).unwrap());
        execute_cpu = execute_cpu.min(wall);
        outcome = Some(o);
    }
    let outcome = outcome.unwrap();
    assert!(
        outcome.rejected.is_empty(),
        "{kind}: {:?}",
        outcome.rejected
    );
    assert!(
        outcome.receipts.iter().all(|r| r.success),
        "{kind}: every transaction succeeds"
    );
    mini.transactions = outcome.executed;
    mini.receipts = outcome.receipts;
    mini.diff = outcome.diff;
    mini.seal(&key);

    // The witness builds the job.
    let pre_tree = tree.clone();
    let pre_root = tree.root();
    let (job, witness_cpu, _) =
        measure(|| build_job(state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini.clone()]).unwrap());

    // The verifier applies the diff to MDBX (on top of the workloads before: the same writes'
    // cost).
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

    // A light verifier checks the event as every follower does (hash over the contents, the
    // sequencer's signature) and stores it (on top of the events before), instead of the apply.
    let follow = best_of(20, || {
        assert_eq!(mini.compute_hash(), mini.hash);
        verity_primitives::signing::verify(&mini.hash, &mini.signature, key.address()).unwrap();
    });
    let (_, _, store) = measure(|| {
        let seq = events.read().unwrap().last_event_seq().unwrap() + 1;
        let mut write = events.write().unwrap();
        let event = verity_primitives::ChainEvent {
            seq,
            kind: verity_primitives::ChainEventKind::MiniBlock(Box::new(mini.clone())),
        };
        write.put_event(&(&event).into()).unwrap();
        write.commit().unwrap();
    });
    let light_chain = follow + store;
    let steps = job.steps().unwrap();
    println!(
        "{kind}: {count} transactions, {} tree steps: full node re-executes in {:.2} ms: recovers \
         senders {:.2} ms, executes {:.2} ms, updates the tree {:.2} ms, applies to MDBX {:.2} ms",
        steps.len(),
        full_node * 1e3,
        recover * 1e3,
        execute_cpu * 1e3,
        commit * 1e3,
        apply * 1e3
    );

    for &(per_proof, larger) in configs {
        let shape = Shape {
            steps: per_proof,
            depth: 32,
        };
        let params = Params::setup_insecure(KeyRing::k_with_larger(shape, larger));
        let keys = KeyRing::generate_with_larger(shape, larger, &params).unwrap();
        let prover = SigningKey::random();
        let (mut proof, prove_cpu, prove_wall) =
            measure(|| prove_job(&keys, &job, &steps, |_, _| {}).unwrap());
        proof.prover = prover.address();
        proof.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &proof));
        let provers = [prover.address()];
        // The verifier's checks, as it runs them: the statement from its own mini-block and the
        // attestation (single-threaded: the best wall time of several runs), then one batch.
        let claim = || {
            check_claim(
                CHAIN_ID,
                shape,
                &provers,
                pre_root,
                std::slice::from_ref(&mini),
                &proof,
            )
            .unwrap()
        };
        let statement = claim();
        let check = best_of(5, || {
            claim();
        });
        let (_, verify_cpu, verify_wall) = measure(|| {
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
        let verifier = apply + check + verify;
        let light = light_chain + check + verify;
        println!(
            "{kind}: {count} transactions, {} tree steps, {per_proof} steps/proof, larger segments \
             {larger:?} ({} proofs, \
             k={}): sequencer executes in {:.2} ms CPU; witness builds the job in {:.1} ms CPU; \
             verifier applies in {:.2} ms + checks the statement in {:.2} ms + verifies in \
             {:.1} ms CPU = {:.1}x execution, {:.2}x a re-executing full node; light verifier \
             checks and stores the event in {:.2} ms instead of the apply = {:.1}x execution, \
             {:.2}x a full node; prover {:.1} s wall, {:.1} core-s = {:.0} core-s per 1,000 \
             transactions",
            steps.len(),
            proof.segments.len(),
            keys.main().k(),
            execute_cpu * 1e3,
            witness_cpu * 1e3,
            apply * 1e3,
            check * 1e3,
            verify * 1e3,
            verifier / execute_cpu,
            verifier / full_node,
            light_chain * 1e3,
            light / execute_cpu,
            light / full_node,
            prove_wall,
            prove_cpu,
            prove_cpu / count as f64 * 1000.0,
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
