//! Poseidon over BN254's scalar field for the KZG port of the chunk circuit: width 3, rate 2,
//! x^5 S-box, 8 full rounds and 58 partial rounds (the Poseidon paper asks for at least 57 at
//! this width and field; the chip does partial rounds two per row, so the count is even).
//! Round constants and MDS matrix come from the reference Grain LFSR generation of
//! `poseidon-primitives`; the sponge is `ConstantLength<L>` as in `halo2_gadgets`.
//!
//! The chip has the row layout of `halo2_gadgets`' `Pow5Chip` (one row per full round, one row
//! per pair of partial rounds through a witnessed mid S-box and the inverse MDS matrix), so the
//! two backends of ADR 0007 prove circuits of the same height. `halo2_gadgets` only targets
//! zcash's `halo2_proofs`, which is why this one exists; it is used for the measurement only.

use std::sync::LazyLock;

use poseidon_primitives::poseidon::primitives::Spec;

use super::backend::{
    Advice, Cell, Column, ConstraintSystem, Constraints, Error, Expression, F, Field, Fixed,
    Layouter, PrimeField, Rotation, Selector, Value, assign, copy, enable, fixed, from_constant,
};

const WIDTH: usize = 3;
const RATE: usize = 2;
const FULL_ROUNDS: usize = 8;
const PARTIAL_ROUNDS: usize = 58;

type State = [F; WIDTH];
type Matrix = [[F; WIDTH]; WIDTH];

/// The parameters, for `poseidon-primitives`' constant generation.
#[derive(Debug)]
pub struct Bn254Spec;

impl Spec<F, WIDTH, RATE> for Bn254Spec {
    fn full_rounds() -> usize {
        FULL_ROUNDS
    }

    fn partial_rounds() -> usize {
        PARTIAL_ROUNDS
    }

    fn sbox(value: F) -> F {
        sbox(value)
    }

    fn secure_mds() -> usize {
        0
    }
}

struct Constants {
    rounds: Vec<State>,
    mds: Matrix,
    mds_inv: Matrix,
}

static CONSTANTS: LazyLock<Constants> = LazyLock::new(|| {
    let (rounds, mds, mds_inv) = Bn254Spec::constants();
    Constants {
        rounds,
        mds,
        mds_inv,
    }
});

fn sbox(x: F) -> F {
    x.square().square() * x
}

fn times(matrix: &Matrix, state: State) -> State {
    let mut out = [F::ZERO; WIDTH];
    for (row, out) in matrix.iter().zip(out.iter_mut()) {
        for (m, s) in row.iter().zip(state) {
            *out += *m * s;
        }
    }
    out
}

fn full_round(state: State, rc: &State) -> State {
    let c = &*CONSTANTS;
    times(&c.mds, [0, 1, 2].map(|i| sbox(state[i] + rc[i])))
}

fn partial_round(state: State, rc: &State) -> State {
    let c = &*CONSTANTS;
    times(
        &c.mds,
        [sbox(state[0] + rc[0]), state[1] + rc[1], state[2] + rc[2]],
    )
}

/// The permutation, natively.
fn permute(mut state: State) -> State {
    let c = &*CONSTANTS;
    let half = FULL_ROUNDS / 2;
    for (round, rc) in c.rounds.iter().enumerate() {
        state = if round < half || round >= half + PARTIAL_ROUNDS {
            full_round(state, rc)
        } else {
            partial_round(state, rc)
        };
    }
    state
}

fn initial_state<const L: usize>() -> State {
    [F::ZERO, F::ZERO, F::from_u128((L as u128) << 64)]
}

/// `Poseidon_ConstantLength<L>(message)`, natively.
pub fn poseidon<const L: usize>(message: [F; L]) -> F {
    let mut state = initial_state::<L>();
    for chunk in message.chunks(RATE) {
        for (word, m) in state.iter_mut().zip(chunk) {
            *word += m;
        }
        state = permute(state);
    }
    state[0]
}

/// Columns and gates of the chip.
#[derive(Debug, Clone)]
pub struct PoseidonConfig {
    state: [Column<Advice>; WIDTH],
    partial_sbox: Column<Advice>,
    rc_a: [Column<Fixed>; WIDTH],
    rc_b: [Column<Fixed>; WIDTH],
    s_full: Selector,
    s_partial: Selector,
    s_absorb: Selector,
}

fn pow5(x: Expression<F>) -> Expression<F> {
    let x2 = x.clone() * x.clone();
    x2.clone() * x2 * x
}

fn constant(value: F) -> Expression<F> {
    Expression::Constant(value)
}

