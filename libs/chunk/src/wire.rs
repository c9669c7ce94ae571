//! Chunk jobs, proofs and fraud evidence on the wire (`proto/verity/v1/prover.proto`), and the
//! hashes provers sign.
//!
//! Conversions from the wire validate every field, like those of `verity-proto`: a service that
//! receives a job or a proof checks it once, where it arrives.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Bytes, Signature, keccak256};
use prost::Message as _;
use verity_circuits::Shape;
use verity_commitment::Proof;
use verity_primitives::{Account, MiniBlock, StateDiff};
use verity_proto::{
    ConversionError, address_from, b256_from, signature_from, u256_bytes, u256_from, v1,
};

use crate::{ChunkJob, Entry, Witness};

fn missing(field: &'static str) -> ConversionError {
    ConversionError::new(field, "missing")
}

fn tree_proof(proof: &Proof) -> v1::TreeProof {
    let (terminal_key, terminal_value) = match proof.terminal {
        Some((key, value)) => (key.to_vec(), value.to_vec()),
        None => (Vec::new(), Vec::new()),
    };
    v1::TreeProof {
        siblings: proof.siblings.iter().map(|s| s.to_vec()).collect(),
        terminal_key,
        terminal_value,
    }
}

fn tree_proof_from(proof: Option<&v1::TreeProof>) -> Result<Proof, ConversionError> {
    let proof = proof.ok_or_else(|| missing("key_proof.proof"))?;
    let siblings = proof
        .siblings
        .iter()
        .map(|s| b256_from(s, "tree_proof.siblings"))
        .collect::<Result<_, _>>()?;
    let terminal = if proof.terminal_key.is_empty() && proof.terminal_value.is_empty() {
        None
    } else {
        Some((
            b256_from(&proof.terminal_key, "tree_proof.terminal_key")?,
            b256_from(&proof.terminal_value, "tree_proof.terminal_value")?,
        ))
    };
    Ok(Proof { siblings, terminal })
}

/// A job's pre-state proofs, each without the leading siblings it shares with the one before.
fn key_proofs(proofs: &[(B256, Proof)]) -> Vec<v1::KeyProof> {
    let mut previous: &[B256] = &[];
    proofs
        .iter()
        .map(|(key, proof)| {
            let shared = previous
                .iter()
                .zip(&proof.siblings)
                .take_while(|(a, b)| a == b)
                .count();
            previous = &proof.siblings;
            let mut wire = tree_proof(proof);
            wire.siblings.drain(..shared);
            v1::KeyProof {
                key: key.to_vec(),
                proof: Some(wire),
                shared_siblings: u32::try_from(shared).unwrap_or(u32::MAX),
            }
        })
        .collect()
}

fn key_proofs_from(proofs: &[v1::KeyProof]) -> Result<Vec<(B256, Proof)>, ConversionError> {
    let mut out: Vec<(B256, Proof)> = Vec::with_capacity(proofs.len());
    for wire in proofs {
        let key = b256_from(&wire.key, "key_proof.key")?;
        let mut proof = tree_proof_from(wire.proof.as_ref())?;
        let previous = out.last().map_or(&[][..], |(_, p)| p.siblings.as_slice());
        let shared = previous
            .get(..wire.shared_siblings as usize)
            .ok_or_else(|| {
                ConversionError::new(
                    "key_proof.shared_siblings",
                    format!(
                        "{} shared, the previous proof has {}",
                        wire.shared_siblings,
                        previous.len()
                    ),
                )
            })?;
        proof.siblings.splice(..0, shared.iter().copied());
        out.push((key, proof));
    }
    Ok(out)
}

/// An account's pre-state on the wire.
pub fn witness_account(address: Address, account: Option<&Account>) -> v1::WitnessAccount {
    match account {
        Some(account) => v1::WitnessAccount {
            address: address.to_vec(),
            exists: true,
            balance: u256_bytes(account.balance),
            nonce: account.nonce,
            code_hash: account.code_hash.to_vec(),
        },
        None => v1::WitnessAccount {
            address: address.to_vec(),
            ..Default::default()
        },
    }
}

