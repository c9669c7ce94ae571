//! Parallel execution of one batch: optimistic speculation over the batch's starting state,
//! validated and committed strictly in order.
//!
//! - **Speculation.** Worker threads claim transactions in batch order from a shared counter and
//!   execute each over the state the batch *started* from, as if it were the first. The fee is
//!   not paid to the beneficiary during speculation (every transaction would then read and write
//!   the same account); the amount is kept and paid at commit, which is what makes independent
//!   transactions independent.
//! - **Validation and commit**, on the calling thread, in order. A speculation is valid when
//!   nothing it read was changed by a transaction committed before it in this batch: revm's
//!   journal lists every account and slot a transaction loaded, and the committer keeps the set
//!   of accounts whose balance, nonce or code changed and of slots whose value changed. A valid
//!   speculation is committed as is (its reads were right, so its writes are too); an invalid
//!   one, one revm refused over the starting state (say "nonce too high" behind an earlier
//!   transaction of the same sender), and one that read the beneficiary are re-executed over
//!   the committed state, exactly as [`crate::execute`] would.
//! - When the committer reaches a transaction no worker has claimed, it executes it itself over
//!   the committed state instead of speculating: on a fully contended batch the caller runs at
//!   the sequential executor's pace while the workers' speculations are discarded.
//!
//! Receipts, gas accounting and diffs go through the same [`BlockBuilder`] as the sequential
//! executor; the equivalence property tests compare every field of both outcomes.

use std::{
    cell::Cell,
    marker::PhantomData,
    sync::{
        Condvar, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use alloy_primitives::{Address, U256, map::HashSet};
use revm::{
    Database, ExecuteEvm,
    context::{
        ContextSetters,
        result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction},
    },
    context_interface::{Block as _, ContextTr, JournalTr, Transaction as _},
    handler::{EvmTr, EvmTrError, FrameResult, FrameTr, Handler},
    interpreter::interpreter_action::FrameInit,
    state::EvmState,
};
use verity_primitives::{StateDiff, StateView, Transaction};

use crate::{
    BlockBuilder, BlockEnvSpec, Changes, ExecutionError, ExecutionOutcome, StateReadError, TxDiff,
    execute, tx_env,
};

/// Executes `txs` like [`execute`] (same outcome, field for field) on `threads` threads, the
/// caller's included. With one thread, or one transaction, it is [`execute`].
pub fn execute_parallel<S: StateView + Sync>(
    state: &S,
    env: &BlockEnvSpec,
    txs: Vec<Transaction>,
    cumulative_gas_start: u64,
    threads: usize,
) -> Result<ExecutionOutcome, ExecutionError> {
    let schedule = Schedule {
        threads,
        committer_executes: true,
    };
    execute_scheduled(state, env, txs, cumulative_gas_start, schedule)
}

/// How [`execute_scheduled`] shares the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Threads, the caller's included.
    pub threads: usize,
    /// The committer executes a transaction no worker has claimed yet itself (what
    /// [`execute_parallel`] does). When false, every transaction is speculated by a worker
    /// and validated: slower, but it puts each one through validation, which is what the
    /// equivalence tests want.
    pub committer_executes: bool,
}

/// [`execute_parallel`] with an explicit [`Schedule`].
pub fn execute_scheduled<S: StateView + Sync>(
    state: &S,
    env: &BlockEnvSpec,
    txs: Vec<Transaction>,
    cumulative_gas_start: u64,
    schedule: Schedule,
) -> Result<ExecutionOutcome, ExecutionError> {
    let workers = schedule
        .threads
        .saturating_sub(1)
        .min(txs.len().saturating_sub(1));
    if workers == 0 {
        return execute(state, env, txs, cumulative_gas_start);
    }
    let slots: Vec<Mutex<Option<Speculation>>> = txs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let live = AtomicUsize::new(workers);
    let contended = AtomicBool::new(false);
    // The batch's writes are merged at the end on every thread, each one the accounts of its
    // share of the address space (`Merge`).
    let parts = workers + 1;
    let merge = Merge::new(parts);
    let mut block = BlockBuilder::new(state, env, cumulative_gas_start);
    block.track_writes();
    block.keep_diffs_in_order();
    // The workers run on threads that outlive the batch (`pool`). A thread started per batch
    // lands on the caller's core until the scheduler moves it, and starts with an empty
    // allocator heap that faults in fresh pages.
    let committed = pool().in_place_scope(|scope| {
        let (txs, slots, next, stop, live, contended, merge) =
            (&txs, &slots, &next, &stop, &live, &contended, &merge);
        for part in 1..parts {
            scope.spawn(move |_| {
                let alive = Alive(live);
                speculate(state, env, txs, slots, next, stop, contended);
                // Every speculation it claimed is delivered.
                drop(alive);
                merge.merge_when_handed(part);
            });
        }
        // Releases the workers from waiting for the merge, whatever happens below.
        let _release = Release(merge);
        let claims = schedule.committer_executes.then_some(next);
        let committed = commit_in_order(&mut block, state, txs, slots, claims, live, contended)
            .and_then(|()| block.settle_fees());
        stop.store(true, Ordering::Release);
        committed?;
        // Merged on every thread only when every write was kept apart (an uncontended batch)
        // and there are enough of them; a small batch is merged here, in order.
        if block.diff.accounts.is_empty()
            && let Some(ordered) = block.ordered.take_if(|o| o.len() >= PARALLEL_MERGE_MIN)
        {
            merge.hand_over(ordered, std::mem::take(&mut block.unapplied));
            merge.merge_when_handed(0);
            return Ok(true);
        }
        block.merge_ordered();
        Ok::<_, ExecutionError>(false)
    });
    if committed? {
        // Every worker is done (the scope waited for them).
        block.diff = merge.into_diff();
    }
    Ok(block.finish(txs))
}

