//! `GetProof` (`eth_getProof`): proofs of an account and its slots against the state-tree root
//! after a sealed block, served by a witness replica from its tree journal.
//!
//! The tree lives in the witness role's memory at the head; the journal (`TreeJournal`,
//! `TreeRoots`, written in the same MDBX transaction as each chunk) holds what every chunk did
//! to each leaf. A proof at block `n` needs the tree at the block's version (the number after
//! its last mini-block). One tree is kept here, built once from this replica's own state at its
//! head, then moved to whichever version is asked for by applying the journal forwards or
//! undoing it backwards. Every move ends with its root checked against the root the witness
//! recorded for that version, and every answer is checked with the same function a client runs
//! ([`verity_commitment::state_proof`]) before it leaves: a replica never serves a proof that
//! does not hold.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use alloy_primitives::{Address, B256, U256};
use tonic::Status;
use verity_chunk::StateTree;
use verity_commitment::{
    account_key,
    state_proof::{encode_proof, verify_account, verify_storage},
    storage_key,
};
use verity_primitives::StateView;
use verity_proto::{u256_bytes, v1};
use verity_server::status::storage;
use verity_storage::{ReadTx, StateAt, tables::META_TREE_JOURNAL_FROM};

use crate::apply::meta;

/// Most slots one request may ask proofs of.
pub const MAX_PROOF_SLOTS: usize = 1024;

/// The tree a replica proves from, at the version it was last moved to.
#[derive(Debug, Clone, Default)]
pub struct ProofTree(Arc<Mutex<Option<(u64, StateTree)>>>);

impl ProofTree {
    /// Answers a proof request at block `number` over `read`: the root after the block with its
    /// attestations, and the proofs of `address` and its `slots`.
    pub fn prove(
        &self,
        read: &ReadTx<'_>,
        address: Address,
        slots: Vec<U256>,
        number: u64,
    ) -> Result<v1::ProofResponse, Status> {
        if slots.len() > MAX_PROOF_SLOTS {
            return Err(Status::invalid_argument(format!(
                "{} storage keys asked for; at most {MAX_PROOF_SLOTS} per request",
                slots.len()
            )));
        }
        let (block, version) = sealed(read, number)?;
        if read
            .history_from()
            .map_err(storage)?
            .is_none_or(|from| number < from)
        {
            return Err(Status::failed_precondition(format!(
                "the state of block {number} is not available: this replica keeps no state history that far back"
            )));
        }
        let mut guard = self
            .0
            .lock()
            .map_err(|_| Status::internal("the proof tree's lock is poisoned"))?;
        let tree = tree_at(&mut guard, read, version)?;
        let root = tree.root();

        let state = StateAt::new(read, number);
        let mut response = v1::ProofResponse {
            block_number: number,
            block_hash: block.hash.to_vec(),
            state_root: root.to_vec(),
            attestations: read.attestations(number).map_err(storage)?,
            ..Default::default()
        };
        let account = state.account(address).map_err(storage)?;
        let account_proof = tree.prove(&account_key(address));
        verify_account(root, address, account.as_ref(), &account_proof).map_err(|e| {
            Status::internal(format!(
                "the state tree and the state history disagree on {address} at block {number}: {e}"
            ))
        })?;
        for slot in slots {
            let value = state.storage(address, slot).map_err(storage)?;
            let proof = tree.prove(&storage_key(address, slot));
            verify_storage(root, address, slot, value, &proof).map_err(|e| {
                Status::internal(format!(
                    "the state tree and the state history disagree on slot {slot} of {address} at block {number}: {e}"
                ))
            })?;
            response.storage.push(v1::SlotProof {
                slot: u256_bytes(slot),
                value: u256_bytes(value),
                proof: Some(v1::StateProof {
                    items: encode_proof(&proof),
                }),
            });
        }
        drop(guard);
        response.exists = account.is_some();
        let account = account.unwrap_or_default();
        response.nonce = account.nonce;
        response.balance = u256_bytes(account.balance);
        response.code_hash = account.code_hash.to_vec();
        response.account_proof = Some(v1::StateProof {
            items: encode_proof(&account_proof),
        });
        Ok(response)
    }
}
/// Sealed block `number` and its tree version (the mini-blocks up to its end).
fn sealed(read: &ReadTx<'_>, number: u64) -> Result<(verity_primitives::Block, u64), Status> {
    let block = read
        .block_by_number(number)
        .map_err(storage)?
        .ok_or_else(|| Status::not_found(format!("block {number} is not sealed yet")))?;
    let version = block.first_mini_block + block.mini_block_count;
    Ok((block, version))
}

