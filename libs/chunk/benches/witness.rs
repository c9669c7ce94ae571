//! The witness replica's throughput: state writes per second it absorbs while building chunk
//! jobs, at the load issue 3 names (10,000 transfers/s: one mini-block of 100 transfers every
//! 10 ms), over a state of 100,000 and 1,000,000 accounts.
//!
//! Each mini-block is executed (as the sequencer would), then its job is built twice from the
//! same tree state:
//! - **batch** (what the witness does): re-execute to record the reads, read one proof per
//!   touched key off the tree, write the chunk's writes as one batch, encode the job;
//! - **step by step** (what it did before): one tree step per key, each re-hashing its path to
//!   produce the step's proofs.
//!
//! It also times what moved to the provers: deriving the steps from the job's proofs. Then it
//! builds chunks of 5 and of 10 mini-blocks (one job, one tree batch per chunk) from 50 more
//! mini-blocks each, to show what grouping mini-blocks into chunks gives the witness.
//!
//! `cargo bench -p verity-chunk --bench witness` (part of `make bench`). Wall time on every
//! core; prints figures, asserts nothing about time.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use alloy_primitives::{Address, U256, keccak256};
use alloy_signer_local::PrivateKeySigner;
use common::{CHAIN_ID, GAS_LIMIT, empty_mini_block, measure, transfer};
use prost::Message as _;
use verity_chunk::{Overlay, StateTree, block_env, build_job, tree_writes};
use verity_commitment::{account_key, account_value};
use verity_primitives::{Account, InMemoryState, SigningKey, StateDiff, StateView};

const MINI_BLOCKS: usize = 50;
const TRANSFERS: usize = 100;
/// One mini-block every 10 ms.
const MINI_BLOCK_SECONDS: f64 = 0.010;

fn recipient(accounts: usize, n: usize) -> Address {
    let digest = keccak256((n as u64).to_be_bytes());
    let index = u64::from_be_bytes(digest[..8].try_into().unwrap()) % accounts as u64;
    Address::left_padding_from(&(index + 1).to_be_bytes())
}

fn run(accounts: usize) {
    let funded = Account {
        balance: U256::from(10u128.pow(20)),
        ..Account::default()
    };
    let signers: Vec<PrivateKeySigner> = (0..MINI_BLOCKS * TRANSFERS)
        .map(|_| PrivateKeySigner::random())
        .collect();
    let mut state = InMemoryState::default();
    let addresses: Vec<Address> = (0..accounts)
        .map(|i| Address::left_padding_from(&(i as u64 + 1).to_be_bytes()))
        .chain(signers.iter().map(|s| s.address()))
        .collect();
    for address in &addresses {
        state.insert_account(*address, funded);
    }
    let mut tree = StateTree::default();
    let (_, _, load) = measure(|| {
        tree.apply(
            addresses
                .iter()
                .map(|a| (account_key(*a), Some(account_value(&funded)))),
        )
    });
    println!(
        "{} accounts: Poseidon tree built in {load:.1} s",
        addresses.len()
    );
    let mut stepwise = tree.clone();

    let key = SigningKey::random();
    let (mut batch_s, mut step_s, mut derive_s) = (0.0, 0.0, 0.0);
    let (mut writes, mut keys, mut bytes) = (0usize, 0usize, 0usize);
    for m in 0..MINI_BLOCKS {
        let txs = (0..TRANSFERS)
            .map(|i| {
                let n = m * TRANSFERS + i;
                transfer(&signers[n], 0, recipient(accounts, n))
            })
            .collect();
        let mut mini = empty_mini_block(m as u64);
        let env = block_env(CHAIN_ID, GAS_LIMIT, &mini);
        let outcome = verity_execution::execute(&state, &env, txs, 0).unwrap();
        assert!(outcome.rejected.is_empty());
        mini.transactions = outcome.executed;
        mini.receipts = outcome.receipts;
        mini.diff = outcome.diff;
        mini.seal(&key);

        // What the witness does now.
        let ((job, encoded), _, wall) = measure(|| {
            let job =
                build_job(&state, &mut tree, CHAIN_ID, GAS_LIMIT, vec![mini.clone()]).unwrap();
            let encoded = verity_proto::v1::ChunkJob::from(&job).encode_to_vec();
            (job, encoded)
        });
        batch_s += wall;
        bytes += encoded.len();
        keys += job.pre_proofs.len();
        let chunk_writes = job.writes();
        writes += chunk_writes.len();

        // What it did before: one step per key, on an identical tree.
        let (_, _, wall) = measure(|| {
            for (key, _) in &job.pre_proofs {
                stepwise.step(*key, chunk_writes.get(key).copied());
            }
        });
        step_s += wall;
        assert_eq!(stepwise.root(), tree.root());

        // What the prover now does first.
        let (steps, _, wall) = measure(|| job.steps().unwrap());
        derive_s += wall;
        assert_eq!(steps.len(), job.pre_proofs.len());

        let before: std::collections::BTreeMap<_, _> = mini
            .diff
            .accounts
            .keys()
            .map(|a| (*a, state.account(*a).unwrap()))
            .collect();
        assert_eq!(tree_writes(&mini.diff, &before), chunk_writes);
        state.apply(&mini.diff);
    }
    let span = MINI_BLOCKS as f64 * MINI_BLOCK_SECONDS;
    println!(
        "  {MINI_BLOCKS} mini-blocks of {TRANSFERS} transfers ({writes} state writes, {keys} keys \
         touched, {:.0} KiB of jobs per mini-block)",
        bytes as f64 / MINI_BLOCKS as f64 / 1024.0
    );
    println!(
        "  batch (witness now): {:.0} writes/s, {:.2} ms per mini-block; {span:.1} s of \
         10,000 transfers/s built in {batch_s:.2} s",
        writes as f64 / batch_s,
        batch_s / MINI_BLOCKS as f64 * 1e3,
    );
    println!(
        "  step by step (before): {:.0} writes/s, {:.2} ms per mini-block ({:.1}x slower)",
        writes as f64 / step_s,
        step_s / MINI_BLOCKS as f64 * 1e3,
        step_s / batch_s
    );
    println!(
        "  prover derives the steps from the job: {:.2} ms per mini-block",
        derive_s / MINI_BLOCKS as f64 * 1e3
    );
    for (round, per_chunk) in [5usize, 10].into_iter().enumerate() {
        let first = (MINI_BLOCKS * (round + 1)) as u64;
        grouped(
            &mut state,
            &mut tree,
            &signers,
            accounts,
            per_chunk,
            first,
            round as u64 + 1,
        );
    }
}

