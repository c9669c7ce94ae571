//! The authenticated state tree (native side): a compressed sparse Merkle tree over full
//! 256-bit keys.
//!
//! **Shape.** Conceptually a binary tree of depth 256 indexed by the bits of a 32-byte key, most
//! significant first. It is stored compressed, with the canonical rule of Diem's and Aptos'
//! sparse Merkle trees: a subtree holding no leaf has the digest [`EMPTY`]; a subtree holding
//! exactly one leaf has that leaf's digest, wherever the leaf sits; any other subtree has
//! `node(left, right)`. The root therefore depends only on the set of `(key, value)` pairs, not
//! on the order of updates, and a path is only as long as the longest prefix a key shares with
//! another key.
//!
//! **Keys keep full collision resistance.** Keys are the full 32-byte outputs of
//! [`account_key`] and [`storage_key`]; nothing is truncated to fit a field. An attacker who
//! grinds addresses can make a path longer (each extra shared bit costs twice the work) but can
//! never make two keys collide.
//!
//! **Hash.** The tree is generic over [`TreeHasher`]. [`Poseidon2Bn254`] is the state tree's
//! hash, over the field of the KZG chunk proofs (docs/adr/0007-halo2-backend.md); [`Keccak`] is
//! the fast native one, for comparison and for uses that never enter a circuit.
//!
//! **Updates** come in batches ([`SparseMerkleTree::apply`]): every touched path is re-hashed
//! once, with shared upper nodes hashed once per batch, not once per write.

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{Address, B256, U256, keccak256};
use rayon::prelude::*;
use verity_primitives::Account;

mod partial;
mod poseidon;
pub mod state_proof;
pub use partial::{PartialError, PartialTree};
pub use poseidon::bn254;
pub use poseidon::bn254::{
    Poseidon2Bn254, digest as field_digest, element as field_element, hash as poseidon_hash,
    hash_in_domain as poseidon_hash_in_domain, limbs as field_limbs,
};

/// The digest of an empty subtree.
pub const EMPTY: B256 = B256::ZERO;

/// The two hashes of the tree. Implementations must keep leaf and node digests in separate
/// domains, so a leaf can never be passed off as an internal node or the reverse, and must never
/// return [`EMPTY`] for real input.
pub trait TreeHasher: Sync {
    /// The digest of a leaf holding `value` (itself a digest of the state value) at `key`.
    fn leaf(&self, key: &B256, value: &B256) -> B256;
    /// The digest of an internal node.
    fn node(&self, left: &B256, right: &B256) -> B256;
}

/// keccak256 with one-byte domain tags: `leaf = keccak(0x00 ‖ key ‖ value)`,
/// `node = keccak(0x01 ‖ left ‖ right)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keccak;

impl TreeHasher for Keccak {
    fn leaf(&self, key: &B256, value: &B256) -> B256 {
        let mut input = [0u8; 65];
        input[1..33].copy_from_slice(key.as_slice());
        input[33..].copy_from_slice(value.as_slice());
        keccak256(input)
    }

    fn node(&self, left: &B256, right: &B256) -> B256 {
        let mut input = [1u8; 65];
        input[1..33].copy_from_slice(left.as_slice());
        input[33..].copy_from_slice(right.as_slice());
        keccak256(input)
    }
}

/// The tree key of an account: `keccak256("verity.account" ‖ address)`.
pub fn account_key(address: Address) -> B256 {
    let mut input = Vec::with_capacity(14 + 20);
    input.extend_from_slice(b"verity.account");
    input.extend_from_slice(address.as_slice());
    keccak256(input)
}

/// The tree key of a storage slot: `keccak256("verity.storage" ‖ address ‖ slot)`.
pub fn storage_key(address: Address, slot: U256) -> B256 {
    let mut input = Vec::with_capacity(14 + 20 + 32);
    input.extend_from_slice(b"verity.storage");
    input.extend_from_slice(address.as_slice());
    input.extend_from_slice(&slot.to_be_bytes::<32>());
    keccak256(input)
}

/// The leaf value of an account: `keccak256(nonce u64 BE ‖ balance ‖ code_hash)`.
pub fn account_value(account: &Account) -> B256 {
    let mut input = [0u8; 8 + 32 + 32];
    input[..8].copy_from_slice(&account.nonce.to_be_bytes());
    input[8..40].copy_from_slice(&account.balance.to_be_bytes::<32>());
    input[40..].copy_from_slice(account.code_hash.as_slice());
    keccak256(input)
}

