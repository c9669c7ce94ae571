//! The chain feed: this gateway's own ordered JetStream consumer of the chain stream, decoded
//! once, handed to the pending-transaction filters and realtime waiters, and fanned out to every
//! WebSocket subscription. Nothing
//! is polled: a mini-block reaches subscribers as soon as NATS delivers it.
//!
//! Every mini-block and block must be signed by the sequencer appointed for its position (the
//! epoch the gateway's replica reports, which follows the handovers in the stream), checked by
//! the same code every follower checks it with ([`verity_chain::check_signer`]); anything else is
//! dropped and counted (`verity_gateway_feed_refused_total`). While the replica cannot say which
//! epoch is in force, nothing is let through: the check fails closed.
//!
//! The consumer is ephemeral and starts at new messages: subscriptions are live, not a replay.
//! When NATS goes away the feed reconnects and carries on from new messages again (subscribers
//! miss what was published meanwhile, as with a node's own subscription after a restart).

use std::{sync::Arc, time::Duration};

use alloy_primitives::B256;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt as _;
use tokio::sync::broadcast;
use verity_chain::ChainError;
use verity_primitives::{Block, ChainEvent, ChainEventKind, MiniBlock, Receipt, governance::Epoch};
use verity_proto::v1;
use verity_server::CancellationToken;

use crate::Backends;

/// One event as subscribers see it.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// A mini-block, with the position of its first transaction and first log in its block.
    MiniBlock {
        /// The mini-block.
        mini: Arc<MiniBlock>,
        /// Index in its EVM block of its first transaction.
        first_tx_index: u64,
        /// Index in its EVM block of its first log.
        first_log_index: u64,
    },
    /// A sealed block with every receipt of it, in order.
    Block {
        /// The block.
        block: Arc<Block>,
        /// Its receipts.
        receipts: Arc<Vec<Receipt>>,
    },
}

