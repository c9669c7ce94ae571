//! The circuit-friendly tree hasher, width 3, rate 2, x^5 S-box: Poseidon2 over BN254's scalar
//! field ([`bn254::Poseidon2Bn254`], 8 external and 56 internal rounds: the state tree's hash,
//! the field of the KZG chunk proofs), the permutation its in-circuit chip constrains, in this
//! sponge:
//!
//! - `leaf(key, value) = Poseidon_ConstantLength<4>(key_hi, key_lo, value_hi, value_lo)`: the
//!   32-byte key and value each enter as two 128-bit limbs, so nothing is truncated to fit the
//!   field (two permutations).
//! - `node(left, right) = Poseidon_ConstantLength<2>(left, right)` (one permutation).
//!
//! [`bn254`] documents and tests Poseidon2. (Poseidon over Pasta, the hash of the IPA backend
//! that ADR 0007 rejected, was removed with that backend; it is in git history before 2026-12-04.)
//!
//! The input length is part of the sponge's capacity element, which keeps the leaf and node domains
//! apart. Digests are field elements in their canonical 32-byte little-endian encoding. A
//! 32-byte string that is not a canonical element (only a forged proof holds one) is hashed in a
//! third domain, `ConstantLength<5>` over its limbs, so it can never reproduce an honest digest.

/// The sponge, digest encoding and tree hasher over one field, given its width-3 permutation
/// `permute` in scope. A macro so that another field's hasher (with its own version of the `ff`
/// traits) can be added without rewriting it; one field uses it today.
macro_rules! sponge_over {
    ($field:ty, $hasher:ident, $doc:literal) => {
        use alloy_primitives::B256;

        use crate::TreeHasher;

        #[doc = $doc]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $hasher;

        /// A 32-byte string as two 128-bit limbs, high first (how keys and values enter the hash).
        pub fn limbs(bytes: &B256) -> [$field; 2] {
            let mut hi = [0u8; 16];
            let mut lo = [0u8; 16];
            hi.copy_from_slice(&bytes[..16]);
            lo.copy_from_slice(&bytes[16..]);
            [
                small(u128::from_be_bytes(hi)),
                small(u128::from_be_bytes(lo)),
            ]
        }

        /// A 128-bit integer as a field element, through its canonical encoding (one Montgomery
        /// multiplication; `from_u128` doubles 64 times).
        #[inline]
        fn small(value: u128) -> $field {
            let mut repr = <$field as PrimeField>::Repr::default();
            repr.as_mut()[..16].copy_from_slice(&value.to_le_bytes());
            Option::from(<$field>::from_repr(repr)).expect("below 2^128 is below the modulus")
        }

        /// A digest as the field element it encodes, if it is canonical.
        pub fn element(digest: &B256) -> Option<$field> {
            Option::from(<$field>::from_repr(digest.0))
        }

        /// A field element as a digest.
        pub fn digest(element: $field) -> B256 {
            B256::from(element.to_repr())
        }

        /// Poseidon `ConstantLength<L>` (width 3, rate 2): capacity element `L · 2^64` (one
        /// output), input zero-padded to a multiple of the rate.
        pub fn hash<const L: usize>(message: [$field; L]) -> $field {
            hash_in_domain(message, 0)
        }

        /// [`hash`] in sponge domain `domain`: capacity element `L · 2^64 + domain`, so that
        /// hashes of one purpose can never be taken for another's of the same length (domain
        /// 0 is the tree's).
        pub fn hash_in_domain<const L: usize>(message: [$field; L], domain: u64) -> $field {
            let capacity = ((L as u128) << 64) | u128::from(domain);
            let mut state = [<$field>::ZERO, <$field>::ZERO, small(capacity)];
            for chunk in message.chunks(2) {
                state[0] += chunk[0];
                if let Some(second) = chunk.get(1) {
                    state[1] += second;
                }
                permute(&mut state);
            }
            state[0]
        }

        impl TreeHasher for $hasher {
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
                        digest(hash([a, b, c, d, <$field>::ONE]))
                    }
                }
            }
        }
    };
}

pub mod bn254;

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::B256;

    use crate::{EMPTY, SparseMerkleTree, TreeHasher, account_key};

    pub(crate) fn digests_are_canonical_and_domains_differ<H: TreeHasher>(
        hasher: H,
        element_of: impl Fn(&B256) -> bool,
    ) {
        let key = account_key(alloy_primitives::Address::repeat_byte(3));
        let value = B256::repeat_byte(0xff);
        let leaf = hasher.leaf(&key, &value);
        assert!(element_of(&leaf));
        assert_ne!(leaf, EMPTY);
        let node = hasher.node(&leaf, &EMPTY);
        assert_ne!(node, leaf);
        // A non-canonical sibling (all ones exceeds both moduli) hashes, in its own domain.
        let forged = B256::repeat_byte(0xff);
        assert!(!element_of(&forged));
        assert_ne!(hasher.node(&forged, &EMPTY), node);
    }

    pub(crate) fn a_tree_proves_membership<H: TreeHasher + Copy>(hasher: H) {
        let mut tree = SparseMerkleTree::new(hasher);
        let keys: Vec<B256> = (0..40u64)
            .map(|n| alloy_primitives::keccak256(n.to_be_bytes()))
            .collect();
        let root = tree.apply(keys.iter().map(|k| (*k, Some(*k))));
        for k in &keys {
            tree.prove(k).verify(&hasher, root, k, Some(k)).unwrap();
        }
        let absent = alloy_primitives::keccak256(b"absent");
        tree.prove(&absent)
            .verify(&hasher, root, &absent, None)
            .unwrap();
    }
}
