//! Harness of the end-to-end tests: a devnet of the real binaries in a temporary directory, a
//! JSON-RPC client, transaction signing, and the Python (web3.py) clients in `clients/`.
//!
//! The service binaries must be built first (`cargo build --bins`; `make test` does it).

#![allow(clippy::print_stderr)]

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{Context, anyhow, bail};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};
use verity_devnet::{Devnet, DevnetOptions, Service};
use verity_proto::v1;

pub use verity_devnet;

/// The account the fault-injecting test sequencer credits without payment.
pub const FRAUD_BENEFICIARY: Address = Address::repeat_byte(0xba);

/// A devnet in its own temporary directory (removed on drop, unless `VERITY_E2E_KEEP` is set).
#[derive(Debug)]
pub struct TestNet {
    /// The running network.
    pub devnet: Devnet,
    /// Its data directory.
    pub dir: tempfile::TempDir,
    options: DevnetOptions,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// One devnet at a time: scenarios share one test binary, and on a 2-core machine concurrent
/// devnets would make their timing unpredictable.
static TURN: std::sync::LazyLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
    std::sync::LazyLock::new(Default::default);

impl TestNet {
    /// Starts a devnet of every service on run-time ports; `configure` adjusts the options.
    pub async fn start(configure: impl FnOnce(&mut DevnetOptions)) -> anyhow::Result<Self> {
        let turn = TURN.clone().lock_owned().await;
        let mut dir = tempfile::Builder::new().prefix("verity-e2e-").tempdir()?;
        if std::env::var_os("VERITY_E2E_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping {}", dir.path().display());
        }
        let mut options = DevnetOptions::new(dir.path());
        options.rpc_addr = ([127, 0, 0, 1], 0).into();
        options.log_filter = "info,verity=debug".into();
        // Proving costs both cores for seconds per chunk: only the scenarios about proofs run
        // the witness replica and a prover (they set `proving`).
        options.proving = false;
        configure(&mut options);
        for service in Service::ALL {
            let binary = options.bin_dir.join(service.binary());
            if !binary.is_file() {
                bail!(
                    "{} is missing: build the binaries first (`cargo build --bins`; `make test` does)",
                    binary.display()
                );
            }
        }
        let devnet = match Devnet::start(options.clone()).await {
            Ok(devnet) => devnet,
            Err(error) => {
                dump_logs(dir.path());
                return Err(error.into());
            }
        };
        Ok(Self {
            devnet,
            dir,
            options,
            _turn: turn,
        })
    }

    /// Stops every service gracefully and starts the devnet again on the same data directory.
    pub async fn restart(self) -> anyhow::Result<Self> {
        let Self {
            devnet,
            dir,
            mut options,
            _turn,
        } = self;
        // Clients keep the JSON-RPC address they know.
        if let Some(http) = devnet.address(Service::Gateway, "http") {
            options.rpc_addr = http.parse()?;
        }
        devnet.stop().await?;
        let devnet = Devnet::start(options.clone()).await?;
        Ok(Self {
            devnet,
            dir,
            options,
            _turn,
        })
    }

    /// A JSON-RPC client of the gateway.
    pub fn rpc(&self) -> Rpc {
        Rpc::new(self.devnet.rpc_url())
    }

    /// Runs a web3.py client script (see [`run_python`]); on failure prints every service log
    /// and fails the test.
    pub async fn python(&self, script: &str, args: &[&str]) -> Value {
        self.expect_client(run_python(script, args).await)
    }

    /// Runs a viem client script (see [`run_node`]); on failure prints every service log and
    /// fails the test.
    pub async fn node(&self, script: &str, args: &[&str]) -> Value {
        self.expect_client(run_node(script, args).await)
    }

    fn expect_client(&self, ran: anyhow::Result<Value>) -> Value {
        ran.unwrap_or_else(|error| {
            self.dump_logs();
            panic!("{error:#}");
        })
    }