/// Parses an account's pre-state.
pub fn witness_account_from(
    account: &v1::WitnessAccount,
) -> Result<(Address, Option<Account>), ConversionError> {
    let address = address_from(&account.address, "witness_account.address")?;
    if !account.exists {
        return Ok((address, None));
    }
    Ok((
        address,
        Some(Account {
            nonce: account.nonce,
            balance: u256_from(&account.balance, "witness_account.balance")?,
            code_hash: b256_from(&account.code_hash, "witness_account.code_hash")?,
        }),
    ))
}

fn accounts_from(
    accounts: &[v1::WitnessAccount],
    field: &'static str,
) -> Result<BTreeMap<Address, Option<Account>>, ConversionError> {
    let mut map = BTreeMap::new();
    for account in accounts {
        let (address, account) = witness_account_from(account)?;
        if map.insert(address, account).is_some() {
            return Err(ConversionError::new(
                field,
                format!("account {address} twice"),
            ));
        }
    }
    Ok(map)
}

fn witness(witness: &Witness) -> v1::ChunkWitness {
    v1::ChunkWitness {
        accounts: witness
            .accounts
            .iter()
            .map(|(address, account)| witness_account(*address, account.as_ref()))
            .collect(),
        storage: witness
            .storage
            .iter()
            .map(|((address, slot), value)| v1::WitnessSlot {
                address: address.to_vec(),
                slot: u256_bytes(*slot),
                value: u256_bytes(*value),
            })
            .collect(),
        codes: witness.codes.values().map(|c| c.to_vec()).collect(),
        block_hashes: witness
            .block_hashes
            .iter()
            .map(|(number, hash)| v1::WitnessBlockHash {
                number: *number,
                hash: hash.to_vec(),
            })
            .collect(),
    }
}

fn witness_from(witness: Option<&v1::ChunkWitness>) -> Result<Witness, ConversionError> {
    let witness = witness.ok_or_else(|| missing("chunk_job.witness"))?;
    let mut storage = BTreeMap::new();
    for slot in &witness.storage {
        storage.insert(
            (
                address_from(&slot.address, "witness_slot.address")?,
                u256_from(&slot.slot, "witness_slot.slot")?,
            ),
            u256_from(&slot.value, "witness_slot.value")?,
        );
    }
    let mut block_hashes = BTreeMap::new();
    for hash in &witness.block_hashes {
        block_hashes.insert(
            hash.number,
            b256_from(&hash.hash, "witness_block_hash.hash")?,
        );
    }
    Ok(Witness {
        accounts: accounts_from(&witness.accounts, "chunk_witness.accounts")?,
        storage,
        // Code is keyed by its own hash, so it cannot be attached to the wrong account.
        codes: witness
            .codes
            .iter()
            .map(|code| (keccak256(code), Bytes::copy_from_slice(code)))
            .collect(),
        block_hashes,
    })
}

impl From<&ChunkJob> for v1::ChunkJob {
    fn from(job: &ChunkJob) -> Self {
        Self {
            chunk: job.chunk,
            mini_blocks: job.mini_blocks.iter().map(Into::into).collect(),
            pre_root: job.pre_root.to_vec(),
            post_root: job.post_root.to_vec(),
            witness: Some(witness(&job.witness)),
            pre_proofs: key_proofs(&job.pre_proofs),
            mini_block_seqs: job.mini_block_seqs.clone(),
            block_hash_seqs: job.block_hash_seqs.clone(),
            epoch_seqs: job.epoch_seqs.clone(),
        }
    }
}

impl TryFrom<&v1::ChunkJob> for ChunkJob {
    type Error = ConversionError;

