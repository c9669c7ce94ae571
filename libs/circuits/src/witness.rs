//! From the native tree's steps to the circuit's witness, and the public inputs a verifier
//! recomputes on its own.

//!
//! Like [`super::circuit`], written once against its parent's `backend` and compiled per backend.

use alloy_primitives::B256;
use verity_commitment::Step;

use super::backend::{F, FIELD, Field, Hasher, field_element, limbs};
use super::circuit::{Step as CircuitStep, Terminal, public};

/// Why a native step cannot enter the circuit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// A path is longer than the circuit's depth.
    #[error("key {key} has a path of {depth} levels; the circuit holds {max}")]
    TooDeep {
        /// The key.
        key: B256,
        /// Its path length.
        depth: usize,
        /// The circuit's depth.
        max: usize,
    },
    /// A sibling digest is not a field element (only a forged proof holds one).
    #[error("key {key} has a sibling that is not a {FIELD} field element")]
    NotAnElement {
        /// The key.
        key: B256,
    },
    /// A root is not a field element.
    #[error("root {0} is not a {FIELD} field element")]
    NotARoot(B256),
    /// The step's proofs contradict its values.
    #[error("the proofs of key {key} contradict its values")]
    Inconsistent {
        /// The key.
        key: B256,
    },
}

fn siblings(step: &Step, proof: &[B256], depth: usize) -> Result<Vec<F>, StepError> {
    if proof.len() > depth {
        return Err(StepError::TooDeep {
            key: step.key,
            depth: proof.len(),
            max: depth,
        });
    }
    let mut out = Vec::with_capacity(depth);
    for sibling in proof {
        out.push(field_element(sibling).ok_or(StepError::NotAnElement { key: step.key })?);
    }
    out.resize(depth, F::ZERO);
    Ok(out)
}

/// The circuit witness of a native step, for a circuit of `depth` levels.
pub fn circuit_step(step: &Step, depth: usize) -> Result<CircuitStep, StepError> {
    let inconsistent = || StepError::Inconsistent { key: step.key };
    let old_terminal = match (&step.old.terminal, step.was_present) {
        (Some((key, value)), true) if *key == step.key && *value == step.before => Terminal::Own,
        (Some((key, value)), false) if *key != step.key => {
            Terminal::Other(limbs(key), limbs(value))
        }
        (None, false) => Terminal::Empty,
        _ => return Err(inconsistent()),
    };
    match (&step.new.terminal, step.is_present) {
        (Some((key, value)), true) if *key == step.key && *value == step.after => {}
        (terminal, false) if *terminal == step.old.terminal => {}
        _ => return Err(inconsistent()),
    }
    Ok(CircuitStep {
        enabled: true,
        key: limbs(&step.key),
        before: limbs(&step.before),
        after: limbs(&step.after),
        old_terminal,
        new_is_leaf: step.is_present,
        old_siblings: siblings(step, &step.old.siblings, depth)?,
        old_depth: step.old.siblings.len(),
        new_siblings: siblings(step, &step.new.siblings, depth)?,
        new_depth: step.new.siblings.len(),
    })
}

/// One step's entry as the circuit exposes it: the key, the value before and after, each as
/// two 128-bit limbs (zero for a value that is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicEntry {
    /// The key's limbs.
    pub key: [F; 2],
    /// The value before.
    pub before: [F; 2],
    /// The value after.
    pub after: [F; 2],
}

impl PublicEntry {
    /// The entry of `key` going from `before` to `after`.
    pub fn new(key: &B256, before: &B256, after: &B256) -> Self {
        Self {
            key: limbs(key),
            before: limbs(before),
            after: limbs(after),
        }
    }
}

/// The public inputs of one proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances {
    /// Root before the segment.
    pub pre_root: F,
    /// Root after the segment.
    pub post_root: F,
    /// The field element standing for the chunk's transactions.
    pub tx_hash: F,
    /// What each step reads and writes, in order (the steps after them are disabled).
    pub entries: Vec<PublicEntry>,
}

impl Instances {
    /// The public inputs of the segment made of `steps` starting from `pre_root`. Each step
    /// must start from the root the previous one ended at.
    pub fn of_steps(pre_root: B256, steps: &[Step], tx_hash: F) -> Result<Self, StepError> {
        let mut root = pre_root;
        for step in steps {
            let (before, after) = step
                .roots(&Hasher)
                .map_err(|_| StepError::Inconsistent { key: step.key })?;
            if before != root {
                return Err(StepError::Inconsistent { key: step.key });
            }
            root = after;
        }
        let element = |digest: &B256| field_element(digest).ok_or(StepError::NotARoot(*digest));
        Ok(Self {
            pre_root: element(&pre_root)?,
            post_root: element(&root)?,
            tx_hash,
            entries: steps
                .iter()
                .map(|s| PublicEntry::new(&s.key, &s.before, &s.after))
                .collect(),
        })
    }

    /// The instance columns of a circuit of `capacity` steps ([`public`]): the entries' steps
    /// enabled, the rest disabled with zero entries. `None` when the entries do not fit.
    pub fn to_columns(&self, capacity: usize) -> Option<Vec<Vec<F>>> {
        if self.entries.len() > capacity {
            return None;
        }
        let mut out = vec![vec![F::ZERO; public::len(capacity)]; public::COLUMNS];
        out[0][public::PRE_ROOT] = self.pre_root;
        out[0][public::POST_ROOT] = self.post_root;
        out[0][public::TX_HASH] = self.tx_hash;
        for (index, entry) in self.entries.iter().enumerate() {
            let fields: [F; public::FIELDS] = [
                F::ONE,
                entry.key[0],
                entry.key[1],
                entry.before[0],
                entry.before[1],
                entry.after[0],
                entry.after[1],
            ];
            for (field, value) in fields.into_iter().enumerate() {
                let (column, row) = public::place(index, field);
                out[column][row] = value;
            }
        }
        Some(out)
    }
}