/// The sending side of the feed; subscribers call [`Feed::subscribe`].
#[derive(Debug, Clone)]
pub struct Feed {
    sender: broadcast::Sender<FeedEvent>,
    following: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Feed {
    /// A feed that buffers up to `capacity` events for its slowest subscriber.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender,
            following: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Waits until the feed follows the chain stream (its consumer exists, so every event
    /// published from then on reaches subscribers), at most `timeout`; false if it does not.
    pub async fn wait_following(&self, timeout: Duration) -> bool {
        let mut following = self.following.subscribe();
        tokio::time::timeout(timeout, following.wait_for(|f| *f))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn set_following(&self, following: bool) {
        self.following.send_replace(following);
    }

    /// Receives every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.sender.subscribe()
    }

    /// Hands `event` to every subscriber (the feed task does; tests may too).
    pub fn publish(&self, event: FeedEvent) {
        // No subscriber is not an error.
        let _ = self.sender.send(event);
    }
}

/// The open block's receipts gathered from its mini-blocks.
#[derive(Debug, Default)]
struct OpenBlock {
    number: u64,
    receipts: Vec<Receipt>,
    logs: u64,
    /// False when the feed joined in the middle of this block.
    complete: bool,
}

/// Follows the chain stream on the NATS `nats` names until `stop` is cancelled, reconnecting
/// after failures.
pub async fn run(
    nats: verity_bus::NatsArgs,
    feed: Feed,
    backends: Backends,
    stop: CancellationToken,
) {
    let nats_url = nats.url.clone();
    let mut open = OpenBlock::default();
    loop {
        let result = tokio::select! {
            result = follow(&nats, &feed, &backends, &mut open) => result,
            _ = stop.cancelled() => return,
        };
        feed.set_following(false);
        if let Err(error) = result {
            tracing::warn!(%error, url = %nats_url, "chain feed interrupted; reconnecting");
            metrics::counter!("verity_gateway_feed_reconnects_total").increment(1);
        }
        open = OpenBlock::default();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn follow(
    nats: &verity_bus::NatsArgs,
    feed: &Feed,
    backends: &Backends,
    open: &mut OpenBlock,
) -> anyhow::Result<()> {
    let (_client, js) = nats.connect("verity-gateway").await?;
    let stream = js
        .get_stream(verity_bus::CHAIN_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("chain stream {}: {e}", verity_bus::CHAIN_STREAM))?;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create the feed consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("read the chain stream: {e}"))?;
    tracing::info!("chain feed following {}", verity_bus::CHAIN_STREAM);
    let mut replica = ReplicaView::start(backends).await;
    feed.set_following(true);
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("chain stream: {e}"))?;
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let event = verity_bus::decode_event(seq, &message.payload)
            .map_err(anyhow::Error::from)
            .and_then(|wire| ChainEvent::try_from(&wire).map_err(anyhow::Error::from));
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::error!(seq, %error, "undecodable chain event skipped by the feed");
                continue;
            }
        };
        if let Err(error) = replica.check_signer(backends, &event).await {
            tracing::error!(seq, %error, "chain event refused by the feed");
            metrics::counter!("verity_gateway_feed_refused_total").increment(1);
            continue;
        }
        // Subscribers read through the replica next (viem fetches the block a newHeads names;
        // a realtime receipt is followed by balance reads): announce nothing it has not applied.
        let produced_ms = match &event.kind {
            ChainEventKind::MiniBlock(mini) => Some(mini.timestamp_ms),
            ChainEventKind::Block(_) | ChainEventKind::Handover(_) => None,
        };
        if let Some(ms) = produced_ms {
            metrics::histogram!("verity_gateway_feed_mini_block_age_seconds")
                .record(verity_telemetry::age_seconds(ms));
        }
        replica.wait_applied(backends, event.seq).await;
        if let Some(ms) = produced_ms {
            metrics::histogram!("verity_gateway_announce_mini_block_age_seconds")
                .record(verity_telemetry::age_seconds(ms));
        }
        match event.kind {
            ChainEventKind::MiniBlock(mini) => {
                if mini.block_number != open.number {
                    *open = OpenBlock {
                        number: mini.block_number,
                        complete: mini.index == 0,
                        ..Default::default()
                    };
                }
                let first_tx_index = open.receipts.len() as u64;
                let first_log_index = open.logs;
                open.logs += mini
                    .receipts
                    .iter()
                    .map(|r| r.logs.len() as u64)
                    .sum::<u64>();
                open.receipts.extend(mini.receipts.iter().cloned());
                let event = FeedEvent::MiniBlock {
                    mini: Arc::from(mini),
                    first_tx_index,
                    first_log_index,
                };
                // The gateway's own consumers take it here, in order and without a queue that
                // could lag; subscriptions through the broadcast.
                if let FeedEvent::MiniBlock { mini, .. } = &event {
                    backends.filters.on_pending(&transaction_hashes(mini));
                }
                backends.waiters.deliver(&event);
                feed.publish(event);
            }
            ChainEventKind::Block(block) => {
                let receipts = if open.number == block.number()
                    && open.complete
                    && open.receipts.len() == block.transaction_hashes.len()
                {
                    std::mem::take(&mut open.receipts)
                } else {
                    // Joined mid-block: the replica has the rest (or soon will).
                    block_receipts(backends, &block).await
                };
                *open = OpenBlock {
                    number: block.number() + 1,
                    complete: true,
                    ..Default::default()
                };
                feed.publish(FeedEvent::Block {
                    block: Arc::from(block),
                    receipts: Arc::new(receipts),
                });
            }
            // A new sequencer from here on: subscribers see only its mini-blocks and blocks.
            ChainEventKind::Handover(handover) => {
                tracing::info!(
                    seq = event.seq,
                    epoch = handover.epoch(),
                    sequencer = %handover.sequencer(),
                    "sequencer handover"
                );
            }
        }
    }
    anyhow::bail!("the chain stream ended")
}

/// What the feed asks of the replica it announces through.
trait ReplicaHead {
    /// The replica's head (how far it applied the chain, the epoch in force there); `None` when
    /// it cannot be reached.
    async fn replica_head(&self) -> Option<v1::ReplicaHead>;

    /// The last event the replica applied, pushed by it as it advances (`WatchApplied`);
    /// `None` to poll `replica_head` instead.
    fn applied_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

impl ReplicaHead for Backends {
    async fn replica_head(&self) -> Option<v1::ReplicaHead> {
        self.head().await.ok()
    }

    fn applied_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let (sender, receiver) = tokio::sync::watch::channel(0);
        tokio::spawn(watch_applied(self.clone(), sender));
        Some(receiver)
    }
}

/// Follows the replica's `WatchApplied` into `sender` while anyone watches, reconnecting after
/// errors. A replica without it (an older release) closes the watch: the feed polls instead.
async fn watch_applied(backends: Backends, sender: tokio::sync::watch::Sender<u64>) {
    while !sender.is_closed() {
        match backends
            .replica()
            .watch_applied(v1::GetHeadRequest {})
            .await
        {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    tokio::select! {
                        next = stream.next() => match next {
                            Some(Ok(applied)) => {
                                sender.send_if_modified(|last| {
                                    let moved = applied.last_seq > *last;
                                    *last = (*last).max(applied.last_seq);
                                    moved
                                });
                            }
                            _ => break,
                        },
                        () = sender.closed() => return,
                    }
                }
            }
            // A replica of an older release, or one whose policy does not let this gateway
            // watch: poll.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unimplemented
                        | tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                ) =>
            {
                tracing::info!(%status, "the replica does not push its head; polling it");
                return;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = sender.closed() => return,
        }
    }
}

