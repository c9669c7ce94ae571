//! Chunk jobs, the unit of proving.
//!
//! A chunk is one or more consecutive signed mini-blocks of one EVM block ([`chunk_of`]). For
//! each chunk the witness replica builds a [`ChunkJob`] ([`build_job`]): the mini-blocks
//! (transactions, receipts, the claimed writes and the execution environment, all under the
//! sequencer's signature), the pre-chunk state of everything their re-execution reads
//! ([`Witness`]; a later mini-block reads the earlier ones' claimed writes through an
//! [`Overlay`]), and a proof against the pre-root of every key read or written. The witness
//! reads those proofs off its tree and then applies the chunk's writes, merged, as one batch: it
//! never hashes a path once per key, and a path shared by several mini-blocks once per chunk.
//! (Because a zero written to a key that held nothing changes nothing, while a zero written to
//! a key that held a value leaves a leaf holding zero, the tree after a chunk can depend on how
//! mini-blocks were grouped; everyone derives roots from the same chunks, so they agree.)
//!
//! A prover checks a job with [`check_job`]: it rebuilds the touched part of the tree from the
//! proofs ([`PartialTree`]) and derives the state-tree [`Step`]s that take the pre-root to the
//! post-root, one per key in key order ([`ChunkJob::steps`]); the witness must be exactly what
//! the proofs say the pre-state holds, the steps must end at the post-root, and re-executing the
//! transactions with revm against the witness alone (any read outside it is an error, never a
//! silent zero) must reproduce the claimed writes and receipts. A mismatch is fraud; anything
//! else wrong is a malformed job.
//!
//! A verifier, which has the signed mini-block from the chain stream but no tree, recomputes the
//! statement a proof binds with [`Statement::of`] from the proof's entries and the accounts'
//! pre-state.

mod prove;
pub mod wire;
mod witness;

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{Address, B256};
use verity_circuits::{Instances, PublicEntry, tx_digest};
use verity_commitment::{
    EMPTY, PartialTree, Poseidon2Bn254, Proof, SparseMerkleTree, Step, account_key, account_value,
    storage_key, storage_value,
};
use verity_execution::BlockEnvSpec;
use verity_primitives::{Account, MiniBlock, StateDiff, StateView, Transaction};

pub use prove::{Rejection, check_claim, prove_job, verify_proofs};
pub use verity_primitives::Overlay;
pub use witness::{Missing, Recorder, Witness, WitnessState};

/// The state tree every service agrees on.
pub type StateTree = SparseMerkleTree<Poseidon2Bn254>;

/// A chunk's proving job.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkJob {
    /// Chunk number: the number of its first mini-block.
    pub chunk: u64,
    /// The signed mini-blocks: consecutive, of one EVM block ([`chunk_of`]).
    pub mini_blocks: Vec<MiniBlock>,
    /// Where each mini-block stands in the chain stream (empty when the builder did not say):
    /// a prover checks its copies against the published ones there.
    pub mini_block_seqs: Vec<u64>,
    /// Where the seal of each block in `witness.block_hashes` stands in the chain stream, in
    /// block-number order, block 0 left out (its hash is the genesis's): a prover checks each
    /// hash against the published seal there.
    pub block_hash_seqs: Vec<u64>,
    /// Where the handover opening each epoch above 0 that the mini-blocks and the seals of
    /// `block_hash_seqs` are signed under stands in the chain stream, in epoch order: a prover
    /// takes each epoch's key from its governance-signed handover.
    pub epoch_seqs: Vec<u64>,
    /// Root before the chunk.
    pub pre_root: B256,
    /// Root after the chunk's claimed writes.
    pub post_root: B256,
    /// Pre-state of everything the chunk reads, and of every account it writes.
    pub witness: Witness,
    /// The proof against `pre_root` of every key read or written, in strictly increasing key
    /// order.
    pub pre_proofs: Vec<(B256, Proof)>,
}

