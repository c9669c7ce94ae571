//! The in-circuit Poseidon2 over BN254's scalar field: the permutation of
//! `verity_commitment::bn254` (width 3, x^5, 8 external and 56 internal rounds), sponge
//! `ConstantLength<L>` as in `halo2_gadgets`.
//!
//! The chip is wide rather than tall (ADR 0015): a proof's cost follows its rows (2^k), and the
//! chunk circuit is almost all Poseidon2. Each row holds
//! - two external rounds: the state after the first is witnessed in three `mid` columns;
//! - or eight internal rounds: the first seven S-boxes are witnessed in seven `mid` columns and
//!   every state in between is a linear form of them, so the eighth S-box and the next row's
//!   state are constrained from those cells directly.
//!
//! Every constraint is an x^5 of a linear form under a selector: degree 6, as before. A
//! permutation takes 11 rows (2 + 7 + 2) and its output row, against 37 when one row held one
//! external round or two internal ones. The circuit tests check it: every root
//! they expose is computed natively by `verity_commitment`, and the mutation test changes every
//! cell of the chip in turn.

use verity_commitment::bn254::{constants, external_round, internal, internal_round, sbox, times};

use crate::backend::{
    Advice, Cell, Column, ConstraintSystem, Constraints, Error, Expression, F, Field, Fixed,
    Layouter, PrimeField, Rotation, Selector, Value, assign, copy, enable, fixed, from_constant,
};

const WIDTH: usize = 3;
const RATE: usize = 2;
/// Internal rounds per row (56 = 7 rows of 8).
const INTERNAL_PER_ROW: usize = 8;
/// Witnessed S-boxes per row: the internal rounds' but the last, and as many as the external
/// round's width.
const MIDS: usize = INTERNAL_PER_ROW - 1;
/// Round constants per row: a pair of external rounds' six, or the internal rounds' eight.
const RCS: usize = INTERNAL_PER_ROW;

const _: () = assert!(MIDS >= WIDTH && RCS >= 2 * WIDTH);

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
    mids: [Column<Advice>; MIDS],
    /// A pair of external rounds' constants (three each), or the internal rounds' (one each).
    rc: [Column<Fixed>; RCS],
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

/// A linear form over one internal row's cells: the state's three, then the mids.
type Form = [F; WIDTH + MIDS];

fn unit(index: usize) -> Form {
    let mut form = [F::ZERO; WIDTH + MIDS];
    form[index] = F::ONE;
    form
}

/// `matrix * [a, b, c]` over forms.
fn times_forms(matrix: &Matrix, vector: [&Form; WIDTH]) -> [Form; WIDTH] {
    [0, 1, 2].map(|i| {
        let mut out = [F::ZERO; WIDTH + MIDS];
        for (j, form) in vector.iter().enumerate() {
            for (o, v) in out.iter_mut().zip(form.iter()) {
                *o += matrix[i][j] * v;
            }
        }
        out
    })
}

/// The expression of `form` over `cells`, leaving out its zero terms.
fn expression(form: &Form, cells: &[Expression<F>; WIDTH + MIDS]) -> Expression<F> {
    form.iter()
        .zip(cells)
        .filter(|(c, _)| !bool::from(c.is_zero()))
        .map(|(c, cell)| {
            if *c == F::ONE {
                cell.clone()
            } else {
                constant(*c) * cell.clone()
            }
        })
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| constant(F::ZERO))
}

