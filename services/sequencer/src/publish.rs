//! The active sequencer publishes its own chain onto JetStream.
//!
//! Every committed event is published with its hash as `Nats-Msg-Id` and `seq - 1` as the
//! expected last sequence: the stream is the one ordering point, and the process that decided an
//! event's contents is the one that places it, so two sequencers can never both extend the chain
//! at one position. A refused compare-and-set is not yet proof of a takeover: a message of
//! ours lost while the client moved to another NATS server (the stream's leader was lost) leaves
//! a gap the compare-and-set refuses too. So a refusal ends this round of publishing, and the
//! next one reads the stream's head again: only when that is not this sequencer's event has it
//! been deposed and must stop ([`PublishError::Deposed`]).
//!
//! Publishing starts after the stream's last event, which must be the local event at that
//! position (so a restart publishes what was committed but not yet published, and nothing
//! twice). Publishes are pipelined (`--max-in-flight`) and acknowledged in order.

use std::sync::Arc;

use async_nats::jetstream::{self, stream::Stream};
use tokio::sync::mpsc;
use verity_bus::BusError;
use verity_proto::v1;
use verity_server::CancellationToken;

use crate::SharedState;

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Another sequencer's events hold positions this one produced for.
    #[error("deposed: {0}")]
    Deposed(String),
    /// NATS or storage failed (retryable).
    #[error("{0}")]
    Transient(String),
    /// The stream's leader refused event `seq`'s message id as in process (retryable, under
    /// a fresh id: [`verity_bus::BusError::IdInProcess`]).
    #[error("the chain stream holds event {seq}'s message id as in process (JetStream 10158)")]
    IdInProcess {
        /// The event refused.
        seq: u64,
    },
}

impl From<BusError> for PublishError {
    fn from(error: BusError) -> Self {
        match error {
            // Checked against the stream's head when publishing resumes (module docs).
            BusError::WrongLastSequence { .. } => Self::Transient(format!(
                "the chain stream refused our event: {error}; reading its head again"
            )),
            BusError::IdInProcess { seq } => Self::IdInProcess { seq },
            other => Self::Transient(other.to_string()),
        }
    }
}

/// Checks that the stream ends inside the local chain, on the same event; returns the stream's
/// last sequence.
pub async fn check_stream_head(
    shared: &SharedState,
    stream: &mut Stream,
) -> Result<u64, PublishError> {
    let last = verity_bus::last_chain_seq(stream).await?;
    if last == 0 {
        return Ok(0);
    }
    let local_last = shared.head.borrow().last_seq;
    if last > local_last {
        return Err(PublishError::Deposed(format!(
            "the chain stream holds {last} events, this sequencer only {local_last}"
        )));
    }
    let theirs = match verity_bus::chain_event_at(stream, last).await {
        Ok(event) => event,
        // Not an event at all, or one claiming another position: nobody's chain but not ours.
        Err(error @ BusError::Decode { .. }) => {
            return Err(PublishError::Deposed(format!(
                "the chain stream's event {last} is not this sequencer's: {error}"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let db = shared.db.clone();
    let ours = tokio::task::spawn_blocking(move || db.read()?.events_from(last, 1))
        .await
        .map_err(|e| PublishError::Transient(e.to_string()))?
        .map_err(|e| PublishError::Transient(format!("storage: {e}")))?
        .into_iter()
        .next();
    if ours.as_ref().map(verity_bus::event_hash) != Some(verity_bus::event_hash(&theirs)) {
        return Err(PublishError::Deposed(format!(
            "the chain stream's event {last} is not this sequencer's"
        )));
    }
    Ok(last)
}

/// Publishes every event after the stream's last one, as it is committed, until `stop` is cancelled
/// (then waits for the acks in flight) or an error.
///
/// `fresh_id`: the event at this sequence goes out under the message id of this attempt
/// ([`verity_bus::event_message_id`]), after the stream refused its id as in process.
pub async fn publish(
    shared: Arc<SharedState>,
    js: &jetstream::Context,
    stream: &mut Stream,
    max_in_flight: usize,
    fresh_id: Option<(u64, u32)>,
    stop: &CancellationToken,
) -> Result<(), PublishError> {
    let last = check_stream_head(&shared, stream).await?;
    shared.set_published(last);
    metrics::gauge!("verity_sequencer_publish_last_seq").set(last as f64);
    let (tx, mut events) = mpsc::channel(1024);
    let reader = tokio::spawn({
        let shared = shared.clone();
        async move {
            if let Err(status) = crate::service::stream_events(shared, last + 1, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        }
    });
    tracing::info!(from_seq = last + 1, "publishing the chain");
    // Acks are awaited in order by their own task; the bounded channel is the in-flight window.
    let (acks, mut pending) =
        mpsc::channel::<(u64, jetstream::context::PublishAckFuture)>(max_in_flight.max(1));
    let mut settler = tokio::spawn({
        let shared = shared.clone();
        async move {
            while let Some((seq, ack)) = pending.recv().await {
                settle(seq, verity_bus::await_ack(ack, seq).await)?;
                shared.set_published(seq);
            }
            Ok::<(), PublishError>(())
        }
    });
    let mut settled = None;
    let result = loop {
        let next = tokio::select! {
            next = events.recv() => next,
            // A refusal is learnt as soon as its ack arrives, even with nothing more to send.
            done = &mut settler => {
                let done = done.map_err(|e| PublishError::Transient(e.to_string()));
                settled = Some(done.and_then(|r| r));
                break Ok(());
            }
            _ = stop.cancelled() => break Ok(()),
        };
        let event = match next {
            None => break Err(PublishError::Transient("event reader ended".into())),
            Some(Err(status)) => break Err(PublishError::Transient(status.to_string())),
            Some(Ok(event)) => event,
        };
        let hash = verity_bus::event_hash(&event);
        let span = tracing::info_span!("sequencer.publish", seq = event.seq);
        verity_telemetry::link_map_parent(&event.trace_context, &span);
        let mut headers = async_nats::HeaderMap::new();
        span.in_scope(|| verity_telemetry::inject_nats(&mut headers));
        let attempt = match fresh_id {
            Some((seq, attempt)) if seq == event.seq => attempt,
            _ => 0,
        };
        let ack = match verity_bus::publish_event(js, &event, &hash, attempt, headers).await {
            Ok(ack) => ack,
            Err(error) => break Err(error.into()),
        };
        if let Some(v1::chain_event::Event::MiniBlock(mini)) = &event.event {
            metrics::histogram!("verity_sequencer_publish_mini_block_age_seconds")
                .record(verity_telemetry::age_seconds(mini.timestamp_ms));
        }
        if acks.send((event.seq, ack)).await.is_err() {
            // The settler stopped on an error; it is collected below.
            break Ok(());
        }
    };
    reader.abort();
    drop(acks);
    let settled = match settled {
        Some(settled) => settled,
        None => settler
            .await
            .map_err(|e| PublishError::Transient(e.to_string()))
            .and_then(|r| r),
    };
    // A refusal outranks whatever stopped the loop.
    settled.and(result)
}

fn settle(seq: u64, ack: Result<bool, BusError>) -> Result<(), PublishError> {
    let stored = ack?;
    if stored {
        metrics::counter!("verity_sequencer_publish_events_total").increment(1);
    } else {
        metrics::counter!("verity_sequencer_publish_duplicates_total").increment(1);
        tracing::debug!(seq, "already published");
    }
    metrics::gauge!("verity_sequencer_publish_last_seq").set(seq as f64);
    Ok(())
}
