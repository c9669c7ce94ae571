//! Verity prover worker: a skeleton.
//!
//! It starts, connects to NATS, and reports health over gRPC, so that deployments and the devnet
//! already have the process. Pulling chunk jobs, stateless re-execution and halo2 proving are
//! **not built yet**; until they are, this worker does no work.

use std::future::Future;

use anyhow::Context as _;
use verity_server::ServerArgs;
use verity_telemetry::TelemetryArgs;

/// Default gRPC (health) port of a prover.
pub const DEFAULT_PORT: u16 = 7500;

/// `verity-prover` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "verity-prover",
    version,
    about = "Verity prover worker (skeleton: no proving yet)"
)]
pub struct Config {
    /// NATS server URL.
    #[arg(long, env = "VERITY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
}

/// A connected prover worker.
#[derive(Debug)]
pub struct Prover {
    config: Config,
    _client: verity_bus::NatsClient,
}

impl Prover {
    /// Connects to NATS.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let (client, _js) = verity_bus::connect(&config.nats_url, "verity-prover")
            .await
            .context("flag --nats-url / VERITY_NATS_URL")?;
        Ok(Self {
            config,
            _client: client,
        })
    }

    /// Reports health until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let listener = verity_server::bind(self.config.server.grpc_addr_or(DEFAULT_PORT)).await?;
        let addr = verity_server::local_addr(&listener);
        verity_server::write_ready_file(
            self.config.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        tracing::info!(%addr, "prover skeleton running (proving is not built yet)");
        verity_server::serve_grpc(tonic::service::Routes::default(), &[], listener, shutdown)
            .await?;
        Ok(())
    }
}
