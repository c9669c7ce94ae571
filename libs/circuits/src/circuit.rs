//! The chunk circuit: a sequence of single-key steps over the compressed sparse Merkle tree of
//! `verity-commitment`, hashed with a width-3, rate-2, x^5 sponge: Poseidon2 over BN254.
//!
//! The circuit is written against the names its parent's `backend` module provides (the
//! field `F`, the hash chip, cell assignment): `halo2-axiom` (KZG over BN254, the Poseidon2 chip
//! of `poseidon2.rs`).
//!
//! Each enabled step proves, for one key `k`:
//! - under the running root `r`, `k` holds `before` (a leaf `(k, before)`), or holds nothing
//!   (the terminal of its path is empty, or is the leaf of another key `k'`, in which case
//!   `before = 0`);
//! - replacing that terminal by the leaf `(k, after)` (or leaving the tree unchanged when `k`
//!   stays absent, `after = 0`) yields the next root `r'`. When `k` lands where another key's
//!   leaf was, the new path is longer: the extra levels have empty siblings, the last one has
//!   the displaced leaf as sibling, and `k` and `k'` agree on every extra bit but the last.
//!
//! Path directions are the bits of `k`'s high limb (and, in a circuit deeper than 128 levels,
//! of its low limb after them), decomposed in-circuit (so a prover cannot place a leaf off its
//! key's path). The running root starts at the public `pre_root` and must
//! end at `post_root`. Every step's `(enabled, k, before, after)` is itself a public input (its
//! cells are copy-constrained to the instance columns), so a verifier states the exact reads and
//! writes a segment proves from its own data, with no hash to recompute natively; a chunk is
//! split into segments whose roots chain. The hash of the chunk's transactions is a public input
//! the circuit only carries, a label: a proof made with one value does not verify with another
//! (it is in the transcript), but no gate relates it to the steps.
//!
//! Disabled steps pad a segment to its fixed size, leave the running root unchanged, and are
//! public as disabled with zero key and values.

pub use super::backend::poseidon;
use super::backend::{
    Advice, Cell, Circuit, Column, ConstraintSystem, Constraints, Error, Expression, F, Field,
    HaloLayouter, Instance, Layouter, PoseidonConfig, PrimeField, Region, Rotation, Selector,
    SimpleFloorPlanner, Value, assign, configure_poseidon, copy, enable, equal, expose,
    from_constant, from_instance, plan, value,
};

/// The public inputs, in [`COLUMNS`](public::COLUMNS) instance columns. The first holds the
/// segment's header in its first rows. A step has [`FIELDS`](public::FIELDS) fields: enabled
/// (1 or 0), the key's two limbs, the value before's, the value after's; they fill
/// [`ROWS_PER_STEP`](public::ROWS_PER_STEP) rows of the first column, then of the second
/// ([`place`](public::place)). Two columns, not one: halo2 evaluates the public inputs'
/// Lagrange basis over the longest column at a cost per row, and a second column costs the
/// permutation argument nothing more (16 columns with equality still make four chunks of four,
/// where seven columns made six and cost the prover ~20 %).
pub mod public {
    /// The root before the segment (column 0).
    pub const PRE_ROOT: usize = 0;
    /// The root after the segment (column 0).
    pub const POST_ROOT: usize = 1;
    /// The hash of the chunk's transactions (column 0).
    pub const TX_HASH: usize = 2;
    /// Rows before the steps'.
    pub const HEADER: usize = 3;
    /// Instance columns.
    pub const COLUMNS: usize = 2;
    /// Public fields of a step.
    pub const FIELDS: usize = 7;
    /// Rows of each column a step takes.
    pub const ROWS_PER_STEP: usize = FIELDS.div_ceil(COLUMNS);

    /// The (column, row) of field `field` of step `index`.
    pub const fn place(index: usize, field: usize) -> (usize, usize) {
        (
            field / ROWS_PER_STEP,
            HEADER + ROWS_PER_STEP * index + field % ROWS_PER_STEP,
        )
    }

    /// Rows of each column of a circuit of `steps` steps.
    pub const fn len(steps: usize) -> usize {
        HEADER + ROWS_PER_STEP * steps
    }
}

/// Bits decomposed from a key's high limb (its first 128 bits, most significant first).
const LIMB_BITS: usize = 128;

