//! Verity prover worker.
//!
//! Reads every chunk job from `VERITY_CHUNK_JOBS` through the durable consumer the workers of
//! its key share (so each job goes to one of them; see `verity_bus::proving`) and works on the
//! chunks its rank gives it: at once when it is among the `--proof-quorum` (R) provers ranked
//! first for the chunk, otherwise only once the chunk is older than its takeover deadline and
//! still lacks R usable proofs or is still not `safe` ([`Prover`]'s `turn`; until then the job
//! waits, handed back to JetStream with a delay). For each job it works on:
//!
//! 1. checks it by re-executing the mini-block with revm against the job's witness alone
//!    (`verity_chunk::check_job`): no database, and any read outside the witness is an error;
//! 2. if the claimed writes and receipts are what the transactions produce, proves the job's
//!    tree steps with halo2 in segments (`verity_chunk::prove_job`) and signs the attestation;
//!    if not, signs fraud evidence instead;
//! 3. publishes the result on `VERITY_PROOFS` and only then acknowledges the job.
//!
//! While proving it tells JetStream the job is in progress, so the ack wait bounds how long a
//! dead worker holds a job, not how long proving may take. A job that cannot be handled (it does
//! not decode, its witness is incomplete or inconsistent, a path is deeper than the circuit)
//! goes to the dead-letter stream with the reason, as does a job delivered `--max-deliver`
//! times without a result (workers crashed on it).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration, time::Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tracing::Instrument as _;
use verity_bus::proving::{self, JobQueue};
use verity_chunk::{
    ChunkJob, Verdict,
    wire::{self, ChunkProof, FraudEvidence, ProverResult},
};
use verity_circuits::{KeyRing, Params, Shape};
use verity_primitives::{
    Block, ChainEvent, ChainEventKind, ChainSpec, MiniBlock, SigningKey,
    governance::{Epoch, Handover, Sequencing},
};
use verity_proto::v1;
use verity_server::{Backoff, CancellationToken, ServiceArgs};

/// Default gRPC (health) port of a prover.
pub const DEFAULT_PORT: u16 = 7500;

/// What `--version` prints. A build with the test-only `fault-injection` feature says so: `make
/// test` (`scripts/check-production.sh`) refuses a production binary whose version says it.
#[cfg(not(feature = "fault-injection"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What `--version` prints: this build has the test-only `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (test build: fault-injection)");

/// `verity-prover` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(version = VERSION, about, long_about = None)]
pub struct Config {
    /// Genesis JSON file (for the chain id and block gas limit).
    #[arg(long, env = "VERITY_GENESIS")]
    pub genesis: PathBuf,
    /// File holding this worker's attestation key (hex). Created with a fresh key when missing;
    /// verifiers accept attestations only from the addresses they are given.
    #[arg(
        long,
        env = "VERITY_PROVER_KEY_FILE",
        default_value = ".devnet/prover.key"
    )]
    pub key_file: PathBuf,
    /// Tree steps per halo2 proof (the circuit shape; verifiers must use the same).
    #[arg(long, env = "VERITY_STEPS_PER_PROOF", default_value_t = Shape::DEFAULT.steps)]
    pub steps_per_proof: usize,
    /// Deepest tree path the circuit accepts (the circuit shape; verifiers must use the same).
    #[arg(long, env = "VERITY_MAX_DEPTH", default_value_t = Shape::DEFAULT.depth)]
    pub max_depth: usize,
    /// Larger segment shapes, in steps per proof (comma-separated, each more than
    /// `--steps-per-proof`; verifiers must hold the same): a chunk's steps are cut into the
    /// largest segments they fill, so a large block needs few proofs (a proof verifies in the
    /// same time whatever it holds). Their keys are made when first needed; the KZG parameters
    /// must serve the largest. Empty: the main shape only.
    #[arg(long, env = "VERITY_LARGER_SEGMENTS", value_delimiter = ',')]
    pub larger_segments: Vec<usize>,
    /// KZG parameters (halo2 raw format): a public ceremony's in production; `verity devnet`
    /// makes an insecure local one. Verifiers must use the same file.
    #[arg(long, env = "VERITY_KZG_PARAMS", default_value = ".devnet/kzg.params")]
    pub kzg_params: PathBuf,
    /// Seconds a job may stay unacknowledged before JetStream gives it to another worker
    /// (extended while this worker proves it). Applies when the shared consumer is created.
    #[arg(long, env = "VERITY_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,
    /// Deliveries of a job before it is dead-lettered.
    #[arg(long, env = "VERITY_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,
    /// The registered provers' addresses (comma-separated), as the verifiers are given them:
    /// each chunk's provers are ranked among them. This prover's own address must be one.
    /// Empty: this prover alone (it works on every chunk).
    #[arg(long, env = "VERITY_PROVER_ADDRESSES", value_delimiter = ',')]
    pub prover_addresses: Vec<alloy_primitives::Address>,
    /// Agreeing results each chunk needs from distinct provers (R, as the verifiers'
    /// `--proof-quorum`): the R provers ranked first for a chunk work on it at once.
    #[arg(long, env = "VERITY_PROOF_QUORUM", default_value_t = 1)]
    pub proof_quorum: usize,
    /// Seconds after which the prover ranked R + k for a chunk (k from 0) takes it over, times
    /// k + 1, if fewer than R usable proofs of it are published by then: what a silent prover
    /// delays `safe` by.
    #[arg(long, env = "VERITY_TAKEOVER_SECS", default_value_t = 60)]
    pub takeover_secs: u64,
    /// Name of the durable job consumer this key's workers share (default
    /// `provers-<address>`); the autoscaler reads its backlog.
    #[arg(long, env = "VERITY_JOBS_CONSUMER")]
    pub consumer: Option<String>,
    /// Address of the epoch-0 sequencer key, for a genesis that names none (refused if it
    /// names another): every mini-block and seal a job holds must be signed by its epoch's key.
    #[arg(long, env = "VERITY_SEQUENCER_ADDRESS")]
    pub sequencer_address: Option<alloy_primitives::Address>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ServiceArgs,
}

