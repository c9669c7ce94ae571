//! What the chunk circuit ([`crate::circuit`]) needs from its proof system, for `halo2-axiom`
//! (KZG over BN254, the production backend). The circuit is written against these names only,
//! so another backend (zcash's `halo2_proofs` was one, until ADR 0007 measured it and it was
//! removed) needs only this module again.
//!
//! `halo2-axiom`'s own floor planner does not lay regions out (every region starts at row 0;
//! its circuits place rows themselves), so this module brings the layout zcash's
//! `SimpleFloorPlanner` does: each region is first run to measure its shape (columns and
//! height), then placed at the first row where all its columns are free, then run for real.

use std::collections::HashMap;
use std::marker::PhantomData;

pub use ff::{Field, PrimeField};
use halo2_axiom::circuit::{Cell as HaloCell, Region as HaloRegion};
pub use halo2_axiom::{
    circuit::{Layouter as HaloLayouter, SimpleFloorPlanner, Value},
    halo2curves::{bn256::Fr as F, ff},
    plonk::{
        Advice, Circuit, Column, ConstraintSystem, Constraints, Error, Expression, Fixed, Instance,
        Selector, VirtualCells,
    },
    poly::Rotation,
};

pub use crate::poseidon2::{PoseidonConfig, configure as configure_poseidon, hash};
pub use verity_commitment::{
    Poseidon2Bn254 as Hasher, field_element, field_limbs as limbs, poseidon_hash as poseidon,
};

/// The field's name in error messages.
pub const FIELD: &str = "BN254";

/// An assigned cell: where it is (unknown while a region's shape is measured) and its value.
#[derive(Debug, Clone)]
pub struct Cell {
    at: Option<HaloCell>,
    value: Value<F>,
}

/// A column as the planner tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Advice(usize),
    Fixed(usize),
    Selector(usize),
}

/// What measuring a region found.
#[derive(Debug, Default)]
struct Shape {
    slots: Vec<Slot>,
    rows: usize,
    constants: usize,
}

impl Shape {
    fn uses(&mut self, slot: Slot, offset: usize) {
        if !self.slots.contains(&slot) {
            self.slots.push(slot);
        }
        self.rows = self.rows.max(offset + 1);
    }
}

enum Mode<'r> {
    Measure(&'r mut Shape),
    Assign {
        region: HaloRegion<'r, F>,
        base: usize,
    },
}

/// A region as the circuit sees it: offsets are relative to where the planner placed it.
pub struct Region<'r, T> {
    mode: Mode<'r>,
    _field: PhantomData<T>,
}

impl<'r> Region<'r, F> {
    fn measure(shape: &'r mut Shape) -> Self {
        Self {
            mode: Mode::Measure(shape),
            _field: PhantomData,
        }
    }

    fn assign(region: HaloRegion<'r, F>, base: usize) -> Self {
        Self {
            mode: Mode::Assign { region, base },
            _field: PhantomData,
        }
    }
}

fn placed(cell: &Cell) -> Result<HaloCell, Error> {
    cell.at.ok_or(Error::Synthesis)
}

