//! An in-process OTLP/gRPC trace receiver (the collector's `TraceService` from
//! `opentelemetry-proto`, served with tonic on a free loopback port), so tests can check what
//! the services export.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// One received span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedSpan {
    /// `service.name` of the exporting resource.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, lowercase hex.
    pub trace_id: String,
    /// Span id, lowercase hex.
    pub span_id: String,
    /// Parent span id, lowercase hex; empty for a root span.
    pub parent_span_id: String,
}

#[derive(Debug, Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(CollectedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        span_id: hex::encode(span.span_id),
                        parent_span_id: hex::encode(span.parent_span_id),
                    });
                }
            }
        }
        self.spans
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .extend(received);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running receiver; dropping it stops the server.
#[derive(Debug)]
pub struct TestCollector {
    addr: SocketAddr,
    receiver: Receiver,
    _stop: oneshot::Sender<()>,
}

impl TestCollector {
    /// Starts the receiver on 127.0.0.1 at a free port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let receiver = Receiver::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Ok(Self {
            addr,
            receiver,
            _stop: stop,
        })
    }

    /// The endpoint to pass as `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.receiver
            .spans
            .lock()
            .map(|spans| spans.clone())
            .unwrap_or_default()
    }
}
