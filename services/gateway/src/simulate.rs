//! `eth_callMany` (Erigon's and reth's shape, which MegaETH serves): bundles of calls run in a
//! row over one state, each over what the ones before it wrote, from a simulation context (a
//! block, and optionally the state just before one of its transactions), under one state
//! override; each bundle may override the block environment. The replica runs them
//! (`Replica/Simulate`).

use alloy_eips::BlockId;
use alloy_primitives::Bytes;
use alloy_rpc_types_eth::{Bundle, EthCallResponse, StateContext, TransactionIndex};
use serde_json::Value;
use verity_proto::v1;

use crate::{
    Backends,
    eth::{
        block_id_to_wire, from_status, revert_message, state_overrides, to_value,
        wire_block_overrides, wire_call,
    },
    jsonrpc::{RpcError, optional_param, param},
};

/// `eth_callMany(bundles, simulationContext?, stateOverride?)`: per bundle, per call, `{value}`
/// or `{error}` (a call that reverts, halts or is refused before it runs is an entry of the
/// answer, not an error of the request).
pub async fn call_many(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let bundles: Vec<Bundle> = param(params, 0)?;
    let context: Option<StateContext> = optional_param(params, 1)?;
    let context = context.unwrap_or_default();
    if bundles.iter().all(|b| b.transactions.is_empty()) {
        return Err(RpcError::invalid_params("bundles are empty"));
    }
    let block = context.block_number.unwrap_or(BlockId::latest());
    let transaction_index = match context.transaction_index {
        None | Some(TransactionIndex::All) => None,
        Some(TransactionIndex::Index(i)) => Some(i as u64),
    };
    let blocks = bundles
        .into_iter()
        .map(|bundle| {
            Ok(v1::SimulatedBlock {
                base_fee_from_parent: false,
                block_overrides: bundle
                    .block_override
                    .map(wire_block_overrides)
                    .transpose()?,
                state_overrides: Vec::new(),
                calls: bundle.transactions.iter().map(wire_call).collect(),
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    let request = v1::SimulateRequest {
        block: Some(block_id_to_wire(Some(block))),
        transaction_index,
        state_overrides: state_overrides(params)?,
        blocks,
        validation: false,
        block_gas: false,
    };
    let answer: Vec<Vec<EthCallResponse>> = simulate(backends, request)
        .await?
        .into_iter()
        .map(|block| block.calls.into_iter().map(call_response).collect())
        .collect();
    to_value(answer)
}

/// The replica's run of `request`: one result per simulated block.
async fn simulate(
    backends: &Backends,
    request: v1::SimulateRequest,
) -> Result<Vec<v1::SimulatedBlockResult>, RpcError> {
    Ok(backends
        .replica()
        .simulate(request)
        .await
        .map_err(from_status)?
        .into_inner()
        .blocks)
}

/// One call's entry: its output, or geth's text for why it failed (with the decoded reason of
/// a revert).
fn call_response(call: v1::CallResponse) -> EthCallResponse {
    if call.success {
        return EthCallResponse {
            value: Some(Bytes::from(call.output)),
            error: None,
        };
    }
    let error = if call.reverted {
        revert_message(&call.output)
    } else if call.error.is_empty() {
        "execution failed".to_string()
    } else {
        call.error
    };
    EthCallResponse {
        value: None,
        error: Some(error),
    }
}

/// geth's seconds between simulated blocks whose time is not overridden.
const SIMULATED_BLOCK_SECONDS: u64 = 12;

/// `eth_simulateV1(payload, block?)`: blocks of calls over the state of `block` (default
/// latest), each call over what the calls and blocks before it wrote. A block without
/// overrides follows its parent (number + 1, time + 12 s). Without `validation` (geth's
/// default) its base fee is 0 and nonces are not checked; with it, nonces are checked (a call
/// without one takes its sender's), fees are charged at the block's base fee (its parent's
/// EIP-1559 successor unless overridden) and must be covered. A call refused before running
/// fails the whole request with geth's code (`-38010` nonce too low, `-38014` insufficient
/// funds, `-38015` block gas limit reached, `-32602` fee below the base fee, ...), as geth
/// does. The answer is geth's: per block its header fields and its calls' `returnData`,
/// `logs`, `gasUsed`, `status` and `error` (code 3 with the revert data, -32015 for a halt).
/// Not built: `traceTransfers`, `returnFullTransactions` (refused by name), and the simulated
/// transactions' hashes (blocks list none).
pub async fn simulate_v1(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    use alloy_rpc_types_eth::simulate::{
        MAX_SIMULATE_BLOCKS, SimCallResult, SimulateError, SimulatePayload,
    };
    let payload: SimulatePayload = param(params, 0)?;
    let block: Option<BlockId> = optional_param(params, 1)?;
    for (name, set) in [
        ("traceTransfers", payload.trace_transfers),
        ("returnFullTransactions", payload.return_full_transactions),
    ] {
        if set {
            return Err(RpcError::invalid_params(format!(
                "{name} is not supported yet (docs/json-rpc.md)"
            )));
        }
    }
    if payload.block_state_calls.len() as u64 > MAX_SIMULATE_BLOCKS {
        return Err(RpcError::new(
            -38026,
            format!("too many blocks: at most {MAX_SIMULATE_BLOCKS}"),
        ));
    }
    let base_id = block.unwrap_or(BlockId::latest());
    let base = crate::eth::rpc_block(backends, base_id, false)
        .await?
        .ok_or_else(|| RpcError::new(crate::jsonrpc::SERVER_ERROR, "header not found"))?;
    // Each block's environment, written out: its number and time follow its parent unless
    // overridden (and must then grow), its base fee is 0 unless overridden.
    let (mut number, mut time) = (base.header.number, base.header.timestamp);
    let mut headers = Vec::with_capacity(payload.block_state_calls.len());
    let mut blocks = Vec::with_capacity(payload.block_state_calls.len());
    for sim in &payload.block_state_calls {
        let mut overrides = sim.block_overrides.clone().unwrap_or_default();
        let next_number = match overrides.number {
            Some(n) => u64::try_from(n)
                .map_err(|_| RpcError::invalid_params("block override number exceeds 64 bits"))?,
            None => number + 1,
        };
        if next_number <= number {
            return Err(RpcError::new(
                -38020,
                format!("block numbers must be in order: {next_number} <= {number}"),
            ));
        }
        let next_time = overrides.time.unwrap_or(time + SIMULATED_BLOCK_SECONDS);
        if next_time <= time {
            return Err(RpcError::new(
                -38021,
                format!("block timestamps must be in order: {next_time} <= {time}"),
            ));
        }
        (number, time) = (next_number, next_time);
        overrides.number = Some(alloy_primitives::U256::from(number));
        overrides.time = Some(time);
        // Without validation an unset base fee is 0; with it, the replica derives it from the
        // parent (its gas used is known only once the parent ran).
        let base_fee_from_parent = payload.validation && overrides.base_fee.is_none();
        if !payload.validation {
            overrides.base_fee = Some(overrides.base_fee.unwrap_or_default());
        }
        headers.push((
            number,
            time,
            overrides.gas_limit.unwrap_or(base.header.gas_limit),
            overrides.coinbase.unwrap_or(base.header.beneficiary),
        ));
        blocks.push(v1::SimulatedBlock {
            base_fee_from_parent,
            block_overrides: Some(wire_block_overrides(overrides)?),
            state_overrides: sim
                .state_overrides
                .clone()
                .map(crate::eth::wire_state_overrides)
                .transpose()?
                .unwrap_or_default(),
            calls: sim.calls.iter().map(wire_call).collect(),
        });
    }
    let request = v1::SimulateRequest {
        block: Some(block_id_to_wire(Some(base_id))),
        transaction_index: None,
        state_overrides: Vec::new(),
        blocks,
        validation: payload.validation,
        block_gas: true,
    };
    let simulated = simulate(backends, request).await?;
    // A call refused before running fails the request, with geth's code.
    if let Some(refused) = simulated
        .iter()
        .flat_map(|b| &b.calls)
        .find(|c| c.refusal_code != 0)
    {
        return Err(RpcError::new(refused.refusal_code, refused.error.clone()));
    }
    let mut parent = base.header.hash;
    let mut answer = Vec::with_capacity(simulated.len());
    for ((number, time, gas_limit, coinbase), block) in headers.into_iter().zip(simulated) {
        let (gas_used, base_fee) = (block.gas_used, block.base_fee);
        let header = alloy_consensus::Header {
            parent_hash: parent,
            beneficiary: coinbase,
            number,
            timestamp: time,
            gas_limit,
            gas_used,
            base_fee_per_gas: Some(base_fee),
            ..Default::default()
        };
        let hash = header.hash_slow();
        parent = hash;
        let mut log_index = 0u64;
        let calls: Vec<SimCallResult> = block
            .calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| {
                let logs = call
                    .logs
                    .iter()
                    .map(|log| {
                        let inner = alloy_primitives::Log::try_from(log)
                            .map_err(|e| RpcError::internal(e.to_string()))?;
                        let log = alloy_rpc_types_eth::Log {
                            inner,
                            block_hash: Some(hash),
                            block_number: Some(number),
                            block_timestamp: Some(time),
                            transaction_hash: None,
                            transaction_index: Some(index as u64),
                            log_index: Some(log_index),
                            removed: false,
                        };
                        log_index += 1;
                        Ok(log)
                    })
                    .collect::<Result<Vec<_>, RpcError>>()?;
                let error = (!call.success).then(|| {
                    if call.reverted {
                        SimulateError {
                            code: SimulateError::EXECUTION_REVERTED_CODE,
                            message: revert_message(&call.output),
                            data: Some(Bytes::from(call.output.clone())),
                        }
                    } else {
                        SimulateError {
                            code: SimulateError::VM_EXECUTION_ERROR_CODE,
                            message: call.error.clone(),
                            data: None,
                        }
                    }
                });
                Ok(SimCallResult {
                    return_data: Bytes::from(call.output),
                    logs,
                    gas_used: call.gas_used,
                    max_used_gas: None,
                    status: call.success,
                    error,
                })
            })
            .collect::<Result<_, RpcError>>()?;
        let mut value = to_value(alloy_rpc_types_eth::Header::from_consensus(
            alloy_consensus::Sealed::new_unchecked(header, hash),
            None,
            None,
        ))?;
        value["transactions"] = Value::Array(Vec::new());
        value["uncles"] = Value::Array(Vec::new());
        value["calls"] = to_value(calls)?;
        answer.push(value);
    }
    Ok(Value::Array(answer))
}
