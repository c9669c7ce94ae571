//! A scripted Kubernetes API server for tests: it answers each request with the next scripted
//! response (status and JSON body, shaped as the real API server's), records every request
//! (method, path and query, content type, body), and answers a request the script did not
//! expect with a 500 `Status` naming it. The client under test is the real kube client over
//! HTTP, so paths, verbs, patch types and bodies are what a cluster would receive.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::IntoResponse,
};
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Debug, Clone)]
struct Exchange {
    method: Method,
    path: String,
    status: u16,
    body: Value,
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query string.
    pub query: String,
    /// `content-type`.
    pub content_type: String,
    /// The body, parsed (Null when empty).
    pub body: Value,
}

#[derive(Debug, Default)]
struct State {
    script: VecDeque<Exchange>,
    /// Answers given whenever the script's next one does not match (a controller's polling).
    standing: Vec<Exchange>,
    seen: Vec<Recorded>,
    unexpected: Vec<String>,
}

/// The mock API server, on 127.0.0.1 at a free port; stops when dropped.
#[derive(Debug)]
pub struct MockApi {
    url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockApi {
    /// Starts the server.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State::default()));
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = handler_state.clone();
                async move { answer(&state, method, uri, headers, body) }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, state, task })
    }

    /// The server's URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A 200 with `body` for `method` on `path`, once in script order or always.
    fn answer(&self, when: Answer, method: &str, path: &str, body: Value) {
        match when {
            Answer::Next => self.expect(method, path, 200, body),
            Answer::Always => self.serve(method, path, 200, body),
        }
    }

    /// Answers `GET` of Deployment `at`: `replicas` desired, `ready` of them ready.
    pub fn answer_deployment(&self, when: Answer, at: Workload<'_>, replicas: u32, ready: u32) {
        let body = deployment(at.namespace, at.name, replicas, ready);
        self.answer(when, "GET", &deployment_path(at.namespace, at.name), body);
    }

    /// Lets a `PATCH` of that Deployment's scale succeed at `replicas` (`ready` ready).
    pub fn answer_scale(&self, when: Answer, at: Workload<'_>, replicas: u32, ready: u32) {
        let body = scale(at.namespace, at.name, replicas, ready);
        self.answer(when, "PATCH", &scale_path(at.namespace, at.name), body);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Scripts the next answer: a `method` request to `path` gets `status` and `body`.
    pub fn expect(&self, method: &str, path: &str, status: u16, body: Value) {
        self.lock().script.push_back(Exchange {
            method: method.parse().unwrap_or(Method::GET),
            path: path.to_string(),
            status,
            body,
        });
    }

    /// Sets a standing answer: a `method` request to `path` gets `status` and `body` whenever
    /// the script's next answer is not for it (replaces an earlier standing answer for the same
    /// request).
    pub fn serve(&self, method: &str, path: &str, status: u16, body: Value) {
        let exchange = Exchange {
            method: method.parse().unwrap_or(Method::GET),
            path: path.to_string(),
            status,
            body,
        };
        let mut state = self.lock();
        state
            .standing
            .retain(|e| !(e.method == exchange.method && e.path == exchange.path));
        state.standing.push(exchange);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().seen.clone()
    }

    /// Scripted answers not yet given.
    pub fn remaining(&self) -> usize {
        self.lock().script.len()
    }

    /// Requests that did not match the script.
    pub fn unexpected(&self) -> Vec<String> {
        self.lock().unexpected.clone()
    }

    /// Waits until `n` requests arrived (or `timeout`); returns whether they did.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.lock().seen.len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

fn answer(
    state: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let path = uri.path().to_string();
    state.seen.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let next = state.script.front().cloned();
    let scripted = next
        .as_ref()
        .is_some_and(|e| e.method == method && e.path == path);
    if scripted {
        state.script.pop_front();
    }
    let answer = if scripted {
        next.clone()
    } else {
        state
            .standing
            .iter()
            .find(|e| e.method == method && e.path == path)
            .cloned()
    };
    match answer {
        Some(exchange) => (
            StatusCode::from_u16(exchange.status).unwrap_or(StatusCode::OK),
            [("content-type", "application/json")],
            exchange.body.to_string(),
        )
            .into_response(),
        None => {
            let expected = next.map_or("nothing".to_string(), |e| {
                format!("{} {}", e.method, e.path)
            });
            let message = format!("unexpected {method} {path} (expected {expected})");
            state.unexpected.push(message.clone());
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/json")],
                status(500, "InternalError", &message).to_string(),
            )
                .into_response()
        }
    }
}

