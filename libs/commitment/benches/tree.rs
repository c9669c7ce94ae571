//! State-tree throughput: how many state writes per second one core, and every core, absorb,
//! and how many hash calls each write costs, with batches the size of one block's writes.
//!
//! `cargo bench -p verity-commitment` (part of `make bench`). Prints figures; asserts nothing
//! about time.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use alloy_primitives::{B256, keccak256};
use verity_commitment::{Keccak, Poseidon2Bn254, SparseMerkleTree, TreeHasher, Update};

/// Counts hash calls of an inner hasher.
#[derive(Debug, Default)]
struct Counting<H> {
    inner: H,
    calls: AtomicU64,
}

impl<H: TreeHasher> TreeHasher for Counting<H> {
    fn leaf(&self, key: &B256, value: &B256) -> B256 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.leaf(key, value)
    }

    fn node(&self, left: &B256, right: &B256) -> B256 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.inner.node(left, right)
    }
}

fn key(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

fn per_call(name: &str, hasher: &impl TreeHasher, calls: u32) {
    let started = Instant::now();
    let mut digest = B256::ZERO;
    for _ in 0..calls {
        digest = hasher.node(&digest, &digest);
    }
    let node = started.elapsed() / calls;
    let started = Instant::now();
    for _ in 0..calls {
        digest = hasher.leaf(&digest, &digest);
    }
    let leaf = started.elapsed() / calls;
    println!("{name}: node hash {node:?}, leaf hash {leaf:?} per call ({digest})");
}

/// Fills a tree with `preload` leaves, then times ten batches of `batch` writes (half updates
/// of existing leaves, half inserts), on `threads` cores.
fn throughput<H: TreeHasher + Default + Send>(
    name: &str,
    preload: u64,
    batch: u64,
    threads: usize,
) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| throughput_in_pool::<H>(name, preload, batch, threads));
}

fn throughput_in_pool<H: TreeHasher + Default>(
    name: &str,
    preload: u64,
    batch: u64,
    threads: usize,
) {
    let mut tree = SparseMerkleTree::new(Counting::<H>::default());
    let started = Instant::now();
    for chunk in (0..preload).collect::<Vec<_>>().chunks(50_000) {
        tree.apply(chunk.iter().map(|n| (key(*n), Some(key(n + 1)))));
    }
    let load = started.elapsed();
    let mut elapsed = Duration::ZERO;
    let mut writes = 0u64;
    let calls_before = tree.hasher().calls.load(Ordering::Relaxed);
    let mut next = preload;
    for round in 0..10u64 {
        let updates: Vec<Update> = (0..batch)
            .map(|i| {
                if i % 2 == 0 {
                    let existing = (round * batch + i) % preload;
                    (key(existing), Some(key(existing + round + 7)))
                } else {
                    next += 1;
                    (key(next), Some(key(next)))
                }
            })
            .collect();
        let started = Instant::now();
        tree.apply(updates);
        elapsed += started.elapsed();
        writes += batch;
    }
    let calls = tree.hasher().calls.load(Ordering::Relaxed) - calls_before;
    println!(
        "{name}: tree of {preload} leaves (built in {load:.2?}), batches of {batch}: {:.0} writes/s on {threads} core(s), {:.1} hashes per write",
        writes as f64 / elapsed.as_secs_f64(),
        calls as f64 / writes as f64
    );
}

fn main() {
    per_call("keccak", &Keccak, 1_000_000);
    per_call("poseidon2 (BN254, 8 + 56 rounds)", &Poseidon2Bn254, 20_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    throughput::<Keccak>("keccak", 100_000, 5_000, 1);
    throughput::<Keccak>("keccak", 1_000_000, 5_000, 1);
    throughput::<Keccak>("keccak", 1_000_000, 25_000, 1);
    throughput::<Keccak>("keccak", 1_000_000, 25_000, cores);
    throughput::<Poseidon2Bn254>("poseidon2 bn254", 100_000, 5_000, 1);
    throughput::<Poseidon2Bn254>("poseidon2 bn254", 100_000, 5_000, cores);
    throughput::<Poseidon2Bn254>("poseidon2 bn254", 1_000_000, 25_000, 1);
    throughput::<Poseidon2Bn254>("poseidon2 bn254", 1_000_000, 25_000, cores);
}
