//! JSON-RPC over WebSocket, on the HTTP port (an upgrade of `GET /`) and on `/ws`: every method
//! of the HTTP endpoint, plus `eth_subscribe` / `eth_unsubscribe` fed by the chain feed.
//!
//! Subscriptions: `newHeads` (with `miniBlockCount`), `logs` (sealed blocks; with `fromBlock` or
//! `toBlock` = `pending`, each mini-block's logs as it is published instead),
//! `newPendingTransactions` (hashes, or whole transactions with `true`, as they enter a
//! mini-block), `miniBlocks`, and `stateChanges` for a list of addresses.
//!
//! Backpressure: each connection has a bounded outbound queue (`--ws-queue`). A client that
//! leaves it full for a second is disconnected with close code 1008 and a reason that says so,
//! never buffered without bound; so is one whose subscription falls more than the feed's buffer
//! behind the chain.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use alloy_eips::BlockNumberOrTag;
use alloy_primitives::{Address, U64, U128};
use alloy_rpc_types_eth::{Filter, Log as RpcLog};
use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
};
use futures::{SinkExt as _, StreamExt as _};
use rand::rngs::SysRng;
use rand_core::{Rng as _, UnwrapErr};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use verity_primitives::{Block, MiniBlock, Receipt};

use crate::{
    Backends, ClientIp,
    eth::build_receipt,
    feed::{FeedEvent, positioned},
    jsonrpc::{self, Call, LIMIT_EXCEEDED, RpcError, optional_param, param},
};

/// Close code for a policy violation (RFC 6455): used for slow consumers.
const CLOSE_POLICY: u16 = 1008;
/// Close code "try again later": the connection cap is reached.
const CLOSE_TRY_AGAIN: u16 = 1013;
/// Close code "going away": an idle connection is closed.
const CLOSE_GOING_AWAY: u16 = 1001;
/// How long a subscription waits for room in a full outbound queue before it disconnects the
/// client as too slow (meanwhile the feed buffers its events).
const SLOW_CLIENT_GRACE: std::time::Duration = std::time::Duration::from_millis(1_000);

/// WebSocket limits an operator sets.
#[derive(Debug)]
pub struct WsLimits {
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one client IP.
    pub max_per_ip: usize,
    /// How long a connection without subscriptions may stay silent.
    pub idle: std::time::Duration,
    /// Open connections per client IP.
    pub per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most messages queued for one connection before it counts as too slow.
    pub queue: usize,
    /// Largest accepted message.
    pub max_message_bytes: usize,
    /// Open connections now.
    pub open: AtomicUsize,
}

/// `GET /` with an upgrade, or `GET /ws`.
pub async fn upgrade(
    State(backends): State<Backends>,
    ClientIp(ip): ClientIp,
    ws: WebSocketUpgrade,
) -> Response {
    let max = backends.ws.max_message_bytes;
    ws.max_message_size(max)
        .on_upgrade(move |socket| connection(socket, backends, ip))
}

/// Decrements the open-connection counts when the connection ends.
struct Slot(Arc<WsLimits>, Option<IpAddr>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        if let Some(ip) = self.1 {
            let mut per_ip = self.0.lock_per_ip();
            if let Some(count) = per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        metrics::gauge!("verity_gateway_ws_connections").decrement(1.0);
    }
}

impl WsLimits {
    fn lock_per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a connection slot for `ip`, or says which cap is reached.
    fn admit(&self, ip: Option<IpAddr>) -> Result<(), String> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "too many WebSocket connections (limit {}); try again later",
                self.max_connections
            ));
        }
        if let Some(ip) = ip {
            let mut per_ip = self.lock_per_ip();
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::SeqCst);
                return Err(format!(
                    "too many WebSocket connections from {ip} (limit {} per address); try again later",
                    self.max_per_ip
                ));
            }
            *count += 1;
        }
        Ok(())
    }
}

/// A message for the writer: text to send, or a close with code and reason.
enum Outbound {
    Text(String),
    Close(u16, String),
}

