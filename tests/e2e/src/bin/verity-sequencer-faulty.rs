//! Test-only: `verity-sequencer` that lies, for the adversarial end-to-end scenarios. Mini-block
//! `VERITY_FAULT_TAMPER_MINI_BLOCK` gets an extra write crediting
//! [`verity_e2e::FRAUD_BENEFICIARY`] with 1 ETH it never paid for; with
//! `VERITY_FAULT_TRUST_SENDERS` set it executes forwarded transactions as whatever sender they
//! claim. Everything else is the real sequencer. It exists only in this test crate (the `fault-injection` feature of
//! verity-sequencer is enabled nowhere else).

use std::sync::Arc;

use alloy_primitives::U256;
use verity_sequencer::{Config, Sequencer};
use verity_server::{CancellationToken, Service};

/// The real sequencer, told to tamper once it is open.
struct Faulty(Sequencer);

impl Service for Faulty {
    type Config = Config;
    const NAME: &'static str = "sequencer";
    async fn open(config: Config) -> anyhow::Result<Self> {
        let target: Option<u64> = std::env::var("VERITY_FAULT_TAMPER_MINI_BLOCK")
            .ok()
            .and_then(|v| v.parse().ok());
        let mut sequencer = Sequencer::open(config).await?;
        if let Some(target) = target {
            sequencer.tamper_with(Arc::new(move |number, diff| {
                if number == target {
                    let credit = diff
                        .accounts
                        .entry(verity_e2e::FRAUD_BENEFICIARY)
                        .or_default();
                    credit.balance = Some(U256::from(1_000_000_000_000_000_000u128));
                }
            }));
        }
        if std::env::var_os("VERITY_FAULT_TRUST_SENDERS").is_some() {
            sequencer.trust_forwarded_senders();
        }
        Ok(Self(sequencer))
    }
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        self.0.serve(stop).await
    }
}

verity_server::main!(Faulty);