/// Checks that `mini_blocks` can form chunk `chunk`: at least one, consecutive from `chunk` on,
/// and all of one EVM block (a later block's mini-block may read the hash of the block sealed
/// between them, which the chunk's pre-state does not hold).
pub fn chunk_of(mini_blocks: &[MiniBlock], chunk: u64) -> Result<(), String> {
    let Some(first) = mini_blocks.first() else {
        return Err("a chunk needs at least one mini-block".into());
    };
    for (i, mini_block) in mini_blocks.iter().enumerate() {
        if Some(mini_block.number) != chunk.checked_add(i as u64) {
            return Err(format!(
                "mini-block {} at position {i} of chunk {chunk}: they must be consecutive from \
                 the chunk's number",
                mini_block.number
            ));
        }
        if mini_block.block_number != first.block_number {
            return Err(format!(
                "mini-block {} is of block {}, the chunk's first of block {}",
                mini_block.number, mini_block.block_number, first.block_number
            ));
        }
    }
    Ok(())
}

/// The writes of `mini_blocks` as one diff, as if applied in order.
pub fn merged_diff(mini_blocks: &[MiniBlock]) -> StateDiff {
    let mut diff = StateDiff::default();
    for mini_block in mini_blocks {
        diff.merge(&mini_block.diff);
    }
    diff
}

/// The digest of a chunk's transactions, in order: what the proofs' `tx_hash` binds.
pub fn transactions_digest(mini_blocks: &[MiniBlock]) -> verity_circuits::Fr {
    tx_digest(
        mini_blocks
            .iter()
            .flat_map(|m| m.transactions.iter().map(|t| *t.tx_hash())),
    )
}

/// Why a job cannot be built or checked (not fraud: the job itself is wrong or incomplete).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Reading the witness replica's state failed.
    #[error("state read failed: {0}")]
    State(String),
    /// The mini-blocks cannot form a chunk ([`chunk_of`]).
    #[error("not a chunk: {0}")]
    Chunk(String),
    /// Execution could not run (not a transaction's fault).
    #[error("execution failed: {0}")]
    Execution(String),
    /// Re-execution read something the witness does not hold.
    #[error("the witness is incomplete: {0}")]
    Incomplete(Missing),
    /// The witness and the steps disagree about the pre-state.
    #[error("the witness disagrees with the tree steps: {0}")]
    WitnessMismatch(String),
    /// The steps do not take the pre-root to the post-root.
    #[error("the tree steps do not chain from the pre-root to the post-root: {0}")]
    BrokenSteps(String),
}

/// What re-executing a chunk showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The claimed writes and receipts are what the transactions produce.
    Valid,
    /// They are not.
    Fraud {
        /// What differs, for people.
        reason: String,
        /// The writes re-execution produced for the first mini-block that differs.
        reexecuted: StateDiff,
    },
}

/// The execution environment of a mini-block.
pub fn block_env(chain_id: u64, gas_limit: u64, mini_block: &MiniBlock) -> BlockEnvSpec {
    BlockEnvSpec {
        chain_id,
        number: mini_block.block_number,
        timestamp: mini_block.block_timestamp,
        base_fee: mini_block.base_fee,
        gas_limit,
        beneficiary: mini_block.beneficiary,
    }
}

/// Gas the EVM block had used before `mini_block`, read off its first receipt.
pub fn cumulative_gas_start(mini_block: &MiniBlock) -> u64 {
    mini_block
        .receipts
        .first()
        .map_or(0, |r| r.cumulative_gas_used.saturating_sub(r.gas_used))
}

