//! The `eth_*`, `net_*` and `web3_*` methods: each translates JSON-RPC parameters, asks ingress,
//! a replica or the sequencer, and answers in the JSON shapes of alloy's RPC types.

use alloy_consensus::{ReceiptEnvelope, ReceiptWithBloom, Transaction as _};
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U128, U256, keccak256};
use alloy_rpc_types_eth::{
    Block, BlockOverrides, BlockTransactions, Filter, FilterChanges, Header as RpcHeader,
    Log as RpcLog, Transaction as RpcTransaction, TransactionReceipt, TransactionRequest,
    state::StateOverride,
};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use verity_primitives::{Receipt, Transaction};
use verity_proto::{b256_from, u256_bytes, u256_from, v1};

use crate::{
    Backends, fees,
    filters::{self, Changes, FilterKind},
    jsonrpc::{
        EXECUTION_REVERTED, METHOD_NOT_FOUND, RpcError, SERVER_ERROR, optional_param, param,
    },
};

/// The priority fee the gateway suggests (the sequencer orders fairly, not by tip).
pub const SUGGESTED_TIP: u128 = 1_000_000;

pub(crate) fn to_value<T: serde::Serialize>(value: T) -> Result<Value, RpcError> {
    serde_json::to_value(value).map_err(RpcError::internal)
}

/// A backend's gRPC status as a JSON-RPC error (geth's code -32000 with the backend's message,
/// which carries geth's texts such as "header not found"). A rejected transaction is mapped from
/// its typed reason, not from its text.
pub fn from_status(status: tonic::Status) -> RpcError {
    if let Some(rejection) = verity_server::status::rejection_of(&status) {
        return from_rejection(rejection, status.message());
    }
    match status.code() {
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
            RpcError::internal(status.message())
        }
        tonic::Code::InvalidArgument => RpcError::new(SERVER_ERROR, status.message()),
        // A replica out of call slots: geth's "limit exceeded" code, so clients back off.
        tonic::Code::ResourceExhausted => {
            RpcError::new(crate::jsonrpc::LIMIT_EXCEEDED, status.message())
        }
        _ => RpcError::new(SERVER_ERROR, status.message()),
    }
}

/// A rejected transaction as geth reports one: -32000 with geth's text for every reason the
/// transaction (or the pool) is the cause of, -32603 when the sequencer itself failed.
pub(crate) fn from_rejection(rejection: v1::TxRejection, message: &str) -> RpcError {
    use v1::TxRejection as R;
    match rejection {
        R::Internal => RpcError::internal(message),
        R::None
        | R::Invalid
        | R::AlreadyKnown
        | R::NonceTooLow
        | R::NonceTooHigh
        | R::ReplacementUnderpriced
        | R::InsufficientFunds
        | R::PoolFull
        | R::Underpriced
        | R::Unavailable => RpcError::new(SERVER_ERROR, message),
    }
}

pub fn block_id_to_wire(id: Option<BlockId>) -> v1::BlockId {
    let id = id.unwrap_or(BlockId::Number(BlockNumberOrTag::Latest));
    let inner = match id {
        BlockId::Hash(hash) => v1::block_id::Id::Hash(hash.block_hash.to_vec()),
        BlockId::Number(number) => match number {
            BlockNumberOrTag::Number(n) => v1::block_id::Id::Number(n),
            BlockNumberOrTag::Latest => v1::block_id::Id::Tag(v1::BlockTag::Latest as i32),
            BlockNumberOrTag::Pending => v1::block_id::Id::Tag(v1::BlockTag::Pending as i32),
            BlockNumberOrTag::Earliest => v1::block_id::Id::Tag(v1::BlockTag::Earliest as i32),
            BlockNumberOrTag::Safe => v1::block_id::Id::Tag(v1::BlockTag::Safe as i32),
            BlockNumberOrTag::Finalized => v1::block_id::Id::Tag(v1::BlockTag::Finalized as i32),
        },
    };
    v1::BlockId { id: Some(inner) }
}

fn wire_err(e: verity_proto::ConversionError) -> RpcError {
    RpcError::internal(e)
}

/// A method's handler: the call's parameters in, the result (or geth's error) out.
pub type Handler = for<'a> fn(&'a Backends, &'a [Value]) -> BoxFuture<'a, Result<Value, RpcError>>;

