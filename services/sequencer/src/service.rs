//! The sequencer's gRPC API.
//!
//! Errors are mapped to statuses here, at the edge: admission failures carry geth's message so
//! ingress and the gateway can hand them to clients unchanged.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use verity_primitives::Transaction;
use verity_proto::{
    address_from, u256_bytes,
    v1::{self, TxRejection},
};

use crate::{SharedState, mempool::Admission};

/// How long an admission waits for a node that is taking over to become active.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Forwarded batches of fewer transactions are checked on the calling task; larger ones on
/// every core.
const PARALLEL_RECOVERY_MIN: usize = 8;

/// Events read from storage per batch when a subscriber catches up.
const BACKFILL_BATCH: usize = 256;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SequencerService {
    shared: Arc<SharedState>,
}

impl SequencerService {
    /// Serves `shared`.
    pub fn new(shared: Arc<SharedState>) -> Self {
        Self { shared }
    }
}

/// The typed reason of a mempool refusal.
pub fn admission_rejection(error: &Admission) -> TxRejection {
    match error {
        Admission::AlreadyKnown => TxRejection::AlreadyKnown,
        Admission::PoolFull | Admission::AtCapacity { .. } | Admission::AccountLimit { .. } => {
            TxRejection::PoolFull
        }
        Admission::Underpriced => TxRejection::Underpriced,
        Admission::NonceTooLow { .. } => TxRejection::NonceTooLow,
        Admission::NonceTooHigh { .. } => TxRejection::NonceTooHigh,
        Admission::ReplacementUnderpriced => TxRejection::ReplacementUnderpriced,
        Admission::InsufficientFunds { .. } => TxRejection::InsufficientFunds,
    }
}

/// The forwarded transaction, decoded, with its sender recovered from its signature: the
/// sequencer executes as that account, so it takes the sender from nobody (anyone who reaches
/// its `Forward` stream could claim another, and a forged sender in a mini-block is fraud that
/// halts `safe`). This is the one recovery a transaction costs on its way in (~40 us,
/// `cargo bench -p verity-chunk --bench check_cost`): ingress forwards the sender only to a
/// sequencer of the previous release, and a sender it names must be the one recovered.
/// `check` is false only for the end-to-end tests' forger, which takes a named sender as is.
fn decode(request: &v1::ForwardRequest, check: bool) -> Result<Transaction, (TxRejection, String)> {
    use alloy_consensus::transaction::SignerRecoverable as _;
    let invalid = |e: verity_proto::ConversionError| (TxRejection::Invalid, e.to_string());
    let wire = request
        .transaction
        .as_ref()
        .ok_or((TxRejection::Invalid, "missing transaction".to_string()))?;
    let envelope = verity_proto::envelope_from(wire).map_err(invalid)?;
    let named = if wire.sender.is_empty() {
        None
    } else {
        Some(verity_proto::address_from(&wire.sender, "transaction.sender").map_err(invalid)?)
    };
    if let Some(named) = named
        && !check
    {
        return Ok(Transaction::new_unchecked(envelope, named));
    }
    let signer = envelope
        .recover_signer()
        .map_err(|_| (TxRejection::Invalid, "invalid sender".to_owned()))?;
    if let Some(named) = named
        && named != signer
    {
        return Err((
            TxRejection::Invalid,
            format!(
                "invalid sender: the signature recovers to {signer}, not to the forwarded sender {named}"
            ),
        ));
    }
    Ok(Transaction::new_unchecked(envelope, signer))
}

/// Refuses everything while this node cannot admit: its storage is full, or it is a standby
/// (a node taking over answers once it is active).
async fn ready_to_admit(shared: &Arc<SharedState>) -> Result<(), (TxRejection, String)> {
    if let Some(reason) = shared.storage_full() {
        return Err((
            TxRejection::Unavailable,
            format!("the sequencer stopped producing: {reason}"),
        ));
    }
    // A node taking over answers once it is active (catching up and the handover take
    // milliseconds); a standby, after a while, with a retryable error.
    if !shared.is_active() && !shared.wait_active(TAKEOVER_WAIT).await {
        return Err((
            TxRejection::Unavailable,
            "this sequencer is a standby and takes no transactions; retry (ingress follows the active sequencer)".to_string(),
        ));
    }
    Ok(())
}

/// Whether forwarded senders are checked (always, but for the end-to-end tests' forger).
fn checks_senders(shared: &SharedState) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        !shared
            .trust_forwarded_senders
            .load(std::sync::atomic::Ordering::SeqCst)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = shared;
        true
    }
}

