//! How long a transfer waits to be `safe` (`make bench`; printed and written to
//! docs/benchmarks.md, never asserted): a devnet with two provers (two keys) and the verifier at
//! `--proof-quorum` R = 1, then R = 2, one transfer a second through the gateway for
//! `VERITY_BENCH_SECONDS` (default 60). For each transfer: from sending it to the first
//! `verity_status` poll (every 100 ms) whose `safe` is at or past its block. At R = 1 each
//! chunk is proven once (by the prover ranked first for it); at R = 2 by both, on the same two
//! cores.
//!
//! A chunk never spans a block, and a one-transfer chunk takes ~7.4 s to prove on two cores
//! (~15 s with both provers at once), so with the devnet's 1 s blocks the backlog only grows.
//! Here blocks are `VERITY_BENCH_BLOCK_MS` long (default 20,000) and the witness groups a
//! block's mini-blocks into one chunk (`VERITY_CHUNK_TRANSACTIONS` 10,000, `VERITY_CHUNK_IDLE_MS`
//! 3,000): a chunk of ~20 transfers between the same two accounts writes the same keys as a
//! chunk of one, so it costs one proof.
//!
//! Then a steady load (issue 23): `VERITY_BENCH_RATE` transfers a second (default 5) for
//! `VERITY_BENCH_STEADY_SECONDS` (default 600), from nine senders in turn to a new recipient
//! each (three tree writes a transfer), on the devnet as `make run` starts it (1 s blocks, one
//! prover, 8 steps per proof) with the witness grouping each block into one chunk. Every 10 s
//! it prints how far `safe` is behind `latest` (blocks, which are seconds here), and at the end
//! the rate the prover sustained: transfers in blocks that became safe, per second of the run,
//! and per prover core.
//!
//! The services are the binaries next to this benchmark (`target/release` under `make bench`;
//! `VERITY_BIN_DIR` overrides).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy_primitives::{Address, U256};
use serde_json::json;
use verity_e2e::{TestNet, dev_signer, sign_filler, sign_transfer};

/// (when, safe block) of each poll.
type Polls = Arc<Mutex<Vec<(Instant, u64)>>>;

