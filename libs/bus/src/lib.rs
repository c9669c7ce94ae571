//! Verity's NATS JetStream layout and codecs.
//!
//! The chain stream `VERITY_CHAIN` holds every mini-block and block in order on one subject.
//! Each message is a prost-encoded `verity.v1.ChainEvent`; its JetStream sequence number equals
//! the event's `seq`. The active sequencer guarantees that with two headers on every publish:
//! `Nats-Msg-Id` = the event hash (a re-publish after a crash is recognised as a duplicate) and
//! `Nats-Expected-Last-Sequence` = `seq - 1` (nothing can land out of order or twice at one
//! position, so two sequencers can never both extend the chain at one position). Consumers
//! therefore resume from "the sequence after the last one I applied". [`lease`] is the
//! key-value entry that says which sequencer is active.

pub mod auth;
pub mod bootstrap;
pub mod follower;
pub mod lease;
pub mod proving;
pub mod server;

/// A NATS client connection.
pub use async_nats::Client as NatsClient;

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{
        self, Context,
        consumer::{self, DeliverPolicy},
        context::PublishErrorKind,
        stream::{self, Stream},
    },
};
use bytes::Bytes;
use prost::Message as _;
use verity_proto::v1;

/// Name of the chain stream.
pub const CHAIN_STREAM: &str = "VERITY_CHAIN";
/// Subject every chain event is published on.
pub const CHAIN_SUBJECT: &str = "verity.chain.events";
/// How long JetStream remembers message ids for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Errors talking to NATS or decoding what it holds.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A NATS credential file cannot be used.
    #[error("NATS credential {path}: {reason}")]
    Credential {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// What the sequencer lease is checked against cannot be loaded.
    #[error("cannot check the sequencer lease: {0}")]
    LeaseTrust(String),
    /// Could not connect to the NATS server.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// A JetStream API call failed.
    #[error("JetStream {operation} failed: {reason}")]
    JetStream {
        /// What was attempted.
        operation: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A message is larger than the NATS server accepts (its `max_payload`).
    #[error(
        "{what} of {size} bytes exceeds the NATS server's max_payload of {limit} bytes: raise \
         max_payload in the server's configuration (at most 64 MiB) or make chunks smaller \
         (the sequencer's --max-mini-block-txs)"
    )]
    TooLarge {
        /// What was published.
        what: &'static str,
        /// Its payload size.
        size: usize,
        /// The server's limit.
        limit: usize,
    },
    /// The stream's last sequence was not `seq - 1`: someone else published at this position.
    #[error("chain stream is at sequence {actual:?}, expected {expected} before publishing")]
    WrongLastSequence {
        /// The sequence the publish expected to follow.
        expected: u64,
        /// What the stream holds, when it could be read.
        actual: Option<u64>,
    },
    /// The stream's leader holds the event's message id as being stored and refuses it again
    /// (JetStream error 10158, "duplicate message id is in process"). After a leader change
    /// the new leader can hold such an entry for the whole de-duplication window, so the
    /// event is published again under another id ([`publish_event`]'s `attempt`); the
    /// compare-and-set still stores it at most once.
    #[error("the chain stream holds event {seq}'s message id as in process (JetStream 10158)")]
    IdInProcess {
        /// The event's sequence.
        seq: u64,
    },
    /// A message does not decode as a chain event.
    #[error("message {seq} is not a valid chain event: {reason}")]
    Decode {
        /// Stream sequence of the message.
        seq: u64,
        /// The decode error.
        reason: String,
    },
}

fn js_error(operation: &'static str, error: impl std::fmt::Display) -> BusError {
    BusError::JetStream {
        operation,
        reason: error.to_string(),
    }
}

/// A stream or consumer could not be opened or made. Services' credentials may not make them,
/// so the reason says where they come from.
pub(crate) fn create_error(operation: &'static str, error: impl std::fmt::Display) -> BusError {
    BusError::JetStream {
        operation,
        reason: format!(
            "{error} (services may open the bus's streams and job consumers but not make them: \
             `verity bus init` makes them with the admin credential; the devnet does at start)"
        ),
    }
}

/// Applies `edit` to `stream`'s configuration as it was read and, when that changed anything,
/// sends the update (the admin's and the bus initialisation's work: services may not).
pub(crate) async fn reconfigure(
    js: &Context,
    stream: &Stream,
    operation: &'static str,
    edit: impl FnOnce(&mut stream::Config),
) -> Result<(), BusError> {
    let read = &stream.cached_info().config;
    let mut config = read.clone();
    edit(&mut config);
    if config != *read {
        js.update_stream(config)
            .await
            .map_err(|e| js_error(operation, e))?;
    }
    Ok(())
}