impl Config {
    fn shape(&self) -> anyhow::Result<Shape> {
        if self.steps_per_proof == 0 || self.max_depth == 0 || self.max_depth > 128 {
            anyhow::bail!(
                "invalid circuit shape: --steps-per-proof must be at least 1 and --max-depth between 1 and 128"
            );
        }
        let shape = Shape {
            steps: self.steps_per_proof,
            depth: self.max_depth,
        };
        shape
            .check_larger(&self.larger_segments)
            .context("flags --larger-segments and --steps-per-proof")?;
        Ok(shape)
    }
}

/// Reads the KZG parameters at `path`, checked against `shape` and its `larger` segments.
pub async fn load_params(
    path: &std::path::Path,
    shape: Shape,
    larger: &[usize],
) -> anyhow::Result<Arc<Params>> {
    let owned = path.to_path_buf();
    let larger = larger.to_vec();
    let params =
        tokio::task::spawn_blocking(move || Params::read_for_larger(&owned, shape, &larger))
            .await?
            .context("flag --kzg-params / VERITY_KZG_PARAMS")?;
    tracing::info!(path = %path.display(), k = params.k(), "KZG parameters loaded");
    Ok(Arc::new(params))
}

/// Reads the key in `path`, or creates it.
pub fn load_or_create_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let (key, created) = SigningKey::load_or_create(path)?;
    if created {
        tracing::info!(path = %path.display(), address = %key.address(), "created a key");
    }
    Ok(key)
}

/// A connected prover worker.
#[derive(Debug)]
pub struct Prover {
    config: Config,
    shape: Shape,
    chain_id: u64,
    gas_limit: u64,
    /// Block 0's hash, derived from the genesis (it has no seal on the chain stream).
    genesis_hash: alloy_primitives::B256,
    /// Who signs epoch 0 and who appoints the others: what a job's signatures are checked by.
    rules: Sequencing,
    key: SigningKey,
    params: Arc<Params>,
    js: jetstream::Context,
    jobs: jetstream::stream::Stream,
    proofs: jetstream::stream::Stream,
    /// The verifiers' attestations (for the provers they caught in false accusations).
    finality: jetstream::stream::Stream,
    assignment: proving::Assignment,
    /// The registered provers other than this one, as [`verity_bus::message_id`] names them in
    /// result subjects.
    registered: Vec<String>,
    /// The chain stream, where a job's mini-blocks must have been published.
    chain: jetstream::stream::Stream,
    #[cfg(feature = "fault-injection")]
    fault: Arc<fault::FalseAccusation>,
}

impl verity_server::Service for Prover {
    type Config = Config;
    const NAME: &'static str = "prover";

    /// Validates the configuration, loads the key and connects to NATS.
    async fn open(config: Config) -> anyhow::Result<Self> {
        let shape = config.shape()?;
        let spec = ChainSpec::load(&config.genesis).context("flag --genesis / VERITY_GENESIS")?;
        let rules = spec
            .sequencing(config.sequencer_address)
            .context("flags --genesis and --sequencer-address")?;
        let key = load_or_create_key(&config.key_file).context("flag --key-file")?;
        let params = load_params(&config.kzg_params, shape, &config.larger_segments).await?;
        if config.proof_quorum == 0 {
            anyhow::bail!("invalid --proof-quorum 0: a chunk needs at least one result");
        }
        let mut provers = config.prover_addresses.clone();
        if provers.is_empty() {
            provers.push(key.address());
        } else if !provers.contains(&key.address()) {
            anyhow::bail!(
                "this prover's address {} is not in --prover-addresses (VERITY_PROVER_ADDRESSES): verifiers would ignore its results",
                key.address()
            );
        }
        let registered = provers
            .iter()
            .filter(|a| **a != key.address())
            .map(|a| verity_bus::message_id(a.as_slice()))
            .collect();
        let assignment = proving::Assignment {
            provers: provers.iter().map(|a| a.0.0).collect(),
            quorum: config.proof_quorum,
            takeover: Duration::from_secs(config.takeover_secs),
        };
        let (_client, js) = config.service.nats.connect("verity-prover").await?;
        let (jobs, proofs) = proving::ensure_proving_streams(&js).await?;
        let finality = proving::open_finality_stream(&js).await?;
        let chain = verity_bus::ensure_chain_stream(&js).await?;
        Ok(Self {
            shape,
            chain_id: spec.chain_id(),
            gas_limit: spec.gas_limit(),
            genesis_hash: spec.genesis_hash,
            rules,
            key,
            params,
            js,
            jobs,
            proofs,
            finality,
            assignment,
            registered,
            chain,
            config,
            #[cfg(feature = "fault-injection")]
            fault: Arc::default(),
        })
    }

    /// Generates the proving keys, then proves jobs until `stop` is cancelled. Health is served
    /// from the start; work begins once the keys exist.
    async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let (listener, addr) = self.config.service.server.bind(DEFAULT_PORT).await?;
        verity_server::write_ready_file(
            self.config.service.server.ready_file.as_deref(),
            &[
                ("grpc", addr.to_string()),
                ("prover", self.key.address().to_string()),
            ],
        )?;
        tracing::info!(%addr, prover = %self.key.address(), shape = ?self.shape, "prover serving");
        let security = verity_server::Security::load(
            &self.config.service,
            verity_server::tls::Policy::HEALTH_ONLY,
        )?;
        let worker = tokio::spawn(self.work(stop.clone()));
        verity_server::serve_health(listener, stop, security).await?;
        worker.await??;
        tracing::info!("prover stopped");
        Ok(())
    }
}

impl Prover {
    /// The worker's attestation address.
    pub fn address(&self) -> alloy_primitives::Address {
        self.key.address()
    }

