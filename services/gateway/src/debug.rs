//! geth's tracing methods: `debug_traceTransaction`, `debug_traceBlockByNumber`,
//! `debug_traceBlockByHash` and `debug_traceCall`, with geth's tracers (the struct logger,
//! `callTracer`, `prestateTracer`, `4byteTracer`, `flatCallTracer`, `muxTracer`,
//! `noopTracer`). A replica re-executes on demand over its state history (`Replica/Trace`);
//! the options are checked here against geth's shapes before any backend is asked.

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::B256;
use alloy_rpc_types_trace::geth::{GethDebugTracingCallOptions, GethDebugTracingOptions};
use serde_json::{Value, json};
use verity_proto::v1::{self, trace_request::Target};

use crate::{
    Backends,
    eth::{block_id_to_wire, call_request, from_status},
    jsonrpc::{RpcError, SERVER_ERROR, optional_param, param},
};

/// How long `debug_traceTransaction` waits for a transaction received in a mini-block to be
/// sealed into its block (a block interval is a second or so): it is traced in its block.
const SEAL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `debug_traceTransaction(hash, options?)`.
pub async fn trace_transaction(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let hash: B256 = param(params, 0)?;
    let options: Option<GethDebugTracingOptions> = optional_param(params, 1)?;
    traced_transaction(backends, hash, options.as_ref(), false).await
}

/// The trace of transaction `hash` under `options` (the struct logger when `None`).
pub async fn traced_transaction(
    backends: &Backends,
    hash: B256,
    options: Option<&GethDebugTracingOptions>,
    parity: bool,
) -> Result<Value, RpcError> {
    let options = options_json(options)?;
    let started = tokio::time::Instant::now();
    loop {
        let request = v1::TraceRequest {
            target: Some(Target::TransactionHash(hash.to_vec())),
            options_json: options.clone(),
            parity,
        };
        match backends.replica().trace(request).await {
            Ok(response) => {
                let trace = response
                    .into_inner()
                    .traces
                    .into_iter()
                    .next()
                    .ok_or_else(|| RpcError::internal("the replica traced nothing"))?;
                return result(&trace);
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(RpcError::new(SERVER_ERROR, "transaction not found"));
            }
            // In a mini-block of the open block: traced once its block is sealed.
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    && status.message().contains("not sealed yet")
                    && started.elapsed() < SEAL_WAIT =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => return Err(from_status(status)),
        }
    }
}

/// `debug_traceBlockByNumber(number, options?)` and `debug_traceBlockByHash(hash, options?)`:
/// `[{txHash, result}]`, one per transaction in block order.
pub async fn trace_block(
    backends: &Backends,
    id: BlockId,
    params: &[Value],
) -> Result<Value, RpcError> {
    let options: Option<GethDebugTracingOptions> = optional_param(params, 1)?;
    let traces = traced_block(backends, id, options.as_ref(), false).await?;
    Ok(Value::Array(
        traces
            .into_iter()
            .map(|(hash, result)| json!({ "txHash": hash, "result": result }))
            .collect(),
    ))
}

/// The traces of block `id`'s transactions under `options`, in order, with their hashes.
pub async fn traced_block(
    backends: &Backends,
    id: BlockId,
    options: Option<&GethDebugTracingOptions>,
    parity: bool,
) -> Result<Vec<(B256, Value)>, RpcError> {
    let request = v1::TraceRequest {
        target: Some(Target::Block(block_id_to_wire(Some(id)))),
        options_json: options_json(options)?,
        parity,
    };
    let response = backends
        .replica()
        .trace(request)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::NotFound => RpcError::new(SERVER_ERROR, block_not_found(id)),
            _ => from_status(status),
        })?
        .into_inner();
    let mut traces = Vec::with_capacity(response.traces.len());
    for trace in &response.traces {
        let hash = B256::try_from(trace.transaction_hash.as_slice())
            .map_err(|_| RpcError::internal("traced transaction hash is not 32 bytes"))?;
        traces.push((hash, result(trace)?));
    }
    Ok(traces)
}

