//! The mempool: per-sender queues ordered by nonce, replacement by fee, and the selection of
//! ready transactions for the next mini-block.
//!
//! A transaction is *ready* when its nonce is the sender's current state nonce, or follows a ready
//! transaction of the same sender without a gap. Senders are served in the order their oldest
//! ready transaction arrived, so nobody is starved.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256, U256};
use verity_primitives::Transaction;

/// Limits of the mempool.
#[derive(Debug, Clone, Copy)]
pub struct MempoolLimits {
    /// Most transactions one sender may have waiting: a sender sending contiguous nonces faster
    /// than they are included is refused only past this ("account limit exceeded").
    pub per_sender: usize,
    /// How far ahead of the sender's pending nonce (its state nonce and the contiguous run
    /// waiting after it) a transaction may be queued behind a gap: transactions a sender sends
    /// in parallel arrive out of order, and wait until the gap before them fills.
    pub max_nonce_gap: u64,
    /// Most transactions in total.
    pub total: usize,
    /// Most bytes of encoded transactions in total (what bounds memory under a flood of large
    /// transactions, which `total` alone does not).
    pub total_bytes: usize,
    /// Load shedding: the longest a newly admitted transaction should wait, at the rate the
    /// producer has been taking transactions over the last second. Past it the pool refuses
    /// new transactions at once ("txpool is full") instead of queueing them behind seconds of
    /// work, so the accepted ones keep their latency and the refused ones learn at once. `None`
    /// queues up to `total`.
    pub max_delay: Option<Duration>,
    /// The least the pool holds before it sheds, whatever the measured rate (one full
    /// mini-block: an idle pool has measured no rate yet).
    pub shed_floor: usize,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        Self {
            per_sender: DEFAULT_PER_SENDER,
            max_nonce_gap: DEFAULT_PER_SENDER as u64,
            total: 100_000,
            total_bytes: 256 * 1024 * 1024,
            max_delay: None,
            shed_floor: 1000,
        }
    }
}

/// Transactions one sender may have waiting unless configured otherwise (`--mempool-per-sender`):
/// a bot or market maker sending a few seconds of contiguous transactions ahead of inclusion.
pub const DEFAULT_PER_SENDER: usize = 4096;

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
    /// The nonce leaves a gap after the sender's pending nonce wider than the pool queues.
    #[error("nonce too high: address {sender}, tx: {tx} state: {state} (pending: {pending})")]
    NonceTooHigh {
        /// Sender.
        sender: Address,
        /// The transaction's nonce.
        tx: u64,
        /// The account's nonce.
        state: u64,
        /// The account's nonce after the transactions waiting without a gap.
        pending: u64,
    },
    /// The sender already has as many transactions waiting as one sender may.
    #[error(
        "account limit exceeded: address {sender} has {pooled} transactions waiting, at most {limit}"
    )]
    AccountLimit {
        /// Sender.
        sender: Address,
        /// Its transactions waiting.
        pooled: usize,
        /// The bound.
        limit: usize,
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
    /// The sender has too many transactions waiting, or the pool is full of transactions that
    /// pay at least as much.
    #[error("txpool is full")]
    PoolFull,
    /// The pool is full and the transaction pays no more than the cheapest one waiting.
    #[error("transaction underpriced")]
    Underpriced,
    /// Load shedding: the transactions already waiting are more than `max_delay` of work at
    /// the rate the producer takes them.
    #[error(
        "txpool is full: the sequencer is at capacity ({waiting} transactions wait, {rate} \
         are included per second); retry later"
    )]
    AtCapacity {
        /// Transactions waiting.
        waiting: usize,
        /// Transactions the producer took in the last second.
        rate: usize,
    },
}

#[derive(Debug, Default)]
struct SenderQueue {
    by_nonce: BTreeMap<u64, Transaction>,
    /// The sender's state nonce as the pool last learnt it (admission, selection).
    state_nonce: u64,
    /// Transactions from `state_nonce` on without a gap: the ones the producer can take
    /// (geth's "pending"; those behind a gap are "queued").
    run: usize,
}

impl SenderQueue {
    /// The length of the gapless run from `state_nonce`, counted on from `from`.
    fn count_run(&self, from: usize) -> usize {
        let mut run = from;
        while self.by_nonce.contains_key(&(self.state_nonce + run as u64)) {
            run += 1;
        }
        run
    }
}

