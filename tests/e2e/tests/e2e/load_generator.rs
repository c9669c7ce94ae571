//! `verity bench`, the load generator, against a devnet: its setup funds the workload's accounts
//! and deploys the ERC-20 and the counter, an open-loop run of the mixed workload and a
//! closed-loop run of the contended counter get a receipt for every transaction, and the chain
//! shows the work (the counter counts every call). The per-stage breakdown, scraped from every
//! service's metrics, accounts for each transaction.

use serde_json::json;
use verity_e2e::TestNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verity_bench_sets_up_sends_and_reports_every_receipt() {
    let net = TestNet::start(|_| {}).await.unwrap();

    let open = net
        .bench(&[
            "--workload",
            "mixed",
            "--accounts",
            "40",
            "--rate",
            "50",
            "--duration",
            "3",
        ])
        .await;
    assert_eq!(open["sent"], json!(150), "{open}");
    assert_eq!(open["receipts"], json!(150), "{open}");
    assert_eq!(open["errors"], json!({}), "{open}");
    assert!(open["gas_per_second"].as_f64().unwrap() > 0.0, "{open}");
    let p50 = open["latency_ms"]["p50"].as_f64().unwrap();
    let max = open["latency_ms"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{open}");
    // The per-stage breakdown saw exactly the run's transactions where they are counted one by
    // one, and mini-blocks passing every later stage.
    let stage = |metric: &str| {
        open["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["metric"].as_str().unwrap().starts_with(metric))
            .unwrap_or_else(|| panic!("no stage {metric} in {open}"))
            .clone()
    };
    for per_tx in [
        "verity_gateway_request_seconds",
        "verity_ingress_validate_seconds",
        "verity_ingress_forward_seconds",
        "verity_sequencer_admit_seconds",
        "verity_sequencer_mempool_wait_seconds",
    ] {
        assert_eq!(stage(per_tx)["count"], json!(150), "{per_tx}: {open}");
    }
    for per_mini_block in [
        "verity_sequencer_execute_seconds",
        "verity_sequencer_commit_seconds",
        "verity_sequencer_publish_mini_block_age_seconds",
        "verity_replica_mini_block_age_seconds",
        "verity_gateway_announce_mini_block_age_seconds",
    ] {
        let s = stage(per_mini_block);
        assert!(
            s["count"].as_u64().unwrap() >= 1,
            "{per_mini_block}: {open}"
        );
        assert!(
            s["mean_ms"].as_f64().unwrap() > 0.0,
            "{per_mini_block}: {open}"
        );
    }
    // Ages grow along the path.
    assert!(
        stage("verity_replica_mini_block_age_seconds")["mean_ms"]
            .as_f64()
            .unwrap()
            >= stage("verity_sequencer_commit_seconds")["mean_ms"]
                .as_f64()
                .unwrap(),
        "{open}"
    );

    let closed = net
        .bench(&[
            "--workload",
            "counter",
            "--accounts",
            "10",
            "--closed-loop",
            "4",
            "--count",
            "40",
        ])
        .await;
    assert_eq!(closed["receipts"], json!(40), "{closed}");
    assert_eq!(closed["errors"], json!({}), "{closed}");
    // The run deployed its own counter: it counted exactly the run's calls.
    let counter = closed["counter"].as_str().unwrap();
    let count = net
        .rpc()
        .call("eth_getStorageAt", json!([counter, "0x0", "latest"]))
        .await
        .unwrap();
    assert_eq!(verity_e2e::parse_quantity(&count).unwrap(), 40, "{closed}");
    net.stop().await.unwrap();
}
