//! Taking over: catching up with the stream and placing the handover of a new epoch.

use super::*;

impl Node {
    /// Catches up with the stream and, for a new epoch, places the handover.
    pub(super) async fn take_over(&self, cursor: &mut Cursor) -> Result<(), TakeoverError> {
        for _ in 0..HANDOVER_ATTEMPTS {
            let stream_last = self.catch_up(cursor).await.map_err(|error| {
                if matches!(
                    error.downcast_ref::<ChainError>(),
                    Some(ChainError::Diverged { .. })
                ) {
                    TakeoverError::Refused(error)
                } else {
                    TakeoverError::Retry(error)
                }
            })?;
            // What the stream holds may have changed what this node may do.
            let authority = self.authority(cursor).ok_or_else(|| {
                TakeoverError::Retry(anyhow::anyhow!(
                    "the epoch in force is no longer this node's to take"
                ))
            })?;
            let appointment = match &authority {
                Authority::Own => return Ok(()),
                Authority::Appointed(a) => a.clone(),
            };
            if cursor.last_seq > stream_last {
                return Err(TakeoverError::Refused(anyhow::anyhow!(
                    "the data directory holds events {}..={} that are not in the chain stream, \
                     under an epoch that is not this node's: move it away and start again",
                    stream_last + 1,
                    cursor.last_seq
                )));
            }
            let handover = Handover::new(
                appointment,
                cursor.head.number() + 1,
                cursor.head.hash,
                &self.key,
            );
            if let Err(reason) = self.rules.check_handover(
                &cursor.epoch,
                &handover,
                cursor.head.number() + 1,
                cursor.head.hash,
            ) {
                return Err(TakeoverError::Refused(anyhow::anyhow!(
                    "appointment of epoch {} refused: {reason}",
                    handover.epoch()
                )));
            }
            let wire = v1::ChainEvent {
                seq: cursor.last_seq + 1,
                event: Some(v1::chain_event::Event::Handover((&handover).into())),
                trace_context: Default::default(),
            };
            let hash = handover.hash.to_vec();
            let published = async {
                let ack = verity_bus::publish_event(&self.js, &wire, &hash, 0, Default::default())
                    .await?;
                verity_bus::await_ack(ack, wire.seq).await
            }
            .await;
            match published {
                Ok(_) => {
                    let (db, rules) = (self.db.clone(), self.rules.clone());
                    let mut applied = cursor.clone();
                    let result = blocking(move || {
                        follow::apply(&db, &rules, &mut applied, &wire).map(|()| applied)
                    })
                    .await
                    .map_err(TakeoverError::Retry)?;
                    *cursor = result.map_err(|e| TakeoverError::Refused(e.into()))?;
                    self.head.send_replace(head_of(cursor, &self.spec));
                    tracing::info!(
                        seq = cursor.last_seq,
                        epoch = handover.epoch(),
                        block = handover.block_number,
                        "handover published: this node is the sequencer"
                    );
                    return Ok(());
                }
                Err(BusError::WrongLastSequence { .. }) => {
                    tracing::info!(
                        seq = wire.seq,
                        "the stream moved on before the handover; catching up and retrying"
                    );
                }
                Err(error) => return Err(TakeoverError::Retry(error.into())),
            }
        }
        Err(TakeoverError::Retry(anyhow::anyhow!(
            "the stream kept moving: no handover placed after {HANDOVER_ATTEMPTS} attempts"
        )))
    }

    /// Applies every event the stream holds beyond the cursor; returns the stream's last
    /// sequence.
    pub(super) async fn catch_up(&self, cursor: &mut Cursor) -> anyhow::Result<u64> {
        let mut stream = self.stream.clone();
        let last = verity_bus::last_chain_seq(&mut stream).await?;
        if cursor.last_seq < last {
            // Read with a consumer and applied in batches (one fsync each): a cold node
            // rebuilds at the stream's pace, not one round trip and one fsync per event.
            let consumer =
                verity_bus::ordered_chain_consumer(&self.stream, cursor.last_seq + 1).await?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("read the chain stream: {e}"))?;
            while cursor.last_seq < last {
                let first = tokio::time::timeout(Duration::from_secs(5), messages.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("the chain stream stalled during catch-up"))?;
                let mut batch = vec![decode(first)?];
                while batch.len() < APPLY_BATCH && batch.last().is_some_and(|w| w.seq < last) {
                    match messages.next().now_or_never() {
                        Some(next) => batch.push(decode(next)?),
                        None => break,
                    }
                }
                let (db, rules) = (self.db.clone(), self.rules.clone());
                let mut next = cursor.clone();
                *cursor = blocking(move || {
                    follow::apply_batch(&db, &rules, &mut next, &batch).map(|()| next)
                })
                .await??;
            }
        }
        if last > 0 && cursor.last_seq > last {
            // Our own events beyond the stream's end: the stream's last must be ours too.
            let theirs = verity_bus::chain_event_at(&self.stream, last).await?;
            let (db, rules) = (self.db.clone(), self.rules.clone());
            let mut probe = cursor.clone();
            blocking(move || follow::apply(&db, &rules, &mut probe, &theirs)).await??;
        }
        self.head.send_replace(head_of(cursor, &self.spec));
        Ok(last)
    }
}

/// Why a takeover did not complete.
pub(super) enum TakeoverError {
    /// Not now (the stream or NATS moved); stand by again.
    Retry(anyhow::Error),
    /// Never: the appointment does not fit the chain, or the data directory diverged.
    Refused(anyhow::Error),
}
