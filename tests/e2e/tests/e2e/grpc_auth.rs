//! Who may call which gRPC method (issue 22, ADR 0014): every service serves mutual TLS with a
//! certificate of the devnet's CA naming its role, and lets a method through only for the roles
//! that call it. A caller without a certificate, with another role's, or with one of a CA the
//! chain does not know is refused, and the refused call changes nothing.

use std::time::Duration;

use serde_json::json;
use tonic::{Code, transport::Channel};
use verity_e2e::{TestNet, dev_signer, sign_filler, verity_devnet::Service};
use verity_proto::v1::{
    self, ingress_client::IngressClient, replica_client::ReplicaClient,
    sequencer_client::SequencerClient,
};

/// A channel to `service` presenting no certificate.
async fn anonymous(net: &TestNet, service: Service) -> Channel {
    verity_e2e::grpc_without_certificate(&net.devnet, service)
        .await
        .unwrap()
}

/// A channel to `service` with the certificate the devnet issued to `name`.
async fn as_role(net: &TestNet, service: Service, name: &str) -> Channel {
    verity_e2e::grpc_as(&net.devnet, service, name)
        .await
        .unwrap()
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
        Ok(answer) => panic!("{what} was let through: {answer:?}"),
    }
}

/// The pending nonce of `address` as the sequencer reports it (asked as the admin).
async fn pending_nonce(net: &TestNet, address: alloy_primitives::Address) -> u64 {
    verity_e2e::sequencer_client(&net.devnet, Service::Sequencer)
        .await
        .unwrap()
        .get_account(v1::GetAccountRequest {
            address: address.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .pending_nonce
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_the_right_certificate_are_refused_and_change_nothing() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let sender = dev_signer(&net, 6).unwrap();
    let (raw, hash) = sign_filler(&sender, net.devnet.chain_id(), 0).unwrap();
    let tx = v1::Transaction {
        raw: alloy_primitives::hex::decode(&raw).unwrap(),
        sender: sender.address().to_vec(),
        hash: alloy_primitives::hex::decode(&hash).unwrap(),
    };
    let forward = || {
        futures::stream::iter([v1::ForwardRequest {
            id: 1,
            transaction: Some(tx.clone()),
            ..Default::default()
        }])
    };
    let submit = || v1::SubmitRequest {
        raw: alloy_primitives::hex::decode(&raw).unwrap(),
    };

    // The sequencer: Forward is ingress's alone.
    let mut stranger = SequencerClient::new(anonymous(&net, Service::Sequencer).await);
    assert_refused(
        stranger.forward(forward()).await,
        Code::Unauthenticated,
        "Forward without a certificate",
    );
    let mut gateway = SequencerClient::new(as_role(&net, Service::Sequencer, "gateway").await);
    assert_refused(
        gateway.forward(forward()).await,
        Code::PermissionDenied,
        "Forward with a gateway's certificate",
    );
    assert_refused(
        gateway.get_state_digest(v1::GetStateDigestRequest {}).await,
        Code::PermissionDenied,
        "GetStateDigest with a gateway's certificate",
    );
    // What a gateway may call, it may.
    gateway
        .get_account(v1::GetAccountRequest {
            address: sender.address().to_vec(),
        })
        .await
        .expect("a gateway reads pending nonces");

    // Ingress: Submit is the gateways'.
    let mut stranger = IngressClient::new(anonymous(&net, Service::Ingress).await);
    assert_refused(
        stranger.submit(submit()).await,
        Code::Unauthenticated,
        "Submit without a certificate",
    );
    let mut sequencer = IngressClient::new(as_role(&net, Service::Ingress, "sequencer").await);
    assert_refused(
        sequencer.submit(submit()).await,
        Code::PermissionDenied,
        "Submit with a sequencer's certificate",
    );

    // A replica: queries are the gateways'.
    let mut stranger = ReplicaClient::new(anonymous(&net, Service::Replica).await);
    assert_refused(
        stranger.get_head(v1::GetHeadRequest {}).await,
        Code::Unauthenticated,
        "a replica's GetHead without a certificate",
    );
    let mut ingress = ReplicaClient::new(as_role(&net, Service::Replica, "ingress").await);
    assert_refused(
        ingress.get_head(v1::GetHeadRequest {}).await,
        Code::PermissionDenied,
        "a replica's GetHead with an ingress's certificate",
    );
    // The execution on demand (traces, simulations) and the address index are the gateways'
    // too: each costs a call slot.
    assert_refused(
        ingress.trace(v1::TraceRequest::default()).await,
        Code::PermissionDenied,
        "a replica's Trace with an ingress's certificate",
    );
    assert_refused(
        ingress.simulate(v1::SimulateRequest::default()).await,
        Code::PermissionDenied,
        "a replica's Simulate with an ingress's certificate",
    );
    assert_refused(
        ingress
            .search_transactions(v1::SearchTransactionsRequest::default())
            .await,
        Code::PermissionDenied,
        "a replica's SearchTransactions with an ingress's certificate",
    );

    // A certificate that names the right role but was issued by another CA does not get past
    // the handshake.
    let elsewhere = tempfile::tempdir().unwrap();
    verity_server::tls::issue(
        elsewhere.path(),
        &[("ingress", verity_server::tls::Role::Ingress)],
    )
    .unwrap();
    let mut forged = verity_server::tls::TlsArgs::in_dir(elsewhere.path(), "ingress");
    forged.ca = net.devnet.tls_admin().ca;
    let forged = forged.load().unwrap().unwrap();
    let endpoint = verity_server::tls::endpoint(
        &net.devnet.grpc_url(Service::Sequencer),
        Some(&forged),
        verity_server::tls::Role::Sequencer,
    )
    .unwrap();
    let refused = match endpoint.connect().await {
        Err(error) => format!("{error:?}"),
        Ok(channel) => match SequencerClient::new(channel).forward(forward()).await {
            Err(status) => format!("{status:?}"),
            Ok(_) => panic!("a certificate of another CA was let through"),
        },
    };
    assert!(!refused.is_empty());

    // Nothing of it reached the mempool or the chain: the pending nonce is still 0 and the
    // transaction has no receipt; then the same transaction through the gateway is mined.
    assert_eq!(pending_nonce(&net, sender.address()).await, 0);
    let rpc = net.rpc();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rpc.call("eth_getTransactionReceipt", json!([hash]))
            .await
            .unwrap(),
        serde_json::Value::Null
    );
    let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    net.stop().await.unwrap();
}

/// A prover serves no API: health answers without a certificate, anything else needs the
/// admin's (a gateway's is refused, and so is no certificate; the admin gets past the check
/// to find no such method). Run inside a proving scenario, which has a prover running.
pub(crate) async fn the_prover_answers_only_health_and_the_admin(net: &TestNet) {
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(anonymous(net, Service::Prover).await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no certificate")
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut stranger = SequencerClient::new(anonymous(net, Service::Prover).await);
    assert_refused(
        stranger.get_head(v1::GetHeadRequest {}).await,
        Code::Unauthenticated,
        "a call on the prover without a certificate",
    );
    let mut gateway = SequencerClient::new(as_role(net, Service::Prover, "gateway").await);
    assert_refused(
        gateway.get_head(v1::GetHeadRequest {}).await,
        Code::PermissionDenied,
        "a call on the prover with a gateway's certificate",
    );
    let mut admin = SequencerClient::new(
        verity_e2e::grpc(&net.devnet, Service::Prover)
            .await
            .unwrap(),
    );
    assert_refused(
        admin.get_head(v1::GetHeadRequest {}).await,
        Code::Unimplemented,
        "the admin's call of a method the prover does not serve",
    );
}