/// The leaf value of a storage slot: the value itself, 32 bytes big-endian (zero is never
/// stored: writing zero deletes the leaf).
pub fn storage_value(value: U256) -> B256 {
    B256::from(value.to_be_bytes::<32>())
}

/// Bit `depth` of `key`, most significant first.
fn bit(key: &B256, depth: usize) -> bool {
    key[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// `key` with every bit from `depth` on cleared: the prefix naming a subtree.
fn prefix(key: &B256, depth: usize) -> B256 {
    let mut out = B256::ZERO;
    let whole = depth / 8;
    out[..whole].copy_from_slice(&key[..whole]);
    if !depth.is_multiple_of(8) {
        out[whole] = key[whole] & !(0xffu8 >> (depth % 8));
    }
    out
}

/// The greatest key under `prefix` at `depth`.
fn prefix_end(prefix: &B256, depth: usize) -> B256 {
    let mut out = *prefix;
    let whole = depth / 8;
    if !depth.is_multiple_of(8) {
        out[whole] |= 0xffu8 >> (depth % 8);
        out[whole + 1..].fill(0xff);
    } else {
        out[whole..].fill(0xff);
    }
    out
}

/// `prefix` at `depth` extended with bit 1.
fn right_child(prefix: &B256, depth: usize) -> B256 {
    let mut out = *prefix;
    out[depth / 8] |= 0x80 >> (depth % 8);
    out
}

/// What a key holds after a step that reads it (`write` is `None`) or writes `write`, given
/// what it held: a zero write to an absent key changes nothing, a zero write to a present key
/// leaves a leaf holding zero (see [`Step`]).
fn next_value(previous: Option<B256>, write: Option<B256>) -> Option<B256> {
    match (previous, write) {
        (previous, None) => previous,
        (None, Some(value)) if value == EMPTY => None,
        (_, Some(value)) => Some(value),
    }
}

/// One write of a batch: `Some(value)` sets the leaf, `None` removes it.
pub type Update = (B256, Option<B256>);

/// A proof that a key holds a value, or holds none, under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Sibling digests from the root down to the terminal subtree.
    pub siblings: Vec<B256>,
    /// The single leaf of the terminal subtree, if it is not empty: `(key, value)`. For a
    /// membership proof it is the key itself; for a non-membership proof it is another key
    /// sharing the path, or `None` when the terminal subtree is empty.
    pub terminal: Option<(B256, B256)>,
}

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The recomputed root differs.
    #[error("the proof computes root {computed}, not {expected}")]
    RootMismatch {
        /// Root the proof leads to.
        computed: B256,
        /// Root it was checked against.
        expected: B256,
    },
    /// The terminal leaf does not say what was claimed about the key.
    #[error("the proof's terminal leaf contradicts the claim about the key")]
    WrongTerminal,
    /// The terminal leaf is not on the key's path.
    #[error("the proof's terminal leaf does not share the key's path")]
    OffPath,
    /// More siblings than key bits.
    #[error("the proof is deeper than 256 levels")]
    TooDeep,
}

impl Proof {
    /// Checks that under `root`, `key` holds `value` (`None`: holds nothing).
    pub fn verify<H: TreeHasher>(
        &self,
        hasher: &H,
        root: B256,
        key: &B256,
        value: Option<&B256>,
    ) -> Result<(), ProofError> {
        let digest = self.compute_root(hasher, key, value)?;
        if digest == root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch {
                computed: digest,
                expected: root,
            })
        }
    }

    /// The root under which `key` holds `value` (`None`: nothing) according to this proof.
    pub fn compute_root<H: TreeHasher>(
        &self,
        hasher: &H,
        key: &B256,
        value: Option<&B256>,
    ) -> Result<B256, ProofError> {
        let depth = self.siblings.len();
        if depth > 256 {
            return Err(ProofError::TooDeep);
        }
        let mut digest = match (&self.terminal, value) {
            (Some((k, v)), Some(claimed)) if k == key && v == claimed => hasher.leaf(k, v),
            (Some(_), Some(_)) | (None, Some(_)) => return Err(ProofError::WrongTerminal),
            (Some((k, _)), None) if k == key => return Err(ProofError::WrongTerminal),
            (Some((k, v)), None) => {
                if prefix(k, depth) != prefix(key, depth) {
                    return Err(ProofError::OffPath);
                }
                hasher.leaf(k, v)
            }
            (None, None) => EMPTY,
        };
        for (level, sibling) in self.siblings.iter().enumerate().rev() {
            digest = if bit(key, level) {
                hasher.node(sibling, &digest)
            } else {
                hasher.node(&digest, sibling)
            };
        }
        Ok(digest)
    }
}

