//! Transaction execution on revm over any [`StateView`].
//!
//! - [`execute`] runs a batch of transactions in order (the sequencer's mini-block), returning
//!   the executed ones with their receipts, the ones rejected (with geth's error texts), and the
//!   [`StateDiff`] of every write, which replicas apply without executing.
//! - [`call`] and [`estimate_gas`] run one message over a state without changing it (the
//!   replica's `eth_call` and `eth_estimateGas`).
//! - [`simulate`] runs messages in a row over one evolving state (`eth_callMany`).
//! - [`trace`] re-executes a block's transactions, or a call, under geth's tracers
//!   (`debug_trace*`).
//! - [`intrinsic_gas`] is the gas a transaction costs before its first opcode (ingress checks
//!   it).
//!
//! Every block runs under one fork, [`SPEC`] (Prague).

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, TxKind, U256};
use revm::{
    Context, Database, DatabaseCommit, DatabaseRef, ExecuteEvm, InspectEvm, MainBuilder,
    MainContext,
    bytecode::Bytecode,
    context::{
        BlockEnv, CfgEnv, TxEnv,
        result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction, OutOfGasError},
    },
    context_interface::{ContextTr, cfg::gas::calculate_initial_tx_gas_for_tx},
    database::{CacheDB, WrapDatabaseRef},
    database_interface::DBErrorMarker,
    primitives::hardfork::SpecId,
    state::{Account, AccountInfo, EvmState, TransactionId},
};
use verity_primitives::{AccountDiff, Receipt, StateDiff, StateView, Transaction, TxEnvelope};

/// The fork every block executes under.
pub const SPEC: SpecId = SpecId::PRAGUE;

/// The block a batch of transactions executes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEnvSpec {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Block number.
    pub number: u64,
    /// Block timestamp, seconds.
    pub timestamp: u64,
    /// EIP-1559 base fee, wei.
    pub base_fee: u64,
    /// Block gas limit.
    pub gas_limit: u64,
    /// Fee recipient.
    pub beneficiary: Address,
}

/// The state could not be read: not the transaction's fault, the batch is abandoned.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    /// Reading state failed.
    #[error("state read failed: {0}")]
    State(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// revm failed for a reason that is neither the transaction's nor the state's.
    #[error("evm failure: {0}")]
    Evm(String),
    /// A call ran past its [`CallLimits::timeout`] and was stopped (geth's text).
    #[error("execution aborted (timeout = {0:?})")]
    TimedOut(std::time::Duration),
    /// `eth_createAccessList` found a different list on every one of this many runs.
    #[error("access list did not settle after {0} runs")]
    AccessListUnsettled(usize),
}

/// Why a transaction was not included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxRejection {
    /// geth's text for the same failure ("nonce too low: ...", "insufficient funds ...").
    pub message: String,
}

/// The result of [`execute`].
#[derive(Debug, Clone, Default)]
pub struct ExecutionOutcome {
    /// The transactions included, in order.
    pub executed: Vec<Transaction>,
    /// One receipt per included transaction.
    pub receipts: Vec<Receipt>,
    /// Transactions not included, by hash, with the reason.
    pub rejected: Vec<(B256, TxRejection)>,
    /// Every write of the included transactions.
    pub diff: StateDiff,
    /// How the parallel executor got its results (zero for the sequential one).
    pub speculation: SpeculationStats,
}

/// How [`execute_parallel`] got each included or rejected transaction's result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpeculationStats {
    /// Speculations found valid and committed as they were.
    pub committed: usize,
    /// Transactions executed again over the committed state (a conflict, or refused over the
    /// starting state).
    pub reexecuted: usize,
    /// Transactions the committer reached before any worker and executed itself.
    pub direct: usize,
}

/// A message to run without a signature (`eth_call`, `eth_estimateGas`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRequest {
    /// Sender; the zero address when absent.
    pub from: Option<Address>,
    /// Recipient; `None` runs `data` as init code.
    pub to: Option<Address>,
    /// Calldata or init code.
    pub data: Bytes,
    /// Value transferred.
    pub value: U256,
    /// Gas limit; the block gas limit when absent.
    pub gas: Option<u64>,
    /// Gas price; when absent no fee is charged (the base fee is taken as zero, as geth does).
    pub gas_price: Option<u128>,
    /// Nonce; the sender's current nonce when absent.
    pub nonce: Option<u64>,
    /// EIP-1559 tip (`maxPriorityFeePerGas`; for a legacy `gasPrice`, the price itself, so the
    /// whole price is paid as geth charges it); zero when absent.
    pub priority_fee: Option<u128>,
    /// EIP-2930 access list (charged as intrinsic gas, warming what it lists).
    pub access_list: alloy_eips::eip2930::AccessList,
    /// What bounds the work besides gas.
    pub limits: CallLimits,
}

