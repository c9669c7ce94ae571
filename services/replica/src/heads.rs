//! `safe` and `finalized` on every replica, counted from verifiers' signed attestations on
//! `VERITY_FINALITY`.
//!
//! Only attestations signed by a registered verifier (`--verifier-addresses`) count. A block is
//! `safe` once one registered verifier attested it (or a later block), and `finalized` once
//! `--finality-quorum` distinct registered verifiers did. A verifier's attestation that it
//! confirmed fraud raises the replica's alarm (kept in MDBX, reported by `GetHead` and the
//! gateway's `verity_status`); it never lowers a head.
//!
//! Votes (each registered verifier's newest attested block) and the follower's position in the
//! stream are stored in MDBX with the heads, in one transaction per attestation, so a restart
//! resumes where the follower stopped; the stream itself keeps only each verifier's newest
//! attestation, so a replica that starts late reads one message per verifier. Heads only move
//! forward, so reading an attestation again changes nothing already stored.

use std::{collections::BTreeMap, time::Duration};

use alloy_primitives::Address;
use async_nats::jetstream::Context;
use prost::Message as _;

use verity_chunk::wire::{self, FinalityAttestation};
use verity_primitives::signing;
use verity_proto::v1;
use verity_server::{Backoff, CancellationToken};
use verity_storage::Database;

/// Meta keys of the heads.
pub mod meta {
    /// Newest block attested by at least one registered verifier.
    pub const SAFE_BLOCK: &str = "safe_block";
    /// Newest block attested by a quorum of registered verifiers.
    pub const FINALIZED_BLOCK: &str = "finalized_block";
    /// Confirmed fraud reported by a verifier (UTF-8), if any.
    pub const ALARM: &str = "alarm";
    /// A false accusation reported by a verifier (UTF-8), if any: the first one. Shown when
    /// there is no fraud alarm; `safe` goes on.
    pub const ACCUSATION: &str = "false_accusation_alarm";
    /// The votes: per registered verifier that attested, its address and its newest attested
    /// block (big-endian), 28 bytes each.
    pub const VOTES: &str = "finality_votes";
    /// First `VERITY_FINALITY` message not yet counted.
    pub const NEXT_SEQ: &str = "finality_next_seq";
}

/// The votes as stored under [`meta::VOTES`].
fn encode_votes(votes: &BTreeMap<Address, u64>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(28 * votes.len());
    for (verifier, block) in votes {
        bytes.extend_from_slice(verifier.as_slice());
        bytes.extend_from_slice(&block.to_be_bytes());
    }
    bytes
}

/// The votes stored under [`meta::VOTES`]; `None` when the bytes are not a whole number of votes.
fn decode_votes(bytes: &[u8]) -> Option<BTreeMap<Address, u64>> {
    if !bytes.len().is_multiple_of(28) {
        return None;
    }
    bytes
        .chunks_exact(28)
        .map(|vote| {
            let (address, block) = vote.split_at(20);
            Some((
                Address::from_slice(address),
                u64::from_be_bytes(block.try_into().ok()?),
            ))
        })
        .collect()
}

/// The stored votes and the first stream message not yet counted.
fn load(db: &Database) -> anyhow::Result<(BTreeMap<Address, u64>, u64)> {
    let read = db.read()?;
    let votes = match read.meta(meta::VOTES)? {
        None => BTreeMap::new(),
        Some(bytes) => decode_votes(&bytes).ok_or_else(|| {
            anyhow::anyhow!("stored finality votes are corrupt ({} bytes)", bytes.len())
        })?,
    };
    // What is stored is exported at once: a restarted replica shows its heads and its alarms
    // (at 0 when there are none) before the next attestation arrives.
    if let Some(safe) = read.meta_u64(meta::SAFE_BLOCK)? {
        metrics::gauge!("verity_replica_safe_block").set(safe as f64);
    }
    if let Some(finalized) = read.meta_u64(meta::FINALIZED_BLOCK)? {
        metrics::gauge!("verity_replica_finalized_block").set(finalized as f64);
    }
    let raised = |stored: Option<Vec<u8>>| if stored.is_some() { 1.0 } else { 0.0 };
    metrics::gauge!("verity_replica_fraud_alarm").set(raised(read.meta(meta::ALARM)?));
    metrics::gauge!("verity_replica_false_accusation_alarm")
        .set(raised(read.meta(meta::ACCUSATION)?));
    Ok((votes, read.meta_u64(meta::NEXT_SEQ)?.unwrap_or(1)))
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
pub async fn follow(db: Database, js: Context, settings: Settings, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    while !stop.is_cancelled() {
        match follow_once(&db, &js, &settings, &stop).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "finality follower interrupted; retrying"
                );
                backoff.wait(&stop).await;
            }
        }
    }
}

