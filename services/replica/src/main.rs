//! `verity-replica`: wiring only; the logic is in the library.

use clap::Parser;
use verity_replica::{Config, Replica};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = verity_telemetry::init("replica", &config.telemetry).await?;
    let replica = Replica::open(config).await?;
    replica.serve(verity_telemetry::shutdown_signal()).await
}
