//! Sequencer failover (`make bench`; printed and written to docs/benchmarks.md, never asserted).
//!
//! - **Takeover after SIGKILL**: a release devnet with a hot standby (proving off, 10 ms
//!   mini-blocks), a steady trickle of transfers through the gateway; the active sequencer is
//!   killed with SIGKILL `VERITY_BENCH_TAKEOVERS` times (default 20) and comes back empty to
//!   stand by. Measured from the stream itself: the timestamp of the old sequencer's last
//!   mini-block before each handover to the new one's first mini-block after it (both stamped by
//!   the sequencers' clocks, which here are one clock).
//! - **Cold appointment**: the chain's sequencer stops, governance appoints a new key, and a
//!   node with that key and an empty disk starts: the time from its start to the lease, and to
//!   its first mini-block, against the size of the state (genesis accounts plus the chain so
//!   far) it rebuilds.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_primitives::{Address, U256};
use nix::sys::signal::Signal;
use serde_json::json;
use verity_e2e::{Governance, Rpc, TestNet, sign_transfer, verity_devnet::Service};
use verity_primitives::{ChainEvent, ChainEventKind};
use verity_workload::report;

/// Transfers from one dev account, one every few milliseconds, until `stop`.
async fn trickle(
    rpc: Rpc,
    signer: alloy_signer_local::PrivateKeySigner,
    chain_id: u64,
    stop: Arc<AtomicBool>,
) {
    let address = format!("{:#x}", signer.address());
    let mut nonce = None;
    let mut value = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let current = match nonce {
            Some(n) => n,
            None => match rpc
                .try_call("eth_getTransactionCount", json!([address, "pending"]))
                .await
            {
                Ok(Ok(v)) => verity_e2e::parse_quantity(&v).unwrap(),
                _ => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        value += 1;
        let (raw, _) = sign_transfer(
            &signer,
            chain_id,
            current,
            Address::repeat_byte(9),
            U256::from(value),
        )
        .unwrap();
        match rpc.try_call("eth_sendRawTransaction", json!([raw])).await {
            Ok(Ok(_)) => nonce = Some(current + 1),
            _ => nonce = None,
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
}

async fn wait_holder(
    nats: &verity_bus::NatsArgs,
    address: Address,
    within: Duration,
) -> Option<Duration> {
    verity_e2e::wait_lease_holder(nats, address, within).await
}

async fn events(nats: &verity_bus::NatsArgs) -> Vec<ChainEvent> {
    verity_e2e::chain_events(nats).await.unwrap()
}

/// The gap at each handover: old epoch's last mini-block to the new epoch's first, in ms.
fn gaps(events: &[ChainEvent]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut last_old = None;
    let mut waiting = false;
    for event in events {
        match &event.kind {
            ChainEventKind::Handover(_) => waiting = true,
            ChainEventKind::MiniBlock(mini) if waiting => {
                if let Some(old) = last_old {
                    out.push(mini.timestamp_ms.saturating_sub(old));
                }
                waiting = false;
                last_old = Some(mini.timestamp_ms);
            }
            ChainEventKind::MiniBlock(mini) => last_old = Some(mini.timestamp_ms),
            ChainEventKind::Block(_) => {}
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn takeovers(runs: usize) -> String {
    let mut net = TestNet::start(|o| {
        o.standby = true;
        o.log_filter = "info".into();
    })
    .await
    .unwrap();
    let nats = net.devnet.nats_admin().unwrap();
    let chain_id = net.devnet.chain_id();
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (1..=2)
        .map(|i| {
            tokio::spawn(trickle(
                net.rpc(),
                verity_e2e::dev_signer(&net, i).unwrap(),
                chain_id,
                stop.clone(),
            ))
        })
        .collect();
    let mut active = net.devnet.sequencer_address();
    wait_holder(&nats, active, Duration::from_secs(10))
        .await
        .unwrap();
    let mut lease_moves = Vec::new();
    for _ in 0..runs {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (victim, successor) = if active == net.devnet.sequencer_address() {
            (Service::Sequencer, net.devnet.standby_address())
        } else {
            (Service::Standby, net.devnet.sequencer_address())
        };
        net.devnet.signal(victim, Signal::SIGKILL).await.unwrap();
        match wait_holder(&nats, successor, Duration::from_secs(10)).await {
            Some(moved) => lease_moves.push(moved.as_millis() as u64),
            None => {
                println!("no takeover within 10 s; stopping");
                break;
            }
        }
        active = successor;
        std::fs::remove_dir_all(net.devnet.data_dir().join(victim.name())).unwrap();
        net.devnet.start_service(victim).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        loader.await.unwrap();
    }
    let mut gaps = gaps(&events(&nats).await);
    gaps.sort_unstable();
    lease_moves.sort_unstable();
    net.stop().await.unwrap();
    format!(
        "| takeovers | gap p50 ms | gap max ms | kill → lease moved p50 ms | max ms |\n|---|---|---|---|---|\n| {} | {} | {} | {} | {} |\n",
        gaps.len(),
        percentile(&gaps, 0.5),
        gaps.last().copied().unwrap_or_default(),
        percentile(&lease_moves, 0.5),
        lease_moves.last().copied().unwrap_or_default(),
    )
}

/// A cold appointment on a chain whose state holds `accounts` extra genesis accounts.
async fn cold_appointment(accounts: usize) -> String {
    let mut net = TestNet::start(|o| {
        o.standing_appointments = false;
        o.log_filter = "info".into();
        o.extra_genesis_accounts = accounts;
    })
    .await
    .unwrap();
    let nats = net.devnet.nats_admin().unwrap();
    let chain_id = net.devnet.chain_id();
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(trickle(
        net.rpc(),
        verity_e2e::dev_signer(&net, 1).unwrap(),
        chain_id,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    net.devnet
        .signal(Service::Sequencer, Signal::SIGTERM)
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    let governance = Governance::of(&net.devnet);
    let appointed = net.devnet.standby_address().to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, text, appointment) = governance.draft(&appointed, "appointment.json", &[]).await;
    assert!(ok, "{text}");
    for key in [1, 2] {
        let (ok, text) = governance.sign(&appointment, key).await;
        assert!(ok, "{text}");
    }
    let (ok, text) = governance.publish(&appointment).await;
    assert!(ok, "{text}");
    let events_before = events(&nats).await.len();
    let started = Instant::now();
    net.devnet.start_service(Service::Standby).await.unwrap();
    let ready = started.elapsed();
    let lease = wait_holder(
        &nats,
        net.devnet.standby_address(),
        Duration::from_secs(600),
    )
    .await
    .map(|_| started.elapsed());
    // Its first mini-block: a transfer sent now.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(trickle(
        net.rpc(),
        verity_e2e::dev_signer(&net, 2).unwrap(),
        chain_id,
        stop.clone(),
    ));
    let first_mini = loop {
        let evs = events(&nats).await;
        if evs
            .iter()
            .skip(events_before)
            .any(|e| matches!(e.kind, ChainEventKind::MiniBlock(_)))
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            break Duration::ZERO;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    net.stop().await.unwrap();
    format!(
        "| {} | {} | {} | {} | {} |\n",
        accounts + 10,
        events_before,
        ready.as_millis(),
        lease.map_or("-".into(), |d| d.as_millis().to_string()),
        first_mini.as_millis()
    )
}

fn main() {
    let runs: usize = std::env::var("VERITY_BENCH_TAKEOVERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runtime = verity_e2e::bench_runtime();
    runtime.block_on(async {
        let takeover = takeovers(runs).await;
        println!("{takeover}");
        let mut cold = String::from(
            "| state accounts | chain events | start → serving ms | start → lease ms | start → first mini-block ms |\n|---|---|---|---|---|\n",
        );
        for accounts in [0, 100_000] {
            let row = cold_appointment(accounts).await;
            println!("{row}");
            cold.push_str(&row);
        }
        let body = format!(
            "Machine: {}. Date: {}. Command: `cargo bench -p verity-e2e --bench takeover` (release \
             binaries; lease renewed every 50 ms, 300 ms to live).\n\n\
             Takeover after SIGKILL of the active sequencer under a trickle of transfers (gap: the \
             old sequencer's last mini-block to the new one's first, from their timestamps in the \
             stream):\n\n{takeover}\nCold appointment (the sequencer stopped; a new key with an \
             empty disk appointed by 2 of 3 governance keys, rebuilding genesis and the chain \
             from the stream):\n\n{cold}",
            report::machine(),
            report::today(),
        );
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
        match report::write_section(&doc, "takeover", &body) {
            Ok(()) => println!("written to {}", doc.display()),
            Err(e) => println!("could not write {}: {e}", doc.display()),
        }
    });
}