    async fn work(self, stop: CancellationToken) -> anyhow::Result<()> {
        let shape = self.shape;
        tracing::info!(?shape, "generating proving keys from the KZG parameters");
        let params = self.params.clone();
        let larger = self.config.larger_segments.clone();
        let keys = tokio::select! {
            keys = tokio::task::spawn_blocking(move || KeyRing::generate_with_larger(shape, &larger, &params)) => Arc::new(keys??),
            _ = stop.cancelled() => return Ok(()),
        };
        tracing::info!(k = keys.main().k(), elapsed = ?keys.main().generated_in(), "proving keys ready");
        metrics::gauge!("verity_prover_ready").set(1.0);
        let queue = JobQueue {
            ack_wait: Duration::from_secs(self.config.ack_wait_secs.max(1)),
            max_deliver: self.config.max_deliver.max(1),
        };
        tokio::spawn(report_backlog(
            self.jobs.clone(),
            self.consumer_name(),
            stop.clone(),
        ));
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        while !stop.is_cancelled() {
            match self.pull(&keys, queue, &stop).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "job queue interrupted; retrying"
                    );
                    backoff.wait(&stop).await;
                }
            }
        }
        Ok(())
    }

    /// The durable job consumer this worker's pool shares.
    fn consumer_name(&self) -> String {
        self.config
            .consumer
            .clone()
            .unwrap_or_else(|| proving::consumer_name(self.key.address().as_slice()))
    }

    /// Pulls and handles one job at a time (so a busy worker leaves the next job to another).
    async fn pull(
        &self,
        keys: &Arc<KeyRing>,
        queue: JobQueue,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let name = self.consumer_name();
        let consumer = proving::job_consumer(&self.jobs, &name, queue).await?;
        loop {
            let mut batch = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await?;
            let next = tokio::select! {
                next = batch.next() => next,
                _ = stop.cancelled() => return Ok(()),
            };
            let Some(message) = next else { continue };
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            #[cfg(feature = "fault-injection")]
            if self.fault.done() && self.fault.hold_next() {
                // It has lied once: from now on it takes every other job and never answers it
                // (the others take those chunks over after the takeover time), and proves the
                // rest, proofs the verifiers ignore since it was caught.
                tracing::warn!("holding a job without answering (test build)");
                continue;
            }
            self.handle(keys, queue, message, stop).await?;
            if stop.is_cancelled() {
                return Ok(());
            }
        }
    }

    async fn handle(
        &self,
        keys: &Arc<KeyRing>,
        queue: JobQueue,
        message: jetstream::Message,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("message info: {e}"))?;
        let mut delivered = info.delivered;
        let published = std::time::SystemTime::from(info.published);
        let payload = message.payload.clone();
        let wire = match v1::ChunkJob::decode(payload.as_ref()) {
            Ok(wire) => wire,
            Err(e) => {
                return self
                    .dead_letter(&message, payload, &format!("undecodable job: {e}"))
                    .await;
            }
        };
        match self.turn(&wire, published).await? {
            Turn::Work { takeover } => {
                // A takeover candidate's job was handed back once and perhaps re-checked once:
                // those deliveries are not failed attempts.
                if takeover {
                    delivered = (delivered - 2).max(0);
                }
            }
            Turn::Later(delay) => {
                return message
                    .ack_with(AckKind::Nak(Some(delay)))
                    .await
                    .map_err(|e| anyhow::anyhow!("nak: {e}"));
            }
            Turn::Skip => {
                return message
                    .double_ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("ack: {e}"));
            }
        }
        if delivered >= queue.max_deliver {
            return self
                .dead_letter(
                    &message,
                    payload,
                    &format!("delivered {delivered} times without a result (workers crashed or timed out on it)"),
                )
                .await;
        }
        let job = match ChunkJob::try_from(&wire).map_err(|e| e.to_string()) {
            Ok(job) => job,
            Err(reason) => {
                return self
                    .dead_letter(&message, payload, &format!("undecodable job: {reason}"))
                    .await;
            }
        };
        let published = self.published(&job).await?;
        if let Some(reason) = unpublished(&job, &published, self.genesis_hash, &self.rules) {
            return self
                .dead_letter(
                    &message,
                    payload,
                    &format!("not the published chain: {reason}"),
                )
                .await;
        }
        let chunk = job.chunk;
        let span = tracing::info_span!("prover.job", chunk, delivered, keys = job.pre_proofs.len());
        verity_telemetry::link_nats_parent(message.headers.as_ref(), &span);
        self.process(keys, queue, &message, payload, job, stop)
            .instrument(span)
            .await
    }

    /// Whether this prover works on `job` now, later or not at all. The R provers ranked first
    /// for the chunk work at once (unless they already published a proof, or R others did). The
    /// prover ranked R + k waits until `(k + 1) × takeover` after the job was published, then
    /// works on it if fewer than R proofs of it from registered provers the verifiers have not
    /// caught lying are published; if there are R but the chunk's block is not attested `safe`,
    /// it works on it once the block before is safe and a takeover period has passed (proofs
    /// that verifiers refuse must not stall the chunk), and looks again every period until then.
    async fn turn(
        &self,
        job: &v1::ChunkJob,
        published: std::time::SystemTime,
    ) -> anyhow::Result<Turn> {
        let chunk = job.chunk;
        let own = self.key.address().0.0;
        let rank = self.assignment.rank(chunk, &own).unwrap_or(usize::MAX);
        let start_after = self.assignment.start_after(rank);
        // A clock behind the server's reads as no time waited: the takeover comes later, not
        // earlier.
        let waited = published.elapsed().unwrap_or_default();
        if waited < start_after {
            let delay = start_after - waited;
            tracing::debug!(
                chunk,
                rank,
                ?delay,
                "job for later: taken over only if its provers stay silent"
            );
            return Ok(Turn::Later(delay));
        }
        let proofs = proving::proofs_of(&self.proofs, chunk).await?;
        let mine = verity_bus::message_id(&own);
        if proofs.contains(&mine) {
            tracing::debug!(chunk, "chunk proven by this prover; job skipped");
            return Ok(Turn::Skip);
        }
        let mut others: Vec<&String> = proofs
            .iter()
            .filter(|p| self.registered.contains(p))
            .collect();
        // The attestations are read only when they can matter: for a takeover, or to discount
        // accused provers' proofs that would otherwise spare this prover the work.
        let verdicts = if start_after > Duration::ZERO || others.len() >= self.assignment.quorum {
            self.verdicts().await?
        } else {
            Verdicts::default()
        };
        others.retain(|p| !verdicts.accused.contains(p));
        let others = others.len();
        if start_after == Duration::ZERO {
            // One of the chunk's first provers: only R proofs of others spare it the work
            // (attestations are not checked here, so they never do).
            if others >= self.assignment.quorum {
                tracing::debug!(chunk, proofs = others, "chunk has its proofs; job skipped");
                return Ok(Turn::Skip);
            }
            return Ok(Turn::Work { takeover: false });
        }
        // A takeover candidate. After confirmed fraud the verifiers stop: nothing to take over.
        let block = job.mini_blocks.last().map_or(u64::MAX, |m| m.block_number);
        if verdicts.fraud || verdicts.safe >= block {
            tracing::debug!(
                chunk,
                "chunk safe, or the chain halted on fraud; job skipped"
            );
            return Ok(Turn::Skip);
        }
        if others >= self.assignment.quorum {
            // R proofs are there, yet the chunk is not safe: take it over only once the
            // verifiers stand at its block (the block before it is safe) a period later, not
            // while they are busy with earlier ones (that would add work to a backlog).
            let recheck = start_after + self.assignment.takeover;
            if waited < recheck || verdicts.safe.saturating_add(1) < block {
                let delay = if waited < recheck {
                    recheck - waited
                } else {
                    self.assignment.takeover
                };
                return Ok(Turn::Later(delay));
            }
        }
        metrics::counter!("verity_prover_takeovers_total").increment(1);
        tracing::warn!(
            chunk,
            rank,
            proofs = others,
            quorum = self.assignment.quorum,
            "taking over a chunk its first provers left unproven (or proven but not safe)"
        );
        Ok(Turn::Work { takeover: true })
    }

    /// What the verifiers' newest attestations on `VERITY_FINALITY` say: the provers caught in
    /// a false accusation, the highest block attested `safe`, and whether fraud was confirmed.
    /// Signatures are not checked (this prover is not told the verifier set), so they only
    /// steer takeovers: a forged attestation can make a takeover candidate work on a chunk it
    /// could have left, or leave one its first provers left unproven (until issue 22
    /// authenticates the bus); a chunk's first provers never skip on them.
    async fn verdicts(&self) -> anyhow::Result<Verdicts> {
        use futures::TryStreamExt as _;
        let subjects: Vec<(String, usize)> = self
            .finality
            .info_with_subjects(format!("{}.*", proving::FINALITY_SUBJECT))
            .await
            .map_err(|e| anyhow::anyhow!("finality stream: {e}"))?
            .try_collect()
            .await
            .map_err(|e| anyhow::anyhow!("finality stream: {e}"))?;
        let mut verdicts = Verdicts::default();
        for (subject, _) in subjects {
            let Ok(message) = self
                .finality
                .get_last_raw_message_by_subject(&subject)
                .await
            else {
                continue;
            };
            if let Ok(attestation) = v1::FinalityAttestation::decode(message.payload.as_ref()) {
                verdicts.safe = verdicts.safe.max(attestation.block_number);
                verdicts.fraud |= attestation.fraud;
                for accusation in attestation.false_accusations {
                    verdicts
                        .accused
                        .push(verity_bus::message_id(&accusation.prover));
                }
            }
        }
        verdicts.accused.sort();
        verdicts.accused.dedup();
        Ok(verdicts)
    }

    /// What the chain stream holds at the job's positions: each mini-block position's
    /// mini-block, and each block-seal position's (number, hash); `None` where the event there is
    /// not of that kind. A failure to read the stream is an error (the job is tried again), not
    /// a verdict on the job.
    async fn published(&self, job: &ChunkJob) -> anyhow::Result<Published> {
        let mut published = Published::default();
        for &seq in &job.mini_block_seqs {
            published.mini_blocks.push(match self.event_at(seq).await? {
                Some(ChainEventKind::MiniBlock(mini)) => Some(*mini),
                _ => None,
            });
        }
        for &seq in &job.block_hash_seqs {
            published.blocks.push(match self.event_at(seq).await? {
                Some(ChainEventKind::Block(block)) => Some(*block),
                _ => None,
            });
        }
        for &seq in &job.epoch_seqs {
            published.handovers.push(match self.event_at(seq).await? {
                Some(ChainEventKind::Handover(handover)) => Some(*handover),
                _ => None,
            });
        }
        Ok(published)
    }

    /// The event at `seq` of the chain stream (`None` if it does not decode).
    async fn event_at(&self, seq: u64) -> anyhow::Result<Option<ChainEventKind>> {
        let message = self
            .chain
            .get_raw_message(seq)
            .await
            .map_err(|e| anyhow::anyhow!("chain stream message {seq}: {e}"))?;
        Ok(verity_bus::decode_event(seq, &message.payload)
            .ok()
            .and_then(|wire| ChainEvent::try_from(&wire).ok())
            .map(|event| event.kind))
    }

    async fn process(
        &self,
        keys: &Arc<KeyRing>,
        queue: JobQueue,
        message: &jetstream::Message,
        payload: Bytes,
        job: ChunkJob,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let chunk = job.chunk;
        #[cfg(feature = "fault-injection")]
        if self.fault.fire() {
            return self.accuse_falsely_now(message, job).await;
        }
        tracing::info!(chunk, keys = job.pre_proofs.len(), "job received");
        let started = Instant::now();

        // Prove (or find fraud) on a blocking thread, telling JetStream we are alive meanwhile.
        let (chain_id, gas_limit, key) = (self.chain_id, self.gas_limit, self.key.clone());
        let keys = keys.clone();
        let mut work =
            tokio::task::spawn_blocking(move || run_job(&keys, &key, chain_id, gas_limit, job));
        let mut heartbeat = tokio::time::interval(queue.ack_wait / 3);
        heartbeat.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome?,
                _ = heartbeat.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %e, "in-progress ack failed");
                    }
                }
                _ = stop.cancelled() => {
                    // Leave the job unacknowledged: it is redelivered to another worker.
                    tracing::info!(chunk, "stopping mid-job; the job will be redelivered");
                    return Ok(());
                }
            }
        };
        let result = match outcome {
            Ok(result) => result,
            Err(reason) => {
                metrics::counter!("verity_prover_jobs_total", "outcome" => "dead_letter")
                    .increment(1);
                return self.dead_letter(message, payload, &reason).await;
            }
        };
        let outcome = match &result {
            ProverResult::Proof(_) => "proof",
            ProverResult::Fraud(_) => "fraud",
        };
        let mut headers = async_nats::HeaderMap::new();
        verity_telemetry::inject_nats(&mut headers);
        proving::publish_result(
            &self.js,
            (chunk, matches!(result, ProverResult::Fraud(_))),
            self.key.address().as_slice(),
            Bytes::from(v1::ProverResult::from(&result).encode_to_vec()),
            headers,
        )
        .await?;
        // Acknowledge only once the result is stored: a crash before this line means the job
        // is proven again, and the duplicate result is harmless.
        message
            .double_ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        let elapsed = started.elapsed();
        metrics::counter!("verity_prover_jobs_total", "outcome" => outcome).increment(1);
        metrics::histogram!("verity_prover_job_seconds").record(elapsed.as_secs_f64());
        match &result {
            ProverResult::Proof(proof) => tracing::info!(
                chunk,
                segments = proof.segments.len(),
                ?elapsed,
                post_root = %proof.post_root,
                "chunk proven"
            ),
            ProverResult::Fraud(evidence) => tracing::error!(
                chunk,
                reason = %evidence.reason,
                "FRAUD: the chunk's claimed writes are not what its transactions produce; evidence published"
            ),
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        payload: Bytes,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::error!(reason, "job dead-lettered");
        proving::dead_letter(&self.js, payload, reason).await?;
        message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| anyhow::anyhow!("term: {e}"))?;
        metrics::counter!("verity_prover_dead_letters_total").increment(1);
        Ok(())
    }
}

