//! A state tree known only along some keys' paths: what a prover rebuilds from a job's
//! pre-state proofs, so that the witness replica ships one proof per touched key (read off its
//! tree, no hashing) and the per-step proofs a chunk circuit needs are derived where the proving
//! is, on horizontally scaled workers.
//!
//! [`PartialTree::from_proofs`] merges proofs of keys against one root into a tree whose
//! untouched subtrees are opaque digests; [`PartialTree::step`] then behaves exactly as
//! [`SparseMerkleTree::step`](crate::SparseMerkleTree::step) would on the whole tree, for any
//! key whose path the proofs cover.

use alloy_primitives::B256;

use crate::{EMPTY, Proof, ProofError, Step, TreeHasher, bit, next_value, prefix};

/// Why a partial tree cannot be built or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartialError {
    /// A key's path leads into a subtree no proof opened.
    #[error("key {0} is outside the part of the tree the proofs cover")]
    NotCovered(B256),
    /// Two proofs describe the same subtree differently.
    #[error("the proof of key {0} contradicts another key's proof")]
    Conflict(B256),
    /// A proof is malformed.
    #[error("the proof of key {key}: {error}")]
    Proof {
        /// The key.
        key: B256,
        /// What is wrong.
        error: ProofError,
    },
    /// The merged proofs do not lead to the root they were given against.
    #[error("the proofs compute root {computed}, not {expected}")]
    RootMismatch {
        /// Root of the merged proofs.
        computed: B256,
        /// Root they were checked against.
        expected: B256,
    },
}

/// A subtree, with digests computed once and forgotten along the paths a write changes.
#[derive(Debug, Clone)]
enum Node {
    /// No leaf.
    Empty,
    /// Exactly one leaf.
    Leaf {
        key: B256,
        value: B256,
        digest: Option<B256>,
    },
    /// A subtree no proof opened: only its digest is known.
    Opaque(B256),
    /// Two or more leaves.
    Branch {
        children: Box<[Node; 2]>,
        digest: Option<B256>,
    },
}

impl Node {
    fn digest<H: TreeHasher>(&mut self, hasher: &H) -> B256 {
        match self {
            Node::Empty => EMPTY,
            Node::Opaque(digest) => *digest,
            Node::Leaf { key, value, digest } => {
                *digest.get_or_insert_with(|| hasher.leaf(key, value))
            }
            Node::Branch { children, digest } => {
                if let Some(digest) = digest {
                    return *digest;
                }
                let [left, right] = &mut **children;
                let computed = hasher.node(&left.digest(hasher), &right.digest(hasher));
                *digest = Some(computed);
                computed
            }
        }
    }

    fn leaf(key: B256, value: B256) -> Self {
        Node::Leaf {
            key,
            value,
            digest: None,
        }
    }

    fn branch(left: Node, right: Node) -> Self {
        Node::Branch {
            children: Box::new([left, right]),
            digest: None,
        }
    }

    /// The subtree at `depth` holding the leaves `a` and `b` (different keys).
    fn split(depth: usize, a: (B256, B256), b: (B256, B256)) -> Self {
        match (bit(&a.0, depth), bit(&b.0, depth)) {
            (false, true) => Node::branch(Node::leaf(a.0, a.1), Node::leaf(b.0, b.1)),
            (true, false) => Node::branch(Node::leaf(b.0, b.1), Node::leaf(a.0, a.1)),
            (false, false) => Node::branch(Node::split(depth + 1, a, b), Node::Empty),
            (true, true) => Node::branch(Node::Empty, Node::split(depth + 1, a, b)),
        }
    }
}

/// The tree along the paths of some keys (see the module documentation).
#[derive(Debug, Clone)]
pub struct PartialTree<H> {
    hasher: H,
    top: Node,
}