/// One key's step through the tree, the unit a chunk proof is made of: what the key held
/// before and after, with a proof of each against the root before and after the step.
///
/// Values follow the circuit's convention: an absent key holds [`EMPTY`] (zero). A write of
/// zero to a present key leaves a leaf holding zero (a tombstone); a write of zero to an absent
/// key changes nothing. So the tree never shrinks, and every step is an update, an insertion or
/// a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The tree key.
    pub key: B256,
    /// The value before (zero when absent).
    pub before: B256,
    /// The value after (zero when absent).
    pub after: B256,
    /// Whether the key had a leaf before.
    pub was_present: bool,
    /// Whether the key has a leaf after.
    pub is_present: bool,
    /// The key's proof under the root before the step.
    pub old: Proof,
    /// The key's proof under the root after the step.
    pub new: Proof,
}

impl Step {
    /// The step of `key` from `previous` to `next` (`None`: absent), with its proofs.
    fn new(key: B256, previous: Option<B256>, next: Option<B256>, old: Proof, new: Proof) -> Self {
        Self {
            key,
            before: previous.unwrap_or(EMPTY),
            after: next.unwrap_or(EMPTY),
            was_present: previous.is_some(),
            is_present: next.is_some(),
            old,
            new,
        }
    }

    /// The roots before and after the step, as its proofs compute them.
    pub fn roots<H: TreeHasher>(&self, hasher: &H) -> Result<(B256, B256), ProofError> {
        let before = self.was_present.then_some(&self.before);
        let after = self.is_present.then_some(&self.after);
        if (!self.was_present && self.before != EMPTY) || (!self.is_present && self.after != EMPTY)
        {
            return Err(ProofError::WrongTerminal);
        }
        Ok((
            self.old.compute_root(hasher, &self.key, before)?,
            self.new.compute_root(hasher, &self.key, after)?,
        ))
    }
}

/// The tree, held in memory: the leaves with their digests, and the digest of every subtree
/// with two or more leaves. Nothing already hashed is hashed again: a batch hashes its own
/// leaves (on every core) and the nodes above them, and a proof only reads digests.
#[derive(Debug, Clone)]
pub struct SparseMerkleTree<H> {
    hasher: H,
    /// Key to (value, leaf digest).
    leaves: BTreeMap<B256, (B256, B256)>,
    nodes: HashMap<(u16, B256), B256>,
    root: B256,
}

impl<H: TreeHasher + Default> Default for SparseMerkleTree<H> {
    fn default() -> Self {
        Self::new(H::default())
    }
}

/// Touched keys each side of a node needs before its two subtrees are hashed in parallel:
/// below this, the cost of handing work to another core exceeds the hashing.
const PARALLEL_MIN_KEYS: usize = 32;

/// Node-cache changes of one batch, applied after its digests are computed.
#[derive(Debug, Default)]
struct Changes {
    insert: Vec<((u16, B256), B256)>,
    forget: Vec<(u16, B256)>,
}

impl Changes {
    fn append(&mut self, mut other: Changes) {
        self.insert.append(&mut other.insert);
        self.forget.append(&mut other.forget);
    }
}

impl<H: TreeHasher> SparseMerkleTree<H> {
    /// An empty tree.
    pub fn new(hasher: H) -> Self {
        Self {
            hasher,
            leaves: BTreeMap::new(),
            nodes: HashMap::new(),
            root: EMPTY,
        }
    }

    /// The hasher.
    pub fn hasher(&self) -> &H {
        &self.hasher
    }