/// What bounds a call's work besides its gas (a replica serving `eth_call` to anyone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Most bytes of EVM memory, summed over the call's frames; past it the frame halts out
    /// of gas.
    pub memory_bytes: u64,
    /// Wall-clock time the call may run (an estimate: all its runs together); past it every
    /// frame halts and the call fails with geth's "execution aborted (timeout = ...)".
    pub timeout: Option<std::time::Duration>,
}

impl Default for CallLimits {
    /// revm's own memory ceiling (4 GiB) and no deadline.
    fn default() -> Self {
        Self {
            memory_bytes: (1 << 32) - 1,
            timeout: None,
        }
    }
}

/// Halts every frame once a deadline has passed (checked every [`Deadline::EVERY`] steps, so
/// the clock costs nothing measurable).
struct Deadline {
    until: Option<std::time::Instant>,
    steps: u32,
    expired: bool,
}

impl Deadline {
    const EVERY: u32 = 1024;

    fn new(until: Option<std::time::Instant>) -> Self {
        Self {
            until,
            steps: 0,
            expired: false,
        }
    }
}

impl<CTX> revm::Inspector<CTX> for Deadline {
    fn step(&mut self, interp: &mut revm::interpreter::Interpreter, _context: &mut CTX) {
        if !self.expired {
            let Some(until) = self.until else { return };
            self.steps = self.steps.wrapping_add(1);
            if !self.steps.is_multiple_of(Self::EVERY) || std::time::Instant::now() < until {
                return;
            }
            self.expired = true;
        }
        // Every frame still running, the callers' included, stops at its next step.
        interp.halt_oog();
    }
}

/// What running a message produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOutcome {
    /// The message ran to completion.
    pub success: bool,
    /// Return data, or revert data when reverted.
    pub output: Bytes,
    /// Gas used.
    pub gas_used: u64,
    /// It ended with REVERT.
    pub reverted: bool,
    /// geth's error text when it did not succeed ("execution reverted", "out of gas", ...).
    pub error: Option<String>,
    /// Set when the message was refused before running (nonce, funds, fee, gas): geth's
    /// `eth_simulateV1` error code for the refusal (`txValidationError`).
    pub refusal_code: Option<i64>,
}

impl CallOutcome {
    /// How an executed message ended, with geth's texts for a revert or a halt.
    fn of(result: ExecutionResult<HaltReason>) -> Self {
        let gas_used = gas_used(&result);
        match result {
            ExecutionResult::Success { output, .. } => Self {
                success: true,
                output: output.into_data(),
                gas_used,
                reverted: false,
                error: None,
                refusal_code: None,
            },
            ExecutionResult::Revert { output, .. } => Self {
                success: false,
                output,
                gas_used,
                reverted: true,
                error: Some("execution reverted".to_owned()),
                refusal_code: None,
            },
            ExecutionResult::Halt { reason, .. } => Self {
                success: false,
                output: Bytes::new(),
                gas_used,
                reverted: false,
                error: Some(halt_message(&reason)),
                refusal_code: None,
            },
        }
    }

    /// A message refused before it ran (funds, intrinsic gas, fees): geth's text, no gas.
    fn refused(error: &InvalidTransaction, caller: Address) -> Self {
        Self {
            error: Some(call_rejection(error, caller)),
            refusal_code: Some(refusal_code(error)),
            ..Self::default()
        }
    }
}

/// Why replaying transaction `index` of a block did not reproduce it: it used `used` gas where
/// its stored receipt (`receipts_gas`, in block order, when known) says otherwise.
fn replay_divergence(index: usize, used: u64, receipts_gas: Option<&[u64]>) -> Option<String> {
    match receipts_gas.and_then(|gas| gas.get(index)) {
        Some(expected) if *expected != used => {
            Some(format!("it used {used} gas, its receipt says {expected}"))
        }
        _ => None,
    }
}

/// A state read error as revm's database error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateReadError(Box<dyn std::error::Error + Send + Sync>);

impl DBErrorMarker for StateReadError {}

/// revm's read-only database over a [`StateView`].
#[derive(Debug)]
struct ViewDb<'a, S>(&'a S);

