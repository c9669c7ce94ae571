//! Several messages in a row over one evolving state (`eth_callMany`, and what `eth_simulateV1`
//! builds on): each call runs over what the calls before it wrote, in simulated blocks that may
//! each override the block environment and the state. Nothing is written to the state viewed.
//!
//! The starting point is a state and, optionally, the first transactions of the block after it
//! replayed in that block's environment (`eth_callMany`'s simulation context: the state just
//! before a given transaction). Bounded by a deadline for the whole simulation and by a gas
//! budget all its calls share (the RPC gas cap, as geth bounds `eth_simulateV1`).

use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, Log, U256};
use revm::{
    Context, Database, DatabaseCommit, ExecuteEvm, InspectEvm, MainBuilder, MainContext,
    bytecode::Bytecode,
    context::result::{EVMError, InvalidTransaction},
    context_interface::ContextTr,
    database::{CacheDB, WrapDatabaseRef},
};
use verity_primitives::{StateView, Transaction};

use crate::{
    BlockEnvSpec, CallOutcome, CallRequest, Deadline, ExecutionError, ViewDb, block_env, call_envs,
    cfg_env, evm_error, gas_used, replay_divergence, tx_env,
};

/// What a simulation sees of one account instead of its state at that point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountOverride {
    /// The account.
    pub address: Address,
    /// Its balance.
    pub balance: Option<U256>,
    /// Its nonce.
    pub nonce: Option<u64>,
    /// Its code.
    pub code: Option<Bytes>,
    /// Its storage: every slot (`Replace`, geth's `state`) or some slots (`Diff`, `stateDiff`).
    pub storage: Option<StorageOverride>,
}

/// Storage of an [`AccountOverride`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOverride {
    /// The account's storage is exactly these slots.
    Replace(Vec<(U256, U256)>),
    /// These slots are written over the account's storage.
    Diff(Vec<(U256, U256)>),
}

/// One simulated block: its environment, the state it overrides before its first call, and
/// its calls.
#[derive(Debug, Clone)]
pub struct SimulatedBlock {
    /// The block environment its calls run in.
    pub env: BlockEnvSpec,
    /// Its base fee is its parent's EIP-1559 successor (with [`SimulationMode::validation`]),
    /// not `env.base_fee`.
    pub base_fee_from_parent: bool,
    /// State laid over what the blocks before it left.
    pub overrides: Vec<AccountOverride>,
    /// Its calls, in order.
    pub calls: Vec<CallRequest>,
}

/// What one simulated call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulatedCall {
    /// How it ran (a call refused before running has `error` set and no gas used).
    pub outcome: CallOutcome,
    /// The logs it emitted (none when it reverted).
    pub logs: Vec<Log>,
}

/// What one simulated block did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulatedBlockResult {
    /// Its calls' results, in order.
    pub calls: Vec<SimulatedCall>,
    /// The base fee it ran with.
    pub base_fee: u64,
    /// The gas its calls used.
    pub gas_used: u64,
}

/// What a block's base fee follows from: its parent's gas limit, gas used and base fee.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParentFees {
    /// Gas limit.
    pub gas_limit: u64,
    /// Gas used.
    pub gas_used: u64,
    /// Base fee.
    pub base_fee: u64,
}

/// The chain's EIP-1559 rule: a block's base fee from its parent's fees.
pub type NextBaseFee<'a> = dyn Fn(&ParentFees) -> u64 + Sync + 'a;

/// How a simulation treats its calls (geth's `eth_simulateV1` switches; all off for
/// `eth_callMany`).
#[derive(Clone, Copy, Default)]
pub struct SimulationMode<'a> {
    /// geth's `validation`: nonces are checked (a call without one takes its sender's), fees
    /// are charged at the block's base fee and the sender's balance must cover them; a call
    /// refused for it is reported with geth's code ([`CallOutcome::refusal_code`]).
    pub validation: bool,
    /// geth's block gas accounting: a call without gas gets what its block has left, one asking
    /// for more than that is refused (`-38015`).
    pub block_gas: bool,
    /// The base block's fees and the chain's EIP-1559 rule, for blocks whose base fee follows
    /// their parent's.
    pub fees: Option<(ParentFees, &'a NextBaseFee<'a>)>,
}

