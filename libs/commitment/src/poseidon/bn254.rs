//! Poseidon2 over BN254's scalar field: the state tree's hash (Grassi, Khovratovich and
//! Schofnegger, "Poseidon2: A Faster Version of the Poseidon Hash Function", 2023), the instance
//! of the authors' reference implementation (HorizenLabs' `zkhash`, `POSEIDON2_BN256_PARAMS`):
//! width 3, x^5, 8 external rounds (4 before, 4 after) and 56 internal rounds, round constants
//! from the Grain LFSR as in Poseidon.
//!
//! - The external matrix is `circ(2, 1, 1)`: `out_i = s_i + (s_0 + s_1 + s_2)`. It is applied once
//!   before the first round as well.
//! - The internal matrix is `J + diag(1, 1, 2)` (`J` all ones): `out_i = d_i · s_i + sum`.
//! - An internal round adds a constant to the first element only, then S-boxes it.
//!
//! Both matrices are additions only, so a permutation costs 8 · 3 + 56 = 80 S-boxes (240
//! multiplications) and nothing else of note, against ~600 multiplications for Poseidon with
//! sparse partial rounds at the same width: the tree's native hashing, which bounds how many
//! state writes a witness replica absorbs (issue 3), is about 2.5 times cheaper, and the
//! in-circuit permutation takes as many rows as Poseidon's (`verity-circuits`' chip).
//!
//! Tests check the permutation against the reference implementation's published vector and
//! against a plain version with explicit matrix products.

use std::sync::LazyLock;

use halo2curves::bn256::Fr;
use halo2curves::ff::{Field, PrimeField};
use poseidon_primitives::poseidon::primitives::Spec;

/// The parameters, for `poseidon-primitives`' Grain LFSR (the generator of the Poseidon and
/// Poseidon2 reference scripts): width 3, 8 full and 56 partial rounds. Only the round constants
/// are used; Poseidon2 does not use the MDS matrix this would also generate.
#[derive(Debug)]
pub struct Poseidon2Spec;

impl Spec<Fr, 3, 2> for Poseidon2Spec {
    fn full_rounds() -> usize {
        8
    }

    fn partial_rounds() -> usize {
        56
    }

    fn sbox(value: Fr) -> Fr {
        sbox(value)
    }

    fn secure_mds() -> usize {
        0
    }
}

/// Round constants and matrices, generated once.
#[derive(Debug)]
pub struct Constants {
    /// The external rounds' constants, three per round: the first half before the internal
    /// rounds, the second after.
    pub external: Vec<[Fr; 3]>,
    /// The internal rounds' constants, added to the first element.
    pub internal: Vec<Fr>,
    /// The external matrix, `circ(2, 1, 1)`.
    pub external_matrix: [[Fr; 3]; 3],
    /// The internal matrix, `J + diag(1, 1, 2)`.
    pub internal_matrix: [[Fr; 3]; 3],
}

impl Constants {
    /// External rounds before (and after) the internal ones.
    pub fn half_external_rounds(&self) -> usize {
        self.external.len() / 2
    }
}

/// The Grain stream in order: three constants per external round and one per internal round
/// (4 · 3, then 56, then 4 · 3), as the reference script draws them. `poseidon-primitives`
/// draws three per round for every round, so its rows hold the same stream, longer.
static CONSTANTS: LazyLock<Constants> = LazyLock::new(|| {
    let (rows, _, _) = Poseidon2Spec::constants();
    let stream: Vec<Fr> = rows.iter().flatten().copied().collect();
    let half = Poseidon2Spec::full_rounds() / 2;
    let internal_start = 3 * half;
    let internal_end = internal_start + Poseidon2Spec::partial_rounds();
    let (one, two, three) = (Fr::ONE, Fr::from(2), Fr::from(3));
    Constants {
        external: (0..half)
            .map(|r| 3 * r)
            .chain((0..half).map(|r| internal_end + 3 * r))
            .map(|at| [stream[at], stream[at + 1], stream[at + 2]])
            .collect(),
        internal: stream[internal_start..internal_end].to_vec(),
        external_matrix: [[two, one, one], [one, two, one], [one, one, two]],
        internal_matrix: [[two, one, one], [one, two, one], [one, one, three]],
    }
});

