#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_primitives::{B256, keccak256};
use halo2_axiom::dev::MockProver;
use verity_commitment::{Poseidon2Bn254, SparseMerkleTree, Step};

use super::*;

const DEPTH: usize = 8;

fn key(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

/// A key sharing its first `bits` bits with `other` (ground by brute force, as an attacker
/// would, to force a split deep in the tree).
fn key_sharing(other: &B256, bits: usize, salt: u64) -> B256 {
    let mask = |k: &B256| u16::from_be_bytes([k[0], k[1]]) >> (16 - bits);
    (0u64..)
        .map(|n| keccak256([salt.to_be_bytes(), n.to_be_bytes()].concat()))
        .find(|k| mask(k) == mask(other) && k != other)
        .unwrap()
}

fn tree_with(keys: &[B256]) -> SparseMerkleTree<Poseidon2Bn254> {
    let mut tree = SparseMerkleTree::new(Poseidon2Bn254);
    tree.apply(keys.iter().map(|k| (*k, Some(*k))));
    tree
}

fn mock(steps: &[Step], pre_root: B256, capacity: usize) -> (ChunkCircuit, Instances) {
    let instances = Instances::of_steps(pre_root, steps, tx_digest([key(99)])).unwrap();
    (circuit_of(steps, capacity), instances)
}

fn circuit_of(steps: &[Step], capacity: usize) -> ChunkCircuit {
    let mut circuit_steps: Vec<CircuitStep> = steps
        .iter()
        .map(|s| circuit_step(s, DEPTH).unwrap())
        .collect();
    circuit_steps.resize_with(capacity, || CircuitStep::padding(DEPTH));
    ChunkCircuit {
        depth: DEPTH,
        steps: circuit_steps,
    }
}

fn run(circuit: &ChunkCircuit, instances: &Instances) -> Result<(), String> {
    let k = Keys::k_of(Shape {
        steps: circuit.steps.len(),
        depth: circuit.depth,
    });
    let public = instances
        .to_columns(circuit.steps.len())
        .ok_or("more entries than steps")?;
    let prover = MockProver::run(k, circuit, public).map_err(|e| e.to_string())?;
    prover.verify().map_err(|failures| format!("{failures:?}"))
}

/// Every kind of step: update, insertion into an empty subtree, insertion that splits
/// another key's leaf (with extension levels), a read of a present key, reads of absent keys
/// (empty terminal and another key's leaf), a zero write to a present key, and padding.
fn every_kind_of_step() -> (Vec<Step>, B256) {
    let base: Vec<B256> = (0..6).map(key).collect();
    let mut tree = tree_with(&base);
    let pre_root = tree.root();
    let deep = key_sharing(&base[0], 5, 1);
    let absent = (100..)
        .map(key)
        .find(|k| tree.prove(k).terminal.is_none())
        .unwrap();
    let absent_on_leaf = (200..)
        .map(key)
        .find(|k| tree.prove(k).terminal.is_some())
        .unwrap();
    let steps = vec![
        tree.step(base[1], Some(B256::repeat_byte(7))),
        tree.step(deep, Some(B256::repeat_byte(8))),
        tree.step(absent, Some(B256::repeat_byte(9))),
        tree.step(base[2], None),
        tree.step(absent_on_leaf, None),
        tree.step(key(300), Some(B256::ZERO)),
        tree.step(base[3], Some(B256::ZERO)),
    ];
    assert!(
        steps[1].new.siblings.len() > steps[1].old.siblings.len() + 1,
        "a deep split"
    );
    assert!(!steps[4].is_present && steps[4].old.terminal.is_some());
    (steps, pre_root)
}

#[test]
fn every_kind_of_step_satisfies_the_circuit() {
    let (steps, pre_root) = every_kind_of_step();
    let (circuit, instances) = mock(&steps, pre_root, steps.len() + 1);
    run(&circuit, &instances).unwrap();
}

#[test]
fn a_claimed_post_root_other_than_the_steps_is_rejected() {
    let (steps, pre_root) = every_kind_of_step();
    let (circuit, mut instances) = mock(&steps, pre_root, steps.len());
    instances.post_root += Fr::ONE;
    assert!(run(&circuit, &instances).is_err());
}

/// The public entries are exactly the steps': any other key, value before or after, an entry
/// more (in a disabled step) or one fewer (an enabled step left out) is refused.
#[test]
fn public_entries_other_than_the_steps_are_rejected() {
    let (steps, pre_root) = every_kind_of_step();
    let (circuit, honest) = mock(&steps, pre_root, steps.len() + 1);
    run(&circuit, &honest).unwrap();
    type Lie = (&'static str, fn(&mut Instances));
    let lies: [Lie; 6] = [
        ("a key", |i| i.entries[0].key[1] += Fr::ONE),
        ("a value before", |i| i.entries[1].before[0] += Fr::ONE),
        ("a value after", |i| i.entries[2].after[1] += Fr::ONE),
        // Entry 3 reads a present key.
        ("a read claimed as a write", |i| {
            i.entries[3].after = [Fr::ONE, Fr::ZERO]
        }),
        ("an entry in the disabled step", |i| {
            i.entries
                .push(PublicEntry::new(&key(77), &B256::ZERO, &key(78)));
        }),
        ("an entry left out", |i| {
            i.entries.pop();
        }),
    ];
    for (what, lie) in lies {
        let mut forged = honest.clone();
        lie(&mut forged);
        assert!(run(&circuit, &forged).is_err(), "{what}");
    }
}

#[test]
fn a_zero_write_to_an_absent_key_cannot_plant_a_tombstone() {
    // The tree drops a zero write to an absent key (the honest step keeps the root). A prover
    // could instead claim a new leaf holding zero: the same reads and writes, another post-root.
    let mut tree = tree_with(&(0..6).map(key).collect::<Vec<_>>());
    let pre_root = tree.root();
    let absent = (100..)
        .map(key)
        .find(|k| tree.prove(k).terminal.is_none())
        .unwrap();
    let honest = tree.clone().step(absent, Some(B256::ZERO));
    assert!(!honest.is_present);
    let (circuit, instances) = mock(std::slice::from_ref(&honest), pre_root, 2);
    run(&circuit, &instances).unwrap();
    // The forgery: the insertion of a value, with the value set to zero.
    let mut tombstone = tree.step(absent, Some(B256::repeat_byte(5)));
    tombstone.after = B256::ZERO;
    tombstone.new.terminal = Some((absent, B256::ZERO));
    let (circuit, forged) = mock(std::slice::from_ref(&tombstone), pre_root, 2);
    assert_eq!(
        forged.entries, instances.entries,
        "the same reads and writes"
    );
    assert_ne!(forged.post_root, instances.post_root, "another root");
    assert!(
        run(&circuit, &forged).is_err(),
        "a tombstone planted by a zero write"
    );
}

#[test]
fn a_write_the_tree_did_not_make_is_rejected() {
    let (steps, pre_root) = every_kind_of_step();
    let (mut circuit, instances) = mock(&steps, pre_root, steps.len());
    // Claim a different value after the first update; the roots no longer chain.
    circuit.steps[0].after[1] += Fr::ONE;
    assert!(run(&circuit, &instances).is_err());
}

#[test]
fn a_present_key_cannot_be_read_as_absent() {
    let base: Vec<B256> = (0..6).map(key).collect();
    let mut tree = tree_with(&base);
    let pre_root = tree.root();
    let honest = tree.step(base[1], None);
    let (mut circuit, mut instances) = mock(std::slice::from_ref(&honest), pre_root, 1);
    // Pretend the key's own leaf is another key's, to read zero instead of its value.
    let step = &mut circuit.steps[0];
    step.old_terminal = Terminal::Other(step.key, step.before);
    step.new_is_leaf = false;
    step.before = [Fr::ZERO; 2];
    step.after = [Fr::ZERO; 2];
    instances.entries[0] = PublicEntry::new(&base[1], &B256::ZERO, &B256::ZERO);
    let failure = run(&circuit, &instances).unwrap_err();
    assert!(failure.contains("keys differ"), "{failure}");
}

/// Claims that a split step's two keys diverge one level above where they do.
fn split_one_level_early(step: &mut CircuitStep) {
    let depth = step.new_depth;
    step.new_siblings[depth - 2] = step.new_siblings[depth - 1];
    step.new_siblings[depth - 1] = Fr::ZERO;
    step.new_depth = depth - 1;
}

/// Two keys agreeing on their first 250 bits (only a birthday search on keccak256 could give
/// two such keys; the tree takes any): their paths are 251 levels long, past the 128 bits of the
/// high limb, and the deep shape proves writes to both, the directions below level 128 taken
/// from the low limb. The same split claimed one level early is refused.
#[test]
fn paths_longer_than_the_high_limb_are_proven_with_the_low_limbs_bits() {
    let near = key(1);
    let mut far = near;
    far[31] ^= 0x20; // bit 250 from the most significant
    let mut tree = tree_with(&[key(0), near, key(2)]);
    let pre_root = tree.root();
    let steps = vec![
        tree.step(near, Some(B256::repeat_byte(3))),
        tree.step(far, Some(B256::repeat_byte(4))),
    ];
    assert_eq!(steps[1].new.siblings.len(), 251);
    let shape = Shape {
        steps: 2,
        depth: Shape::DEEP.depth,
    };
    let instances = Instances::of_steps(pre_root, &steps, tx_digest([key(99)])).unwrap();
    let circuit = ChunkCircuit::padded(
        shape,
        steps
            .iter()
            .map(|s| circuit_step(s, shape.depth).unwrap())
            .collect(),
    )
    .unwrap();
    run(&circuit, &instances).unwrap();

    let mut early = circuit.clone();
    split_one_level_early(&mut early.steps[1]);
    let failure = run(&early, &instances).unwrap_err();
    assert!(failure.contains("path link"), "{failure}");
}

#[test]
fn a_leaf_cannot_be_placed_off_its_keys_path() {
    // Split a leaf but claim the two keys diverge one level early: the bit check fails.
    let base = vec![key(0)];
    let mut tree = tree_with(&base);
    let pre_root = tree.root();
    let deep = key_sharing(&base[0], 4, 2);
    let honest = tree.step(deep, Some(B256::repeat_byte(1)));
    let (mut circuit, instances) = mock(std::slice::from_ref(&honest), pre_root, 1);
    split_one_level_early(&mut circuit.steps[0]);
    let failure = run(&circuit, &instances).unwrap_err();
    assert!(failure.contains("path link"), "{failure}");
}

#[test]
fn a_real_proof_verifies_and_a_tampered_one_does_not() {
    let shape = Shape {
        steps: 4,
        depth: DEPTH,
    };
    let keys = Keys::generate(shape, &Params::setup_insecure(Keys::k_of(shape))).unwrap();
    let base: Vec<B256> = (0..6).map(key).collect();
    let mut tree = tree_with(&base);
    let pre_root = tree.root();
    let steps = vec![
        tree.step(base[0], Some(B256::repeat_byte(1))),
        tree.step(key(50), Some(B256::repeat_byte(2))),
        tree.step(base[4], None),
    ];
    let tx = tx_digest([key(7)]);
    let instances = Instances::of_steps(pre_root, &steps, tx).unwrap();
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

    let mut other_chunk = instances.clone();
    other_chunk.tx_hash = tx_digest([key(8)]);
    assert!(matches!(
        keys.verify(&other_chunk, &proof),
        Err(Error::Invalid)
    ));
    let mut other_write = instances.clone();
    other_write.entries[0].after[1] += Fr::ONE;
    assert!(matches!(
        keys.verify(&other_write, &proof),
        Err(Error::Invalid)
    ));
    let mut too_many = instances.clone();
    too_many
        .entries
        .resize(shape.steps + 1, instances.entries[0]);
    assert!(matches!(
        keys.verify(&too_many, &proof),
        Err(Error::TooManySteps { .. })
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

#[test]
fn segments_chain_their_roots() {
    let base: Vec<B256> = (0..4).map(key).collect();
    let mut tree = tree_with(&base);
    let pre_root = tree.root();
    let steps: Vec<Step> = (0..4)
        .map(|i| tree.step(base[i], Some(B256::repeat_byte(i as u8 + 1))))
        .collect();
    let tx = tx_digest([]);
    let whole = Instances::of_steps(pre_root, &steps, tx).unwrap();
    let first = Instances::of_steps(pre_root, &steps[..2], tx).unwrap();
    let mid = B256::from(first.post_root.to_repr());
    let second = Instances::of_steps(mid, &steps[2..], tx).unwrap();
    assert_eq!(second.post_root, whole.post_root);
    assert_eq!(
        [first.entries.as_slice(), &second.entries].concat(),
        whole.entries
    );
    for (segment, instances) in [(&steps[..2], first), (&steps[2..], second)] {
        run(&circuit_of(segment, 2), &instances).unwrap();
    }
}

mod mutation;
