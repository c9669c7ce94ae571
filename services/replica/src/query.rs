//! The replica's gRPC read API, served from its own MDBX state. `call` runs on revm over that
//! state; nothing is ever written by a read.
//!
//! State reads name a block as Ethereum nodes do: `latest`/`pending` (or none) read the newest
//! applied mini-block; a number, a hash, `earliest`, `safe` or `finalized` read the state after
//! that sealed block, from the history tables every diff records (`verity_storage::StateAt`).

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256};
use tonic::{Request, Response, Status};
use verity_execution::{
    BlockEnvSpec, CallRequest,
    trace::{GethDebugTracingOptions, GethTrace, TraceError, TraceLimits},
};
use verity_primitives::{Account, ChainSpec, StateView, governance::Sequencing};
use verity_proto::{address_from, b256_from, opt_address_from, u256_bytes, u256_from, v1};
use verity_storage::{Database, ReadTx, StateAt, StorageError};

use crate::apply::meta;

/// The query service.
#[derive(Debug, Clone)]
pub struct QueryService {
    db: Database,
    spec: Arc<ChainSpec>,
    rules: Arc<Sequencing>,
    calls: Calls,
    ready: Option<verity_server::ReadinessSender>,
    proofs: crate::proof::ProofTree,
    /// The last event applied, as the follower advances it (`WatchApplied`).
    applied: Option<tokio::sync::watch::Receiver<u64>>,
}

/// How `Call` (`eth_call`, `eth_estimateGas`) is bounded: a public request must not take the
/// replica down or hold its threads and MDBX read transactions.
#[derive(clap::Args, Debug, Clone)]
pub struct CallBounds {
    /// Most gas one `eth_call` or `eth_estimateGas` may use, whatever its gas and block
    /// overrides ask for (geth's `--rpc.gascap`).
    #[arg(long, env = "VERITY_RPC_GAS_CAP", default_value_t = CallBounds::DEFAULT.rpc_gas_cap)]
    pub rpc_gas_cap: u64,
    /// Wall-clock limit of one call or estimate, after which its execution is stopped and its
    /// read transaction released (geth's `--rpc.evmtimeout`).
    #[arg(long, env = "VERITY_CALL_TIMEOUT_MS", default_value_t = CallBounds::DEFAULT.call_timeout_ms)]
    pub call_timeout_ms: u64,
    /// Most EVM memory one call may use, in MiB (all its frames together).
    #[arg(long, env = "VERITY_CALL_MEMORY_MIB", default_value_t = CallBounds::DEFAULT.call_memory_mib)]
    pub call_memory_mib: u64,
    /// Most calls executing at once; the others wait for a turn as long as the call timeout,
    /// then are refused. Default: half the cores, at least one (the rest follow the chain and
    /// serve reads).
    #[arg(long, env = "VERITY_MAX_CONCURRENT_CALLS")]
    pub max_concurrent_calls: Option<usize>,
    /// Most opcode steps the struct logger (`debug_trace*` without a tracer) records for one
    /// request; a longer trace is refused, not cut. Each step holds its stack (and memory when
    /// asked for), so this bounds a trace's memory and its answer. Traces share the call slots
    /// and the call timeout.
    #[arg(long, env = "VERITY_MAX_TRACE_STEPS", default_value_t = CallBounds::DEFAULT.max_trace_steps)]
    pub max_trace_steps: u64,
}

impl CallBounds {
    /// The flags' defaults (geth's gas cap and EVM timeout).
    pub const DEFAULT: Self = Self {
        rpc_gas_cap: 50_000_000,
        call_timeout_ms: 5_000,
        call_memory_mib: 64,
        max_concurrent_calls: None,
        max_trace_steps: 100_000,
    };
}

impl Default for CallBounds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// [`CallBounds`] in force: the limits and the turns.
#[derive(Debug, Clone)]
struct Calls {
    gas_cap: u64,
    limits: verity_execution::CallLimits,
    turns: Arc<tokio::sync::Semaphore>,
    max_trace_steps: u64,
}

impl Calls {
    fn new(bounds: &CallBounds) -> Self {
        let timeout = std::time::Duration::from_millis(bounds.call_timeout_ms.max(1));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            gas_cap: bounds.rpc_gas_cap.max(21_000),
            limits: verity_execution::CallLimits {
                memory_bytes: bounds.call_memory_mib.max(1) << 20,
                timeout: Some(timeout),
            },
            turns: Arc::new(tokio::sync::Semaphore::new(
                bounds.max_concurrent_calls.unwrap_or(cores / 2).max(1),
            )),
            max_trace_steps: bounds.max_trace_steps.max(1),
        }
    }
}

impl QueryService {
    /// Serves reads from `db`; `rules` are the sequencing rules this replica applies the chain
    /// under (`GetHead` reports the epoch they put in force, so the gateway checks signatures
    /// against the very key the replica does). Calls are bounded by [`CallBounds`]'s defaults.
    pub fn new(db: Database, spec: Arc<ChainSpec>, rules: Arc<Sequencing>) -> Self {
        Self {
            db,
            spec,
            rules,
            calls: Calls::new(&CallBounds::default()),
            ready: None,
            proofs: Default::default(),
            applied: None,
        }
    }

    /// The same service, streaming `applied` to `WatchApplied` watchers.
    pub fn with_applied(mut self, applied: tokio::sync::watch::Receiver<u64>) -> Self {
        self.applied = Some(applied);
        self
    }

    /// The same service, reporting in `GetHead` why the replica is not ready (`ready`).
    pub fn with_readiness(mut self, ready: verity_server::ReadinessSender) -> Self {
        self.ready = Some(ready);
        self
    }

    /// The same service with calls bounded by `bounds`.
    pub fn with_call_bounds(mut self, bounds: &CallBounds) -> Self {
        self.calls = Calls::new(bounds);
        self
    }

