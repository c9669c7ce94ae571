//! Circuit-friendly tree hashers, width 3, rate 2, x^5 S-box: Poseidon2 over BN254's scalar
//! field ([`bn254::Poseidon2Bn254`], 8 external and 56 internal rounds: the state tree's hash,
//! the field of the KZG chunk proofs) and Poseidon over the Pasta base field
//! ([`pasta::PoseidonPasta`], `P128Pow5T3`, 8 full and 56 partial rounds: the IPA backend kept
//! for the measured comparison of `docs/adr/0007-halo2-backend.md`). Each is the permutation
//! its in-circuit chip constrains. Both go through the same sponge:
//!
//! - `leaf(key, value) = Poseidon_ConstantLength<4>(key_hi, key_lo, value_hi, value_lo)`: the
//!   32-byte key and value each enter as two 128-bit limbs, so nothing is truncated to fit the
//!   field (two permutations).
//! - `node(left, right) = Poseidon_ConstantLength<2>(left, right)` (one permutation).
//!
//! Poseidon is computed here without the reference implementation's per-hash overheads (it
//! copies the round constants into a new vector for every hash and computes x^5 with a 64-bit
//! square-and-multiply): the S-box is two squarings and a product, the constants are generated
//! once, and the partial rounds multiply by sparse matrices (the Poseidon paper's appendix B: 5
//! multiplications per partial round instead of 9). Tests check the Pasta hash equals
//! `halo2_poseidon`'s on every domain used and its published vectors, and the sparse rounds
//! equal the plain ones; [`bn254`] documents and tests Poseidon2.
//!
//! The input length is part of the sponge's capacity element, which keeps the leaf and node domains
//! apart. Digests are field elements in their canonical 32-byte little-endian encoding. A
//! 32-byte string that is not a canonical element (only a forged proof holds one) is hashed in a
//! third domain, `ConstantLength<5>` over its limbs, so it can never reproduce an honest digest.

/// The sponge, digest encoding and tree hasher over one field, given its width-3 permutation
/// `permute` in scope. Written once, instantiated per field (the two fields implement different
/// versions of the `ff` traits, so plain generics cannot cover both).
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
            let mut state = [<$field>::ZERO, <$field>::ZERO, small((L as u128) << 64)];
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

