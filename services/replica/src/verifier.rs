//! Role `verifier`: advances `safe` only over chunks whose proofs verify.
//!
//! The replica applies and stores the chain like any replica (it keeps the events too). This
//! task walks the stored chain in order from its checkpoint, with the state-tree root the last
//! verified chunk ended at:
//!
//! - a mini-block needs a proof from `VERITY_PROOFS` for its number that passes
//!   [`verity_chunk::check_claim`] against the verifier's *own* copy of the mini-block, starting
//!   at its root, attested by a registered prover; the halo2 proofs of every chunk that is ready
//!   are then checked in one batch ([`verity_chunk::verify_proofs`]). A refused proof is logged
//!   with its reason and dropped; another prover's proof may still come.
//! - a block whose mini-blocks are all verified becomes the verifier's `safe` block, and the
//!   verifier signs and publishes a [`FinalityAttestation`] for it on `VERITY_FINALITY`.
//! - fraud evidence for the chunk it is waiting on is confirmed by re-executing that one chunk
//!   ([`verity_chunk::check_job`]) from its job, whose witness is tree-proven against the
//!   verifier's own root. Confirmed fraud halts verification for good: the alarm is stored,
//!   logged, exported (`verity_verifier_fraud_alarm`), and attested, and `safe` stays where it
//!   was.
//!
//! Progress (next event, root, safe block, proofs-stream position) is stored in MDBX after each
//! step, so a restart resumes where it stopped.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use alloy_primitives::{Address, B256};
use anyhow::Context as _;
use async_nats::jetstream::Context;
use bytes::Bytes;
use prost::Message as _;

use verity_chunk::{
    Judgement, Statement,
    wire::{self, ChunkProof, FalseAccusation, FinalityAttestation, FraudEvidence, ProverResult},
};
use verity_circuits::{KeyRing, Params, Shape};
use verity_primitives::{ChainEvent, ChainEventKind, MiniBlock, SigningKey, signing};
use verity_proto::v1;
use verity_server::{Backoff, CancellationToken};
use verity_storage::Database;

/// Meta keys of the verifier's progress.
pub mod meta {
    /// Next chain event to examine.
    pub const NEXT_SEQ: &str = "verifier_next_seq";
    /// Tree root after the last verified chunk.
    pub const ROOT: &str = "verifier_root";
    /// Last block this verifier found safe.
    pub const SAFE_BLOCK: &str = "verifier_safe_block";
    /// First `VERITY_PROOFS` message still needed.
    pub const PROOFS_SEQ: &str = "verifier_proofs_seq";
    /// Next chunk (mini-block number) to verify.
    pub const NEXT_CHUNK: &str = "verifier_next_chunk";
    /// Confirmed fraud: `chunk(u64 BE) ++ reason`.
    pub const FRAUD: &str = "verifier_fraud";
    /// Provers caught in a false accusation: length-delimited `FalseAccusation` messages.
    pub const FALSE_ACCUSATIONS: &str = "verifier_false_accusations";
}

/// What a verifier checks against.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Chain id (signed into attestations).
    pub chain_id: u64,
    /// Block gas limit (re-executing fraud evidence).
    pub gas_limit: u64,
    /// The circuit shape provers use.
    pub shape: Shape,
    /// The provers' larger segment shapes, in steps per proof.
    pub larger_segments: Vec<usize>,
    /// The KZG parameters provers use.
    pub params: Arc<Params>,
    /// Registered prover addresses.
    pub provers: Vec<Address>,
    /// Agreeing proofs from distinct registered provers a chunk needs (R).
    pub proof_quorum: usize,
    /// This verifier's attestation key.
    pub key: SigningKey,
    /// The tree root of genesis.
    pub genesis_root: B256,
}

#[derive(Debug, Clone)]
struct Progress {
    next_seq: u64,
    next_chunk: u64,
    root: B256,
    safe: u64,
    proofs_seq: u64,
    fraud: Option<(u64, String)>,
    /// Provers whose fraud evidence this verifier's own data refuted: their results are ignored.
    accused: Vec<FalseAccusation>,
}

fn encode_accusations(accused: &[FalseAccusation]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for accusation in accused {
        let wire = v1::FalseAccusation {
            prover: accusation.prover.to_vec(),
            chunk: accusation.chunk,
            reason: accusation.reason.clone(),
        };
        // Writing to a Vec cannot fail.
        let _ = wire.encode_length_delimited(&mut bytes);
    }
    bytes
}

