//! The proving path with real services and real halo2 proofs: the witness replica publishes a
//! job per mini-block, a prover proves it, and the proofs verify, the way a verifier checks them,
//! against the chain's own mini-blocks and roots that chain from genesis. A prover killed in the
//! middle of a job loses nothing: the job is delivered again and proven. With no prover at all,
//! `latest` moves on and `safe` waits until one is back. Forged results published on the proofs
//! stream (a flipped byte, another chunk's proof, an unregistered attester) are refused by the
//! verifier service, each with its reason.

use std::{collections::BTreeMap, time::Duration};

use alloy_primitives::Address;
use nix::sys::signal::Signal;
use prost::Message as _;
use serde_json::json;
use verity_chunk::{
    check_claim,
    wire::{ChunkProof, ProverResult},
};
use verity_circuits::{KeyRing, Params, Shape};
use verity_e2e::{TestNet, dev_signer, sign_filler, verity_devnet::Service};
use verity_primitives::{ChainEventKind, ChainSpec, MiniBlock, SigningKey, genesis_diff};
use verity_proto::v1;

const SHAPE: Shape = Shape {
    steps: 4,
    depth: 32,
};

/// Shared leading bits of the ground key and its neighbour's (its path is one level deeper).
const GROUND_BITS: usize = 14;

/// An address whose account key shares its first `bits` bits with `near`'s.
fn ground_address(near: Address, bits: usize) -> Address {
    let target = verity_commitment::account_key(near);
    let prefix = |key: alloy_primitives::B256| {
        u64::from_be_bytes(key[..8].try_into().unwrap()) >> (64 - bits)
    };
    (0u64..)
        .map(|i| Address::left_padding_from(&i.to_be_bytes()))
        .find(|a| *a != near && prefix(verity_commitment::account_key(*a)) == prefix(target))
        .unwrap()
}

/// Every prover result on `VERITY_PROOFS` so far, by chunk.
async fn results(js: &async_nats::jetstream::Context) -> BTreeMap<u64, Vec<ChunkProof>> {
    let stream = js
        .get_stream(verity_bus::proving::PROOFS_STREAM)
        .await
        .unwrap();
    let mut by_chunk: BTreeMap<u64, Vec<ChunkProof>> = BTreeMap::new();
    let mut seq = 1;
    while let Ok(message) = stream.get_raw_message(seq).await {
        let wire = v1::ProverResult::decode(message.payload.as_ref()).unwrap();
        match ProverResult::try_from(&wire).unwrap() {
            ProverResult::Proof(proof) => by_chunk.entry(proof.chunk).or_default().push(*proof),
            ProverResult::Fraud(evidence) => {
                panic!("fraud reported on an honest chain: {}", evidence.reason)
            }
        }
        seq += 1;
    }
    by_chunk
}

/// The chain's mini-blocks, by number, from the chain stream.
async fn mini_blocks(js: &async_nats::jetstream::Context) -> BTreeMap<u64, MiniBlock> {
    let stream = js.get_stream(verity_bus::CHAIN_STREAM).await.unwrap();
    let mut minis = BTreeMap::new();
    let mut seq = 1;
    while let Ok(message) = stream.get_raw_message(seq).await {
        let event = verity_bus::decode_event(seq, &message.payload).unwrap();
        if let ChainEventKind::MiniBlock(mini) = verity_primitives::ChainEvent::try_from(&event)
            .unwrap()
            .kind
        {
            minis.insert(mini.number, *mini);
        }
        seq += 1;
    }
    minis
}

