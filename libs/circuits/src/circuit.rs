//! The chunk circuit: a sequence of single-key steps over the compressed sparse Merkle tree of
//! `verity-commitment`, hashed with Poseidon `P128Pow5T3` over the Pasta base field.
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
//! Path directions are the bits of `k`'s high limb, decomposed in-circuit (so a prover cannot
//! place a leaf off its key's path). The running root starts at the public `pre_root` and must
//! end at `post_root`. Two running Poseidon hashes bind every step's `(k, before)` (the reads)
//! and `(k, after)` (the writes); they start and end at public inputs, so a chunk may be split
//! into segments whose hashes chain. The hash of the chunk's transactions is a public input the
//! circuit only carries: the proof is bound to it through the transcript.
//!
//! Disabled steps pad a segment to its fixed size and leave every running value unchanged.

use ff::Field;
use halo2_gadgets::poseidon::{
    Hash as PoseidonHash, Pow5Chip, Pow5Config,
    primitives::{ConstantLength, P128Pow5T3},
};
use halo2_proofs::{
    circuit::{AssignedCell, Layouter, Region, SimpleFloorPlanner, Value},
    pasta::Fp,
    plonk::{
        Advice, Circuit, Column, ConstraintSystem, Constraints, Error, Expression, Instance,
        Selector,
    },
    poly::Rotation,
};

/// Rows of the public input column.
pub mod public {
    /// The root before the segment.
    pub const PRE_ROOT: usize = 0;
    /// The root after the segment.
    pub const POST_ROOT: usize = 1;
    /// The reads hash before the segment.
    pub const READS_IN: usize = 2;
    /// The reads hash after the segment.
    pub const READS_OUT: usize = 3;
    /// The writes hash before the segment.
    pub const WRITES_IN: usize = 4;
    /// The writes hash after the segment.
    pub const WRITES_OUT: usize = 5;
    /// The hash of the chunk's transactions.
    pub const TX_HASH: usize = 6;
    /// Number of public inputs.
    pub const LEN: usize = 7;
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
    Other([Fp; 2], [Fp; 2]),
}

/// The witness of one step, in field elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// False for padding.
    pub enabled: bool,
    /// The key as two 128-bit limbs, high first.
    pub key: [Fp; 2],
    /// The value before, as limbs (zero when absent).
    pub before: [Fp; 2],
    /// The value after, as limbs (zero when absent).
    pub after: [Fp; 2],
    /// What ends the key's path before the step.
    pub old_terminal: Terminal,
    /// Whether the key has a leaf after the step.
    pub new_is_leaf: bool,
    /// Siblings of the old path from the root down, padded with zeros to the circuit depth.
    pub old_siblings: Vec<Fp>,
    /// Length of the old path.
    pub old_depth: usize,
    /// Siblings of the new path, padded.
    pub new_siblings: Vec<Fp>,
    /// Length of the new path.
    pub new_depth: usize,
}

impl Step {
    /// A disabled step for a circuit of `depth` levels.
    pub fn padding(depth: usize) -> Self {
        Self {
            enabled: false,
            key: [Fp::ZERO; 2],
            before: [Fp::ZERO; 2],
            after: [Fp::ZERO; 2],
            old_terminal: Terminal::Empty,
            new_is_leaf: false,
            old_siblings: vec![Fp::ZERO; depth],
            old_depth: 0,
            new_siblings: vec![Fp::ZERO; depth],
            new_depth: 0,
        }
    }
}

/// Native Poseidon over `L` field elements (the permutation the chip constrains).
pub fn poseidon<const L: usize>(message: [Fp; L]) -> Fp {
    verity_commitment::poseidon_hash(message)
}

/// The chunk circuit of a fixed shape: `steps.len()` steps over paths of `depth` levels.
#[derive(Debug, Clone)]
pub struct ChunkCircuit {
    /// Levels of every path (the deepest leaf a step can reach).
    pub depth: usize,
    /// The steps, padded to the circuit's size.
    pub steps: Vec<Step>,
}

/// Columns and gates.
#[derive(Debug, Clone)]
pub struct ChunkConfig {
    poseidon: Pow5Config<Fp, 3, 2>,
    advice: [Column<Advice>; 10],
    instance: Column<Instance>,
    q_level: Selector,
    q_link: Selector,
    q_bits_first: Selector,
    q_bits_next: Selector,
    q_terminal: Selector,
    q_keys_differ: Selector,
    q_output: Selector,
}

