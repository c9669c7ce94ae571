//! Who may use the bus (issue 22, ADR 0014): the devnet's NATS server knows each service's
//! nkey and its tools' and refuses every other client; a lease entry not signed by its epoch's
//! sequencer key is ignored by those who follow it; the chain goes on throughout.

use std::time::Duration;

use serde_json::json;
use verity_e2e::{TestNet, dev_signer, sign_filler};

/// Connects to `url` once (no retry), with the nkey `seed` if given.
async fn try_connect(
    url: &str,
    seed: Option<String>,
    ca: &std::path::Path,
) -> Result<async_nats::Client, String> {
    let options = match seed {
        Some(seed) => async_nats::ConnectOptions::with_nkey(seed),
        None => async_nats::ConnectOptions::new(),
    };
    // The devnet's CA is no secret: a stranger has it, and gets as far as authentication.
    let tls = verity_bus::auth::tls_client_config(ca).map_err(|e| e.to_string())?;
    options
        .require_tls(true)
        .tls_client_config(tls)
        .connection_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// Speaks the NATS protocol in plaintext to the server at `url` (as a client that ignores the
/// server's `tls_required` would): `Ok` when the server's greeting asks for TLS and a publish
/// sent in the clear gets no `+OK`/`PONG` but a closed connection; otherwise what happened.
async fn plaintext_refusal(url: &str) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    let address = url.rsplit("://").next().unwrap();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut info = String::new();
    reader.read_line(&mut info).await.unwrap();
    if !info.starts_with("INFO ") || !info.contains("\"tls_required\":true") {
        return Err(format!("the greeting does not ask for TLS: {info}"));
    }
    reader
        .get_mut()
        .write_all(b"CONNECT {\"verbose\":true}\r\nPUB verity.chain.events 1\r\nx\r\nPING\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    if read.is_err() {
        return Err("the server kept a plaintext client connected".into());
    }
    if answer.contains("+OK") || answer.contains("PONG") {
        return Err(format!("the server answered a plaintext client: {answer}"));
    }
    Ok(())
}