/// Every method the gateway serves over HTTP and WebSocket (`eth_subscribe` and
/// `eth_unsubscribe` are the WebSocket's own, in [`crate::ws`]), with its handler. A test holds
/// it against the method list of docs/json-rpc.md.
pub static METHODS: &[(&str, Handler)] = &[
    ("web3_clientVersion", |_, _| {
        Box::pin(async move { Ok(json!(format!("verity/v{}/rust", env!("CARGO_PKG_VERSION")))) })
    }),
    ("eth_chainId", |backends, _| {
        Box::pin(async move { to_value(U64::from(backends.chain_id)) })
    }),
    ("net_version", |backends, _| {
        Box::pin(async move { Ok(json!(backends.chain_id.to_string())) })
    }),
    ("eth_blockNumber", |backends, _| {
        Box::pin(async move {
            let head = backends.head().await?;
            to_value(U64::from(head.block_number))
        })
    }),
    ("verity_status", |backends, _| {
        Box::pin(async move {
            let head = backends.head().await?;
            let lag = |n: Option<u64>| n.map(|n| head.block_number.saturating_sub(n));
            // Why this gateway should not be read from: its replica's reason now, else what its
            // last check found.
            let not_ready = crate::replica_not_ready(&head).or_else(|| backends.ready.reason());
            Ok(json!({
                "ready": not_ready.is_none(),
                "notReady": not_ready,
                "latest": head.block_number,
                "latestMiniBlock": head.mini_block_number,
                "safe": head.safe_block_number,
                "finalized": head.finalized_block_number,
                "safeLag": lag(head.safe_block_number),
                "finalizedLag": lag(head.finalized_block_number),
                "alarm": (!head.alarm.is_empty()).then_some(head.alarm),
            }))
        })
    }),
    ("eth_gasPrice", |backends, _| {
        Box::pin(async move {
            let head = backends.head().await?;
            let base_fee = u256_from(&head.base_fee, "base_fee").map_err(wire_err)?;
            to_value(base_fee + U256::from(SUGGESTED_TIP))
        })
    }),
    ("eth_maxPriorityFeePerGas", |_, _| {
        Box::pin(async move { to_value(U256::from(SUGGESTED_TIP)) })
    }),
    ("eth_getBalance", |backends, params| {
        Box::pin(async move {
            let account = get_account(backends, params).await?;
            to_value(u256_from(&account.balance, "balance").map_err(wire_err)?)
        })
    }),
    ("eth_getTransactionCount", |backends, params| {
        Box::pin(get_transaction_count(backends, params))
    }),
    ("eth_getCode", |backends, params| {
        Box::pin(async move {
            let address: Address = param(params, 0)?;
            let block: Option<BlockId> = optional_param(params, 1)?;
            to_value(code_at(backends, address, block).await?)
        })
    }),
    ("eth_getStorageAt", |backends, params| {
        Box::pin(async move {
            let address: Address = param(params, 0)?;
            let slot: U256 = param(params, 1)?;
            let block: Option<BlockId> = optional_param(params, 2)?;
            let value = backends
                .replica()
                .get_storage(v1::StorageRequest {
                    address: address.to_vec(),
                    slot: u256_bytes(slot),
                    block: Some(block_id_to_wire(block)),
                })
                .await
                .map_err(from_status)?
                .into_inner();
            to_value(b256_from(&value.value, "value").map_err(wire_err)?)
        })
    }),
    ("eth_sendRawTransaction", |backends, params| {
        Box::pin(async move {
            let raw: Bytes = param(params, 0)?;
            to_value(backends.submit(raw).await?)
        })
    }),
    ("realtime_sendRawTransaction", |backends, params| {
        Box::pin(crate::realtime::send_raw_transaction_sync(backends, params))
    }),
    ("eth_sendRawTransactionSync", |backends, params| {
        Box::pin(crate::realtime::send_raw_transaction_sync(backends, params))
    }),
    ("eth_callAfter", |backends, params| {
        Box::pin(crate::realtime::call_after(backends, params))
    }),
    ("eth_getTransactionByHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            match stored_transaction(backends, hash).await? {
                Some(stored) => to_value(rpc_transaction(&stored)?),
                None => Ok(Value::Null),
            }
        })
    }),
    ("eth_getRawTransactionByHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            match stored_transaction(backends, hash).await? {
                Some(stored) => raw_transaction(&stored),
                None => Ok(Value::Null),
            }
        })
    }),
    (
        "eth_getRawTransactionByBlockNumberAndIndex",
        |backends, params| {
            Box::pin(async move {
                let number: BlockNumberOrTag = param(params, 0)?;
                let index: U64 = param(params, 1)?;
                transaction_by_index(
                    backends,
                    BlockId::Number(number),
                    index.to(),
                    raw_transaction,
                )
                .await
            })
        },
    ),
    (
        "eth_getRawTransactionByBlockHashAndIndex",
        |backends, params| {
            Box::pin(async move {
                let hash: B256 = param(params, 0)?;
                let index: U64 = param(params, 1)?;
                transaction_by_index(backends, BlockId::from(hash), index.to(), raw_transaction)
                    .await
            })
        },
    ),
    ("eth_getHeaderByNumber", |backends, params| {
        Box::pin(async move {
            let number: BlockNumberOrTag = param(params, 0)?;
            get_header(backends, BlockId::Number(number)).await
        })
    }),
    ("eth_getHeaderByHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            get_header(backends, BlockId::from(hash)).await
        })
    }),
    // What BLOBBASEFEE gives in Verity's EVM: no block carries blobs (ingress refuses type-3
    // transactions), so the excess blob gas is always zero and the price its minimum.
    ("eth_blobBaseFee", |_, _| {
        Box::pin(async move { to_value(U128::from(verity_primitives::BLOB_BASE_FEE)) })
    }),
    ("txpool_status", |backends, _| {
        Box::pin(crate::txpool::status(backends))
    }),
    ("txpool_content", |backends, _| {
        Box::pin(crate::txpool::content(backends))
    }),
    ("txpool_contentFrom", |backends, params| {
        Box::pin(crate::txpool::content_from(backends, params))
    }),
    ("txpool_inspect", |backends, _| {
        Box::pin(crate::txpool::inspect(backends))
    }),
    ("eth_getTransactionReceipt", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            get_receipt(backends, hash).await
        })
    }),
    ("eth_getBlockByNumber", |backends, params| {
        Box::pin(async move {
            let number: BlockNumberOrTag = param(params, 0)?;
            let full: Option<bool> = optional_param(params, 1)?;
            get_block(backends, BlockId::Number(number), full.unwrap_or(false)).await
        })
    }),
    ("eth_getBlockByHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            let full: Option<bool> = optional_param(params, 1)?;
            get_block(backends, BlockId::from(hash), full.unwrap_or(false)).await
        })
    }),
    ("eth_call", |backends, params| {
        Box::pin(eth_call(backends, params))
    }),
    ("eth_estimateGas", |backends, params| {
        Box::pin(async move {
            let outcome = call(backends, params, true).await?;
            to_value(U64::from(outcome.gas_used))
        })
    }),
    ("eth_simulateV1", |backends, params| {
        Box::pin(crate::simulate::simulate_v1(backends, params))
    }),
    ("eth_callMany", |backends, params| {
        Box::pin(crate::simulate::call_many(backends, params))
    }),
    ("eth_createAccessList", |backends, params| {
        Box::pin(create_access_list(backends, params))
    }),
    ("debug_traceTransaction", |backends, params| {
        Box::pin(crate::debug::trace_transaction(backends, params))
    }),
    ("debug_traceBlockByNumber", |backends, params| {
        Box::pin(async move {
            let number: BlockNumberOrTag = param(params, 0)?;
            crate::debug::trace_block(backends, BlockId::Number(number), params).await
        })
    }),
    ("debug_traceBlockByHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            crate::debug::trace_block(backends, BlockId::from(hash), params).await
        })
    }),
    ("trace_transaction", |backends, params| {
        Box::pin(crate::debug::parity_transaction(backends, params))
    }),
    ("trace_block", |backends, params| {
        Box::pin(crate::debug::parity_block(backends, params))
    }),
    ("trace_get", |backends, params| {
        Box::pin(crate::debug::parity_get(backends, params))
    }),
    ("debug_traceCall", |backends, params| {
        Box::pin(crate::debug::trace_call(backends, params))
    }),
    ("ots_getApiLevel", |_, _| {
        Box::pin(async move { Ok(Value::from(crate::ots::API_LEVEL)) })
    }),
    ("ots_searchTransactionsBefore", |backends, params| {
        Box::pin(crate::ots::search_before(backends, params))
    }),
    ("ots_searchTransactionsAfter", |backends, params| {
        Box::pin(crate::ots::search_after(backends, params))
    }),
    ("ots_traceTransaction", |backends, params| {
        Box::pin(crate::ots::trace_transaction(backends, params))
    }),
    ("ots_getInternalOperations", |backends, params| {
        Box::pin(crate::ots::internal_operations(backends, params))
    }),
    ("ots_getTransactionError", |backends, params| {
        Box::pin(crate::ots::transaction_error(backends, params))
    }),
    ("ots_getContractCreator", |backends, params| {
        Box::pin(crate::ots::contract_creator(backends, params))
    }),
    ("eth_getProof", |backends, params| {
        Box::pin(crate::proof::get_proof(backends, params))
    }),
    ("verity_getStateRoot", |backends, params| {
        Box::pin(crate::proof::get_state_root(backends, params))
    }),
    ("ots_hasCode", |backends, params| {
        Box::pin(crate::ots::has_code(backends, params))
    }),
    ("ots_getBlockDetails", |backends, params| {
        Box::pin(async move {
            let number: alloy_eips::eip1898::LenientBlockNumberOrTag = param(params, 0)?;
            crate::ots::block_details(backends, number.into()).await
        })
    }),
    ("ots_getBlockDetailsByHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            crate::ots::block_details(backends, BlockId::from(hash)).await
        })
    }),
    ("ots_getBlockTransactions", |backends, params| {
        Box::pin(crate::ots::block_transactions(backends, params))
    }),
    ("ots_getTransactionBySenderAndNonce", |backends, params| {
        Box::pin(crate::ots::transaction_by_sender_and_nonce(
            backends, params,
        ))
    }),
    ("eth_accounts", |_, _| {
        Box::pin(async move { Ok(json!([])) })
    }),
    ("eth_syncing", |_, _| {
        Box::pin(async move { Ok(json!(false)) })
    }),
    ("net_listening", |_, _| {
        Box::pin(async move { Ok(json!(true)) })
    }),
    // Replicas follow the stream, not peers: a gateway has no peer-to-peer network.
    ("net_peerCount", |_, _| {
        Box::pin(async move { to_value(U64::ZERO) })
    }),
    ("web3_sha3", |_, params| {
        Box::pin(async move {
            let data: Bytes = param(params, 0)?;
            to_value(keccak256(&data))
        })
    }),
    ("eth_getBlockReceipts", |backends, params| {
        Box::pin(async move {
            let block: BlockId = param(params, 0)?;
            block_receipts(backends, block).await
        })
    }),
    (
        "eth_getBlockTransactionCountByNumber",
        |backends, params| {
            Box::pin(async move {
                let number: BlockNumberOrTag = param(params, 0)?;
                block_transaction_count(backends, BlockId::Number(number)).await
            })
        },
    ),
    ("eth_getBlockTransactionCountByHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            block_transaction_count(backends, BlockId::from(hash)).await
        })
    }),
    (
        "eth_getTransactionByBlockNumberAndIndex",
        |backends, params| {
            Box::pin(async move {
                let number: BlockNumberOrTag = param(params, 0)?;
                let index: U64 = param(params, 1)?;
                transaction_by_index(backends, BlockId::Number(number), index.to(), rpc_shape).await
            })
        },
    ),
    (
        "eth_getTransactionByBlockHashAndIndex",
        |backends, params| {
            Box::pin(async move {
                let hash: B256 = param(params, 0)?;
                let index: U64 = param(params, 1)?;
                transaction_by_index(backends, BlockId::from(hash), index.to(), rpc_shape).await
            })
        },
    ),
    ("eth_getUncleCountByBlockNumber", |backends, params| {
        Box::pin(async move {
            let number: BlockNumberOrTag = param(params, 0)?;
            uncle_count(backends, BlockId::Number(number)).await
        })
    }),
    ("eth_getUncleCountByBlockHash", |backends, params| {
        Box::pin(async move {
            let hash: B256 = param(params, 0)?;
            uncle_count(backends, BlockId::from(hash)).await
        })
    }),
    // A rollup has no uncles.
    ("eth_getUncleByBlockNumberAndIndex", |_, _| {
        Box::pin(async move { Ok(Value::Null) })
    }),
    // A rollup has no uncles.
    ("eth_getUncleByBlockHashAndIndex", |_, _| {
        Box::pin(async move { Ok(Value::Null) })
    }),
    ("eth_getLogs", |backends, params| {
        Box::pin(async move {
            let filter: Filter = param(params, 0)?;
            filters::check_criteria(&filter)?;
            to_value(filters::get_logs(backends, &filter).await?)
        })
    }),
    ("eth_getLogsWithCursor", |backends, params| {
        Box::pin(filters::get_logs_with_cursor(backends, params))
    }),
    ("eth_newFilter", |backends, params| {
        Box::pin(async move {
            let filter: Filter = param(params, 0)?;
            filters::check_criteria(&filter)?;
            if filter.get_block_hash().is_some() {
                return Err(RpcError::invalid_params(
                    "a filter with blockHash cannot be installed: it matches one sealed block; use eth_getLogs",
                ));
            }
            let head = backends.head().await?;
            to_value(
                backends
                    .filters
                    .install(FilterKind::Logs(Box::new(filter)), head.block_number + 1)?,
            )
        })
    }),
    ("eth_newBlockFilter", |backends, _| {
        Box::pin(async move {
            let head = backends.head().await?;
            to_value(
                backends
                    .filters
                    .install(FilterKind::Blocks, head.block_number + 1)?,
            )
        })
    }),
    ("eth_newPendingTransactionFilter", |backends, _| {
        Box::pin(async move {
            to_value(
                backends
                    .filters
                    .install(FilterKind::PendingTransactions, 0)?,
            )
        })
    }),
    ("eth_getFilterChanges", |backends, params| {
        Box::pin(async move {
            let id: U128 = param(params, 0)?;
            let head = backends.head().await?;
            let changes = match backends.filters.poll(id, head.block_number)? {
                Changes::Blocks(range) => FilterChanges::<RpcTransaction>::Hashes(
                    filters::block_hashes(backends, range).await?,
                ),
                Changes::Logs(filter, range) => {
                    let (from, to) = clamp(&filter, *range.start(), *range.end());
                    FilterChanges::<RpcTransaction>::Logs(
                        filters::logs_in(backends, &filter, from, to).await?,
                    )
                }
                Changes::PendingTransactions(hashes) => {
                    FilterChanges::<RpcTransaction>::Hashes(hashes)
                }
            };
            to_value(changes)
        })
    }),
    ("eth_getFilterLogs", |backends, params| {
        Box::pin(async move {
            let id: U128 = param(params, 0)?;
            let filter = backends.filters.criteria(id)?;
            to_value(filters::get_logs(backends, &filter).await?)
        })
    }),
    ("eth_uninstallFilter", |backends, params| {
        Box::pin(async move {
            let id: U128 = param(params, 0)?;
            Ok(json!(backends.filters.uninstall(id)))
        })
    }),
    ("eth_feeHistory", |backends, params| {
        Box::pin(async move {
            let count = fees::block_count(params.first().unwrap_or(&Value::Null))?;
            let newest: BlockNumberOrTag = param(params, 1)?;
            let percentiles: Option<Vec<f64>> = optional_param(params, 2)?;
            to_value(fees::fee_history(backends, count, newest, percentiles).await?)
        })
    }),
];