async fn poll_safe(rpc: verity_e2e::Rpc, polls: Polls, until: Arc<Mutex<bool>>) {
    while !*until.lock().unwrap() {
        if let Ok(status) = rpc.call("verity_status", json!([])).await
            && let Some(safe) = status["safe"].as_u64()
        {
            polls.lock().unwrap().push((Instant::now(), safe));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn block_of(receipt: &serde_json::Value) -> u64 {
    verity_e2e::parse_quantity(&receipt["blockNumber"]).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn measure(quorum: usize, seconds: u64, block_ms: u64) {
    let net = TestNet::start(|o| {
        o.proving = true;
        o.second_prover = true;
        o.proof_quorum = quorum;
        o.block_interval_ms = block_ms;
        o.env.extend([
            ("VERITY_CHUNK_TRANSACTIONS".into(), "10000".into()),
            ("VERITY_CHUNK_IDLE_MS".into(), "3000".into()),
        ]);
    })
    .await
    .unwrap();
    let chain_id = net.devnet.chain_id();
    let sender = dev_signer(&net, 2).unwrap();
    let rpc = net.rpc();
    let polls: Polls = Arc::default();
    let until = Arc::new(Mutex::new(false));
    let poller = tokio::spawn(poll_safe(rpc.clone(), polls.clone(), until.clone()));
    // Warm up: the provers' keys, the first chunk proven.
    let (raw, hash) = sign_filler(&sender, chain_id, 0).unwrap();
    let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
    let first = block_of(&receipt);
    let warm = Instant::now();
    while polls.lock().unwrap().last().is_none_or(|(_, s)| *s < first) {
        assert!(warm.elapsed() < Duration::from_secs(600), "never safe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sent = Vec::new();
    for nonce in 1..=seconds {
        let tick = Instant::now();
        let (raw, _) = sign_filler(&sender, chain_id, nonce).unwrap();
        // The realtime receipt comes with the mini-block, naming the block being built (a plain
        // receipt waits for the block's seal, a whole block interval).
        let receipt = rpc
            .call("realtime_sendRawTransaction", json!([raw]))
            .await
            .unwrap();
        sent.push((tick, block_of(&receipt)));
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed())).await;
    }
    let last = sent.last().map_or(0, |(_, b)| *b);
    let waiting = Instant::now();
    while polls.lock().unwrap().last().is_none_or(|(_, s)| *s < last) {
        assert!(waiting.elapsed() < Duration::from_secs(600), "never safe");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    *until.lock().unwrap() = true;
    poller.await.unwrap();
    let polls = polls.lock().unwrap().clone();
    let mut lags: Vec<Duration> = sent
        .iter()
        .map(|(at, block)| {
            let safe_at = polls
                .iter()
                .find(|(when, safe)| when >= at && safe >= block)
                .map(|(when, _)| *when)
                .unwrap();
            safe_at - *at
        })
        .collect();
    lags.sort();
    println!(
        "R = {quorum}: {} transfers at 1/s, time to safe: median {:.1} s, p90 {:.1} s, max {:.1} s",
        lags.len(),
        percentile(&lags, 0.5).as_secs_f64(),
        percentile(&lags, 0.9).as_secs_f64(),
        lags.last().unwrap().as_secs_f64(),
    );
    net.stop().await.unwrap();
}

/// `rate` transfers a second for `seconds` on a devnet with one prover: `safe`'s lag behind
/// `latest` every 10 s, and the rate the prover sustained.
async fn steady(rate: u64, seconds: u64) {
    let net = TestNet::start(|o| {
        o.proving = true;
        o.env.extend([
            ("VERITY_CHUNK_TRANSACTIONS".into(), "100000".into()),
            ("VERITY_CHUNK_IDLE_MS".into(), "3000".into()),
        ]);
    })
    .await
    .unwrap();
    let chain_id = net.devnet.chain_id();
    let senders: Vec<_> = (1..10).map(|i| dev_signer(&net, i).unwrap()).collect();
    let mut nonces = vec![0u64; senders.len()];
    let rpc = net.rpc();
    let status = |rpc: verity_e2e::Rpc| async move {
        let status = rpc.call("verity_status", json!([])).await.unwrap();
        (
            status["latest"].as_u64().unwrap_or(0),
            status["safe"].as_u64().unwrap_or(0),
        )
    };
    // Warm up: the prover's and verifier's keys, the first chunk proven.
    let (raw, hash) = sign_filler(&senders[0], chain_id, 0).unwrap();
    let first = block_of(&rpc.send_and_wait(&raw, &hash).await.unwrap());
    nonces[0] = 1;
    let warm = Instant::now();
    while status(rpc.clone()).await.1 < first {
        assert!(warm.elapsed() < Duration::from_secs(600), "never safe");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = Instant::now();
    let interval = Duration::from_secs(1) / rate as u32;
    // Transfers sent, by block.
    let mut per_block: std::collections::BTreeMap<u64, u64> = Default::default();
    let mut report = Duration::from_secs(10);
    let mut lags = Vec::new();
    for i in 0..rate * seconds {
        let due = started + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let sender = i as usize % senders.len();
        let to = Address::left_padding_from(&(0xbe00_0000 + i).to_be_bytes());
        let (raw, _) = sign_transfer(
            &senders[sender],
            chain_id,
            nonces[sender],
            to,
            U256::from(1),
        )
        .unwrap();
        nonces[sender] += 1;
        let receipt = rpc
            .call("realtime_sendRawTransaction", json!([raw]))
            .await
            .unwrap();
        *per_block.entry(block_of(&receipt)).or_default() += 1;
        if started.elapsed() >= report {
            let (latest, safe) = status(rpc.clone()).await;
            println!(
                "{rate} transfers/s, {:>4} s: latest {latest}, safe {safe}, safe {} blocks behind",
                report.as_secs(),
                latest.saturating_sub(safe)
            );
            lags.push(latest.saturating_sub(safe));
            report += Duration::from_secs(10);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (latest, safe) = status(rpc.clone()).await;
    let proven: u64 = per_block.range(..=safe).map(|(_, n)| n).sum();
    let sent: u64 = per_block.values().sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{rate} transfers/s for {elapsed:.0} s: {sent} sent, {proven} safe; safe ends {} blocks \
         behind latest (largest lag seen {}); the prover sustained {:.2} transfers/s, {:.2} per \
         prover core ({cores} cores shared with the whole devnet)",
        latest.saturating_sub(safe),
        lags.iter().max().copied().unwrap_or(0),
        proven as f64 / elapsed,
        proven as f64 / elapsed / cores as f64,
    );
    net.stop().await.unwrap();
}

/// The number in environment variable `name`, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds = env_or("VERITY_BENCH_SECONDS", 60);
    let block_ms = env_or("VERITY_BENCH_BLOCK_MS", 20_000);
    let rate = env_or("VERITY_BENCH_RATE", 5);
    let steady_seconds = env_or("VERITY_BENCH_STEADY_SECONDS", 600);
    verity_e2e::bench_runtime().block_on(async {
        println!(
            "devnet of {} on {} cores, two provers, 8 steps per proof, {} s blocks, one chunk per block",
            verity_e2e::verity_devnet::default_bin_dir().display(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            block_ms as f64 / 1000.0,
        );
        // VERITY_BENCH_SECONDS=0 runs the steady load alone.
        for quorum in [1, 2].into_iter().filter(|_| seconds > 0) {
            measure(quorum, seconds, block_ms).await;
        }
        println!(
            "steady load: {rate} transfers/s for {steady_seconds} s, 1 s blocks, one prover, \
             8 steps per proof, one chunk per block"
        );
        steady(rate, steady_seconds).await;
    });
}
