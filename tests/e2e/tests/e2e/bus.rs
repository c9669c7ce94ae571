//! Who may use the bus (issue 22, ADR 0014): the devnet's NATS server knows each service's
//! nkey and its tools' and refuses every other client, while the chain goes on.

use std::time::Duration;

use serde_json::json;
use verity_e2e::{TestNet, dev_signer, sign_filler};

/// Connects to `url` once (no retry), with the nkey `seed` if given.
async fn try_connect(url: &str, seed: Option<String>) -> Result<async_nats::Client, String> {
    let options = match seed {
        Some(seed) => async_nats::ConnectOptions::with_nkey(seed),
        None => async_nats::ConnectOptions::new(),
    };
    options
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_known_nkey_is_refused_and_the_chain_goes_on() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let url = net.devnet.nats_url().unwrap().to_string();
    let rpc = net.rpc();
    let before =
        verity_e2e::parse_quantity(&rpc.call("eth_blockNumber", json!([])).await.unwrap()).unwrap();

    // No credential at all: refused before it can publish or ask JetStream anything.
    let refused = try_connect(&url, None).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("authorization")),
        "an anonymous client got in: {:?}",
        refused.map(|_| ())
    );
    // A well-formed nkey the server was not given.
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let refused = try_connect(&url, Some(stranger)).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("authorization")),
        "an unknown nkey got in: {:?}",
        refused.map(|_| ())
    );
    // The devnet's own key gets in.
    let admin = net.devnet.nats_admin().unwrap();
    let seed = verity_bus::auth::read_nkey(admin.nkey_file.as_deref().unwrap())
        .unwrap()
        .seed;
    let client = try_connect(&url, Some(seed)).await.expect("the admin nkey");
    drop(client);

    // Meanwhile the chain goes on: a transfer gets its receipt, blocks keep coming.
    let sender = dev_signer(&net, 3).unwrap();
    let (raw, hash) = sign_filler(&sender, net.devnet.chain_id(), 0).unwrap();
    let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    let after =
        verity_e2e::parse_quantity(&rpc.call("eth_blockNumber", json!([])).await.unwrap()).unwrap();
    assert!(after > before, "no block since {before}");
    net.stop().await.unwrap();
}
