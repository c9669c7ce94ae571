//! The proving streams.
//!
//! - `VERITY_CHUNK_JOBS` (subject [`JOBS_SUBJECT`]): every chunk job, kept for [`JOBS_MAX_AGE`]
//!   (limits retention, not a work queue). The witness replica publishes one
//!   `verity.v1.ChunkJob` per chunk, with `Nats-Msg-Id` = `job-<chunk>-<mini-block hash>` (a
//!   re-publish after a crash is dropped as a duplicate). Each registered prover (one attestation key: one worker, or a pool of
//!   workers sharing it) reads every job through a durable consumer of its own
//!   ([`job_consumer`]), and works on the chunks an [`Assignment`] gives it: the R provers
//!   ranked first by `keccak(chunk ‖ prover)` at once, the others once the chunk is older than
//!   their takeover deadline and `VERITY_PROOFS` holds fewer than R proofs for it from provers
//!   not caught lying, or one takeover period later if the chunk is still not `safe` (the
//!   prover decides, `verity_prover`). Nobody chooses the ranks, so one fast prover cannot take
//!   every job, and a prover that withholds one delays it by the takeover time (ADR 0013). Workers of one key share its consumer, so
//!   each job goes to one of them; a worker acknowledges a job only once its result is stored,
//!   and one that dies leaves it to be delivered again after the ack wait.
//! - `VERITY_JOBS_DEAD` (subject [`DEAD_SUBJECT`]): jobs no worker could handle, with the reason
//!   in header [`REASON_HEADER`], kept for operators.
//! - `VERITY_PROOFS` (subjects `verity.proofs.results.<chunk>.<proof|fraud>.<prover>`):
//!   `verity.v1.ProverResult` messages, a proof or fraud evidence per chunk and prover, kept
//!   (limits retention) so verifier replicas can start late and catch up, and so provers can
//!   count a chunk's proofs ([`proofs_of`]). `Nats-Msg-Id` = `result-<chunk>-<mini-block hash>-<prover>`: a job
//!   proven twice by one prover inside the duplicate window is stored once.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        Context,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        stream::{self, Stream},
    },
};
use bytes::Bytes;

use crate::{BusError, DUPLICATE_WINDOW, js_error, message_id};

/// Stream of chunk jobs. (`VERITY_JOBS`, the work queue of earlier releases, is no longer
/// used: a work queue gives each job to one prover.)
pub const JOBS_STREAM: &str = "VERITY_CHUNK_JOBS";
/// Subject jobs are published on.
pub const JOBS_SUBJECT: &str = "verity.jobs.chunks";
/// How long jobs are kept: a prover away longer than this leaves its chunks to the others.
pub const JOBS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Dead-letter stream.
pub const DEAD_STREAM: &str = "VERITY_JOBS_DEAD";
/// Subject of dead-lettered jobs.
pub const DEAD_SUBJECT: &str = "verity.jobs.dead";
/// Header carrying why a job was dead-lettered.
pub const REASON_HEADER: &str = "Verity-Reason";
/// Stream of prover results.
pub const PROOFS_STREAM: &str = "VERITY_PROOFS";
/// Prover results are published on this subject followed by `.<chunk>.<proof|fraud>.<prover>`
/// (earlier releases published on it alone; the stream keeps both).
pub const RESULTS_SUBJECT: &str = "verity.proofs.results";

/// How the job queue redelivers.
#[derive(Debug, Clone, Copy)]
pub struct JobQueue {
    /// How long a delivered job may stay unacknowledged before it goes to another worker.
    /// Workers extend it while they prove (`in progress` acks), so it bounds how long a dead
    /// worker holds a job, not how long proving may take.
    pub ack_wait: Duration,
    /// Deliveries before a job is dead-lettered.
    pub max_deliver: i64,
}

/// Which registered provers work on which chunk: the `quorum` (R) provers ranked first for a
/// chunk at once, each further one after its takeover deadline.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The registered provers' addresses.
    pub provers: Vec<[u8; 20]>,
    /// Agreeing results a chunk needs (R).
    pub quorum: usize,
    /// How long the prover ranked R + k waits, times k + 1, before taking a chunk over.
    pub takeover: Duration,
}

