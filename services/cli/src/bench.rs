//! `verity bench`: a load generator against a running chain's JSON-RPC gateway.
//!
//! 1. **Setup**: derives the workload's accounts (`verity-workload`), funds the ones that need
//!    it from `--funder-key` (by default the devnet's first account), and deploys the ERC-20
//!    (with the funder's balance) and the counter when the workload calls them, then hands each
//!    account its tokens. Transactions of the setup go out in windows the mempool accepts (64
//!    nonces ahead at most).
//! 2. **Pre-signing** the whole run on every core, before the clock starts.
//! 3. **The run**: open loop at `--rate` transactions/s for `--duration` seconds, or closed
//!    loop (`--closed-loop N`: N clients, each sending its next transaction when the previous
//!    one's receipt came back). Every transaction is sent with `realtime_sendRawTransaction`,
//!    which answers with its receipt: the latency is from the moment the transaction was due
//!    (open loop: its scheduled time, so a stalled sender cannot hide latency) to its receipt.
//!    In the open loop an account has one transaction in flight at a time, and one refused
//!    with "txpool is full" (a sequencer shedding load) is sent again at its account's next
//!    turn, as a wallet would; refusals and their latency are reported apart.
//!    Or batched (`--batch N`): the transactions go out as JSON-RPC batches of N
//!    `eth_sendRawTransaction` calls as fast as the node answers, and the run ends when every
//!    sender's nonce shows its last one included; standard methods only, setup included (it
//!    falls back to `eth_sendRawTransaction` and receipt polling on a node without the realtime
//!    methods), so the same load measures anvil or geth too.
//!    A progress line is printed every second.
//! 4. **Report**: transactions/s and gas/s from the receipts, latency percentiles, errors by
//!    message, and the per-stage breakdown ([`crate::stages`]: every service's histograms
//!    scraped before and after the run, from the devnet's run files or `--metrics-url`);
//!    `--json` prints it as JSON too.

use std::{
    collections::BTreeMap,
    io::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
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
use verity_workload::{Accounts, Action, Kind, Signed, Targets, TxParams};

/// `verity bench` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// JSON-RPC URL of the gateway.
    #[arg(long, env = "VERITY_RPC_URL", default_value = "http://127.0.0.1:8545")]
    pub rpc_url: String,
    /// Workload: transfers, erc20, counter or mixed.
    #[arg(long, default_value = "transfers")]
    pub workload: Kind,
    /// Accounts sending the workload (each sends every `accounts`-th transaction).
    #[arg(long, default_value_t = 2000)]
    pub accounts: usize,
    /// Open loop: transactions per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Open loop: seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Closed loop with this many clients instead of an open loop (`--count` transactions).
    #[arg(long)]
    pub closed_loop: Option<usize>,
    /// Closed loop and `--batch`: transactions in all.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Batched instead of open or closed loop: the `--count` transactions go out as JSON-RPC
    /// batches of this many `eth_sendRawTransaction` calls, as fast as the node answers
    /// (`--batches-in-flight` at a time), and the run ends when every sender's nonce has
    /// reached its last transaction. Standard methods only, so any Ethereum node can be
    /// measured with the same load (anvil: give `--funder-key` one of its accounts).
    #[arg(long, value_name = "CALLS")]
    pub batch: Option<usize>,
    /// `--batch`: batches sent at once.
    #[arg(long, default_value_t = 4)]
    pub batches_in_flight: usize,
    /// Most requests in flight (the connection pool grows to it).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Hex private key that funds the accounts (default: the devnet's first account).
    #[arg(long, env = "VERITY_BENCH_FUNDER_KEY")]
    pub funder_key: Option<String>,
    /// Print the report as JSON as well.
    #[arg(long)]
    pub json: bool,
    /// A devnet's data directory: its services' metrics endpoints (in `run/*.json`) give the
    /// per-stage breakdown, when its gateway is the one at --rpc-url.
    #[arg(long, env = "VERITY_DEVNET_DIR", default_value = ".devnet")]
    pub devnet_dir: std::path::PathBuf,
    /// More metrics endpoints for the breakdown, as SERVICE=URL (service: gateway, ingress,
    /// sequencer or replica); repeatable.
    #[arg(long = "metrics-url", value_name = "SERVICE=URL")]
    pub metrics_urls: Vec<String>,
}