impl<H: TreeHasher> PartialTree<H> {
    /// Merges proofs of keys against `root`. Fails if a proof is malformed, two proofs disagree
    /// about a subtree, or the merged tree's root is not `root`.
    pub fn from_proofs<'a>(
        hasher: H,
        root: B256,
        proofs: impl IntoIterator<Item = (&'a B256, &'a Proof)>,
    ) -> Result<Self, PartialError> {
        let mut top = Node::Opaque(root);
        for (key, proof) in proofs {
            merge(&mut top, key, proof)?;
        }
        let mut tree = Self { hasher, top };
        let computed = tree.root();
        if computed != root {
            return Err(PartialError::RootMismatch {
                computed,
                expected: root,
            });
        }
        Ok(tree)
    }

    /// The root digest.
    pub fn root(&mut self) -> B256 {
        self.top.digest(&self.hasher)
    }

    /// What `key` holds (`None`: nothing).
    pub fn get(&self, key: &B256) -> Result<Option<B256>, PartialError> {
        let mut node = &self.top;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return Ok(None),
                Node::Leaf { key: k, value, .. } => return Ok((k == key).then_some(*value)),
                Node::Opaque(_) => return Err(PartialError::NotCovered(*key)),
                Node::Branch { children, .. } => {
                    node = &children[usize::from(bit(key, depth))];
                    depth += 1;
                }
            }
        }
    }

    /// A proof of what `key` holds under [`root`](Self::root).
    pub fn prove(&mut self, key: &B256) -> Result<Proof, PartialError> {
        let mut siblings = Vec::new();
        let mut node = &mut self.top;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => {
                    return Ok(Proof {
                        siblings,
                        terminal: None,
                    });
                }
                Node::Leaf { key: k, value, .. } => {
                    return Ok(Proof {
                        siblings,
                        terminal: Some((*k, *value)),
                    });
                }
                Node::Opaque(_) => return Err(PartialError::NotCovered(*key)),
                Node::Branch { children, .. } => {
                    let (on, off) = on_and_off_path(children, key, depth);
                    siblings.push(off.digest(&self.hasher));
                    node = on;
                    depth += 1;
                }
            }
        }
    }

    /// Reads `key` (`write` is `None`) or writes it, and returns the step with its proofs, as
    /// [`SparseMerkleTree::step`](crate::SparseMerkleTree::step) does.
    pub fn step(&mut self, key: B256, write: Option<B256>) -> Result<Step, PartialError> {
        let old = self.prove(&key)?;
        let previous = self.get(&key)?;
        let next = next_value(previous, write);
        if let Some(value) = next
            && next != previous
        {
            set(&mut self.top, 0, key, value)?;
        }
        Ok(Step::new(key, previous, next, old, self.prove(&key)?))
    }
}

/// A branch's children at `depth`: the one on `key`'s path, and its sibling.
fn on_and_off_path<'n>(
    children: &'n mut [Node; 2],
    key: &B256,
    depth: usize,
) -> (&'n mut Node, &'n mut Node) {
    let [left, right] = children;
    if bit(key, depth) {
        (right, left)
    } else {
        (left, right)
    }
}

/// Adds one key's proof to the tree.
fn merge(top: &mut Node, key: &B256, proof: &Proof) -> Result<(), PartialError> {
    let depth = proof.siblings.len();
    if depth > 256 {
        return Err(PartialError::Proof {
            key: *key,
            error: ProofError::TooDeep,
        });
    }
    if let Some((k, _)) = &proof.terminal
        && prefix(k, depth) != prefix(key, depth)
    {
        return Err(PartialError::Proof {
            key: *key,
            error: ProofError::OffPath,
        });
    }
    let mut node = top;
    for (level, sibling) in proof.siblings.iter().enumerate() {
        if let Node::Opaque(_) = node {
            // Opened here; the child on the path is set by the next level or the terminal.
            *node = Node::branch(Node::Opaque(*sibling), Node::Opaque(*sibling));
        }
        match node {
            Node::Branch { children, .. } => {
                let (on, off) = on_and_off_path(children, key, level);
                if let Node::Opaque(digest) = off
                    && digest != sibling
                {
                    return Err(PartialError::Conflict(*key));
                }
                node = on;
            }
            _ => return Err(PartialError::Conflict(*key)),
        }
    }
    let terminal = match proof.terminal {
        Some((k, v)) => Node::leaf(k, v),
        None => Node::Empty,
    };
    match (&*node, &terminal) {
        (Node::Opaque(_), _) => *node = terminal,
        (Node::Empty, Node::Empty) => {}
        (
            Node::Leaf {
                key: a, value: x, ..
            },
            Node::Leaf {
                key: b, value: y, ..
            },
        ) if a == b && x == y => {}
        _ => return Err(PartialError::Conflict(*key)),
    }
    Ok(())
}

/// Sets `key` to `value` below `node` (at `depth`), forgetting the digests on its path.
fn set(node: &mut Node, depth: usize, key: B256, value: B256) -> Result<(), PartialError> {
    match node {
        Node::Opaque(_) => return Err(PartialError::NotCovered(key)),
        Node::Empty => *node = Node::leaf(key, value),
        Node::Leaf {
            key: k,
            value: v,
            digest,
        } => {
            if *k == key {
                *v = value;
                *digest = None;
            } else {
                *node = Node::split(depth, (*k, *v), (key, value));
            }
        }
        Node::Branch { children, digest } => {
            *digest = None;
            return set(
                &mut children[usize::from(bit(&key, depth))],
                depth + 1,
                key,
                value,
            );
        }
    }
    Ok(())
}