    /// A call slot: one call or trace executes per slot; one that finds none within the call
    /// timeout is refused rather than queued without end.
    async fn call_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        let wait = self.calls.limits.timeout.unwrap_or_default();
        tokio::time::timeout(wait, self.calls.turns.clone().acquire_owned())
            .await
            .map_err(|_| {
                metrics::counter!("verity_replica_calls_refused_total").increment(1);
                Status::resource_exhausted(
                    "too many concurrent calls: every call slot stayed busy for the call timeout; \
                     retry later",
                )
            })?
            .map_err(|_| Status::unavailable("the replica is stopping"))
    }

    async fn with_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTx<'_>, &ChainSpec) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let db = self.db.clone();
        let spec = self.spec.clone();
        tokio::task::spawn_blocking(move || {
            let read = db.read().map_err(storage)?;
            f(&read, &spec)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

use verity_server::status::storage;

/// The head block number (newest sealed block).
fn head_number(read: &ReadTx<'_>) -> Result<u64, Status> {
    Ok(read.last_block_number().map_err(storage)?.unwrap_or(0))
}

/// Resolves a block id to a sealed block number, if that block exists.
fn resolve_block(read: &ReadTx<'_>, id: Option<&v1::BlockId>) -> Result<Option<u64>, Status> {
    let head = head_number(read)?;
    let Some(id) = id.and_then(|i| i.id.as_ref()) else {
        return Ok(Some(head));
    };
    Ok(match id {
        v1::block_id::Id::Number(n) => (*n <= head).then_some(*n),
        v1::block_id::Id::Hash(h) => read
            .block_number_by_hash(b256_from(h, "block.hash")?)
            .map_err(storage)?,
        v1::block_id::Id::Tag(tag) => match v1::BlockTag::try_from(*tag) {
            Ok(v1::BlockTag::Earliest) => Some(0),
            Ok(v1::BlockTag::Safe) => Some(tagged(read, v1::BlockTag::Safe)?),
            Ok(v1::BlockTag::Finalized) => Some(tagged(read, v1::BlockTag::Finalized)?),
            _ => Some(head),
        },
    })
}

/// The `safe` or `finalized` block: the newest block registered verifiers attested (by one, or
/// by a quorum), never above the head this replica has.
fn heads(read: &ReadTx<'_>) -> Result<(Option<u64>, Option<u64>), Status> {
    let head = head_number(read)?;
    let safe = read
        .meta_u64(crate::heads::meta::SAFE_BLOCK)
        .map_err(storage)?
        .map(|n| n.min(head));
    let finalized = read
        .meta_u64(crate::heads::meta::FINALIZED_BLOCK)
        .map_err(storage)?
        .map(|n| n.min(head));
    Ok((safe, finalized))
}

fn tagged(read: &ReadTx<'_>, tag: v1::BlockTag) -> Result<u64, Status> {
    let (safe, finalized) = heads(read)?;
    let (block, name) = if tag == v1::BlockTag::Finalized {
        (finalized, "finalized")
    } else {
        (safe, "safe")
    };
    block.ok_or_else(|| {
        Status::not_found(format!(
            "{name} block not found: no registered verifier has attested a block yet"
        ))
    })
}

/// Which state a read is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The newest applied mini-block: `latest`, `pending`, or no block given.
    Latest,
    /// The state after this sealed block (from the history tables).
    Block(u64),
}

/// Resolves the block a state read names, as geth does: a number above the head is "header not
/// found", an unknown hash "header for hash not found"; a block older than the state history
/// this replica keeps is refused with where its history starts.
fn state_at(read: &ReadTx<'_>, id: Option<&v1::BlockId>) -> Result<At, Status> {
    let Some(id) = id.and_then(|i| i.id.as_ref()) else {
        return Ok(At::Latest);
    };
    let number = match id {
        v1::block_id::Id::Tag(tag) => match v1::BlockTag::try_from(*tag) {
            Ok(v1::BlockTag::Earliest) => 0,
            Ok(tag @ (v1::BlockTag::Safe | v1::BlockTag::Finalized)) => tagged(read, tag)?,
            Ok(v1::BlockTag::Latest | v1::BlockTag::Pending | v1::BlockTag::Unspecified) => {
                return Ok(At::Latest);
            }
            Err(_) => return Err(Status::invalid_argument(format!("unknown block tag {tag}"))),
        },
        v1::block_id::Id::Number(n) => {
            if *n > head_number(read)? {
                return Err(Status::not_found("header not found"));
            }
            *n
        }
        v1::block_id::Id::Hash(h) => read
            .block_number_by_hash(b256_from(h, "block.hash")?)
            .map_err(storage)?
            .ok_or_else(|| Status::not_found("header for hash not found"))?,
    };
    match read.history_from().map_err(storage)? {
        Some(from) if number >= from => Ok(At::Block(number)),
        from => Err(Status::failed_precondition(format!(
            "the state of block {number} is not available: this replica keeps state history from block {}",
            from.map_or_else(|| "its next sealed block".to_string(), |f| f.to_string())
        ))),
    }
}

/// The state a read runs over: the newest, or a past block's.
enum View<'a, 'db> {
    Latest(&'a ReadTx<'db>),
    At(StateAt<'a, 'db>),
}

impl<'a, 'db> View<'a, 'db> {
    fn new(read: &'a ReadTx<'db>, at: At) -> Self {
        match at {
            At::Latest => Self::Latest(read),
            At::Block(number) => Self::At(StateAt::new(read, number)),
        }
    }
}

impl StateView for View<'_, '_> {
    type Error = StorageError;

    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        match self {
            Self::Latest(read) => read.account(address),
            Self::At(state) => state.account(address),
        }
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        match self {
            Self::Latest(read) => read.storage(address, slot),
            Self::At(state) => state.storage(address, slot),
        }
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, StorageError> {
        match self {
            Self::Latest(read) => read.code(code_hash),
            Self::At(state) => state.code(code_hash),
        }
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        match self {
            Self::Latest(read) => read.block_hash(number),
            Self::At(state) => state.block_hash(number),
        }
    }
}

/// One account as a call's state overrides describe it.
#[derive(Debug, Default)]
struct Override {
    balance: Option<U256>,
    nonce: Option<u64>,
    code: Option<(B256, Bytes)>,
    replace_storage: bool,
    storage: std::collections::HashMap<U256, U256>,
}

/// A state view with geth's state overrides laid over it.
struct Overridden<V> {
    inner: V,
    accounts: std::collections::HashMap<Address, Override>,
}

impl<V> Overridden<V> {
    fn new(inner: V, wire: &[v1::AccountOverride]) -> Result<Self, Status> {
        let mut accounts = std::collections::HashMap::new();
        for entry in wire {
            let address = address_from(&entry.address, "state_overrides.address")?;
            let mut storage = std::collections::HashMap::new();
            for slot in &entry.storage {
                storage.insert(
                    u256_from(&slot.slot, "state_overrides.storage.slot")?,
                    u256_from(&slot.value, "state_overrides.storage.value")?,
                );
            }
            let code = entry.code.as_ref().map(|code| {
                let code = Bytes::from(code.clone());
                (alloy_primitives::keccak256(&code), code)
            });
            let balance = if entry.balance.is_empty() {
                None
            } else {
                Some(u256_from(&entry.balance, "state_overrides.balance")?)
            };
            accounts.insert(
                address,
                Override {
                    balance,
                    nonce: entry.nonce,
                    code,
                    replace_storage: entry.replace_storage,
                    storage,
                },
            );
        }
        Ok(Self { inner, accounts })
    }
}

impl<V: StateView<Error = StorageError>> StateView for Overridden<V> {
    type Error = StorageError;

    fn account(&self, address: Address) -> Result<Option<Account>, StorageError> {
        let stored = self.inner.account(address)?;
        let Some(change) = self.accounts.get(&address) else {
            return Ok(stored);
        };
        let mut account = stored.unwrap_or_default();
        if let Some(balance) = change.balance {
            account.balance = balance;
        }
        if let Some(nonce) = change.nonce {
            account.nonce = nonce;
        }
        if let Some((hash, _)) = &change.code {
            account.code_hash = *hash;
        }
        Ok(Some(account))
    }

    fn storage(&self, address: Address, slot: U256) -> Result<U256, StorageError> {
        match self.accounts.get(&address) {
            Some(change) => match change.storage.get(&slot) {
                Some(value) => Ok(*value),
                None if change.replace_storage => Ok(U256::ZERO),
                None => self.inner.storage(address, slot),
            },
            None => self.inner.storage(address, slot),
        }
    }

    fn code(&self, code_hash: B256) -> Result<Option<Bytes>, StorageError> {
        for change in self.accounts.values() {
            if let Some((hash, code)) = &change.code
                && *hash == code_hash
            {
                return Ok(Some(code.clone()));
            }
        }
        self.inner.code(code_hash)
    }

    fn block_hash(&self, number: u64) -> Result<Option<B256>, StorageError> {
        self.inner.block_hash(number)
    }
}

/// `env` with geth's block overrides applied.
fn override_env(
    mut env: BlockEnvSpec,
    overrides: Option<&v1::BlockOverrides>,
) -> Result<BlockEnvSpec, Status> {
    let Some(overrides) = overrides else {
        return Ok(env);
    };
    if let Some(number) = overrides.number {
        env.number = number;
    }
    if let Some(time) = overrides.time {
        env.timestamp = time;
    }
    if let Some(gas_limit) = overrides.gas_limit {
        env.gas_limit = gas_limit;
    }
    if !overrides.coinbase.is_empty() {
        env.beneficiary = address_from(&overrides.coinbase, "block_overrides.coinbase")?;
    }
    if !overrides.base_fee.is_empty() {
        env.base_fee = u64::try_from(u256_from(&overrides.base_fee, "block_overrides.base_fee")?)
            .map_err(|_| {
            Status::invalid_argument("block_overrides.base_fee exceeds 64 bits")
        })?;
    }
    Ok(env)
}

/// The environment a call at sealed block `number` runs in: that block's own header, as geth's
/// `eth_call` uses it.
fn block_env(read: &ReadTx<'_>, spec: &ChainSpec, number: u64) -> Result<BlockEnvSpec, Status> {
    let block = read
        .block_by_number(number)
        .map_err(storage)?
        .ok_or_else(|| Status::not_found("header not found"))?;
    Ok(BlockEnvSpec {
        chain_id: spec.chain_id(),
        number,
        timestamp: block.header.timestamp,
        base_fee: block.header.base_fee_per_gas.unwrap_or_default(),
        gas_limit: block.header.gas_limit,
        beneficiary: block.header.beneficiary,
    })
}

/// The environment of the block being built: what `latest` calls execute in.
fn pending_env(read: &ReadTx<'_>, spec: &ChainSpec) -> Result<BlockEnvSpec, Status> {
    let number = head_number(read)?;
    let head = read
        .block_by_number(number)
        .map_err(storage)?
        .ok_or_else(|| Status::internal("head block missing"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(BlockEnvSpec {
        chain_id: spec.chain_id(),
        number: number + 1,
        timestamp: now.max(head.header.timestamp + 1),
        base_fee: spec.next_base_fee(&head.header),
        gas_limit: spec.gas_limit(),
        beneficiary: head.header.beneficiary,
    })
}

fn block_response(read: &ReadTx<'_>, number: u64) -> Result<v1::BlockResponse, Status> {
    let Some(block) = read.block_by_number(number).map_err(storage)? else {
        return Ok(v1::BlockResponse::default());
    };
    let mut transactions = Vec::with_capacity(block.transaction_hashes.len());
    for hash in &block.transaction_hashes {
        if let Some(tx) = read.transaction(*hash).map_err(storage)? {
            transactions.push(tx);
        }
    }
    Ok(v1::BlockResponse {
        found: true,
        block: Some((&block).into()),
        transactions,
    })
}

/// Index of the first log of `tx` within its block.
fn first_log_index(read: &ReadTx<'_>, stored: &v1::StoredTransaction) -> Result<u64, Status> {
    let hashes = read
        .block_transaction_hashes(stored.block_number)
        .map_err(storage)?;
    let mut index = 0u64;
    for hash in hashes.iter().take(stored.index as usize) {
        if let Some(receipt) = read.receipt(*hash).map_err(storage)? {
            index += receipt.logs.len() as u64;
        }
    }
    Ok(index)
}

fn topic_matches(filter: &[v1::TopicFilter], topics: &[B256]) -> bool {
    filter.iter().enumerate().all(|(i, f)| {
        f.values.is_empty()
            || topics
                .get(i)
                .is_some_and(|t| f.values.iter().any(|v| v.as_slice() == t.as_slice()))
    })
}

#[tonic::async_trait]
impl v1::replica_server::Replica for QueryService {
    type WatchAppliedStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<v1::AppliedSeq, Status>> + Send + 'static>,
    >;

    async fn watch_applied(
        &self,
        _request: Request<v1::GetHeadRequest>,
    ) -> Result<Response<Self::WatchAppliedStream>, Status> {
        use futures::StreamExt as _;
        let applied = self
            .applied
            .clone()
            .ok_or_else(|| Status::unimplemented("this replica does not follow a chain"))?;
        let stream = tokio_stream::wrappers::WatchStream::new(applied)
            .map(|last_seq| Ok(v1::AppliedSeq { last_seq }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_proof(
        &self,
        request: Request<v1::ProofRequest>,
    ) -> Result<Response<v1::ProofResponse>, Status> {
        let request = request.into_inner();
        // No address: the root and its attestations only.
        let address = if request.address.is_empty() {
            None
        } else {
            Some(address_from(&request.address, "address")?)
        };
        let slots = request
            .slots
            .iter()
            .map(|s| u256_from(s, "slot"))
            .collect::<Result<Vec<_>, _>>()?;
        let number = request.block_number;
        let Some(address) = address else {
            if !slots.is_empty() {
                return Err(Status::invalid_argument("storage keys without an address"));
            }
            // The root alone is a lookup of what the witness recorded: no tree, no call slot.
            return self
                .with_read(move |read, _| crate::proof::recorded_root(read, number))
                .await
                .map(Response::new);
        };
        // Moving the tree hashes: it takes a call slot like any other execution.
        let _turn = self.call_turn().await?;
        let proofs = self.proofs.clone();
        self.with_read(move |read, _| {
            proofs
                .prove(read, address, slots, number)
                .map(Response::new)
        })
        .await
    }

    async fn get_state_digest(
        &self,
        _request: Request<v1::GetStateDigestRequest>,
    ) -> Result<Response<v1::StateDigest>, Status> {
        self.with_read(|read, _| {
            let digest = read.state_digest().map_err(storage)?;
            Ok(Response::new(v1::StateDigest {
                last_seq: read.meta_u64(meta::LAST_SEQ).map_err(storage)?.unwrap_or(0),
                digest: digest.digest.to_vec(),
                accounts: digest.accounts,
                slots: digest.slots,
                codes: digest.codes,
            }))
        })
        .await
    }

    async fn get_head(
        &self,
        _request: Request<v1::GetHeadRequest>,
    ) -> Result<Response<v1::ReplicaHead>, Status> {
        let rules = self.rules.clone();
        let not_ready = self
            .ready
            .as_ref()
            .and_then(|r| r.reason())
            .unwrap_or_default();
        self.with_read(move |read, spec| {
            let number = head_number(read)?;
            let head = read
                .block_by_number(number)
                .map_err(storage)?
                .ok_or_else(|| Status::internal("head block missing"))?;
            // The epoch in force as this replica enforces it: the stored one after a handover,
            // else epoch 0 under genesis's sequencer or `--sequencer-address`.
            let epoch = rules.current(
                read.meta(verity_primitives::governance::EPOCH_META_KEY)
                    .map_err(storage)?
                    .as_deref(),
            );
            Ok(Response::new(v1::ReplicaHead {
                block_number: number,
                block_hash: head.hash.to_vec(),
                mini_block_number: read
                    .meta_u64(meta::NEXT_MINI_BLOCK)
                    .map_err(storage)?
                    .unwrap_or(0),
                last_seq: read.meta_u64(meta::LAST_SEQ).map_err(storage)?.unwrap_or(0),
                chain_id: spec.chain_id(),
                base_fee: u256_bytes(U256::from(spec.next_base_fee(&head.header))),
                block_gas_limit: spec.gas_limit(),
                safe_block_number: heads(read)?.0,
                finalized_block_number: heads(read)?.1,
                alarm: crate::heads::alarm(read)
                    .map_err(storage)?
                    .unwrap_or_default(),
                epoch: epoch.number,
                epoch_sequencer: epoch.sequencer.to_vec(),
                not_ready,
            }))
        })
        .await
    }

    async fn get_account(
        &self,
        request: Request<v1::AccountRequest>,
    ) -> Result<Response<v1::AccountResponse>, Status> {
        let request = request.into_inner();
        let address = address_from(&request.address, "address")?;
        self.with_read(move |read, _| {
            let view = View::new(read, state_at(read, request.block.as_ref())?);
            let account = view.account(address).map_err(storage)?.unwrap_or_default();
            Ok(Response::new(v1::AccountResponse {
                nonce: account.nonce,
                balance: u256_bytes(account.balance),
                code_hash: account.code_hash.to_vec(),
            }))
        })
        .await
    }

    async fn get_storage(
        &self,
        request: Request<v1::StorageRequest>,
    ) -> Result<Response<v1::StorageResponse>, Status> {
        let request = request.into_inner();
        let address = address_from(&request.address, "address")?;
        let slot = u256_from(&request.slot, "slot")?;
        self.with_read(move |read, _| {
            let view = View::new(read, state_at(read, request.block.as_ref())?);
            let value = view.storage(address, slot).map_err(storage)?;
            Ok(Response::new(v1::StorageResponse {
                value: u256_bytes(value),
            }))
        })
        .await
    }

    async fn get_code(
        &self,
        request: Request<v1::AccountRequest>,
    ) -> Result<Response<v1::CodeResponse>, Status> {
        let request = request.into_inner();
        let address = address_from(&request.address, "address")?;
        self.with_read(move |read, _| {
            let view = View::new(read, state_at(read, request.block.as_ref())?);
            let code = match view.account(address).map_err(storage)? {
                Some(account) => view
                    .code(account.code_hash)
                    .map_err(storage)?
                    .unwrap_or_default(),
                None => Bytes::new(),
            };
            Ok(Response::new(v1::CodeResponse {
                code: code.to_vec(),
            }))
        })
        .await
    }

    async fn get_block(
        &self,
        request: Request<v1::BlockRequest>,
    ) -> Result<Response<v1::BlockResponse>, Status> {
        let request = request.into_inner();
        self.with_read(move |read, _| {
            let Some(number) = resolve_block(read, request.block.as_ref())? else {
                return Ok(Response::new(v1::BlockResponse::default()));
            };
            Ok(Response::new(block_response(read, number)?))
        })
        .await
    }

    async fn get_transaction(
        &self,
        request: Request<v1::TransactionRequest>,
    ) -> Result<Response<v1::TransactionResponse>, Status> {
        let hash = b256_from(&request.into_inner().hash, "hash")?;
        self.with_read(move |read, _| {
            let transaction = read.transaction(hash).map_err(storage)?;
            Ok(Response::new(v1::TransactionResponse {
                found: transaction.is_some(),
                transaction,
            }))
        })
        .await
    }

    async fn get_receipt(
        &self,
        request: Request<v1::TransactionRequest>,
    ) -> Result<Response<v1::ReceiptResponse>, Status> {
        let hash = b256_from(&request.into_inner().hash, "hash")?;
        self.with_read(move |read, _| {
            let Some(stored) = read.transaction(hash).map_err(storage)? else {
                return Ok(Response::new(v1::ReceiptResponse::default()));
            };
            let Some(receipt) = read.receipt(hash).map_err(storage)? else {
                return Ok(Response::new(v1::ReceiptResponse::default()));
            };
            let first_log_index = if stored.block_hash.is_empty() {
                0
            } else {
                first_log_index(read, &stored)?
            };
            Ok(Response::new(v1::ReceiptResponse {
                found: true,
                transaction: Some(stored),
                receipt: Some((&receipt).into()),
                first_log_index,
            }))
        })
        .await
    }

    async fn get_block_receipts(
        &self,
        request: Request<v1::BlockRequest>,
    ) -> Result<Response<v1::BlockReceiptsResponse>, Status> {
        let request = request.into_inner();
        self.with_read(move |read, _| {
            let Some(number) = resolve_block(read, request.block.as_ref())? else {
                return Ok(Response::new(v1::BlockReceiptsResponse::default()));
            };
            let Some(block) = read.block_by_number(number).map_err(storage)? else {
                return Ok(Response::new(v1::BlockReceiptsResponse::default()));
            };
            let mut receipts = Vec::with_capacity(block.transaction_hashes.len());
            let mut first_log_index = 0u64;
            for hash in &block.transaction_hashes {
                let stored = read.transaction(*hash).map_err(storage)?;
                let receipt = read.receipt(*hash).map_err(storage)?;
                let (Some(stored), Some(receipt)) = (stored, receipt) else {
                    return Err(Status::internal(format!(
                        "block {number} lists transaction {hash}, which is not stored"
                    )));
                };
                let logs = receipt.logs.len() as u64;
                receipts.push(v1::ReceiptResponse {
                    found: true,
                    transaction: Some(stored),
                    receipt: Some((&receipt).into()),
                    first_log_index,
                });
                first_log_index += logs;
            }
            Ok(Response::new(v1::BlockReceiptsResponse {
                found: true,
                receipts,
            }))
        })
        .await
    }

    async fn get_logs(
        &self,
        request: Request<v1::LogsRequest>,
    ) -> Result<Response<v1::LogsResponse>, Status> {
        let request = request.into_inner();
        let addresses = request
            .addresses
            .iter()
            .map(|a| address_from(a, "addresses"))
            .collect::<Result<Vec<Address>, _>>()?;
        self.with_read(move |read, _| {
            let head = head_number(read)?;
            let to = request.to_block.min(head);
            // One log past the caller's cap tells it the query is too broad: read no further.
            let enough = match request.max_logs {
                0 => usize::MAX,
                max => usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1),
            };
            let mut logs = Vec::new();
            'blocks: for number in request.from_block..=to {
                let Some(block) = read.block_by_number(number).map_err(storage)? else {
                    continue;
                };
                let mut log_index = 0u64;
                for (tx_index, hash) in block.transaction_hashes.iter().enumerate() {
                    let Some(receipt) = read.receipt(*hash).map_err(storage)? else {
                        continue;
                    };
                    for log in &receipt.logs {
                        let resumed =
                            number > request.from_block || log_index >= request.from_log_index;
                        let matches = resumed
                            && (addresses.is_empty() || addresses.contains(&log.address))
                            && topic_matches(&request.topics, log.topics());
                        if matches {
                            logs.push(v1::IndexedLog {
                                log: Some(log.into()),
                                block_number: number,
                                block_hash: block.hash.to_vec(),
                                tx_hash: hash.to_vec(),
                                tx_index: tx_index as u64,
                                log_index,
                            });
                            if logs.len() >= enough {
                                break 'blocks;
                            }
                        }
                        log_index += 1;
                    }
                }
            }
            Ok(Response::new(v1::LogsResponse { logs }))
        })
        .await
    }

    async fn call(
        &self,
        request: Request<v1::CallRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let request = request.into_inner();
        let call = call_of(&request, self.calls.limits)?;
        let _turn = self.call_turn().await?;
        let gas_cap = self.calls.gas_cap;
        self.with_read(move |read, spec| {
            let (view, env, call) = call_setup(read, spec, &request, call, gas_cap)?;
            let outcome = if request.create_access_list {
                let found =
                    verity_execution::create_access_list(&view, &env, &call).map_err(call_error)?;
                v1::CallResponse {
                    access_list: found
                        .access_list
                        .iter()
                        .map(|item| v1::AccessListItem {
                            address: item.address.to_vec(),
                            storage_keys: item.storage_keys.iter().map(|k| k.to_vec()).collect(),
                        })
                        .collect(),
                    ..call_response(found.outcome)
                }
            } else if request.estimate_gas {
                match verity_execution::estimate_gas(&view, &env, &call).map_err(call_error)? {
                    Ok(gas) => v1::CallResponse {
                        success: true,
                        gas_used: gas,
                        ..Default::default()
                    },
                    Err(failed) => call_response(failed),
                }
            } else {
                call_response(verity_execution::call(&view, &env, &call).map_err(call_error)?)
            };
            Ok(Response::new(outcome))
        })
        .await
    }

    async fn trace(
        &self,
        request: Request<v1::TraceRequest>,
    ) -> Result<Response<v1::TraceResponse>, Status> {
        use v1::trace_request::Target;
        let request = request.into_inner();
        let options: GethDebugTracingOptions = if request.options_json.is_empty() {
            GethDebugTracingOptions::default()
        } else {
            serde_json::from_str(&request.options_json)
                .map_err(|e| Status::invalid_argument(format!("invalid tracer options: {e}")))?
        };
        let target = request
            .target
            .ok_or_else(|| Status::invalid_argument("trace: no transaction, block or call"))?;
        if let Target::Call(call) = &target
            && (call.estimate_gas || call.create_access_list)
        {
            return Err(Status::invalid_argument(
                "trace: a traced call neither estimates gas nor creates an access list",
            ));
        }
        let call_limits = self.calls.limits;
        let parity = request.parity;
        let limits = TraceLimits {
            timeout: self.calls.limits.timeout.unwrap_or_default(),
            max_steps: self.calls.max_trace_steps,
        };
        let gas_cap = self.calls.gas_cap;
        let _turn = self.call_turn().await?;
        self.with_read(move |read, spec| {
            let traces = match target {
                Target::Call(wire) => {
                    let call = call_of(&wire, call_limits)?;
                    let (view, env, call) = call_setup(read, spec, &wire, call, gas_cap)?;
                    let trace = verity_execution::trace::trace_call(
                        &view,
                        &env,
                        &call,
                        &options,
                        limits.max_steps,
                    )
                    .map_err(trace_error)?;
                    vec![(None, trace)]
                }
                Target::TransactionHash(hash) => {
                    let hash = b256_from(&hash, "transaction_hash")?;
                    let stored = read
                        .transaction(hash)
                        .map_err(storage)?
                        .ok_or_else(|| Status::not_found("transaction not found"))?;
                    if stored.block_hash.is_empty() {
                        return Err(Status::failed_precondition(format!(
                            "transaction {hash} is in block {}, which is not sealed yet; it can be \
                             traced once it is",
                            stored.block_number
                        )));
                    }
                    let replay = Replay::of(read, spec, stored.block_number)?;
                    let index = replay
                        .txs
                        .iter()
                        .position(|tx| *tx.tx_hash() == hash)
                        .ok_or_else(|| {
                            Status::internal(format!(
                                "transaction {hash} is not among the transactions of its block {}",
                                stored.block_number
                            ))
                        })?;
                    replay.trace(read, index..index + 1, &options, limits, parity)?
                }
                Target::Block(id) => {
                    let number = resolve_block(read, Some(&id))?
                        .ok_or_else(|| Status::not_found("block not found"))?;
                    let replay = Replay::of(read, spec, number)?;
                    replay.trace(read, 0..replay.txs.len(), &options, limits, parity)?
                }
            };
            let mut answer = v1::TraceResponse::default();
            let mut bytes = 0usize;
            for (hash, trace) in traces {
                let json = serde_json::to_string(&trace)
                    .map_err(|e| Status::internal(format!("trace: {e}")))?;
                bytes += json.len();
                if bytes > MAX_TRACE_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "the trace exceeds {MAX_TRACE_BYTES} bytes, the most this node answers \
                         with: trace fewer transactions, or with a tracer or options that record \
                         less (disableStack, no enableMemory)"
                    )));
                }
                answer.traces.push(v1::TransactionTrace {
                    transaction_hash: hash.map(|h: B256| h.to_vec()).unwrap_or_default(),
                    result_json: json,
                });
            }
            Ok(Response::new(answer))
        })
        .await
    }

    async fn search_transactions(
        &self,
        request: Request<v1::SearchTransactionsRequest>,
    ) -> Result<Response<v1::SearchTransactionsResponse>, Status> {
        let request = request.into_inner();
        let address = address_from(&request.address, "address")?;
        let page_size = request.page_size.clamp(1, 100) as usize;
        let search = if request.before {
            verity_storage::AddressSearch::Before(request.block)
        } else {
            verity_storage::AddressSearch::After(request.block)
        };
        self.with_read(move |read, _| {
            let (entries, more) = read
                .address_transactions(address, search, page_size)
                .map_err(storage)?;
            let mut transactions = Vec::with_capacity(entries.len());
            let mut timestamps: std::collections::HashMap<u64, u64> = Default::default();
            for entry in entries {
                let (Some(stored), Some(receipt)) = (
                    read.transaction(entry.hash).map_err(storage)?,
                    read.receipt(entry.hash).map_err(storage)?,
                ) else {
                    return Err(Status::internal(format!(
                        "the address index names transaction {} of block {}, which is not stored",
                        entry.hash, entry.block
                    )));
                };
                let timestamp = match timestamps.get(&entry.block) {
                    Some(t) => *t,
                    None => {
                        let t = read
                            .block_by_number(entry.block)
                            .map_err(storage)?
                            .map_or(0, |b| b.header.timestamp);
                        timestamps.insert(entry.block, t);
                        t
                    }
                };
                transactions.push(v1::SearchedTransaction {
                    transaction: Some(stored),
                    receipt: Some((&receipt).into()),
                    timestamp,
                });
            }
            Ok(Response::new(v1::SearchTransactionsResponse {
                transactions,
                more,
            }))
        })
        .await
    }

    async fn simulate(
        &self,
        request: Request<v1::SimulateRequest>,
    ) -> Result<Response<v1::SimulateResponse>, Status> {
        use verity_execution::simulate;
        let request = request.into_inner();
        if request.blocks.len() > MAX_SIMULATED_BLOCKS {
            return Err(Status::resource_exhausted(format!(
                "too many simulated blocks: {}, at most {MAX_SIMULATED_BLOCKS}",
                request.blocks.len()
            )));
        }
        let calls: usize = request.blocks.iter().map(|b| b.calls.len()).sum();
        if calls > MAX_SIMULATED_CALLS {
            return Err(Status::resource_exhausted(format!(
                "too many simulated calls: {calls}, at most {MAX_SIMULATED_CALLS}"
            )));
        }
        let base_overrides = simulated_overrides(&request.state_overrides)?;
        let mut blocks = Vec::with_capacity(request.blocks.len());
        for block in &request.blocks {
            let mut calls = Vec::with_capacity(block.calls.len());
            for call in &block.calls {
                if call.block.is_some()
                    || call.estimate_gas
                    || call.create_access_list
                    || !call.state_overrides.is_empty()
                    || call.block_overrides.is_some()
                {
                    return Err(Status::invalid_argument(
                        "a simulated call names no block, overrides, gas estimate or access list \
                         of its own: its simulated block does",
                    ));
                }
                let mut simulated = call_of(call, self.calls.limits)?;
                if request.validation {
                    simulated.nonce = call.nonce;
                }
                calls.push(simulated);
            }
            blocks.push((
                block.block_overrides.clone(),
                simulated_overrides(&block.state_overrides)?,
                calls,
                block.base_fee_from_parent,
            ));
        }
        let limits = simulate::SimulationLimits {
            timeout: self.calls.limits.timeout.unwrap_or_default(),
            gas_budget: self.calls.gas_cap,
        };
        let gas_cap = self.calls.gas_cap;
        let _turn = self.call_turn().await?;
        self.with_read(move |read, spec| {
            let at = state_at(read, request.block.as_ref())?;
            let (view, env, replay) = match (at, request.transaction_index) {
                (At::Latest, Some(_)) => {
                    return Err(Status::invalid_argument(
                        "a transaction index needs a sealed block (a number or a hash), not \
                         latest or pending",
                    ));
                }
                (At::Latest, None) => (View::new(read, at), pending_env(read, spec)?, None),
                (At::Block(number), None) => {
                    (View::new(read, at), block_env(read, spec, number)?, None)
                }
                (At::Block(number), Some(index)) => {
                    let replay = Replay::of(read, spec, number)?;
                    let index = usize::try_from(index)
                        .ok()
                        .filter(|i| *i <= replay.txs.len())
                        .ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "transaction index {index} is past the {} transactions of block \
                                 {number}",
                                replay.txs.len()
                            ))
                        })?;
                    let before = if number == 0 {
                        View::new(read, At::Block(0))
                    } else {
                        View::At(StateAt::new(read, number - 1))
                    };
                    (before, replay.env, Some((replay, index)))
                }
            };
            let block_gas = request.block_gas;
            let blocks = blocks
                .into_iter()
                .map(|(overrides, state, calls, base_fee_from_parent)| {
                    let env = override_env(env, overrides.as_ref())?;
                    let calls = calls
                        .into_iter()
                        .map(|mut call| {
                            // With block gas accounting a call without gas takes what its
                            // block has left; the gas cap still bounds every call.
                            call.gas = match (call.gas, block_gas) {
                                (None, true) => None,
                                (gas, _) => Some(gas.unwrap_or(env.gas_limit).min(gas_cap)),
                            };
                            call
                        })
                        .collect();
                    Ok(simulate::SimulatedBlock {
                        env,
                        base_fee_from_parent,
                        overrides: state,
                        calls,
                    })
                })
                .collect::<Result<Vec<_>, Status>>()?;
            // The base block's fees, for blocks whose base fee follows their parent's: the
            // sealed block the simulation starts after (with `latest`, the newest).
            let base_number = match at {
                At::Block(number) => number,
                At::Latest => head_number(read)?,
            };
            let base_header = read
                .block_by_number(base_number)
                .map_err(storage)?
                .map(|b| b.header)
                .ok_or_else(|| Status::not_found(format!("block {base_number} not found")))?;
            let parent = simulate::ParentFees {
                gas_limit: base_header.gas_limit,
                gas_used: base_header.gas_used,
                base_fee: base_header.base_fee_per_gas.unwrap_or_default(),
            };
            let next_base_fee = |parent: &simulate::ParentFees| {
                spec.next_base_fee(&verity_primitives::Header {
                    gas_limit: parent.gas_limit,
                    gas_used: parent.gas_used,
                    base_fee_per_gas: Some(parent.base_fee),
                    ..Default::default()
                })
            };
            let mode = simulate::SimulationMode {
                validation: request.validation,
                block_gas,
                fees: Some((parent, &next_base_fee)),
            };
            let replay = replay.as_ref().map(|(replay, index)| simulate::Replay {
                env: &replay.env,
                transactions: &replay.txs[..*index],
                receipts_gas: Some(&replay.receipts_gas[..*index]),
            });
            let results = simulate::simulate(&view, replay, &base_overrides, &blocks, limits, mode)
                .map_err(call_error)?;
            Ok(Response::new(v1::SimulateResponse {
                blocks: results
                    .into_iter()
                    .map(|block| v1::SimulatedBlockResult {
                        base_fee: block.base_fee,
                        gas_used: block.gas_used,
                        calls: block
                            .calls
                            .into_iter()
                            .map(|call| v1::CallResponse {
                                logs: call.logs.iter().map(v1::Log::from).collect(),
                                ..call_response(call.outcome)
                            })
                            .collect(),
                    })
                    .collect(),
            }))
        })
        .await
    }
}