impl<S: StateView> DatabaseRef for ViewDb<'_, S> {
    type Error = StateReadError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
        let account = self.0.account(address).map_err(boxed)?;
        Ok(account.map(|a| {
            let info = AccountInfo {
                balance: a.balance,
                nonce: a.nonce,
                code_hash: a.code_hash,
                ..AccountInfo::default()
            };
            if a.code_hash == KECCAK256_EMPTY {
                info
            } else {
                AccountInfo { code: None, ..info }
            }
        }))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, Self::Error> {
        if code_hash == KECCAK256_EMPTY || code_hash.is_zero() {
            return Ok(Bytecode::default());
        }
        match self.0.code(code_hash).map_err(boxed)? {
            Some(code) => Ok(Bytecode::new_raw(code)),
            None => Err(StateReadError(
                format!("code {code_hash} is referenced but not stored").into(),
            )),
        }
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, Self::Error> {
        self.0.storage(address, index).map_err(boxed)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, Self::Error> {
        Ok(self
            .0
            .block_hash(number)
            .map_err(boxed)?
            .unwrap_or_default())
    }
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> StateReadError {
    StateReadError(Box::new(e))
}

/// revm's block environment of `env`.
pub fn block_env(env: &BlockEnvSpec) -> BlockEnv {
    BlockEnv {
        number: U256::from(env.number),
        beneficiary: env.beneficiary,
        timestamp: U256::from(env.timestamp),
        gas_limit: env.gas_limit,
        basefee: env.base_fee,
        difficulty: U256::ZERO,
        prevrandao: Some(B256::ZERO),
        ..BlockEnv::default()
    }
}

/// revm's configuration: [`SPEC`] and `chain_id`.
pub fn cfg_env(chain_id: u64) -> CfgEnv {
    let mut cfg = CfgEnv::new_with_spec(SPEC);
    cfg.chain_id = chain_id;
    cfg
}

/// The revm transaction of a signed envelope.
pub fn tx_env(tx: &Transaction) -> TxEnv {
    let envelope = tx.inner();
    let mut env = TxEnv {
        tx_type: envelope.tx_type() as u8,
        caller: tx.signer(),
        gas_limit: envelope.gas_limit(),
        gas_price: envelope.max_fee_per_gas(),
        kind: envelope.kind(),
        value: envelope.value(),
        data: envelope.input().clone(),
        nonce: envelope.nonce(),
        chain_id: envelope.chain_id(),
        gas_priority_fee: envelope.max_priority_fee_per_gas(),
        ..TxEnv::default()
    };
    if let Some(list) = envelope.access_list() {
        env.access_list = list.clone();
    }
    env
}

/// Gas charged before execution: 21000 (53000 for a creation), calldata, access list; at least
/// the EIP-7623 floor for calldata.
pub fn intrinsic_gas(envelope: &TxEnvelope) -> u64 {
    let env = TxEnv {
        tx_type: envelope.tx_type() as u8,
        kind: envelope.kind(),
        data: envelope.input().clone(),
        access_list: envelope.access_list().cloned().unwrap_or_default(),
        ..TxEnv::default()
    };
    let gas = calculate_initial_tx_gas_for_tx(&env, SPEC, None);
    (gas.initial_regular_gas + gas.initial_state_gas).max(gas.floor_gas)
}

/// Gas a transaction is charged before its first opcode (21000 or 53000, calldata, access
/// list), without the EIP-7623 floor, which applies after execution: what its top call is left
/// with is its gas limit minus this.
pub fn initial_gas(tx: &Transaction) -> u64 {
    let gas = calculate_initial_tx_gas_for_tx(tx_env(tx), SPEC, None);
    gas.initial_regular_gas + gas.initial_state_gas
}

/// geth's text for a transaction revm refuses to execute.
fn rejection_message(error: &InvalidTransaction, tx: &Transaction) -> String {
    match error {
        InvalidTransaction::NonceTooLow { tx: got, state } => format!(
            "nonce too low: address {}, tx: {got} state: {state}",
            tx.signer()
        ),
        InvalidTransaction::NonceTooHigh { tx: got, state } => format!(
            "nonce too high: address {}, tx: {got} state: {state}",
            tx.signer()
        ),
        InvalidTransaction::LackOfFundForMaxFee { fee, balance } => format!(
            "insufficient funds for gas * price + value: address {} have {balance} want {fee}",
            tx.signer()
        ),
        InvalidTransaction::GasPriceLessThanBasefee => {
            "max fee per gas less than block base fee".to_owned()
        }
        InvalidTransaction::PriorityFeeGreaterThanMaxFee => {
            "max priority fee per gas higher than max fee per gas".to_owned()
        }
        InvalidTransaction::CallerGasLimitMoreThanBlock => "exceeds block gas limit".to_owned(),
        InvalidTransaction::CallGasCostMoreThanGasLimit { .. } => {
            "intrinsic gas too low".to_owned()
        }
        InvalidTransaction::GasFloorMoreThanGasLimit { .. } => {
            "insufficient gas for floor data gas cost".to_owned()
        }
        InvalidTransaction::InvalidChainId | InvalidTransaction::MissingChainId => {
            "invalid chain id for signer".to_owned()
        }
        InvalidTransaction::RejectCallerWithCode => {
            format!("sender not an eoa: address {}", tx.signer())
        }
        other => other.to_string(),
    }
}

fn evm_error<D: std::fmt::Display>(error: EVMError<StateReadError, D>) -> ExecutionError {
    match error {
        EVMError::Database(e) => ExecutionError::State(e.0),
        other => ExecutionError::Evm(other.to_string()),
    }
}

/// The diff entry of one touched account, given what it was before the transaction (`None`
/// when it changed nothing replicas need to apply).
fn account_diff(
    account: &revm::state::Account,
    previous: Option<&AccountInfo>,
) -> Option<AccountDiff> {
    let mut change = AccountDiff::default();
    if account.is_selfdestructed() || account.state_clear_aware_is_empty(SPEC) {
        // Gone (self-destructed in its creating transaction, or touched while empty:
        // EIP-161). Only an account that existed needs deleting.
        change.destroyed = true;
        return previous.is_some().then_some(change);
    }
    let info = &account.info;
    let (old_balance, old_nonce, old_code_hash) = previous
        .map(|p| (Some(p.balance), Some(p.nonce), p.code_hash))
        .unwrap_or((None, None, KECCAK256_EMPTY));
    if account.is_created() && previous.is_some() {
        // Re-creation at an address that had state (only a balance is possible): storage
        // starts empty.
        change.destroyed = true;
    }
    if old_balance != Some(info.balance) || change.destroyed {
        change.balance = Some(info.balance);
    }
    if old_nonce != Some(info.nonce) || change.destroyed {
        change.nonce = Some(info.nonce);
    }
    if info.code_hash != old_code_hash && info.code_hash != KECCAK256_EMPTY {
        let code = info
            .code
            .as_ref()
            .map(|c| c.original_bytes())
            .unwrap_or_default();
        change.code = Some(code);
    }
    for (slot, value) in account.changed_storage_slots() {
        change.storage.insert(*slot, value.present_value());
    }
    (!change.is_empty()).then_some(change)
}

/// One transaction's writes, as replicas apply them: each touched account once, in no order.
type TxDiff = Vec<(Address, AccountDiff)>;

/// Folds one transaction's writes into `diff` (a later transaction's over earlier ones).
fn merge_tx(diff: &mut StateDiff, tx: &TxDiff) {
    for (address, change) in tx {
        diff.merge_account(*address, change);
    }
}

/// What one transaction changed, relative to the state it ran over.
#[derive(Debug, Default)]
struct Changes {
    /// Its writes.
    diff: TxDiff,
    /// Accounts whose balance, nonce or code changed, or that were created or destroyed (only
    /// when asked for).
    accounts: Vec<Address>,
    /// Slots whose value changed (only when asked for).
    slots: Vec<(Address, U256)>,
}

impl Changes {
    /// The changes of `state` over `before`; with `keys`, also which accounts and slots changed
    /// value (what the parallel executor validates later transactions against). Each touched
    /// account's previous value is read once.
    fn of<D: DatabaseRef>(state: &EvmState, before: &D, keys: bool) -> Result<Self, D::Error> {
        let mut changes = Changes {
            diff: Vec::with_capacity(state.len()),
            ..Changes::default()
        };
        for (address, account) in state {
            if !account.is_touched() {
                continue;
            }
            let previous = before.basic_ref(*address)?;
            if keys {
                let info = &account.info;
                let changed = account.is_created()
                    || account.is_selfdestructed()
                    || previous.as_ref().is_none_or(|b| {
                        b.balance != info.balance
                            || b.nonce != info.nonce
                            || b.code_hash != info.code_hash
                    });
                if changed {
                    changes.accounts.push(*address);
                }
                for (slot, _) in account.changed_storage_slots() {
                    changes.slots.push((*address, *slot));
                }
            }
            if let Some(change) = account_diff(account, previous.as_ref()) {
                changes.diff.push((*address, change));
            }
        }
        Ok(changes)
    }
}

/// Gas used by a result, refunds applied.
fn gas_used(result: &ExecutionResult<HaltReason>) -> u64 {
    result.gas().tx_gas_used()
}

/// Executes `txs` in order over `state` in block `env`, as the transactions of one mini-block
/// whose EVM block has already used `cumulative_gas_start`. A transaction revm refuses (nonce,
/// funds, fees, gas) is rejected and leaves no trace; one that would overflow the block gas
/// limit is rejected with "gas limit reached" so the caller can retry it in the next block.
///
/// This is the reference executor: [`execute_parallel`] must produce exactly its outcome.
pub fn execute<S: StateView>(
    state: &S,
    env: &BlockEnvSpec,
    txs: Vec<Transaction>,
    cumulative_gas_start: u64,
) -> Result<ExecutionOutcome, ExecutionError> {
    let mut block = BlockBuilder::new(state, env, cumulative_gas_start);
    for tx in &txs {
        block.execute_next(tx)?;
    }
    Ok(block.finish(txs))
}

/// The EVM over the block's accumulated state: every transaction's writes are committed into
/// its cache, so the next one reads them.
type BlockEvm<'a, S> = revm::handler::MainnetEvm<
    revm::handler::MainnetContext<CacheDB<WrapDatabaseRef<ViewDb<'a, S>>>>,
>;

/// Builds a batch's outcome one transaction at a time, in order, over the block's accumulated
/// state. Both executors commit through it, so their receipts, gas accounting and diffs come
/// from the same code.
struct BlockBuilder<'a, S: StateView> {
    evm: BlockEvm<'a, S>,
    env: BlockEnvSpec,
    cumulative: u64,
    /// The batch's writes so far, merged (the sequential executor).
    diff: StateDiff,
    /// The batch's writes, one entry per committed transaction (and fee payment) in commit
    /// order, merged only at the end, on every thread (the parallel executor: see
    /// [`Self::keep_diffs_in_order`]).
    ordered: Option<Vec<TxDiff>>,
    /// Committed speculations whose state is not in `evm`'s cache yet: nothing reads the cache
    /// until the committer executes a transaction itself ([`Self::apply_deferred`]). None of
    /// them touches the beneficiary.
    unapplied: Vec<EvmState>,
    /// One receipt per included transaction, in order.
    receipts: Vec<Receipt>,
    /// The rejected transactions, by their index in the batch.
    rejected: Vec<(usize, TxRejection)>,
    /// What the committed transactions changed, when a parallel executor validates against it.
    written: Option<parallel::Written>,
    speculation: SpeculationStats,
    /// Fees owed to the beneficiary and not paid yet (see `defer_fee`).
    unpaid: U256,
}

/// An EVM for block `env` over `state`, caching what it reads.
fn block_evm<'a, S: StateView>(state: &'a S, env: &BlockEnvSpec) -> BlockEvm<'a, S> {
    Context::mainnet()
        .with_db(CacheDB::new(WrapDatabaseRef(ViewDb(state))))
        .with_block(block_env(env))
        .with_cfg(cfg_env(env.chain_id))
        .build_mainnet()
}

