//! The serving limits an operator sets, each breached over real HTTP against the gateway router
//! in process: body size, batch size, request timeout, send rates per client IP and per sender.
//! Every breach is a JSON-RPC error that says which limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use alloy_consensus::{SignableTransaction as _, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718 as _;
use alloy_primitives::{Address, TxKind, U256};
use alloy_signer::SignerSync as _;
use alloy_signer_local::PrivateKeySigner;
use clap::Parser as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use verity_gateway::{Backends, Config, router};

/// A gateway on a run-time loopback port (with client addresses), its backends at `args`'s
/// URLs or the defaults, which nothing answers.
async fn serve(args: &[&str]) -> SocketAddr {
    // A fixed sequencer URL: following the lease would need a genesis to check it against.
    let mut argv = vec!["verity-gateway", "--sequencer-url=http://127.0.0.1:1"];
    argv.extend_from_slice(args);
    let config = Config::parse_from(argv);
    let backends = Backends::new(&config, 1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(backends).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The URL of a backend that accepts connections and never answers.
async fn silent_backend() -> String {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    url
}

/// POSTs `body` over HTTP/1.1; returns the status and the JSON answer.
async fn post(addr: SocketAddr, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn call(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

fn signed(signer: &PrivateKeySigner, nonce: u64) -> String {
    let tx = TxEip1559 {
        chain_id: 1,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 1,
        to: TxKind::Call(Address::repeat_byte(7)),
        value: U256::from(1),
        ..Default::default()
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).unwrap();
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    alloy_primitives::hex::encode_prefixed(envelope.encoded_2718())
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_a_json_rpc_error() {
    let addr = serve(&["--max-body-bytes", "2000"]).await;
    let padding = "0".repeat(3_000);
    let (status, answer) = post(addr, &call("web3_sha3", json!([format!("0x{padding}")]))).await;
    assert_eq!(status, 413);
    assert_eq!(answer["error"]["code"], json!(-32005), "{answer}");
    assert_eq!(
        answer["error"]["message"],
        json!("request body too large: the limit is 2000 bytes")
    );
    let (status, answer) = post(addr, &call("web3_sha3", json!(["0x00"]))).await;
    assert_eq!(status, 200);
    assert!(answer["result"].is_string(), "{answer}");
}

#[tokio::test]
async fn a_batch_over_the_limit_is_refused_whole() {
    let addr = serve(&["--max-batch-size", "3"]).await;
    let entry = json!({"jsonrpc": "2.0", "id": 1, "method": "web3_sha3", "params": ["0x00"]});
    let (_, answer) = post(addr, &json!([entry, entry, entry, entry]).to_string()).await;
    assert_eq!(answer["error"]["code"], json!(-32005), "{answer}");
    assert_eq!(
        answer["error"]["message"],
        json!("batch too large: 4 calls, the limit is 3")
    );
    let (_, answer) = post(addr, &json!([entry, entry, entry]).to_string()).await;
    assert_eq!(answer.as_array().map(Vec::len), Some(3), "{answer}");
}

#[tokio::test]
async fn a_call_the_backend_does_not_answer_times_out() {
    let silent_url = silent_backend().await;
    let addr = serve(&["--replica-url", &silent_url, "--request-timeout-ms", "300"]).await;
    let started = std::time::Instant::now();
    let (_, answer) = post(addr, &call("eth_blockNumber", json!([]))).await;
    assert_eq!(answer["error"]["code"], json!(-32002), "{answer}");
    assert_eq!(
        answer["error"]["message"],
        json!("request timed out after 300 ms")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn sends_over_a_rate_are_refused_per_ip_and_per_sender() {
    let signer = PrivateKeySigner::random();
    let other = PrivateKeySigner::random();
    let limited = |answer: &Value| answer["error"]["code"] == json!(-32005);

    // Per sender: the third transaction of one account within a second is refused; another
    // account still gets through (to ingress, which nothing answers here).
    let addr = serve(&["--send-rate-per-sender", "2"]).await;
    for nonce in 0..2 {
        let (_, answer) = post(
            addr,
            &call("eth_sendRawTransaction", json!([signed(&signer, nonce)])),
        )
        .await;
        assert!(!limited(&answer), "{answer}");
    }
    let (_, answer) = post(
        addr,
        &call("eth_sendRawTransaction", json!([signed(&signer, 2)])),
    )
    .await;
    assert!(limited(&answer), "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "rate limit exceeded: at most 2 per second from sender {}",
            signer.address()
        )),
        "{message}"
    );
    let (_, answer) = post(
        addr,
        &call("eth_sendRawTransaction", json!([signed(&other, 0)])),
    )
    .await;
    assert!(!limited(&answer), "{answer}");

    // Per IP: all from 127.0.0.1, whatever the sender; the realtime send counts too.
    let addr = serve(&["--send-rate-per-ip", "2"]).await;
    for (method, key) in [
        ("eth_sendRawTransaction", &signer),
        ("realtime_sendRawTransaction", &other),
    ] {
        let (_, answer) = post(addr, &call(method, json!([signed(key, 0)]))).await;
        assert!(!limited(&answer), "{answer}");
    }
    let (_, answer) = post(
        addr,
        &call("eth_sendRawTransactionSync", json!([signed(&other, 1)])),
    )
    .await;
    assert!(limited(&answer), "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("from 127.0.0.1"),
        "{answer}"
    );
}

/// Load shedding at the edge: with sends stuck in flight (an ingress that accepts connections
/// and never answers), one more is refused at once with "txpool is full" instead of joining
/// them until its timeout.
#[tokio::test]
async fn a_send_past_the_sends_in_flight_is_refused_at_once() {
    let silent_url = silent_backend().await;
    let addr = serve(&[
        "--ingress-url",
        &silent_url,
        "--request-timeout-ms",
        "5000",
        "--min-sends-in-flight",
        "3",
    ])
    .await;
    let signers: Vec<PrivateKeySigner> = (0..4).map(|_| PrivateKeySigner::random()).collect();
    let stuck: Vec<_> = signers[..3]
        .iter()
        .map(|key| {
            let body = call("eth_sendRawTransaction", json!([signed(key, 0)]));
            tokio::spawn(async move { post(addr, &body).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let (_, answer) = post(
        addr,
        &call("eth_sendRawTransaction", json!([signed(&signers[3], 0)])),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answer["error"]["code"], json!(-32000), "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("txpool is full: this gateway has 3 sends in flight"),
        "{answer}"
    );
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    for send in stuck {
        let (_, answer) = send.await.unwrap();
        assert_eq!(answer["error"]["code"], json!(-32002), "{answer}");
    }
}