/// Writes lease entries that do not verify, one after another every few milliseconds until
/// `stop`, as a client holding the sequencer role's own NATS credential: each names `trap` as
/// the sequencer's URL, and every fifth write is a bare deletion of the entry instead (which
/// is not a release). Returns how many were written.
async fn write_forged_leases(
    nats: verity_bus::NatsArgs,
    chain_id: u64,
    genesis_sequencer: verity_primitives::Address,
    trap: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> usize {
    use verity_bus::lease::{Holder, LEASE_KEY, lease_store};
    let (_client, js) = nats.connect("e2e-forger").await.unwrap();
    let store = lease_store(&js).await.unwrap();
    let stranger = verity_primitives::SigningKey::random();
    // Signed by a stranger but naming the genesis sequencer.
    let mut impostor = Holder::signed(&stranger, chain_id, 0, trap.clone(), None);
    impostor.sequencer = genesis_sequencer;
    let forged: Vec<Vec<u8>> = vec![
        // No signature at all.
        serde_json::to_vec(&json!({"sequencer": genesis_sequencer, "epoch": 0, "url": trap}))
            .unwrap(),
        serde_json::to_vec(&impostor).unwrap(),
        // A stranger's own claim to epoch 0, and to a later epoch with no appointment.
        serde_json::to_vec(&Holder::signed(&stranger, chain_id, 0, trap.clone(), None)).unwrap(),
        serde_json::to_vec(&Holder::signed(&stranger, chain_id, 7, trap.clone(), None)).unwrap(),
    ];
    let mut written = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if written % 5 == 4 {
            store.delete(LEASE_KEY).await.unwrap();
        } else {
            let value = forged[written % forged.len()].clone();
            store.put(LEASE_KEY, value.into()).await.unwrap();
        }
        written += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    written
}

/// A lease entry written with the sequencer role's valid NATS credential but without the
/// signature of the epoch's key, or a deletion of the entry, is ignored: ingress keeps forwarding transactions to the real
/// sequencer, the gateway keeps asking it for pending nonces, nobody connects to the URL the
/// forged entries name, the active sequencer writes its own lease back instead of stepping
/// down, and the hot standby does not take the lease over.
async fn unsigned_leases_are_ignored(net: &TestNet) {
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let trapped = tokio::spawn({
        let connections = connections.clone();
        async move {
            while let Ok((_socket, _)) = trap.accept().await {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let as_sequencer = net.devnet.nats_as("sequencer").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forger = tokio::spawn(write_forged_leases(
        as_sequencer,
        net.devnet.chain_id(),
        net.devnet.sequencer_address(),
        trap_url.clone(),
        stop.clone(),
    ));
    // While forged entries keep coming: transfers through ingress, pending nonces through the
    // gateway's own sequencer client.
    let rpc = net.rpc();
    let sender = dev_signer(net, 5).unwrap();
    for nonce in 0..3 {
        let (raw, hash) = sign_filler(&sender, net.devnet.chain_id(), nonce).unwrap();
        let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
        assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
        let pending = rpc
            .call(
                "eth_getTransactionCount",
                json!([format!("{:#x}", sender.address()), "pending"]),
            )
            .await
            .unwrap();
        assert_eq!(
            verity_e2e::parse_quantity(&pending).unwrap(),
            nonce + 1,
            "pending nonce"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = forger.await.unwrap();
    assert!(written > 10, "only {written} forged entries were written");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a follower connected to the URL of a forged lease ({trap_url})"
    );
    trapped.abort();

    // The real sequencer holds a lease that verifies, and never stepped down.
    let rules = verity_primitives::ChainSpec::load(&net.devnet.data_dir().join("genesis.json"))
        .unwrap()
        .sequencing(Some(net.devnet.sequencer_address()))
        .unwrap();
    let (_client, js) = net.jetstream().await;
    let store = verity_bus::lease::lease_store(&js).await.unwrap();
    let mut entry = None;
    for _ in 0..100 {
        entry = verity_bus::lease::read(&store, &rules).await.unwrap();
        if entry.as_ref().is_some_and(|e| e.holder.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holder = entry
        .and_then(|e| e.holder)
        .expect("no lease that verifies");
    assert_eq!(holder.sequencer, net.devnet.sequencer_address());
    let log = std::fs::read_to_string(
        net.devnet
            .log_file(verity_e2e::verity_devnet::Service::Sequencer),
    )
    .unwrap();
    assert!(
        !log.contains("stepping down"),
        "the sequencer stepped down:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_unsigned_leases_ignored_while_the_chain_goes_on() {
    // With a hot standby: a forged entry must not make it take over either.
    let net = TestNet::start(|o| o.standby = true).await.unwrap();
    let url = net.devnet.nats_url().unwrap().to_string();
    let admin = net.devnet.nats_admin().unwrap();
    let ca = admin.tls_ca.clone().unwrap();
    let rpc = net.rpc();
    let before =
        verity_e2e::parse_quantity(&rpc.call("eth_blockNumber", json!([])).await.unwrap()).unwrap();

    // In plaintext nothing gets through: the server asks for TLS and drops a client that
    // speaks the protocol without it. (The same probe of a server without TLS sees it answer.)
    plaintext_refusal(&url).await.unwrap();
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = verity_bus::server::NatsServer::start(plain_dir.path())
        .await
        .unwrap();
    assert!(plaintext_refusal(plain.url()).await.is_err());
    plain.stop().await.unwrap();

    // No credential at all: refused before it can publish or ask JetStream anything.
    let refused = try_connect(&url, None, &ca).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("authorization")),
        "an anonymous client got in: {:?}",
        refused.map(|_| ())
    );
    // A well-formed nkey the server was not given.
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let refused = try_connect(&url, Some(stranger), &ca).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("authorization")),
        "an unknown nkey got in: {:?}",
        refused.map(|_| ())
    );
    // The devnet's own key gets in.
    let seed = verity_bus::auth::read_nkey(admin.nkey_file.as_deref().unwrap())
        .unwrap()
        .seed;
    let client = try_connect(&url, Some(seed), &ca)
        .await
        .expect("the admin nkey");
    drop(client);

    // Meanwhile the chain goes on: a transfer gets its receipt, blocks keep coming.
    let sender = dev_signer(&net, 3).unwrap();
    let (raw, hash) = sign_filler(&sender, net.devnet.chain_id(), 0).unwrap();
    let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    let after =
        verity_e2e::parse_quantity(&rpc.call("eth_blockNumber", json!([])).await.unwrap()).unwrap();
    assert!(after > before, "no block since {before}");

    unsigned_leases_are_ignored(&net).await;
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
/// prover's name. Nor can a role make a consumer anywhere but on the chain stream (a push
/// consumer of the finality or proofs stream delivering into `verity.chain.events` would append
/// to the chain what the server would not let it publish), make or reconfigure a stream, take
/// another prover's jobs, or read another identity's replies. The server refuses each (its log
/// names the subject), and the chain goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_cannot_publish_another_roles_subjects_make_consumers_or_purge_a_stream() {
    use async_nats::jetstream::{consumer::push, stream};
    let net = TestNet::start(|_| {}).await.unwrap();
    let as_role = |name: &str| net.devnet.nats_as(name).unwrap();
    let (_admin, admin_js) = net.jetstream().await;
    let (jobs, _) = verity_bus::proving::ensure_proving_streams(&admin_js)
        .await
        .unwrap();
    verity_bus::proving::ensure_finality_stream(&admin_js)
        .await
        .unwrap();
    let (gateway_client, gateway) = as_role("gateway").connect("e2e-gateway").await.unwrap();
    let (prover_client, second_prover) = as_role("prover-2").connect("e2e-prover-2").await.unwrap();
    // The provers' job consumers, as the bus's initialisation makes them.
    let second_key =
        verity_primitives::SigningKey::load_or_create(&net.devnet.data_dir().join("prover-2.key"))
            .unwrap()
            .0
            .address();
    let queue = verity_bus::proving::JobQueue::default();
    let first_jobs = verity_bus::proving::consumer_name(net.devnet.prover_address().as_slice());
    let second_jobs = verity_bus::proving::consumer_name(second_key.as_slice());
    for name in [&first_jobs, &second_jobs] {
        verity_bus::proving::job_consumer(&jobs, name, queue)
            .await
            .unwrap();
    }

    // Consumers delivering into the chain, from the streams a gateway or a prover can read.
    let push_into_chain = |js: async_nats::jetstream::Context, source: &'static str| async move {
        let attempt = async {
            js.create_consumer_on_stream(
                push::Config {
                    deliver_subject: verity_bus::CHAIN_SUBJECT.into(),
                    ..Default::default()
                },
                source,
            )
            .await
        };
        matches!(tokio::time::timeout(REFUSED, attempt).await, Ok(Ok(_)))
    };
    let made_stream = async {
        let attempt = gateway.create_stream(stream::Config {
            name: "E2E_MINE".into(),
            subjects: vec!["e2e.mine".into()],
            ..Default::default()
        });
        matches!(tokio::time::timeout(REFUSED, attempt).await, Ok(Ok(_)))
    };
    let shrunk_proofs = async {
        let mut config = admin_js
            .get_stream(verity_bus::proving::PROOFS_STREAM)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        config.max_messages = 1;
        let attempt = gateway.update_stream(config);
        matches!(tokio::time::timeout(REFUSED, attempt).await, Ok(Ok(_)))
    };
    let jobs_stream = verity_bus::proving::JOBS_STREAM;
    let (from_finality, from_proofs, from_lease, made_stream, shrunk_proofs) = tokio::join!(
        push_into_chain(gateway.clone(), verity_bus::proving::FINALITY_STREAM),
        push_into_chain(second_prover.clone(), verity_bus::proving::PROOFS_STREAM),
        push_into_chain(gateway.clone(), "KV_VERITY_SEQUENCER"),
        made_stream,
        shrunk_proofs,
    );
    assert!(
        !from_finality,
        "a gateway made a consumer on the finality stream"
    );
    assert!(
        !from_proofs,
        "a prover made a consumer on the proofs stream"
    );
    assert!(
        !from_lease,
        "a gateway made a consumer on the lease's stream"
    );
    assert!(!made_stream, "a gateway made a stream");
    assert!(!shrunk_proofs, "a gateway reconfigured the proofs stream");
    // Taking another key's jobs, and reading everyone's replies.
    for (client, consumer) in [
        (&gateway_client, &first_jobs),
        (&prover_client, &first_jobs),
    ] {
        client
            .publish(
                format!("$JS.API.CONSUMER.MSG.NEXT.{jobs_stream}.{consumer}"),
                "1".into(),
            )
            .await
            .unwrap();
    }
    let _snoop = gateway_client.subscribe("_INBOX.>").await.unwrap();
    gateway_client.flush().await.unwrap();
    // What a role may do, it can: a prover pulls from its own key's consumer, a gateway follows
    // the chain through an ordered consumer of its own.
    let own = second_prover
        .get_stream(jobs_stream)
        .await
        .unwrap()
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&second_jobs)
        .await
        .expect("a prover opens its own job consumer");
    own.fetch()
        .max_messages(1)
        .expires(Duration::from_millis(200))
        .messages()
        .await
        .expect("a prover pulls from its own job consumer");
    let chain = gateway.get_stream(verity_bus::CHAIN_STREAM).await.unwrap();
    let mut follow = verity_bus::ordered_chain_consumer(&chain, 1)
        .await
        .expect("a gateway follows the chain")
        .messages()
        .await
        .unwrap();
    {
        use futures::StreamExt as _;
        let first = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("a chain event in time")
            .unwrap()
            .unwrap();
        verity_bus::decode_event(1, &first.payload).expect("the chain's first event");
    }
    for stream in [
        verity_bus::proving::FINALITY_STREAM,
        verity_bus::proving::PROOFS_STREAM,
        "KV_VERITY_SEQUENCER",
    ] {
        let mut info = admin_js.get_stream(stream).await.unwrap();
        let consumers = info.info().await.unwrap().state.consumer_count;
        assert_eq!(consumers, 0, "{stream} has a consumer");
    }
    assert!(
        admin_js.get_stream("E2E_MINE").await.is_err(),
        "a stream was made"
    );

    // A result under the first prover's address, from the second prover's key: refused; under
    // its own: stored.
    let first = verity_bus::message_id(net.devnet.prover_address().as_slice());
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
        format!(
            "$JS.API.CONSUMER.CREATE.{}",
            verity_bus::proving::FINALITY_STREAM
        ),
        format!(
            "$JS.API.CONSUMER.CREATE.{}",
            verity_bus::proving::PROOFS_STREAM
        ),
        "$JS.API.CONSUMER.CREATE.KV_VERITY_SEQUENCER".into(),
        "$JS.API.STREAM.CREATE.E2E_MINE".into(),
        format!(
            "$JS.API.STREAM.UPDATE.{}",
            verity_bus::proving::PROOFS_STREAM
        ),
        format!("$JS.API.CONSUMER.MSG.NEXT.{jobs_stream}.{first_jobs}"),
        "_INBOX.>".into(),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("Violation") && l.contains(&format!("\"{subject}\""))),
            "the server did not refuse {subject}:\n{log}"
        );
    }
    // Both attempts at the first prover's jobs were refused, the prover's as the gateway's.
    let next = format!("\"$JS.API.CONSUMER.MSG.NEXT.{jobs_stream}.{first_jobs}\"");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("Violation") && l.contains(&next))
            .count(),
        2,
        "{log}"
    );

    // The chain goes on.
    let rpc = net.rpc();
    let sender = dev_signer(&net, 4).unwrap();
    let (raw, hash) = sign_filler(&sender, net.devnet.chain_id(), 0).unwrap();
    let receipt = rpc.send_and_wait(&raw, &hash).await.unwrap();
    assert_eq!(receipt["status"], json!("0x1"), "{receipt}");
    net.stop().await.unwrap();
}
