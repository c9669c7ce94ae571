//! The sequencer's storage fills up (issue 24): its MDBX size ceiling, set low, fails a commit
//! the way a full disk does. It stops producing with a clear error and says so (health
//! NOT_SERVING, the reason and what to do in `GetHead`), publishes what it committed and hands
//! the lease over (a standby with room could take over; here there is none, so sends are
//! refused as "sequencer unavailable, retry"); nothing is half-written (the replica holds
//! exactly what the sequencer committed, with the same state); restarted with room, it resumes
//! the same chain with every receipt in it.

use std::time::{Duration, Instant};

use alloy_primitives::Address;
use nix::sys::signal::Signal;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use verity_e2e::{TestNet, dev_signer, sequencer_client, sign_call, verity_devnet::Service};
use verity_proto::v1;

/// The sequencer's database ceiling: a few seconds of the calls below.
const CEILING_MIB: &str = "16";
/// Calldata per transaction (zero bytes: ~1M gas under EIP-7623's floor).
const CALLDATA: usize = 96 * 1024;

/// `address`'s transaction count at `tag` ("latest", "pending").
async fn nonce_of(rpc: &verity_e2e::Rpc, address: Address, tag: &str) -> u64 {
    rpc.quantity(
        "eth_getTransactionCount",
        json!([format!("{address:#x}"), tag]),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_stops_production_cleanly_and_room_resumes_it() {
    let mut net = TestNet::start(|o| {
        // Short blocks: the checks read sealed blocks.
        o.block_interval_ms = 200;
        o.env
            .push(("VERITY_MAX_DB_SIZE_MIB".into(), CEILING_MIB.into()));
    })
    .await
    .unwrap();
    let rpc = net.rpc();
    let chain_id = rpc.quantity("eth_chainId", json!([])).await.unwrap();
    let signer = dev_signer(&net, 0).unwrap();
    let sink = Address::repeat_byte(0x5e);
    let send = |nonce: u64| {
        sign_call(&signer, chain_id, nonce, sink, vec![0; CALLDATA], 1_100_000).unwrap()
    };

    // Large transactions, one at a time, until the sequencer stops taking them.
    let mut receipted = Vec::new();
    let mut nonce = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let refusal = loop {
        assert!(
            Instant::now() < deadline,
            "{} receipts and the {CEILING_MIB} MiB database is not full",
            receipted.len()
        );
        let (raw, hash) = send(nonce);
        match rpc
            .try_call("realtime_sendRawTransaction", json!([raw]))
            .await
            .unwrap()
        {
            Ok(receipt) => {
                assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
                receipted.push(hash);
                nonce += 1;
            }
            // The transactions of the mini-block that did not fit are not in the chain: their
            // senders time out, then are refused.
            Err(error) if error.message.starts_with("sequencer unavailable") => break error,
            Err(error) => {
                assert_eq!(
                    error.code, 4,
                    "only a realtime timeout before the refusal: {error:?}"
                );
                nonce = nonce_of(&rpc, signer.address(), "latest").await;
            }
        }
    };
    assert!(
        receipted.len() >= 20,
        "{} receipts before it filled",
        receipted.len()
    );
    assert_eq!(refusal.code, -32000, "typed and retryable: {refusal:?}");
    assert_eq!(
        net.health(Service::Sequencer).await,
        ServingStatus::NotServing,
        "the sequencer reports it cannot produce"
    );
    let head = sequencer_client(&net.devnet, Service::Sequencer)
        .await
        .unwrap()
        .get_head(v1::GetHeadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        head.not_ready.starts_with("storage full: mdbx")
            && head.not_ready.contains("raise --max-db-size-mib"),
        "it says why and what to do: {:?}",
        head.not_ready
    );

    // Nothing half-written: the replica applies exactly what the sequencer committed and ends
    // with the same state. The receipts handed out are in mini-blocks of the open block, which
    // is sealed once production resumes; that every one of them stands is checked below.
    let committed = head.last_seq;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replica = net.state_digest(Service::Replica).await;
        if replica.last_seq >= committed {
            assert_eq!(
                replica.last_seq, committed,
                "the replica holds no more than was committed"
            );
            let sequencer = net.state_digest(Service::Sequencer).await;
            assert_eq!(
                (sequencer.digest, sequencer.accounts),
                (replica.digest, replica.accounts),
                "the same state on both sides of the failed commit"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not reach event {committed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Room again: a restart with a larger ceiling resumes the same chain.
    net.devnet
        .signal(Service::Sequencer, Signal::SIGTERM)
        .await
        .unwrap();
    net.devnet.set_env("VERITY_MAX_DB_SIZE_MIB", "256");
    if let Err(error) = net.devnet.start_service(Service::Sequencer).await {
        net.dump_logs();
        panic!("the sequencer did not come back with room: {error}");
    }
    let mut nonce = nonce_of(&rpc, signer.address(), "latest").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = 0;
    while after < 5 {
        assert!(Instant::now() < deadline, "production did not resume");
        let (raw, hash) = send(nonce);
        match rpc
            .try_call("realtime_sendRawTransaction", json!([raw]))
            .await
            .unwrap()
        {
            Ok(receipt) => {
                assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
                receipted.push(hash);
                nonce += 1;
                after += 1;
            }
            // Ingress finds the restarted sequencer within a few tries, and sends the recent
            // transactions it forwarded again (the ones of the commit that failed among them),
            // so the nonce may have moved.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                nonce = nonce_of(&rpc, signer.address(), "pending").await;
            }
        }
    }
    assert_eq!(net.health(Service::Sequencer).await, ServingStatus::Serving);
    net.assert_nothing_lost(&receipted, 1, "resumed").await;
    net.stop().await.unwrap();
}
