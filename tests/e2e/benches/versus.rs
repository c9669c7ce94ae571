//! The same load against anvil and against Verity, measured in one run (issue 26; `make bench`,
//! printed and written to docs/benchmarks.md, never asserted).
//!
//! The load: `VERITY_VERSUS_COUNT` (default 20,000) transfers pre-signed from 400 senders, sent
//! through the node's JSON-RPC as batches of 200 `eth_sendRawTransaction` calls, 4 batches in
//! flight, until every sender's nonce shows its last transaction included (`verity bench
//! --batch`, which uses standard methods only). Then the same with ERC-20 transfers.
//!
//! - anvil 1.7.1 (the npm package `@foundry-rs/anvil`, a benchmark and test dependency in
//!   `tests/e2e/clients`), one process, 1 s blocks of 300M gas, its first dev account funding.
//! - Verity: the whole devnet of the release binaries (NATS, sequencer, ingress, replica,
//!   gateway; proving off; 10 ms mini-blocks, 1 s blocks of the devnet's default gas limit).
//!
//! Everything, the load generator included, shares the machine's cores.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{path::Path, time::Duration};

use serde_json::Value;
use verity_e2e::{TestNet, client_script, verity_devnet};
use verity_workload::report;

/// anvil's first dev account (the mnemonic "test test ... junk"), which it funds at start.
const ANVIL_FUNDER: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

fn main() {
    let count: u64 = std::env::var("VERITY_VERSUS_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let runtime = verity_e2e::bench_runtime();
    runtime.block_on(async {
        let loads: Vec<(&str, Vec<String>)> = ["transfers", "erc20"]
            .into_iter()
            .map(|workload| {
                (
                    workload,
                    [
                        "--workload",
                        workload,
                        "--batch",
                        "200",
                        "--batches-in-flight",
                        "4",
                        "--count",
                        &count.to_string(),
                        "--accounts",
                        "400",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                )
            })
            .collect();
        let mut results: Vec<(String, &str, Option<Value>)> = Vec::new();

        // anvil.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let anvil = client_script("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        let mut child = tokio::process::Command::new(&anvil)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--block-time",
                "1",
                "--gas-limit",
                "300000000",
                "--silent",
            ])
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        wait_for_rpc(&url).await;
        let version = anvil_version(&anvil).await;
        println!("anvil {version} at {url}");
        let nowhere = tempfile::tempdir().unwrap();
        for (workload, args) in &loads {
            let mut args = args.clone();
            args.extend(["--funder-key".to_owned(), ANVIL_FUNDER.to_owned()]);
            let report = verity_e2e::verity_bench(&url, nowhere.path(), &args).await;
            results.push((format!("anvil {version}"), workload, report));
        }
        let _ = child.kill().await;

        // Verity.
        let net = TestNet::start(|o| {
            o.gas_limit = verity_primitives::chain_spec::REALTIME_GAS_LIMIT;
            o.log_filter = "info".into();
        })
        .await
        .unwrap();
        let url = net.devnet.rpc_url();
        println!(
            "Verity devnet of {} at {url}",
            verity_devnet::default_bin_dir().display()
        );
        for (workload, args) in &loads {
            let report = verity_e2e::verity_bench(&url, net.dir.path(), args).await;
            results.push(("Verity devnet (release)".to_owned(), workload, report));
        }
        net.stop().await.unwrap();

        let tps = |node: &str, workload: &str| {
            results
                .iter()
                .find(|(n, w, _)| n.starts_with(node) && *w == workload)
                .and_then(|(_, _, r)| r.as_ref())
                .and_then(|r| r["tps"].as_f64())
        };
        let rows: Vec<String> = results
            .iter()
            .map(|(node, workload, report)| match report {
                None => format!("| {node} | {workload} | failed | | | | | |"),
                Some(r) => {
                    let errors: u64 = r["errors"]
                        .as_object()
                        .map(|e| e.values().filter_map(Value::as_u64).sum())
                        .unwrap_or_default();
                    let intake = r["intake_seconds"].as_f64().unwrap_or_default();
                    format!(
                        "| {node} | {workload} | {}/{} | {:.0} | {:.0} | {:.0} | {:.0} | {errors} |",
                        r["receipts"],
                        r["sent"],
                        r["tps"].as_f64().unwrap_or_default(),
                        r["sent"].as_f64().unwrap_or_default() / intake.max(1e-9),
                        r["latency_ms"]["p50"].as_f64().unwrap_or_default(),
                        r["latency_ms"]["p99"].as_f64().unwrap_or_default(),
                    )
                }
            })
            .collect();
        let ratios: Vec<String> = ["transfers", "erc20"]
            .iter()
            .filter_map(|w| {
                let (ours, theirs) = (tps("Verity", w)?, tps("anvil", w)?);
                Some(format!("{w} {:.2}x", ours / theirs.max(1e-9)))
            })
            .collect();
        let body = format!(
            "Command: `cargo bench -p verity-e2e --bench versus` (part of `make bench`, release \
             binaries). Machine: {}. Date: {}. {count} transactions from 400 senders, pre-signed, \
             sent as JSON-RPC batches of 200 `eth_sendRawTransaction` (4 batches in flight) by \
             `verity bench --batch`, which then reads every sender's nonce until all are \
             included; anvil with 1 s blocks of 300M gas, Verity's devnet with proving off, \
             10 ms mini-blocks and 1 s blocks of 1 Ggas. Node, NATS and load generator share the \
             machine. tx/s counts from the first send to the last inclusion seen; intake is what \
             the node answered per second while the batches went in; inclusion latency is from \
             a batch's send to the nonce read that showed it (reads go round all senders, so it \
             is coarse).\n\n\
             | node | load | included/sent | tx/s | intake tx/s | inclusion p50 ms | p99 ms | errors |\n\
             |---|---|---|---|---|---|---|---|\n{}\n\nVerity / anvil: {}\n",
            report::machine(),
            report::today(),
            rows.join("\n"),
            if ratios.is_empty() {
                "not measured (a run failed)".to_owned()
            } else {
                ratios.join(", ")
            }
        );
        println!("\n{body}");
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
        match report::write_section(&doc, "versus", &body) {
            Ok(()) => println!("written to {}", doc.display()),
            Err(e) => println!("could not write {}: {e}", doc.display()),
        }
    });
}

/// Waits (up to 30 s) until the node at `url` answers `eth_chainId`.
async fn wait_for_rpc(url: &str) {
    let rpc = verity_e2e::Rpc::new(url.to_owned());
    for _ in 0..300 {
        if rpc.call("eth_chainId", serde_json::json!([])).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no JSON-RPC at {url} within 30 s");
}

/// What `anvil --version` says, first line.
async fn anvil_version(anvil: &Path) -> String {
    tokio::process::Command::new(anvil)
        .arg("--version")
        .output()
        .await
        .ok()
        .map(|o| {
            // "anvil Version: 1.7.1-..." → "1.7.1-...".
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|line| line.split_whitespace().last())
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|| "version unknown".to_owned())
}