/// The speculation workers' threads: one per core but the caller's, started once, apart from
/// rayon's global pool (a sequencer recovers senders there, and a batch must not wait behind
/// that). More workers than threads queue: a worker that starts late finds the batch claimed
/// and only merges its share; the committer never waits for one that has not started.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(cores.saturating_sub(1).max(1))
            .thread_name(|i| format!("speculate-{i}"))
            .build();
        match built {
            Ok(pool) => pool,
            Err(error) => panic!("cannot start the parallel executor's threads: {error}"),
        }
    })
}

/// Batches with fewer committed writes than this are merged on the committing thread alone
/// (waking the workers costs more than merging a few hundred accounts).
const PARALLEL_MERGE_MIN: usize = 512;

/// The end of a batch: its per-transaction writes, merged by `parts` threads, each merging, in
/// commit order, the accounts whose first address byte falls in its share (so each account is
/// merged by one thread, and the shares, concatenated, are in address order).
struct Merge {
    /// Set once by the committer: the writes, or None when there is nothing to merge on other
    /// threads (a small batch, an error).
    handed: OnceLock<Option<Vec<TxDiff>>>,
    /// Wakes the workers waiting for `handed`.
    waiting: (Mutex<()>, Condvar),
    /// The committed speculations' state, freed by the first worker once merged.
    garbage: Mutex<Vec<EvmState>>,
    merged: Vec<Mutex<Option<StateDiff>>>,
}

impl Merge {
    fn new(parts: usize) -> Self {
        Self {
            handed: OnceLock::new(),
            waiting: (Mutex::new(()), Condvar::new()),
            garbage: Mutex::new(Vec::new()),
            merged: (0..parts).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn hand_over(&self, ordered: Vec<TxDiff>, garbage: Vec<EvmState>) {
        *self.garbage.lock().unwrap_or_else(|e| e.into_inner()) = garbage;
        self.hand(Some(ordered));
    }

    /// Sets `handed` (a second call changes nothing) and wakes every waiting worker.
    fn hand(&self, handed: Option<Vec<TxDiff>>) {
        let _ = self.handed.set(handed);
        // Taken after the set: a worker checks `handed` under the lock, so it either saw it set
        // or is already waiting when this notifies.
        let _lock = self.waiting.0.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.1.notify_all();
    }

    /// Waits until the committer hands the writes over (or gives up: an error, a small batch),
    /// then merges share `part`.
    fn merge_when_handed(&self, part: usize) {
        let (lock, handed_over) = &self.waiting;
        let mut waiting = lock.lock().unwrap_or_else(|e| e.into_inner());
        let handed = loop {
            if let Some(handed) = self.handed.get() {
                break handed;
            }
            waiting = handed_over.wait(waiting).unwrap_or_else(|e| e.into_inner());
        };
        drop(waiting);
        let Some(ordered) = handed else {
            return;
        };
        let diff = merge_share(ordered, part, self.merged.len());
        *self.merged[part].lock().unwrap_or_else(|e| e.into_inner()) = Some(diff);
        if part == 1 {
            drop(std::mem::take(
                &mut *self.garbage.lock().unwrap_or_else(|e| e.into_inner()),
            ));
        }
    }

    /// The merged writes, every share in address order. Called after the scope: every worker
    /// that started has merged its share (one that panicked re-panics out of the scope); a
    /// share none merged is merged here.
    fn into_diff(self) -> StateDiff {
        let Self { handed, merged, .. } = self;
        let parts = merged.len();
        let mut diff = StateDiff::default();
        for (part, merged) in merged.into_iter().enumerate() {
            let share_diff = merged.into_inner().unwrap_or_else(|e| e.into_inner());
            let mut share_diff = share_diff.unwrap_or_else(|| {
                let ordered = handed.get().and_then(Option::as_deref).unwrap_or_default();
                merge_share(ordered, part, parts)
            });
            diff.accounts.append(&mut share_diff.accounts);
        }
        diff
    }
}

/// The writes of `ordered` (per transaction, in commit order) to the accounts of share `part`
/// of `parts`, merged.
fn merge_share(ordered: &[TxDiff], part: usize, parts: usize) -> StateDiff {
    let mut diff = StateDiff::default();
    for tx in ordered {
        for (address, change) in tx {
            if share(address, parts) == part {
                diff.merge_account(*address, change);
            }
        }
    }
    diff
}

/// The share of the address space `address` falls in, of `parts` shares in address order.
fn share(address: &Address, parts: usize) -> usize {
    (usize::from(address[0]) * parts) >> 8
}

/// Tells the workers there is nothing (more) to hand over when the committer leaves, so none
/// waits forever.
struct Release<'a>(&'a Merge);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.hand(None);
    }
}

