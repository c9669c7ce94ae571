//! `verity status`: the chain at a glance for an operator. Heads and lags, the fraud alarm and
//! the mempool from a gateway's JSON-RPC; the active sequencer (from the lease, checked against
//! genesis) and the standing appointments, the prover pools' backlogs, the verifiers' newest
//! attestations (signatures checked) and the streams' fill from NATS with the admin credential.
//! A part that cannot be read is reported as such, the rest still shown. Refreshes in a
//! terminal; `--json` prints one object.

use std::{
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use futures::StreamExt as _;
use prost::Message as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::bench::Rpc;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// JSON-RPC URL of a gateway.
    #[arg(long, env = "VERITY_RPC_URL", default_value = "http://127.0.0.1:8545")]
    rpc_url: String,
    /// A devnet's data directory: its NATS server, admin credential, CA and genesis are used
    /// for whatever the flags below do not name.
    #[arg(long, env = "VERITY_DEVNET_DIR", default_value = ".devnet")]
    devnet_dir: PathBuf,
    /// NATS server URL(s) (the admin view of the bus: lease, provers, verifiers, streams).
    #[arg(long, env = "VERITY_NATS_URL")]
    nats_url: Option<String>,
    /// The admin's NATS nkey seed file.
    #[arg(long, env = "VERITY_NATS_NKEY_FILE")]
    nats_nkey_file: Option<PathBuf>,
    /// CA certificate of the NATS server.
    #[arg(long, env = "VERITY_NATS_TLS_CA")]
    nats_tls_ca: Option<PathBuf>,
    /// Chain genesis file: who may sign the sequencer lease and the chain id attestations are
    /// signed for.
    #[arg(long, env = "VERITY_GENESIS")]
    genesis: Option<PathBuf>,
    /// The registered verifiers (comma-separated), whose attestations count; default: a
    /// devnet's (the address of its `verifier.key`), else unknown.
    #[arg(long, env = "VERITY_VERIFIER_ADDRESSES", value_delimiter = ',')]
    verifier_addresses: Vec<alloy_primitives::Address>,
    /// Print one JSON object and exit.
    #[arg(long)]
    json: bool,
    /// Print once and exit (the default when standard output is not a terminal).
    #[arg(long)]
    once: bool,
    /// Seconds between refreshes in a terminal.
    #[arg(long, default_value_t = 2)]
    interval_secs: u64,
}

/// Everything `verity status` shows.
#[derive(Debug, Default, Serialize)]
pub struct Status {
    /// Chain id (from the gateway).
    pub chain_id: Option<u64>,
    /// `verity_status` of the gateway: heads, lags, readiness, the fraud alarm.
    pub heads: Option<Value>,
    /// `txpool_status`: pending and queued transactions.
    pub mempool: Option<Value>,
    /// The lease's holder, as checked against genesis.
    pub sequencer: Option<Sequencer>,
    /// Appointments published for later epochs (standby sequencers).
    pub appointments: Vec<Appointment>,
    /// The prover pools, by job consumer.
    pub provers: Vec<ProverPool>,
    /// Each verifier's newest attestation.
    pub verifiers: Vec<Verifier>,
    /// The streams and how full they are.
    pub streams: Vec<StreamFill>,
    /// Alarms raised anywhere (fraud, false accusations, a gateway or replica not ready).
    pub alarms: Vec<String>,
    /// Parts that could not be read, and why.
    pub unavailable: Vec<String>,
}

/// The active sequencer.
#[derive(Debug, Serialize)]
pub struct Sequencer {
    /// Its key's address.
    pub address: String,
    /// The epoch it produces under.
    pub epoch: u64,
    /// Its gRPC URL.
    pub url: String,
    /// Renewals of this holding (it renews every 50 ms).
    pub renewal: u64,
    /// A lease entry that did not verify against genesis, and why.
    pub refused: Option<String>,
}

/// A published appointment.
#[derive(Debug, Serialize)]
pub struct Appointment {
    /// The epoch it appoints for.
    pub epoch: u64,
    /// The appointed sequencer's address.
    pub sequencer: String,
}