async fn connection(socket: WebSocket, backends: Backends, ip: Option<IpAddr>) {
    let limits = backends.ws.clone();
    let (mut sink, mut source) = socket.split();
    if let Err(reason) = limits.admit(ip) {
        let error = jsonrpc::response(
            Value::Null,
            Err(RpcError::new(LIMIT_EXCEEDED, reason.clone())),
        );
        let _ = sink.send(Message::Text(error.to_string().into())).await;
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CLOSE_TRY_AGAIN,
                reason: reason.into(),
            })))
            .await;
        return;
    }
    metrics::gauge!("verity_gateway_ws_connections").increment(1.0);
    let _slot = Slot(limits.clone(), ip);
    // Replies and notifications share one bounded queue; closes jump it.
    let (out, mut out_rx) = mpsc::channel::<String>(limits.queue.max(1));
    let (close, mut close_rx) = mpsc::unbounded_channel::<Outbound>();
    let mut writer = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                Some(close) = close_rx.recv() => close,
                text = out_rx.recv() => match text {
                    Some(text) => Outbound::Text(text),
                    None => return,
                },
            };
            match next {
                Outbound::Text(text) => {
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Outbound::Close(code, reason) => {
                    tracing::info!(code, %reason, "closing a WebSocket connection");
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    return;
                }
            }
        }
    });
    let mut session = Session {
        backends,
        ip,
        out: out.clone(),
        close,
        subscriptions: HashMap::new(),
    };
    loop {
        let idle = session.subscriptions.is_empty();
        let message = tokio::select! {
            message = source.next() => message,
            _ = &mut writer => break,
            _ = tokio::time::sleep(limits.idle), if idle => {
                let reason = format!(
                    "idle for {} s without a subscription",
                    limits.idle.as_secs()
                );
                let _ = session.close.send(Outbound::Close(CLOSE_GOING_AWAY, reason));
                break;
            }
        };
        let body = match message {
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
        };
        let (reply, starts) = session.answer(&body).await;
        if let Some(reply) = reply
            && out.send(reply.to_string()).await.is_err()
        {
            break;
        }
        // Notifications start only after the reply that names their subscription.
        for start in starts {
            session.start(start);
        }
    }
    for (_, task) in session.subscriptions.drain() {
        task.abort();
    }
    drop(session);
    drop(out);
    if !writer.is_finished() {
        let _ = writer.await;
    }
}

/// What a subscription reports.
#[derive(Debug, Clone)]
enum Kind {
    NewHeads,
    Logs { filter: Box<Filter>, pending: bool },
    PendingTransactions { full: bool },
    MiniBlocks,
    StateChanges(HashSet<Address>),
}

/// A subscription accepted but not started yet.
struct Start {
    id: U128,
    kind: Kind,
    events: broadcast::Receiver<FeedEvent>,
}

struct Session {
    backends: Backends,
    ip: Option<IpAddr>,
    out: mpsc::Sender<String>,
    close: mpsc::UnboundedSender<Outbound>,
    subscriptions: HashMap<U128, tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Answers a message: one call or a batch. Also returns the subscriptions to start.
    async fn answer(&mut self, body: &[u8]) -> (Option<Value>, Vec<Start>) {
        let mut starts = Vec::new();
        let reply = match jsonrpc::parse_body(body) {
            Err(response) => Some(response),
            Ok(jsonrpc::Body::Single(value)) => self.answer_one(value, &mut starts).await,
            Ok(jsonrpc::Body::Batch(values))
                if values.len() > self.backends.serving.max_batch_size =>
            {
                Some(crate::batch_too_large(&self.backends, values.len()))
            }
            Ok(jsonrpc::Body::Batch(values)) => {
                // In order, one at a time, all within one request timeout.
                let deadline = crate::batch_deadline(&self.backends);
                let backends = self.backends.clone();
                let mut answers = Vec::with_capacity(values.len());
                for value in values {
                    let id = value.get("id").cloned();
                    let answer = self.answer_one(value, &mut starts);
                    answers.extend(crate::within_batch(&backends, deadline, id, answer).await);
                }
                (!answers.is_empty()).then_some(Value::Array(answers))
            }
        };
        (reply, starts)
    }

    async fn answer_one(&mut self, value: Value, starts: &mut Vec<Start>) -> Option<Value> {
        let call = match jsonrpc::parse_call(value) {
            Ok(call) => call,
            Err(response) => return Some(response),
        };
        let result = match call.method.as_str() {
            "eth_subscribe" => {
                let result = self.subscribe(&call, starts.len()).map(|start| {
                    let id = json!(start.id);
                    starts.push(start);
                    id
                });
                crate::measured(&call.method, async { result }).await
            }
            "eth_unsubscribe" => {
                let result = self.unsubscribe(&call, starts);
                crate::measured(&call.method, async { result }).await
            }
            _ => crate::answer(&self.backends, &call, self.ip).await,
        };
        call.id.map(|id| jsonrpc::response(id, result))
    }