fn decode_accusations(mut bytes: &[u8]) -> anyhow::Result<Vec<FalseAccusation>> {
    let mut accused = Vec::new();
    while !bytes.is_empty() {
        let wire = v1::FalseAccusation::decode_length_delimited(&mut bytes)?;
        accused.push(FalseAccusation {
            prover: Address::try_from(wire.prover.as_slice())?,
            chunk: wire.chunk,
            reason: wire.reason,
        });
    }
    Ok(accused)
}

fn load(db: &Database, genesis_root: B256) -> anyhow::Result<Progress> {
    let read = db.read()?;
    let root = read
        .meta(meta::ROOT)?
        .and_then(|b| B256::try_from(b.as_slice()).ok())
        .unwrap_or(genesis_root);
    let fraud = read.meta(meta::FRAUD)?.and_then(|b| {
        let (chunk, reason) = b.split_at_checked(8)?;
        Some((
            u64::from_be_bytes(chunk.try_into().ok()?),
            String::from_utf8_lossy(reason).into_owned(),
        ))
    });
    Ok(Progress {
        next_seq: read.meta_u64(meta::NEXT_SEQ)?.unwrap_or(1),
        next_chunk: read.meta_u64(meta::NEXT_CHUNK)?.unwrap_or(0),
        root,
        safe: read.meta_u64(meta::SAFE_BLOCK)?.unwrap_or(0),
        proofs_seq: read.meta_u64(meta::PROOFS_SEQ)?.unwrap_or(1),
        fraud,
        accused: match read.meta(meta::FALSE_ACCUSATIONS)? {
            Some(bytes) => decode_accusations(&bytes).context("stored false accusations")?,
            None => Vec::new(),
        },
    })
}

fn save(db: &Database, progress: &Progress) -> anyhow::Result<()> {
    let mut write = db.write()?;
    write.set_meta_u64(meta::NEXT_SEQ, progress.next_seq)?;
    write.set_meta_u64(meta::NEXT_CHUNK, progress.next_chunk)?;
    write.set_meta(meta::ROOT, progress.root.as_slice())?;
    write.set_meta_u64(meta::SAFE_BLOCK, progress.safe)?;
    write.set_meta_u64(meta::PROOFS_SEQ, progress.proofs_seq)?;
    write.set_meta(
        meta::FALSE_ACCUSATIONS,
        &encode_accusations(&progress.accused),
    )?;
    if let Some((chunk, reason)) = &progress.fraud {
        let mut bytes = chunk.to_be_bytes().to_vec();
        bytes.extend_from_slice(reason.as_bytes());
        write.set_meta(meta::FRAUD, &bytes)?;
    }
    write.commit()?;
    Ok(())
}

/// Runs the verifier until `stop`.
pub async fn run(db: Database, js: Context, settings: Settings, stop: CancellationToken) {
    let shape = settings.shape;
    tracing::info!(?shape, provers = ?settings.provers, "verifier: generating verifying keys");
    let keys = tokio::select! {
        keys = tokio::task::spawn_blocking({
            let params = settings.params.clone();
            let larger = settings.larger_segments.clone();
            move || KeyRing::generate_with_larger(shape, &larger, &params)
        }) => match keys {
            Ok(Ok(keys)) => Arc::new(keys),
            Ok(Err(e)) => return tracing::error!(error = %e, "verifier: cannot generate keys"),
            Err(e) => return tracing::error!(error = %e, "verifier: keygen panicked"),
        },
        _ = stop.cancelled() => return,
    };
    tracing::info!(k = keys.main().k(), elapsed = ?keys.main().generated_in(), "verifier: keys ready");
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !stop.is_cancelled() {
        match run_once(&db, &js, &settings, &keys, &stop).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "verifier interrupted; retrying"
                );
                backoff.wait(&stop).await;
            }
        }
    }
}

/// One result from the proofs stream, with its position there.
struct Received {
    stream_seq: u64,
    result: ProverResult,
}