/// Most blocks one simulation may hold (geth's bound for `eth_simulateV1`).
const MAX_SIMULATED_BLOCKS: usize = 256;
/// Most calls one simulation may hold, over all its blocks (the gateway's batch bound).
const MAX_SIMULATED_CALLS: usize = 1000;

/// State overrides on the wire as a simulation lays them over its state.
fn simulated_overrides(
    wire: &[v1::AccountOverride],
) -> Result<Vec<verity_execution::simulate::AccountOverride>, Status> {
    use verity_execution::simulate::{AccountOverride, StorageOverride};
    wire.iter()
        .map(|entry| {
            let slots = entry
                .storage
                .iter()
                .map(|slot| {
                    Ok((
                        u256_from(&slot.slot, "state_overrides.storage.slot")?,
                        u256_from(&slot.value, "state_overrides.storage.value")?,
                    ))
                })
                .collect::<Result<Vec<_>, Status>>()?;
            Ok(AccountOverride {
                address: address_from(&entry.address, "state_overrides.address")?,
                balance: (!entry.balance.is_empty())
                    .then(|| u256_from(&entry.balance, "state_overrides.balance"))
                    .transpose()?,
                nonce: entry.nonce,
                code: entry.code.clone().map(Bytes::from),
                storage: if entry.replace_storage {
                    Some(StorageOverride::Replace(slots))
                } else if slots.is_empty() {
                    None
                } else {
                    Some(StorageOverride::Diff(slots))
                },
            })
        })
        .collect()
}

