#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_primitives::{B256, keccak256};
use halo2_axiom::dev::MockProver;
use verity_commitment::{SparseMerkleTree, Step};

use super::*;

const DEPTH: usize = 8;

fn key(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

/// Updates, an insertion, a deletion and a read of an absent key over a small tree.
fn steps() -> (Vec<Step>, B256) {
    let base: Vec<B256> = (0..6).map(key).collect();
    let mut tree = SparseMerkleTree::new(PoseidonBn254);
    tree.apply(base.iter().map(|k| (*k, Some(*k))));
    let pre_root = tree.root();
    let steps = vec![
        tree.step(base[0], Some(B256::repeat_byte(1))),
        tree.step(key(50), Some(B256::repeat_byte(2))),
        tree.step(base[4], None),
        tree.step(key(60), None),
    ];
    (steps, pre_root)
}

fn witness(steps: &[Step]) -> Vec<CircuitStep> {
    steps
        .iter()
        .map(|s| circuit_step(s, DEPTH).unwrap())
        .collect()
}

fn mock(circuit: &ChunkCircuit, instances: &Instances) -> Result<(), String> {
    let shape = Shape {
        steps: circuit.steps.len(),
        depth: DEPTH,
    };
    let prover = MockProver::run(Keys::k_of(shape), circuit, vec![instances.to_vec()])
        .map_err(|e| e.to_string())?;
    prover.verify().map_err(|failures| format!("{failures:?}"))
}

#[test]
fn the_ported_circuit_accepts_honest_steps_and_rejects_a_wrong_root() {
    let (steps, pre_root) = steps();
    let instances = Instances::of_steps(pre_root, &steps, Fr::ZERO, Fr::ZERO, Fr::from(7)).unwrap();
    let mut witness = witness(&steps);
    witness.push(CircuitStep::padding(DEPTH));
    let circuit = ChunkCircuit {
        depth: DEPTH,
        steps: witness,
    };
    mock(&circuit, &instances).unwrap();

    let mut wrong = instances;
    wrong.post_root += Fr::ONE;
    assert!(mock(&circuit, &wrong).is_err());

    let mut forged = circuit.clone();
    forged.steps[0].after[1] += Fr::ONE;
    assert!(mock(&forged, &instances).is_err());
}

#[test]
fn a_kzg_proof_verifies_alone_and_in_a_batch_and_a_tampered_one_does_not() {
    let keys = Keys::generate(Shape {
        steps: 4,
        depth: DEPTH,
    })
    .unwrap();
    let (steps, pre_root) = steps();
    let instances = Instances::of_steps(pre_root, &steps, Fr::ZERO, Fr::ZERO, Fr::from(7)).unwrap();
    let proof = keys.prove(witness(&steps), &instances).unwrap();
    keys.verify(&instances, &proof).unwrap();

    let mut flipped = proof.clone();
    flipped[proof.len() / 2] ^= 1;
    assert!(matches!(
        keys.verify(&instances, &flipped),
        Err(Error::Invalid)
    ));
    let mut other_chunk = instances;
    other_chunk.tx_hash = Fr::from(8);
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
    assert!(!keys.verify_batch([
        (&instances, proof.as_slice()),
        (&other_chunk, proof.as_slice())
    ]));
}
