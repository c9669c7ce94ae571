//! The in-circuit Poseidon over BN254's scalar field: the permutation of
//! `verity_commitment::bn254` (width 3, rate 2, x^5, 8 full and 58 partial rounds, Grain
//! constants), sponge `ConstantLength<L>` as in `halo2_gadgets`.
//!
//! The chip has the row layout of `halo2_gadgets`' `Pow5Chip` (one row per full round, one row
//! per pair of partial rounds through a witnessed mid S-box and the inverse MDS matrix), so the
//! two backends of ADR 0007 prove circuits of the same height. `halo2_gadgets` only targets
//! zcash's `halo2_proofs`, which is why this one exists. The circuit tests check it: every
//! root and running hash they expose is computed natively by `verity_commitment`.

use verity_commitment::bn254::{constants, mds as times, sbox};

use crate::backend::{
    Advice, Cell, Column, ConstraintSystem, Constraints, Error, Expression, F, Field, Fixed,
    Layouter, PrimeField, Rotation, Selector, Value, assign, copy, enable, fixed, from_constant,
};

const WIDTH: usize = 3;
const RATE: usize = 2;

type State = [F; WIDTH];
type Matrix = [[F; WIDTH]; WIDTH];

fn full_round(state: State, rc: &State) -> State {
    times(&constants().mds, [0, 1, 2].map(|i| sbox(state[i] + rc[i])))
}

fn partial_round(state: State, rc: &State) -> State {
    times(
        &constants().mds,
        [sbox(state[0] + rc[0]), state[1] + rc[1], state[2] + rc[2]],
    )
}

fn initial_state<const L: usize>() -> State {
    [F::ZERO, F::ZERO, F::from_u128((L as u128) << 64)]
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
    let constant_column = meta.fixed_column();
    meta.enable_constant(constant_column);
    for column in state {
        meta.enable_equality(column);
    }
    // halo2-axiom caps the constraint degree at 5 (its MAX_DEGREE) unless told otherwise;
    // x^5 under a selector is degree 6, as in zcash's halo2.
    meta.set_minimum_degree(6);
    let s_full = meta.selector();
    let s_partial = meta.selector();
    let s_absorb = meta.selector();
    let c = constants();

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
    region: &mut crate::backend::Region<'_, F>,
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
    region: &mut crate::backend::Region<'_, F>,
    mut row: usize,
    mut state: Value<State>,
) -> Result<(usize, Value<State>, [Cell; WIDTH]), Error> {
    let c = constants();
    let half = c.half_full_rounds;
    let partial = c.partial_rounds;
    let mut round = 0;
    let mut cells = None;
    while round < c.round_constants.len() {
        let rc = c.round_constants[round];
        if round < half || round >= half + partial {
            enable(region, &config.s_full, row)?;
            for (column, value) in config.rc_a.iter().zip(rc) {
                fixed(region, *column, row, value)?;
            }
            state = state.map(|s| full_round(s, &rc));
            round += 1;
        } else {
            let rc_next = c.round_constants[round + 1];
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
            let words: Vec<Value<F>> = message.iter().map(crate::backend::value).collect();
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
                            added[i] = crate::backend::value(word);
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