    /// A JetStream context on the devnet's NATS server (keep the client while using it).
    pub async fn jetstream(&self) -> (verity_bus::NatsClient, async_nats::jetstream::Context) {
        self.devnet
            .nats_admin()
            .expect("the devnet runs NATS")
            .connect("e2e")
            .await
            .expect("NATS")
    }

    /// The chain stream (keep the client while using it).
    pub async fn chain_stream(
        &self,
    ) -> (
        verity_bus::NatsClient,
        async_nats::jetstream::stream::Stream,
    ) {
        let (client, js) = self.jetstream().await;
        let stream = verity_bus::ensure_chain_stream(&js)
            .await
            .expect("the chain stream");
        (client, stream)
    }

    /// The sealed blocks among the chain stream's events 1..=`through`, after checking that the
    /// stream holds each of those events once, in order (message n is event n), and reaches
    /// `through`. `context` starts every failure message (a seed to replay, a phase).
    pub async fn sealed_blocks(
        &self,
        through: u64,
        context: &str,
    ) -> Vec<verity_primitives::Block> {
        let (_client, mut stream) = self.chain_stream().await;
        let last = verity_bus::last_chain_seq(&mut stream)
            .await
            .expect("the stream's end");
        assert!(
            last >= through,
            "{context}: stream at {last}, chain at {through}"
        );
        let mut blocks = Vec::new();
        for seq in 1..=through {
            let message = stream.get_raw_message(seq).await.expect("a stored event");
            let event = verity_bus::decode_event(seq, &message.payload).expect("an event");
            assert_eq!(
                event.seq, seq,
                "{context}: stream message {seq} holds event {}",
                event.seq
            );
            if let Some(verity_proto::v1::chain_event::Event::Block(block)) = &event.event {
                blocks.push(verity_primitives::Block::try_from(block).expect("a block"));
            }
        }
        blocks
    }

