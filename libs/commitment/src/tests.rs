#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn key(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

/// Keys that share long prefixes, to exercise deep paths: `n` in the last byte only.
fn near_key(n: u8) -> B256 {
    let mut k = B256::repeat_byte(0xa5);
    k[31] = n;
    k
}

#[test]
fn an_empty_tree_has_the_empty_root_and_proves_absence() {
    let tree = SparseMerkleTree::<Keccak>::default();
    assert_eq!(tree.root(), EMPTY);
    let proof = tree.prove(&key(1));
    assert!(proof.siblings.is_empty());
    proof.verify(&Keccak, EMPTY, &key(1), None).unwrap();
}

#[test]
fn a_single_leaf_is_the_root() {
    let mut tree = SparseMerkleTree::<Keccak>::default();
    let root = tree.apply([(key(1), Some(key(100)))]);
    assert_eq!(root, Keccak.leaf(&key(1), &key(100)));
    tree.prove(&key(1))
        .verify(&Keccak, root, &key(1), Some(&key(100)))
        .unwrap();
    // Another key's absence is proven by the one leaf sharing its (empty) path.
    let absent = tree.prove(&key(2));
    assert_eq!(absent.terminal, Some((key(1), key(100))));
    absent.verify(&Keccak, root, &key(2), None).unwrap();
}

#[test]
fn deep_shared_prefixes_and_removal_back_to_empty() {
    let mut tree = SparseMerkleTree::<Keccak>::default();
    let updates: Vec<Update> = (0..=255u8)
        .map(|n| (near_key(n), Some(key(n.into()))))
        .collect();
    let root = tree.apply(updates);
    let expected: BTreeMap<B256, B256> =
        (0..=255u8).map(|n| (near_key(n), key(n.into()))).collect();
    assert_eq!(root, root_of(&Keccak, &expected));
    let proof = tree.prove(&near_key(7));
    assert_eq!(proof.siblings.len(), 256);
    proof
        .verify(&Keccak, root, &near_key(7), Some(&key(7)))
        .unwrap();
    let root = tree.apply((0..=255u8).map(|n| (near_key(n), None)));
    assert_eq!(root, EMPTY);
    assert!(
        tree.nodes.is_empty(),
        "internal digests of removed leaves are forgotten"
    );
}

#[test]
fn tampered_proofs_and_false_claims_are_rejected() {
    let mut tree = SparseMerkleTree::<Keccak>::default();
    let root = tree.apply((0..64).map(|n| (key(n), Some(key(n + 1000)))));
    let proof = tree.prove(&key(5));
    proof
        .verify(&Keccak, root, &key(5), Some(&key(1005)))
        .unwrap();
    assert_eq!(
        proof.verify(&Keccak, root, &key(5), Some(&key(1006))),
        Err(ProofError::WrongTerminal)
    );
    assert_eq!(
        proof.verify(&Keccak, root, &key(5), None),
        Err(ProofError::WrongTerminal)
    );
    let mut flipped = proof.clone();
    flipped.siblings[0].0[0] ^= 1;
    assert!(matches!(
        flipped.verify(&Keccak, root, &key(5), Some(&key(1005))),
        Err(ProofError::RootMismatch { .. })
    ));
    let mut padded = proof.clone();
    padded.siblings.push(EMPTY);
    assert!(
        padded
            .verify(&Keccak, root, &key(5), Some(&key(1005)))
            .is_err()
    );
    // A present key cannot be proven absent with another key's proof.
    let other = tree.prove(&key(6));
    assert!(other.verify(&Keccak, root, &key(5), None).is_err());
    // An absent key is proven absent, and cannot be proven present.
    let absent = tree.prove(&key(999));
    absent.verify(&Keccak, root, &key(999), None).unwrap();
    assert!(
        absent
            .verify(&Keccak, root, &key(999), Some(&key(1)))
            .is_err()
    );
}

#[test]
fn account_and_storage_keys_are_domain_separated() {
    let address = Address::repeat_byte(1);
    assert_ne!(account_key(address), storage_key(address, U256::ZERO));
    assert_ne!(
        storage_key(address, U256::from(1)),
        storage_key(Address::repeat_byte(2), U256::from(1))
    );
    let account = Account {
        nonce: 1,
        ..Account::default()
    };
    assert_ne!(account_value(&account), account_value(&Account::default()));
}

/// Number of subtrees with two or more leaves: exactly the digests the tree must cache.
fn internal_nodes(leaves: &[B256], depth: usize) -> usize {
    if leaves.len() < 2 {
        return 0;
    }
    let split = leaves.partition_point(|k| !bit(k, depth));
    let (left, right) = leaves.split_at(split);
    1 + internal_nodes(left, depth + 1) + internal_nodes(right, depth + 1)
}

