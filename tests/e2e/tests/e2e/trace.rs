//! One transaction is one trace: with an OTLP endpoint configured, the spans of one transfer
//! from at least four services share one trace id.

use std::{collections::BTreeSet, time::Duration};

use alloy_primitives::{Address, U256};
use serde_json::json;
use verity_e2e::{TestNet, dev_signer, sign_transfer};
use verity_testkit::otlp::TestCollector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transfer_is_one_trace_across_services() {
    let collector = TestCollector::start().await.unwrap();
    let endpoint = collector.endpoint();
    let net = TestNet::start(|o| o.otlp_endpoint = Some(endpoint))
        .await
        .unwrap();
    let rpc = net.rpc();
    let signer = dev_signer(&net, 2).unwrap();
    let (raw, hash) = sign_transfer(
        &signer,
        net.devnet.chain_id(),
        0,
        Address::repeat_byte(0x51),
        U256::from(7),
    )
    .unwrap();
    let sent = rpc
        .call("eth_sendRawTransaction", json!([raw]))
        .await
        .unwrap();
    assert_eq!(sent, json!(hash));
    let receipt = rpc
        .wait_receipt(&hash, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(receipt["status"], json!("0x1"));

    // Batches are exported every few seconds; wait for the one trace that reaches the replica:
    // four services (gateway, ingress, sequencer, replica) handle a transfer. (This waited for
    // five, from when a publisher service existed: every run sat out the whole deadline.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let services = loop {
        let spans = collector.spans();
        let gateway_traces: BTreeSet<String> = spans
            .iter()
            .filter(|s| s.service == "gateway")
            .map(|s| s.trace_id.clone())
            .collect();
        let best = gateway_traces
            .iter()
            .map(|trace| {
                spans
                    .iter()
                    .filter(|s| &s.trace_id == trace)
                    .map(|s| s.service.clone())
                    .collect::<BTreeSet<String>>()
            })
            .max_by_key(BTreeSet::len)
            .unwrap_or_default();
        if best.len() >= 4 || tokio::time::Instant::now() > deadline {
            break best;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        services.len() >= 4,
        "the transfer's trace reached only {services:?}; spans: {:#?}",
        collector
            .spans()
            .iter()
            .map(|s| format!("{} {} {}", s.service, s.name, s.trace_id))
            .collect::<Vec<_>>()
    );
    for service in ["gateway", "ingress", "sequencer"] {
        assert!(
            services.contains(service),
            "{service} missing: {services:?}"
        );
    }
    net.stop().await.unwrap();
}