/// The largest trace answer: under the 64 MiB a gRPC message may carry here.
const MAX_TRACE_BYTES: usize = 60 << 20;

/// A sealed block set up for re-execution: the state before it, its environment and its
/// transactions in order.
struct Replay {
    number: u64,
    hash: B256,
    env: BlockEnvSpec,
    txs: Vec<verity_primitives::Transaction>,
    /// The gas each one's stored receipt says it used: the replay must reproduce it.
    receipts_gas: Vec<u64>,
}

impl Replay {
    fn of(read: &ReadTx<'_>, spec: &ChainSpec, number: u64) -> Result<Self, Status> {
        let block = read
            .block_by_number(number)
            .map_err(storage)?
            .ok_or_else(|| Status::not_found("block not found"))?;
        if number > 0 {
            // The block runs over the state after its parent.
            match read.history_from().map_err(storage)? {
                Some(from) if number > from => {}
                from => {
                    return Err(Status::failed_precondition(format!(
                        "block {number} cannot be traced: it runs over the state of block {}, and \
                         this replica keeps state history from block {}",
                        number - 1,
                        from.map_or_else(|| "its next sealed block".to_string(), |f| f.to_string())
                    )));
                }
            }
        }
        let mut txs = Vec::with_capacity(block.transaction_hashes.len());
        let mut receipts_gas = Vec::with_capacity(block.transaction_hashes.len());
        for hash in &block.transaction_hashes {
            let receipt = read.receipt(*hash).map_err(storage)?.ok_or_else(|| {
                Status::internal(format!(
                    "the receipt of {hash} of block {number} is not stored"
                ))
            })?;
            receipts_gas.push(receipt.gas_used);
            let stored = read
                .transaction(*hash)
                .map_err(storage)?
                .and_then(|s| s.transaction)
                .ok_or_else(|| {
                    Status::internal(format!(
                        "transaction {hash} of block {number} is not stored"
                    ))
                })?;
            txs.push(
                verity_primitives::Transaction::try_from(&stored)
                    .map_err(|e| Status::internal(e.to_string()))?,
            );
        }
        Ok(Self {
            number,
            hash: block.hash,
            env: block_env(read, spec, number)?,
            txs,
            receipts_gas,
        })
    }