    fn try_from(job: &v1::ChunkJob) -> Result<Self, Self::Error> {
        let mini_blocks = job
            .mini_blocks
            .iter()
            .map(MiniBlock::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        crate::chunk_of(&mini_blocks, job.chunk)
            .map_err(|reason| ConversionError::new("chunk_job.mini_blocks", reason))?;
        Ok(Self {
            chunk: job.chunk,
            mini_blocks,
            pre_root: b256_from(&job.pre_root, "chunk_job.pre_root")?,
            post_root: b256_from(&job.post_root, "chunk_job.post_root")?,
            witness: witness_from(job.witness.as_ref())?,
            pre_proofs: key_proofs_from(&job.pre_proofs)?,
            mini_block_seqs: job.mini_block_seqs.clone(),
            block_hash_seqs: job.block_hash_seqs.clone(),
            epoch_seqs: job.epoch_seqs.clone(),
        })
    }
}

/// A prover's proof of a valid chunk, as published.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkProof {
    /// The number of the chunk's first mini-block.
    pub chunk: u64,
    /// The hashes of the chunk's mini-blocks, in order.
    pub mini_block_hashes: Vec<B256>,
    /// Root before the chunk.
    pub pre_root: B256,
    /// Root after it.
    pub post_root: B256,
    /// One entry per tree step, in key order.
    pub entries: Vec<Entry>,
    /// Pre-state of every account the mini-blocks write.
    pub accounts_before: BTreeMap<Address, Option<Account>>,
    /// The main circuit shape (the prover's and verifiers' `--steps-per-proof`).
    pub shape: Shape,
    /// The segments, in entry order.
    pub segments: Vec<Segment>,
    /// The prover's address.
    pub prover: Address,
    /// Its signature over [`attestation_hash`].
    pub signature: Signature,
    /// Wall time spent proving, ms.
    pub proving_ms: u64,
}

/// One halo2 proof of a run of a chunk's entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// The root after its steps.
    pub post_root: B256,
    /// How many of the entries, in order from where the previous segment ended, it proves.
    pub steps: usize,
    /// The circuit it was proven with: the chunk's main shape, or [`Shape::DEEP`] for one step
    /// whose path the main shape cannot hold.
    pub shape: Shape,
    /// The halo2 proof.
    pub proof: Vec<u8>,
}

/// The hash a prover signs for a valid chunk: chain, chunk, mini-blocks, roots, and the root,
/// step count and circuit of every segment. The proofs themselves are not signed: they stand
/// on their own.
pub fn attestation_hash(chain_id: u64, proof: &ChunkProof) -> B256 {
    let hashes = proof.mini_block_hashes.len();
    let mut data = Vec::with_capacity(72 + 32 * (3 + hashes) + 56 * proof.segments.len());
    data.extend_from_slice(b"verity.chunk-proof.v3");
    data.extend_from_slice(&chain_id.to_be_bytes());
    data.extend_from_slice(&proof.chunk.to_be_bytes());
    data.extend_from_slice(&(hashes as u64).to_be_bytes());
    for hash in &proof.mini_block_hashes {
        data.extend_from_slice(hash.as_slice());
    }
    data.extend_from_slice(proof.pre_root.as_slice());
    data.extend_from_slice(proof.post_root.as_slice());
    for segment in &proof.segments {
        data.extend_from_slice(segment.post_root.as_slice());
        for number in [segment.steps, segment.shape.steps, segment.shape.depth] {
            data.extend_from_slice(&(number as u64).to_be_bytes());
        }
    }
    keccak256(data)
}