impl Assignment {
    /// `prover`'s rank for `chunk` (0 first), or `None` if it is not registered: the registered
    /// set ordered by `keccak256(chunk as 8 big-endian bytes ‖ address)`.
    pub fn rank(&self, chunk: u64, prover: &[u8; 20]) -> Option<usize> {
        let score = |address: &[u8; 20]| {
            let mut preimage = [0u8; 28];
            preimage[..8].copy_from_slice(&chunk.to_be_bytes());
            preimage[8..].copy_from_slice(address);
            alloy_primitives::keccak256(preimage)
        };
        let own = (score(prover), *prover);
        self.provers.contains(prover).then(|| {
            self.provers
                .iter()
                .filter(|other| (score(other), **other) < own)
                .count()
        })
    }

    /// How long after a job was published the prover of `rank` starts on it: at once for the
    /// first `quorum`, then one takeover period more for each rank after them.
    pub fn start_after(&self, rank: usize) -> Duration {
        let later = (rank + 1).saturating_sub(self.quorum.max(1));
        self.takeover * u32::try_from(later).unwrap_or(u32::MAX)
    }
}

impl Default for JobQueue {
    fn default() -> Self {
        Self {
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
        }
    }
}

/// Creates (or opens) the three proving streams.
pub async fn ensure_proving_streams(js: &Context) -> Result<(Stream, Stream), BusError> {
    proving_streams(js, 1, None).await
}

