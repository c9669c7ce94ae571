//! A job larger than the server accepts is refused before sending, with the sizes.

use verity_bus::{
    BusError, connect,
    proving::{ensure_proving_streams, publish_job},
    server::NatsServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_the_servers_max_payload_is_refused_with_its_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path()).await.expect("nats-server");
    let (_client, js) = connect(server.url(), "bus-test").await.expect("connect");
    ensure_proving_streams(&js).await.expect("streams");
    let limit = 8 * 1024 * 1024;
    let big = bytes::Bytes::from(vec![0u8; limit + 1]);
    match publish_job(&js, 7, &[1; 32], big, Default::default()).await {
        Err(BusError::TooLarge {
            size, limit: max, ..
        }) => {
            assert_eq!(size, limit + 1);
            assert_eq!(max, limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // At the limit, it goes through.
    let fits = bytes::Bytes::from(vec![0u8; limit - 4096]);
    assert!(
        publish_job(&js, 7, &[1; 32], fits, Default::default())
            .await
            .expect("publish")
    );
}
