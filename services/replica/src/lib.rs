//! Verity replica: follows the chain on JetStream and applies each state diff to its own MDBX
//! state without executing transactions ([`apply`]); serves reads and calls over gRPC
//! ([`query`]).
//!
//! Roles `full` and `witness` ([`witness`]: the state tree and the proving jobs) are built.
//! Role `verifier` (proof verification, `safe` and `finalized`) is not built yet and is refused
//! at start-up.

pub mod apply;
pub mod query;
pub mod witness;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use alloy_primitives::Address;
use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument as _;
use verity_primitives::ChainSpec;
use verity_proto::v1;
use verity_server::ServerArgs;
use verity_storage::Database;
use verity_telemetry::TelemetryArgs;

use apply::{Applied, ApplyError};

/// Default gRPC port of a replica.
pub const DEFAULT_PORT: u16 = 7300;

/// What a replica does.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Applies diffs at once and serves reads.
    Full,
    /// Advances `safe` only on verified proofs (not built yet).
    Verifier,
    /// Also maintains the state tree and publishes a proving job per mini-block.
    Witness,
}

/// `verity-replica` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "verity-replica",
    version,
    about = "Verity replica: applies state diffs, serves reads"
)]
pub struct Config {
    /// The replica's role.
    #[arg(long, env = "VERITY_ROLE", value_enum, default_value = "full")]
    pub role: Role,
    /// Directory of the replica's MDBX database.
    #[arg(long, env = "VERITY_DATA_DIR", default_value = ".devnet/replica")]
    pub data_dir: PathBuf,
    /// Genesis JSON file (the same the sequencer uses).
    #[arg(long, env = "VERITY_GENESIS")]
    pub genesis: PathBuf,
    /// Address of the sequencer key whose signatures are accepted.
    #[arg(long, env = "VERITY_SEQUENCER_ADDRESS")]
    pub sequencer_address: Address,
    /// NATS server URL.
    #[arg(long, env = "VERITY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Name of the durable JetStream consumer (unique per replica).
    #[arg(long, env = "VERITY_CONSUMER_NAME", default_value = "replica-full")]
    pub consumer_name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
}

/// An opened replica.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    db: Database,
    spec: Arc<ChainSpec>,
    stream: async_nats::jetstream::stream::Stream,
    witness: Option<witness::Witness>,
}

impl Replica {
    /// Validates the configuration, opens the database (initialising genesis) and connects to
    /// NATS.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        if config.role == Role::Verifier {
            anyhow::bail!(
                "invalid --role verifier: not built yet (roles `full` and `witness` are); see issue 3"
            );
        }
        let spec = ChainSpec::load(&config.genesis).context("flag --genesis / VERITY_GENESIS")?;
        let data_dir = config.data_dir.clone();
        let init_spec = spec.clone();
        let db = tokio::task::spawn_blocking(move || -> anyhow::Result<Database> {
            let db = Database::open(&data_dir)
                .with_context(|| format!("cannot open --data-dir {}", data_dir.display()))?;
            apply::init_genesis(&db, &init_spec)?;
            Ok(db)
        })
        .await??;
        let (_client, js) = verity_bus::connect(&config.nats_url, &config.consumer_name)
            .await
            .context("flag --nats-url / VERITY_NATS_URL")?;
        let stream = verity_bus::ensure_chain_stream(&js).await?;
        let witness = match config.role {
            Role::Witness => Some(witness::Witness::new(js, &spec).await?),
            Role::Full | Role::Verifier => None,
        };
        Ok(Self {
            config,
            db,
            spec: Arc::new(spec),
            stream,
            witness,
        })
    }

    /// Applies the chain and serves reads until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = verity_server::bind(self.config.server.grpc_addr_or(DEFAULT_PORT)).await?;
        let addr = verity_server::local_addr(&listener);
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let follower = tokio::spawn(follow_chain(
            self.db.clone(),
            self.stream.clone(),
            self.config.consumer_name.clone(),
            self.config.sequencer_address,
            self.witness,
            stop_rx.clone(),
        ));
        let routes = tonic::service::Routes::new(
            v1::replica_server::ReplicaServer::new(query::QueryService::new(
                self.db.clone(),
                self.spec.clone(),
            ))
            .max_encoding_message_size(64 * 1024 * 1024),
        );
        verity_server::write_ready_file(
            self.config.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        tracing::info!(%addr, "replica serving");
        let mut stop = stop_rx;
        verity_server::serve_grpc(routes, &["verity.v1.Replica"], listener, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
        follower.await?;
        tracing::info!("replica stopped");
        Ok(())
    }
}

