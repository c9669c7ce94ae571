//! The proving streams.
//!
//! - `VERITY_JOBS` (subject [`JOBS_SUBJECT`]): a **work queue**. The witness replica publishes
//!   one `verity.v1.ChunkJob` per chunk, with `Nats-Msg-Id` = `job-<chunk>-<mini-block hash>` so
//!   a re-publish after a crash is dropped as a duplicate. Prover workers share the durable pull
//!   consumer [`PROVERS_CONSUMER`]: each job goes to one worker, which acknowledges it only
//!   after its result is stored on `VERITY_PROOFS`. A worker that dies leaves the job
//!   unacknowledged; JetStream delivers it again after the ack wait. After
//!   [`JobQueue::max_deliver`] deliveries a worker moves the job to the dead-letter stream
//!   instead of trying again. Work-queue retention deletes a job once it is acknowledged.
//! - `VERITY_JOBS_DEAD` (subject [`DEAD_SUBJECT`]): jobs no worker could handle, with the reason
//!   in header [`REASON_HEADER`], kept for operators.
//! - `VERITY_PROOFS` (subject [`RESULTS_SUBJECT`]): `verity.v1.ProverResult` messages, a proof
//!   or fraud evidence per chunk, kept (limits retention) so verifier replicas can start late and
//!   catch up. `Nats-Msg-Id` = `result-<chunk>-<mini-block hash>-<prover>`: a job proven twice
//!   by one prover inside the duplicate window is stored once, and verifiers ignore any further
//!   result for a chunk they have already accepted.

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

/// Work-queue stream of chunk jobs.
pub const JOBS_STREAM: &str = "VERITY_JOBS";
/// Subject jobs are published on.
pub const JOBS_SUBJECT: &str = "verity.jobs.chunk";
/// Dead-letter stream.
pub const DEAD_STREAM: &str = "VERITY_JOBS_DEAD";
/// Subject of dead-lettered jobs.
pub const DEAD_SUBJECT: &str = "verity.jobs.dead";
/// Header carrying why a job was dead-lettered.
pub const REASON_HEADER: &str = "Verity-Reason";
/// Stream of prover results.
pub const PROOFS_STREAM: &str = "VERITY_PROOFS";
/// Subject prover results are published on.
pub const RESULTS_SUBJECT: &str = "verity.proofs.results";
/// The durable consumer every prover worker shares.
pub const PROVERS_CONSUMER: &str = "provers";

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
    let jobs = js
        .get_or_create_stream(stream::Config {
            name: JOBS_STREAM.to_string(),
            subjects: vec![JOBS_SUBJECT.to_string()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error("create jobs stream", e))?;
    js.get_or_create_stream(stream::Config {
        name: DEAD_STREAM.to_string(),
        subjects: vec![DEAD_SUBJECT.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        ..Default::default()
    })
    .await
    .map_err(|e| js_error("create dead-letter stream", e))?;
    let proofs = js
        .get_or_create_stream(stream::Config {
            name: PROOFS_STREAM.to_string(),
            subjects: vec![RESULTS_SUBJECT.to_string()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error("create proofs stream", e))?;
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

/// Publishes a prover result and waits until JetStream stored it.
pub async fn publish_result(
    js: &Context,
    chunk: u64,
    mini_block_hash: &[u8],
    prover: &[u8],
    payload: Bytes,
    headers: HeaderMap,
) -> Result<(), BusError> {
    check_size(js, "a prover result", &payload)?;
    let id = format!(
        "result-{chunk}-{}-{}",
        message_id(mini_block_hash),
        message_id(prover)
    );
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload)
        .headers(headers)
        .message_id(id);
    js.send_publish(RESULTS_SUBJECT, message)
        .await
        .map_err(|e| js_error("publish result", e))?
        .await
        .map_err(|e| js_error("publish result ack", e))?;
    Ok(())
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

/// The shared durable consumer of the job queue (created on first use; every worker binds to
/// the same one, so JetStream hands each job to one of them).
pub async fn job_consumer(jobs: &Stream, queue: JobQueue) -> Result<PullConsumer, BusError> {
    jobs.get_or_create_consumer(
        PROVERS_CONSUMER,
        pull::Config {
            durable_name: Some(PROVERS_CONSUMER.to_string()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: queue.ack_wait,
            max_deliver: queue.max_deliver,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| js_error("create job consumer", e))
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

/// Creates (or brings to this configuration) the finality stream: verifiers' signed
/// attestations, so replicas can start late and count them. Only each verifier's newest
/// attestation is kept (one subject per verifier, one message per subject): a verifier's vote is
/// the newest block it attested, so the stream stays as large as the verifier set however long
/// the chain.
pub async fn ensure_finality_stream(js: &Context) -> Result<Stream, BusError> {
    js.create_or_update_stream(stream::Config {
        name: FINALITY_STREAM.to_string(),
        subjects: vec![format!("{FINALITY_SUBJECT}.*")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_messages_per_subject: 1,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| js_error("create finality stream", e))?;
    js.get_stream(FINALITY_STREAM)
        .await
        .map_err(|e| js_error("open finality stream", e))
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

/// A consumer of a stream for one reader from stream sequence `next_seq` (fresh each start).
pub async fn reader(
    stream: &Stream,
    durable: &str,
    next_seq: u64,
) -> Result<PullConsumer, BusError> {
    crate::fresh_consumer(stream, durable, next_seq).await
}