/// Dispatches one call.
pub async fn dispatch(
    backends: &Backends,
    method: &str,
    params: &[Value],
) -> Result<Value, RpcError> {
    match METHODS.iter().find(|(name, _)| *name == method) {
        Some((_, handler)) => handler(backends, params).await,
        None => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("the method {method} does not exist/is not available"),
        )),
    }
}

/// `eth_call(request, block?, stateOverrides?, blockOverrides?)`.
pub async fn eth_call(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let outcome = call(backends, params, false).await?;
    to_value(Bytes::from(outcome.output))
}

/// geth's state overrides (third parameter of `eth_call` and `eth_estimateGas`) on the wire.
pub fn state_overrides(params: &[Value]) -> Result<Vec<v1::AccountOverride>, RpcError> {
    let Some(overrides): Option<StateOverride> = optional_param(params, 2)? else {
        return Ok(Vec::new());
    };
    wire_state_overrides(overrides)
}

/// geth's state overrides on the wire.
pub fn wire_state_overrides(
    overrides: StateOverride,
) -> Result<Vec<v1::AccountOverride>, RpcError> {
    let mut wire = Vec::with_capacity(overrides.len());
    for (address, account) in overrides {
        if account.move_precompile_to.is_some() {
            return Err(RpcError::invalid_params(
                "movePrecompileToAddress is not supported",
            ));
        }
        let (replace_storage, slots) = match (account.state, account.state_diff) {
            (Some(_), Some(_)) => {
                return Err(RpcError::invalid_params(format!(
                    "account {address} has both 'state' and 'stateDiff'"
                )));
            }
            (Some(state), None) => (true, state),
            (None, Some(diff)) => (false, diff),
            (None, None) => (false, Default::default()),
        };
        wire.push(v1::AccountOverride {
            address: address.to_vec(),
            balance: account.balance.map(u256_bytes).unwrap_or_default(),
            nonce: account.nonce,
            code: account.code.map(|c| c.to_vec()),
            replace_storage,
            storage: slots
                .into_iter()
                .map(|(slot, value)| v1::StorageOverride {
                    slot: slot.to_vec(),
                    value: value.to_vec(),
                })
                .collect(),
        });
    }
    Ok(wire)
}

