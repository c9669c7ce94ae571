//! The sequencer lease: one JetStream key-value entry that says which sequencer is active.
//!
//! The active sequencer rewrites the entry every renewal interval, each time conditioned on the
//! revision it last wrote (`update(key, value, revision)`), so it learns at once when anyone
//! else wrote it. A standby watches the entry; when no new revision arrived for the lease's
//! time to live, it takes the entry by the same compare-and-set on the last revision it saw.
//! Two standbys racing for it cannot both win. Expiry is measured by each watcher's own clock
//! from the last change it saw, so no clocks need to agree.
//!
//! The lease decides who *may* produce; the chain stream's compare-and-set publish decides what
//! is in the chain. Ingress and gateways read the holder's gRPC URL from the entry to follow
//! the active sequencer.
//!
//! Anyone who may write the entry on NATS could name any URL in it, so an entry counts only when
//! it is signed by the key of the epoch it claims ([`Sequencing::check_lease`]): genesis's for
//! epoch 0, the one a governance appointment (carried in the entry) names for a later epoch.
//! Every reader here checks that against the genesis it was started with; an entry that does
//! not verify reads as no holder at all. A holder gives the lease up (a planned stop) by
//! writing a signed release, its claim with no URL; a bare deletion, which any writer of the
//! entry can make, is refused like an unsigned entry, so it cannot force a failover.
//!
//! Readers follow the bucket's stream with message gets rather than a watch: a watch is a
//! consumer, and no service may make consumers on any stream but the chain's
//! ([`crate::follower`]). The bucket keeps [`LEASE_HISTORY`] revisions so that polling misses
//! none.

use std::time::Duration;

use async_nats::jetstream::{
    self, Context,
    kv::{self, CreateErrorKind, Store, UpdateErrorKind},
};
use futures::StreamExt;
use verity_primitives::{
    Address, Signature, SigningKey,
    governance::{LeaseClaimError, Sequencing, SignedAppointment, lease_signing_hash},
};

use crate::BusError;

/// Key-value bucket of the lease.
pub const LEASE_BUCKET: &str = "VERITY_SEQUENCER";
/// Key of the sequencer lease in [`LEASE_BUCKET`].
pub const LEASE_KEY: &str = "lease";
/// Key-value bucket of published appointments, one key per epoch (`epoch-<n>`).
pub const APPOINTMENTS_BUCKET: &str = "VERITY_APPOINTMENTS";

/// Who holds the lease, signed by the holder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    /// The sequencer key's address.
    pub sequencer: Address,
    /// The epoch it produces under.
    pub epoch: u64,
    /// Its gRPC URL, where ingress forwards transactions.
    pub url: String,
    /// Which process wrote it (chosen at random when a node claims the lease): two processes
    /// with the same key tell each other apart.
    #[serde(default)]
    pub instance: u64,
    /// The holder's renewal count, raised at every write: a standby counts only a higher one
    /// as the holder being alive, so an old entry written again does not keep a dead holder's
    /// lease alive.
    #[serde(default)]
    pub renewal: u64,
    /// For an epoch above 0: governance's appointment of `sequencer` for `epoch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment: Option<SignedAppointment>,
    /// The sequencer key's signature over [`lease_signing_hash`].
    pub signature: Signature,
}

impl Holder {
    /// A new claim of the lease by `key` for `epoch` of chain `chain_id`, forwarding to `url`,
    /// by a process of its own (a new `instance`), renewal 0.
    pub fn signed(
        key: &SigningKey,
        chain_id: u64,
        epoch: u64,
        url: String,
        appointment: Option<SignedAppointment>,
    ) -> Self {
        let mut holder = Self {
            sequencer: key.address(),
            epoch,
            url,
            instance: new_instance(),
            renewal: 0,
            appointment,
            signature: Signature::new(Default::default(), Default::default(), false),
        };
        holder.signature = key.sign(&holder.signing_hash(chain_id));
        holder
    }

    /// The same claim, renewed: the next renewal count, signed again.
    pub fn renewed(&self, key: &SigningKey, chain_id: u64) -> Self {
        let mut next = self.clone();
        next.renewal += 1;
        next.signature = key.sign(&next.signing_hash(chain_id));
        next
    }

    /// What the entry says besides key and epoch, as signed: instance, renewal and URL.
    fn claim(&self) -> Vec<u8> {
        let mut claim = Vec::with_capacity(16 + self.url.len());
        claim.extend_from_slice(&self.instance.to_be_bytes());
        claim.extend_from_slice(&self.renewal.to_be_bytes());
        claim.extend_from_slice(self.url.as_bytes());
        claim
    }