    fn trace(
        &self,
        read: &ReadTx<'_>,
        traced: std::ops::Range<usize>,
        options: &GethDebugTracingOptions,
        limits: TraceLimits,
        parity: bool,
    ) -> Result<Vec<(Option<B256>, GethTrace)>, Status> {
        if self.txs.is_empty() {
            return Ok(Vec::new());
        }
        let before = StateAt::new(read, self.number - 1);
        let traces = verity_execution::trace::trace_transactions(
            &before,
            &self.env,
            Some(self.hash),
            &self.txs,
            traced.clone(),
            options,
            limits,
            Some(&self.receipts_gas),
        )
        .map_err(trace_error)?;
        Ok(self.txs[traced]
            .iter()
            .zip(traces)
            .map(|(tx, mut trace)| {
                if parity && let GethTrace::FlatCallTracer(entries) = &mut trace {
                    parity_top_gas(entries, tx);
                }
                (Some(*tx.tx_hash()), trace)
            })
            .collect())
    }
}

/// Parity's top call: the gas it was given, after the transaction's intrinsic gas.
fn parity_top_gas(
    entries: &mut [alloy_rpc_types_trace::parity::LocalizedTransactionTrace],
    tx: &verity_primitives::Transaction,
) {
    use alloy_rpc_types_trace::parity::Action;
    let initial = verity_execution::initial_gas(tx);
    for entry in entries
        .iter_mut()
        .filter(|e| e.trace.trace_address.is_empty())
    {
        match &mut entry.trace.action {
            Action::Call(call) => call.gas = call.gas.saturating_sub(initial),
            Action::Create(create) => create.gas = create.gas.saturating_sub(initial),
            _ => {}
        }
    }
}

