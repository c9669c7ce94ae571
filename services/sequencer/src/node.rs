//! A sequencer node: standby until it may produce, then the active sequencer until it stops or
//! is deposed.
//!
//! **Standby.** The node follows the chain stream into its own database ([`crate::follow`]) and
//! watches the lease ([`verity_bus::lease`]). It may take over when the lease has not changed
//! for `--lease-ttl-ms` (or was released) and it has the authority to: its key is the
//! sequencer of the epoch in force (a restart), or it holds a governance appointment for its key
//! with an epoch above the one in force (`--appointments`).
//!
//! **Taking over.** It takes the lease by compare-and-set on the revision it last saw (two
//! standbys cannot both win), catches up with the stream, and, when it opens a new epoch,
//! publishes a [`Handover`] conditioned on the stream's last sequence. If the deposed sequencer
//! got an event in first, the handover's publish is refused; the node applies that event and
//! tries again at the new end. From the handover's position on, every consumer refuses the
//! deposed key.
//!
//! **Active.** The producer runs (on its own threads), the chain is published by
//! compare-and-set ([`crate::publish`]), and the lease is renewed every `--lease-renew-ms`,
//! each renewal conditioned on the previous one. The producer pauses whenever the last renewal
//! is older than half the lease's time to live. A refused renewal or a refused publish means
//! another sequencer took over: the node stops producing and exits with an error (it steps
//! down). On a planned stop it publishes everything it produced and releases the lease, so a
//! standby takes over at once.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_primitives::Address;
use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream::Stream};
use futures::{FutureExt as _, StreamExt};
use tokio::sync::watch;
use verity_bus::{
    BusError,
    lease::{self, Holder, LeaseError},
};
use verity_chain::{ChainError, Cursor};
use verity_kube::lease::{Fence, SequencerLease};
use verity_primitives::{
    ChainSpec, SigningKey,
    governance::{Handover, Sequencing, SignedAppointment},
};
use verity_proto::v1;
use verity_server::{Backoff, stopped};
use verity_storage::Database;

use crate::{
    Config, SharedState, follow,
    mempool::MempoolLimits,
    producer::{self, Head, Producer},
    publish::{self, PublishError},
};

/// Most chain events a follower applies in one MDBX transaction.
const APPLY_BATCH: usize = 256;

/// A message of an ordered chain consumer, decoded (an end or an error of the consumer is an
/// error: the caller resubscribes).
fn decode(
    message: Option<
        Result<async_nats::jetstream::Message, async_nats::jetstream::consumer::pull::OrderedError>,
    >,
) -> anyhow::Result<v1::ChainEvent> {
    let message = message
        .ok_or_else(|| anyhow::anyhow!("the chain consumer ended"))?
        .map_err(|e| anyhow::anyhow!("chain consumer: {e}"))?;
    let seq = message
        .info()
        .map_err(|e| anyhow::anyhow!("message info: {e}"))?
        .stream_sequence;
    Ok(verity_bus::decode_event(seq, &message.payload)?)
}

/// Attempts at placing a handover before giving the lease up again.
const HANDOVER_ATTEMPTS: usize = 20;

/// What lets this node produce.
#[derive(Debug, Clone)]
enum Authority {
    /// Its key is the sequencer of the epoch in force.
    Own,
    /// A governance appointment for its key, above the epoch in force.
    Appointed(SignedAppointment),
}

/// A sequencer node (see the module documentation).
#[derive(Debug)]
pub struct Node {
    pub(crate) shared: Arc<SharedState>,
    db: Database,
    spec: Arc<ChainSpec>,
    rules: Arc<Sequencing>,
    key: SigningKey,
    fee_recipient: Address,
    /// Appointments for this node's key: from `--appointments` and the published ones
    /// (subscribers learn of each one that arrives).
    appointments: watch::Sender<Vec<SignedAppointment>>,
    js: jetstream::Context,
    stream: Stream,
    lease: kv::Store,
    /// The Kubernetes Lease the active sequencer records itself in (`--k8s-lease`).
    k8s_lease: Option<SequencerLease>,
    head: Arc<watch::Sender<Head>>,
    #[cfg(feature = "fault-injection")]
    pub(crate) tamper: Option<TamperSlot>,
}

