//! SIGKILL of the sequencer (which publishes its own chain) or the replica at random moments under load, over and
//! over (at least 20 kills), each restarted after a random pause. Afterwards:
//! - every transaction a client got a receipt for (`realtime_sendRawTransaction`) is in the chain
//!   and served as such;
//! - no transaction is in the chain twice, and the stream holds every event once, in order;
//! - the sequencer and the replica hold the same state (their state digests agree at the same
//!   chain position).
//!
//! The kill schedule comes from a seed printed in every failure message; `VERITY_E2E_SEED`
//! replays one.

use std::time::Duration;

use nix::sys::signal::Signal;
use verity_e2e::{Load, TestNet, verity_devnet::Service};

const KILLS: usize = 20;
const SENDERS: usize = 4;

/// xorshift64*: the schedule only needs to be replayable, not unpredictable.
pub(crate) struct Schedule(pub(crate) u64);

impl Schedule {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_receipted_transaction() {
    let seed = verity_e2e::seed();
    let mut schedule = Schedule(seed);
    let mut net = TestNet::start(|o| o.block_interval_ms = 200).await.unwrap();
    let load = Load::start(&net, 1..=SENDERS);

    let victims = [Service::Sequencer, Service::Replica];
    let mut killed = Vec::new();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for kill in 0..KILLS {
        tokio::time::sleep(schedule.millis(150, 900)).await;
        // Each service first, in random moments; then random services.
        let victim = match victims.get(kill) {
            Some(victim) => *victim,
            None => victims[(schedule.next() % victims.len() as u64) as usize],
        };
        net.devnet.signal(victim, Signal::SIGKILL).await.unwrap();
        killed.push(victim);
        tokio::time::sleep(schedule.millis(0, 400)).await;
        if let Err(error) = net.devnet.start_service(victim).await {
            net.dump_logs();
            panic!("seed {seed}: {victim} did not come back after SIGKILL: {error}");
        }
    }
    // Load on a healthy network for a moment, then stop.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (attempts, receipted) = load.stop().await;
    assert!(
        receipted.len() > 50,
        "seed {seed}: only {} of {attempts} transfers got a receipt (kills: {killed:?})",
        receipted.len()
    );

    net.assert_nothing_lost(
        &receipted,
        SENDERS,
        &format!("seed {seed} (kills: {killed:?})"),
    )
    .await;
    net.stop().await.unwrap();
}