/// The tree writes a diff makes, given each written account's state before it: account leaves
/// (zero for an account destroyed and not recreated) and storage leaves (zero for a cleared
/// slot). Accounts the diff names but `before` lacks are taken as absent.
pub fn tree_writes(
    diff: &StateDiff,
    before: &BTreeMap<Address, Option<Account>>,
) -> BTreeMap<B256, B256> {
    let mut writes = BTreeMap::new();
    for (address, change) in &diff.accounts {
        let previous = before.get(address).copied().flatten();
        let account = change.account_after(previous);
        if account != previous {
            writes.insert(
                account_key(*address),
                account.as_ref().map_or(EMPTY, account_value),
            );
        }
        for (slot, value) in &change.storage {
            writes.insert(storage_key(*address, *slot), storage_value(*value));
        }
    }
    writes
}

/// Builds the job of the chunk of `mini_blocks` (see [`chunk_of`]) over the pre-chunk `state`
/// and advances `tree` by its claimed writes, as one batch. The read set comes from re-executing
/// the transactions here, each mini-block over the state the earlier ones claim to leave; the
/// claimed writes are taken as published (proving, not building, decides whether they are
/// right).
pub fn build_job<S: StateView>(
    state: &S,
    tree: &mut StateTree,
    chain_id: u64,
    gas_limit: u64,
    mini_blocks: Vec<MiniBlock>,
) -> Result<ChunkJob, JobError> {
    let chunk = mini_blocks.first().map_or(0, |m| m.number);
    chunk_of(&mini_blocks, chunk).map_err(JobError::Chunk)?;
    let pre_root = tree.root();
    let recorder = Recorder::new(state);
    let mut before = StateDiff::default();
    for mini_block in &mini_blocks {
        let view = Overlay::new(&recorder, &before);
        let env = block_env(chain_id, gas_limit, mini_block);
        let start = cumulative_gas_start(mini_block);
        verity_execution::execute(&view, &env, mini_block.transactions.clone(), start)
            .map_err(|e| JobError::Execution(e.to_string()))?;
        before.merge(&mini_block.diff);
    }
    for address in before.accounts.keys() {
        recorder
            .account(*address)
            .map_err(|e| JobError::State(e.to_string()))?;
    }
    let witness = recorder
        .finish()
        .map_err(|e| JobError::State(e.to_string()))?;

    let mut touched: BTreeMap<B256, Option<B256>> = witness
        .reads()
        .into_iter()
        .map(|(key, _)| (key, None))
        .collect();
    for (key, value) in tree_writes(&before, &witness.accounts) {
        touched.insert(key, Some(value));
    }
    let keys: Vec<B256> = touched.keys().copied().collect();
    let pre_proofs = keys.iter().copied().zip(tree.prove_many(&keys)).collect();
    let post_root = tree.write_batch(
        touched
            .into_iter()
            .filter_map(|(key, write)| Some((key, write?))),
    );
    Ok(ChunkJob {
        chunk,
        pre_root,
        post_root,
        witness,
        pre_proofs,
        mini_blocks,
        mini_block_seqs: Vec::new(),
        block_hash_seqs: Vec::new(),
        epoch_seqs: Vec::new(),
    })
}

impl ChunkJob {
    /// The tree writes the mini-blocks claim, given the witness's pre-state of the accounts.
    pub fn writes(&self) -> BTreeMap<B256, B256> {
        tree_writes(&merged_diff(&self.mini_blocks), &self.witness.accounts)
    }

    /// The hashes of the chunk's mini-blocks, in order.
    pub fn mini_block_hashes(&self) -> Vec<B256> {
        self.mini_blocks.iter().map(|m| m.hash).collect()
    }

    /// The hash that, with the chunk number, identifies the chunk on the bus: its last
    /// mini-block's (the first number and the last hash fix which mini-blocks it spans).
    pub fn last_hash(&self) -> B256 {
        self.mini_blocks.last().map(|m| m.hash).unwrap_or_default()
    }

    /// The number of transactions in the chunk.
    pub fn transactions(&self) -> usize {
        self.mini_blocks.iter().map(|m| m.transactions.len()).sum()
    }