    fn signing_hash(&self, chain_id: u64) -> alloy_primitives::B256 {
        lease_signing_hash(chain_id, self.epoch, self.sequencer, &self.claim())
    }

    /// The holder's release of the lease: its claim renewed with no URL (followers then forward
    /// nowhere, and a standby may take over at once).
    pub fn released(&self, key: &SigningKey, chain_id: u64) -> Self {
        let mut release = self.clone();
        release.url.clear();
        release.renewed(key, chain_id)
    }

    /// Whether this is a release ([`Holder::released`]) rather than a claim.
    pub fn is_release(&self) -> bool {
        self.url.is_empty()
    }

    /// Checks the claim against the chain's sequencing rules.
    pub fn verify(&self, rules: &Sequencing) -> Result<(), LeaseClaimError> {
        rules.check_lease(
            self.sequencer,
            self.epoch,
            &self.claim(),
            self.appointment.as_ref(),
            &self.signature,
        )
    }

    /// Whether this entry, read after `earlier`, shows its holder alive: another holder or
    /// process, or the same process's later renewal (not an old entry written again).
    pub fn is_newer_than(&self, earlier: &Holder) -> bool {
        (self.sequencer, self.epoch, self.instance)
            != (earlier.sequencer, earlier.epoch, earlier.instance)
            || self.renewal > earlier.renewal
    }
}

/// A process's lease instance: unique enough that two processes holding one key differ (it is
/// signed, not secret).
fn new_instance() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

/// A lease entry as read: its holder and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The holder, when the entry's claim (or release) verifies (`None` for one refused).
    pub holder: Option<Holder>,
    /// Why the entry was refused (`None` when it verified): undecodable, not signed by its
    /// epoch's key, or a deletion.
    pub refused: Option<String>,
    /// The entry's revision (the compare-and-set token).
    pub revision: u64,
}

/// The lease was taken by someone else (or never was ours).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another writer changed the entry since `revision`.
    #[error("the sequencer lease changed after revision {revision}: another sequencer holds it")]
    Lost {
        /// The revision the write was conditioned on.
        revision: u64,
    },
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

fn kv_error(operation: &'static str, error: impl std::fmt::Display) -> BusError {
    BusError::JetStream {
        operation,
        reason: error.to_string(),
    }
}

/// Opens (creating when missing) the lease bucket; it keeps one revision per key.
///
/// The bucket's stream is created here with the key-value layout (`KV_<bucket>` on
/// `$KV.<bucket>.>`, one message per subject, roll-ups, direct gets) rather than by
/// `create_key_value`, which first queries the account's JetStream info in a shape nats-server
/// 2.9 (Debian's) does not send.
pub async fn lease_store(js: &Context) -> Result<Store, BusError> {
    lease_store_with(js, 1).await
}

/// [`lease_store`], making the bucket with `replicas` copies when it is missing.
pub(crate) async fn lease_store_with(js: &Context, replicas: usize) -> Result<Store, BusError> {
    kv_store(
        js,
        LEASE_BUCKET,
        "which Verity sequencer is active",
        LEASE_HISTORY,
        replicas,
    )
    .await
}

/// Brings a lease bucket made by an earlier release (one revision kept) to [`LEASE_HISTORY`]
/// revisions: the bus's initialisation does it ([`crate::bootstrap`]).
pub async fn keep_lease_history(js: &Context) -> Result<(), BusError> {
    let stream = js
        .get_stream(format!("KV_{LEASE_BUCKET}"))
        .await
        .map_err(|e| kv_error("open lease bucket", e))?;
    crate::reconfigure(js, &stream, "keep lease revisions", |config| {
        config.max_messages_per_subject = config.max_messages_per_subject.max(LEASE_HISTORY);
    })
    .await
}

/// Opens (creating when missing) the bucket of published appointments.
pub async fn appointments_store(js: &Context) -> Result<Store, BusError> {
    appointments_store_with(js, 1).await
}

/// [`appointments_store`], making the bucket with `replicas` copies when it is missing.
pub(crate) async fn appointments_store_with(
    js: &Context,
    replicas: usize,
) -> Result<Store, BusError> {
    kv_store(
        js,
        APPOINTMENTS_BUCKET,
        "governance-signed Verity sequencer appointments",
        1,
        replicas,
    )
    .await
}

