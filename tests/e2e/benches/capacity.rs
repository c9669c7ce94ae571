//! Capacity, overload and stream copies (issue 24; `make bench`, printed and written to
//! docs/benchmarks.md, never asserted): a release devnet on this machine (proving off, 10 ms
//! mini-blocks, 1 s blocks of 300M gas) loaded by the release `verity bench` with transfers,
//! once on one NATS server (streams R1) and once on three (every stream R3, `sync_interval:
//! always` as the chart runs them), in the same run.
//!
//! For each: short runs at rising rates (from 500/s, half as much again each time) find the
//! best sustained rate C, the most included while at least 95 % of the offered load was; then
//! C is offered (1x) and 2C (2x). The figure that matters is the 2x run's throughput against
//! C's: shedding should keep it at 90 % or more, with the accepted transactions' latency near
//! the 1x one. (An earlier probe offered 12,000/s at once and took what it included as C; on
//! a 2-core machine whose client shares the cores that collapses, ~735/s where 1,455/s was
//! sustained, so C was far too low.)
//!
//! `VERITY_BENCH_SECONDS` (default 20) is the length of each measured run.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;

use serde_json::Value;
use verity_e2e::{TestNet, verity_devnet};
use verity_workload::report;

/// Accounts sending (each has one transaction in flight at a time; the devnet funder's 10,000
/// ETH funds fewer than 10,000 of them at 1 ETH each).
const ACCOUNTS: &str = "8000";
/// The first rate of the search for the best sustained rate.
const FIRST_RATE: u64 = 500;
/// The search stops at the first rate of which less than this share is included.
const SUSTAINED: f64 = 0.95;

struct Run {
    offered: u64,
    report: Value,
}

async fn run(net: &TestNet, rate: u64, seconds: u64) -> Option<Run> {
    let args: Vec<String> = [
        "--workload",
        "transfers",
        "--rate",
        &rate.to_string(),
        "--duration",
        &seconds.to_string(),
        "--accounts",
        ACCOUNTS,
        // As many requests in flight as accounts: a client capped lower queues the overload
        // in itself (measured: at 1,024 the chain saw no overload and the client's own
        // backlog made the latency).
        "--max-in-flight",
        ACCOUNTS,
    ]
    .map(str::to_owned)
    .to_vec();
    println!("\n{rate}/s for {seconds} s");
    let report = verity_e2e::verity_bench(&net.devnet.rpc_url(), net.dir.path(), &args).await?;
    Some(Run {
        offered: rate,
        report,
    })
}

fn row(topology: &str, load: &str, run: &Run) -> String {
    let r = &run.report;
    let f = |v: &Value| v.as_f64().unwrap_or_default();
    format!(
        "| {topology} | {load} | {} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {} |",
        run.offered,
        f(&r["tps"]),
        f(&r["latency_ms"]["p50"]),
        f(&r["latency_ms"]["p99"]),
        r["refused"],
        f(&r["refusal_ms"]["p99"]),
        r["skipped"],
    )
}

fn main() {
    let seconds: u64 = std::env::var("VERITY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runtime = verity_e2e::bench_runtime();
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    runtime.block_on(async {
        for (nodes, topology) in [(1, "1 NATS server, R1"), (3, "3 NATS servers, R3")] {
            let net = TestNet::start(|o| {
                o.gas_limit = 300_000_000;
                o.log_filter = "info".into();
                o.nats_nodes = nodes;
            })
            .await
            .unwrap();
            println!(
                "\n{topology}: devnet of {} on {} cores",
                verity_devnet::default_bin_dir().display(),
                std::thread::available_parallelism().map_or(0, |n| n.get())
            );
            // The first run also funds the accounts.
            let mut capacity = 0u64;
            let mut rate = FIRST_RATE;
            while let Some(step) = run(&net, rate, (seconds / 2).max(5)).await {
                let included = step.report["tps"].as_f64().unwrap_or_default();
                rows.push(row(topology, "search", &step));
                capacity = capacity.max(included as u64);
                if included < SUSTAINED * rate as f64 {
                    break;
                }
                rate += rate / 2;
            }
            if capacity == 0 {
                rows.push(format!(
                    "| {topology} | search | {rate} | failed | | | | | |"
                ));
                continue;
            }
            let one = run(&net, capacity, seconds).await;
            let two = run(&net, 2 * capacity, seconds).await;
            for (load, r) in [("1x", &one), ("2x", &two)] {
                match r {
                    Some(r) => rows.push(row(topology, load, r)),
                    None => rows.push(format!("| {topology} | {load} | | failed | | | | | |")),
                }
            }
            if let (Some(one), Some(two)) = (one, two) {
                let tps = |r: &Run| r.report["tps"].as_f64().unwrap_or_default();
                let best = tps(&one).max(capacity as f64).max(1e-9);
                ratios.push(format!(
                    "{topology}: 2x included {:.0} % of the best sustained rate ({:.0} of {:.0} \
                     tx/s; 1x included {:.0})",
                    100.0 * tps(&two) / best,
                    tps(&two),
                    best,
                    tps(&one)
                ));
            }
            net.stop().await.unwrap();
        }
    });
    let body = format!(
        "Command: `cargo bench -p verity-e2e --bench capacity` (part of `make bench`, release \
         binaries). Machine: {}. Date: {}. Whole devnet, NATS and `verity bench` on this machine; \
         proving off; 10 ms mini-blocks, 1 s blocks of 300M gas; transfers from {ACCOUNTS} \
         accounts, each with one transaction in flight, a refused one sent again at its next \
         turn; latency from the moment a transaction was due to its receipt; shedding at the \
         default `--max-queue-delay-ms` 500. The search offers {FIRST_RATE}/s, then half as much \
         again each run, until less than {:.0} % of the offered load is included; 1x offers the \
         most any run included, 2x twice that.\n\n\
         | NATS | load | offered/s | included/s | p50 ms | p99 ms | refused | refusal p99 ms | skipped ticks |\n\
         |---|---|---|---|---|---|---|---|---|\n{}\n\n{}",
        report::machine(),
        report::today(),
        SUSTAINED * 100.0,
        rows.join("\n"),
        ratios.join("; "),
    );
    println!("\n{body}");
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/benchmarks.md");
    match report::write_section(&doc, "capacity", &body) {
        Ok(()) => println!("written to {}", doc.display()),
        Err(e) => println!("could not write {}: {e}", doc.display()),
    }
}