    /// The chunk's tree steps, one per key read or written in key order, derived from the
    /// pre-state proofs and the claimed writes: what the chunk circuit proves. Fails when the
    /// proofs are out of order, do not lead to the pre-root, miss a written key, or the last
    /// step does not end at the post-root.
    pub fn steps(&self) -> Result<Vec<Step>, JobError> {
        if !self.pre_proofs.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(JobError::BrokenSteps(
                "keys are not strictly increasing".into(),
            ));
        }
        let broken = |e: verity_commitment::PartialError| JobError::BrokenSteps(e.to_string());
        let mut tree = PartialTree::from_proofs(
            Poseidon2Bn254,
            self.pre_root,
            self.pre_proofs.iter().map(|(key, proof)| (key, proof)),
        )
        .map_err(broken)?;
        let writes = self.writes();
        if let Some(key) = writes.keys().find(|key| {
            self.pre_proofs
                .binary_search_by(|(k, _)| k.cmp(key))
                .is_err()
        }) {
            return Err(JobError::BrokenSteps(format!(
                "claimed write to {key} has no pre-state proof"
            )));
        }
        let steps = self
            .pre_proofs
            .iter()
            .map(|(key, _)| tree.step(*key, writes.get(key).copied()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(broken)?;
        if tree.root() != self.post_root {
            return Err(JobError::BrokenSteps(format!(
                "the claimed writes end at root {}, the job claims {}",
                tree.root(),
                self.post_root
            )));
        }
        Ok(steps)
    }
}

/// Checks a job: the pre-state proofs against the pre-root, the witness against them, the steps
/// they give against the claimed writes and the post-root, and the claimed writes and receipts
/// against stateless re-execution.
pub fn check_job(job: &ChunkJob, chain_id: u64, gas_limit: u64) -> Result<Verdict, JobError> {
    check_job_steps(job, chain_id, gas_limit).map(|(verdict, _)| verdict)
}

/// How a verifier judges a prover's fraud evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The chunk is fraudulent: re-checked on the verifier's own data, it does not do what its
    /// transactions say.
    Confirmed {
        /// What differs.
        reason: String,
    },
    /// Re-executing the verifier's own mini-blocks from its own root, on the evidence's witness
    /// (proven against that root) and the verifier's block hashes, reproduces their writes and
    /// receipts: an honest prover given that job would have found it valid, so the accuser lied
    /// and is to be named and ignored.
    FalseAccusation {
        /// Why it does not hold up.
        reason: String,
    },
    /// The evidence is not about this verifier's chain or does not hold together (other
    /// mini-blocks, another root, block hashes this verifier does not have, a broken job). A
    /// dishonest witness replica can hand an honest prover such a job, so nobody is accused:
    /// the evidence is dropped.
    Unfounded {
        /// Why.
        reason: String,
    },
}

