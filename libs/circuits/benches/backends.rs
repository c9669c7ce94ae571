//! The backend comparison of ADR 0007 on the chunk circuit: zcash `halo2_proofs` (IPA over
//! Pasta) against `halo2-axiom` (KZG over BN254, SHPLONK, production), the same constraint
//! system, the same workload (a 100,000-leaf state tree, random keys updated), same run.
//!
//! `cargo bench -p verity-circuits --features ipa --bench backends` (part of `make bench`).
//! Each backend and size runs in its own child process, so peak memory is per case.
//! `-- <ipa|kzg> <steps>` runs one case. Prints figures; asserts nothing about time.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use common::{key, peak_mib};
use verity_circuits::{Shape, ipa};
use verity_commitment::{Poseidon2Bn254, SparseMerkleTree, Step, TreeHasher, pasta::PoseidonPasta};

const LEAVES: u64 = 100_000;
const DEPTH: usize = 32;
const BATCH: u32 = 100;

/// The tree and the native steps of `steps` updates of existing keys.
fn workload<H: TreeHasher>(hasher: H, steps: usize) -> (B256, Vec<Step>) {
    let mut tree = SparseMerkleTree::new(hasher);
    tree.apply((0..LEAVES).map(|n| (key(n), Some(key(n + 1)))));
    let pre_root = tree.root();
    let native = (0..steps as u64)
        .map(|i| tree.step(key(i * 7919 % LEAVES), Some(key(1_000_000 + i))))
        .collect();
    (pre_root, native)
}

struct Figures {
    k: u32,
    keygen: Duration,
    prove: Duration,
    size: usize,
    verify: Duration,
    batch: Duration,
}

/// Times one proof, its verification alone, and a batch of `BATCH` copies of it.
fn measure(
    k: u32,
    keygen: Duration,
    prove: impl FnOnce() -> Vec<u8>,
    verify: impl Fn(&[u8]) -> bool,
    verify_batch: impl Fn(&[u8]) -> bool,
) -> Figures {
    let started = Instant::now();
    let proof = prove();
    let prove = started.elapsed();
    let started = Instant::now();
    assert!(verify(&proof));
    let verify = started.elapsed();
    let started = Instant::now();
    assert!(verify_batch(&proof));
    Figures {
        k,
        keygen,
        prove,
        size: proof.len(),
        verify,
        batch: started.elapsed() / BATCH,
    }
}

fn ipa(steps: usize) -> Figures {
    use ipa::{Instances, Keys, circuit_step, tx_digest};
    let (pre_root, native) = workload(PoseidonPasta, steps);
    let keys = Keys::generate(Shape {
        steps,
        depth: DEPTH,
    })
    .unwrap();
    let zero = verity_commitment::pasta::limbs(&B256::ZERO)[0];
    let instances =
        Instances::of_steps(pre_root, &native, zero, zero, tx_digest([key(1)])).unwrap();
    let witness = native
        .iter()
        .map(|s| circuit_step(s, DEPTH).unwrap())
        .collect();
    measure(
        keys.k(),
        keys.generated_in(),
        || keys.prove(witness, &instances).unwrap(),
        |proof| keys.verify(&instances, proof).is_ok(),
        |proof| keys.verify_batch((0..BATCH).map(|_| (&instances, proof))),
    )
}

fn kzg(steps: usize) -> Figures {
    use verity_circuits::{Field, Fr, Instances, Keys, Params, circuit_step};
    let (pre_root, native) = workload(Poseidon2Bn254, steps);
    let shape = Shape {
        steps,
        depth: DEPTH,
    };
    let keys = Keys::generate(shape, &Params::setup_insecure(Keys::k_of(shape))).unwrap();
    let instances =
        Instances::of_steps(pre_root, &native, Fr::ZERO, Fr::ZERO, Fr::from(1)).unwrap();
    let witness = native
        .iter()
        .map(|s| circuit_step(s, DEPTH).unwrap())
        .collect();
    measure(
        keys.k(),
        keys.generated_in(),
        || keys.prove(witness, &instances).unwrap(),
        |proof| keys.verify(&instances, proof).is_ok(),
        |proof| keys.verify_batch((0..BATCH).map(|_| (&instances, proof))),
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let [backend, steps] = args.as_slice() {
        let steps: usize = steps.parse().expect("steps is a number");
        let figures = match backend.as_str() {
            "ipa" => ipa(steps),
            "kzg" => kzg(steps),
            other => panic!("unknown backend {other}: ipa or kzg"),
        };
        println!(
            "{backend} steps {steps} depth {DEPTH}: k={} keygen {:.1?}, prove {:.2?} \
             ({:.2} s per step), proof {} bytes, verify {:.1?}, batch of {BATCH} {:.2?} per \
             proof, peak RSS {:.0} MiB",
            figures.k,
            figures.keygen,
            figures.prove,
            figures.prove.as_secs_f64() / steps as f64,
            figures.size,
            figures.verify,
            figures.batch,
            peak_mib()
        );
        return;
    }
    let me = std::env::current_exe().expect("the bench binary");
    println!("tree of {LEAVES} leaves, {BATCH} proofs per batch; one process per case");
    for steps in [4usize, 8] {
        for backend in ["ipa", "kzg"] {
            let status = Command::new(&me)
                .args([backend, &steps.to_string()])
                .status()
                .expect("run a case");
            assert!(status.success(), "{backend} {steps} failed");
        }
    }
}
