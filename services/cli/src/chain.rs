//! `verity chain init`: the files of a new chain, for a cluster (or any set of machines): the
//! same layout `verity devnet` runs from, plus the attestation addresses as files, and the
//! `kubectl` commands that turn them into the chart's ConfigMap and Secret.

use std::{io::Write as _, path::PathBuf};

use alloy_primitives::Address;
use anyhow::Context as _;
use verity_devnet::{ChainFiles, DevnetOptions};
use verity_primitives::SigningKey;
use verity_server::tls::Role;

/// `verity chain ...`
#[derive(clap::Args, Debug)]
pub struct ChainArgs {
    #[command(subcommand)]
    command: ChainCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ChainCommand {
    /// Write a new chain's genesis and keys into a directory (an existing chain there is kept):
    /// genesis naming the epoch-0 sequencer and a 2-of-3 governance (and funding the public
    /// test mnemonic's ten accounts, as the devnet does), the sequencer's, the standby's, one
    /// prover key per chart prover pool (`prover-<pool>.key`) and the verifier's keys, the
    /// governance keys, the standby's standing appointments, and the attestation addresses as
    /// files.
    Init(InitArgs),
}

#[derive(clap::Args, Debug)]
struct InitArgs {
    /// Directory to write into.
    #[arg(long, default_value = "chain")]
    out: PathBuf,
    /// Chain id.
    #[arg(long, default_value_t = 31337)]
    chain_id: u64,
    /// Block gas limit (default 1 Ggas: it does not cap throughput; the fee market's target is
    /// half of it).
    #[arg(long, default_value_t = verity_primitives::chain_spec::REALTIME_GAS_LIMIT)]
    gas_limit: u64,
    /// Also write KZG parameters made here (INSECURE: their secret passed through this
    /// process; for a test cluster only; a real chain uses a public ceremony's).
    #[arg(long)]
    insecure_kzg: bool,
    /// Tree steps per halo2 proof the KZG parameters must fit (the chart's
    /// `proving.stepsPerProof`).
    #[arg(long, default_value_t = 8)]
    steps_per_proof: usize,
    /// Larger segment shapes the KZG parameters must also fit (the chart's
    /// `proving.largerSegments`, comma-separated).
    #[arg(long, value_delimiter = ',')]
    larger_segments: Vec<usize>,
    /// The chart's prover pools (`prover.pools`, comma-separated): one key each,
    /// `prover-<pool>.key`, all in `prover.addresses`.
    #[arg(long, value_delimiter = ',', default_value = "a,b")]
    prover_pools: Vec<String>,
    /// The namespace the chart is installed in: the bundled NATS server's certificate names
    /// its Services there.
    #[arg(long, default_value = "verity")]
    namespace: String,
    /// The chart's full name (the release name, or `<release>-verity` when that does not
    /// contain "verity"; `fullnameOverride`): the NATS Services are `<fullname>-nats`.
    #[arg(long, default_value = "verity")]
    fullname: String,
}

/// Runs `verity chain ...`.
pub async fn run(args: ChainArgs) -> anyhow::Result<()> {
    match args.command {
        ChainCommand::Init(args) => init(args).await,
    }
}

async fn init(args: InitArgs) -> anyhow::Result<()> {
    if args.chain_id == 0 {
        anyhow::bail!("--chain-id must not be 0");
    }
    if let Some(bad) = args.prover_pools.iter().find(|pool| {
        pool.is_empty()
            || pool.len() > 8
            || !pool
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }) {
        anyhow::bail!(
            "--prover-pools: {bad:?} is not a pool name (1 to 8 lower-case letters and digits, as the chart's prover.pools)"
        );
    }
    if args.prover_pools.is_empty() {
        anyhow::bail!("--prover-pools: at least one pool");
    }
    let distinct: std::collections::BTreeSet<&String> = args.prover_pools.iter().collect();
    if distinct.len() != args.prover_pools.len() {
        anyhow::bail!(
            "--prover-pools: a pool is named twice (one key each, as the chart's prover.pools)"
        );
    }
    let mut options = DevnetOptions::new(&args.out);
    options.chain_id = args.chain_id;
    options.gas_limit = args.gas_limit;
    options.proving = args.insecure_kzg;
    options.steps_per_proof = args.steps_per_proof;
    options.larger_segments = args.larger_segments.clone();
    let chain = verity_devnet::prepare(&options)
        .await
        .with_context(|| format!("cannot write the chain into --out {}", args.out.display()))?;
    let pools = pool_keys(&args.out, &args.prover_pools)?;
    write_addresses(&args.out, &chain, &pools)?;
    let components = tls_components(&args.prover_pools);
    let identities: Vec<(&str, Role)> = components
        .iter()
        .map(|(name, role)| (name.as_str(), *role))
        .chain([("admin", Role::Admin)])
        .collect();
    let tls_dir = args.out.join("tls");
    verity_server::tls::issue(&tls_dir, &identities)
        .with_context(|| format!("cannot write certificates into {}", tls_dir.display()))?;
    for (flag, value) in [
        ("--namespace", &args.namespace),
        ("--fullname", &args.fullname),
    ] {
        let label = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if value.is_empty() || value.len() > 63 || !value.bytes().all(label) {
            anyhow::bail!(
                "{flag}: {value:?} is not a Kubernetes name (lower-case letters, digits, '-')"
            );
        }
    }
    let nats_hosts = nats_hosts(&args.fullname, &args.namespace);
    verity_server::tls::issue_server(&tls_dir, "nats", &nats_hosts).with_context(|| {
        format!(
            "cannot write the NATS certificate into {}",
            tls_dir.display()
        )
    })?;
    let nats_dir = args.out.join("nats");
    write_nats_auth(
        &nats_dir,
        &args.fullname,
        &chain,
        &args.prover_pools,
        &pools,
    )?;
    let nats_secrets: String = components
        .iter()
        .map(|(name, _)| {
            let nats = nats_dir.display();
            format!(
                "\n  kubectl create secret generic verity-nats-{name} --from-file=nkey={nats}/{name}.nk"
            )
        })
        .collect();
    let tls_secrets: String = components
        .iter()
        .map(|(name, _)| {
            let tls = tls_dir.display();
            format!(
                "\n  kubectl create secret generic verity-tls-{name} --from-file=tls.crt={tls}/{name}.pem \\\n    \
                 --from-file=tls.key={tls}/{name}.key --from-file=ca.crt={tls}/ca.pem"
            )
        })
        .collect();
    let dir = args.out.display();
    let pool_keys: String = args
        .prover_pools
        .iter()
        .map(|pool| format!(" --from-file={dir}/prover-{pool}.key"))
        .collect();
    let pool_list: Vec<String> = args
        .prover_pools
        .iter()
        .zip(&pools)
        .map(|(pool, address)| format!("{pool} {address}"))
        .collect();
    let pools_value = format!("[{}]", args.prover_pools.join(", "));
    let count = args.prover_pools.len();
    let nats_names = nats_hosts.join(", ");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "chain {} in {dir}: sequencer {}, standby {}, prover pools {}, verifier {}",
        chain.chain_id,
        chain.sequencer,
        chain.standby,
        pool_list.join(", "),
        chain.verifier
    )?;
    writeln!(
        out,
        "\nFor the Helm chart (docs/deploy.md), in the release's namespace:\n\n  \
         kubectl create configmap verity-chain --from-file={dir}/genesis.json \\\n    \
         --from-file={dir}/appointments.json --from-file=sequencer-address={dir}/sequencer.address \\\n    \
         --from-file=prover-addresses={dir}/prover.addresses --from-file=verifier-addresses={dir}/verifier.address\n  \
         kubectl create secret generic verity-keys --from-file={dir}/sequencer.key \\\n    \
         --from-file={dir}/standby.key{pool_keys} --from-file={dir}/verifier.key\n\n\
         The chart's prover.pools must be {pools_value} (proving.proofQuorum at most {count}).\n\n\
         NATS credentials (the chart's nats.auth), the server's authorization and one nkey per \
         component:\n  \
         kubectl create configmap verity-nats-auth --from-file={dir}/nats/auth.conf{nats_secrets}\n\
         The bus-init Job's (it makes the streams and job consumers before the services use them):\n  \
         kubectl create secret generic verity-nats-bus-init --from-file=nkey={dir}/nats/bus-init.nk\n  \
         kubectl create secret generic verity-tls-bus-init --from-file=ca.crt={dir}/tls/ca.pem\n\
         {dir}/nats/admin.nk is an operator's (`nats --nkey`): it may delete and purge streams.\n\n\
         gRPC certificates (the chart's tls.secretPrefix verity-tls), one Secret per component:{tls_secrets}\n\n\
         The NATS server's (nats.tls; it names {nats_names}):\n  \
         kubectl create secret generic verity-tls-nats --from-file=tls.crt={dir}/tls/nats.pem \\\n    \
         --from-file=tls.key={dir}/tls/nats.key --from-file=ca.crt={dir}/tls/ca.pem\n\n\
         Or let cert-manager issue them (tls.certManager.enabled): a CA Issuer from the chain's CA,\n  \
         kubectl create secret tls verity-ca --cert={dir}/tls/ca.pem --key={dir}/tls/ca.key\n\
         {dir}/tls/admin.pem and admin.key are an operator's (grpcurl, verity governance).\n\n\
         Keep {dir}/governance/ and {dir}/tls/ca.key off the cluster: those keys appoint sequencers \
         and certify roles.\n\n\
         genesis.json funds the ten accounts of the public test mnemonic (test test ... junk), \
         as the devnet does: for a chain with value, replace its `alloc` before any node \
         starts (the genesis hash is taken from the file)."
    )?;
    if args.insecure_kzg {
        writeln!(
            out,
            "\n{dir}/kzg.params is INSECURE (made here): copy it into the volume the chart's \
             proving.kzgParams.volume names, for a test cluster only."
        )?;
    } else {
        writeln!(
            out,
            "\nKZG parameters: put a public ceremony's file (halo2 raw format) into the volume \
             the chart's proving.kzgParams.volume names (--insecure-kzg makes a local one for a \
             test cluster)."
        )?;
    }
    Ok(())
}