/// [`ensure_proving_streams`], making missing ones with `replicas` copies and, given, their
/// byte limits (dropping the oldest at them): made whole at once, not changed right after
/// (ADR 0016).
pub(crate) async fn proving_streams(
    js: &Context,
    replicas: usize,
    limits: Option<&crate::bootstrap::Limits>,
) -> Result<(Stream, Stream), BusError> {
    // At its limit a stream drops its oldest messages (`bootstrap::Limits`).
    let limited = |mut config: stream::Config, bytes: Option<i64>| {
        if let Some(bytes) = bytes {
            config.max_bytes = bytes;
            config.discard = stream::DiscardPolicy::Old;
        }
        config
    };
    let jobs = js
        .get_or_create_stream(limited(
            stream::Config {
                name: JOBS_STREAM.to_string(),
                subjects: vec![JOBS_SUBJECT.to_string()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: JOBS_MAX_AGE,
                duplicate_window: DUPLICATE_WINDOW,
                deny_delete: true,
                deny_purge: true,
                num_replicas: replicas,
                ..Default::default()
            },
            limits.map(|l| l.jobs_bytes),
        ))
        .await
        .map_err(|e| crate::create_error("open jobs stream", e))?;
    js.get_or_create_stream(limited(
        stream::Config {
            name: DEAD_STREAM.to_string(),
            subjects: vec![DEAD_SUBJECT.to_string()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            deny_delete: true,
            deny_purge: true,
            num_replicas: replicas,
            ..Default::default()
        },
        limits.map(|l| l.dead_bytes),
    ))
    .await
    .map_err(|e| crate::create_error("open dead-letter stream", e))?;
    let subjects = vec![RESULTS_SUBJECT.to_string(), format!("{RESULTS_SUBJECT}.>")];
    let proofs = js
        .get_or_create_stream(limited(
            stream::Config {
                name: PROOFS_STREAM.to_string(),
                subjects: subjects.clone(),
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                duplicate_window: DUPLICATE_WINDOW,
                deny_delete: true,
                deny_purge: true,
                num_replicas: replicas,
                ..Default::default()
            },
            limits.map(|l| l.proofs_bytes),
        ))
        .await
        .map_err(|e| crate::create_error("open proofs stream", e))?;
    // A stream created by an earlier release has only the first subject: add the per-chunk
    // ones, and change nothing else an operator may have set.
    crate::reconfigure(js, &proofs, "add subjects to the proofs stream", |config| {
        if !subjects.iter().all(|s| config.subjects.contains(s)) {
            config.subjects = subjects;
        }
    })
    .await?;
    Ok((jobs, proofs))
}

/// The message id of a chunk's job.
pub fn job_id(chunk: u64, mini_block_hash: &[u8]) -> String {
    format!("job-{chunk}-{}", message_id(mini_block_hash))
}

/// Refuses a payload the server would refuse, with the sizes (the client's own refusal does
/// not say them). Headers are small and not counted.
pub fn check_size(js: &Context, what: &'static str, payload: &Bytes) -> Result<(), BusError> {
    let limit = js.client().server_info().max_payload;
    if limit > 0 && payload.len() > limit {
        return Err(BusError::TooLarge {
            what,
            size: payload.len(),
            limit,
        });
    }
    Ok(())
}

/// Publishes a job and waits until JetStream stored it. Returns false for a duplicate.
pub async fn publish_job(
    js: &Context,
    chunk: u64,
    mini_block_hash: &[u8],
    payload: Bytes,
    headers: HeaderMap,
) -> Result<bool, BusError> {
    check_size(js, "a chunk job", &payload)?;
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .message_id(job_id(chunk, mini_block_hash));
    let ack = js
        .send_publish(JOBS_SUBJECT, message)
        .await
        .map_err(|e| js_error("publish job", e))?
        .await
        .map_err(|e| js_error("publish job ack", e))?;
    Ok(!ack.duplicate)
}

/// Publishes a prover result (fraud evidence when `fraud`, a proof otherwise) and waits until
/// JetStream stored it. No message id: JetStream drops a message whose id it saw in the last
/// two minutes *on any subject of the stream*, so another prover could publish first, on its own
/// subject, under this prover's id and have this result dropped. A result published twice (a
/// worker retrying) is stored twice; readers count one claim per prover.
pub async fn publish_result(
    js: &Context,
    (chunk, fraud): (u64, bool),
    prover: &[u8],
    payload: Bytes,
    headers: HeaderMap,
) -> Result<(), BusError> {
    check_size(js, "a prover result", &payload)?;
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload)
        .headers(headers);
    js.send_publish(result_subject(chunk, fraud, prover), message)
        .await
        .map_err(|e| js_error("publish result", e))?
        .await
        .map_err(|e| js_error("publish result ack", e))?;
    Ok(())
}

/// The subject of `prover`'s result for `chunk`: fraud evidence when `fraud`, else a proof.
pub fn result_subject(chunk: u64, fraud: bool, prover: &[u8]) -> String {
    let kind = if fraud { "fraud" } else { "proof" };
    format!("{RESULTS_SUBJECT}.{chunk}.{kind}.{}", message_id(prover))
}

/// The provers (as the hex of their address, the last token of [`result_subject`]) with a
/// proof of `chunk` on `VERITY_PROOFS`, from the stream's per-subject counts (no result is
/// read). These are claims only: a verifier checks each proof; a prover counts them to know
/// whether a chunk still needs it. Fraud evidence is not counted: a chunk someone calls
/// fraudulent still needs its other provers' verdicts (false evidence must not stop them).
pub async fn proofs_of(proofs: &Stream, chunk: u64) -> Result<Vec<String>, BusError> {
    use futures::TryStreamExt as _;
    let subjects: Vec<(String, usize)> = proofs
        .info_with_subjects(format!("{RESULTS_SUBJECT}.{chunk}.proof.*"))
        .await
        .map_err(|e| js_error("proofs stream subjects", e))?
        .try_collect()
        .await
        .map_err(|e| js_error("proofs stream subjects", e))?;
    let mut provers: Vec<String> = subjects
        .into_iter()
        .filter_map(|(subject, _)| subject.rsplit('.').next().map(str::to_owned))
        .collect();
    provers.sort();
    provers.dedup();
    Ok(provers)
}

/// Moves a job to the dead-letter stream with `reason`.
pub async fn dead_letter(js: &Context, payload: Bytes, reason: &str) -> Result<(), BusError> {
    let mut headers = HeaderMap::new();
    // Header values cannot hold line breaks.
    headers.insert(REASON_HEADER, reason.replace(['\r', '\n'], " ").as_str());
    js.publish_with_headers(DEAD_SUBJECT, headers, payload)
        .await
        .map_err(|e| js_error("publish dead letter", e))?
        .await
        .map_err(|e| js_error("publish dead letter ack", e))?;
    Ok(())
}

/// The name of the durable job consumer the workers of `prover`'s key share, unless they are
/// given one.
pub fn consumer_name(prover: &[u8]) -> String {
    format!("provers-{}", message_id(prover))
}

/// The configuration of job consumer `name`: every job, acknowledged one by one. Deliveries
/// are not bounded here: a worker dead-letters a job it was given `max_deliver` times, and a
/// takeover candidate hands a job back with a delay until its deadline.
pub fn job_consumer_config(name: &str, ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_string()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        // Jobs handed back until a takeover deadline stay pending; the server's default
        // limit (1,000) would then stop new jobs reaching this key at all.
        max_ack_pending: -1,
        ..Default::default()
    }
}

