//! `verity`: the operator CLI. Built: `devnet`, `bench` (load generator), `governance`
//! (sequencer appointments), `chain init` (a new chain's files, for a cluster), `bus init` (the
//! bus's streams and consumers, with the admin credential). Not built yet:
//! `keys`, `status`.

mod bench;
mod bus;
mod chain;
mod governance;
mod stages;
mod status;
mod verify_proof;

use std::{io::Write as _, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use verity_devnet::{Devnet, DevnetOptions, Service};

#[derive(Parser, Debug)]
#[command(name = "verity", version, about = "Verity operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole devnet on this machine: nats-server and every service. Ctrl-C stops it; run
    /// again on the same --data-dir to resume the same chain.
    Devnet(DevnetArgs),
    /// Load a running chain through its JSON-RPC gateway with a pre-signed workload (transfers,
    /// erc20, counter, mixed), open loop at a rate or closed loop, and report transactions/s,
    /// gas/s and submit-to-receipt latency.
    Bench(bench::BenchArgs),
    /// Appoint a sequencer with m of the n governance keys genesis names: keygen, draft, sign,
    /// publish.
    Governance(governance::GovernanceArgs),
    /// A new chain's genesis and keys, for a cluster: `verity chain init --out chain`.
    Chain(chain::ChainArgs),
    /// The bus's streams, buckets and job consumers, made with the admin credential before the
    /// services start: `verity bus init --nats-nkey-file chain/nats/admin.nk ...`.
    Bus(bus::BusArgs),
    /// The chain at a glance: heads and lags, the sequencer and standing appointments, the
    /// prover pools and their backlogs, the verifiers' newest attestations, the streams and any
    /// alarm. Refreshes in a terminal; `--json` prints one object.
    Status(status::StatusArgs),
    /// Check an `eth_getProof` answer without trusting the node that gave it: its proofs against
    /// its state root, and that root against one you trust (`--root`) or the finality
    /// attestations of verifiers you name (`--verifier`).
    VerifyProof(verify_proof::VerifyProofArgs),
}

#[derive(clap::Args, Debug)]
struct DevnetArgs {
    /// Where the chain, the logs and nats-server's store live.
    #[arg(long, env = "VERITY_DEVNET_DIR", default_value = ".devnet")]
    data_dir: PathBuf,
    /// Chain id of a new chain (an existing chain keeps its own).
    #[arg(long, env = "VERITY_CHAIN_ID", default_value_t = 31337)]
    chain_id: u64,
    /// Block gas limit of a new chain (an existing chain keeps its own). The default, 1 Ggas,
    /// holds ~47,000 transfers per 1 s block: the limit does not cap what the machine can do
    /// (Ethereum's 30M holds ~1,400).
    #[arg(long, default_value_t = verity_primitives::chain_spec::REALTIME_GAS_LIMIT)]
    gas_limit: u64,
    /// JSON-RPC listen address.
    #[arg(long, env = "VERITY_RPC_ADDR", default_value = "127.0.0.1:8545")]
    rpc_addr: SocketAddr,
    /// Mini-block interval in milliseconds.
    #[arg(long, default_value_t = 10)]
    mini_block_interval_ms: u64,
    /// Block interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    block_interval_ms: u64,
    /// OTLP/gRPC endpoint all services export traces to.
    #[arg(long, env = "VERITY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log filter of the services.
    #[arg(long, env = "VERITY_LOG", default_value = "info")]
    log_filter: String,
    /// Also run a hot-standby sequencer, which takes over within a second when the active one
    /// stops (the devnet's governance pre-signs the appointments it needs).
    #[arg(long)]
    standby: bool,
    /// Do not run the proving path (witness replica and prover): saves both cores.
    #[arg(long)]
    no_proving: bool,
    /// Tree steps per halo2 proof.
    #[arg(long, default_value_t = 8)]
    steps_per_proof: usize,
}

