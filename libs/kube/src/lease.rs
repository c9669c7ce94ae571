//! The sequencer's `coordination.k8s.io/v1` Lease, when its standby runs in a cluster.
//!
//! The JetStream lease (`verity_bus::lease`) decides which sequencer may produce, and the
//! stream's compare-and-set publish is what makes two producers impossible (ADR 0009). This
//! Lease is the same fact in Kubernetes' own terms, plus a second fence that needs no NATS:
//!
//! - the active sequencer records itself (`holderIdentity` = its pod, annotations
//!   `verity.io/epoch` = its epoch, `verity.io/sequencer` = its address, `verity.io/genesis` =
//!   its chain's genesis hash) once it has handed over, renews it every few seconds, and gives
//!   it up on a planned stop, so `kubectl get lease` names the active sequencer and
//!   `leaseTransitions` counts epoch changes (takeovers);
//! - every write is conditioned on the object's `resourceVersion` (a conflict re-reads), and a
//!   sequencer that finds a **higher epoch** recorded there was superseded: it steps down at
//!   once, even if its NATS connection has not told it yet. A record with a lower epoch is
//!   stale (a sequencer that died holding it) and is taken over, as is one of another genesis
//!   (a chain re-created in the same namespace).
//!
//! RBAC: `get` and `update` on the Lease, `create` on `leases` (if it was deleted) in the
//! release's namespace.

use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

/// Annotation holding the holder's epoch.
pub const EPOCH_ANNOTATION: &str = "verity.io/epoch";
/// Annotation holding the holder's sequencer address.
pub const ADDRESS_ANNOTATION: &str = "verity.io/sequencer";
/// Annotation holding the genesis hash of the holder's chain.
pub const GENESIS_ANNOTATION: &str = "verity.io/genesis";
/// Writes retried after a conflict before giving up for this round.
const ATTEMPTS: usize = 5;

/// Errors of the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// A higher epoch is recorded: this sequencer was superseded.
    #[error(
        "the Lease records epoch {epoch} held by {holder}: this sequencer (epoch {ours}) was superseded"
    )]
    Superseded {
        /// The recorded holder.
        holder: String,
        /// The recorded epoch.
        epoch: u64,
        /// This sequencer's epoch.
        ours: u64,
    },
    /// Writes kept conflicting with other writers.
    #[error("the Lease kept changing under {ATTEMPTS} attempts to write it")]
    Contended,
    /// The Kubernetes API refused or failed a call.
    #[error("Kubernetes API, lease {name}: {source}")]
    Kube {
        /// The Lease.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
}

impl LeaseError {
    /// The API server's message when it refused for lack of authentication or permission
    /// (401, 403): that will not fix itself by retrying.
    pub fn refusal(&self) -> Option<&str> {
        match self {
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } if status.code == 401 || status.code == 403 => Some(&status.message),
            _ => None,
        }
    }
}

/// Who the Lease records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `holderIdentity` (empty when released).
    pub holder: String,
    /// The holder's epoch.
    pub epoch: u64,
    /// The holder's address.
    pub address: String,
    /// The genesis hash of the holder's chain.
    pub genesis: String,
    /// `leaseTransitions`.
    pub transitions: i32,
}

impl Record {
    /// What `lease` records.
    pub fn of(lease: &Lease) -> Self {
        let annotations = lease.metadata.annotations.clone().unwrap_or_default();
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.unwrap_or_default(),
            epoch: annotations
                .get(EPOCH_ANNOTATION)
                .and_then(|e| e.parse().ok())
                .unwrap_or(0),
            address: annotations
                .get(ADDRESS_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            genesis: annotations
                .get(GENESIS_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// One sequencer's view of the Lease.
#[derive(Clone)]
pub struct SequencerLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    genesis: String,
    duration: Duration,
}

impl std::fmt::Debug for SequencerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequencerLease")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl SequencerLease {
    /// The Lease `name` in `namespace`, written as `identity` (the pod's name) for the chain
    /// of `genesis` (its hash, hex), each record valid for `duration` after its renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        genesis: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            genesis: genesis.to_string(),
            duration,
        }
    }

