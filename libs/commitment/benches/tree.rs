//! State-tree throughput: how many state writes per second one core absorbs, and how many hash
//! calls each write costs, with batches the size of one block's writes.
//!
//! `cargo bench -p verity-commitment` (part of `make bench`). Prints figures; asserts nothing
//! about time.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use alloy_primitives::{B256, keccak256};
use verity_commitment::{Keccak, SparseMerkleTree, TreeHasher, Update};

/// Counts hash calls.
#[derive(Debug, Default)]
struct Counting {
    calls: Cell<u64>,
}

impl TreeHasher for Counting {
    fn leaf(&self, key: &B256, value: &B256) -> B256 {
        self.calls.set(self.calls.get() + 1);
        Keccak.leaf(key, value)
    }

    fn node(&self, left: &B256, right: &B256) -> B256 {
        self.calls.set(self.calls.get() + 1);
        Keccak.node(left, right)
    }
}

fn key(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

fn main() {
    // One keccak node hash, for scale.
    let started = Instant::now();
    let mut digest = B256::ZERO;
    for _ in 0..1_000_000 {
        digest = Keccak.node(&digest, &digest);
    }
    let per_hash = started.elapsed() / 1_000_000;
    println!("keccak node hash: {per_hash:?} per call ({digest})");

    for (preload, batch) in [
        (100_000u64, 5_000u64),
        (1_000_000, 5_000),
        (1_000_000, 25_000),
    ] {
        let mut tree = SparseMerkleTree::new(Counting::default());
        let started = Instant::now();
        for chunk in (0..preload).collect::<Vec<_>>().chunks(50_000) {
            tree.apply(chunk.iter().map(|n| (key(*n), Some(key(n + 1)))));
        }
        let load = started.elapsed();
        let mut elapsed = Duration::ZERO;
        let mut writes = 0u64;
        let calls_before = tree_calls(&tree);
        let mut next = preload;
        for round in 0..10u64 {
            // Half the writes update existing leaves, half insert new ones.
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
        let calls = tree_calls(&tree) - calls_before;
        println!(
            "tree of {preload} leaves (built in {load:.2?}), batches of {batch}: {:.0} writes/s on one core, {:.1} hashes per write",
            writes as f64 / elapsed.as_secs_f64(),
            calls as f64 / writes as f64
        );
    }
}

fn tree_calls(tree: &SparseMerkleTree<Counting>) -> u64 {
    tree.hasher().calls.get()
}
