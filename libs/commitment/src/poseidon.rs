//! The tree hasher for circuits over the Pasta field: Poseidon `P128Pow5T3` (width 3, rate 2,
//! x^5 S-box, 8 full and 56 partial rounds), the same permutation as the in-circuit `Pow5Chip`
//! of `halo2_gadgets`, computed natively by `halo2_poseidon`.
//!
//! - `leaf(key, value) = Poseidon_ConstantLength<4>(key_hi, key_lo, value_hi, value_lo)`: the
//!   32-byte key and value each enter as two 128-bit limbs, so nothing is truncated to fit the
//!   255-bit field (two permutations).
//! - `node(left, right) = Poseidon_ConstantLength<2>(left, right)` (one permutation).
//!
//! The input length is part of Poseidon's capacity element, which keeps the leaf and node domains
//! apart. Digests are field elements in their canonical 32-byte little-endian encoding. A
//! 32-byte string that is not a canonical element (only a forged proof holds one) is hashed in a
//! third domain, `ConstantLength<5>` over its limbs, so it can never reproduce an honest digest.

use alloy_primitives::B256;
use ff::{Field, PrimeField};
use halo2_poseidon::{ConstantLength, Hash, P128Pow5T3};
use pasta_curves::Fp;

use crate::TreeHasher;

/// Poseidon over the Pasta base field (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct PoseidonPasta;

/// A 32-byte string as two 128-bit limbs, high first.
fn limbs(bytes: &B256) -> [Fp; 2] {
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&bytes[..16]);
    lo.copy_from_slice(&bytes[16..]);
    [
        Fp::from_u128(u128::from_be_bytes(hi)),
        Fp::from_u128(u128::from_be_bytes(lo)),
    ]
}

/// A digest as the field element it encodes, if it is canonical.
pub fn element(digest: &B256) -> Option<Fp> {
    Option::from(Fp::from_repr(digest.0))
}

/// A field element as a digest.
pub fn digest(element: Fp) -> B256 {
    B256::from(element.to_repr())
}

fn hash<const L: usize>(message: [Fp; L]) -> Fp {
    Hash::<Fp, P128Pow5T3, ConstantLength<L>, 3, 2>::init().hash(message)
}

impl TreeHasher for PoseidonPasta {
    fn leaf(&self, key: &B256, value: &B256) -> B256 {
        let [key_hi, key_lo] = limbs(key);
        let [value_hi, value_lo] = limbs(value);
        digest(hash([key_hi, key_lo, value_hi, value_lo]))
    }

    fn node(&self, left: &B256, right: &B256) -> B256 {
        match (element(left), element(right)) {
            (Some(left), Some(right)) => digest(hash([left, right])),
            _ => {
                let [a, b] = limbs(left);
                let [c, d] = limbs(right);
                digest(hash([a, b, c, d, Fp::ONE]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{EMPTY, SparseMerkleTree, account_key};

    #[test]
    fn the_permutation_is_halo2s_reference() {
        // The published test vectors of P128Pow5T3 over Fp, hashing two elements.
        let vectors = halo2_poseidon::test_vectors::fp::hash();
        assert!(!vectors.is_empty());
        for vector in vectors {
            let node =
                PoseidonPasta.node(&B256::from(vector.input[0]), &B256::from(vector.input[1]));
            assert_eq!(node, B256::from(vector.output));
        }
    }

    #[test]
    fn digests_are_canonical_and_domains_differ() {
        let key = account_key(alloy_primitives::Address::repeat_byte(3));
        let value = B256::repeat_byte(0xff);
        let leaf = PoseidonPasta.leaf(&key, &value);
        assert!(element(&leaf).is_some());
        assert_ne!(leaf, EMPTY);
        let node = PoseidonPasta.node(&leaf, &EMPTY);
        assert_ne!(node, leaf);
        // A non-canonical sibling (all ones exceeds the modulus) hashes, in its own domain.
        let forged = B256::repeat_byte(0xff);
        assert!(element(&forged).is_none());
        assert_ne!(PoseidonPasta.node(&forged, &EMPTY), node);
        assert_eq!(element(&digest(Fp::ONE.double())), Some(Fp::from(2)));
    }

    #[test]
    fn a_poseidon_tree_proves_membership() {
        let mut tree = SparseMerkleTree::new(PoseidonPasta);
        let keys: Vec<B256> = (0..40u64)
            .map(|n| alloy_primitives::keccak256(n.to_be_bytes()))
            .collect();
        let root = tree.apply(keys.iter().map(|k| (*k, Some(*k))));
        for k in &keys {
            tree.prove(k)
                .verify(&PoseidonPasta, root, k, Some(k))
                .unwrap();
        }
        let absent = alloy_primitives::keccak256(b"absent");
        tree.prove(&absent)
            .verify(&PoseidonPasta, root, &absent, None)
            .unwrap();
    }
}