async fn follow_once(
    db: &Database,
    js: &Context,
    settings: &Settings,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (mut votes, next_seq) = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || load(&db)).await??
    };
    let stream = verity_bus::proving::open_finality_stream(js).await?;
    let mut reader = verity_bus::proving::reader(stream, next_seq);
    loop {
        let message = tokio::select! {
            next = reader.next() => next?,
            _ = stop.cancelled() => return Ok(()),
        };
        let next_seq = message.seq + 1;
        let counted = count(settings, &mut votes, message.payload.as_ref());
        let (safe, finalized) = heads(&votes, settings.quorum);
        let alarm = counted.as_ref().and_then(|attestation| {
            attestation.fraud.as_ref().map(|(chunk, reason)| {
                format!(
                    "verifier {} confirmed fraud in mini-block {chunk}: {reason}",
                    attestation.verifier
                )
            })
        });
        if let Some(alarm) = &alarm {
            tracing::error!(alarm, "ALARM");
            metrics::gauge!("verity_replica_fraud_alarm").set(1.0);
        }
        let accusation = counted.as_ref().and_then(|attestation| {
            attestation.false_accusations.first().map(|accused| {
                format!(
                    "verifier {} refuted fraud evidence from prover {} for mini-block {}: {}; that prover's results are ignored",
                    attestation.verifier, accused.prover, accused.chunk, accused.reason
                )
            })
        });
        if let Some(accusation) = &accusation {
            tracing::warn!(accusation, "FALSE ACCUSATION");
            metrics::gauge!("verity_replica_false_accusation_alarm").set(1.0);
        }
        let stored = Stored {
            attestation: counted
                .as_ref()
                .map(|a| (a.block_number, a.verifier, message.payload.to_vec())),
            votes: votes.clone(),
            next_seq,
            safe,
            finalized,
            alarm,
            accusation,
        };
        let db = db.clone();
        tokio::task::spawn_blocking(move || store(&db, stored)).await??;
        if let Some(safe) = safe {
            metrics::gauge!("verity_replica_safe_block").set(safe as f64);
        }
        if let Some(finalized) = finalized {
            metrics::gauge!("verity_replica_finalized_block").set(finalized as f64);
        }
    }
}

/// Counts one attestation into `votes` when it is decodable, from a registered verifier and
/// signed by it; returns it if it counted.
fn count(
    settings: &Settings,
    votes: &mut BTreeMap<Address, u64>,
    payload: &[u8],
) -> Option<FinalityAttestation> {
    let attestation = match v1::FinalityAttestation::decode(payload)
        .map_err(|e| e.to_string())
        .and_then(|w| FinalityAttestation::try_from(&w).map_err(|e| e.to_string()))
    {
        Ok(a) => a,
        Err(reason) => {
            tracing::warn!(reason, "undecodable finality attestation ignored");
            return None;
        }
    };
    if !settings.verifiers.contains(&attestation.verifier) {
        tracing::warn!(verifier = %attestation.verifier, "attestation from an unregistered verifier ignored");
        return None;
    }
    if let Err(e) = signing::verify(
        &wire::finality_hash(settings.chain_id, &attestation),
        &attestation.signature,
        attestation.verifier,
    ) {
        tracing::warn!(verifier = %attestation.verifier, error = %e, "attestation with a bad signature ignored");
        return None;
    }
    let vote = votes.entry(attestation.verifier).or_default();
    *vote = (*vote).max(attestation.block_number);
    Some(attestation)
}

/// What one counted message leaves in MDBX.
#[derive(Debug)]
struct Stored {
    /// The attestation counted (block, verifier, as received), kept for proofs of state.
    attestation: Option<(u64, Address, Vec<u8>)>,
    votes: BTreeMap<Address, u64>,
    next_seq: u64,
    safe: Option<u64>,
    finalized: Option<u64>,
    alarm: Option<String>,
    accusation: Option<String>,
}

