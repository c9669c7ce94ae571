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
//!
//! By role: this module holds the node and its standby-then-active loop; `standby` follows
//! the stream and watches appointments, `takeover` catches up and places the handover,
//! `active` produces and publishes, `renewal` keeps the lease.

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
use verity_server::{Backoff, CancellationToken, DropGuard};
use verity_storage::Database;

mod active;
mod renewal;
mod standby;
mod takeover;

use active::kubernetes_lease;
use renewal::Renewer;
use standby::{decode, follow_stream, watch_appointments};
use takeover::TakeoverError;

use crate::{
    Config, SharedState, follow,
    mempool::MempoolLimits,
    producer::{self, Head, Producer},
    publish::{self, PublishError},
};

/// Most chain events a follower applies in one MDBX transaction.
const APPLY_BATCH: usize = 256;

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
        let max_db_size = config.max_db_size_mib.saturating_mul(1 << 20);
        let (db, recovered) = {
            let spec = spec.clone();
            let rules = rules.clone();
            blocking(move || -> anyhow::Result<_> {
                let db = Database::open_with_max_size(&data_dir, max_db_size)
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
            // Transactions sent in parallel arrive out of order: one may run ahead of the
            // pending nonce by as many as a sender may have waiting.
            max_nonce_gap: config.mempool_per_sender as u64,
            total: config.mempool_max_txs,
            total_bytes: config.mempool_max_bytes,
            max_delay: config.max_queue_delay(),
            shed_floor: config.max_mini_block_txs,
        };
        let shared = Arc::new(SharedState::new(db.clone(), spec.clone(), limits, head_rx));
        shared.set_active(false);
        // The series dashboards and alerts read exist from the start, at 0.
        metrics::gauge!("verity_sequencer_storage_full").set(0.0);
        metrics::gauge!("verity_sequencer_mempool_transactions").set(0.0);
        for counter in [
            "verity_sequencer_gas_used_total",
            "verity_sequencer_shed_transactions_total",
            "verity_sequencer_mempool_evicted_total",
        ] {
            metrics::counter!(counter).increment(0);
        }
        let (_client, js) = config.service.nats.connect("verity-sequencer").await?;
        let stream = verity_bus::ensure_chain_stream(&js).await?;
        let lease = lease::lease_store(&js).await?;
        // The sequencer stops when the store it shares with the proving streams fills up: it
        // watches how full every stream is, and warns early.
        tokio::spawn(verity_bus::bootstrap::watch_usage(
            js.clone(),
            Duration::from_secs(10),
        ));
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
        stop: CancellationToken,
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
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut appointed = self.appointments.subscribe();
        loop {
            let authority = self.authority(cursor);
            let follow_stop = CancellationToken::new();
            let mut follower = tokio::spawn(follow_stream(
                self.db.clone(),
                self.rules.clone(),
                self.spec.clone(),
                cursor.clone(),
                self.stream.clone(),
                self.head.clone(),
                follow_stop.clone(),
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
                vacancy = lease::wait_vacant(&self.lease, &self.rules, config.lease_ttl(), |holder| {
                    explicit
                        || (holder.sequencer == self.key.address()
                            && holder.epoch == cursor.epoch.number)
                }), if authority.is_some() => Some(Some(vacancy)),
                _ = appointed.changed() => Some(None),
                _ = stop.cancelled() => None,
                ended = &mut follower => {
                    // The follower only ends by itself on a refused or diverging event.
                    return Err(match ended {
                        Ok(Ok(_)) => anyhow::anyhow!("the chain follower stopped"),
                        Ok(Err(error)) => error,
                        Err(error) => anyhow::anyhow!("the chain follower panicked: {error}"),
                    });
                }
            };
            follow_stop.cancel();
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
                    backoff.wait(&stop).await;
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
            // A lease of a later epoch carries its appointment, so that ingress and gateways,
            // which know only the genesis, can check who signed it.
            let appointment = match &authority {
                Authority::Own if epoch == self.rules.genesis.number => None,
                Authority::Own => {
                    let known = self
                        .appointments
                        .borrow()
                        .iter()
                        .find(|a| a.appointment.epoch == epoch)
                        .cloned();
                    if known.is_none() {
                        tracing::warn!(
                            epoch,
                            "this node's epoch is in force but its appointment is not known \
                             yet (published appointments or --appointments); waiting for it \
                             before claiming the lease"
                        );
                        tokio::select! {
                            _ = appointed.changed() => {}
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stop.cancelled() => return Ok(()),
                        }
                        continue;
                    }
                    known
                }
                Authority::Appointed(a) => Some(a.clone()),
            };
            let holder = Holder::signed(
                &self.key,
                self.spec.chain_id(),
                epoch,
                advertise.clone(),
                appointment,
            );
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
                        backoff.wait(&stop).await;
                        continue;
                    }
                };
            self.shared.hold_lease_until(sent + config.lease_ttl() / 2);
            tracing::info!(epoch, revision, "took the sequencer lease");
            metrics::counter!("verity_sequencer_takeovers_total").increment(1);
            let renewer = Renewer::start(
                self.lease.clone(),
                renewal::LeaseSigner {
                    key: self.key.clone(),
                    chain_id: self.spec.chain_id(),
                    rules: self.rules.clone(),
                },
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
                    backoff.wait(&stop).await;
                    continue;
                }
            }
            return self.active(config, renewer, epoch, stop).await;
        }
    }
}