/// `matrix * vector` over expressions.
fn times_expr(matrix: &Matrix, vector: &[Expression<F>; WIDTH]) -> [Expression<F>; WIDTH] {
    [0, 1, 2].map(|i| {
        (0..WIDTH)
            .map(|j| constant(matrix[i][j]) * vector[j].clone())
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| constant(F::ZERO))
    })
}

/// Columns of the chip (three state, one partial S-box, six round-constant columns) and a
/// column of its own for the circuit's constants.
pub fn configure(meta: &mut ConstraintSystem<F>) -> PoseidonConfig {
    let state = [(); WIDTH].map(|()| meta.advice_column());
    let partial_sbox = meta.advice_column();
    let rc_a = [(); WIDTH].map(|()| meta.fixed_column());
    let rc_b = [(); WIDTH].map(|()| meta.fixed_column());
    // halo2-axiom's layouter fills constants from row 0 of the first constants column, so it
    // gets a column nothing else writes.
    let constants = meta.fixed_column();
    meta.enable_constant(constants);
    for column in state {
        meta.enable_equality(column);
    }
    // halo2-axiom caps the constraint degree at 5 (its MAX_DEGREE) unless told otherwise;
    // x^5 under a selector is degree 6, as in zcash's halo2.
    meta.set_minimum_degree(6);
    let s_full = meta.selector();
    let s_partial = meta.selector();
    let s_absorb = meta.selector();
    let c = &*CONSTANTS;

    meta.create_gate("full round", |meta| {
        let q = meta.query_selector(s_full);
        let cur = state.map(|col| meta.query_advice(col, Rotation::cur()));
        let next = state.map(|col| meta.query_advice(col, Rotation::next()));
        let rc = rc_a.map(|col| meta.query_fixed(col, Rotation::cur()));
        let boxed = [0, 1, 2].map(|i| pow5(cur[i].clone() + rc[i].clone()));
        let mixed = times_expr(&c.mds, &boxed);
        Constraints::with_selector(q, [0, 1, 2].map(|i| mixed[i].clone() - next[i].clone()))
    });

    // Two partial rounds per row: `mid` is the first round's S-box; the second round is
    // checked through the inverse MDS matrix so every constraint stays of degree 5.
    meta.create_gate("partial rounds", |meta| {
        let q = meta.query_selector(s_partial);
        let cur = state.map(|col| meta.query_advice(col, Rotation::cur()));
        let next = state.map(|col| meta.query_advice(col, Rotation::next()));
        let mid = meta.query_advice(partial_sbox, Rotation::cur());
        let a = rc_a.map(|col| meta.query_fixed(col, Rotation::cur()));
        let b = rc_b.map(|col| meta.query_fixed(col, Rotation::cur()));
        let after_first = times_expr(
            &c.mds,
            &[
                mid.clone(),
                cur[1].clone() + a[1].clone(),
                cur[2].clone() + a[2].clone(),
            ],
        );
        let unmixed = times_expr(&c.mds_inv, &next);
        Constraints::with_selector(
            q,
            [
                pow5(cur[0].clone() + a[0].clone()) - mid,
                pow5(after_first[0].clone() + b[0].clone()) - unmixed[0].clone(),
                after_first[1].clone() + b[1].clone() - unmixed[1].clone(),
                after_first[2].clone() + b[2].clone() - unmixed[2].clone(),
            ],
        )
    });

    // Absorbing two more words: the state two rows down is this one plus the words below it.
    meta.create_gate("absorb", |meta| {
        let q = meta.query_selector(s_absorb);
        let cur = state.map(|col| meta.query_advice(col, Rotation::cur()));
        let words = state.map(|col| meta.query_advice(col, Rotation::next()));
        let after = state.map(|col| meta.query_advice(col, Rotation(2)));
        Constraints::with_selector(
            q,
            [
                after[0].clone() - (cur[0].clone() + words[0].clone()),
                after[1].clone() - (cur[1].clone() + words[1].clone()),
                after[2].clone() - cur[2].clone(),
            ],
        )
    });

    PoseidonConfig {
        state,
        partial_sbox,
        rc_a,
        rc_b,
        s_full,
        s_partial,
        s_absorb,
    }
}

fn assign_state(
    config: &PoseidonConfig,
    region: &mut super::backend::Region<'_, F>,
    row: usize,
    state: Value<State>,
) -> Result<[Cell; WIDTH], Error> {
    let cells = [
        assign(region, config.state[0], row, state.map(|s| s[0]))?,
        assign(region, config.state[1], row, state.map(|s| s[1]))?,
        assign(region, config.state[2], row, state.map(|s| s[2]))?,
    ];
    Ok(cells)
}