impl<'a, S: StateView> BlockBuilder<'a, S> {
    fn new(state: &'a S, env: &BlockEnvSpec, cumulative_gas_start: u64) -> Self {
        Self {
            evm: block_evm(state, env),
            env: *env,
            cumulative: cumulative_gas_start,
            diff: StateDiff::default(),
            ordered: None,
            unapplied: Vec::new(),
            receipts: Vec::new(),
            rejected: Vec::new(),
            written: None,
            speculation: SpeculationStats::default(),
            unpaid: U256::ZERO,
        }
    }

    /// Keeps the set of accounts and slots committed transactions change.
    fn track_writes(&mut self) {
        self.written = Some(parallel::Written::default());
    }

    /// Keeps each committed transaction's writes apart, in order, instead of merging them as
    /// they come: merging is a third of what committing a speculation costs, and merged at the
    /// end it splits across threads by address.
    fn keep_diffs_in_order(&mut self) {
        self.ordered = Some(Vec::new());
    }

    /// Records one committed transaction's writes.
    fn record(&mut self, diff: TxDiff) {
        match &mut self.ordered {
            Some(ordered) => ordered.push(diff),
            None => merge_tx(&mut self.diff, &diff),
        }
    }

    /// Merges the writes kept apart so far into `diff`, in order, and merges every later one
    /// as it comes.
    fn merge_ordered(&mut self) {
        for diff in self.ordered.take().iter().flatten() {
            merge_tx(&mut self.diff, diff);
        }
    }