/// geth's text for a block it does not have.
fn block_not_found(id: BlockId) -> String {
    match id {
        BlockId::Hash(hash) => format!("block {} not found", hash.block_hash),
        BlockId::Number(BlockNumberOrTag::Number(n)) => format!("block #{n} not found"),
        BlockId::Number(tag) => format!("block {tag} not found"),
    }
}

/// `debug_traceCall(call, block?, options?)`: the call as `eth_call` runs it, the options'
/// `stateOverrides` and `blockOverrides` included.
pub async fn trace_call(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let options: Option<GethDebugTracingCallOptions> = optional_param(params, 2)?;
    let options = options.unwrap_or_default();
    if options.tx_index.is_some() {
        return Err(RpcError::invalid_params(
            "txIndex is not supported: a call is traced over the state of a whole block",
        ));
    }
    // eth_call's parameters: the call, the block, the state and block overrides.
    let call_params = [
        params.first().cloned().unwrap_or(Value::Null),
        params.get(1).cloned().unwrap_or(Value::Null),
        crate::eth::to_value(&options.state_overrides)?,
        crate::eth::to_value(&options.block_overrides)?,
    ];
    let call = call_request(&call_params, false)?;
    let request = v1::TraceRequest {
        target: Some(Target::Call(call)),
        options_json: options_json(Some(&options.tracing_options))?,
        parity: false,
    };
    let response = backends
        .replica()
        .trace(request)
        .await
        .map_err(from_status)?
        .into_inner();
    let trace = response
        .traces
        .first()
        .ok_or_else(|| RpcError::internal("the replica traced nothing"))?;
    result(trace)
}

/// The options as the replica reads them: geth's shapes, checked here, sent as JSON.
fn options_json(options: Option<&GethDebugTracingOptions>) -> Result<String, RpcError> {
    match options {
        None => Ok(String::new()),
        Some(options) => serde_json::to_string(options).map_err(RpcError::internal),
    }
}

fn result(trace: &v1::TransactionTrace) -> Result<Value, RpcError> {
    serde_json::from_str(&trace.result_json)
        .map_err(|e| RpcError::internal(format!("the replica's trace is not JSON: {e}")))
}

/// Parity's flat traces (`trace_*`): geth's `flatCallTracer`, which gives them in parity's shape.
fn flat_call_tracer() -> GethDebugTracingOptions {
    GethDebugTracingOptions {
        tracer: Some(
            alloy_rpc_types_trace::geth::GethDebugBuiltInTracerType::FlatCallTracer.into(),
        ),
        ..GethDebugTracingOptions::default()
    }
}

/// `trace_transaction(hash)`: the transaction's calls as parity's flat traces (action, result,
/// trace address, subtraces, its block and position; the top call's gas net of the intrinsic
/// gas, as parity, Erigon and reth give it).
pub async fn parity_transaction(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let hash: B256 = param(params, 0)?;
    traced_transaction(backends, hash, Some(&flat_call_tracer()), true).await
}

/// `trace_block(block)`: every transaction's flat traces, in order (a rollup block pays no
/// block reward, so there is no reward trace).
pub async fn parity_block(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let number: alloy_eips::BlockNumberOrTag = param(params, 0)?;
    let traces = traced_block(
        backends,
        BlockId::Number(number),
        Some(&flat_call_tracer()),
        true,
    )
    .await?;
    let mut all = Vec::new();
    for (_, trace) in traces {
        match trace {
            Value::Array(entries) => all.extend(entries),
            other => {
                return Err(RpcError::internal(format!(
                    "flat call trace is not a list: {other}"
                )));
            }
        }
    }
    Ok(Value::Array(all))
}

/// `trace_get(hash, indices)`: the transaction's flat trace at trace address `indices`, or null.
pub async fn parity_get(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let hash: B256 = param(params, 0)?;
    let indices: Vec<alloy_primitives::U64> = param(params, 1)?;
    let traces = traced_transaction(backends, hash, Some(&flat_call_tracer()), true).await?;
    let wanted = json!(indices.iter().map(|i| i.to::<u64>()).collect::<Vec<_>>());
    let found = traces
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["traceAddress"] == wanted))
        .cloned();
    Ok(found.unwrap_or(Value::Null))
}
