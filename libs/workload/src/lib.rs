//! Deterministic, pre-signed benchmark workloads.
//!
//! The same workloads drive the in-process execution benchmark (`libs/execution/benches`) and
//! the load generator (`verity bench`), so their figures describe the same transactions:
//!
//! - [`Kind::Transfers`]: ETH transfers, each sender paying its own recipient (independent).
//! - [`Kind::Erc20`]: `transfer(recipient, 1)` on the ERC-20 of `contracts/Token.sol` (the code
//!   solc compiles it to is `src/token.hex`: `node tests/e2e/clients/compile.mjs --runtime`),
//!   each sender paying its own recipient (independent slots of one contract).
//! - [`Kind::Counter`]: every transaction increments the same storage slot (fully contended).
//! - [`Kind::Mixed`]: six transfers, three ERC-20 transfers and one counter call in ten.
//!
//! Transaction `i` of a workload over `n` accounts is sent by account `i % n` with that
//! account's next nonce, so a batch of `n` consecutive transactions has `n` distinct senders.
//! Keys are derived from the account index: anyone can regenerate them, so they must only ever
//! hold test funds.

use std::{fmt, str::FromStr};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, address, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use rayon::prelude::*;
use verity_primitives::{AccountDiff, StateDiff, Transaction};

/// Where [`Accounts::genesis`] puts the ERC-20.
pub const TOKEN: Address = address!("0x00000000000000000000000000000000000e2020");
/// Where [`Accounts::genesis`] puts the counter.
pub const COUNTER: Address = address!("0x00000000000000000000000000000000000c0c0c");
/// The ERC-20's storage slot of `balanceOf` (the fourth variable of `Token.sol`; `decimals` is a
/// constant and takes none).
const BALANCE_OF_SLOT: u64 = 3;
/// The ERC-20's storage slot of `totalSupply`.
const TOTAL_SUPPLY_SLOT: u64 = 2;
/// `transfer(address,uint256)`.
const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// The counter: `slot0 += 1`.
const COUNTER_CODE: &[u8] = &[0x5f, 0x54, 0x60, 0x01, 0x01, 0x5f, 0x55, 0x00];

/// Gas limit of a transfer.
pub const TRANSFER_GAS: u64 = 21_000;
/// Gas limit of an ERC-20 transfer (it uses ~52,000 when the recipient's balance is new,
/// ~35,000 after).
pub const ERC20_GAS: u64 = 80_000;
/// Gas limit of a counter increment (~26,500 used, ~43,000 the first time).
pub const COUNTER_GAS: u64 = 60_000;

/// Where a workload's contracts are: [`TOKEN`] and [`COUNTER`] in [`Accounts::genesis`]'s
/// state, wherever they were deployed on a live chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// The ERC-20.
    pub token: Address,
    /// The counter.
    pub counter: Address,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            token: TOKEN,
            counter: COUNTER,
        }
    }
}

/// Init code that writes `storage` and deploys `runtime`: how a load generator puts the
/// workload's contracts on a live chain (the ERC-20 with its deployer's balance set).
pub fn deploy_code(runtime: &[u8], storage: &[(U256, U256)]) -> Bytes {
    let mut code = Vec::with_capacity(runtime.len() + 66 * storage.len() + 16);
    for (slot, value) in storage {
        // PUSH32 value, PUSH32 slot, SSTORE
        code.push(0x7f);
        code.extend_from_slice(&value.to_be_bytes::<32>());
        code.push(0x7f);
        code.extend_from_slice(&slot.to_be_bytes::<32>());
        code.push(0x55);
    }
    let len = u16::try_from(runtime.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    // PUSH2 len, PUSH2 offset, PUSH0, CODECOPY, PUSH2 len, PUSH0, RETURN
    let offset = u16::try_from(code.len() + 13)
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    code.extend_from_slice(&[0x61, len[0], len[1], 0x61, offset[0], offset[1], 0x5f, 0x39]);
    code.extend_from_slice(&[0x61, len[0], len[1], 0x5f, 0xf3]);
    code.extend_from_slice(runtime);
    Bytes::from(code)
}

/// Init code of the ERC-20 with `supply` units held by `holder`.
pub fn token_deploy_code(holder: Address, supply: U256) -> Bytes {
    deploy_code(
        &token_code(),
        &[
            (token_balance_slot(holder), supply),
            (U256::from(TOTAL_SUPPLY_SLOT), supply),
        ],
    )
}

/// The ERC-20's deployed code.
pub fn token_code() -> Bytes {
    let text = include_str!("token.hex").trim();
    Bytes::from(hex::decode(text.trim_start_matches("0x")).unwrap_or_default())
}

/// The counter's deployed code.
pub fn counter_code() -> Bytes {
    Bytes::from_static(COUNTER_CODE)
}

/// The storage slot of `balanceOf[holder]`.
pub fn token_balance_slot(holder: Address) -> U256 {
    let mut preimage = [0u8; 64];
    preimage[12..32].copy_from_slice(holder.as_slice());
    preimage[32..].copy_from_slice(&U256::from(BALANCE_OF_SLOT).to_be_bytes::<32>());
    U256::from_be_bytes(keccak256(preimage).0)
}

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Independent ETH transfers.
    Transfers,
    /// Independent ERC-20 transfers.
    Erc20,
    /// One contended counter.
    Counter,
    /// Transfers, ERC-20 transfers and counter calls, 6:3:1.
    Mixed,
}