/// The figures of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// "open 1000/s" or "closed 16 clients".
    pub mode: String,
    /// Transactions sent.
    pub sent: u64,
    /// Receipts received.
    pub receipts: u64,
    /// Seconds from the first send to the last receipt.
    pub seconds: f64,
    /// `--batch`: seconds from the first send until every batch was answered (the node's
    /// intake), before the last transaction was included.
    pub intake_seconds: Option<f64>,
    /// Receipts per second.
    pub tps: f64,
    /// Gas of the receipts per second.
    pub gas_per_second: f64,
    /// Latency percentiles in milliseconds: p50, p90, p99, p99.9, max.
    pub latency_ms: BTreeMap<String, f64>,
    /// Errors by message.
    pub errors: BTreeMap<String, u64>,
    /// Transactions refused with "txpool is full" (counted in `errors` too; the open loop
    /// sends each again at its account's next turn).
    pub refused: u64,
    /// How long refusals took to come back, in milliseconds: p50, p99, max.
    pub refusal_ms: BTreeMap<String, f64>,
    /// Open loop: ticks at which every account had a transaction in flight, so nothing was
    /// sent (more `--accounts` offer the rate).
    pub skipped: u64,
    /// The ERC-20 the run used (deployed by its setup), when it used one.
    pub token: Option<Address>,
    /// The counter the run used, when it used one.
    pub counter: Option<Address>,
    /// Where the time went, per stage (empty without metrics endpoints).
    pub stages: Vec<crate::stages::Stage>,
    /// CPU seconds each service (and `bench` itself) used during the run.
    pub cpu: Vec<crate::stages::ServiceCpu>,
}

/// A small JSON-RPC client over a pooled HTTP/1.1 connection set.
#[derive(Clone, Debug)]
pub(crate) struct Rpc {
    url: hyper::Uri,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
}

impl Rpc {
    pub(crate) fn new(url: &str) -> anyhow::Result<Self> {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Ok(Self {
            url: url.parse().with_context(|| format!("--rpc-url {url}"))?,
            client,
        })
    }

    /// `Ok(Err(message))` is the node's JSON-RPC error.
    async fn call(&self, method: &str, params: Value) -> anyhow::Result<Result<Value, String>> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let request = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(serde_json::to_vec(&body)?)))?;
        let response = self.client.request(request).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))?;
        if let Some(error) = value.get("error") {
            return Ok(Err(error["message"].as_str().unwrap_or("error").to_owned()));
        }
        value
            .get("result")
            .cloned()
            .map(Ok)
            .ok_or_else(|| anyhow!("no result in {value}"))
    }

    /// One JSON-RPC batch: `calls` as (method, params); each answer in order, `Err(message)`
    /// for a call the node refused.
    async fn batch(&self, calls: &[(&str, Value)]) -> anyhow::Result<Vec<Result<Value, String>>> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(id, (method, params))| {
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            })
            .collect();
        let request = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(serde_json::to_vec(&body)?)))?;
        let response = self.client.request(request).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))?;
        let Value::Array(answers) = value else {
            bail!("the batch was answered with {value}");
        };
        let mut out: Vec<Result<Value, String>> =
            vec![Err("no answer in the batch".to_owned()); calls.len()];
        for answer in answers {
            let Some(slot) = answer["id"]
                .as_u64()
                .and_then(|id| out.get_mut(usize::try_from(id).ok()?))
            else {
                continue;
            };
            *slot = match answer.get("error") {
                Some(error) => Err(error["message"].as_str().unwrap_or("error").to_owned()),
                None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
            };
        }
        Ok(out)
    }

    pub(crate) async fn ok(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.call(method, params)
            .await?
            .map_err(|e| anyhow!("{method}: {e}"))
    }

    pub(crate) async fn quantity(&self, method: &str, params: Value) -> anyhow::Result<u64> {
        let value = self.ok(method, params).await?;
        let text = value.as_str().unwrap_or_default();
        u64::from_str_radix(text.trim_start_matches("0x"), 16)
            .with_context(|| format!("{method} answered {value}"))
    }
}