fn bool_check(value: Expression<Fp>) -> Expression<Fp> {
    value.clone() * (Expression::Constant(Fp::ONE) - value)
}

fn one() -> Expression<Fp> {
    Expression::Constant(Fp::ONE)
}

impl Circuit<Fp> for ChunkCircuit {
    type Config = ChunkConfig;
    type FloorPlanner = SimpleFloorPlanner;

    fn without_witnesses(&self) -> Self {
        Self {
            depth: self.depth,
            steps: (0..self.steps.len())
                .map(|_| Step::padding(self.depth))
                .collect(),
        }
    }

    fn configure(meta: &mut ConstraintSystem<Fp>) -> ChunkConfig {
        let state = [(); 3].map(|()| meta.advice_column());
        let partial_sbox = meta.advice_column();
        let rc_a = [(); 3].map(|()| meta.fixed_column());
        let rc_b = [(); 3].map(|()| meta.fixed_column());
        meta.enable_constant(rc_b[0]);
        let poseidon = Pow5Chip::configure::<P128Pow5T3>(meta, state, partial_sbox, rc_a, rc_b);

        let advice = [(); 10].map(|()| meta.advice_column());
        for column in advice {
            meta.enable_equality(column);
        }
        let instance = meta.instance_column();
        meta.enable_equality(instance);

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
                    acc - (prev * Expression::Constant(Fp::from(2)) + bit),
                ],
            )
        });

        // What ends the old path, and what ends the new one.
        meta.create_gate("terminal", |meta| {
            let q = meta.query_selector(q_terminal);
            let [t_own, t_empty, t_other, n_leaf, split, lo, lt, ln] =
                [0, 1, 2, 3, 4, 5, 6, 7].map(|i| meta.query_advice(a[i], Rotation::cur()));
            let [t_old, t_new, bo_hi, bo_lo, an_hi, an_lo] =
                [0, 1, 2, 3, 4, 5].map(|i| meta.query_advice(a[i], Rotation::next()));
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
                    (one() - n_leaf.clone()) * t_own,
                    (one() - n_leaf.clone()) * an_hi,
                    (one() - n_leaf.clone()) * an_lo,
                    t_new - (n_leaf.clone() * ln + (one() - n_leaf) * t_old),
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

        // The running root and hashes move only on enabled steps.
        meta.create_gate("output", |meta| {
            let q = meta.query_selector(q_output);
            let [e, root_in, root_old, root_new, root_out] =
                [0, 1, 2, 3, 4].map(|i| meta.query_advice(a[i], Rotation::cur()));
            let [hr_in, hr_h, hr_out, hw_in, hw_h, hw_out] =
                [0, 1, 2, 3, 4, 5].map(|i| meta.query_advice(a[i], Rotation::next()));
            Constraints::with_selector(
                q,
                [
                    bool_check(e.clone()),
                    e.clone() * (root_old - root_in.clone()),
                    root_out - (root_in.clone() + e.clone() * (root_new - root_in)),
                    hr_out - (hr_in.clone() + e.clone() * (hr_h - hr_in)),
                    hw_out - (hw_in.clone() + e * (hw_h - hw_in)),
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

    fn synthesize(
        &self,
        config: ChunkConfig,
        mut layouter: impl Layouter<Fp>,
    ) -> Result<(), Error> {
        let mut root = None;
        let mut reads = None;
        let mut writes = None;
        for (index, step) in self.steps.iter().enumerate() {
            let outputs = self.step(
                &config,
                layouter.namespace(|| format!("step {index}")),
                step,
                (root.take(), reads.take(), writes.take()),
            )?;
            root = Some(outputs.0);
            reads = Some(outputs.1);
            writes = Some(outputs.2);
        }
        match (root, reads, writes) {
            (Some(root), Some(reads), Some(writes)) => {
                layouter.constrain_instance(root.cell(), config.instance, public::POST_ROOT)?;
                layouter.constrain_instance(reads.cell(), config.instance, public::READS_OUT)?;
                layouter.constrain_instance(writes.cell(), config.instance, public::WRITES_OUT)?;
                Ok(())
            }
            _ => Err(Error::Synthesis),
        }
    }
}

type Cell = AssignedCell<Fp, Fp>;

fn known(value: Fp) -> Value<Fp> {
    Value::known(value)
}

fn flag(value: bool) -> Value<Fp> {
    Value::known(if value { Fp::ONE } else { Fp::ZERO })
}

impl ChunkCircuit {
    fn hash<const L: usize>(
        config: &ChunkConfig,
        mut layouter: impl Layouter<Fp>,
        message: [Cell; L],
    ) -> Result<Cell, Error> {
        let chip = Pow5Chip::construct(config.poseidon.clone());
        let hasher = PoseidonHash::<_, _, P128Pow5T3, ConstantLength<L>, 3, 2>::init(
            chip,
            layouter.namespace(|| "init"),
        )?;
        hasher.hash(layouter.namespace(|| "hash"), message)
    }

    /// Decomposes `limb` into 128 bits, most significant first.
    fn bits(
        config: &ChunkConfig,
        mut layouter: impl Layouter<Fp>,
        limb: &Cell,
    ) -> Result<Vec<Cell>, Error> {
        layouter.assign_region(
            || "bits",
            |mut region| {
                let [acc_col, bit_col] = [config.advice[0], config.advice[1]];
                let value = limb.value().copied();
                let mut bits = Vec::with_capacity(LIMB_BITS);
                let mut acc = Value::known(Fp::ZERO);
                let mut last = None;
                for row in 0..LIMB_BITS {
                    let shift = LIMB_BITS - 1 - row;
                    let bit = value.map(|v| {
                        let repr = ff::PrimeField::to_repr(&v);
                        let byte = repr.as_ref()[shift / 8];
                        Fp::from(u64::from((byte >> (shift % 8)) & 1))
                    });
                    acc = acc.zip(bit).map(|(acc, bit)| acc.double() + bit);
                    if row == 0 {
                        config.q_bits_first.enable(&mut region, row)?;
                    } else {
                        config.q_bits_next.enable(&mut region, row)?;
                    }
                    bits.push(region.assign_advice(|| "bit", bit_col, row, || bit)?);
                    last = Some(region.assign_advice(|| "acc", acc_col, row, || acc)?);
                }
                if let Some(last) = last {
                    region.constrain_equal(last.cell(), limb.cell())?;
                }
                Ok(bits)
            },
        )
    }

    /// One path from a terminal digest to the root; returns (root, siblings, active flags).
    #[allow(clippy::type_complexity)]
    fn path(
        &self,
        config: &ChunkConfig,
        mut layouter: impl Layouter<Fp>,
        terminal: &Cell,
        siblings: &[Fp],
        depth: usize,
        bits: &[Cell],
    ) -> Result<(Cell, Vec<Cell>, Vec<Cell>), Error> {
        let mut below = terminal.clone();
        let mut sibling_cells = vec![None; self.depth];
        let mut active_cells = vec![None; self.depth];
        for level in (0..self.depth).rev() {
            let sibling = siblings.get(level).copied().unwrap_or(Fp::ZERO);
            let active = level < depth;
            let (left, right, hash_cell, out, sib_cell, active_cell) = layouter.assign_region(
                || format!("level {level}"),
                |mut region: Region<'_, Fp>| {
                    config.q_level.enable(&mut region, 0)?;
                    let a = config.advice;
                    let below = below.copy_advice(|| "below", &mut region, a[0], 0)?;
                    let sib = region.assign_advice(|| "sibling", a[1], 0, || known(sibling))?;
                    let bit = bits[level].copy_advice(|| "bit", &mut region, a[2], 0)?;
                    let active_cell =
                        region.assign_advice(|| "active", a[3], 0, || flag(active))?;
                    let b = bit.value().copied();
                    let cur = below.value().copied();
                    let left_v = cur
                        .zip(b)
                        .map(|(c, b)| if b == Fp::ONE { sibling } else { c });
                    let right_v = cur
                        .zip(b)
                        .map(|(c, b)| if b == Fp::ONE { c } else { sibling });
                    let left = region.assign_advice(|| "left", a[4], 0, || left_v)?;
                    let right = region.assign_advice(|| "right", a[5], 0, || right_v)?;
                    let hash_v = left_v.zip(right_v).map(|(l, r)| poseidon([l, r]));
                    let hash_cell = region.assign_advice(|| "hash", a[6], 0, || hash_v)?;
                    let out_v = if active { hash_v } else { cur };
                    let out = region.assign_advice(|| "out", a[7], 0, || out_v)?;
                    Ok((left, right, hash_cell, out, sib, active_cell))
                },
            )?;
            let hashed = Self::hash(config, layouter.namespace(|| "node"), [left, right])?;
            layouter.assign_region(
                || "node hash",
                |mut region| region.constrain_equal(hashed.cell(), hash_cell.cell()),
            )?;
            sibling_cells[level] = Some(sib_cell);
            active_cells[level] = Some(active_cell);
            below = out;
        }
        let siblings = sibling_cells.into_iter().flatten().collect();
        let actives = active_cells.into_iter().flatten().collect();
        Ok((below, siblings, actives))
    }

    #[allow(clippy::too_many_lines, clippy::type_complexity)]
    fn step(
        &self,
        config: &ChunkConfig,
        mut layouter: impl Layouter<Fp>,
        step: &Step,
        previous: (Option<Cell>, Option<Cell>, Option<Cell>),
    ) -> Result<(Cell, Cell, Cell), Error> {
        let a = config.advice;
        let (other_key, other_value) = match step.old_terminal {
            Terminal::Other(key, value) => (key, value),
            _ => ([Fp::ZERO; 2], [Fp::ZERO; 2]),
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
                    cells.push(region.assign_advice(|| "input", a[i], 0, || known(value))?);
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
        let key_bits = Self::bits(config, layouter.namespace(|| "key bits"), &k_hi)?;
        let other_bits = Self::bits(config, layouter.namespace(|| "other key bits"), &kp_hi)?;

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
                    config.q_terminal.enable(&mut region, 0)?;
                    region.assign_advice(|| "t_own", a[0], 0, || flag(t_own))?;
                    region.assign_advice(|| "t_empty", a[1], 0, || flag(t_empty))?;
                    let t_other_cell =
                        region.assign_advice(|| "t_other", a[2], 0, || flag(t_other))?;
                    region.assign_advice(|| "n_leaf", a[3], 0, || flag(step.new_is_leaf))?;
                    let split_cell = region.assign_advice(|| "split", a[4], 0, || flag(split))?;
                    let lo = leaf_own.copy_advice(|| "leaf own", &mut region, a[5], 0)?;
                    let lt = leaf_other.copy_advice(|| "leaf other", &mut region, a[6], 0)?;
                    let ln = leaf_new.copy_advice(|| "leaf new", &mut region, a[7], 0)?;
                    let t_old_v = match step.old_terminal {
                        Terminal::Own => lo.value().copied(),
                        Terminal::Empty => Value::known(Fp::ZERO),
                        Terminal::Other(..) => lt.value().copied(),
                    };
                    let t_new_v = if step.new_is_leaf {
                        ln.value().copied()
                    } else {
                        t_old_v
                    };
                    let t_old = region.assign_advice(|| "t_old", a[0], 1, || t_old_v)?;
                    let t_new = region.assign_advice(|| "t_new", a[1], 1, || t_new_v)?;
                    b_hi.copy_advice(|| "before hi", &mut region, a[2], 1)?;
                    b_lo.copy_advice(|| "before lo", &mut region, a[3], 1)?;
                    n_hi.copy_advice(|| "after hi", &mut region, a[4], 1)?;
                    n_lo.copy_advice(|| "after lo", &mut region, a[5], 1)?;
                    Ok((t_old, t_new, t_other_cell, split_cell, lt))
                },
            )?;

        layouter.assign_region(
            || "keys differ",
            |mut region| {
                config.q_keys_differ.enable(&mut region, 0)?;
                let inv = |x: Fp| x.invert().unwrap_or(Fp::ZERO);
                let d_hi = step.key[0] - other_key[0];
                let d_lo = step.key[1] - other_key[1];
                k_hi.copy_advice(|| "k hi", &mut region, a[0], 0)?;
                kp_hi.copy_advice(|| "k' hi", &mut region, a[1], 0)?;
                region.assign_advice(|| "inv hi", a[2], 0, || known(inv(d_hi)))?;
                region.assign_advice(|| "z hi", a[3], 0, || known(Fp::ONE - d_hi * inv(d_hi)))?;
                k_lo.copy_advice(|| "k lo", &mut region, a[4], 0)?;
                kp_lo.copy_advice(|| "k' lo", &mut region, a[5], 0)?;
                region.assign_advice(|| "inv lo", a[6], 0, || known(inv(d_lo)))?;
                region.assign_advice(|| "z lo", a[7], 0, || known(Fp::ONE - d_lo * inv(d_lo)))?;
                t_other_cell.copy_advice(|| "t_other", &mut region, a[8], 0)?;
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
                let mut acc = Fp::ZERO;
                let mut acc_cells = Vec::with_capacity(self.depth);
                for level in (0..self.depth).rev() {
                    let ext = level >= step.old_depth && level < step.new_depth;
                    let last = level + 1 == step.new_depth;
                    if ext && last {
                        acc += Fp::ONE;
                    }
                    config.q_link.enable(&mut region, level)?;
                    old_active[level].copy_advice(|| "ao", &mut region, a[0], level)?;
                    new_active[level].copy_advice(|| "an", &mut region, a[1], level)?;
                    old_sibs[level].copy_advice(|| "so", &mut region, a[2], level)?;
                    new_sibs[level].copy_advice(|| "sn", &mut region, a[3], level)?;
                    key_bits[level].copy_advice(|| "bk", &mut region, a[4], level)?;
                    other_bits[level].copy_advice(|| "bk'", &mut region, a[5], level)?;
                    leaf_other_for_link.copy_advice(|| "lt", &mut region, a[6], level)?;
                    split_cell.copy_advice(|| "split", &mut region, a[7], level)?;
                    acc_cells.push(region.assign_advice(|| "acc", a[8], level, || known(acc))?);
                }
                for column in [a[0], a[1], a[8]] {
                    region.assign_advice_from_constant(
                        || "closing zero",
                        column,
                        self.depth,
                        Fp::ZERO,
                    )?;
                }
                if let Some(top) = acc_cells.last() {
                    region.constrain_equal(top.cell(), split_cell.cell())?;
                }
                Ok(())
            },
        )?;

        // Running root and hashes.
        let (root_in, reads_in, writes_in) = layouter.assign_region(
            || "running inputs",
            |mut region| {
                let cell = |region: &mut Region<'_, Fp>,
                            previous: &Option<Cell>,
                            row: usize,
                            column: usize|
                 -> Result<Cell, Error> {
                    match previous {
                        Some(cell) => cell.copy_advice(|| "running", region, a[column], 0),
                        None => region.assign_advice_from_instance(
                            || "public",
                            config.instance,
                            row,
                            a[column],
                            0,
                        ),
                    }
                };
                Ok((
                    cell(&mut region, &previous.0, public::PRE_ROOT, 0)?,
                    cell(&mut region, &previous.1, public::READS_IN, 1)?,
                    cell(&mut region, &previous.2, public::WRITES_IN, 2)?,
                ))
            },
        )?;
        let reads_hashed = Self::hash(
            config,
            layouter.namespace(|| "reads hash"),
            [reads_in.clone(), leaf_own],
        )?;
        let writes_hashed = Self::hash(
            config,
            layouter.namespace(|| "writes hash"),
            [writes_in.clone(), leaf_new],
        )?;
        layouter.assign_region(
            || "output",
            |mut region| {
                config.q_output.enable(&mut region, 0)?;
                let e = step.enabled;
                region.assign_advice(|| "enabled", a[0], 0, || flag(e))?;
                let r_in = root_in.copy_advice(|| "root in", &mut region, a[1], 0)?;
                root_old.copy_advice(|| "root old", &mut region, a[2], 0)?;
                let r_new = root_new.copy_advice(|| "root new", &mut region, a[3], 0)?;
                let pick = |in_v: Value<Fp>, new_v: Value<Fp>| if e { new_v } else { in_v };
                let root_out = region.assign_advice(
                    || "root out",
                    a[4],
                    0,
                    || pick(r_in.value().copied(), r_new.value().copied()),
                )?;
                let hr_in = reads_in.copy_advice(|| "reads in", &mut region, a[0], 1)?;
                let hr_h = reads_hashed.copy_advice(|| "reads hashed", &mut region, a[1], 1)?;
                let reads_out = region.assign_advice(
                    || "reads out",
                    a[2],
                    1,
                    || pick(hr_in.value().copied(), hr_h.value().copied()),
                )?;
                let hw_in = writes_in.copy_advice(|| "writes in", &mut region, a[3], 1)?;
                let hw_h = writes_hashed.copy_advice(|| "writes hashed", &mut region, a[4], 1)?;
                let writes_out = region.assign_advice(
                    || "writes out",
                    a[5],
                    1,
                    || pick(hw_in.value().copied(), hw_h.value().copied()),
                )?;
                Ok((root_out, reads_out, writes_out))
            },
        )
    }
}
