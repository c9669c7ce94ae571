//! A sequencer that signs a tampered diff (a test-only binary crediting an account that paid
//! nothing) is caught: a prover publishes fraud evidence, the verifier replica confirms it by
//! re-executing that one chunk, refuses to advance `safe` past it, and every replica's
//! `verity_status` shows the alarm, while `latest` goes on.

use std::time::Duration;

use prost::Message as _;
use serde_json::{Value, json};
use verity_chunk::wire::ProverResult;
use verity_e2e::{FRAUD_BENEFICIARY, TestNet, dev_signer, sign_filler, verity_devnet::Service};
use verity_proto::v1;

/// The block a transaction landed in.
async fn block_of(rpc: &verity_e2e::Rpc, tx_hash: &str) -> u64 {
    let receipt = rpc
        .call("eth_getTransactionReceipt", json!([tx_hash]))
        .await
        .unwrap();
    verity_e2e::parse_quantity(&receipt["blockNumber"]).unwrap()
}

async fn status(rpc: &verity_e2e::Rpc) -> Value {
    rpc.call("verity_status", json!([])).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_diff_raises_the_alarm_and_safe_stops_before_it() {
    let net = TestNet::start(|o| {
        o.proving = true;
        o.steps_per_proof = 4;
        o.block_interval_ms = 300;
        o.binaries
            .insert(Service::Sequencer, "verity-sequencer-faulty".into());
        o.env
            .push(("VERITY_FAULT_TAMPER_MINI_BLOCK".into(), "1".into()));
    })
    .await
    .unwrap();
    let chain_id = net.devnet.chain_id();
    let sender = dev_signer(&net, 2).unwrap();
    let rpc = net.rpc();
    let mut hashes = vec![];
    // Mini-blocks 0 (honest), 1 (tampered) and 2 (honest, built on the tampered state).
    for nonce in 0..3u64 {
        let (raw, hash) = sign_filler(&sender, chain_id, nonce).unwrap();
        rpc.send_and_wait(&raw, &hash).await.unwrap();
        hashes.push(hash);
    }
    // `latest` shows the money that came from nowhere: replicas apply what is signed.
    let stolen = rpc
        .call(
            "eth_getBalance",
            json!([FRAUD_BENEFICIARY.to_string(), "latest"]),
        )
        .await
        .unwrap();
    assert_eq!(stolen, json!("0xde0b6b3a7640000"));
    let tampered_block = block_of(&rpc, &hashes[1]).await;

    // The alarm reaches the full replica the gateway reads.
    let started = std::time::Instant::now();
    let alarmed = loop {
        let status = status(&rpc).await;
        if !status["alarm"].is_null() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            net.dump_logs();
            panic!("no alarm: {status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let alarm = alarmed["alarm"].as_str().unwrap();
    assert!(alarm.contains("fraud in mini-block 1"), "{alarm}");
    assert!(
        alarm.contains(&FRAUD_BENEFICIARY.to_string()),
        "the alarm names the account credited: {alarm}"
    );

    // The prover published fraud evidence for chunk 1, naming the re-executed writes.
    let (_client, js) = net.jetstream().await;
    let proofs = js
        .get_stream(verity_bus::proving::PROOFS_STREAM)
        .await
        .unwrap();
    let mut fraud = None;
    let mut seq = 1;
    while let Ok(message) = proofs.get_raw_message(seq).await {
        let wire = v1::ProverResult::decode(message.payload.as_ref()).unwrap();
        if let ProverResult::Fraud(evidence) = ProverResult::try_from(&wire).unwrap() {
            fraud = Some(evidence);
        }
        seq += 1;
    }
    let fraud = fraud.expect("fraud evidence on VERITY_PROOFS");
    assert_eq!(fraud.job.chunk, 1);
    assert!(!fraud.reexecuted.accounts.contains_key(&FRAUD_BENEFICIARY));
    assert!(
        fraud
            .job
            .mini_blocks
            .iter()
            .any(|m| m.diff.accounts.contains_key(&FRAUD_BENEFICIARY))
    );

    // `safe` never reaches the tampered block, even after chunk 2 is proven; `latest` moves on.
    let log_has = |service: Service, needle: &str| {
        std::fs::read_to_string(net.devnet.log_file(service))
            .unwrap_or_default()
            .contains(needle)
    };
    let started = std::time::Instant::now();
    while !log_has(Service::Prover, "chunk proven chunk=2") {
        if started.elapsed() > Duration::from_secs(120) {
            net.dump_logs();
            panic!("chunk 2 never proven");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = status(&rpc).await;
    if let Some(safe) = after["safe"].as_u64() {
        assert!(
            safe < tampered_block,
            "safe {safe} reached the tampered block {tampered_block}: {after}"
        );
    }
    assert!(
        after["latest"].as_u64().unwrap() >= tampered_block,
        "{after}"
    );
    assert!(log_has(Service::Verifier, "FRAUD CONFIRMED"));
    net.stop().await.unwrap();
}
