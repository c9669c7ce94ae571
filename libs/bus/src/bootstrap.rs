//! Making the bus: every stream, key-value bucket and job consumer Verity uses, with this
//! release's configuration. It is the admin credential's work (`verity bus init`, the devnet at
//! each start, the chart's bus-init Job), done before the services start: their credentials
//! may open what exists and use it, but neither create nor reconfigure a stream, nor make a
//! consumer anywhere but on the chain stream (ADR 0014, [`crate::follower`]). Running it again
//! changes nothing that is already right.

use std::time::Duration;

use async_nats::jetstream::{Context, stream::DiscardPolicy};

use crate::{BusError, js_error, lease, proving};

/// What the bus is made for.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The job consumers to make, one per prover key ([`proving::consumer_name`]).
    pub job_consumers: Vec<String>,
    /// How long a prover may hold a job unacknowledged before it is delivered again (its
    /// workers extend it while they prove).
    pub job_ack_wait: Duration,
    /// Size limits of the streams beside the chain's.
    pub limits: Limits,
    /// Copies JetStream keeps of the chain stream, the finality stream and the lease and
    /// appointments buckets: 1 on a single server, 3 on a cluster (a majority of them must
    /// have stored a message before it is acknowledged; ADR 0016).
    pub replicas: usize,
    /// Copies of the proving streams (jobs, proofs, dead letters).
    pub proving_replicas: usize,
}

impl Layout {
    /// No job consumer, the default limits and one copy of each stream (a single server).
    pub fn single() -> Self {
        Self {
            job_consumers: Vec::new(),
            job_ack_wait: Duration::from_secs(30),
            limits: Limits::default(),
            replicas: 1,
            proving_replicas: 1,
        }
    }
}

/// Bytes each stream beside the chain's may hold; at its limit a stream drops its oldest
/// messages (a job of a chunk long proven, a proof long verified, an old dead letter), so the
/// store they share with the chain stream cannot fill up with them. The chain stream is the
/// chain's history and has no limit: its store must be sized for it ([`usage`] warns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `VERITY_CHUNK_JOBS` (jobs also expire after a day).
    pub jobs_bytes: i64,
    /// `VERITY_PROOFS`.
    pub proofs_bytes: i64,
    /// `VERITY_JOBS_DEAD`.
    pub dead_bytes: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            jobs_bytes: 4 << 30,
            proofs_bytes: 8 << 30,
            dead_bytes: 1 << 30,
        }
    }
}

/// How full a stream is.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamUsage {
    /// The stream.
    pub stream: String,
    /// Bytes it holds.
    pub bytes: u64,
    /// Its limit, if it has one.
    pub max_bytes: Option<u64>,
    /// Messages it holds (none for the account's storage).
    pub messages: Option<u64>,
}

impl StreamUsage {
    /// The fraction of its limit it holds (`None`: no limit).
    pub fn fill(&self) -> Option<f64> {
        self.max_bytes
            .filter(|max| *max > 0)
            .map(|max| self.bytes as f64 / max as f64)
    }
}

/// The usage of every stream the bus has, and of the JetStream storage they share (as the
/// stream `"storage"`, when the account has a storage limit).
pub async fn usage(js: &Context) -> Result<Vec<StreamUsage>, BusError> {
    let mut found = Vec::new();
    for name in [
        crate::CHAIN_STREAM,
        proving::JOBS_STREAM,
        proving::PROOFS_STREAM,
        proving::DEAD_STREAM,
        proving::FINALITY_STREAM,
    ] {
        // Opening a stream reads its info: no second request.
        let Ok(stream) = js.get_stream(name).await else {
            continue;
        };
        let info = stream.cached_info();
        found.push(StreamUsage {
            stream: name.to_string(),
            bytes: info.state.bytes,
            max_bytes: u64::try_from(info.config.max_bytes).ok(),
            messages: Some(info.state.messages),
        });
    }
    // The account's storage and its limit, read as plain JSON: async-nats's typed account info
    // expects fields nats-server 2.9 does not send.
    let account: serde_json::Value = js
        .request("INFO", &serde_json::json!({}))
        .await
        .map_err(|e| js_error("account info", e))?;
    let max = account["limits"]["max_storage"].as_i64().unwrap_or(-1);
    if let (Ok(max), Some(used)) = (u64::try_from(max), account["storage"].as_u64())
        && max > 0
    {
        found.push(StreamUsage {
            stream: "storage".to_string(),
            bytes: used,
            max_bytes: Some(max),
            messages: None,
        });
    }
    Ok(found)
}

/// Share of a limit past which [`watch_usage`] warns.
pub const NEARLY_FULL: f64 = 0.8;

