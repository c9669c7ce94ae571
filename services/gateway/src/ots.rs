//! The part of Otterscan's `ots_` namespace (docs/custom-jsonrpc.md of otterscan/otterscan)
//! built so far, in the shapes of alloy's otterscan types (reth's): `ots_hasCode`,
//! `ots_getBlockDetails`/`ByHash`, `ots_getBlockTransactions`,
//! `ots_getTransactionBySenderAndNonce`, and over the replica's re-execution (geth's call
//! tracer, `crate::debug`) `ots_traceTransaction`, `ots_getInternalOperations`,
//! `ots_getTransactionError` and `ots_getContractCreator`, and over the replica's address
//! index `ots_searchTransactionsBefore`/`After`; with them `ots_getApiLevel` answers 8, the
//! level Otterscan 2 asks for.

use alloy_eips::{BlockId, eip1898::LenientBlockNumberOrTag};
use alloy_primitives::{Address, U256};
use alloy_primitives::{B256, Bytes};
use alloy_rpc_types_eth::BlockTransactions;
use alloy_rpc_types_trace::{
    geth::{CallConfig, CallFrame, GethDebugTracingOptions},
    otterscan::{
        BlockDetails, ContractCreator, InternalIssuance, InternalOperation, OperationType,
        OtsBlock, OtsBlockTransactions, OtsReceipt, OtsTransactionReceipt, TraceEntry,
        TransactionsWithReceipts,
    },
};
use serde_json::Value;

use crate::{
    Backends,
    eth::{rpc_block, sealed_block_receipts, to_value},
    jsonrpc::{RpcError, optional_param, param},
};

/// `ots_hasCode`: whether the account has code at the block (`latest` by default), without
/// sending the code.
pub async fn has_code(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let address: Address = param(params, 0)?;
    let block: Option<LenientBlockNumberOrTag> = optional_param(params, 1)?;
    let code = crate::eth::code_at(backends, address, block.map(BlockId::from)).await?;
    Ok(Value::Bool(!code.is_empty()))
}

/// `ots_getBlockDetails`: the block without its transactions (their count instead), no
/// issuance (a rollup mints nothing per block), and the fees its senders paid.
pub async fn block_details(backends: &Backends, id: BlockId) -> Result<Value, RpcError> {
    let Some(block) = rpc_block(backends, id, false).await? else {
        return Ok(Value::Null);
    };
    let receipts = sealed_block_receipts(backends, id)
        .await?
        .unwrap_or_default();
    let total_fees = receipts
        .iter()
        .map(|r| U256::from(r.gas_used) * U256::from(r.effective_gas_price))
        .fold(U256::ZERO, |a, b| a + b);
    to_value(BlockDetails::new(
        block,
        InternalIssuance::default(),
        total_fees,
    ))
}

/// `ots_getBlockTransactions(number, page, pageSize)`: one page of the block's transactions
/// (page 0 holds its last ones, as Erigon and reth count) with their receipts, each input cut
/// to its 4-byte selector and the receipts without logs or bloom.
pub async fn block_transactions(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let number: LenientBlockNumberOrTag = param(params, 0)?;
    let page: usize = param(params, 1)?;
    let page_size: usize = param(params, 2)?;
    let id = BlockId::from(number);
    let Some(mut block) = rpc_block(backends, id, true).await? else {
        return Ok(Value::Null);
    };
    let receipts = sealed_block_receipts(backends, id)
        .await?
        .unwrap_or_default();
    let count = block.transactions.len();
    let end = count.saturating_sub(page.saturating_mul(page_size));
    let start = end.saturating_sub(page_size);
    let timestamp = block.header.timestamp;
    if let BlockTransactions::Full(txs) = &mut block.transactions {
        *txs = txs.drain(start..end).collect();
    }
    let receipts = receipts
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|receipt| ots_receipt(receipt, timestamp))
        .collect();
    let mut answer = to_value(OtsBlockTransactions {
        fullblock: OtsBlock {
            block,
            transaction_count: count,
        },
        receipts,
    })?;
    // Only the selector of each input, as Otterscan asks.
    if let Some(txs) = answer["fullblock"]["transactions"].as_array_mut() {
        for tx in txs {
            if let Some(input) = tx["input"].as_str() {
                let cut: String = input.chars().take(2 + 8).collect();
                tx["input"] = Value::String(cut);
            }
        }
    }
    Ok(answer)
}

/// A receipt as Otterscan's lists carry it: without logs or bloom, with its block's time.
fn ots_receipt(
    receipt: alloy_rpc_types_eth::TransactionReceipt,
    timestamp: u64,
) -> OtsTransactionReceipt {
    OtsTransactionReceipt {
        receipt: receipt.map_inner(|inner| OtsReceipt {
            status: inner.status(),
            cumulative_gas_used: inner.cumulative_gas_used(),
            logs: None,
            logs_bloom: None,
            r#type: inner.tx_type() as u8,
        }),
        timestamp: Some(timestamp),
    }
}

