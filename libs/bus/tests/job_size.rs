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

/// The streams beside the chain's are bounded: the bus's initialisation gives them byte limits
/// at which they drop their oldest messages, `usage` reports how full each is (past
/// `NEARLY_FULL` before the limit), and past the limit a stream holds no more than it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_stream_is_reported_nearly_full_then_drops_its_oldest() {
    use verity_bus::bootstrap::{self, Layout, Limits, NEARLY_FULL};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = verity_bus::server::NatsServer::start(dir.path())
        .await
        .expect("nats-server");
    let (_client, js) = verity_bus::connect(server.url(), "limits-test")
        .await
        .expect("connect");
    let limits = Limits {
        jobs_bytes: 64 * 1024,
        ..Limits::default()
    };
    let layout = Layout {
        limits,
        ..Layout::single()
    };
    bootstrap::init(&js, &layout).await.expect("init");
    // Run again: nothing to change.
    bootstrap::init(&js, &layout).await.expect("init again");
    let jobs_fill = |usage: &[bootstrap::StreamUsage]| {
        usage
            .iter()
            .find(|u| u.stream == verity_bus::proving::JOBS_STREAM)
            .and_then(|u| u.fill())
            .expect("the jobs stream has a limit")
    };
    let chain = bootstrap::usage(&js).await.expect("usage");
    assert!(
        chain
            .iter()
            .any(|u| u.stream == verity_bus::CHAIN_STREAM && u.max_bytes.is_none()),
        "the chain stream is unlimited: {chain:?}"
    );
    let job = vec![7u8; 4096];
    let mut published = 0;
    while jobs_fill(&bootstrap::usage(&js).await.expect("usage")) < NEARLY_FULL {
        js.publish(verity_bus::proving::JOBS_SUBJECT, job.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        published += 1;
        assert!(published < 100, "never nearly full");
    }
    // Past the limit: still stored, the oldest dropped, the stream within its limit.
    for _ in 0..30 {
        js.publish(verity_bus::proving::JOBS_SUBJECT, job.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored at the limit");
    }
    let mut jobs = js
        .get_stream(verity_bus::proving::JOBS_STREAM)
        .await
        .expect("jobs");
    let info = jobs.info().await.expect("info");
    assert!(info.state.bytes <= 64 * 1024, "{:?}", info.state);
    assert!(info.state.first_sequence > 1, "the oldest were dropped");
}
