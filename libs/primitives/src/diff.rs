//! State diffs: every state write of a mini-block, which replicas apply without executing.

use std::collections::BTreeMap;

use alloy_primitives::{Address, Bytes, U256, keccak256};

use crate::Account;

/// What one mini-block changed in one account. Only changed fields are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountDiff {
    /// New balance, when it changed.
    pub balance: Option<U256>,
    /// New nonce, when it changed.
    pub nonce: Option<u64>,
    /// New code, when the account got code; its hash is `keccak256(code)`.
    pub code: Option<Bytes>,
    /// Storage writes, by slot.
    pub storage: BTreeMap<U256, U256>,
    /// The account was destroyed before the writes above: its storage is cleared first.
    pub destroyed: bool,
}

impl AccountDiff {
    /// True when the diff changes nothing.
    pub fn is_empty(&self) -> bool {
        self.balance.is_none()
            && self.nonce.is_none()
            && self.code.is_none()
            && self.storage.is_empty()
            && !self.destroyed
    }

    /// The account after this diff, given it before (`None`: absent). A destroyed account starts
    /// over; an account that gets any field exists afterwards.
    pub fn account_after(&self, before: Option<Account>) -> Option<Account> {
        let mut account = if self.destroyed { None } else { before };
        if self.balance.is_some() || self.nonce.is_some() || self.code.is_some() {
            let mut next = account.unwrap_or_default();
            if let Some(balance) = self.balance {
                next.balance = balance;
            }
            if let Some(nonce) = self.nonce {
                next.nonce = nonce;
            }
            if let Some(code) = &self.code {
                next.code_hash = keccak256(code);
            }
            account = Some(next);
        }
        account
    }
}

/// Every state write of one mini-block, in canonical order (accounts by address, slots by key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDiff {
    /// Changed accounts.
    pub accounts: BTreeMap<Address, AccountDiff>,
}

impl StateDiff {
    /// Number of individual writes (account fields and storage slots), the unit of the
    /// commitment tree's load.
    pub fn write_count(&self) -> usize {
        self.accounts
            .values()
            .map(|a| {
                usize::from(a.balance.is_some())
                    + usize::from(a.nonce.is_some())
                    + usize::from(a.code.is_some())
                    + a.storage.len()
            })
            .sum()
    }

    /// Folds a later diff into this one, as if both had been applied in order.
    pub fn merge(&mut self, later: &StateDiff) {
        for (address, next) in &later.accounts {
            self.merge_account(*address, next);
        }
    }

    /// [`Self::merge`] of one account's later writes.
    pub fn merge_account(&mut self, address: Address, next: &AccountDiff) {
        let entry = self.accounts.entry(address).or_default();
        if next.destroyed {
            *entry = AccountDiff {
                destroyed: true,
                ..AccountDiff::default()
            };
        }
        if next.balance.is_some() {
            entry.balance = next.balance;
        }
        if next.nonce.is_some() {
            entry.nonce = next.nonce;
        }
        if next.code.is_some() {
            entry.code.clone_from(&next.code);
        }
        entry
            .storage
            .extend(next.storage.iter().map(|(k, v)| (*k, *v)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_the_latest_write_and_destroy_clears_earlier_storage() {
        let a = Address::repeat_byte(1);
        let mut first = StateDiff::default();
        first.accounts.insert(
            a,
            AccountDiff {
                balance: Some(U256::from(5)),
                storage: BTreeMap::from([(U256::from(1), U256::from(10))]),
                ..Default::default()
            },
        );
        let mut second = StateDiff::default();
        second.accounts.insert(
            a,
            AccountDiff {
                nonce: Some(3),
                storage: BTreeMap::from([(U256::from(2), U256::from(20))]),
                ..Default::default()
            },
        );
        first.merge(&second);
        let merged = &first.accounts[&a];
        assert_eq!(merged.balance, Some(U256::from(5)));
        assert_eq!(merged.nonce, Some(3));
        assert_eq!(merged.storage.len(), 2);
        assert_eq!(first.write_count(), 4);

        let mut destroy = StateDiff::default();
        destroy.accounts.insert(
            a,
            AccountDiff {
                destroyed: true,
                ..Default::default()
            },
        );
        first.merge(&destroy);
        assert!(first.accounts[&a].destroyed);
        assert!(first.accounts[&a].storage.is_empty());
        assert_eq!(first.accounts[&a].balance, None);
    }
}