async fn kv_store(
    js: &Context,
    bucket: &str,
    description: &str,
    history: i64,
    replicas: usize,
) -> Result<Store, BusError> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_string()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| crate::create_error("open key-value bucket", e))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| kv_error("open key-value bucket", e))
}

fn decode(entry: kv::Entry, rules: &Sequencing) -> Entry {
    decode_parts(entry.operation, &entry.value, entry.revision, rules)
}

fn decode_parts(
    operation: kv::Operation,
    value: &[u8],
    revision: u64,
    rules: &Sequencing,
) -> Entry {
    let checked = match operation {
        kv::Operation::Put => match serde_json::from_slice::<Holder>(value) {
            Ok(holder) => match holder.verify(rules) {
                Ok(()) => Ok(Some(holder)),
                Err(error) => Err(error.to_string()),
            },
            Err(error) => Err(format!("undecodable lease entry: {error}")),
        },
        kv::Operation::Delete | kv::Operation::Purge => {
            Err("a deletion, not a signed release".to_string())
        }
    };
    if let Err(reason) = &checked {
        metrics::counter!("verity_lease_entries_refused_total").increment(1);
        tracing::warn!(
            revision,
            reason,
            "ignoring a sequencer lease entry that does not verify"
        );
    }
    let (holder, refused) = match checked {
        Ok(holder) => (holder, None),
        Err(reason) => (None, Some(reason)),
    };
    Entry {
        holder,
        refused,
        revision,
    }
}

/// The current entry, if any, checked against `rules`.
pub async fn read(store: &Store, rules: &Sequencing) -> Result<Option<Entry>, BusError> {
    Ok(store
        .entry(LEASE_KEY)
        .await
        .map_err(|e| kv_error("read lease", e))?
        .map(|entry| decode(entry, rules)))
}

fn encode(holder: &Holder) -> bytes::Bytes {
    serde_json::to_vec(holder).unwrap_or_default().into()
}

/// Writes `holder` over the entry at `revision` (`None`: the entry must not exist); returns
/// the new revision.
pub async fn write(
    store: &Store,
    holder: &Holder,
    revision: Option<u64>,
) -> Result<u64, LeaseError> {
    match revision {
        None => store
            .create(LEASE_KEY, encode(holder))
            .await
            .map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => LeaseError::Lost { revision: 0 },
                _ => LeaseError::Bus(kv_error("create lease", e)),
            }),
        Some(revision) => store
            .update(LEASE_KEY, encode(holder), revision)
            .await
            .map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => LeaseError::Lost { revision },
                _ => LeaseError::Bus(kv_error("renew lease", e)),
            }),
    }
}

/// How often a lease reader asks for new revisions of the entry.
pub const LEASE_POLL: Duration = Duration::from_millis(25);

/// Revisions of the entry the bucket keeps. A reader polls, and between two polls anyone who may
/// write the entry can write it several times: a holder's renewal overwritten by junk within a
/// poll would be missed, and a standby would take a live holder's lease for expired. With the
/// revisions kept, a reader sees every one in order ([`watch`]).
pub const LEASE_HISTORY: i64 = 64;

/// Follows the entry: yields the current revision first (if any), then every later revision in
/// order, each checked against `rules`. It reads the bucket's stream every [`LEASE_POLL`]
/// (message gets, not a consumer: [`crate::follower`]); the bucket keeps [`LEASE_HISTORY`]
/// revisions, so none written between two polls is missed.
pub fn watch(
    store: &Store,
    rules: Sequencing,
) -> impl futures::Stream<Item = Result<Entry, BusError>> + Send + use<> {
    let store = store.clone();
    let subject = format!("{}{LEASE_KEY}", store.prefix);
    futures::stream::unfold(
        (store, rules, None::<crate::follower::Follower>),
        move |(store, rules, follower)| {
            let subject = subject.clone();
            async move {
                let mut follower = match follower {
                    Some(follower) => follower,
                    None => {
                        // The current revision first, then everything after it.
                        let current = match read(&store, &rules).await {
                            Ok(current) => current,
                            Err(error) => return Some((Err(error), (store, rules, None))),
                        };
                        let next = current.as_ref().map_or(1, |e| e.revision + 1);
                        let follower =
                            crate::follower::Follower::new(store.stream.clone(), subject, next)
                                .with_idle(LEASE_POLL);
                        if let Some(current) = current {
                            return Some((Ok(current), (store, rules, Some(follower))));
                        }
                        follower
                    }
                };
                let item = follower.next().await.map(|stored| {
                    let operation = match stored.headers.get("KV-Operation").map(|v| v.as_str()) {
                        Some("DEL") => kv::Operation::Delete,
                        Some("PURGE") => kv::Operation::Purge,
                        _ => kv::Operation::Put,
                    };
                    decode_parts(operation, &stored.payload, stored.seq, &rules)
                });
                Some((item, (store, rules, Some(follower))))
            }
        },
    )
}