    /// After load by `senders` dev accounts stopped: waits until the replica has applied all
    /// the sequencer committed, then checks that nothing receipted was lost. The stream holds
    /// every event once, in order; no transaction is in the chain twice; every hash in
    /// `receipted` is in a block and its receipt says it succeeded; sequencer and replica have
    /// the same state. `context` starts every failure message (a seed, the faults injected).
    pub async fn assert_nothing_lost(&self, receipted: &[String], senders: usize, context: &str) {
        // Let the open block be sealed, then wait until the replica has applied everything the
        // sequencer committed.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let target = loop {
            let sequencer = match sequencer_client(&self.devnet, Service::Sequencer).await {
                Ok(mut c) => c.get_head(v1::GetHeadRequest {}).await.ok(),
                Err(_) => None,
            };
            let replica = match replica_client(&self.devnet, Service::Replica).await {
                Ok(mut c) => c.get_head(v1::GetHeadRequest {}).await.ok(),
                Err(_) => None,
            };
            if let (Some(s), Some(r)) = (sequencer, replica)
                && r.get_ref().last_seq >= s.get_ref().last_seq
            {
                break s.into_inner().last_seq;
            }
            if tokio::time::Instant::now() > deadline {
                self.dump_logs();
                panic!("{context}: the replica did not catch up with the sequencer");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        // The stream: every event once, in order; no transaction twice.
        let mut in_chain = std::collections::HashSet::new();
        for block in self.sealed_blocks(target, context).await {
            for hash in &block.transaction_hashes {
                assert!(
                    in_chain.insert(hash.to_string()),
                    "{context}: transaction {hash} is in the chain twice"
                );
            }
        }

        // Every receipt a client was given stands (asked eight at a time: thousands of them).
        for hash in receipted {
            assert!(
                in_chain.contains(hash),
                "{context}: {hash} got a receipt but is in no block"
            );
        }
        self.rpc()
            .assert_receipts_succeeded(receipted, context)
            .await;

        // Sequencer and replica agree on the state. Nothing was sent since `target`, and the
        // empty blocks sealed since change no state, so the digests must agree whatever their
        // positions.
        let sequencer = self.state_digest(Service::Sequencer).await;
        let replica = self.state_digest(Service::Replica).await;
        assert!(replica.last_seq >= target, "{context}");
        assert_eq!(
            (
                &sequencer.digest,
                sequencer.accounts,
                sequencer.slots,
                sequencer.codes
            ),
            (
                &replica.digest,
                replica.accounts,
                replica.slots,
                replica.codes
            ),
            "{context}: the replica's state differs from the sequencer's"
        );
        assert_eq!(sequencer.digest.len(), 32);
        assert!(sequencer.accounts > senders as u64);
    }

    /// The gRPC health of `service` (the server as a whole, as probes ask).
    pub async fn health(
        &self,
        service: Service,
    ) -> tonic_health::pb::health_check_response::ServingStatus {
        let channel = grpc(&self.devnet, service)
            .await
            .expect("a channel to the service");
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("a health answer")
            .into_inner()
            .status()
    }

    /// Runs the built `verity bench` against this devnet with `args` (`--json`) and returns its
    /// report; fails the test, with every service's log, when it fails.
    pub async fn bench(&self, args: &[&str]) -> Value {
        let verity = verity_devnet::default_bin_dir().join("verity");
        let url = self.devnet.rpc_url();
        let output = tokio::process::Command::new(&verity)
            .args(["bench", "--rpc-url", url.as_str(), "--json"])
            .arg("--devnet-dir")
            .arg(self.dir.path())
            .args(args)
            .output()
            .await
            .expect("verity bench runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            self.dump_logs();
            panic!(
                "verity bench {args:?} failed: {}\n{stdout}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
    }

    /// The state digest of `service`: a sequencer (active or standby) or a replica (any role).
    pub async fn state_digest(&self, service: Service) -> v1::StateDigest {
        let request = v1::GetStateDigestRequest {};
        let answer = match service {
            Service::Sequencer | Service::Standby => {
                let client = sequencer_client(&self.devnet, service).await;
                client
                    .expect("the sequencer answers")
                    .get_state_digest(request)
                    .await
            }
            _ => {
                let client = replica_client(&self.devnet, service).await;
                client
                    .expect("the replica answers")
                    .get_state_digest(request)
                    .await
            }
        };
        answer.expect("a state digest").into_inner()
    }

    /// The light verifier's newest finality attestation, once it says what `until` waits for
    /// (read from the finality stream, signature checked); fails the test after `timeout`.
    pub async fn light_verifier_attests(
        &self,
        until: impl Fn(&verity_chunk::wire::FinalityAttestation) -> bool,
        timeout: Duration,
    ) -> verity_chunk::wire::FinalityAttestation {
        use prost::Message as _;
        let address = verity_devnet::light_verifier_address(self.devnet.data_dir())
            .expect("the light verifier's key");
        let (_client, js) = self.jetstream().await;
        let stream = verity_bus::proving::ensure_finality_stream(&js)
            .await
            .expect("the finality stream");
        let subject = verity_bus::proving::finality_subject(address.as_slice());
        let started = std::time::Instant::now();
        let mut newest = None;
        loop {
            if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await {
                let wire = v1::FinalityAttestation::decode(message.payload.as_ref())
                    .expect("an attestation");
                let attestation = verity_chunk::wire::FinalityAttestation::try_from(&wire)
                    .expect("a well-formed attestation");
                verity_primitives::signing::verify(
                    &verity_chunk::wire::finality_hash(self.devnet.chain_id(), &attestation),
                    &attestation.signature,
                    address,
                )
                .expect("signed by the light verifier");
                if until(&attestation) {
                    return attestation;
                }
                newest = Some(attestation);
            }
            if started.elapsed() > timeout {
                self.dump_logs();
                panic!("the light verifier did not attest as expected; newest: {newest:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Prints every service log (for a failing test's output).
    pub fn dump_logs(&self) {
        dump_logs(self.dir.path());
    }

    /// Stops everything.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Self { devnet, dir, .. } = self;
        devnet.stop().await?;
        drop(dir);
        Ok(())
    }
}

/// Prints the tail of every log in `dir/logs`.
pub fn dump_logs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("logs")) else {
        return;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        eprintln!(
            "===== {} =====\n{}",
            entry.path().display(),
            tail.join("\n")
        );
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Error code.
    pub code: i64,
    /// Message.
    pub message: String,
    /// Data, if any.
    pub data: Option<Value>,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// A minimal JSON-RPC 2.0 client over HTTP.
#[derive(Debug, Clone)]
pub struct Rpc {
    url: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<hyper::body::Bytes>>,
}

impl Rpc {
    /// A client of `url`.
    pub fn new(url: String) -> Self {
        Self {
            url,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Posts a raw body and returns the parsed response body.
    pub async fn post(&self, body: &Value) -> anyhow::Result<Value> {
        let request = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(hyper::body::Bytes::from(serde_json::to_vec(
                body,
            )?)))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .context("JSON-RPC request timed out")??;
        let bytes = response.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes)
            .with_context(|| format!("response is not JSON: {}", String::from_utf8_lossy(&bytes)))
    }

    /// Calls `method`; `Ok(Err(_))` is the JSON-RPC error the node answered with.
    pub async fn try_call(
        &self,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Result<Value, RpcError>> {
        let response = self
            .post(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .await?;
        if let Some(error) = response.get("error") {
            return Ok(Err(RpcError {
                code: error["code"].as_i64().unwrap_or_default(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
                data: error.get("data").cloned(),
            }));
        }
        response
            .get("result")
            .cloned()
            .map(Ok)
            .ok_or_else(|| anyhow!("response has neither result nor error: {response}"))
    }

    /// Calls `method`, failing on a JSON-RPC error.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.try_call(method, params)
            .await?
            .map_err(|e| anyhow!("{method}: {e}"))
    }

    /// A quantity result as u64.
    pub async fn quantity(&self, method: &str, params: Value) -> anyhow::Result<u64> {
        let value = self.call(method, params).await?;
        parse_quantity(&value)
    }

    /// Asks for the receipt of every one of `hashes` (eight requests at a time: a scenario checks
    /// thousands) and asserts each is there with status 1; `context` goes into the message.
    pub async fn assert_receipts_succeeded(&self, hashes: &[String], context: &str) {
        use futures::StreamExt;
        let receipts: Vec<(&String, Value)> = futures::stream::iter(hashes)
            .map(|hash| async move {
                let receipt = self
                    .call("eth_getTransactionReceipt", json!([hash]))
                    .await
                    .unwrap_or_else(|e| panic!("{context}: receipt of {hash}: {e:#}"));
                (hash, receipt)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (hash, receipt) in receipts {
            assert_eq!(
                receipt["status"],
                json!("0x1"),
                "{context}: {hash}: {receipt}"
            );
        }
    }

    /// Sends a signed transaction and waits (up to 20 s) for its receipt.
    pub async fn send_and_wait(&self, raw: &str, hash: &str) -> anyhow::Result<Value> {
        self.call("eth_sendRawTransaction", json!([raw])).await?;
        self.wait_receipt(hash, Duration::from_secs(20)).await
    }

    /// Polls for a receipt until `timeout`.
    pub async fn wait_receipt(&self, hash: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let receipt = self
                .call("eth_getTransactionReceipt", json!([hash]))
                .await?;
            if !receipt.is_null() {
                return Ok(receipt);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no receipt for {hash} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// GETs `url`, returning the status code and the body.
pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    let client: Client<_, Full<hyper::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::get(url).body(Full::default())?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .with_context(|| format!("GET {url} timed out"))??;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Parses a `0x` quantity.
pub fn parse_quantity(value: &Value) -> anyhow::Result<u64> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow!("not a quantity: {value}"))?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .with_context(|| format!("not a quantity: {text}"))
}

/// The fee cap of every transfer the tests sign: 100 gwei, far above the devnet's base fee.
pub const TRANSFER_MAX_FEE: u128 = 100_000_000_000;

/// Signs an EIP-1559 transfer and returns the raw envelope as `0x` hex, with its hash.
pub fn sign_transfer(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: U256,
) -> anyhow::Result<(String, String)> {
    sign_1559(
        signer,
        TxEip1559 {
            chain_id,
            nonce,
            gas_limit: 21_000,
            to: TxKind::Call(to),
            value,
            ..Default::default()
        },
    )
}

/// Signs an EIP-1559 contract creation running `initcode` with `gas_limit`, as
/// [`sign_transfer`] signs.
pub fn sign_create(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    initcode: &[u8],
    gas_limit: u64,
) -> anyhow::Result<(String, String)> {
    sign_1559(
        signer,
        TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            to: TxKind::Create,
            input: Bytes::copy_from_slice(initcode),
            ..Default::default()
        },
    )
}

/// Signs `tx` with the fee cap of every test transaction; the raw envelope as `0x` hex and its
/// hash.
fn sign_1559(signer: &PrivateKeySigner, tx: TxEip1559) -> anyhow::Result<(String, String)> {
    let tx = TxEip1559 {
        max_fee_per_gas: TRANSFER_MAX_FEE,
        max_priority_fee_per_gas: 1_000_000,
        ..tx
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash())?;
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    Ok((
        alloy_primitives::hex::encode_prefixed(envelope.encoded_2718()),
        envelope.tx_hash().to_string(),
    ))
}

/// Signs an EIP-1559 call of `to` with `input` and `gas_limit`, as [`sign_transfer`] signs.
pub fn sign_call(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    input: Vec<u8>,
    gas_limit: u64,
) -> anyhow::Result<(String, String)> {
    sign_1559(
        signer,
        TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            to: TxKind::Call(to),
            input: input.into(),
            ..Default::default()
        },
    )
}

/// A transfer that only has to exist (load, blocks to prove): 1,000 + `nonce` wei to
/// 0x4242…42, signed as [`sign_transfer`] signs.
pub fn sign_filler(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
) -> anyhow::Result<(String, String)> {
    sign_transfer(
        signer,
        chain_id,
        nonce,
        Address::repeat_byte(0x42),
        U256::from(1_000 + nonce),
    )
}

/// The standard test mnemonic's account `index` as a signer.
pub fn dev_signer(net: &TestNet, index: usize) -> anyhow::Result<PrivateKeySigner> {
    let accounts = net.devnet.accounts();
    let account = accounts
        .get(index)
        .ok_or_else(|| anyhow!("no dev account {index}"))?;
    Ok(account.private_key.parse()?)
}

/// Senders, one per dev account, each sending transfers with `realtime_sendRawTransaction`
/// until stopped and recording every transfer answered with a receipt: the load of the fault
/// scenarios, whose receipted transfers must all be in the chain afterwards.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    receipted: Arc<Mutex<Vec<String>>>,
    senders: Vec<tokio::task::JoinHandle<(u64, u64)>>,
}

impl Load {
    /// Starts a sender for each of the dev `accounts`.
    pub fn start(net: &TestNet, accounts: impl IntoIterator<Item = usize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let receipted = Arc::new(Mutex::new(Vec::new()));
        let chain_id = net.devnet.chain_id();
        let senders = accounts
            .into_iter()
            .map(|account| {
                tokio::spawn(send_until_stopped(
                    net.rpc(),
                    dev_signer(net, account).expect("a dev account"),
                    chain_id,
                    stop.clone(),
                    receipted.clone(),
                ))
            })
            .collect();
        Self {
            stop,
            receipted,
            senders,
        }
    }

    /// Stops every sender: the transfers attempted, and the hashes of those receipted.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut attempts = 0;
        for sender in self.senders {
            attempts += sender.await.expect("a sender panicked").0;
        }
        let receipted = self.receipted.lock().unwrap_or_else(|e| e.into_inner());
        (attempts, receipted.clone())
    }
}

/// Sends transfers until `stop`, each with `realtime_sendRawTransaction`, and records the hash
/// of every one answered with a receipt. After any failure (a service down, a nonce the chain
/// moved past) it reads the account's nonce again and goes on from there.
async fn send_until_stopped(
    rpc: Rpc,
    signer: alloy_signer_local::PrivateKeySigner,
    chain_id: u64,
    stop: Arc<AtomicBool>,
    receipted: Arc<Mutex<Vec<String>>>,
) -> (u64, u64) {
    let address = format!("{:#x}", signer.address());
    let mut nonce = None;
    let mut attempt = 0u64;
    let mut failures = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let current = match nonce {
            Some(n) => n,
            None => match rpc
                .try_call("eth_getTransactionCount", json!([address, "latest"]))
                .await
            {
                Ok(Ok(value)) => parse_quantity(&value).expect("a nonce"),
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        attempt += 1;
        // A distinct value per attempt: a resent nonce is a different transaction.
        let (raw, hash) = sign_transfer(
            &signer,
            chain_id,
            current,
            Address::repeat_byte(0x4b),
            U256::from(attempt),
        )
        .expect("a signed transfer");
        match rpc
            .try_call("realtime_sendRawTransaction", json!([raw]))
            .await
        {
            Ok(Ok(receipt)) => {
                assert_eq!(receipt["transactionHash"].as_str(), Some(hash.as_str()));
                receipted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(hash);
                nonce = Some(current + 1);
            }
            _ => {
                failures += 1;
                nonce = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (attempt, failures)
}

/// The runtime of a benchmark's `main`: two workers, like the machine it is measured on.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs the built `verity bench` against the gateway at `url` of the devnet in `devnet_dir`
/// with `args` (`--json`): its report, or `None` (said on stdout) when it failed. For the
/// benchmarks' `main`s.
pub async fn verity_bench(
    url: &str,
    devnet_dir: &std::path::Path,
    args: &[String],
) -> Option<Value> {
    let verity = verity_devnet::default_bin_dir().join("verity");
    let output = tokio::process::Command::new(&verity)
        .args(["bench", "--rpc-url", url, "--json"])
        .arg("--devnet-dir")
        .arg(devnet_dir)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        let mut stdout = std::io::stdout().lock();
        let _ =
            std::io::Write::write_fmt(&mut stdout, format_args!("verity bench {args:?} failed\n"));
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).ok()
}

/// Path of a client script in `tests/e2e/clients`.
pub fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Runs Foundry's `cast` (the npm package `@foundry-rs/cast`, pinned in the clients' lockfile
/// and installed by `make bootstrap`) against the node at `rpc` with `args`: its standard output,
/// or an error with its standard error when it fails.
pub async fn cast(rpc: &str, args: &[&str]) -> anyhow::Result<String> {
    let bin = client_script("node_modules/@foundry-rs/cast-linux-amd64/bin/cast");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&bin)
            .args(args)
            .env("ETH_RPC_URL", rpc)
            .env("NO_COLOR", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("cast {args:?} timed out"))?
    .with_context(|| format!("cannot run {} (make bootstrap installs it)", bin.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        bail!(
            "cast {args:?} failed with {}:\n{}\n{stdout}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// Runs a Python client script with `args`, returning the JSON object it prints.
pub async fn run_python(script: &str, args: &[&str]) -> anyhow::Result<Value> {
    run_client("python3", "web3.py", script, args).await
}

/// Runs a Node.js client script (viem, installed into `tests/e2e/clients/node_modules` by
/// `make bootstrap`) with `args`, returning the JSON object it prints.
pub async fn run_node(script: &str, args: &[&str]) -> anyhow::Result<Value> {
    run_client("node", "viem", script, args).await
}

async fn run_client(
    interpreter: &str,
    library: &str,
    script: &str,
    args: &[&str],
) -> anyhow::Result<Value> {
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(interpreter)
            .arg(client_script(script))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{script} timed out"))?
    .with_context(|| {
        format!("cannot run {interpreter} {script} (make bootstrap installs {library})")
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{script} failed with {}:\n{stderr}\n{stdout}",
            output.status
        );
    }
    let line = stdout
        .lines()
        .last()
        .ok_or_else(|| anyhow!("{script} printed nothing; stderr:\n{stderr}"))?;
    serde_json::from_str(line).with_context(|| format!("{script} printed no JSON: {stdout}"))
}

/// The seed of a randomised scenario: `VERITY_E2E_SEED` to replay one, else the clock (odd, so
/// xorshift never sticks at zero).
pub fn seed() -> u64 {
    std::env::var("VERITY_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

/// A gRPC channel to `service` of `devnet`, as the devnet's admin (mutual TLS: the server's
/// certificate must name the service's role).
pub async fn grpc(devnet: &Devnet, service: Service) -> anyhow::Result<tonic::transport::Channel> {
    let tls = devnet.tls_admin().load()?;
    let endpoint =
        verity_server::tls::endpoint(&devnet.grpc_url(service), tls.as_ref(), service.role())
            .map_err(anyhow::Error::msg)?;
    Ok(endpoint.connect().await?)
}

/// A gRPC channel to `service` of `devnet` over TLS (the server's certificate checked) but
/// presenting no certificate of its own: what a stranger, or a probe, gets.
pub async fn grpc_without_certificate(
    devnet: &Devnet,
    service: Service,
) -> anyhow::Result<tonic::transport::Channel> {
    let ca_file = devnet.tls_admin().ca.context("the devnet has no CA")?;
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(ca_file)?);
    let url = devnet.grpc_url(service).replacen("http://", "https://", 1);
    let endpoint = tonic::transport::Endpoint::from_shared(url)?.tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name(service.role().dns_name()),
    )?;
    Ok(endpoint.connect().await?)
}

/// A gRPC channel to `service` of `devnet` presenting the certificate the devnet issued to
/// `as_name` (another service's, to act in its role).
pub async fn grpc_as(
    devnet: &Devnet,
    service: Service,
    as_name: &str,
) -> anyhow::Result<tonic::transport::Channel> {
    let dir = devnet.data_dir().join(verity_devnet::TLS_DIR);
    let tls = verity_server::tls::TlsArgs::in_dir(&dir, as_name)
        .load()?
        .context("no certificate")?;
    let endpoint =
        verity_server::tls::endpoint(&devnet.grpc_url(service), Some(&tls), service.role())
            .map_err(anyhow::Error::msg)?;
    Ok(endpoint.connect().await?)
}

/// A sequencer client of `service` (the sequencer or the standby), as the admin.
pub async fn sequencer_client(
    devnet: &Devnet,
    service: Service,
) -> anyhow::Result<v1::sequencer_client::SequencerClient<tonic::transport::Channel>> {
    Ok(v1::sequencer_client::SequencerClient::new(
        grpc(devnet, service).await?,
    ))
}

/// A replica client of `service` (any replica role), as the admin.
pub async fn replica_client(
    devnet: &Devnet,
    service: Service,
) -> anyhow::Result<v1::replica_client::ReplicaClient<tonic::transport::Channel>> {
    Ok(v1::replica_client::ReplicaClient::new(
        grpc(devnet, service).await?,
    ))
}

/// The address in the sequencer lease on the NATS `nats` names, if any (as written: the test
/// observes, it does not check the signature).
pub async fn lease_holder(nats: &verity_bus::NatsArgs) -> Option<Address> {
    let (_client, js) = nats.connect("e2e").await.ok()?;
    let store = verity_bus::lease::lease_store(&js).await.ok()?;
    let value = store.get(verity_bus::lease::LEASE_KEY).await.ok()??;
    serde_json::from_slice::<verity_bus::lease::Holder>(&value)
        .ok()
        .map(|h| h.sequencer)
}

/// Waits until the lease names `address`; how long that took, or `None` after `within`.
pub async fn wait_lease_holder(
    nats: &verity_bus::NatsArgs,
    address: Address,
    within: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if lease_holder(nats).await == Some(address) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// The chain stream on the NATS `nats` names, decoded, from event 1 to its end.
pub async fn chain_events(
    nats: &verity_bus::NatsArgs,
) -> anyhow::Result<Vec<verity_primitives::ChainEvent>> {
    let (_client, js) = nats.connect("e2e").await?;
    let mut stream = verity_bus::ensure_chain_stream(&js).await?;
    let last = verity_bus::last_chain_seq(&mut stream).await?;
    let mut events = Vec::new();
    for seq in 1..=last {
        let wire = verity_bus::chain_event_at(&stream, seq).await?;
        events.push(verity_primitives::ChainEvent::try_from(&wire)?);
    }
    Ok(events)
}

/// `verity governance` pointed at a devnet: its genesis, its replica, its NATS server, and its
/// governance keys (`governance/<n>.key`); appointments are written in its directory.
#[derive(Debug, Clone)]
pub struct Governance {
    dir: PathBuf,
    genesis: String,
    replica: String,
    nats: verity_bus::NatsArgs,
    /// The devnet's admin certificate flags (the replica is called over mutual TLS).
    tls: Vec<String>,
}

impl Governance {
    /// The governance of `devnet`.
    pub fn of(devnet: &Devnet) -> Self {
        let dir = devnet.data_dir().to_path_buf();
        Self {
            genesis: dir.join("genesis.json").display().to_string(),
            replica: devnet.grpc_url(Service::Replica),
            nats: devnet.nats_admin().expect("the devnet runs NATS"),
            tls: devnet.tls_admin().to_args(),
            dir,
        }
    }

    /// Drafts the appointment of `sequencer` into `file` (with `extra` flags): whether the CLI
    /// succeeded, its output, and the file's path.
    pub async fn draft(
        &self,
        sequencer: &str,
        file: &str,
        extra: &[&str],
    ) -> (bool, String, String) {
        let out = self.dir.join(file).display().to_string();
        let mut args = vec![
            "draft",
            "--sequencer",
            sequencer,
            "--genesis",
            &self.genesis,
            "--replica-url",
            &self.replica,
            "--out",
            &out,
        ];
        args.extend(self.tls.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let (ok, text) = run_governance(&args).await;
        (ok, text, out)
    }

    /// Signs `appointment` with governance key `key`.
    pub async fn sign(&self, appointment: &str, key: u8) -> (bool, String) {
        let key = self
            .dir
            .join(format!("governance/{key}.key"))
            .display()
            .to_string();
        run_governance(&["sign", "--appointment", appointment, "--key", &key]).await
    }

    /// Publishes `appointment`.
    pub async fn publish(&self, appointment: &str) -> (bool, String) {
        let nkey = self
            .nats
            .nkey_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut args = vec![
            "publish",
            "--appointment",
            appointment,
            "--genesis",
            &self.genesis,
            "--replica-url",
            &self.replica,
            "--nats-url",
            &self.nats.url,
            "--nats-nkey-file",
            &nkey,
        ];
        let ca = self.nats.tls_ca.as_ref().map(|p| p.display().to_string());
        if let Some(ca) = &ca {
            args.extend(["--nats-tls-ca", ca]);
        }
        args.extend(self.tls.iter().map(String::as_str));
        run_governance(&args).await
    }
}

async fn run_governance(args: &[&str]) -> (bool, String) {
    governance(args).await.expect("run verity governance")
}

/// Runs `verity governance <args>`; whether it succeeded, and its stdout and stderr.
pub async fn governance(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let output = tokio::process::Command::new(verity_devnet::default_bin_dir().join("verity"))
        .arg("governance")
        .args(args)
        .output()
        .await?;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}