impl From<&ChunkProof> for v1::ChunkProof {
    fn from(proof: &ChunkProof) -> Self {
        Self {
            chunk: proof.chunk,
            mini_block_hashes: proof.mini_block_hashes.iter().map(|h| h.to_vec()).collect(),
            pre_root: proof.pre_root.to_vec(),
            post_root: proof.post_root.to_vec(),
            entries: proof
                .entries
                .iter()
                .map(|e| v1::TreeEntry {
                    key: e.key.to_vec(),
                    before: e.before.to_vec(),
                    after: e.after.to_vec(),
                })
                .collect(),
            accounts_before: proof
                .accounts_before
                .iter()
                .map(|(address, account)| witness_account(*address, account.as_ref()))
                .collect(),
            steps_per_segment: u32::try_from(proof.shape.steps).unwrap_or(u32::MAX),
            depth: u32::try_from(proof.shape.depth).unwrap_or(u32::MAX),
            segments: proof
                .segments
                .iter()
                .map(|segment| v1::SegmentProof {
                    post_root: segment.post_root.to_vec(),
                    proof: segment.proof.clone(),
                    steps: u32::try_from(segment.steps).unwrap_or(u32::MAX),
                    steps_per_proof: u32::try_from(segment.shape.steps).unwrap_or(u32::MAX),
                    depth: u32::try_from(segment.shape.depth).unwrap_or(u32::MAX),
                })
                .collect(),
            prover: proof.prover.to_vec(),
            signature: proof.signature.as_bytes().to_vec(),
            proving_ms: proof.proving_ms,
        }
    }
}

impl TryFrom<&v1::ChunkProof> for ChunkProof {
    type Error = ConversionError;

    fn try_from(proof: &v1::ChunkProof) -> Result<Self, Self::Error> {
        let entries = proof
            .entries
            .iter()
            .map(|e| {
                Ok(Entry {
                    key: b256_from(&e.key, "tree_entry.key")?,
                    before: b256_from(&e.before, "tree_entry.before")?,
                    after: b256_from(&e.after, "tree_entry.after")?,
                })
            })
            .collect::<Result<_, ConversionError>>()?;
        let segments = proof
            .segments
            .iter()
            .map(|s| {
                Ok(Segment {
                    post_root: b256_from(&s.post_root, "segment_proof.post_root")?,
                    steps: s.steps as usize,
                    shape: Shape {
                        steps: s.steps_per_proof as usize,
                        depth: s.depth as usize,
                    },
                    proof: s.proof.clone(),
                })
            })
            .collect::<Result<_, ConversionError>>()?;
        Ok(Self {
            chunk: proof.chunk,
            mini_block_hashes: proof
                .mini_block_hashes
                .iter()
                .map(|h| b256_from(h, "chunk_proof.mini_block_hashes"))
                .collect::<Result<_, _>>()?,
            pre_root: b256_from(&proof.pre_root, "chunk_proof.pre_root")?,
            post_root: b256_from(&proof.post_root, "chunk_proof.post_root")?,
            entries,
            accounts_before: accounts_from(&proof.accounts_before, "chunk_proof.accounts_before")?,
            shape: Shape {
                steps: proof.steps_per_segment as usize,
                depth: proof.depth as usize,
            },
            segments,
            prover: address_from(&proof.prover, "chunk_proof.prover")?,
            signature: signature_from(&proof.signature, "chunk_proof.signature")?,
            proving_ms: proof.proving_ms,
        })
    }
}

/// A prover's evidence that a chunk's claimed writes or receipts are wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct FraudEvidence {
    /// The job, as the witness replica built it.
    pub job: ChunkJob,
    /// The writes re-execution produced.
    pub reexecuted: StateDiff,
    /// What differs.
    pub reason: String,
    /// The prover's address.
    pub prover: Address,
    /// Its signature over [`fraud_hash`].
    pub signature: Signature,
}

/// The hash a prover signs for fraud evidence: chain, chunk, mini-blocks, pre-root, the writes
/// it re-executed, and everything else it says (the whole job, witness and tree proofs
/// included, and the reason), so nobody relaying it can change a byte of what the prover is
/// accountable for.
pub fn fraud_hash(chain_id: u64, evidence: &FraudEvidence) -> B256 {
    let mut data = Vec::with_capacity(192);
    data.extend_from_slice(b"verity.chunk-fraud.v3");
    data.extend_from_slice(&chain_id.to_be_bytes());
    data.extend_from_slice(&evidence.job.chunk.to_be_bytes());
    data.extend_from_slice(&(evidence.job.mini_blocks.len() as u64).to_be_bytes());
    for mini_block in &evidence.job.mini_blocks {
        data.extend_from_slice(mini_block.hash.as_slice());
    }
    data.extend_from_slice(evidence.job.pre_root.as_slice());
    data.extend_from_slice(
        keccak256(v1::StateDiff::from(&evidence.reexecuted).encode_to_vec()).as_slice(),
    );
    data.extend_from_slice(keccak256(v1::ChunkJob::from(&evidence.job).encode_to_vec()).as_slice());
    data.extend_from_slice(keccak256(evidence.reason.as_bytes()).as_slice());
    keccak256(data)
}

