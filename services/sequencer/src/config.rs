//! The sequencer's configuration: flags with `VERITY_*` environment variables, validated once.

use std::{path::PathBuf, time::Duration};

use alloy_primitives::Address;
use verity_server::ServiceArgs;

/// Default gRPC port of the sequencer.
pub const DEFAULT_PORT: u16 = 7100;

/// `verity-sequencer` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(version = crate::VERSION, about, long_about = None)]
pub struct Config {
    /// Directory of the sequencer's MDBX database.
    #[arg(long, env = "VERITY_DATA_DIR", default_value = ".devnet/sequencer")]
    pub data_dir: PathBuf,
    /// Genesis JSON file (geth format: config.chainId, gasLimit, alloc, baseFeePerGas).
    #[arg(long, env = "VERITY_GENESIS")]
    pub genesis: PathBuf,
    /// File holding the sequencer's hex private key (its epoch key).
    #[arg(long, env = "VERITY_SEQUENCER_KEY_FILE")]
    pub key_file: PathBuf,
    /// Mini-block interval in milliseconds (mini-blocks are made only when transactions wait).
    #[arg(long, env = "VERITY_MINI_BLOCK_INTERVAL_MS", default_value_t = 10)]
    pub mini_block_interval_ms: u64,
    /// EVM block interval in milliseconds.
    #[arg(long, env = "VERITY_BLOCK_INTERVAL_MS", default_value_t = 1000)]
    pub block_interval_ms: u64,
    /// Most transactions in one mini-block. A mini-block is a chunk job of its own (~1.6 KiB
    /// per transfer with its witness and tree proofs), which must fit the NATS server's
    /// max_payload (the devnet's: 8 MiB); 1,000 per 10 ms is still 100,000 transactions/s.
    #[arg(long, env = "VERITY_MAX_MINI_BLOCK_TXS", default_value_t = 1000)]
    pub max_mini_block_txs: usize,
    /// Most bytes of one mini-block's chain event: its transactions, their receipts and logs,
    /// and its state diff, counted at their largest encoding (a transaction whose event is
    /// larger still goes alone). With its proving job's witness, a mini-block must fit the NATS
    /// server's max_payload whatever calldata it carries or logs it emits (30M gas buys ~7 MB
    /// of zero bytes of calldata, or ~3.75 MB of log data).
    #[arg(long, env = "VERITY_MAX_MINI_BLOCK_BYTES", default_value_t = crate::producer::DEFAULT_MAX_MINI_BLOCK_BYTES)]
    pub max_mini_block_bytes: usize,
    /// Threads executing a mini-block (the producer's own included); default: every core.
    /// Results are the same on any number (the parallel executor is checked against the
    /// sequential one); 1 executes sequentially.
    #[arg(long, env = "VERITY_EXECUTION_THREADS")]
    pub execution_threads: Option<usize>,
    /// Most transactions one sender may have waiting (contiguous nonces are refused only past
    /// it, with "account limit exceeded"), and how far ahead of the sender's pending nonce a
    /// transaction may wait behind a gap (one sent in parallel with others arrives early).
    #[arg(long, env = "VERITY_MEMPOOL_PER_SENDER", default_value_t = crate::mempool::DEFAULT_PER_SENDER)]
    pub mempool_per_sender: usize,
    /// Most transactions waiting in the mempool; when full, a transaction that pays a higher tip
    /// than the cheapest one waiting evicts its sender's last transaction.
    #[arg(long, env = "VERITY_MEMPOOL_MAX_TXS", default_value_t = 100_000)]
    pub mempool_max_txs: usize,
    /// Most bytes of encoded transactions waiting in the mempool (bounds its memory).
    #[arg(long, env = "VERITY_MEMPOOL_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub mempool_max_bytes: usize,
    /// Load shedding: the longest (milliseconds) a newly admitted transaction should wait in
    /// the mempool at the rate the sequencer has been including transactions. Past it, new
    /// transactions are refused at once with "txpool is full: the sequencer is at capacity"
    /// (JSON-RPC -32000) instead of queueing behind seconds of work; 0 turns shedding off
    /// (the pool then queues up to --mempool-max-txs).
    #[arg(long, env = "VERITY_MAX_QUEUE_DELAY_MS", default_value_t = 500)]
    pub max_queue_delay_ms: u64,
    /// Most MiB the sequencer's database may grow to (its MDBX size ceiling; default 1 TiB).
    /// When a commit needs more (or the disk is full), the sequencer stops producing, publishes
    /// what it committed, releases the lease, and reports NOT_SERVING with the reason until it
    /// is restarted with room (a larger ceiling or volume).
    #[arg(long, env = "VERITY_MAX_DB_SIZE_MIB", default_value_t = 1 << 20)]
    pub max_db_size_mib: u64,
    /// Fee recipient of every block (default: the sequencer key's address).
    #[arg(long, env = "VERITY_FEE_RECIPIENT")]
    pub fee_recipient: Option<Address>,
    /// The gRPC URL others reach this sequencer at, written into the lease while it is active
    /// (default: http:// and the address it listens on).
    #[arg(long, env = "VERITY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// JSON file of governance-signed appointments for this node's key (an array, as
    /// `verity governance` writes them): a standing one lets a hot standby take over; one with
    /// a first height appoints this node from that block on.
    #[arg(long, env = "VERITY_APPOINTMENTS")]
    pub appointments: Option<PathBuf>,
    /// The active sequencer rewrites its lease this often (milliseconds).
    #[arg(long, env = "VERITY_LEASE_RENEW_MS", default_value_t = 50)]
    pub lease_renew_ms: u64,
    /// A standby takes over when the lease has not changed for this long (milliseconds); the
    /// active sequencer stops producing when it could not renew for half of it.
    #[arg(long, env = "VERITY_LEASE_TTL_MS", default_value_t = 300)]
    pub lease_ttl_ms: u64,
    /// Name of a coordination.k8s.io Lease the active sequencer records itself in (pod, epoch,
    /// address) when it runs in Kubernetes; a sequencer that finds a higher epoch there steps
    /// down. Needs `get` and `update` on that Lease and `create` on leases (the chart's Role).
    #[arg(long, env = "VERITY_K8S_LEASE")]
    pub k8s_lease: Option<String>,
    /// The Lease's namespace (default: this pod's).
    #[arg(long, env = "VERITY_K8S_NAMESPACE")]
    pub k8s_namespace: Option<String>,
    /// The holder identity written into the Lease (default: $POD_NAME, else the host name).
    #[arg(long, env = "VERITY_K8S_IDENTITY")]
    pub k8s_identity: Option<String>,
    /// The Kubernetes API server's URL (default: in-cluster, or $KUBECONFIG).
    #[arg(long, env = "VERITY_KUBE_API")]
    pub kube_api: Option<String>,
    /// Seconds between two renewals of the Lease (each is valid for five times this).
    #[arg(long, env = "VERITY_K8S_LEASE_RENEW_SECS", default_value_t = 2)]
    pub k8s_lease_renew_secs: u64,
    /// Most publishes awaiting their JetStream ack.
    #[arg(long, env = "VERITY_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs,
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid {flag} {value:?}: {reason}")]
pub struct ConfigError {
    /// The flag.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What would be valid.
    pub reason: String,
}

impl Config {
    /// Checks values that clap's parsing cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mini_block_interval_ms == 0 {
            return Err(ConfigError {
                flag: "--mini-block-interval-ms",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.block_interval_ms < self.mini_block_interval_ms {
            return Err(ConfigError {
                flag: "--block-interval-ms",
                value: self.block_interval_ms.to_string(),
                reason: format!(
                    "must be at least the mini-block interval ({} ms)",
                    self.mini_block_interval_ms
                ),
            });
        }
        if self.max_mini_block_bytes < 128 * 1024 {
            return Err(ConfigError {
                flag: "--max-mini-block-bytes",
                value: self.max_mini_block_bytes.to_string(),
                reason: "must be at least 131072 (ingress admits transactions of up to 128 KiB)"
                    .into(),
            });
        }
        if self.max_mini_block_txs == 0 {
            return Err(ConfigError {
                flag: "--max-mini-block-txs",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        for (flag, value) in [
            ("--mempool-per-sender", self.mempool_per_sender),
            ("--mempool-max-txs", self.mempool_max_txs),
            ("--mempool-max-bytes", self.mempool_max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    flag,
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.lease_renew_ms == 0 || self.lease_ttl_ms < 3 * self.lease_renew_ms {
            return Err(ConfigError {
                flag: "--lease-ttl-ms",
                value: self.lease_ttl_ms.to_string(),
                reason: format!(
                    "must be at least three renewals (--lease-renew-ms {}), which must be positive",
                    self.lease_renew_ms
                ),
            });
        }
        if self.max_db_size_mib < 4 {
            return Err(ConfigError {
                flag: "--max-db-size-mib",
                value: self.max_db_size_mib.to_string(),
                reason: "must be at least 4".into(),
            });
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError {
                flag: "--max-in-flight",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.execution_threads == Some(0) {
            return Err(ConfigError {
                flag: "--execution-threads",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Threads executing a mini-block.
    pub fn execution_threads(&self) -> usize {
        self.execution_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// The load-shedding bound (`None`: off).
    pub fn max_queue_delay(&self) -> Option<Duration> {
        (self.max_queue_delay_ms > 0).then(|| Duration::from_millis(self.max_queue_delay_ms))
    }

    /// The mini-block interval.
    pub fn mini_block_interval(&self) -> Duration {
        Duration::from_millis(self.mini_block_interval_ms)
    }

    /// The block interval.
    pub fn block_interval(&self) -> Duration {
        Duration::from_millis(self.block_interval_ms)
    }

    /// How often the lease is renewed.
    pub fn lease_renew(&self) -> Duration {
        Duration::from_millis(self.lease_renew_ms)
    }

    /// How long an unchanged lease lives.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// How often the Kubernetes Lease is renewed.
    pub fn k8s_lease_renew(&self) -> Duration {
        Duration::from_secs(self.k8s_lease_renew_secs.max(1))
    }
}