/// One prover pool (a job consumer on `VERITY_CHUNK_JOBS`).
#[derive(Debug, Serialize)]
pub struct ProverPool {
    /// The consumer.
    pub pool: String,
    /// Jobs not yet delivered to the pool.
    pub waiting: u64,
    /// Jobs delivered and not acknowledged (being proven, or held until a takeover).
    pub in_progress: u64,
    /// Workers waiting for a job right now.
    pub idle_workers: u64,
    /// Jobs acknowledged so far (the consumer's acknowledged position).
    pub done: u64,
}

/// A verifier's newest attestation.
#[derive(Debug, Serialize)]
pub struct Verifier {
    /// Its address (the attestation's signature checked against it).
    pub address: String,
    /// The newest block it attested.
    pub block: u64,
    /// The state root after that block, as its proofs established it.
    pub state_root: String,
    /// Seconds since it was published.
    pub age_secs: Option<u64>,
    /// Confirmed fraud it reports.
    pub fraud: Option<String>,
    /// False accusations it refuted.
    pub false_accusations: usize,
    /// Whether it is a registered verifier, whose attestations replicas count (`None`: the
    /// registry is not known here).
    pub registered: Option<bool>,
}

/// One stream's fill.
#[derive(Debug, Serialize)]
pub struct StreamFill {
    /// The stream (or "storage", the account's JetStream storage).
    pub stream: String,
    /// Bytes held.
    pub bytes: u64,
    /// Its limit.
    pub max_bytes: Option<u64>,
    /// Messages held.
    pub messages: Option<u64>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let rpc = Rpc::new(&args.rpc_url)?;
    let refresh = !args.json && !args.once && std::io::stdout().is_terminal();
    loop {
        let status = gather(&args, &rpc).await;
        let mut out = std::io::stdout().lock();
        if args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
            return Ok(());
        }
        if refresh {
            // Clear the screen and go home, as `watch` does.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{}", render(&status))?;
        out.flush()?;
        drop(out);
        if !refresh {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.interval_secs.max(1))) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Reads every part; a part that fails is named in `unavailable`.
pub async fn gather(args: &StatusArgs, rpc: &Rpc) -> Status {
    let mut status = Status::default();
    match rpc.quantity("eth_chainId", json!([])).await {
        Ok(id) => status.chain_id = Some(id),
        Err(e) => status
            .unavailable
            .push(format!("gateway {}: {e:#}", args.rpc_url)),
    }
    if status.chain_id.is_some() {
        match rpc.ok("verity_status", json!([])).await {
            Ok(heads) => {
                if let Some(alarm) = heads["alarm"].as_str() {
                    status.alarms.push(format!("fraud: {alarm}"));
                }
                if let Some(reason) = heads["notReady"].as_str() {
                    status.alarms.push(format!("gateway not ready: {reason}"));
                }
                status.heads = Some(heads);
            }
            Err(e) => status.unavailable.push(format!("verity_status: {e:#}")),
        }
        match rpc.ok("txpool_status", json!([])).await {
            Ok(pool) => status.mempool = Some(pool),
            Err(e) => status.unavailable.push(format!("txpool_status: {e:#}")),
        }
    }
    if let Err(e) = bus(args, &mut status).await {
        status.unavailable.push(format!("bus: {e:#}"));
    }
    status
}

/// How to reach the bus: the flags, else the devnet's.
fn nats_args(args: &StatusArgs) -> anyhow::Result<verity_bus::NatsArgs> {
    let dir = &args.devnet_dir;
    let url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let ports = std::fs::read_dir(dir.join("nats").join("ports"))
                .with_context(|| {
                    format!(
                        "no --nats-url, and no devnet NATS under {} (--devnet-dir)",
                        dir.display()
                    )
                })?
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "ports"))
                .context("the devnet's NATS wrote no ports file")?;
            let ports: Value = serde_json::from_slice(&std::fs::read(&ports)?)?;
            ports["nats"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let devnet_file = |path: PathBuf| path.exists().then_some(path);
    Ok(verity_bus::NatsArgs {
        url,
        nkey_file: args.nats_nkey_file.clone().or_else(|| {
            devnet_file(
                dir.join("nats-keys")
                    .join(format!("{}.nk", verity_devnet::NATS_ADMIN)),
            )
        }),
        tls_ca: args.nats_tls_ca.clone().or_else(|| {
            devnet_file(
                dir.join(verity_devnet::TLS_DIR)
                    .join(verity_server::tls::CA_CERT),
            )
        }),
    })
}