/// geth's block overrides (fourth parameter) on the wire; fields this chain cannot honour are
/// refused by name.
fn block_overrides(params: &[Value]) -> Result<Option<v1::BlockOverrides>, RpcError> {
    let Some(overrides): Option<BlockOverrides> = optional_param(params, 3)? else {
        return Ok(None);
    };
    wire_block_overrides(overrides).map(Some)
}

/// geth's block overrides on the wire; fields this chain cannot honour are refused by name.
pub fn wire_block_overrides(overrides: BlockOverrides) -> Result<v1::BlockOverrides, RpcError> {
    for (name, set) in [
        ("difficulty", overrides.difficulty.is_some()),
        ("random (prevRandao)", overrides.random.is_some()),
        ("blobBaseFee", overrides.blob_base_fee.is_some()),
        ("blockHash", overrides.block_hash.is_some()),
    ] {
        if set {
            return Err(RpcError::invalid_params(format!(
                "block override {name} is not supported"
            )));
        }
    }
    let number = overrides
        .number
        .map(|n| {
            u64::try_from(n)
                .map_err(|_| RpcError::invalid_params("block override number exceeds 64 bits"))
        })
        .transpose()?;
    Ok(v1::BlockOverrides {
        number,
        time: overrides.time,
        gas_limit: overrides.gas_limit,
        coinbase: overrides.coinbase.map(|a| a.to_vec()).unwrap_or_default(),
        base_fee: overrides.base_fee.map(u256_bytes).unwrap_or_default(),
    })
}