/// The tamper hook to install in the producer (test builds only).
#[cfg(feature = "fault-injection")]
#[derive(Clone)]
pub(crate) struct TamperSlot(pub(crate) producer::Tamper);

#[cfg(feature = "fault-injection")]
impl std::fmt::Debug for TamperSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TamperSlot")
    }
}

fn load_appointments(path: &Path, key: Address) -> anyhow::Result<Vec<SignedAppointment>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --appointments {}", path.display()))?;
    let all: Vec<SignedAppointment> = serde_json::from_str(&text).with_context(|| {
        format!(
            "--appointments {} is not a JSON array of signed appointments",
            path.display()
        )
    })?;
    let mine: Vec<SignedAppointment> = all
        .into_iter()
        .filter(|a| a.appointment.sequencer == key)
        .collect();
    if mine.is_empty() {
        tracing::warn!(path = %path.display(), %key, "no appointment in --appointments names this node's key");
    }
    Ok(mine)
}

/// The head a follower or producer reports, from a cursor.
fn head_of(cursor: &Cursor, spec: &ChainSpec) -> Head {
    Head {
        last_seq: cursor.last_seq,
        block_number: cursor.head.number() + 1,
        next_mini_block: cursor.next_mini,
        base_fee: spec.next_base_fee(&cursor.head.header),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("blocking task: {e}"))
}