/// What the verifiers' newest attestations say (unchecked: see [`Prover::verdicts`]).
#[derive(Debug, Default)]
struct Verdicts {
    /// Provers caught in a false accusation ([`verity_bus::message_id`] of their address).
    accused: Vec<String>,
    /// The highest block attested `safe`.
    safe: u64,
    /// Whether a verifier confirmed fraud (and stopped).
    fraud: bool,
}

/// What a prover does with a job it was delivered.
enum Turn {
    /// Work on it (as a takeover when it was not among the first R).
    Work { takeover: bool },
    /// Hand it back, to be delivered again after the delay.
    Later(Duration),
    /// Acknowledge it without work (proven enough, or safe).
    Skip,
}

/// Checks a job and proves it or produces fraud evidence. `Err` is a job no worker can handle.
/// Every 10 s until `stop`, exports the pool's backlog, `verity_prover_pool_backlog_jobs`: the
/// jobs its consumer has not finished (not yet delivered, or delivered and not acknowledged:
/// what the autoscaler scales on). Every worker of a pool reports the same number; one busy
/// proving still reports it.
async fn report_backlog(
    jobs: jetstream::stream::Stream,
    consumer: String,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match jobs.consumer_info(&consumer).await {
            Ok(info) => {
                metrics::gauge!("verity_prover_pool_backlog_jobs", "consumer" => consumer.clone())
                    .set((info.num_pending + info.num_ack_pending as u64) as f64);
            }
            Err(error) => tracing::debug!(%error, "cannot read the pool's backlog"),
        }
    }
}

