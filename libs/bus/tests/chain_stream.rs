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
        let ack = publish_event(&js, &e, &hash, Default::default())
            .await
            .expect("send");
        assert!(await_ack(ack, seq).await.expect("ack"), "stored");
    }
    // Re-publishing event 5 (a publisher that crashed before seeing its ack) is a duplicate.
    let (e5, hash5) = event(5);
    let ack = publish_event(&js, &e5, &hash5, Default::default())
        .await
        .expect("send");
    assert!(!await_ack(ack, 5).await.expect("ack"), "duplicate");
    // Publishing at a position that is already taken, with a new hash, is refused.
    let (mut e3, _) = event(3);
    e3.seq = 3;
    let ack = publish_event(&js, &e3, &[0xee; 32], Default::default())
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
    let ack = publish_event(&js, &e, &hash, Default::default())
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
