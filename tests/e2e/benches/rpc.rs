//! JSON-RPC figures on a whole devnet on this machine (`make bench`; printed, never asserted):
//! `realtime_sendRawTransaction` latency from submit to receipt, one client closed loop and open
//! loop at 100 and 1,000 transfers/s, and `eth_getBalance` / `eth_call` throughput against one gateway and one replica.
//!
//! The services are the binaries next to this benchmark (`target/release` under `make bench`;
//! `VERITY_BIN_DIR` overrides). The load generator, NATS and every service share the machine.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use serde_json::json;
use verity_e2e::{TestNet, dev_signer, sign_transfer};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn realtime_latency(net: &TestNet, rate: u64, seconds: u64, nonces: &mut [u64]) {
    let signers: Vec<_> = (0..nonces.len())
        .map(|i| dev_signer(net, i).unwrap())
        .collect();
    let chain_id = net.devnet.chain_id();
    let count = rate * seconds;
    let raws: Vec<String> = (0..count as usize)
        .map(|i| {
            let who = i % signers.len();
            let nonce = nonces[who];
            nonces[who] += 1;
            sign_transfer(
                &signers[who],
                chain_id,
                nonce,
                Address::repeat_byte(0x42),
                U256::from(1),
            )
            .unwrap()
            .0
        })
        .collect();
    let rpc = net.rpc();
    let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for raw in raws {
        interval.tick().await;
        let rpc = rpc.clone();
        tasks.spawn(async move {
            let sent = Instant::now();
            let answer = rpc
                .try_call("realtime_sendRawTransaction", json!([raw, 10_000]))
                .await;
            let error = match answer {
                Ok(Ok(_)) => None,
                Ok(Err(error)) => Some(error.message.chars().take(40).collect::<String>()),
                Err(error) => Some(error.to_string().chars().take(40).collect()),
            };
            (sent.elapsed(), error)
        });
    }
    let sending = started.elapsed();
    let mut latencies = Vec::with_capacity(count as usize);
    let mut failed = 0;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    while let Some(done) = tasks.join_next().await {
        let (latency, error) = done.unwrap();
        match error {
            None => latencies.push(latency),
            Some(reason) => {
                failed += 1;
                *reasons.entry(reason).or_default() += 1;
            }
        }
    }
    latencies.sort();
    println!(
        "realtime_sendRawTransaction at {rate} tx/s for {seconds} s: sent {count} in {:.1} s, {} receipts, {failed} failed; p50 {}, p99 {}, max {}",
        sending.as_secs_f64(),
        latencies.len(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0)),
    );
    for (reason, count) in reasons {
        println!("  {count} failed with: {reason}");
    }
}

/// One client sending its next transfer as soon as the previous receipt came back: the path's
/// floor and its tail, without queueing behind other senders.
async fn realtime_closed_loop(net: &TestNet, count: usize, nonces: &mut [u64]) {
    let signer = dev_signer(net, 0).unwrap();
    let chain_id = net.devnet.chain_id();
    let rpc = net.rpc();
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let (raw, _) = sign_transfer(
            &signer,
            chain_id,
            nonces[0],
            Address::repeat_byte(0x43),
            U256::from(1),
        )
        .unwrap();
        nonces[0] += 1;
        let sent = Instant::now();
        rpc.call("realtime_sendRawTransaction", json!([raw]))
            .await
            .unwrap();
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    println!(
        "realtime_sendRawTransaction, one client, closed loop, {count} transfers: p50 {}, p90 {}, p99 {}, min {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 0.0)),
    );
}

async fn read_throughput(net: &TestNet, method: &str, params: serde_json::Value, workers: usize) {
    let rpc = net.rpc();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let rpc = rpc.clone();
        let params = params.clone();
        let method = method.to_string();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                rpc.call(&method, params.clone()).await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.unwrap());
    }
    latencies.sort();
    println!(
        "{method} with {workers} concurrent clients for 5 s: {:.0} calls/s, p50 {}, p99 {}",
        latencies.len() as f64 / 5.0,
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );
}

fn main() {
    let runtime = verity_e2e::bench_runtime();
    runtime.block_on(async {
        let net = TestNet::start(|_| {}).await.unwrap();
        println!(
            "devnet of {} on {} cores, 10 ms mini-blocks, 1 s blocks, proving off",
            verity_e2e::verity_devnet::default_bin_dir().display(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let mut nonces = vec![0u64; 10];
        realtime_closed_loop(&net, 500, &mut nonces).await;
        realtime_latency(&net, 100, 10, &mut nonces).await;
        realtime_latency(&net, 1_000, 10, &mut nonces).await;
        let account = dev_signer(&net, 0).unwrap().address();
        for workers in [1, 16] {
            read_throughput(
                &net,
                "eth_getBalance",
                json!([account, "latest"]),
                workers,
            )
            .await;
            read_throughput(
                &net,
                "eth_call",
                json!([{"from": account, "to": Address::repeat_byte(0x42), "value": "0x1"}, "latest"]),
                workers,
            )
            .await;
        }
        net.stop().await.unwrap();
    });
}