/// Columns of the chip (three state, seven mid S-box, eight round-constant columns) and a
/// column of its own for the circuit's constants.
pub fn configure(meta: &mut ConstraintSystem<F>) -> PoseidonConfig {
    let state = [(); WIDTH].map(|()| meta.advice_column());
    let mids = [(); MIDS].map(|()| meta.advice_column());
    let rc = [(); RCS].map(|()| meta.fixed_column());
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
    // Two external rounds: the state after the first is the mids' first three cells.
    let external_pair = |meta: &mut crate::backend::VirtualCells<'_, F>, first: bool| {
        let cur = state.map(|col| meta.query_advice(col, Rotation::cur()));
        let next = state.map(|col| meta.query_advice(col, Rotation::next()));
        let mid = [0, 1, 2].map(|i| meta.query_advice(mids[i], Rotation::cur()));
        let rc = rc.map(|col| meta.query_fixed(col, Rotation::cur()));
        let input = if first {
            times_expr(&c.external_matrix, &cur)
        } else {
            cur
        };
        let round = |input: &[Expression<F>; WIDTH], offset: usize| {
            let boxed = [0, 1, 2].map(|i| pow5(input[i].clone() + rc[offset + i].clone()));
            times_expr(&c.external_matrix, &boxed)
        };
        let after_first = round(&input, 0);
        let after_second = round(&mid, WIDTH);
        let mut constraints = Vec::with_capacity(2 * WIDTH);
        for i in 0..WIDTH {
            constraints.push(after_first[i].clone() - mid[i].clone());
        }
        for i in 0..WIDTH {
            constraints.push(after_second[i].clone() - next[i].clone());
        }
        constraints
    };

    // The first pair also applies the external matrix Poseidon2 starts with.
    meta.create_gate("first external rounds", |meta| {
        let q = meta.query_selector(s_first);
        Constraints::with_selector(q, external_pair(meta, true))
    });

    meta.create_gate("external rounds", |meta| {
        let q = meta.query_selector(s_external);
        Constraints::with_selector(q, external_pair(meta, false))
    });

    // INTERNAL_PER_ROW internal rounds: mid j is round j's S-box output, and the state after
    // it is a linear form of the row's cells; the last round's S-box is the next state's.
    meta.create_gate("internal rounds", |meta| {
        let q = meta.query_selector(s_internal);
        let cells: [Expression<F>; WIDTH + MIDS] = std::array::from_fn(|i| {
            let column = if i < WIDTH { state[i] } else { mids[i - WIDTH] };
            meta.query_advice(column, Rotation::cur())
        });
        let next = state.map(|col| meta.query_advice(col, Rotation::next()));
        let rc = rc.map(|col| meta.query_fixed(col, Rotation::cur()));
        let mut s = [unit(0), unit(1), unit(2)];
        let mut constraints = Vec::with_capacity(MIDS + WIDTH);
        for (j, rc) in rc.iter().enumerate().take(MIDS) {
            let mid = unit(WIDTH + j);
            constraints
                .push(pow5(expression(&s[0], &cells) + rc.clone()) - cells[WIDTH + j].clone());
            s = times_forms(&c.internal_matrix, [&mid, &s[1], &s[2]]);
        }
        let last = pow5(expression(&s[0], &cells) + rc[MIDS].clone());
        let zero = [F::ZERO; WIDTH + MIDS];
        let rest = times_forms(&c.internal_matrix, [&zero, &s[1], &s[2]]);
        for i in 0..WIDTH {
            let out =
                constant(c.internal_matrix[i][0]) * last.clone() + expression(&rest[i], &cells);
            constraints.push(out - next[i].clone());
        }
        Constraints::with_selector(q, constraints)
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
        mids,
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

/// The value the chip witnesses at `row` in its `column`-th advice column (state first, then
/// mids): the honest one, but in tests whatever [`forge`] says, which the rest of the
/// permutation is then computed from.
fn witness(row: usize, column: usize, honest: Value<F>) -> Value<F> {
    #[cfg(test)]
    let honest = honest.map(|value| forge::value(row, column, value));
    #[cfg(not(test))]
    let _ = (row, column);
    honest
}

/// Assigns a permutation's state at `row` (through [`witness`]); returns what was assigned.
fn witness_state(
    config: &PoseidonConfig,
    region: &mut crate::backend::Region<'_, F>,
    row: usize,
    state: Value<State>,
) -> Result<(Value<State>, [Cell; WIDTH]), Error> {
    let [a, b, c] = [0, 1, 2].map(|i| witness(row, i, state.map(|s| s[i])));
    let state = a.zip(b).zip(c).map(|((a, b), c)| [a, b, c]);
    Ok((state, assign_state(config, region, row, state)?))
}

/// Test-only: a dishonest chip witness that lies in one cell and is consistent with that lie
/// everywhere after it in its permutation, so only the constraint that pins the cell can catch
/// it (a one-cell lie would also break the next gate, and hide a missing constraint).
#[cfg(test)]
pub(crate) mod forge {
    use super::F;

    thread_local! {
        static AT: std::cell::Cell<Option<(usize, usize, F)>> = const { std::cell::Cell::new(None) };
    }

    /// From now on in this thread, the cell at `(row, column)` of a permutation holds `value`.
    pub fn set(at: Option<(usize, usize, F)>) {
        AT.with(|cell| cell.set(at));
    }

    pub(super) fn value(row: usize, column: usize, honest: F) -> F {
        match AT.with(std::cell::Cell::get) {
            Some((r, c, lie)) if (r, c) == (row, column) => lie,
            _ => honest,
        }
    }
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
    if !half.is_multiple_of(2) || !c.internal.len().is_multiple_of(INTERNAL_PER_ROW) {
        return Err(Error::Synthesis);
    }
    let mut cells = None;
    // Rounds `index` and `index + 1`, external.
    let external = |region: &mut crate::backend::Region<'_, F>,
                    row: usize,
                    index: usize,
                    state: Value<State>|
     -> Result<Value<State>, Error> {
        let selector = if index == 0 {
            &config.s_first
        } else {
            &config.s_external
        };
        enable(region, selector, row)?;
        let constants = c.external[index].iter().chain(&c.external[index + 1]);
        for (column, value) in config.rc.iter().zip(constants) {
            fixed(region, *column, row, *value)?;
        }
        let input = state.map(|s| {
            if index == 0 {
                times(&c.external_matrix, s)
            } else {
                s
            }
        });
        let mid = input.map(|s| external_round(s, &c.external[index]));
        let mid = [0, 1, 2].map(|i| witness(row, WIDTH + i, mid.map(|m| m[i])));
        for (cell, column) in mid.iter().zip(&config.mids) {
            assign(region, *column, row, *cell)?;
        }
        let [a, b, c_] = mid;
        let mid = a.zip(b).zip(c_).map(|((a, b), c)| [a, b, c]);
        Ok(mid.map(|m| external_round(m, &c.external[index + 1])))
    };
    for index in (0..half).step_by(2) {
        state = external(region, row, index, state)?;
        row += 1;
        let (witnessed, assigned) = witness_state(config, region, row, state)?;
        (state, cells) = (witnessed, Some(assigned));
    }
    for rounds in c.internal.chunks(INTERNAL_PER_ROW) {
        enable(region, &config.s_internal, row)?;
        for (column, value) in config.rc.iter().zip(rounds) {
            fixed(region, *column, row, *value)?;
        }
        for (j, column) in config.mids.iter().enumerate() {
            let rc = rounds[j];
            let mid = witness(row, WIDTH + j, state.map(|s| sbox(s[0] + rc)));
            assign(region, *column, row, mid)?;
            state = state.zip(mid).map(|(s, m)| internal([m, s[1], s[2]]));
        }
        let last = rounds[MIDS];
        state = state.map(|s| internal_round(s, last));
        row += 1;
        let (witnessed, assigned) = witness_state(config, region, row, state)?;
        (state, cells) = (witnessed, Some(assigned));
    }
    for index in (half..c.external.len()).step_by(2) {
        state = external(region, row, index, state)?;
        row += 1;
        let (witnessed, assigned) = witness_state(config, region, row, state)?;
        (state, cells) = (witnessed, Some(assigned));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use halo2_axiom::dev::MockProver;

    use super::*;
    use crate::backend::{Circuit, HaloLayouter, SimpleFloorPlanner, plan};

    /// One permutation of a free input, nothing else.
    #[derive(Debug, Clone, Copy)]
    struct OnePermutation;

    impl Circuit<F> for OnePermutation {
        type Config = PoseidonConfig;
        type FloorPlanner = SimpleFloorPlanner;
        type Params = ();

        fn without_witnesses(&self) -> Self {
            *self
        }

        fn configure(meta: &mut ConstraintSystem<F>) -> PoseidonConfig {
            configure(meta)
        }

        fn synthesize(
            &self,
            config: PoseidonConfig,
            layouter: impl HaloLayouter<F>,
        ) -> Result<(), Error> {
            plan(layouter).assign_region(
                || "permutation",
                |mut region| {
                    let input = Value::known([F::from(1), F::from(2), F::from(3)]);
                    assign_state(&config, &mut region, 0, input)?;
                    let (_, output, _) = permutation(&config, &mut region, 0, input)?;
                    let mut expected = [F::from(1), F::from(2), F::from(3)];
                    verity_commitment::bn254::permute(&mut expected);
                    output.map(|output| assert_eq!(output == expected, !forged()));
                    Ok(())
                },
            )
        }
    }

    fn forged() -> bool {
        (0..12).any(|row| {
            (0..WIDTH + MIDS).any(|column| forge::value(row, column, F::ZERO) != F::ZERO)
        })
    }

    fn verdict(at: Option<(usize, usize, F)>) -> Result<(), String> {
        forge::set(at);
        let prover = MockProver::run(6, &OnePermutation, vec![]).map_err(|e| e.to_string());
        forge::set(None);
        prover?.verify().map_err(|failures| format!("{failures:?}"))
    }

    /// Every witnessed cell of a permutation is pinned by a constraint of its own: a lie in any
    /// one of them, with everything after it computed from the lie, is rejected.
    #[test]
    fn a_consistent_forgery_of_any_cell_of_a_permutation_is_rejected() {
        verdict(None).unwrap();
        let c = constants();
        let half = c.half_external_rounds() / 2;
        let internal_rows = c.internal.len() / INTERNAL_PER_ROW;
        let gate_rows = 2 * half + internal_rows;
        let mut tried = 0;
        for row in 0..gate_rows {
            let internal = (half..half + internal_rows).contains(&row);
            let mids = if internal { MIDS } else { WIDTH };
            // The row's mids, and the state it constrains on the next row.
            let cells = (0..mids)
                .map(|j| (row, WIDTH + j))
                .chain((0..WIDTH).map(|i| (row + 1, i)));
            for (at_row, column) in cells {
                let failure = verdict(Some((at_row, column, F::from(7)))).expect_err(&format!(
                    "a forged cell at row {at_row}, column {column} was accepted"
                ));
                let gate = if internal {
                    "internal rounds"
                } else {
                    "external rounds"
                };
                assert!(failure.contains(gate), "{failure}");
                tried += 1;
            }
        }
        assert_eq!(tried, 4 * (WIDTH + WIDTH) + internal_rows * (MIDS + WIDTH));
    }
}