/// What a worker found for one transaction. Kept inline in its slot (no allocation per
/// transaction); a refusal wastes the space of one slot.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Speculation {
    /// It ran over the starting state.
    Ran(Speculated),
    /// revm refused it (or a read failed) over the starting state: re-execute.
    Refused,
}

#[derive(Debug)]
struct Speculated {
    result: ExecutionResult<HaltReason>,
    /// Every account and slot it loaded, with its writes.
    state: EvmState,
    /// Its changes over the starting state: if the speculation is valid, everything it touched
    /// it also read, unchanged, so they are its changes over the committed state too.
    changes: Changes,
    /// The fee owed to the beneficiary, not yet paid.
    reward: U256,
}

/// The accounts and slots the committed transactions of the batch changed.
#[derive(Debug, Default)]
pub(crate) struct Written {
    accounts: HashSet<Address>,
    slots: HashSet<(Address, U256)>,
}

impl Written {
    pub(crate) fn extend(&mut self, changes: &Changes) {
        self.accounts.extend(changes.accounts.iter().copied());
        self.slots.extend(changes.slots.iter().copied());
    }

    /// True when a speculation read something a committed transaction changed, or read the
    /// beneficiary. A fee paid before changes the beneficiary's balance, and that alone would
    /// invalidate the read; the rule is kept for reads with no fee paid yet, because a
    /// transaction that touches the beneficiary has its fee paid in the same journal as its own
    /// changes when executed in order (a self-destructed beneficiary, say), which committing
    /// the fee afterwards would not reproduce.
    fn invalidates(&self, speculated: &EvmState, beneficiary: Address) -> bool {
        speculated.iter().any(|(address, account)| {
            *address == beneficiary
                || self.accounts.contains(address)
                || account
                    .storage
                    .keys()
                    .any(|slot| self.slots.contains(&(*address, *slot)))
        })
    }
}

/// Counts a worker as alive until it returns or unwinds, so the committer never waits for a
/// speculation nobody will deliver.
struct Alive<'a>(&'a AtomicUsize);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Conflicts raise it by 2, kept speculations lower it by 1; above [`CONTENDED`] the batch is
/// taken as contended: the committer stops waiting for speculations (it executes a transaction
/// itself unless its speculation is already there) and the workers stop.
const CONTENDED: u32 = 8;

