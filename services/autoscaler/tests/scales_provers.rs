//! The real `verity-autoscaler` binary against a real nats-server (the job queue) and a mocked
//! Kubernetes API (the prover Deployment's scale): a backlog scales the pool up to what the
//! latency target needs, a drained queue scales it back down after the cooldown, SIGTERM stops it.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use verity_bus::{
    connect,
    proving::{JobQueue, ensure_proving_streams, job_consumer, publish_job},
    server::NatsServer,
};
use verity_testkit::kube_api::{self, Answer, MockApi, Recorded, Workload};

const PROVER: Workload = Workload {
    namespace: NS,
    name: "verity-prover",
};
const NS: &str = "verity";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/verity/deployments/verity-prover";

fn patches(api: &MockApi) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect()
}

/// Waits until a PATCH sets `replicas`; returns every PATCH so far.
async fn wait_for_patch(api: &MockApi, replicas: u32, timeout: Duration) -> Vec<Recorded> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = patches(api);
        if found.iter().any(|p| p.body["spec"]["replicas"] == replicas) || Instant::now() > deadline
        {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the autoscaler with `args`, which it must refuse: its stderr.
async fn refused(args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_verity-autoscaler"))
        .args(args)
        .output()
        .await
        .expect("run verity-autoscaler");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_follows_the_backlog_up_and_back_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = NatsServer::start(dir.path()).await.expect("nats-server");
    let (_client, js) = connect(nats.url(), "autoscaler-test")
        .await
        .expect("connect");
    let (jobs, _) = ensure_proving_streams(&js).await.expect("streams");
    for chunk in 0..40u64 {
        publish_job(
            &js,
            chunk,
            &chunk.to_be_bytes(),
            bytes::Bytes::from_static(b"job"),
            Default::default(),
        )
        .await
        .expect("publish job");
    }

    let api = MockApi::start().await.expect("mock API");
    api.answer_deployment(Answer::Always, PROVER, 1, 1);
    api.answer_scale(Answer::Always, PROVER, 7, 1);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_verity-autoscaler"))
        .args([
            "--nats-url",
            nats.url(),
            "--deployment",
            "verity-prover",
            "--namespace",
            NS,
            "--kube-api",
            api.url(),
            "--min-replicas",
            "1",
            "--max-replicas",
            "16",
            "--latency-target-secs",
            "60",
            "--seconds-per-job",
            "10",
            "--scale-up-cooldown-secs",
            "0",
            "--scale-down-cooldown-secs",
            "1",
            "--interval-ms",
            "100",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-filter",
            "info",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn verity-autoscaler");

    // 40 jobs, 10 s each, 60 s target: 7 workers, by one merge patch of the scale.
    let up = wait_for_patch(&api, 7, Duration::from_secs(20)).await;
    assert!(
        !up.is_empty(),
        "no scale-up; requests: {:#?}",
        api.requests()
    );
    assert_eq!(up[0].body, serde_json::json!({"spec": {"replicas": 7}}));
    assert_eq!(up[0].content_type, "application/merge-patch+json");
    let scaled_up = Instant::now();

    // The pool now has 7; the workers finish every job.
    api.answer_deployment(Answer::Always, PROVER, 7, 7);
    api.answer_scale(Answer::Always, PROVER, 1, 7);
    let consumer = job_consumer(&jobs, "provers", JobQueue::default())
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(40)
        .messages()
        .await
        .expect("fetch");
    let mut acked = 0;
    while let Some(message) = batch.next().await {
        message.expect("job").double_ack().await.expect("ack");
        acked += 1;
    }
    assert_eq!(acked, 40);

    // Back to the minimum, not before the 1 s down-cooldown.
    // (Until the mock's scale read 7, the controller may have asked for 7 again: only 7s come
    // before the first 1.)
    let all = wait_for_patch(&api, 1, Duration::from_secs(20)).await;
    let first_down = all
        .iter()
        .position(|p| p.body["spec"]["replicas"] == 1)
        .unwrap_or_else(|| panic!("no scale-down; requests: {:#?}", api.requests()));
    assert!(
        all[..first_down]
            .iter()
            .all(|p| p.body["spec"]["replicas"] == 7),
        "{all:#?}"
    );
    assert_eq!(
        all[first_down].body,
        serde_json::json!({"spec": {"replicas": 1}})
    );
    assert!(scaled_up.elapsed() >= Duration::from_millis(900));
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());

    let pid = child.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_deployment_stops_it_at_start_with_the_flag_to_fix() {
    let api = MockApi::start().await.expect("mock API");
    api.serve(
        "GET",
        DEPLOYMENT,
        404,
        kube_api::not_found("deployments.apps", "verity-prover"),
    );
    let stderr = refused(&[
        "--deployment",
        "verity-prover",
        "--namespace",
        NS,
        "--kube-api",
        api.url(),
        "--grpc-addr",
        "127.0.0.1:0",
    ])
    .await;
    assert!(
        stderr.contains("--deployment") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bounds_that_cannot_hold_are_refused() {
    let stderr = refused(&[
        "--deployment",
        "p",
        "--namespace",
        NS,
        "--min-replicas",
        "9",
        "--max-replicas",
        "4",
    ])
    .await;
    assert!(
        stderr.contains("minimum number of workers (9) is above the maximum (4)"),
        "{stderr}"
    );
}
