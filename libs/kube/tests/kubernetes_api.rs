//! The autoscaler's and the Lease's calls against a mocked Kubernetes API that answers as a real
//! API server does (Scale, Lease, Status objects; 404, 403, 409), through the real kube client.

use std::time::Duration;

use serde_json::{Value, json};
use verity_kube::{
    autoscaler::{AutoscalerError, ScaleTarget, step},
    lease::{LeaseError, SequencerLease},
    scale::{Policy, Reason, Scaler},
};
use verity_testkit::kube_api::{self, Answer, MockApi, Workload};

const PROVER: Workload = Workload {
    namespace: NS,
    name: "verity-prover",
};
const NS: &str = "verity";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/verity/deployments/verity-prover";
const SCALE: &str = "/apis/apps/v1/namespaces/verity/deployments/verity-prover/scale";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/verity/leases/verity-sequencer";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/verity/leases";
const ADDRESS: &str = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4";

/// The Lease at `version`, held by `holder` for `sequencer` in `epoch`, after `transitions`.
fn held(version: &str, holder: &str, epoch: u64, sequencer: &str, transitions: i32) -> Value {
    kube_api::lease(
        NS,
        "verity-sequencer",
        version,
        Some((holder, epoch, sequencer)),
        transitions,
    )
}

async fn api() -> (MockApi, kube::Client) {
    let api = MockApi::start().await.expect("mock API server");
    let client = verity_kube::client(Some(api.url())).await.expect("client");
    (api, client)
}

#[tokio::test]
async fn a_backlog_patches_the_deployments_scale_with_a_merge_patch() {
    let (api, client) = api().await;
    let target = ScaleTarget::new(client, NS, "verity-prover");
    let mut scaler = Scaler::new(Policy::DEFAULT);
    api.answer_deployment(Answer::Next, PROVER, 1, 1);
    api.answer_scale(Answer::Next, PROVER, 7, 1);
    // 40 jobs at 10 s each within 60 s: 7 workers.
    let decision = step(&mut scaler, &target, Duration::ZERO, 40, 0)
        .await
        .expect("step");
    assert_eq!((decision.replicas, decision.reason), (7, Reason::Up));
    let requests = api.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let patch = &requests[1];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, json!({"spec": {"replicas": 7}}));
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());

    // Ten seconds later (two of the seven ready) the backlog grew, but the scale-up cooldown
    // holds: a read, no patch.
    api.answer_deployment(Answer::Next, PROVER, 7, 2);
    let decision = step(&mut scaler, &target, Duration::from_secs(10), 200, 0)
        .await
        .expect("step");
    assert_eq!(
        (decision.replicas, decision.reason),
        (7, Reason::UpCooldown)
    );
    assert_eq!(api.requests().len(), 3);
    assert_eq!(api.remaining(), 0);
}

#[tokio::test]
async fn an_api_refusal_names_the_call_and_the_reason() {
    let (api, client) = api().await;
    let target = ScaleTarget::new(client, NS, "verity-prover");
    api.expect(
        "GET",
        DEPLOYMENT,
        404,
        kube_api::not_found("deployments.apps", "verity-prover"),
    );
    let error = target.check().await.expect_err("missing deployment");
    let text = error.to_string();
    assert!(matches!(error, AutoscalerError::Kube { .. }), "{text}");
    assert!(
        text.contains("verity-prover") && text.contains("not found"),
        "{text}"
    );

    let mut scaler = Scaler::new(Policy::DEFAULT);
    api.answer_deployment(Answer::Next, PROVER, 1, 1);
    api.expect(
        "PATCH",
        SCALE,
        403,
        kube_api::status(
            403,
            "Forbidden",
            "deployments.apps \"verity-prover\" is forbidden: User \"system:serviceaccount:verity:verity-autoscaler\" cannot patch resource \"deployments/scale\" in API group \"apps\" in the namespace \"verity\"",
        ),
    );
    let text = step(&mut scaler, &target, Duration::ZERO, 40, 0)
        .await
        .expect_err("forbidden")
        .to_string();
    assert!(
        text.contains("scale deployment verity-prover") && text.contains("cannot patch"),
        "{text}"
    );
}

fn lease(client: kube::Client, identity: &str) -> SequencerLease {
    SequencerLease::new(
        client,
        NS,
        "verity-sequencer",
        identity,
        kube_api::GENESIS,
        Duration::from_secs(10),
    )
}

#[tokio::test]
async fn the_first_sequencer_creates_the_lease_with_its_epoch() {
    let (api, client) = api().await;
    api.expect(
        "GET",
        LEASE,
        404,
        kube_api::not_found("leases.coordination.k8s.io", "verity-sequencer"),
    );
    api.expect(
        "POST",
        LEASES,
        201,
        held("1001", "verity-sequencer-0", 0, ADDRESS, 0),
    );
    let record = lease(client, "verity-sequencer-0")
        .acquire(0, ADDRESS)
        .await
        .expect("acquire");
    assert_eq!(
        (record.holder.as_str(), record.epoch),
        ("verity-sequencer-0", 0)
    );
    let create = &api.requests()[1];
    assert_eq!(create.body["metadata"]["name"], "verity-sequencer");
    assert_eq!(
        create.body["metadata"]["annotations"]["verity.io/epoch"],
        "0"
    );
    assert_eq!(
        create.body["metadata"]["annotations"]["verity.io/sequencer"],
        ADDRESS
    );
    assert_eq!(create.body["spec"]["holderIdentity"], "verity-sequencer-0");
    assert_eq!(create.body["spec"]["leaseDurationSeconds"], 10);
    assert!(create.body["spec"]["renewTime"].is_string());
}