fn run_job(
    keys: &KeyRing,
    key: &SigningKey,
    chain_id: u64,
    gas_limit: u64,
    job: ChunkJob,
) -> Result<ProverResult, String> {
    let (verdict, steps) =
        verity_chunk::check_job_steps(&job, chain_id, gas_limit).map_err(|e| e.to_string())?;
    #[cfg(feature = "fault-injection")]
    let verdict = fault::attested_anyway(verdict);
    match verdict {
        Verdict::Valid => {
            let chunk = job.chunk;
            let mut proof: ChunkProof =
                verity_chunk::prove_job(keys, &job, &steps, |done, total| {
                    metrics::counter!("verity_prover_segments_total").increment(1);
                    tracing::info!(chunk, "segment {done}/{total} proven");
                })
                .map_err(|e| format!("cannot prove: {e}"))?;
            proof.prover = key.address();
            proof.signature = key.sign(&wire::attestation_hash(chain_id, &proof));
            metrics::histogram!("verity_prover_proving_seconds")
                .record(proof.proving_ms as f64 / 1000.0);
            Ok(ProverResult::Proof(Box::new(proof)))
        }
        Verdict::Fraud { reason, reexecuted } => {
            let mut evidence = FraudEvidence {
                job,
                reexecuted,
                reason,
                prover: key.address(),
                signature: verity_primitives::UNSIGNED,
            };
            evidence.signature = key.sign(&wire::fraud_hash(chain_id, &evidence));
            Ok(ProverResult::Fraud(Box::new(evidence)))
        }
    }
}
#[cfg(feature = "fault-injection")]
mod fault {
    //! Test-only lies: false fraud evidence once, then silence (the e2e false-accusation and
    //! silent-prover scenario); or, with `VERITY_FAULT_ATTEST_ANYTHING` set, a proof of whatever
    //! the sequencer published, valid or not (the dishonest-prover scenario).

    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Whether to lie, whether it has, and whether to hold the next job.
    #[derive(Debug, Default)]
    pub(super) struct FalseAccusation {
        armed: AtomicBool,
        done: AtomicBool,
        hold: AtomicBool,
    }

    /// The verdict this prover acts on: `Valid` whatever it found when told to attest anything.
    pub(super) fn attested_anyway(verdict: Verdict) -> Verdict {
        match verdict {
            Verdict::Fraud { reason, .. }
                if std::env::var_os("VERITY_FAULT_ATTEST_ANYTHING").is_some() =>
            {
                tracing::warn!(reason, "attesting a chunk found invalid (test build)");
                Verdict::Valid
            }
            verdict => verdict,
        }
    }