/// mimalloc, as in every Verity binary (ADR 0008); the load generator should not be the one
/// process slowed by its allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = verity_telemetry::TelemetryArgs {
        log_format: verity_telemetry::LogFormat::Text,
        // `status` draws a screen: only warnings beside it.
        log_filter: if matches!(cli.command, Command::Status(_)) {
            "warn"
        } else {
            "info"
        }
        .into(),
        otlp_endpoint: None,
        metrics_addr: None,
    };
    let _telemetry = verity_telemetry::init("verity", &telemetry).await?;
    match cli.command {
        Command::Devnet(args) => devnet(args).await,
        Command::Bench(args) => {
            let json = args.json;
            let report = bench::run(args).await?;
            if json {
                let mut stdout = std::io::stdout().lock();
                serde_json::to_writer(&mut stdout, &report)?;
                stdout.write_all(b"\n")?;
            }
            Ok(())
        }
        Command::Governance(args) => governance::run(args).await,
        Command::Chain(args) => chain::run(args).await,
        Command::Bus(args) => bus::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::VerifyProof(args) => verify_proof::run(args),
    }
}

async fn devnet(args: DevnetArgs) -> anyhow::Result<()> {
    if args.chain_id == 0 {
        anyhow::bail!("invalid --chain-id 0: must be a positive integer");
    }
    let mut options = DevnetOptions::new(&args.data_dir);
    options.chain_id = args.chain_id;
    options.gas_limit = args.gas_limit;
    options.rpc_addr = args.rpc_addr;
    options.mini_block_interval_ms = args.mini_block_interval_ms;
    options.block_interval_ms = args.block_interval_ms;
    options.otlp_endpoint = args.otlp_endpoint;
    options.log_filter = args.log_filter;
    options.proving = !args.no_proving;
    options.standby = args.standby;
    options.steps_per_proof = args.steps_per_proof;
    let mut net = Devnet::start(options).await?;

    let data_dir = std::fs::canonicalize(net.data_dir()).unwrap_or_else(|_| net.data_dir().into());
    let mut out = String::new();
    out.push_str("\nVerity devnet is running.\n\n");
    out.push_str(&format!("  RPC URL      {}\n", net.rpc_url()));
    out.push_str(&format!("  Chain id     {}\n", net.chain_id()));
    out.push_str(&format!("  Sequencer    {}\n", net.sequencer_address()));
    out.push_str(&format!(
        "  NATS         {} (nkey {}, CA {})\n",
        net.nats_url().unwrap_or_default(),
        verity_devnet::nats_nkey_file(&data_dir, verity_devnet::NATS_ADMIN).display(),
        data_dir
            .join(verity_devnet::TLS_DIR)
            .join(verity_server::tls::CA_CERT)
            .display()
    ));
    out.push_str(&format!("  Data         {}\n", data_dir.display()));
    out.push_str(&format!(
        "  Logs         {}\n\n",
        data_dir.join("logs").display()
    ));
    out.push_str("Accounts (10000 ETH each; mnemonic \"test test test test test test test test test test test junk\"):\n");
    for (i, account) in net.accounts().iter().enumerate() {
        out.push_str(&format!(
            "  ({i}) {}  {}\n",
            account.address, account.private_key
        ));
    }
    out.push_str("\nCtrl-C stops every service; run again to resume the same chain.\n");
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    drop(stdout);

    let shutdown = verity_telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    let crashed = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                match net.exited() {
                    // With a standby, one sequencer stopping is what failover is for: the other
                    // takes over; the devnet goes on while one of them runs.
                    Some(service @ (Service::Sequencer | Service::Standby))
                        if net.is_running(Service::Sequencer) || net.is_running(Service::Standby) =>
                    {
                        tracing::warn!(%service, log = %net.log_file(service).display(), "a sequencer exited; the other one carries on");
                        // Reap it, so the next exit reported is another one.
                        let _ = net.signal(service, nix::sys::signal::Signal::SIGKILL).await;
                    }
                    Some(service) => break Some(service),
                    None => {}
                }
            }
        }
    };
    if let Some(service) = crashed {
        tracing::error!(%service, log = %net.log_file(service).display(), "a service exited; stopping the devnet");
    }
    net.stop().await?;
    tracing::info!("devnet stopped");
    match crashed {
        Some(service) => anyhow::bail!("{service} exited unexpectedly"),
        None => Ok(()),
    }
}
