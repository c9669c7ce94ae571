//! `verity bus init`: makes the bus's streams, key-value buckets and the provers' job consumers
//! with the admin credential (ADR 0014). Services' credentials may open and use them but not
//! make or change them, so this runs once before the services start (the devnet does it at
//! each start; the chart runs it as a Job), and again after adding a prover pool or upgrading.

use std::time::Duration;

use alloy_primitives::Address;

#[derive(clap::Args, Debug)]
pub struct BusArgs {
    #[command(subcommand)]
    command: BusCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BusCommand {
    /// Make (or bring to this release's configuration) every stream, bucket and job consumer.
    Init(InitArgs),
}

#[derive(clap::Args, Debug)]
struct InitArgs {
    /// How to reach NATS: the admin credential (`admin.nk` from `verity chain init`).
    #[command(flatten)]
    nats: verity_bus::NatsArgs,
    /// The registered provers' addresses (comma-separated): one job consumer each, under the
    /// name a prover uses by default (`provers-<address>`).
    #[arg(long, env = "VERITY_PROVER_ADDRESSES", value_delimiter = ',')]
    prover_addresses: Vec<Address>,
    /// Job consumers to make by name (comma-separated), for provers given `--consumer` (the
    /// chart's pools: `<release>-provers-<pool>`).
    #[arg(long, value_delimiter = ',')]
    job_consumers: Vec<String>,
    /// Seconds a job may stay unacknowledged before it is delivered again (the provers'
    /// `--ack-wait-secs`).
    #[arg(long, env = "VERITY_ACK_WAIT_SECS", default_value_t = 30)]
    ack_wait_secs: u64,
    /// Bytes the jobs stream may hold (its oldest jobs are dropped at the limit).
    #[arg(long, default_value_t = verity_bus::bootstrap::Limits::default().jobs_bytes)]
    jobs_max_bytes: i64,
    /// Bytes the proofs stream may hold (its oldest results are dropped at the limit).
    #[arg(long, default_value_t = verity_bus::bootstrap::Limits::default().proofs_bytes)]
    proofs_max_bytes: i64,
    /// Bytes the dead-letter stream may hold (its oldest are dropped at the limit).
    #[arg(long, default_value_t = verity_bus::bootstrap::Limits::default().dead_bytes)]
    dead_max_bytes: i64,
    /// Copies JetStream keeps of the chain stream, the finality stream and the lease and
    /// appointments buckets: 3 on a 3-server cluster (ADR 0016), 1 on a single server.
    #[arg(long, env = "VERITY_BUS_REPLICAS", default_value_t = 1)]
    replicas: usize,
    /// Copies of the proving streams (jobs, proofs, dead letters); default: --replicas.
    #[arg(long, env = "VERITY_BUS_PROVING_REPLICAS")]
    proving_replicas: Option<usize>,
    /// How long to keep trying to reach NATS (a Job started beside the server).
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
}

pub async fn run(args: BusArgs) -> anyhow::Result<()> {
    let BusCommand::Init(args) = args.command;
    let layout = verity_bus::bootstrap::Layout {
        job_consumers: args
            .prover_addresses
            .iter()
            .map(|a| verity_bus::proving::consumer_name(a.as_slice()))
            .chain(args.job_consumers.iter().cloned())
            .collect(),
        job_ack_wait: Duration::from_secs(args.ack_wait_secs.max(1)),
        limits: verity_bus::bootstrap::Limits {
            jobs_bytes: args.jobs_max_bytes,
            proofs_bytes: args.proofs_max_bytes,
            dead_bytes: args.dead_max_bytes,
        },
        replicas: args.replicas,
        proving_replicas: args.proving_replicas.unwrap_or(args.replicas),
    };
    let (_client, js) = tokio::time::timeout(
        Duration::from_secs(args.wait_secs),
        args.nats.connect("verity-bus-init"),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "NATS at {} did not answer within {} s (--wait-secs)",
            args.nats.url,
            args.wait_secs
        )
    })??;
    verity_bus::bootstrap::wait_ready(&js, Duration::from_secs(args.wait_secs)).await?;
    let made = verity_bus::bootstrap::init(&js, &layout).await?;
    let mut out = std::io::stdout().lock();
    for line in made {
        std::io::Write::write_all(&mut out, format!("ok: {line}\n").as_bytes())?;
    }
    Ok(())
}