/// The durable consumer `name` of every job; the workers of one prover key bind to the same
/// one, so JetStream hands each job to one of them. The bus's initialisation makes it
/// ([`crate::bootstrap`]), since a prover's credential may not make consumers; against a
/// server without permissions (tests) it is made here when missing.
pub async fn job_consumer(
    jobs: &Stream,
    name: &str,
    queue: JobQueue,
) -> Result<PullConsumer, BusError> {
    jobs.get_or_create_consumer(name, job_consumer_config(name, queue.ack_wait))
        .await
        .map_err(|e| crate::create_error("job consumer", e))
}

/// Stream of verifiers' finality attestations.
pub const FINALITY_STREAM: &str = "VERITY_FINALITY";
/// Finality attestations are published on this subject followed by `.` and the verifier's
/// address (`verity.finality.attestations.0x…`).
pub const FINALITY_SUBJECT: &str = "verity.finality.attestations";

/// The subject of `verifier`'s attestations.
pub fn finality_subject(verifier: &[u8]) -> String {
    format!("{FINALITY_SUBJECT}.{}", message_id(verifier))
}

/// The finality stream: verifiers' signed attestations, so replicas can start late and count
/// them. Only each verifier's newest attestation is kept (one subject per verifier, one message
/// per subject): a verifier's vote is the newest block it attested, so the stream stays as large
/// as the verifier set however long the chain. No client may purge it or delete a message.
fn finality_config(replicas: usize) -> stream::Config {
    stream::Config {
        name: FINALITY_STREAM.to_string(),
        subjects: vec![format!("{FINALITY_SUBJECT}.*")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_messages_per_subject: 1,
        duplicate_window: DUPLICATE_WINDOW,
        deny_delete: true,
        deny_purge: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates the finality stream or brings it to this release's configuration: the verifier's,
/// which publishes on it.
pub async fn ensure_finality_stream(js: &Context) -> Result<Stream, BusError> {
    finality_stream(js, None).await
}

/// [`ensure_finality_stream`] with `replicas` copies (`None`: as many as it has, 1 when made).
pub(crate) async fn finality_stream(
    js: &Context,
    replicas: Option<usize>,
) -> Result<Stream, BusError> {
    let replicas = match replicas {
        Some(replicas) => replicas,
        None => match js.get_stream(FINALITY_STREAM).await {
            Ok(stream) => stream.cached_info().config.num_replicas.max(1),
            Err(_) => 1,
        },
    };
    js.create_or_update_stream(finality_config(replicas))
        .await
        .map_err(|e| js_error("create finality stream", e))?;
    js.get_stream(FINALITY_STREAM)
        .await
        .map_err(|e| js_error("open finality stream", e))
}

/// Opens the finality stream (creating it when missing) without changing its configuration:
/// for the roles that only read it (replicas counting votes, provers), so that they need no
/// right to rewrite it (ADR 0014).
pub async fn open_finality_stream(js: &Context) -> Result<Stream, BusError> {
    js.get_or_create_stream(finality_config(1))
        .await
        .map_err(|e| crate::create_error("open finality stream", e))
}

/// Publishes a finality attestation of `verifier` for `block` and waits until it is stored.
pub async fn publish_attestation(
    js: &Context,
    verifier: &[u8],
    block: u64,
    fraud: bool,
    accusations: usize,
    payload: Bytes,
) -> Result<(), BusError> {
    // What the attestation says besides the block is in its id, so that saying more about the
    // same block (fraud, another false accusation) is not taken for a duplicate.
    let id = format!(
        "finality-{}-{block}{}{}",
        message_id(verifier),
        if fraud { "-fraud" } else { "" },
        if accusations > 0 {
            format!("-accused-{accusations}")
        } else {
            String::new()
        }
    );
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload)
        .message_id(id);
    js.send_publish(finality_subject(verifier), message)
        .await
        .map_err(|e| js_error("publish attestation", e))?
        .await
        .map_err(|e| js_error("publish attestation ack", e))?;
    Ok(())
}

/// A reader of every message of `stream` (proofs, finality) from stream sequence `next_seq` on,
/// without a consumer ([`crate::follower`]).
pub fn reader(stream: Stream, next_seq: u64) -> crate::follower::Follower {
    crate::follower::Follower::new(stream, ">", next_seq)
}
