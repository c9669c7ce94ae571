//! A sequencer that signs a tampered diff (a test-only binary crediting an account that paid
//! nothing) is caught: a prover publishes fraud evidence, the verifier replica confirms it by
//! re-executing that one chunk, refuses to advance `safe` past it, and every replica's
//! `verity_status` shows the alarm, while `latest` goes on. A light verifier, which applies no
//! diff, raises the same alarm.

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

/// A proving devnet whose sequencer is the test-only faulty one, lying as `fault` (an
/// environment variable and its value) says; `more` sets further options.
async fn with_faulty_sequencer(
    fault: (&str, &str),
    more: impl FnOnce(&mut verity_e2e::verity_devnet::DevnetOptions),
) -> TestNet {
    TestNet::start(|o| {
        o.proving = true;
        o.steps_per_proof = 4;
        o.block_interval_ms = 300;
        o.binaries
            .insert(Service::Sequencer, "verity-sequencer-faulty".into());
        o.env.push((fault.0.into(), fault.1.into()));
        more(o);
    })
    .await
    .unwrap()
}

/// The address of the devnet's second prover.
fn second_prover(net: &TestNet) -> verity_primitives::Address {
    verity_primitives::SigningKey::load_or_create(&net.devnet.data_dir().join("prover-2.key"))
        .unwrap()
        .0
        .address()
}