impl Node {
    /// Loads genesis, key and appointments, opens the database and connects to NATS.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let spec = ChainSpec::load(&config.genesis).context("flag --genesis / VERITY_GENESIS")?;
        let key_text = std::fs::read_to_string(&config.key_file).with_context(|| {
            format!(
                "cannot read --key-file / VERITY_SEQUENCER_KEY_FILE {}",
                config.key_file.display()
            )
        })?;
        let key = SigningKey::from_hex(&key_text).with_context(|| {
            format!(
                "--key-file {} does not hold a hex secp256k1 private key",
                config.key_file.display()
            )
        })?;
        // A genesis that names no sequencer is sequenced by whoever runs it (a single node).
        let rules = spec
            .sequencing(spec.sequencer.is_none().then(|| key.address()))
            .context("flag --genesis")?;
        let appointments = match &config.appointments {
            Some(path) => load_appointments(path, key.address())?,
            None => Vec::new(),
        };
        let data_dir = config.data_dir.clone();
        let (db, recovered) = {
            let spec = spec.clone();
            let rules = rules.clone();
            blocking(move || -> anyhow::Result<_> {
                let db = Database::open(&data_dir)
                    .with_context(|| format!("cannot open --data-dir {}", data_dir.display()))?;
                producer::init_genesis(&db, &spec)?;
                let recovered = producer::recover(&db, &rules)?;
                Ok((db, recovered))
            })
            .await??
        };
        let cursor = Cursor::from(&recovered);
        let (head, head_rx) = watch::channel(head_of(&cursor, &spec));
        let limits = MempoolLimits {
            per_sender: config.mempool_per_sender,
            total: config.mempool_max_txs,
            total_bytes: config.mempool_max_bytes,
            ..MempoolLimits::default()
        };
        let shared = Arc::new(SharedState::new(db.clone(), spec.clone(), limits, head_rx));
        shared.set_active(false);
        let (_client, js) = config
            .nats
            .connect("verity-sequencer")
            .await
            .context("flag --nats-url / VERITY_NATS_URL")?;
        let stream = verity_bus::ensure_chain_stream(&js).await?;
        let lease = lease::lease_store(&js).await?;
        let k8s_lease = match &config.k8s_lease {
            Some(name) => Some(kubernetes_lease(config, name, spec.genesis_hash).await?),
            None => None,
        };
        tracing::info!(
            sequencer = %key.address(),
            chain_id = spec.chain_id(),
            epoch = cursor.epoch.number,
            epoch_sequencer = %cursor.epoch.sequencer,
            last_seq = cursor.last_seq,
            appointments = appointments.len(),
            "sequencer opened"
        );
        Ok(Self {
            shared,
            db,
            spec: Arc::new(spec),
            rules: Arc::new(rules),
            fee_recipient: config.fee_recipient.unwrap_or_else(|| key.address()),
            key,
            appointments: watch::Sender::new(appointments),
            js,
            stream,
            lease,
            k8s_lease,
            head: Arc::new(head),
            #[cfg(feature = "fault-injection")]
            tamper: None,
        })
    }

    /// What would let this node produce at `cursor`: its own epoch, or the lowest-epoch
    /// appointment above the epoch in force.
    fn authority(&self, cursor: &Cursor) -> Option<Authority> {
        if cursor.epoch.sequencer == self.key.address() {
            return Some(Authority::Own);
        }
        self.appointments
            .borrow()
            .iter()
            .filter(|a| a.appointment.epoch > cursor.epoch.number)
            .min_by_key(|a| a.appointment.epoch)
            .cloned()
            .map(Authority::Appointed)
    }

    /// Standby until it may take over, then active until `stop` or until deposed.
    pub async fn run(
        self,
        config: &Config,
        advertise: String,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut cursor = {
            let (db, rules) = (self.db.clone(), self.rules.clone());
            blocking(move || follow::cursor(&db, &rules)).await??
        };
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let watcher = tokio::spawn(watch_appointments(
            self.js.clone(),
            self.key.address(),
            self.appointments.clone(),
        ));
        let result = self
            .standby_then_active(config, advertise, &mut cursor, &mut backoff, stop)
            .await;
        watcher.abort();
        result
    }

    async fn standby_then_active(
        self,
        config: &Config,
        advertise: String,
        cursor: &mut Cursor,
        backoff: &mut Backoff,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut appointed = self.appointments.subscribe();
        loop {
            let authority = self.authority(cursor);
            let (follow_stop, follow_stop_rx) = watch::channel(false);
            let mut follower = tokio::spawn(follow_stream(
                self.db.clone(),
                self.rules.clone(),
                self.spec.clone(),
                cursor.clone(),
                self.stream.clone(),
                self.head.clone(),
                follow_stop_rx,
            ));
            // An appointment given explicitly (a first height) takes over at once, even from a
            // live sequencer: governance decided; the handover's place in the stream decides.
            let explicit =
                matches!(&authority, Some(Authority::Appointed(a)) if !a.appointment.is_standing());
            if authority.is_none() {
                tracing::info!(
                    epoch = cursor.epoch.number,
                    sequencer = %cursor.epoch.sequencer,
                    "standby without an appointment for this key: following only"
                );
            }
            let vacancy = tokio::select! {
                // The lease of this key and epoch is a previous run's of this node: no need to
                // wait for it to expire.
                vacancy = lease::wait_vacant(&self.lease, config.lease_ttl(), |holder| {
                    explicit
                        || (holder.sequencer == self.key.address()
                            && holder.epoch == cursor.epoch.number)
                }), if authority.is_some() => Some(Some(vacancy)),
                _ = appointed.changed() => Some(None),
                _ = stopped(&mut stop) => None,
                ended = &mut follower => {
                    // The follower only ends by itself on a refused or diverging event.
                    return Err(match ended {
                        Ok(Ok(_)) => anyhow::anyhow!("the chain follower stopped"),
                        Ok(Err(error)) => error,
                        Err(error) => anyhow::anyhow!("the chain follower panicked: {error}"),
                    });
                }
            };
            let _ = follow_stop.send(true);
            *cursor = follower
                .await
                .map_err(|e| anyhow::anyhow!("the chain follower panicked: {e}"))??;
            let Some(vacancy) = vacancy else {
                return Ok(());
            };
            // A new appointment: look again at what this node may do.
            let Some(vacancy) = vacancy else {
                continue;
            };
            let vacancy = match vacancy {
                Ok(vacancy) => vacancy,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the sequencer lease; retrying");
                    backoff.wait(&mut stop).await;
                    continue;
                }
            };
            let Some(authority) = self.authority(cursor) else {
                continue;
            };
            // The lease names the epoch this node will produce under.
            let epoch = match &authority {
                Authority::Own => cursor.epoch.number,
                Authority::Appointed(a) => a.appointment.epoch,
            };
            let holder = Holder {
                sequencer: self.key.address(),
                epoch,
                url: advertise.clone(),
            };
            let sent = Instant::now();
            let revision =
                match lease::write(&self.lease, &holder, vacancy.map(|e| e.revision)).await {
                    Ok(revision) => revision,
                    Err(LeaseError::Lost { .. }) => {
                        tracing::info!("another sequencer took the lease first; standing by");
                        continue;
                    }
                    Err(LeaseError::Bus(error)) => {
                        tracing::warn!(%error, "cannot take the sequencer lease; retrying");
                        backoff.wait(&mut stop).await;
                        continue;
                    }
                };
            self.shared.hold_lease_until(sent + config.lease_ttl() / 2);
            tracing::info!(epoch, revision, "took the sequencer lease");
            metrics::counter!("verity_sequencer_takeovers_total").increment(1);
            let renewer = Renewer::start(
                self.lease.clone(),
                holder,
                revision,
                config.lease_renew(),
                config.lease_ttl(),
                self.shared.clone(),
            );
            match self.take_over(cursor).await {
                Ok(()) => {}
                Err(TakeoverError::Refused(error)) => {
                    renewer.release().await;
                    return Err(error);
                }
                Err(TakeoverError::Retry(error)) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "takeover failed; releasing the lease"
                    );
                    renewer.release().await;
                    backoff.wait(&mut stop).await;
                    continue;
                }
            }
            return self.active(config, renewer, epoch, stop).await;
        }
    }

    /// Catches up with the stream and, for a new epoch, places the handover.
    async fn take_over(&self, cursor: &mut Cursor) -> Result<(), TakeoverError> {
        for _ in 0..HANDOVER_ATTEMPTS {
            let stream_last = self.catch_up(cursor).await.map_err(|error| {
                if matches!(
                    error.downcast_ref::<ChainError>(),
                    Some(ChainError::Diverged { .. })
                ) {
                    TakeoverError::Refused(error)
                } else {
                    TakeoverError::Retry(error)
                }
            })?;
            // What the stream holds may have changed what this node may do.
            let authority = self.authority(cursor).ok_or_else(|| {
                TakeoverError::Retry(anyhow::anyhow!(
                    "the epoch in force is no longer this node's to take"
                ))
            })?;
            let appointment = match &authority {
                Authority::Own => return Ok(()),
                Authority::Appointed(a) => a.clone(),
            };
            if cursor.last_seq > stream_last {
                return Err(TakeoverError::Refused(anyhow::anyhow!(
                    "the data directory holds events {}..={} that are not in the chain stream, \
                     under an epoch that is not this node's: move it away and start again",
                    stream_last + 1,
                    cursor.last_seq
                )));
            }
            let handover = Handover::new(
                appointment,
                cursor.head.number() + 1,
                cursor.head.hash,
                &self.key,
            );
            if let Err(reason) = self.rules.check_handover(
                &cursor.epoch,
                &handover,
                cursor.head.number() + 1,
                cursor.head.hash,
            ) {
                return Err(TakeoverError::Refused(anyhow::anyhow!(
                    "appointment of epoch {} refused: {reason}",
                    handover.epoch()
                )));
            }
            let wire = v1::ChainEvent {
                seq: cursor.last_seq + 1,
                event: Some(v1::chain_event::Event::Handover((&handover).into())),
                trace_context: Default::default(),
            };
            let hash = handover.hash.to_vec();
            let published = async {
                let ack =
                    verity_bus::publish_event(&self.js, &wire, &hash, Default::default()).await?;
                verity_bus::await_ack(ack, wire.seq).await
            }
            .await;
            match published {
                Ok(_) => {
                    let (db, rules) = (self.db.clone(), self.rules.clone());
                    let mut applied = cursor.clone();
                    let result = blocking(move || {
                        follow::apply(&db, &rules, &mut applied, &wire).map(|()| applied)
                    })
                    .await
                    .map_err(TakeoverError::Retry)?;
                    *cursor = result.map_err(|e| TakeoverError::Refused(e.into()))?;
                    self.head.send_replace(head_of(cursor, &self.spec));
                    tracing::info!(
                        seq = cursor.last_seq,
                        epoch = handover.epoch(),
                        block = handover.block_number,
                        "handover published: this node is the sequencer"
                    );
                    return Ok(());
                }
                Err(BusError::WrongLastSequence { .. }) => {
                    tracing::info!(
                        seq = wire.seq,
                        "the stream moved on before the handover; catching up and retrying"
                    );
                }
                Err(error) => return Err(TakeoverError::Retry(error.into())),
            }
        }
        Err(TakeoverError::Retry(anyhow::anyhow!(
            "the stream kept moving: no handover placed after {HANDOVER_ATTEMPTS} attempts"
        )))
    }

    /// Applies every event the stream holds beyond the cursor; returns the stream's last
    /// sequence.
    async fn catch_up(&self, cursor: &mut Cursor) -> anyhow::Result<u64> {
        let mut stream = self.stream.clone();
        let last = verity_bus::last_chain_seq(&mut stream).await?;
        if cursor.last_seq < last {
            // Read with a consumer and applied in batches (one fsync each): a cold node
            // rebuilds at the stream's pace, not one round trip and one fsync per event.
            let consumer =
                verity_bus::ordered_chain_consumer(&self.stream, cursor.last_seq + 1).await?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("read the chain stream: {e}"))?;
            while cursor.last_seq < last {
                let first = tokio::time::timeout(Duration::from_secs(5), messages.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("the chain stream stalled during catch-up"))?;
                let mut batch = vec![decode(first)?];
                while batch.len() < APPLY_BATCH && batch.last().is_some_and(|w| w.seq < last) {
                    match messages.next().now_or_never() {
                        Some(next) => batch.push(decode(next)?),
                        None => break,
                    }
                }
                let (db, rules) = (self.db.clone(), self.rules.clone());
                let mut next = cursor.clone();
                *cursor = blocking(move || {
                    follow::apply_batch(&db, &rules, &mut next, &batch).map(|()| next)
                })
                .await??;
            }
        }
        if last > 0 && cursor.last_seq > last {
            // Our own events beyond the stream's end: the stream's last must be ours too.
            let theirs = verity_bus::chain_event_at(&self.stream, last).await?;
            let (db, rules) = (self.db.clone(), self.rules.clone());
            let mut probe = cursor.clone();
            blocking(move || follow::apply(&db, &rules, &mut probe, &theirs)).await??;
        }
        self.head.send_replace(head_of(cursor, &self.spec));
        Ok(last)
    }

    /// The active sequencer: produce, publish, renew; until `stop` or deposed.
    async fn active(
        self,
        config: &Config,
        renewer: Renewer,
        epoch: u64,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let producer = {
            let (db, spec, rules, key) = (
                self.db.clone(),
                (*self.spec).clone(),
                self.rules.clone(),
                self.key.clone(),
            );
            let (fee_recipient, max_txs, threads) = (
                self.fee_recipient,
                config.max_mini_block_txs,
                config.execution_threads(),
            );
            let mut producer =
                blocking(move || Producer::open(db, spec, &rules, key, fee_recipient, max_txs))
                    .await??;
            producer.set_execution_threads(threads);
            #[cfg(feature = "fault-injection")]
            if let Some(TamperSlot(tamper)) = self.tamper.clone() {
                producer.tamper_with(tamper);
            }
            producer
        };
        self.head.send_replace(producer.head());
        self.shared.set_active(true);
        tracing::info!(head = ?producer.head(), "active: producing");
        let halt = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(tokio::sync::Notify::new());
        let thread = {
            let (shared, head, halt, failed) = (
                self.shared.clone(),
                self.head.clone(),
                halt.clone(),
                failed.clone(),
            );
            let (mini, block) = (config.mini_block_interval(), config.block_interval());
            std::thread::Builder::new()
                .name("producer".into())
                .spawn(move || {
                    let result = crate::run_producer(producer, &shared, head, mini, block, &halt);
                    if result.is_err() {
                        failed.notify_one();
                    }
                    result
                })?
        };
        let (publish_stop, publish_stop_rx) = watch::channel(false);
        let mut publisher = tokio::spawn(publish_until_stopped(
            self.shared.clone(),
            self.js.clone(),
            self.stream.clone(),
            config.max_in_flight,
            publish_stop_rx,
        ));
        let mut deposed = renewer.lost.clone();
        // In Kubernetes: the Lease names this node from now on; a higher epoch there deposes it.
        let fence = self.k8s_lease.clone().map(|lease| {
            Fence::start(
                lease,
                epoch,
                self.key.address().to_string(),
                config.k8s_lease_renew(),
            )
        });
        let outcome: anyhow::Result<()> = tokio::select! {
            _ = stopped(&mut stop) => Ok(()),
            reason = async {
                match &fence {
                    Some(fence) => fence.superseded().await,
                    None => std::future::pending().await,
                }
            } => Err(anyhow::anyhow!("deposed: {reason}; stepping down")),
            _ = failed.notified() => Err(anyhow::anyhow!("the producer stopped on an error")),
            _ = deposed.changed() => Err(anyhow::anyhow!(
                "deposed: the sequencer lease was taken by another sequencer; stepping down"
            )),
            published = &mut publisher => Err(match published {
                Ok(Err(error)) => error.into(),
                Ok(Ok(())) => anyhow::anyhow!("publishing stopped"),
                Err(error) => anyhow::anyhow!("the publisher panicked: {error}"),
            }),
        };
        self.shared.set_active(false);
        halt.store(true, Ordering::SeqCst);
        let produced = blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("producer thread panicked"));
        if let Err(error) = outcome {
            tracing::error!(error = format!("{error:#}"), "stepping down");
            publisher.abort();
            renewer.stop();
            if let Some(fence) = fence {
                fence.stop();
            }
            metrics::counter!("verity_sequencer_step_downs_total").increment(1);
            return Err(error);
        }
        produced??;
        // A planned stop: publish everything produced, then hand the lease over.
        let head = self.head.borrow().last_seq;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.published() < head
            && Instant::now() < deadline
            && !publisher.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = publish_stop.send(true);
        let published = publisher
            .await
            .map_err(|e| anyhow::anyhow!("the publisher panicked: {e}"))?;
        renewer.release().await;
        if let Some(fence) = fence {
            fence.release().await;
        }
        published?;
        Ok(())
    }
}