    impl FalseAccusation {
        /// True the first time it is called while armed.
        pub(super) fn fire(&self) -> bool {
            self.armed.load(Ordering::SeqCst) && !self.done.swap(true, Ordering::SeqCst)
        }

        pub(super) fn done(&self) -> bool {
            self.done.load(Ordering::SeqCst)
        }

        /// True every other call, from the first.
        pub(super) fn hold_next(&self) -> bool {
            !self.hold.fetch_xor(true, Ordering::SeqCst)
        }
    }

    impl Prover {
        /// Makes this prover answer its next job with fraud evidence built on an edited copy of
        /// the job (test builds only: the `fault-injection` feature).
        pub fn accuse_falsely(&mut self) {
            self.fault.armed.store(true, Ordering::SeqCst);
        }

        /// Publishes the false evidence and gives the job back (so another prover proves it).
        pub(super) async fn accuse_falsely_now(
            &self,
            message: &jetstream::Message,
            mut job: ChunkJob,
        ) -> anyhow::Result<()> {
            let chunk = job.chunk;
            let first = &mut job.mini_blocks[0];
            match first.receipts.first_mut() {
                Some(receipt) => receipt.gas_used += 1,
                None => first.base_fee += 1,
            }
            let mut evidence = FraudEvidence {
                job,
                reexecuted: Default::default(),
                reason: "the receipts differ from re-execution".into(),
                prover: self.key.address(),
                signature: verity_primitives::signing::UNSIGNED,
            };
            evidence.signature = self.key.sign(&wire::fraud_hash(self.chain_id, &evidence));
            let result = ProverResult::Fraud(Box::new(evidence));
            proving::publish_result(
                &self.js,
                (chunk, true),
                self.key.address().as_slice(),
                Bytes::from(v1::ProverResult::from(&result).encode_to_vec()),
                async_nats::HeaderMap::new(),
            )
            .await?;
            message
                .ack_with(AckKind::Nak(Some(Duration::from_millis(100))))
                .await
                .map_err(|e| anyhow::anyhow!("nak: {e}"))?;
            tracing::warn!(
                chunk,
                "sent FALSE fraud evidence (test build), gave the job back"
            );
            Ok(())
        }
    }
}

/// What the chain stream holds at a job's positions.
#[derive(Debug, Default)]
struct Published {
    mini_blocks: Vec<Option<MiniBlock>>,
    blocks: Vec<Option<Block>>,
    handovers: Vec<Option<Handover>>,
}

/// The sequencer key of each epoch the job names, and the stream position of the handover that
/// opened it (0 for the genesis's): epoch 0's key from the genesis, each later one's from the
/// handover published at the position the job names, which must carry the governance's
/// signatures and the appointed key's own (its place in the chain is the verifiers' to judge;
/// an event of the epoch must at least come after it). Why not, if a handover does not hold.
fn epoch_keys(
    job: &ChunkJob,
    published: &Published,
    rules: &Sequencing,
) -> Result<BTreeMap<u64, (alloy_primitives::Address, u64)>, String> {
    let mut keys = BTreeMap::from([(rules.genesis.number, (rules.genesis.sequencer, 0))]);
    for (seq, found) in job.epoch_seqs.iter().zip(&published.handovers) {
        let Some(handover) = found else {
            return Err(format!("stream position {seq} holds no handover"));
        };
        let before = Epoch {
            number: handover.epoch().saturating_sub(1),
            sequencer: alloy_primitives::Address::ZERO,
        };
        let epoch = rules
            .check_handover(
                &before,
                handover,
                handover.block_number,
                handover.parent_hash,
            )
            .map_err(|e| format!("the handover at stream position {seq} does not hold: {e}"))?;
        if let Some((other, _)) = keys.insert(epoch.number, (epoch.sequencer, *seq))
            && other != epoch.sequencer
        {
            return Err(format!(
                "two keys for epoch {}: {other} and {} (stream position {seq})",
                epoch.number, epoch.sequencer
            ));
        }
    }
    Ok(keys)
}