impl Kind {
    /// Every workload, in the order reports list them.
    pub const ALL: [Kind; 4] = [Kind::Transfers, Kind::Erc20, Kind::Counter, Kind::Mixed];

    /// The name `FromStr` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Transfers => "transfers",
            Kind::Erc20 => "erc20",
            Kind::Counter => "counter",
            Kind::Mixed => "mixed",
        }
    }

    /// What transaction `i` of this workload does.
    pub fn action(self, i: usize) -> Action {
        match self {
            Kind::Transfers => Action::Transfer,
            Kind::Erc20 => Action::Erc20,
            Kind::Counter => Action::Counter,
            Kind::Mixed => match i % 10 {
                0..=5 => Action::Transfer,
                6..=8 => Action::Erc20,
                _ => Action::Counter,
            },
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown workload name.
#[derive(Debug, thiserror::Error)]
#[error("unknown workload {0:?}: expected transfers, erc20, counter or mixed")]
pub struct UnknownKind(String);

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One transaction's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// 1 wei to the sender's recipient.
    Transfer,
    /// 1 token unit to the sender's recipient.
    Erc20,
    /// Increment the counter.
    Counter,
}

impl Action {
    /// The gas limit it is sent with.
    pub fn gas_limit(self) -> u64 {
        match self {
            Action::Transfer => TRANSFER_GAS,
            Action::Erc20 => ERC20_GAS,
            Action::Counter => COUNTER_GAS,
        }
    }
}

/// Fees and chain of the signed transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxParams {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Max fee per gas, wei.
    pub max_fee_per_gas: u128,
    /// Max priority fee per gas, wei.
    pub max_priority_fee_per_gas: u128,
}

/// A signed transaction, with its sender and its EIP-2718 encoding (what
/// `eth_sendRawTransaction` takes).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The transaction.
    pub envelope: TxEnvelope,
    /// Its sender.
    pub sender: Address,
    /// `envelope` encoded.
    pub raw: Bytes,
}

impl Signed {
    /// As the executor takes it (sender already recovered).
    pub fn transaction(&self) -> Transaction {
        Transaction::new_unchecked(self.envelope.clone(), self.sender)
    }

    /// Its hash.
    pub fn hash(&self) -> B256 {
        *self.envelope.tx_hash()
    }
}

/// The workload's accounts: deterministic keys.
#[derive(Debug, Clone)]
pub struct Accounts {
    keys: Vec<PrivateKeySigner>,
}