/// The Lease of `--k8s-lease`, with its namespace, identity and API server resolved.
async fn kubernetes_lease(
    config: &Config,
    name: &str,
    genesis: alloy_primitives::B256,
) -> anyhow::Result<SequencerLease> {
    let namespace = config
        .k8s_namespace
        .clone()
        .or_else(verity_kube::pod_namespace)
        .context("--k8s-lease needs a namespace: pass --k8s-namespace (or run in a pod)")?;
    let identity = config
        .k8s_identity
        .clone()
        .or_else(verity_kube::pod_name)
        .context("--k8s-lease needs an identity: pass --k8s-identity")?;
    let client = verity_kube::client(config.kube_api.as_deref())
        .await
        .context(
            "--k8s-lease: cannot build a Kubernetes client (flag --kube-api, or in-cluster config)",
        )?;
    let renew = config.k8s_lease_renew();
    let lease = SequencerLease::new(
        client,
        &namespace,
        name,
        &identity,
        &genesis.to_string(),
        renew * 5,
    );
    // A clear error at start for what will not fix itself (no RBAC, a wrong namespace's
    // permissions); an API server that is down (a control-plane upgrade) only delays the
    // first record, the fence retries.
    if let Err(error) = lease.read().await {
        match error.refusal() {
            Some(refusal) => anyhow::bail!(
                "--k8s-lease {name} in namespace {namespace}: {refusal} (the service account needs get and update on this Lease)"
            ),
            None => {
                tracing::warn!(%error, lease = name, "cannot read the Kubernetes Lease yet; going on (the fence retries)")
            }
        }
    }
    tracing::info!(lease = name, %namespace, %identity, "recording the active sequencer in a Kubernetes Lease");
    Ok(lease)
}

