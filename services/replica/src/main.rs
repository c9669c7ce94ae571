//! `verity-replica`: wiring only; the logic is in the library.

use clap::Parser;
use verity_replica::{Config, Replica};

/// mimalloc, as in every Verity binary: under load glibc's malloc took 10-20 % of a service's
/// CPU in profiles (ADR 0008).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = verity_telemetry::init("replica", &config.telemetry).await?;
    let replica = Replica::open(config).await?;
    replica.serve(verity_telemetry::shutdown_signal()).await
}