    /// Puts the committed speculations' state into the cache, before anything reads it.
    fn apply_deferred(&mut self) {
        for state in self.unapplied.drain(..) {
            self.evm.ctx.db_mut().commit(state);
        }
    }

    /// The index in the batch of the transaction decided next.
    fn next_index(&self) -> usize {
        self.receipts.len() + self.rejected.len()
    }

    fn reject(&mut self, rejection: TxRejection) {
        let index = self.next_index();
        self.rejected.push((index, rejection));
    }

    /// The block-level refusal of `tx`, before any execution: its gas limit exceeds the
    /// block's, or what is left of it.
    fn gas_refusal(&self, tx: &Transaction) -> Option<TxRejection> {
        let limit = tx.inner().gas_limit();
        let message = if limit > self.env.gas_limit {
            "exceeds block gas limit"
        } else if self.cumulative.saturating_add(limit) > self.env.gas_limit {
            "gas limit reached"
        } else {
            return None;
        };
        Some(TxRejection {
            message: message.to_owned(),
        })
    }

    /// Executes `tx` over the accumulated state and commits it (the sequential step).
    fn execute_next(&mut self, tx: &Transaction) -> Result<(), ExecutionError> {
        // It may read the beneficiary's balance: pay what it is owed first.
        self.settle_fees()?;
        if let Some(refusal) = self.gas_refusal(tx) {
            self.reject(refusal);
            return Ok(());
        }
        // It reads the cache: bring it up to every committed transaction.
        self.apply_deferred();
        let result = match self.evm.transact(tx_env(tx)) {
            Ok(result) => result,
            Err(EVMError::Transaction(error)) => {
                let message = rejection_message(&error, tx);
                self.reject(TxRejection { message });
                return Ok(());
            }
            Err(error) => return Err(evm_error(error)),
        };
        self.commit(result.state)?;
        self.include(tx, &result.result);
        Ok(())
    }