/// What terminates a key's path in the tree before its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Terminal {
    /// The key's own leaf.
    Own,
    /// An empty subtree.
    #[default]
    Empty,
    /// The leaf of another key: `(key limbs, value limbs)`.
    Other([F; 2], [F; 2]),
}

/// The witness of one step, in field elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// False for padding.
    pub enabled: bool,
    /// The key as two 128-bit limbs, high first.
    pub key: [F; 2],
    /// The value before, as limbs (zero when absent).
    pub before: [F; 2],
    /// The value after, as limbs (zero when absent).
    pub after: [F; 2],
    /// What ends the key's path before the step.
    pub old_terminal: Terminal,
    /// Whether the key has a leaf after the step.
    pub new_is_leaf: bool,
    /// Siblings of the old path from the root down, padded with zeros to the circuit depth.
    pub old_siblings: Vec<F>,
    /// Length of the old path.
    pub old_depth: usize,
    /// Siblings of the new path, padded.
    pub new_siblings: Vec<F>,
    /// Length of the new path.
    pub new_depth: usize,
}

impl Step {
    /// A disabled step for a circuit of `depth` levels.
    pub fn padding(depth: usize) -> Self {
        Self {
            enabled: false,
            key: [F::ZERO; 2],
            before: [F::ZERO; 2],
            after: [F::ZERO; 2],
            old_terminal: Terminal::Empty,
            new_is_leaf: false,
            old_siblings: vec![F::ZERO; depth],
            old_depth: 0,
            new_siblings: vec![F::ZERO; depth],
            new_depth: 0,
        }
    }
}

/// The chunk circuit of a fixed shape: `steps.len()` steps over paths of `depth` levels.
#[derive(Debug, Clone)]
pub struct ChunkCircuit {
    /// Levels of every path (the deepest leaf a step can reach).
    pub depth: usize,
    /// The steps, padded to the circuit's size.
    pub steps: Vec<Step>,
}

impl ChunkCircuit {
    /// The circuit of `shape` with every step disabled (what keys are generated from).
    pub fn blank(shape: crate::Shape) -> Self {
        Self {
            depth: shape.depth,
            steps: vec![Step::padding(shape.depth); shape.steps],
        }
    }

    /// The circuit of `shape` for `steps`, padded with disabled steps to the shape's size.
    pub fn padded(shape: crate::Shape, mut steps: Vec<Step>) -> Result<Self, crate::Error> {
        if steps.len() > shape.steps {
            return Err(crate::Error::TooManySteps {
                given: steps.len(),
                capacity: shape.steps,
            });
        }
        steps.resize_with(shape.steps, || Step::padding(shape.depth));
        Ok(Self {
            depth: shape.depth,
            steps,
        })
    }
}

/// Columns and gates.
#[derive(Debug, Clone)]
pub struct ChunkConfig {
    poseidon: PoseidonConfig,
    advice: [Column<Advice>; 10],
    instance: [Column<Instance>; public::COLUMNS],
    q_level: Selector,
    q_link: Selector,
    q_bits_first: Selector,
    q_bits_next: Selector,
    q_terminal: Selector,
    q_keys_differ: Selector,
    q_output: Selector,
}

fn bool_check(value: Expression<F>) -> Expression<F> {
    value.clone() * (Expression::Constant(F::ONE) - value)
}

fn one() -> Expression<F> {
    Expression::Constant(F::ONE)
}

impl Circuit<F> for ChunkCircuit {
    type Config = ChunkConfig;
    type FloorPlanner = SimpleFloorPlanner;
    type Params = ();

    fn without_witnesses(&self) -> Self {
        Self::blank(crate::Shape {
            steps: self.steps.len(),
            depth: self.depth,
        })
    }

