//! geth's `txpool_*` methods over the active sequencer's mempool: `txpool_status` (counts),
//! `txpool_content`, `txpool_contentFrom` (one sender) and `txpool_inspect` (one line per
//! transaction). Pending transactions are the ones the producer can take now (from the sender's
//! nonce on, without a gap), queued the ones behind a gap. With 10 ms mini-blocks a pending
//! transaction waits milliseconds, so what a caller mostly sees is the queued ones.
//!
//! An answer lists at most `--max-txpool-content` transactions; a larger pool is refused with
//! -32005 rather than cut short, since a partial listing would read as a complete one.

use std::collections::BTreeMap;

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, U64};
use serde_json::{Value, json};
use verity_primitives::Transaction;
use verity_proto::v1;

use crate::{
    Backends,
    eth::from_status,
    jsonrpc::{LIMIT_EXCEEDED, RpcError, param},
};

/// The waiting transactions, each with whether it is pending.
type Pool = Vec<(Transaction, bool)>;

async fn get_pool(
    backends: &Backends,
    sender: Option<Address>,
    limit: usize,
) -> Result<v1::PoolContent, RpcError> {
    Ok(backends
        .sequencer()
        .map_err(from_status)?
        .get_pool(v1::GetPoolRequest {
            sender: sender.map(|a| a.to_vec()).unwrap_or_default(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        })
        .await
        .map_err(from_status)?
        .into_inner())
}

/// Up to `--max-txpool-content` waiting transactions (of `sender`, if given), or -32005 when
/// more are waiting.
async fn pool(backends: &Backends, sender: Option<Address>) -> Result<Pool, RpcError> {
    let limit = backends.serving.max_txpool_content;
    let content = get_pool(backends, sender, limit).await?;
    if content.truncated {
        let waiting = match sender {
            Some(sender) => format!("{sender} has more than {limit} transactions waiting"),
            None => format!(
                "{} transactions waiting",
                content.pending.saturating_add(content.queued)
            ),
        };
        return Err(RpcError::new(
            LIMIT_EXCEEDED,
            format!(
                "txpool too large to list: {waiting}, at most {limit} are listed \
                 (--max-txpool-content); use txpool_status or txpool_contentFrom"
            ),
        ));
    }
    content
        .transactions
        .iter()
        .map(|t| {
            let wire = t
                .transaction
                .as_ref()
                .ok_or_else(|| RpcError::internal("pool transaction without body"))?;
            let tx = Transaction::try_from(wire).map_err(RpcError::internal)?;
            Ok((tx, t.pending))
        })
        .collect()
}

/// `{pending: {sender: {nonce: item}}, queued: {…}}`, senders checksummed and nonces in decimal
/// as geth keys them.
fn by_sender(pool: &Pool, item: impl Fn(&Transaction) -> Value) -> Value {
    let mut out: [BTreeMap<String, BTreeMap<String, Value>>; 2] = Default::default();
    for (tx, pending) in pool {
        out[usize::from(!pending)]
            .entry(tx.signer().to_checksum(None))
            .or_default()
            .insert(tx.nonce().to_string(), item(tx));
    }
    let [pending, queued] = out;
    json!({"pending": pending, "queued": queued})
}

/// A waiting transaction as geth's RPC shows one.
fn rpc_transaction(tx: &Transaction) -> Value {
    serde_json::to_value(crate::eth::pending_rpc_transaction(tx)).unwrap_or(Value::Null)
}

/// geth's one-line summary: `to: value wei + gas gas × price wei`.
fn summary(tx: &Transaction) -> Value {
    let to = match tx.to() {
        Some(to) => to.to_checksum(None),
        None => "contract creation".to_owned(),
    };
    json!(format!(
        "{to}: {} wei + {} gas × {} wei",
        tx.value(),
        tx.gas_limit(),
        tx.max_fee_per_gas()
    ))
}

/// `txpool_status`: the counts alone.
pub async fn status(backends: &Backends) -> Result<Value, RpcError> {
    let content = get_pool(backends, None, 0).await?;
    Ok(json!({
        "pending": U64::from(content.pending),
        "queued": U64::from(content.queued),
    }))
}

/// `txpool_content`.
pub async fn content(backends: &Backends) -> Result<Value, RpcError> {
    let pool = pool(backends, None).await?;
    Ok(by_sender(&pool, rpc_transaction))
}

/// `txpool_inspect`.
pub async fn inspect(backends: &Backends) -> Result<Value, RpcError> {
    let pool = pool(backends, None).await?;
    Ok(by_sender(&pool, summary))
}

/// `txpool_contentFrom`: `{pending: {nonce: tx}, queued: {…}}` of one sender.
pub async fn content_from(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let sender: Address = param(params, 0)?;
    let pool = pool(backends, Some(sender)).await?;
    let mut all = by_sender(&pool, rpc_transaction);
    let key = sender.to_checksum(None);
    let mut take = |kind: &str| {
        all[kind]
            .get_mut(&key)
            .map(Value::take)
            .unwrap_or(json!({}))
    };
    let (pending, queued) = (take("pending"), take("queued"));
    Ok(json!({"pending": pending, "queued": queued}))
}
