//! The realtime extensions: a receipt in the same call that sends the transaction
//! (`realtime_sendRawTransaction`, and `eth_sendRawTransactionSync` of EIP-7966), and a call that
//! runs once an account's nonce reaches a target (`eth_callAfter`).
//!
//! Both wait on the chain feed, never by polling: the receipt is the one in the published
//! mini-block that holds the transaction (its block is not sealed yet, so it has the block number
//! but no block hash), typically tens of milliseconds after the send.

use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U64};
use alloy_rpc_types_eth::TransactionReceipt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use verity_proto::v1;

use crate::{
    Backends,
    eth::{build_receipt, from_status},
    feed::FeedEvent,
    jsonrpc::{RpcError, param},
};

/// EIP-7966's error code for a transaction accepted but not processed within the timeout (the
/// hash is in `data`).
pub const TIMEOUT: i64 = 4;

/// Waiting limits an operator sets.
#[derive(Debug, Clone, Copy)]
pub struct WaitLimits {
    /// Used when the caller names no timeout.
    pub default: Duration,
    /// The longest a caller may ask for.
    pub max: Duration,
}

fn timeout_of(params: &[Value], index: usize, limits: WaitLimits) -> Result<Duration, RpcError> {
    // EIP-7966: a positive integer of milliseconds (viem sends a number; a hex string is taken
    // too).
    let requested = match params.get(index) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().filter(|ms| *ms > 0).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "parameter {index}: timeout must be a positive integer of milliseconds"
            ))
        })?),
        Some(other) => {
            let ms: U64 = serde_json::from_value(other.clone()).map_err(|e| {
                RpcError::invalid_params(format!("parameter {index}: timeout: {e}"))
            })?;
            Some(ms.to::<u64>())
        }
    };
    Ok(requested.map_or(limits.default, |ms| {
        Duration::from_millis(ms).min(limits.max)
    }))
}

/// Senders waiting for the receipt of a transaction, by hash. The feed hands each mini-block's
/// receipts to their waiters, so a mini-block is scanned once however many callers wait.
#[derive(Debug, Default)]
pub struct Waiters {
    waiting: std::sync::Mutex<
        std::collections::HashMap<B256, Vec<tokio::sync::oneshot::Sender<TransactionReceipt>>>,
    >,
}

impl Waiters {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<B256, Vec<tokio::sync::oneshot::Sender<TransactionReceipt>>>,
    > {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the receipt of `hash` (register before sending).
    pub fn register(&self, hash: B256) -> tokio::sync::oneshot::Receiver<TransactionReceipt> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.lock().entry(hash).or_default().push(sender);
        receiver
    }

    /// Drops the waiters of `hash` that gave up.
    pub fn forget(&self, hash: B256) {
        let mut waiting = self.lock();
        if let Some(senders) = waiting.get_mut(&hash) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                waiting.remove(&hash);
            }
        }
    }

    /// Hands the receipts of a mini-block to whoever waits for them.
    pub fn deliver(&self, event: &FeedEvent) {
        let FeedEvent::MiniBlock { mini, .. } = event else {
            return;
        };
        let mut waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        for receipt in &mini.receipts {
            if let Some(senders) = waiting.remove(&receipt.tx_hash)
                && let Some(found) = receipt_in(event, receipt.tx_hash)
            {
                for sender in senders {
                    let _ = sender.send(found.clone());
                }
            }
        }
    }
}

/// `realtime_sendRawTransaction` / `eth_sendRawTransactionSync`: sends, then answers with the
/// receipt from the mini-block that holds the transaction, or error 4 with the hash when none
/// came within the timeout.
pub async fn send_raw_transaction_sync(
    backends: &Backends,
    params: &[Value],
) -> Result<Value, RpcError> {
    let raw: Bytes = param(params, 0)?;
    let timeout = timeout_of(params, 1, backends.wait_limits)?;
    // A transaction's hash is the hash of its EIP-2718 encoding: wait for it before sending, so
    // the mini-block cannot slip by between the two.
    let hash = alloy_primitives::keccak256(&raw);
    let waiting = backends.waiters.register(hash);
    let hash = match backends.submit(raw).await {
        Ok(hash) => hash,
        Err(error) => {
            drop(waiting);
            backends.waiters.forget(hash);
            return Err(error);
        }
    };
    let receipt = tokio::time::timeout(timeout, waiting)
        .await
        .ok()
        .and_then(Result::ok);
    backends.waiters.forget(hash);
    // A last look at the replica covers a mini-block the feed missed (while it reconnected).
    let receipt = match receipt {
        Some(receipt) => Some(receipt),
        None => crate::eth::receipt_of(backends, hash).await?,
    };
    match receipt {
        Some(receipt) => serde_json::to_value(receipt).map_err(RpcError::internal),
        None => Err(RpcError {
            code: TIMEOUT,
            message: format!(
                "the transaction {hash} was added to the mempool but was not processed within {} ms",
                timeout.as_millis()
            ),
            data: Some(json!(hash)),
        }),
    }
}

/// The receipt of `hash` if `event` is the mini-block that holds it.
fn receipt_in(event: &FeedEvent, hash: B256) -> Option<TransactionReceipt> {
    let FeedEvent::MiniBlock {
        mini,
        first_tx_index,
        first_log_index,
    } = event
    else {
        return None;
    };
    crate::feed::positioned(mini, *first_tx_index, *first_log_index)
        .find(|(receipt, _)| receipt.tx_hash == hash)
        .map(|(receipt, at)| build_receipt(receipt, at))
}

/// The condition of `eth_callAfter`: run once `address`'s nonce is at least `nonce`.
#[derive(Debug, Deserialize)]
struct After {
    address: Address,
    nonce: U64,
}

async fn nonce_of(backends: &Backends, address: Address) -> Result<u64, RpcError> {
    Ok(backends
        .replica()
        .get_account(v1::AccountRequest {
            address: address.to_vec(),
            block: None,
        })
        .await
        .map_err(from_status)?
        .into_inner()
        .nonce)
}

/// `eth_callAfter(call, {address, nonce}, timeoutMs?)`: waits until the replica's latest state
/// has `address` at `nonce` or above (woken by the mini-blocks that change that account), then
/// runs `eth_call` at `latest`. Times out with error 4.
pub async fn call_after(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let call: Value = param(params, 0)?;
    let after: After = param(params, 1)?;
    let timeout = timeout_of(params, 2, backends.wait_limits)?;
    let target = after.nonce.to::<u64>();
    let mut events = backends.feed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if nonce_of(backends, after.address).await? >= target {
            return crate::eth::eth_call(backends, &[call, json!("latest")]).await;
        }
        // Wait for a mini-block that moves the account to the target; the replica may apply it
        // a moment after the feed shows it.
        let reached = loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => {
                    return Err(RpcError::new(
                        TIMEOUT,
                        format!(
                            "the nonce of {} did not reach {target} within {} ms",
                            after.address,
                            timeout.as_millis()
                        ),
                    ));
                }
                Ok(Ok(FeedEvent::MiniBlock { mini, .. })) => {
                    let moved = mini
                        .diff
                        .accounts
                        .get(&after.address)
                        .and_then(|change| change.nonce);
                    if moved.is_some_and(|nonce| nonce >= target) {
                        break true;
                    }
                }
                Ok(Ok(FeedEvent::Block { .. })) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => break false,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break false;
                }
            }
        };
        if reached {
            for _ in 0..200 {
                if nonce_of(backends, after.address).await? >= target {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}