/// Judges fraud evidence (its prover's registration and signature already checked) against the
/// verifier's own authenticated data only: `own`, its stored mini-blocks from the chunk's first
/// on (each hash recomputed and signature checked under the epoch's key when it was applied),
/// and `root`, its verified root before the chunk, and `block_hash`, the hashes of the blocks it
/// stored. Of the evidence's mini-blocks only the hashes are read, to say which they are; the
/// job is re-checked with the verifier's own copies, so a receipt, a transaction or a diff
/// edited in the evidence changes nothing. The witness and the pre-state proofs come from the
/// evidence and are checked against `root`, and every block hash the witness gives `BLOCKHASH`
/// must be the verifier's.
pub fn judge_fraud(
    evidence: &wire::FraudEvidence,
    own: &[MiniBlock],
    root: B256,
    block_hash: &dyn Fn(u64) -> Option<B256>,
    chain_id: u64,
    gas_limit: u64,
) -> Judgement {
    let unfounded = |reason: String| Judgement::Unfounded { reason };
    let named = evidence.job.mini_block_hashes();
    let ours: Vec<B256> = own.iter().take(named.len()).map(|m| m.hash).collect();
    if named.is_empty() || named != ours {
        return unfounded("the evidence is for mini-blocks this verifier does not hold".into());
    }
    if evidence.job.pre_root != root {
        return unfounded(format!(
            "the evidence starts at root {}, the verified root is {root}",
            evidence.job.pre_root
        ));
    }
    for (&number, &hash) in &evidence.job.witness.block_hashes {
        let ours = block_hash(number);
        if ours != Some(hash) {
            return unfounded(format!(
                "the evidence gives BLOCKHASH({number}) = {hash}; this verifier's block {number} is {}",
                ours.map_or_else(|| "not stored".to_owned(), |h| h.to_string())
            ));
        }
    }
    let mut job = evidence.job.clone();
    job.mini_blocks = own[..named.len()].to_vec();
    match check_job(&job, chain_id, gas_limit) {
        Ok(Verdict::Fraud { reason, .. }) => Judgement::Confirmed { reason },
        Ok(Verdict::Valid) => Judgement::FalseAccusation {
            reason:
                "re-executing the verifier's own mini-blocks reproduces their writes and receipts"
                    .into(),
        },
        Err(error) => unfounded(format!("the evidence's job does not hold up: {error}")),
    }
}

/// [`check_job`], also returning the steps it derived ([`ChunkJob::steps`]), which a prover
/// then proves.
pub fn check_job_steps(
    job: &ChunkJob,
    chain_id: u64,
    gas_limit: u64,
) -> Result<(Verdict, Vec<Step>), JobError> {
    let derived = job.steps()?;
    // The witness is what the proofs say the pre-state holds.
    let steps: BTreeMap<B256, &Step> = derived.iter().map(|s| (s.key, s)).collect();
    let reads = job.witness.reads();
    for (key, value) in &reads {
        match steps.get(key) {
            Some(step) if step.before == *value => {}
            Some(step) => {
                return Err(JobError::WitnessMismatch(format!(
                    "key {key}: witness value {value}, tree value {}",
                    step.before
                )));
            }
            None => {
                return Err(JobError::WitnessMismatch(format!(
                    "key {key} has no tree step"
                )));
            }
        }
    }
    chunk_of(&job.mini_blocks, job.chunk).map_err(JobError::Chunk)?;
    // Stateless re-execution, each mini-block over the state the earlier ones claim to leave.
    let state = WitnessState::new(&job.witness);
    let mut before = StateDiff::default();
    let mut verdict = Verdict::Valid;
    for claimed in &job.mini_blocks {
        let view = Overlay::new(&state, &before);
        let env = block_env(chain_id, gas_limit, claimed);
        // Each sender is recovered here, never taken from the job. A transaction whose claimed
        // sender did not sign it is fraud whatever it wrote (the witness, built from what the
        // sequencer executed, need not even hold the real signer's account).
        let (signed, forged) = recover_senders(claimed);
        if let Some(forged) = forged {
            verdict = Verdict::Fraud {
                reason: format!("mini-block {}: {forged}", claimed.number),
                reexecuted: StateDiff::default(),
            };
            break;
        }
        let outcome = verity_execution::execute(&view, &env, signed, cumulative_gas_start(claimed));
        if let Some(missing) = state.missing() {
            return Err(JobError::Incomplete(missing));
        }
        let outcome = outcome.map_err(|e| JobError::Execution(e.to_string()))?;
        let reason = if let Some((hash, rejection)) = outcome.rejected.first() {
            Some(format!(
                "transaction {hash} is invalid: {}",
                rejection.message
            ))
        } else if outcome.diff != claimed.diff {
            Some(describe_diff(&claimed.diff, &outcome.diff))
        } else if outcome.receipts != claimed.receipts {
            Some("the receipts differ from re-execution".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            verdict = Verdict::Fraud {
                reason: format!("mini-block {}: {reason}", claimed.number),
                reexecuted: outcome.diff,
            };
            break;
        }
        before.merge(&claimed.diff);
    }
    // Every key touched is read or written (a job carries no extra steps to prove).
    let writes = job.writes();
    let read: BTreeSet<&B256> = reads.iter().map(|(key, _)| key).collect();
    if let Some(step) = derived
        .iter()
        .find(|s| !writes.contains_key(&s.key) && !read.contains(&s.key))
    {
        return Err(JobError::BrokenSteps(format!(
            "key {} is neither read nor written",
            step.key
        )));
    }
    Ok((verdict, derived))
}

/// The mini-block's transactions with the senders their signatures recover to, and, when a
/// claimed sender is not the signer (or a signature recovers to nobody), what is wrong with the
/// first such transaction.
fn recover_senders(mini_block: &MiniBlock) -> (Vec<Transaction>, Option<String>) {
    use alloy_consensus::transaction::SignerRecoverable as _;
    let mut forged = None;
    let mut signed = Vec::with_capacity(mini_block.transactions.len());
    for tx in &mini_block.transactions {
        let claimed = tx.signer();
        match tx.inner().recover_signer() {
            Ok(signer) => {
                if signer != claimed && forged.is_none() {
                    forged = Some(format!(
                        "transaction {} is signed by {signer}, not by its claimed sender {claimed}",
                        tx.tx_hash()
                    ));
                }
                signed.push(Transaction::new_unchecked(tx.inner().clone(), signer));
            }
            Err(error) => {
                forged.get_or_insert_with(|| {
                    format!(
                        "transaction {} (claimed sender {claimed}) has no valid signature: {error}",
                        tx.tx_hash()
                    )
                });
            }
        }
    }
    (signed, forged)
}

fn describe_diff(claimed: &StateDiff, reexecuted: &StateDiff) -> String {
    let addresses: BTreeSet<&Address> = claimed
        .accounts
        .keys()
        .chain(reexecuted.accounts.keys())
        .collect();
    for address in addresses {
        let c = claimed.accounts.get(address);
        let r = reexecuted.accounts.get(address);
        if c != r {
            return format!("account {address}: claimed {c:?}, re-execution wrote {r:?}");
        }
    }
    "the writes differ from re-execution".to_owned()
}

/// One key's entry in a proof message: a step's key and the values before and after it, which
/// the verifier checks against its own mini-blocks and states as the segment's public inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Tree key.
    pub key: B256,
    /// Value before the chunk (zero when absent).
    pub before: B256,
    /// Value after (zero when absent).
    pub after: B256,
}