/// A quantity Otterscan may send as a JSON number or as geth's hex string.
fn quantity(params: &[Value], index: usize) -> Result<u64, RpcError> {
    match params.get(index) {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| RpcError::invalid_params(format!("invalid quantity {n}"))),
        _ => param::<alloy_primitives::U64>(params, index).map(|q| q.to()),
    }
}

/// `ots_getTransactionBySenderAndNonce`: the hash of `sender`'s transaction with `nonce` in a
/// sealed block, else null. A binary search over the nonce history every replica keeps finds
/// the first block after which the sender's nonce exceeds `nonce` (about log2(blocks) reads),
/// then that block's transactions are searched (none matches when a contract's own CREATE
/// raised its nonce).
pub async fn transaction_by_sender_and_nonce(
    backends: &Backends,
    params: &[Value],
) -> Result<Value, RpcError> {
    let sender: Address = param(params, 0)?;
    let nonce = quantity(params, 1)?;
    let nonce_after = |block: u64| {
        let mut replica = backends.replica();
        async move {
            replica
                .get_account(verity_proto::v1::AccountRequest {
                    address: sender.to_vec(),
                    block: Some(crate::eth::block_id_to_wire(Some(BlockId::number(block)))),
                })
                .await
                .map(|r| r.into_inner().nonce)
                .map_err(crate::eth::from_status)
        }
    };
    let head = backends.head().await?.block_number;
    if nonce_after(head).await? <= nonce {
        return Ok(Value::Null);
    }
    let (mut low, mut high) = (0, head);
    while low < high {
        let middle = low + (high - low) / 2;
        if nonce_after(middle).await? > nonce {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let Some(block) = rpc_block(backends, BlockId::number(low), true).await? else {
        return Ok(Value::Null);
    };
    let found = block.transactions.txns().find(|tx| {
        use alloy_consensus::Transaction as _;
        tx.inner.signer() == sender && tx.inner.nonce() == nonce
    });
    to_value(found.map(|tx| *tx.inner.tx_hash()))
}

/// The call tree of transaction `hash` (geth's `callTracer`), as the replica re-executes it.
async fn call_tree(backends: &Backends, hash: B256) -> Result<CallFrame, RpcError> {
    let options = call_tracer();
    let trace = crate::debug::traced_transaction(backends, hash, Some(&options), false).await?;
    call_frame(trace)
}

fn call_frame(trace: Value) -> Result<CallFrame, RpcError> {
    serde_json::from_value(trace).map_err(|e| RpcError::internal(format!("call trace: {e}")))
}

fn call_tracer() -> GethDebugTracingOptions {
    GethDebugTracingOptions::call_tracer(CallConfig::default())
}

/// Every frame of `root` in call order with its depth (the root at 0); with `effective`, only
/// frames that took effect: one that failed is left out with everything it called.
fn frames(root: &CallFrame, effective: bool) -> Vec<(u32, &CallFrame)> {
    let mut found = Vec::new();
    let mut stack = vec![(0u32, root)];
    while let Some((depth, frame)) = stack.pop() {
        if effective && frame.error.is_some() {
            continue;
        }
        found.push((depth, frame));
        stack.extend(frame.calls.iter().rev().map(|c| (depth + 1, c)));
    }
    found
}

/// `ots_traceTransaction`: every call frame of the transaction, in call order, with its depth,
/// type, sender, recipient, value (none for STATICCALL and DELEGATECALL, which move none),
/// input and output: Otterscan's trace view.
pub async fn trace_transaction(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let hash: B256 = param(params, 0)?;
    let root = call_tree(backends, hash).await?;
    let entries: Vec<TraceEntry> = frames(&root, false)
        .into_iter()
        .map(|(depth, frame)| TraceEntry {
            r#type: frame.typ.clone(),
            depth,
            from: frame.from,
            to: frame.to.unwrap_or_default(),
            value: match frame.typ.as_str() {
                "STATICCALL" | "DELEGATECALL" => None,
                _ => Some(frame.value.unwrap_or_default()),
            },
            input: frame.input.clone(),
            output: frame.output.clone().unwrap_or_default(),
        })
        .collect();
    to_value(entries)
}

/// `ots_getInternalOperations`: the ether the transaction moved inside its calls (transfers by
/// calls below the top one, contracts created by CREATE and CREATE2 with their endowment,
/// self-destructs with the balance they sent), from frames that took effect: a frame that
/// reverted, and everything it called, moved nothing.
pub async fn internal_operations(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let hash: B256 = param(params, 0)?;
    let root = call_tree(backends, hash).await?;
    let operations: Vec<InternalOperation> = frames(&root, true)
        .into_iter()
        .filter_map(|(depth, frame)| {
            let value = frame.value.unwrap_or_default();
            let kind = match frame.typ.as_str() {
                "CALL" if depth > 0 && !value.is_zero() => OperationType::OpTransfer,
                "CREATE" if depth > 0 => OperationType::OpCreate,
                "CREATE2" if depth > 0 => OperationType::OpCreate2,
                "SELFDESTRUCT" => OperationType::OpSelfDestruct,
                _ => return None,
            };
            Some(InternalOperation {
                r#type: kind,
                from: frame.from,
                to: frame.to.unwrap_or_default(),
                value,
            })
        })
        .collect();
    to_value(operations)
}

/// `ots_getTransactionError`: the revert data of a transaction that reverted, else `0x`.
pub async fn transaction_error(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let hash: B256 = param(params, 0)?;
    let root = call_tree(backends, hash).await?;
    let reverted = root.error.as_deref() == Some("execution reverted");
    to_value(if reverted {
        root.output.unwrap_or_default()
    } else {
        Bytes::new()
    })
}

/// `ots_getContractCreator`: the transaction and the account that created the contract at
/// `address`, or null for an account without code (or one with code since genesis). A binary
/// search over the code history every replica keeps finds the block its code appeared in
/// (about log2(blocks) reads); that block is traced and its first CREATE or CREATE2 frame of
/// `address` that took effect names the creator (the factory, for a contract a contract made).
pub async fn contract_creator(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let address: Address = param(params, 0)?;
    let has_code = |block: u64| async move {
        crate::eth::code_at(backends, address, Some(BlockId::number(block)))
            .await
            .map(|code| !code.is_empty())
    };
    let head = backends.head().await?.block_number;
    if !has_code(head).await? || has_code(0).await? {
        return Ok(Value::Null);
    }
    let (mut low, mut high) = (1, head);
    while low < high {
        let middle = low + (high - low) / 2;
        if has_code(middle).await? {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    let options = call_tracer();
    for (hash, trace) in
        crate::debug::traced_block(backends, BlockId::number(low), Some(&options), false).await?
    {
        let root = call_frame(trace)?;
        let created = frames(&root, true).into_iter().find(|(_, frame)| {
            matches!(frame.typ.as_str(), "CREATE" | "CREATE2") && frame.to == Some(address)
        });
        if let Some((_, frame)) = created {
            return to_value(ContractCreator {
                hash,
                creator: frame.from,
            });
        }
    }
    Err(RpcError::internal(format!(
        "the code of {address} appeared in block {low}, but no transaction of it created {address}"
    )))
}

/// Otterscan's API level this gateway answers (`ots_getApiLevel`): every method Otterscan 2
/// calls is here.
pub const API_LEVEL: u64 = 8;

/// `ots_searchTransactionsBefore(address, block, pageSize)`: the sealed transactions `address`
/// took part in, in blocks below `block` (0: from the newest), newest first, at least
/// `pageSize` of them and the rest of the last block reached; `firstPage` when it started at
/// the newest, `lastPage` when nothing older is left.
pub async fn search_before(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let address: Address = param(params, 0)?;
    let block = quantity(params, 1)?;
    let page_size = quantity(params, 2)?;
    let bound = if block == 0 { u64::MAX } else { block };
    let (found, more) = search(backends, address, bound, true, page_size).await?;
    page(found, block == 0, !more)
}

/// `ots_searchTransactionsAfter(address, block, pageSize)`: the same in blocks above `block`
/// (0: from genesis), found oldest first and answered newest first, as Otterscan shows them;
/// `firstPage` when nothing newer is left, `lastPage` when it started at genesis.
pub async fn search_after(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let address: Address = param(params, 0)?;
    let block = quantity(params, 1)?;
    let page_size = quantity(params, 2)?;
    let (mut found, more) = search(backends, address, block, false, page_size).await?;
    found.reverse();
    page(found, !more, block == 0)
}

async fn search(
    backends: &Backends,
    address: Address,
    block: u64,
    before: bool,
    page_size: u64,
) -> Result<(Vec<verity_proto::v1::SearchedTransaction>, bool), RpcError> {
    let response = backends
        .replica()
        .search_transactions(verity_proto::v1::SearchTransactionsRequest {
            address: address.to_vec(),
            block,
            before,
            page_size: u32::try_from(page_size).unwrap_or(u32::MAX),
        })
        .await
        .map_err(crate::eth::from_status)?
        .into_inner();
    Ok((response.transactions, response.more))
}

fn page(
    found: Vec<verity_proto::v1::SearchedTransaction>,
    first_page: bool,
    last_page: bool,
) -> Result<Value, RpcError> {
    let mut txs = Vec::with_capacity(found.len());
    let mut receipts = Vec::with_capacity(found.len());
    for entry in found {
        let stored = entry
            .transaction
            .ok_or_else(|| RpcError::internal("searched transaction without body"))?;
        txs.push(crate::eth::rpc_transaction(&stored)?);
        let response = verity_proto::v1::ReceiptResponse {
            found: true,
            transaction: Some(stored),
            receipt: entry.receipt,
            first_log_index: 0,
        };
        let receipt = crate::eth::rpc_receipt(&response)?
            .ok_or_else(|| RpcError::internal("searched transaction without receipt"))?;
        receipts.push(ots_receipt(receipt, entry.timestamp));
    }
    to_value(TransactionsWithReceipts {
        txs,
        receipts,
        first_page,
        last_page,
    })
}
