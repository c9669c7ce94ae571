//! `verity-autoscaler`: wiring only; the logic is in `verity_kube`.

use clap::Parser;
use verity_autoscaler::{Config, run};

/// mimalloc, as in every Verity binary (ADR 0008).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = verity_telemetry::init("autoscaler", &config.telemetry).await?;
    run(config, verity_telemetry::shutdown_signal()).await
}
