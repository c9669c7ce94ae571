//! What authentication costs (issue 22; `make bench`, printed and written to docs/benchmarks.md,
//! never asserted): the same release devnet and the same `verity bench` runs, once with every
//! NATS client on TLS, authenticated and authorized (nkeys, per-role permissions), every gRPC call
//! over mutual TLS, once without either (`DevnetOptions::secure` off), on this machine, one after
//! the other. The cost is the drop in throughput and the rise in realtime latency, in percent.
//!
//! `VERITY_BENCH_SECONDS` (default 20) is the length of the open-loop run.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;

use verity_e2e::TestNet;
use verity_workload::report;

/// (tx/s, p50 ms, p99 ms) of one run.
type Figures = (f64, f64, f64);

fn main() {
    let seconds: u64 = std::env::var("VERITY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runs: Vec<(String, Vec<String>)> = vec![
        (
            format!("transfers, open loop 2000/s for {seconds} s"),
            [
                "--workload",
                "transfers",
                "--rate",
                "2000",
                "--duration",
                &seconds.to_string(),
                "--accounts",
                "2000",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        (
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
        ),
    ];
    let runtime = verity_e2e::bench_runtime();
    let figures: Vec<Vec<Option<Figures>>> = runtime.block_on(async {
        let mut all = Vec::new();
        for secure in [false, true] {
            let net = TestNet::start(|o| {
                o.gas_limit = 300_000_000;
                o.log_filter = "info".into();
                o.secure = secure;
            })
            .await
            .unwrap();
            let url = net.devnet.rpc_url();
            let mut row = Vec::new();
            for (name, args) in &runs {
                println!("\n{name}, {}", if secure { "secure" } else { "open" });
                row.push(
                    verity_e2e::verity_bench(&url, net.dir.path(), args)
                        .await
                        .map(|report| {
                            let latency =
                                |p: &str| report["latency_ms"][p].as_f64().unwrap_or_default();
                            (
                                report["tps"].as_f64().unwrap_or_default(),
                                latency("p50"),
                                latency("p99"),
                            )
                        }),
                );
            }
            net.stop().await.unwrap();
            all.push(row);
        }
        all
    });
    let percent = |open: f64, secure: f64| {
        if open == 0.0 {
            "n/a".to_owned()
        } else {
            format!("{:+.1} %", (secure - open) / open * 100.0)
        }
    };
    let rows: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, (name, _))| match (figures[0][i], figures[1][i]) {
            (Some(open), Some(secure)) => format!(
                "| {name} | {:.0} / {:.0} ({}) | {:.1} / {:.1} ({}) | {:.1} / {:.1} ({}) |",
                open.0,
                secure.0,
                percent(open.0, secure.0),
                open.1,
                secure.1,
                percent(open.1, secure.1),
                open.2,
                secure.2,
                percent(open.2, secure.2),
            ),
            _ => format!("| {name} | failed | | |"),
        })
        .collect();
    let body = format!(
        "Command: `cargo bench -p verity-e2e --bench security` (part of `make bench`, release \
         binaries). Machine: {}. Date: {}. Whole devnet, NATS and `verity bench` on this machine; \
         proving off; 10 ms mini-blocks, 1 s blocks of 300M gas; each figure is open (NATS \
         without users or TLS, plaintext gRPC) / secure (NATS over TLS with nkeys and per-role \
         permissions, mutual TLS on every gRPC call), then the change; latency from the moment a transaction was due to its \
         receipt (`realtime_sendRawTransaction`).\n\n\
         | run | tx/s | p50 ms | p99 ms |\n|---|---|---|---|\n{}",
        report::machine(),
        report::today(),
        rows.join("\n"),
    );
    println!("\n{body}");
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
    match report::write_section(&doc, "security", &body) {
        Ok(()) => println!("written to {}", doc.display()),
        Err(e) => println!("could not write {}: {e}", doc.display()),
    }
}