async fn run_once(
    db: &Database,
    js: &Context,
    settings: &Settings,
    keys: &Arc<KeyRing>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    // The alarm series exist from the start, at 0 until something is confirmed (a fraud
    // confirmed earlier is reported again just below).
    metrics::gauge!("verity_verifier_fraud_alarm").set(0.0);
    metrics::counter!("verity_verifier_false_accusations_total").increment(0);
    let mut progress = {
        let db = db.clone();
        let root = settings.genesis_root;
        tokio::task::spawn_blocking(move || load(&db, root)).await??
    };
    if progress.fraud.is_some() {
        report_fraud(&progress, "verifier halted: fraud was confirmed earlier");
        stop.cancelled().await;
        return Ok(());
    }
    metrics::gauge!("verity_verifier_safe_block").set(progress.safe as f64);
    let (_, proofs) = verity_bus::proving::ensure_proving_streams(js).await?;
    verity_bus::proving::open_finality_stream(js).await?;
    let mut reader = verity_bus::proving::reader(proofs, progress.proofs_seq);
    let mut buffer: BTreeMap<u64, Vec<Received>> = BTreeMap::new();
    let mut last_stream_seq = progress.proofs_seq.saturating_sub(1);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tracing::info!(next_seq = progress.next_seq, safe = progress.safe, root = %progress.root, "verifier following proofs");
    loop {
        tokio::select! {
            next = reader.next() => {
                let message = next?;
                let stream_seq = message.seq;
                last_stream_seq = stream_seq;
                match v1::ProverResult::decode(message.payload.as_ref())
                    .map_err(|e| e.to_string())
                    .and_then(|w| ProverResult::try_from(&w).map_err(|e| e.to_string()))
                {
                    Ok(result) => {
                        let chunk = result.chunk();
                        if chunk < progress.next_chunk {
                            // Proven twice (a redelivered job, a second prover): harmless.
                            metrics::counter!("verity_verifier_duplicate_results_total").increment(1);
                            tracing::debug!(chunk, "verifier: result for a chunk already verified");
                        } else {
                            buffer.entry(chunk).or_default().push(Received { stream_seq, result });
                        }
                    }
                    Err(reason) => {
                        metrics::counter!("verity_verifier_rejected_total", "reason" => "undecodable").increment(1);
                        tracing::warn!(stream_seq, reason, "verifier: undecodable prover result ignored");
                    }
                }
            }
            _ = tick.tick() => {
                advance(db, js, settings, keys, &mut progress, &mut buffer, last_stream_seq).await?;
                if progress.fraud.is_some() {
                    stop.cancelled().await;
                    return Ok(());
                }
            }
            _ = stop.cancelled() => return Ok(()),
        }
    }
}

/// One tentative step of the walk.
enum Step {
    /// A chunk with the R agreeing claims of distinct provers that passed the cheap checks.
    Chunk { seq: u64, claims: Vec<Claim> },
    /// A block boundary.
    Block { seq: u64, number: u64, hash: B256 },
    /// A sequencer handover (nothing to prove).
    Handover { seq: u64 },
}

