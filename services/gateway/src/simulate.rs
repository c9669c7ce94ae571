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
        block_id_to_wire, decode_revert_reason, from_status, state_overrides, to_value,
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
    };
    let response = backends
        .replica()
        .simulate(request)
        .await
        .map_err(from_status)?
        .into_inner();
    let answer: Vec<Vec<EthCallResponse>> = response
        .blocks
        .into_iter()
        .map(|block| block.calls.into_iter().map(call_response).collect())
        .collect();
    to_value(answer)
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
        match decode_revert_reason(&call.output) {
            Some(reason) => format!("execution reverted: {reason}"),
            None => "execution reverted".to_string(),
        }
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
