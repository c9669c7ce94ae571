//! Harness of the end-to-end tests: a devnet of the real binaries in a temporary directory, a
//! JSON-RPC client, transaction signing, and the Python (web3.py) clients in `clients/`.
//!
//! The service binaries must be built first (`cargo build --bins`; `make test` does it).

#![allow(clippy::print_stderr)]

use std::{path::PathBuf, time::Duration};

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

/// Signs an EIP-1559 transfer and returns the raw envelope as `0x` hex, with its hash.
pub fn sign_transfer(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: U256,
    max_fee_per_gas: u128,
) -> anyhow::Result<(String, String)> {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas,
        max_priority_fee_per_gas: 1_000_000,
        to: TxKind::Call(to),
        value,
        input: Bytes::new(),
        access_list: Default::default(),
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash())?;
    let envelope: TxEnvelope = tx.into_signed(signature).into();
    Ok((
        alloy_primitives::hex::encode_prefixed(envelope.encoded_2718()),
        envelope.tx_hash().to_string(),
    ))
}

/// The standard test mnemonic's account `index` as a signer.
pub fn dev_signer(net: &TestNet, index: usize) -> anyhow::Result<PrivateKeySigner> {
    let accounts = net.devnet.accounts();
    let account = accounts
        .get(index)
        .ok_or_else(|| anyhow!("no dev account {index}"))?;
    Ok(account.private_key.parse()?)
}

/// Path of a client script in `tests/e2e/clients`.
pub fn client_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
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

/// The address in the sequencer lease on `nats_url`, if any.
pub async fn lease_holder(nats_url: &str) -> Option<Address> {
    let (_client, js) = verity_bus::connect(nats_url, "e2e").await.ok()?;
    let store = verity_bus::lease::lease_store(&js).await.ok()?;
    verity_bus::lease::read(&store)
        .await
        .ok()??
        .holder
        .map(|h| h.sequencer)
}

/// Waits until the lease names `address`; how long that took, or `None` after `within`.
pub async fn wait_lease_holder(
    nats_url: &str,
    address: Address,
    within: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if lease_holder(nats_url).await == Some(address) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// The chain stream on `nats_url`, decoded, from event 1 to its end.
pub async fn chain_events(nats_url: &str) -> anyhow::Result<Vec<verity_primitives::ChainEvent>> {
    let (_client, js) = verity_bus::connect(nats_url, "e2e").await?;
    let mut stream = verity_bus::ensure_chain_stream(&js).await?;
    let last = verity_bus::last_chain_seq(&mut stream).await?;
    let mut events = Vec::new();
    for seq in 1..=last {
        let wire = verity_bus::chain_event_at(&stream, seq).await?;
        events.push(verity_primitives::ChainEvent::try_from(&wire)?);
    }
    Ok(events)
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