/// Waits until the holder has shown no sign of life for `ttl` (as this caller's clock sees it),
/// or there is no entry, or the holder released it (a signed release newer than its last
/// renewal seen), or the entry names a holder `take_now` accepts at once (a restarted
/// sequencer's own lease), and returns it as last seen (`None`: no entry). Entries that do not
/// verify, deletions among them, neither free the lease nor keep it alive. Callers race it
/// against their own stop signal.
pub async fn wait_vacant(
    store: &Store,
    rules: &Sequencing,
    ttl: Duration,
    take_now: impl Fn(&Holder) -> bool,
) -> Result<Option<Entry>, BusError> {
    let mut last = match read(store, rules).await? {
        None => return Ok(None),
        Some(entry) => Some(entry),
    };
    let mut changes = Box::pin(watch(store, rules.clone()));
    // The lease expires `ttl` after the last sign of life of a holder: an entry that verifies
    // and is newer than the last one seen (another holder, or a higher renewal). An entry that
    // does not verify, or an old one written again, neither frees the lease at once nor keeps
    // it alive; it only moves the compare-and-set revision along.
    let mut alive: Option<Holder> = last
        .as_ref()
        .and_then(|e| e.holder.clone())
        .filter(|h| !h.is_release());
    let mut deadline = tokio::time::Instant::now() + ttl;
    loop {
        let vacant = last
            .as_ref()
            .and_then(|e| e.holder.as_ref())
            .is_some_and(|holder| {
                take_now(holder)
                    || (holder.is_release()
                        && alive.as_ref().is_none_or(|seen| holder.is_newer_than(seen)))
            });
        if vacant {
            return Ok(last);
        }
        match tokio::time::timeout_at(deadline, changes.next()).await {
            Err(_) => return Ok(last),
            Ok(None) => return Err(kv_error("lease watch", "ended")),
            Ok(Some(entry)) => {
                let entry = entry?;
                if let Some(holder) = &entry.holder
                    && !holder.is_release()
                    && alive.as_ref().is_none_or(|seen| holder.is_newer_than(seen))
                {
                    alive = Some(holder.clone());
                    deadline = tokio::time::Instant::now() + ttl;
                }
                last = Some(entry);
            }
        }
    }
}

/// Gives the lease up (a planned stop) with `release` ([`Holder::released`]), only if the entry
/// is still at `revision`: a standby then takes over without waiting for the lease to expire.
pub async fn release(store: &Store, release: &Holder, revision: u64) -> Result<u64, LeaseError> {
    write(store, release, Some(revision)).await
}

/// What a process that follows the lease but not the chain (ingress, a gateway) trusts to
/// check it: the chain's genesis (the epoch-0 sequencer and the governance keys).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LeaseTrustArgs {
    /// Chain genesis file: who may sign the sequencer lease (its epoch-0 sequencer and the
    /// governance keys that appoint later ones). Needed to follow the lease.
    #[arg(long = "genesis", env = "VERITY_GENESIS")]
    pub genesis: Option<std::path::PathBuf>,
    /// Address of the epoch-0 sequencer key, for a genesis that names none.
    #[arg(long = "sequencer-address", env = "VERITY_SEQUENCER_ADDRESS")]
    pub sequencer_address: Option<Address>,
}

impl LeaseTrustArgs {
    /// The sequencing rules lease entries are checked against; the error names the flags.
    pub fn rules(&self) -> Result<Sequencing, BusError> {
        let genesis = self.genesis.as_ref().ok_or_else(|| {
            BusError::LeaseTrust(
                "following the sequencer lease needs --genesis / VERITY_GENESIS, to check who \
                 signed it"
                    .into(),
            )
        })?;
        verity_primitives::ChainSpec::load(genesis)
            .and_then(|spec| spec.sequencing(self.sequencer_address))
            .map_err(|e| {
                BusError::LeaseTrust(format!(
                    "{e} (flags --genesis / VERITY_GENESIS, --sequencer-address / \
                     VERITY_SEQUENCER_ADDRESS)"
                ))
            })
    }
}

