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
