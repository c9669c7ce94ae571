//! The chain stream against a real nats-server: ordering, de-duplication and resumption.

use futures::StreamExt;
use verity_bus::{
    BusError, await_ack, connect, decode_event, ensure_chain_stream, last_chain_seq,
    ordered_chain_consumer, publish_event, server::NatsServer,
};
use verity_proto::v1;

fn event(seq: u64) -> (v1::ChainEvent, Vec<u8>) {
    let hash = vec![seq as u8; 32];
    let block = v1::Block {
        hash: hash.clone(),
        ..Default::default()
    };
    (
        v1::ChainEvent {
            seq,
            event: Some(v1::chain_event::Event::Block(block)),
            trace_context: Default::default(),
        },
        hash,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_order_once_and_a_consumer_resumes_after_what_it_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await.expect("nats-server");
    let (_client, js) = connect(server.url(), "bus-test").await.expect("connect");
    let mut stream = ensure_chain_stream(&js).await.expect("stream");
    assert_eq!(last_chain_seq(&mut stream).await.expect("seq"), 0);

    for seq in 1..=5 {
        let (e, hash) = event(seq);
        let ack = publish_event(&js, &e, &hash, 0, Default::default())
            .await
            .expect("send");
        assert!(await_ack(ack, seq).await.expect("ack"), "stored");
    }
    // Re-publishing event 5 (a publisher that crashed before seeing its ack) is a duplicate.
    let (e5, hash5) = event(5);
    let ack = publish_event(&js, &e5, &hash5, 0, Default::default())
        .await
        .expect("send");
    assert!(!await_ack(ack, 5).await.expect("ack"), "duplicate");
    // Publishing at a position that is already taken, with a new hash, is refused.
    let (mut e3, _) = event(3);
    e3.seq = 3;
    let ack = publish_event(&js, &e3, &[0xee; 32], 0, Default::default())
        .await
        .expect("send");
    assert!(matches!(
        await_ack(ack, 3).await,
        Err(BusError::WrongLastSequence { .. })
    ));
    assert_eq!(last_chain_seq(&mut stream).await.expect("seq"), 5);

    // A follower that applied 1..=2 gets 3, 4, 5.
    let consumer = ordered_chain_consumer(&stream, 3).await.expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = messages.next().await.expect("message").expect("ok");
        let seq = message.info().expect("info").stream_sequence;
        let decoded = decode_event(seq, &message.payload).expect("decode");
        seen.push(decoded.seq);
    }
    assert_eq!(seen, vec![3, 4, 5]);
    drop(messages);

    // One whose owner lost its state (needs 1 again) starts from 1.
    let consumer = ordered_chain_consumer(&stream, 1).await.expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let first = messages.next().await.expect("message").expect("ok");
    assert_eq!(first.info().expect("info").stream_sequence, 1);
}

/// Any client (the bus has no permissions yet, ADR 0014) may try: no stream holding the chain
/// or the proving results can be purged, lose a message, or have that protection lifted by a
/// configuration update (the server refuses each; deleting a whole stream needs permissions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_purges_a_stream_deletes_a_message_or_lifts_that() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await.expect("nats-server");
    let (_client, js) = connect(server.url(), "bus-test").await.expect("connect");
    let mut chain = ensure_chain_stream(&js).await.expect("chain stream");
    let (jobs, proofs) = verity_bus::proving::ensure_proving_streams(&js)
        .await
        .expect("proving streams");
    let finality = verity_bus::proving::ensure_finality_stream(&js)
        .await
        .expect("finality stream");
    let (e, hash) = event(1);
    let ack = publish_event(&js, &e, &hash, 0, Default::default())
        .await
        .expect("send");
    assert!(await_ack(ack, 1).await.expect("ack"));

    for mut stream in [chain.clone(), jobs, proofs, finality] {
        let name = stream.cached_info().config.name.clone();
        assert!(stream.purge().await.is_err(), "{name} was purged");
        let mut config = stream.info().await.expect("info").config.clone();
        assert!(
            config.deny_purge && config.deny_delete,
            "{name}: {config:?}"
        );
        config.deny_purge = false;
        config.deny_delete = false;
        assert!(
            js.update_stream(config).await.is_err(),
            "{name}: the protection was lifted"
        );
    }
    assert!(
        chain.delete_message(1).await.is_err(),
        "an event was deleted"
    );
    assert_eq!(last_chain_seq(&mut chain).await.expect("seq"), 1);
    let kept = verity_bus::chain_event_at(&chain, 1)
        .await
        .expect("event 1");
    assert_eq!(kept, e);
}

/// On a 3-node cluster at R3, a message id published again while its first copy is still being
/// replicated is refused as "in process" (JetStream 10158): `await_ack` names it
/// `IdInProcess`, and the event published again under a fresh id is still stored at most once,
/// the compare-and-set refusing a second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_still_in_process_is_named_and_a_fresh_id_stores_the_event_once() {
    use verity_bus::{
        bootstrap::{self, Layout},
        server::NatsCluster,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = NatsCluster::start(dir.path(), 3, &[], None)
        .await
        .expect("cluster");
    let (_client, js) = connect(&cluster.urls(), "bus-test").await.expect("connect");
    bootstrap::wait_ready(&js, std::time::Duration::from_secs(30))
        .await
        .expect("JetStream ready");
    let layout = Layout {
        replicas: 3,
        ..Layout::single()
    };
    bootstrap::init(&js, &layout).await.expect("init");
    let mut stream = ensure_chain_stream(&js).await.expect("stream");
    let (mut in_process, mut seq) = (0, 0);
    // Each event twice back to back, the second before the first is acknowledged: the leader
    // still holds the first as in process (or, when quicker, has stored it: a duplicate).
    for _ in 0..20 {
        seq += 1;
        let (e, hash) = event(seq);
        let first = publish_event(&js, &e, &hash, 0, Default::default())
            .await
            .expect("send");
        let again = publish_event(&js, &e, &hash, 0, Default::default())
            .await
            .expect("send");
        assert!(await_ack(first, seq).await.expect("ack"), "stored");
        match await_ack(again, seq).await {
            Ok(stored) => assert!(!stored, "event {seq} stored twice"),
            Err(BusError::IdInProcess { seq: named }) => {
                assert_eq!(named, seq);
                in_process += 1;
                // Under a fresh id it is refused by the compare-and-set: stored once.
                let fresh = publish_event(&js, &e, &hash, 1, Default::default())
                    .await
                    .expect("send");
                assert!(
                    matches!(
                        await_ack(fresh, seq).await,
                        Err(BusError::WrongLastSequence { .. })
                    ),
                    "event {seq} under a fresh id"
                );
            }
            Err(other) => panic!("event {seq}: {other}"),
        }
    }
    assert!(in_process > 0, "no publish was refused as in process");
    assert_eq!(last_chain_seq(&mut stream).await.expect("seq"), seq);
    cluster.stop().await.expect("stop");
}