    fn configure(meta: &mut ConstraintSystem<F>) -> ChunkConfig {
        let poseidon = configure_poseidon(meta);

        let advice = [(); 10].map(|()| meta.advice_column());
        for column in advice {
            meta.enable_equality(column);
        }
        let instance = [(); public::COLUMNS].map(|()| meta.instance_column());
        for column in instance {
            meta.enable_equality(column);
        }

        let q_level = meta.selector();
        let q_link = meta.selector();
        let q_bits_first = meta.selector();
        let q_bits_next = meta.selector();
        let q_terminal = meta.selector();
        let q_keys_differ = meta.selector();
        let q_output = meta.selector();
        let a = advice;

        // One level of a path: order the running digest and the sibling by the key's bit, and
        // take the hash only where the path is active.
        meta.create_gate("path level", |meta| {
            let q = meta.query_selector(q_level);
            let [below, sib, bit, active, left, right, hash, out] =
                [0, 1, 2, 3, 4, 5, 6, 7].map(|i| meta.query_advice(a[i], Rotation::cur()));
            Constraints::with_selector(
                q,
                [
                    bool_check(bit.clone()),
                    bool_check(active.clone()),
                    left - (below.clone() + bit.clone() * (sib.clone() - below.clone())),
                    right - (sib.clone() + bit * (below.clone() - sib)),
                    out - (below.clone() + active * (hash - below)),
                ],
            )
        });

        // How the new path relates to the old one, level by level (row i, next row i + 1).
        meta.create_gate("path link", |meta| {
            let q = meta.query_selector(q_link);
            let [ao, an, so, sn, bk, bkp, lt, split, acc] =
                [0, 1, 2, 3, 4, 5, 6, 7, 8].map(|i| meta.query_advice(a[i], Rotation::cur()));
            let ao_next = meta.query_advice(a[0], Rotation::next());
            let an_next = meta.query_advice(a[1], Rotation::next());
            let acc_next = meta.query_advice(a[8], Rotation::next());
            let ext = an.clone() - ao.clone();
            let last = an.clone() - an_next.clone();
            Constraints::with_selector(
                q,
                [
                    bool_check(ao.clone()),
                    bool_check(an.clone()),
                    // Active levels form a prefix from the root, and the new path contains
                    // the old one.
                    ao_next * (one() - ao.clone()),
                    an_next * (one() - an.clone()),
                    ao.clone() * (one() - an),
                    // Shared levels keep their sibling.
                    ao * (sn.clone() - so),
                    // Only a split (a key landing on another key's leaf) extends the path.
                    (one() - split) * ext.clone(),
                    // Extension levels: empty siblings, agreeing bits; the last one has the
                    // displaced leaf as sibling and the bits differ there.
                    ext.clone() * (one() - last.clone()) * sn.clone(),
                    ext.clone() * last.clone() * (sn - lt),
                    ext.clone() * (one() - last.clone()) * (bkp.clone() - bk.clone()),
                    ext.clone() * last.clone() * (bkp + bk - one()),
                    // Count the levels where the path ends after an extension.
                    acc - (acc_next + ext * last),
                ],
            )
        });

        // Bit decomposition of a 128-bit limb, most significant bit first.
        meta.create_gate("bits first", |meta| {
            let q = meta.query_selector(q_bits_first);
            let acc = meta.query_advice(a[0], Rotation::cur());
            let bit = meta.query_advice(a[1], Rotation::cur());
            Constraints::with_selector(q, [bool_check(bit.clone()), acc - bit])
        });
        meta.create_gate("bits next", |meta| {
            let q = meta.query_selector(q_bits_next);
            let acc = meta.query_advice(a[0], Rotation::cur());
            let prev = meta.query_advice(a[0], Rotation::prev());
            let bit = meta.query_advice(a[1], Rotation::cur());
            Constraints::with_selector(
                q,
                [
                    bool_check(bit.clone()),
                    acc - (prev * Expression::Constant(F::from(2)) + bit),
                ],
            )
        });

        // What ends the old path, and what ends the new one.
        meta.create_gate("terminal", |meta| {
            let q = meta.query_selector(q_terminal);
            let [t_own, t_empty, t_other, n_leaf, split, lo, lt, ln] =
                [0, 1, 2, 3, 4, 5, 6, 7].map(|i| meta.query_advice(a[i], Rotation::cur()));
            let [
                t_old,
                t_new,
                bo_hi,
                bo_lo,
                an_hi,
                an_lo,
                inv_hi,
                z_hi,
                inv_lo,
                z_lo,
            ] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(|i| meta.query_advice(a[i], Rotation::next()));
            Constraints::with_selector(
                q,
                [
                    bool_check(t_own.clone()),
                    bool_check(t_empty.clone()),
                    bool_check(t_other.clone()),
                    bool_check(n_leaf.clone()),
                    t_own.clone() + t_empty + t_other.clone() - one(),
                    split - t_other.clone() * n_leaf.clone(),
                    t_old.clone() - (t_own.clone() * lo + t_other * lt),
                    // An absent key reads as zero.
                    (one() - t_own.clone()) * bo_hi,
                    (one() - t_own.clone()) * bo_lo,
                    // Without a leaf afterwards the key was absent and stays zero.
                    (one() - n_leaf.clone()) * t_own.clone(),
                    (one() - n_leaf.clone()) * an_hi.clone(),
                    (one() - n_leaf.clone()) * an_lo.clone(),
                    t_new - (n_leaf.clone() * ln + (one() - n_leaf.clone()) * t_old),
                    // z_hi, z_lo: whether each limb of the value after is zero.
                    z_hi.clone() - (one() - an_hi.clone() * inv_hi),
                    an_hi * z_hi.clone(),
                    z_lo.clone() - (one() - an_lo.clone() * inv_lo),
                    an_lo * z_lo.clone(),
                    // A leaf afterwards only where the key had one or gets a value: a zero write
                    // to an absent key leaves the tree as it was (no tombstone), so the root
                    // after is a function of the root before and the writes.
                    n_leaf * (one() - t_own) * z_hi * z_lo,
                ],
            )
        });

        // Another key's leaf on the path must hold another key.
        meta.create_gate("keys differ", |meta| {
            let q = meta.query_selector(q_keys_differ);
            let [
                k_hi,
                kp_hi,
                inv_hi,
                z_hi,
                k_lo,
                kp_lo,
                inv_lo,
                z_lo,
                t_other,
            ] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(|i| meta.query_advice(a[i], Rotation::cur()));
            let d_hi = k_hi - kp_hi;
            let d_lo = k_lo - kp_lo;
            Constraints::with_selector(
                q,
                [
                    z_hi.clone() - (one() - d_hi.clone() * inv_hi),
                    d_hi * z_hi.clone(),
                    z_lo.clone() - (one() - d_lo.clone() * inv_lo),
                    d_lo * z_lo.clone(),
                    t_other * z_hi * z_lo,
                ],
            )
        });

        // The running root moves only on enabled steps.
        meta.create_gate("output", |meta| {
            let q = meta.query_selector(q_output);
            let [e, root_in, root_old, root_new, root_out] =
                [0, 1, 2, 3, 4].map(|i| meta.query_advice(a[i], Rotation::cur()));
            Constraints::with_selector(
                q,
                [
                    bool_check(e.clone()),
                    e.clone() * (root_old - root_in.clone()),
                    root_out - (root_in.clone() + e * (root_new - root_in)),
                ],
            )
        });

        ChunkConfig {
            poseidon,
            advice,
            instance,
            q_level,
            q_link,
            q_bits_first,
            q_bits_next,
            q_terminal,
            q_keys_differ,
            q_output,
        }
    }