/// Why a takeover did not complete.
enum TakeoverError {
    /// Not now (the stream or NATS moved); stand by again.
    Retry(anyhow::Error),
    /// Never: the appointment does not fit the chain, or the data directory diverged.
    Refused(anyhow::Error),
}

/// Adds the published appointments naming `key` to `appointments`, for
/// as long as the node runs; reconnects by itself.
async fn watch_appointments(
    js: jetstream::Context,
    key: Address,
    appointments: watch::Sender<Vec<SignedAppointment>>,
) {
    loop {
        let watched = async {
            let store = lease::appointments_store(&js).await?;
            let mut published = Box::pin(lease::watch_appointments(&store).await?);
            while let Some(appointment) = published.next().await {
                if appointment.appointment.sequencer != key {
                    continue;
                }
                appointments.send_if_modified(|known| {
                    if known.contains(&appointment) {
                        return false;
                    }
                    tracing::info!(
                        epoch = appointment.appointment.epoch,
                        first_height = appointment.appointment.first_height,
                        "appointment published for this node"
                    );
                    known.push(appointment);
                    true
                });
            }
            Ok::<(), BusError>(())
        }
        .await;
        if let Err(error) = watched {
            tracing::warn!(%error, "cannot watch published appointments; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Publishes until `stop`, retrying after transient errors; ends with an error when deposed.
async fn publish_until_stopped(
    shared: Arc<SharedState>,
    js: jetstream::Context,
    mut stream: Stream,
    max_in_flight: usize,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PublishError> {
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    loop {
        match publish::publish(shared.clone(), &js, &mut stream, max_in_flight, &mut stop).await {
            Ok(()) => return Ok(()),
            Err(PublishError::Deposed(reason)) => return Err(PublishError::Deposed(reason)),
            Err(PublishError::Transient(error)) => {
                tracing::warn!(%error, "publishing interrupted; resuming from the stream head");
                metrics::counter!("verity_sequencer_publish_interruptions_total").increment(1);
                backoff.wait(&mut stop).await;
                if *stop.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

/// Follows the chain stream from after `cursor` until `stop`; returns the cursor. Ends early
/// only on an event it must refuse or that diverges from the local chain.
async fn follow_stream(
    db: Database,
    rules: Arc<Sequencing>,
    spec: Arc<ChainSpec>,
    mut cursor: Cursor,
    stream: Stream,
    head: Arc<watch::Sender<Head>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Cursor> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    while !*stop.borrow() {
        // From the stream's end if that is below ours: events this node committed but never
        // published must match what the stream holds there, or it diverged.
        let stream_last = {
            let mut stream = stream.clone();
            verity_bus::last_chain_seq(&mut stream)
                .await
                .unwrap_or(cursor.last_seq)
        };
        let from = stream_last.min(cursor.last_seq) + 1;
        let consumer = match verity_bus::ordered_chain_consumer(&stream, from).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "standby: cannot follow the chain; retrying");
                backoff.wait(&mut stop).await;
                continue;
            }
        };
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "standby: cannot read the chain; retrying");
                backoff.wait(&mut stop).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = stopped(&mut stop) => return Ok(cursor),
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, "standby: chain consumer interrupted; resubscribing");
                    break;
                }
                None => break,
            };
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                break;
            };
            let mut batch = vec![verity_bus::decode_event(seq, &message.payload)?];
            // What has arrived already goes into the same transaction (one fsync per batch).
            let mut interrupted = false;
            while batch.len() < APPLY_BATCH {
                match messages.next().now_or_never() {
                    None => break,
                    Some(next @ Some(Ok(_))) => batch.push(decode(next)?),
                    Some(_) => {
                        interrupted = true;
                        break;
                    }
                }
            }
            let (db, rules) = (db.clone(), rules.clone());
            let mut next = cursor.clone();
            cursor = blocking(move || {
                follow::apply_batch(&db, &rules, &mut next, &batch).map(|()| next)
            })
            .await??;
            head.send_replace(head_of(&cursor, &spec));
            metrics::gauge!("verity_sequencer_standby_last_seq").set(cursor.last_seq as f64);
            if interrupted {
                tracing::warn!("standby: chain consumer interrupted; resubscribing");
                break;
            }
        }
        backoff.wait(&mut stop).await;
    }
    Ok(cursor)
}