/// The Poseidon permutation over one field (constants from `$constants`, sparse partial rounds
/// and the plain reference rounds).
macro_rules! poseidon_over {
    ($field:ty, $constants:expr) => {
        use std::sync::LazyLock;

        /// Round constants, MDS matrix and its inverse, generated once.
        #[derive(Debug)]
        pub struct Constants {
            /// One row of three per round.
            pub round_constants: Vec<[$field; 3]>,
            /// The MDS matrix.
            pub mds: [[$field; 3]; 3],
            /// Its inverse (the in-circuit chip checks pairs of partial rounds through it).
            pub mds_inv: [[$field; 3]; 3],
            /// Full rounds before (and after) the partial ones.
            pub half_full_rounds: usize,
            /// Partial rounds.
            pub partial_rounds: usize,
        }

        static CONSTANTS: LazyLock<Constants> = LazyLock::new($constants);

        /// The same permutation with its partial rounds rearranged for speed (the Poseidon
        /// paper, appendix B). Each partial round's MDS matrix `M` is factored as `S · D`, where
        /// `D = diag(1, M̂)` (`M̂`: `M` without its first row and column) and
        /// `S = [[m00, m0·M̂⁻¹], [m̂, I]]` is sparse: 5 multiplications instead of 9. `D` leaves
        /// the first element alone, as the partial S-box does, so it moves back through the
        /// round (turning its constants `c` into `D·c`) and into the previous round's matrix,
        /// which is factored again; the last `D` ends in the matrix of the last full round before
        /// the partial ones. 28 % fewer multiplications per permutation.
        #[derive(Debug)]
        struct Sparse {
            /// Round constants, the partial rounds' transformed.
            round_constants: Vec<[$field; 3]>,
            /// The matrix of the last full round before the partial rounds.
            pre_partial_mds: [[$field; 3]; 3],
            /// Per partial round: the first row of `S`, and its first column below the diagonal.
            rounds: Vec<([$field; 3], [$field; 2])>,
        }

        static SPARSE: LazyLock<Sparse> = LazyLock::new(|| {
            fn product(a: &[[$field; 3]; 3], b: &[[$field; 3]; 3]) -> [[$field; 3]; 3] {
                let mut out = [[<$field>::ZERO; 3]; 3];
                for (i, row) in out.iter_mut().enumerate() {
                    for (j, cell) in row.iter_mut().enumerate() {
                        *cell = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
                    }
                }
                out
            }
            let c = &*CONSTANTS;
            let (first, count) = (c.half_full_rounds, c.partial_rounds);
            let mut round_constants = c.round_constants.clone();
            let mut rounds = vec![([<$field>::ZERO; 3], [<$field>::ZERO; 2]); count];
            let mut acc = c.mds;
            for round in (first..first + count).rev() {
                let hat = [[acc[1][1], acc[1][2]], [acc[2][1], acc[2][2]]];
                let det = hat[0][0] * hat[1][1] - hat[0][1] * hat[1][0];
                let det: $field = Option::from(det.invert())
                    .expect("every square submatrix of an MDS matrix is invertible");
                let inv = [
                    [hat[1][1] * det, -hat[0][1] * det],
                    [-hat[1][0] * det, hat[0][0] * det],
                ];
                let row = [
                    acc[0][0],
                    acc[0][1] * inv[0][0] + acc[0][2] * inv[1][0],
                    acc[0][1] * inv[0][1] + acc[0][2] * inv[1][1],
                ];
                rounds[round - first] = (row, [acc[1][0], acc[2][0]]);
                let d = [
                    [<$field>::ONE, <$field>::ZERO, <$field>::ZERO],
                    [<$field>::ZERO, hat[0][0], hat[0][1]],
                    [<$field>::ZERO, hat[1][0], hat[1][1]],
                ];
                round_constants[round] = mds(&d, round_constants[round]);
                acc = product(&d, &c.mds);
            }
            Sparse {
                round_constants,
                pre_partial_mds: acc,
                rounds,
            }
        });

        /// The permutation's constants.
        pub fn constants() -> &'static Constants {
            &CONSTANTS
        }

        /// The S-box, x^5.
        #[inline(always)]
        pub fn sbox(x: $field) -> $field {
            let x2 = x.square();
            x2.square() * x
        }

        /// `m · s`.
        #[inline(always)]
        pub fn mds(m: &[[$field; 3]; 3], s: [$field; 3]) -> [$field; 3] {
            [
                m[0][0] * s[0] + m[0][1] * s[1] + m[0][2] * s[2],
                m[1][0] * s[0] + m[1][1] * s[1] + m[1][2] * s[2],
                m[2][0] * s[0] + m[2][1] * s[1] + m[2][2] * s[2],
            ]
        }

        /// The permutation, as the reference defines it: every round adds its constants,
        /// applies the S-box (to one element in partial rounds) and multiplies by the MDS matrix.
        pub fn permute_reference(state: &mut [$field; 3]) {
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

        /// The permutation, computed with sparse partial rounds (see `Sparse`): the same
        /// function as [`permute_reference`], with fewer multiplications.
        pub fn permute(state: &mut [$field; 3]) {
            let c = &*CONSTANTS;
            let fast = &*SPARSE;
            let first = c.half_full_rounds;
            let rc = &fast.round_constants;
            let full = |s: [$field; 3], k: &[$field; 3]| {
                [sbox(s[0] + k[0]), sbox(s[1] + k[1]), sbox(s[2] + k[2])]
            };
            let mut s = *state;
            for (round, k) in rc[..first].iter().enumerate() {
                let matrix = if round + 1 == first {
                    &fast.pre_partial_mds
                } else {
                    &c.mds
                };
                s = mds(matrix, full(s, k));
            }
            for ((row, column), k) in fast.rounds.iter().zip(&rc[first..]) {
                let x0 = sbox(s[0] + k[0]);
                let x1 = s[1] + k[1];
                let x2 = s[2] + k[2];
                s = [
                    row[0] * x0 + row[1] * x1 + row[2] * x2,
                    column[0] * x0 + x1,
                    column[1] * x0 + x2,
                ];
            }
            for k in &rc[first + c.partial_rounds..] {
                s = mds(&c.mds, full(s, k));
            }
            *state = s;
        }
    };
}