async fn bus(args: &StatusArgs, status: &mut Status) -> anyhow::Result<()> {
    let nats = nats_args(args)?;
    let (_client, js) = tokio::time::timeout(Duration::from_secs(5), nats.connect("verity-status"))
        .await
        .context("NATS did not answer within 5 s")??;
    let genesis = args
        .genesis
        .clone()
        .or_else(|| Some(args.devnet_dir.join("genesis.json")).filter(|p| p.exists()));
    let spec = match &genesis {
        Some(path) => Some(verity_primitives::ChainSpec::load(path)?),
        None => None,
    };

    // The sequencer: the lease, checked against genesis (an entry that does not verify is
    // shown refused, not believed).
    match &spec {
        Some(spec) => {
            let rules = spec.sequencing(None)?;
            let store = verity_bus::lease::lease_store(&js).await?;
            if let Some(entry) = verity_bus::lease::read(&store, &rules).await? {
                status.sequencer = entry.holder.map(|holder| Sequencer {
                    address: holder.sequencer.to_string(),
                    epoch: holder.epoch,
                    url: holder.url,
                    renewal: holder.renewal,
                    refused: entry.refused.clone(),
                });
                if let Some(reason) = entry.refused {
                    status
                        .alarms
                        .push(format!("sequencer lease refused: {reason}"));
                }
            }
        }
        None => status
            .unavailable
            .push("sequencer: no genesis (--genesis) to check the lease against".into()),
    }
    match appointments(&js).await {
        Ok(found) => status.appointments = found,
        Err(e) => status.unavailable.push(format!("appointments: {e:#}")),
    }

    // Prover pools: every consumer of the jobs stream.
    match js.get_stream(verity_bus::proving::JOBS_STREAM).await {
        Ok(jobs) => {
            let mut consumers = jobs.consumers();
            while let Some(consumer) = consumers.next().await {
                let info = consumer?;
                status.provers.push(ProverPool {
                    pool: info.name.clone(),
                    waiting: info.num_pending,
                    in_progress: info.num_ack_pending as u64,
                    idle_workers: info.num_waiting as u64,
                    done: info.ack_floor.stream_sequence,
                });
            }
        }
        Err(e) => status.unavailable.push(format!("provers: {e}")),
    }

    // Verifiers: each one's newest attestation (the stream keeps one per verifier).
    let registry = registered_verifiers(args);
    match &spec {
        Some(spec) => match verifiers(&js, spec.chain_id()).await {
            Ok(mut found) => {
                for verifier in &mut found {
                    verifier.registered = registry.as_ref().map(|r| {
                        r.iter()
                            .any(|a| a.to_string().eq_ignore_ascii_case(&verifier.address))
                    });
                }
                for verifier in &found {
                    if let Some(fraud) = &verifier.fraud {
                        status
                            .alarms
                            .push(format!("fraud confirmed by {}: {fraud}", verifier.address));
                    }
                    if verifier.false_accusations > 0 {
                        status.alarms.push(format!(
                            "{} refuted {} false accusation(s)",
                            verifier.address, verifier.false_accusations
                        ));
                    }
                }
                status.verifiers = found;
            }
            Err(e) => status.unavailable.push(format!("verifiers: {e:#}")),
        },
        None => status
            .unavailable
            .push("verifiers: no genesis (--genesis) for the chain id they sign".into()),
    }

    match verity_bus::bootstrap::usage(&js).await {
        Ok(usage) => {
            status.streams = usage
                .into_iter()
                .map(|u| StreamFill {
                    stream: u.stream,
                    bytes: u.bytes,
                    max_bytes: u.max_bytes,
                    messages: u.messages,
                })
                .collect();
        }
        Err(e) => status.unavailable.push(format!("streams: {e}")),
    }
    Ok(())
}

/// The registered verifiers: the flag's, else a devnet's (its `verifier.key`; the light
/// verifier's key is not registered), else unknown.
fn registered_verifiers(args: &StatusArgs) -> Option<Vec<alloy_primitives::Address>> {
    if !args.verifier_addresses.is_empty() {
        return Some(args.verifier_addresses.clone());
    }
    let hex = std::fs::read_to_string(args.devnet_dir.join("verifier.key")).ok()?;
    let key = verity_primitives::SigningKey::from_hex(hex.trim()).ok()?;
    Some(vec![key.address()])
}