/// The NATS URL a service uses when told no other (the devnet and the tests start their own
/// server on a port of its own and pass it).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How a process reaches NATS: the flags every service on the bus shares, in one place so that
/// what a connection needs is added once for all of them.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsArgs {
    /// NATS server URL; several, comma-separated, for a cluster (the client tries each, and
    /// learns the others from whichever answers).
    #[arg(long = "nats-url", env = "VERITY_NATS_URL", default_value = DEFAULT_NATS_URL)]
    pub url: String,
    /// File holding this process's NATS nkey seed (`SU...`), for a server that authenticates
    /// its clients (the devnet's always does; ADR 0014). None: connect without credentials.
    #[arg(long = "nats-nkey-file", env = "VERITY_NATS_NKEY_FILE")]
    pub nkey_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) the NATS server's certificate must chain to. Given: the connection
    /// is TLS or nothing (a server that offers no TLS, or shows another CA's certificate or one
    /// not naming the URL's host, is refused). None: whatever the server asks for.
    #[arg(long = "nats-tls-ca", env = "VERITY_NATS_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl NatsArgs {
    /// A server at `url`, reached without credentials or a pinned CA.
    pub fn plain(url: &str) -> Self {
        Self {
            url: url.to_string(),
            nkey_file: None,
            tls_ca: None,
        }
    }

    /// The servers of `--nats-url`, one per comma-separated entry.
    pub fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Connects as `name` with this process's credential (see [`connect`]); a failure names
    /// the flag to fix.
    pub async fn connect(&self, name: &str) -> Result<(async_nats::Client, Context), BusError> {
        self.connect_inner(name)
            .await
            .map_err(|error| match error {
                BusError::Connect { url, reason } => BusError::Connect {
                    url,
                    reason: format!(
                        "{reason} (flags --nats-url / VERITY_NATS_URL, --nats-nkey-file / VERITY_NATS_NKEY_FILE, --nats-tls-ca / VERITY_NATS_TLS_CA)"
                    ),
                },
                BusError::Credential { path, reason } => BusError::Credential {
                    path,
                    reason: format!(
                        "{reason} (flags --nats-nkey-file / VERITY_NATS_NKEY_FILE, --nats-tls-ca / VERITY_NATS_TLS_CA)"
                    ),
                },
                other => other,
            })
    }

    async fn connect_inner(&self, name: &str) -> Result<(async_nats::Client, Context), BusError> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(path) = &self.nkey_file {
            let nkey = auth::read_nkey(path)?;
            options = options
                .custom_inbox_prefix(auth::inbox_prefix(&nkey.public))
                .nkey(nkey.seed);
        }
        if let Some(ca) = &self.tls_ca {
            options = options
                .require_tls(true)
                .tls_client_config(auth::tls_client_config(ca)?);
        }
        let client = options
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(self.urls())
            .await
            .map_err(|e| BusError::Connect {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        let context = jetstream::new(client.clone());
        Ok((client, context))
    }
}

/// Connects to NATS with a client name and no credential, and returns the client and its
/// JetStream context.
pub async fn connect(url: &str, name: &str) -> Result<(async_nats::Client, Context), BusError> {
    NatsArgs::plain(url).connect_inner(name).await
}

/// Returns the chain stream, creating it if missing (file storage, nothing ever expires: it is
/// the chain's history, and no client may purge it or delete an event).
pub async fn ensure_chain_stream(js: &Context) -> Result<Stream, BusError> {
    chain_stream(js, 1).await
}

/// [`ensure_chain_stream`], making it with `replicas` copies when it is missing (the bus's
/// initialisation: a stream made at its final size, not scaled up after, ADR 0016).
pub(crate) async fn chain_stream(js: &Context, replicas: usize) -> Result<Stream, BusError> {
    js.get_or_create_stream(stream::Config {
        name: CHAIN_STREAM.to_string(),
        subjects: vec![CHAIN_SUBJECT.to_string()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: DUPLICATE_WINDOW,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        deny_purge: true,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| create_error("open chain stream", e))
}

/// The sequence of the last event in the chain stream (0 when empty).
pub async fn last_chain_seq(stream: &mut Stream) -> Result<u64, BusError> {
    let info = stream
        .info()
        .await
        .map_err(|e| js_error("stream info", e))?;
    Ok(info.state.last_sequence)
}

/// The chain event the stream holds at `seq`.
pub async fn chain_event_at(stream: &Stream, seq: u64) -> Result<v1::ChainEvent, BusError> {
    let message = stream
        .get_raw_message(seq)
        .await
        .map_err(|e| js_error("read chain event", e))?;
    decode_event(seq, &message.payload)
}

/// An ordered, ephemeral consumer of the chain stream from `from_seq` on, for every follower of
/// the chain (each keeps its own position in its own storage and starts a new one from there).
/// The server names it at random and deletes it when idle; no service may make consumers on
/// any other stream ([`follower`]).
pub async fn ordered_chain_consumer(
    stream: &Stream,
    from_seq: u64,
) -> Result<consumer::Consumer<consumer::pull::OrderedConfig>, BusError> {
    stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: if from_seq <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: from_seq,
                }
            },
            ..Default::default()
        })
        .await
        .map_err(|e| js_error("create ordered consumer", e))
}

