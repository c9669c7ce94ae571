//! The devnet as an operator sees it: every service healthy with metrics, a graceful stop, a
//! restart that resumes the same chain, and bad configuration refused with a clear error.

use std::time::Duration;

use alloy_primitives::{Address, U256};
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use verity_e2e::{TestNet, dev_signer, http_get, sign_transfer, verity_devnet::Service};

const RECIPIENT: Address = Address::repeat_byte(0x77);

async fn transfer(net: &TestNet, nonce: u64) -> serde_json::Value {
    let signer = dev_signer(net, 3).unwrap();
    let (raw, hash) = sign_transfer(
        &signer,
        net.devnet.chain_id(),
        nonce,
        RECIPIENT,
        U256::from(1_000_000),
    )
    .unwrap();
    let rpc = net.rpc();
    rpc.send_and_wait(&raw, &hash).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_healthy_export_metrics_and_a_restart_resumes_the_chain() {
    let net = TestNet::start(|o| o.block_interval_ms = 300).await.unwrap();

    // Health needs no client certificate (probes have none).
    for service in net.devnet.services() {
        let channel = verity_e2e::grpc_without_certificate(&net.devnet, service)
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service}");
    }

    let first = transfer(&net, 0).await;
    assert_eq!(first["status"], json!("0x1"));
    let rpc = net.rpc();
    let balance = rpc
        .call("eth_getBalance", json!([RECIPIENT.to_string(), "latest"]))
        .await
        .unwrap();
    assert_eq!(balance, json!("0xf4240"));

    for service in net.devnet.services() {
        let metrics = net.devnet.address(service, "metrics").unwrap();
        let (status, body) = http_get(&format!("http://{metrics}/metrics"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{service}");
        if service != Service::Prover {
            assert!(
                body.contains("verity_"),
                "{service} exports no verity metric:\n{body}"
            );
        }
    }
    let (_, gateway_metrics) = http_get(&format!(
        "http://{}/metrics",
        net.devnet.address(Service::Gateway, "metrics").unwrap()
    ))
    .await
    .unwrap();
    assert!(gateway_metrics.contains("verity_gateway_request_seconds"));

    // Without proving, no block is safe or finalized: a clear error, not a wrong value.
    let account = RECIPIENT.to_string();
    for (tag, expected) in [
        ("safe", "safe block not found"),
        ("finalized", "finalized block not found"),
    ] {
        let error = rpc
            .try_call("eth_getBalance", json!([account, tag]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.code, -32000, "{tag}: {error}");
        assert!(error.message.contains(expected), "{tag}: {error}");
    }
    // Genesis state stays readable.
    let at_genesis = rpc
        .call("eth_getBalance", json!([account, "0x0"]))
        .await
        .unwrap();
    assert_eq!(at_genesis, json!("0x0"));
    let unknown = rpc
        .try_call("eth_notAMethod", json!([{}]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(unknown.code, -32601, "{unknown}");

    let height = rpc.quantity("eth_blockNumber", json!([])).await.unwrap();
    // `restart` stops every service with SIGTERM and fails unless each exits with status 0.
    let net = net.restart().await.unwrap();
    let rpc = net.rpc();
    let resumed = rpc.quantity("eth_blockNumber", json!([])).await.unwrap();
    assert!(
        resumed >= height,
        "chain went back from {height} to {resumed}"
    );
    let receipt = rpc
        .call(
            "eth_getTransactionReceipt",
            json!([first["transactionHash"].clone()]),
        )
        .await
        .unwrap();
    assert_eq!(receipt["blockHash"], first["blockHash"]);
    let second = transfer(&net, 1).await;
    assert_eq!(second["status"], json!("0x1"));
    let balance = rpc
        .call("eth_getBalance", json!([RECIPIENT.to_string(), "latest"]))
        .await
        .unwrap();
    assert_eq!(balance, json!("0x1e8480"));
    net.stop().await.unwrap();
}

/// Runs a service binary with `args` and returns its exit code and stderr.
async fn run_binary(service: Service, args: &[&str]) -> (Option<i32>, String) {
    let binary = verity_e2e::verity_devnet::default_bin_dir().join(service.binary());
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(&binary)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn bad_configuration_exits_non_zero_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let cases: [(Service, Vec<&str>, &str); 4] = [
        (
            Service::Sequencer,
            vec![
                "--data-dir",
                &data,
                "--genesis",
                "/nonexistent/genesis.json",
            ],
            "genesis",
        ),
        (
            Service::Gateway,
            vec!["--ingress-url", "not a url"],
            "--ingress-url",
        ),
        (
            Service::Ingress,
            vec![
                "--log-filter",
                "info,[[[",
                "--sequencer-url",
                "http://127.0.0.1:1",
            ],
            "log-filter",
        ),
        (
            Service::Replica,
            vec!["--grpc-addr", "nonsense"],
            "--grpc-addr",
        ),
    ];
    for (service, args, expected) in cases {
        let (code, stderr) = run_binary(service, &args).await;
        assert!(
            matches!(code, Some(c) if c != 0),
            "{service} {args:?} exited with {code:?}"
        );
        assert!(
            stderr.contains(expected),
            "{service} {args:?}: stderr does not mention {expected}:\n{stderr}"
        );
    }
}