    fn synthesize(&self, config: ChunkConfig, layouter: impl HaloLayouter<F>) -> Result<(), Error> {
        self.layout(&config, plan(layouter))
    }
}

impl ChunkCircuit {
    /// Lays out every step, chaining the running root from the public pre-root, each step's
    /// entry public.
    pub(super) fn layout(
        &self,
        config: &ChunkConfig,
        mut layouter: impl Layouter<F>,
    ) -> Result<(), Error> {
        let mut root = None;
        for (index, step) in self.steps.iter().enumerate() {
            let (out, public) = self.step(
                config,
                layouter.namespace(|| format!("step {index}")),
                step,
                root.take(),
            )?;
            for (field, cell) in public.iter().enumerate() {
                let (column, row) = public::place(index, field);
                expose(&mut layouter, cell, config.instance[column], row)?;
            }
            root = Some(out);
        }
        match root {
            Some(root) => expose(&mut layouter, &root, config.instance[0], public::POST_ROOT),
            None => Err(Error::Synthesis),
        }
    }
}

/// The witness of an is-zero gadget for `x` in columns `[inv, z]` at `offset`: `inv` = 1/x (0
/// for 0) and `z` = 1 - x·inv, which is 1 exactly when x is 0 (the gates check both).
fn is_zero(
    region: &mut Region<'_, F>,
    [inv_column, z_column]: [Column<Advice>; 2],
    offset: usize,
    x: F,
) -> Result<(), Error> {
    let inv = x.invert().unwrap_or(F::ZERO);
    assign(region, inv_column, offset, known(inv))?;
    assign(region, z_column, offset, known(F::ONE - x * inv))?;
    Ok(())
}

fn known(value: F) -> Value<F> {
    Value::known(value)
}

fn flag(value: bool) -> Value<F> {
    Value::known(if value { F::ONE } else { F::ZERO })
}