async fn get_account(
    backends: &Backends,
    params: &[Value],
) -> Result<v1::AccountResponse, RpcError> {
    let address: Address = param(params, 0)?;
    let block: Option<BlockId> = optional_param(params, 1)?;
    Ok(backends
        .replica()
        .get_account(v1::AccountRequest {
            address: address.to_vec(),
            block: Some(block_id_to_wire(block)),
        })
        .await
        .map_err(from_status)?
        .into_inner())
}

async fn get_transaction_count(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let address: Address = param(params, 0)?;
    let block: Option<BlockId> = optional_param(params, 1)?;
    if matches!(block, Some(BlockId::Number(BlockNumberOrTag::Pending))) {
        // Only the sequencer knows the transactions waiting in its mempool.
        let state = backends
            .sequencer()
            .map_err(from_status)?
            .get_account(v1::GetAccountRequest {
                address: address.to_vec(),
            })
            .await
            .map_err(from_status)?
            .into_inner();
        return to_value(U64::from(state.pending_nonce));
    }
    let account = get_account(backends, params).await?;
    to_value(U64::from(account.nonce))
}

/// The hash of the block holding `stored`; `None` while that block is not sealed.
fn sealed_in(stored: &v1::StoredTransaction) -> Result<Option<B256>, RpcError> {
    if stored.block_hash.is_empty() {
        return Ok(None);
    }
    b256_from(&stored.block_hash, "block_hash")
        .map(Some)
        .map_err(wire_err)
}

fn decode_stored(
    stored: &v1::StoredTransaction,
) -> Result<(Transaction, Option<B256>, u64), RpcError> {
    let wire = stored
        .transaction
        .as_ref()
        .ok_or_else(|| RpcError::internal("stored transaction without body"))?;
    let tx = Transaction::try_from(wire).map_err(wire_err)?;
    let block_hash = sealed_in(stored)?;
    let base_fee = u256_from(&stored.base_fee, "base_fee")
        .map_err(wire_err)?
        .saturating_to::<u64>();
    Ok((tx, block_hash, base_fee))
}

/// A transaction not in any block yet (a pool's, a mini-block's as it is announced) in the RPC
/// shape: no block, index or effective gas price.
pub fn pending_rpc_transaction(tx: &Transaction) -> RpcTransaction {
    RpcTransaction {
        inner: tx.clone(),
        block_hash: None,
        block_number: None,
        transaction_index: None,
        effective_gas_price: None,
        block_timestamp: None,
    }
}

/// A transaction in the RPC shape. Until its block is sealed it is reported as pending (no
/// block hash, number or index), as a node reports a transaction in its pool.
pub fn rpc_transaction(stored: &v1::StoredTransaction) -> Result<RpcTransaction, RpcError> {
    let (tx, block_hash, base_fee) = decode_stored(stored)?;
    let sealed = block_hash.is_some();
    let effective = tx.effective_gas_price(Some(base_fee));
    Ok(RpcTransaction {
        inner: tx,
        block_hash,
        block_number: sealed.then_some(stored.block_number),
        transaction_index: sealed.then_some(stored.index),
        effective_gas_price: sealed.then_some(effective),
        block_timestamp: None,
    })
}

async fn get_receipt(backends: &Backends, hash: B256) -> Result<Value, RpcError> {
    // A receipt appears once its block is sealed, as geth's does once mined.
    match receipt_of(backends, hash)
        .await?
        .filter(|r| r.block_hash.is_some())
    {
        Some(receipt) => to_value(receipt),
        None => Ok(Value::Null),
    }
}

