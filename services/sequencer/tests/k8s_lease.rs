//! The real sequencer binary with `--k8s-lease`, against a real nats-server and a mocked
//! Kubernetes API: once active it records itself in the Lease (pod, epoch, address), renews it,
//! gives it up on SIGTERM, and steps down ("deposed", non-zero exit) when the Lease shows a
//! higher epoch.

#![allow(clippy::unwrap_used)]

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use verity_bus::server::NatsServer;
use verity_primitives::{ChainSpec, SigningKey};
use verity_testkit::kube_api::{self, MockApi, Recorded};

const NS: &str = "verity";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/verity/leases/verity-sequencer";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/verity/leases";

struct Setup {
    _dir: tempfile::TempDir,
    nats: NatsServer,
    api: MockApi,
    args: Vec<String>,
    address: String,
    genesis: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats")).await.unwrap();
    let key = SigningKey::random();
    let spec = ChainSpec::dev(1337, 2, 10)
        .unwrap()
        .with_sequencing(key.address(), None)
        .unwrap();
    let genesis = dir.path().join("genesis.json");
    std::fs::write(&genesis, spec.to_json().unwrap()).unwrap();
    let key_file = dir.path().join("sequencer.key");
    std::fs::write(&key_file, key.to_hex()).unwrap();
    let api = MockApi::start().await.unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let args = vec![
        "--data-dir".into(),
        path(&dir.path().join("data")),
        "--genesis".into(),
        path(&genesis),
        "--key-file".into(),
        path(&key_file),
        "--nats-url".into(),
        nats.url().to_string(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--k8s-lease".into(),
        "verity-sequencer".into(),
        "--k8s-namespace".into(),
        NS.into(),
        "--k8s-identity".into(),
        "verity-sequencer-0".into(),
        "--kube-api".into(),
        api.url().to_string(),
        "--k8s-lease-renew-secs".into(),
        "1".into(),
    ];
    Setup {
        _dir: dir,
        nats,
        api,
        args,
        address: key.address().to_string(),
        genesis: spec.genesis_hash.to_string(),
    }
}

fn spawn(setup: &Setup) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_verity-sequencer"))
        .args(&setup.args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_for(api: &MockApi, what: impl Fn(&Recorded) -> bool) -> Recorded {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = api.requests().into_iter().find(|r| what(r)) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "not seen; requests: {:#?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Lease record of this chain held by `holder` under `epoch`.
fn record(setup: &Setup, rv: &str, holder: &str, epoch: u64) -> Value {
    let mut lease = kube_api::lease(
        NS,
        "verity-sequencer",
        rv,
        Some((holder, epoch, &setup.address)),
        0,
    );
    lease["metadata"]["annotations"]["verity.io/genesis"] = Value::String(setup.genesis.clone());
    lease
}

fn held(setup: &Setup, rv: &str, epoch: u64) -> Value {
    record(setup, rv, "verity-sequencer-0", epoch)
}

/// Waits (up to 15 s) for the sequencer to exit, which must be a failure: its stderr.
async fn failure(child: impl Future<Output = std::io::Result<std::process::Output>>) -> String {
    let output = tokio::time::timeout(Duration::from_secs(15), child)
        .await
        .expect("the sequencer exits")
        .expect("its output");
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_sequencer_records_itself_and_releases_on_sigterm() {
    let setup = setup().await;
    let api = &setup.api;
    let absent = kube_api::not_found("leases.coordination.k8s.io", "verity-sequencer");
    // Start-up check, then the first record (no Lease yet): GET 404, POST.
    api.expect("GET", LEASE, 404, absent.clone());
    api.expect("GET", LEASE, 404, absent);
    api.expect("POST", LEASES, 201, held(&setup, "10", 0));
    // Renewals read and write the record back.
    api.serve("GET", LEASE, 200, held(&setup, "11", 0));
    api.serve("PUT", LEASE, 200, held(&setup, "12", 0));
    let mut child = spawn(&setup);

    let create = wait_for(api, |r| r.method == "POST").await;
    assert_eq!(create.body["spec"]["holderIdentity"], "verity-sequencer-0");
    assert_eq!(
        create.body["metadata"]["annotations"]["verity.io/epoch"],
        "0"
    );
    assert_eq!(
        create.body["metadata"]["annotations"]["verity.io/sequencer"],
        setup.address.as_str()
    );
    let renewal = wait_for(api, |r| r.method == "PUT").await;
    assert_eq!(renewal.body["metadata"]["resourceVersion"], "11");

    // A planned stop gives the Lease up: the last write has no holder.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let last_put = api
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert!(
        last_put.body["spec"].get("holderIdentity").is_none(),
        "{}",
        last_put.body
    );
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
    drop(setup.nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_epoch_in_the_lease_deposes_the_sequencer() {
    let setup = setup().await;
    let api = &setup.api;
    api.expect("GET", LEASE, 200, held(&setup, "20", 0));
    api.serve("GET", LEASE, 200, held(&setup, "21", 0));
    api.serve("PUT", LEASE, 200, held(&setup, "22", 0));
    let child = spawn(&setup);
    wait_for(api, |r| r.method == "PUT").await;

    // Another sequencer took over under epoch 1 (its handover is in the stream; this one has
    // not heard): the Lease says so.
    api.serve(
        "GET",
        LEASE,
        200,
        record(&setup, "30", "verity-sequencer-standby-0", 1),
    );
    let stderr = failure(child.wait_with_output()).await;
    assert!(
        stderr.contains("deposed") && stderr.contains("epoch 1 held by verity-sequencer-standby-0"),
        "{stderr}"
    );
    drop(setup.nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rbac_for_the_lease_stops_it_at_start() {
    let setup = setup().await;
    setup.api.serve(
        "GET",
        LEASE,
        403,
        kube_api::status(
            403,
            "Forbidden",
            "leases.coordination.k8s.io \"verity-sequencer\" is forbidden: User \"system:serviceaccount:verity:default\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"verity\"",
        ),
    );
    let stderr = failure(spawn(&setup).wait_with_output()).await;
    assert!(
        stderr.contains("--k8s-lease verity-sequencer") && stderr.contains("forbidden"),
        "{stderr}"
    );
    drop(setup.nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_does_not_stop_it_from_starting() {
    let mut setup = setup().await;
    // Nothing listens there (a control-plane upgrade): the sequencer starts and produces anyway;
    // the fence keeps retrying the Lease.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let at = setup.args.iter().position(|a| a == "--kube-api").unwrap();
    setup.args[at + 1] = url;
    let ready = setup._dir.path().join("ready.json");
    setup
        .args
        .extend(["--ready-file".into(), ready.display().to_string()]);
    let mut child = spawn(&setup);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.is_file() {
        assert!(Instant::now() < deadline, "not ready");
        assert!(child.try_wait().unwrap().is_none(), "exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    drop(setup.nats);
}
