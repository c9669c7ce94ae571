//! `verity-sequencer`: wiring only; the logic is in the library.

use clap::Parser;
use verity_sequencer::{Config, Sequencer};

/// mimalloc: the parallel executor allocates a transaction's state on a worker thread and frees
/// it on the producer thread; glibc's arenas serialise that (ADR 0008).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = verity_telemetry::init("sequencer", &config.telemetry).await?;
    let sequencer = Sequencer::open(config).await?;
    sequencer.serve(verity_telemetry::shutdown_signal()).await
}