/// Why the job's inputs are not the published chain's, if they are not: a job must name a
/// stream position for each mini-block, each must hold exactly that mini-block, signed by its
/// epoch's sequencer key ([`epoch_keys`]); each block hash `BLOCKHASH` reads must be the hash of
/// a seal published where the job says, signed likewise (so neither a witness replica nor
/// anyone else who can publish on the bus hands provers mini-blocks, receipts, environments or
/// block hashes the sequencer did not sign).
fn unpublished(
    job: &ChunkJob,
    published: &Published,
    genesis_hash: alloy_primitives::B256,
    rules: &Sequencing,
) -> Option<String> {
    if job.epoch_seqs.len() != published.handovers.len() {
        return Some(format!(
            "{} handovers fetched for {} positions",
            published.handovers.len(),
            job.epoch_seqs.len()
        ));
    }
    let keys = match epoch_keys(job, published, rules) {
        Ok(keys) => keys,
        Err(reason) => return Some(reason),
    };
    // Why the event at `seq` of `epoch`, described as `what`, is not its epoch's, if it is not.
    let signed = |what: String,
                  seq: u64,
                  epoch: u64,
                  check: &dyn Fn(
        alloy_primitives::Address,
    ) -> Result<(), verity_primitives::BlockCheckError>|
     -> Option<String> {
        let Some((key, opened)) = keys.get(&epoch) else {
            return Some(format!(
                "{what} is signed under epoch {epoch}, whose handover the job does not name"
            ));
        };
        if seq <= *opened {
            return Some(format!(
                "{what} comes before the handover of its epoch {epoch} (stream position {opened})"
            ));
        }
        check(*key)
            .err()
            .map(|e| format!("{what} is not signed by epoch {epoch}'s sequencer {key}: {e}"))
    };
    if job.mini_block_seqs.len() != job.mini_blocks.len() {
        return Some(format!(
            "the job names {} stream positions for {} mini-blocks",
            job.mini_block_seqs.len(),
            job.mini_blocks.len()
        ));
    }
    for ((mini, seq), found) in job
        .mini_blocks
        .iter()
        .zip(&job.mini_block_seqs)
        .zip(&published.mini_blocks)
    {
        match found {
            Some(found) if found == mini => {
                if let Some(reason) = signed(
                    format!("mini-block {} at stream position {seq}", mini.number),
                    *seq,
                    mini.epoch,
                    &|key| mini.verify(key),
                ) {
                    return Some(reason);
                }
            }
            Some(found) => {
                return Some(format!(
                    "mini-block {} differs from the one published at stream position {seq} (hash {})",
                    mini.number, found.hash
                ));
            }
            None => {
                return Some(format!(
                    "stream position {seq} holds no mini-block (the job claims mini-block {})",
                    mini.number
                ));
            }
        }
    }
    // The hashes `BLOCKHASH` reads: block 0's the genesis's, each other the published seal's.
    if let Some(hash) = job.witness.block_hashes.get(&0)
        && *hash != genesis_hash
    {
        return Some(format!(
            "the witness's hash {hash} of block 0 is not the genesis's {genesis_hash}"
        ));
    }
    let hashes: Vec<(&u64, &alloy_primitives::B256)> = job
        .witness
        .block_hashes
        .iter()
        .filter(|(n, _)| **n != 0)
        .collect();
    if job.block_hash_seqs.len() != hashes.len() {
        return Some(format!(
            "the job names {} stream positions for {} block hashes",
            job.block_hash_seqs.len(),
            hashes.len()
        ));
    }
    for (((number, hash), seq), found) in hashes
        .into_iter()
        .zip(&job.block_hash_seqs)
        .zip(&published.blocks)
    {
        let Some(block) = found
            .as_ref()
            .filter(|b| b.number() == *number && b.hash == *hash)
        else {
            return Some(format!(
                "the witness's hash {hash} of block {number} is not the seal published at stream position {seq}"
            ));
        };
        if let Some(reason) = signed(
            format!("the seal of block {number} at stream position {seq}"),
            *seq,
            block.epoch(),
            &|key| block.verify(key),
        ) {
            return Some(reason);
        }
    }
    None
}