/// Progress and errors, printed on one line that is rewritten.
fn progress(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

fn done(line: &str) {
    progress(line);
    let _ = writeln!(std::io::stderr().lock());
}

/// Runs `verity bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<Report> {
    if args.accounts == 0 {
        bail!("invalid --accounts 0: must be at least 1");
    }
    if args.batch == Some(0) || args.batches_in_flight == 0 {
        bail!("--batch and --batches-in-flight must be at least 1");
    }
    if args.closed_loop.is_none() && args.batch.is_none() && (args.rate == 0 || args.duration == 0)
    {
        bail!("--rate and --duration must be at least 1");
    }
    let rpc = Rpc::new(&args.rpc_url)?;
    let chain_id = rpc
        .quantity("eth_chainId", json!([]))
        .await
        .with_context(|| format!("cannot reach the gateway at {}", args.rpc_url))?;
    let gas_price = rpc.quantity("eth_gasPrice", json!([])).await?;
    let params = TxParams {
        chain_id,
        // Room for the base fee to double several times during the run.
        max_fee_per_gas: u128::from(gas_price) * 8 + 1_000_000,
        max_priority_fee_per_gas: 1_000_000,
    };
    let funder = match &args.funder_key {
        Some(hex) => hex
            .trim()
            .parse::<PrivateKeySigner>()
            .context("--funder-key is not a hex private key")?,
        None => verity_primitives::chain_spec::dev_signers(1)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no dev account"))?,
    };

    progress(&format!("deriving {} accounts", args.accounts));
    let accounts = Accounts::new(args.accounts);
    let actions: Vec<Action> = (0..10).map(|i| args.workload.action(i)).collect();
    let mut setup = Setup::new(rpc.clone(), funder, params).await?;
    let targets = setup.prepare(&accounts, &actions).await?;
    done(&format!(
        "setup done: {} accounts funded, token {}, counter {}",
        accounts.len(),
        targets.token,
        targets.counter
    ));

    let total = match (args.closed_loop, args.batch) {
        (Some(_), _) | (None, Some(_)) => args.count,
        (None, None) => usize::try_from(args.rate * args.duration)?,
    };
    progress(&format!("reading {} nonces", accounts.len()));
    let nonces = account_nonces(&rpc, &accounts).await?;
    progress(&format!("signing {total} transactions"));
    let started = Instant::now();
    let kind = args.workload;
    let signed = {
        let accounts = accounts.clone();
        let nonces = nonces.clone();
        tokio::task::spawn_blocking(move || {
            accounts.sign_for(kind, 0..total, &params, &targets, |s| nonces[s])
        })
        .await??
    };
    done(&format!(
        "signed {total} transactions in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let endpoints = crate::stages::Endpoints::discover(
        Some(&args.devnet_dir),
        &args.rpc_url,
        &args.metrics_urls,
    )?;
    let before = endpoints.scrape().await;
    let own_before = verity_telemetry::process_cpu_seconds();
    let mut report = match args.batch {
        Some(size) => batched(&rpc, &accounts, &nonces, signed, size, &args).await?,
        None => send(&rpc, signed, &args).await,
    };
    let own_after = verity_telemetry::process_cpu_seconds();
    if !endpoints.is_empty() {
        // The last mini-blocks reach the replica and the gateway just after the last receipt.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = endpoints.scrape().await;
        report.stages = crate::stages::breakdown(&before, &after);
        report.cpu = crate::stages::cpu(&before, &after);
    }
    if let (Some(before), Some(after)) = (own_before, own_after) {
        report.cpu.push(crate::stages::ServiceCpu {
            service: "bench".into(),
            cpu_seconds: after - before,
        });
    }
    let mut err = std::io::stderr().lock();
    if !report.stages.is_empty() {
        let _ = write!(err, "{}", crate::stages::table(&report.stages));
    }
    let per_tx = |cpu: f64| cpu / report.receipts.max(1) as f64 * 1e6;
    let cpu_line: Vec<String> = report
        .cpu
        .iter()
        .map(|c| {
            format!(
                "{} {:.2} cores ({:.0} us/tx)",
                c.service,
                c.cpu_seconds / report.seconds,
                per_tx(c.cpu_seconds)
            )
        })
        .collect();
    let _ = writeln!(err, "CPU: {}", cpu_line.join(", "));
    drop(err);
    report.token = actions.contains(&Action::Erc20).then_some(targets.token);
    report.counter = actions
        .contains(&Action::Counter)
        .then_some(targets.counter);
    Ok(report)
}

/// Per-account nonces, read concurrently.
async fn account_nonces(rpc: &Rpc, accounts: &Accounts) -> anyhow::Result<Vec<u64>> {
    let mut nonces = vec![0; accounts.len()];
    for start in (0..accounts.len()).step_by(256) {
        let end = (start + 256).min(accounts.len());
        let reads = (start..end).map(|i| {
            let rpc = rpc.clone();
            let address = format!("{:#x}", accounts.address(i));
            async move {
                rpc.quantity("eth_getTransactionCount", json!([address, "latest"]))
                    .await
            }
        });
        for (i, nonce) in (start..end).zip(futures::future::join_all(reads).await) {
            nonces[i] = nonce?;
        }
    }
    Ok(nonces)
}

/// The funder's side of the setup.
struct Setup {
    rpc: Rpc,
    funder: PrivateKeySigner,
    nonce: u64,
    params: TxParams,
    /// Cleared once the node answered that it has no `realtime_sendRawTransaction` (anvil,
    /// geth): the setup then sends with `eth_sendRawTransaction` and polls for the receipt.
    realtime: std::sync::atomic::AtomicBool,
}

/// Whether a JSON-RPC error message says the method does not exist.
fn no_such_method(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("method")
        && [
            "not found",
            "does not exist",
            "not available",
            "unsupported",
        ]
        .iter()
        .any(|m| message.contains(m))
}

/// How far ahead of the account's nonce the mempool queues transactions.
const WINDOW: usize = 64;
/// Wei each account is funded with when it holds less than half of it (1 ETH: thousands of
/// transactions' gas; a devnet account's 10,000 ETH funds 10,000 accounts).
const FUNDING: u128 = 1_000_000_000_000_000_000;
/// Token units each account is given.
const TOKENS: u64 = 1_000_000_000;

impl Setup {
    async fn new(rpc: Rpc, funder: PrivateKeySigner, params: TxParams) -> anyhow::Result<Self> {
        let address = format!("{:#x}", funder.address());
        let nonce = rpc
            .quantity("eth_getTransactionCount", json!([address, "latest"]))
            .await?;
        Ok(Self {
            rpc,
            funder,
            nonce,
            params,
            realtime: std::sync::atomic::AtomicBool::new(true),
        })
    }

    fn sign(&mut self, to: TxKind, value: U256, input: Bytes, gas: u64) -> anyhow::Result<String> {
        let tx = TxEip1559 {
            chain_id: self.params.chain_id,
            nonce: self.nonce,
            gas_limit: gas,
            max_fee_per_gas: self.params.max_fee_per_gas,
            max_priority_fee_per_gas: self.params.max_priority_fee_per_gas,
            to,
            value,
            input,
            access_list: Default::default(),
        };
        self.nonce += 1;
        let signature = self.funder.sign_hash_sync(&tx.signature_hash())?;
        let envelope: TxEnvelope = tx.into_signed(signature).into();
        Ok(alloy_primitives::hex::encode_prefixed(
            envelope.encoded_2718(),
        ))
    }

    /// Sends one transaction and waits for its receipt; sends it again while a sequencer at
    /// capacity refuses it (for up to a minute).
    async fn send_one(&self, raw: String) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let receipt = loop {
            let method = if self.realtime.load(Ordering::Relaxed) {
                "realtime_sendRawTransaction"
            } else {
                "eth_sendRawTransaction"
            };
            match self.rpc.call(method, json!([raw])).await? {
                Ok(hash) if method == "eth_sendRawTransaction" => {
                    break self.wait_receipt(&hash, deadline).await?;
                }
                Ok(receipt) => break receipt,
                Err(message) if message.starts_with(POOL_FULL) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(message) if method.starts_with("realtime") && no_such_method(&message) => {
                    self.realtime.store(false, Ordering::Relaxed);
                }
                Err(message) => bail!("{method}: {message}"),
            }
        };
        if receipt["status"] != json!("0x1") {
            bail!("setup transaction failed: {receipt}");
        }
        Ok(receipt)
    }

    /// Polls for the receipt of `hash` until `deadline`.
    async fn wait_receipt(&self, hash: &Value, deadline: Instant) -> anyhow::Result<Value> {
        loop {
            let receipt = self
                .rpc
                .ok("eth_getTransactionReceipt", json!([hash]))
                .await?;
            if !receipt.is_null() {
                return Ok(receipt);
            }
            if Instant::now() >= deadline {
                bail!("no receipt for {hash} within a minute");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `raws` in windows of [`WINDOW`], each window as one batch, waiting for every
    /// receipt of a window before the next.
    async fn send_windows(&self, raws: Vec<String>, what: &str) -> anyhow::Result<()> {
        let total = raws.len();
        for (n, window) in raws.chunks(WINDOW).enumerate() {
            let sends = window.iter().map(|raw| self.send_one(raw.clone()));
            for result in futures::future::join_all(sends).await {
                result.with_context(|| format!("setup: {what}"))?;
            }
            progress(&format!(
                "setup: {what} {}/{total}",
                (n * WINDOW + window.len()).min(total)
            ));
        }
        Ok(())
    }

    /// Funds the accounts that need it and deploys the contracts `actions` call.
    async fn prepare(
        &mut self,
        accounts: &Accounts,
        actions: &[Action],
    ) -> anyhow::Result<Targets> {
        // ETH for gas (and transfers) where an account holds less than half the funding.
        let mut raws = Vec::new();
        for start in (0..accounts.len()).step_by(256) {
            let end = (start + 256).min(accounts.len());
            let reads = (start..end).map(|i| {
                let rpc = self.rpc.clone();
                let address = format!("{:#x}", accounts.address(i));
                async move { rpc.ok("eth_getBalance", json!([address, "latest"])).await }
            });
            let balances = futures::future::join_all(reads).await;
            for (i, balance) in (start..end).zip(balances) {
                let balance = balance?;
                let balance: U256 = serde_json::from_value(balance)?;
                if balance < U256::from(FUNDING / 2) {
                    let to = TxKind::Call(accounts.address(i));
                    raws.push(self.sign(to, U256::from(FUNDING), Bytes::new(), 21_000)?);
                }
            }
        }
        self.send_windows(raws, "funding accounts").await?;

        let mut targets = Targets::default();
        if actions.contains(&Action::Counter) {
            let code = verity_workload::deploy_code(&verity_workload::counter_code(), &[]);
            let raw = self.sign(TxKind::Create, U256::ZERO, code, 200_000)?;
            targets.counter = contract_address(&self.send_one(raw).await?)?;
        }
        if actions.contains(&Action::Erc20) {
            let supply = U256::from(TOKENS) * U256::from(accounts.len());
            let code = verity_workload::token_deploy_code(self.funder.address(), supply);
            let raw = self.sign(TxKind::Create, U256::ZERO, code, 3_000_000)?;
            targets.token = contract_address(&self.send_one(raw).await?)?;
            let mut raws = Vec::new();
            for i in 0..accounts.len() {
                let input =
                    verity_workload::erc20_transfer(accounts.address(i), U256::from(TOKENS));
                raws.push(self.sign(TxKind::Call(targets.token), U256::ZERO, input, 80_000)?);
            }
            self.send_windows(raws, "handing out tokens").await?;
        }
        Ok(targets)
    }
}

fn contract_address(receipt: &Value) -> anyhow::Result<Address> {
    receipt["contractAddress"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("no contract address in {receipt}"))
}

/// What the senders record.
#[derive(Debug, Default)]
struct Tally {
    latencies: Mutex<Vec<Duration>>,
    errors: Mutex<BTreeMap<String, u64>>,
    gas: AtomicU64,
    receipts: AtomicU64,
    sent: AtomicU64,
    /// How long each "txpool is full" refusal took to come back.
    refusals: Mutex<Vec<Duration>>,
    /// Ticks of the open loop at which every account still had a transaction in flight.
    skipped: AtomicU64,
}

/// The text a sequencer at capacity (or a full pool) answers with: the refused transaction was
/// not admitted, so the account may send it again.
const POOL_FULL: &str = "txpool is full";

impl Tally {
    fn record(&self, result: anyhow::Result<Result<Value, String>>, due: Instant) {
        match result {
            Ok(Ok(receipt)) => {
                let latency = due.elapsed();
                let gas = receipt["gasUsed"]
                    .as_str()
                    .and_then(|g| u64::from_str_radix(g.trim_start_matches("0x"), 16).ok())
                    .unwrap_or(0);
                self.gas.fetch_add(gas, Ordering::Relaxed);
                self.receipts.fetch_add(1, Ordering::Relaxed);
                self.latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(latency);
            }
            Ok(Err(message)) => self.error(message),
            Err(error) => self.error(format!("{error:#}")),
        }
    }

    fn error(&self, message: String) {
        // Group "nonce too low: address 0x…, tx: 5 state: 6" and the like by their kind.
        let kind = message.split(':').next().unwrap_or(&message).to_owned();
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }
}

/// The report's latency percentiles of `sorted`, in milliseconds: p50, p90, p99, p99.9, max.
fn latency_percentiles(sorted: &[Duration]) -> BTreeMap<String, f64> {
    [
        ("p50", 50.0),
        ("p90", 90.0),
        ("p99", 99.0),
        ("p99.9", 99.9),
        ("max", 100.0),
    ]
    .into_iter()
    .map(|(name, p)| (name.to_owned(), percentile(sorted, p)))
    .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// The open loop: a transaction is due every 1/`--rate` s. Each account has at most one
/// transaction in flight (a wallet sends its next nonce once the last one is in), taken from
/// the free accounts in turn; a transaction refused with "txpool is full" was not admitted, so
/// its account sends that same transaction again at its next turn. A tick that finds every
/// account busy is counted as skipped, so a run that could not offer its rate says so.
async fn open_loop(
    rpc: &Rpc,
    tally: &Arc<Tally>,
    signed: &Arc<Vec<Signed>>,
    args: &BenchArgs,
    start: Instant,
    in_flight: &Arc<tokio::sync::Semaphore>,
) {
    let accounts = args.accounts.min(signed.len()).max(1);
    // Account a sends transactions a, a + n, a + 2n... (its nonces in order).
    let queues: Vec<Mutex<std::collections::VecDeque<usize>>> = (0..accounts)
        .map(|a| Mutex::new((a..signed.len()).step_by(accounts).collect()))
        .collect();
    let queues = Arc::new(queues);
    let free = Arc::new(Mutex::new(
        (0..accounts).collect::<std::collections::VecDeque<_>>(),
    ));
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let ticks = signed.len();
    let mut tasks = Vec::with_capacity(ticks);
    for tick in 0..ticks {
        let due = start + interval.mul_f64(tick as f64);
        tokio::time::sleep_until(due.into()).await;
        let next = {
            let mut free = free.lock().unwrap_or_else(|e| e.into_inner());
            let mut found = None;
            while let Some(account) = free.pop_front() {
                let front = queues[account]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .front()
                    .copied();
                if let Some(i) = front {
                    found = Some((account, i));
                    break;
                }
            }
            found
        };
        let Some((account, i)) = next else {
            tally.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (rpc, tally, signed, queues, free) = (
            rpc.clone(),
            tally.clone(),
            signed.clone(),
            queues.clone(),
            free.clone(),
        );
        tally.sent.fetch_add(1, Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            let raw = alloy_primitives::hex::encode_prefixed(&signed[i].raw);
            let result = rpc.call("realtime_sendRawTransaction", json!([raw])).await;
            let again = match &result {
                Ok(Ok(_)) => {
                    queues[account]
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .pop_front();
                    true
                }
                Ok(Err(message)) if message.starts_with(POOL_FULL) => {
                    tally
                        .refusals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(due.elapsed());
                    true
                }
                // Whether it got in is unknown, so the account's next nonce is too.
                _ => false,
            };
            tally.record(result, due);
            if again {
                free.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(account);
            }
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// How often `--batch` reads the senders' nonces while it waits for inclusion.
const INCLUSION_POLL: Duration = Duration::from_millis(20);
/// Most calls in one batch of nonce reads.
const NONCE_READS_PER_BATCH: usize = 200;

/// `--batch`: sends `signed` as JSON-RPC batches of `size` `eth_sendRawTransaction` calls,
/// `--batches-in-flight` at a time (in nonce order: batch k holds each sender's k-th round),
/// then reads every sender's nonce until each has passed its last transaction. Latency is per
/// transaction from its batch's send to the first nonce read that shows it included, so it is
/// as coarse as the polling ([`INCLUSION_POLL`] plus a read of every sender).
async fn batched(
    rpc: &Rpc,
    accounts: &Accounts,
    first_nonces: &[u64],
    signed: Vec<Signed>,
    size: usize,
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    let tally = Arc::new(Tally::default());
    // Receipts are not read, so gas is known only for plain transfers.
    let gas_each = if matches!(args.workload, Kind::Transfers) {
        21_000
    } else {
        0
    };
    let senders = accounts.len().min(signed.len()).max(1);
    // Sender s's transactions are s, s + n, s + 2n...: its nonces in order.
    let target: Vec<u64> = (0..senders)
        .map(|s| first_nonces[s] + (s..signed.len()).step_by(senders).count() as u64)
        .collect();
    let raws: Vec<String> = signed
        .iter()
        .map(|t| alloy_primitives::hex::encode_prefixed(&t.raw))
        .collect();
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; raws.len()]));
    let start = Instant::now();
    let mut sending = Some({
        let (rpc, tally, sent_at) = (rpc.clone(), tally.clone(), sent_at.clone());
        let in_flight = args.batches_in_flight;
        let chunks: Vec<(usize, Vec<String>)> = raws
            .chunks(size)
            .enumerate()
            .map(|(k, chunk)| (k * size, chunk.to_vec()))
            .collect();
        tokio::spawn(async move {
            use futures::StreamExt as _;
            futures::stream::iter(chunks)
                .map(|(first, chunk)| {
                    let (rpc, tally, sent_at) = (rpc.clone(), tally.clone(), sent_at.clone());
                    async move {
                        // A batch goes again with what a sequencer at capacity refused ("txpool
                        // is full": not admitted, so sent again as a wallet would), until none is.
                        let mut chunk: Vec<(usize, String)> = (first..).zip(chunk).collect();
                        tally.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        while !chunk.is_empty() {
                            let calls: Vec<(&str, Value)> = chunk
                                .iter()
                                .map(|(_, raw)| ("eth_sendRawTransaction", json!([raw])))
                                .collect();
                            let now = Instant::now();
                            {
                                let mut sent = sent_at.lock().unwrap_or_else(|e| e.into_inner());
                                for (i, _) in &chunk {
                                    sent[*i] = Some(now);
                                }
                            }
                            let mut again = Vec::new();
                            match rpc.batch(&calls).await {
                                Ok(answers) => {
                                    for (entry, answer) in chunk.into_iter().zip(answers) {
                                        match answer {
                                            Ok(_) => {}
                                            Err(message) if message.starts_with(POOL_FULL) => {
                                                tally
                                                    .refusals
                                                    .lock()
                                                    .unwrap_or_else(|e| e.into_inner())
                                                    .push(now.elapsed());
                                                again.push(entry);
                                            }
                                            Err(message) => tally.error(message),
                                        }
                                    }
                                }
                                Err(error) => {
                                    for _ in 0..chunk.len() {
                                        tally.error(format!("{error:#}"));
                                    }
                                }
                            }
                            if !again.is_empty() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            chunk = again;
                        }
                    }
                })
                .buffer_unordered(in_flight)
                .collect::<Vec<()>>()
                .await;
            start.elapsed()
        })
    });
    // Inclusion: every sender's nonce, read in batches, until each reached its target (or
    // nothing moved for a minute: what is missing then was lost or refused).
    let addresses: Vec<String> = (0..senders)
        .map(|s| format!("{:#x}", accounts.address(s)))
        .collect();
    let mut included: Vec<u64> = first_nonces[..senders].to_vec();
    let mut latencies = Vec::with_capacity(raws.len());
    let mut last_progress = Instant::now();
    let mut report_at = Instant::now() + Duration::from_secs(1);
    let mut intake = None;
    let mut end = start;
    while included.iter().zip(&target).any(|(n, t)| n < t) {
        tokio::time::sleep(INCLUSION_POLL).await;
        if let Some(handle) = sending.take_if(|h| h.is_finished()) {
            intake = Some(handle.await.unwrap_or_default().as_secs_f64());
        }
        let mut moved = false;
        for (chunk_index, chunk) in addresses.chunks(NONCE_READS_PER_BATCH).enumerate() {
            let calls: Vec<(&str, Value)> = chunk
                .iter()
                .map(|a| ("eth_getTransactionCount", json!([a, "latest"])))
                .collect();
            let answers = rpc.batch(&calls).await?;
            let seen = Instant::now();
            let sent = sent_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (offset, answer) in answers.into_iter().enumerate() {
                let s = chunk_index * NONCE_READS_PER_BATCH + offset;
                let Ok(Value::String(text)) = answer else {
                    continue;
                };
                let Ok(nonce) = u64::from_str_radix(text.trim_start_matches("0x"), 16) else {
                    continue;
                };
                let nonce = nonce.min(target[s]);
                // Transactions of sender s with nonces included[s]..nonce are in now.
                for n in included[s]..nonce {
                    let i = s + usize::try_from(n - first_nonces[s])? * senders;
                    if let Some(Some(at)) = sent.get(i) {
                        latencies.push(seen.duration_since(*at));
                    }
                    tally.receipts.fetch_add(1, Ordering::Relaxed);
                    tally.gas.fetch_add(gas_each, Ordering::Relaxed);
                    moved = true;
                    end = seen;
                }
                included[s] = included[s].max(nonce);
            }
        }
        if moved {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(60) {
            tally.error("not included within a minute of the last progress".to_owned());
            break;
        }
        if Instant::now() >= report_at {
            report_at += Duration::from_secs(1);
            progress(&format!(
                "[{:>3.0} s] sent {} included {}",
                start.elapsed().as_secs_f64(),
                tally.sent.load(Ordering::Relaxed),
                tally.receipts.load(Ordering::Relaxed),
            ));
        }
    }
    let intake = match (intake, sending) {
        (Some(seconds), _) => seconds,
        (None, Some(handle)) => handle.await.unwrap_or_default().as_secs_f64(),
        (None, None) => 0.0,
    };
    latencies.sort();
    let seconds = end.duration_since(start).as_secs_f64().max(1e-9);
    let receipts = tally.receipts.load(Ordering::Relaxed);
    let report = Report {
        workload: args.workload.to_string(),
        mode: format!(
            "batches of {size} eth_sendRawTransaction, {} in flight",
            args.batches_in_flight
        ),
        sent: tally.sent.load(Ordering::Relaxed),
        receipts,
        seconds,
        intake_seconds: Some(intake),
        tps: receipts as f64 / seconds,
        gas_per_second: tally.gas.load(Ordering::Relaxed) as f64 / seconds,
        latency_ms: latency_percentiles(&latencies),
        errors: tally
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        refused: tally
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len() as u64,
        refusal_ms: BTreeMap::new(),
        skipped: 0,
        token: None,
        counter: None,
        stages: Vec::new(),
        cpu: Vec::new(),
    };
    done(&format!(
        "{}: {}: {} of {} included in {:.2} s: {:.0} tx/s (intake {:.2} s: {:.0} tx/s); inclusion seen after p50 {:.0} ms, p99 {:.0} ms; refused at capacity and sent again {}; errors {:?}",
        report.workload,
        report.mode,
        report.receipts,
        report.sent,
        report.seconds,
        report.tps,
        intake,
        report.sent as f64 / intake.max(1e-9),
        report.latency_ms["p50"],
        report.latency_ms["p99"],
        report.refused,
        report.errors,
    ));
    Ok(report)
}

/// Sends the signed transactions (open or closed loop) and reports.
async fn send(rpc: &Rpc, signed: Vec<Signed>, args: &BenchArgs) -> Report {
    let tally = Arc::new(Tally::default());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let signed = Arc::new(signed);
    let start = Instant::now();
    let reporter = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut seen = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let receipts = tally.receipts.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (receipts - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, receipts);
                // The last second's latencies only: sorting the whole run every second would
                // take the devnet's CPU on a small machine.
                let mut recent = {
                    let all = tally.latencies.lock().unwrap_or_else(|e| e.into_inner());
                    let recent = all[seen.min(all.len())..].to_vec();
                    seen = all.len();
                    recent
                };
                recent.sort();
                let errors: u64 = tally
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .sum();
                progress(&format!(
                    "[{:>3.0} s] sent {} receipts {receipts} ({rate:.0}/s), last second p50 {:.1} ms p99 {:.1} ms, errors {errors}",
                    start.elapsed().as_secs_f64(),
                    tally.sent.load(Ordering::Relaxed),
                    percentile(&recent, 50.0),
                    percentile(&recent, 99.0),
                ));
            }
        })
    };
    let mode = match args.closed_loop {
        Some(clients) => {
            let next = Arc::new(AtomicUsize::new(0));
            let workers: Vec<_> = (0..clients.max(1))
                .map(|_| {
                    let (rpc, tally, signed, next) =
                        (rpc.clone(), tally.clone(), signed.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(tx) = signed.get(i) else { break };
                            let raw = alloy_primitives::hex::encode_prefixed(&tx.raw);
                            let due = Instant::now();
                            tally.sent.fetch_add(1, Ordering::Relaxed);
                            let result =
                                rpc.call("realtime_sendRawTransaction", json!([raw])).await;
                            tally.record(result, due);
                        }
                    })
                })
                .collect();
            for worker in workers {
                let _ = worker.await;
            }
            format!("closed loop, {} clients", clients.max(1))
        }
        None => {
            open_loop(rpc, &tally, &signed, args, start, &in_flight).await;
            format!("open loop, {} tx/s for {} s", args.rate, args.duration)
        }
    };
    reporter.abort();
    let seconds = start.elapsed().as_secs_f64();
    let mut latencies = tally
        .latencies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    latencies.sort();
    let mut refusals = tally
        .refusals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    refusals.sort();
    let receipts = tally.receipts.load(Ordering::Relaxed);
    let report = Report {
        workload: args.workload.to_string(),
        mode,
        sent: tally.sent.load(Ordering::Relaxed),
        receipts,
        seconds,
        tps: receipts as f64 / seconds,
        gas_per_second: tally.gas.load(Ordering::Relaxed) as f64 / seconds,
        latency_ms: latency_percentiles(&latencies),
        errors: tally
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        intake_seconds: None,
        refused: refusals.len() as u64,
        refusal_ms: [("p50", 50.0), ("p99", 99.0), ("max", 100.0)]
            .into_iter()
            .map(|(name, p)| (name.to_owned(), percentile(&refusals, p)))
            .collect(),
        skipped: tally.skipped.load(Ordering::Relaxed),
        token: None,
        counter: None,
        stages: Vec::new(),
        cpu: Vec::new(),
    };
    done(&format!(
        "{}: {}: {} of {} receipted in {:.1} s: {:.0} tx/s, {:.1} Mgas/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms; errors {:?}; refused {} (p99 {:.1} ms); skipped {}",
        report.workload,
        report.mode,
        report.receipts,
        report.sent,
        report.seconds,
        report.tps,
        report.gas_per_second / 1e6,
        report.latency_ms["p50"],
        report.latency_ms["p90"],
        report.latency_ms["p99"],
        report.latency_ms["max"],
        report.errors,
        report.refused,
        report.refusal_ms["p99"],
        report.skipped
    ));
    report
}