impl From<&FraudEvidence> for v1::FraudEvidence {
    fn from(evidence: &FraudEvidence) -> Self {
        Self {
            job: Some((&evidence.job).into()),
            reexecuted: Some((&evidence.reexecuted).into()),
            reason: evidence.reason.clone(),
            prover: evidence.prover.to_vec(),
            signature: evidence.signature.as_bytes().to_vec(),
        }
    }
}

impl TryFrom<&v1::FraudEvidence> for FraudEvidence {
    type Error = ConversionError;

    fn try_from(evidence: &v1::FraudEvidence) -> Result<Self, Self::Error> {
        Ok(Self {
            job: ChunkJob::try_from(
                evidence
                    .job
                    .as_ref()
                    .ok_or_else(|| missing("fraud_evidence.job"))?,
            )?,
            reexecuted: StateDiff::try_from(
                evidence
                    .reexecuted
                    .as_ref()
                    .ok_or_else(|| missing("fraud_evidence.reexecuted"))?,
            )?,
            reason: evidence.reason.clone(),
            prover: address_from(&evidence.prover, "fraud_evidence.prover")?,
            signature: signature_from(&evidence.signature, "fraud_evidence.signature")?,
        })
    }
}

/// A result on the proofs stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ProverResult {
    /// A valid chunk, proven.
    Proof(Box<ChunkProof>),
    /// A fraudulent chunk.
    Fraud(Box<FraudEvidence>),
}

impl ProverResult {
    /// The number of the chunk's first mini-block.
    pub fn chunk(&self) -> u64 {
        match self {
            Self::Proof(proof) => proof.chunk,
            Self::Fraud(evidence) => evidence.job.chunk,
        }
    }

    /// The chunk's last mini-block hash ([`ChunkJob::last_hash`]).
    pub fn last_hash(&self) -> B256 {
        match self {
            Self::Proof(proof) => proof.mini_block_hashes.last().copied().unwrap_or_default(),
            Self::Fraud(evidence) => evidence.job.last_hash(),
        }
    }

    /// How many mini-blocks the chunk spans.
    pub fn mini_blocks(&self) -> usize {
        match self {
            Self::Proof(proof) => proof.mini_block_hashes.len(),
            Self::Fraud(evidence) => evidence.job.mini_blocks.len(),
        }
    }
}

impl From<&ProverResult> for v1::ProverResult {
    fn from(result: &ProverResult) -> Self {
        Self {
            result: Some(match result {
                ProverResult::Proof(proof) => {
                    v1::prover_result::Result::Proof(proof.as_ref().into())
                }
                ProverResult::Fraud(evidence) => {
                    v1::prover_result::Result::Fraud(evidence.as_ref().into())
                }
            }),
        }
    }
}

impl TryFrom<&v1::ProverResult> for ProverResult {
    type Error = ConversionError;

    fn try_from(result: &v1::ProverResult) -> Result<Self, Self::Error> {
        match &result.result {
            Some(v1::prover_result::Result::Proof(proof)) => {
                Ok(ProverResult::Proof(Box::new(ChunkProof::try_from(proof)?)))
            }
            Some(v1::prover_result::Result::Fraud(evidence)) => Ok(ProverResult::Fraud(Box::new(
                FraudEvidence::try_from(evidence)?,
            ))),
            None => Err(missing("prover_result.result")),
        }
    }
}

