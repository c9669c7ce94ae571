//! Malicious witnesses. `backend::tamper` can give any witness cell any value where honest
//! synthesis would compute it, so these tests write what a dishonest prover could: a free flag,
//! a forged accumulator, a copy that is not a copy. Each kind of witness cell of each kind of
//! step is changed in turn and the circuit must reject it, except the cells listed in
//! [`free`], whose value no statement depends on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;

use super::*;
use crate::backend::Value;
use crate::backend::tamper::{self, Assigned};

/// One circuit to mutate: its steps, public inputs and honest log.
struct Subject {
    name: String,
    circuit: ChunkCircuit,
    instances: Instances,
    log: Vec<Assigned>,
}

/// Each kind of step of [`every_kind_of_step`] alone in a circuit of one step (from the root
/// before it), then the last with a padding step after it (the running values chained from one
/// step to the next, and a disabled step).
fn subjects() -> Vec<Subject> {
    let (steps, pre_root) = every_kind_of_step();
    let mut root = pre_root;
    let mut subjects = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let alone = std::slice::from_ref(step);
        subjects.push(subject(format!("step {i}"), alone, root, 1));
        if i + 1 == steps.len() {
            subjects.push(subject(format!("step {i}, then padding"), alone, root, 2));
        }
        let after = Instances::of_steps(root, alone, Fr::ZERO).unwrap();
        root = B256::from(after.post_root.to_repr());
    }
    subjects
}

fn subject(name: String, steps: &[Step], pre_root: B256, capacity: usize) -> Subject {
    let (circuit, instances) = mock(steps, pre_root, capacity);
    let (result, log) = tamper::run(HashMap::new(), || run(&circuit, &instances));
    result.unwrap_or_else(|e| panic!("{name} is honest: {e}"));
    Subject {
        name,
        circuit,
        instances,
        log,
    }
}

impl Subject {
    /// Whether the circuit rejects the witness with cell `index` replaced by `lie`. Only the
    /// cell changes, so only the gates that read its row (rotations -1..=1) and the copy
    /// constraints can newly fail: those are what is checked.
    fn rejects(&self, index: usize, lie: Fr) -> bool {
        let replace = HashMap::from([(index, lie)]);
        let k = Keys::k_of(Shape {
            steps: self.circuit.steps.len(),
            depth: self.circuit.depth,
        });
        let row = self.log[index].row;
        let (prover, _) = tamper::run(replace, || {
            let public = self.instances.to_columns(self.circuit.steps.len()).unwrap();
            MockProver::run(k, &self.circuit, public)
        });
        let Ok(prover) = prover else {
            return true;
        };
        let rows = |r: &RangeInclusive<usize>| r.clone().filter(|r| *r < (1 << k) - 16);
        let around = row.saturating_sub(1)..=row + 1;
        prover.verify_at_rows(rows(&around), rows(&around)).is_err()
    }

    /// The cells of this subject to change, by index: every cell but the bit decompositions'
    /// middle rows (alike from row 3 to 124), the path levels and link rows other than the
    /// root's, the leaf's and those where the paths end or split (alike in between), and the
    /// Poseidon chip's, which `poseidon_cells` covers once.
    fn cells(&self) -> Vec<usize> {
        let bits = |offset: usize| !(3..=124).contains(&offset) || offset == 64;
        let step = &self.circuit.steps[0];
        let depth = self.circuit.depth;
        let levels: Vec<usize> = [
            0,
            depth - 1,
            step.old_depth.saturating_sub(1),
            step.old_depth.min(depth - 1),
            step.new_depth.saturating_sub(1),
            step.new_depth.min(depth - 1),
        ]
        .into();
        // The link region's rows run from the deepest level up, then a closing row.
        let link_row = |offset: usize| offset == depth || levels.contains(&(depth - 1 - offset));
        let level = |region: &str| {
            region
                .trim_start_matches("level ")
                .parse::<usize>()
                .is_ok_and(|l| levels.contains(&l))
        };
        (0..self.log.len())
            .filter(|&i| {
                let cell = &self.log[i];
                match kind(cell).as_str() {
                    "poseidon" => false,
                    "bits" => bits(cell.offset),
                    "level" => level(&cell.region),
                    "link" => link_row(cell.offset),
                    _ => true,
                }
            })
            .collect()
    }

    /// One cell of each (column, row) of the Poseidon chip's regions.
    fn poseidon_cells(&self) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        (0..self.log.len())
            .filter(|&i| {
                let cell = &self.log[i];
                kind(cell) == "poseidon" && seen.insert((cell.column, cell.offset))
            })
            .collect()
    }
}

fn known(value: Value<Fr>) -> Fr {
    let mut out = None;
    value.map(|v| out = Some(v));
    out.expect("a witness value")
}

/// The region's kind: its name without the level number.
fn kind(cell: &Assigned) -> String {
    cell.region
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ')
        .to_owned()
}

/// A lie about `value`: a flag flipped, anything else moved by one.
fn lie(value: Fr) -> Fr {
    if value == Fr::ZERO || value == Fr::ONE {
        Fr::ONE - value
    } else {
        value + Fr::ONE
    }
}

