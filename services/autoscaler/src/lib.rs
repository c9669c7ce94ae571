//! Verity's prover autoscaler, for clusters without KEDA: scales the prover Deployment from the
//! `provers` consumer's backlog of `VERITY_CHUNK_JOBS` and a proof-latency target, with cooldowns and bounds
//! (`verity_kube::scale` has the policy, `verity_kube::autoscaler` the controller). Serves the
//! gRPC health service and `/metrics` like every Verity service.
//!
//! RBAC: `get` on the Deployment and `patch` on its `deployments/scale` (the chart's Role). Run one: two would both act on the same readings, harmlessly but twice.

use std::time::Duration;

use anyhow::Context as _;
use verity_kube::{
    autoscaler::{self, ScaleTarget},
    scale::Policy,
};
use verity_server::{CancellationToken, ServiceArgs};

/// Default gRPC (health) port.
pub const DEFAULT_PORT: u16 = 7700;

/// `verity-autoscaler` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// The prover Deployment to scale.
    #[arg(long, env = "VERITY_PROVER_DEPLOYMENT")]
    pub deployment: String,
    /// The durable job consumer the pool's workers share (their `--consumer`): its backlog is
    /// what the pool has to do.
    #[arg(long, env = "VERITY_JOBS_CONSUMER", default_value = "provers")]
    pub consumer: String,
    /// Its namespace (default: this pod's).
    #[arg(long, env = "VERITY_NAMESPACE")]
    pub namespace: Option<String>,
    /// The Kubernetes API server's URL (default: in-cluster, or $KUBECONFIG).
    #[arg(long, env = "VERITY_KUBE_API")]
    pub kube_api: Option<String>,
    /// Fewest workers, even when idle.
    #[arg(long, env = "VERITY_MIN_REPLICAS", default_value_t = Policy::DEFAULT.min_replicas)]
    pub min_replicas: u32,
    /// Most workers.
    #[arg(long, env = "VERITY_MAX_REPLICAS", default_value_t = Policy::DEFAULT.max_replicas)]
    pub max_replicas: u32,
    /// Seconds within which a queued job should be proved.
    #[arg(long, env = "VERITY_LATENCY_TARGET_SECS", default_value_t = Policy::DEFAULT.latency_target.as_secs())]
    pub latency_target_secs: u64,
    /// One worker's seconds per job until throughput is measured.
    #[arg(long, env = "VERITY_SECONDS_PER_JOB", default_value_t = Policy::DEFAULT.seconds_per_job.as_secs_f64())]
    pub seconds_per_job: f64,
    /// Least seconds between two scale-ups.
    #[arg(long, env = "VERITY_SCALE_UP_COOLDOWN_SECS", default_value_t = Policy::DEFAULT.scale_up_cooldown.as_secs())]
    pub scale_up_cooldown_secs: u64,
    /// Least seconds after a change before scaling down (and the window whose largest need a
    /// scale-down keeps).
    #[arg(long, env = "VERITY_SCALE_DOWN_COOLDOWN_SECS", default_value_t = Policy::DEFAULT.scale_down_cooldown.as_secs())]
    pub scale_down_cooldown_secs: u64,
    /// Seconds of busy intervals the measured per-worker rate is taken over.
    #[arg(long, env = "VERITY_RATE_WINDOW_SECS", default_value_t = Policy::DEFAULT.rate_window.as_secs())]
    pub rate_window_secs: u64,
    /// Milliseconds between two readings.
    #[arg(long, env = "VERITY_INTERVAL_MS", default_value_t = 5_000)]
    pub interval_ms: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs,
}

impl Config {
    /// The scaling policy these flags describe, checked.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        if !(self.seconds_per_job.is_finite() && self.seconds_per_job > 0.0) {
            anyhow::bail!("--seconds-per-job must be above zero");
        }
        let policy = Policy {
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            latency_target: Duration::from_secs(self.latency_target_secs),
            seconds_per_job: Duration::from_secs_f64(self.seconds_per_job),
            scale_up_cooldown: Duration::from_secs(self.scale_up_cooldown_secs),
            scale_down_cooldown: Duration::from_secs(self.scale_down_cooldown_secs),
            rate_window: Duration::from_secs(self.rate_window_secs),
        };
        policy.validate().map_err(|e| {
            anyhow::anyhow!("{e} (flags --min-replicas, --max-replicas, --latency-target-secs)")
        })?;
        Ok(policy)
    }
}

/// The autoscaler, connected to NATS and Kubernetes.
#[derive(Debug)]
pub struct Autoscaler {
    config: Config,
    policy: Policy,
    namespace: String,
    target: ScaleTarget,
    jobs: async_nats::jetstream::stream::Stream,
}

impl verity_server::Service for Autoscaler {
    type Config = Config;
    const NAME: &'static str = "autoscaler";
    /// Checks the flags, then connects to Kubernetes (and checks the Deployment) and NATS.
    async fn open(config: Config) -> anyhow::Result<Self> {
        let policy = config.policy()?;
        let namespace = config
            .namespace
            .clone()
            .or_else(verity_kube::pod_namespace)
            .context("no namespace: pass --namespace (or run in a pod)")?;
        let client = verity_kube::client(config.kube_api.as_deref())
            .await
            .context("cannot build a Kubernetes client (flag --kube-api, or in-cluster config)")?;
        let target = ScaleTarget::new(client, &namespace, &config.deployment);
        target.check().await.context("flag --deployment")?;
        let (_nats, js) = config.service.nats.connect("verity-autoscaler").await?;
        let (jobs, _) = verity_bus::proving::ensure_proving_streams(&js).await?;
        Ok(Self {
            config,
            policy,
            namespace,
            target,
            jobs,
        })
    }

    /// Scales until `stop` is cancelled.
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            policy,
            namespace,
            target,
            jobs,
        } = self;
        let security = verity_server::Security::load(
            &config.service,
            verity_server::tls::Policy::HEALTH_ONLY,
        )?;
        let server = &config.service.server;
        let (listener, addr) = server.bind(DEFAULT_PORT).await?;
        verity_server::write_ready_file(
            server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        tracing::info!(
            %addr,
            deployment = %config.deployment,
            %namespace,
            ?policy,
            "autoscaler running"
        );
        let controller = tokio::spawn(autoscaler::run(
            policy,
            target,
            (jobs, config.consumer.clone()),
            Duration::from_millis(config.interval_ms.max(10)),
            stop.clone(),
        ));
        verity_server::serve_health(listener, stop, security).await?;
        controller.await??;
        tracing::info!("autoscaler stopped");
        Ok(())
    }
}
