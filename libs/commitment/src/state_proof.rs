//! Proofs of accounts and storage slots against a state-tree root, as `eth_getProof` carries
//! them, and their check: what a client runs to trust a balance or a slot without trusting the
//! node that served it, only the root (and whoever vouches for the root: the verifiers'
//! signed finality attestations, see `verity verify-proof`).
//!
//! **Wire form** (docs/json-rpc.md, "eth_getProof"): a [`Proof`] is a list of byte strings, the
//! siblings from the root down (32 bytes each), then one last element for the terminal subtree:
//! empty when it holds no leaf, `key ‖ value` (64 bytes) when it holds exactly one.
//!
//! **What a leaf says.** An account's leaf holds [`account_value`] of (nonce, balance, code
//! hash); a slot's leaf holds the value. A key that holds nothing has no leaf, or a leaf holding
//! zero (the tree never shrinks: a destroyed account or a cleared slot keeps a zero leaf). Both
//! prove absence.

use alloy_primitives::{Address, B256, U256};
use verity_primitives::Account;

use crate::{
    EMPTY, Poseidon2Bn254, Proof, ProofError, account_key, account_value, storage_key,
    storage_value,
};

/// Why a proof in its wire form cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No terminal element.
    #[error("the proof is empty: it needs at least its terminal element")]
    Empty,
    /// A sibling is not 32 bytes.
    #[error("element {0} is {1} bytes, a sibling is 32")]
    Sibling(usize, usize),
    /// The terminal element is neither empty nor 64 bytes.
    #[error("the terminal element is {0} bytes: it is empty or a 32-byte key and 32-byte value")]
    Terminal(usize),
}

/// The wire form of `proof`: its siblings, then its terminal element.
pub fn encode_proof(proof: &Proof) -> Vec<Vec<u8>> {
    let mut items: Vec<Vec<u8>> = proof.siblings.iter().map(|s| s.to_vec()).collect();
    items.push(match &proof.terminal {
        None => Vec::new(),
        Some((key, value)) => [key.as_slice(), value.as_slice()].concat(),
    });
    items
}