/// Builds 50 more mini-blocks (senders at `nonce`) into chunks of `per_chunk`, numbered from
/// `first` (all in one EVM block), and times the witness's job per chunk.
fn grouped(
    state: &mut InMemoryState,
    tree: &mut StateTree,
    signers: &[PrivateKeySigner],
    accounts: usize,
    per_chunk: usize,
    first: u64,
    nonce: u64,
) {
    let key = SigningKey::random();
    let (mut wall_s, mut writes, mut bytes) = (0.0, 0usize, 0usize);
    for chunk in 0..MINI_BLOCKS / per_chunk {
        let mut minis = Vec::with_capacity(per_chunk);
        let mut pending = StateDiff::default();
        for j in 0..per_chunk {
            let m = chunk * per_chunk + j;
            let txs = (0..TRANSFERS)
                .map(|i| {
                    let n = m * TRANSFERS + i;
                    transfer(
                        &signers[n],
                        nonce,
                        recipient(accounts, n + 7919 * nonce as usize),
                    )
                })
                .collect();
            let mut mini = empty_mini_block(first + m as u64);
            let env = block_env(CHAIN_ID, GAS_LIMIT, &mini);
            let outcome =
                verity_execution::execute(&Overlay::new(&*state, &pending), &env, txs, 0).unwrap();
            assert!(outcome.rejected.is_empty());
            mini.transactions = outcome.executed;
            mini.receipts = outcome.receipts;
            mini.diff = outcome.diff;
            mini.seal(&key);
            pending.merge(&mini.diff);
            minis.push(mini);
        }
        let (chunk_writes, _, wall) = measure(|| {
            let job = build_job(&*state, tree, CHAIN_ID, GAS_LIMIT, minis).unwrap();
            let encoded = verity_proto::v1::ChunkJob::from(&job).encode_to_vec();
            (job.writes().len(), encoded.len())
        });
        wall_s += wall;
        writes += chunk_writes.0;
        bytes += chunk_writes.1;
        state.apply(&pending);
    }
    let chunks = MINI_BLOCKS / per_chunk;
    println!(
        "  chunks of {per_chunk} mini-blocks: {:.0} writes/s ({} distinct writes per chunk), \
         {:.2} ms per mini-block, {:.0} transfers/s; {:.0} KiB per job",
        writes as f64 / wall_s,
        writes / chunks,
        wall_s / MINI_BLOCKS as f64 * 1e3,
        (MINI_BLOCKS * TRANSFERS) as f64 / wall_s,
        bytes as f64 / chunks as f64 / 1024.0
    );
}

fn main() {
    println!(
        "witness replica on {} core(s)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for accounts in [100_000, 1_000_000] {
        run(accounts);
    }
}
