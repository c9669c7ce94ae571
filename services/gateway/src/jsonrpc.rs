//! JSON-RPC 2.0 framing: requests, batches, responses and the standard error codes.

use serde::Serialize;
use serde_json::Value;

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Bad parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Server error (geth uses it for transaction and execution errors).
pub const SERVER_ERROR: i64 = -32000;
/// The call took longer than the operator allows (geth's code for "request timed out").
pub const TIMEOUT: i64 = -32002;
/// A limit the operator set was exceeded (the code Infura and others use; see EIP-1474).
pub const LIMIT_EXCEEDED: i64 = -32005;
/// Execution reverted (geth, with the revert data in `data`).
pub const EXECUTION_REVERTED: i64 = 3;

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    /// The code.
    pub code: i64,
    /// The message.
    pub message: String,
    /// Extra data (revert data for code 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// -32602 with the reason.
    pub fn invalid_params(reason: impl std::fmt::Display) -> Self {
        Self::new(INVALID_PARAMS, format!("invalid params: {reason}"))
    }

    /// -32603 with the reason.
    pub fn internal(reason: impl std::fmt::Display) -> Self {
        Self::new(INTERNAL_ERROR, format!("internal error: {reason}"))
    }
}

/// A request body: one call or a batch (each entry still to be parsed with [`parse_call`]).
#[derive(Debug)]
pub enum Body {
    /// One call.
    Single(Value),
    /// A non-empty batch.
    Batch(Vec<Value>),
}

/// Splits a request body into calls, or returns the error response for it (invalid JSON, an
/// empty batch).
pub fn parse_body(body: &[u8]) -> Result<Body, Value> {
    match serde_json::from_slice(body) {
        Ok(Value::Array(calls)) if calls.is_empty() => Err(response(
            Value::Null,
            Err(RpcError::new(INVALID_REQUEST, "empty batch")),
        )),
        Ok(Value::Array(calls)) => Ok(Body::Batch(calls)),
        Ok(single) => Ok(Body::Single(single)),
        Err(e) => Err(response(
            Value::Null,
            Err(RpcError::new(PARSE_ERROR, format!("parse error: {e}"))),
        )),
    }
}

/// One parsed request.
#[derive(Debug)]
pub struct Call {
    /// The id to echo (`None` for a notification).
    pub id: Option<Value>,
    /// The method.
    pub method: String,
    /// The parameters, as a positional array (empty when absent).
    pub params: Vec<Value>,
}

/// Parses one request object, or returns the error response to send for it.
pub fn parse_call(value: Value) -> Result<Call, Value> {
    let Value::Object(mut object) = value else {
        return Err(response(
            Value::Null,
            Err(RpcError::new(INVALID_REQUEST, "invalid request")),
        ));
    };
    let id = object.remove("id");
    let echo = id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(response(
            echo,
            Err(RpcError::new(
                INVALID_REQUEST,
                "invalid request: jsonrpc must be \"2.0\"",
            )),
        ));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err(response(
            echo,
            Err(RpcError::new(
                INVALID_REQUEST,
                "invalid request: missing method",
            )),
        ));
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(params)) => params,
        Some(_) => {
            return Err(response(
                echo,
                Err(RpcError::invalid_params("params must be an array")),
            ));
        }
    };
    Ok(Call { id, method, params })
}

/// A response object.
pub fn response(id: Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error}),
    }
}

/// Positional parameter `index`, deserialised; `None` when absent or null.
pub fn optional_param<T: serde::de::DeserializeOwned>(
    params: &[Value],
    index: usize,
) -> Result<Option<T>, RpcError> {
    match params.get(index) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| RpcError::invalid_params(format!("parameter {index}: {e}"))),
    }
}

/// Required positional parameter `index`.
pub fn param<T: serde::de::DeserializeOwned>(
    params: &[Value],
    index: usize,
) -> Result<T, RpcError> {
    optional_param(params, index)?.ok_or_else(|| {
        RpcError::invalid_params(format!("missing value for required argument {index}"))
    })
}