/// The names the chart's bundled NATS server is dialled at (its `verity.natsHosts`): the client
/// Service, and each pod under the headless Service for the routes.
fn nats_hosts(fullname: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{fullname}-nats"),
        format!("{fullname}-nats.{namespace}.svc"),
        format!("{fullname}-nats.{namespace}.svc.cluster.local"),
        format!("*.{fullname}-nats-headless.{namespace}.svc"),
        format!("*.{fullname}-nats-headless.{namespace}.svc.cluster.local"),
    ]
}

/// The chart's components that serve or call gRPC, each with the role its certificate names
/// (the names of the chart's `verity-tls-<component>` Secrets).
fn tls_components(pools: &[String]) -> Vec<(String, Role)> {
    let mut components: Vec<(String, Role)> = [
        ("sequencer", Role::Sequencer),
        ("ingress", Role::Ingress),
        ("gateway", Role::Gateway),
        ("replica-full", Role::Replica),
        ("replica-witness", Role::Witness),
        ("replica-verifier", Role::Verifier),
        ("autoscaler", Role::Autoscaler),
    ]
    .into_iter()
    .map(|(name, role)| (name.to_string(), role))
    .collect();
    components.extend(
        pools
            .iter()
            .map(|pool| (format!("prover-{pool}"), Role::Prover)),
    );
    components
}

