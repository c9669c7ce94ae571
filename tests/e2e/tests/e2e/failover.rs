//! A hot standby takes over from the active sequencer, and the chain never forks.
//!
//! - Under load, the active sequencer is killed with SIGKILL ten times at random moments; each
//!   time the other sequencer takes the lease and places a handover, and the killed one comes
//!   back with an empty disk, rebuilds from the stream and stands by. Afterwards every receipt a
//!   client was given stands, the stream holds one event per position with one block per height
//!   on its parent, one handover per takeover with rising epochs, and the replica and both
//!   sequencers hold the same state.
//! - The active sequencer is frozen (SIGSTOP) until the standby has taken over, then thawed: it
//!   steps down by itself (exits with an error) and nothing it signed after the handover is in
//!   the stream; the replica carries on.
//!
//! The kill schedule comes from a seed printed in every failure message; `VERITY_E2E_SEED`
//! replays one.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use alloy_primitives::Address;
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::json;
use verity_e2e::{Governance, Load, TestNet, dev_signer, verity_devnet::Service};
use verity_primitives::{ChainEvent, ChainEventKind};
use verity_proto::v1::{GetHeadRequest, StateDigest};

const TAKEOVERS: usize = 10;
const SENDERS: usize = 3;

fn service_of(net: &TestNet, address: Address) -> Service {
    if address == net.devnet.standby_address() {
        Service::Standby
    } else {
        Service::Sequencer
    }
}

/// Waits until the lease names `address`.
async fn wait_holder(net: &TestNet, address: Address, within: Duration) -> bool {
    verity_e2e::wait_lease_holder(&net.devnet.nats_admin().unwrap(), address, within)
        .await
        .is_some()
}

/// The chain stream, decoded, from event 1 to its end.
async fn stream_events(net: &TestNet) -> Vec<ChainEvent> {
    verity_e2e::chain_events(&net.devnet.nats_admin().unwrap())
        .await
        .unwrap()
}

/// Checks the chain as the stream holds it: one block per height on its parent, rising epochs
/// that change only at handovers, every mini-block and block under the epoch in force, no
/// transaction twice. Returns the handovers' epochs and every transaction hash.
fn check_chain(events: &[ChainEvent], context: &str) -> (Vec<u64>, HashSet<String>) {
    let mut epoch = 0;
    let mut epochs = Vec::new();
    let mut height = 0;
    let mut parent = None;
    let mut transactions = HashSet::new();
    for event in events {
        match &event.kind {
            ChainEventKind::MiniBlock(mini) => assert_eq!(
                mini.epoch, epoch,
                "{context}: mini-block {} at event {} is of epoch {}, {epoch} was in force",
                mini.number, event.seq, mini.epoch
            ),
            ChainEventKind::Block(block) => {
                assert_eq!(block.epoch(), epoch, "{context}: block {}", block.number());
                assert_eq!(
                    block.number(),
                    height + 1,
                    "{context}: heights must not repeat"
                );
                if let Some(parent) = parent {
                    assert_eq!(
                        block.header.parent_hash, parent,
                        "{context}: block {height}"
                    );
                }
                height = block.number();
                parent = Some(block.hash);
                for hash in &block.transaction_hashes {
                    assert!(
                        transactions.insert(hash.to_string()),
                        "{context}: transaction {hash} is in the chain twice"
                    );
                }
            }
            ChainEventKind::Handover(handover) => {
                assert!(handover.epoch() > epoch, "{context}: epochs must rise");
                assert_eq!(handover.block_number, height + 1, "{context}");
                epoch = handover.epoch();
                epochs.push(epoch);
            }
        }
    }
    (epochs, transactions)
}