/// The replica as the feed last saw it: the epoch in force there (`None`: unknown) and the last
/// event it applied.
#[derive(Debug)]
struct ReplicaView {
    epoch: Option<Epoch>,
    applied: u64,
    /// Pushed by the replica; `None` (or closed): poll its head.
    watch: Option<tokio::sync::watch::Receiver<u64>>,
}

impl ReplicaView {
    /// The replica as it is when the feed starts (the epoch stays unknown if it cannot say).
    async fn start(replica: &impl ReplicaHead) -> Self {
        Self {
            epoch: replica_epoch(replica).await,
            applied: 0,
            watch: replica.applied_watch(),
        }
    }

    /// Checks that the key appointed for `event`'s position signed it. The epoch comes from the
    /// replica (which checks each handover against genesis's governance): looked up again after
    /// a handover, when an event does not verify (the replica may have been behind), and while
    /// it is unknown. Still unknown, the event is refused.
    async fn check_signer(
        &mut self,
        replica: &impl ReplicaHead,
        event: &ChainEvent,
    ) -> Result<(), ChainError> {
        let handover = matches!(event.kind, ChainEventKind::Handover(_));
        if !handover && verity_chain::check_signer(event, self.epoch.as_ref()).is_ok() {
            return Ok(());
        }
        self.wait_applied(replica, event.seq).await;
        self.epoch = replica_epoch(replica).await;
        verity_chain::check_signer(event, self.epoch.as_ref())
    }