/// The API server's 404 for `resource` (`deployments.apps`, `leases.coordination.k8s.io`)
/// `name`.
pub fn not_found(resource: &str, name: &str) -> Value {
    status(404, "NotFound", &format!("{resource} \"{name}\" not found"))
}

/// A `Status` object as the API server sends with an error.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A Deployment by namespace and name.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
}

/// When a scripted answer applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The next matching request, in script order ([`MockApi::expect`]).
    Next,
    /// Every matching request the script does not answer ([`MockApi::serve`]).
    Always,
}

/// The API path of Deployment `namespace/name`.
pub fn deployment_path(namespace: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
}

/// The API path of that Deployment's scale subresource.
pub fn scale_path(namespace: &str, name: &str) -> String {
    format!("{}/scale", deployment_path(namespace, name))
}

/// A Deployment's `autoscaling/v1` Scale as the API server returns it.
pub fn scale(namespace: &str, name: &str, replicas: u32, ready: u32) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "7c1d7a4e-5f0b-4a49-9a52-3c7c0b1f2e10",
            "resourceVersion": "184467",
            "creationTimestamp": "2026-11-20T09:14:03Z"
        },
        "spec": { "replicas": replicas },
        "status": {
            "replicas": ready,
            "selector": "app.kubernetes.io/component=prover,app.kubernetes.io/instance=verity,app.kubernetes.io/name=verity"
        }
    })
}

/// A Deployment (the fields a `get` shows that matter here) with `replicas` desired and
/// `ready` of them ready.
pub fn deployment(namespace: &str, name: &str, replicas: u32, ready: u32) -> Value {
    json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0e0b7e1c-2a8e-4c6b-8a43-5d1f7f3d9a21",
            "resourceVersion": "184467",
            "generation": 3,
            "creationTimestamp": "2026-11-20T09:14:03Z",
            "labels": {"app.kubernetes.io/component": "prover", "app.kubernetes.io/name": "verity"}
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/component": "prover"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/component": "prover"}},
                "spec": {"containers": [{"name": "prover", "image": "ghcr.io/verity-rollup/verity-prover:0.1.0"}]}
            }
        },
        "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": replicas, "observedGeneration": 3}
    })
}

/// The genesis hash the mock's Lease records carry (tests pass it to `SequencerLease::new`,
/// or another one to play a re-created chain).
pub const GENESIS: &str = "0x8d2a4bd2a5a8e3d6f1b7c3e9a0f4d5c6b7a8e9f0a1b2c3d4e5f60718293a4b5c";

/// A coordination.k8s.io/v1 Lease held by `holder` for `epoch` (`None`: never held), recorded
/// under [`GENESIS`].
pub fn lease(
    namespace: &str,
    name: &str,
    resource_version: &str,
    holder: Option<(&str, u64, &str)>,
    transitions: i32,
) -> Value {
    let mut annotations = serde_json::Map::new();
    let mut spec = json!({ "leaseDurationSeconds": 10, "leaseTransitions": transitions });
    if let Some((identity, epoch, address)) = holder {
        annotations.insert("verity.io/epoch".into(), json!(epoch.to_string()));
        annotations.insert("verity.io/sequencer".into(), json!(address));
        annotations.insert("verity.io/genesis".into(), json!(GENESIS));
        spec["holderIdentity"] = json!(identity);
        spec["acquireTime"] = json!("2026-11-26T10:00:00.000000Z");
        spec["renewTime"] = json!("2026-11-26T10:00:02.000000Z");
    }
    json!({
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "5a0f3a52-1b7e-4f3e-b7a1-9d8c2e6f4b33",
            "resourceVersion": resource_version,
            "creationTimestamp": "2026-11-20T09:14:03Z",
            "annotations": annotations
        },
        "spec": spec
    })
}