impl std::fmt::Debug for SimulationMode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulationMode")
            .field("validation", &self.validation)
            .field("block_gas", &self.block_gas)
            .field("fees", &self.fees.map(|(parent, _)| parent))
            .finish()
    }
}

/// Where a simulation starts: the block whose first transactions are replayed first.
#[derive(Debug, Clone, Copy)]
pub struct Replay<'a> {
    /// That block's environment.
    pub env: &'a BlockEnvSpec,
    /// The transactions to replay, in order.
    pub transactions: &'a [Transaction],
    /// The gas each one's stored receipt says it used: the replay must reproduce it.
    pub receipts_gas: Option<&'a [u64]>,
}

/// How a simulation is bounded.
#[derive(Debug, Clone, Copy)]
pub struct SimulationLimits {
    /// Wall-clock bound of the whole simulation (the replay included).
    pub timeout: Duration,
    /// Gas all the calls may use together; each call runs with at most what is left.
    pub gas_budget: u64,
}

/// Runs `blocks` over `state` (after `replay`, when given), each call over what the ones
/// before it wrote, as `mode` says. One result per block.
pub fn simulate<S: StateView>(
    state: &S,
    replay: Option<Replay<'_>>,
    base_overrides: &[AccountOverride],
    blocks: &[SimulatedBlock],
    limits: SimulationLimits,
    mode: SimulationMode<'_>,
) -> Result<Vec<SimulatedBlockResult>, ExecutionError> {
    let until = Instant::now() + limits.timeout;
    let first_env = replay
        .map(|r| *r.env)
        .or_else(|| blocks.first().map(|b| b.env));
    let Some(first_env) = first_env else {
        return Ok(Vec::new());
    };
    let mut evm = Context::mainnet()
        .with_db(CacheDB::new(WrapDatabaseRef(ViewDb(state))))
        .with_block(block_env(&first_env))
        .with_cfg(cfg_env(first_env.chain_id))
        .build_mainnet_with_inspector(Deadline::new(Some(until)));
    if let Some(replay) = replay {
        for (index, tx) in replay.transactions.iter().enumerate() {
            let result = evm.transact(tx_env(tx)).map_err(|error| match error {
                EVMError::Transaction(reason) => ExecutionError::Evm(format!(
                    "replaying transaction {index} ({}) of the block failed: {reason}",
                    tx.tx_hash()
                )),
                other => evm_error(other),
            })?;
            if let Some(reason) =
                replay_divergence(index, gas_used(&result.result), replay.receipts_gas)
            {
                return Err(ExecutionError::Evm(format!(
                    "replaying transaction {index} ({}) of the block diverged: {reason}",
                    tx.tx_hash()
                )));
            }
            evm.ctx.db_mut().commit(result.state);
            if Instant::now() >= until {
                return Err(ExecutionError::TimedOut(limits.timeout));
            }
        }
    }
    for o in base_overrides {
        apply_override(evm.ctx.db_mut(), o)?;
    }
    let mut budget = limits.gas_budget;
    let mut parent = mode.fees.map(|(parent, _)| parent).unwrap_or_default();
    let mut results = Vec::with_capacity(blocks.len());
    for block in blocks {
        for o in &block.overrides {
            apply_override(evm.ctx.db_mut(), o)?;
        }
        let mut env = block.env;
        if block.base_fee_from_parent
            && let Some((_, next)) = mode.fees
        {
            env.base_fee = next(&parent);
        }
        let mut used = 0u64;
        let mut calls = Vec::with_capacity(block.calls.len());
        for request in &block.calls {
            let mut request = request.clone();
            let caller = request.from.unwrap_or_default();
            if mode.block_gas {
                let left = env.gas_limit.saturating_sub(used);
                match request.gas {
                    Some(gas) if gas > left => {
                        calls.push(SimulatedCall {
                            outcome: CallOutcome {
                                error: Some(format!(
                                    "block gas limit reached: {used} >= {}",
                                    env.gas_limit
                                )),
                                refusal_code: Some(-38015),
                                ..CallOutcome::default()
                            },
                            logs: Vec::new(),
                        });
                        continue;
                    }
                    Some(_) => {}
                    None => request.gas = Some(left),
                }
            }
            if mode.validation && request.nonce.is_none() {
                let nonce = evm
                    .ctx
                    .db_mut()
                    .basic(caller)
                    .map_err(|e| ExecutionError::Evm(format!("state read failed: {e}")))?
                    .map_or(0, |info| info.nonce);
                request.nonce = Some(nonce);
            }
            let gas = request.gas.unwrap_or(env.gas_limit).min(budget);
            let (mut block_env, mut cfg, tx) = call_envs(&env, &request, gas);
            if mode.validation {
                // Fees at the block's base fee, nonces checked: a call priced below it is
                // refused, as geth refuses it.
                block_env.basefee = env.base_fee;
                cfg.disable_nonce_check = false;
            } else {
                cfg.disable_nonce_check = true;
            }
            let price = tx.gas_price;
            evm.ctx.block = block_env;
            evm.ctx.cfg = cfg;
            let result = match evm.inspect_tx(tx) {
                Ok(result) => result,
                Err(EVMError::Transaction(error)) => {
                    let mut outcome = CallOutcome::refused(&error, caller);
                    if matches!(error, InvalidTransaction::GasPriceLessThanBasefee) {
                        outcome.error = Some(format!(
                            "max fee per gas less than block base fee: address {caller}, \
                             maxFeePerGas: {price}, baseFee: {}",
                            env.base_fee
                        ));
                    }
                    calls.push(SimulatedCall {
                        outcome,
                        logs: Vec::new(),
                    });
                    continue;
                }
                Err(error) => return Err(evm_error(error)),
            };
            if evm.inspector.expired {
                return Err(ExecutionError::TimedOut(limits.timeout));
            }
            let logs = result.result.logs().to_vec();
            let outcome = CallOutcome::of(result.result);
            budget = budget.saturating_sub(outcome.gas_used);
            used = used.saturating_add(outcome.gas_used);
            evm.ctx.db_mut().commit(result.state);
            calls.push(SimulatedCall { outcome, logs });
        }
        parent = ParentFees {
            gas_limit: env.gas_limit,
            gas_used: used,
            base_fee: env.base_fee,
        };
        results.push(SimulatedBlockResult {
            calls,
            base_fee: env.base_fee,
            gas_used: used,
        });
    }
    Ok(results)
}

/// Lays `o` over the simulation's state as it stands.
fn apply_override<DB: revm::DatabaseRef>(
    db: &mut CacheDB<DB>,
    o: &AccountOverride,
) -> Result<(), ExecutionError>
where
    DB::Error: std::fmt::Display,
{
    let state = |e: DB::Error| ExecutionError::Evm(format!("state read failed: {e}"));
    let mut info = db.basic(o.address).map_err(state)?.unwrap_or_default();
    if let Some(balance) = o.balance {
        info.balance = balance;
    }
    if let Some(nonce) = o.nonce {
        info.nonce = nonce;
    }
    if let Some(code) = &o.code {
        let code = Bytecode::new_raw(code.clone());
        info.code_hash = code.hash_slow();
        info.code = Some(code);
    }
    db.insert_account_info(o.address, info);
    match &o.storage {
        None => {}
        Some(StorageOverride::Replace(slots)) => db
            .replace_account_storage(o.address, slots.iter().copied().collect())
            .map_err(state)?,
        Some(StorageOverride::Diff(slots)) => {
            for (slot, value) in slots {
                db.insert_account_storage(o.address, *slot, *value)
                    .map_err(state)?;
            }
        }
    }
    Ok(())
}
