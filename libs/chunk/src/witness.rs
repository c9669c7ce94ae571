//! The witness of a chunk: the pre-state its re-execution reads, recorded where the state is
//! ([`Recorder`]) and served where it is not ([`WitnessState`]).

use std::{cell::RefCell, collections::BTreeMap};

use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, U256};
use verity_commitment::{EMPTY, account_key, account_value, storage_key, storage_value};
use verity_primitives::{Account, StateView};

/// Pre-state values, each one bound to the pre-root by a tree step (block hashes excepted: they
/// are chain history, not state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Witness {
    /// Accounts, `None` for an account that does not exist.
    pub accounts: BTreeMap<Address, Option<Account>>,
    /// Storage slots (zero for a slot never written).
    pub storage: BTreeMap<(Address, U256), U256>,
    /// Code, by hash, of the accounts above that have code.
    pub codes: BTreeMap<B256, Bytes>,
    /// Hashes of past blocks read by `BLOCKHASH`.
    pub block_hashes: BTreeMap<u64, B256>,
}

impl Witness {
    /// The tree leaves the witness claims: `(key, value)` with zero for absent.
    pub fn reads(&self) -> Vec<(B256, B256)> {
        let accounts = self.accounts.iter().map(|(address, account)| {
            (
                account_key(*address),
                account.as_ref().map_or(EMPTY, account_value),
            )
        });
        let storage = self
            .storage
            .iter()
            .map(|((address, slot), value)| (storage_key(*address, *slot), storage_value(*value)));
        accounts.chain(storage).collect()
    }
}

/// A read the witness does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// An account.
    #[error("account {0}")]
    Account(Address),
    /// A storage slot.
    #[error("storage slot {1} of {0}")]
    Storage(Address, U256),
    /// Code.
    #[error("code {0}")]
    Code(B256),
    /// A block hash.
    #[error("hash of block {0}")]
    BlockHash(u64),
}

/// A [`StateView`] that records every read of the view it wraps.
#[derive(Debug)]
pub struct Recorder<'a, S> {
    inner: &'a S,
    witness: RefCell<Witness>,
}

impl<'a, S: StateView> Recorder<'a, S> {
    /// Records reads of `inner`.
    pub fn new(inner: &'a S) -> Self {
        Self {
            inner,
            witness: RefCell::new(Witness::default()),
        }
    }

    /// The reads so far, with the code of every account read.
    pub fn finish(self) -> Result<Witness, S::Error> {
        let mut witness = self.witness.into_inner();
        let hashes: Vec<B256> = witness
            .accounts
            .values()
            .flatten()
            .map(|a| a.code_hash)
            .filter(|h| *h != KECCAK256_EMPTY && *h != B256::ZERO)
            .collect();
        for hash in hashes {
            if let std::collections::btree_map::Entry::Vacant(entry) = witness.codes.entry(hash)
                && let Some(code) = self.inner.code(hash)?
            {
                entry.insert(code);
            }
        }
        Ok(witness)
    }
}

impl<S: StateView> StateView for Recorder<'_, S> {
    type Error = S::Error;

    fn account(&self, address: Address) -> Result<Option<Account>, Self::Error> {
        let account = self.inner.account(address)?;
        self.witness.borrow_mut().accounts.insert(address, account);
        Ok(account)
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, Self::Error> {
        let value = self.inner.storage(address, slot)?;
        self.witness
            .borrow_mut()
            .storage
            .insert((address, slot), value);
        Ok(value)
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, Self::Error> {
        let code = self.inner.code(code_hash)?;
        if let Some(code) = &code {
            self.witness
                .borrow_mut()
                .codes
                .insert(code_hash, code.clone());
        }
        Ok(code)
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, Self::Error> {
        let hash = self.inner.block_hash(number)?;
        if let Some(hash) = hash {
            self.witness.borrow_mut().block_hashes.insert(number, hash);
        }
        Ok(hash)
    }
}

/// A [`StateView`] over a witness alone: a read it does not hold fails (and is remembered), so
/// a prover can tell an incomplete witness from a wrong diff.
#[derive(Debug)]
pub struct WitnessState<'a> {
    witness: &'a Witness,
    missing: RefCell<Option<Missing>>,
}

impl<'a> WitnessState<'a> {
    /// Serves `witness`.
    pub fn new(witness: &'a Witness) -> Self {
        Self {
            witness,
            missing: RefCell::new(None),
        }
    }

    /// The first read the witness could not serve.
    pub fn missing(&self) -> Option<Missing> {
        *self.missing.borrow()
    }

    fn miss<T>(&self, missing: Missing) -> Result<T, Missing> {
        self.missing.borrow_mut().get_or_insert(missing);
        Err(missing)
    }
}

impl StateView for WitnessState<'_> {
    type Error = Missing;

    fn account(&self, address: Address) -> Result<Option<Account>, Missing> {
        match self.witness.accounts.get(&address) {
            Some(account) => Ok(*account),
            None => self.miss(Missing::Account(address)),
        }
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, Missing> {
        match self.witness.storage.get(&(address, slot)) {
            Some(value) => Ok(*value),
            None => self.miss(Missing::Storage(address, slot)),
        }
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, Missing> {
        match self.witness.codes.get(&code_hash) {
            Some(code) => Ok(Some(code.clone())),
            None => self.miss(Missing::Code(code_hash)),
        }
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, Missing> {
        match self.witness.block_hashes.get(&number) {
            Some(hash) => Ok(Some(*hash)),
            None => self.miss(Missing::BlockHash(number)),
        }
    }
}