/// The job of `chunk` on the jobs stream.
async fn queued_job(
    net: &TestNet,
    js: &async_nats::jetstream::Context,
    chunk: u64,
) -> verity_chunk::ChunkJob {
    let mut stream = js
        .get_stream(verity_bus::proving::JOBS_STREAM)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let (first, last) = {
            let info = stream.info().await.unwrap();
            (info.state.first_sequence, info.state.last_sequence)
        };
        for seq in first..=last {
            // Jobs older than the stream's age limit are gone.
            let Ok(message) = stream.get_raw_message(seq).await else {
                continue;
            };
            let wire = v1::ChunkJob::decode(message.payload.as_ref()).unwrap();
            let job = verity_chunk::ChunkJob::try_from(&wire).unwrap();
            if job.chunk == chunk {
                return job;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            net.dump_logs();
            panic!("no job for chunk {chunk} in the queue");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_log(net: &TestNet, service: Service, needle: &str, timeout: Duration) {
    let started = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(net.devnet.log_file(service)).unwrap_or_default();
        if log.contains(needle) {
            return;
        }
        if started.elapsed() > timeout {
            net.dump_logs();
            panic!("{service} never logged {needle:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_are_proven_a_killed_prover_loses_nothing_and_safe_waits_for_provers() {
    // A main shape of 2 steps and a larger one of 3: a one-transfer chunk writes 3 keys (sender,
    // recipient, fee recipient), so the prover proves it as one larger segment, which the
    // verifier replica and the check below hold keys for.
    let main = Shape { steps: 2, ..SHAPE };
    let larger = Shape { steps: 3, ..SHAPE };
    let mut net = TestNet::start(|o| {
        o.proving = true;
        o.steps_per_proof = main.steps;
        o.larger_segments = vec![larger.steps];
        o.light_verifier = true;
        o.prover_ack_wait_secs = 6;
        o.block_interval_ms = 500;
    })
    .await
    .unwrap();
    let chain_id = net.devnet.chain_id();
    let prover: Address = net
        .devnet
        .address(Service::Prover, "prover")
        .unwrap()
        .parse()
        .unwrap();
    // The verifier side derives its own keys from the shape and the devnet's KZG parameters.
    let params_file = net.dir.path().join(verity_e2e::verity_devnet::KZG_PARAMS);
    let keys = tokio::task::spawn_blocking(move || {
        let params = Params::read_for_larger(&params_file, main, &[larger.steps]).unwrap();
        KeyRing::generate_with_larger(main, &[larger.steps], &params).unwrap()
    });

    // Chunk 0: one transfer.
    let sender = dev_signer(&net, 1).unwrap();
    let rpc = net.rpc();
    let send = |nonce: u64| {
        let (raw, hash) = sign_filler(&sender, chain_id, nonce).unwrap();
        let rpc = rpc.clone();
        async move { rpc.send_and_wait(&raw, &hash).await.unwrap() }
    };
    send(0).await;

    // Kill the prover while it proves chunk 0, and start it again.
    wait_for_log(
        &net,
        Service::Prover,
        "job received chunk=0",
        Duration::from_secs(180),
    )
    .await;
    net.devnet
        .signal(Service::Prover, Signal::SIGKILL)
        .await
        .unwrap();
    net.devnet.start_service(Service::Prover).await.unwrap();
    send(1).await;

    // Both chunks get proven; chunk 0 on its second delivery.
    let (_client, js) = net.jetstream().await;
    let started = std::time::Instant::now();
    let proofs = loop {
        let proofs = results(&js).await;
        if proofs.contains_key(&0) && proofs.contains_key(&1) {
            break proofs;
        }
        if started.elapsed() > Duration::from_secs(300) {
            net.dump_logs();
            panic!(
                "chunks not proven in time; results so far: {:?}",
                proofs.keys()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log = std::fs::read_to_string(net.devnet.log_file(Service::Prover)).unwrap();
    assert!(
        log.contains("prover.job{chunk=0 delivered=2"),
        "chunk 0 was not redelivered after the kill:\n{log}"
    );
    // One result per chunk: the killed attempt published nothing.
    assert_eq!(proofs[&0].len(), 1, "{:?}", proofs[&0]);

    // Verify as a verifier does: from genesis, against the chain's own mini-blocks.
    let keys = std::sync::Arc::new(keys.await.unwrap());
    let minis = mini_blocks(&js).await;
    let spec = ChainSpec::load(&net.dir.path().join("genesis.json")).unwrap();
    let mut root = verity_chunk::genesis_tree(&genesis_diff(&spec.genesis)).root();
    let mut checked = vec![];
    for chunk in [0u64, 1] {
        let proof = &proofs[&chunk][0];
        let shapes: Vec<Shape> = proof.segments.iter().map(|s| s.shape).collect();
        assert_eq!(shapes, [larger], "chunk {chunk}");
        let statement = check_claim(
            chain_id,
            main,
            &[prover],
            root,
            std::slice::from_ref(&minis[&chunk]),
            proof,
        )
        .unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
        checked.push(statement);
        root = proof.post_root;
    }
    let claims: Vec<_> = checked
        .iter()
        .zip([&proofs[&0][0], &proofs[&1][0]])
        .collect();
    for (chunk, verdict) in verity_chunk::verify_proofs(&keys, &claims)
        .into_iter()
        .enumerate()
    {
        verdict.unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
    }

    // The verifier replica checked the same proofs and attested: `safe` and `finalized` reach
    // the block holding chunk 1 on the full replica the gateway reads, with no alarm.
    let block_of_1 = minis[&1].block_number;
    let started = std::time::Instant::now();
    let status = loop {
        let status = rpc.call("verity_status", json!([])).await.unwrap();
        let at_least = |key: &str| status[key].as_u64().is_some_and(|n| n >= block_of_1);
        if at_least("safe") && at_least("finalized") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            net.dump_logs();
            panic!("safe/finalized did not reach block {block_of_1}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status["alarm"], json!(null), "{status}");
    assert!(status["latest"].as_u64().unwrap() >= status["safe"].as_u64().unwrap());
    let safe_block = rpc
        .call("eth_getBlockByNumber", json!(["safe", false]))
        .await
        .unwrap();
    let safe_number = verity_e2e::parse_quantity(&safe_block["number"]).unwrap();
    assert!(safe_number >= block_of_1, "{safe_block}");
    for verifier in [Service::Verifier, Service::LightVerifier] {
        let log = std::fs::read_to_string(net.devnet.log_file(verifier)).unwrap();
        assert!(
            !log.contains("refused"),
            "the {verifier} refused an honest proof:\n{log}"
        );
    }
    // The light verifier, which applies no diff, verified the same larger segments: it attests
    // the block, at the root the proofs end at, and keeps no state to serve.
    let light = net
        .light_verifier_attests(
            |a| a.block_number >= block_of_1 || a.fraud.is_some(),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(light.fraud, None, "{light:?}");
    if light.block_number == block_of_1 {
        assert_eq!(light.state_root, proofs[&1][0].post_root, "{light:?}");
    }
    let read = verity_e2e::replica_client(&net.devnet, Service::LightVerifier)
        .await
        .unwrap()
        .get_head(v1::GetHeadRequest::default())
        .await;
    assert_eq!(
        read.map(|_| ()).unwrap_err().code(),
        tonic::Code::Unimplemented,
        "a light verifier has no state to serve"
    );

    // No prover at all: `latest` moves on, `safe` stops; it resumes when a prover is back.
    net.devnet
        .signal(Service::Prover, Signal::SIGTERM)
        .await
        .unwrap();
    let receipt = send(2).await;
    let block_of_2 = verity_e2e::parse_quantity(&receipt["blockNumber"]).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = rpc.call("verity_status", json!([])).await.unwrap();
    assert!(
        stalled["latest"].as_u64().unwrap() >= block_of_2,
        "{stalled}"
    );
    assert!(
        stalled["safe"].as_u64().unwrap() < block_of_2,
        "safe advanced without a prover: {stalled}"
    );

    // Forgeries, through the verifier service. While no prover runs, the test proves chunk 2
    // itself from the job waiting in the queue, then publishes three forgeries of real proofs:
    // its proof with one byte flipped (re-signed by the registered prover, so only the halo2
    // proof is wrong), chunk 1's proof presented as chunk 2's, and its honest proof attested
    // by a key nobody registered. The verifier refuses each with its reason; `safe` stays put.
    let job = queued_job(&net, &js, 2).await;
    let own = tokio::task::spawn_blocking({
        let keys = keys.clone();
        move || {
            let steps = job.steps().unwrap();
            verity_chunk::prove_job(&keys, &job, &steps, |_, _| {}).unwrap()
        }
    })
    .await
    .unwrap();
    let (registered, _) = SigningKey::load_or_create(&net.dir.path().join("prover.key")).unwrap();
    assert_eq!(registered.address(), prover);
    let attest = |mut proof: ChunkProof, key: &SigningKey| {
        proof.prover = key.address();
        proof.signature = key.sign(&verity_chunk::wire::attestation_hash(chain_id, &proof));
        proof
    };
    let mut flipped = own.clone();
    flipped.segments[0].proof[64] ^= 1;
    let mut relabelled = proofs[&1][0].clone();
    relabelled.chunk = 2;
    let forgeries = [
        attest(flipped, &registered),
        attest(relabelled, &registered),
        attest(own, &SigningKey::random()),
    ];
    for forged in forgeries {
        let wire = v1::ProverResult::from(&ProverResult::Proof(Box::new(forged)));
        // A plain publish: no message id, so JetStream's de-duplication cannot drop it.
        js.publish(
            verity_bus::proving::RESULTS_SUBJECT,
            wire.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    for reason in [
        "the halo2 proof does not verify",
        "proof for chunk 2 names mini-block",
        "which is not a registered prover",
    ] {
        for verifier in [Service::Verifier, Service::LightVerifier] {
            wait_for_log(&net, verifier, reason, Duration::from_secs(60)).await;
        }
    }
    let refused = rpc.call("verity_status", json!([])).await.unwrap();
    assert!(
        refused["safe"].as_u64().unwrap() < block_of_2,
        "safe advanced on a forged proof: {refused}"
    );
    assert_eq!(refused["alarm"], json!(null), "{refused}");

    net.devnet.start_service(Service::Prover).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let status = rpc.call("verity_status", json!([])).await.unwrap();
        if status["safe"].as_u64().unwrap() >= block_of_2 {
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            net.dump_logs();
            panic!("safe did not resume after the prover came back: {status}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    net.light_verifier_attests(|a| a.block_number >= block_of_2, Duration::from_secs(60))
        .await;

    // The prover's consumer is drained: every job delivered to it was acknowledged.
    let jobs = js
        .get_stream(verity_bus::proving::JOBS_STREAM)
        .await
        .unwrap();
    let consumer = verity_bus::proving::consumer_name(net.devnet.prover_address().as_slice());
    let started = std::time::Instant::now();
    loop {
        let info = jobs.consumer_info(&consumer).await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "jobs left for the prover: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    net.stop().await.unwrap();
}

/// The epoch block `number` was sealed under (its header's `extraData`).
async fn chain_epoch(net: &TestNet, number: u64) -> u64 {
    let block = net
        .rpc()
        .call(
            "eth_getBlockByNumber",
            json!([format!("{number:#x}"), false]),
        )
        .await
        .unwrap();
    let extra = block["extraData"].as_str().unwrap_or_default();
    u64::from_str_radix(extra.trim_start_matches("0x"), 16).unwrap_or(0)
}

/// A witness that groups mini-blocks into chunks (`--chunk-transactions`): transfers sent one
/// mini-block apart within one block are proven as chunks of several mini-blocks, which the
/// verifier replica checks against its own copies of all of them; `safe` passes them. Then the
/// standby takes over (epoch 1): the chunks after it are signed by the standby's key, which
/// provers take from the governance-signed handover the jobs name, and `safe` goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mini_blocks_grouped_into_chunks_are_proven_and_become_safe() {
    let mut net = TestNet::start(|o| {
        o.proving = true;
        o.standby = true;
        o.steps_per_proof = SHAPE.steps;
        // Paths of 12 levels in the main shape: the ground key below is deeper.
        o.max_depth = GROUND_BITS - 2;
        o.block_interval_ms = 3000;
        o.env.push(("VERITY_CHUNK_TRANSACTIONS".into(), "2".into()));
        o.env.push(("VERITY_CHUNK_IDLE_MS".into(), "1000".into()));
    })
    .await
    .unwrap();
    let chain_id = net.devnet.chain_id();
    let rpc = net.rpc();
    let sender = dev_signer(&net, 1).unwrap();
    // One transfer goes to an address ground so that its tree key shares GROUND_BITS bits with
    // the sender's (what anyone can do for any depth, ~2^depth / n hashes): its step does not
    // fit the main shape and is proven alone in the deep one, and `safe` still gets there.
    let ground = ground_address(sender.address(), GROUND_BITS);
    let mut hashes = vec![];
    for nonce in 0..4u64 {
        let (raw, hash) = if nonce == 1 {
            verity_e2e::sign_transfer(
                &sender,
                chain_id,
                nonce,
                ground,
                alloy_primitives::U256::from(1),
            )
            .unwrap()
        } else {
            sign_filler(&sender, chain_id, nonce).unwrap()
        };
        rpc.call("eth_sendRawTransaction", json!([raw]))
            .await
            .unwrap();
        hashes.push(hash);
        // Mini-blocks are made every 10 ms while transactions wait: one transfer each.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let mut last_block = 0;
    for hash in &hashes {
        let receipt = rpc
            .wait_receipt(hash, Duration::from_secs(30))
            .await
            .unwrap();
        last_block = last_block.max(verity_e2e::parse_quantity(&receipt["blockNumber"]).unwrap());
    }
    // The standby takes over: epoch 1, the standby's key.
    net.devnet
        .signal(Service::Sequencer, Signal::SIGKILL)
        .await
        .unwrap();
    let standby = net.devnet.standby_address();
    if verity_e2e::wait_lease_holder(
        &net.devnet.nats_admin().unwrap(),
        standby,
        Duration::from_secs(10),
    )
    .await
    .is_none()
    {
        net.dump_logs();
        panic!("the standby did not take over");
    }
    // A creation whose code reads `BLOCKHASH(NUMBER - 1)` and stores it: its job carries that
    // hash and the position of the block's seal, which the prover checks before proving, as it
    // checks the creation's mini-block's signature by the epoch-1 key of the handover.
    // (PUSH1 1, NUMBER, SUB, BLOCKHASH, PUSH1 0, SSTORE, STOP.)
    let reads_blockhash = [0x60, 0x01, 0x43, 0x03, 0x40, 0x60, 0x00, 0x55, 0x00];
    let (raw, hash) = verity_e2e::sign_create(
        &sender,
        chain_id,
        hashes.len() as u64,
        &reads_blockhash,
        100_000,
    )
    .unwrap();
    // Ingress may still be finding the new sequencer: resend until one is accepted.
    let sent = std::time::Instant::now();
    while let Err(error) = rpc
        .try_call("eth_sendRawTransaction", json!([raw]))
        .await
        .unwrap()
    {
        // An earlier attempt got through after all.
        if error.message.contains("already known") || error.message.contains("nonce too low") {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "not accepted after the takeover: {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let receipt = rpc
        .wait_receipt(&hash, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    last_block = last_block.max(verity_e2e::parse_quantity(&receipt["blockNumber"]).unwrap());

    let (_client, js) = net.jetstream().await;
    let started = std::time::Instant::now();
    loop {
        let status = rpc.call("verity_status", json!([])).await.unwrap();
        let proofs = results(&js).await;
        let grouped = proofs
            .values()
            .flatten()
            .any(|p| p.mini_block_hashes.len() >= 2);
        let deep = proofs
            .values()
            .flatten()
            .any(|p| p.segments.iter().any(|s| s.shape == Shape::DEEP));
        if grouped && deep && status["safe"].as_u64().is_some_and(|s| s >= last_block) {
            assert_eq!(
                chain_epoch(&net, last_block).await,
                1,
                "the last block is the standby's"
            );
            assert_eq!(status["alarm"], json!(null), "{status}");
            break;
        }
        if started.elapsed() > Duration::from_secs(180) {
            net.dump_logs();
            panic!(
                "no safe chunk of several mini-blocks and a deep segment by block {last_block}: \
                 {status}; chunks proven (mini-blocks, segment shapes): {:?}",
                proofs
                    .values()
                    .flatten()
                    .map(|p| (
                        p.chunk,
                        p.mini_block_hashes.len(),
                        p.segments.iter().map(|s| s.shape.depth).collect::<Vec<_>>()
                    ))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let verifier_log = std::fs::read_to_string(net.devnet.log_file(Service::Verifier)).unwrap();
    assert!(
        !verifier_log.contains("refused"),
        "the verifier refused an honest proof:\n{verifier_log}"
    );
    let prover_log = std::fs::read_to_string(net.devnet.log_file(Service::Prover)).unwrap();
    assert!(
        !prover_log.contains("dead-lettered"),
        "the prover refused an honest job:\n{prover_log}"
    );
    // The prover's gRPC port, like every service's, is open for health only (issue 22).
    crate::grpc_auth::the_prover_answers_only_health_and_the_admin(&net).await;
    net.stop().await.unwrap();
}