#[allow(clippy::too_many_arguments)]
async fn advance(
    db: &Database,
    js: &Context,
    settings: &Settings,
    keys: &Arc<KeyRing>,
    progress: &mut Progress,
    buffer: &mut BTreeMap<u64, Vec<Received>>,
    last_stream_seq: u64,
) -> anyhow::Result<()> {
    let events = {
        let db = db.clone();
        let from = progress.next_seq;
        tokio::task::spawn_blocking(move || db.read()?.events_from(from, 256)).await??
    };
    let mut decoded = Vec::with_capacity(events.len());
    for wire_event in events {
        // Stored events were checked (signature, epoch, links) when applied.
        let event = ChainEvent::try_from(&wire_event).context("stored event")?;
        decoded.push((wire_event.seq, event.kind));
    }
    let accused_before = progress.accused.len();
    let mut steps = Vec::new();
    let mut root = progress.root;
    let mut fraud = None;
    let mut at = 0;
    while let Some((seq, kind)) = decoded.get(at) {
        let seq = *seq;
        match kind {
            ChainEventKind::Handover(_) => {
                steps.push(Step::Handover { seq });
                at += 1;
            }
            ChainEventKind::Block(block) => {
                steps.push(Step::Block {
                    seq,
                    number: block.number(),
                    hash: block.hash,
                });
                at += 1;
            }
            ChainEventKind::MiniBlock(mini) => {
                // A chunk starts here and may span the mini-blocks after it, up to the end of
                // its EVM block; the run is complete once the block's seal is stored.
                let results = buffer.get_mut(&mini.number);
                let wanted = results.as_ref().map_or(1, |r| {
                    r.iter().map(|r| r.result.mini_blocks()).max().unwrap_or(1)
                });
                let run: Vec<MiniBlock> = decoded[at..]
                    .iter()
                    .map_while(|(_, kind)| match kind {
                        ChainEventKind::MiniBlock(m) => Some(m.as_ref().clone()),
                        ChainEventKind::Block(_) | ChainEventKind::Handover(_) => None,
                    })
                    .take(wanted)
                    .collect();
                // A witness closes a chunk at a block seal and at a handover.
                let complete = run.len() == wanted
                    || matches!(
                        decoded.get(at + run.len()),
                        Some((_, ChainEventKind::Block(_) | ChainEventKind::Handover(_)))
                    );
                let stored_hash = |number: u64| {
                    db.read()
                        .ok()
                        .and_then(|read| read.block_hash(number).ok().flatten())
                };
                // Fraud evidence is judged only from a verified root: `root` moves ahead with
                // each proof picked in this walk before its halo2 batch has run.
                let settled = !steps.iter().any(|s| matches!(s, Step::Chunk { .. }));
                match pick(
                    settings,
                    &run,
                    complete,
                    (root, settled, &stored_hash),
                    results,
                    &mut progress.accused,
                ) {
                    Pick::Proofs(claims) => {
                        let Some((_, proof)) = claims.first() else {
                            break;
                        };
                        let covered = proof.mini_block_hashes.len();
                        root = proof.post_root;
                        steps.push(Step::Chunk {
                            seq: decoded[at + covered - 1].0,
                            claims,
                        });
                        at += covered;
                    }
                    Pick::Fraud(chunk, reason) => {
                        fraud = Some((seq, chunk, reason));
                        break;
                    }
                    Pick::Wait => break,
                }
            }
        }
    }
    // The halo2 proofs of every ready chunk (each of its R claims), in one batch.
    let claims: Vec<(Statement, ChunkProof)> = steps
        .iter()
        .flat_map(|s| match s {
            Step::Chunk { claims, .. } => claims
                .iter()
                .map(|(statement, proof)| (statement.clone(), proof.as_ref().clone()))
                .collect(),
            Step::Block { .. } | Step::Handover { .. } => Vec::new(),
        })
        .collect();
    let verdicts = if claims.is_empty() {
        Vec::new()
    } else {
        let keys = keys.clone();
        let started = std::time::Instant::now();
        let verdicts = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&Statement, &ChunkProof)> = claims.iter().map(|(s, p)| (s, p)).collect();
            verity_chunk::verify_proofs(&keys, &refs)
                .into_iter()
                .map(|v| v.map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        })
        .await?;
        metrics::histogram!("verity_verifier_batch_seconds")
            .record(started.elapsed().as_secs_f64());
        verdicts
    };
    let mut verdicts = verdicts.into_iter();
    let mut new_safe = None;
    for step in steps {
        match step {
            Step::Block { seq, number, hash } => {
                progress.next_seq = seq + 1;
                progress.safe = number;
                new_safe = Some((number, hash));
            }
            Step::Handover { seq } => progress.next_seq = seq + 1,
            Step::Chunk { seq, claims } => {
                // Verified only if every one of its R claims verifies.
                let mut refused = false;
                for (_, proof) in &claims {
                    match verdicts.next() {
                        Some(Ok(())) => {}
                        Some(Err(reason)) => {
                            reject(buffer, proof, &reason);
                            refused = true;
                        }
                        None => refused = true,
                    }
                }
                let Some((_, proof)) = claims.first().filter(|_| !refused) else {
                    break;
                };
                progress.next_seq = seq + 1;
                progress.root = proof.post_root;
                progress.next_chunk = proof.chunk + proof.mini_block_hashes.len() as u64;
                buffer.remove(&proof.chunk);
                metrics::counter!("verity_verifier_chunks_verified_total").increment(1);
            }
        }
    }
    if let Some((seq, chunk, reason)) = fraud
        && progress.next_seq == seq
    {
        progress.fraud = Some((chunk, reason));
    }
    // Keep the proofs stream position at the oldest result still buffered.
    progress.proofs_seq = buffer
        .values()
        .flatten()
        .map(|r| r.stream_seq)
        .min()
        .unwrap_or(last_stream_seq + 1);
    {
        let db = db.clone();
        let snapshot = progress.clone();
        tokio::task::spawn_blocking(move || save(&db, &snapshot)).await??;
    }
    if let Some((number, hash)) = new_safe {
        metrics::gauge!("verity_verifier_safe_block").set(number as f64);
        tracing::debug!(block = number, root = %progress.root, "verifier: block safe");
        attest(js, settings, number, hash, progress, None).await?;
    }
    let accused_now = progress.accused.len() > accused_before;
    if progress.fraud.is_some() || (accused_now && new_safe.is_none()) {
        // Say it at once, at the block this verifier stands at.
        let hash = {
            let db = db.clone();
            let safe = progress.safe;
            tokio::task::spawn_blocking(move || db.read()?.block_by_number(safe))
                .await??
                .map(|b| b.hash)
                .unwrap_or_default()
        };
        attest(
            js,
            settings,
            progress.safe,
            hash,
            progress,
            progress.fraud.clone(),
        )
        .await?;
    }
    report_fraud(
        progress,
        "FRAUD CONFIRMED: a chunk does not do what its transactions say; `safe` stays",
    );
    Ok(())
}

