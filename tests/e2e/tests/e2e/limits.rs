//! Bounded requests (issue 24): an `eth_call` from anyone cannot take the replica down or hold
//! it. Gas is capped whatever the overrides ask for, EVM memory is limited, a call is stopped at
//! its deadline, calls take turns, and a batch is answered a few calls at a time within one
//! request timeout; meanwhile the node keeps answering.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use verity_e2e::{TestNet, dev_signer, sign_filler};

/// Where the test's code is put with a state override.
const AT: &str = "0x00000000000000000000000000000000000c0de0";
/// `PUSH5 0x1000000000 MLOAD STOP`: touch the word at 64 GiB.
const HUGE_MEMORY: &str = "0x6410000000005100";
/// `JUMPDEST PUSH1 0 JUMP`: forever.
const ENDLESS: &str = "0x5b600056";

/// `eth_call` params running `code` with as much gas as a client can ask for: the block's gas
/// limit and the call's raised to 2^62 by overrides.
fn heavy(code: &str) -> Value {
    json!([
        {"to": AT, "gas": "0x4000000000000000"},
        "latest",
        {AT: {"code": code}},
        {"gasLimit": "0x4000000000000000"}
    ])
}

/// Answers `eth_blockNumber` over and over until `stop`, returning each latency.
async fn block_number_latencies(
    rpc: verity_e2e::Rpc,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let started = Instant::now();
        rpc.call("eth_blockNumber", json!([])).await.unwrap();
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_calls_fail_within_their_bounds_while_the_node_keeps_answering() {
    // A gas cap far above what the machine runs in a second, so that the deadline and the
    // memory limit, not the cap, are what stop these calls; short timeouts keep the test short.
    let net = TestNet::start(|o| {
        for (name, value) in [
            ("VERITY_RPC_GAS_CAP", "1000000000000"),
            ("VERITY_CALL_TIMEOUT_MS", "1000"),
            ("VERITY_REQUEST_TIMEOUT_MS", "3000"),
        ] {
            o.env.push((name.into(), value.into()));
        }
    })
    .await
    .unwrap();
    let rpc = net.rpc();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn(block_number_latencies(rpc.clone(), stop.clone()));

    // 64 GiB of memory: refused at the memory limit at once, not allocated.
    let started = Instant::now();
    let error = rpc
        .try_call("eth_call", heavy(HUGE_MEMORY))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.message, "out of gas", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // An endless loop: stopped at the call timeout with geth's error.
    let started = Instant::now();
    let error = rpc
        .try_call("eth_call", heavy(ENDLESS))
        .await
        .unwrap()
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.code, -32000, "{error}");
    assert_eq!(error.message, "execution aborted (timeout = 1s)", "{error}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // The same as an estimate.
    let error = rpc
        .try_call("eth_estimateGas", heavy(ENDLESS))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.message, "execution aborted (timeout = 1s)", "{error}");

    // A thousand of them in one batch: answered within the request timeout, every one an
    // error (stopped, refused for want of a call slot, or not reached in time).
    let batch: Vec<Value> = (0..1000)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "eth_call", "params": heavy(ENDLESS)}))
        .collect();
    let started = Instant::now();
    let answers = rpc.post(&Value::Array(batch)).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the batch took {took:?}");
    let answers = answers.as_array().expect("a batch answer");
    assert_eq!(answers.len(), 1000);
    let mut codes = std::collections::BTreeMap::new();
    for (id, answer) in answers.iter().enumerate() {
        assert_eq!(answer["id"], json!(id), "in order: {answer}");
        let code = answer["error"]["code"].as_i64().expect("an error");
        assert!(matches!(code, -32000 | -32002 | -32005), "{answer}");
        *codes.entry(code).or_insert(0) += 1;
    }
    assert!(codes.get(&-32002).copied().unwrap_or(0) > 900, "{codes:?}");

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut latencies = watcher.await.unwrap();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(100),
        "eth_blockNumber p99 {p99:?} over {} requests",
        latencies.len()
    );

    // The replica is still up: a transfer gets its receipt and its balance reads.
    let sender = dev_signer(&net, 6).unwrap();
    let (raw, hash) = sign_filler(&sender, net.devnet.chain_id(), 0).unwrap();
    let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    rpc.call(
        "eth_getBalance",
        json!([format!("{:#x}", sender.address()), "latest"]),
    )
    .await
    .unwrap();
    net.stop().await.unwrap();
}