    /// Commits state changes computed over the cache as it is (a transaction the committer
    /// executed, or a fee payment), recording their diff (and, when tracked, which accounts
    /// and slots changed value).
    fn commit(&mut self, state: EvmState) -> Result<(), ExecutionError> {
        let changes = Changes::of(&state, self.evm.ctx.db_ref(), self.written.is_some())
            .map_err(|e| ExecutionError::State(e.0))?;
        self.note_written(&changes);
        self.evm.ctx.db_mut().commit(state);
        self.record(changes.diff);
        Ok(())
    }

    fn note_written(&mut self, changes: &Changes) {
        if let Some(written) = &mut self.written {
            written.extend(changes);
        }
    }

    /// Pays the beneficiary a fee the way revm's handler does at the end of a transaction:
    /// the account is touched (so an empty one is cleared, EIP-161) and its balance raised
    /// unless that would overflow. It reads and writes the beneficiary alone, which no
    /// deferred speculation touched: the cache need not be brought up to date first.
    fn pay_beneficiary(&mut self, reward: U256) -> Result<(), ExecutionError> {
        let beneficiary = self.env.beneficiary;
        let before = self
            .evm
            .ctx
            .db_mut()
            .basic(beneficiary)
            .map_err(|e| ExecutionError::State(e.0))?;
        let mut account = match before {
            Some(info) => Account::from(info),
            None => Account::new_not_existing(TransactionId::ZERO),
        };
        account.mark_touch();
        if let Some(balance) = account.info.balance.checked_add(reward) {
            account.info.balance = balance;
        }
        self.commit(EvmState::from_iter([(beneficiary, account)]))
    }

    /// Records the receipt of a transaction whose state was committed.
    fn include(&mut self, tx: &Transaction, result: &ExecutionResult<HaltReason>) {
        let used = gas_used(result);
        self.cumulative += used;
        let envelope = tx.inner();
        self.receipts.push(Receipt {
            tx_hash: *tx.tx_hash(),
            tx_type: envelope.tx_type(),
            success: result.is_success(),
            gas_used: used,
            cumulative_gas_used: self.cumulative,
            effective_gas_price: envelope.effective_gas_price(Some(self.env.base_fee)),
            logs: result.logs().to_vec(),
            contract_address: result.created_address(),
            from: tx.signer(),
            to: envelope.kind().to().copied(),
        });
    }

    /// The outcome, given the batch the decisions were made for (in the same order). Every
    /// write must be merged into `diff` by now.
    fn finish(self, txs: Vec<Transaction>) -> ExecutionOutcome {
        debug_assert!(self.ordered.is_none(), "diffs left unmerged");
        let mut outcome = ExecutionOutcome {
            receipts: self.receipts,
            diff: self.diff,
            speculation: self.speculation,
            ..ExecutionOutcome::default()
        };
        if self.rejected.is_empty() {
            outcome.executed = txs;
            return outcome;
        }
        let mut rejected = self.rejected.into_iter().peekable();
        outcome.executed.reserve(outcome.receipts.len());
        for (index, tx) in txs.into_iter().enumerate() {
            match rejected.next_if(|(at, _)| *at == index) {
                Some((_, rejection)) => outcome.rejected.push((*tx.tx_hash(), rejection)),
                None => outcome.executed.push(tx),
            }
        }
        outcome
    }
}

/// Runs a message over `state` (nothing is written) in block `env`.
pub fn call<S: StateView>(
    state: &S,
    env: &BlockEnvSpec,
    request: &CallRequest,
) -> Result<CallOutcome, ExecutionError> {
    let gas = request.gas.unwrap_or(env.gas_limit);
    run_call(state, env, request, gas, deadline(&request.limits))
}

fn deadline(limits: &CallLimits) -> Option<std::time::Instant> {
    limits.timeout.map(|t| std::time::Instant::now() + t)
}