/// The layouter the circuit is written against: regions, namespaces (names only; the planner
/// keeps none), and exposing a cell as a public input.
pub trait Layouter<T> {
    /// Places and assigns one region (the closure runs twice: to measure, then to assign).
    fn assign_region<A, AR, N, NR>(&mut self, name: N, assignment: A) -> Result<AR, Error>
    where
        A: FnMut(Region<'_, T>) -> Result<AR, Error>,
        N: Fn() -> NR,
        NR: Into<String>;

    /// The same layouter, under a name halo2's own layouters would record.
    fn namespace<NR, N: FnOnce() -> NR>(&mut self, _name: N) -> &mut Self {
        self
    }

    /// Constrains `cell` equal to row `row` of the instance column.
    fn expose(&mut self, cell: &Cell, instance: Column<Instance>, row: usize) -> Result<(), Error>;
}

impl<T, L: Layouter<T>> Layouter<T> for &mut L {
    fn assign_region<A, AR, N, NR>(&mut self, name: N, assignment: A) -> Result<AR, Error>
    where
        A: FnMut(Region<'_, T>) -> Result<AR, Error>,
        N: Fn() -> NR,
        NR: Into<String>,
    {
        (**self).assign_region(name, assignment)
    }

    fn expose(&mut self, cell: &Cell, instance: Column<Instance>, row: usize) -> Result<(), Error> {
        (**self).expose(cell, instance, row)
    }
}

/// The per-column first-fit planner over `halo2-axiom`'s layouter (or over nothing, to count
/// the rows a circuit needs before its parameters exist).
#[derive(Debug)]
pub struct Planner<L> {
    inner: Option<L>,
    ends: HashMap<Slot, usize>,
    constants: usize,
}

impl<L> Planner<L> {
    /// Rows used so far: the furthest column end, or the constants assigned, if more.
    pub fn rows(&self) -> usize {
        self.ends
            .values()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.constants)
    }
}

impl Planner<NoLayouter> {
    /// A planner that only measures.
    pub fn measuring() -> Self {
        Self {
            inner: None,
            ends: HashMap::new(),
            constants: 0,
        }
    }
}

/// The absent layouter of a measuring planner.
#[derive(Debug)]
pub enum NoLayouter {}

impl<L: PlannerInner> Layouter<F> for Planner<L> {
    fn assign_region<A, AR, N, NR>(&mut self, name: N, mut assignment: A) -> Result<AR, Error>
    where
        A: FnMut(Region<'_, F>) -> Result<AR, Error>,
        N: Fn() -> NR,
        NR: Into<String>,
    {
        let mut shape = Shape::default();
        let measured = assignment(Region::measure(&mut shape))?;
        let start = shape
            .slots
            .iter()
            .map(|slot| self.ends.get(slot).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        for slot in &shape.slots {
            self.ends.insert(*slot, start + shape.rows);
        }
        self.constants += shape.constants;
        match &mut self.inner {
            None => Ok(measured),
            Some(inner) => {
                #[cfg(test)]
                tamper::entering(name().into());
                let assigned = inner.region(name, &mut |region| {
                    assignment(Region::assign(region, start))
                })?;
                #[cfg(test)]
                for (cell, instance, row) in tamper::exposures() {
                    inner.expose(cell, instance, row)?;
                }
                Ok(assigned)
            }
        }
    }

    fn expose(&mut self, cell: &Cell, instance: Column<Instance>, row: usize) -> Result<(), Error> {
        match &mut self.inner {
            None => Ok(()),
            Some(inner) => inner.expose(placed(cell)?, instance, row),
        }
    }
}

/// The layouter under a planner.
pub trait PlannerInner {
    /// Runs `assignment` in a region of the real layouter.
    fn region<AR, N, NR>(
        &mut self,
        name: N,
        assignment: &mut dyn FnMut(HaloRegion<'_, F>) -> Result<AR, Error>,
    ) -> Result<AR, Error>
    where
        N: Fn() -> NR,
        NR: Into<String>;
    /// Constrains a placed cell to a public input.
    fn expose(
        &mut self,
        cell: HaloCell,
        instance: Column<Instance>,
        row: usize,
    ) -> Result<(), Error>;
}

impl<L: HaloLayouter<F>> PlannerInner for L {
    fn region<AR, N, NR>(
        &mut self,
        name: N,
        assignment: &mut dyn FnMut(HaloRegion<'_, F>) -> Result<AR, Error>,
    ) -> Result<AR, Error>
    where
        N: Fn() -> NR,
        NR: Into<String>,
    {
        self.assign_region(name, assignment)
    }

    fn expose(
        &mut self,
        cell: HaloCell,
        instance: Column<Instance>,
        row: usize,
    ) -> Result<(), Error> {
        self.constrain_instance(cell, instance, row);
        Ok(())
    }
}

impl PlannerInner for NoLayouter {
    fn region<AR, N, NR>(
        &mut self,
        _name: N,
        _assignment: &mut dyn FnMut(HaloRegion<'_, F>) -> Result<AR, Error>,
    ) -> Result<AR, Error>
    where
        N: Fn() -> NR,
        NR: Into<String>,
    {
        match *self {}
    }

    fn expose(&mut self, _: HaloCell, _: Column<Instance>, _: usize) -> Result<(), Error> {
        match *self {}
    }
}

/// The planner the circuit lays its regions out with.
pub fn plan<L: HaloLayouter<F>>(layouter: L) -> Planner<L> {
    Planner {
        inner: Some(layouter),
        ends: HashMap::new(),
        constants: 0,
    }
}

/// Assigns a witness value.
pub fn assign(
    region: &mut Region<'_, F>,
    column: Column<Advice>,
    offset: usize,
    value: Value<F>,
) -> Result<Cell, Error> {
    match &mut region.mode {
        Mode::Measure(shape) => {
            shape.uses(Slot::Advice(column.index()), offset);
            Ok(Cell { at: None, value })
        }
        Mode::Assign { region, base } => {
            #[cfg(test)]
            let (value, written) =
                tamper::assigned(column.index(), (offset, *base + offset), value);
            #[cfg(not(test))]
            let written = value;
            let cell = region.assign_advice(column, *base + offset, written).cell();
            Ok(Cell {
                at: Some(cell),
                value,
            })
        }
    }
}

/// Assigns a fixed value (used by the Poseidon chip for round constants).
pub fn fixed(
    region: &mut Region<'_, F>,
    column: Column<Fixed>,
    offset: usize,
    value: F,
) -> Result<(), Error> {
    match &mut region.mode {
        Mode::Measure(shape) => shape.uses(Slot::Fixed(column.index()), offset),
        Mode::Assign { region, base } => {
            region.assign_fixed(column, *base + offset, value);
        }
    }
    Ok(())
}

/// Copies `cell` into the region and constrains the copy equal to it.
pub fn copy(
    cell: &Cell,
    region: &mut Region<'_, F>,
    column: Column<Advice>,
    offset: usize,
) -> Result<Cell, Error> {
    let copied = assign(region, column, offset, cell.value)?;
    equal(region, cell, &copied)?;
    Ok(copied)
}

/// Constrains two cells equal.
pub fn equal(region: &mut Region<'_, F>, left: &Cell, right: &Cell) -> Result<(), Error> {
    if let Mode::Assign { region, .. } = &mut region.mode {
        region.constrain_equal(placed(left)?, placed(right)?);
    }
    Ok(())
}

/// The value of a cell (unknown during key generation).
pub fn value(cell: &Cell) -> Value<F> {
    cell.value
}

/// Turns a selector on at `offset`.
pub fn enable(region: &mut Region<'_, F>, selector: &Selector, offset: usize) -> Result<(), Error> {
    match &mut region.mode {
        Mode::Measure(shape) => {
            shape.uses(Slot::Selector(selector.index()), offset);
            Ok(())
        }
        Mode::Assign { region, base } => selector.enable(region, *base + offset),
    }
}

/// Assigns a constant (fixed in the circuit, through the constants column).
pub fn from_constant(
    region: &mut Region<'_, F>,
    column: Column<Advice>,
    offset: usize,
    constant: F,
) -> Result<Cell, Error> {
    match &mut region.mode {
        Mode::Measure(shape) => {
            shape.uses(Slot::Advice(column.index()), offset);
            shape.constants += 1;
            Ok(Cell {
                at: None,
                value: Value::known(constant),
            })
        }
        Mode::Assign { region, base } => {
            #[cfg(test)]
            if let (value, Some(written)) = tamper::replaced(
                column.index(),
                (offset, *base + offset),
                Value::known(constant),
            ) {
                // A malicious prover writes any value; the constant is a copy constraint.
                let cell = region
                    .assign_advice(column, *base + offset, Value::known(written))
                    .cell();
                region.constrain_constant(cell, constant)?;
                return Ok(Cell {
                    at: Some(cell),
                    value,
                });
            }
            let cell =
                region.assign_advice_from_constant(|| "", column, *base + offset, constant)?;
            Ok(Cell {
                at: Some(cell.cell()),
                value: Value::known(constant),
            })
        }
    }
}

/// Copies a public input into the region.
pub fn from_instance(
    region: &mut Region<'_, F>,
    instance: Column<Instance>,
    row: usize,
    column: Column<Advice>,
    offset: usize,
) -> Result<Cell, Error> {
    match &mut region.mode {
        Mode::Measure(shape) => {
            shape.uses(Slot::Advice(column.index()), offset);
            Ok(Cell {
                at: None,
                value: Value::unknown(),
            })
        }
        Mode::Assign { region, base } => {
            #[cfg(test)]
            if let (value, Some(written)) = tamper::replaced(
                column.index(),
                (offset, *base + offset),
                region.instance_value(instance, row)?,
            ) {
                // A malicious prover writes any value; the public input is a copy constraint
                // the planner adds once the region is assigned.
                let cell = region
                    .assign_advice(column, *base + offset, Value::known(written))
                    .cell();
                tamper::expose(cell, instance, row);
                return Ok(Cell {
                    at: Some(cell),
                    value,
                });
            }
            let cell =
                region.assign_advice_from_instance(|| "", instance, row, column, *base + offset)?;
            Ok(Cell {
                at: Some(cell.cell()),
                value: cell.value().copied(),
            })
        }
    }
}

/// Constrains a cell equal to a public input.
pub fn expose(
    layouter: &mut impl Layouter<F>,
    cell: &Cell,
    instance: Column<Instance>,
    row: usize,
) -> Result<(), Error> {
    layouter.expose(cell, instance, row)
}

/// Test-only: a malicious synthesizer. Inside [`tamper::run`], every witness cell the circuit
/// assigns (advice values, and the advice copies of constants and public inputs) is logged in
/// order, and any of them can be given another value than honest synthesis computed, so tests
/// can write witnesses no honest path produces (a free flag, a forged accumulator).
#[cfg(test)]
pub(crate) mod tamper {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::{Column, F, HaloCell, Instance, Value};

    /// One assigned witness cell, in assignment order.
    #[derive(Debug, Clone)]
    pub struct Assigned {
        /// The region's name.
        pub region: String,
        /// The advice column's index.
        pub column: usize,
        /// The row in the region.
        pub offset: usize,
        /// The row in the circuit.
        pub row: usize,
        /// The honest value (unknown only without witnesses).
        pub value: Value<F>,
    }

    #[derive(Default)]
    struct State {
        active: bool,
        region: String,
        log: Vec<Assigned>,
        replace: HashMap<usize, F>,
        exposures: Vec<(HaloCell, Column<Instance>, usize)>,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    /// Runs `synthesis` with the cells of `replace` (by index in assignment order) given their
    /// new values; returns its result and the log of every cell assigned, honest values. Only
    /// the cells written change: what synthesis goes on to compute from them is the honest
    /// value's, so a replacement is one lie, not a consistent forgery.
    pub fn run<T>(replace: HashMap<usize, F>, synthesis: impl FnOnce() -> T) -> (T, Vec<Assigned>) {
        STATE.with(|state| {
            *state.borrow_mut() = State {
                active: true,
                replace,
                ..State::default()
            };
        });
        let result = synthesis();
        let log = STATE.with(|state| std::mem::take(&mut *state.borrow_mut()).log);
        (result, log)
    }

    pub(super) fn entering(region: String) {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            if state.active {
                state.region = region;
            }
        });
    }

    /// The value the circuit goes on with and the value written, for an advice cell.
    pub(super) fn assigned(
        column: usize,
        at: (usize, usize),
        value: Value<F>,
    ) -> (Value<F>, Value<F>) {
        let (returned, replaced) = replaced(column, at, value);
        (returned, replaced.map_or(value, Value::known))
    }

    /// Logs a cell; returns the value the circuit goes on with and the replacement, if any.
    /// `at` is the row in the region and in the circuit.
    pub(super) fn replaced(
        column: usize,
        (offset, row): (usize, usize),
        value: Value<F>,
    ) -> (Value<F>, Option<F>) {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            if !state.active {
                return (value, None);
            }
            let index = state.log.len();
            let region = state.region.clone();
            state.log.push(Assigned {
                region,
                column,
                offset,
                row,
                value,
            });
            match state.replace.get(&index) {
                Some(new) => (value, Some(*new)),
                None => (value, None),
            }
        })
    }

    pub(super) fn expose(cell: HaloCell, instance: Column<Instance>, row: usize) {
        STATE.with(|state| state.borrow_mut().exposures.push((cell, instance, row)));
    }

    pub(super) fn exposures() -> Vec<(HaloCell, Column<Instance>, usize)> {
        STATE.with(|state| std::mem::take(&mut state.borrow_mut().exposures))
    }
}