impl ChunkCircuit {
    fn hash<const L: usize>(
        config: &ChunkConfig,
        mut layouter: impl Layouter<F>,
        message: [Cell; L],
    ) -> Result<Cell, Error> {
        super::backend::hash(&config.poseidon, layouter.namespace(|| "poseidon"), message)
    }

    /// Decomposes `limb` into 128 bits, most significant first.
    fn bits(
        config: &ChunkConfig,
        mut layouter: impl Layouter<F>,
        limb: &Cell,
    ) -> Result<Vec<Cell>, Error> {
        layouter.assign_region(
            || "bits",
            |mut region| {
                let [acc_col, bit_col] = [config.advice[0], config.advice[1]];
                let value = value(limb);
                let mut bits = Vec::with_capacity(LIMB_BITS);
                let mut acc = Value::known(F::ZERO);
                let mut last = None;
                for row in 0..LIMB_BITS {
                    let shift = LIMB_BITS - 1 - row;
                    let bit = value.map(|v| {
                        let repr = PrimeField::to_repr(&v);
                        let byte = repr.as_ref()[shift / 8];
                        F::from(u64::from((byte >> (shift % 8)) & 1))
                    });
                    acc = acc.zip(bit).map(|(acc, bit)| acc.double() + bit);
                    if row == 0 {
                        enable(&mut region, &config.q_bits_first, row)?;
                    } else {
                        enable(&mut region, &config.q_bits_next, row)?;
                    }
                    bits.push(assign(&mut region, bit_col, row, bit)?);
                    last = Some(assign(&mut region, acc_col, row, acc)?);
                }
                if let Some(last) = last {
                    equal(&mut region, &last, limb)?;
                }
                Ok(bits)
            },
        )
    }

    /// The path directions of a key given as limbs: the high limb's 128 bits, then, for a
    /// circuit deeper than 128 levels, the low limb's (paths of 256-bit keys are at most 256
    /// levels long).
    fn key_bits(
        &self,
        config: &ChunkConfig,
        mut layouter: impl Layouter<F>,
        [hi, lo]: [&Cell; 2],
    ) -> Result<Vec<Cell>, Error> {
        let mut bits = Self::bits(config, layouter.namespace(|| "high limb"), hi)?;
        if self.depth > LIMB_BITS {
            bits.extend(Self::bits(config, layouter.namespace(|| "low limb"), lo)?);
        }
        Ok(bits)
    }