/// The context a call runs in.
type CallContext<'a, S> = revm::handler::MainnetContext<WrapDatabaseRef<ViewDb<'a, S>>>;

fn run_call<S: StateView>(
    state: &S,
    env: &BlockEnvSpec,
    request: &CallRequest,
    gas: u64,
    until: Option<std::time::Instant>,
) -> Result<CallOutcome, ExecutionError> {
    run_inspected(
        state,
        env,
        request,
        gas,
        until,
        revm::inspector::NoOpInspector,
    )
    .map(|(outcome, _)| outcome)
}

/// What `eth_createAccessList` answers: the access list the message touches (sender,
/// recipient and precompiles left out, as geth does) and how the message runs with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessListOutcome {
    /// Addresses and storage slots the message reads or writes.
    pub access_list: alloy_eips::eip2930::AccessList,
    /// The run with that list (its gas includes the list's intrinsic cost).
    pub outcome: CallOutcome,
}

/// geth's `eth_createAccessList`: runs the message with the access list found so far until
/// the list it touches no longer changes (a list can change the path, e.g. through gas), and
/// answers that list with the last run. Bounded by the request's limits like a call.
pub fn create_access_list<S: StateView>(
    state: &S,
    env: &BlockEnvSpec,
    request: &CallRequest,
) -> Result<AccessListOutcome, ExecutionError> {
    /// Runs before giving up on a list that keeps changing (geth loops until it settles).
    const MAX_RUNS: usize = 16;
    let gas = request.gas.unwrap_or(env.gas_limit);
    let until = deadline(&request.limits);
    let mut list = request.access_list.clone();
    for _ in 0..MAX_RUNS {
        let run = CallRequest {
            access_list: list.clone(),
            ..request.clone()
        };
        let inspector = revm_inspectors::access_list::AccessListInspector::new(list.clone());
        let (outcome, inspector) = run_inspected(state, env, &run, gas, until, inspector)?;
        let touched = inspector.into_access_list();
        if touched == list {
            return Ok(AccessListOutcome {
                access_list: touched,
                outcome,
            });
        }
        list = touched;
    }
    Err(ExecutionError::AccessListUnsettled(MAX_RUNS))
}

fn run_inspected<'a, S: StateView, I>(
    state: &'a S,
    env: &BlockEnvSpec,
    request: &CallRequest,
    gas: u64,
    until: Option<std::time::Instant>,
    inspector: I,
) -> Result<(CallOutcome, I), ExecutionError>
where
    I: revm::Inspector<CallContext<'a, S>>,
{
    let db = ViewDb(state);
    let caller = request.from.unwrap_or_default();
    let (block, cfg, tx) = call_envs(env, request, gas);
    let mut inspectors = (inspector, Deadline::new(until));
    let mut evm = Context::mainnet()
        .with_db(WrapDatabaseRef(db))
        .with_block(block)
        .with_cfg(cfg)
        .build_mainnet_with_inspector(&mut inspectors);
    let result = evm.inspect_tx(tx);
    drop(evm);
    let (inspector, deadline) = inspectors;
    let result = match result {
        Ok(result) => result.result,
        Err(EVMError::Transaction(error)) => {
            return Ok((CallOutcome::refused(&error, caller), inspector));
        }
        Err(error) => return Err(evm_error(error)),
    };
    if deadline.expired {
        return Err(ExecutionError::TimedOut(
            request.limits.timeout.unwrap_or_default(),
        ));
    }
    let outcome = CallOutcome::of(result);
    Ok((outcome, inspector))
}

/// revm's environments of a message call in block `env` with `gas`: geth's `eth_call` rules
/// (no gas price given: no base fee charged; no nonce given: no nonce check).
fn call_envs(env: &BlockEnvSpec, request: &CallRequest, gas: u64) -> (BlockEnv, CfgEnv, TxEnv) {
    let mut block = block_env(env);
    if request.gas_price.is_none() {
        // geth's eth_call charges nothing when no gas price is given.
        block.basefee = 0;
    }
    let mut cfg = cfg_env(env.chain_id);
    cfg.disable_nonce_check = request.nonce.is_none();
    cfg.memory_limit = request.limits.memory_bytes;
    let caller = request.from.unwrap_or_default();
    let tx_type = match (request.gas_price.is_some(), request.access_list.is_empty()) {
        (true, _) => 2,
        (false, false) => 1,
        (false, true) => 0,
    };
    let tx = TxEnv {
        tx_type,
        access_list: request.access_list.clone(),
        caller,
        gas_limit: gas,
        gas_price: request.gas_price.unwrap_or(0),
        gas_priority_fee: request
            .gas_price
            .map(|price| request.priority_fee.unwrap_or(0).min(price)),
        kind: request.to.map_or(TxKind::Create, TxKind::Call),
        value: request.value,
        data: request.data.clone(),
        nonce: request.nonce.unwrap_or(0),
        chain_id: Some(env.chain_id),
        ..TxEnv::default()
    };
    (block, cfg, tx)
}