    fn kube(&self) -> impl FnOnce(kube::Error) -> LeaseError + '_ {
        move |source| LeaseError::Kube {
            name: self.name.clone(),
            source,
        }
    }

    /// What the Lease records now (`None`: it does not exist).
    pub async fn read(&self) -> Result<Option<Record>, LeaseError> {
        let lease = self.api.get_opt(&self.name).await.map_err(self.kube())?;
        Ok(lease.as_ref().map(Record::of))
    }

    /// Records this sequencer as the holder for `epoch` (creating the Lease if needed).
    pub async fn acquire(&self, epoch: u64, address: &str) -> Result<Record, LeaseError> {
        self.write(epoch, |lease, record| {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            let ours = record.genesis == self.genesis;
            if record.holder != self.identity || record.epoch != epoch || !ours {
                spec.acquire_time = Some(now());
            }
            // A transition is a new epoch (a takeover), not a restart of the same holder.
            let recorded = !record.genesis.is_empty() || !record.holder.is_empty();
            if recorded && (record.epoch != epoch || !ours) {
                spec.lease_transitions = Some(record.transitions + 1);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.lease_duration_seconds =
                Some(i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX));
            spec.renew_time = Some(now());
            let annotations = lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            annotations.insert(EPOCH_ANNOTATION.into(), epoch.to_string());
            annotations.insert(ADDRESS_ANNOTATION.into(), address.to_string());
            annotations.insert(GENESIS_ANNOTATION.into(), self.genesis.clone());
            true
        })
        .await
    }

    /// Renews this sequencer's record (`Superseded` if a higher epoch took it).
    pub async fn renew(&self, epoch: u64, address: &str) -> Result<Record, LeaseError> {
        self.acquire(epoch, address).await
    }

    /// Gives the Lease up if it still records this sequencer's `epoch` (a planned stop).
    pub async fn release(&self, epoch: u64) -> Result<(), LeaseError> {
        self.write(epoch, |lease, record| {
            if record.holder != self.identity
                || record.epoch != epoch
                || record.genesis != self.genesis
            {
                return false;
            }
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.renew_time = None;
            true
        })
        .await
        .map(|_| ())
    }

    /// Reads, checks the epoch, edits with `edit` (false: nothing to write) and writes
    /// conditioned on the read's resourceVersion; re-reads after a conflict.
    async fn write(
        &self,
        epoch: u64,
        edit: impl Fn(&mut Lease, &Record) -> bool,
    ) -> Result<Record, LeaseError> {
        for _ in 0..ATTEMPTS {
            let existing = self.api.get_opt(&self.name).await.map_err(self.kube())?;
            let created = existing.is_none();
            let mut lease = existing.unwrap_or_else(|| Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec::default()),
            });
            let record = Record::of(&lease);
            // Another genesis's record is stale, whatever its epoch (a re-created chain).
            if record.epoch > epoch && record.genesis == self.genesis {
                return Err(LeaseError::Superseded {
                    holder: record.holder,
                    epoch: record.epoch,
                    ours: epoch,
                });
            }
            if !edit(&mut lease, &record) {
                return Ok(record);
            }
            let written = if created {
                self.api.create(&PostParams::default(), &lease).await
            } else {
                // `replace` sends the resourceVersion read above: a writer in between → 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            };
            match written {
                Ok(lease) => return Ok(Record::of(&lease)),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(lease = %self.name, "Lease changed while writing; reading again");
                }
                Err(error) => return Err(self.kube()(error)),
            }
        }
        Err(LeaseError::Contended)
    }
}

/// The Lease kept for an active sequencer: renewed every `every` until
/// [`superseded`](Self::superseded) says a higher epoch is recorded.
#[derive(Debug)]
pub struct Fence {
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    /// Stops renewing when the fence is dropped without `stop` or `release` (an error path).
    _stop_on_drop: DropGuard,
    /// `Some(reason)` once this sequencer was superseded.
    superseded: watch::Receiver<Option<String>>,
    lease: SequencerLease,
    epoch: u64,
}

impl Fence {
    /// Records `epoch` and keeps renewing it in the background. Failures of the API are logged
    /// and retried (the JetStream lease stays authoritative); only a higher epoch ends it.
    pub fn start(lease: SequencerLease, epoch: u64, address: String, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let (superseded_tx, superseded) = watch::channel(None);
        let task = tokio::spawn({
            let (lease, stop) = (lease.clone(), stop.clone());
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => return,
                    }
                    match lease.renew(epoch, &address).await {
                        Ok(record) => {
                            metrics::gauge!("verity_sequencer_k8s_lease_transitions")
                                .set(f64::from(record.transitions));
                        }
                        Err(error @ LeaseError::Superseded { .. }) => {
                            tracing::error!(%error, "superseded according to the Kubernetes Lease");
                            let _ = superseded_tx.send(Some(error.to_string()));
                            return;
                        }
                        Err(error) => {
                            metrics::counter!("verity_sequencer_k8s_lease_failures_total")
                                .increment(1);
                            tracing::warn!(%error, "cannot write the Kubernetes Lease; retrying");
                        }
                    }
                }
            }
        });
        Self {
            task,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            superseded,
            lease,
            epoch,
        }
    }

    /// Resolves, with the reason, once a higher epoch is recorded (never otherwise).
    pub async fn superseded(&self) -> String {
        let mut superseded = self.superseded.clone();
        match superseded.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The renewing task ended without a reason: it was stopped, nothing superseded.
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops renewing (a step-down: the record stays until the next sequencer overwrites it).
    pub fn stop(self) {
        self.stop.cancel();
        self.task.abort();
    }

    /// Stops renewing and gives the Lease up (a planned stop).
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Err(error) = self.lease.release(self.epoch).await {
            tracing::warn!(%error, "could not release the Kubernetes Lease");
        }
    }
}