/// Lays the permutation of the state at `row` out from there; returns the output row and state.
fn permutation(
    config: &PoseidonConfig,
    region: &mut super::backend::Region<'_, F>,
    mut row: usize,
    mut state: Value<State>,
) -> Result<(usize, Value<State>, [Cell; WIDTH]), Error> {
    let c = &*CONSTANTS;
    let half = FULL_ROUNDS / 2;
    let mut round = 0;
    let mut cells = None;
    while round < FULL_ROUNDS + PARTIAL_ROUNDS {
        let rc = c.rounds[round];
        if round < half || round >= half + PARTIAL_ROUNDS {
            enable(region, &config.s_full, row)?;
            for (column, value) in config.rc_a.iter().zip(rc) {
                fixed(region, *column, row, value)?;
            }
            state = state.map(|s| full_round(s, &rc));
            round += 1;
        } else {
            let rc_next = c.rounds[round + 1];
            enable(region, &config.s_partial, row)?;
            for (column, value) in config.rc_a.iter().zip(rc) {
                fixed(region, *column, row, value)?;
            }
            for (column, value) in config.rc_b.iter().zip(rc_next) {
                fixed(region, *column, row, value)?;
            }
            let mid = state.map(|s| sbox(s[0] + rc[0]));
            assign(region, config.partial_sbox, row, mid)?;
            state = state.map(|s| partial_round(partial_round(s, &rc), &rc_next));
            round += 2;
        }
        row += 1;
        cells = Some(assign_state(config, region, row, state)?);
    }
    Ok((row, state, cells.ok_or(Error::Synthesis)?))
}

/// Constrains `Poseidon_ConstantLength<L>(message)` and returns the digest cell.
pub fn hash<const L: usize>(
    config: &PoseidonConfig,
    mut layouter: impl Layouter<F>,
    message: [Cell; L],
) -> Result<Cell, Error> {
    layouter.assign_region(
        || "poseidon",
        |mut region| {
            let region = &mut region;
            let words: Vec<Value<F>> = message.iter().map(super::backend::value).collect();
            let mut chunks = message.chunks(RATE);
            let first = chunks.next().ok_or(Error::Synthesis)?;
            // Row 0: the initial state plus the first words (the state starts at zero but
            // for its capacity element, a constant of the domain).
            let capacity = initial_state::<L>()[2];
            for (i, column) in config.state.iter().take(RATE).enumerate() {
                match first.get(i) {
                    Some(word) => {
                        copy(word, region, *column, 0)?;
                    }
                    None => {
                        from_constant(region, *column, 0, F::ZERO)?;
                    }
                }
            }
            from_constant(region, config.state[2], 0, capacity)?;
            let start = first_state::<L>(&words);
            let (mut row, mut state, mut out) = permutation(config, region, 0, start)?;
            for chunk in chunks {
                enable(region, &config.s_absorb, row)?;
                let mut added = [Value::known(F::ZERO); RATE];
                for (i, column) in config.state.iter().take(RATE).enumerate() {
                    match chunk.get(i) {
                        Some(word) => {
                            copy(word, region, *column, row + 1)?;
                            added[i] = super::backend::value(word);
                        }
                        None => {
                            from_constant(region, *column, row + 1, F::ZERO)?;
                        }
                    }
                }
                state = state
                    .zip(added[0])
                    .zip(added[1])
                    .map(|((s, a), b)| [s[0] + a, s[1] + b, s[2]]);
                assign_state(config, region, row + 2, state)?;
                (row, state, out) = permutation(config, region, row + 2, state)?;
            }
            let [digest, _, _] = out;
            Ok(digest)
        },
    )
}

/// The state after absorbing the first words: each of the first `RATE` slots plus its word.
fn first_state<const L: usize>(words: &[Value<F>]) -> Value<State> {
    let zero = Value::known(F::ZERO);
    let w0 = words.first().copied().unwrap_or(zero);
    let w1 = words.get(1).copied().unwrap_or(zero);
    w0.zip(w1).map(|(a, b)| {
        let s = initial_state::<L>();
        [s[0] + a, s[1] + b, s[2]]
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use poseidon_primitives::poseidon::primitives::{ConstantLength, Hash};

    use super::*;

    fn reference<const L: usize>(message: [F; L]) -> F {
        Hash::<F, Bn254Spec, ConstantLength<L>, WIDTH, RATE>::init().hash(message)
    }

    #[test]
    fn the_native_permutation_is_the_reference_one() {
        let words = [3u64, 5, 7, 11, 13].map(F::from);
        assert_eq!(
            poseidon([words[0], words[1]]),
            reference([words[0], words[1]])
        );
        assert_eq!(
            poseidon([words[0], words[1], words[2], words[3]]),
            reference([words[0], words[1], words[2], words[3]])
        );
        assert_eq!(poseidon(words), reference(words));
        assert_ne!(
            poseidon([words[0], words[1]]),
            poseidon([words[1], words[0]])
        );
    }
}