/// The first version the state-tree journal reaches back to; an error on a replica that keeps
/// none (only a witness does).
fn journal_from(read: &ReadTx<'_>) -> Result<u64, Status> {
    read.meta_u64(META_TREE_JOURNAL_FROM)
        .map_err(storage)?
        .ok_or_else(|| {
            Status::failed_precondition(
                "this replica keeps no state-tree journal: only a witness replica serves proofs \
                 and roots (point the gateway's --proof-replica-url at one)",
            )
        })
}

/// The root the witness recorded after block `number` and the attestations of that block, with
/// no proofs (`verity_getStateRoot`, and the root the gateway adds to blocks).
pub fn recorded_root(read: &ReadTx<'_>, number: u64) -> Result<v1::ProofResponse, Status> {
    let (block, version) = sealed(read, number)?;
    let Some(root) = read.tree_root(version).map_err(storage)? else {
        let from = journal_from(read)?;
        return Err(if version < from {
            Status::failed_precondition(format!(
                "the state-tree journal begins at mini-block {from}, after this block"
            ))
        } else {
            Status::unavailable(format!(
                "the witness has not recorded the root after block {number} yet; retry shortly"
            ))
        });
    };
    Ok(v1::ProofResponse {
        block_number: number,
        block_hash: block.hash.to_vec(),
        state_root: root.to_vec(),
        attestations: read.attestations(number).map_err(storage)?,
        ..Default::default()
    })
}