/// Waits until `block` is safe; fails the test after five minutes.
async fn wait_safe(net: &TestNet, rpc: &verity_e2e::Rpc, block: u64) {
    let started = std::time::Instant::now();
    loop {
        let status = status(rpc).await;
        if status["safe"].as_u64() >= Some(block) {
            return;
        }
        if started.elapsed() > Duration::from_secs(300) {
            net.dump_logs();
            panic!("safe stopped at {status} (block {block} never safe)");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The proving results on `VERITY_PROOFS` until `done` says they are enough; fails the test
/// after two minutes.
async fn results_until(net: &TestNet, done: impl Fn(&[ProverResult]) -> bool) -> Vec<ProverResult> {
    let (_client, js) = net.jetstream().await;
    let proofs = js
        .get_stream(verity_bus::proving::PROOFS_STREAM)
        .await
        .unwrap();
    let mut results = Vec::new();
    let mut seq = 1;
    let started = std::time::Instant::now();
    while !done(&results) {
        let Ok(message) = proofs.get_raw_message(seq).await else {
            if started.elapsed() > Duration::from_secs(120) {
                net.dump_logs();
                panic!("not the results expected; found {} results", results.len());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let wire = v1::ProverResult::decode(message.payload.as_ref()).unwrap();
        results.push(ProverResult::try_from(&wire).unwrap());
        seq += 1;
    }
    results
}

/// S2 with R = 2: a chunk needs two agreeing proofs from distinct provers. A dishonest second
/// prover (test build, told to attest anything) proves the tampered chunk at once; while the
/// honest prover is down, that proof alone is not enough and `safe` stays before the block
/// (with R = 1 it would be enough: a chunk given to one dishonest prover alone becomes `safe`
/// wrongly, which is why the assumption is one honest prover among the R, docs/security.md).
/// Once the honest prover is back it publishes fraud evidence, the verifier confirms it, and
/// every replica shows the alarm naming the chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_diff_raises_the_alarm_and_safe_stops_before_it() {
    let mut net = with_faulty_sequencer(("VERITY_FAULT_TAMPER_MINI_BLOCK", "1"), |o| {
        o.second_prover = true;
        o.light_verifier = true;
        o.proof_quorum = 2;
        o.binaries
            .insert(Service::SecondProver, "verity-prover-faulty".into());
        o.env
            .push(("VERITY_FAULT_ATTEST_ANYTHING".into(), "1".into()));
    })
    .await;
    let liar = second_prover(&net);
    net.devnet
        .signal(Service::Prover, nix::sys::signal::Signal::SIGKILL)
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

    // The dishonest prover attests chunks 0 to 2, the tampered one included; one proof each is
    // not the quorum, so nothing becomes safe.
    let proven_by_liar = |results: &[ProverResult], chunk: u64| {
        results
            .iter()
            .any(|r| matches!(r, ProverResult::Proof(p) if p.chunk == chunk && p.prover == liar))
    };
    results_until(&net, |r| (0..3).all(|chunk| proven_by_liar(r, chunk))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alone = status(&rpc).await;
    assert!(
        alone["safe"].as_u64().unwrap_or(0) < tampered_block,
        "one dishonest proof made the tampered block {tampered_block} safe: {alone}"
    );
    assert_eq!(alone["alarm"], json!(null), "{alone}");

    // The honest prover comes back: the alarm reaches the full replica the gateway reads.
    net.devnet.start_service(Service::Prover).await.unwrap();
    let alarmed = wait_alarm(&net, &rpc).await;
    let alarm = alarmed["alarm"].as_str().unwrap();
    assert!(alarm.contains("fraud in mini-block 1"), "{alarm}");
    assert!(
        alarm.contains(&FRAUD_BENEFICIARY.to_string()),
        "the alarm names the account credited: {alarm}"
    );

    // The honest prover published fraud evidence for chunk 1, naming the re-executed writes.
    let results = results_until(&net, |r| {
        r.iter().any(|r| matches!(r, ProverResult::Fraud(_)))
    })
    .await;
    let fraud = results.into_iter().find_map(|r| match r {
        ProverResult::Fraud(evidence) => Some(evidence),
        ProverResult::Proof(_) => None,
    });
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

    // The light verifier, which never applied a diff, confirms the same fraud from the
    // evidence, the mini-blocks it checked and its own proven root, with the same finding, and
    // attests it at a block before the tampered one.
    let light = net
        .light_verifier_attests(|a| a.fraud.is_some(), Duration::from_secs(120))
        .await;
    let (chunk, reason) = light.fraud.clone().unwrap();
    assert_eq!(chunk, 1, "{light:?}");
    assert!(alarm.contains(&reason), "{reason} against {alarm}");
    assert!(light.block_number < tampered_block, "{light:?}");
    assert!(log_has(Service::LightVerifier, "FRAUD CONFIRMED"));
    net.stop().await.unwrap();
}

/// Waits for `verity_status` to show an alarm; fails the test after five minutes.
async fn wait_alarm(net: &TestNet, rpc: &verity_e2e::Rpc) -> Value {
    let started = std::time::Instant::now();
    loop {
        let status = status(rpc).await;
        if !status["alarm"].is_null() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(300) {
            net.dump_logs();
            panic!("no alarm: {status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sender_raises_the_alarm_and_safe_keeps_the_victims_funds() {
    // A dishonest sequencer: it executes forwarded transactions as whoever they claim to be from
    // (the honest one recovers the sender and refuses; e2e `contract`).
    let net = with_faulty_sequencer(("VERITY_FAULT_TRUST_SENDERS", "1"), |_| {}).await;
    let chain_id = net.devnet.chain_id();
    let rpc = net.rpc();
    let victim = dev_signer(&net, 3).unwrap().address();
    let funds = rpc
        .call("eth_getBalance", json!([victim.to_string(), "latest"]))
        .await
        .unwrap();

    // An honest transfer first, proven, so that `safe` is a block before the forgery.
    let honest = dev_signer(&net, 2).unwrap();
    let (raw, hash) = sign_filler(&honest, chain_id, 0).unwrap();
    rpc.send_and_wait(&raw, &hash).await.unwrap();
    wait_safe(&net, &rpc, block_of(&rpc, &hash).await).await;

    // A stranger's key signs a transfer of the victim's money to itself, and the transaction
    // reaches the sequencer claiming the victim as its sender: the dishonest sequencer executes
    // it as the victim's.
    let stranger = alloy_signer_local::PrivateKeySigner::random();
    let one_eth = alloy_primitives::U256::from(10u128.pow(18));
    let (raw, hash) =
        verity_e2e::sign_transfer(&stranger, chain_id, 0, stranger.address(), one_eth).unwrap();
    let forged = v1::ForwardRequest {
        id: 1,
        transaction: Some(v1::Transaction {
            raw: alloy_primitives::hex::decode(&raw).unwrap(),
            sender: victim.to_vec(),
            hash: alloy_primitives::hex::decode(&hash).unwrap(),
        }),
        ..Default::default()
    };
    let mut sequencer = verity_e2e::sequencer_client(&net.devnet, Service::Sequencer)
        .await
        .unwrap();
    let mut answers = sequencer
        .forward(futures::stream::iter([forged]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    assert_eq!(answer.rejection, v1::TxRejection::None as i32, "{answer:?}");
    let receipt = rpc
        .wait_receipt(&hash, Duration::from_secs(20))
        .await
        .unwrap();
    let from: alloy_primitives::Address = receipt["from"].as_str().unwrap().parse().unwrap();
    assert_eq!(from, victim, "executed as the victim's");
    let forged_block = block_of(&rpc, &hash).await;

    // A prover recovers the signer, the verifier confirms, every replica shows the alarm.
    let alarmed = wait_alarm(&net, &rpc).await;
    let alarm = alarmed["alarm"].as_str().unwrap();
    assert!(
        alarm.contains(&format!(
            "is signed by {}, not by its claimed sender {victim}",
            stranger.address()
        )),
        "{alarm}"
    );
    // `safe` stays before the forgery, and the victim's money is all there at `safe`.
    let after = status(&rpc).await;
    let safe = after["safe"].as_u64().expect("a safe block");
    assert!(
        safe < forged_block,
        "safe {safe} reached block {forged_block}: {after}"
    );
    let at_safe = rpc
        .call("eth_getBalance", json!([victim.to_string(), "safe"]))
        .await
        .unwrap();
    assert_eq!(at_safe, funds);
    let at_latest = rpc
        .call("eth_getBalance", json!([victim.to_string(), "latest"]))
        .await
        .unwrap();
    assert_ne!(at_latest, funds, "the forgery was applied at latest");
    net.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_fraud_evidence_names_its_prover_and_safe_goes_on() {
    // R = 1, two provers, each first for about half of the chunks. The second (test build) lies
    // about the first chunk it is first for; from then on it takes every other job and never
    // answers it, and proves the rest, which the verifiers ignore since it was caught. The
    // honest one takes both kinds of chunk over after the takeover time (caught prover's
    // proofs, when they are there by then, do not count).
    let net = TestNet::start(|o| {
        o.proving = true;
        o.second_prover = true;
        o.steps_per_proof = 4;
        o.block_interval_ms = 300;
        o.takeover_secs = 3;
        o.binaries
            .insert(Service::SecondProver, "verity-prover-faulty".into());
    })
    .await
    .unwrap();
    let liar = second_prover(&net);
    let chain_id = net.devnet.chain_id();
    let sender = dev_signer(&net, 2).unwrap();
    let rpc = net.rpc();
    // Transfers, one at a time, until the lying prover has taken a job and been refuted (it
    // lies about the first job it gets, then takes no more). Each transfer is a chunk, first
    // for the liar about every other time: after each, the alarm is waited for a while before
    // the next, so that few chunks are left to prove afterwards.
    let started = std::time::Instant::now();
    let mut nonce = 0;
    let alarm = 'sending: loop {
        let (raw, hash) = sign_filler(&sender, chain_id, nonce).unwrap();
        rpc.send_and_wait(&raw, &hash).await.unwrap();
        nonce += 1;
        let round = std::time::Instant::now();
        while round.elapsed() < Duration::from_secs(10) {
            let status = status(&rpc).await;
            if let Some(alarm) = status["alarm"].as_str() {
                break 'sending alarm.to_owned();
            }
            if started.elapsed() > Duration::from_secs(300) {
                net.dump_logs();
                panic!("no alarm: {status}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    assert!(
        alarm.contains(&format!("refuted fraud evidence from prover {liar}")),
        "the alarm names the lying prover: {alarm}"
    );
    assert!(!alarm.contains("confirmed fraud"), "{alarm}");

    // `safe` goes on with the honest prover: transfers sent now become safe, up to one whose
    // chunk the caught prover is first for (and holds without answering), so that the honest
    // one must take it over. Each transfer here is its own mini-block, so its chunk is its
    // nonce.
    let assignment = verity_bus::proving::Assignment {
        provers: vec![net.devnet.prover_address().0.0, liar.0.0],
        quorum: 1,
        takeover: Duration::from_secs(3),
    };
    let hash = loop {
        let (raw, hash) = sign_filler(&sender, chain_id, nonce).unwrap();
        rpc.send_and_wait(&raw, &hash).await.unwrap();
        nonce += 1;
        if assignment.rank(nonce - 1, &liar.0.0) == Some(0) {
            break hash;
        }
    };
    wait_safe(&net, &rpc, block_of(&rpc, &hash).await).await;
    let log = std::fs::read_to_string(net.devnet.log_file(Service::Verifier)).unwrap();
    assert!(
        log.contains("FALSE ACCUSATION"),
        "the verifier says what it saw"
    );
    // The chunk it lied about (and held) was taken over: its fraud evidence counts for nothing.
    let log = std::fs::read_to_string(net.devnet.log_file(Service::Prover)).unwrap();
    assert!(
        log.contains("taking over a chunk its first provers left unproven"),
        "the honest prover took the silent one's chunks over"
    );
    net.stop().await.unwrap();
}