/// geth's `eth_simulateV1` code for a message refused before running (go-ethereum's
/// `internal/ethapi/errors.go`, `txValidationError`).
fn refusal_code(error: &InvalidTransaction) -> i64 {
    match error {
        InvalidTransaction::NonceTooHigh { .. } => -38011,
        InvalidTransaction::NonceTooLow { .. } => -38010,
        InvalidTransaction::RejectCallerWithCode => -38024,
        InvalidTransaction::LackOfFundForMaxFee { .. } => -38014,
        InvalidTransaction::CallGasCostMoreThanGasLimit { .. }
        | InvalidTransaction::GasFloorMoreThanGasLimit { .. } => -38013,
        InvalidTransaction::CreateInitCodeSizeLimit => -38025,
        InvalidTransaction::GasPriceLessThanBasefee
        | InvalidTransaction::PriorityFeeGreaterThanMaxFee => -32602,
        _ => -32603,
    }
}

fn call_rejection(error: &InvalidTransaction, caller: Address) -> String {
    match error {
        InvalidTransaction::NonceTooHigh { tx, state } => {
            format!("nonce too high: address {caller}, tx: {tx} state: {state}")
        }
        InvalidTransaction::NonceTooLow { tx, state } => {
            format!("nonce too low: address {caller}, tx: {tx} state: {state}")
        }
        InvalidTransaction::LackOfFundForMaxFee { fee, balance } => format!(
            "insufficient funds for gas * price + value: address {caller} have {balance} want {fee}"
        ),
        InvalidTransaction::CallGasCostMoreThanGasLimit { .. } => {
            "intrinsic gas too low".to_owned()
        }
        InvalidTransaction::CallerGasLimitMoreThanBlock => "exceeds block gas limit".to_owned(),
        InvalidTransaction::GasPriceLessThanBasefee => {
            "max fee per gas less than block base fee".to_owned()
        }
        other => other.to_string(),
    }
}

/// geth's text for an exceptional halt.
fn halt_message(reason: &HaltReason) -> String {
    match reason {
        HaltReason::OutOfGas(OutOfGasError::InvalidOperand) => "invalid operand".to_owned(),
        HaltReason::OutOfGas(_) => "out of gas".to_owned(),
        HaltReason::OpcodeNotFound | HaltReason::InvalidFEOpcode => "invalid opcode".to_owned(),
        HaltReason::InvalidJump => "invalid jump destination".to_owned(),
        HaltReason::StackOverflow => "stack limit reached 1024 (1023)".to_owned(),
        HaltReason::StackUnderflow => "stack underflow".to_owned(),
        HaltReason::CallTooDeep => "max call depth exceeded".to_owned(),
        HaltReason::OutOfFunds => "insufficient balance for transfer".to_owned(),
        HaltReason::CreateCollision => "contract address collision".to_owned(),
        HaltReason::CreateContractSizeLimit => "max code size exceeded".to_owned(),
        HaltReason::CreateContractStartingWithEF => {
            "invalid code: must not begin with 0xef".to_owned()
        }
        HaltReason::StateChangeDuringStaticCall => "write protection".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The least gas limit with which the message succeeds, by binary search between the gas it
/// uses at the cap and the cap (the request's gas, else the block gas limit). `Ok(Err(_))` when
/// it fails even at the cap.
pub fn estimate_gas<S: StateView>(
    state: &S,
    env: &BlockEnvSpec,
    request: &CallRequest,
) -> Result<Result<u64, CallOutcome>, ExecutionError> {
    let cap = request.gas.unwrap_or(env.gas_limit);
    let until = deadline(&request.limits);
    let first = run_call(state, env, request, cap, until)?;
    if !first.success {
        return Ok(Err(first));
    }
    // The gas used is a lower bound (refunds can make it lower than the limit needed); the
    // 64/63 rule usually puts the answer just above it.
    let mut low = first.gas_used.saturating_sub(1);
    let mut high = cap;
    let optimistic = (first.gas_used + 2300) * 64 / 63;
    if optimistic < high {
        if run_call(state, env, request, optimistic, until)?.success {
            high = optimistic;
        } else {
            low = optimistic;
        }
    }
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if run_call(state, env, request, mid, until)?.success {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok(Ok(high))
}

pub mod simulate;
pub mod trace;

mod parallel;
pub use parallel::{Schedule, execute_parallel, execute_scheduled};

#[cfg(test)]
mod tests;