/// Admits one transaction into the mempool, checking it against the committed state.
async fn admit(
    shared: &Arc<SharedState>,
    request: v1::ForwardRequest,
) -> Result<(), (TxRejection, String)> {
    ready_to_admit(shared).await?;
    // Shedding comes first: a sequencer at capacity refuses before it spends a signature
    // recovery, so refusing costs it next to nothing.
    shared
        .lock_mempool()
        .check_capacity()
        .map_err(|e| (admission_rejection(&e), e.to_string()))?;
    let tx = decode(&request, checks_senders(shared))?;
    insert(shared, tx, &request.trace_context)
}

/// Inserts a decoded, sender-checked transaction into the mempool against the sender's state.
fn insert(
    shared: &Arc<SharedState>,
    tx: Transaction,
    trace_context: &std::collections::HashMap<String, String>,
) -> Result<(), (TxRejection, String)> {
    let span = tracing::info_span!("sequencer.admit", tx_hash = %tx.tx_hash());
    verity_telemetry::link_map_parent(trace_context, &span);
    let _entered = span.enter();
    let (account, nonce) = shared
        .account_with_next_nonce(tx.signer())
        .map_err(|e| (TxRejection::Internal, format!("storage: {e}")))?;
    let hash = *tx.tx_hash();
    shared
        .lock_mempool()
        .insert(tx, nonce, account.balance)
        .map_err(|e| (admission_rejection(&e), e.to_string()))?;
    shared.remember_trace(hash, verity_telemetry::inject_map());
    tracing::debug!("admitted");
    Ok(())
}

/// Admits a forwarded batch, in order, each entry answered on its own. The senders are
/// recovered on every core at once (the batch's largest cost); capacity is checked before each
/// entry, so a batch that fills the mempool has its tail refused as "txpool is full".
pub async fn admit_batch(
    shared: &Arc<SharedState>,
    entries: Vec<v1::ForwardRequest>,
) -> Vec<v1::ForwardResponse> {
    if let Err(refused) = ready_to_admit(shared).await {
        return entries
            .iter()
            .map(|entry| response(entry.id, Err(refused.clone())))
            .collect();
    }
    let check = checks_senders(shared);
    let checked = move |entry: v1::ForwardRequest| {
        let tx = decode(&entry, check);
        (entry, tx)
    };
    // A few are recovered here; more, on every core (a thread hop costs more than a few
    // recoveries).
    let decoded: Vec<_> = if entries.len() < PARALLEL_RECOVERY_MIN {
        entries.into_iter().map(checked).collect()
    } else {
        let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
        match tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            entries.into_par_iter().map(checked).collect::<Vec<_>>()
        })
        .await
        {
            Ok(decoded) => decoded,
            Err(_) => {
                let failed = (TxRejection::Internal, "sender recovery failed".to_owned());
                return ids
                    .into_iter()
                    .map(|id| response(id, Err(failed.clone())))
                    .collect();
            }
        }
    };
    decoded
        .into_iter()
        .map(|(entry, tx)| {
            // Its own statement: the mempool's lock is released before `insert` takes it.
            let capacity = shared.lock_mempool().check_capacity();
            let admitted = capacity
                .map_err(|e| (admission_rejection(&e), e.to_string()))
                .and(tx)
                .and_then(|tx| insert(shared, tx, &entry.trace_context));
            response(entry.id, admitted)
        })
        .collect()
}