pub mod bn254;

/// Poseidon `P128Pow5T3` over the Pasta base field: the IPA backend's tree hash.
pub mod pasta {
    use ff::{Field, PrimeField};
    use halo2_poseidon::{P128Pow5T3, Spec};
    use pasta_curves::Fp;

    poseidon_over!(Fp, || {
        let (round_constants, mds, mds_inv) = <P128Pow5T3 as Spec<Fp, 3, 2>>::constants();
        Constants {
            round_constants,
            mds,
            mds_inv,
            half_full_rounds: <P128Pow5T3 as Spec<Fp, 3, 2>>::full_rounds() / 2,
            partial_rounds: <P128Pow5T3 as Spec<Fp, 3, 2>>::partial_rounds(),
        }
    });
    sponge_over!(
        Fp,
        PoseidonPasta,
        "Poseidon `P128Pow5T3` over the Pasta base field (see the module documentation)."
    );
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::B256;

    use crate::{EMPTY, SparseMerkleTree, TreeHasher, account_key};

    /// The fast hash against a reference on every length the tree and circuits use, over
    /// deterministic pseudo-random elements and the edge values.
    macro_rules! check_against_reference {
        ($field:ty, $fast:path, $reference:ident) => {{
            let mut x = <$field>::from(0x5eed);
            let mut next = || {
                x = x.square() + <$field>::from(7);
                x
            };
            for _ in 0..32 {
                let m = [next(), next(), next(), next(), next()];
                assert_eq!($fast([m[0], m[1]]), $reference([m[0], m[1]]));
                assert_eq!($fast([m[0], m[1], m[2]]), $reference([m[0], m[1], m[2]]));
                assert_eq!(
                    $fast([m[0], m[1], m[2], m[3]]),
                    $reference([m[0], m[1], m[2], m[3]])
                );
                assert_eq!($fast(m), $reference(m));
            }
            for edge in [<$field>::ZERO, <$field>::ONE, -<$field>::ONE] {
                assert_eq!($fast([edge, edge]), $reference([edge, edge]));
                assert_eq!($fast([edge; 4]), $reference([edge; 4]));
            }
            assert_eq!($fast([<$field>::ONE]), $reference([<$field>::ONE]));
        }};
    }

    /// The sparse-round permutation against the plain one, on pseudo-random and edge states.
    macro_rules! check_sparse_rounds {
        ($field:ty) => {{
            let mut x = <$field>::from(0xfeed);
            let mut next = || {
                x = x.square() + <$field>::from(11);
                x
            };
            let mut states: Vec<[$field; 3]> = (0..64).map(|_| [next(), next(), next()]).collect();
            states.push([<$field>::ZERO; 3]);
            states.push([-<$field>::ONE; 3]);
            for state in states {
                let (mut fast, mut plain) = (state, state);
                permute(&mut fast);
                permute_reference(&mut plain);
                assert_eq!(fast, plain);
            }
        }};
    }

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

    mod pasta {
        use alloy_primitives::B256;
        use ff::Field;
        use halo2_poseidon::P128Pow5T3;
        use pasta_curves::Fp;

        use super::super::pasta::*;
        use crate::TreeHasher;

        fn reference<const L: usize>(message: [Fp; L]) -> Fp {
            halo2_poseidon::Hash::<Fp, P128Pow5T3, halo2_poseidon::ConstantLength<L>, 3, 2>::init()
                .hash(message)
        }

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
        fn the_fast_hash_is_the_reference_one() {
            check_against_reference!(Fp, hash, reference);
        }

        #[test]
        fn sparse_partial_rounds_compute_the_same_permutation() {
            check_sparse_rounds!(Fp);
        }

        #[test]
        fn digests_are_canonical_and_domains_differ() {
            super::digests_are_canonical_and_domains_differ(PoseidonPasta, |d| {
                element(d).is_some()
            });
            assert_eq!(element(&digest(Fp::ONE.double())), Some(Fp::from(2)));
        }

        #[test]
        fn a_tree_proves_membership() {
            super::a_tree_proves_membership(PoseidonPasta);
        }
    }
}