/// The pending transactions.
#[derive(Debug, Default)]
pub struct Mempool {
    limits: MempoolLimits,
    senders: HashMap<Address, SenderQueue>,
    /// Every waiting transaction's hash, with when it entered the pool.
    known: HashMap<B256, Instant>,
    /// Senders in the order they first queued a transaction; a sender re-enters at the back
    /// after being served.
    order: VecDeque<Address>,
    /// Every waiting transaction by its tip (cheapest first): what a full pool evicts.
    by_tip: BTreeSet<(u128, Address, u64)>,
    len: usize,
    bytes: usize,
    /// The senders' runs summed: transactions the producer could take now, what load
    /// shedding weighs (a flood of transactions behind nonce gaps is no work for it).
    pending: usize,
    /// Transactions the producer took over the last second.
    taken: verity_server::rate::RecentCount,
    /// Since when transactions have been waiting without a break (`None`: none is waiting),
    /// and how many the producer took since then.
    busy: Option<(Instant, usize)>,
}

/// The shortest backlog the drain rate is extrapolated from (five 10 ms mini-blocks).
const MIN_BUSY: Duration = Duration::from_millis(50);

/// The tip a transaction offers (its max priority fee; its gas price for a legacy one): what
/// the pool orders eviction by.
fn tip(tx: &Transaction) -> u128 {
    tx.max_priority_fee_per_gas()
        .unwrap_or_else(|| tx.max_fee_per_gas())
}

