//! The prover autoscaler's controller: every interval it reads the pool's job consumer on
//! `VERITY_CHUNK_JOBS` (its pending and unacknowledged jobs are the backlog; the stream's last
//! sequence every job ever published) and the prover Deployment (desired and ready replicas), asks [`Scaler`] and,
//! when the size changes, patches the Deployment's `scale` subresource. For clusters without KEDA; the approach of zkSync's prover
//! autoscaler (queue depth → workers, with cooldowns and bounds).
//!
//! RBAC it needs, in the Deployment's namespace: `get` on the Deployment and `patch` on its
//! `deployments/scale`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};

use crate::scale::{Decision, Policy, Reason, Sample, Scaler};

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum AutoscalerError {
    /// The Kubernetes API refused or failed a call.
    #[error("Kubernetes API: {action} deployment {name}: {source}")]
    Kube {
        /// What was attempted.
        action: &'static str,
        /// The Deployment.
        name: String,
        /// The client's error.
        source: kube::Error,
    },
    /// The job queue could not be read.
    #[error("job queue: {0}")]
    Queue(String),
    /// The policy is inconsistent.
    #[error("invalid policy: {0}")]
    Policy(String),
}

/// The prover Deployment, through its `scale` subresource.
#[derive(Clone)]
pub struct ScaleTarget {
    api: Api<Deployment>,
    name: String,
}

impl std::fmt::Debug for ScaleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScaleTarget")
            .field("name", &self.name)
            .finish()
    }
}

impl ScaleTarget {
    /// The Deployment `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    fn error(&self, action: &'static str) -> impl FnOnce(kube::Error) -> AutoscalerError + '_ {
        move |source| AutoscalerError::Kube {
            action,
            name: self.name.clone(),
            source,
        }
    }

    /// Checks that the Deployment exists (a clear error at start instead of one per interval).
    pub async fn check(&self) -> Result<(), AutoscalerError> {
        self.api
            .get(&self.name)
            .await
            .map(|_| ())
            .map_err(self.error("get"))
    }

    /// The Deployment's desired replicas and its ready ones (pods still scheduling or loading
    /// their parameters prove nothing yet).
    pub async fn replicas(&self) -> Result<(u32, u32), AutoscalerError> {
        let deployment = self.api.get(&self.name).await.map_err(self.error("get"))?;
        let count = |n: Option<i32>| n.map_or(0, |r| u32::try_from(r).unwrap_or(0));
        let desired = count(deployment.spec.as_ref().and_then(|s| s.replicas));
        let ready = count(deployment.status.as_ref().and_then(|s| s.ready_replicas));
        Ok((desired, ready))
    }

    /// Sets the desired replicas; returns what the API server recorded.
    pub async fn scale(&self, replicas: u32) -> Result<u32, AutoscalerError> {
        let replicas = i32::try_from(replicas).unwrap_or(i32::MAX);
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        let scale = self
            .api
            .patch_scale(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(self.error("scale"))?;
        Ok(scale
            .spec
            .and_then(|s| s.replicas)
            .map_or(0, |r| u32::try_from(r).unwrap_or(0)))
    }
}

/// Reads the pool's job consumer `consumer` on the jobs stream: (backlog, finished). The
/// backlog is what the pool has not finished: jobs not yet delivered to it and jobs delivered
/// but not acknowledged (being proven, or handed back until a takeover deadline: a pool ranked
/// after others for a chunk holds that job until then, so the backlog overstates the proving
/// work by those). Before any worker created the consumer, every stored job is backlog.
pub async fn read_queue(
    jobs: &mut async_nats::jetstream::stream::Stream,
    consumer: &str,
) -> Result<(u64, u64), AutoscalerError> {
    let info = jobs
        .info()
        .await
        .map_err(|e| AutoscalerError::Queue(e.to_string()))?;
    let published = info.state.last_sequence;
    let stored = info.state.messages;
    let backlog = match jobs.consumer_info(consumer).await {
        Ok(consumer) => consumer.num_pending + consumer.num_ack_pending as u64,
        Err(error)
            if error.kind() == async_nats::jetstream::context::ConsumerInfoErrorKind::NotFound =>
        {
            stored
        }
        Err(error) => return Err(AutoscalerError::Queue(error.to_string())),
    };
    Ok((backlog, published.saturating_sub(backlog)))
}

/// One step of the controller: sample, decide, apply. Returns the decision.
pub async fn step(
    scaler: &mut Scaler,
    target: &ScaleTarget,
    at: Duration,
    backlog: u64,
    finished: u64,
) -> Result<Decision, AutoscalerError> {
    let (current, ready) = target.replicas().await?;
    let decision = scaler.observe(
        Sample {
            at,
            backlog,
            finished,
        },
        current,
        ready,
    );
    metrics::gauge!("verity_autoscaler_backlog_jobs").set(backlog as f64);
    metrics::gauge!("verity_autoscaler_current_replicas").set(f64::from(current));
    metrics::gauge!("verity_autoscaler_ready_replicas").set(f64::from(ready));
    metrics::gauge!("verity_autoscaler_needed_replicas").set(f64::from(decision.needed));
    metrics::gauge!("verity_autoscaler_worker_jobs_per_second").set(decision.worker_rate);
    if decision.replicas != current {
        let set = target.scale(decision.replicas).await?;
        metrics::counter!("verity_autoscaler_scalings_total", "reason" => decision.reason.as_str())
            .increment(1);
        tracing::info!(
            from = current,
            to = set,
            backlog,
            needed = decision.needed,
            worker_jobs_per_second = decision.worker_rate,
            reason = decision.reason.as_str(),
            "scaled the prover pool"
        );
    } else if matches!(decision.reason, Reason::UpCooldown | Reason::DownCooldown) {
        tracing::debug!(
            current,
            needed = decision.needed,
            reason = decision.reason.as_str(),
            "holding"
        );
    }
    Ok(decision)
}

/// Runs the controller every `interval` until `stop` is cancelled. Errors of one interval are
/// logged and counted; the next interval tries again.
pub async fn run(
    policy: Policy,
    target: ScaleTarget,
    (mut jobs, consumer): (async_nats::jetstream::stream::Stream, String),
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), AutoscalerError> {
    policy.validate().map_err(AutoscalerError::Policy)?;
    let mut scaler = Scaler::new(policy);
    let origin = Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let result = match read_queue(&mut jobs, &consumer).await {
            Ok((backlog, finished)) => {
                step(&mut scaler, &target, origin.elapsed(), backlog, finished).await
            }
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            metrics::counter!("verity_autoscaler_errors_total").increment(1);
            tracing::warn!(%error, "autoscaler interval failed; trying again next interval");
        }
    }
}
