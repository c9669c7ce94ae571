//! What a standby does while it waits: follow the chain stream into its own database and watch
//! the appointments governance publishes for its key.

use super::*;

/// A message of an ordered chain consumer, decoded (an end or an error of the consumer is an
/// error: the caller resubscribes).
pub(super) fn decode(
    message: Option<
        Result<async_nats::jetstream::Message, async_nats::jetstream::consumer::pull::OrderedError>,
    >,
) -> anyhow::Result<v1::ChainEvent> {
    let message = message
        .ok_or_else(|| anyhow::anyhow!("the chain consumer ended"))?
        .map_err(|e| anyhow::anyhow!("chain consumer: {e}"))?;
    let seq = message
        .info()
        .map_err(|e| anyhow::anyhow!("message info: {e}"))?
        .stream_sequence;
    Ok(verity_bus::decode_event(seq, &message.payload)?)
}

/// Follows the chain stream from after `cursor` until `stop`; returns the cursor. Ends early
/// only on an event it must refuse or that diverges from the local chain.
pub(super) async fn follow_stream(
    db: Database,
    rules: Arc<Sequencing>,
    spec: Arc<ChainSpec>,
    mut cursor: Cursor,
    stream: Stream,
    head: Arc<watch::Sender<Head>>,
    stop: CancellationToken,
) -> anyhow::Result<Cursor> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    while !stop.is_cancelled() {
        // From the stream's end if that is below ours: events this node committed but never
        // published must match what the stream holds there, or it diverged.
        let stream_last = {
            let mut stream = stream.clone();
            verity_bus::last_chain_seq(&mut stream)
                .await
                .unwrap_or(cursor.last_seq)
        };
        let from = stream_last.min(cursor.last_seq) + 1;
        let consumer = match verity_bus::ordered_chain_consumer(&stream, from).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(%error, "standby: cannot follow the chain; retrying");
                backoff.wait(&stop).await;
                continue;
            }
        };
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "standby: cannot read the chain; retrying");
                backoff.wait(&stop).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                _ = stop.cancelled() => return Ok(cursor),
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, "standby: chain consumer interrupted; resubscribing");
                    break;
                }
                None => break,
            };
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                break;
            };
            let mut batch = vec![verity_bus::decode_event(seq, &message.payload)?];
            // What has arrived already goes into the same transaction (one fsync per batch).
            let mut interrupted = false;
            while batch.len() < APPLY_BATCH {
                match messages.next().now_or_never() {
                    None => break,
                    Some(next @ Some(Ok(_))) => batch.push(decode(next)?),
                    Some(_) => {
                        interrupted = true;
                        break;
                    }
                }
            }
            let (db, rules) = (db.clone(), rules.clone());
            let mut next = cursor.clone();
            cursor = blocking(move || {
                follow::apply_batch(&db, &rules, &mut next, &batch).map(|()| next)
            })
            .await??;
            head.send_replace(head_of(&cursor, &spec));
            metrics::gauge!("verity_sequencer_standby_last_seq").set(cursor.last_seq as f64);
            if interrupted {
                tracing::warn!("standby: chain consumer interrupted; resubscribing");
                break;
            }
        }
        backoff.wait(&stop).await;
    }
    Ok(cursor)
}

/// Adds the published appointments naming `key` to `appointments`, for
/// as long as the node runs; reconnects by itself.
pub(super) async fn watch_appointments(
    js: jetstream::Context,
    key: Address,
    appointments: watch::Sender<Vec<SignedAppointment>>,
) {
    loop {
        let watched = async {
            // Opening the store makes the bucket where the bus was not initialised (a test
            // server without permissions); it reads nothing from it.
            lease::appointments_store(&js).await?;
            let mut published = Box::pin(lease::watch_appointments(&js).await?);
            while let Some(appointment) = published.next().await {
                if appointment.appointment.sequencer != key {
                    continue;
                }
                appointments.send_if_modified(|known| {
                    if known.contains(&appointment) {
                        return false;
                    }
                    tracing::info!(
                        epoch = appointment.appointment.epoch,
                        first_height = appointment.appointment.first_height,
                        "appointment published for this node"
                    );
                    known.push(appointment);
                    true
                });
            }
            Ok::<(), BusError>(())
        }
        .await;
        if let Err(error) = watched {
            tracing::warn!(%error, "cannot watch published appointments; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