pub(crate) fn size(tx: &Transaction) -> usize {
    use alloy_eips::eip2718::Encodable2718 as _;
    tx.inner().encode_2718_len()
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

    /// Bytes of the waiting transactions, encoded.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Transactions the producer could take now (those behind a nonce gap excluded).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Counts `sender`'s run again after its queue or state nonce changed (`grown`: only
    /// transactions were added after the run, so it is counted on from where it was), keeping
    /// `pending` the sum of the runs.
    fn recount(&mut self, sender: Address, grown: bool) {
        if let Some(queue) = self.senders.get_mut(&sender) {
            let run = queue.count_run(if grown { queue.run } else { 0 });
            self.pending = self.pending - queue.run + run;
            queue.run = run;
        }
    }

    /// Removes `sender`'s queue, taking its run out of `pending`.
    fn drop_sender(&mut self, sender: Address) -> Option<SenderQueue> {
        let queue = self.senders.remove(&sender)?;
        self.pending -= queue.run;
        Some(queue)
    }

    /// Transactions per second the producer takes (its drain rate): those it took over the
    /// last second, or, when transactions have been waiting for less than a second, the rate
    /// it took them at since then (over at least [`MIN_BUSY`]). A burst after an idle spell is
    /// weighed at what the producer does with a backlog, not at the idle second before it.
    pub fn drain_rate(&mut self) -> usize {
        let measured = self.taken.count();
        match self.busy {
            Some((since, taken)) if since.elapsed() < Duration::from_secs(1) => {
                let busy = since.elapsed().max(MIN_BUSY).as_secs_f64();
                measured.max((taken as f64 / busy) as usize)
            }
            _ => measured,
        }
    }

    /// Starts or ends the busy spell as transactions wait or none does.
    fn track_busy(&mut self) {
        match (self.pending > 0, self.busy.is_some()) {
            (true, false) => self.busy = Some((Instant::now(), 0)),
            (false, true) => self.busy = None,
            _ => {}
        }
    }

    /// Load shedding: `Err` when the waiting transactions are more than `max_delay` of work at
    /// the current drain rate (at least `shed_floor` wait before it sheds). Cheap, so the
    /// sequencer asks before it spends a signature recovery on a transaction.
    pub fn check_capacity(&mut self) -> Result<(), Admission> {
        let Some(max_delay) = self.limits.max_delay else {
            return Ok(());
        };
        let rate = self.drain_rate();
        let room = (rate as f64 * max_delay.as_secs_f64()) as usize;
        if self.pending >= room.max(self.limits.shed_floor) {
            metrics::counter!("verity_sequencer_shed_transactions_total").increment(1);
            return Err(Admission::AtCapacity {
                waiting: self.pending,
                rate,
            });
        }
        Ok(())
    }

    /// Records a transaction that entered a sender's queue.
    fn added(&mut self, tx: &Transaction) {
        self.known.insert(*tx.tx_hash(), Instant::now());
        self.by_tip.insert((tip(tx), tx.signer(), tx.nonce()));
        self.len += 1;
        self.bytes += size(tx);
    }

    /// Records a transaction that left a sender's queue; returns when it had entered.
    fn removed(&mut self, tx: &Transaction) -> Option<Instant> {
        let entered = self.known.remove(tx.tx_hash());
        self.by_tip.remove(&(tip(tx), tx.signer(), tx.nonce()));
        self.len -= 1;
        self.bytes -= size(tx);
        entered
    }

    /// Makes room for `incoming` in a full pool by evicting the last transaction (highest
    /// nonce, so no gap is left) of the sender of the cheapest waiting one, as long as that
    /// one pays less than `incoming`. The sender's other transactions stay executable.
    fn make_room(&mut self, incoming: &Transaction) -> Result<(), Admission> {
        let need = size(incoming);
        while self.len >= self.limits.total || self.bytes + need > self.limits.total_bytes {
            let Some(&(cheapest, sender, _)) = self.by_tip.first() else {
                return Err(Admission::PoolFull);
            };
            if cheapest >= tip(incoming) {
                return Err(Admission::Underpriced);
            }
            let Some(queue) = self.senders.get_mut(&sender) else {
                return Err(Admission::PoolFull);
            };
            let Some((&last, _)) = queue.by_nonce.last_key_value() else {
                return Err(Admission::PoolFull);
            };
            if sender == incoming.signer() && last < incoming.nonce() {
                // Evicting it would leave a gap right before the incoming transaction.
                return Err(Admission::Underpriced);
            }
            let Some(evicted) = queue.by_nonce.remove(&last) else {
                return Err(Admission::PoolFull);
            };
            let emptied = queue.by_nonce.is_empty();
            self.recount(sender, false);
            if emptied {
                // Its place in `order` is dropped when `take_ready` reaches it.
                self.drop_sender(sender);
            }
            self.removed(&evicted);
            metrics::counter!("verity_sequencer_mempool_evicted_total").increment(1);
        }
        Ok(())
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
        if self.known.contains_key(tx.tx_hash()) {
            return Err(Admission::AlreadyKnown);
        }
        if nonce < state_nonce {
            return Err(Admission::NonceTooLow {
                sender,
                tx: nonce,
                state: state_nonce,
            });
        }
        // The gap is counted from the pending nonce: a sender's contiguous transactions are
        // never refused as "too high", however many wait (only `per_sender` bounds them).
        let pending = match self.senders.get(&sender) {
            Some(queue) if queue.state_nonce == state_nonce => state_nonce + queue.run as u64,
            _ => self.pending_nonce(sender, state_nonce),
        };
        if nonce > pending.saturating_add(self.limits.max_nonce_gap) {
            return Err(Admission::NonceTooHigh {
                sender,
                tx: nonce,
                state: state_nonce,
                pending,
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
        if let Some(queue) = self.senders.get_mut(&sender)
            && queue.state_nonce < state_nonce
        {
            queue.state_nonce = state_nonce;
            self.recount(sender, false);
        }
        let queue = self.senders.entry(sender).or_default();
        if let Some(existing) = queue.by_nonce.get(&nonce) {
            if !pays_ten_percent_more(&tx, existing) {
                return Err(Admission::ReplacementUnderpriced);
            }
            if let Some(old) = queue.by_nonce.insert(nonce, tx.clone()) {
                self.removed(&old);
            }
            self.added(&tx);
            return Ok(());
        }
        if queue.by_nonce.len() >= self.limits.per_sender {
            let pooled = queue.by_nonce.len();
            if pooled == 0 {
                self.drop_sender(sender);
            }
            return Err(Admission::AccountLimit {
                sender,
                pooled,
                limit: self.limits.per_sender,
            });
        }
        let fresh_sender = queue.by_nonce.is_empty();
        if let Err(refused) = self.check_capacity() {
            if fresh_sender {
                self.drop_sender(sender);
            }
            return Err(refused);
        }
        let full =
            self.len >= self.limits.total || self.bytes + size(&tx) > self.limits.total_bytes;
        if full && nonce != self.pending_nonce(sender, state_nonce) {
            // A full pool makes room only for transactions that can run next, never for one
            // behind a nonce gap (a flood of those would otherwise fill it with nothing
            // executable).
            if fresh_sender {
                self.drop_sender(sender);
            }
            return Err(Admission::PoolFull);
        }
        if let Err(refused) = self.make_room(&tx) {
            if fresh_sender {
                self.drop_sender(sender);
            }
            return Err(refused);
        }
        let queue = self.senders.entry(sender).or_default();
        if queue.by_nonce.is_empty() {
            self.order.push_back(sender);
        }
        queue.by_nonce.insert(nonce, tx.clone());
        let moved = queue.state_nonce < state_nonce;
        queue.state_nonce = queue.state_nonce.max(state_nonce);
        self.recount(sender, !moved);
        self.added(&tx);
        self.track_busy();
        Ok(())
    }

    /// geth's txpool view of the waiting transactions: up to `limit` of them (of `sender` alone
    /// when given), each with whether it is pending (the producer can take it now) or queued
    /// (behind a nonce gap), and whether more matched than `limit`. Senders come in no order,
    /// each one's transactions in nonce order.
    pub fn content(
        &self,
        sender: Option<Address>,
        limit: usize,
    ) -> (Vec<(&Transaction, bool)>, bool) {
        let mut out = Vec::new();
        let queues: Box<dyn Iterator<Item = &SenderQueue>> = match sender {
            Some(sender) => Box::new(self.senders.get(&sender).into_iter()),
            None => Box::new(self.senders.values()),
        };
        for queue in queues {
            for (nonce, tx) in &queue.by_nonce {
                if out.len() == limit {
                    return (out, true);
                }
                out.push((tx, *nonce < queue.state_nonce + queue.run as u64));
            }
        }
        (out, false)
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

    /// Removes and returns ready transactions, at most `max_txs`, `max_gas` (by gas limit) and
    /// `max_bytes` (encoded; the first transaction is taken whatever its size, so none waits
    /// for ever), fairly across senders. `state_nonce` gives each sender's current nonce;
    /// transactions below it are dropped as stale.
    pub fn take_ready(
        &mut self,
        max_txs: usize,
        max_gas: u64,
        max_bytes: usize,
        mut state_nonce: impl FnMut(Address) -> u64,
    ) -> Vec<Transaction> {
        let mut taken = Vec::new();
        let mut gas = 0u64;
        let mut bytes = 0usize;
        let mut visited = 0;
        let rounds = self.order.len();
        while visited < rounds && taken.len() < max_txs {
            visited += 1;
            let Some(sender) = self.order.pop_front() else {
                break;
            };
            let Some(mut queue) = self.drop_sender(sender) else {
                continue;
            };
            let mut next = state_nonce(sender);
            // Drop what the chain has already passed (replaced or stale).
            while let Some((&nonce, _)) = queue.by_nonce.first_key_value() {
                if nonce >= next {
                    break;
                }
                if let Some((_, stale)) = queue.by_nonce.pop_first() {
                    self.removed(&stale);
                }
            }
            while taken.len() < max_txs {
                let Some(tx) = queue.by_nonce.get(&next) else {
                    break;
                };
                if gas + tx.gas_limit() > max_gas {
                    break;
                }
                let tx_bytes = size(tx);
                if !taken.is_empty() && bytes + tx_bytes > max_bytes {
                    break;
                }
                gas += tx.gas_limit();
                bytes += tx_bytes;
                if let Some(tx) = queue.by_nonce.remove(&next) {
                    if let Some(entered) = self.removed(&tx) {
                        metrics::histogram!("verity_sequencer_mempool_wait_seconds")
                            .record(entered.elapsed().as_secs_f64());
                    }
                    taken.push(tx);
                }
                next += 1;
            }
            if !queue.by_nonce.is_empty() {
                // What was taken is as good as executed: the run now starts after it.
                queue.state_nonce = next;
                queue.run = queue.count_run(0);
                self.pending += queue.run;
                self.senders.insert(sender, queue);
                self.order.push_back(sender);
            }
        }
        if !taken.is_empty() {
            self.taken.add(taken.len());
            if let Some((_, count)) = self.busy.as_mut() {
                *count += taken.len();
            }
        }
        self.track_busy();
        taken
    }

    /// Puts back transactions that were taken but could not be included yet (in order).
    pub fn restore(&mut self, txs: Vec<Transaction>) {
        // Taken but not included: not part of the drain rate.
        self.taken.take_back(txs.len());
        if let Some((_, count)) = self.busy.as_mut() {
            *count = count.saturating_sub(txs.len());
        }
        for tx in txs {
            let sender = tx.signer();
            if self.known.contains_key(tx.tx_hash()) {
                continue;
            }
            let queue = self.senders.entry(sender).or_default();
            if queue.by_nonce.is_empty() {
                self.order.push_front(sender);
                queue.state_nonce = tx.nonce();
            }
            if queue.by_nonce.contains_key(&tx.nonce()) {
                // Admitted while this one was out being executed: keep the newcomer.
                continue;
            }
            // Taken, it had been counted as executed; it was not.
            queue.state_nonce = queue.state_nonce.min(tx.nonce());
            queue.by_nonce.insert(tx.nonce(), tx.clone());
            self.recount(sender, false);
            self.added(&tx);
        }
        self.track_busy();
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
    use alloy_primitives::{Bytes, TxKind};
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;

    fn tx(signer: &PrivateKeySigner, nonce: u64, max_fee: u128) -> Transaction {
        tx_with(signer, nonce, max_fee, Bytes::new())
    }

    fn tx_with(signer: &PrivateKeySigner, nonce: u64, max_fee: u128, input: Bytes) -> Transaction {
        let tx = TxEip1559 {
            chain_id: 1,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: max_fee / 2,
            to: TxKind::Call(Address::repeat_byte(1)),
            value: U256::from(1u64),
            input,
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
    fn content_says_which_transactions_are_pending_and_which_wait_behind_a_gap() {
        let (alice, bob) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut pool = Mempool::new(MempoolLimits::default());
        for nonce in [0, 1, 3] {
            pool.insert(tx(&alice, nonce, 100), 0, RICH)
                .expect("admitted");
        }
        pool.insert(tx(&bob, 7, 100), 5, RICH).expect("admitted");
        assert_eq!((pool.pending(), pool.len()), (2, 4));
        let of = |sender: &PrivateKeySigner, limit| {
            let (txs, truncated) = pool.content(Some(sender.address()), limit);
            let txs: Vec<(u64, bool)> = txs.iter().map(|(t, p)| (t.nonce(), *p)).collect();
            (txs, truncated)
        };
        assert_eq!(
            of(&alice, 10),
            (vec![(0, true), (1, true), (3, false)], false)
        );
        assert_eq!(of(&bob, 10), (vec![(7, false)], false), "5 and 6 missing");
        assert_eq!(of(&alice, 2), (vec![(0, true), (1, true)], true));
        let (all, truncated) = pool.content(None, 10);
        assert_eq!((all.len(), truncated), (4, false));
        assert_eq!(pool.content(None, 0), (Vec::new(), true));
        assert_eq!(
            pool.content(Some(Address::repeat_byte(9)), 10),
            (Vec::new(), false)
        );
    }

    #[test]
    fn ready_transactions_come_out_in_nonce_order_and_gaps_wait() {
        let alice = PrivateKeySigner::random();
        let mut pool = Mempool::new(MempoolLimits::default());
        for nonce in [1, 0, 3] {
            pool.insert(tx(&alice, nonce, 100), 0, RICH)
                .expect("admitted");
        }
        assert_eq!(pool.pending_nonce(alice.address(), 0), 2);
        let taken = pool.take_ready(10, u64::MAX, usize::MAX, |_| 0);
        assert_eq!(taken.iter().map(|t| t.nonce()).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(pool.len(), 1, "nonce 3 waits for 2");
        assert!(pool.take_ready(10, u64::MAX, usize::MAX, |_| 2).is_empty());
        pool.insert(tx(&alice, 2, 100), 2, RICH).expect("admitted");
        let taken = pool.take_ready(10, u64::MAX, usize::MAX, |_| 2);
        assert_eq!(taken.iter().map(|t| t.nonce()).collect::<Vec<_>>(), [2, 3]);
        assert!(pool.is_empty());
    }

    /// A sender sending contiguous nonces far ahead of inclusion is admitted up to the
    /// per-sender bound (refused past it with geth's "account limit exceeded"); the nonce gap is
    /// counted from its pending nonce, so only a real gap is "nonce too high".
    #[test]
    fn contiguous_nonces_are_bounded_by_the_sender_limit_and_gaps_by_the_pending_nonce() {
        let alice = PrivateKeySigner::random();
        let limits = MempoolLimits {
            per_sender: 300,
            max_nonce_gap: 64,
            ..MempoolLimits::default()
        };
        let mut pool = Mempool::new(limits);
        for nonce in 7..307 {
            pool.insert(tx(&alice, nonce, 100), 7, RICH)
                .unwrap_or_else(|e| panic!("nonce {nonce}: {e}"));
        }
        assert_eq!(pool.pending_nonce(alice.address(), 7), 307);
        let full = pool
            .insert(tx(&alice, 307, 100), 7, RICH)
            .expect_err("full");
        assert!(
            full.to_string().starts_with("account limit exceeded"),
            "{full}"
        );
        // All of them are ready, in one run.
        let taken = pool.take_ready(10_000, u64::MAX, usize::MAX, |_| 7);
        assert_eq!(taken.len(), 300);
        let mut pool = Mempool::new(limits);
        for nonce in 0..200 {
            pool.insert(tx(&alice, nonce, 100), 0, RICH)
                .expect("contiguous");
        }
        pool.insert(tx(&alice, 200 + 64, 100), 0, RICH)
            .expect("a gap of 64 after the pending nonce");
        let high = pool
            .insert(tx(&alice, 200 + 65, 100), 0, RICH)
            .expect_err("a gap of 65");
        assert!(high.to_string().starts_with("nonce too high"), "{high}");
        assert!(high.to_string().contains("pending: 200"), "{high}");
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
        let taken = pool.take_ready(10, 4 * 21_000, usize::MAX, |_| 0);
        assert_eq!(taken.len(), 4);
        let from_bob = taken.iter().filter(|t| t.signer() == bob.address()).count();
        assert!(from_bob >= 1, "bob is served in the same round");
        let rest = pool.take_ready(10, u64::MAX, usize::MAX, |address| {
            taken.iter().filter(|t| t.signer() == address).count() as u64
        });
        assert_eq!(rest.len(), 2);
    }

    /// A mini-block's transactions stay within the byte budget (so its event and job fit
    /// NATS's max_payload), except a first transaction larger than the budget, which goes
    /// alone rather than never.
    #[test]
    fn the_byte_budget_is_respected_and_a_large_transaction_still_goes_alone() {
        let alice = PrivateKeySigner::random();
        let mut pool = Mempool::new(MempoolLimits::default());
        for nonce in 0..4 {
            pool.insert(tx(&alice, nonce, 100), 0, RICH).expect("a");
        }
        let one = size(&tx(&alice, 0, 100));
        let taken = pool.take_ready(10, u64::MAX, 2 * one + one / 2, |_| 0);
        assert_eq!(taken.len(), 2, "two fit, a third does not");
        let taken = pool.take_ready(10, u64::MAX, one / 2, |_| 2);
        assert_eq!(taken.len(), 1, "one larger than the budget goes alone");
    }

    fn shedding(max_delay_ms: u64, floor: usize) -> Mempool {
        Mempool::new(MempoolLimits {
            max_delay: Some(Duration::from_millis(max_delay_ms)),
            shed_floor: floor,
            ..MempoolLimits::default()
        })
    }

    /// An idle pool has measured no rate: it queues its floor, then refuses at once with
    /// geth's "txpool is full" text, and takes again once the producer has taken.
    #[test]
    fn an_idle_pool_sheds_past_its_floor_with_the_pool_full_text() {
        let mut pool = shedding(500, 3);
        let senders: Vec<_> = (0..5).map(|_| PrivateKeySigner::random()).collect();
        for s in &senders[..3] {
            pool.insert(tx(s, 0, 100), 0, RICH)
                .expect("under the floor");
        }
        let refused = pool
            .insert(tx(&senders[3], 0, 100), 0, RICH)
            .expect_err("shed");
        assert!(
            matches!(
                refused,
                Admission::AtCapacity {
                    waiting: 3,
                    rate: 0
                }
            ),
            "{refused:?}"
        );
        assert!(
            refused.to_string().starts_with("txpool is full"),
            "{refused}"
        );
        assert_consistent(&pool);
        assert_eq!(pool.take_ready(2, u64::MAX, usize::MAX, |_| 0).len(), 2);
        pool.insert(tx(&senders[3], 0, 100), 0, RICH)
            .expect("room again");
        pool.insert(tx(&senders[4], 0, 100), 0, RICH)
            .expect("under the floor of 3");
        // Two taken within the backlog's first 50 ms: 40/s (at least 20/s however slow this
        // test runs), so 10 or more may wait for 500 ms.
        assert!(pool.drain_rate() >= 20, "{}", pool.drain_rate());
        assert!(pool.check_capacity().is_ok());
    }

    /// A burst after an idle spell is weighed at the rate the producer takes the backlog, not
    /// at the idle second before it; once nothing waits, the last second's count is the rate
    /// again.
    #[test]
    fn a_burst_is_weighed_at_the_rate_its_backlog_drains() {
        let mut pool = shedding(500, 3);
        let senders: Vec<_> = (0..40).map(|_| PrivateKeySigner::random()).collect();
        let txs: Vec<_> = senders.iter().map(|s| tx(s, 0, 100)).collect();
        for t in &txs[..3] {
            pool.insert(t.clone(), 0, RICH).expect("under the floor");
        }
        assert!(
            pool.insert(txs[3].clone(), 0, RICH).is_err(),
            "nothing taken yet"
        );
        pool.take_ready(2, u64::MAX, usize::MAX, |_| 0);
        let rate = pool.drain_rate();
        assert!(rate >= 20, "2 taken in a backlog of under 100 ms: {rate}");
        let room = rate / 2;
        let mut admitted = 0;
        for t in &txs[3..] {
            if pool.insert(t.clone(), 0, RICH).is_err() {
                break;
            }
            admitted += 1;
        }
        assert!(
            admitted + 1 >= room.min(37),
            "{admitted} admitted, room {room}"
        );
        let all = pool.pending();
        pool.take_ready(all, u64::MAX, usize::MAX, |_| 0);
        assert_eq!(pool.pending(), 0);
        assert_eq!(
            pool.drain_rate(),
            2 + all,
            "idle again: the last second's count"
        );
        assert_consistent(&pool);
    }

    /// The bound follows what the producer takes: at 40 transactions taken in the last second
    /// and a 500 ms bound, 20 may wait; restored ones do not count as taken; shedding off
    /// queues up to the pool's size.
    #[test]
    fn the_bound_is_the_drain_rate_times_the_delay() {
        let mut pool = shedding(500, 1);
        let senders: Vec<_> = (0..41).map(|_| PrivateKeySigner::random()).collect();
        for s in &senders[..40] {
            pool.restore(vec![tx(s, 0, 100)]);
        }
        let taken = pool.take_ready(40, u64::MAX, usize::MAX, |_| 0);
        assert_eq!(taken.len(), 40);
        assert_eq!(pool.drain_rate(), 40);
        pool.restore(taken[30..].to_vec());
        assert_eq!(pool.drain_rate(), 30, "ten went back");
        pool.take_ready(10, u64::MAX, usize::MAX, |_| 0);
        assert_eq!(pool.drain_rate(), 40);
        for s in &senders[20..40] {
            pool.insert(tx(s, 1, 100), 1, RICH)
                .expect("under 40 x 0.5 s");
        }
        let refused = pool
            .insert(tx(&senders[40], 0, 100), 0, RICH)
            .expect_err("at 20");
        assert!(
            matches!(
                refused,
                Admission::AtCapacity {
                    waiting: 20,
                    rate: 40
                }
            ),
            "{refused:?}"
        );
        assert_consistent(&pool);

        let mut unbounded = Mempool::new(MempoolLimits::default());
        for s in &senders {
            unbounded
                .insert(tx(s, 0, 100), 0, RICH)
                .expect("no shedding by default");
        }
    }

    /// Shedding weighs only what the producer could take: transactions behind a nonce gap
    /// (which a flood could fill the pool with cheaply) do not count, and the one that fills
    /// the gap makes them count.
    #[test]
    fn transactions_behind_a_gap_are_no_load_until_the_gap_is_filled() {
        let mut pool = shedding(500, 3);
        let alice = PrivateKeySigner::random();
        let bob = PrivateKeySigner::random();
        for nonce in 1..=10 {
            pool.insert(tx(&alice, nonce, 100), 0, RICH)
                .expect("queued, not pending");
        }
        assert_eq!((pool.len(), pool.pending()), (10, 0));
        pool.insert(tx(&bob, 0, 100), 0, RICH)
            .expect("bob's is pending");
        pool.insert(tx(&alice, 0, 100), 0, RICH)
            .expect("fills alice's gap");
        assert_eq!(pool.pending(), 12, "alice's ten are executable now");
        assert_consistent(&pool);
        assert!(pool.check_capacity().is_err());
        let taken = pool.take_ready(5, u64::MAX, usize::MAX, |_| 0);
        assert_eq!(taken.len(), 5);
        assert_eq!(pool.pending(), 7);
        assert_consistent(&pool);
        let alice_taken: Vec<_> = taken
            .into_iter()
            .filter(|t| t.signer() == alice.address())
            .collect();
        let first = alice_taken
            .first()
            .map(|t| t.nonce())
            .expect("alice was served");
        pool.restore(alice_taken);
        assert_eq!(pool.pending(), 12, "restored ones count again");
        assert_consistent(&pool);
        // Alice's state moved past what the producer took; her queue is counted from there.
        assert_eq!(first, 0);
    }

    /// The pool's indexes agree with its queues.
    fn assert_consistent(pool: &Mempool) {
        let queued: usize = pool.senders.values().map(|q| q.by_nonce.len()).sum();
        assert_eq!(queued, pool.len());
        for queue in pool.senders.values() {
            assert_eq!(queue.run, queue.count_run(0), "a sender's run is counted");
        }
        let runs: usize = pool.senders.values().map(|q| q.run).sum();
        assert_eq!(runs, pool.pending(), "pending is the runs summed");
        assert_eq!(pool.known.len(), pool.len());
        assert_eq!(pool.by_tip.len(), pool.len());
        let bytes: usize = pool
            .senders
            .values()
            .flat_map(|q| q.by_nonce.values())
            .map(size)
            .sum();
        assert_eq!(bytes, pool.bytes());
    }

    #[test]
    fn a_full_pool_evicts_the_cheapest_senders_last_transaction_for_a_better_one() {
        let limits = MempoolLimits {
            total: 3,
            ..MempoolLimits::default()
        };
        let mut pool = Mempool::new(limits);
        let cheap = PrivateKeySigner::random();
        let dear = PrivateKeySigner::random();
        pool.insert(tx(&cheap, 0, 100), 0, RICH).expect("admitted");
        pool.insert(tx(&cheap, 1, 100), 0, RICH).expect("admitted");
        pool.insert(tx(&dear, 0, 400), 0, RICH).expect("admitted");
        let newcomer = PrivateKeySigner::random();
        let refused = pool
            .insert(tx(&newcomer, 0, 100), 0, RICH)
            .expect_err("no better than the cheapest");
        assert_eq!(refused.to_string(), "transaction underpriced");
        pool.insert(tx(&newcomer, 0, 300), 0, RICH)
            .expect("pays more than the cheapest");
        assert_eq!(pool.len(), 3);
        assert_eq!(
            pool.pending_nonce(cheap.address(), 0),
            1,
            "the cheap sender lost its last transaction, not its first"
        );
        assert_consistent(&pool);
        // A sender's own queue is never cut in front of its new transaction.
        let refused = pool
            .insert(tx(&cheap, 1, 1_000), 0, RICH)
            .expect_err("its own predecessor is the cheapest");
        assert_eq!(refused, Admission::Underpriced);
        assert_consistent(&pool);
    }

    #[test]
    fn a_flood_stays_within_the_count_and_byte_bounds_and_leaves_executable_transactions() {
        let limits = MempoolLimits {
            total: 500,
            total_bytes: 200 * 1024,
            ..MempoolLimits::default()
        };
        let mut pool = Mempool::new(limits);
        let signers: Vec<_> = (0..400).map(|_| PrivateKeySigner::random()).collect();
        let mut admitted = 0;
        for round in 0..5u64 {
            for (i, signer) in signers.iter().enumerate() {
                // Fees rise with the round; every other sender sends 1 KiB of calldata.
                let fee = 100 + u128::from(round) * 50 + (i as u128 % 7);
                let input = if i % 2 == 0 {
                    Bytes::from(vec![1u8; 1024])
                } else {
                    Bytes::new()
                };
                if pool
                    .insert(tx_with(signer, round, fee, input), 0, RICH)
                    .is_ok()
                {
                    admitted += 1;
                }
                assert!(pool.len() <= 500);
                assert!(pool.bytes() <= 200 * 1024);
            }
        }
        assert!(admitted > 500, "eviction made room: {admitted}");
        assert_consistent(&pool);
        let left = pool.len();
        let taken = pool.take_ready(usize::MAX, u64::MAX, usize::MAX, |_| 0);
        assert!(
            taken.len() * 2 > left,
            "{} of {left} executable",
            taken.len()
        );
        assert_eq!(pool.len() + taken.len(), left);
        assert_consistent(&pool);
    }
}
