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

/// The tracers against a reference: viem sends the same transactions from the same key at the
/// same nonces to the gateway and to anvil (Foundry's devnet, from the npm registry), so the
/// contracts share their addresses; Outer calls Inner, which writes, logs and reverts past 100
/// (`tryPoke` catches it, `mustPoke` bubbles it). Each trace must equal anvil's field for field,
/// except the root frame's `gas`, which is the transaction's gas limit as geth reports it
/// (go-ethereum#27029) where anvil reports it net of the intrinsic gas. The prestate tracer's
/// diff is held to the gateway's own reads (storage and balances before and after the block),
/// which the tracer does not produce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_of_a_nested_revert_match_geths_semantics() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let out = net.node("traces.mjs", &[&net.devnet.rpc_url(), "7"]).await;
    let (verity, anvil) = (&out["verity"], &out["anvil"]);
    assert_eq!(verity["nonce"], json!(0), "{verity}");
    assert_eq!(anvil["nonce"], json!(0));
    assert_eq!(verity["outer"], anvil["outer"], "same key, same nonces");
    let outer = verity["outer"].as_str().unwrap().to_lowercase();
    let inner = verity["inner"].as_str().unwrap().to_lowercase();
    let sender = verity["sender"].as_str().unwrap().to_lowercase();
    let gas_limit = json!("0x493e0"); // 300,000, what traces.mjs sends every call with

    for label in ["caught", "bubbled", "succeeded"] {
        let (v, a) = (&verity["tx"][label], &anvil["tx"][label]);
        assert_eq!(v["gas_used"], a["gas_used"], "{label}");
        assert_eq!(v["status"], a["status"], "{label}");
        // Root gas: geth's (the transaction's gas limit); everything else as anvil has it.
        for tracer in ["call", "top"] {
            let (mut ours, mut theirs) = (v[tracer].clone(), a[tracer].clone());
            assert_eq!(ours["gas"], gas_limit, "{label} {tracer}: {ours}");
            ours["gas"] = json!(null);
            theirs["gas"] = json!(null);
            assert_eq!(ours, theirs, "{label} {tracer}");
        }
        for tracer in ["four_byte", "struct", "struct_lean"] {
            assert_eq!(v[tracer], a[tracer], "{label} {tracer}");
        }
        assert!(
            v["struct"]["structLogs"].as_array().unwrap().len() > 100,
            "{label}: {}",
            v["struct"]
        );
        assert!(v["struct_lean"]["structLogs"][0].get("stack").is_none());
        // The call tree's gas is the receipt's; the block's trace of it is the same trace.
        let gas_used = format!("{:#x}", v["gas_used"].as_u64().unwrap());
        assert_eq!(v["call"]["gasUsed"], json!(gas_used), "{label}");
        assert_eq!(v["block_trace"]["result"], v["call"], "{label}");
        assert_eq!(v["block_by_hash_four_byte"], v["four_byte"], "{label}");
        assert!(
            v["block_trace_hashes"]
                .as_array()
                .unwrap()
                .contains(&v["hash"])
        );
        // Parity's flat traces equal anvil's but for where they are (another chain's block),
        // the top call's gas net of the intrinsic gas as parity gives it; trace_get picks the
        // inner call by its trace address.
        let placed = |traces: &serde_json::Value| {
            let mut traces = traces.clone();
            for entry in traces.as_array_mut().unwrap() {
                let entry = entry.as_object_mut().unwrap();
                entry.remove("blockHash").unwrap();
                entry.remove("blockNumber").unwrap();
            }
            traces
        };
        assert_eq!(placed(&v["parity"]), placed(&a["parity"]), "{label} parity");
        assert_eq!(
            placed(&v["parity_block"]),
            placed(&a["parity_block"]),
            "{label}"
        );
        assert_eq!(v["parity"][0]["blockNumber"], v["block"], "{label}");
        assert_eq!(v["parity_get"], v["parity"][1], "{label}");
        assert_eq!(v["parity_get"]["traceAddress"], json!([0]), "{label}");
        // 4byteTracer: Outer's selector with its 32-byte argument, and Inner.poke's.
        assert_eq!(v["four_byte"].as_object().unwrap().len(), 2, "{label}");
    }

    // The nested revert, caught: the transaction succeeds, the inner frame reverted with its
    // reason and its log dropped, the outer frame logs Tried(false).
    let caught = &verity["tx"]["caught"]["call"];
    assert!(caught.get("error").is_none(), "{caught}");
    let frame = &caught["calls"][0];
    assert_eq!(frame["type"], "CALL");
    assert_eq!(frame["to"].as_str().unwrap().to_lowercase(), inner);
    assert_eq!(frame["error"], "execution reverted", "{frame}");
    assert_eq!(frame["revertReason"], "too big", "{frame}");
    assert!(
        frame.get("logs").is_none(),
        "a reverted frame's logs are dropped: {frame}"
    );
    assert_eq!(caught["logs"].as_array().unwrap().len(), 1, "{caught}");
    // Bubbled: the transaction reverts with the inner reason at both levels.
    let bubbled = &verity["tx"]["bubbled"]["call"];
    assert_eq!(verity["tx"]["bubbled"]["status"], "reverted");
    assert_eq!(bubbled["error"], "execution reverted", "{bubbled}");
    assert_eq!(bubbled["revertReason"], "too big", "{bubbled}");
    assert_eq!(bubbled["calls"][0]["revertReason"], "too big");
    // Succeeded: Inner returns 10 and logs Poked(5).
    let succeeded = &verity["tx"]["succeeded"]["call"]["calls"][0];
    assert!(succeeded.get("error").is_none(), "{succeeded}");
    assert_eq!(succeeded["output"], json!(format!("0x{:064x}", 10)));
    assert_eq!(
        succeeded["logs"].as_array().unwrap().len(),
        1,
        "{succeeded}"
    );
    // onlyTopCall: the root alone.
    assert!(verity["tx"]["caught"]["top"].get("calls").is_none());

    // prestateTracer, diff mode, against the gateway's reads at the block and its parent.
    let slot0 = format!("0x{:064x}", 0);
    for label in ["caught", "succeeded"] {
        let tx = &verity["tx"][label];
        let diff = &tx["diff"];
        // geth leaves a slot that was zero out of `pre`.
        let zero = json!(format!("0x{:064x}", 0));
        let pre = &diff["pre"][&outer]["storage"][&slot0];
        assert!(
            *pre == tx["calls_before"] || (pre.is_null() && tx["calls_before"] == zero),
            "{label}: {diff}"
        );
        for account in [&outer, &inner] {
            for side in ["pre", "post"] {
                assert_eq!(
                    diff[side][account], anvil["tx"][label]["diff"][side][account],
                    "{label} {side} {account}"
                );
            }
        }
        assert_eq!(diff["post"][&outer]["storage"][&slot0], tx["calls_after"]);
        assert_eq!(diff["pre"][&sender]["nonce"], tx["nonce_before"]);
        assert_eq!(
            diff["post"][&sender]["nonce"].as_u64(),
            tx["nonce_before"].as_u64().map(|n| n + 1)
        );
        let balance = |v: &serde_json::Value| {
            alloy_primitives::U256::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16)
                .unwrap()
        };
        let decimal = |v: &serde_json::Value| {
            alloy_primitives::U256::from_str_radix(v.as_str().unwrap(), 10).unwrap()
        };
        assert_eq!(
            balance(&diff["pre"][&sender]["balance"]),
            decimal(&tx["balance_before"])
        );
        assert_eq!(
            balance(&diff["post"][&sender]["balance"]),
            decimal(&tx["balance_after"])
        );
        assert_eq!(
            decimal(&tx["balance_before"]) - decimal(&tx["balance_after"]),
            alloy_primitives::U256::from(tx["gas_used"].as_u64().unwrap())
                * decimal(&tx["effective_gas_price"]),
            "{label}: the sender paid the receipt's gas at its price"
        );
    }
    // The caught revert left Inner's slot alone: no post entry for it; the successful poke
    // wrote 5.
    assert!(
        verity["tx"]["caught"]["diff"]["post"].get(&inner).is_none(),
        "{}",
        verity["tx"]["caught"]["diff"]
    );
    assert_eq!(
        verity["tx"]["succeeded"]["diff"]["post"][&inner]["storage"][&slot0],
        verity["tx"]["succeeded"]["stored_after"]
    );
    // Without diff mode: the contracts' entries (code, storage read) as anvil has them.
    for account in [&outer, &inner] {
        assert_eq!(
            verity["tx"]["caught"]["prestate"][account], anvil["tx"]["caught"]["prestate"][account],
            "{account}"
        );
    }

    // debug_traceCall: the same call as a message, equal to anvil's (root gas aside); a state
    // override reaches the traced call.
    let (mut ours, mut theirs) = (verity["trace_call"].clone(), anvil["trace_call"].clone());
    assert_eq!(ours["gas"], gas_limit);
    ours["gas"] = json!(null);
    theirs["gas"] = json!(null);
    assert_eq!(ours, theirs);
    assert_eq!(
        verity["trace_call_struct_count"],
        anvil["trace_call_struct_count"]
    );
    assert_eq!(
        verity["trace_call_override"][&inner]["storage"][&slot0],
        json!(format!("0x{:064x}", 7)),
        "{}",
        verity["trace_call_override"]
    );

    // Otterscan's searches over the sender's transactions page through the same hashes as
    // anvil's, newest first, with their receipts and block times; and the API level Otterscan
    // asks for before it shows anything.
    let (ours, theirs) = (&verity["search"], &anvil["search"]);
    assert_eq!(ours, theirs, "searches");
    let all = ours["all"]["hashes"].as_array().unwrap();
    assert_eq!(all.len(), 8, "{ours}");
    assert_eq!(ours["all"]["firstPage"], true);
    assert_eq!(ours["all"]["lastPage"], true);
    assert_eq!(ours["all"]["receipts"], ours["all"]["hashes"]);
    assert_eq!(ours["all"]["timestamps"], true);
    assert_eq!(ours["newest"]["hashes"].as_array().unwrap()[..], all[..3]);
    assert_eq!(ours["newest"]["lastPage"], false);
    assert_eq!(ours["older"]["hashes"].as_array().unwrap()[..], all[3..6]);
    let oldest: Vec<_> = all[5..].to_vec();
    assert_eq!(ours["oldest"]["hashes"], json!(oldest), "{ours}");
    assert_eq!(ours["oldest"]["lastPage"], true);
    assert_eq!(verity["ots"]["api_level"], json!(8));
    assert_eq!(verity["ots"]["api_level"], anvil["ots"]["api_level"]);

    // Otterscan's methods over the re-execution, against anvil's (which implements them too).
    let (ours, theirs) = (&verity["ots"], &anvil["ots"]);
    assert_eq!(ours["child"], theirs["child"], "same factory, same child");
    for same in [
        "trace_caught",
        "error_bubbled",
        "error_caught",
        "internal_gave",
        "internal_caught",
        "creator_child",
        "creator_outer",
        "creator_eoa",
    ] {
        assert_eq!(ours[same], theirs[same], "{same}");
    }
    let child = ours["child"].as_str().unwrap().to_lowercase();
    let factory = ours["factory"].as_str().unwrap().to_lowercase();
    // The caught revert's trace: Outer's call, then Inner's at depth 1.
    let entries = ours["trace_caught"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[1]["depth"], json!(1));
    assert_eq!(entries[1]["to"].as_str().unwrap().to_lowercase(), inner);
    // The bubbled revert's data is Error("too big"); the caught one's transaction has none.
    let reason = ours["error_bubbled"].as_str().unwrap();
    assert!(reason.starts_with("0x08c379a0"), "{reason}");
    assert!(
        reason.contains(&alloy_primitives::hex::encode("too big")),
        "{reason}"
    );
    assert_eq!(ours["error_caught"], json!("0x"));
    // Creators: the factory made the child in `made`; the sender made Outer; an EOA has none.
    assert_eq!(
        ours["creator_child"],
        json!({"hash": ours["made"], "creator": factory}),
        "{ours}"
    );
    assert_eq!(
        ours["creator_outer"]["creator"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        sender
    );
    assert_eq!(ours["creator_eoa"], json!(null));
    // The child sent its endowment on: one internal transfer.
    assert_eq!(
        ours["internal_gave"],
        json!([{"type": 0, "from": child, "to": format!("0x{}", "4e".repeat(20)), "value": "0x3e8"}])
    );
    // Two documented differences from anvil. The factory's CREATE is a frame of the trace
    // (Erigon and reth list it; anvil lists calls only), and internal operations are those of
    // inner frames, as Erigon defines them (anvil adds the top-level call's own value).
    let calls_only: Vec<_> = ours["trace_made"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] != "CREATE")
        .cloned()
        .collect();
    assert_eq!(json!(calls_only), theirs["trace_made"]);
    let create = &ours["trace_made"][1];
    assert_eq!(create["type"], "CREATE", "{}", ours["trace_made"]);
    assert_eq!(create["to"].as_str().unwrap().to_lowercase(), child);
    assert_eq!(create["value"], "0x3e8");
    let made = json!([{"type": 2, "from": factory, "to": child, "value": "0x3e8"}]);
    assert_eq!(ours["internal_made"], made);
    let inner_only: Vec<_> = theirs["internal_made"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["type"] != 0)
        .cloned()
        .collect();
    assert_eq!(json!(inner_only), made);

    // eth_callMany: the second call sees the first's write, the second bundle the first's; a
    // revert is an entry with its reason; the context's transaction index starts before that
    // transaction, -1 after the whole block; the state override reaches the calls.
    let word = |n: u64| json!({"value": format!("0x{n:064x}")});
    let many = &verity["call_many"];
    assert_eq!(many["chained"][0][0], word(10), "{many}");
    assert_eq!(many["chained"][0][1], word(5), "{many}");
    assert_eq!(many["chained"][1][0], word(5), "{many}");
    assert_eq!(
        many["chained"][1][1],
        json!({"error": "execution reverted: too big"}),
        "{many}"
    );
    let calls = |hex: &serde_json::Value| json!({"value": hex.as_str().unwrap()});
    assert_eq!(
        many["before_caught"][0][0],
        calls(&verity["tx"]["caught"]["calls_before"]),
        "{many}"
    );
    assert_eq!(
        many["after_caught_block"][0][0],
        calls(&verity["tx"]["caught"]["calls_after"]),
        "{many}"
    );
    assert_eq!(many["overridden"][0][0], word(42), "{many}");

    // eth_simulateV1 through viem: simulateCalls chains its calls (the read sees the poke) and
    // decodes the revert's reason; simulateBlocks numbers its blocks after the base, chains
    // their hashes, honours a time override and a block's state override.
    let sim = &verity["simulate"];
    assert_eq!(sim["calls"][0]["status"], "success", "{sim}");
    assert_eq!(sim["calls"][0]["result"], "12", "{sim}");
    assert_eq!(sim["calls"][0]["logs"], 1, "{sim}");
    assert_eq!(sim["calls"][1]["result"], "6", "{sim}");
    assert_eq!(sim["calls"][2]["status"], "failure", "{sim}");
    assert!(
        sim["calls"][2]["error"]
            .as_str()
            .unwrap()
            .contains("too big"),
        "{sim}"
    );
    let base: u64 = sim["base"].as_str().unwrap().parse().unwrap();
    let blocks = sim["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["number"], json!((base + 1).to_string()), "{sim}");
    assert_eq!(blocks[1]["number"], json!((base + 2).to_string()), "{sim}");
    assert_eq!(blocks[1]["parentHash"], blocks[0]["hash"], "{sim}");
    assert_eq!(blocks[1]["timestamp"], "4000000000", "{sim}");
    assert_eq!(blocks[0]["calls"][0]["result"], "14", "{sim}");
    assert_eq!(blocks[1]["calls"][0]["result"], "99", "{sim}");

    // eth_simulateV1 with geth's validation: the priced calls run (the read sees the poke) in a
    // block whose base fee follows the chain's; an unpriced call, a used nonce, a sender without
    // funds fail the request with geth's codes, and a call asking more gas than a block holds
    // does so in either mode; without validation the unpriced call runs.
    let validated = &verity["simulate_validated"];
    assert_eq!(
        validated["calls"][0]["status"], "success",
        "{validated}\nanvil: {}",
        anvil["simulate_validated"]
    );
    assert_eq!(validated["calls"][1]["result"], "8", "{validated}");
    let base_fee: u128 = validated["block"]["baseFeePerGas"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(base_fee > 0, "{validated}");
    for (case, code, text) in [
        (
            "underpriced",
            -32602,
            "max fee per gas less than block base fee",
        ),
        ("nonce_low", -38010, "nonce too low"),
        ("poor", -38014, "insufficient funds for gas * price + value"),
        ("block_gas", -38015, "block gas limit reached"),
    ] {
        assert_eq!(validated[case]["code"], code, "{case}: {validated}");
        assert!(
            validated[case]["message"]
                .as_str()
                .is_some_and(|m| m.contains(text)),
            "{case}: {validated}"
        );
    }
    assert_eq!(validated["unvalidated_underpriced"], "0x1", "{validated}");

    // Errors, geth's codes and texts.
    let errors = &verity["errors"];
    let message = |name: &str| errors[name]["message"].as_str().unwrap().to_string();
    assert_eq!(errors["unknown_tx"]["code"], -32000, "{errors}");
    assert!(message("unknown_tx").contains("transaction not found"));
    assert!(
        message("js_tracer").contains("JS Tracer is not enabled"),
        "{errors}"
    );
    assert!(
        message("bad_config").contains("invalid tracer config"),
        "{errors}"
    );
    assert!(
        message("future_block").contains("block #16777215 not found"),
        "{errors}"
    );
    assert!(
        message("bad_timeout").contains("invalid timeout"),
        "{errors}"
    );
    assert!(message("poor_call").contains("insufficient funds for gas * price + value"));
    assert_eq!(errors["tx_index"]["code"], -32602, "{errors}");
    assert!(
        message("call_many_empty").contains("bundles are empty"),
        "{errors}"
    );
    assert!(
        message("call_many_index_latest").contains("needs a sealed block"),
        "{errors}"
    );
}

/// Foundry's `cast` (npm `@foundry-rs/cast`, pinned) as a developer uses it against the gateway:
/// deploy and send, receipt, call, storage, `access-list` (and a send that computes its list
/// through it, costing what the list promised), and `run`, which re-executes the transaction
/// locally over the gateway's state at the parent block and must find the receipt's gas.
/// `cast proof` needs the proving path's witness replica (this devnet runs without it): it
/// fails saying so (e2e `conformance` runs it with proving on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cast_deploys_sends_reads_and_replays_against_the_gateway() {
    use verity_e2e::cast;
    let net = TestNet::start(|_| {}).await.unwrap();
    let url = net.devnet.rpc_url();
    let rpc = net.rpc();
    // The test mnemonic's account 9.
    let key = "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6";
    let from = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720";
    let compiled = tokio::process::Command::new("node")
        .arg(verity_e2e::client_script("compile.mjs"))
        .args(["--file", "Traced.sol"])
        .output()
        .await
        .unwrap();
    let contracts: serde_json::Value = serde_json::from_slice(&compiled.stdout).unwrap();
    let bytecode = contracts["Inner"]["bytecode"].as_str().unwrap();
    let deployed: serde_json::Value = ok_json(
        &net,
        &url,
        &["send", "--private-key", key, "--create", bytecode, "--json"],
    )
    .await;
    assert_eq!(deployed["status"], "0x1", "{deployed}");
    let inner = deployed["contractAddress"].as_str().unwrap().to_string();

    let sent: serde_json::Value = ok_json(
        &net,
        &url,
        &[
            "send",
            "--private-key",
            key,
            &inner,
            "poke(uint256)",
            "5",
            "--json",
        ],
    )
    .await;
    assert_eq!(sent["status"], "0x1", "{sent}");
    let hash = sent["transactionHash"].as_str().unwrap().to_string();

    // cast receipt agrees with the gateway's receipt.
    let receipt = rpc
        .call("eth_getTransactionReceipt", json!([hash]))
        .await
        .unwrap();
    assert_eq!(ok(&net, &url, &["receipt", &hash, "status"]).await, "true");
    let gas_used = u64::from_str_radix(
        receipt["gasUsed"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_eq!(
        ok(&net, &url, &["receipt", &hash, "gasUsed"]).await,
        gas_used.to_string()
    );

    // Reads: a view call decoded by cast, and the raw slot.
    assert_eq!(
        ok(&net, &url, &["call", &inner, "stored()(uint256)"]).await,
        "5"
    );
    assert_eq!(
        ok(&net, &url, &["storage", &inner, "0"]).await,
        format!("0x{:064x}", 5)
    );

    // access-list, then a send that computes its list the same way: valid, and it costs what
    // the list's run used.
    let listed: serde_json::Value = ok_json(
        &net,
        &url,
        &[
            "access-list",
            &inner,
            "poke(uint256)",
            "7",
            "--from",
            from,
            "--json",
        ],
    )
    .await;
    assert_eq!(
        listed["accessList"],
        json!([{"address": inner.to_lowercase(), "storageKeys": [format!("0x{:064x}", 0)]}]),
        "{listed}"
    );
    let with_list: serde_json::Value = ok_json(
        &net,
        &url,
        &[
            "send",
            "--private-key",
            key,
            &inner,
            "poke(uint256)",
            "7",
            "--access-list",
            "--json",
        ],
    )
    .await;
    assert_eq!(with_list["status"], "0x1", "{with_list}");
    assert_eq!(with_list["gasUsed"], listed["gasUsed"], "{with_list}");
    let sent_tx = rpc
        .call(
            "eth_getTransactionByHash",
            json!([with_list["transactionHash"]]),
        )
        .await
        .unwrap();
    assert_eq!(sent_tx["accessList"], listed["accessList"], "{sent_tx}");

    // cast run: the transaction re-executed by cast over the gateway's state at its parent
    // block (the block's earlier transactions first), with the receipt's gas and Poked's log.
    let run = ok(&net, &url, &["run", &hash]).await;
    assert!(run.contains("Transaction successfully executed."), "{run}");
    assert!(run.contains(&format!("Gas used: {gas_used}")), "{run}");
    assert!(run.contains("emit topic 0"), "{run}");

    // cast proof: no witness replica here, and the error says so.
    let proof = cast(&url, &["proof", &inner, "0"]).await.unwrap_err();
    assert!(
        format!("{proof:#}").contains("needs a witness replica"),
        "{proof:#}"
    );
}

/// `cast` with `args` printing JSON (`--json`), parsed.
async fn ok_json(net: &TestNet, url: &str, args: &[&str]) -> serde_json::Value {
    let out = ok(net, url, args).await;
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("cast {args:?} printed no JSON ({e}): {out}"))
}

/// `cast` with `args`; on failure the services' logs, then the failure.
async fn ok(net: &TestNet, url: &str, args: &[&str]) -> String {
    match verity_e2e::cast(url, args).await {
        Ok(out) => out,
        Err(e) => {
            net.dump_logs();
            panic!("{e:#}")
        }
    }
}