async fn appointments(js: &async_nats::jetstream::Context) -> anyhow::Result<Vec<Appointment>> {
    let Ok(mut stream) = js
        .get_stream(format!("KV_{}", verity_bus::lease::APPOINTMENTS_BUCKET))
        .await
    else {
        return Ok(Vec::new());
    };
    let info = stream.info().await?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut found = Vec::new();
    for seq in first..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let Ok(appointment) = serde_json::from_slice::<
            verity_primitives::governance::SignedAppointment,
        >(&message.payload) else {
            continue;
        };
        found.push(Appointment {
            epoch: appointment.appointment.epoch,
            sequencer: appointment.appointment.sequencer.to_string(),
        });
    }
    found.sort_by_key(|a| a.epoch);
    Ok(found)
}

async fn verifiers(
    js: &async_nats::jetstream::Context,
    chain_id: u64,
) -> anyhow::Result<Vec<Verifier>> {
    let Ok(mut stream) = js.get_stream(verity_bus::proving::FINALITY_STREAM).await else {
        return Ok(Vec::new());
    };
    let info = stream.info().await?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let now = std::time::SystemTime::now();
    let mut found = Vec::new();
    for seq in first..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let Some(attestation) = checked_attestation(&message.payload, chain_id) else {
            continue;
        };
        let published: std::time::SystemTime = message.time.into();
        found.push(Verifier {
            address: attestation.verifier.to_string(),
            block: attestation.block_number,
            state_root: attestation.state_root.to_string(),
            age_secs: now.duration_since(published).ok().map(|d| d.as_secs()),
            fraud: attestation
                .fraud
                .map(|(chunk, reason)| format!("chunk {chunk}: {reason}")),
            false_accusations: attestation.false_accusations.len(),
            registered: None,
        });
    }
    found.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(found)
}

/// A finality attestation as stored, when it decodes and its verifier's key signed it for
/// chain `chain_id`; anything else on the stream is not shown.
pub(crate) fn checked_attestation(
    payload: &[u8],
    chain_id: u64,
) -> Option<verity_chunk::wire::FinalityAttestation> {
    let wire = verity_proto::v1::FinalityAttestation::decode(payload).ok()?;
    let attestation = verity_chunk::wire::FinalityAttestation::try_from(&wire).ok()?;
    verity_primitives::signing::verify(
        &verity_chunk::wire::finality_hash(chain_id, &attestation),
        &attestation.signature,
        attestation.verifier,
    )
    .ok()?;
    Some(attestation)
}

