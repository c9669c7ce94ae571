//! A devnet on a 3-node JetStream cluster on loopback, every stream and bucket kept in 3 copies
//! (R3), under realtime load (issue 24, item 1):
//! - SIGKILL of the node leading the chain stream: production goes on on the other two, and the
//!   node, started again later, catches up;
//! - then two of the three stopped: production pauses, `verity_status` says why, and when they
//!   return production resumes;
//! - at the end, every transaction a client got a receipt for is in the chain once, the stream
//!   holds every event once in order, and sequencer and replica agree on the state.

use std::time::Duration;

use verity_e2e::{Load, TestNet, verity_devnet::Service};
use verity_proto::v1::GetHeadRequest;

const SENDERS: usize = 2;

/// `stream`'s info, as the admin reads it (`None` while it cannot be read).
async fn stream_info(net: &TestNet, stream: &str) -> Option<async_nats::jetstream::stream::Info> {
    let (_client, js) = net.jetstream().await;
    js.get_stream(stream).await.ok()?.info().await.ok().cloned()
}

/// The server leading `stream`, and how many copies the stream keeps.
async fn leader(net: &TestNet, stream: &str) -> (Option<String>, usize) {
    stream_info(net, stream).await.map_or((None, 0), |info| {
        (
            info.cluster.and_then(|c| c.leader),
            info.config.num_replicas,
        )
    })
}