/// Applies `batch` (key index, value index or removal) to the tree and to the model, then
/// checks the root and the node cache against the definition.
fn apply_and_check(
    tree: &mut SparseMerkleTree<Keccak>,
    model: &mut BTreeMap<B256, B256>,
    batch: &[(u64, Option<u64>)],
) -> Result<(), TestCaseError> {
    let updates: Vec<Update> = batch
        .iter()
        .map(|(k, v)| (key(*k), v.map(|v| key(v + 10_000))))
        .collect();
    for (k, v) in &updates {
        match v {
            Some(v) => model.insert(*k, *v),
            None => model.remove(k),
        };
    }
    let root = tree.apply(updates);
    prop_assert_eq!(root, root_of(&Keccak, model));
    let keys: Vec<B256> = model.keys().copied().collect();
    prop_assert_eq!(
        tree.nodes.len(),
        internal_nodes(&keys, 0),
        "no stale digests kept"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of batches gives the root of the final leaf set computed from scratch, and
    /// every key, present or not, has a proof that verifies against it.
    #[test]
    fn incremental_batches_match_the_definition(
        batches in prop::collection::vec(
            prop::collection::vec((0u64..200, prop::option::of(0u64..5)), 0..40),
            1..8,
        )
    ) {
        let mut tree = SparseMerkleTree::<Keccak>::default();
        let mut model: BTreeMap<B256, B256> = BTreeMap::new();
        for batch in &batches {
            apply_and_check(&mut tree, &mut model, batch)?;
        }
        let root = tree.root();
        for k in 0..200u64 {
            let k = key(k);
            let proof = tree.prove(&k);
            prop_assert!(proof.verify(&Keccak, root, &k, model.get(&k)).is_ok());
        }
    }

    /// Batches big enough to hash subtrees on several cores (both sides of the top nodes hold
    /// more than `PARALLEL_MIN_KEYS` touched keys), with inserts, updates and removals, give
    /// the same roots and the same node cache as the definition.
    #[test]
    fn large_parallel_batches_match_the_definition(
        batches in prop::collection::vec(
            prop::collection::vec((0u64..1_500, prop::option::of(0u64..5)), 200..600),
            1..4,
        )
    ) {
        let mut tree = SparseMerkleTree::<Keccak>::default();
        let mut model: BTreeMap<B256, B256> = BTreeMap::new();
        for batch in &batches {
            apply_and_check(&mut tree, &mut model, batch)?;
        }
    }

    /// The root depends on the leaf set only, not on the order or batching of writes.
    #[test]
    fn the_root_is_order_independent(keys in prop::collection::btree_set(0u64..10_000, 0..60)) {
        let mut forward = SparseMerkleTree::<Keccak>::default();
        forward.apply(keys.iter().map(|k| (key(*k), Some(key(*k + 1)))));
        let mut backward = SparseMerkleTree::<Keccak>::default();
        for k in keys.iter().rev() {
            backward.apply([(key(*k), Some(key(*k + 1)))]);
        }
        prop_assert_eq!(forward.root(), backward.root());
    }

    /// Steps one key at a time chain their roots, agree with a batch of the same writes (zero
    /// writes kept as tombstones, zero writes to absent keys dropped), and say what each key
    /// held before and after.
    #[test]
    fn steps_chain_roots_and_match_batches(
        ops in prop::collection::vec((0u64..40, prop::option::of(0u64..4)), 1..60)
    ) {
        let mut tree = SparseMerkleTree::<Keccak>::default();
        let mut model: BTreeMap<B256, B256> = BTreeMap::new();
        for (k, write) in &ops {
            let k = key(*k);
            let write = write.map(|v| if v == 0 { B256::ZERO } else { key(v + 500) });
            let before_root = tree.root();
            let step = tree.step(k, write);
            prop_assert_eq!(step.before, model.get(&k).copied().unwrap_or(B256::ZERO));
            prop_assert_eq!(step.was_present, model.contains_key(&k));
            match write {
                Some(v) if v == B256::ZERO && !model.contains_key(&k) => {}
                Some(v) => { model.insert(k, v); }
                None => {}
            }
            prop_assert_eq!(step.after, model.get(&k).copied().unwrap_or(B256::ZERO));
            prop_assert_eq!(step.roots(&Keccak).unwrap(), (before_root, tree.root()));
            prop_assert_eq!(tree.root(), root_of(&Keccak, &model));
        }
    }
}

/// A chunk's worth of touched keys (index, write) over a preloaded tree: the partial tree built
/// from the full tree's proofs of those keys steps exactly as the full tree does, and ends
/// where one batch of the same writes ends.
fn partial_steps_match(
    preload: &[u64],
    touched: &BTreeMap<u64, Option<u64>>,
) -> Result<(), TestCaseError> {
    let mut full = SparseMerkleTree::<Keccak>::default();
    full.apply(preload.iter().map(|k| (key(*k), Some(key(k + 1)))));
    let keys: Vec<B256> = touched.keys().map(|k| key(*k)).collect();
    let writes: Vec<Option<B256>> = touched
        .values()
        .map(|w| w.map(|v| if v == 0 { EMPTY } else { key(v + 900) }))
        .collect();
    let pre_root = full.root();
    let proofs = full.prove_many(&keys);
    let mut batch = full.clone();
    let batch_root = batch.write_batch(
        keys.iter()
            .zip(&writes)
            .filter_map(|(k, w)| w.map(|w| (*k, w))),
    );
    let mut partial = PartialTree::from_proofs(Keccak, pre_root, keys.iter().zip(&proofs))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (k, w) in keys.iter().zip(&writes) {
        let expected = full.step(*k, *w);
        let derived = partial
            .step(*k, *w)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(derived, expected);
    }
    prop_assert_eq!(partial.root(), full.root());
    prop_assert_eq!(batch_root, full.root());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Reads, updates, inserts, zero writes to present and absent keys, keys next to each other:
    /// derived steps are the full tree's.
    #[test]
    fn partial_trees_step_as_the_full_tree(
        preload in prop::collection::vec(0u64..300, 0..200),
        touched in prop::collection::btree_map(0u64..400, prop::option::of(0u64..4), 0..40),
    ) {
        partial_steps_match(&preload, &touched)?;
    }
}

#[test]
fn partial_trees_step_as_the_full_tree_on_deep_paths() {
    // Keys sharing 248 bits: proofs 250 levels deep, splits far down.
    let mut full = SparseMerkleTree::<Keccak>::default();
    full.apply((0..8u8).map(|n| (near_key(n * 2), Some(key(u64::from(n))))));
    let keys: Vec<B256> = [1u8, 2, 9, 200].map(near_key).to_vec();
    let proofs = full.prove_many(&keys);
    let mut partial =
        PartialTree::from_proofs(Keccak, full.root(), keys.iter().zip(&proofs)).unwrap();
    for (i, k) in keys.iter().enumerate() {
        let write = (i != 1).then(|| key(77 + i as u64));
        assert_eq!(partial.step(*k, write).unwrap(), full.step(*k, write));
    }
    assert_eq!(partial.root(), full.root());
}

#[test]
fn partial_trees_refuse_what_the_proofs_do_not_cover_or_contradict() {
    let mut full = SparseMerkleTree::<Keccak>::default();
    full.apply((0..100u64).map(|k| (key(k), Some(key(k)))));
    let root = full.root();
    let keys = [key(3), key(50)];
    let proofs = full.prove_many(&keys);
    let mut partial = PartialTree::from_proofs(Keccak, root, keys.iter().zip(&proofs)).unwrap();
    assert_eq!(partial.get(&key(3)).unwrap(), Some(key(3)));
    // A key whose path leaves the proven paths.
    let outside = (100..10_000u64)
        .map(key)
        .find(|k| partial.get(k).is_err())
        .unwrap();
    assert_eq!(
        partial.step(outside, Some(key(1))),
        Err(PartialError::NotCovered(outside))
    );
    // Proofs against another root.
    assert!(matches!(
        PartialTree::from_proofs(Keccak, key(1), keys.iter().zip(&proofs)),
        Err(PartialError::RootMismatch { .. })
    ));
    // A proof that lies about a value.
    let mut lying = proofs.clone();
    lying[0].terminal = Some((key(3), key(4)));
    assert!(matches!(
        PartialTree::from_proofs(Keccak, root, keys.iter().zip(&lying)),
        Err(PartialError::RootMismatch { .. })
    ));
    // Two proofs that disagree about a sibling both leave unopened (the top levels of two
    // keys sharing 254 bits).
    let near = [near_key(1), near_key(2)];
    let mut shared = SparseMerkleTree::<Keccak>::default();
    shared.apply([near_key(1), near_key(2), near_key(3)].map(|k| (k, Some(k))));
    let mut near_proofs = shared.prove_many(&near);
    near_proofs[1].siblings[0] = key(9);
    assert_eq!(
        PartialTree::from_proofs(Keccak, shared.root(), near.iter().zip(&near_proofs)).err(),
        Some(PartialError::Conflict(near_key(2)))
    );
    // A forged sibling only one proof has changes the root.
    let mut near_proofs = shared.prove_many(&near);
    let last = near_proofs[1].siblings.len() - 1;
    near_proofs[1].siblings[last] = key(9);
    assert!(matches!(
        PartialTree::from_proofs(Keccak, shared.root(), near.iter().zip(&near_proofs)),
        Err(PartialError::RootMismatch { .. })
    ));
    // A terminal leaf off the key's path.
    let mut off = proofs;
    off[1].terminal = Some((key(3), key(3)));
    assert!(matches!(
        PartialTree::from_proofs(Keccak, root, keys.iter().zip(&off)),
        Err(PartialError::Proof { .. } | PartialError::RootMismatch { .. })
    ));
}
