//! Proving a checked job, and checking a published proof the way a verifier replica does.

use std::time::Instant;

use alloy_primitives::{Address, B256};
use verity_circuits::{Instances, KeyRing, Shape, circuit_step};
use verity_commitment::Step;
use verity_primitives::{MiniBlock, signing};

use crate::{
    ChunkJob, Entry, Statement, StatementError, merged_diff, transactions_digest,
    wire::{ChunkProof, Segment},
};

/// How many levels a step's circuit must hold: its longer path, before or after the write.
fn levels(step: &Step) -> usize {
    step.old.siblings.len().max(step.new.siblings.len())
}

/// Splits `steps` into segments, in order: each step whose path the main shape cannot hold
/// alone in a segment of [`Shape::DEEP`], and each run of steps between them cut into the
/// largest shapes of the main depth they fill ([`KeyRing::sizes`]: with larger shapes of 64 and
/// 256 steps over a main shape of 8, a run of 300 is 256, five of 8 and a last one of 4), the
/// last segment of a run the only one not full. A chunk without steps is one empty segment.
/// Fails on a path longer than any shape holds (a tree of 256-bit keys has none).
pub fn segments<'a>(
    keys: &KeyRing,
    steps: &'a [Step],
) -> Result<Vec<(Shape, &'a [Step])>, verity_circuits::Error> {
    let main = keys.shape();
    let sizes = keys.sizes();
    let mut out = Vec::new();
    let cut = |run: &'a [Step], out: &mut Vec<(Shape, &'a [Step])>| {
        let mut rest = run;
        for size in &sizes {
            while rest.len() >= size.steps {
                let (segment, after) = rest.split_at(size.steps);
                out.push((*size, segment));
                rest = after;
            }
        }
        if !rest.is_empty() {
            out.push((main, rest));
        }
    };
    let mut start = 0;
    for (i, step) in steps.iter().enumerate() {
        let shape = keys
            .shape_for(levels(step))
            .ok_or(verity_circuits::Error::Step(
                verity_circuits::StepError::TooDeep {
                    key: step.key,
                    depth: levels(step),
                    max: Shape::DEEP.depth,
                },
            ))?;
        if shape == main {
            continue;
        }
        cut(&steps[start..i], &mut out);
        out.push((shape, &steps[i..=i]));
        start = i + 1;
    }
    cut(&steps[start..], &mut out);
    if out.is_empty() {
        out.push((main, &steps[..0]));
    }
    Ok(out)
}

