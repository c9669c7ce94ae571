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

/// How long a refused request is waited for: the server drops it without an answer.
const REFUSED: Duration = Duration::from_secs(2);

/// Whether a JetStream publish of `payload` on `subject` was stored within `within`.
async fn stored(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: &'static [u8],
    within: Duration,
) -> bool {
    let attempt = async {
        js.publish(subject.to_string(), payload.into())
            .await
            .ok()?
            .await
            .ok()
    };
    matches!(tokio::time::timeout(within, attempt).await, Ok(Some(_)))
}

/// Each service's nkey may publish only its role's subjects: a gateway cannot publish a chain
/// event (one undecodable message would stop every replica), write the sequencer lease or an
/// appointment, or purge or delete a stream; a prover cannot publish a result in another
/// prover's name. The server refuses each (its log names the subject), and the chain goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_cannot_publish_another_roles_subjects_or_purge_a_stream() {
    let net = TestNet::start(|_| {}).await.unwrap();
    let admin = net.devnet.nats_admin().unwrap();
    let as_role = |name: &str| verity_bus::NatsArgs {
        url: admin.url.clone(),
        nkey_file: Some(verity_e2e::verity_devnet::nats_nkey_file(
            net.devnet.data_dir(),
            name,
        )),
    };
    let (_admin, admin_js) = net.jetstream().await;
    verity_bus::proving::ensure_proving_streams(&admin_js)
        .await
        .unwrap();
    let (_gateway, gateway) = as_role("gateway").connect("e2e-gateway").await.unwrap();
    let (_prover, second_prover) = as_role("prover-2").connect("e2e-prover-2").await.unwrap();

    // A result under the first prover's address, from the second prover's key: refused; under
    // its own: stored.
    let first = verity_bus::message_id(net.devnet.prover_address().as_slice());
    let second_key =
        verity_primitives::SigningKey::load_or_create(&net.devnet.data_dir().join("prover-2.key"))
            .unwrap()
            .0
            .address();
    let second = verity_bus::message_id(second_key.as_slice());
    let results = verity_bus::proving::RESULTS_SUBJECT;
    let forged = format!("{results}.7.proof.{first}");
    // Every refused attempt at once (each waits out its timeout).
    let deleted = |stream: &'static str| {
        let gateway = gateway.clone();
        async move {
            matches!(
                tokio::time::timeout(REFUSED, gateway.delete_stream(stream)).await,
                Ok(Ok(_))
            )
        }
    };
    let (chain, lease, appointment, in_anothers_name, chain_deleted, proofs_deleted) = tokio::join!(
        stored(
            &gateway,
            verity_bus::CHAIN_SUBJECT,
            b"not an event",
            REFUSED
        ),
        stored(&gateway, "$KV.VERITY_SEQUENCER.lease", b"{}", REFUSED),
        stored(&gateway, "$KV.VERITY_APPOINTMENTS.epoch-99", b"{}", REFUSED),
        stored(&second_prover, &forged, b"x", REFUSED),
        deleted(verity_bus::CHAIN_STREAM),
        deleted(verity_bus::proving::PROOFS_STREAM),
    );
    assert!(!chain, "a gateway published on the chain");
    assert!(!lease, "a gateway wrote the lease");
    assert!(!appointment, "a gateway published an appointment");
    assert!(!in_anothers_name, "a prover published in another's name");
    assert!(
        !chain_deleted && !proofs_deleted,
        "a gateway deleted a stream"
    );
    for stream in [verity_bus::CHAIN_STREAM, verity_bus::proving::PROOFS_STREAM] {
        assert!(
            admin_js.get_stream(stream).await.is_ok(),
            "{stream} is gone"
        );
    }
    assert!(
        stored(
            &second_prover,
            &format!("{results}.7.proof.{second}"),
            b"x",
            Duration::from_secs(10)
        )
        .await,
        "a prover could not publish its own result"
    );

    // The server refused them itself.
    let log = std::fs::read_to_string(net.devnet.data_dir().join("nats/nats.log")).unwrap();
    for subject in [
        verity_bus::CHAIN_SUBJECT.to_string(),
        "$KV.VERITY_SEQUENCER.lease".into(),
        "$KV.VERITY_APPOINTMENTS.epoch-99".into(),
        format!("$JS.API.STREAM.DELETE.{}", verity_bus::CHAIN_STREAM),
        format!(
            "$JS.API.STREAM.DELETE.{}",
            verity_bus::proving::PROOFS_STREAM
        ),
        format!("{results}.7.proof.{first}"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("Violation") && l.contains(&format!("\"{subject}\""))),
            "the server did not refuse {subject}:\n{log}"
        );
    }

    // The chain goes on.
    let rpc = net.rpc();
    let sender = dev_signer(&net, 4).unwrap();
    let (raw, hash) = sign_filler(&sender, net.devnet.chain_id(), 0).unwrap();
    let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    net.stop().await.unwrap();
}
