//! Killing the sequencer (which publishes its own chain) or the replica with SIGKILL mid-stream
//! loses no block: the JetStream stream ends with every chain event exactly once, in order, and
//! the replica with every block.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::json;
use verity_e2e::{Rpc, TestNet, dev_signer, sign_filler, verity_devnet::Service};
use verity_proto::v1::{self, GetHeadRequest};

/// Sends transfers from one dev account until `stop`, returning how many were accepted.
async fn load(
    rpc: Rpc,
    signer: alloy_signer_local::PrivateKeySigner,
    chain_id: u64,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut nonce = 0;
    while !stop.load(Ordering::Relaxed) {
        let (raw, _) = sign_filler(&signer, chain_id, nonce).unwrap();
        match rpc.try_call("eth_sendRawTransaction", json!([raw])).await {
            Ok(Ok(_)) => nonce += 1,
            // Accepted before the sequencer died, and forwarded again by ingress since.
            Ok(Err(error))
                if error.to_string().contains("already known")
                    || error.to_string().contains("nonce too low") =>
            {
                nonce += 1
            }
            // While the sequencer restarts: the documented retryable error.
            Ok(Err(error)) if error.to_string().contains("retry") => {}
            Ok(Err(error)) => panic!("transfer {nonce} refused: {error}"),
            Err(error) => panic!("gateway unreachable: {error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    nonce
}

async fn sequencer_head(net: &TestNet) -> v1::SequencerHead {
    let mut client = verity_e2e::sequencer_client(&net.devnet, Service::Sequencer)
        .await
        .unwrap();
    client
        .get_head(GetHeadRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn replica_head(net: &TestNet) -> Option<v1::ReplicaHead> {
    let mut client = verity_e2e::replica_client(&net.devnet, Service::Replica)
        .await
        .ok()?;
    Some(client.get_head(GetHeadRequest {}).await.ok()?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_sequencer_or_replica_loses_no_block() {
    let mut net = TestNet::start(|o| o.block_interval_ms = 200).await.unwrap();
    let chain_id = net.devnet.chain_id();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = dev_signer(&net, 1).unwrap();
    let sender_address = sender.address();
    let loader = tokio::spawn(load(net.rpc(), sender, chain_id, stop.clone()));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    net.devnet
        .signal(Service::Sequencer, Signal::SIGKILL)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    net.devnet.start_service(Service::Sequencer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    net.devnet
        .signal(Service::Replica, Signal::SIGKILL)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    net.devnet.start_service(Service::Replica).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // And the sequencer once more, while the replica is catching up.
    net.devnet
        .signal(Service::Sequencer, Signal::SIGKILL)
        .await
        .unwrap();
    net.devnet.start_service(Service::Sequencer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = loader.await.unwrap();
    assert!(sent > 20, "only {sent} transfers were sent");

    // Let the last transfers be sealed, then wait for the replica to reach the sequencer.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let target = sequencer_head(&net).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(head) = replica_head(&net).await
            && head.last_seq >= target.last_seq
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            net.dump_logs();
            panic!(
                "replica did not reach event {} (at {:?})",
                target.last_seq,
                replica_head(&net).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stream holds every event exactly once: message n is event n.
    let sealed = net
        .sealed_blocks(target.last_seq, "after the crashes")
        .await;
    let rpc = net.rpc();
    let blocks = sealed.len();
    let mut transactions = 0;
    for block in sealed {
        transactions += block.transaction_hashes.len();
        let number = json!(format!("{:#x}", block.number()));
        let served = rpc
            .call("eth_getBlockByNumber", json!([number, false]))
            .await
            .unwrap();
        assert_eq!(
            served["hash"].as_str().unwrap(),
            block.hash.to_string(),
            "block {}",
            block.number()
        );
    }
    assert!(blocks >= 10, "only {blocks} blocks");
    assert_eq!(
        transactions as u64, sent,
        "every transfer in exactly one block"
    );
    let nonce = rpc
        .quantity(
            "eth_getTransactionCount",
            json!([sender_address.to_string(), "latest"]),
        )
        .await
        .unwrap();
    assert_eq!(nonce, sent);
    net.stop().await.unwrap();
}
