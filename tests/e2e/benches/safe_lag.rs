//! How long a transfer waits to be `safe` (`make bench`; printed and written to
//! docs/benchmarks.md, never asserted): a devnet with two provers (two keys) and the verifier at
//! `--proof-quorum` R = 1, then R = 2, one transfer a second through the gateway for
//! `VERITY_BENCH_SECONDS` (default 60). For each transfer: from sending it to the first
//! `verity_status` poll (every 100 ms) whose `safe` is at or past its block. At R = 1 each
//! chunk is proven once (by the prover ranked first for it); at R = 2 by both, on the same two
//! cores.
//!
//! The services are the binaries next to this benchmark (`target/release` under `make bench`;
//! `VERITY_BIN_DIR` overrides).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use verity_e2e::{TestNet, dev_signer, sign_filler};

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

async fn measure(quorum: usize, seconds: u64) {
    let net = TestNet::start(|o| {
        o.proving = true;
        o.second_prover = true;
        o.proof_quorum = quorum;
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
        let (raw, hash) = sign_filler(&sender, chain_id, nonce).unwrap();
        let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
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

fn main() {
    let seconds = std::env::var("VERITY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    verity_e2e::bench_runtime().block_on(async {
        println!(
            "devnet of {} on {} cores, two provers, 8 steps per proof, 1 s blocks",
            verity_e2e::verity_devnet::default_bin_dir().display(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        for quorum in [1, 2] {
            measure(quorum, seconds).await;
        }
    });
}