/// The committer: commits transactions in order; while the next one's speculation is not there
/// yet it claims that transaction and executes it itself over the committed state, and while a
/// worker is still on it, it speculates a later unclaimed one rather than wait.
fn commit_in_order<S: StateView + Sync>(
    block: &mut BlockBuilder<'_, S>,
    state: &S,
    txs: &[Transaction],
    slots: &[Mutex<Option<Speculation>>],
    claims: Option<&AtomicUsize>,
    live: &AtomicUsize,
    contended: &AtomicBool,
) -> Result<(), ExecutionError> {
    let mut score = 0u32;
    let mut speculator: Option<Speculator<'_, S>> = None;
    let mut index = 0;
    let mut spins = 0u32;
    while let Some(tx) = txs.get(index) {
        if let Some(speculation) = take(&slots[index]) {
            let kept = match speculation {
                Speculation::Ran(speculated) => block.commit_speculated(tx, speculated)?,
                Speculation::Refused => {
                    block.speculation.reexecuted += 1;
                    block.execute_next(tx)?;
                    false
                }
            };
            score = if kept {
                score.saturating_sub(1)
            } else {
                (score + 2).min(4 * CONTENDED)
            };
            if claims.is_some() && score > CONTENDED && block.written.is_some() {
                // The workers stop; what they already delivered is re-executed, so nothing is
                // validated any more and the committed writes need not be tracked.
                contended.store(true, Ordering::Release);
                block.written = None;
                // From here on it runs as the sequential executor does, merging each write as
                // it comes: keeping every transaction's writes apart until the end only pays
                // when the merge splits across threads, and holding them grows the heap.
                block.merge_ordered();
            }
            index += 1;
            spins = 0;
            continue;
        }
        let execute_itself = match claims {
            // Unclaimed (every transaction before `index` is committed, so the counter is at
            // least `index`), or contended: speculations mostly fail, do not wait for one.
            Some(next) => {
                next.compare_exchange(index, index + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                    || score > CONTENDED
            }
            // Every worker is gone (a worker that claimed it delivers before it exits).
            None => live.load(Ordering::Acquire) == 0 && take_is_empty(&slots[index]),
        };
        if execute_itself {
            block.speculation.direct += 1;
            block.execute_next(tx)?;
            index += 1;
            spins = 0;
            continue;
        }
        // A worker is on it: speculate a later transaction instead of waiting.
        if let Some(next) = claims {
            let later = next.fetch_add(1, Ordering::AcqRel);
            if let Some(later_tx) = txs.get(later) {
                let speculator =
                    speculator.get_or_insert_with(|| Speculator::new(state, &block.env));
                let speculation = speculator.run(later_tx);
                *slots[later].lock().unwrap_or_else(|e| e.into_inner()) = Some(speculation);
                continue;
            }
        }
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    Ok(())
}

fn take(slot: &Mutex<Option<Speculation>>) -> Option<Speculation> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn take_is_empty(slot: &Mutex<Option<Speculation>>) -> bool {
    slot.lock().unwrap_or_else(|e| e.into_inner()).is_none()
}

/// How many accounts a speculator keeps cached before it empties its cache.
const SPECULATOR_CACHED_ACCOUNTS: usize = 1024;

/// An EVM over the batch's starting state. Its cache holds only values read from that state:
/// nothing is committed into it.
struct Speculator<'a, S: StateView> {
    evm: crate::BlockEvm<'a, S>,
}

impl<'a, S: StateView> Speculator<'a, S> {
    fn new(state: &'a S, env: &BlockEnvSpec) -> Self {
        Self {
            evm: crate::block_evm(state, env),
        }
    }

    /// Runs `tx` as if it were the batch's first transaction, the beneficiary unpaid.
    fn run(&mut self, tx: &Transaction) -> Speculation {
        let evm = &mut self.evm;
        // The cache pays for accounts read again (a token, a hot contract); one that grew with
        // every sender and recipient of a batch would only cost its growth (rehashing, fresh
        // pages). Emptied in place, it keeps its capacity; code stays cached.
        let cache = &mut evm.ctx.db_mut().cache;
        if cache.accounts.len() >= SPECULATOR_CACHED_ACCOUNTS {
            cache.accounts.clear();
        }
        evm.ctx.set_tx(tx_env(tx));
        let mut handler: DeferredReward<_, EVMError<StateReadError, InvalidTransaction>, _> =
            DeferredReward::default();
        let ran = handler.run(evm);
        let state = evm.finalize();
        let Ok(result) = ran else {
            return Speculation::Refused;
        };
        match Changes::of(&state, evm.ctx.db_ref(), true) {
            Ok(changes) => Speculation::Ran(Speculated {
                result,
                state,
                changes,
                reward: handler.reward.get(),
            }),
            Err(_) => Speculation::Refused,
        }
    }
}

/// A worker: speculates claimed transactions until the batch runs out, the committer is done,
/// or the batch turned out contended.
fn speculate<S: StateView + Sync>(
    state: &S,
    env: &BlockEnvSpec,
    txs: &[Transaction],
    slots: &[Mutex<Option<Speculation>>],
    next: &AtomicUsize,
    stop: &AtomicBool,
    contended: &AtomicBool,
) {
    let mut speculator = Speculator::new(state, env);
    while !stop.load(Ordering::Acquire) && !contended.load(Ordering::Acquire) {
        let index = next.fetch_add(1, Ordering::AcqRel);
        let Some(tx) = txs.get(index) else {
            return;
        };
        let speculation = speculator.run(tx);
        *slots[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(speculation);
    }
}

impl<S: StateView> BlockBuilder<'_, S> {
    /// Owes the beneficiary `reward`, paid by [`Self::settle_fees`] before anything can read
    /// it. Only while the beneficiary is an account that is not empty: then paying fees one by
    /// one or their sum at once gives the same balance and the same diff (touching it clears
    /// nothing, EIP-161). Otherwise, or when the sum could overflow, it is paid now.
    fn defer_fee(&mut self, reward: U256) -> Result<(), ExecutionError> {
        let beneficiary = self
            .evm
            .ctx
            .db_mut()
            .basic(self.env.beneficiary)
            .map_err(|e| ExecutionError::State(e.0))?;
        let deferrable = beneficiary.is_some_and(|info| {
            !info.is_empty()
                && self
                    .unpaid
                    .checked_add(reward)
                    .and_then(|owed| info.balance.checked_add(owed))
                    .is_some()
        });
        if deferrable {
            self.unpaid += reward;
            Ok(())
        } else {
            self.settle_fees()?;
            self.pay_beneficiary(reward)
        }
    }

    /// Pays the fees [`Self::defer_fee`] owes.
    pub(crate) fn settle_fees(&mut self) -> Result<(), ExecutionError> {
        let owed = std::mem::take(&mut self.unpaid);
        if owed.is_zero() {
            return Ok(());
        }
        self.pay_beneficiary(owed)
    }

    /// Commits a speculation when it is still valid over the committed state (paying the
    /// beneficiary the fee it owes), and re-executes the transaction otherwise. True when the
    /// speculation was kept.
    fn commit_speculated(
        &mut self,
        tx: &Transaction,
        speculated: Speculated,
    ) -> Result<bool, ExecutionError> {
        if self.gas_refusal(tx).is_some() {
            // Refused before execution whatever it read.
            self.speculation.committed += 1;
            self.execute_next(tx)?;
            return Ok(true);
        }
        let invalid = self
            .written
            .as_ref()
            .is_none_or(|w| w.invalidates(&speculated.state, self.env.beneficiary));
        if invalid {
            self.speculation.reexecuted += 1;
            self.execute_next(tx)?;
            return Ok(false);
        }
        self.speculation.committed += 1;
        self.note_written(&speculated.changes);
        // Its state goes into the cache only when something reads it (`apply_deferred`).
        self.unapplied.push(speculated.state);
        self.record(speculated.changes.diff);
        self.defer_fee(speculated.reward)?;
        self.include(tx, &speculated.result);
        Ok(true)
    }
}

/// The handler's type parameters, held without owning values of them (`Send` and `Sync`
/// whatever they are).
type Types<EVM, ERROR, FRAME> = fn() -> (EVM, ERROR, FRAME);

/// revm's mainnet handler, except that the beneficiary is not paid: the fee is kept in
/// `reward` (computed as revm's `reward_beneficiary` does) for the committer to pay.
struct DeferredReward<EVM, ERROR, FRAME> {
    reward: Cell<U256>,
    _types: PhantomData<Types<EVM, ERROR, FRAME>>,
}

impl<EVM, ERROR, FRAME> Default for DeferredReward<EVM, ERROR, FRAME> {
    fn default() -> Self {
        Self {
            reward: Cell::new(U256::ZERO),
            _types: PhantomData,
        }
    }
}

impl<EVM, ERROR, FRAME> Handler for DeferredReward<EVM, ERROR, FRAME>
where
    EVM: EvmTr<Context: ContextTr<Journal: JournalTr<State = EvmState>>, Frame = FRAME>,
    ERROR: EvmTrError<EVM>,
    FRAME: FrameTr<FrameResult = FrameResult, FrameInit = FrameInit>,
{
    type Evm = EVM;
    type Error = ERROR;
    type HaltReason = HaltReason;

    fn reward_beneficiary(
        &self,
        evm: &mut Self::Evm,
        exec_result: &mut FrameResult,
    ) -> Result<(), Self::Error> {
        let context = evm.ctx_ref();
        let base_fee = u128::from(context.block().basefee());
        // Every block runs after London: the base fee is burnt, the tip goes to the beneficiary.
        let tip = context
            .tx()
            .effective_gas_price(base_fee)
            .saturating_sub(base_fee);
        let gas = exec_result.gas();
        let used = gas.used().saturating_sub(gas.reservoir());
        self.reward
            .set(U256::from(tip).saturating_mul(U256::from(used)));
        Ok(())
    }
}