impl Accounts {
    /// `n` accounts (derived on every core).
    pub fn new(n: usize) -> Self {
        let keys = (0..n as u64)
            .into_par_iter()
            .map(account_key)
            .collect::<Vec<_>>();
        Self { keys }
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Address of account `i`.
    pub fn address(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    /// Key of account `i`.
    pub fn key(&self, i: usize) -> &PrivateKeySigner {
        &self.keys[i]
    }

    /// The recipient account `i` pays (never a sender of the workload).
    pub fn recipient(i: usize) -> Address {
        let mut preimage = b"verity-workload-recipient".to_vec();
        preimage.extend_from_slice(&(i as u64).to_be_bytes());
        Address::from_word(keccak256(preimage))
    }

    /// The state a workload starts from: every account holds `balance` wei and `tokens` units of
    /// the ERC-20 at [`TOKEN`]; the counter is at [`COUNTER`].
    pub fn genesis(&self, balance: U256, tokens: U256) -> StateDiff {
        let mut diff = StateDiff::default();
        let mut token_storage = std::collections::BTreeMap::new();
        for key in &self.keys {
            diff.accounts.insert(
                key.address(),
                AccountDiff {
                    balance: Some(balance),
                    nonce: Some(0),
                    ..AccountDiff::default()
                },
            );
            token_storage.insert(token_balance_slot(key.address()), tokens);
        }
        token_storage.insert(
            U256::from(TOTAL_SUPPLY_SLOT),
            tokens.saturating_mul(U256::from(self.keys.len())),
        );
        diff.accounts.insert(
            TOKEN,
            AccountDiff {
                nonce: Some(1),
                balance: Some(U256::ZERO),
                code: Some(token_code()),
                storage: token_storage,
                ..AccountDiff::default()
            },
        );
        diff.accounts.insert(
            COUNTER,
            AccountDiff {
                nonce: Some(1),
                balance: Some(U256::ZERO),
                code: Some(counter_code()),
                ..AccountDiff::default()
            },
        );
        diff
    }

    /// Transaction `i` of `kind`, unsigned: sent by account `i % n` with nonce
    /// `first_nonce + i / n`, to the contracts at `targets`.
    pub fn unsigned(
        &self,
        kind: Kind,
        i: usize,
        first_nonce: u64,
        params: &TxParams,
        targets: &Targets,
    ) -> TxEip1559 {
        let sender = i % self.len();
        let nonce = first_nonce + (i / self.len()) as u64;
        let action = kind.action(i);
        let recipient = Self::recipient(sender);
        let (to, value, input) = match action {
            Action::Transfer => (recipient, U256::from(1u64), Bytes::new()),
            Action::Erc20 => (
                targets.token,
                U256::ZERO,
                erc20_transfer(recipient, U256::from(1u64)),
            ),
            Action::Counter => (targets.counter, U256::ZERO, Bytes::new()),
        };
        TxEip1559 {
            chain_id: params.chain_id,
            nonce,
            gas_limit: action.gas_limit(),
            max_fee_per_gas: params.max_fee_per_gas,
            max_priority_fee_per_gas: params.max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value,
            input,
            access_list: Default::default(),
        }
    }

    /// Signs transactions `range` of `kind` on every core, to the contracts of
    /// [`Accounts::genesis`]; `first_nonce(sender)` is the nonce of the sender's first
    /// transaction in the workload.
    pub fn sign(
        &self,
        kind: Kind,
        range: std::ops::Range<usize>,
        params: &TxParams,
        first_nonce: impl Fn(usize) -> u64 + Sync,
    ) -> Result<Vec<Signed>, alloy_signer::Error> {
        self.sign_for(kind, range, params, &Targets::default(), first_nonce)
    }

    /// [`Accounts::sign`] to the contracts at `targets`.
    pub fn sign_for(
        &self,
        kind: Kind,
        range: std::ops::Range<usize>,
        params: &TxParams,
        targets: &Targets,
        first_nonce: impl Fn(usize) -> u64 + Sync,
    ) -> Result<Vec<Signed>, alloy_signer::Error> {
        range
            .into_par_iter()
            .map(|i| {
                let sender = i % self.len();
                let tx = self.unsigned(kind, i, first_nonce(sender), params, targets);
                let key = &self.keys[sender];
                let signature = key.sign_hash_sync(&tx.signature_hash())?;
                let envelope: TxEnvelope = tx.into_signed(signature).into();
                let raw = Bytes::from(envelope.encoded_2718());
                Ok(Signed {
                    envelope,
                    sender: key.address(),
                    raw,
                })
            })
            .collect()
    }
}

/// The calldata of `transfer(to, value)`.
pub fn erc20_transfer(to: Address, value: U256) -> Bytes {
    let mut data = Vec::with_capacity(68);
    data.extend_from_slice(&TRANSFER_SELECTOR);
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(to.as_slice());
    data.extend_from_slice(&value.to_be_bytes::<32>());
    Bytes::from(data)
}

fn account_key(i: u64) -> PrivateKeySigner {
    // keccak of a fixed prefix and the index; a hash that is not a valid scalar (probability
    // ~2^-128) moves on to the next counter value.
    let mut counter = 0u64;
    loop {
        let mut preimage = b"verity-workload-account".to_vec();
        preimage.extend_from_slice(&i.to_be_bytes());
        preimage.extend_from_slice(&counter.to_be_bytes());
        if let Ok(key) = PrivateKeySigner::from_bytes(&keccak256(preimage)) {
            return key;
        }
        counter += 1;
    }
}

pub mod report;

#[cfg(test)]
mod tests;