#[cfg(test)]
mod published_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use alloy_primitives::{Address, B256};
    use verity_primitives::{
        BlockTemplate,
        governance::{Appointment, Governance, SignedAppointment},
    };

    const CHAIN_ID: u64 = 31337;
    const GENESIS: B256 = B256::repeat_byte(0x60);

    /// The epoch-0 sequencer, a standby, and a 2-of-3 governance.
    struct Keys {
        sequencer: SigningKey,
        standby: SigningKey,
        governors: [SigningKey; 3],
    }

    fn keys() -> Keys {
        Keys {
            sequencer: SigningKey::random(),
            standby: SigningKey::random(),
            governors: [
                SigningKey::random(),
                SigningKey::random(),
                SigningKey::random(),
            ],
        }
    }

    fn rules(keys: &Keys) -> Sequencing {
        Sequencing {
            chain_id: CHAIN_ID,
            governance: Some(
                Governance::new(keys.governors.iter().map(|g| g.address()).collect(), 2).unwrap(),
            ),
            genesis: Epoch {
                number: 0,
                sequencer: keys.sequencer.address(),
            },
        }
    }

    fn mini(number: u64, epoch: u64, key: &SigningKey) -> MiniBlock {
        verity_testkit::chain::empty_mini_block(number, epoch, key)
    }

    fn seal(number: u64, epoch: u64, key: &SigningKey) -> Block {
        let template = BlockTemplate {
            number,
            parent_hash: B256::repeat_byte(number as u8),
            timestamp: 1_700_000_000 + number,
            gas_limit: 30_000_000,
            base_fee: 1_000_000_000,
            beneficiary: Address::repeat_byte(0xfe),
            epoch,
        };
        Block::seal::<MiniBlock>(template, 0, &[], B256::ZERO, key)
    }

    /// `to`'s handover of `epoch`, its appointment signed by the first `signers` governors.
    fn handover(keys: &Keys, epoch: u64, to: &SigningKey, signers: usize) -> Handover {
        let appointment = Appointment {
            chain_id: CHAIN_ID,
            epoch,
            sequencer: to.address(),
            first_height: 0,
            parent_hash: B256::ZERO,
        };
        let signatures = keys.governors[..signers]
            .iter()
            .map(|g| appointment.sign(g))
            .collect();
        Handover::new(
            SignedAppointment {
                appointment,
                signatures,
            },
            7,
            B256::repeat_byte(9),
            to,
        )
    }

    fn job(minis: Vec<MiniBlock>, seqs: Vec<u64>) -> ChunkJob {
        ChunkJob {
            chunk: minis[0].number,
            mini_blocks: minis,
            mini_block_seqs: seqs,
            block_hash_seqs: vec![],
            epoch_seqs: vec![],
            pre_root: B256::ZERO,
            post_root: B256::ZERO,
            witness: Default::default(),
            pre_proofs: vec![],
        }
    }

    fn minis<const N: usize>(found: [Option<MiniBlock>; N]) -> Published {
        Published {
            mini_blocks: found.into(),
            blocks: vec![],
            handovers: vec![],
        }
    }

    #[test]
    fn a_block_hash_must_be_the_published_seals() {
        let keys = keys();
        let rules = rules(&keys);
        let a = mini(4, 0, &keys.sequencer);
        let mut read = job(vec![a.clone()], vec![10]);
        let sealed = seal(2, 0, &keys.sequencer);
        read.witness.block_hashes.insert(2, sealed.hash);
        // No position for the hash the job reads.
        let refused = unpublished(&read, &minis([Some(a.clone())]), GENESIS, &rules);
        assert!(
            refused
                .unwrap()
                .contains("names 0 stream positions for 1 block hashes")
        );
        read.block_hash_seqs = vec![5];
        let at = |blocks| Published {
            mini_blocks: vec![Some(a.clone())],
            blocks,
            handovers: vec![],
        };
        assert_eq!(
            unpublished(&read, &at(vec![Some(sealed.clone())]), GENESIS, &rules),
            None
        );
        // Another block's seal, another hash than the seal's, or no seal there.
        let mut other_hash = sealed.clone();
        other_hash.hash = B256::repeat_byte(8);
        for blocks in [
            vec![Some(seal(3, 0, &keys.sequencer))],
            vec![Some(other_hash)],
            vec![None],
        ] {
            let refused = unpublished(&read, &at(blocks), GENESIS, &rules).unwrap();
            assert!(
                refused.contains("is not the seal published at stream position 5"),
                "{refused}"
            );
        }
        // A seal of that hash signed by another key than the epoch's.
        let mut forged = sealed.clone();
        forged.signature = keys.standby.sign(&forged.hash);
        let refused = unpublished(&read, &at(vec![Some(forged)]), GENESIS, &rules).unwrap();
        assert!(
            refused.contains(
                "the seal of block 2 at stream position 5 is not signed by epoch 0's sequencer"
            ),
            "{refused}"
        );
        // Block 0 has no seal: its hash is the genesis's, and nothing else.
        read.witness.block_hashes.insert(0, GENESIS);
        assert_eq!(
            unpublished(&read, &at(vec![Some(sealed.clone())]), GENESIS, &rules),
            None
        );
        read.witness.block_hashes.insert(0, sealed.hash);
        let refused = unpublished(&read, &at(vec![Some(sealed)]), GENESIS, &rules).unwrap();
        assert!(
            refused.contains("of block 0 is not the genesis's"),
            "{refused}"
        );
    }

    #[test]
    fn a_job_of_published_mini_blocks_passes() {
        let keys = keys();
        let (a, b) = (mini(4, 0, &keys.sequencer), mini(5, 0, &keys.sequencer));
        let job = job(vec![a.clone(), b.clone()], vec![10, 11]);
        assert_eq!(
            unpublished(&job, &minis([Some(a), Some(b)]), GENESIS, &rules(&keys)),
            None
        );
    }

    #[test]
    fn an_edited_mini_block_or_a_missing_position_is_refused() {
        let keys = keys();
        let rules = rules(&keys);
        let a = mini(4, 0, &keys.sequencer);
        // The witness edits a receipt-free field and keeps the hash: the copy differs.
        let mut edited = a.clone();
        edited.base_fee += 1;
        let refused = unpublished(
            &job(vec![edited], vec![10]),
            &minis([Some(a.clone())]),
            GENESIS,
            &rules,
        );
        assert!(
            refused
                .unwrap()
                .contains("differs from the one published at stream position 10")
        );
        // A position holding something else.
        let refused = unpublished(
            &job(vec![a.clone()], vec![10]),
            &minis([None]),
            GENESIS,
            &rules,
        );
        assert!(refused.unwrap().contains("holds no mini-block"));
        // No positions at all (a witness that does not say where its mini-blocks are).
        let refused = unpublished(&job(vec![a], vec![]), &minis([]), GENESIS, &rules);
        assert!(
            refused
                .unwrap()
                .contains("names 0 stream positions for 1 mini-blocks")
        );
    }

    /// Whoever can publish on the chain stream (a witness, any bus client until the bus is
    /// authenticated) cannot get provers to prove mini-blocks the epoch's sequencer did not
    /// sign: epoch 0's key is the genesis's, a later epoch's comes from a handover with the
    /// governance's signatures.
    #[test]
    fn a_mini_block_not_signed_by_its_epochs_key_is_refused() {
        let keys = keys();
        let rules = rules(&keys);
        // Published, hash and all, but signed by another key than epoch 0's.
        let forged = mini(4, 0, &keys.standby);
        let refused = unpublished(
            &job(vec![forged.clone()], vec![10]),
            &minis([Some(forged)]),
            GENESIS,
            &rules,
        )
        .unwrap();
        assert!(
            refused.contains(
                "mini-block 4 at stream position 10 is not signed by epoch 0's sequencer"
            ),
            "{refused}"
        );

        // Epoch 1, the standby's: its key comes only from a handover the job names.
        let next = mini(5, 1, &keys.standby);
        let mut of_epoch_1 = job(vec![next.clone()], vec![11]);
        let refused =
            unpublished(&of_epoch_1, &minis([Some(next.clone())]), GENESIS, &rules).unwrap();
        assert!(
            refused.contains("epoch 1, whose handover the job does not name"),
            "{refused}"
        );
        of_epoch_1.epoch_seqs = vec![3];
        let with = |handover: Option<Handover>| Published {
            mini_blocks: vec![Some(next.clone())],
            blocks: vec![],
            handovers: vec![handover],
        };
        assert_eq!(
            unpublished(
                &of_epoch_1,
                &with(Some(handover(&keys, 1, &keys.standby, 2))),
                GENESIS,
                &rules
            ),
            None
        );
        // A handover short of the governance's threshold, to another key, or nothing there.
        let refused = unpublished(
            &of_epoch_1,
            &with(Some(handover(&keys, 1, &keys.standby, 1))),
            GENESIS,
            &rules,
        )
        .unwrap();
        assert!(
            refused.contains("the handover at stream position 3 does not hold"),
            "{refused}"
        );
        let stranger = SigningKey::random();
        let refused = unpublished(
            &of_epoch_1,
            &with(Some(handover(&keys, 1, &stranger, 2))),
            GENESIS,
            &rules,
        )
        .unwrap();
        assert!(
            refused.contains("is not signed by epoch 1's sequencer"),
            "{refused}"
        );
        let refused = unpublished(&of_epoch_1, &with(None), GENESIS, &rules).unwrap();
        assert!(refused.contains("holds no handover"), "{refused}");
        // The epoch's mini-block published before the handover that opens the epoch.
        of_epoch_1.epoch_seqs = vec![12];
        let refused = unpublished(
            &of_epoch_1,
            &with(Some(handover(&keys, 1, &keys.standby, 2))),
            GENESIS,
            &rules,
        )
        .unwrap();
        assert!(
            refused.contains("comes before the handover of its epoch 1 (stream position 12)"),
            "{refused}"
        );
    }
}
