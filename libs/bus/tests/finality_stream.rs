//! The finality stream against a real nats-server: it keeps each verifier's newest attestation
//! only, and an old stream configuration is brought up to date.

use async_nats::jetstream::stream;
use verity_bus::{
    connect,
    proving::{FINALITY_STREAM, FINALITY_SUBJECT, ensure_finality_stream, publish_attestation},
    server::NatsServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_keeps_each_verifiers_newest_attestation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await.expect("nats-server");
    let (_client, js) = connect(server.url(), "bus-test").await.expect("connect");
    // A stream as an earlier version made it: one subject, every attestation kept.
    js.create_stream(stream::Config {
        name: FINALITY_STREAM.to_string(),
        subjects: vec![FINALITY_SUBJECT.to_string()],
        ..Default::default()
    })
    .await
    .expect("old stream");
    let mut stream = ensure_finality_stream(&js).await.expect("stream");

    let (a, b) = ([0xaa; 20], [0xbb; 20]);
    for block in 1..=5u64 {
        for verifier in [&a, &b] {
            let payload = format!("{}-{block}", verifier[0]);
            publish_attestation(&js, verifier, block, false, 0, payload.into())
                .await
                .expect("publish");
        }
    }
    // A fraud attestation replaces its verifier's last vote, as the verifier stops there.
    publish_attestation(&js, &a, 5, true, 0, "fraud".into())
        .await
        .expect("publish");

    let info = stream.info().await.expect("info");
    assert_eq!(info.state.messages, 2, "one message per verifier");
    // A reader from the start steps over the sequences the newer votes replaced.
    let mut reader = verity_bus::proving::reader(stream.clone(), 1);
    let mut kept = vec![];
    for _ in 0..2 {
        let message = reader.next().await.expect("message");
        kept.push(String::from_utf8(message.payload.to_vec()).expect("utf-8"));
    }
    kept.sort();
    assert_eq!(kept, ["187-5", "fraud"]);
    assert!(
        reader.try_next().await.expect("read").is_none(),
        "nothing more"
    );
    // And waits for the next one.
    let waiting = tokio::spawn(async move { reader.next().await.map(|m| m.payload) });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    publish_attestation(&js, &b, 6, false, 0, "187-6".into())
        .await
        .expect("publish");
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("read in time")
        .expect("join")
        .expect("read");
    assert_eq!(next.as_ref(), b"187-6");
}