/// Logs and counts the confirmed fraud in `progress`, if any.
fn report_fraud(progress: &Progress, message: &str) {
    if let Some((chunk, reason)) = &progress.fraud {
        metrics::gauge!("verity_verifier_fraud_alarm").set(1.0);
        tracing::error!(chunk, reason, safe = progress.safe, "{message}");
    }
}

fn reject(buffer: &mut BTreeMap<u64, Vec<Received>>, proof: &ChunkProof, reason: &str) {
    metrics::counter!("verity_verifier_rejected_total", "reason" => "proof").increment(1);
    tracing::warn!(chunk = proof.chunk, prover = %proof.prover, reason, "verifier: proof refused");
    if let Some(results) = buffer.get_mut(&proof.chunk) {
        results.retain(|r| !matches!(&r.result, ProverResult::Proof(p) if p.as_ref() == proof));
    }
}

/// A proof that passed the cheap checks, with the public inputs it must verify against.
type Claim = (Statement, Box<ChunkProof>);

enum Pick {
    /// R agreeing claims from distinct provers.
    Proofs(Vec<Claim>),
    /// Fraud confirmed in this chunk, with what the verifier itself found.
    Fraud(u64, String),
    Wait,
}

/// The first R agreeing proofs of distinct provers for the chunk starting at `run[0]` that pass
/// the cheap checks (R: `settings.proof_quorum`), dropping (and logging) results that do not;
/// confirmed fraud wins over any number of proofs. `run` holds the
/// verifier's mini-blocks from the chunk's first on (as many as the longest result names, or
/// fewer); `complete` says no more will come for this chunk (the block's seal follows, or the
/// run is as long as asked), so a result naming more mini-blocks than `run` holds is refused
/// rather than kept for later. Results of an `accused` prover are dropped; fraud evidence its
/// own data refutes puts its prover there. `(root, settled, block_hash)`: the root before the
/// chunk, whether it is verified (fraud evidence waits until it is), and the hashes of the blocks
/// this replica stored.
fn pick(
    settings: &Settings,
    run: &[MiniBlock],
    complete: bool,
    (root, settled, block_hash): (B256, bool, &dyn Fn(u64) -> Option<B256>),
    results: Option<&mut Vec<Received>>,
    accused: &mut Vec<FalseAccusation>,
) -> Pick {
    let (Some(results), Some(first)) = (results, run.first()) else {
        return Pick::Wait;
    };
    // Claims that passed the cheap checks, in groups that agree (same mini-blocks, same
    // post-root), one claim per prover: a proof that agrees with nobody cannot hold the others
    // up.
    let mut groups: Vec<Vec<Claim>> = Vec::new();
    let mut confirmed = None;
    let mut unjudged = false;
    let mut keep = Vec::new();
    // Fraud evidence first: a prover caught lying in it has its proofs ignored in this pass too.
    let mut drained: Vec<Received> = std::mem::take(results);
    drained.sort_by_key(|r| matches!(r.result, ProverResult::Proof(_)));
    for received in drained {
        let prover = match &received.result {
            ProverResult::Proof(proof) => proof.prover,
            ProverResult::Fraud(evidence) => evidence.prover,
        };
        if accused.iter().any(|a| a.prover == prover) {
            metrics::counter!("verity_verifier_rejected_total", "reason" => "accused_prover")
                .increment(1);
            tracing::debug!(chunk = first.number, %prover, "verifier: result of a prover caught in a false accusation ignored");
            continue;
        }
        if received.result.mini_blocks() > run.len() && !complete {
            keep.push(received);
            continue;
        }
        match &received.result {
            // Evidence waits for a verified root; only a registered prover's, signed by it,
            // holds the chunk back meanwhile (anyone's junk would otherwise slow every pass).
            ProverResult::Fraud(evidence) if !settled => {
                if settings.provers.contains(&evidence.prover)
                    && signing::verify(
                        &wire::fraud_hash(settings.chain_id, evidence),
                        &evidence.signature,
                        evidence.prover,
                    )
                    .is_ok()
                {
                    unjudged = true;
                    keep.push(received);
                }
            }
            ProverResult::Fraud(evidence) => match judge(settings, run, root, block_hash, evidence)
            {
                Ok(Judgement::Confirmed { reason }) => {
                    if confirmed.is_none() {
                        confirmed = Some((evidence.job.chunk, reason));
                    }
                    keep.push(received);
                }
                Ok(Judgement::FalseAccusation { reason }) => {
                    metrics::counter!("verity_verifier_false_accusations_total").increment(1);
                    tracing::error!(
                        chunk = first.number,
                        prover = %evidence.prover,
                        reason,
                        "FALSE ACCUSATION: fraud evidence refuted by this verifier's own data; the prover's results are ignored from now on"
                    );
                    accused.push(FalseAccusation {
                        prover: evidence.prover,
                        chunk: first.number,
                        reason,
                    });
                }
                Ok(Judgement::Unfounded { reason }) | Err(reason) => {
                    metrics::counter!("verity_verifier_rejected_total", "reason" => "fraud_evidence")
                        .increment(1);
                    tracing::warn!(chunk = first.number, prover = %evidence.prover, reason, "verifier: fraud evidence dropped");
                }
            },
            ProverResult::Proof(proof) => {
                match verity_chunk::check_claim(
                    settings.chain_id,
                    settings.shape,
                    &settings.provers,
                    root,
                    run,
                    proof,
                ) {
                    Ok(statement) => {
                        let agrees = |group: &&mut Vec<Claim>| {
                            group.first().is_some_and(|(_, p)| {
                                p.mini_block_hashes == proof.mini_block_hashes
                                    && p.post_root == proof.post_root
                            })
                        };
                        // One claim per prover in a group (a second from the same one waits,
                        // unused; it may still join another group).
                        match groups.iter_mut().find(agrees) {
                            Some(group) if group.iter().any(|(_, p)| p.prover == proof.prover) => {}
                            Some(group) => group.push((statement, proof.clone())),
                            None => groups.push(vec![(statement, proof.clone())]),
                        }
                        keep.push(received);
                    }
                    Err(reason) => {
                        metrics::counter!("verity_verifier_rejected_total", "reason" => "claim")
                            .increment(1);
                        tracing::warn!(chunk = first.number, prover = %proof.prover, reason = %reason, "verifier: proof refused");
                    }
                }
            }
        }
    }
    *results = keep;
    // Confirmed fraud wins over any number of proofs; evidence not judged yet (the chunk before
    // is not verified) is waited for, not passed over.
    let quorum = settings.proof_quorum.max(1);
    match confirmed {
        Some((chunk, reason)) => Pick::Fraud(chunk, reason),
        None if unjudged => Pick::Wait,
        None => match groups.into_iter().find(|g| g.len() >= quorum) {
            Some(mut group) => {
                group.truncate(quorum);
                Pick::Proofs(group)
            }
            None => Pick::Wait,
        },
    }
}

