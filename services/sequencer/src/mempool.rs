//! The mempool: per-sender queues ordered by nonce, replacement by fee, and the selection of
//! ready transactions for the next mini-block.
//!
//! A transaction is *ready* when its nonce is the sender's current state nonce, or follows a ready
//! transaction of the same sender without a gap. Senders are served in the order their oldest
//! ready transaction arrived, so nobody is starved.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256, U256};
use verity_primitives::Transaction;

/// Limits of the mempool.
#[derive(Debug, Clone, Copy)]
pub struct MempoolLimits {
    /// Most transactions one sender may have waiting.
    pub per_sender: usize,
    /// How far ahead of the state nonce a transaction may be queued.
    pub max_nonce_gap: u64,
    /// Most transactions in total.
    pub total: usize,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        Self {
            per_sender: 500,
            max_nonce_gap: 64,
            total: 100_000,
        }
    }
}

/// Why a transaction was not admitted. The texts are geth's, so client libraries recognise them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Admission {
    /// The same transaction is already waiting.
    #[error("already known")]
    AlreadyKnown,
    /// The nonce was already used.
    #[error("nonce too low: address {sender}, tx: {tx} state: {state}")]
    NonceTooLow {
        /// Sender.
        sender: Address,
        /// The transaction's nonce.
        tx: u64,
        /// The account's nonce.
        state: u64,
    },
    /// The nonce is too far ahead of the account's.
    #[error("nonce too high: address {sender}, tx: {tx} state: {state}")]
    NonceTooHigh {
        /// Sender.
        sender: Address,
        /// The transaction's nonce.
        tx: u64,
        /// The account's nonce.
        state: u64,
    },
    /// A transaction with this nonce is waiting and the new one does not pay 10% more.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// The sender cannot pay for the transaction.
    #[error("insufficient funds for gas * price + value: address {sender} have {have} want {want}")]
    InsufficientFunds {
        /// Sender.
        sender: Address,
        /// Its balance.
        have: U256,
        /// gas limit * max fee + value.
        want: U256,
    },
    /// The sender has too many transactions waiting, or the pool is full.
    #[error("txpool is full")]
    PoolFull,
}

#[derive(Debug, Default)]
struct SenderQueue {
    by_nonce: BTreeMap<u64, Transaction>,
}

/// The pending transactions.
#[derive(Debug, Default)]
pub struct Mempool {
    limits: MempoolLimits,
    senders: HashMap<Address, SenderQueue>,
    known: HashSet<B256>,
    /// Senders in the order they first queued a transaction; a sender re-enters at the back
    /// after being served.
    order: VecDeque<Address>,
    len: usize,
}

/// The maximum a transaction can cost: gas limit * max fee per gas + value.
pub fn max_cost(tx: &Transaction) -> U256 {
    U256::from(tx.gas_limit()) * U256::from(tx.max_fee_per_gas()) + tx.value()
}

impl Mempool {
    /// An empty mempool.
    pub fn new(limits: MempoolLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Number of waiting transactions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Admits a transaction, given the sender's current state nonce and balance.
    pub fn insert(
        &mut self,
        tx: Transaction,
        state_nonce: u64,
        balance: U256,
    ) -> Result<(), Admission> {
        let sender = tx.signer();
        let nonce = tx.nonce();
        if self.known.contains(tx.tx_hash()) {
            return Err(Admission::AlreadyKnown);
        }
        if nonce < state_nonce {
            return Err(Admission::NonceTooLow {
                sender,
                tx: nonce,
                state: state_nonce,
            });
        }
        if nonce > state_nonce + self.limits.max_nonce_gap {
            return Err(Admission::NonceTooHigh {
                sender,
                tx: nonce,
                state: state_nonce,
            });
        }
        let want = max_cost(&tx);
        if want > balance {
            return Err(Admission::InsufficientFunds {
                sender,
                have: balance,
                want,
            });
        }
        let queue = self.senders.entry(sender).or_default();
        if let Some(existing) = queue.by_nonce.get(&nonce) {
            if !pays_ten_percent_more(&tx, existing) {
                return Err(Admission::ReplacementUnderpriced);
            }
            let old_hash = *existing.tx_hash();
            self.known.remove(&old_hash);
            self.known.insert(*tx.tx_hash());
            queue.by_nonce.insert(nonce, tx);
            return Ok(());
        }
        if queue.by_nonce.len() >= self.limits.per_sender || self.len >= self.limits.total {
            return Err(Admission::PoolFull);
        }
        if queue.by_nonce.is_empty() {
            self.order.push_back(sender);
        }
        self.known.insert(*tx.tx_hash());
        queue.by_nonce.insert(nonce, tx);
        self.len += 1;
        Ok(())
    }

    /// The next nonce of `sender` counting its ready transactions.
    pub fn pending_nonce(&self, sender: Address, state_nonce: u64) -> u64 {
        let mut next = state_nonce;
        if let Some(queue) = self.senders.get(&sender) {
            while queue.by_nonce.contains_key(&next) {
                next += 1;
            }
        }
        next
    }

    /// Removes and returns ready transactions, at most `max_txs` and `max_gas` (by gas limit),
    /// fairly across senders. `state_nonce` gives each sender's current nonce; transactions
    /// below it are dropped as stale.
    pub fn take_ready(
        &mut self,
        max_txs: usize,
        max_gas: u64,
        mut state_nonce: impl FnMut(Address) -> u64,
    ) -> Vec<Transaction> {
        let mut taken = Vec::new();
        let mut gas = 0u64;
        let mut visited = 0;
        let rounds = self.order.len();
        while visited < rounds && taken.len() < max_txs {
            visited += 1;
            let Some(sender) = self.order.pop_front() else {
                break;
            };
            let Some(queue) = self.senders.get_mut(&sender) else {
                continue;
            };
            let mut next = state_nonce(sender);
            // Drop what the chain has already passed (replaced or stale).
            while let Some((&nonce, _)) = queue.by_nonce.first_key_value() {
                if nonce >= next {
                    break;
                }
                if let Some((_, stale)) = queue.by_nonce.pop_first() {
                    self.known.remove(stale.tx_hash());
                    self.len -= 1;
                }
            }
            while taken.len() < max_txs {
                let Some(tx) = queue.by_nonce.get(&next) else {
                    break;
                };
                if gas + tx.gas_limit() > max_gas {
                    break;
                }
                gas += tx.gas_limit();
                if let Some(tx) = queue.by_nonce.remove(&next) {
                    self.known.remove(tx.tx_hash());
                    self.len -= 1;
                    taken.push(tx);
                }
                next += 1;
            }
            if queue.by_nonce.is_empty() {
                self.senders.remove(&sender);
            } else {
                self.order.push_back(sender);
            }
        }
        taken
    }

    /// Puts back transactions that were taken but could not be included yet (in order).
    pub fn restore(&mut self, txs: Vec<Transaction>) {
        for tx in txs {
            let sender = tx.signer();
            let queue = self.senders.entry(sender).or_default();
            if queue.by_nonce.is_empty() {
                self.order.push_front(sender);
            }
            if self.known.insert(*tx.tx_hash()) {
                self.len += 1;
            }
            queue.by_nonce.insert(tx.nonce(), tx);
        }
    }
}

fn pays_ten_percent_more(new: &Transaction, old: &Transaction) -> bool {
    let bumped = |fee: u128| fee.saturating_mul(110) / 100;
    new.max_fee_per_gas() >= bumped(old.max_fee_per_gas())
        && new
            .max_priority_fee_per_gas()
            .unwrap_or(new.max_fee_per_gas())
            >= bumped(
                old.max_priority_fee_per_gas()
                    .unwrap_or(old.max_fee_per_gas()),
            )
}

#[cfg(test)]
mod tests {
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy_primitives::TxKind;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;