/// Every `every`, records each stream's bytes and limit (`verity_bus_stream_bytes`,
/// `verity_bus_stream_limit_bytes`) and warns of one past [`NEARLY_FULL`] of its limit, saying
/// what happens at it; and each stream's messages (`verity_bus_stream_messages`). Runs until
/// the process ends.
pub async fn watch_usage(js: Context, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let usage = match usage(&js).await {
            Ok(usage) => usage,
            Err(error) => {
                tracing::debug!(%error, "cannot read stream usage");
                continue;
            }
        };
        for stream in usage {
            let label = stream.stream.clone();
            metrics::gauge!("verity_bus_stream_bytes", "stream" => label.clone())
                .set(stream.bytes as f64);
            if let Some(messages) = stream.messages {
                metrics::gauge!("verity_bus_stream_messages", "stream" => label.clone())
                    .set(messages as f64);
            }
            if let Some(max) = stream.max_bytes {
                metrics::gauge!("verity_bus_stream_limit_bytes", "stream" => label).set(max as f64);
            }
            if let Some(fill) = stream.fill().filter(|f| *f >= NEARLY_FULL) {
                let at_limit = if stream.stream == "storage" {
                    "at the limit the chain stream refuses new events and the chain stops: \
                     grow the JetStream store"
                } else {
                    "at the limit it drops its oldest messages"
                };
                tracing::warn!(
                    stream = stream.stream,
                    bytes = stream.bytes,
                    max_bytes = stream.max_bytes,
                    "{} is {:.0} % full; {at_limit}",
                    stream.stream,
                    fill * 100.0
                );
            }
        }
    }
}

/// Brings an existing `stream` to `replicas` copies and, given, a byte limit at which it drops
/// its oldest messages, in one update (none when it has them already). The server changes a
/// running stream's copies itself: new ones catch up from the leader.
async fn settle(
    js: &Context,
    stream: &str,
    replicas: usize,
    max_bytes: Option<i64>,
) -> Result<(), BusError> {
    let opened = js
        .get_stream(stream)
        .await
        .map_err(|e| js_error("open stream", e))?;
    crate::reconfigure(js, &opened, "configure stream", |config| {
        config.num_replicas = replicas;
        if let Some(bytes) = max_bytes {
            config.max_bytes = bytes;
            config.discard = DiscardPolicy::Old;
        }
    })
    .await
    .map_err(|error| match error {
        BusError::JetStream { reason, .. } if replicas > 1 && reason.contains("clustered") => {
            BusError::JetStream {
                operation: "configure stream",
                reason: format!(
                    "{reason}: {replicas} copies of {stream} need a JetStream cluster of at least \
                     {replicas} servers (--replicas 1 for a single server)"
                ),
            }
        }
        other => other,
    })
}

/// Waits until JetStream answers this account's requests (a cluster's servers have elected a
/// metadata leader, which takes a few seconds after they start), for up to `within`.
pub async fn wait_ready(js: &Context, within: Duration) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer: Result<serde_json::Value, _> = js.request("INFO", &serde_json::json!({})).await;
        let error = match answer {
            Ok(info) if info.get("error").is_none() => return Ok(()),
            Ok(info) => info["error"].to_string(),
            Err(error) => error.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BusError::JetStream {
                operation: "wait for JetStream",
                reason: format!("not available within {within:?}: {error}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes (or brings to this release's configuration) every stream, bucket and job consumer of
/// `layout`; returns what it made or checked, one line each, for the operator.
pub async fn init(js: &Context, layout: &Layout) -> Result<Vec<String>, BusError> {
    let mut done = Vec::new();
    let (replicas, proving_replicas) = (layout.replicas.max(1), layout.proving_replicas.max(1));
    // Each stream is made whole, copies and limits in the creating request: scaled or limited
    // right after, the cluster's metadata lost streams after a SIGKILL and deleted them as
    // orphaned (nats-server 2.11.11, ADR 0016). A cluster that has just elected its metadata
    // leader may not know every server yet and cannot place the copies for a moment.
    let placed_by = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match crate::chain_stream(js, replicas).await {
            Ok(_) => break,
            Err(error)
                if error.to_string().contains("no suitable peers")
                    && tokio::time::Instant::now() < placed_by =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error),
        }
    }
    let (jobs, _) = proving::proving_streams(js, proving_replicas, Some(&layout.limits)).await?;
    proving::finality_stream(js, Some(replicas)).await?;
    lease::lease_store_with(js, replicas).await?;
    lease::keep_lease_history(js).await?;
    lease::appointments_store_with(js, replicas).await?;
    // A bus made by an earlier release (or with other flags) is brought to this configuration.
    let limits = &layout.limits;
    for (stream, copies, bytes) in [
        (crate::CHAIN_STREAM.to_string(), replicas, None),
        (proving::FINALITY_STREAM.to_string(), replicas, None),
        (format!("KV_{}", lease::LEASE_BUCKET), replicas, None),
        (format!("KV_{}", lease::APPOINTMENTS_BUCKET), replicas, None),
        (
            proving::JOBS_STREAM.to_string(),
            proving_replicas,
            Some(limits.jobs_bytes),
        ),
        (
            proving::PROOFS_STREAM.to_string(),
            proving_replicas,
            Some(limits.proofs_bytes),
        ),
        (
            proving::DEAD_STREAM.to_string(),
            proving_replicas,
            Some(limits.dead_bytes),
        ),
    ] {
        settle(js, &stream, copies, bytes).await?;
        done.push(match bytes {
            Some(bytes) => {
                format!("stream {stream}: {copies} copies, {bytes} bytes (oldest dropped)")
            }
            None => format!("stream {stream}: {copies} copies"),
        });
    }
    for name in &layout.job_consumers {
        jobs.create_consumer(proving::job_consumer_config(name, layout.job_ack_wait))
            .await
            .map_err(|e| js_error("create job consumer", e))?;
        done.push(format!("job consumer {name} on {}", proving::JOBS_STREAM));
    }
    Ok(done)
}
