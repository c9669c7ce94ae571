//! Load shedding (issue 24): offered twice what the sequencer can include, for 30 s, the chain
//! keeps including at its capacity, the transactions it cannot take are refused at once with
//! geth's "txpool is full" (JSON-RPC -32000), the accepted ones keep a latency bounded by the
//! queueing bound instead of one that grows with the backlog, and every receipt is in the
//! chain once.
//!
//! The capacity is set low (25 transactions per mini-block, a mini-block every 100 ms:
//! 250/s) so that it is the sequencer's bound, not the 2-core machine running every service
//! and the load generator, that is exceeded; `make bench` measures the same at the machine's
//! own capacity.

use std::time::Duration;

use serde_json::json;
use verity_e2e::{TestNet, dev_signer};

/// Transactions per mini-block and mini-blocks per second: 250 transactions/s.
const PER_MINI_BLOCK: u64 = 25;
const MINI_BLOCK_MS: u64 = 100;
const CAPACITY: u64 = PER_MINI_BLOCK * 1000 / MINI_BLOCK_MS;
/// The sequencer's queueing bound (its default).
const MAX_QUEUE_DELAY_MS: f64 = 500.0;
const SECONDS: u64 = 30;

/// Transactions in blocks 0..=head.
async fn chain_transactions(net: &TestNet) -> u64 {
    let rpc = net.rpc();
    let head = rpc.quantity("eth_blockNumber", json!([])).await.unwrap();
    let mut total = 0;
    for number in 0..=head {
        total += rpc
            .quantity(
                "eth_getBlockTransactionCountByNumber",
                json!([format!("{number:#x}")]),
            )
            .await
            .unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_capacity_is_refused_at_once_and_loses_nothing() {
    let net = TestNet::start(|o| {
        o.mini_block_interval_ms = MINI_BLOCK_MS;
        o.env.push((
            "VERITY_MAX_MINI_BLOCK_TXS".into(),
            PER_MINI_BLOCK.to_string(),
        ));
        o.env.push((
            "VERITY_MAX_QUEUE_DELAY_MS".into(),
            MAX_QUEUE_DELAY_MS.to_string(),
        ));
    })
    .await
    .unwrap();

    // A wallet's transaction refused mid-run, seen by a plain client: the error is typed.
    let rpc = net.rpc();
    let probe = tokio::spawn({
        let signer = dev_signer(&net, 1).unwrap();
        let chain_id = rpc.quantity("eth_chainId", json!([])).await.unwrap();
        async move {
            tokio::time::sleep(Duration::from_secs(15)).await;
            for nonce in 0..200u64 {
                let to = alloy_primitives::Address::repeat_byte(0x77);
                let value = alloy_primitives::U256::from(1u64);
                let (raw, _) =
                    verity_e2e::sign_transfer(&signer, chain_id, nonce, to, value).unwrap();
                match rpc
                    .try_call("eth_sendRawTransaction", json!([raw]))
                    .await
                    .unwrap()
                {
                    Ok(_) => {
                        // Admitted: the next nonce is its successor.
                        continue;
                    }
                    Err(error) => return Some((nonce, error)),
                }
            }
            None
        }
    });

    // 2x capacity for 30 s from 600 accounts (enough that each has its last transaction in by
    // its next turn at the bounded latency).
    let rate = 2 * CAPACITY;
    let (rate_arg, seconds_arg) = (rate.to_string(), SECONDS.to_string());
    let report = net
        .bench(&[
            "--workload",
            "transfers",
            "--accounts",
            "600",
            "--rate",
            &rate_arg,
            "--duration",
            &seconds_arg,
        ])
        .await;
    let context = format!("{report:#}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "2x capacity ({rate}/s offered, {CAPACITY}/s capacity) for {SECONDS} s: {} receipts ({:.0}/s), latency p50 {} ms p99 {} ms; {} refused, refusal p50 {} ms p99 {} ms",
            report["receipts"],
            report["tps"].as_f64().unwrap_or_default(),
            report["latency_ms"]["p50"],
            report["latency_ms"]["p99"],
            report["refused"],
            report["refusal_ms"]["p50"],
            report["refusal_ms"]["p99"],
        );
    }

    // Typed, immediate refusals, and no error of any other kind.
    let errors = report["errors"].as_object().unwrap();
    assert!(
        errors.keys().all(|kind| kind == "txpool is full"),
        "only refusals: {context}"
    );
    let refused = report["refused"].as_u64().unwrap();
    assert!(
        refused >= CAPACITY * SECONDS / 2,
        "about half of the offered load is refused: {context}"
    );
    let refusal_p99 = report["refusal_ms"]["p99"].as_f64().unwrap();
    assert!(refusal_p99 < 250.0, "refusals are immediate: {context}");
    assert_eq!(
        report["skipped"],
        json!(0),
        "the rate was offered: {context}"
    );

    // The accepted ones keep a latency bounded by the queueing bound (without shedding the
    // backlog grows by 250 transactions, a second of waiting, every second).
    let p99 = report["latency_ms"]["p99"].as_f64().unwrap();
    assert!(
        p99 < MAX_QUEUE_DELAY_MS + 1000.0,
        "accepted latency stays bounded: {context}"
    );
    // Throughput stays at capacity.
    let receipts = report["receipts"].as_u64().unwrap();
    assert!(
        receipts as f64 >= 0.9 * (CAPACITY * SECONDS) as f64,
        "throughput at 2x stays at 90 % of capacity: {context}"
    );

    let (nonce, error) = probe
        .await
        .unwrap()
        .expect("a plain client was refused at least once in 200 tries at 2x capacity");
    assert_eq!(error.code, -32000, "geth's code for a full pool: {error:?}");
    assert!(
        error.message.starts_with("txpool is full"),
        "geth's text: {error:?}"
    );

    // Nothing lost: every transaction in the chain is a receipted one, the setup's (the
    // funder's nonce counts those) or one of the probe's admitted ones.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let funder = dev_signer(&net, 0).unwrap();
    let setup = net
        .rpc()
        .quantity(
            "eth_getTransactionCount",
            json!([format!("{:#x}", funder.address()), "latest"]),
        )
        .await
        .unwrap();
    let in_chain = chain_transactions(&net).await;
    assert_eq!(
        in_chain,
        setup + receipts + nonce,
        "every receipt is in the chain once (setup {setup}, probe {nonce}): {context}"
    );
    // The stream holds each event once and in order, no transaction is in it twice, and the
    // replica's state is the sequencer's.
    net.assert_nothing_lost(&[], 0, &context).await;
    net.stop().await.unwrap();
}
