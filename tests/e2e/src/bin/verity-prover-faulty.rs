//! Test-only: `verity-prover` that answers the first job it works on with false fraud evidence
//! (a receipt edited in its copy of the job, signed with its registered key), then takes every
//! other job and never answers it and proves the rest (the false-accusation and silent-prover
//! scenario); or, with `VERITY_FAULT_ATTEST_ANYTHING` set, proves every job whatever its
//! re-execution found (the dishonest-prover scenario). Everything else is the real prover. It
//! exists only in this test crate (the `fault-injection` feature of verity-prover is enabled
//! nowhere else).

use verity_prover::{Config, Prover};
use verity_server::{CancellationToken, Service};

/// The real prover, told to lie once.
struct Faulty(Prover);

impl Service for Faulty {
    type Config = Config;
    const NAME: &'static str = "prover";
    async fn open(config: Config) -> anyhow::Result<Self> {
        let mut prover = Prover::open(config).await?;
        // Told to attest anything, it does that instead of accusing.
        if std::env::var_os("VERITY_FAULT_ATTEST_ANYTHING").is_none() {
            prover.accuse_falsely();
        }
        Ok(Self(prover))
    }
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        self.0.serve(stop).await
    }
}

verity_server::main!(Faulty);