/// One NATS nkey per chart component (`<component>.nk`, made when missing) and `auth.conf`, the
/// server's `authorization` block admitting each to what its role may publish (as on the
/// devnet, `verity_devnet::nats_permissions`) and `admin.nk` to everything.
fn write_nats_auth(
    dir: &std::path::Path,
    fullname: &str,
    chain: &ChainFiles,
    pools: &[String],
    pool_addresses: &[Address],
) -> anyhow::Result<()> {
    use verity_devnet::Service;
    let mut users = Vec::new();
    let key = |name: &str| {
        let path = dir.join(format!("{name}.nk"));
        verity_bus::auth::load_or_create_nkey(&path)
            .map(|key| key.public)
            .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", path.display()))
    };
    // The autoscaler only reads (consumer backlogs): a full replica's grants, which publish
    // nothing of their own.
    for (name, service) in [
        ("sequencer", Service::Sequencer),
        ("ingress", Service::Ingress),
        ("gateway", Service::Gateway),
        ("replica-full", Service::Replica),
        ("replica-witness", Service::Witness),
        ("replica-verifier", Service::Verifier),
        ("autoscaler", Service::Replica),
    ] {
        let nkey = key(name)?;
        users.push(verity_bus::server::User {
            permissions: Some(verity_devnet::nats_permissions(
                service,
                &nkey,
                Address::ZERO,
                "",
                chain.verifier,
            )),
            nkey,
        });
    }
    for (pool, address) in pools.iter().zip(pool_addresses) {
        let nkey = key(&format!("prover-{pool}"))?;
        users.push(verity_bus::server::User {
            permissions: Some(verity_devnet::nats_permissions(
                Service::Prover,
                &nkey,
                *address,
                &job_consumer(fullname, pool),
                chain.verifier,
            )),
            nkey,
        });
    }
    // The chart's bus-init Job: makes streams and job consumers, nothing else.
    let nkey = key("bus-init")?;
    users.push(verity_bus::server::User {
        permissions: Some(verity_devnet::bus_init_permissions(&nkey)),
        nkey,
    });
    users.push(verity_bus::server::User {
        nkey: key("admin")?,
        permissions: None,
    });
    let path = dir.join("auth.conf");
    std::fs::write(&path, verity_bus::server::authorization(&users))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The job consumer of prover pool `pool` in the chart release `fullname` (the chart's prover
/// `--consumer`, which its bus-init Job makes).
fn job_consumer(fullname: &str, pool: &str) -> String {
    format!("{fullname}-provers-{pool}")
}

/// The prover pools' keys (`prover-<pool>.key`, made when missing) and their addresses.
fn pool_keys(dir: &std::path::Path, pools: &[String]) -> anyhow::Result<Vec<Address>> {
    pools
        .iter()
        .map(|pool| {
            let path = dir.join(format!("prover-{pool}.key"));
            SigningKey::load_or_create(&path)
                .map(|(key, _)| key.address())
                .map_err(|e| anyhow::anyhow!("cannot make {}: {e}", path.display()))
        })
        .collect()
}

/// The attestation addresses as the chart's ConfigMap keys hold them: one file each, and the
/// prover pools' comma-separated in `prover.addresses`.
fn write_addresses(
    dir: &std::path::Path,
    chain: &ChainFiles,
    pools: &[Address],
) -> anyhow::Result<()> {
    let provers: Vec<String> = pools.iter().map(ToString::to_string).collect();
    for (name, addresses) in [
        ("sequencer.address", chain.sequencer.to_string()),
        ("prover.addresses", provers.join(",")),
        ("verifier.address", chain.verifier.to_string()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, addresses)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