/// Judges fraud evidence from a registered prover, signed by it, against this verifier's own
/// mini-blocks and root ([`verity_chunk::judge_fraud`]). An error: not attributable to a
/// registered prover (nobody to accuse).
fn judge(
    settings: &Settings,
    run: &[MiniBlock],
    root: B256,
    block_hash: &dyn Fn(u64) -> Option<B256>,
    evidence: &FraudEvidence,
) -> Result<Judgement, String> {
    if !settings.provers.contains(&evidence.prover) {
        return Err(format!(
            "signed by {}, not a registered prover",
            evidence.prover
        ));
    }
    signing::verify(
        &wire::fraud_hash(settings.chain_id, evidence),
        &evidence.signature,
        evidence.prover,
    )
    .map_err(|e| e.to_string())?;
    Ok(verity_chunk::judge_fraud(
        evidence,
        run,
        root,
        block_hash,
        settings.chain_id,
        settings.gas_limit,
    ))
}

async fn attest(
    js: &Context,
    settings: &Settings,
    block_number: u64,
    block_hash: B256,
    progress: &Progress,
    fraud: Option<(u64, String)>,
) -> anyhow::Result<()> {
    let mut attestation = FinalityAttestation {
        block_number,
        block_hash,
        state_root: progress.root,
        fraud,
        false_accusations: progress.accused.clone(),
        verifier: settings.key.address(),
        signature: signing::UNSIGNED,
    };
    attestation.signature = settings
        .key
        .sign(&wire::finality_hash(settings.chain_id, &attestation));
    verity_bus::proving::publish_attestation(
        js,
        settings.key.address().as_slice(),
        block_number,
        attestation.fraud.is_some(),
        attestation.false_accusations.len(),
        Bytes::from(v1::FinalityAttestation::from(&attestation).encode_to_vec()),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod pick_tests {
    //! [`pick`]'s rules on claims that pass the cheap checks: chunks of mini-blocks that write
    //! nothing, so a claim is one segment ending at its pre-root, and no halo2 proof is involved
    //! (those are verified after the pick).
    #![allow(clippy::unwrap_used)]

    use super::*;
    use verity_chunk::ChunkJob;
    use verity_primitives::StateDiff;

    const CHAIN_ID: u64 = 31337;
    const ROOT: B256 = B256::repeat_byte(0x11);

    fn settings(provers: &[&SigningKey], quorum: usize) -> Settings {
        Settings {
            chain_id: CHAIN_ID,
            gas_limit: 30_000_000,
            shape: Shape::DEFAULT,
            larger_segments: Vec::new(),
            params: Arc::new(Params::setup_insecure(4)),
            provers: provers.iter().map(|k| k.address()).collect(),
            proof_quorum: quorum,
            key: SigningKey::random(),
            genesis_root: ROOT,
        }
    }

    /// Mini-blocks 4 and 5 of block 1, writing nothing.
    fn run() -> Vec<MiniBlock> {
        let sequencer = SigningKey::random();
        (4..6)
            .map(|number| verity_testkit::chain::empty_mini_block(number, 0, &sequencer))
            .collect()
    }

    /// `prover`'s signed proof of the first `count` mini-blocks of `run`.
    fn proof(prover: &SigningKey, run: &[MiniBlock], count: usize) -> Received {
        let mut proof = ChunkProof {
            chunk: run[0].number,
            mini_block_hashes: run[..count].iter().map(|m| m.hash).collect(),
            pre_root: ROOT,
            post_root: ROOT,
            entries: vec![],
            accounts_before: BTreeMap::new(),
            shape: Shape::DEFAULT,
            // One segment, ending where it started (its halo2 proof is checked after the pick).
            segments: vec![verity_chunk::wire::Segment {
                post_root: ROOT,
                steps: 0,
                shape: Shape::DEFAULT,
                proof: vec![],
            }],
            prover: prover.address(),
            signature: verity_primitives::UNSIGNED,
            proving_ms: 0,
        };
        proof.signature = prover.sign(&wire::attestation_hash(CHAIN_ID, &proof));
        Received {
            stream_seq: 1,
            result: ProverResult::Proof(Box::new(proof)),
        }
    }

    /// `prover`'s fraud evidence against the chunk, signed by `signer`.
    fn evidence(prover: &SigningKey, signer: &SigningKey, run: &[MiniBlock]) -> Received {
        let mut evidence = FraudEvidence {
            job: ChunkJob {
                chunk: run[0].number,
                mini_blocks: run.to_vec(),
                mini_block_seqs: vec![],
                block_hash_seqs: vec![],
                epoch_seqs: vec![],
                pre_root: ROOT,
                post_root: ROOT,
                witness: Default::default(),
                pre_proofs: vec![],
            },
            reexecuted: StateDiff::default(),
            reason: "made up".into(),
            prover: prover.address(),
            signature: verity_primitives::UNSIGNED,
        };
        evidence.signature = signer.sign(&wire::fraud_hash(CHAIN_ID, &evidence));
        Received {
            stream_seq: 2,
            result: ProverResult::Fraud(Box::new(evidence)),
        }
    }

    /// The provers whose claims [`pick`] chose, or `None` when it waits.
    fn picked(
        settings: &Settings,
        run: &[MiniBlock],
        settled: bool,
        results: Vec<Received>,
        accused: &mut Vec<FalseAccusation>,
    ) -> Option<Vec<Address>> {
        let mut results = results;
        match pick(
            settings,
            run,
            true,
            (ROOT, settled, &|_| None),
            Some(&mut results),
            accused,
        ) {
            Pick::Proofs(claims) => Some(claims.iter().map(|(_, p)| p.prover).collect()),
            Pick::Wait => None,
            Pick::Fraud(chunk, reason) => panic!("fraud in {chunk}: {reason}"),
        }
    }

    #[test]
    fn r_agreeing_proofs_must_come_from_r_distinct_provers() {
        let (a, b) = (SigningKey::random(), SigningKey::random());
        let settings = settings(&[&a, &b], 2);
        let run = run();
        // One prover's proof twice is one claim.
        let twice = vec![proof(&a, &run, 2), proof(&a, &run, 2)];
        assert_eq!(picked(&settings, &run, true, twice, &mut vec![]), None);
        let both = vec![proof(&a, &run, 2), proof(&a, &run, 2), proof(&b, &run, 2)];
        assert_eq!(
            picked(&settings, &run, true, both, &mut vec![]),
            Some(vec![a.address(), b.address()])
        );
    }

    /// The assumption stated, not hidden: at R = 1 one registered prover's claim is enough, so
    /// a dishonest one alone decides the chunk (its halo2 proof of a published but wrong diff
    /// verifies: the circuit proves the tree transition, not the execution).
    #[test]
    fn at_r_1_one_registered_prover_decides_alone() {
        let (a, b) = (SigningKey::random(), SigningKey::random());
        let run = run();
        assert_eq!(
            picked(
                &settings(&[&a, &b], 1),
                &run,
                true,
                vec![proof(&a, &run, 2)],
                &mut vec![]
            ),
            Some(vec![a.address()])
        );
        assert_eq!(
            picked(
                &settings(&[&a, &b], 2),
                &run,
                true,
                vec![proof(&a, &run, 2)],
                &mut vec![]
            ),
            None
        );
    }

    #[test]
    fn a_proof_that_agrees_with_nobody_does_not_hold_the_others_up() {
        let (a, b, c) = (
            SigningKey::random(),
            SigningKey::random(),
            SigningKey::random(),
        );
        let settings = settings(&[&a, &b, &c], 2);
        let run = run();
        // B claims a chunk of two mini-blocks, A of one: they do not agree.
        let apart = vec![proof(&a, &run, 1), proof(&b, &run, 2)];
        assert_eq!(picked(&settings, &run, true, apart, &mut vec![]), None);
        let with_c = vec![proof(&b, &run, 2), proof(&a, &run, 1), proof(&c, &run, 1)];
        assert_eq!(
            picked(&settings, &run, true, with_c, &mut vec![]),
            Some(vec![a.address(), c.address()])
        );
    }

    #[test]
    fn a_registered_provers_signed_evidence_holds_the_chunk_until_judged() {
        let (a, b, stranger) = (
            SigningKey::random(),
            SigningKey::random(),
            SigningKey::random(),
        );
        let settings = settings(&[&a, &b], 1);
        let run = run();
        // The root before the chunk is not verified yet: the evidence cannot be judged.
        let held = vec![proof(&a, &run, 2), evidence(&b, &b, &run)];
        assert_eq!(picked(&settings, &run, false, held, &mut vec![]), None);
        // Evidence signed by another key than its prover's, or by an unregistered prover,
        // holds nothing.
        for junk in [
            evidence(&b, &stranger, &run),
            evidence(&stranger, &stranger, &run),
        ] {
            let results = vec![proof(&a, &run, 2), junk];
            assert_eq!(
                picked(&settings, &run, false, results, &mut vec![]),
                Some(vec![a.address()])
            );
        }
    }

    #[test]
    fn a_prover_caught_in_a_false_accusation_is_not_counted() {
        let (a, b) = (SigningKey::random(), SigningKey::random());
        let settings = settings(&[&a, &b], 1);
        let run = run();
        let mut accused = vec![FalseAccusation {
            prover: a.address(),
            chunk: 0,
            reason: "refuted".into(),
        }];
        assert_eq!(
            picked(
                &settings,
                &run,
                true,
                vec![proof(&a, &run, 2)],
                &mut accused
            ),
            None
        );
        assert_eq!(
            picked(
                &settings,
                &run,
                true,
                vec![proof(&a, &run, 2), proof(&b, &run, 2)],
                &mut accused
            ),
            Some(vec![b.address()])
        );
    }
}
