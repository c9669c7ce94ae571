//! Verity publisher: moves the chain from the sequencer's gRPC stream onto JetStream.
//!
//! It keeps no state of its own: the JetStream stream is the record of what was published.
//! On every (re)start it reads the stream's last sequence `n` and asks the sequencer for events
//! from `n + 1`. Each publish carries the event hash as message id and `seq - 1` as the expected
//! last sequence, so a crash between publishing and seeing the ack can neither duplicate nor
//! skip an event. Publishes are pipelined (`--max-in-flight`) and acknowledged in order.

use std::{collections::VecDeque, future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::watch;
use tonic::transport::Channel;
use verity_bus::BusError;
use verity_proto::v1;
use verity_server::{Backoff, ServerArgs, stopped};
use verity_telemetry::TelemetryArgs;

/// Default gRPC (health) port of the publisher.
pub const DEFAULT_PORT: u16 = 7400;

/// `verity-publisher` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "verity-publisher",
    version,
    about = "Verity publisher: chain stream to JetStream"
)]
pub struct Config {
    /// gRPC URL of the sequencer.
    #[arg(
        long,
        env = "VERITY_SEQUENCER_URL",
        default_value = "http://127.0.0.1:7100"
    )]
    pub sequencer_url: String,
    /// NATS server URL.
    #[arg(long, env = "VERITY_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Most publishes awaiting their JetStream ack.
    #[arg(long, env = "VERITY_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub server: ServerArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub telemetry: TelemetryArgs,
}

/// A connected publisher.
#[derive(Debug)]
pub struct Publisher {
    config: Config,
    js: async_nats::jetstream::Context,
    sequencer: v1::sequencer_client::SequencerClient<Channel>,
}

impl Publisher {
    /// Validates the configuration and connects to NATS (the sequencer is connected lazily).
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        if config.max_in_flight == 0 {
            anyhow::bail!("invalid --max-in-flight 0: must be at least 1");
        }
        let channel = Channel::from_shared(config.sequencer_url.clone())
            .map_err(|e| {
                anyhow::anyhow!("invalid --sequencer-url {:?}: {e}", config.sequencer_url)
            })?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        let (_client, js) = verity_bus::connect(&config.nats_url, "verity-publisher")
            .await
            .context("flag --nats-url / VERITY_NATS_URL")?;
        verity_bus::ensure_chain_stream(&js).await?;
        Ok(Self {
            config,
            js,
            sequencer: v1::sequencer_client::SequencerClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024),
        })
    }

    /// Publishes until `shutdown` resolves, then waits for the acks of what is in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = verity_server::bind(self.config.server.grpc_addr_or(DEFAULT_PORT)).await?;
        let addr = verity_server::local_addr(&listener);
        verity_server::write_ready_file(
            self.config.server.ready_file.as_deref(),
            &[("grpc", addr.to_string())],
        )?;
        let stop_rx = verity_server::stop_flag(shutdown);
        let server = tokio::spawn({
            let mut stop = stop_rx.clone();
            async move {
                verity_server::serve_grpc(
                    tonic::service::Routes::default(),
                    &[],
                    listener,
                    async move { verity_server::stopped(&mut stop).await },
                )
                .await
            }
        });
        tracing::info!(%addr, "publisher running");
        let this = Arc::new(self);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut stop = stop_rx;
        while !*stop.borrow() {
            match this.publish_from_stream_head(&mut stop).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    tracing::warn!(%error, "publishing interrupted; resuming from the stream head");
                    metrics::counter!("verity_publisher_interruptions_total").increment(1);
                }
            }
            backoff.wait(&mut stop).await;
        }
        server.await??;
        tracing::info!("publisher stopped");
        Ok(())
    }

    /// One session: resume after the stream's last event and publish until the sequencer's
    /// stream ends, an error occurs, or `stop` is set. Acks in flight are awaited before
    /// returning.
    async fn publish_from_stream_head(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let mut stream = verity_bus::ensure_chain_stream(&self.js).await?;
        let last = verity_bus::last_chain_seq(&mut stream).await?;
        metrics::gauge!("verity_publisher_last_seq").set(last as f64);
        let mut events = self
            .sequencer
            .clone()
            .stream_chain(v1::StreamChainRequest { from_seq: last + 1 })
            .await
            .context("sequencer stream")?
            .into_inner();
        tracing::info!(from_seq = last + 1, "streaming from the sequencer");
        let mut expected = last + 1;
        let mut in_flight = VecDeque::new();
        let result = loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = stopped(stop) => break Ok(()),
            };
            let event = match next {
                None => break Err(anyhow::anyhow!("sequencer ended the stream")),
                Some(Err(status)) => break Err(anyhow::anyhow!("sequencer stream: {status}")),
                Some(Ok(event)) => event,
            };
            if event.seq != expected {
                break Err(anyhow::anyhow!(
                    "sequencer sent event {} where {expected} was due",
                    event.seq
                ));
            }
            expected += 1;
            let hash = event_hash(&event);
            let span = tracing::info_span!("publisher.publish", seq = event.seq);
            verity_telemetry::link_map_parent(&event.trace_context, &span);
            let mut headers = async_nats::HeaderMap::new();
            {
                let _entered = span.enter();
                verity_telemetry::inject_nats(&mut headers);
            }
            let ack = verity_bus::publish_event(&self.js, &event, &hash, headers).await?;
            if let Some(v1::chain_event::Event::MiniBlock(mini)) = &event.event {
                // Sent to NATS; its ack is awaited later, within the in-flight window.
                metrics::histogram!("verity_publisher_mini_block_age_seconds")
                    .record(verity_telemetry::age_seconds(mini.timestamp_ms));
            }
            in_flight.push_back((event.seq, ack));
            if in_flight.len() >= self.config.max_in_flight
                && let Some((seq, ack)) = in_flight.pop_front()
                && let Err(error) = settle(seq, ack).await
            {
                break Err(error.into());
            }
        };
        while let Some((seq, ack)) = in_flight.pop_front() {
            settle(seq, ack).await?;
        }
        result
    }
}

async fn settle(
    seq: u64,
    ack: async_nats::jetstream::context::PublishAckFuture,
) -> Result<(), BusError> {
    let stored = verity_bus::await_ack(ack, seq).await?;
    if stored {
        metrics::counter!("verity_publisher_published_total").increment(1);
    } else {
        metrics::counter!("verity_publisher_duplicates_total").increment(1);
        tracing::debug!(seq, "already published");
    }
    metrics::gauge!("verity_publisher_last_seq").set(seq as f64);
    Ok(())
}

fn event_hash(event: &v1::ChainEvent) -> Vec<u8> {
    match &event.event {
        Some(v1::chain_event::Event::MiniBlock(m)) => m.hash.clone(),
        Some(v1::chain_event::Event::Block(b)) => b.hash.clone(),
        None => Vec::new(),
    }
}
