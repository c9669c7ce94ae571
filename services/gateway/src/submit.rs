//! Submissions to ingress, coalesced: every `eth_sendRawTransaction` and realtime send of this
//! gateway (single calls, the calls of a JSON-RPC batch, concurrent clients) goes into one
//! queue, and whatever is queued when a call to ingress goes out travels in it as one
//! `Ingress/SubmitBatch` (up to [`MAX_SUBMIT_BATCH`]). A lone transaction goes at once, alone;
//! under load, one gRPC call carries many, and ingress recovers their senders on every core and
//! forwards them to the sequencer in one message.

use std::sync::Mutex;

use alloy_primitives::{B256, Bytes};
use tokio::sync::{mpsc, oneshot};
use verity_proto::v1;

use verity_telemetry::TracedChannel as Traced;

use crate::jsonrpc::RpcError;

/// Most transactions in one call to ingress.
pub const MAX_SUBMIT_BATCH: usize = 512;

type Answer = oneshot::Sender<Result<B256, RpcError>>;
/// The queue's receiving end.
type Queue = mpsc::UnboundedReceiver<Queued>;
/// A submission: the envelope, who waits for the answer, and the span of its request.
type Queued = (Bytes, Answer, tracing::Span);

/// The queue of submissions to ingress and the task that sends them.
#[derive(Debug)]
pub struct Submitter {
    queue: mpsc::UnboundedSender<Queued>,
    /// Taken by the first submission, which starts the sending task (in the runtime).
    idle: Mutex<Option<(Queue, Client)>>,
}

type Client = v1::ingress_client::IngressClient<Traced>;

impl Submitter {
    /// A submitter to `ingress`; its task starts with the first submission.
    pub fn new(ingress: Client) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        Self {
            queue,
            idle: Mutex::new(Some((receiver, ingress))),
        }
    }

    /// Submits one envelope; its hash once ingress accepted it (and the sequencer admitted it).
    pub async fn submit(&self, raw: Bytes) -> Result<B256, RpcError> {
        if let Some((receiver, client)) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            tokio::spawn(run(receiver, client));
        }
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((raw, answer, tracing::Span::current()))
            .map_err(|_| RpcError::internal("the submission queue is closed"))?;
        answered
            .await
            .unwrap_or_else(|_| Err(RpcError::internal("the submission was dropped")))
    }
}

async fn run(mut receiver: Queue, client: Client) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_SUBMIT_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        metrics::histogram!("verity_gateway_submit_batch_size").record(batch.len() as f64);
        // The call continues the trace of the first request it carries (the others' traces
        // end at the gateway when they share a call).
        let span = batch[0].2.clone();
        tokio::spawn(tracing::Instrument::instrument(
            send(client.clone(), batch),
            span,
        ));
    }
}

/// One call to ingress for `batch`, each submission answered on its own.
async fn send(mut client: Client, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        let Some((raw, answer, _)) = batch.pop() else {
            return;
        };
        let result = client
            .submit(v1::SubmitRequest { raw: raw.to_vec() })
            .await
            .map_err(crate::eth::from_status)
            .and_then(|response| hash_of(&response.into_inner().tx_hash));
        let _ = answer.send(result);
        return;
    }
    let (raws, answers): (Vec<Vec<u8>>, Vec<Answer>) = batch
        .into_iter()
        .map(|(raw, answer, _)| (raw.to_vec(), answer))
        .unzip();
    match client
        .submit_batch(v1::SubmitBatchRequest { raw: raws })
        .await
    {
        Ok(response) => {
            let mut results = response.into_inner().results.into_iter();
            for answer in answers {
                let result = match results.next().and_then(|r| r.result) {
                    Some(v1::submit_result::Result::TxHash(hash)) => hash_of(&hash),
                    Some(v1::submit_result::Result::Error(error)) => {
                        Err(crate::eth::from_rejection(
                            v1::TxRejection::try_from(error.rejection)
                                .unwrap_or(v1::TxRejection::Internal),
                            &error.message,
                        ))
                    }
                    None => Err(RpcError::internal(
                        "ingress answered fewer results than sent",
                    )),
                };
                let _ = answer.send(result);
            }
        }
        Err(status) => {
            let error = crate::eth::from_status(status);
            for answer in answers {
                let _ = answer.send(Err(error.clone()));
            }
        }
    }
}

fn hash_of(bytes: &[u8]) -> Result<B256, RpcError> {
    B256::try_from(bytes)
        .map_err(|_| RpcError::internal("ingress answered a hash that is not 32 bytes"))
}