    /// The root digest.
    pub fn root(&self) -> B256 {
        self.root
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// True when the tree holds no leaf.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The value at `key`.
    pub fn get(&self, key: &B256) -> Option<&B256> {
        self.leaves.get(key).map(|(value, _)| value)
    }

    /// Applies a batch of writes and returns the new root. Later writes to the same key win.
    /// Each touched path is re-hashed once per batch.
    pub fn apply(&mut self, updates: impl IntoIterator<Item = Update>) -> B256 {
        let mut dirty: Vec<B256> = Vec::new();
        for (key, value) in updates {
            match value {
                Some(value) => self.leaves.insert(key, (value, EMPTY)),
                None => self.leaves.remove(&key),
            };
            dirty.push(key);
        }
        if dirty.is_empty() {
            return self.root;
        }
        dirty.sort_unstable();
        dirty.dedup();
        let digests: Vec<Option<B256>> = dirty
            .par_iter()
            .with_min_len(8)
            .map(|key| {
                self.leaves
                    .get(key)
                    .map(|(value, _)| self.hasher.leaf(key, value))
            })
            .collect();
        for (key, digest) in dirty.iter().zip(digests) {
            if let (Some(digest), Some(leaf)) = (digest, self.leaves.get_mut(key)) {
                leaf.1 = digest;
            }
        }
        let present: Vec<bool> = dirty.iter().map(|k| self.leaves.contains_key(k)).collect();
        self.root = self.rehash(0, B256::ZERO, &dirty, &present);
        self.root
    }

    /// The single leaf of a subtree (key, value, digest), or a count of two for "more than
    /// one".
    fn leaves_under(&self, prefix: &B256, depth: usize) -> (usize, Option<(B256, B256, B256)>) {
        let mut range = self.leaves.range(*prefix..=prefix_end(prefix, depth));
        match (range.next(), range.next()) {
            (None, _) => (0, None),
            (Some((k, (v, d))), None) => (1, Some((*k, *v, *d))),
            (Some(_), Some(_)) => (2, None),
        }
    }

    /// The digest of an untouched subtree. A cached digest exists exactly for the subtrees with
    /// two or more leaves, so only a subtree without one needs its leaves looked up.
    fn digest(&self, prefix: &B256, depth: usize) -> B256 {
        if let Some(digest) = self.nodes.get(&(depth as u16, *prefix)) {
            return *digest;
        }
        match self.leaves_under(prefix, depth) {
            (0, _) => EMPTY,
            (1, Some((_, _, digest))) => digest,
            _ => self.recompute(prefix, depth),
        }
    }

    /// Full recomputation of a subtree (only reached if the node cache lacks an entry, which
    /// `apply` never leaves behind).
    fn recompute(&self, prefix: &B256, depth: usize) -> B256 {
        match self.leaves_under(prefix, depth) {
            (0, _) => EMPTY,
            (1, Some((_, _, digest))) => digest,
            _ => {
                let left = self.recompute(prefix, depth + 1);
                let right = self.recompute(&right_child(prefix, depth), depth + 1);
                self.hasher.node(&left, &right)
            }
        }
    }

    /// Whether the subtree at (`depth`, `prefix`) holds two or more leaves after the batch,
    /// given its touched keys (sorted) and which of them are present now. Decided without a
    /// leaf lookup when the batch says enough: two present touched keys, or a subtree that had
    /// two or more leaves before (it has a cached digest) and lost none.
    fn is_multi(&self, depth: usize, prefix: &B256, present: &[bool]) -> bool {
        let kept = present.iter().filter(|p| **p).count();
        if kept >= 2 {
            return true;
        }
        if kept == present.len() && self.nodes.contains_key(&(depth as u16, *prefix)) {
            return true;
        }
        self.leaves_under(prefix, depth).0 >= 2
    }

    /// Re-hashes the subtree at (`depth`, `prefix`) given the sorted touched keys under it and
    /// whether each is present after the batch, then records the new node digests.
    fn rehash(&mut self, depth: usize, prefix: B256, dirty: &[B256], present: &[bool]) -> B256 {
        let mut changes = Changes::default();
        let digest = self.plan(depth, prefix, dirty, present, &mut changes);
        for key in changes.forget {
            self.nodes.remove(&key);
        }
        self.nodes.extend(changes.insert);
        digest
    }

    /// The read-only half of [`rehash`](Self::rehash): computes the subtree's digest and the
    /// node-cache changes it implies, without applying them. Every prefix is visited once per
    /// batch and only reads its own cache entry (as it was before the batch) and those of
    /// untouched subtrees, so deferring the changes computes the same digests, and disjoint
    /// subtrees with enough touched keys are hashed on different cores.
    fn plan(
        &self,
        depth: usize,
        prefix: B256,
        dirty: &[B256],
        present: &[bool],
        changes: &mut Changes,
    ) -> B256 {
        if dirty.is_empty() {
            return self.digest(&prefix, depth);
        }
        if self.is_multi(depth, &prefix, present) {
            let split = dirty.partition_point(|key| !bit(key, depth));
            let (left_dirty, right_dirty) = dirty.split_at(split);
            let (left_present, right_present) = present.split_at(split);
            let right_prefix = right_child(&prefix, depth);
            let (left, right) = if left_dirty.len().min(right_dirty.len()) >= PARALLEL_MIN_KEYS {
                let mut right_changes = Changes::default();
                let (left, right) = rayon::join(
                    || self.plan(depth + 1, prefix, left_dirty, left_present, changes),
                    || {
                        self.plan(
                            depth + 1,
                            right_prefix,
                            right_dirty,
                            right_present,
                            &mut right_changes,
                        )
                    },
                );
                changes.append(right_changes);
                (left, right)
            } else {
                (
                    self.plan(depth + 1, prefix, left_dirty, left_present, changes),
                    self.plan(depth + 1, right_prefix, right_dirty, right_present, changes),
                )
            };
            let digest = self.hasher.node(&left, &right);
            changes.insert.push(((depth as u16, prefix), digest));
            return digest;
        }
        // The subtree holds at most one leaf. If it held more before (it has a cached digest),
        // it collapsed: forget the internal digests the touched keys' paths held below here.
        // Several removed keys can leave digests on paths they shared only in part, so every
        // level of every touched path is cleared. A subtree that held at most one leaf before
        // has no digest below it to forget.
        if self.nodes.contains_key(&(depth as u16, prefix)) {
            changes.forget.push((depth as u16, prefix));
            for key in dirty {
                for level in depth + 1..256 {
                    changes
                        .forget
                        .push((level as u16, self::prefix(key, level)));
                }
            }
        }
        match self.leaves_under(&prefix, depth) {
            (1, Some((_, _, digest))) => digest,
            _ => EMPTY,
        }
    }

    /// Reads `key` (`write` is `None`) or writes it, and returns the step with its proofs.
    /// See [`Step`] for how zero values are kept.
    pub fn step(&mut self, key: B256, write: Option<B256>) -> Step {
        let old = self.prove(&key);
        let previous = self.get(&key).copied();
        let next = next_value(previous, write);
        if next != previous {
            self.apply([(key, next)]);
        }
        Step::new(key, previous, next, old, self.prove(&key))
    }

    /// Writes a batch with the convention of [`step`](Self::step) (a zero write to an absent
    /// key changes nothing, to a present key it leaves a leaf holding zero; nothing is removed)
    /// and returns the new root: the root the same writes reach one step at a time, hashed once
    /// per batch. Each key is written at most once per batch.
    pub fn write_batch(&mut self, writes: impl IntoIterator<Item = (B256, B256)>) -> B256 {
        let updates: Vec<Update> = writes
            .into_iter()
            .filter_map(|(key, value)| {
                let previous = self.get(&key).copied();
                next_value(previous, Some(value))
                    .filter(|next| Some(*next) != previous)
                    .map(|next| (key, Some(next)))
            })
            .collect();
        self.apply(updates)
    }

    /// Proofs of what each of `keys` holds under [`root`](Self::root), computed on every core
    /// (proofs only read digests the tree holds).
    pub fn prove_many(&self, keys: &[B256]) -> Vec<Proof> {
        keys.par_iter()
            .with_min_len(16)
            .map(|key| self.prove(key))
            .collect()
    }

    /// A proof of what `key` holds (a value or nothing) under [`root`](Self::root).
    pub fn prove(&self, key: &B256) -> Proof {
        let mut siblings = Vec::new();
        let mut depth = 0;
        let mut here = B256::ZERO;
        loop {
            match self.leaves_under(&here, depth) {
                (0, _) => {
                    return Proof {
                        siblings,
                        terminal: None,
                    };
                }
                (1, single) => {
                    return Proof {
                        siblings,
                        terminal: single.map(|(key, value, _)| (key, value)),
                    };
                }
                _ => {
                    let right = right_child(&here, depth);
                    if bit(key, depth) {
                        siblings.push(self.digest(&here, depth + 1));
                        here = right;
                    } else {
                        siblings.push(self.digest(&right, depth + 1));
                    }
                    depth += 1;
                }
            }
        }
    }
}

/// The root of a set of leaves computed from scratch: the definition the incremental tree must
/// match.
pub fn root_of<H: TreeHasher>(hasher: &H, leaves: &BTreeMap<B256, B256>) -> B256 {
    fn go<H: TreeHasher>(hasher: &H, leaves: &[(B256, B256)], depth: usize) -> B256 {
        match leaves {
            [] => EMPTY,
            [(k, v)] => hasher.leaf(k, v),
            _ => {
                let split = leaves.partition_point(|(k, _)| !bit(k, depth));
                let (left, right) = leaves.split_at(split);
                hasher.node(&go(hasher, left, depth + 1), &go(hasher, right, depth + 1))
            }
        }
    }
    let sorted: Vec<(B256, B256)> = leaves.iter().map(|(k, v)| (*k, *v)).collect();
    go(hasher, &sorted, 0)
}

#[cfg(test)]
mod tests;