/// A trace that could not be produced as a gRPC status.
fn trace_error(error: TraceError) -> Status {
    match error {
        TraceError::Options(_) | TraceError::Rejected(_) => {
            Status::invalid_argument(error.to_string())
        }
        TraceError::TooManySteps(_) => Status::resource_exhausted(error.to_string()),
        TraceError::Diverged { .. } => {
            metrics::counter!("verity_replica_trace_replays_diverged_total").increment(1);
            Status::data_loss(error.to_string())
        }
        TraceError::Execution(error) => call_error(error),
    }
}

/// The execution request of a wire call, under `limits`.
fn call_of(
    request: &v1::CallRequest,
    limits: verity_execution::CallLimits,
) -> Result<CallRequest, Status> {
    Ok(CallRequest {
        from: opt_address_from(&request.from, "from")?,
        to: opt_address_from(&request.to, "to")?,
        data: Bytes::from(request.data.clone()),
        value: u256_from(&request.value, "value")?,
        gas: (request.gas != 0).then_some(request.gas),
        gas_price: if request.gas_price.is_empty() {
            None
        } else {
            Some(
                u128::try_from(u256_from(&request.gas_price, "gas_price")?)
                    .map_err(|_| Status::invalid_argument("gas_price exceeds 128 bits"))?,
            )
        },
        // A call ignores its nonce, as geth's do; a validating simulation takes it.
        nonce: None,
        priority_fee: if request.max_priority_fee_per_gas.is_empty() {
            None
        } else {
            Some(
                u128::try_from(u256_from(
                    &request.max_priority_fee_per_gas,
                    "max_priority_fee_per_gas",
                )?)
                .map_err(|_| {
                    Status::invalid_argument("max_priority_fee_per_gas exceeds 128 bits")
                })?,
            )
        },
        access_list: access_list(&request.access_list)?,
        limits,
    })
}

