//! A whole Verity network on one machine, for `verity devnet` and the end-to-end tests.
//!
//! It starts a private `nats-server` (JetStream, its own store, a port it picks itself) and every
//! service binary as a child process bound to port 0 (except the JSON-RPC port, which is chosen by
//! the caller); each service reports its real addresses in a ready file, which is how the next
//! service learns where to connect. Everything lives under one data directory, so starting again
//! on the same directory resumes the same chain. Children can be killed (any signal) and started
//! again individually, which is what the crash tests do.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use alloy_primitives::Address;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};
use verity_bus::server::NatsCluster;
use verity_circuits::{KeyRing, Params, Shape};
use verity_primitives::{
    ChainSpec, SigningKey,
    chain_spec::dev_signers,
    governance::{Appointment, Governance, SignedAppointment},
};

use verity_server::tls::{Role, TlsArgs};

/// The services of a devnet, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `verity-sequencer`: the sequencer genesis names (epoch 0).
    Sequencer,
    /// A second `verity-sequencer` with its own key: a hot standby that takes over when the
    /// active one stops (only with [`DevnetOptions::standby`]).
    Standby,
    /// `verity-replica` (role full).
    Replica,
    /// `verity-replica` (role witness): the state tree and the proving jobs.
    Witness,
    /// `verity-replica` (role verifier): checks proofs, attests blocks safe.
    Verifier,
    /// `verity-replica` (role light-verifier): the same checks and attestations without
    /// applying diffs, under a key of its own that no replica counts (only with
    /// [`DevnetOptions::light_verifier`]).
    LightVerifier,
    /// `verity-ingress`.
    Ingress,
    /// `verity-gateway`.
    Gateway,
    /// `verity-prover`: proves chunk jobs.
    Prover,
    /// A second `verity-prover` with its own registered key (only with
    /// [`DevnetOptions::second_prover`]).
    SecondProver,
}

impl Service {
    /// Every service, in start order.
    pub const ALL: [Service; 10] = [
        Service::Sequencer,
        Service::Standby,
        Service::Replica,
        Service::Witness,
        Service::Verifier,
        Service::LightVerifier,
        Service::Ingress,
        Service::Gateway,
        Service::Prover,
        Service::SecondProver,
    ];

    /// The short name.
    pub fn name(self) -> &'static str {
        match self {
            Service::Sequencer => "sequencer",
            Service::Standby => "standby",
            Service::Replica => "replica",
            Service::Witness => "witness",
            Service::Verifier => "verifier",
            Service::LightVerifier => "light-verifier",
            Service::Ingress => "ingress",
            Service::Gateway => "gateway",
            Service::Prover => "prover",
            Service::SecondProver => "prover-2",
        }
    }

    /// The role its certificate names.
    pub fn role(self) -> Role {
        match self {
            Service::Sequencer | Service::Standby => Role::Sequencer,
            Service::Replica => Role::Replica,
            Service::Witness => Role::Witness,
            Service::Verifier | Service::LightVerifier => Role::Verifier,
            Service::Ingress => Role::Ingress,
            Service::Gateway => Role::Gateway,
            Service::Prover | Service::SecondProver => Role::Prover,
        }
    }

    /// The binary's file name.
    pub fn binary(self) -> String {
        match self {
            Service::Witness | Service::Verifier | Service::LightVerifier => {
                "verity-replica".into()
            }
            Service::Standby => "verity-sequencer".into(),
            Service::SecondProver => "verity-prover".into(),
            _ => format!("verity-{}", self.name()),
        }
    }

    /// Whether the service belongs to the proving path (left out when proving is off).
    pub fn proves(self) -> bool {
        matches!(
            self,
            Service::Witness
                | Service::Verifier
                | Service::LightVerifier
                | Service::Prover
                | Service::SecondProver
        )
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// Services did not shut down gracefully on SIGTERM.
    #[error("unclean shutdown: {0}")]
    UncleanStop(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// nats-server failed.
    #[error(transparent)]
    Nats(#[from] verity_bus::server::ServerError),
    /// A service binary is missing.
    #[error("{0} not found; build the workspace first (`cargo build --bins`)")]
    MissingBinary(PathBuf),
    /// A service exited or did not become ready.
    #[error("{service} did not become ready within {timeout:?}: {reason}; its log is {log}")]
    NotReady {
        /// The service.
        service: Service,
        /// How long we waited.
        timeout: Duration,
        /// What happened.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// The genesis or key in the data directory is unusable.
    #[error("{0}")]
    Setup(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevnetError {
    let context = context.into();
    move |source| DevnetError::Io { context, source }
}

/// How to run the devnet.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Where everything lives.
    pub data_dir: PathBuf,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// Chain id for a new chain (an existing genesis file wins).
    pub chain_id: u64,
    /// Block gas limit of a new chain (an existing genesis file wins).
    pub gas_limit: u64,
    /// JSON-RPC address of the gateway (port 0 picks one).
    pub rpc_addr: SocketAddr,
    /// Mini-block interval.
    pub mini_block_interval_ms: u64,
    /// Block interval.
    pub block_interval_ms: u64,
    /// OTLP endpoint every service exports traces to.
    pub otlp_endpoint: Option<String>,
    /// Log filter for every service.
    pub log_filter: String,
    /// How long a service may take to become ready.
    pub ready_timeout: Duration,
    /// Whether to run the proving path (witness replica and prover).
    pub proving: bool,
    /// Whether to run a hot-standby sequencer.
    pub standby: bool,
    /// Whether to run a second prover (with its own key, registered with the verifier beside
    /// the first).
    pub second_prover: bool,
    /// Whether to run a light verifier beside the verifier replica ([`Service::LightVerifier`];
    /// with `proving`).
    pub light_verifier: bool,
    /// Accounts added to a new genesis beside the funded dev accounts (1 wei each), for
    /// benchmarks of state size.
    pub extra_genesis_accounts: usize,
    /// Whether the sequencers get the devnet's pre-signed standing appointments (without them,
    /// only appointments published with `verity governance` let a node take over).
    pub standing_appointments: bool,
    /// Tree steps per halo2 proof.
    pub steps_per_proof: usize,
    /// Levels per path in the main proof shape (provers' and the verifier's `--max-depth`); a
    /// step with a longer path is proven alone in the deep shape (ADR 0015).
    pub max_depth: usize,
    /// Larger segment shapes, in steps per proof (provers' and the verifier's
    /// `--larger-segments`); empty: the main shape only.
    pub larger_segments: Vec<usize>,
    /// Seconds before an unacknowledged proving job goes to another worker of the same key.
    pub prover_ack_wait_secs: u64,
    /// Agreeing proofs from distinct provers a chunk needs before the verifier accepts it (R;
    /// at most the provers run).
    pub proof_quorum: usize,
    /// Seconds after which a prover takes over a chunk its first-ranked provers left
    /// unanswered.
    pub takeover_secs: u64,
    /// Binaries to run instead of a service's own (tests: a fault-injecting sequencer).
    pub binaries: BTreeMap<Service, String>,
    /// Extra environment of every service.
    pub env: Vec<(String, String)>,
    /// Authenticate and authorize every NATS client (nkeys, per-role permissions) and every
    /// gRPC call (mutual TLS). Off only to measure what that costs (`make bench`): then NATS
    /// admits anyone and gRPC is plaintext.
    pub secure: bool,
    /// NATS servers: 1, or 3 for a JetStream cluster on loopback keeping 3 copies of every
    /// stream (tests of losing a node).
    pub nats_nodes: usize,
}

impl DevnetOptions {
    /// Defaults for `data_dir`, with binaries found next to the running executable.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            bin_dir: default_bin_dir(),
            chain_id: 31337,
            gas_limit: verity_primitives::chain_spec::DEFAULT_GAS_LIMIT,
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], 8545)),
            mini_block_interval_ms: 10,
            block_interval_ms: 1000,
            otlp_endpoint: None,
            log_filter: "info".into(),
            ready_timeout: Duration::from_secs(60),
            proving: true,
            standby: false,
            second_prover: false,
            light_verifier: false,
            standing_appointments: true,
            extra_genesis_accounts: 0,
            steps_per_proof: 8,
            max_depth: Shape::DEFAULT.depth,
            larger_segments: Vec::new(),
            prover_ack_wait_secs: 30,
            proof_quorum: 1,
            takeover_secs: 60,
            binaries: BTreeMap::new(),
            env: Vec::new(),
            secure: true,
            nats_nodes: 1,
        }
    }
}