impl From<&Step> for Entry {
    fn from(step: &Step) -> Self {
        Self {
            key: step.key,
            before: step.before,
            after: step.after,
        }
    }
}

/// Why a proof's statement does not match the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// The entries do not write what the mini-blocks claim.
    #[error("the proof's entries do not match the mini-blocks' writes: {0}")]
    Writes(String),
    /// The entries are not in strictly increasing key order.
    #[error("the proof's entries are not in key order")]
    Order,
    /// An account's stated pre-state does not match its entry.
    #[error("account {0}: stated pre-state does not match its entry")]
    Account(Address),
    /// The segments do not split the entries: their step counts do not add up to the entries,
    /// or one is empty (only a chunk without entries has one segment of none).
    #[error("the proof's segments of {counts:?} steps do not split its {entries} entries")]
    Segments {
        /// Steps of each segment.
        counts: Vec<usize>,
        /// Entries given.
        entries: usize,
    },
    /// A root is not a field element.
    #[error("a root is not a BN254 scalar field element")]
    Root,
}

/// What a chunk's proofs bind, recomputed by a verifier from its own copy of the mini-block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Public inputs of each segment proof, in order.
    pub segments: Vec<Instances>,
}

impl Statement {
    /// Recomputes the public inputs of a chunk's segment proofs from: the verifier's `pre_root`
    /// (the previous chunk's proven post-root), the chunk's mini-blocks it holds, the proof's
    /// entries and the pre-state of the accounts the mini-blocks write, and the segments the
    /// proof claims: each as the root at its end and how many of the entries, in order, it
    /// proves. (Whether each count fits its segment's circuit is the caller's to check.)
    pub fn of(
        pre_root: B256,
        mini_blocks: &[MiniBlock],
        entries: &[Entry],
        accounts_before: &BTreeMap<Address, Option<Account>>,
        claimed: &[(B256, usize)],
    ) -> Result<Self, StatementError> {
        if !entries.windows(2).all(|w| w[0].key < w[1].key) {
            return Err(StatementError::Order);
        }
        let by_key: BTreeMap<B256, &Entry> = entries.iter().map(|e| (e.key, e)).collect();
        for (address, account) in accounts_before {
            let expected = account.as_ref().map_or(EMPTY, account_value);
            match by_key.get(&account_key(*address)) {
                Some(entry) if entry.before == expected => {}
                _ => return Err(StatementError::Account(*address)),
            }
        }
        let diff = merged_diff(mini_blocks);
        let writes = tree_writes(&diff, accounts_before);
        for address in diff.accounts.keys() {
            if !accounts_before.contains_key(address) {
                return Err(StatementError::Account(*address));
            }
        }
        let mut unseen: BTreeSet<&B256> = writes.keys().collect();
        for entry in entries {
            match writes.get(&entry.key) {
                Some(value) if *value == entry.after => {
                    unseen.remove(&entry.key);
                }
                Some(value) => {
                    return Err(StatementError::Writes(format!(
                        "key {} ends at {}, the mini-blocks write {value}",
                        entry.key, entry.after
                    )));
                }
                None if entry.after != entry.before => {
                    return Err(StatementError::Writes(format!(
                        "key {} changes without a write",
                        entry.key
                    )));
                }
                None => {}
            }
        }
        if let Some(key) = unseen.first() {
            return Err(StatementError::Writes(format!(
                "write to {key} has no entry"
            )));
        }
        let counts: Vec<usize> = claimed.iter().map(|(_, count)| *count).collect();
        let splits = if entries.is_empty() {
            counts == [0]
        } else {
            counts.iter().all(|count| *count > 0)
                && counts
                    .iter()
                    .try_fold(0usize, |sum, count| sum.checked_add(*count))
                    == Some(entries.len())
        };
        if !splits {
            return Err(StatementError::Segments {
                counts,
                entries: entries.len(),
            });
        }
        let needed = claimed.len();
        let tx_hash = transactions_digest(mini_blocks);
        let element =
            |root: &B256| verity_commitment::field_element(root).ok_or(StatementError::Root);
        let mut segments = Vec::with_capacity(needed);
        let mut root = element(&pre_root)?;
        let mut rest = entries;
        for (post, count) in claimed {
            let (chunk, after) = rest.split_at(*count);
            rest = after;
            let post = element(post)?;
            segments.push(Instances {
                pre_root: root,
                post_root: post,
                tx_hash,
                entries: chunk
                    .iter()
                    .map(|e| PublicEntry::new(&e.key, &e.before, &e.after))
                    .collect(),
            });
            root = post;
        }
        Ok(Self { segments })
    }

    /// The post-root the last segment ends at.
    pub fn post_root(&self) -> Option<B256> {
        self.segments
            .last()
            .map(|s| verity_commitment::field_digest(s.post_root))
    }
}

/// The tree of a genesis allocation.
pub fn genesis_tree(genesis: &StateDiff) -> StateTree {
    let mut tree = StateTree::default();
    let writes = tree_writes(genesis, &BTreeMap::new());
    tree.apply(
        writes
            .into_iter()
            .filter(|(_, v)| *v != EMPTY)
            .map(|(k, v)| (k, Some(v))),
    );
    tree
}

#[cfg(test)]
mod tests;