/// What a call runs over: the state it names with its overrides laid over it, the block
/// environment (overrides applied), and the call with its gas capped as geth caps it.
fn call_setup<'a, 'db>(
    read: &'a ReadTx<'db>,
    spec: &ChainSpec,
    request: &v1::CallRequest,
    call: CallRequest,
    gas_cap: u64,
) -> Result<(Overridden<View<'a, 'db>>, BlockEnvSpec, CallRequest), Status> {
    let at = state_at(read, request.block.as_ref())?;
    let env = match at {
        At::Latest => pending_env(read, spec)?,
        At::Block(number) => block_env(read, spec, number)?,
    };
    let env = override_env(env, request.block_overrides.as_ref())?;
    // geth's gas cap: the call's gas, else the block's (overrides included), at most
    // the cap.
    let mut call = call;
    call.gas = Some(call.gas.unwrap_or(env.gas_limit).min(gas_cap));
    let view = Overridden::new(View::new(read, at), &request.state_overrides)?;
    Ok((view, env, call))
}

/// A call that could not run as a gRPC status: one stopped at its deadline is the caller's
/// (`DEADLINE_EXCEEDED`, geth's text), anything else the replica's.
fn call_error(error: verity_execution::ExecutionError) -> Status {
    match error {
        verity_execution::ExecutionError::TimedOut(_) => {
            metrics::counter!("verity_replica_calls_timed_out_total").increment(1);
            Status::deadline_exceeded(error.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

fn access_list(wire: &[v1::AccessListItem]) -> Result<alloy_eips::eip2930::AccessList, Status> {
    wire.iter()
        .map(|item| {
            Ok(alloy_eips::eip2930::AccessListItem {
                address: address_from(&item.address, "access_list.address")?,
                storage_keys: item
                    .storage_keys
                    .iter()
                    .map(|key| b256_from(key, "access_list.storage_keys"))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect::<Result<Vec<_>, Status>>()
        .map(alloy_eips::eip2930::AccessList)
}

fn call_response(outcome: verity_execution::CallOutcome) -> v1::CallResponse {
    v1::CallResponse {
        success: outcome.success,
        output: outcome.output.to_vec(),
        gas_used: outcome.gas_used,
        error: outcome.error.unwrap_or_default(),
        reverted: outcome.reverted,
        access_list: Vec::new(),
        logs: Vec::new(),
        refusal_code: outcome.refusal_code.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use verity_primitives::SigningKey;
    use verity_proto::v1::replica_server::Replica as _;

    use super::*;

    /// A genesis that names no sequencer, with the sequencer given by `--sequencer-address`:
    /// `GetHead` reports the key this replica enforces, so the gateway's feed (which refuses
    /// everything under an unknown epoch) checks against it instead of going dark.
    #[tokio::test]
    async fn get_head_reports_the_epoch_the_replica_enforces() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        let spec = ChainSpec::dev(31337, 2, 100).unwrap();
        assert!(spec.sequencer.is_none());
        crate::apply::init_genesis(&db, &spec, crate::apply::Keep::State).unwrap();
        let key = SigningKey::random();
        let rules = Arc::new(spec.sequencing(Some(key.address())).unwrap());
        let service = QueryService::new(db, Arc::new(spec), rules);
        let head = service
            .get_head(Request::new(v1::GetHeadRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(head.epoch, 0);
        assert_eq!(head.epoch_sequencer, key.address().to_vec());
    }

    /// geth's gas cap: whatever gas and block gas limit a call asks for (overrides included),
    /// it runs with at most `--rpc-gas-cap`; an endless loop burns exactly the cap.
    #[tokio::test]
    async fn a_call_runs_with_at_most_the_gas_cap() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("db")).unwrap();
        let spec = ChainSpec::dev(31337, 2, 100).unwrap();
        crate::apply::init_genesis(&db, &spec, crate::apply::Keep::State).unwrap();
        let rules = Arc::new(
            spec.sequencing(Some(SigningKey::random().address()))
                .unwrap(),
        );
        let service = QueryService::new(db, Arc::new(spec), rules).with_call_bounds(&CallBounds {
            rpc_gas_cap: 1_000_000,
            ..CallBounds::default()
        });
        let at = vec![0xc0; 20];
        let request = v1::CallRequest {
            to: at.clone(),
            gas: 1 << 40,
            state_overrides: vec![v1::AccountOverride {
                address: at,
                code: Some(vec![0x5b, 0x60, 0x00, 0x56]),
                ..Default::default()
            }],
            block_overrides: Some(v1::BlockOverrides {
                gas_limit: Some(1 << 50),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = service
            .call(Request::new(request))
            .await
            .unwrap()
            .into_inner();
        assert!(!response.success);
        assert_eq!(response.error, "out of gas");
        assert_eq!(response.gas_used, 1_000_000);
    }
}
