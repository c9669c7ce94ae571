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

fn main() {
    let seconds = std::env::var("VERITY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let block_ms = std::env::var("VERITY_BENCH_BLOCK_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    verity_e2e::bench_runtime().block_on(async {
        println!(
            "devnet of {} on {} cores, two provers, 8 steps per proof, {} s blocks, one chunk per block",
            verity_e2e::verity_devnet::default_bin_dir().display(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            block_ms as f64 / 1000.0,
        );
        for quorum in [1, 2] {
            measure(quorum, seconds, block_ms).await;
        }
    });
}
