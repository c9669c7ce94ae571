//! The chain end to end under `verity bench` (`make bench`; printed and written to
//! docs/benchmarks.md, never asserted): a release devnet on this machine (proving off, 10 ms
//! mini-blocks, 1 s blocks of 300M gas so that 10,000 transfers/s fit), loaded by the release
//! `verity bench` through the JSON-RPC gateway with `realtime_sendRawTransaction`. The load
//! generator, NATS and every service share the machine's cores.
//!
//! `VERITY_BENCH_SECONDS` (default 60) is the length of the 10,000 transfers/s run; the other
//! runs take a third of it.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;

use serde_json::Value;
use verity_e2e::{TestNet, verity_devnet};
use verity_workload::report;

fn main() {
    let seconds: u64 = std::env::var("VERITY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let short = (seconds / 3).max(5);
    let runtime = verity_e2e::bench_runtime();
    runtime.block_on(async {
        let net = TestNet::start(|o| {
            o.gas_limit = 300_000_000;
            o.log_filter = "info".into();
        })
        .await
        .unwrap();
        let url = net.devnet.rpc_url();
        println!(
            "devnet of {} on {} cores, 10 ms mini-blocks, 1 s blocks of 300M gas, proving off",
            verity_devnet::default_bin_dir().display(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let runs: Vec<(String, Vec<String>)> = [
            ("transfers", "1000", short, "2000"),
            ("transfers", "5000", short, "5000"),
            ("transfers", "10000", seconds, "5000"),
            ("erc20", "2000", short, "2000"),
            ("counter", "2000", short, "2000"),
            ("mixed", "2000", short, "2000"),
        ]
        .into_iter()
        .map(|(workload, rate, duration, accounts)| {
            (
                format!("{workload}, open loop {rate}/s for {duration} s"),
                [
                    "--workload",
                    workload,
                    "--rate",
                    rate,
                    "--duration",
                    &duration.to_string(),
                    "--accounts",
                    accounts,
                ]
                .map(str::to_owned)
                .to_vec(),
            )
        })
        .chain(std::iter::once((
            "transfers, closed loop, 64 clients".to_owned(),
            [
                "--workload",
                "transfers",
                "--closed-loop",
                "64",
                "--count",
                "20000",
                "--accounts",
                "2000",
            ]
            .map(str::to_owned)
            .to_vec(),
        )))
        .collect();
        let mut rows = Vec::new();
        let mut breakdowns = Vec::new();
        for (name, args) in runs {
            println!("\n{name}");
            let Some(report) = verity_e2e::verity_bench(&url, net.dir.path(), &args).await else {
                rows.push(format!("| {name} | failed | | | | | | |"));
                continue;
            };
            let latency = |p: &str| report["latency_ms"][p].as_f64().unwrap_or_default();
            let errors: u64 = report["errors"]
                .as_object()
                .map(|e| e.values().filter_map(Value::as_u64).sum())
                .unwrap_or_default();
            rows.push(format!(
                "| {name} | {}/{} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {errors} |",
                report["receipts"],
                report["sent"],
                report["tps"].as_f64().unwrap_or_default(),
                report["gas_per_second"].as_f64().unwrap_or_default() / 1e6,
                latency("p50"),
                latency("p99"),
                latency("max"),
            ));
            if name.starts_with("transfers, open loop") {
                breakdowns.push(breakdown(&name, &report));
            }
        }
        net.stop().await.unwrap();
        let body = format!(
            "Command: `cargo bench -p verity-e2e --bench load` (part of `make bench`, release \
             binaries). Machine: {}. Date: {}. Whole devnet, NATS and `verity bench` on this \
             machine; proving off; 10 ms mini-blocks, 1 s blocks of 300M gas; latency from the \
             moment a transaction was due to its receipt (`realtime_sendRawTransaction`).\n\n\
             | run | receipts/sent | tx/s | Mgas/s | p50 ms | p99 ms | max ms | errors |\n\
             |---|---|---|---|---|---|---|---|\n{}\n\n\
             Per-stage breakdown (`verity bench` scrapes every service's histograms before and \
             after a run; p50/p99 interpolated inside histogram buckets; the `age` stages are the \
             mini-block's age since the sequencer started it, so they add up along the path):\n\n{}",
            report::machine(),
            report::today(),
            rows.join("\n"),
            breakdowns.join("\n")
        );
        println!("\n{body}");
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
        match report::write_section(&doc, "load", &body) {
            Ok(()) => println!("written to {}", doc.display()),
            Err(e) => println!("could not write {}: {e}", doc.display()),
        }
    });
}

/// A run's per-stage breakdown as a markdown table.
fn breakdown(name: &str, report: &Value) -> String {
    let mut out = format!(
        "{name}:\n\n| service | stage | count | mean ms | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n"
    );
    for stage in report["stages"].as_array().into_iter().flatten() {
        let ms = |key: &str| stage[key].as_f64().unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} |\n",
            stage["service"].as_str().unwrap_or_default(),
            stage["stage"].as_str().unwrap_or_default(),
            stage["count"],
            ms("mean_ms"),
            ms("p50_ms"),
            ms("p99_ms"),
        ));
    }
    let seconds = report["seconds"].as_f64().unwrap_or(1.0).max(1e-9);
    let receipts = report["receipts"].as_f64().unwrap_or(1.0).max(1.0);
    let cpu: Vec<String> = report["cpu"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let used = c["cpu_seconds"].as_f64().unwrap_or_default();
            format!(
                "{} {:.2} ({:.0} us/tx)",
                c["service"].as_str().unwrap_or_default(),
                used / seconds,
                used / receipts * 1e6
            )
        })
        .collect();
    out.push_str(&format!("\nCPU cores used: {}\n", cpu.join(", ")));
    out
}