/// The permutation's constants.
pub fn constants() -> &'static Constants {
    &CONSTANTS
}

/// The S-box, x^5.
#[inline(always)]
pub fn sbox(x: Fr) -> Fr {
    let x2 = x.square();
    x2.square() * x
}

/// The external matrix times `s`, with additions only.
#[inline(always)]
pub fn external(s: [Fr; 3]) -> [Fr; 3] {
    let sum = s[0] + s[1] + s[2];
    [s[0] + sum, s[1] + sum, s[2] + sum]
}

/// The internal matrix times `s`, with additions only.
#[inline(always)]
pub fn internal(s: [Fr; 3]) -> [Fr; 3] {
    let sum = s[0] + s[1] + s[2];
    [s[0] + sum, s[1] + sum, s[2].double() + sum]
}

/// `m · s` (the chip's witness computation and the plain reference rounds).
#[inline(always)]
pub fn times(m: &[[Fr; 3]; 3], s: [Fr; 3]) -> [Fr; 3] {
    [
        m[0][0] * s[0] + m[0][1] * s[1] + m[0][2] * s[2],
        m[1][0] * s[0] + m[1][1] * s[1] + m[1][2] * s[2],
        m[2][0] * s[0] + m[2][1] * s[1] + m[2][2] * s[2],
    ]
}

/// One external round: constants, S-box on every element, external matrix.
#[inline(always)]
pub fn external_round(s: [Fr; 3], rc: &[Fr; 3]) -> [Fr; 3] {
    external([sbox(s[0] + rc[0]), sbox(s[1] + rc[1]), sbox(s[2] + rc[2])])
}

/// One internal round: a constant and the S-box on the first element, internal matrix.
#[inline(always)]
pub fn internal_round(s: [Fr; 3], rc: Fr) -> [Fr; 3] {
    internal([sbox(s[0] + rc), s[1], s[2]])
}

/// The permutation.
pub fn permute(state: &mut [Fr; 3]) {
    let c = &*CONSTANTS;
    let half = c.half_external_rounds();
    let mut s = external(*state);
    for rc in &c.external[..half] {
        s = external_round(s, rc);
    }
    for rc in &c.internal {
        s = internal_round(s, *rc);
    }
    for rc in &c.external[half..] {
        s = external_round(s, rc);
    }
    *state = s;
}

/// The permutation with explicit matrix products, as the paper writes it (tests check
/// [`permute`] against it).
pub fn permute_reference(state: &mut [Fr; 3]) {
    let c = &*CONSTANTS;
    let half = c.half_external_rounds();
    let full =
        |s: [Fr; 3], rc: &[Fr; 3]| times(&c.external_matrix, [0, 1, 2].map(|i| sbox(s[i] + rc[i])));
    let mut s = times(&c.external_matrix, *state);
    for rc in &c.external[..half] {
        s = full(s, rc);
    }
    for rc in &c.internal {
        s = times(&c.internal_matrix, [sbox(s[0] + rc), s[1], s[2]]);
    }
    for rc in &c.external[half..] {
        s = full(s, rc);
    }
    *state = s;
}