/// Follows the lease on the NATS `nats` names: the receiver holds the active sequencer's gRPC
/// URL (`None` while no sequencer holds the lease or NATS is unreachable). Reconnects by
/// itself; ends when every receiver is gone.
///
/// Only entries that verify against `rules` count: an entry that does not verify leaves the URL
/// as it was. An old holder's signed entry written again takes the followers back to a deposed
/// sequencer (which refuses transactions as a standby) until the real holder's next renewal
/// overwrites it; pinning the highest epoch seen instead would strand them on a takeover that
/// was abandoned, or on an epoch a standing appointment lets a standby claim early.
pub fn follow_holder(
    nats: crate::NatsArgs,
    name: &'static str,
    rules: Sequencing,
) -> tokio::sync::watch::Receiver<Option<String>> {
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        loop {
            let followed = async {
                let (_client, js) = nats.connect(name).await?;
                let store = lease_store(&js).await?;
                let mut changes = Box::pin(watch(&store, rules.clone()));
                while let Some(entry) = changes.next().await {
                    let entry = entry?;
                    if entry.refused.is_some() {
                        continue;
                    }
                    let url = entry.holder.map(|h| h.url).filter(|url| !url.is_empty());
                    tx.send_if_modified(|current| {
                        let changed = *current != url;
                        *current = url.clone();
                        changed
                    });
                }
                Ok::<(), BusError>(())
            }
            .await;
            if tx.is_closed() {
                return;
            }
            if let Err(error) = followed {
                tracing::warn!(%error, "cannot follow the sequencer lease; retrying");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    rx
}

/// Publishes a signed appointment under its epoch's key; refused when that epoch was published
/// already (an epoch is appointed once). An entry there that is not an appointment of that
/// epoch (a chain event a consumer of the chain stream delivered to the key, say) does not
/// hold the epoch: it is written over.
pub async fn publish_appointment(
    store: &Store,
    appointment: &verity_primitives::governance::SignedAppointment,
) -> Result<u64, LeaseError> {
    let epoch = appointment.appointment.epoch;
    let key = appointment_key(epoch);
    let value = bytes::Bytes::from(serde_json::to_vec(appointment).unwrap_or_default());
    match store.create(&key, value.clone()).await {
        Ok(revision) => return Ok(revision),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(LeaseError::Bus(kv_error("publish appointment", e))),
    }
    let existing = store
        .entry(&key)
        .await
        .map_err(|e| kv_error("read appointment", e))?;
    let Some(existing) = existing else {
        return Err(LeaseError::Lost { revision: 0 });
    };
    let appointed = existing.operation == kv::Operation::Put
        && serde_json::from_slice::<SignedAppointment>(&existing.value)
            .is_ok_and(|a| a.appointment.epoch == epoch);
    if appointed {
        return Err(LeaseError::Lost {
            revision: existing.revision,
        });
    }
    tracing::warn!(
        epoch,
        "writing an appointment over an entry that is not one"
    );
    store
        .update(&key, value, existing.revision)
        .await
        .map_err(|e| match e.kind() {
            UpdateErrorKind::WrongLastRevision => LeaseError::Lost {
                revision: existing.revision,
            },
            _ => LeaseError::Bus(kv_error("publish appointment", e)),
        })
}

/// The key of `epoch`'s appointment in [`APPOINTMENTS_BUCKET`].
pub fn appointment_key(epoch: u64) -> String {
    format!("epoch-{epoch}")
}

/// Every published appointment, then each one published later, read from the bucket's stream
/// in order ([`crate::follower::Follower`]). Entries that are not appointments are skipped: a
/// node checks each appointment itself before acting on it. Ends at the first read error.
pub async fn watch_appointments(
    js: &Context,
) -> Result<impl futures::Stream<Item = SignedAppointment> + Send + use<>, BusError> {
    let stream = js
        .get_stream(format!("KV_{APPOINTMENTS_BUCKET}"))
        .await
        .map_err(|e| kv_error("open appointments", e))?;
    let follower =
        crate::follower::Follower::new(stream, format!("$KV.{APPOINTMENTS_BUCKET}.>"), 1)
            .with_idle(Duration::from_millis(250));
    Ok(futures::stream::unfold(
        follower,
        |mut follower| async move {
            loop {
                let stored = match follower.next().await {
                    Ok(stored) => stored,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read published appointments");
                        return None;
                    }
                };
                let deleted = stored
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| op.as_str() != "PUT");
                if deleted {
                    continue;
                }
                if let Ok(appointment) = serde_json::from_slice(&stored.payload) {
                    return Some((appointment, follower));
                }
            }
        },
    ))
}
