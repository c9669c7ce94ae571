//! The part of Otterscan's `ots_` namespace (docs/custom-jsonrpc.md of otterscan/otterscan)
//! built so far, in the shapes of alloy's otterscan types (reth's): `ots_hasCode`,
//! `ots_getBlockDetails`/`ByHash`, `ots_getBlockTransactions` and
//! `ots_getTransactionBySenderAndNonce`. `ots_getApiLevel` is not
//! answered until the rest (search, traces, transaction errors) is: Otterscan reads it as the
//! promise that every method of that level exists.

use alloy_eips::{BlockId, eip1898::LenientBlockNumberOrTag};
use alloy_primitives::{Address, U256};
use alloy_rpc_types_eth::BlockTransactions;
use alloy_rpc_types_trace::otterscan::{
    BlockDetails, InternalIssuance, OtsBlock, OtsBlockTransactions, OtsReceipt,
    OtsTransactionReceipt,
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
        .map(|receipt| OtsTransactionReceipt {
            receipt: receipt.map_inner(|inner| OtsReceipt {
                status: inner.status(),
                cumulative_gas_used: inner.cumulative_gas_used(),
                logs: None,
                logs_bloom: None,
                r#type: inner.tx_type() as u8,
            }),
            timestamp: Some(timestamp),
        })
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