sponge_over!(
    Fr,
    Poseidon2Bn254,
    "Poseidon2 over the BN254 scalar field: the state tree's hash (see the module documentation)."
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::{B256, hex};

    use super::*;
    use crate::poseidon::tests::{
        a_tree_proves_membership, digests_are_canonical_and_domains_differ,
    };

    fn from_hex(big_endian: &str) -> Fr {
        let mut bytes: [u8; 32] = hex::decode(big_endian).unwrap().try_into().unwrap();
        bytes.reverse();
        Fr::from_repr(bytes).unwrap()
    }

    /// The reference implementation's published vector (`zkhash`, `poseidon2_instance_bn256`'s
    /// known answer: the permutation of `[0, 1, 2]`). It pins every round constant, both
    /// matrices and the round schedule.
    #[test]
    fn the_permutation_is_the_reference_one() {
        let expected = [
            "0bb61d24daca55eebcb1929a82650f328134334da98ea4f847f760054f4a3033",
            "303b6f7c86d043bfcbcc80214f26a30277a15d3f74ca654992defe7ff8d03570",
            "1ed25194542b12eef8617361c3ba7c52e660b145994427cc86296242cf766ec8",
        ]
        .map(from_hex);
        let mut state = [Fr::ZERO, Fr::ONE, Fr::from(2)];
        permute(&mut state);
        assert_eq!(state, expected);
        let mut state = [Fr::ZERO, Fr::ONE, Fr::from(2)];
        permute_reference(&mut state);
        assert_eq!(state, expected);
    }

    #[test]
    fn additions_only_rounds_equal_the_matrix_products() {
        let c = constants();
        let mut x = Fr::from(0xfeed);
        let mut next = || {
            x = x.square() + Fr::from(11);
            x
        };
        let mut states: Vec<[Fr; 3]> = (0..64).map(|_| [next(), next(), next()]).collect();
        states.push([Fr::ZERO; 3]);
        states.push([-Fr::ONE; 3]);
        for state in states {
            assert_eq!(external(state), times(&c.external_matrix, state));
            assert_eq!(internal(state), times(&c.internal_matrix, state));
            let (mut fast, mut plain) = (state, state);
            permute(&mut fast);
            permute_reference(&mut plain);
            assert_eq!(fast, plain);
        }
    }

    #[test]
    fn the_schedule_is_the_papers() {
        let c = constants();
        assert_eq!(c.external.len(), 8);
        assert_eq!(c.internal.len(), 56);
        // One Grain stream: external rounds take three constants each, internal rounds one.
        let (rows, _, _) = Poseidon2Spec::constants();
        assert_eq!(c.external[0], rows[0]);
        assert_eq!(c.internal[..3], rows[4]);
        assert_eq!(c.internal[3], rows[5][0]);
        assert_eq!(c.external[4], [rows[22][2], rows[23][0], rows[23][1]]);
    }

    /// The sponge over the permutation: `ConstantLength<L>` with the length in the capacity
    /// element, two words absorbed per permutation.
    #[test]
    fn the_sponge_absorbs_two_words_per_permutation() {
        let words = [Fr::from(5), Fr::from(6), Fr::from(7), Fr::from(8)];
        let mut state = [words[0], words[1], Fr::from_u128(4 << 64)];
        permute(&mut state);
        state[0] += words[2];
        state[1] += words[3];
        permute(&mut state);
        assert_eq!(hash(words), state[0]);
        let mut state = [words[0], words[1], Fr::from_u128(2 << 64)];
        permute(&mut state);
        assert_eq!(hash([words[0], words[1]]), state[0]);
        assert_ne!(
            hash([words[0], words[1]]),
            hash([words[0], words[1], Fr::ZERO])
        );
    }

    #[test]
    fn limbs_are_the_two_halves_as_integers() {
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(37) ^ 0xa5;
        }
        let bytes = B256::from(bytes);
        let hi = u128::from_be_bytes(bytes[..16].try_into().unwrap());
        let lo = u128::from_be_bytes(bytes[16..].try_into().unwrap());
        assert_eq!(limbs(&bytes), [Fr::from_u128(hi), Fr::from_u128(lo)]);
        assert_eq!(
            limbs(&B256::repeat_byte(0xff)),
            [Fr::from_u128(u128::MAX); 2]
        );
        assert_eq!(limbs(&B256::ZERO), [Fr::ZERO; 2]);
    }

    #[test]
    fn digests_are_canonical_and_domains_differ_() {
        digests_are_canonical_and_domains_differ(Poseidon2Bn254, |d| element(d).is_some());
        assert_eq!(element(&digest(Fr::ONE.double())), Some(Fr::from(2)));
        assert_eq!(element(&B256::repeat_byte(0xff)), None);
    }

    #[test]
    fn a_tree_proves_membership_() {
        a_tree_proves_membership(Poseidon2Bn254);
    }
}