/// Follows the chain stream until `stop` is set. Transient NATS errors are retried; an invalid
/// event halts following (the replica keeps serving the last valid state and reports the alarm).
async fn follow_chain(
    db: Database,
    stream: async_nats::jetstream::stream::Stream,
    consumer_name: String,
    sequencer: Address,
    mut witness: Option<witness::Witness>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        match follow_once(
            &db,
            &stream,
            &consumer_name,
            sequencer,
            &mut witness,
            &mut stop,
        )
        .await
        {
            Ok(()) => break,
            Err(FollowError::Refused(error)) => {
                tracing::error!(%error, "chain refused: following halted at the last valid state");
                metrics::gauge!("verity_replica_halted").set(1.0);
                return;
            }
            Err(FollowError::Transient(error)) => {
                tracing::warn!(%error, ?backoff, "chain consumer interrupted; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

enum FollowError {
    Refused(ApplyError),
    Transient(anyhow::Error),
}

async fn follow_once(
    db: &Database,
    stream: &async_nats::jetstream::stream::Stream,
    consumer_name: &str,
    sequencer: Address,
    witness: &mut Option<witness::Witness>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), FollowError> {
    let transient = |e: anyhow::Error| FollowError::Transient(e);
    let last = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || apply::last_seq(&db))
            .await
            .map_err(|e| transient(e.into()))?
            .map_err(|e| transient(e.into()))?
    };
    if let Some(witness) = witness.as_mut() {
        witness.resume(db, last).await.map_err(transient)?;
    }
    let consumer = verity_bus::chain_consumer(stream, consumer_name, last + 1)
        .await
        .map_err(|e| transient(e.into()))?;
    let mut messages = consumer.messages().await.map_err(|e| transient(e.into()))?;
    tracing::info!(from_seq = last + 1, "following the chain");
    let mut expected = last + 1;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = stop.wait_for(|s| *s) => return Ok(()),
        };
        let message = match next {
            None => return Err(transient(anyhow::anyhow!("consumer ended"))),
            Some(Err(e)) => return Err(transient(e.into())),
            Some(Ok(message)) => message,
        };
        let seq = message
            .info()
            .map_err(|e| transient(anyhow::anyhow!("message info: {e}")))?
            .stream_sequence;
        if seq > expected {
            // A gap in delivery (a redelivery overtaken by newer messages): resubscribe from
            // the first missing event rather than refuse the chain.
            return Err(transient(anyhow::anyhow!(
                "delivery skipped from event {expected} to {seq}; resubscribing"
            )));
        }
        let event = match verity_bus::decode_event(seq, &message.payload) {
            Ok(event) => event,
            Err(e) => {
                return Err(FollowError::Refused(ApplyError::Invalid {
                    seq,
                    reason: e.to_string(),
                }));
            }
        };
        let span = tracing::info_span!("replica.apply", seq, kind = event_kind(&event));
        verity_telemetry::link_nats_parent(message.headers.as_ref(), &span);
        let (applied, job) = {
            let db = db.clone();
            let mut role = witness.take();
            let (applied, job, role) = tokio::task::spawn_blocking(move || match role.as_mut() {
                Some(w) => {
                    let (applied, job) = w.apply(&db, sequencer, &event);
                    (applied, job, role)
                }
                None => (apply::apply_event(&db, sequencer, &event, None), None, role),
            })
            .instrument(span.clone())
            .await
            .map_err(|e| transient(e.into()))?;
            *witness = role;
            (applied, job)
        };
        if let (Some(w), Some(job)) = (witness.as_ref(), job) {
            // The job is stored with the applied mini-block; publish it before acknowledging
            // the chain message (a failure here resumes by publishing the stored job).
            let mut headers = async_nats::HeaderMap::new();
            span.in_scope(|| verity_telemetry::inject_nats(&mut headers));
            w.publish(job, headers).await.map_err(transient)?;
        }
        match applied {
            Ok(Applied::Applied) => {
                expected = seq + 1;
                metrics::counter!("verity_replica_applied_events_total").increment(1);
                metrics::gauge!("verity_replica_last_seq").set(seq as f64);
            }
            Ok(Applied::AlreadyApplied) => {
                metrics::counter!("verity_replica_redelivered_events_total").increment(1);
            }
            Err(ApplyError::Storage(e)) => return Err(transient(e.into())),
            Err(refused) => return Err(FollowError::Refused(refused)),
        }
        message
            .ack()
            .await
            .map_err(|e| transient(anyhow::anyhow!("ack: {e}")))?;
    }
}

fn event_kind(event: &v1::ChainEvent) -> &'static str {
    match event.event {
        Some(v1::chain_event::Event::MiniBlock(_)) => "mini_block",
        Some(v1::chain_event::Event::Block(_)) => "block",
        None => "none",
    }
}
