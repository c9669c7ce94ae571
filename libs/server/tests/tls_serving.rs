//! A TLS server built by `serve_grpc`, in process over loopback: health answers without a
//! client certificate (and in plaintext on `--health-addr`), everything else needs the admin's
//! certificate or a role the policy names, and a plaintext client gets nothing from the TLS port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, time::Duration};

use tonic::{
    Code,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use verity_server::{
    CancellationToken, Security,
    tls::{Policy, Role, TlsArgs, issue},
};

/// A free loopback port, chosen now (the test binds it again at once).
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn health_is_open_in_tls_and_on_the_plaintext_port_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    issue(
        dir.path(),
        &[
            ("prover", Role::Prover),
            ("gateway", Role::Gateway),
            ("admin", Role::Admin),
        ],
    )
    .unwrap();
    let tls = TlsArgs::in_dir(dir.path(), "prover").load().unwrap();
    let health_addr = free_port();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(verity_server::serve_grpc(
        tonic::service::Routes::default(),
        &[],
        listener,
        stop.clone().cancelled_owned(),
        Security {
            tls,
            policy: Policy::HEALTH_ONLY,
            health_addr: Some(health_addr),
        },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    // Plaintext health on its own port.
    let plain = Endpoint::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(plain)
        .check(check())
        .await
        .expect("plaintext health");

    // The TLS port: health without a client certificate, reflection only for the admin.
    let ca = Certificate::from_pem(std::fs::read(dir.path().join("ca.pem")).unwrap());
    let anonymous = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name(Role::Prover.dns_name()),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(anonymous.clone())
        .check(check())
        .await
        .expect("health over TLS without a certificate");
    let as_name = |name: &'static str| {
        let dir = dir.path().to_path_buf();
        async move {
            let tls = TlsArgs::in_dir(&dir, name).load().unwrap().unwrap();
            verity_server::tls::endpoint(&format!("http://{addr}"), Some(&tls), Role::Prover)
                .unwrap()
                .connect()
                .await
                .unwrap()
        }
    };
    let call = |channel| async move {
        let mut client = verity_proto::v1::sequencer_client::SequencerClient::new(channel);
        client
            .get_head(verity_proto::v1::GetHeadRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code()
    };
    assert_eq!(call(anonymous).await, Code::Unauthenticated);
    assert_eq!(call(as_name("gateway").await).await, Code::PermissionDenied);
    // The admin passes the check and finds no such service.
    assert_eq!(call(as_name("admin").await).await, Code::Unimplemented);

    // A plaintext client on the TLS port gets no answer.
    let plaintext = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        assert!(HealthClient::new(channel).check(check()).await.is_err());
    }

    stop.cancel();
    server.await.unwrap().unwrap();
}