    /// Waits until the replica has applied chain event `seq` (at most two seconds, then carries
    /// on with a warning).
    async fn wait_applied(&mut self, replica: &impl ReplicaHead, seq: u64) {
        if self.applied >= seq {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        if let Some(watch) = self.watch.as_mut() {
            let waited =
                tokio::time::timeout_at(deadline, watch.wait_for(|applied| *applied >= seq))
                    .await
                    .map(|applied| applied.map(|a| *a));
            match waited {
                Ok(Ok(applied)) => {
                    self.applied = applied;
                    return;
                }
                // The replica does not push: poll below.
                Ok(Err(_closed)) => self.watch = None,
                Err(_elapsed) => {
                    self.applied = *watch.borrow();
                    lags(seq, self.applied);
                    return;
                }
            }
        }
        loop {
            if let Some(head) = replica.replica_head().await {
                self.applied = head.last_seq;
                if self.applied >= seq {
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                lags(seq, self.applied);
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Says that the replica had applied only up to `applied` when event `seq` was announced.
fn lags(seq: u64, applied: u64) {
    tracing::warn!(
        seq,
        applied,
        "the replica lags the chain stream: subscribers get this event before it can be read back"
    );
    metrics::counter!("verity_gateway_feed_ahead_of_replica_total").increment(1);
}

/// The epoch in force as the replica reports it (`None`: unknown).
async fn replica_epoch(replica: &impl ReplicaHead) -> Option<Epoch> {
    let head = replica.replica_head().await?;
    let sequencer = alloy_primitives::Address::try_from(head.epoch_sequencer.as_slice()).ok()?;
    Some(Epoch {
        number: head.epoch,
        sequencer,
    })
}

/// The receipts of `block` from the replica, waiting up to two seconds for it to apply the block;
/// empty (logged) when it does not.
async fn block_receipts(backends: &Backends, block: &Block) -> Vec<Receipt> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let response = backends
            .replica()
            .get_block_receipts(v1::BlockRequest {
                block: Some(v1::BlockId {
                    id: Some(v1::block_id::Id::Hash(block.hash.to_vec())),
                }),
            })
            .await;
        if let Ok(response) = response {
            let response = response.into_inner();
            if response.found {
                let receipts: Result<Vec<Receipt>, _> = response
                    .receipts
                    .iter()
                    .filter_map(|entry| entry.receipt.as_ref())
                    .map(Receipt::try_from)
                    .collect();
                match receipts {
                    Ok(receipts) => return receipts,
                    Err(error) => {
                        tracing::error!(%error, "undecodable receipt from the replica");
                        return Vec::new();
                    }
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                block = block.number(),
                "the replica does not have the block yet: its logs are not sent to subscribers"
            );
            return Vec::new();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A mini-block's receipts, each with where it sits in the block being built (no block hash
/// yet), given the index of the mini-block's first transaction and first log in that block.
pub fn positioned(
    mini: &MiniBlock,
    first_tx_index: u64,
    first_log_index: u64,
) -> impl Iterator<Item = (&Receipt, crate::eth::Position)> {
    let mut log_index = first_log_index;
    mini.receipts.iter().enumerate().map(move |(i, receipt)| {
        let at = crate::eth::Position {
            block_hash: None,
            block_number: mini.block_number,
            transaction_index: first_tx_index + i as u64,
            first_log_index: log_index,
        };
        log_index += receipt.logs.len() as u64;
        (receipt, at)
    })
}

/// The hashes of a mini-block's transactions.
pub fn transaction_hashes(mini: &MiniBlock) -> Vec<B256> {
    mini.transactions.iter().map(|tx| *tx.tx_hash()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use verity_primitives::{ChainSpec, SigningKey};
    use verity_testkit::chain::ChainBuilder;

    use super::*;

    /// A replica that cannot be reached for its first `unreachable` calls, then reports `head`.
    struct Scripted {
        unreachable: usize,
        calls: AtomicUsize,
        head: v1::ReplicaHead,
    }

    impl ReplicaHead for Scripted {
        async fn replica_head(&self) -> Option<v1::ReplicaHead> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            (call >= self.unreachable).then(|| self.head.clone())
        }
    }

    /// Mini-blocks 0 and 1 (events 1 and 2): the first signed by a stranger, the second by
    /// `appointed`, the key of epoch 0.
    fn events(appointed: &SigningKey) -> (ChainEvent, ChainEvent) {
        let mut chain = ChainBuilder::new(ChainSpec::dev(31337, 1, 1).unwrap().genesis_block());
        let forged = ChainEvent {
            seq: chain.next_seq(),
            kind: ChainEventKind::MiniBlock(Box::new(chain.mini_block(&SigningKey::random()))),
        };
        chain.push_mini_block(appointed);
        let honest = ChainEvent {
            seq: chain.next_seq(),
            kind: ChainEventKind::MiniBlock(Box::new(chain.mini_block(appointed))),
        };
        (forged, honest)
    }

    fn replica(unreachable: usize, appointed: &SigningKey) -> Scripted {
        Scripted {
            unreachable,
            calls: AtomicUsize::new(0),
            head: v1::ReplicaHead {
                last_seq: 2,
                epoch: 0,
                epoch_sequencer: appointed.address().to_vec(),
                ..Default::default()
            },
        }
    }

    /// The replica could not be reached when the feed started, so the epoch is unknown: an event
    /// the appointed key did not sign is not let through; the epoch is looked up again and the
    /// appointed key's events pass.
    #[tokio::test]
    async fn with_an_unknown_epoch_at_start_a_forged_event_is_refused() {
        let appointed = SigningKey::random();
        let (forged, honest) = events(&appointed);
        let replica = replica(1, &appointed);
        let mut view = ReplicaView::start(&replica).await;
        assert_eq!(view.epoch, None);
        let refused = view.check_signer(&replica, &forged).await.unwrap_err();
        assert!(
            matches!(refused, ChainError::Invalid { seq: 1, .. }),
            "{refused}"
        );
        assert_eq!(view.epoch.map(|e| e.sequencer), Some(appointed.address()));
        view.check_signer(&replica, &honest).await.unwrap();
    }

    /// While the replica cannot say which epoch is in force, nothing is let through, not even
    /// the appointed key's events.
    #[tokio::test]
    async fn while_the_epoch_stays_unknown_nothing_is_let_through() {
        let appointed = SigningKey::random();
        let (forged, honest) = events(&appointed);
        let replica = replica(usize::MAX, &appointed);
        let mut view = ReplicaView::start(&replica).await;
        for event in [&forged, &honest] {
            let refused = view.check_signer(&replica, event).await.unwrap_err();
            assert!(
                matches!(refused, ChainError::UnknownEpoch { .. }),
                "{refused}"
            );
        }
    }

    /// A replica that pushes the event it applied: the feed waits on the push, not on polls.
    struct Pushing {
        applied: tokio::sync::watch::Receiver<u64>,
        polls: AtomicUsize,
    }

    impl ReplicaHead for Pushing {
        async fn replica_head(&self) -> Option<v1::ReplicaHead> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            None
        }

        fn applied_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
            Some(self.applied.clone())
        }
    }

    /// An event is announced only once the replica has pushed that it applied it, and the
    /// feed never polls the replica's head while the push arrives.
    #[tokio::test(start_paused = true)]
    async fn the_feed_waits_for_the_replicas_push_before_announcing() {
        let (applied, receiver) = tokio::sync::watch::channel(1);
        let replica = Pushing {
            applied: receiver,
            polls: AtomicUsize::new(0),
        };
        let mut view = ReplicaView {
            epoch: None,
            applied: 0,
            watch: replica.applied_watch(),
        };
        let waiting = tokio::spawn(async move {
            view.wait_applied(&replica, 3).await;
            (view.applied, replica.polls.load(Ordering::SeqCst))
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "announced before the replica applied it"
        );
        applied.send(2).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "announced before the replica applied it"
        );
        applied.send(3).unwrap();
        let (seen, polls) = waiting.await.unwrap();
        assert_eq!(seen, 3);
        assert_eq!(polls, 0, "polled the replica although it pushes");
    }
}
