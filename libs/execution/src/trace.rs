//! geth's `debug_trace*` over revm: the struct logger, `callTracer`, `prestateTracer`,
//! `4byteTracer`, `flatCallTracer`, `muxTracer` and `noopTracer`, as revm-inspectors'
//! [`DebugInspector`] implements them (reth's answers, field for field).
//!
//! A transaction is traced by executing its block again: the state before the block, the
//! transactions before it replayed untraced in order, then the traced ones, each over what the
//! ones before it left. That is exactly how the block was built ([`crate::execute`] commits one
//! transaction after another in one block environment), so a replay that does not reproduce the
//! block is a fault of the state it runs over, reported as [`TraceError::Diverged`].
//!
//! A trace is bounded like a call: by a deadline, and the struct logger (the one tracer whose
//! record grows with every opcode) by a number of steps, beyond which the trace is refused
//! rather than cut short.

use std::ops::Range;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
pub use alloy_rpc_types_trace::geth::{GethDebugTracingOptions, GethTrace};
use revm::{
    Context, DatabaseCommit, ExecuteEvm, InspectEvm, MainBuilder, MainContext,
    context::result::EVMError,
    context_interface::ContextTr,
    database::{CacheDB, WrapDatabaseRef},
};
use revm_inspectors::tracing::{DebugInspector, TransactionContext};
use verity_primitives::{StateView, Transaction};

use crate::{
    BlockEnvSpec, CallRequest, Deadline, ExecutionError, ViewDb, block_env, call_envs,
    call_rejection, cfg_env, evm_error, tx_env,
};

/// Why a trace was not produced.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The tracer options cannot be honoured (unknown tracer, a tracer config that does not
    /// parse, a JavaScript tracer, a timeout that is not a duration).
    #[error("{0}")]
    Options(String),
    /// The traced message is refused before it runs (funds, intrinsic gas, fees): geth's text.
    #[error("{0}")]
    Rejected(String),
    /// The struct logger reached its step bound; the trace is refused, not cut.
    #[error(
        "the trace exceeds {0} opcode steps, this node's bound for the struct logger: trace with \
         a tracer (callTracer, prestateTracer) or a call that runs fewer steps"
    )]
    TooManySteps(u64),
    /// Re-executing the block did not reproduce it: the state replayed over is not the state the
    /// block was built on.
    #[error("replaying transaction {index} ({hash}) of the block failed: {reason}")]
    Diverged {
        /// Its index in the block.
        index: usize,
        /// Its hash.
        hash: B256,
        /// What revm refused.
        reason: String,
    },
    /// Reading state failed, revm failed, or the deadline passed.
    #[error(transparent)]
    Execution(#[from] ExecutionError),
}

/// How a trace is bounded.
#[derive(Debug, Clone, Copy)]
pub struct TraceLimits {
    /// Wall-clock bound of the whole trace (replay included).
    pub timeout: Duration,
    /// Most opcode steps the struct logger records, over all the transactions of one request.
    pub max_steps: u64,
}

/// The timeout a trace runs with: the options' own (geth's Go duration, "5s", "1m30s",
/// "500ms") when shorter than the node's bound, else the bound.
pub fn effective_timeout(
    options: &GethDebugTracingOptions,
    bound: Duration,
) -> Result<Duration, TraceError> {
    match options.timeout.as_deref() {
        None => Ok(bound),
        Some(text) => Ok(parse_go_duration(text)
            .ok_or_else(|| TraceError::Options(format!("invalid timeout {text:?}")))?
            .min(bound)),
    }
}

/// A Go duration ("300ms", "1.5s", "1m30s"): a sequence of decimal numbers, each with a unit
/// (ns, us, µs, ms, s, m, h).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Counts the opcode steps the struct logger records and halts every frame once they pass the
/// bound (as [`Deadline`] does once its time has passed).
struct Steps {
    left: u64,
    bound: u64,
    counting: bool,
    exceeded: bool,
}

impl Steps {
    fn new(options: &GethDebugTracingOptions, bound: u64) -> Self {
        // The struct logger is the tracer named by no name (or an empty one).
        let counting = options
            .tracer
            .as_ref()
            .is_none_or(|tracer| tracer.as_str().is_empty());
        Self {
            left: bound,
            bound,
            counting,
            exceeded: false,
        }
    }
}

impl<CTX> revm::Inspector<CTX> for Steps {
    fn step(&mut self, interp: &mut revm::interpreter::Interpreter, _context: &mut CTX) {
        if !self.counting {
            return;
        }
        if !self.exceeded {
            if let Some(left) = self.left.checked_sub(1) {
                self.left = left;
                return;
            }
            self.exceeded = true;
        }
        interp.halt_oog();
    }
}

/// The inspectors of a trace: the tracer, and what bounds it.
type Tracing = (DebugInspector, (Deadline, Steps));

fn tracing(
    options: &GethDebugTracingOptions,
    until: Instant,
    max_steps: u64,
) -> Result<Tracing, TraceError> {
    let inspector =
        DebugInspector::new(options.clone()).map_err(|e| TraceError::Options(e.to_string()))?;
    Ok((
        inspector,
        (Deadline::new(Some(until)), Steps::new(options, max_steps)),
    ))
}

/// Fails when a bound stopped the run (its result is not the transaction's).
fn within_bounds(bounds: &(Deadline, Steps), timeout: Duration) -> Result<(), TraceError> {
    if bounds.0.expired {
        return Err(ExecutionError::TimedOut(timeout).into());
    }
    if bounds.1.exceeded {
        return Err(TraceError::TooManySteps(bounds.1.bound));
    }
    Ok(())
}