fn binary_of(options: &DevnetOptions, service: Service) -> String {
    options
        .binaries
        .get(&service)
        .cloned()
        .unwrap_or_else(|| service.binary())
}

/// The directory of the running executable (or its parent when it is a test binary in `deps/`),
/// unless `VERITY_BIN_DIR` says otherwise.
pub fn default_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VERITY_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// One funded dev account.
#[derive(Debug, Clone)]
pub struct DevAccount {
    /// Address.
    pub address: Address,
    /// Hex private key.
    pub private_key: String,
}

/// A running devnet.
#[derive(Debug)]
pub struct Devnet {
    options: DevnetOptions,
    nats: Option<NatsCluster>,
    children: BTreeMap<Service, Child>,
    addresses: BTreeMap<Service, serde_json::Value>,
    genesis: PathBuf,
    key_file: PathBuf,
    sequencer_address: Address,
    standby_address: Address,
    prover_address: Address,
    verifier_address: Address,
    chain_id: u64,
}

impl Devnet {
    /// Prepares the data directory (genesis, sequencer key) and starts everything.
    pub async fn start(options: DevnetOptions) -> Result<Self, DevnetError> {
        let dir = &options.data_dir;
        for sub in ["logs", "run", "nats"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("cannot create {}", dir.join(sub).display())))?;
        }
        for service in Service::ALL {
            let binary = options.bin_dir.join(binary_of(&options, service));
            if !binary.is_file() {
                return Err(DevnetError::MissingBinary(binary));
            }
        }
        let chain = prepare(&options).await?;
        // Every service and the devnet's own tools authenticate with an nkey of their own, each
        // allowed only its role's subjects; the server refuses everyone else (ADR 0014).
        let users = if options.secure {
            nats_users(dir, &chain)?
        } else {
            Vec::new()
        };
        // And a certificate of the devnet's CA naming its role, for mutual TLS on gRPC; the
        // admin's is for the devnet's tools and tests. Made once; an older devnet directory
        // without them gets them here.
        let identities: Vec<(&str, Role)> = Service::ALL
            .iter()
            .map(|s| (s.name(), s.role()))
            .chain([(TLS_ADMIN, Role::Admin)])
            .collect();
        verity_server::tls::issue(&dir.join(TLS_DIR), &identities)
            .map_err(|e| DevnetError::Setup(e.to_string()))?;
        let nats = if options.secure {
            // NATS serves TLS only, with a certificate of the same CA naming the loopback
            // address the services dial; they trust that CA alone for it.
            verity_server::tls::issue_server(
                &dir.join(TLS_DIR),
                NATS_SERVER_CERT,
                &["127.0.0.1".to_string(), "localhost".to_string()],
            )
            .map_err(|e| DevnetError::Setup(e.to_string()))?;
            let files = TlsArgs::in_dir(&dir.join(TLS_DIR), NATS_SERVER_CERT);
            let tls = verity_bus::server::ServerTls {
                cert: files.cert.unwrap_or_default(),
                key: files.key.unwrap_or_default(),
            };
            NatsCluster::start(&dir.join("nats"), options.nats_nodes, &users, Some(&tls)).await?
        } else {
            NatsCluster::start(&dir.join("nats"), options.nats_nodes, &[], None).await?
        };
        let mut devnet = Self {
            prover_address: chain.prover,
            verifier_address: chain.verifier,
            chain_id: chain.chain_id,
            sequencer_address: chain.sequencer,
            standby_address: chain.standby,
            options,
            nats: Some(nats),
            children: BTreeMap::new(),
            addresses: BTreeMap::new(),
            genesis: chain.genesis,
            key_file: chain.key_file,
        };
        devnet.init_bus().await?;
        for service in devnet.services() {
            devnet.start_service(service).await?;
        }
        Ok(devnet)
    }

    /// The devnet's admin certificate (its tools and tests): may call every gRPC method.
    pub fn tls_admin(&self) -> TlsArgs {
        if !self.options.secure {
            return TlsArgs::default();
        }
        TlsArgs::in_dir(&self.options.data_dir.join(TLS_DIR), TLS_ADMIN)
    }

    /// How the devnet's own tools (and tests) reach its NATS: the URL, the admin nkey and the
    /// CA its server's certificate chains to.
    pub fn nats_admin(&self) -> Option<verity_bus::NatsArgs> {
        let mut args = self.nats_as(NATS_ADMIN)?;
        if !self.options.secure {
            args.nkey_file = None;
        }
        Some(args)
    }

    /// How `name` (a service's name, or [`NATS_ADMIN`]) reaches the devnet's NATS with its own
    /// nkey and the devnet's CA (none of either when the devnet is not `secure`).
    pub fn nats_as(&self, name: &str) -> Option<verity_bus::NatsArgs> {
        let secure = self.options.secure;
        let dir = &self.options.data_dir;
        Some(verity_bus::NatsArgs {
            url: self.nats_url()?,
            nkey_file: secure.then(|| nats_nkey_file(dir, name)),
            tls_ca: secure.then(|| dir.join(TLS_DIR).join(verity_server::tls::CA_CERT)),
        })
    }

    /// The services this devnet runs, in start order.
    pub fn services(&self) -> Vec<Service> {
        Service::ALL
            .into_iter()
            .filter(|s| self.options.proving || !s.proves())
            .filter(|s| self.options.standby || *s != Service::Standby)
            .filter(|s| self.options.second_prover || *s != Service::SecondProver)
            .filter(|s| self.options.light_verifier || *s != Service::LightVerifier)
            .collect()
    }

    /// The flags provers and the verifier must agree on: the registered provers, the quorum,
    /// the circuit shape and the KZG parameters.
    fn proving_args(&self) -> Vec<String> {
        vec![
            "--prover-addresses".into(),
            self.prover_addresses(),
            "--proof-quorum".into(),
            self.options.proof_quorum.to_string(),
            "--steps-per-proof".into(),
            self.options.steps_per_proof.to_string(),
            "--max-depth".into(),
            self.options.max_depth.to_string(),
            "--kzg-params".into(),
            self.options.data_dir.join(KZG_PARAMS).display().to_string(),
        ]
        .into_iter()
        .chain((!self.options.larger_segments.is_empty()).then(|| {
            let sizes: Vec<String> = self
                .options
                .larger_segments
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("--larger-segments={}", sizes.join(","))
        }))
        .collect()
    }

    /// The registered provers' addresses, as `--prover-addresses` takes them.
    fn prover_addresses(&self) -> String {
        self.registered_provers()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The addresses of the provers this devnet runs.
    fn registered_provers(&self) -> Vec<Address> {
        let mut addresses = vec![self.prover_address];
        if self.options.second_prover
            && let Ok((key, _)) =
                SigningKey::load_or_create(&self.options.data_dir.join(SECOND_PROVER_KEY))
        {
            addresses.push(key.address());
        }
        addresses
    }

    /// Makes the bus's streams, buckets and job consumers with the admin credential, before any
    /// service starts: their own credentials may not (ADR 0014). Changes nothing on a bus made
    /// before.
    async fn init_bus(&self) -> Result<(), DevnetError> {
        let admin = self
            .nats_admin()
            .ok_or_else(|| DevnetError::Setup("the devnet's NATS is not running".into()))?;
        let (_client, js) = admin
            .connect("verity-devnet")
            .await
            .map_err(|e| DevnetError::Setup(format!("cannot reach the devnet's NATS: {e}")))?;
        let job_consumers = if self.options.proving {
            self.registered_provers()
                .iter()
                .map(|a| verity_bus::proving::consumer_name(a.as_slice()))
                .collect()
        } else {
            Vec::new()
        };
        let layout = verity_bus::bootstrap::Layout {
            job_consumers,
            job_ack_wait: Duration::from_secs(self.options.prover_ack_wait_secs.max(1)),
            limits: verity_bus::bootstrap::Limits::default(),
            // Every stream on every node of a cluster (at most 3: more copies add writes, not
            // safety worth having on one machine).
            replicas: self.options.nats_nodes.clamp(1, 3),
            proving_replicas: self.options.nats_nodes.clamp(1, 3),
        };
        // A cluster's servers elect their JetStream leader after they start.
        verity_bus::bootstrap::wait_ready(&js, Duration::from_secs(30))
            .await
            .map_err(|e| DevnetError::Setup(e.to_string()))?;
        verity_bus::bootstrap::init(&js, &layout)
            .await
            .map_err(|e| DevnetError::Setup(format!("cannot initialise the bus: {e}")))?;
        Ok(())
    }

    /// The (first) prover's address.
    pub fn prover_address(&self) -> Address {
        self.prover_address
    }

    /// The standby sequencer's address.
    pub fn standby_address(&self) -> Address {
        self.standby_address
    }

    /// The verifier replica's attestation address (registered with every replica).
    pub fn verifier_address(&self) -> Address {
        self.verifier_address
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The sequencer's address.
    pub fn sequencer_address(&self) -> Address {
        self.sequencer_address
    }

    /// The NATS URL: every node's, comma-separated, on a cluster.
    pub fn nats_url(&self) -> Option<String> {
        self.nats.as_ref().map(NatsCluster::urls)
    }

    /// The devnet's NATS servers (tests kill and restart nodes of a cluster).
    pub fn nats_cluster(&mut self) -> Option<&mut NatsCluster> {
        self.nats.as_mut()
    }

    /// The JSON-RPC URL.
    pub fn rpc_url(&self) -> String {
        format!(
            "http://{}",
            self.address(Service::Gateway, "http").unwrap_or_default()
        )
    }

    /// An address a service reported in its ready file (`grpc`, `http`).
    pub fn address(&self, service: Service, kind: &str) -> Option<String> {
        self.addresses
            .get(&service)
            .and_then(|v| v.get(kind))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// The gRPC URL of a service.
    pub fn grpc_url(&self, service: Service) -> String {
        format!(
            "http://{}",
            self.address(service, "grpc").unwrap_or_default()
        )
    }

    /// The log file of a service.
    pub fn log_file(&self, service: Service) -> PathBuf {
        self.options
            .data_dir
            .join("logs")
            .join(format!("{}.log", service.name()))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// The funded dev accounts.
    pub fn accounts(&self) -> Vec<DevAccount> {
        dev_signers(10)
            .unwrap_or_default()
            .into_iter()
            .map(|s| DevAccount {
                address: s.address(),
                private_key: alloy_primitives::hex::encode_prefixed(s.to_bytes()),
            })
            .collect()
    }

    /// Flags every replica role shares; `name` is its data directory under the devnet's.
    fn replica_args(&self, role: &str, name: &str, nats: &str) -> Vec<String> {
        vec![
            "--role".into(),
            role.into(),
            "--data-dir".into(),
            self.options.data_dir.join(name).display().to_string(),
            "--genesis".into(),
            self.genesis.display().to_string(),
            "--sequencer-address".into(),
            self.sequencer_address.to_string(),
            "--nats-url".into(),
            nats.into(),
            "--consumer-name".into(),
            format!("replica-{role}"),
        ]
    }

    fn args(&self, service: Service) -> Vec<String> {
        let dir = &self.options.data_dir;
        let path = |p: &Path| p.display().to_string();
        let nats = self.nats_url().unwrap_or_default();
        let mut args: Vec<String> = match service {
            Service::Sequencer | Service::Standby => {
                let (data, key) = match service {
                    Service::Sequencer => ("sequencer", self.key_file.clone()),
                    _ => ("standby", dir.join("standby.key")),
                };
                let mut args = vec![
                    "--data-dir".into(),
                    path(&dir.join(data)),
                    "--genesis".into(),
                    path(&self.genesis),
                    "--key-file".into(),
                    path(&key),
                    "--mini-block-interval-ms".into(),
                    self.options.mini_block_interval_ms.to_string(),
                    "--block-interval-ms".into(),
                    self.options.block_interval_ms.to_string(),
                    "--nats-url".into(),
                    nats.clone(),
                ];
                if self.options.standing_appointments && dir.join(APPOINTMENTS).is_file() {
                    args.extend(["--appointments".into(), path(&dir.join(APPOINTMENTS))]);
                }
                args
            }
            Service::Replica => self.replica_args("full", "replica", &nats),
            Service::Witness => self.replica_args("witness", "witness", &nats),
            Service::Verifier => {
                let mut args = self.replica_args("verifier", "verifier", &nats);
                args.extend(["--key-file".into(), path(&dir.join("verifier.key"))]);
                args.extend(self.proving_args());
                args
            }
            Service::LightVerifier => {
                let mut args = self.replica_args("light-verifier", "light-verifier", &nats);
                args.extend(["--key-file".into(), path(&dir.join(LIGHT_VERIFIER_KEY))]);
                args.extend(self.proving_args());
                args
            }
            // Ingress and the gateway follow the sequencer lease to the active sequencer,
            // checking each entry's signature against the genesis.
            Service::Ingress => vec![
                "--nats-url".into(),
                nats.clone(),
                "--genesis".into(),
                path(&self.genesis),
                "--sequencer-address".into(),
                self.sequencer_address.to_string(),
            ],
            Service::Gateway => vec![
                "--genesis".into(),
                path(&self.genesis),
                "--sequencer-address".into(),
                self.sequencer_address.to_string(),
                "--http-addr".into(),
                // A restarted gateway keeps the address clients already use.
                self.address(Service::Gateway, "http")
                    .unwrap_or_else(|| self.options.rpc_addr.to_string()),
                "--ingress-url".into(),
                self.grpc_url(Service::Ingress),
                "--replica-url".into(),
                self.grpc_url(Service::Replica),
                "--nats-url".into(),
                nats.clone(),
            ]
            .into_iter()
            // `eth_getProof` is answered from the witness, which keeps the state tree.
            .chain(
                self.options
                    .proving
                    .then(|| {
                        [
                            "--proof-replica-url".into(),
                            self.grpc_url(Service::Witness),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .collect(),
            Service::Prover | Service::SecondProver => {
                let mut args = vec![
                    "--nats-url".into(),
                    nats,
                    "--genesis".into(),
                    path(&self.genesis),
                    "--key-file".into(),
                    path(&dir.join(prover_key_file(service))),
                    "--ack-wait-secs".into(),
                    self.options.prover_ack_wait_secs.to_string(),
                    "--takeover-secs".into(),
                    self.options.takeover_secs.to_string(),
                ];
                args.extend(self.proving_args());
                args
            }
        };
        // Every service is on the bus, with its own credential, and serves and calls gRPC over
        // mutual TLS with its own certificate.
        if self.options.secure {
            args.extend([
                "--nats-nkey-file".into(),
                path(&nats_nkey_file(dir, service.name())),
                "--nats-tls-ca".into(),
                path(&dir.join(TLS_DIR).join(verity_server::tls::CA_CERT)),
            ]);
            args.extend(TlsArgs::in_dir(&dir.join(TLS_DIR), service.name()).to_args());
        }
        if matches!(
            service,
            Service::Replica | Service::Witness | Service::Verifier
        ) && self.options.proving
        {
            args.extend([
                "--verifier-addresses".into(),
                self.verifier_address.to_string(),
                "--finality-quorum".into(),
                "1".into(),
            ]);
        }
        args.extend([
            "--grpc-addr".into(),
            // A restarted service keeps its port, so the services calling it reconnect.
            self.address(service, "grpc")
                .unwrap_or_else(|| "127.0.0.1:0".into()),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
            "--ready-file".into(),
            path(&self.ready_file(service)),
            "--log-filter".into(),
            self.options.log_filter.clone(),
        ]);
        if let Some(endpoint) = &self.options.otlp_endpoint {
            args.extend(["--otlp-endpoint".into(), endpoint.clone()]);
        }
        args
    }

    fn ready_file(&self, service: Service) -> PathBuf {
        self.options
            .data_dir
            .join("run")
            .join(format!("{}.json", service.name()))
    }

    /// Sets (or replaces) an environment variable of every service started from now on: a
    /// service restarted with other settings.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.options.env.retain(|(key, _)| key != name);
        self.options.env.push((name.to_owned(), value.to_owned()));
    }

    /// Starts one service (again) and waits for its ready file.
    pub async fn start_service(&mut self, service: Service) -> Result<(), DevnetError> {
        let ready = self.ready_file(service);
        let _ = std::fs::remove_file(&ready);
        let log_path = self.log_file(service);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("cannot open {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io("cannot clone log handle"))?;
        let mut child = Command::new(self.options.bin_dir.join(binary_of(&self.options, service)))
            .args(self.args(service))
            .envs(
                self.options
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("cannot start {}", service.binary())))?;
        let timeout = self.options.ready_timeout;
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
            {
                self.addresses.insert(service, value);
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DevnetError::NotReady {
                    service,
                    timeout,
                    reason: format!("exited with {status}"),
                    log: log_path,
                });
            }
            if started.elapsed() > timeout {
                let _ = child.kill().await;
                return Err(DevnetError::NotReady {
                    service,
                    timeout,
                    reason: "no ready file".into(),
                    log: log_path,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(%service, addresses = %self.addresses[&service], "started");
        self.children.insert(service, child);
        Ok(())
    }

    /// Sends `signal` to a service and waits for it to exit (SIGKILL after 10 s for other
    /// signals). Returns its exit status; `None` when it was not running or had to be killed.
    pub async fn signal(
        &mut self,
        service: Service,
        signal: Signal,
    ) -> Result<Option<ExitStatus>, DevnetError> {
        let Some(mut child) = self.children.remove(&service) else {
            return Ok(None);
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), signal);
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(result) => Ok(Some(result.map_err(io(format!("waiting for {service}")))?)),
            Err(_) => {
                tracing::warn!(%service, "did not stop within 10 s; killing it");
                let _ = child.kill().await;
                Ok(None)
            }
        }
    }

    /// The process id of a running service.
    pub fn pid(&self, service: Service) -> Option<u32> {
        self.children.get(&service).and_then(Child::id)
    }

    /// Waits up to `timeout` for a service to exit by itself; its status, if it did.
    pub async fn wait_exit(&mut self, service: Service, timeout: Duration) -> Option<ExitStatus> {
        let child = self.children.get_mut(&service)?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .ok()?
            .ok()?;
        self.children.remove(&service);
        Some(status)
    }

    /// Whether a service's process is still running.
    pub fn is_running(&mut self, service: Service) -> bool {
        self.children
            .get_mut(&service)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The first service found to have exited, if any.
    pub fn exited(&mut self) -> Option<Service> {
        let services: Vec<Service> = self.children.keys().copied().collect();
        services.into_iter().find(|s| !self.is_running(*s))
    }

    /// Stops every service (SIGTERM, in reverse start order) and then nats-server. Fails, after
    /// stopping everything, if a service did not exit cleanly (status 0) on SIGTERM.
    pub async fn stop(mut self) -> Result<(), DevnetError> {
        let mut unclean = Vec::new();
        for service in Service::ALL.iter().rev() {
            let running = self.children.contains_key(service);
            match self.signal(*service, Signal::SIGTERM).await? {
                Some(status) if status.success() => {}
                Some(status) => unclean.push(format!("{service} exited with {status}")),
                None if running => unclean.push(format!("{service} ignored SIGTERM for 10 s")),
                None => {}
            }
        }
        if let Some(nats) = self.nats.take() {
            nats.stop().await.map_err(io("stopping nats-server"))?;
        }
        if unclean.is_empty() {
            Ok(())
        } else {
            Err(DevnetError::UncleanStop(unclean.join("; ")))
        }
    }
}
/// The devnet's governance keys (`1.key`, `2.key`, `3.key`; genesis lets 2 of them appoint).
pub const GOVERNANCE_DIR: &str = "governance";
/// The standing appointments of the devnet's two sequencer keys, in its data directory.
pub const APPOINTMENTS: &str = "appointments.json";
/// How many standing appointments the devnet pre-signs (epochs 1..=this, alternating between
/// the standby and the sequencer, so either can take over from the other this many times).
pub const STANDING_EPOCHS: u64 = 64;

/// A chain's files in a data directory, as `verity devnet` runs them and `verity chain init`
/// writes them for a cluster: `genesis.json`, the sequencer's, standby's, prover's and verifier's
/// keys (`*.key`), the governance keys (`governance/`), the standby's standing appointments
/// (`appointments.json`) and, with proving, insecure local KZG parameters (`kzg.params`).
#[derive(Debug, Clone)]
pub struct ChainFiles {
    /// `genesis.json`.
    pub genesis: PathBuf,
    /// The epoch-0 sequencer's key file.
    pub key_file: PathBuf,
    /// The chain id.
    pub chain_id: u64,
    /// The epoch-0 sequencer's address.
    pub sequencer: Address,
    /// The standby's address.
    pub standby: Address,
    /// The prover's attestation address.
    pub prover: Address,
    /// The verifier's attestation address.
    pub verifier: Address,
}

/// Makes what is missing of a chain's files in `options.data_dir` (keys, genesis naming the
/// sequencer and a 2-of-3 governance, standing appointments, attestation keys, and with
/// `options.proving` the KZG parameters) and returns what they hold. Idempotent: an existing
/// chain keeps its genesis and keys.
pub async fn prepare(options: &DevnetOptions) -> Result<ChainFiles, DevnetError> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let key_file = dir.join("sequencer.key");
    let load = |name: &str| {
        SigningKey::load_or_create(&dir.join(name))
            .map(|(key, _)| key)
            .map_err(|e| DevnetError::Setup(e.to_string()))
    };
    let key = load("sequencer.key")?;
    let standby = load("standby.key")?;
    let genesis = dir.join("genesis.json");
    let spec = if genesis.is_file() {
        ChainSpec::load(&genesis).map_err(|e| DevnetError::Setup(e.to_string()))?
    } else {
        // Genesis names the sequencer of epoch 0 and a 2-of-3 governance.
        std::fs::create_dir_all(dir.join(GOVERNANCE_DIR))
            .map_err(io("cannot create the governance key directory"))?;
        let governors = (1..=3)
            .map(|i| load(&format!("{GOVERNANCE_DIR}/{i}.key")).map(|k| k.address()))
            .collect::<Result<Vec<_>, _>>()?;
        let governance =
            Governance::new(governors, 2).map_err(|e| DevnetError::Setup(e.to_string()))?;
        let extra = options.extra_genesis_accounts;
        let spec = ChainSpec::dev_with_gas_limit(options.chain_id, 10, 10_000, options.gas_limit)
            .and_then(|spec| {
                if extra == 0 {
                    return Ok(spec);
                }
                let mut genesis = spec.genesis;
                for i in 0..extra as u64 {
                    let address = Address::from_word(alloy_primitives::keccak256(i.to_be_bytes()));
                    genesis.alloc.insert(
                        address,
                        alloy_genesis::GenesisAccount::default()
                            .with_balance(alloy_primitives::U256::from(1)),
                    );
                }
                ChainSpec::from_genesis(genesis)
            })
            .and_then(|spec| spec.with_sequencing(key.address(), Some(governance)))
            .map_err(|e| DevnetError::Setup(e.to_string()))?;
        let json = spec
            .to_json()
            .map_err(|e| DevnetError::Setup(e.to_string()))?;
        std::fs::write(&genesis, json).map_err(io("cannot write genesis.json"))?;
        spec
    };
    standing_appointments(dir, &spec, &key, &standby)?;
    // The proving keys are made here so every service can be told whom to trust.
    let attester = |name: &str| {
        SigningKey::load_or_create(&dir.join(name))
            .map(|(key, _)| key.address())
            .map_err(|e| DevnetError::Setup(e.to_string()))
    };
    let prover_address = attester("prover.key")?;
    let verifier_address = attester("verifier.key")?;
    if options.proving {
        kzg_params(
            dir,
            Shape {
                steps: options.steps_per_proof,
                depth: options.max_depth,
            },
            &options.larger_segments,
        )
        .await?;
    }
    Ok(ChainFiles {
        genesis,
        key_file,
        chain_id: spec.chain_id(),
        sequencer: key.address(),
        standby: standby.address(),
        prover: prover_address,
        verifier: verifier_address,
    })
}

/// The devnet's NATS users: one nkey per service, with what its role may do, and the admin
/// (its tools and tests), who may do anything.
fn nats_users(
    dir: &Path,
    chain: &ChainFiles,
) -> Result<Vec<verity_bus::server::User>, DevnetError> {
    let second_prover = SigningKey::load_or_create(&dir.join(SECOND_PROVER_KEY))
        .map(|(key, _)| key.address())
        .map_err(|e| DevnetError::Setup(e.to_string()))?;
    let light_verifier = light_verifier_address(dir)?;
    let mut users = Vec::new();
    for service in Service::ALL {
        let key = verity_bus::auth::load_or_create_nkey(&nats_nkey_file(dir, service.name()))
            .map_err(|e| DevnetError::Setup(e.to_string()))?;
        let prover = match service {
            Service::SecondProver => second_prover,
            _ => chain.prover,
        };
        let verifier = match service {
            Service::LightVerifier => light_verifier,
            _ => chain.verifier,
        };
        users.push(verity_bus::server::User {
            permissions: Some(nats_permissions(
                service,
                &key.public,
                prover,
                &verity_bus::proving::consumer_name(prover.as_slice()),
                verifier,
            )),
            nkey: key.public,
        });
    }
    let admin = verity_bus::auth::load_or_create_nkey(&nats_nkey_file(dir, NATS_ADMIN))
        .map_err(|e| DevnetError::Setup(e.to_string()))?;
    users.push(verity_bus::server::User {
        nkey: admin.public,
        permissions: None,
    });
    Ok(users)
}

/// What `service` may do on the bus (docs/security.md, "Who may use which NATS subject"), as the
/// identity whose public nkey is `nkey`: read the streams (stream info, message and direct
/// gets), follow the chain stream through ordered consumers of its own (the only stream a
/// service may make consumers on: a consumer elsewhere could deliver into the chain, ADR 0014),
/// receive replies on its own inbox prefix only, and publish its own role's subjects. A prover
/// also pulls from and acknowledges its key's job consumer, which the bus's initialisation
/// makes. Nobody but the admin may make or change a stream, make a consumer elsewhere, purge or
/// delete. (`prover` and `verifier`: the addresses a prover and the verifier publish under;
/// `job_consumer`: the prover's job consumer.)
pub fn nats_permissions(
    service: Service,
    nkey: &str,
    prover: Address,
    job_consumer: &str,
    verifier: Address,
) -> verity_bus::server::Permissions {
    use verity_bus::{CHAIN_STREAM, lease, proving};
    let mut publish: Vec<String> = vec![
        "$JS.API.INFO".into(),
        "$JS.API.STREAM.INFO.*".into(),
        "$JS.API.STREAM.MSG.GET.*".into(),
        "$JS.API.DIRECT.GET.>".into(),
        // Ordered consumers: the first is created without a name, the ones replacing it after
        // a gap with a random one.
        format!("$JS.API.CONSUMER.CREATE.{CHAIN_STREAM}"),
        format!("$JS.API.CONSUMER.CREATE.{CHAIN_STREAM}.*"),
        format!("$JS.API.CONSUMER.INFO.{CHAIN_STREAM}.*"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{CHAIN_STREAM}.*"),
        format!("$JS.API.CONSUMER.DELETE.{CHAIN_STREAM}.*"),
    ];
    publish.extend(match service {
        Service::Sequencer | Service::Standby => vec![
            verity_bus::CHAIN_SUBJECT.to_string(),
            format!("$KV.{}.{}", lease::LEASE_BUCKET, lease::LEASE_KEY),
        ],
        Service::Witness => vec![proving::JOBS_SUBJECT.to_string()],
        Service::Verifier | Service::LightVerifier => {
            vec![proving::finality_subject(verifier.as_slice())]
        }
        Service::Prover | Service::SecondProver => {
            let id = verity_bus::message_id(prover.as_slice());
            let consumer = job_consumer;
            let jobs = proving::JOBS_STREAM;
            vec![
                format!("{}.*.proof.{id}", proving::RESULTS_SUBJECT),
                format!("{}.*.fraud.{id}", proving::RESULTS_SUBJECT),
                proving::DEAD_SUBJECT.to_string(),
                format!("$JS.API.CONSUMER.INFO.{jobs}.{consumer}"),
                format!("$JS.API.CONSUMER.MSG.NEXT.{jobs}.{consumer}"),
                format!("$JS.ACK.{jobs}.{consumer}.>"),
            ]
        }
        // The autoscaler is given a full replica's grants: it reads the job consumers'
        // backlogs.
        Service::Replica => vec![format!("$JS.API.CONSUMER.INFO.{}.*", proving::JOBS_STREAM)],
        Service::Ingress | Service::Gateway => vec![],
    });
    verity_bus::server::Permissions {
        publish,
        publish_deny: admin_only(),
        subscribe: own_inbox(nkey),
    }
}

/// What only the admin may do, denied to every other identity outright: delete, purge,
/// snapshot or restore a stream, delete a message.
fn admin_only() -> Vec<String> {
    [
        "$JS.API.STREAM.DELETE.>",
        "$JS.API.STREAM.PURGE.>",
        "$JS.API.STREAM.MSG.DELETE.>",
        "$JS.API.STREAM.SNAPSHOT.>",
        "$JS.API.STREAM.RESTORE.>",
    ]
    .map(String::from)
    .to_vec()
}

/// The subscribe grant of the identity whose public nkey is `nkey`: its own replies only.
fn own_inbox(nkey: &str) -> Vec<String> {
    vec![format!("{}.>", verity_bus::auth::inbox_prefix(nkey))]
}

/// What the bus's initialisation may do (`verity bus init` as the chart's bus-init Job runs it,
/// with a credential of its own rather than the admin's): make and reconfigure streams and
/// make the job consumers, and nothing else (no message of its own, no purge or delete). The
/// identity's public nkey is `nkey`.
pub fn bus_init_permissions(nkey: &str) -> verity_bus::server::Permissions {
    let jobs = verity_bus::proving::JOBS_STREAM;
    verity_bus::server::Permissions {
        publish: vec![
            "$JS.API.INFO".into(),
            "$JS.API.STREAM.INFO.*".into(),
            "$JS.API.STREAM.CREATE.*".into(),
            "$JS.API.STREAM.UPDATE.*".into(),
            format!("$JS.API.CONSUMER.CREATE.{jobs}.*"),
            format!("$JS.API.CONSUMER.INFO.{jobs}.*"),
        ],
        publish_deny: admin_only(),
        subscribe: own_inbox(nkey),
    }
}

/// Where a devnet keeps its CA and certificates (`ca.pem`, `<service>.pem`, `<service>.key`).
pub const TLS_DIR: &str = "tls";
/// The certificate name of the devnet's tools and tests (role admin).
pub const TLS_ADMIN: &str = "admin";
/// The name of the NATS server's certificate in [`TLS_DIR`] (`nats-server.pem`), naming
/// 127.0.0.1 and localhost.
pub const NATS_SERVER_CERT: &str = "nats-server";

/// The devnet's NATS identity for its tools and tests (and an operator's `nats` CLI:
/// `nats --nkey .devnet/nats-keys/admin.nk --tlsca .devnet/tls/ca.pem`).
pub const NATS_ADMIN: &str = "admin";

/// Where the nkey seed of NATS identity `name` is kept in a devnet directory.
pub fn nats_nkey_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("nats-keys").join(format!("{name}.nk"))
}

/// The key file of the second prover (created with the chain's other keys).
const SECOND_PROVER_KEY: &str = "prover-2.key";

/// The key file of the light verifier.
const LIGHT_VERIFIER_KEY: &str = "light-verifier.key";

/// The attestation address of the light verifier of the devnet in `dir` (its key is made when
/// missing).
pub fn light_verifier_address(dir: &Path) -> Result<Address, DevnetError> {
    SigningKey::load_or_create(&dir.join(LIGHT_VERIFIER_KEY))
        .map(|(key, _)| key.address())
        .map_err(|e| DevnetError::Setup(e.to_string()))
}

/// The key file of a prover service.
fn prover_key_file(service: Service) -> &'static str {
    match service {
        Service::SecondProver => SECOND_PROVER_KEY,
        _ => "prover.key",
    }
}

/// Pre-signs standing appointments for a genesis with the devnet's governance: odd epochs for the
/// standby, even ones for the sequencer (each takes over from the other), signed by governance
/// keys 1 and 2. Nothing to do for a genesis without governance or when the file exists.
fn standing_appointments(
    dir: &Path,
    spec: &ChainSpec,
    sequencer: &SigningKey,
    standby: &SigningKey,
) -> Result<(), DevnetError> {
    let file = dir.join(APPOINTMENTS);
    if file.is_file() || spec.governance.is_none() {
        return Ok(());
    }
    let governors = (1..=2)
        .map(|i| {
            let path = dir.join(GOVERNANCE_DIR).join(format!("{i}.key"));
            let text = std::fs::read_to_string(&path)
                .map_err(io(format!("cannot read {}", path.display())))?;
            SigningKey::from_hex(&text)
                .map_err(|e| DevnetError::Setup(format!("{}: {e}", path.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let appointments: Vec<SignedAppointment> = (1..=STANDING_EPOCHS)
        .map(|epoch| {
            let appointment = Appointment {
                chain_id: spec.chain_id(),
                epoch,
                sequencer: if epoch % 2 == 1 {
                    standby.address()
                } else {
                    sequencer.address()
                },
                first_height: 0,
                parent_hash: Default::default(),
            };
            SignedAppointment {
                signatures: governors.iter().map(|k| appointment.sign(k)).collect(),
                appointment,
            }
        })
        .collect();
    let json = serde_json::to_string_pretty(&appointments)
        .map_err(|e| DevnetError::Setup(e.to_string()))?;
    std::fs::write(&file, json).map_err(io(format!("cannot write {}", file.display())))
}

/// The devnet's KZG parameters file, in its data directory.
pub const KZG_PARAMS: &str = "kzg.params";

/// Makes the devnet's KZG parameters once (or again when the circuit shape outgrew them).
/// **Insecure**: they come from a local setup whose secret passed through this process, which
/// is fine for a devnet and nothing else; a real chain loads a public ceremony's parameters.
async fn kzg_params(dir: &Path, shape: Shape, larger: &[usize]) -> Result<PathBuf, DevnetError> {
    let path = dir.join(KZG_PARAMS);
    let larger = larger.to_vec();
    tokio::task::spawn_blocking(move || {
        let needed = KeyRing::k_with_larger(shape, &larger);
        if let Ok(params) = Params::read(&path)
            && params.k() >= needed
        {
            return Ok(path);
        }
        tracing::warn!(
            path = %path.display(),
            k = needed,
            "INSECURE: generating KZG parameters locally for this devnet; a real chain loads a public ceremony's"
        );
        Params::setup_insecure(needed)
            .write(&path)
            .map_err(|e| DevnetError::Setup(e.to_string()))?;
        Ok(path)
    })
    .await
    .map_err(|e| DevnetError::Setup(format!("KZG setup: {e}")))?
}