/// Moves the kept tree to `version` (building it from `read`'s state at its head first when
/// there is none), checks its root against the one recorded there, and returns it.
fn tree_at<'a>(
    kept: &'a mut Option<(u64, StateTree)>,
    read: &ReadTx<'_>,
    version: u64,
) -> Result<&'a StateTree, Status> {
    let from = journal_from(read)?;
    let head = read
        .meta_u64(meta::NEXT_MINI_BLOCK)
        .map_err(storage)?
        .unwrap_or(0);
    if version < from {
        return Err(Status::failed_precondition(format!(
            "the state-tree journal begins at mini-block {from}, after this block: its proofs are not kept"
        )));
    }
    if version > head {
        return Err(Status::unavailable(format!(
            "the witness has applied mini-blocks up to {head}, not yet this block's last ({version}); retry shortly"
        )));
    }
    let expected = read.tree_root(version).map_err(storage)?.ok_or_else(|| {
        Status::internal(format!(
            "no state-tree root is recorded at mini-block {version}"
        ))
    })?;
    let (at, mut tree) = match kept.take() {
        Some((at, tree)) if at <= head => (at, tree),
        _ => {
            let started = std::time::Instant::now();
            let tree = crate::witness::tree_of_state(read).map_err(storage)?;
            tracing::info!(
                leaves = tree.len(),
                head,
                elapsed = ?started.elapsed(),
                "proof tree built from the state"
            );
            (head, tree)
        }
    };
    let mut updates: BTreeMap<B256, Option<B256>> = BTreeMap::new();
    if at < version {
        // Forwards: each key's leaf after its last change.
        for change in read.tree_changes(at, version).map_err(storage)? {
            updates.insert(change.key, change.after);
        }
    } else {
        // Backwards: each key's leaf before its first change after `version`.
        for change in read.tree_changes(version, at).map_err(storage)? {
            updates.entry(change.key).or_insert(change.before);
        }
    }
    let moved = updates.len();
    tree.apply(updates);
    metrics::histogram!("verity_replica_proof_tree_moved_keys").record(moved as f64);
    if tree.root() != expected {
        // Dropped: the next request builds it again from the state.
        return Err(Status::internal(format!(
            "the state tree at mini-block {version} has root {}, the witness recorded {expected}",
            tree.root()
        )));
    }
    Ok(&kept.insert((version, tree)).1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloy_primitives::{Address, U256};
    use verity_primitives::{AccountDiff, StateDiff};
    use verity_storage::Database;

    use super::*;
    use crate::witness::zero_leaves;

    /// Three chunks (versions 1, 2, 3) over a real MDBX file, journaled as the witness does; the
    /// tree moved to each version, in any order, has the root recorded there.
    #[test]
    fn the_kept_tree_moves_to_any_journaled_version_and_checks_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        let a = Address::repeat_byte(0xaa);
        let diff = |balance: u64, pairs: &[(u64, u64)]| StateDiff {
            accounts: [(
                a,
                AccountDiff {
                    balance: Some(U256::from(balance)),
                    storage: pairs
                        .iter()
                        .map(|(s, v)| (U256::from(*s), U256::from(*v)))
                        .collect(),
                    ..Default::default()
                },
            )]
            .into(),
        };
        let mut live = StateTree::default();
        let mut roots = vec![live.root()];
        for (version, d) in [
            diff(5, &[(1, 10), (2, 20)]),
            diff(6, &[(2, 0)]),
            diff(7, &[(2, 30), (1, 0), (3, 3)]),
        ]
        .into_iter()
        .enumerate()
        {
            let version = version as u64 + 1;
            let before_state = [(a, db.read().unwrap().account(a).unwrap())].into();
            let writes = verity_chunk::tree_writes(&d, &before_state);
            let before: Vec<Option<B256>> = writes.keys().map(|k| live.get(k).copied()).collect();
            let pre_root = live.root();
            live.write_batch(writes.clone());
            let changes: Vec<_> = writes
                .keys()
                .zip(before)
                .map(|(k, b)| (*k, b, live.get(k).copied()))
                .filter(|(_, b, after)| b != after)
                .collect();
            let mut write = db.write().unwrap();
            write.apply_diff(&d).unwrap();
            write
                .put_tree_tombstones(&zero_leaves(&writes, &live))
                .unwrap();
            write
                .put_tree_changes((version - 1, pre_root), version, live.root(), &changes)
                .unwrap();
            write.set_meta_u64(meta::NEXT_MINI_BLOCK, version).unwrap();
            write.commit().unwrap();
            roots.push(live.root());
        }
        let read = db.read().unwrap();
        let mut kept = None;
        for version in [2, 0, 3, 1, 1, 3] {
            let tree = tree_at(&mut kept, &read, version).unwrap();
            assert_eq!(tree.root(), roots[version as usize], "version {version}");
        }
        assert_eq!(
            tree_at(&mut kept, &read, 4).unwrap_err().code(),
            tonic::Code::Unavailable
        );
        drop(read);

        // A journal that lies about a leaf is caught by the recorded root.
        let mut write = db.write().unwrap();
        write
            .put_tree_changes(
                (0, roots[0]),
                2,
                roots[2],
                &[(
                    storage_key(a, U256::from(9)),
                    Some(B256::repeat_byte(1)),
                    None,
                )],
            )
            .unwrap();
        write.commit().unwrap();
        let read = db.read().unwrap();
        let mut kept = None;
        let error = tree_at(&mut kept, &read, 1).unwrap_err();
        assert_eq!(error.code(), tonic::Code::Internal, "{error}");
        assert!(
            kept.is_none(),
            "a tree that failed its root check is not kept"
        );
    }
}
