//! `safe` and `finalized` on every replica, counted from verifiers' signed attestations on
//! `VERITY_FINALITY`.
//!
//! Only attestations signed by a registered verifier (`--verifier-addresses`) count. A block is
//! `safe` once one registered verifier attested it (or a later block), and `finalized` once
//! `--finality-quorum` distinct registered verifiers did. A verifier's attestation that it
//! confirmed fraud raises the replica's alarm (kept in MDBX, reported by `GetHead` and the
//! gateway's `verity_status`); it never lowers a head.
//!
//! The follower re-reads the whole finality stream at start (votes are not persisted); heads only
//! move forward, so re-reading changes nothing already stored.

use std::{collections::BTreeMap, time::Duration};

use alloy_primitives::Address;
use async_nats::jetstream::Context;
use futures::StreamExt;
use prost::Message as _;
use tokio::sync::watch;
use verity_chunk::wire::{self, FinalityAttestation};
use verity_primitives::signing;
use verity_proto::v1;
use verity_server::{Backoff, stopped};
use verity_storage::Database;

/// Meta keys of the heads.
pub mod meta {
    /// Newest block attested by at least one registered verifier.
    pub const SAFE_BLOCK: &str = "safe_block";
    /// Newest block attested by a quorum of registered verifiers.
    pub const FINALIZED_BLOCK: &str = "finalized_block";
    /// Confirmed fraud reported by a verifier (UTF-8), if any.
    pub const ALARM: &str = "alarm";
}

/// Who counts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Chain id (signed into attestations).
    pub chain_id: u64,
    /// Registered verifiers.
    pub verifiers: Vec<Address>,
    /// Attestations needed for `finalized`.
    pub quorum: usize,
}

/// The heads the votes give: `(safe, finalized)`.
pub fn heads(votes: &BTreeMap<Address, u64>, quorum: usize) -> (Option<u64>, Option<u64>) {
    let mut blocks: Vec<u64> = votes.values().copied().collect();
    blocks.sort_unstable_by(|a, b| b.cmp(a));
    let safe = blocks.first().copied();
    let finalized = quorum.checked_sub(1).and_then(|i| blocks.get(i)).copied();
    (safe, finalized)
}

/// Follows the finality stream until `stop`.
pub async fn follow(
    db: Database,
    js: Context,
    settings: Settings,
    consumer_name: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !*stop.borrow() {
        match follow_once(&db, &js, &settings, &consumer_name, &mut stop).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "finality follower interrupted; retrying"
                );
                backoff.wait(&mut stop).await;
            }
        }
    }
}

async fn follow_once(
    db: &Database,
    js: &Context,
    settings: &Settings,
    consumer_name: &str,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let stream = verity_bus::proving::ensure_finality_stream(js).await?;
    let consumer =
        verity_bus::proving::reader(&stream, &format!("{consumer_name}-finality"), 1).await?;
    let mut messages = consumer.messages().await?;
    let mut votes: BTreeMap<Address, u64> = BTreeMap::new();
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = stopped(stop) => return Ok(()),
        };
        let message = match next {
            None => anyhow::bail!("finality consumer ended"),
            Some(Err(e)) => anyhow::bail!("finality consumer: {e}"),
            Some(Ok(message)) => message,
        };
        let attestation = v1::FinalityAttestation::decode(message.payload.as_ref())
            .map_err(|e| e.to_string())
            .and_then(|w| FinalityAttestation::try_from(&w).map_err(|e| e.to_string()));
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        let attestation = match attestation {
            Ok(a) => a,
            Err(reason) => {
                tracing::warn!(reason, "undecodable finality attestation ignored");
                continue;
            }
        };
        if !settings.verifiers.contains(&attestation.verifier) {
            tracing::warn!(verifier = %attestation.verifier, "attestation from an unregistered verifier ignored");
            continue;
        }
        if let Err(e) = signing::verify(
            &wire::finality_hash(settings.chain_id, &attestation),
            &attestation.signature,
            attestation.verifier,
        ) {
            tracing::warn!(verifier = %attestation.verifier, error = %e, "attestation with a bad signature ignored");
            continue;
        }
        let vote = votes.entry(attestation.verifier).or_default();
        *vote = (*vote).max(attestation.block_number);
        let (safe, finalized) = heads(&votes, settings.quorum);
        let alarm = attestation.fraud.as_ref().map(|(chunk, reason)| {
            format!(
                "verifier {} confirmed fraud in mini-block {chunk}: {reason}",
                attestation.verifier
            )
        });
        if let Some(alarm) = &alarm {
            tracing::error!(alarm, "ALARM");
            metrics::gauge!("verity_replica_fraud_alarm").set(1.0);
        }
        let db = db.clone();
        tokio::task::spawn_blocking(move || store(&db, safe, finalized, alarm)).await??;
        if let Some(safe) = safe {
            metrics::gauge!("verity_replica_safe_block").set(safe as f64);
        }
        if let Some(finalized) = finalized {
            metrics::gauge!("verity_replica_finalized_block").set(finalized as f64);
        }
    }
}

fn store(
    db: &Database,
    safe: Option<u64>,
    finalized: Option<u64>,
    alarm: Option<String>,
) -> anyhow::Result<()> {
    let read = db.read()?;
    let stored_safe = read.meta_u64(meta::SAFE_BLOCK)?;
    let stored_finalized = read.meta_u64(meta::FINALIZED_BLOCK)?;
    let stored_alarm = read.meta(meta::ALARM)?;
    drop(read);
    let mut write = db.write()?;
    if safe > stored_safe
        && let Some(safe) = safe
    {
        write.set_meta_u64(meta::SAFE_BLOCK, safe)?;
    }
    if finalized > stored_finalized
        && let Some(finalized) = finalized
    {
        write.set_meta_u64(meta::FINALIZED_BLOCK, finalized)?;
    }
    if let Some(alarm) = alarm
        && stored_alarm.is_none()
    {
        write.set_meta(meta::ALARM, alarm.as_bytes())?;
    }
    write.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_needs_one_vote_and_finalized_a_quorum() {
        let (a, b, c) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        );
        let mut votes = BTreeMap::new();
        assert_eq!(heads(&votes, 2), (None, None));
        votes.insert(a, 10);
        assert_eq!(heads(&votes, 2), (Some(10), None));
        votes.insert(b, 7);
        assert_eq!(heads(&votes, 2), (Some(10), Some(7)));
        votes.insert(c, 9);
        assert_eq!(heads(&votes, 2), (Some(10), Some(9)));
        assert_eq!(heads(&votes, 3), (Some(10), Some(7)));
        assert_eq!(heads(&votes, 4), (Some(10), None));
        assert_eq!(heads(&votes, 0), (Some(10), None));
    }
}
