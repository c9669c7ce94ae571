//! Chunk proofs on this machine: key generation, proving time and peak memory per proof
//! against the number of steps, and verification time per proof and per batch.
//!
//! `cargo bench -p verity-circuits --bench chunk` (part of `make bench`). Prints figures;
//! asserts nothing about time.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::{key, peak_mib};
use verity_circuits::{Instances, Keys, Params, Shape, circuit_step, tx_digest};
use verity_commitment::{Poseidon2Bn254, SparseMerkleTree};
use verity_telemetry::process_cpu_seconds;

fn main() {
    // A tree of 100,000 accounts: paths of ~17-20 levels, as on a busy chain.
    let mut tree = SparseMerkleTree::new(Poseidon2Bn254);
    let started = Instant::now();
    tree.apply((0..100_000u64).map(|n| (key(n), Some(key(n + 1)))));
    println!("tree of 100000 leaves built in {:?}", started.elapsed());
    // The main shapes; a shallower one as rows of the same k (paths as deep as the tree is,
    // ADR 0015); and the deep one a step gets alone when its path is longer than the main
    // shape's.
    // 64 and 256 steps: what a proof of a large block's chunk costs to make and to check (a
    // proof verifies in about the same time whatever its size).
    let shapes = [4usize, 8, 16, 64, 256]
        .map(|steps| Shape { steps, depth: 32 })
        .into_iter()
        .chain([
            Shape {
                steps: 10,
                depth: 24,
            },
            Shape::DEEP,
        ]);
    // `VERITY_BENCH_STEPS=8,256` measures those sizes alone (every shape by default).
    let only: Option<Vec<usize>> = std::env::var("VERITY_BENCH_STEPS").ok().map(|list| {
        list.split(',')
            .map(|n| n.trim().parse().expect("VERITY_BENCH_STEPS: numbers"))
            .collect()
    });
    for shape in shapes.filter(|s| only.as_ref().is_none_or(|only| only.contains(&s.steps))) {
        let Shape { steps, depth } = shape;
        // A local setup: fine for measuring (see Params::setup_insecure).
        let keys = Keys::generate(shape, &Params::setup_insecure(Keys::k_of(shape))).unwrap();
        // Three writes per transfer (sender, recipient, fee recipient): steps / 3 transfers.
        let pre_root = tree.root();
        let native: Vec<_> = (0..steps as u64)
            .map(|i| tree.step(key(i * 7919 % 100_000), Some(key(1_000_000 + i))))
            .collect();
        let instances = Instances::of_steps(pre_root, &native, tx_digest([key(1)])).unwrap();
        let witness: Vec<_> = native
            .iter()
            .map(|s| circuit_step(s, depth).unwrap())
            .collect();
        let started = Instant::now();
        let proof = keys.prove(witness, &instances).unwrap();
        let prove = started.elapsed();
        let started = Instant::now();
        keys.verify(&instances, &proof).unwrap();
        let verify = started.elapsed();
        let batch_size = 100;
        let started = Instant::now();
        let cpu = process_cpu_seconds().unwrap_or(0.0);
        assert!(keys.verify_batch((0..batch_size).map(|_| (&instances, proof.as_slice()))));
        let batch = started.elapsed() / batch_size;
        let batch_cpu = (process_cpu_seconds().unwrap_or(0.0) - cpu) / f64::from(batch_size) * 1e3;
        println!(
            "steps {steps} depth {depth}: k={} keygen {:?}, prove {:?} ({:.2} s per step), \
             proof {} bytes, verify {:?}, batch of {batch_size} {:?} per proof ({batch_cpu:.2} ms \
             CPU), peak RSS {:.0} MiB",
            keys.k(),
            keys.generated_in(),
            prove,
            prove.as_secs_f64() / steps as f64,
            proof.len(),
            verify,
            batch,
            peak_mib()
        );
    }
}
