//! From the native tree's steps to the circuit's witness, and the public inputs a verifier
//! recomputes on its own.

//!
//! Like [`super::circuit`], written once against its parent's `backend` and compiled per backend.

use alloy_primitives::B256;
use verity_commitment::{Step, TreeHasher};

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

/// The running hash the circuit keeps over leaves: `Poseidon(acc, leaf(key, value))` for each
/// `(key, value)`, from `start`, in the chains' sponge domain ([`super::CHAIN_DOMAIN`]).
pub fn chain_hash<'a>(start: F, leaves: impl IntoIterator<Item = (&'a B256, &'a B256)>) -> F {
    leaves.into_iter().fold(start, |acc, (key, value)| {
        let leaf = Hasher.leaf(key, value);
        let leaf = field_element(&leaf).unwrap_or(F::ZERO);
        super::backend::poseidon_in_domain([acc, leaf], super::CHAIN_DOMAIN)
    })
}

/// The public inputs of one proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instances {
    /// Root before the segment.
    pub pre_root: F,
    /// Root after the segment.
    pub post_root: F,
    /// Reads hash before the segment (zero for a chunk's first).
    pub reads_in: F,
    /// Reads hash after it.
    pub reads_out: F,
    /// Writes hash before the segment (zero for a chunk's first).
    pub writes_in: F,
    /// Writes hash after it.
    pub writes_out: F,
    /// The field element standing for the chunk's transactions.
    pub tx_hash: F,
}

impl Instances {
    /// The public inputs of the segment made of `steps` starting from `pre_root`,
    /// continuing the running hashes `reads_in` and `writes_in`. Each step must start from the
    /// root the previous one ended at.
    pub fn of_steps(
        pre_root: B256,
        steps: &[Step],
        reads_in: F,
        writes_in: F,
        tx_hash: F,
    ) -> Result<Self, StepError> {
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
            reads_in,
            reads_out: chain_hash(reads_in, steps.iter().map(|s| (&s.key, &s.before))),
            writes_in,
            writes_out: chain_hash(writes_in, steps.iter().map(|s| (&s.key, &s.after))),
            tx_hash,
        })
    }

    /// The instance column.
    pub fn to_vec(&self) -> Vec<F> {
        let mut out = vec![F::ZERO; public::LEN];
        out[public::PRE_ROOT] = self.pre_root;
        out[public::POST_ROOT] = self.post_root;
        out[public::READS_IN] = self.reads_in;
        out[public::READS_OUT] = self.reads_out;
        out[public::WRITES_IN] = self.writes_in;
        out[public::WRITES_OUT] = self.writes_out;
        out[public::TX_HASH] = self.tx_hash;
        out
    }
}
