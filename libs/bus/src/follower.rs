//! Reading a stream in order without a consumer.
//!
//! Only the chain stream may have consumers made by the services (ADR 0014): a consumer's
//! configuration is the creator's to choose, and a push consumer delivers to any subject it
//! names, whatever its creator may publish (nats-server issue 8274). One made on the finality
//! stream with `verity.chain.events` as its deliver subject would append attestations to the
//! chain, and every replica would stop at the undecodable event. A consumer of the chain
//! stream cannot deliver into the chain stream itself (the server refuses the cycle), and what
//! it can deliver elsewhere is chain events, which every reader of those subjects checks and
//! skips. So the proofs, finality and key-value streams are read here message by message with
//! JetStream's message-get API (`next_by_subj` from a sequence, so gaps left by limits are
//! stepped over), polling while nothing new is stored.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::stream::{RawMessageErrorKind, Stream},
};
use bytes::Bytes;

use crate::{BusError, js_error};

/// How long a follower waits before asking again when it has read everything stored.
pub const IDLE_POLL: Duration = Duration::from_millis(50);

/// One stored message.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its stream sequence.
    pub seq: u64,
    /// Its headers, if any.
    pub headers: HeaderMap,
    /// Its payload.
    pub payload: Bytes,
}

/// Reads the messages of a stream on `subject` (a filter, `>` for all) from a sequence on.
#[derive(Debug)]
pub struct Follower {
    stream: Stream,
    subject: String,
    next: u64,
    idle: Duration,
}

impl Follower {
    /// A follower of `stream`'s messages on `subject` whose first is the first stored at or
    /// after `next_seq`.
    pub fn new(stream: Stream, subject: impl Into<String>, next_seq: u64) -> Self {
        Self {
            stream,
            subject: subject.into(),
            next: next_seq.max(1),
            idle: IDLE_POLL,
        }
    }

    /// Waits `idle` (instead of [`IDLE_POLL`]) before asking again when nothing is new.
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The next message stored, if there is one now.
    pub async fn try_next(&mut self) -> Result<Option<Stored>, BusError> {
        let read = self
            .stream
            .raw_message_builder()
            .sequence(self.next)
            .next_by_subject(self.subject.clone())
            .send()
            .await;
        match read {
            Ok(message) => {
                self.next = message.sequence + 1;
                Ok(Some(Stored {
                    seq: message.sequence,
                    headers: message.headers,
                    payload: message.payload,
                }))
            }
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(js_error("read stream", error)),
        }
    }

    /// The next message, waiting until one is stored. Cancel-safe: dropped before it returns,
    /// it reads the same message next time.
    pub async fn next(&mut self) -> Result<Stored, BusError> {
        loop {
            if let Some(message) = self.try_next().await? {
                return Ok(message);
            }
            tokio::time::sleep(self.idle).await;
        }
    }
}
