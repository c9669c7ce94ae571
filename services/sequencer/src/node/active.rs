//! The active sequencer: the producer on its threads, the publisher, the lease renewal and the
//! Kubernetes fence, until a planned stop (publish everything, release the lease) or deposition.

use super::*;

impl Node {
    /// The active sequencer: produce, publish, renew; until `stop` or deposed.
    pub(super) async fn active(
        self,
        config: &Config,
        renewer: Renewer,
        epoch: u64,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        let producer = {
            let (db, spec, rules, key) = (
                self.db.clone(),
                (*self.spec).clone(),
                self.rules.clone(),
                self.key.clone(),
            );
            let (fee_recipient, max_txs, max_bytes, threads) = (
                self.fee_recipient,
                config.max_mini_block_txs,
                config.max_mini_block_bytes,
                config.execution_threads(),
            );
            let mut producer =
                blocking(move || Producer::open(db, spec, &rules, key, fee_recipient, max_txs))
                    .await??;
            producer.set_execution_threads(threads);
            producer.set_max_bytes(max_bytes);
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
        let publish_stop = CancellationToken::new();
        // Any early return stops the publisher too.
        let _publish_stop_on_drop = publish_stop.clone().drop_guard();
        let mut publisher = tokio::spawn(publish_until_stopped(
            self.shared.clone(),
            self.js.clone(),
            self.stream.clone(),
            config.max_in_flight,
            publish_stop.clone(),
        ));
        let deposed = renewer.lost.clone();
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
            _ = stop.cancelled() => Ok(()),
            reason = async {
                match &fence {
                    Some(fence) => fence.superseded().await,
                    None => std::future::pending().await,
                }
            } => Err(anyhow::anyhow!("deposed: {reason}; stepping down")),
            _ = failed.notified() => Err(anyhow::anyhow!("the producer stopped on an error")),
            _ = deposed.cancelled() => Err(anyhow::anyhow!(
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
        let storage_full = match &produced {
            Ok(Err(error)) => match error.downcast_ref::<producer::ProducerError>() {
                Some(full @ producer::ProducerError::StorageFull(_)) => Some(full.to_string()),
                _ => None,
            },
            _ => None,
        };
        if let Some(reason) = &storage_full {
            // Not a reason to step down hard: everything committed stands. It is published
            // and the lease handed over below (a standby with room may take over); the node
            // then reports why until restarted with room.
            tracing::error!(reason, "stopped producing");
            self.shared.set_storage_full(reason.clone());
        } else {
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
        }
        // A planned stop or a full database: publish everything produced, then hand the lease
        // over.
        let head = self.head.borrow().last_seq;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.published() < head
            && Instant::now() < deadline
            && !publisher.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        publish_stop.cancel();
        let published = publisher
            .await
            .map_err(|e| anyhow::anyhow!("the publisher panicked: {e}"))?;
        renewer.release().await;
        if let Some(fence) = fence {
            fence.release().await;
        }
        published?;
        if storage_full.is_some() {
            stop.cancelled().await;
        }
        Ok(())
    }
}

/// Publishes until `stop`, retrying after transient errors; ends with an error when deposed.
async fn publish_until_stopped(
    shared: Arc<SharedState>,
    js: jetstream::Context,
    mut stream: Stream,
    max_in_flight: usize,
    stop: CancellationToken,
) -> Result<(), PublishError> {
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    // The event whose message id the stream refused as in process, and the attempt it goes
    // out under next: after a leader change, the new leader may hold the id for the whole
    // de-duplication window (2 min) and refuse every retry under it.
    let mut fresh_id: Option<(u64, u32)> = None;
    loop {
        let published = publish::publish(
            shared.clone(),
            &js,
            &mut stream,
            max_in_flight,
            fresh_id,
            &stop,
        )
        .await;
        match published {
            Ok(()) => return Ok(()),
            Err(PublishError::Deposed(reason)) => return Err(PublishError::Deposed(reason)),
            Err(error) => {
                // An id refused as in process goes out under the next fresh id; the
                // compare-and-set still stores the event once.
                if let PublishError::IdInProcess { seq } = error {
                    let attempt = match fresh_id {
                        Some((last, attempt)) if last == seq => attempt + 1,
                        _ => 1,
                    };
                    fresh_id = Some((seq, attempt));
                }
                tracing::warn!(%error, ?fresh_id, "publishing interrupted; resuming from the stream head");
                metrics::counter!("verity_sequencer_publish_interruptions_total").increment(1);
                backoff.wait(&stop).await;
                if stop.is_cancelled() {
                    return Ok(());
                }
            }
        }
    }
}

/// The Lease of `--k8s-lease`, with its namespace, identity and API server resolved.
pub(super) async fn kubernetes_lease(
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
