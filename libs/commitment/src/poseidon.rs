//! The tree hasher for circuits over the Pasta field: Poseidon `P128Pow5T3` (width 3, rate 2,
//! x^5 S-box, 8 full and 56 partial rounds), the same permutation as the in-circuit `Pow5Chip`
//! of `halo2_gadgets`, computed natively by `halo2_poseidon`.
//!
//! - `leaf(key, value) = Poseidon_ConstantLength<4>(key_hi, key_lo, value_hi, value_lo)`: the
//!   32-byte key and value each enter as two 128-bit limbs, so nothing is truncated to fit the
//!   255-bit field (two permutations).
//! - `node(left, right) = Poseidon_ConstantLength<2>(left, right)` (one permutation).
//!
//! The permutation is computed here ([`hash`]) with `halo2_poseidon`'s constants but without its
//! per-hash overheads (it copies the round constants into a new vector for every hash and
//! computes x^5 with a 64-bit square-and-multiply): the S-box is two squarings and a product,
//! the constants are loaded once. Tests check it equals `halo2_poseidon` on every domain used.
//!
//! The input length is part of Poseidon's capacity element, which keeps the leaf and node domains
//! apart. Digests are field elements in their canonical 32-byte little-endian encoding. A
//! 32-byte string that is not a canonical element (only a forged proof holds one) is hashed in a
//! third domain, `ConstantLength<5>` over its limbs, so it can never reproduce an honest digest.

use std::sync::LazyLock;

use alloy_primitives::B256;
use ff::{Field, PrimeField};
use halo2_poseidon::{P128Pow5T3, Spec};
use pasta_curves::Fp;

use crate::TreeHasher;

/// Poseidon over the Pasta base field (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct PoseidonPasta;

/// A 32-byte string as two 128-bit limbs, high first (how keys and values enter the hash).
pub fn limbs(bytes: &B256) -> [Fp; 2] {
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

/// `P128Pow5T3`'s round constants and MDS matrix, loaded once.
struct Constants {
    round_constants: Vec<[Fp; 3]>,
    mds: [[Fp; 3]; 3],
    half_full_rounds: usize,
    partial_rounds: usize,
}

static CONSTANTS: LazyLock<Constants> = LazyLock::new(|| {
    let (round_constants, mds, _) = <P128Pow5T3 as Spec<Fp, 3, 2>>::constants();
    Constants {
        round_constants,
        mds,
        half_full_rounds: <P128Pow5T3 as Spec<Fp, 3, 2>>::full_rounds() / 2,
        partial_rounds: <P128Pow5T3 as Spec<Fp, 3, 2>>::partial_rounds(),
    }
});

#[inline(always)]
fn sbox(x: Fp) -> Fp {
    let x2 = x.square();
    x2.square() * x
}

#[inline(always)]
fn mds(m: &[[Fp; 3]; 3], s: [Fp; 3]) -> [Fp; 3] {
    [
        m[0][0] * s[0] + m[0][1] * s[1] + m[0][2] * s[2],
        m[1][0] * s[0] + m[1][1] * s[1] + m[1][2] * s[2],
        m[2][0] * s[0] + m[2][1] * s[1] + m[2][2] * s[2],
    ]
}

/// The `P128Pow5T3` permutation.
pub fn permute(state: &mut [Fp; 3]) {
    let c = &*CONSTANTS;
    let partial_start = c.half_full_rounds;
    let partial_end = c.half_full_rounds + c.partial_rounds;
    let mut s = *state;
    for (round, rc) in c.round_constants.iter().enumerate() {
        s = if (partial_start..partial_end).contains(&round) {
            [sbox(s[0] + rc[0]), s[1] + rc[1], s[2] + rc[2]]
        } else {
            [sbox(s[0] + rc[0]), sbox(s[1] + rc[1]), sbox(s[2] + rc[2])]
        };
        s = mds(&c.mds, s);
    }
    *state = s;
}

/// Poseidon `ConstantLength<L>` over `P128Pow5T3` (width 3, rate 2): the same function as
/// `halo2_poseidon::Hash::<Fp, P128Pow5T3, ConstantLength<L>, 3, 2>` and the in-circuit chip.
pub fn hash<const L: usize>(message: [Fp; L]) -> Fp {
    // Capacity element: length * 2^64 (one output); input zero-padded to a multiple of the rate.
    let mut state = [Fp::ZERO, Fp::ZERO, Fp::from_u128((L as u128) << 64)];
    for chunk in message.chunks(2) {
        state[0] += chunk[0];
        if let Some(second) = chunk.get(1) {
            state[1] += second;
        }
        permute(&mut state);
    }
    state[0]
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

    fn reference<const L: usize>(message: [Fp; L]) -> Fp {
        halo2_poseidon::Hash::<Fp, P128Pow5T3, halo2_poseidon::ConstantLength<L>, 3, 2>::init()
            .hash(message)
    }

    #[test]
    fn the_fast_hash_equals_halo2_poseidon_on_every_length_used() {
        // Deterministic pseudo-random field elements, including the edge values.
        let mut x = Fp::from(0x5eed);
        let mut next = || {
            x = x.square() + Fp::from(7);
            x
        };
        for _ in 0..64 {
            let m = [next(), next(), next(), next(), next()];
            assert_eq!(hash([m[0], m[1]]), reference([m[0], m[1]]));
            assert_eq!(hash([m[0], m[1], m[2]]), reference([m[0], m[1], m[2]]));
            assert_eq!(
                hash([m[0], m[1], m[2], m[3]]),
                reference([m[0], m[1], m[2], m[3]])
            );
            assert_eq!(hash(m), reference(m));
        }
        for edge in [Fp::ZERO, Fp::ONE, -Fp::ONE] {
            assert_eq!(hash([edge, edge]), reference([edge, edge]));
            assert_eq!(hash([edge; 4]), reference([edge; 4]));
        }
        assert_eq!(hash([Fp::ONE]), reference([Fp::ONE]));
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
