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
            let has_fields =
                change.balance.is_some() || change.nonce.is_some() || change.code.is_some();
            if has_fields {
                let account = self.accounts.entry(*address).or_default();
                if let Some(balance) = change.balance {
                    account.balance = balance;
                }
                if let Some(nonce) = change.nonce {
                    account.nonce = nonce;
                }
                if let Some(code) = &change.code {
                    let hash = keccak256(code);
                    account.code_hash = hash;
                    self.code.insert(hash, code.clone());
                }
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