/// The hash identifying an encoded chain event (its mini-block's, block's or handover's), used
/// as its message id.
pub fn event_hash(event: &v1::ChainEvent) -> Vec<u8> {
    match &event.event {
        Some(v1::chain_event::Event::MiniBlock(m)) => m.hash.clone(),
        Some(v1::chain_event::Event::Block(b)) => b.hash.clone(),
        Some(v1::chain_event::Event::Handover(h)) => h.hash.clone(),
        None => Vec::new(),
    }
}

/// Encodes a chain event for the stream.
pub fn encode_event(event: &v1::ChainEvent) -> Bytes {
    Bytes::from(event.encode_to_vec())
}

/// Decodes a chain event read from the stream at `seq`, checking that its own `seq` matches.
pub fn decode_event(seq: u64, payload: &[u8]) -> Result<v1::ChainEvent, BusError> {
    let event = v1::ChainEvent::decode(payload).map_err(|e| BusError::Decode {
        seq,
        reason: e.to_string(),
    })?;
    if event.seq != seq {
        return Err(BusError::Decode {
            seq,
            reason: format!("carries seq {} at stream position {seq}", event.seq),
        });
    }
    Ok(event)
}

/// The message id of an event: its hash in hex.
pub fn message_id(hash: &[u8]) -> String {
    let mut id = String::with_capacity(2 + hash.len() * 2);
    id.push_str("0x");
    for byte in hash {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The message id of an event's `attempt`-th publication under a fresh id (0: its hash, as
/// always; see [`BusError::IdInProcess`]).
pub fn event_message_id(hash: &[u8], attempt: u32) -> String {
    let id = message_id(hash);
    if attempt == 0 {
        id
    } else {
        format!("{id}.{attempt}")
    }
}

/// Sends one chain event, conditioned on the stream's last sequence being `event.seq - 1` and
/// de-duplicated by the event hash ([`event_message_id`] of `attempt`). Returns the future of
/// the server's acknowledgement, so callers can pipeline many publishes and await acks in
/// order.
pub async fn publish_event(
    js: &Context,
    event: &v1::ChainEvent,
    hash: &[u8],
    attempt: u32,
    headers: HeaderMap,
) -> Result<jetstream::context::PublishAckFuture, BusError> {
    let message = jetstream::message::PublishMessage::build()
        .payload(encode_event(event))
        .headers(headers)
        .message_id(event_message_id(hash, attempt))
        .expected_last_sequence(event.seq.saturating_sub(1));
    js.send_publish(CHAIN_SUBJECT, message)
        .await
        .map_err(|e| js_error("publish", e))
}

/// Whether a publish was refused because its message id is still being stored (10158).
fn id_in_process(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| {
            api.error_code() == jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT
        })
}

/// Awaits a publish acknowledgement for the event at `seq`.
///
/// Returns `Ok(true)` when stored, `Ok(false)` when JetStream recognised a duplicate.
pub async fn await_ack(
    ack: jetstream::context::PublishAckFuture,
    seq: u64,
) -> Result<bool, BusError> {
    match ack.await {
        // A duplicate must name where the first copy is: a server that calls a message a
        // duplicate of one it never stored (nats-server before 2.11 could, after a leader
        // change: nats-server#6486) would otherwise have it counted as published.
        Ok(ack) if ack.duplicate && ack.sequence == seq => Ok(false),
        Ok(ack) if ack.duplicate => Err(js_error(
            "publish ack",
            format!(
                "event {seq} was called a duplicate of stream message {}, not stored",
                ack.sequence
            ),
        )),
        Ok(ack) if ack.sequence == seq => Ok(true),
        Ok(ack) => Err(BusError::WrongLastSequence {
            expected: seq.saturating_sub(1),
            actual: Some(ack.sequence.saturating_sub(1)),
        }),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
            Err(BusError::WrongLastSequence {
                expected: seq.saturating_sub(1),
                actual: None,
            })
        }
        Err(e) if id_in_process(&e) => Err(BusError::IdInProcess { seq }),
        Err(e) => Err(js_error("publish ack", e)),
    }
}