/// Traces `txs[traced]`, the transactions of block `env` (hash `block_hash`), over `state`, the
/// state before the block: the transactions before `traced.start` are replayed untraced first.
/// One trace per traced transaction, in order. With `receipts_gas` (the gas each transaction's
/// stored receipt says it used, in block order), every replayed and traced transaction must use
/// exactly that, or the replay is [`TraceError::Diverged`]: a trace is of what happened, never
/// of what a wrong state makes of it.
#[allow(clippy::too_many_arguments)]
pub fn trace_transactions<S: StateView>(
    state: &S,
    env: &BlockEnvSpec,
    block_hash: Option<B256>,
    txs: &[Transaction],
    traced: Range<usize>,
    options: &GethDebugTracingOptions,
    limits: TraceLimits,
    receipts_gas: Option<&[u64]>,
) -> Result<Vec<GethTrace>, TraceError> {
    let reproduced = |index: usize, hash: B256, used: u64| match crate::replay_divergence(
        index,
        used,
        receipts_gas,
    ) {
        Some(reason) => Err(TraceError::Diverged {
            index,
            hash,
            reason,
        }),
        None => Ok(()),
    };
    let timeout = effective_timeout(options, limits.timeout)?;
    let until = Instant::now() + timeout;
    let mut evm = Context::mainnet()
        .with_db(CacheDB::new(WrapDatabaseRef(ViewDb(state))))
        .with_block(block_env(env))
        .with_cfg(cfg_env(env.chain_id))
        .build_mainnet_with_inspector(tracing(options, until, limits.max_steps)?);
    let block = block_env(env);
    let mut traces = Vec::with_capacity(traced.len());
    for (index, tx) in txs.iter().enumerate().take(traced.end) {
        let hash = *tx.tx_hash();
        let diverged = |error: EVMError<crate::StateReadError>| match error {
            EVMError::Transaction(reason) => TraceError::Diverged {
                index,
                hash,
                reason: reason.to_string(),
            },
            other => evm_error(other).into(),
        };
        let env = tx_env(tx);
        if index < traced.start {
            let result = evm.transact(env).map_err(diverged)?;
            reproduced(index, hash, crate::gas_used(&result.result))?;
            evm.ctx.db_mut().commit(result.state);
            if Instant::now() >= until {
                return Err(ExecutionError::TimedOut(timeout).into());
            }
            continue;
        }
        let result = evm.inspect_tx(env.clone()).map_err(diverged)?;
        within_bounds(&evm.inspector.1, timeout)?;
        reproduced(index, hash, crate::gas_used(&result.result))?;
        let context = TransactionContext {
            block_hash,
            tx_index: Some(index),
            tx_hash: Some(hash),
        };
        let tracer = &mut evm.inspector.0;
        let trace = tracer
            .get_result(Some(context), &env, &block, &result, evm.ctx.db_mut())
            .map_err(|e| TraceError::Execution(ExecutionError::Evm(e.to_string())))?;
        tracer
            .fuse()
            .map_err(|e| TraceError::Execution(ExecutionError::Evm(e.to_string())))?;
        evm.ctx.db_mut().commit(result.state);
        traces.push(trace);
    }
    Ok(traces)
}

/// Traces a message call over `state` in block `env`, as `eth_call` would run it (the request's
/// gas, else the block's; its limits; nothing is written).
pub fn trace_call<S: StateView>(
    state: &S,
    env: &BlockEnvSpec,
    request: &CallRequest,
    options: &GethDebugTracingOptions,
    max_steps: u64,
) -> Result<GethTrace, TraceError> {
    // A call without a limit of its own is still bounded: an hour is beyond any caller.
    let bound = request.limits.timeout.unwrap_or(Duration::from_secs(3600));
    let timeout = effective_timeout(options, bound)?;
    let until = Instant::now() + timeout;
    let gas = request.gas.unwrap_or(env.gas_limit);
    let (block, cfg, tx) = call_envs(env, request, gas);
    let caller = tx.caller;
    let mut evm = Context::mainnet()
        .with_db(CacheDB::new(WrapDatabaseRef(ViewDb(state))))
        .with_block(block.clone())
        .with_cfg(cfg)
        .build_mainnet_with_inspector(tracing(options, until, max_steps)?);
    let result = match evm.inspect_tx(tx.clone()) {
        Ok(result) => result,
        Err(EVMError::Transaction(error)) => {
            return Err(TraceError::Rejected(call_rejection(&error, caller)));
        }
        Err(error) => return Err(evm_error(error).into()),
    };
    within_bounds(&evm.inspector.1, timeout)?;
    evm.inspector
        .0
        .get_result(None, &tx, &block, &result, evm.ctx.db_mut())
        .map_err(|e| TraceError::Execution(ExecutionError::Evm(e.to_string())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn go_durations_parse_as_geth_reads_them() {
        assert_eq!(parse_go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("5 parsecs"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn a_requested_timeout_is_honoured_only_below_the_bound() {
        let bound = Duration::from_secs(5);
        let mut options = GethDebugTracingOptions::default();
        assert_eq!(effective_timeout(&options, bound).unwrap(), bound);
        options.timeout = Some("1s".into());
        assert_eq!(
            effective_timeout(&options, bound).unwrap(),
            Duration::from_secs(1)
        );
        options.timeout = Some("1h".into());
        assert_eq!(effective_timeout(&options, bound).unwrap(), bound);
        options.timeout = Some("soon".into());
        assert!(matches!(
            effective_timeout(&options, bound),
            Err(TraceError::Options(_))
        ));
    }
}
