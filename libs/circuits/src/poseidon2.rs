//! The in-circuit Poseidon2 over BN254's scalar field: the permutation of
//! `verity_commitment::bn254` (width 3, x^5, 8 external and 56 internal rounds), sponge
//! `ConstantLength<L>` as in `halo2_gadgets`.
//!
//! Rows: one per external round, the first also taking the initial external matrix; one per pair
//! of internal rounds (a witnessed mid S-box, then the second round's S-box of a linear
//! expression, so every constraint stays of degree 5). 36 rows per permutation, one fewer than
//! Poseidon's `Pow5Chip` layout at this width. The circuit tests check it: every root and running
//! hash they expose is computed natively by `verity_commitment`.

use verity_commitment::bn254::{constants, external_round, internal_round, sbox, times};

use crate::backend::{
    Advice, Cell, Column, ConstraintSystem, Constraints, Error, Expression, F, Field, Fixed,
    Layouter, PrimeField, Rotation, Selector, Value, assign, copy, enable, fixed, from_constant,
};

const WIDTH: usize = 3;
const RATE: usize = 2;

type State = [F; WIDTH];
type Matrix = [[F; WIDTH]; WIDTH];

fn initial_state<const L: usize>(domain: u64) -> State {
    [
        F::ZERO,
        F::ZERO,
        F::from_u128(((L as u128) << 64) | u128::from(domain)),
    ]
}

/// Columns and gates of the chip.
#[derive(Debug, Clone)]
pub struct PoseidonConfig {
    state: [Column<Advice>; WIDTH],
    mid_sbox: Column<Advice>,
    /// An external round's three constants; an internal pair's two in the first two columns.
    rc: [Column<Fixed>; WIDTH],
    s_first: Selector,
    s_external: Selector,
    s_internal: Selector,
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

/// Columns of the chip (three state, one mid S-box, three round-constant columns) and a column
/// of its own for the circuit's constants.
pub fn configure(meta: &mut ConstraintSystem<F>) -> PoseidonConfig {
    let state = [(); WIDTH].map(|()| meta.advice_column());
    let mid_sbox = meta.advice_column();
    let rc = [(); WIDTH].map(|()| meta.fixed_column());
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
    let s_first = meta.selector();
    let s_external = meta.selector();
    let s_internal = meta.selector();
    let s_absorb = meta.selector();
    let c = constants();
    let external_round = |meta: &mut crate::backend::VirtualCells<'_, F>, first: bool| {
        let cur = state.map(|col| meta.query_advice(col, Rotation::cur()));
        let next = state.map(|col| meta.query_advice(col, Rotation::next()));
        let rc = rc.map(|col| meta.query_fixed(col, Rotation::cur()));
        let input = if first {
            times_expr(&c.external_matrix, &cur)
        } else {
            cur
        };
        let boxed = [0, 1, 2].map(|i| pow5(input[i].clone() + rc[i].clone()));
        let mixed = times_expr(&c.external_matrix, &boxed);
        [0, 1, 2].map(|i| mixed[i].clone() - next[i].clone())
    };

    // The first external round also applies the external matrix Poseidon2 starts with.
    meta.create_gate("first external round", |meta| {
        let q = meta.query_selector(s_first);
        Constraints::with_selector(q, external_round(meta, true))
    });

    meta.create_gate("external round", |meta| {
        let q = meta.query_selector(s_external);
        Constraints::with_selector(q, external_round(meta, false))
    });

    // Two internal rounds per row: `mid` is the first round's S-box; the second round's S-box
    // input is linear in `mid` and the state, so its x^5 stays of degree 5.
    meta.create_gate("internal rounds", |meta| {
        let q = meta.query_selector(s_internal);
        let cur = state.map(|col| meta.query_advice(col, Rotation::cur()));
        let next = state.map(|col| meta.query_advice(col, Rotation::next()));
        let mid = meta.query_advice(mid_sbox, Rotation::cur());
        let a = meta.query_fixed(rc[0], Rotation::cur());
        let b = meta.query_fixed(rc[1], Rotation::cur());
        let after_first = times_expr(
            &c.internal_matrix,
            &[mid.clone(), cur[1].clone(), cur[2].clone()],
        );
        let after_second = times_expr(
            &c.internal_matrix,
            &[
                pow5(after_first[0].clone() + b),
                after_first[1].clone(),
                after_first[2].clone(),
            ],
        );
        Constraints::with_selector(
            q,
            [
                pow5(cur[0].clone() + a) - mid,
                after_second[0].clone() - next[0].clone(),
                after_second[1].clone() - next[1].clone(),
                after_second[2].clone() - next[2].clone(),
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
        mid_sbox,
        rc,
        s_first,
        s_external,
        s_internal,
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
    let half = c.half_external_rounds();
    let mut cells = None;
    let external = |region: &mut crate::backend::Region<'_, F>,
                    row: usize,
                    index: usize,
                    state: Value<State>|
     -> Result<Value<State>, Error> {
        let rc = &c.external[index];
        let selector = if index == 0 {
            &config.s_first
        } else {
            &config.s_external
        };
        enable(region, selector, row)?;
        for (column, value) in config.rc.iter().zip(rc) {
            fixed(region, *column, row, *value)?;
        }
        Ok(state.map(|s| {
            let s = if index == 0 {
                times(&c.external_matrix, s)
            } else {
                s
            };
            external_round(s, rc)
        }))
    };
    for index in 0..half {
        state = external(region, row, index, state)?;
        row += 1;
        cells = Some(assign_state(config, region, row, state)?);
    }
    for pair in c.internal.chunks(2) {
        let [a, b] = pair else {
            return Err(Error::Synthesis);
        };
        enable(region, &config.s_internal, row)?;
        fixed(region, config.rc[0], row, *a)?;
        fixed(region, config.rc[1], row, *b)?;
        assign(region, config.mid_sbox, row, state.map(|s| sbox(s[0] + a)))?;
        state = state.map(|s| internal_round(internal_round(s, *a), *b));
        row += 1;
        cells = Some(assign_state(config, region, row, state)?);
    }
    for index in half..c.external.len() {
        state = external(region, row, index, state)?;
        row += 1;
        cells = Some(assign_state(config, region, row, state)?);
    }
    Ok((row, state, cells.ok_or(Error::Synthesis)?))
}

/// Constrains `Poseidon_ConstantLength<L>(message)` and returns the digest cell.
pub fn hash<const L: usize>(
    config: &PoseidonConfig,
    layouter: impl Layouter<F>,
    message: [Cell; L],
) -> Result<Cell, Error> {
    hash_in_domain(config, layouter, message, 0)
}

/// [`hash`] in sponge domain `domain` (the capacity element `L · 2^64 + domain`, as
/// `verity_commitment::bn254::hash_in_domain`).
pub fn hash_in_domain<const L: usize>(
    config: &PoseidonConfig,
    mut layouter: impl Layouter<F>,
    message: [Cell; L],
    domain: u64,
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
            let capacity = initial_state::<L>(domain)[2];
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
            let start = first_state::<L>(&words, domain);
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
fn first_state<const L: usize>(words: &[Value<F>], domain: u64) -> Value<State> {
    let zero = Value::known(F::ZERO);
    let w0 = words.first().copied().unwrap_or(zero);
    let w1 = words.get(1).copied().unwrap_or(zero);
    w0.zip(w1).map(|(a, b)| {
        let s = initial_state::<L>(domain);
        [s[0] + a, s[1] + b, s[2]]
    })
}