    fn subscribe(&self, call: &Call, starting: usize) -> Result<Start, RpcError> {
        let max = self.backends.ws.max_subscriptions;
        if self.subscriptions.len() + starting >= max {
            return Err(RpcError::new(
                LIMIT_EXCEEDED,
                format!(
                    "too many subscriptions on this connection (limit {max}); unsubscribe some"
                ),
            ));
        }
        let name: String = param(&call.params, 0)?;
        let kind = match name.as_str() {
            "newHeads" => Kind::NewHeads,
            "logs" => {
                let filter: Filter = optional_param(&call.params, 1)?.unwrap_or_default();
                crate::filters::check_criteria(&filter)?;
                if filter.get_block_hash().is_some() {
                    return Err(RpcError::invalid_params(
                        "a logs subscription cannot name a blockHash",
                    ));
                }
                let pending = [
                    filter.block_option.get_from_block(),
                    filter.block_option.get_to_block(),
                ]
                .contains(&Some(&BlockNumberOrTag::Pending));
                Kind::Logs {
                    filter: Box::new(filter),
                    pending,
                }
            }
            "newPendingTransactions" => Kind::PendingTransactions {
                full: optional_param(&call.params, 1)?.unwrap_or(false),
            },
            "miniBlocks" => Kind::MiniBlocks,
            "stateChanges" => {
                let addresses: Vec<Address> = param(&call.params, 1)?;
                if addresses.is_empty() {
                    return Err(RpcError::invalid_params(
                        "stateChanges needs a list of at least one address",
                    ));
                }
                Kind::StateChanges(addresses.into_iter().collect())
            }
            other => {
                return Err(RpcError::invalid_params(format!(
                    "unknown subscription {other:?}; supported: newHeads, logs, newPendingTransactions, miniBlocks, stateChanges"
                )));
            }
        };
        let mut rng = UnwrapErr(SysRng);
        let id = U128::from((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()));
        Ok(Start {
            id,
            kind,
            events: self.backends.feed.subscribe(),
        })
    }

    fn unsubscribe(&mut self, call: &Call, starts: &mut Vec<Start>) -> Result<Value, RpcError> {
        let id: U128 = param(&call.params, 0)?;
        if let Some(task) = self.subscriptions.remove(&id) {
            task.abort();
            return Ok(json!(true));
        }
        let before = starts.len();
        starts.retain(|s| s.id != id);
        Ok(json!(starts.len() != before))
    }

    /// Runs a subscription: feed events in, notifications out, until the connection ends or
    /// the client falls behind.
    fn start(&mut self, start: Start) {
        let Start {
            id,
            kind,
            mut events,
        } = start;
        let out = self.out.clone();
        let close = self.close.clone();
        let queue = self.backends.ws.queue;
        let task = tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        metrics::counter!("verity_gateway_ws_slow_consumers_total").increment(1);
                        let _ = close.send(Outbound::Close(
                            CLOSE_POLICY,
                            format!("subscription {id:#x} fell {missed} chain events behind: client too slow"),
                        ));
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for result in notifications(&kind, &event) {
                    let text = json!({
                        "jsonrpc": "2.0",
                        "method": "eth_subscription",
                        "params": {"subscription": id, "result": result},
                    })
                    .to_string();
                    // A burst may fill the queue while the client reads; one that does not
                    // drain it within the grace period is too slow.
                    match tokio::time::timeout(SLOW_CLIENT_GRACE, out.send(text)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            metrics::counter!("verity_gateway_ws_slow_consumers_total")
                                .increment(1);
                            let _ = close.send(Outbound::Close(
                                CLOSE_POLICY,
                                format!(
                                    "client too slow: {queue} messages queued and unread for {} ms",
                                    SLOW_CLIENT_GRACE.as_millis()
                                ),
                            ));
                            return;
                        }
                    }
                }
            }
        });
        self.subscriptions.insert(id, task);
    }
}

/// The notifications one feed event gives a subscription (none, one, or one per log).
fn notifications(kind: &Kind, event: &FeedEvent) -> Vec<Value> {
    match (kind, event) {
        (Kind::NewHeads, FeedEvent::Block { block, .. }) => vec![new_head(block)],
        (
            Kind::Logs {
                filter,
                pending: false,
            },
            FeedEvent::Block { block, receipts },
        ) => block_logs(filter, block, receipts),
        (
            Kind::Logs {
                filter,
                pending: true,
            },
            FeedEvent::MiniBlock {
                mini,
                first_tx_index,
                first_log_index,
            },
        ) => mini_block_logs(filter, mini, *first_tx_index, *first_log_index),
        (Kind::PendingTransactions { full }, FeedEvent::MiniBlock { mini, .. }) => mini
            .transactions
            .iter()
            .map(|tx| {
                if *full {
                    serde_json::to_value(crate::eth::pending_rpc_transaction(tx))
                        .unwrap_or(Value::Null)
                } else {
                    json!(tx.tx_hash())
                }
            })
            .collect(),
        (
            Kind::MiniBlocks,
            FeedEvent::MiniBlock {
                mini,
                first_tx_index,
                first_log_index,
            },
        ) => vec![mini_block(mini, *first_tx_index, *first_log_index)],
        (Kind::StateChanges(addresses), FeedEvent::MiniBlock { mini, .. }) => {
            state_changes(addresses, mini)
        }
        _ => Vec::new(),
    }
}

