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
        Mutex,
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
use verity_primitives::{StateView, Transaction};

use crate::{
    BlockBuilder, BlockEnvSpec, Changes, ExecutionError, ExecutionOutcome, StateReadError, execute,
    tx_env,
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
    let mut block = BlockBuilder::new(state, env, cumulative_gas_start);
    block.track_writes();
    let committed = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let _alive = Alive(&live);
                speculate(state, env, &txs, &slots, &next, &stop, &contended);
            });
        }
        let claims = schedule.committer_executes.then_some(&next);
        let committed = commit_in_order(&mut block, state, &txs, &slots, claims, &live, &contended);
        stop.store(true, Ordering::Release);
        committed
    });
    committed?;
    block.settle_fees()?;
    Ok(block.finish(txs))
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
        self.commit_changes(speculated.state, speculated.changes);
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
