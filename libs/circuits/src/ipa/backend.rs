//! What the chunk circuit needs from its proof system, for zcash's `halo2_proofs` over the
//! Pasta field (IPA, no trusted setup): the same names as the production `crate::backend`, so
//! `circuit.rs` compiles unchanged. Kept for the measured comparison of ADR 0007.

pub use ff::{Field, PrimeField};
use halo2_gadgets::poseidon::{
    Hash as PoseidonHash, Pow5Chip, Pow5Config,
    primitives::{ConstantLength, P128Pow5T3},
};
pub use halo2_proofs::{
    circuit::{Layouter, Region, SimpleFloorPlanner, Value},
    pasta::Fp as F,
    plonk::{
        Advice, Circuit, Column, ConstraintSystem, Constraints, Error, Expression, Instance,
        Selector,
    },
    poly::Rotation,
};
pub use verity_commitment::pasta::{PoseidonPasta as Hasher, element as field_element, limbs};

/// The proof system's own layouter (the circuit's `synthesize` receives one).
pub use halo2_proofs::circuit::Layouter as HaloLayouter;

/// An assigned advice cell.
pub type Cell = halo2_proofs::circuit::AssignedCell<F, F>;

/// The in-circuit Poseidon: `halo2_gadgets`' `Pow5Chip` with `P128Pow5T3`.
pub type PoseidonConfig = Pow5Config<F, 3, 2>;

/// The layouter the circuit lays its regions out with: halo2's own.
pub fn plan<L: Layouter<F>>(layouter: L) -> L {
    layouter
}

/// Columns of the Poseidon chip (three state, one partial S-box, six round-constant columns).
pub fn configure_poseidon(meta: &mut ConstraintSystem<F>) -> PoseidonConfig {
    let state = [(); 3].map(|()| meta.advice_column());
    let partial_sbox = meta.advice_column();
    let rc_a = [(); 3].map(|()| meta.fixed_column());
    let rc_b = [(); 3].map(|()| meta.fixed_column());
    meta.enable_constant(rc_b[0]);
    Pow5Chip::configure::<P128Pow5T3>(meta, state, partial_sbox, rc_a, rc_b)
}

/// Constrains `Poseidon_ConstantLength<L>(message)` and returns the digest cell.
pub fn hash<const L: usize>(
    config: &PoseidonConfig,
    mut layouter: impl Layouter<F>,
    message: [Cell; L],
) -> Result<Cell, Error> {
    let chip = Pow5Chip::construct(config.clone());
    let hasher = PoseidonHash::<_, _, P128Pow5T3, ConstantLength<L>, 3, 2>::init(
        chip,
        layouter.namespace(|| "init"),
    )?;
    hasher.hash(layouter.namespace(|| "hash"), message)
}

/// Native Poseidon over `L` field elements (the permutation the chip constrains).
pub fn poseidon<const L: usize>(message: [F; L]) -> F {
    verity_commitment::pasta::hash(message)
}

/// Assigns a witness value.
pub fn assign(
    region: &mut Region<'_, F>,
    column: Column<Advice>,
    offset: usize,
    value: Value<F>,
) -> Result<Cell, Error> {
    region.assign_advice(|| "", column, offset, || value)
}

/// Copies `cell` into the region and constrains the copy equal to it.
pub fn copy(
    cell: &Cell,
    region: &mut Region<'_, F>,
    column: Column<Advice>,
    offset: usize,
) -> Result<Cell, Error> {
    cell.copy_advice(|| "", region, column, offset)
}

/// Constrains two cells equal.
pub fn equal(region: &mut Region<'_, F>, left: &Cell, right: &Cell) -> Result<(), Error> {
    region.constrain_equal(left.cell(), right.cell())
}

/// The value of a cell (unknown during key generation).
pub fn value(cell: &Cell) -> Value<F> {
    cell.value().copied()
}

/// Turns a selector on at `offset`.
pub fn enable(region: &mut Region<'_, F>, selector: &Selector, offset: usize) -> Result<(), Error> {
    selector.enable(region, offset)
}

/// Assigns a constant (fixed in the circuit).
pub fn from_constant(
    region: &mut Region<'_, F>,
    column: Column<Advice>,
    offset: usize,
    constant: F,
) -> Result<Cell, Error> {
    region.assign_advice_from_constant(|| "", column, offset, constant)
}

/// Copies a public input into the region.
pub fn from_instance(
    region: &mut Region<'_, F>,
    instance: Column<Instance>,
    row: usize,
    column: Column<Advice>,
    offset: usize,
) -> Result<Cell, Error> {
    region.assign_advice_from_instance(|| "", instance, row, column, offset)
}

/// Constrains a cell equal to a public input.
pub fn expose(
    layouter: &mut impl Layouter<F>,
    cell: &Cell,
    instance: Column<Instance>,
    row: usize,
) -> Result<(), Error> {
    layouter.constrain_instance(cell.cell(), instance, row)
}

/// The field's name in error messages.
pub const FIELD: &str = "Pasta";