fn new_head(block: &Block) -> Value {
    let mut head = serde_json::to_value(crate::eth::rpc_header(block)).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut head {
        fields.insert(
            "miniBlockCount".into(),
            json!(U64::from(block.mini_block_count)),
        );
        fields.insert(
            "firstMiniBlock".into(),
            json!(U64::from(block.first_mini_block)),
        );
    }
    head
}

fn block_logs(filter: &Filter, block: &Block, receipts: &[Receipt]) -> Vec<Value> {
    let mut logs = Vec::new();
    let mut log_index = 0u64;
    for (tx_index, receipt) in receipts.iter().enumerate() {
        for log in &receipt.logs {
            if filter.matches(log) && filter.matches_block_range(block.number()) {
                logs.push(json!(RpcLog {
                    inner: log.clone(),
                    block_hash: Some(block.hash),
                    block_number: Some(block.number()),
                    block_timestamp: Some(block.header.timestamp),
                    transaction_hash: Some(receipt.tx_hash),
                    transaction_index: Some(tx_index as u64),
                    log_index: Some(log_index),
                    removed: false,
                }));
            }
            log_index += 1;
        }
    }
    logs
}

/// A mini-block's logs: their block is not sealed, so they carry its number but no hash.
fn mini_block_logs(
    filter: &Filter,
    mini: &MiniBlock,
    first_tx_index: u64,
    first_log_index: u64,
) -> Vec<Value> {
    mini_block_rpc_logs(mini, first_tx_index, first_log_index)
        .into_iter()
        .filter(|log| filter.matches(&log.inner))
        .map(|log| json!(log))
        .collect()
}

fn mini_block_rpc_logs(mini: &MiniBlock, first_tx_index: u64, first_log_index: u64) -> Vec<RpcLog> {
    positioned(mini, first_tx_index, first_log_index)
        .flat_map(|(receipt, at)| {
            receipt.logs.iter().enumerate().map(move |(i, log)| RpcLog {
                inner: log.clone(),
                block_hash: None,
                block_number: Some(at.block_number),
                block_timestamp: Some(mini.block_timestamp),
                transaction_hash: Some(receipt.tx_hash),
                transaction_index: Some(at.transaction_index),
                log_index: Some(at.first_log_index + i as u64),
                removed: false,
            })
        })
        .collect()
}

/// A mini-block as the `miniBlocks` subscription sends it: its place, its transactions and
/// their receipts (without a block hash: the block is not sealed yet).
fn mini_block(mini: &MiniBlock, first_tx_index: u64, first_log_index: u64) -> Value {
    let receipts: Vec<Value> = positioned(mini, first_tx_index, first_log_index)
        .map(|(receipt, at)| json!(build_receipt(receipt, at)))
        .collect();
    let gas_used: u64 = mini.receipts.iter().map(|r| r.gas_used).sum();
    json!({
        "number": U64::from(mini.number),
        "hash": mini.hash,
        "parentHash": mini.parent_hash,
        "blockNumber": U64::from(mini.block_number),
        "index": U64::from(mini.index),
        "timestamp": U64::from(mini.timestamp_ms),
        "baseFeePerGas": U64::from(mini.base_fee),
        "gasUsed": U64::from(gas_used),
        "transactions": mini.transactions.iter().map(|tx| *tx.tx_hash()).collect::<Vec<_>>(),
        "receipts": receipts,
    })
}

/// What a mini-block changed of the watched accounts: the fields that changed (a field left out
/// did not change), and the slots written.
fn state_changes(addresses: &HashSet<Address>, mini: &MiniBlock) -> Vec<Value> {
    mini.diff
        .accounts
        .iter()
        .filter(|(address, _)| addresses.contains(*address))
        .map(|(address, change)| {
            let mut fields = serde_json::Map::new();
            fields.insert("address".into(), json!(address));
            fields.insert("miniBlock".into(), json!(U64::from(mini.number)));
            fields.insert("blockNumber".into(), json!(U64::from(mini.block_number)));
            if let Some(nonce) = change.nonce {
                fields.insert("nonce".into(), json!(U64::from(nonce)));
            }
            if let Some(balance) = change.balance {
                fields.insert("balance".into(), json!(balance));
            }
            if let Some(code) = &change.code {
                fields.insert("code".into(), json!(code));
            }
            if change.destroyed {
                fields.insert("destroyed".into(), json!(true));
            }
            let storage: serde_json::Map<String, Value> = change
                .storage
                .iter()
                .map(|(slot, value)| {
                    (
                        format!("{:#066x}", slot),
                        json!(alloy_primitives::B256::from(*value)),
                    )
                })
                .collect();
            fields.insert("storage".into(), Value::Object(storage));
            Value::Object(fields)
        })
        .collect()
}