/// The status as text for a terminal.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let number = |v: &Value| {
        v.as_u64()
            .map_or_else(|| "-".to_string(), |n| n.to_string())
    };
    line(format!(
        "Verity chain {}",
        status
            .chain_id
            .map_or_else(|| "?".to_string(), |id| id.to_string())
    ));
    if let Some(heads) = &status.heads {
        line(format!(
            "  latest {} (mini-block {})   safe {} (lag {})   finalized {} (lag {})   {}",
            number(&heads["latest"]),
            number(&heads["latestMiniBlock"]),
            number(&heads["safe"]),
            number(&heads["safeLag"]),
            number(&heads["finalized"]),
            number(&heads["finalizedLag"]),
            if heads["ready"] == json!(true) {
                "gateway ready"
            } else {
                "gateway NOT READY"
            }
        ));
    }
    if let Some(pool) = &status.mempool {
        let count = |key: &str| {
            pool[key]
                .as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .map_or_else(|| "-".to_string(), |n| n.to_string())
        };
        line(format!(
            "  mempool: {} pending, {} queued",
            count("pending"),
            count("queued")
        ));
    }
    line("Sequencers".into());
    match &status.sequencer {
        Some(s) => line(format!(
            "  active {} epoch {} at {} (renewal {}){}",
            s.address,
            s.epoch,
            s.url,
            s.renewal,
            s.refused
                .as_ref()
                .map(|r| format!("  REFUSED: {r}"))
                .unwrap_or_default()
        )),
        None => line("  no sequencer holds the lease".into()),
    }
    if !status.appointments.is_empty() {
        let active = status.sequencer.as_ref().map_or(0, |s| s.epoch);
        let next: Vec<String> = status
            .appointments
            .iter()
            .filter(|a| a.epoch > active)
            .take(4)
            .map(|a| format!("epoch {} {}", a.epoch, a.sequencer))
            .collect();
        line(format!(
            "  standing appointments: {} ({})",
            status
                .appointments
                .iter()
                .filter(|a| a.epoch > active)
                .count(),
            if next.is_empty() {
                "none ahead".to_string()
            } else {
                next.join(", ")
            }
        ));
    }
    line("Provers".into());
    if status.provers.is_empty() {
        line("  no prover pool".into());
    }
    for pool in &status.provers {
        line(format!(
            "  {}: backlog {} ({} waiting, {} in progress), {} idle worker(s), {} done",
            pool.pool,
            pool.waiting + pool.in_progress,
            pool.waiting,
            pool.in_progress,
            pool.idle_workers,
            pool.done
        ));
    }
    line("Verifiers".into());
    if status.verifiers.is_empty() {
        line("  no attestation yet".into());
    }
    for v in &status.verifiers {
        line(format!(
            "  {} attested block {} ({} s ago), root {}{}",
            v.address,
            v.block,
            v.age_secs
                .map_or_else(|| "?".to_string(), |a| a.to_string()),
            v.state_root,
            match v.registered {
                Some(false) => "  (not registered: not counted)",
                _ => "",
            }
        ));
    }
    line("Streams".into());
    for s in &status.streams {
        let fill = s
            .max_bytes
            .filter(|m| *m > 0)
            .map(|m| format!(" of {} ({:.1} %)", m, s.bytes as f64 * 100.0 / m as f64))
            .unwrap_or_default();
        line(format!(
            "  {}: {} bytes{fill}{}",
            s.stream,
            s.bytes,
            s.messages
                .map(|m| format!(", {m} messages"))
                .unwrap_or_default()
        ));
    }
    line(if status.alarms.is_empty() {
        "Alarms: none".into()
    } else {
        format!("ALARMS:\n  {}", status.alarms.join("\n  "))
    });
    for missing in &status.unavailable {
        line(format!("(not read: {missing})"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::B256;
    use verity_chunk::wire::{FinalityAttestation, finality_hash};
    use verity_primitives::SigningKey;

    use super::*;

    fn signed(key: &SigningKey, chain_id: u64, block_number: u64) -> FinalityAttestation {
        let mut attestation = FinalityAttestation {
            block_number,
            block_hash: B256::repeat_byte(1),
            state_root: B256::repeat_byte(2),
            fraud: None,
            false_accusations: Vec::new(),
            verifier: key.address(),
            signature: alloy_primitives::Signature::test_signature(),
        };
        attestation.signature = key.sign(&finality_hash(chain_id, &attestation));
        attestation
    }

    fn payload(attestation: &FinalityAttestation) -> Vec<u8> {
        verity_proto::v1::FinalityAttestation::from(attestation).encode_to_vec()
    }

    /// Only an attestation its verifier signed for this chain is shown: one whose block was
    /// changed after signing, one signed for another chain, or bytes that are no attestation
    /// are not.
    #[test]
    fn only_attestations_signed_for_this_chain_are_shown() {
        let key = SigningKey::random();
        let good = signed(&key, 7, 10);
        assert_eq!(
            checked_attestation(&payload(&good), 7).map(|a| a.block_number),
            Some(10)
        );
        let mut forged = good.clone();
        forged.block_number = 1_000;
        assert!(checked_attestation(&payload(&forged), 7).is_none());
        assert!(checked_attestation(&payload(&good), 8).is_none());
        assert!(checked_attestation(b"not an attestation", 7).is_none());
    }

    /// Alarms and unread parts are on the screen, not only in the JSON.
    #[test]
    fn the_screen_shows_alarms_and_what_was_not_read() {
        let status = Status {
            alarms: vec!["fraud confirmed by 0xabc: chunk 3: bad".into()],
            unavailable: vec!["bus: NATS did not answer within 5 s".into()],
            ..Status::default()
        };
        let text = render(&status);
        assert!(
            text.contains("ALARMS:\n  fraud confirmed by 0xabc"),
            "{text}"
        );
        assert!(
            text.contains("(not read: bus: NATS did not answer"),
            "{text}"
        );
        assert!(render(&Status::default()).contains("Alarms: none"));
    }
}
