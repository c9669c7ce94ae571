//! NATS over TLS (ADR 0014): a server given a certificate of the chain's CA serves TLS only, a
//! client given that CA (`--nats-tls-ca`) reaches it, and a client refuses a server whose
//! certificate is another CA's or names another host, so nobody on the path can stand in for
//! the bus.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use futures::StreamExt as _;
use verity_bus::server::{NatsServer, ServerTls};
use verity_server::tls::{CA_CERT, issue_server};

/// A TLS-only server in `dir` with a certificate of `dir`'s CA naming `hosts`.
async fn tls_server(dir: &Path, hosts: &[&str]) -> NatsServer {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    assert!(issue_server(&dir.join("tls"), "nats-server", &hosts).unwrap());
    let tls = ServerTls {
        cert: dir.join("tls/nats-server.pem"),
        key: dir.join("tls/nats-server.key"),
    };
    NatsServer::start_with(&dir.join("nats"), &[], Some(&tls))
        .await
        .unwrap()
}

/// Connects (once, no retry) trusting only the CA in `ca`.
async fn connect(url: &str, ca: &Path) -> Result<async_nats::Client, String> {
    let config = verity_bus::auth::tls_client_config(ca).map_err(|e| e.to_string())?;
    async_nats::ConnectOptions::new()
        .require_tls(true)
        .tls_client_config(config)
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_client_reaches_the_bus_only_through_a_certificate_of_its_ca_naming_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), &["127.0.0.1", "localhost"]).await;
    assert!(server.url().starts_with("tls://"), "{}", server.url());
    let ca = dir.path().join("tls").join(CA_CERT);

    // The chain's CA: connected, and messages flow.
    let client = connect(server.url(), &ca).await.unwrap();
    let mut inbox = client.subscribe("verity.test").await.unwrap();
    client
        .publish("verity.test", "over tls".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), inbox.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&message.payload[..], b"over tls");

    // The same through the services' flags (--nats-url, --nats-tls-ca).
    let args = verity_bus::NatsArgs {
        url: server.url().to_string(),
        nkey_file: None,
        tls_ca: Some(ca.clone()),
    };
    let (flagged, _) = args.connect("flags").await.unwrap();
    flagged.flush().await.unwrap();

    // Another CA (an impostor's server, or a public CA's certificate): refused.
    let other = tempfile::tempdir().unwrap();
    issue_server(other.path(), "unused", &["127.0.0.1".to_string()]).unwrap();
    let refused = connect(server.url(), &other.path().join(CA_CERT)).await;
    assert!(refused.is_err(), "a server of another CA was trusted");

    // A file that holds no certificate is a configuration error, named as one.
    let empty = other.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let error = verity_bus::auth::tls_client_config(&empty).unwrap_err();
    assert!(error.to_string().contains("no certificate"), "{error}");
}

#[tokio::test]
async fn a_certificate_of_the_right_ca_for_another_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The CA is the client's own, but the certificate names a host the client did not dial.
    let server = tls_server(dir.path(), &["nats.example"]).await;
    let refused = connect(server.url(), &dir.path().join("tls").join(CA_CERT)).await;
    assert!(
        refused.is_err(),
        "a certificate naming another host was accepted"
    );
}

#[tokio::test]
async fn the_server_certificate_is_made_again_when_its_hosts_change() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = |h: &[&str]| h.iter().map(|h| h.to_string()).collect::<Vec<_>>();
    assert!(issue_server(dir.path(), "nats-server", &hosts(&["127.0.0.1"])).unwrap());
    assert!(!issue_server(dir.path(), "nats-server", &hosts(&["127.0.0.1"])).unwrap());
    assert!(issue_server(dir.path(), "nats-server", &hosts(&["127.0.0.1", "nats"])).unwrap());
}