/// Readiness tells the truth: a replica that halted on an event it refuses reports
/// NOT_SERVING (and why, in `GetHead`), and the gateway in front of it reports not ready too,
/// with the reason in `verity_status`, instead of serving stale state as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_replica_and_its_gateway_report_not_ready_and_say_why() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use verity_e2e::verity_devnet::Service;
    let net = TestNet::start(|_| {}).await.unwrap();
    let rpc = net.rpc();
    let status = rpc.call("verity_status", json!([])).await.unwrap();
    assert_eq!(status["ready"], json!(true), "{status}");
    assert_eq!(net.health(Service::Replica).await, ServingStatus::Serving);
    assert_eq!(net.health(Service::Gateway).await, ServingStatus::Serving);

    // The admin (nobody else may) puts an event no replica accepts on the chain stream.
    let (_client, js) = net.jetstream().await;
    js.publish(verity_bus::CHAIN_SUBJECT, "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = rpc.call("verity_status", json!([])).await.unwrap();
        if status["ready"] == json!(false)
            && net.health(Service::Gateway).await == ServingStatus::NotServing
        {
            break status;
        }
        assert!(Instant::now() < deadline, "still ready: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = status["notReady"].as_str().unwrap();
    assert!(
        reason.contains("the replica is not ready: halted"),
        "{status}"
    );
    assert_eq!(
        net.health(Service::Replica).await,
        ServingStatus::NotServing
    );
    // The sequencer's next compare-and-set publish found the stream moved and it stopped as
    // deposed: the only service meant to end here.
    match net.stop().await {
        Ok(()) => {}
        Err(error) => assert!(
            format!("{error:#}").contains("sequencer exited"),
            "{error:#}"
        ),
    }
}

/// Over HTTP from 127.0.0.1 with `--max-filters-per-ip 2`: a third filter is refused naming the
/// address until one is uninstalled; criteria over geth's limits are refused, installed or not.
async fn filters_are_bounded_per_client_and_by_size(rpc: &verity_e2e::Rpc) {
    let first = rpc.call("eth_newBlockFilter", json!([])).await.unwrap();
    rpc.call("eth_newPendingTransactionFilter", json!([]))
        .await
        .unwrap();
    let error = rpc
        .try_call("eth_newFilter", json!([{}]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code, -32005, "{error}");
    assert!(
        error
            .message
            .starts_with("too many filters installed from 127.0.0.1 (limit 2)"),
        "{error}"
    );
    assert_eq!(
        rpc.call("eth_uninstallFilter", json!([first]))
            .await
            .unwrap(),
        json!(true)
    );
    rpc.call("eth_newFilter", json!([{}])).await.unwrap();
    let addresses: Vec<String> = (0..1001).map(|i| format!("{i:#042x}")).collect();
    for method in ["eth_getLogs", "eth_newFilter"] {
        let error = rpc
            .try_call(method, json!([{"address": addresses}]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.code, -32000, "{method}: {error}");
        assert!(
            error
                .message
                .starts_with("exceed max addresses: 1001 given"),
            "{method}: {error}"
        );
    }
}

/// Two transactions wait behind a nonce gap while `--max-txpool-content` is 1: the listings
/// are refused with -32005 rather than showing one of the two as if it were all, the counts
/// still answer, and filling the gap empties the pool.
async fn a_txpool_listing_past_its_cap_is_refused_not_cut(net: &TestNet) {
    let rpc = net.rpc();
    let sender = dev_signer(net, 7).unwrap();
    let chain_id = net.devnet.chain_id();
    for nonce in [1, 2] {
        let (raw, _) = sign_filler(&sender, chain_id, nonce).unwrap();
        rpc.call("eth_sendRawTransaction", json!([raw]))
            .await
            .unwrap();
    }
    assert_eq!(
        rpc.call("txpool_status", json!([])).await.unwrap(),
        json!({"pending": "0x0", "queued": "0x2"})
    );
    for (method, params) in [
        ("txpool_content", json!([])),
        ("txpool_inspect", json!([])),
        ("txpool_contentFrom", json!([sender.address()])),
    ] {
        let error = rpc.try_call(method, params).await.unwrap().unwrap_err();
        assert_eq!(error.code, -32005, "{method}: {error}");
        assert!(
            error.message.starts_with("txpool too large to list"),
            "{method}: {error}"
        );
    }
    let (raw, hash) = sign_filler(&sender, chain_id, 0).unwrap();
    rpc.call("eth_sendRawTransaction", json!([raw]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rpc.call("txpool_status", json!([])).await.unwrap()
        != json!({"pending": "0x0", "queued": "0x0"})
    {
        assert!(
            Instant::now() < deadline,
            "the pool did not empty after {hash}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `eth_getLogs` over more logs than `--max-logs` is refused with geth's "limit exceeded", and
/// the replica reads no further than one log past the cap to tell (it used to collect every
/// matching log first). Filters are bounded by size (geth's 1,000 addresses) and per client IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logs_query_over_the_cap_is_refused_and_the_replica_stops_at_it() {
    use verity_e2e::verity_devnet::Service;
    use verity_proto::v1;
    let net = TestNet::start(|o| {
        o.env.push(("VERITY_MAX_LOGS".into(), "1".into()));
        o.env.push(("VERITY_MAX_FILTERS_PER_IP".into(), "2".into()));
        o.env.push(("VERITY_MAX_TXPOOL_CONTENT".into(), "1".into()));
    })
    .await
    .unwrap();
    filters_are_bounded_per_client_and_by_size(&net.rpc()).await;
    a_txpool_listing_past_its_cap_is_refused_not_cut(&net).await;
    // Three contracts, each storing once: three logs.
    for _ in 0..3 {
        let out = net.python("contract.py", &[&net.devnet.rpc_url()]).await;
        assert_eq!(out["store_status"], json!(1), "{out}");
    }
    let rpc = net.rpc();
    let error = rpc
        .try_call(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest"}]),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code, -32005, "{error}");
    assert!(
        error
            .message
            .starts_with("query returned more than 1 results"),
        "{error}"
    );
    let mut replica = v1::replica_client::ReplicaClient::new(
        verity_e2e::grpc(&net.devnet, Service::Replica)
            .await
            .unwrap(),
    );
    let query = |max_logs| v1::LogsRequest {
        from_block: 0,
        to_block: u64::MAX,
        max_logs,
        ..Default::default()
    };
    let all = replica.get_logs(query(0)).await.unwrap().into_inner().logs;
    assert_eq!(all.len(), 3);
    let capped = replica.get_logs(query(1)).await.unwrap().into_inner().logs;
    assert_eq!(capped.len(), 2, "one past the cap, no more");
    // Resuming inside a block: the logs before `from_log_index` in `from_block` are skipped.
    let resumed = replica
        .get_logs(v1::LogsRequest {
            from_block: all[1].block_number,
            from_log_index: all[1].log_index + 1,
            ..query(0)
        })
        .await
        .unwrap()
        .into_inner()
        .logs;
    assert_eq!(resumed, all[2..], "resumed just past the second log");

    // eth_getLogsWithCursor pages through what eth_getLogs refused: one log per page at a cap
    // of one, every log once, in order, and no cursor on the last page.
    let mut pages = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let page = rpc
            .call(
                "eth_getLogsWithCursor",
                json!([{"fromBlock": "0x0", "toBlock": "latest", "cursor": cursor}]),
            )
            .await
            .unwrap();
        pages.push(page["logs"].as_array().unwrap().clone());
        cursor = page["cursor"].clone();
        if cursor.is_null() || pages.len() > 10 {
            break;
        }
    }
    let paged: Vec<(String, u64)> = pages
        .iter()
        .flatten()
        .map(|log| {
            (
                log["transactionHash"].as_str().unwrap().to_owned(),
                u64::from_str_radix(
                    log["logIndex"].as_str().unwrap().trim_start_matches("0x"),
                    16,
                )
                .unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = all
        .iter()
        .map(|log| {
            (
                format!("0x{}", alloy_primitives::hex::encode(&log.tx_hash)),
                log.log_index,
            )
        })
        .collect();
    assert_eq!(paged, expected, "{pages:?}");
    assert!(pages.iter().all(|p| p.len() <= 1), "{pages:?}");
    let bad = rpc
        .try_call(
            "eth_getLogsWithCursor",
            json!([{"fromBlock": "0x0", "toBlock": "latest", "cursor": "x"}]),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (bad.code, bad.message.as_str()),
        (-32602, "invalid params: invalid cursor \"x\"")
    );
    net.stop().await.unwrap();
}