    /// One path from a terminal digest to the root; returns (root, siblings, active flags).
    #[allow(clippy::type_complexity)]
    fn path(
        &self,
        config: &ChunkConfig,
        mut layouter: impl Layouter<F>,
        terminal: &Cell,
        siblings: &[F],
        depth: usize,
        bits: &[Cell],
    ) -> Result<(Cell, Vec<Cell>, Vec<Cell>), Error> {
        let mut below = terminal.clone();
        let mut sibling_cells = vec![None; self.depth];
        let mut active_cells = vec![None; self.depth];
        for level in (0..self.depth).rev() {
            let sibling = siblings.get(level).copied().unwrap_or(F::ZERO);
            let active = level < depth;
            let (left, right, hash_cell, out, sib_cell, active_cell) = layouter.assign_region(
                || format!("level {level}"),
                |mut region: Region<'_, F>| {
                    enable(&mut region, &config.q_level, 0)?;
                    let a = config.advice;
                    let below = copy(&below, &mut region, a[0], 0)?;
                    let sib = assign(&mut region, a[1], 0, known(sibling))?;
                    let bit = copy(&bits[level], &mut region, a[2], 0)?;
                    let active_cell = assign(&mut region, a[3], 0, flag(active))?;
                    let b = value(&bit);
                    let cur = value(&below);
                    let left_v = cur
                        .zip(b)
                        .map(|(c, b)| if b == F::ONE { sibling } else { c });
                    let right_v = cur
                        .zip(b)
                        .map(|(c, b)| if b == F::ONE { c } else { sibling });
                    let left = assign(&mut region, a[4], 0, left_v)?;
                    let right = assign(&mut region, a[5], 0, right_v)?;
                    let hash_v = left_v.zip(right_v).map(|(l, r)| poseidon([l, r]));
                    let hash_cell = assign(&mut region, a[6], 0, hash_v)?;
                    let out_v = if active { hash_v } else { cur };
                    let out = assign(&mut region, a[7], 0, out_v)?;
                    Ok((left, right, hash_cell, out, sib, active_cell))
                },
            )?;
            let hashed = Self::hash(config, layouter.namespace(|| "node"), [left, right])?;
            layouter.assign_region(
                || "node hash",
                |mut region| equal(&mut region, &hashed, &hash_cell),
            )?;
            sibling_cells[level] = Some(sib_cell);
            active_cells[level] = Some(active_cell);
            below = out;
        }
        let siblings = sibling_cells.into_iter().flatten().collect();
        let actives = active_cells.into_iter().flatten().collect();
        Ok((below, siblings, actives))
    }

    /// One step: returns the root after it and its public cells (enabled, key, before, after;
    /// [`public::FIELDS`] of them).
    #[allow(clippy::too_many_lines, clippy::type_complexity)]
    fn step(
        &self,
        config: &ChunkConfig,
        mut layouter: impl Layouter<F>,
        step: &Step,
        previous: Option<Cell>,
    ) -> Result<(Cell, [Cell; public::FIELDS]), Error> {
        let a = config.advice;
        let (other_key, other_value) = match step.old_terminal {
            Terminal::Other(key, value) => (key, value),
            _ => ([F::ZERO; 2], [F::ZERO; 2]),
        };
        // The step's inputs.
        let inputs = layouter.assign_region(
            || "inputs",
            |mut region| {
                let values = [
                    step.key[0],
                    step.key[1],
                    step.before[0],
                    step.before[1],
                    step.after[0],
                    step.after[1],
                    other_key[0],
                    other_key[1],
                    other_value[0],
                    other_value[1],
                ];
                let mut cells = Vec::with_capacity(10);
                for (i, value) in values.into_iter().enumerate() {
                    cells.push(assign(&mut region, a[i], 0, known(value))?);
                }
                Ok(cells)
            },
        )?;
        let [
            k_hi,
            k_lo,
            b_hi,
            b_lo,
            n_hi,
            n_lo,
            kp_hi,
            kp_lo,
            vp_hi,
            vp_lo,
        ] = <[Cell; 10]>::try_from(inputs).map_err(|_| Error::Synthesis)?;

        let leaf_own = Self::hash(
            config,
            layouter.namespace(|| "leaf before"),
            [k_hi.clone(), k_lo.clone(), b_hi.clone(), b_lo.clone()],
        )?;
        let leaf_new = Self::hash(
            config,
            layouter.namespace(|| "leaf after"),
            [k_hi.clone(), k_lo.clone(), n_hi.clone(), n_lo.clone()],
        )?;
        let leaf_other = Self::hash(
            config,
            layouter.namespace(|| "leaf other"),
            [kp_hi.clone(), kp_lo.clone(), vp_hi, vp_lo],
        )?;
        let key_bits = self.key_bits(config, layouter.namespace(|| "key bits"), [&k_hi, &k_lo])?;
        let other_bits = self.key_bits(
            config,
            layouter.namespace(|| "other key bits"),
            [&kp_hi, &kp_lo],
        )?;

        // Terminals.
        let (t_own, t_empty, t_other) = match step.old_terminal {
            Terminal::Own => (true, false, false),
            Terminal::Empty => (false, true, false),
            Terminal::Other(..) => (false, false, true),
        };
        let split = t_other && step.new_is_leaf;
        let (t_old, t_new, t_other_cell, split_cell, leaf_other_for_link) = layouter
            .assign_region(
                || "terminal",
                |mut region| {
                    enable(&mut region, &config.q_terminal, 0)?;
                    assign(&mut region, a[0], 0, flag(t_own))?;
                    assign(&mut region, a[1], 0, flag(t_empty))?;
                    let t_other_cell = assign(&mut region, a[2], 0, flag(t_other))?;
                    assign(&mut region, a[3], 0, flag(step.new_is_leaf))?;
                    let split_cell = assign(&mut region, a[4], 0, flag(split))?;
                    let lo = copy(&leaf_own, &mut region, a[5], 0)?;
                    let lt = copy(&leaf_other, &mut region, a[6], 0)?;
                    let ln = copy(&leaf_new, &mut region, a[7], 0)?;
                    let t_old_v = match step.old_terminal {
                        Terminal::Own => value(&lo),
                        Terminal::Empty => Value::known(F::ZERO),
                        Terminal::Other(..) => value(&lt),
                    };
                    let t_new_v = if step.new_is_leaf {
                        value(&ln)
                    } else {
                        t_old_v
                    };
                    let t_old = assign(&mut region, a[0], 1, t_old_v)?;
                    let t_new = assign(&mut region, a[1], 1, t_new_v)?;
                    copy(&b_hi, &mut region, a[2], 1)?;
                    copy(&b_lo, &mut region, a[3], 1)?;
                    copy(&n_hi, &mut region, a[4], 1)?;
                    copy(&n_lo, &mut region, a[5], 1)?;
                    let [after_hi, after_lo] = step.after;
                    is_zero(&mut region, [a[6], a[7]], 1, after_hi)?;
                    is_zero(&mut region, [a[8], a[9]], 1, after_lo)?;
                    Ok((t_old, t_new, t_other_cell, split_cell, lt))
                },
            )?;

        layouter.assign_region(
            || "keys differ",
            |mut region| {
                enable(&mut region, &config.q_keys_differ, 0)?;
                copy(&k_hi, &mut region, a[0], 0)?;
                copy(&kp_hi, &mut region, a[1], 0)?;
                is_zero(&mut region, [a[2], a[3]], 0, step.key[0] - other_key[0])?;
                copy(&k_lo, &mut region, a[4], 0)?;
                copy(&kp_lo, &mut region, a[5], 0)?;
                is_zero(&mut region, [a[6], a[7]], 0, step.key[1] - other_key[1])?;
                copy(&t_other_cell, &mut region, a[8], 0)?;
                Ok(())
            },
        )?;

        let (root_old, old_sibs, old_active) = self.path(
            config,
            layouter.namespace(|| "old path"),
            &t_old,
            &step.old_siblings,
            step.old_depth,
            &key_bits,
        )?;
        let (root_new, new_sibs, new_active) = self.path(
            config,
            layouter.namespace(|| "new path"),
            &t_new,
            &step.new_siblings,
            step.new_depth,
            &key_bits,
        )?;

        // The link between the two paths, one row per level and a closing row of zeros.
        layouter.assign_region(
            || "link",
            |mut region| {
                let mut acc = F::ZERO;
                let mut acc_cells = Vec::with_capacity(self.depth);
                for level in (0..self.depth).rev() {
                    let ext = level >= step.old_depth && level < step.new_depth;
                    let last = level + 1 == step.new_depth;
                    if ext && last {
                        acc += F::ONE;
                    }
                    enable(&mut region, &config.q_link, level)?;
                    copy(&old_active[level], &mut region, a[0], level)?;
                    copy(&new_active[level], &mut region, a[1], level)?;
                    copy(&old_sibs[level], &mut region, a[2], level)?;
                    copy(&new_sibs[level], &mut region, a[3], level)?;
                    copy(&key_bits[level], &mut region, a[4], level)?;
                    copy(&other_bits[level], &mut region, a[5], level)?;
                    copy(&leaf_other_for_link, &mut region, a[6], level)?;
                    copy(&split_cell, &mut region, a[7], level)?;
                    acc_cells.push(assign(&mut region, a[8], level, known(acc))?);
                }
                for column in [a[0], a[1], a[8]] {
                    from_constant(&mut region, column, self.depth, F::ZERO)?;
                }
                if let Some(top) = acc_cells.last() {
                    equal(&mut region, top, &split_cell)?;
                }
                Ok(())
            },
        )?;

        // The running root: the previous step's, or the public pre-root.
        let (root_out, enabled) = layouter.assign_region(
            || "output",
            |mut region| {
                enable(&mut region, &config.q_output, 0)?;
                let e = step.enabled;
                let enabled = assign(&mut region, a[0], 0, flag(e))?;
                let r_in = match &previous {
                    Some(cell) => copy(cell, &mut region, a[1], 0)?,
                    None => {
                        from_instance(&mut region, config.instance[0], public::PRE_ROOT, a[1], 0)?
                    }
                };
                copy(&root_old, &mut region, a[2], 0)?;
                let r_new = copy(&root_new, &mut region, a[3], 0)?;
                let out = if e { value(&r_new) } else { value(&r_in) };
                let root_out = assign(&mut region, a[4], 0, out)?;
                Ok((root_out, enabled))
            },
        )?;
        Ok((root_out, [enabled, k_hi, k_lo, b_hi, b_lo, n_hi, n_lo]))
    }
}
