//! The eth namespace beyond transfers, through web3.py: block receipts, counts and transactions
//! by index, raw transactions and headers, the blob base fee, eth_getLogs filters, polling filters (each change reported once, expiry, removal),
//! eth_feeHistory with reward percentiles, and geth's errors for bad ranges and percentiles.

use serde_json::json;
use verity_e2e::TestNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web3py_reads_blocks_logs_filters_and_fee_history() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let out = net
        .python("eth_namespace.py", &[&net.devnet.rpc_url()])
        .await;
    assert_eq!(out["syncing"], json!(false), "{out}");
    assert_eq!(out["listening"], json!(true));
    assert_eq!(out["peer_count"], json!(0));
    // keccak256("hello")
    assert_eq!(
        out["sha3"],
        json!("0x1c8aff950685c2ed4bc3174f3472287b56d9517b9c948127319a09a7a36deac8")
    );

    // Blocks: the second call's block holds it, found by number, hash and index.
    let second = &out["second_hash"];
    assert!(
        out["block_receipts"].as_array().unwrap().contains(second),
        "{out}"
    );
    assert!(
        out["block_receipt_log_index"]
            .as_array()
            .unwrap()
            .contains(&out["second_log_index"]),
        "log indices of eth_getBlockReceipts agree with the receipt's: {out}"
    );
    assert_eq!(out["count_by_number"], out["count_by_hash"]);
    assert!(out["count_by_number"].as_u64().unwrap() >= 1);
    assert_eq!(&out["by_number_and_index"], second);
    assert_eq!(&out["by_hash_and_index"], second);
    assert_eq!(out["missing_index"], json!(null));
    assert_eq!(out["missing_block_count"], json!(null));
    assert_eq!(out["uncles"], json!("0x0"));

    // Raw transactions: the signed bytes as sent (their keccak is the hash, their signature
    // the sender's), the same by block and index; unknown is null.
    assert_eq!(&out["raw_keccak"], second, "{out}");
    assert_eq!(out["raw_sender"], out["sender"]);
    assert_eq!(out["raw_by_number_and_index"], out["raw"]);
    assert_eq!(out["raw_by_hash_and_index"], out["raw"]);
    assert_eq!(out["raw_unknown"], json!(null));

    // Headers: the block's own fields, by number and by hash; the blob base fee is 1 wei.
    assert_eq!(out["header_equals_block"], json!(true), "{out}");
    assert!(
        out["header_keys"]
            .as_array()
            .unwrap()
            .contains(&json!("parentHash")),
        "{out}"
    );
    assert_eq!(out["header_by_hash"], json!(true));
    assert_eq!(out["header_missing"], json!(null));
    assert_eq!(out["blob_base_fee"], json!(1));

    // txpool_*: the gapped transaction waits as queued under its sender and nonce, listed by
    // content, inspect and contentFrom; once the gap is filled both are included.
    assert_eq!(
        out["txpool_status"],
        json!({"pending": "0x0", "queued": "0x1"}),
        "{out}"
    );
    assert_eq!(out["txpool_queued_hash"], out["gapped_hash"], "{out}");
    assert_eq!(out["txpool_queued_block"], json!(null));
    assert_eq!(out["txpool_pending_of_sender"], json!({}));
    assert_eq!(
        out["txpool_inspect"],
        json!(format!(
            "0x4242424242424242424242424242424242424242: 7 wei + 21000 gas × {} wei",
            out["txpool_inspect"]
                .as_str()
                .and_then(|s| s.rsplit(" × ").next())
                .and_then(|s| s.strip_suffix(" wei"))
                .unwrap_or("?")
        )),
        "{out}"
    );
    assert_eq!(
        out["txpool_content_from"],
        json!([out["gap_nonce"].to_string()])
    );
    assert_eq!(
        out["txpool_content_from_stranger"],
        json!({"pending": {}, "queued": {}})
    );
    assert_eq!(out["gapped_status"], json!(1));
    assert_eq!(
        out["txpool_status_after"],
        json!({"pending": "0x0", "queued": "0x0"})
    );

    // eth_createAccessList: the called contract and the slot it reads; the list makes the
    // transaction valid and cheaper, and the node's gasUsed is what the receipt says.
    assert_eq!(
        out["access_list"],
        json!([{"address": out["access_list_target"], "storageKeys": [format!("0x{}", "00".repeat(32))]}]),
        "{out}"
    );
    assert_eq!(out["with_list_status"], json!(1));
    assert_eq!(out["with_list_gas"], out["access_list_gas"], "{out}");
    let gas = |key: &str| out[key].as_u64().unwrap();
    assert_eq!(gas("without_list_gas") - gas("with_list_gas"), 200, "{out}");
    // ots_: code presence, block details (count, fees, no issuance), a page of transactions
    // (page 0 of size 1: the block's last one, its input cut to the selector, its receipt
    // without logs).
    assert_eq!(out["ots_has_code"], json!([true, false]), "{out}");
    assert_eq!(out["ots_details_count"], out["count_by_number"]);
    assert_eq!(out["ots_details_has_transactions"], json!(false));
    assert_eq!(out["ots_details_hash"], out["block_hash"]);
    assert_eq!(out["ots_total_fees"], out["block_fees"], "{out}");
    assert!(out["ots_total_fees"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(
        out["ots_issuance"],
        json!({"blockReward": "0x0", "uncleReward": "0x0", "issuance": "0x0"})
    );
    assert_eq!(out["ots_details_by_hash_equal"], json!(true));
    assert_eq!(out["ots_page_count"], out["count_by_number"]);
    assert_eq!(
        out["ots_page_txs"],
        json!([out["last_tx_of_block"]]),
        "{out}"
    );
    assert!(
        out["ots_page_inputs"][0].as_str().unwrap().len() <= 10,
        "{out}"
    );
    assert_eq!(
        out["ots_page_receipts"],
        json!([[out["last_tx_of_block"], null, null]])
    );
    assert_eq!(out["ots_page_beyond"], json!([]));
    assert_eq!(&out["ots_by_nonce"], second, "{out}");
    assert_eq!(&out["ots_by_nonce_hex"], second);
    assert_eq!(out["ots_by_nonce_unused"], json!(null));
    // A call to an account without code touches nothing.
    assert_eq!(
        out["access_list_reverted"]["result"]["accessList"],
        json!([]),
        "{out}"
    );

    // eth_getLogs.
    let a = json!(format!("0x{}", "aa".repeat(32)));
    let b = json!(format!("0x{}", "bb".repeat(32)));
    assert_eq!(out["logs_by_address"], json!([a, b]), "{out}");
    assert_eq!(out["logs_by_topic"], json!([a]));
    assert_eq!(out["logs_by_topic_or"], json!([a, b]));
    assert_eq!(out["logs_by_block_hash"], json!([a]));
    assert_eq!(out["logs_before_deploy"], json!([]));
    assert_eq!(
        out["inverted_range_error"]["message"],
        json!("invalid block range params")
    );
    assert_eq!(out["unknown_hash_error"]["message"], json!("unknown block"));

    // Polling filters: each change once; the topic filter only sees B; removal is final.
    assert_eq!(out["filter_changes"], json!([a, b]), "{out}");
    assert_eq!(out["filter_changes_again"], json!([]));
    assert_eq!(out["topic_filter_changes"], json!([b]));
    assert_eq!(
        out["filter_logs"],
        json!([b]),
        "fromBlock defaults to latest"
    );
    assert_eq!(out["pending_filter_has_calls"], json!(true), "{out}");
    assert_eq!(out["pending_filter_again"], json!(0));
    assert!(out["block_filter_count"].as_u64().unwrap() >= 2, "{out}");
    assert_eq!(out["block_filter_has_second"], json!(true));
    assert_eq!(out["uninstall"], json!(true));
    assert_eq!(out["uninstall_again"], json!(false));
    assert_eq!(
        out["removed_filter_error"]["message"],
        json!("filter not found")
    );

    // Overrides: a slot, code, a balance, the block number and time a call sees.
    assert_eq!(out["override_slot"], out["override_value"], "{out}");
    assert_eq!(out["override_code"], out["override_value"]);
    assert!(
        out["without_balance"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("insufficient funds"),
        "{out}"
    );
    assert_eq!(out["with_balance"], json!("0x"));
    assert_eq!(out["estimate_with_balance"], json!(21_000));
    assert_eq!(
        out["block_number_override"],
        json!(format!("0x{:064x}", 0x1234))
    );
    assert_eq!(
        out["block_time_override"],
        json!(format!("0x{:064x}", 0x5678))
    );
    assert_eq!(out["unsupported_override"]["code"], json!(-32602), "{out}");
    assert_eq!(out["both_state_and_diff"]["code"], json!(-32602), "{out}");

    // Fee history: one entry per block plus the next base fee; rewards are the tips paid
    // (1, 2 and 3 mwei per gas, one transaction per block as each waits for its receipt).
    assert_eq!(out["fee_oldest"], out["deploy_block"]);
    let blocks = out["fee_ratios"].as_u64().unwrap();
    assert_eq!(out["fee_base_fees"].as_u64().unwrap(), blocks + 1);
    let rewards = out["fee_rewards"].as_array().unwrap();
    assert_eq!(rewards.len() as u64, blocks);
    assert_eq!(
        rewards.first().unwrap(),
        &json!([1_000_000, 1_000_000, 1_000_000])
    );
    assert_eq!(
        rewards.last().unwrap(),
        &json!([3_000_000, 3_000_000, 3_000_000])
    );
    assert_eq!(out["fee_base_fee_of_second"], out["second_base_fee"]);
    assert!(
        out["fee_beyond_head_error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("request beyond head block"),
        "{out}"
    );
    assert_eq!(
        out["fee_bad_percentile_error"]["message"],
        json!("invalid reward percentile: #0:60 > #1:10")
    );
    net.stop().await.unwrap();
}
