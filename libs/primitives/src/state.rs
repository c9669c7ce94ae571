//! Reading world state: the one trait that execution needs from storage, so the executor runs
//! the same over MDBX (sequencer, replicas), over an in-memory map (tests), or over a witness
//! (provers).

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, U256, keccak256};

use crate::StateDiff;

/// An account's fields as stored (without code and storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// Transactions sent (or contracts created, for a contract).
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// keccak256 of the code; `KECCAK256_EMPTY` for an account without code.
    pub code_hash: B256,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: KECCAK256_EMPTY,
        }
    }
}

/// Read access to one consistent view of the state.
pub trait StateView {
    /// The error a read can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The account, or `None` if it does not exist.
    fn account(&self, address: Address) -> Result<Option<Account>, Self::Error>;
    /// A storage slot (zero when never written).
    fn storage(&self, address: Address, slot: U256) -> Result<U256, Self::Error>;
    /// Code by its hash.
    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, Self::Error>;
    /// Hash of a past block (for the BLOCKHASH opcode), if known.
    fn block_hash(&self, number: u64) -> Result<Option<B256>, Self::Error>;
}

/// A state held in memory: for tests, and for genesis before it is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InMemoryState {
    /// Accounts.
    pub accounts: HashMap<Address, Account>,
    /// Storage, per account.
    pub storage: HashMap<Address, BTreeMap<U256, U256>>,
    /// Code by hash.
    pub code: HashMap<B256, Bytes>,
    /// Block hashes by number.
    pub block_hashes: HashMap<u64, B256>,
}

impl InMemoryState {
    /// Applies a diff, the way a replica does.
    pub fn apply(&mut self, diff: &StateDiff) {
        for (address, change) in &diff.accounts {
            if change.destroyed {
                self.accounts.remove(address);
                self.storage.remove(address);
            }
            if let Some(after) = change.account_after(self.accounts.get(address).copied()) {
                self.accounts.insert(*address, after);
            }
            if let Some(code) = &change.code {
                self.code.insert(keccak256(code), code.clone());
            }
            if !change.storage.is_empty() {
                let slots = self.storage.entry(*address).or_default();
                for (slot, value) in &change.storage {
                    if value.is_zero() {
                        slots.remove(slot);
                    } else {
                        slots.insert(*slot, *value);
                    }
                }
            }
        }
    }

    /// Funds or creates an account (genesis allocation).
    pub fn insert_account(&mut self, address: Address, account: Account) {
        self.accounts.insert(address, account);
    }
}

impl StateView for InMemoryState {
    type Error = std::convert::Infallible;

    fn account(&self, address: Address) -> Result<Option<Account>, Self::Error> {
        Ok(self.accounts.get(&address).copied())
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, Self::Error> {
        Ok(self
            .storage
            .get(&address)
            .and_then(|s| s.get(&slot))
            .copied()
            .unwrap_or_default())
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, Self::Error> {
        Ok(self.code.get(&code_hash).cloned())
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, Self::Error> {
        Ok(self.block_hashes.get(&number).copied())
    }
}

/// The genesis allocation as a state diff (applied to an empty state it gives the genesis state).
pub fn genesis_diff(genesis: &alloy_genesis::Genesis) -> StateDiff {
    let mut diff = StateDiff::default();
    for (address, account) in &genesis.alloc {
        diff.accounts.insert(
            *address,
            crate::AccountDiff {
                balance: Some(account.balance),
                nonce: Some(account.nonce.unwrap_or(0)),
                code: account.code.clone().filter(|c| !c.is_empty()),
                storage: account
                    .storage
                    .iter()
                    .flatten()
                    .map(|(k, v)| (U256::from_be_bytes(k.0), U256::from_be_bytes(v.0)))
                    .collect(),
                destroyed: false,
            },
        );
    }
    diff
}

/// A [`StateView`] of `inner` after `diff`: what a chunk's later mini-block reads after the
/// earlier ones' claimed writes (prover, witness replica), and what the sequencer executes the
/// next mini-block over while the previous one is still being committed. Reads the diff does not
/// answer go to `inner` (so a recorder or witness state under it sees only earlier reads).
#[derive(Debug)]
pub struct Overlay<'a, S> {
    inner: &'a S,
    diff: &'a StateDiff,
}

impl<'a, S: StateView> Overlay<'a, S> {
    /// `inner` with `diff` applied.
    pub fn new(inner: &'a S, diff: &'a StateDiff) -> Self {
        Self { inner, diff }
    }
}

impl<S: StateView> StateView for Overlay<'_, S> {
    type Error = S::Error;

    fn account(&self, address: Address) -> Result<Option<Account>, Self::Error> {
        let Some(change) = self.diff.accounts.get(&address) else {
            return self.inner.account(address);
        };
        Ok(change.account_after(self.inner.account(address)?))
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, Self::Error> {
        match self.diff.accounts.get(&address) {
            Some(change) => match change.storage.get(&slot) {
                Some(value) => Ok(*value),
                None if change.destroyed => Ok(U256::ZERO),
                None => self.inner.storage(address, slot),
            },
            None => self.inner.storage(address, slot),
        }
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, Self::Error> {
        let deployed = self
            .diff
            .accounts
            .values()
            .filter_map(|change| change.code.as_ref())
            .find(|code| keccak256(code) == code_hash);
        match deployed {
            Some(code) => Ok(Some(code.clone())),
            None => self.inner.code(code_hash),
        }
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, Self::Error> {
        self.inner.block_hash(number)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::AccountDiff;

    use super::*;

    /// The overlay reads as the state with the diff applied would.
    #[test]
    fn an_overlay_reads_as_the_applied_diff() {
        let (a, b, c) = (
            Address::repeat_byte(1),
            Address::repeat_byte(2),
            Address::repeat_byte(3),
        );
        let mut state = InMemoryState::default();
        for address in [a, b] {
            state.insert_account(
                address,
                Account {
                    balance: U256::from(5),
                    nonce: 1,
                    ..Account::default()
                },
            );
        }
        state
            .storage
            .insert(a, [(U256::from(1), U256::from(10))].into());
        state
            .storage
            .insert(b, [(U256::from(1), U256::from(20))].into());
        let code = Bytes::from_static(&[0x60, 0x00]);
        let diff = StateDiff {
            accounts: [
                (
                    a,
                    AccountDiff {
                        nonce: Some(2),
                        storage: [(U256::from(2), U256::from(3))].into(),
                        ..Default::default()
                    },
                ),
                (
                    b,
                    AccountDiff {
                        destroyed: true,
                        ..Default::default()
                    },
                ),
                (
                    c,
                    AccountDiff {
                        code: Some(code.clone()),
                        ..Default::default()
                    },
                ),
            ]
            .into(),
        };
        let overlay = Overlay::new(&state, &diff);
        let mut applied = state.clone();
        applied.apply(&diff);
        for address in [a, b, c, Address::repeat_byte(4)] {
            assert_eq!(
                overlay.account(address).unwrap(),
                applied.account(address).unwrap()
            );
            for slot in [1u64, 2, 3] {
                assert_eq!(
                    overlay.storage(address, U256::from(slot)).unwrap(),
                    applied.storage(address, U256::from(slot)).unwrap()
                );
            }
        }
        assert_eq!(overlay.code(keccak256(&code)).unwrap(), Some(code));
    }
}
