//! WebSocket subscriptions fed from NATS, through web3.py's AsyncWeb3/WebSocketProvider on the
//! HTTP port and raw on `/ws`: newHeads with miniBlockCount, logs of sealed blocks and of
//! mini-blocks (`fromBlock: "pending"`), newPendingTransactions, miniBlocks, stateChanges, and
//! eth_unsubscribe.

use serde_json::json;
use verity_e2e::TestNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web3py_subscriptions_see_mini_blocks_logs_heads_and_state_changes() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let ws_url = net.devnet.rpc_url().replacen("http://", "ws://", 1);
    let out = net.python("subscriptions.py", &[&ws_url]).await;
    assert_eq!(out["timed_out"], json!(null), "{out}");
    assert_eq!(out["chain_id_over_ws"], json!(31337));
    assert_eq!(out["subscription_ids_distinct"], json!(true));
    assert_eq!(out["bad_subscription"]["code"], json!(-32602), "{out}");
    let (transfer, call) = (&out["transfer_hash"], &out["call_hash"]);

    // Both transactions were announced as they entered a mini-block.
    let pending = out["pending_hashes"].as_array().unwrap();
    assert!(
        pending.contains(transfer) && pending.contains(call),
        "{out}"
    );
    let minis = out["mini_blocks"].as_array().unwrap();
    for hash in [transfer, call] {
        let mini = minis
            .iter()
            .find(|m| m["transactions"].as_array().unwrap().contains(hash))
            .unwrap_or_else(|| panic!("no mini-block with {hash}: {out}"));
        assert!(
            mini["receipt_status"]
                .as_array()
                .unwrap()
                .contains(&json!("0x1"))
        );
    }

    // stateChanges: the recipient's new balance (12345 wei), the contract's written slot 0.
    let changes = out["state_changes"].as_array().unwrap();
    assert!(
        changes.iter().any(|c| c["balance"] == json!("0x3039")),
        "{out}"
    );
    let topic = json!(format!("0x{}", "cc".repeat(32)));
    assert!(
        changes
            .iter()
            .any(|c| c["storage"][format!("0x{}", "00".repeat(32))] == topic),
        "{out}"
    );

    // Logs: the mini-block's log (no block hash yet), then the sealed block's (with its hash),
    // and the newHeads entry of that block counts its mini-blocks.
    let sealed = &out["logs"][0];
    assert_eq!(sealed["topic"], topic, "{out}");
    assert_eq!(&sealed["transactionHash"], call);
    assert_eq!(sealed["blockHash"], out["call_receipt_block_hash"]);
    let early = &out["pending_logs"][0];
    assert_eq!(early["topic"], topic, "{out}");
    assert_eq!(early["blockHash"], json!(null));
    assert_eq!(&early["transactionHash"], call);
    assert_eq!(
        early["blockNumber"]
            .as_str()
            .map(|n| u64::from_str_radix(&n[2..], 16).unwrap()),
        sealed["blockNumber"].as_u64()
    );
    let head = out["heads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["number"] == out["call_block"])
        .unwrap_or_else(|| panic!("no head for the call's block: {out}"));
    assert_eq!(head["hash"], out["call_receipt_block_hash"]);
    assert_ne!(head["miniBlockCount"], json!("0x0"));

    assert_eq!(out["unsubscribe"], json!(true));
    assert_eq!(out["unsubscribe_again"], json!(false));
    assert!(out["block_number_on_ws_path"].is_string(), "{out}");
    net.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_streams_lose_nothing_across_a_thousand_mini_blocks() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let out = net.python("streams.py", &[&net.devnet.rpc_url()]).await;
    assert!(out["mini_blocks"].as_u64().unwrap() >= 1_000, "{out}");
    assert_eq!(out["mini_block_gaps"], json!(0), "{out}");
    assert_eq!(out["mini_block_txs_missing"], json!(0), "{out}");
    assert_eq!(out["pending_seen"], out["sent"], "{out}");
    assert_eq!(out["pending_missing"], json!(0), "{out}");
    assert_eq!(out["pending_duplicates"], json!(0), "{out}");
    assert!(out["heads"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(out["head_gaps"], json!(0), "{out}");
    net.stop().await.unwrap();
}