/// Waits until `stream` has a leader and every other copy is current; fails after `within`.
async fn wait_replicated(net: &TestNet, stream: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(info) = stream_info(net, stream).await
            && let Some(cluster) = &info.cluster
            && let Some(leader) = &cluster.leader
            && cluster.replicas.len() + 1 == info.config.num_replicas
            && cluster.replicas.iter().all(|p| p.current && !p.offline)
        {
            return leader.clone();
        }
        if tokio::time::Instant::now() > deadline {
            net.dump_logs();
            panic!("{stream} has no leader with every copy current");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The replica's applied chain position (0 while it cannot be asked).
async fn replica_seq(net: &TestNet) -> u64 {
    match verity_e2e::replica_client(&net.devnet, Service::Replica).await {
        Ok(mut c) => c
            .get_head(GetHeadRequest {})
            .await
            .map_or(0, |h| h.into_inner().last_seq),
        Err(_) => 0,
    }
}

/// The sequencer's committed chain position.
async fn sequencer_seq(net: &TestNet) -> u64 {
    match verity_e2e::sequencer_client(&net.devnet, Service::Sequencer).await {
        Ok(mut c) => c
            .get_head(GetHeadRequest {})
            .await
            .map_or(0, |h| h.into_inner().last_seq),
        Err(_) => 0,
    }
}

/// Waits until the replica has applied `events` more chain events than `from`; fails with
/// `what` after `within`.
async fn wait_applied(net: &TestNet, from: u64, events: u64, within: Duration, what: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let now = replica_seq(net).await;
        if now >= from + events {
            return now;
        }
        if tokio::time::Instant::now() > deadline {
            net.dump_logs();
            panic!(
                "{what}: the replica applied {now}, not {} events past {from}",
                events
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `verity_status` of the gateway, once `until` holds of it; fails with `what` after `within`.
async fn wait_status(
    net: &TestNet,
    within: Duration,
    what: &str,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let rpc = net.rpc();
    let deadline = tokio::time::Instant::now() + within;
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(Ok(status)) = rpc.try_call("verity_status", serde_json::json!([])).await {
            if until(&status) {
                return status;
            }
            last = status;
        }
        if tokio::time::Instant::now() > deadline {
            net.dump_logs();
            panic!("{what}: verity_status is {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_chain_streams_leader_loses_nothing_and_a_lost_majority_only_pauses() {
    let mut net = TestNet::start(|o| {
        o.nats_nodes = 3;
        o.block_interval_ms = 200;
        // A replica cut off from the chain stream says so after 3 s (30 by default).
        o.env.push(("VERITY_MAX_LAG_SECS".into(), "3".into()));
    })
    .await
    .unwrap();
    for stream in [
        verity_bus::CHAIN_STREAM.to_string(),
        verity_bus::proving::FINALITY_STREAM.to_string(),
        format!("KV_{}", verity_bus::lease::LEASE_BUCKET),
        verity_bus::proving::JOBS_STREAM.to_string(),
    ] {
        let (leader, replicas) = leader(&net, &stream).await;
        assert_eq!(replicas, 3, "{stream} keeps 3 copies");
        assert!(leader.is_some(), "{stream} has a leader");
    }
    let load = Load::start(&net, 1..=SENDERS);
    let start = wait_applied(&net, 0, 20, Duration::from_secs(30), "under load").await;

    // 1. The chain stream's leader is killed: the other two elect another and go on.
    let name = wait_replicated(&net, verity_bus::CHAIN_STREAM, Duration::from_secs(30)).await;
    let cluster = net.devnet.nats_cluster().unwrap();
    let killed = cluster.index_of(&name).expect("a node of ours leads");
    cluster.kill(killed).await.unwrap();
    let at_kill = replica_seq(&net).await.max(start);
    let after = wait_applied(
        &net,
        at_kill,
        50,
        Duration::from_secs(60),
        &format!("after SIGKILL of {name}, the chain stream's leader"),
    )
    .await;
    let (new_leader, _) = leader(&net, verity_bus::CHAIN_STREAM).await;
    assert!(
        new_leader.as_ref().is_some_and(|l| *l != name),
        "the chain stream's leader is {new_leader:?}, not another than {name}"
    );
    let cluster = net.devnet.nats_cluster().unwrap();
    cluster.start_node(killed).await.unwrap();
    // As the chart's startup probe: the node is caught up (JetStream's metadata above all)
    // before another is taken down. Without this wait, a node rebuilding its metadata after
    // SIGKILL could win the next election and delete every stream as orphaned (ADR 0016).
    cluster
        .wait_healthy(killed, Duration::from_secs(60))
        .await
        .unwrap();
    wait_applied(
        &net,
        after,
        20,
        Duration::from_secs(30),
        "with the node back",
    )
    .await;

    // 2. Two of three stopped: no majority, so nothing can be stored; production pauses and
    // the gateway says why.
    let cluster = net.devnet.nats_cluster().unwrap();
    let stopped = [(killed + 1) % 3, (killed + 2) % 3];
    for node in stopped {
        cluster.stop_node(node).await.unwrap();
    }
    // The replica may first say it is behind (the events it was not given yet were published
    // before the stream lost its leader); the cause follows once it has been unable to compare
    // with the stream for its lag bound.
    let status = wait_status(
        &net,
        Duration::from_secs(30),
        "with two of three NATS nodes stopped",
        |s| {
            s["ready"] == false
                && s["notReady"]
                    .as_str()
                    .is_some_and(|why| why.contains("chain stream"))
        },
    )
    .await;
    let why = status["notReady"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("chain stream"), "{status}");
    // Paused: the sequencer cannot renew its lease, so it stops producing.
    let paused = sequencer_seq(&net).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sequencer_seq(&net).await,
        paused,
        "the sequencer produced without a NATS majority ({why})"
    );

    // 3. They return: production resumes, the gateway is ready again.
    let cluster = net.devnet.nats_cluster().unwrap();
    for node in stopped {
        cluster.start_node(node).await.unwrap();
    }
    wait_status(
        &net,
        Duration::from_secs(60),
        "with every NATS node back",
        |s| s["ready"] == true,
    )
    .await;
    let resumed = replica_seq(&net).await;
    wait_applied(
        &net,
        resumed.max(paused),
        20,
        Duration::from_secs(60),
        "resumed",
    )
    .await;

    let (attempts, receipted) = load.stop().await;
    // Few compared with the attempts: while production pauses, each sender's transfer waits in
    // the mempool and its retries with the same nonce are refused as underpriced replacements.
    assert!(
        receipted.len() > 20,
        "only {} of {attempts} transfers got a receipt",
        receipted.len()
    );
    net.assert_nothing_lost(
        &receipted,
        SENDERS,
        &format!("3-node NATS, {name} killed, then two stopped ({why})"),
    )
    .await;
    net.stop().await.unwrap();
}
