#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_primitives::{B256, keccak256};
use ff::Field;
use halo2_proofs::pasta::Fp;
use verity_commitment::{SparseMerkleTree, pasta::PoseidonPasta};

use super::*;

const DEPTH: usize = 8;

fn key(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

fn tree_with(keys: &[B256]) -> SparseMerkleTree<PoseidonPasta> {
    let mut tree = SparseMerkleTree::new(PoseidonPasta);
    tree.apply(keys.iter().map(|k| (*k, Some(*k))));
    tree
}

#[test]
fn a_real_proof_verifies_and_a_tampered_one_does_not() {
    let shape = Shape {
        steps: 4,
        depth: DEPTH,
    };
    let keys = Keys::generate(shape).unwrap();
    let base: Vec<B256> = (0..6).map(key).collect();
    let mut tree = tree_with(&base);
    let pre_root = tree.root();
    let steps = vec![
        tree.step(base[0], Some(B256::repeat_byte(1))),
        tree.step(key(50), Some(B256::repeat_byte(2))),
        tree.step(base[4], None),
    ];
    let tx = tx_digest([key(7)]);
    let instances = Instances::of_steps(pre_root, &steps, Fp::ZERO, Fp::ZERO, tx).unwrap();
    let witness = steps
        .iter()
        .map(|s| circuit_step(s, DEPTH).unwrap())
        .collect();
    let proof = keys.prove(witness, &instances).unwrap();
    keys.verify(&instances, &proof).unwrap();

    let mut flipped = proof.clone();
    flipped[proof.len() / 2] ^= 1;
    assert!(matches!(
        keys.verify(&instances, &flipped),
        Err(Error::Invalid)
    ));

    let mut other_chunk = instances;
    other_chunk.tx_hash = tx_digest([key(8)]);
    assert!(matches!(
        keys.verify(&other_chunk, &proof),
        Err(Error::Invalid)
    ));

    assert!(keys.verify_batch([
        (&instances, proof.as_slice()),
        (&instances, proof.as_slice())
    ]));
    assert!(!keys.verify_batch([
        (&instances, proof.as_slice()),
        (&instances, flipped.as_slice())
    ]));
}