/// Proves `job`'s `steps` (from [`crate::check_job_steps`] or [`ChunkJob::steps`]) in the
/// segments of [`segments`] and returns the unsigned proof
/// (`signature` is [`signing::UNSIGNED`]; the caller signs [`crate::wire::attestation_hash`]).
/// `progress(done, total)` is called after each segment.
pub fn prove_job(
    keys: &KeyRing,
    job: &ChunkJob,
    steps: &[Step],
    mut progress: impl FnMut(usize, usize),
) -> Result<ChunkProof, verity_circuits::Error> {
    let started = Instant::now();
    let tx_hash = transactions_digest(&job.mini_blocks);
    let segments = segments(keys, steps)?;
    let total = segments.len();
    let mut root = job.pre_root;
    let mut proven = Vec::with_capacity(total);
    for (done, (shape, segment)) in segments.into_iter().enumerate() {
        let instances = Instances::of_steps(root, segment, tx_hash)?;
        let witness = segment
            .iter()
            .map(|s| circuit_step(s, shape.depth))
            .collect::<Result<_, _>>()?;
        let proof = keys.keys(shape)?.prove(witness, &instances)?;
        root = verity_commitment::field_digest(instances.post_root);
        proven.push(Segment {
            post_root: root,
            steps: segment.len(),
            shape,
            proof,
        });
        progress(done + 1, total);
    }
    let accounts_before = merged_diff(&job.mini_blocks)
        .accounts
        .keys()
        .map(|address| {
            (
                *address,
                job.witness.accounts.get(address).copied().flatten(),
            )
        })
        .collect();
    Ok(ChunkProof {
        chunk: job.chunk,
        mini_block_hashes: job.mini_block_hashes(),
        pre_root: job.pre_root,
        post_root: root,
        entries: steps.iter().map(Entry::from).collect(),
        accounts_before,
        shape: keys.shape(),
        segments: proven,
        prover: Address::ZERO,
        signature: signing::UNSIGNED,
        proving_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Why a verifier refuses a published proof.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The proof is for other mini-blocks than the chain has from its number on.
    #[error("proof for chunk {chunk} names mini-blocks {claimed:?}, the chain has {actual:?}")]
    WrongChunk {
        /// Chunk number.
        chunk: u64,
        /// Mini-block hashes the proof names.
        claimed: Vec<B256>,
        /// The chain's mini-block hashes from the chunk's number on (as many as the proof names).
        actual: Vec<B256>,
    },
    /// The proof does not start where the previous chunk's proof ended.
    #[error(
        "proof for chunk {chunk} starts at root {claimed}, the previous chunk ended at {expected}"
    )]
    PreRoot {
        /// Chunk number.
        chunk: u64,
        /// Pre-root the proof claims.
        claimed: B256,
        /// Post-root of the previous proven chunk.
        expected: B256,
    },
    /// Proven with another circuit shape than this verifier's keys.
    #[error("proof uses circuit shape {claimed:?}, this verifier checks {expected:?}")]
    Shape {
        /// Shape claimed.
        claimed: Shape,
        /// Shape of the verifier's keys.
        expected: Shape,
    },
    /// The attestation is not signed by a registered prover.
    #[error("attestation signed by {0}, which is not a registered prover")]
    UnregisteredProver(Address),
    /// The attestation's signature does not check out.
    #[error("attestation signature invalid: {0}")]
    Signature(String),
    /// The proof's entries or roots do not match the chain's mini-block.
    #[error(transparent)]
    Statement(#[from] StatementError),
    /// The claimed post-root is not where the segments end.
    #[error("the segments end at {ends}, the proof claims post-root {claimed}")]
    PostRoot {
        /// Where the last segment ends.
        ends: B256,
        /// What the proof claims.
        claimed: B256,
    },
    /// A halo2 proof does not verify against the recomputed public inputs.
    #[error("segment {segment} of {segments}: the halo2 proof does not verify")]
    Proof {
        /// Which segment (from 0).
        segment: usize,
        /// How many.
        segments: usize,
    },
}

/// Checks everything about `proof` but the halo2 proofs themselves: that it is for the chunk of
/// `mini_blocks` (the verifier's own copies, from the proof's chunk number on; extra ones after
/// the chunk's are ignored), starts at `pre_root`, is attested by one of `provers`, and that its
/// entries write exactly the mini-blocks' writes, and that each segment is of `shape`'s depth
/// (the main shape or a larger one) or [`Shape::DEEP`] and holds no more steps than its
/// circuit. Returns the statement the proofs
/// must verify against.
pub fn check_claim(
    chain_id: u64,
    shape: Shape,
    provers: &[Address],
    pre_root: B256,
    mini_blocks: &[MiniBlock],
    proof: &ChunkProof,
) -> Result<Statement, Rejection> {
    let count = proof.mini_block_hashes.len();
    let covered = mini_blocks.get(..count).unwrap_or(mini_blocks);
    let actual: Vec<B256> = covered.iter().map(|m| m.hash).collect();
    // chunk_of also refuses an empty list and a first mini-block other than the chunk's.
    if actual != proof.mini_block_hashes || crate::chunk_of(covered, proof.chunk).is_err() {
        return Err(Rejection::WrongChunk {
            chunk: proof.chunk,
            claimed: proof.mini_block_hashes.clone(),
            actual,
        });
    }
    if proof.pre_root != pre_root {
        return Err(Rejection::PreRoot {
            chunk: proof.chunk,
            claimed: proof.pre_root,
            expected: pre_root,
        });
    }
    if proof.shape != shape {
        return Err(Rejection::Shape {
            claimed: proof.shape,
            expected: shape,
        });
    }
    if !provers.contains(&proof.prover) {
        return Err(Rejection::UnregisteredProver(proof.prover));
    }
    signing::verify(
        &crate::wire::attestation_hash(chain_id, proof),
        &proof.signature,
        proof.prover,
    )
    .map_err(|e| Rejection::Signature(e.to_string()))?;
    for segment in &proof.segments {
        // The main depth (the main shape or a larger one) or the deep shape; which of them
        // this verifier has keys for, verify_proofs decides (it refuses the others).
        if segment.shape.check().is_err()
            || (segment.shape.depth != shape.depth && segment.shape != Shape::DEEP)
        {
            return Err(Rejection::Shape {
                claimed: segment.shape,
                expected: shape,
            });
        }
        if segment.steps > segment.shape.steps {
            return Err(segments_mismatch(proof));
        }
    }
    let claimed: Vec<(B256, usize)> = proof
        .segments
        .iter()
        .map(|s| (s.post_root, s.steps))
        .collect();
    let statement = Statement::of(
        pre_root,
        covered,
        &proof.entries,
        &proof.accounts_before,
        &claimed,
    )?;
    let ends = statement.post_root().unwrap_or(pre_root);
    if ends != proof.post_root {
        return Err(Rejection::PostRoot {
            ends,
            claimed: proof.post_root,
        });
    }
    Ok(statement)
}

/// The refusal of a proof whose segments do not split its entries as their circuits can.
fn segments_mismatch(proof: &ChunkProof) -> Rejection {
    Rejection::Statement(StatementError::Segments {
        counts: proof.segments.iter().map(|s| s.steps).collect(),
        entries: proof.entries.len(),
    })
}

/// Verifies the halo2 proofs of several checked claims ([`check_claim`]) with one batch per
/// circuit shape; when a batch fails, finds the first bad segment of each claim one by one.
/// Returns one result per claim. A claim whose segments do not match its statement's, or that
/// has a segment of a shape `keys` does not hold, is refused, never skipped.
pub fn verify_proofs(
    keys: &KeyRing,
    claims: &[(&Statement, &ChunkProof)],
) -> Vec<Result<(), Rejection>> {
    let shapes = keys.shapes();
    let checkable = |statement: &Statement, proof: &ChunkProof| -> Result<(), Rejection> {
        if statement.segments.len() != proof.segments.len() {
            return Err(segments_mismatch(proof));
        }
        match proof.segments.iter().find(|s| !shapes.contains(&s.shape)) {
            Some(segment) => Err(Rejection::Shape {
                claimed: segment.shape,
                expected: keys.shape(),
            }),
            None => Ok(()),
        }
    };
    let all_checkable = claims
        .iter()
        .all(|(statement, proof)| checkable(statement, proof).is_ok());
    let segments = || {
        claims
            .iter()
            .flat_map(|(statement, proof)| statement.segments.iter().zip(&proof.segments))
    };
    let batched = all_checkable
        && shapes.iter().all(|shape| {
            let mut of_shape = segments()
                .filter(|(_, segment)| segment.shape == *shape)
                .map(|(instances, segment)| (instances, segment.proof.as_slice()))
                .peekable();
            if of_shape.peek().is_none() {
                return true;
            }
            keys.keys(*shape)
                .is_ok_and(|keys| keys.verify_batch(of_shape))
        });
    if batched {
        return claims.iter().map(|_| Ok(())).collect();
    }
    claims
        .iter()
        .map(|(statement, proof)| {
            checkable(statement, proof)?;
            let segments = statement.segments.len();
            for (segment, (instances, proven)) in
                statement.segments.iter().zip(&proof.segments).enumerate()
            {
                let valid = keys
                    .keys(proven.shape)
                    .is_ok_and(|keys| keys.verify(instances, &proven.proof).is_ok());
                if !valid {
                    return Err(Rejection::Proof { segment, segments });
                }
            }
            Ok(())
        })
        .collect()
}