/// Renews the lease in the background while this node is active.
struct Renewer {
    task: tokio::task::JoinHandle<Option<u64>>,
    stop: watch::Sender<bool>,
    /// Changes when the lease was lost.
    lost: watch::Receiver<bool>,
    store: kv::Store,
}

impl Renewer {
    fn start(
        store: kv::Store,
        holder: Holder,
        revision: u64,
        every: Duration,
        ttl: Duration,
        shared: Arc<SharedState>,
    ) -> Self {
        let (stop, mut stop_rx) = watch::channel(false);
        let (lost_tx, lost) = watch::channel(false);
        let task = tokio::spawn({
            let store = store.clone();
            async move {
                let mut revision = revision;
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped(&mut stop_rx) => return Some(revision),
                    }
                    let sent = Instant::now();
                    match lease::write(&store, &holder, Some(revision)).await {
                        Ok(next) => {
                            revision = next;
                            shared.hold_lease_until(sent + ttl / 2);
                        }
                        Err(LeaseError::Lost { .. }) => {
                            tracing::error!("the sequencer lease was taken by another sequencer");
                            shared.hold_lease_until(sent);
                            let _ = lost_tx.send(true);
                            return None;
                        }
                        Err(LeaseError::Bus(error)) => {
                            metrics::counter!("verity_sequencer_lease_renewal_failures_total")
                                .increment(1);
                            tracing::warn!(%error, "cannot renew the sequencer lease");
                        }
                    }
                }
            }
        });
        Self {
            task,
            stop,
            lost,
            store,
        }
    }

    /// Stops renewing (the lease then expires).
    fn stop(self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }

    /// Stops renewing and gives the lease up, if it is still ours.
    async fn release(self) {
        let _ = self.stop.send(true);
        if let Ok(Some(revision)) = self.task.await
            && let Err(error) = lease::release(&self.store, revision).await
        {
            tracing::warn!(%error, "could not release the sequencer lease; it will expire");
        }
    }
}