/// The answer to the forwarded transaction `id`.
fn response(id: u64, admitted: Result<(), (TxRejection, String)>) -> v1::ForwardResponse {
    match admitted {
        Ok(()) => v1::ForwardResponse {
            id,
            ..Default::default()
        },
        Err((rejection, message)) => v1::ForwardResponse {
            id,
            error: message.clone(),
            code: verity_server::status::rejection_code(rejection) as i32,
            rejection: rejection as i32,
            message,
            batch: Vec::new(),
        },
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::ChainEvent, Status>> + Send>>;
type ForwardStream = Pin<Box<dyn Stream<Item = Result<v1::ForwardResponse, Status>> + Send>>;

#[tonic::async_trait]
impl v1::sequencer_server::Sequencer for SequencerService {
    type ForwardStream = ForwardStream;
    type StreamChainStream = EventStream;

    async fn forward(
        &self,
        request: Request<Streaming<v1::ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(1024);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(message) = incoming.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(status) => {
                        tracing::debug!(%status, "forward stream ended");
                        break;
                    }
                };
                let id = message.id;
                let started = std::time::Instant::now();
                let response = if message.batch.is_empty() {
                    let admitted = admit(&shared, message).await;
                    metrics::histogram!("verity_sequencer_admit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    response(id, admitted)
                } else {
                    let batch = admit_batch(&shared, message.batch).await;
                    // Per transaction, as for single ones.
                    let each = started.elapsed().as_secs_f64() / batch.len().max(1) as f64;
                    for _ in &batch {
                        metrics::histogram!("verity_sequencer_admit_seconds").record(each);
                    }
                    metrics::histogram!("verity_sequencer_forward_batch_size")
                        .record(batch.len() as f64);
                    v1::ForwardResponse {
                        id,
                        batch,
                        ..Default::default()
                    }
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stream_chain(
        &self,
        request: Request<v1::StreamChainRequest>,
    ) -> Result<Response<Self::StreamChainStream>, Status> {
        let from = request.into_inner().from_seq.max(1);
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::channel(BACKFILL_BATCH * 2);
        tokio::spawn(async move {
            if let Err(status) = stream_events(shared, from, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_account(
        &self,
        request: Request<v1::GetAccountRequest>,
    ) -> Result<Response<v1::AccountState>, Status> {
        let address = address_from(&request.into_inner().address, "address")?;
        let (account, nonce) = self
            .shared
            .account_with_next_nonce(address)
            .map_err(verity_server::status::storage)?;
        let pending_nonce = self.shared.lock_mempool().pending_nonce(address, nonce);
        Ok(Response::new(v1::AccountState {
            nonce: account.nonce,
            pending_nonce,
            balance: u256_bytes(account.balance),
        }))
    }

    async fn get_pool(
        &self,
        request: Request<v1::GetPoolRequest>,
    ) -> Result<Response<v1::PoolContent>, Status> {
        let request = request.into_inner();
        let sender = if request.sender.is_empty() {
            None
        } else {
            Some(address_from(&request.sender, "sender")?)
        };
        // Copies under the lock the producer takes every mini-block; encodes after it.
        let (txs, truncated, pending, queued) = {
            let mempool = self.shared.lock_mempool();
            let (txs, truncated) = mempool.content(sender, request.limit as usize);
            let txs: Vec<_> = txs.into_iter().map(|(tx, p)| (tx.clone(), p)).collect();
            let pending = mempool.pending() as u64;
            let queued = (mempool.len() as u64).saturating_sub(pending);
            (txs, truncated, pending, queued)
        };
        let transactions = txs
            .iter()
            .map(|(tx, pending)| v1::PoolTransaction {
                transaction: Some(v1::Transaction::from(tx)),
                pending: *pending,
            })
            .collect();
        Ok(Response::new(v1::PoolContent {
            pending,
            queued,
            transactions,
            truncated,
        }))
    }

    async fn get_head(
        &self,
        _request: Request<v1::GetHeadRequest>,
    ) -> Result<Response<v1::SequencerHead>, Status> {
        let head = *self.shared.head.borrow();
        Ok(Response::new(v1::SequencerHead {
            last_seq: head.last_seq,
            block_number: head.block_number,
            mini_block_number: head.next_mini_block,
            base_fee: u256_bytes(alloy_primitives::U256::from(head.base_fee)),
            chain_id: self.shared.spec.chain_id(),
            block_gas_limit: self.shared.spec.gas_limit(),
            not_ready: self.shared.storage_full().unwrap_or_default(),
            forward_batches: true,
            recovers_senders: true,
        }))
    }

    async fn get_state_digest(
        &self,
        _request: Request<v1::GetStateDigestRequest>,
    ) -> Result<Response<v1::StateDigest>, Status> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            // One snapshot: the state and the last event it includes.
            let read = shared.db.read().map_err(verity_server::status::storage)?;
            let digest = read
                .state_digest()
                .map_err(verity_server::status::storage)?;
            Ok(Response::new(v1::StateDigest {
                last_seq: read
                    .last_event_seq()
                    .map_err(verity_server::status::storage)?,
                digest: digest.digest.to_vec(),
                accounts: digest.accounts,
                slots: digest.slots,
                codes: digest.codes,
            }))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// Sends every event from `from` on: first from storage, then live; falls back to storage
/// whenever the subscriber lags behind the live buffer. Ends when the receiver goes away.
pub(crate) async fn stream_events(
    shared: Arc<SharedState>,
    mut next: u64,
    tx: &mpsc::Sender<Result<v1::ChainEvent, Status>>,
) -> Result<(), Status> {
    loop {
        // Subscribe before reading the head, so nothing committed after the read is missed.
        let mut live = shared.events.subscribe();
        let head = shared.head.borrow().last_seq;
        while next <= head {
            let db = shared.db.clone();
            let batch =
                tokio::task::spawn_blocking(move || db.read()?.events_from(next, BACKFILL_BATCH))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(verity_server::status::storage)?;
            if batch.is_empty() {
                break;
            }
            for event in batch {
                next = event.seq + 1;
                if tx.send(Ok(event)).await.is_err() {
                    return Ok(());
                }
            }
        }
        loop {
            match live.recv().await {
                Ok(event) if event.seq < next => continue,
                Ok(event) if event.seq == next => {
                    next += 1;
                    if tx.send(Ok((*event).clone())).await.is_err() {
                        return Ok(());
                    }
                }
                // A gap (the event was committed before we subscribed): read it from storage.
                Ok(_) | Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    }
}