/// The receipt of `hash` as the replica has it: sealed (with its block hash) or only in a
/// mini-block of the open block (without).
pub async fn receipt_of(
    backends: &Backends,
    hash: B256,
) -> Result<Option<TransactionReceipt>, RpcError> {
    let response = backends
        .replica()
        .get_receipt(v1::TransactionRequest {
            hash: hash.to_vec(),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    rpc_receipt(&response)
}

/// A replica's receipt in the RPC shape; `None` when there is none.
pub(crate) fn rpc_receipt(
    response: &v1::ReceiptResponse,
) -> Result<Option<TransactionReceipt>, RpcError> {
    let (Some(stored), Some(receipt)) = (&response.transaction, &response.receipt) else {
        return Ok(None);
    };
    if !response.found {
        return Ok(None);
    }
    let receipt = Receipt::try_from(receipt).map_err(wire_err)?;
    let block_hash = sealed_in(stored)?;
    Ok(Some(build_receipt(
        &receipt,
        Position {
            block_hash,
            block_number: stored.block_number,
            transaction_index: stored.index,
            first_log_index: response.first_log_index,
        },
    )))
}

/// Where a receipt's transaction sits: in a sealed block (with its hash), or in a mini-block of
/// the block being built (no hash yet).
#[derive(Debug, Clone, Copy)]
pub struct Position {
    /// The block's hash, once sealed.
    pub block_hash: Option<B256>,
    /// The block's number.
    pub block_number: u64,
    /// The transaction's index in the block.
    pub transaction_index: u64,
    /// The index in the block of the transaction's first log.
    pub first_log_index: u64,
}

/// A receipt in the RPC shape at `at`.
pub fn build_receipt(receipt: &Receipt, at: Position) -> TransactionReceipt {
    let logs = receipt
        .logs
        .iter()
        .enumerate()
        .map(|(i, log)| RpcLog {
            inner: log.clone(),
            block_hash: at.block_hash,
            block_number: Some(at.block_number),
            block_timestamp: None,
            transaction_hash: Some(receipt.tx_hash),
            transaction_index: Some(at.transaction_index),
            log_index: Some(at.first_log_index + i as u64),
            removed: false,
        })
        .collect();
    let consensus = alloy_consensus::Receipt {
        status: alloy_consensus::Eip658Value::Eip658(receipt.success),
        cumulative_gas_used: receipt.cumulative_gas_used,
        logs,
    };
    TransactionReceipt {
        inner: ReceiptEnvelope::from_typed(
            receipt.tx_type,
            ReceiptWithBloom::new(consensus, receipt.bloom()),
        ),
        transaction_hash: receipt.tx_hash,
        transaction_index: Some(at.transaction_index),
        block_hash: at.block_hash,
        block_number: Some(at.block_number),
        gas_used: receipt.gas_used,
        effective_gas_price: receipt.effective_gas_price,
        blob_gas_used: None,
        blob_gas_price: None,
        from: receipt.from,
        to: receipt.to,
        contract_address: receipt.contract_address,
    }
}

async fn block_receipts(backends: &Backends, id: BlockId) -> Result<Value, RpcError> {
    match sealed_block_receipts(backends, id).await? {
        Some(receipts) => to_value(receipts),
        None => Ok(Value::Null),
    }
}

/// Every receipt of a sealed block, in order; `None` when there is no such block.
pub async fn sealed_block_receipts(
    backends: &Backends,
    id: BlockId,
) -> Result<Option<Vec<TransactionReceipt>>, RpcError> {
    let response = backends
        .replica()
        .get_block_receipts(v1::BlockRequest {
            block: Some(block_id_to_wire(Some(id))),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    if !response.found {
        return Ok(None);
    }
    response
        .receipts
        .iter()
        .map(|entry| {
            rpc_receipt(entry)?
                .filter(|r| r.block_hash.is_some())
                .ok_or_else(|| RpcError::internal("a sealed block's receipt is missing"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A sealed block (header, hash, transaction hashes); `None` when there is no such block.
pub async fn sealed_block(
    backends: &Backends,
    id: BlockId,
) -> Result<Option<verity_primitives::Block>, RpcError> {
    Ok(block_with_transactions(backends, id)
        .await?
        .map(|(block, _)| block))
}

async fn block_of(backends: &Backends, id: BlockId) -> Result<Option<v1::BlockResponse>, RpcError> {
    let response = backends
        .replica()
        .get_block(v1::BlockRequest {
            block: Some(block_id_to_wire(Some(id))),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    Ok(response.found.then_some(response))
}

async fn block_transaction_count(backends: &Backends, id: BlockId) -> Result<Value, RpcError> {
    match block_of(backends, id).await? {
        Some(block) => to_value(U64::from(
            block.block.map_or(0, |b| b.transaction_hashes.len()),
        )),
        None => Ok(Value::Null),
    }
}

/// The transaction at `index` of block `id` in the shape `shape` gives it; `null` when there is
/// no such block or index.
async fn transaction_by_index(
    backends: &Backends,
    id: BlockId,
    index: usize,
    shape: fn(&v1::StoredTransaction) -> Result<Value, RpcError>,
) -> Result<Value, RpcError> {
    let Some(block) = block_of(backends, id).await? else {
        return Ok(Value::Null);
    };
    match block.transactions.get(index) {
        Some(stored) => shape(stored),
        None => Ok(Value::Null),
    }
}

fn rpc_shape(stored: &v1::StoredTransaction) -> Result<Value, RpcError> {
    to_value(rpc_transaction(stored)?)
}

/// A stored transaction's signed EIP-2718 encoding, as it was sent.
fn raw_transaction(stored: &v1::StoredTransaction) -> Result<Value, RpcError> {
    use alloy_eips::eip2718::Encodable2718 as _;
    let (tx, _, _) = decode_stored(stored)?;
    to_value(Bytes::from(tx.inner().encoded_2718()))
}

/// The replica's record of transaction `hash` (sealed or in a mini-block); `None` when unknown.
async fn stored_transaction(
    backends: &Backends,
    hash: B256,
) -> Result<Option<v1::StoredTransaction>, RpcError> {
    let response = backends
        .replica()
        .get_transaction(v1::TransactionRequest {
            hash: hash.to_vec(),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    Ok(response.transaction.filter(|_| response.found))
}

async fn uncle_count(backends: &Backends, id: BlockId) -> Result<Value, RpcError> {
    match block_of(backends, id).await? {
        Some(_) => to_value(U64::ZERO),
        None => Ok(Value::Null),
    }
}

/// The part of `from..=to` a log filter's own range allows.
fn clamp(filter: &Filter, from: u64, to: u64) -> (u64, u64) {
    let from = match filter.block_option.get_from_block() {
        Some(BlockNumberOrTag::Number(n)) => from.max(*n),
        _ => from,
    };
    let to = match filter.block_option.get_to_block() {
        Some(BlockNumberOrTag::Number(n)) => to.min(*n),
        _ => to,
    };
    (from, to)
}

/// The code of `address` at `block` (`latest` when absent).
pub async fn code_at(
    backends: &Backends,
    address: Address,
    block: Option<BlockId>,
) -> Result<Bytes, RpcError> {
    let code = backends
        .replica()
        .get_code(v1::AccountRequest {
            address: address.to_vec(),
            block: Some(block_id_to_wire(block)),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    Ok(Bytes::from(code.code))
}

/// The block `id` names as the replica has it, with its transactions; `None` when there is none.
async fn block_with_transactions(
    backends: &Backends,
    id: BlockId,
) -> Result<Option<(verity_primitives::Block, v1::BlockResponse)>, RpcError> {
    let Some(response) = block_of(backends, id).await? else {
        return Ok(None);
    };
    let Some(wire) = &response.block else {
        return Ok(None);
    };
    let block = verity_primitives::Block::try_from(wire).map_err(wire_err)?;
    Ok(Some((block, response)))
}

/// geth's `eth_getHeaderBy*`: the block's header fields alone (`null` when there is no block).
async fn get_header(backends: &Backends, id: BlockId) -> Result<Value, RpcError> {
    match sealed_block(backends, id).await? {
        Some(block) => {
            let value = to_value(rpc_header(&block))?;
            with_state_root(backends, value, block.number(), block.hash).await
        }
        None => Ok(Value::Null),
    }
}

async fn get_block(backends: &Backends, id: BlockId, full: bool) -> Result<Value, RpcError> {
    match rpc_block(backends, id, full).await? {
        Some(block) => {
            let (number, hash) = (block.header.number, block.header.hash);
            with_state_root(backends, to_value(block)?, number, hash).await
        }
        None => Ok(Value::Null),
    }
}

/// A block or header object with `verityStateRoot`, the state tree's root after it, when the
/// gateway's witness has recorded it (the header's own `stateRoot` is zero: docs/json-rpc.md,
/// "Proofs of state").
async fn with_state_root(
    backends: &Backends,
    mut value: Value,
    number: u64,
    hash: B256,
) -> Result<Value, RpcError> {
    if let Some(root) = crate::proof::recorded_root(backends, number, hash).await {
        value["verityStateRoot"] = to_value(root)?;
    }
    Ok(value)
}

/// The block `id` names in the RPC shape, with its transactions' hashes or (`full`) bodies;
/// `None` when there is none.
pub async fn rpc_block(
    backends: &Backends,
    id: BlockId,
    full: bool,
) -> Result<Option<Block>, RpcError> {
    let Some((block, response)) = block_with_transactions(backends, id).await? else {
        return Ok(None);
    };
    let transactions = if full {
        BlockTransactions::Full(
            response
                .transactions
                .iter()
                .map(rpc_transaction)
                .collect::<Result<Vec<_>, _>>()?,
        )
    } else {
        BlockTransactions::Hashes(block.transaction_hashes.clone())
    };
    let rpc: Block = Block {
        header: rpc_header(&block),
        uncles: Vec::new(),
        transactions,
        withdrawals: None,
    };
    Ok(Some(rpc))
}

/// A block's header in the RPC shape.
pub fn rpc_header(block: &verity_primitives::Block) -> RpcHeader {
    RpcHeader {
        hash: block.hash,
        inner: block.header.clone(),
        total_difficulty: Some(U256::ZERO),
        size: Some(U256::from(block.header_size())),
    }
}

async fn call(
    backends: &Backends,
    params: &[Value],
    estimate_gas: bool,
) -> Result<v1::CallResponse, RpcError> {
    let wire = call_request(params, estimate_gas)?;
    let response = backends
        .replica()
        .call(wire)
        .await
        .map_err(from_status)?
        .into_inner();
    if response.success {
        return Ok(response);
    }
    if response.reverted {
        let data = Bytes::from(response.output.clone());
        let message = revert_message(&data);
        return Err(RpcError {
            code: EXECUTION_REVERTED,
            message,
            data: Some(json!(data)),
        });
    }
    let message = if response.error.is_empty() {
        "execution failed".to_string()
    } else {
        response.error
    };
    Err(RpcError::new(SERVER_ERROR, message))
}

/// The replica's request for `eth_call` / `eth_estimateGas` with `params` (transaction, block,
/// state overrides, block overrides), checked: what a client sends, before any backend is
/// asked (a fuzz target, `verity-fuzz`).
pub fn call_request(params: &[Value], estimate_gas: bool) -> Result<v1::CallRequest, RpcError> {
    let request: TransactionRequest = param(params, 0)?;
    let block: Option<BlockId> = optional_param(params, 1)?;
    Ok(v1::CallRequest {
        block: Some(block_id_to_wire(block)),
        estimate_gas,
        state_overrides: state_overrides(params)?,
        block_overrides: block_overrides(params)?,
        ..wire_call(&request)
    })
}

/// A call object on the wire: the message alone, no block, overrides or switches.
pub fn wire_call(request: &TransactionRequest) -> v1::CallRequest {
    let to = match request.to {
        Some(alloy_primitives::TxKind::Call(to)) => to.to_vec(),
        _ => Vec::new(),
    };
    let gas_price = request.gas_price.or(request.max_fee_per_gas);
    // The tip: a legacy price is paid whole (geth's fee cap = tip = gasPrice).
    let tip = request.gas_price.or(request.max_priority_fee_per_gas);
    v1::CallRequest {
        nonce: request.nonce,
        max_priority_fee_per_gas: tip.map(|p| u256_bytes(U256::from(p))).unwrap_or_default(),
        from: request.from.map(|a| a.to_vec()).unwrap_or_default(),
        to,
        data: request
            .input
            .input()
            .map(|d| d.to_vec())
            .unwrap_or_default(),
        value: request.value.map(u256_bytes).unwrap_or_default(),
        gas: request.gas.unwrap_or(0),
        gas_price: gas_price
            .map(|p| u256_bytes(U256::from(p)))
            .unwrap_or_default(),
        access_list: request
            .access_list
            .iter()
            .flat_map(|list| list.0.iter())
            .map(|item| v1::AccessListItem {
                address: item.address.to_vec(),
                storage_keys: item.storage_keys.iter().map(|k| k.to_vec()).collect(),
            })
            .collect(),
        ..v1::CallRequest::default()
    }
}

/// geth's `eth_createAccessList`: the access list the call touches and the gas it uses with
/// it; a call that reverts or halts still answers, with geth's `error` text beside them. One
/// refused before running (funds, intrinsic gas) is an error, as for `eth_call`.
async fn create_access_list(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let mut wire = call_request(params, false)?;
    wire.create_access_list = true;
    let response = backends
        .replica()
        .call(wire)
        .await
        .map_err(from_status)?
        .into_inner();
    if !response.success && !response.reverted && response.gas_used == 0 {
        return Err(RpcError::new(SERVER_ERROR, response.error));
    }
    let access_list = response
        .access_list
        .iter()
        .map(|item| {
            Ok(alloy_eips::eip2930::AccessListItem {
                address: Address::try_from(item.address.as_slice())
                    .map_err(|_| RpcError::internal("access list address is not 20 bytes"))?,
                storage_keys: item
                    .storage_keys
                    .iter()
                    .map(|k| b256_from(k, "storage_keys").map_err(wire_err))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<Vec<_>, RpcError>>()?;
    let mut answer = json!({
        "accessList": alloy_eips::eip2930::AccessList(access_list),
        "gasUsed": U64::from(response.gas_used),
    });
    if !response.success {
        answer["error"] = json!(response.error);
    }
    Ok(answer)
}

/// geth's text for a revert: "execution reverted", with the reason when the data is
/// `Error(string)`.
pub fn revert_message(data: &[u8]) -> String {
    match decode_revert_reason(data) {
        Some(reason) => format!("execution reverted: {reason}"),
        None => "execution reverted".to_string(),
    }
}

/// Decodes `Error(string)` revert data (selector 0x08c379a0) into its reason.
pub fn decode_revert_reason(data: &[u8]) -> Option<String> {
    let body = data.strip_prefix(&[0x08, 0xc3, 0x79, 0xa0])?;
    let offset = usize::try_from(U256::from_be_slice(body.get(..32)?)).ok()?;
    let len_word = body.get(offset..offset + 32)?;
    let len = usize::try_from(U256::from_be_slice(len_word)).ok()?;
    let text = body.get(offset + 32..offset + 32 + len)?;
    String::from_utf8(text.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solidity_error_string_is_decoded() {
        // Error("nope")
        let data = alloy_primitives::hex::decode(
            "08c379a0\
             0000000000000000000000000000000000000000000000000000000000000020\
             0000000000000000000000000000000000000000000000000000000000000004\
             6e6f706500000000000000000000000000000000000000000000000000000000",
        )
        .expect("hex");
        assert_eq!(decode_revert_reason(&data).as_deref(), Some("nope"));
        assert_eq!(decode_revert_reason(&[1, 2, 3]), None);
    }
}

#[cfg(test)]
mod method_table {
    use std::collections::BTreeSet;

    use super::METHODS;

    /// Methods of the WebSocket alone (handled in `crate::ws` before the table).
    const WEBSOCKET_ONLY: [&str; 2] = ["eth_subscribe", "eth_unsubscribe"];

    /// The `## Methods` table of docs/json-rpc.md: each row's method names and status.
    fn documented() -> Vec<(Vec<String>, String)> {
        let doc = include_str!("../../../docs/json-rpc.md");
        let section = doc
            .split("\n## Methods\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("docs/json-rpc.md has a Methods section");
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let names = cells[1]
                    .split(',')
                    .map(|name| name.trim().trim_matches('`').to_string())
                    .collect();
                (names, cells[2].to_string())
            })
            .collect()
    }

    #[test]
    fn the_method_table_is_the_documented_list() {
        let table: BTreeSet<&str> = METHODS.iter().map(|(name, _)| *name).collect();
        assert_eq!(table.len(), METHODS.len(), "a method is in the table twice");
        let mut served = BTreeSet::new();
        for (names, status) in documented() {
            for name in names {
                let known =
                    table.contains(name.as_str()) || WEBSOCKET_ONLY.contains(&name.as_str());
                match status.as_str() {
                    "yes" | "differs" | "extension" => {
                        assert!(
                            known,
                            "docs say {name} is served; the gateway has no such method"
                        );
                        served.insert(name);
                    }
                    "no" => {
                        let prefix = name.trim_end_matches('*');
                        assert!(
                            !table.iter().any(|m| if name.ends_with('*') {
                                m.starts_with(prefix)
                            } else {
                                *m == name
                            }),
                            "docs say {name} is not served; the gateway serves it"
                        );
                    }
                    other => panic!("unknown status {other:?} for {name}"),
                }
            }
        }
        for name in table {
            assert!(
                served.contains(name),
                "{name} is served but not in docs/json-rpc.md"
            );
        }
    }
}