#[tokio::test]
async fn a_new_epoch_takes_a_stale_record_over_and_a_conflict_reads_again() {
    let (api, client) = api().await;
    let stale = held("2000", "verity-sequencer-0", 3, ADDRESS, 3);
    api.expect("GET", LEASE, 200, stale.clone());
    // Someone wrote in between: 409, as the API server answers a stale resourceVersion.
    api.expect(
        "PUT",
        LEASE,
        409,
        kube_api::status(409, "Conflict", "Operation cannot be fulfilled on leases.coordination.k8s.io \"verity-sequencer\": the object has been modified; please apply your changes to the latest version and try again"),
    );
    let renewed = held("2001", "verity-sequencer-0", 3, ADDRESS, 3);
    api.expect("GET", LEASE, 200, renewed);
    api.expect(
        "PUT",
        LEASE,
        200,
        held("2002", "verity-sequencer-standby-0", 4, "0xabc", 4),
    );
    let record = lease(client, "verity-sequencer-standby-0")
        .acquire(4, "0xabc")
        .await
        .expect("acquire");
    assert_eq!((record.epoch, record.transitions), (4, 4));
    let requests = api.requests();
    assert_eq!(requests.len(), 4, "{requests:#?}");
    // Each write carries the resourceVersion it read: the API server's compare-and-set.
    assert_eq!(requests[1].body["metadata"]["resourceVersion"], "2000");
    let put = &requests[3];
    assert_eq!(put.body["metadata"]["resourceVersion"], "2001");
    assert_eq!(
        put.body["spec"]["holderIdentity"],
        "verity-sequencer-standby-0"
    );
    assert_eq!(put.body["spec"]["leaseTransitions"], 4);
    assert_eq!(put.body["metadata"]["annotations"]["verity.io/epoch"], "4");
}

#[tokio::test]
async fn a_higher_epoch_in_the_lease_supersedes_the_sequencer() {
    let (api, client) = api().await;
    api.expect(
        "GET",
        LEASE,
        200,
        held("3000", "verity-sequencer-standby-0", 9, "0xabc", 9),
    );
    let error = lease(client, "verity-sequencer-0")
        .renew(8, ADDRESS)
        .await
        .expect_err("superseded");
    assert!(
        matches!(
            error,
            LeaseError::Superseded {
                epoch: 9,
                ours: 8,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("verity-sequencer-standby-0"),
        "{error}"
    );
    // Nothing was written.
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test]
async fn a_planned_stop_clears_the_holder_only_if_it_is_still_ours() {
    let (api, client) = api().await;
    api.expect(
        "GET",
        LEASE,
        200,
        held("4000", "verity-sequencer-0", 5, ADDRESS, 5),
    );
    api.expect(
        "PUT",
        LEASE,
        200,
        kube_api::lease(NS, "verity-sequencer", "4001", None, 5),
    );
    lease(client.clone(), "verity-sequencer-0")
        .release(5)
        .await
        .expect("release");
    let put = &api.requests()[1];
    assert!(
        put.body["spec"].get("holderIdentity").is_none(),
        "{}",
        put.body
    );
    // Another sequencer's record is left alone.
    api.expect(
        "GET",
        LEASE,
        200,
        held("4002", "verity-sequencer-standby-0", 5, "0xabc", 6),
    );
    lease(client, "verity-sequencer-0")
        .release(5)
        .await
        .expect("release");
    assert_eq!(api.requests().len(), 3);
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
}

#[tokio::test]
async fn a_record_of_another_genesis_is_stale_whatever_its_epoch() {
    // The namespace held a chain that was deleted and made again: its record says epoch 9.
    let (api, client) = api().await;
    let mut old_chain = held("5000", "verity-sequencer-0", 9, ADDRESS, 9);
    old_chain["metadata"]["annotations"]["verity.io/genesis"] = json!("0x0badc0de");
    api.expect("GET", LEASE, 200, old_chain);
    api.expect(
        "PUT",
        LEASE,
        200,
        held("5001", "verity-sequencer-0", 0, ADDRESS, 10),
    );
    let record = lease(client, "verity-sequencer-0")
        .acquire(0, ADDRESS)
        .await
        .expect("a new chain's epoch 0 takes the old chain's record");
    assert_eq!(record.epoch, 0);
    let put = &api.requests()[1];
    assert_eq!(
        put.body["metadata"]["annotations"]["verity.io/genesis"],
        kube_api::GENESIS
    );
    assert_eq!(put.body["metadata"]["annotations"]["verity.io/epoch"], "0");
}

#[tokio::test]
async fn a_restart_under_the_same_epoch_is_not_a_transition() {
    // Released on a planned stop (no holder), taken again by the same sequencer and epoch.
    let (api, client) = api().await;
    let mut released = held("6000", "x", 5, ADDRESS, 5);
    released["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("holderIdentity");
    api.expect("GET", LEASE, 200, released);
    api.expect(
        "PUT",
        LEASE,
        200,
        held("6001", "verity-sequencer-0", 5, ADDRESS, 5),
    );
    lease(client, "verity-sequencer-0")
        .acquire(5, ADDRESS)
        .await
        .expect("acquire");
    let put = &api.requests()[1];
    assert_eq!(put.body["spec"]["leaseTransitions"], 5);
    assert_eq!(put.body["spec"]["holderIdentity"], "verity-sequencer-0");
}