/// Cells whose value no constraint needs: the inverse of a zero (the gate `z = 1 - x·inv` with
/// `x·z = 0` pins `z` to one whatever `inv` is when `x` is zero). Everywhere else an
/// is-zero inverse is pinned by `x·inv = 1`.
fn free(log: &[Assigned], index: usize) -> bool {
    let cell = &log[index];
    // The chunk's own columns come after the Poseidon chip's; a[0] holds the first input.
    let a0 = log
        .iter()
        .find(|c| c.region == "inputs")
        .map_or(0, |c| c.column);
    let inverse = match kind(cell).as_str() {
        "terminal" => cell.offset == 1 && [a0 + 6, a0 + 8].contains(&cell.column),
        "keys differ" => [a0 + 2, a0 + 6].contains(&cell.column),
        _ => false,
    };
    // The is-zero flag is the next cell assigned.
    inverse && known(log[index + 1].value) == Fr::ONE
}

#[test]
fn every_kind_of_witness_cell_is_constrained() {
    let subjects = subjects();
    let mut accepted = Vec::new();
    let mut changed = BTreeMap::<String, usize>::new();
    let mut free_cells = 0usize;
    // Every lie of every subject, shared out over two threads (the tamper state is per thread).
    let lies: Vec<(&Subject, usize)> = subjects
        .iter()
        .enumerate()
        .flat_map(|(n, subject)| {
            let mut cells = subject.cells();
            if n == 0 {
                cells.extend(subject.poseidon_cells());
            }
            cells.into_iter().map(move |index| (subject, index))
        })
        .collect();
    let verdicts: Vec<bool> = std::thread::scope(|scope| {
        let halves: Vec<_> = lies
            .chunks(lies.len().div_ceil(2).max(1))
            .map(|half| {
                scope.spawn(move || {
                    half.iter()
                        .map(|(subject, index)| {
                            subject.rejects(*index, lie(known(subject.log[*index].value)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for ((subject, index), rejected) in lies.iter().zip(verdicts) {
        let cell = &subject.log[*index];
        if rejected {
            *changed.entry(kind(cell)).or_default() += 1;
        } else if free(&subject.log, *index) {
            free_cells += 1;
        } else {
            accepted.push(format!("{}: cell {index}: {cell:?}", subject.name));
        }
    }
    assert!(
        accepted.is_empty(),
        "lies accepted:\n{}",
        accepted.join("\n")
    );
    // Every kind of region had cells changed.
    for kind in [
        "inputs",
        "bits",
        "poseidon",
        "terminal",
        "keys differ",
        "level",
        "link",
        "output",
    ] {
        assert!(changed.get(kind).is_some_and(|n| *n > 0), "{kind}");
    }
    // The inverses of zero: both limbs of each zero write's value, and the key differences
    // of padding steps (their key and the other key are both zero).
    assert!(free_cells > 0, "the free inverses were tried");
}

/// The same lies through the real prover: a proof made from a witness the circuit rejects does
/// not verify (halo2's prover checks nothing itself, so this is the verifier's doing).
#[test]
fn lies_through_the_real_prover_do_not_verify() {
    let subjects = subjects();
    let subject = subjects
        .iter()
        .find(|s| s.circuit.steps.len() == 2)
        .unwrap();
    let shape = Shape {
        steps: 2,
        depth: DEPTH,
    };
    let keys = Keys::generate(shape, &Params::setup_insecure(Keys::k_of(shape))).unwrap();
    let witness = vec![subject.circuit.steps[0].clone()];
    let log = &subject.log;
    let a0 = log.iter().find(|c| c.region == "inputs").unwrap().column;
    let nth = |region: &str, column: usize, offset: usize, n: usize| {
        (0..log.len())
            .filter(|&i| {
                let c = &log[i];
                c.region == region && c.column == column && c.offset == offset
            })
            .nth(n)
            .unwrap()
    };
    let samples = [
        ("the padding step's enable flag", nth("output", a0, 0, 1)),
        ("the step's new-leaf flag", nth("terminal", a0 + 3, 0, 0)),
        ("a path's active flag", nth("level 0", a0 + 3, 0, 0)),
        ("the link's accumulator", nth("link", a0 + 8, 3, 0)),
        // The chip's last column holds an internal row's seventh S-box (rows 2 to 8).
        ("a Poseidon round", nth("poseidon", a0 - 1, 5, 0)),
    ];
    let (honest, _) = tamper::run(HashMap::new(), || {
        keys.prove(witness.clone(), &subject.instances)
    });
    keys.verify(&subject.instances, &honest.unwrap()).unwrap();
    for (what, index) in samples {
        assert!(
            subject.rejects(index, lie(known(log[index].value))),
            "{what}"
        );
        let replace = HashMap::from([(index, lie(known(log[index].value)))]);
        let (proof, proved) =
            tamper::run(replace, || keys.prove(witness.clone(), &subject.instances));
        assert_eq!(proved.len(), log.len(), "one synthesis, as the mock's");
        let verdict = proof.and_then(|proof| keys.verify(&subject.instances, &proof));
        assert!(
            matches!(verdict, Err(Error::Invalid)),
            "{what}: {verdict:?}"
        );
    }
}
