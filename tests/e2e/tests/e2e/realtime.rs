//! The realtime extensions through viem: a receipt in the call that sends
//! (`eth_sendRawTransactionSync` of EIP-7966 and `realtime_sendRawTransaction`), error 4 with
//! the hash when a transaction cannot be processed in time, `eth_callAfter`, and viem's
//! WebSocket transport watching blocks over `eth_subscribe`.

use serde_json::json;
use verity_e2e::TestNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viem_gets_receipts_in_the_sending_call_and_calls_after_a_nonce() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let out = net.node("realtime.mjs", &[&net.devnet.rpc_url()]).await;
    // The receipt comes from the mini-block: executed, numbered, not sealed (no hash yet).
    let deploy = &out["deploy"];
    assert_eq!(deploy["status"], json!("success"), "{out}");
    assert!(deploy["contractAddress"].is_string());
    assert_eq!(deploy["blockHash"], json!(null));
    assert!(
        deploy["blockNumber"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(out["realtime_status"], json!("0x1"), "{out}");
    assert_eq!(out["realtime_has_hash"], json!(true));

    // A nonce gap: error 4 after the requested 300 ms, the hash as data.
    let gap = &out["gap"];
    assert_eq!(gap["code"], json!(4), "{out}");
    let hash = gap["data"].as_str().unwrap();
    assert_eq!(hash.len(), 66);
    assert!(gap["message"].as_str().unwrap().contains(hash), "{out}");
    assert!(out["gap_ms"].as_u64().unwrap() >= 300, "{out}");

    // eth_callAfter saw the store that raised the nonce.
    assert_eq!(out["call_after"], out["value"], "{out}");
    assert_eq!(out["call_after_timeout"]["code"], json!(4), "{out}");

    // Blocks over viem's WebSocket transport.
    assert!(out["ws_block"]["hash"].is_string(), "{out}");
    net.stop().await.unwrap();
}