/// Reads a proof from its wire form.
pub fn decode_proof<T: AsRef<[u8]>>(items: &[T]) -> Result<Proof, DecodeError> {
    let (terminal, siblings) = items.split_last().ok_or(DecodeError::Empty)?;
    let siblings = siblings
        .iter()
        .enumerate()
        .map(|(i, s)| {
            B256::try_from(s.as_ref()).map_err(|_| DecodeError::Sibling(i, s.as_ref().len()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let terminal = match terminal.as_ref() {
        [] => None,
        bytes if bytes.len() == 64 => Some((
            B256::from_slice(&bytes[..32]),
            B256::from_slice(&bytes[32..]),
        )),
        bytes => return Err(DecodeError::Terminal(bytes.len())),
    };
    Ok(Proof { siblings, terminal })
}

/// Checks that under the state root `root`, the account at `address` is `account` (`None`: it
/// does not exist).
pub fn verify_account(
    root: B256,
    address: Address,
    account: Option<&Account>,
    proof: &Proof,
) -> Result<(), ProofError> {
    verify_leaf(
        root,
        &account_key(address),
        account.map(account_value),
        proof,
    )
}

/// Checks that under the state root `root`, slot `slot` of `address` holds `value`.
pub fn verify_storage(
    root: B256,
    address: Address,
    slot: U256,
    value: U256,
    proof: &Proof,
) -> Result<(), ProofError> {
    let leaf = (!value.is_zero()).then(|| storage_value(value));
    verify_leaf(root, &storage_key(address, slot), leaf, proof)
}

/// `key` holds `leaf` under `root`; `None` (nothing) is proven by no leaf or a zero leaf.
fn verify_leaf(
    root: B256,
    key: &B256,
    leaf: Option<B256>,
    proof: &Proof,
) -> Result<(), ProofError> {
    match leaf {
        Some(value) => proof.verify(&Poseidon2Bn254, root, key, Some(&value)),
        None if proof.terminal.as_ref().is_some_and(|(k, _)| k == key) => {
            proof.verify(&Poseidon2Bn254, root, key, Some(&EMPTY))
        }
        None => proof.verify(&Poseidon2Bn254, root, key, None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::SparseMerkleTree;

    fn account(balance: u64) -> Account {
        Account {
            nonce: 1,
            balance: U256::from(balance),
            ..Default::default()
        }
    }

    /// A tree with accounts 1..=20 and slot 7 of account 1; account 21 destroyed (zero leaf).
    fn tree() -> SparseMerkleTree<Poseidon2Bn254> {
        let mut tree = SparseMerkleTree::new(Poseidon2Bn254);
        let mut writes: Vec<crate::Update> = (1..=20u8)
            .map(|i| {
                (
                    account_key(Address::repeat_byte(i)),
                    Some(account_value(&account(u64::from(i)))),
                )
            })
            .collect();
        writes.push((
            storage_key(Address::repeat_byte(1), U256::from(7)),
            Some(storage_value(U256::from(99))),
        ));
        writes.push((account_key(Address::repeat_byte(21)), Some(EMPTY)));
        tree.apply(writes);
        tree
    }

    #[test]
    fn proofs_hold_for_what_the_tree_holds_and_nothing_else() {
        let tree = tree();
        let root = tree.root();
        let wire = |key: &B256| decode_proof(&encode_proof(&tree.prove(key))).unwrap();
        let a = Address::repeat_byte(3);
        let proof = wire(&account_key(a));
        verify_account(root, a, Some(&account(3)), &proof).unwrap();
        // Another balance, absence, another root: refused.
        assert!(matches!(
            verify_account(root, a, Some(&account(4)), &proof),
            Err(ProofError::WrongTerminal)
        ));
        assert!(verify_account(root, a, None, &proof).is_err());
        assert!(matches!(
            verify_account(B256::repeat_byte(1), a, Some(&account(3)), &proof),
            Err(ProofError::RootMismatch { .. })
        ));
        // Absent accounts: no leaf, and a zero leaf.
        for missing in [Address::repeat_byte(0x77), Address::repeat_byte(21)] {
            let proof = wire(&account_key(missing));
            verify_account(root, missing, None, &proof).unwrap();
            assert!(verify_account(root, missing, Some(&account(0)), &proof).is_err());
        }
        // Slots: set and unset.
        let owner = Address::repeat_byte(1);
        let proof = wire(&storage_key(owner, U256::from(7)));
        verify_storage(root, owner, U256::from(7), U256::from(99), &proof).unwrap();
        assert!(verify_storage(root, owner, U256::from(7), U256::ZERO, &proof).is_err());
        assert!(verify_storage(root, owner, U256::from(8), U256::from(99), &proof).is_err());
        let proof = wire(&storage_key(owner, U256::from(8)));
        verify_storage(root, owner, U256::from(8), U256::ZERO, &proof).unwrap();
    }

    /// Every single byte of a proof's wire form matters: one changed is refused, by decoding or
    /// by the check.
    #[test]
    fn a_proof_with_any_byte_changed_is_refused() {
        let tree = tree();
        let a = Address::repeat_byte(5);
        let items = encode_proof(&tree.prove(&account_key(a)));
        assert!(items.len() > 1, "the proof has siblings");
        for (i, item) in items.iter().enumerate() {
            for at in 0..item.len() {
                let mut bad = items.clone();
                bad[i][at] ^= 1;
                let refused = decode_proof(&bad)
                    .map(|p| verify_account(tree.root(), a, Some(&account(5)), &p).is_err())
                    .unwrap_or(true);
                assert!(refused, "element {i} byte {at}");
            }
        }
        assert_eq!(decode_proof::<Vec<u8>>(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode_proof(&[vec![0u8; 31], vec![]]),
            Err(DecodeError::Sibling(0, 31))
        );
        assert_eq!(decode_proof(&[vec![0u8; 3]]), Err(DecodeError::Terminal(3)));
    }
}