    fn tx(signer: &PrivateKeySigner, nonce: u64, max_fee: u128) -> Transaction {
        let tx = TxEip1559 {
            chain_id: 1,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: max_fee / 2,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::from(1u64),
            ..Default::default()
        };
        let signature = signer.sign_hash_sync(&tx.signature_hash()).expect("sign");
        Transaction::new_unchecked(
            TxEnvelope::from(tx.into_signed(signature)),
            signer.address(),
        )
    }

    const RICH: U256 = U256::from_limbs([u64::MAX, 0, 0, 0]);

    #[test]
    fn ready_transactions_come_out_in_nonce_order_and_gaps_wait() {
        let alice = PrivateKeySigner::random();
        let mut pool = Mempool::new(MempoolLimits::default());
        for nonce in [1, 0, 3] {
            pool.insert(tx(&alice, nonce, 100), 0, RICH)
                .expect("admitted");
        }
        assert_eq!(pool.pending_nonce(alice.address(), 0), 2);
        let taken = pool.take_ready(10, u64::MAX, |_| 0);
        assert_eq!(taken.iter().map(|t| t.nonce()).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(pool.len(), 1, "nonce 3 waits for 2");
        assert!(pool.take_ready(10, u64::MAX, |_| 2).is_empty());
        pool.insert(tx(&alice, 2, 100), 2, RICH).expect("admitted");
        let taken = pool.take_ready(10, u64::MAX, |_| 2);
        assert_eq!(taken.iter().map(|t| t.nonce()).collect::<Vec<_>>(), [2, 3]);
        assert!(pool.is_empty());
    }

    #[test]
    fn admission_errors_use_the_texts_clients_know() {
        let alice = PrivateKeySigner::random();
        let mut pool = Mempool::new(MempoolLimits::default());
        let first = tx(&alice, 5, 100);
        pool.insert(first.clone(), 5, RICH).expect("admitted");
        assert_eq!(
            pool.insert(first, 5, RICH).expect_err("dup").to_string(),
            "already known"
        );
        let low = pool.insert(tx(&alice, 4, 100), 5, RICH).expect_err("low");
        assert!(low.to_string().starts_with("nonce too low"), "{low}");
        let cheap = pool.insert(tx(&alice, 5, 105), 5, RICH).expect_err("cheap");
        assert_eq!(cheap.to_string(), "replacement transaction underpriced");
        pool.insert(tx(&alice, 5, 110), 5, RICH)
            .expect("10% more replaces");
        assert_eq!(pool.len(), 1);
        let poor = pool
            .insert(tx(&alice, 6, 100), 5, U256::from(10u64))
            .expect_err("poor");
        assert!(
            poor.to_string()
                .starts_with("insufficient funds for gas * price + value"),
            "{poor}"
        );
    }

    #[test]
    fn senders_take_turns_and_the_gas_budget_is_respected() {
        let alice = PrivateKeySigner::random();
        let bob = PrivateKeySigner::random();
        let mut pool = Mempool::new(MempoolLimits::default());
        for nonce in 0..3 {
            pool.insert(tx(&alice, nonce, 100), 0, RICH).expect("a");
            pool.insert(tx(&bob, nonce, 100), 0, RICH).expect("b");
        }
        let taken = pool.take_ready(10, 4 * 21_000, |_| 0);
        assert_eq!(taken.len(), 4);
        let from_bob = taken.iter().filter(|t| t.signer() == bob.address()).count();
        assert!(from_bob >= 1, "bob is served in the same round");
        let rest = pool.take_ready(10, u64::MAX, |address| {
            taken.iter().filter(|t| t.signer() == address).count() as u64
        });
        assert_eq!(rest.len(), 2);
    }
}
