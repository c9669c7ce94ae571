//! Renewing the sequencer lease while active.

use super::*;

/// Renews the lease in the background while this node is active.
pub(super) struct Renewer {
    task: tokio::task::JoinHandle<Option<(u64, Holder, LeaseSigner)>>,
    stop: CancellationToken,
    /// Stops renewing when the renewer is dropped on a path that neither stops nor releases it
    /// (an error while active): the lease then expires and a standby takes over.
    _stop_on_drop: DropGuard,
    /// Cancelled when the lease was lost.
    pub(super) lost: CancellationToken,
    store: kv::Store,
}

/// What signs this node's lease entries and checks others'.
pub(super) struct LeaseSigner {
    pub(super) key: SigningKey,
    pub(super) chain_id: u64,
    pub(super) rules: Arc<Sequencing>,
}

impl Renewer {
    pub(super) fn start(
        store: kv::Store,
        signer: LeaseSigner,
        holder: Holder,
        revision: u64,
        every: Duration,
        ttl: Duration,
        shared: Arc<SharedState>,
    ) -> Self {
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        let task = tokio::spawn({
            let store = store.clone();
            let (stop, lost) = (stop.clone(), lost.clone());
            async move {
                let mut holder = holder;
                let mut revision = revision;
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.cancelled() => return Some((revision, holder, signer)),
                    }
                    let sent = Instant::now();
                    // Every renewal is signed anew with a higher count: a standby sees the
                    // holder alive only in a renewal it has not seen before.
                    holder = holder.renewed(&signer.key, signer.chain_id);
                    match lease::write(&store, &holder, Some(revision)).await {
                        Ok(next) => {
                            revision = next;
                            shared.hold_lease_until(sent + ttl / 2);
                        }
                        Err(LeaseError::Lost { .. }) => {
                            if let Some(next) = reclaim(&store, &signer.rules, &holder, ttl).await {
                                revision = next;
                                shared.hold_lease_until(sent + ttl / 2);
                                continue;
                            }
                            tracing::error!("the sequencer lease was taken by another sequencer");
                            shared.hold_lease_until(sent);
                            lost.cancel();
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
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            lost,
            store,
        }
    }

    /// Stops renewing (the lease then expires).
    pub(super) fn stop(self) {
        self.stop.cancel();
        self.task.abort();
    }

    /// Stops renewing and gives the lease up with a signed release, if it is still ours.
    pub(super) async fn release(self) {
        self.stop.cancel();
        if let Ok(Some((revision, holder, signer))) = self.task.await {
            let release = holder.released(&signer.key, signer.chain_id);
            if let Err(error) = lease::release(&self.store, &release, revision).await {
                tracing::warn!(%error, "could not release the sequencer lease; it will expire");
            }
        }
    }
}

/// The entry changed under an active sequencer's renewal. Unless a holder of a later epoch
/// signed it (a real takeover) or another process with this node's key and epoch did (a
/// restarted node while this one was cut off: the older one steps down, never both
/// renewing), it is not another holder's: an entry nobody signed, a deletion, or an older
/// epoch's or this process's own signed entry written again. Then the lease is still this
/// node's and it writes it back, retrying for up to `ttl` while somebody keeps writing.
/// Returns the new revision, or `None` when the lease is lost.
async fn reclaim(
    store: &kv::Store,
    rules: &Sequencing,
    holder: &Holder,
    ttl: Duration,
) -> Option<u64> {
    let deadline = Instant::now() + ttl;
    while Instant::now() < deadline {
        let entry = match lease::read(store, rules).await {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(%error, "cannot read the sequencer lease");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let (written, what) = match &entry {
            Some(entry) => match &entry.holder {
                Some(other) if other.epoch > holder.epoch => return None,
                Some(other)
                    if (other.sequencer, other.epoch) == (holder.sequencer, holder.epoch)
                        && other.instance != holder.instance =>
                {
                    return None;
                }
                Some(other) if other == holder => return Some(entry.revision),
                Some(_) => (
                    lease::write(store, holder, Some(entry.revision)).await,
                    "an earlier signed entry written again".to_string(),
                ),
                None => (
                    lease::write(store, holder, Some(entry.revision)).await,
                    entry.refused.clone().unwrap_or_else(|| "deleted".into()),
                ),
            },
            None => (
                lease::write(store, holder, None).await,
                "removed".to_string(),
            ),
        };
        match written {
            Ok(next) => {
                metrics::counter!("verity_sequencer_lease_reclaims_total").increment(1);
                tracing::warn!(
                    replaced = what,
                    "wrote back a sequencer lease entry that was not another holder's"
                );
                return Some(next);
            }
            Err(LeaseError::Lost { .. }) => continue,
            Err(LeaseError::Bus(error)) => {
                tracing::warn!(%error, "cannot write the sequencer lease back");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use verity_primitives::governance::Epoch;

    use super::*;

    /// When its renewal finds the entry changed, the active sequencer writes its own back over
    /// anything that is not another holder's (an unsigned entry, a deletion, its own older
    /// entry), and steps down for another process of its own key and epoch (a restarted node
    /// while this one was cut off), so two processes never renew against each other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reclaim_writes_back_all_but_another_holders_entry() {
        let dir = tempfile::tempdir().unwrap();
        let server = verity_bus::server::NatsServer::start(dir.path())
            .await
            .unwrap();
        let (_client, js) = verity_bus::connect(server.url(), "renewal-test")
            .await
            .unwrap();
        let store = lease::lease_store(&js).await.unwrap();
        let key = SigningKey::random();
        let rules = Sequencing {
            chain_id: 7,
            governance: None,
            genesis: Epoch {
                number: 0,
                sequencer: key.address(),
            },
        };
        let ttl = Duration::from_secs(1);
        let older = Holder::signed(&key, 7, 0, "http://127.0.0.1:1".into(), None);
        let revision = lease::write(&store, &older, None).await.unwrap();
        let mine = older.renewed(&key, 7);
        lease::write(&store, &mine, Some(revision)).await.unwrap();

        // Something nobody signed, then a deletion, then this process's own older entry.
        store.put(lease::LEASE_KEY, "junk".into()).await.unwrap();
        let revision = reclaim(&store, &rules, &mine, ttl).await.expect("junk");
        store.delete(lease::LEASE_KEY).await.unwrap();
        let revision_after_deletion = reclaim(&store, &rules, &mine, ttl)
            .await
            .expect("a deletion");
        assert!(revision_after_deletion > revision);
        lease::write(&store, &older, Some(revision_after_deletion))
            .await
            .unwrap();
        reclaim(&store, &rules, &mine, ttl)
            .await
            .expect("an older entry");
        let entry = lease::read(&store, &rules).await.unwrap().unwrap();
        assert_eq!(entry.holder, Some(mine.clone()), "written back");

        // A restarted process of the same key and epoch: this one steps down.
        let restarted = Holder::signed(&key, 7, 0, "http://127.0.0.1:2".into(), None);
        lease::write(&store, &restarted, Some(entry.revision))
            .await
            .unwrap();
        assert_eq!(reclaim(&store, &rules, &mine, ttl).await, None);
        let entry = lease::read(&store, &rules).await.unwrap().unwrap();
        assert_eq!(entry.holder, Some(restarted), "left to the other process");
    }
}