/// Waits until `service` (a sequencer, active or standby) and the replica have reached the
/// stream's end.
async fn wait_caught_up(net: &TestNet, service: Service, context: &str) {
    let (_client, mut stream) = net.chain_stream().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = verity_bus::last_chain_seq(&mut stream).await.unwrap();
        let sequencer = match verity_e2e::sequencer_client(&net.devnet, service).await {
            Ok(mut c) => c
                .get_head(GetHeadRequest {})
                .await
                .ok()
                .map(|h| h.into_inner().last_seq),
            Err(_) => None,
        };
        let replica = match verity_e2e::replica_client(&net.devnet, Service::Replica).await {
            Ok(mut c) => c
                .get_head(GetHeadRequest {})
                .await
                .ok()
                .map(|h| h.into_inner().last_seq),
            Err(_) => None,
        };
        if sequencer == Some(last) && replica == Some(last) {
            return;
        }
        if Instant::now() > deadline {
            net.dump_logs();
            panic!(
                "{context}: {service} at {sequencer:?}, replica at {replica:?}, stream at {last}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn same_state(a: &StateDigest, b: &StateDigest) -> bool {
    (&a.digest, a.accounts, a.slots, a.codes) == (&b.digest, b.accounts, b.slots, b.codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_after_each_sigkill_and_the_chain_never_forks() {
    let seed = verity_e2e::seed();
    let mut schedule = crate::kill_nine::Schedule(seed);
    let mut net = TestNet::start(|o| {
        o.standby = true;
        o.block_interval_ms = 200;
    })
    .await
    .unwrap();
    let load = Load::start(&net, 1..=SENDERS);
    let mut active = net.devnet.sequencer_address();
    assert!(
        wait_holder(&net, active, Duration::from_secs(10)).await,
        "seed {seed}"
    );
    let mut gaps = Vec::new();
    for round in 0..TAKEOVERS {
        tokio::time::sleep(schedule.millis(300, 900)).await;
        let victim = service_of(&net, active);
        let successor = if victim == Service::Sequencer {
            net.devnet.standby_address()
        } else {
            net.devnet.sequencer_address()
        };
        let killed = Instant::now();
        net.devnet.signal(victim, Signal::SIGKILL).await.unwrap();
        if !wait_holder(&net, successor, Duration::from_secs(5)).await {
            net.dump_logs();
            panic!("seed {seed}: round {round}: nobody took over from {victim}");
        }
        gaps.push(killed.elapsed());
        active = successor;
        // The killed node comes back with an empty disk: it may hold events it never published,
        // so it rebuilds from the stream and stands by.
        std::fs::remove_dir_all(net.devnet.data_dir().join(victim.name())).unwrap();
        if let Err(error) = net.devnet.start_service(victim).await {
            net.dump_logs();
            panic!("seed {seed}: {victim} did not come back: {error}");
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (attempts, receipted) = load.stop().await;
    assert!(
        receipted.len() > 30,
        "seed {seed}: only {} of {attempts} transfers got a receipt",
        receipted.len()
    );

    // Let the open block be sealed; then both sequencers and the replica reach the stream's end.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let active_service = service_of(&net, active);
    let standby_service = if active_service == Service::Sequencer {
        Service::Standby
    } else {
        Service::Sequencer
    };
    wait_caught_up(&net, active_service, &format!("seed {seed}")).await;
    wait_caught_up(&net, standby_service, &format!("seed {seed}")).await;

    let events = stream_events(&net).await;
    let (epochs, in_chain) = check_chain(&events, &format!("seed {seed}"));
    assert_eq!(
        epochs,
        (1..=TAKEOVERS as u64).collect::<Vec<_>>(),
        "seed {seed}: one handover per takeover"
    );
    let rpc = net.rpc();
    for hash in &receipted {
        assert!(
            in_chain.contains(hash),
            "seed {seed}: {hash} got a receipt but is in no block"
        );
    }
    rpc.assert_receipts_succeeded(&receipted, &format!("seed {seed}"))
        .await;
    let replica = net.state_digest(Service::Replica).await;
    for service in [active_service, standby_service] {
        let digest = net.state_digest(service).await;
        assert!(
            same_state(&digest, &replica),
            "seed {seed}: {service} (at {}) and the replica (at {}) disagree",
            digest.last_seq,
            replica.last_seq
        );
    }
    // Timing is measured by `make bench` (takeover); here only that each one happened.
    assert_eq!(gaps.len(), TAKEOVERS);
    net.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_sequencer_wakes_up_deposed_and_steps_down() {
    let mut net = TestNet::start(|o| {
        o.standby = true;
        o.block_interval_ms = 200;
    })
    .await
    .unwrap();
    let load = Load::start(&net, [1]);
    let primary = net.devnet.sequencer_address();
    assert!(wait_holder(&net, primary, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let pid = Pid::from_raw(net.devnet.pid(Service::Sequencer).unwrap() as i32);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).unwrap();
    if !wait_holder(&net, net.devnet.standby_address(), Duration::from_secs(5)).await {
        let _ = nix::sys::signal::kill(pid, Signal::SIGCONT);
        net.dump_logs();
        panic!("the standby did not take over from the frozen sequencer");
    }
    // Let the new sequencer produce for a while before the old one wakes up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    nix::sys::signal::kill(pid, Signal::SIGCONT).unwrap();
    let status = net
        .devnet
        .wait_exit(Service::Sequencer, Duration::from_secs(10))
        .await;
    if status.is_none_or(|s| s.success()) {
        net.dump_logs();
        panic!("the deposed sequencer did not step down by itself: {status:?}");
    }
    let log = std::fs::read_to_string(net.devnet.log_file(Service::Sequencer)).unwrap();
    assert!(log.contains("deposed"), "its log says why it stepped down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, receipted) = load.stop().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    wait_caught_up(&net, Service::Standby, "after SIGSTOP").await;

    // Exactly one handover, and nothing of epoch 0 after it: the deposed key's late events
    // never entered the stream, and the replica (which checks every event) kept up.
    let events = stream_events(&net).await;
    let (epochs, in_chain) = check_chain(&events, "after SIGSTOP");
    assert_eq!(epochs, vec![1]);
    for hash in &receipted {
        assert!(
            in_chain.contains(hash),
            "{hash} got a receipt but is in no block"
        );
    }
    let replica = net.state_digest(Service::Replica).await;
    let standby = net.state_digest(Service::Standby).await;
    assert!(same_state(&standby, &replica));
    net.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_appoints_a_new_sequencer_that_rebuilds_and_continues_the_chain() {
    let mut net = TestNet::start(|o| {
        o.standing_appointments = false;
        o.block_interval_ms = 200;
    })
    .await
    .unwrap();
    let chain_id = net.devnet.chain_id();
    let load = Load::start(&net, [1]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, receipted) = load.stop().await;
    // The sequencer stops for good (a planned stop: it publishes everything, releases the lease).
    let status = net
        .devnet
        .signal(Service::Sequencer, Signal::SIGTERM)
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let governance = Governance::of(&net.devnet);
    let appointed = net.devnet.standby_address().to_string();
    let draft = |file: &'static str, extra: &'static [&'static str]| {
        let (governance, appointed) = (governance.clone(), appointed.clone());
        async move {
            let (ok, text, out) = governance.draft(&appointed, file, extra).await;
            assert!(ok, "draft {file}: {text}");
            out
        }
    };
    let sign = |file: String, key: u8| {
        let governance = governance.clone();
        async move {
            let (ok, text) = governance.sign(&file, key).await;
            assert!(ok, "sign: {text}");
        }
    };
    let publish = |file: String| {
        let governance = governance.clone();
        async move { governance.publish(&file).await }
    };

    // m - 1 = one signature of the 2 needed.
    let short = draft("short.json", &[]).await;
    sign(short.clone(), 1).await;
    let (ok, text) = publish(short).await;
    assert!(
        !ok && text.contains("1 valid governance signature(s), 2 needed"),
        "{text}"
    );
    // A wrong parent hash.
    let wrong = draft(
        "wrong-parent.json",
        &[
            "--parent-hash",
            "0x1111111111111111111111111111111111111111111111111111111111111111",
        ],
    )
    .await;
    sign(wrong.clone(), 1).await;
    sign(wrong.clone(), 2).await;
    let (ok, text) = publish(wrong).await;
    assert!(
        !ok && text.contains("appointment starts at block"),
        "{text}"
    );
    // A reused epoch (0 is genesis's).
    let reused = draft("reused.json", &["--epoch", "0"]).await;
    sign(reused.clone(), 2).await;
    sign(reused.clone(), 3).await;
    let (ok, text) = publish(reused).await;
    assert!(
        !ok && text.contains("is not above the current epoch 0"),
        "{text}"
    );
    // m of n: published.
    let good = draft("appointment.json", &[]).await;
    sign(good.clone(), 1).await;
    sign(good.clone(), 3).await;
    let (ok, text) = publish(good.clone()).await;
    assert!(ok, "{text}");
    let (ok, text) = publish(good).await;
    assert!(!ok && text.contains("was published already"), "{text}");

    // The appointed sequencer starts with an empty disk, rebuilds from the stream and goes on.
    let started = Instant::now();
    net.devnet.start_service(Service::Standby).await.unwrap();
    if !wait_holder(&net, net.devnet.standby_address(), Duration::from_secs(30)).await {
        net.dump_logs();
        panic!("the appointed sequencer did not take over");
    }
    let rpc = net.rpc();
    let signer = dev_signer(&net, 2).unwrap();
    let (raw, hash) = verity_e2e::sign_transfer(
        &signer,
        chain_id,
        0,
        Address::repeat_byte(7),
        alloy_primitives::U256::from(5),
    )
    .unwrap();
    let receipt = rpc
        .call("realtime_sendRawTransaction", json!([raw]))
        .await
        .unwrap();
    assert_eq!(receipt["transactionHash"], json!(hash));
    assert!(started.elapsed() < Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(600)).await;
    wait_caught_up(&net, Service::Standby, "after the appointment").await;

    let events = stream_events(&net).await;
    let (epochs, in_chain) = check_chain(&events, "after the appointment");
    assert_eq!(epochs, vec![1]);
    assert!(in_chain.contains(&hash));
    // All history intact: every receipt given before the appointment still stands.
    for hash in &receipted {
        assert!(in_chain.contains(hash));
    }
    rpc.assert_receipts_succeeded(&receipted, "after the appointment")
        .await;
    let replica = net.state_digest(Service::Replica).await;
    let appointed = net.state_digest(Service::Standby).await;
    assert!(same_state(&appointed, &replica));
    net.stop().await.unwrap();
}