/// A verifier's signed statement that a block is proven (see `FinalityAttestation` in
/// `prover.proto`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalityAttestation {
    /// The proven block.
    pub block_number: u64,
    /// Its hash.
    pub block_hash: B256,
    /// The tree root after it.
    pub state_root: B256,
    /// Fraud confirmed in the next chunk: `(chunk, reason)`.
    pub fraud: Option<(u64, String)>,
    /// Provers whose fraud evidence the verifier's own data refuted, which it ignores.
    pub false_accusations: Vec<FalseAccusation>,
    /// The verifier.
    pub verifier: Address,
    /// Its signature over [`finality_hash`].
    pub signature: Signature,
}

/// Fraud evidence that did not hold up on a verifier's own data (see
/// [`crate::judge_fraud`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalseAccusation {
    /// The accusing prover.
    pub prover: Address,
    /// The chunk it accused.
    pub chunk: u64,
    /// Why the evidence does not hold up.
    pub reason: String,
}

/// The hash a verifier signs.
pub fn finality_hash(chain_id: u64, attestation: &FinalityAttestation) -> B256 {
    let mut data = Vec::with_capacity(160);
    data.extend_from_slice(b"verity.finality.v1");
    data.extend_from_slice(&chain_id.to_be_bytes());
    data.extend_from_slice(&attestation.block_number.to_be_bytes());
    data.extend_from_slice(attestation.block_hash.as_slice());
    data.extend_from_slice(attestation.state_root.as_slice());
    match &attestation.fraud {
        Some((chunk, reason)) => {
            data.push(1);
            data.extend_from_slice(&chunk.to_be_bytes());
            data.extend_from_slice(keccak256(reason.as_bytes()).as_slice());
        }
        None => data.push(0),
    }
    // Appended only when present: an attestation without accusations hashes as before.
    if !attestation.false_accusations.is_empty() {
        data.push(2);
        data.extend_from_slice(&(attestation.false_accusations.len() as u64).to_be_bytes());
        for accusation in &attestation.false_accusations {
            data.extend_from_slice(accusation.prover.as_slice());
            data.extend_from_slice(&accusation.chunk.to_be_bytes());
            data.extend_from_slice(keccak256(accusation.reason.as_bytes()).as_slice());
        }
    }
    keccak256(data)
}

impl From<&FinalityAttestation> for v1::FinalityAttestation {
    fn from(a: &FinalityAttestation) -> Self {
        let (fraud_chunk, fraud_reason) = a.fraud.clone().unwrap_or_default();
        Self {
            block_number: a.block_number,
            block_hash: a.block_hash.to_vec(),
            state_root: a.state_root.to_vec(),
            fraud: a.fraud.is_some(),
            fraud_chunk,
            fraud_reason,
            verifier: a.verifier.to_vec(),
            signature: a.signature.as_bytes().to_vec(),
            false_accusations: a
                .false_accusations
                .iter()
                .map(|f| v1::FalseAccusation {
                    prover: f.prover.to_vec(),
                    chunk: f.chunk,
                    reason: f.reason.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<&v1::FinalityAttestation> for FinalityAttestation {
    type Error = ConversionError;

    fn try_from(a: &v1::FinalityAttestation) -> Result<Self, Self::Error> {
        Ok(Self {
            block_number: a.block_number,
            block_hash: b256_from(&a.block_hash, "finality_attestation.block_hash")?,
            state_root: b256_from(&a.state_root, "finality_attestation.state_root")?,
            fraud: a.fraud.then(|| (a.fraud_chunk, a.fraud_reason.clone())),
            false_accusations: a
                .false_accusations
                .iter()
                .map(|f| {
                    Ok(FalseAccusation {
                        prover: address_from(&f.prover, "false_accusation.prover")?,
                        chunk: f.chunk,
                        reason: f.reason.clone(),
                    })
                })
                .collect::<Result<_, ConversionError>>()?,
            verifier: address_from(&a.verifier, "finality_attestation.verifier")?,
            signature: signature_from(&a.signature, "finality_attestation.signature")?,
        })
    }
}