/// What `verity_status` shows as the alarm: confirmed fraud, or else a false accusation.
pub fn alarm(
    read: &verity_storage::ReadTx<'_>,
) -> Result<Option<String>, verity_storage::StorageError> {
    let stored = match read.meta(meta::ALARM)? {
        Some(alarm) => Some(alarm),
        None => read.meta(meta::ACCUSATION)?,
    };
    Ok(stored.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn store(db: &Database, stored: Stored) -> anyhow::Result<()> {
    let read = db.read()?;
    let stored_safe = read.meta_u64(meta::SAFE_BLOCK)?;
    let stored_finalized = read.meta_u64(meta::FINALIZED_BLOCK)?;
    let stored_alarm = read.meta(meta::ALARM)?;
    let stored_accusation = read.meta(meta::ACCUSATION)?;
    drop(read);
    let mut write = db.write()?;
    write.set_meta(meta::VOTES, &encode_votes(&stored.votes))?;
    if let Some((number, verifier, bytes)) = &stored.attestation {
        write.put_attestation(*number, *verifier, bytes)?;
    }
    write.set_meta_u64(meta::NEXT_SEQ, stored.next_seq)?;
    if stored.safe > stored_safe
        && let Some(safe) = stored.safe
    {
        write.set_meta_u64(meta::SAFE_BLOCK, safe)?;
    }
    if stored.finalized > stored_finalized
        && let Some(finalized) = stored.finalized
    {
        write.set_meta_u64(meta::FINALIZED_BLOCK, finalized)?;
    }
    if let Some(alarm) = stored.alarm
        && stored_alarm.is_none()
    {
        write.set_meta(meta::ALARM, alarm.as_bytes())?;
    }
    if let Some(accusation) = stored.accusation
        && stored_accusation.is_none()
    {
        write.set_meta(meta::ACCUSATION, accusation.as_bytes())?;
    }
    write.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::B256;
    use verity_primitives::SigningKey;

    use super::*;

    fn attestation(key: &SigningKey, chain_id: u64, block: u64) -> Vec<u8> {
        let mut attestation = FinalityAttestation {
            false_accusations: Vec::new(),
            block_number: block,
            block_hash: B256::repeat_byte(block as u8),
            state_root: B256::repeat_byte(7),
            fraud: None,
            verifier: key.address(),
            signature: signing::UNSIGNED,
        };
        attestation.signature = key.sign(&wire::finality_hash(chain_id, &attestation));
        v1::FinalityAttestation::from(&attestation).encode_to_vec()
    }

    #[test]
    fn only_signed_attestations_of_registered_verifiers_count() {
        let (registered, stranger) = (SigningKey::random(), SigningKey::random());
        let settings = Settings {
            chain_id: 7,
            verifiers: vec![registered.address()],
            quorum: 1,
        };
        let mut votes = BTreeMap::new();
        assert!(count(&settings, &mut votes, &attestation(&stranger, 7, 5)).is_none());
        assert!(count(&settings, &mut votes, &attestation(&registered, 8, 5)).is_none());
        assert!(count(&settings, &mut votes, b"not protobuf").is_none());
        assert!(votes.is_empty());
        assert!(count(&settings, &mut votes, &attestation(&registered, 7, 5)).is_some());
        // An older attestation read again never lowers a vote.
        assert!(count(&settings, &mut votes, &attestation(&registered, 7, 3)).is_some());
        assert_eq!(votes, BTreeMap::from([(registered.address(), 5)]));
    }

    /// A restarted follower gets back its votes and position; heads never move back.
    #[test]
    fn votes_and_position_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        assert_eq!(load(&db).unwrap(), (BTreeMap::new(), 1));
        let votes = BTreeMap::from([(Address::repeat_byte(1), 10), (Address::repeat_byte(2), 7)]);
        let (safe, finalized) = heads(&votes, 2);
        store(
            &db,
            Stored {
                attestation: Some((10, Address::repeat_byte(1), b"signed".to_vec())),
                votes: votes.clone(),
                next_seq: 42,
                safe,
                finalized,
                alarm: None,
                accusation: None,
            },
        )
        .unwrap();
        assert_eq!(load(&db).unwrap(), (votes, 42));
        store(
            &db,
            Stored {
                attestation: None,
                votes: BTreeMap::new(),
                next_seq: 43,
                safe: Some(3),
                finalized: None,
                alarm: None,
                accusation: None,
            },
        )
        .unwrap();
        let read = db.read().unwrap();
        assert_eq!(read.meta_u64(meta::SAFE_BLOCK).unwrap(), Some(10));
        assert_eq!(read.meta_u64(meta::FINALIZED_BLOCK).unwrap(), Some(7));
        assert_eq!(read.meta_u64(meta::NEXT_SEQ).unwrap(), Some(43));
        assert_eq!(read.attestations(10).unwrap(), vec![b"signed".to_vec()]);
    }

    #[test]
    fn corrupt_stored_votes_are_an_error_not_an_empty_set() {
        assert_eq!(decode_votes(&[0u8; 27]), None);
        let votes = BTreeMap::from([(Address::repeat_byte(9), u64::MAX)]);
        assert_eq!(decode_votes(&encode_votes(&votes)), Some(votes));
    }

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
