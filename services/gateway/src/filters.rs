//! `eth_getLogs` and the polling filters (`eth_newFilter`, `eth_newBlockFilter`,
//! `eth_getFilterChanges`, `eth_getFilterLogs`, `eth_uninstallFilter`).
//!
//! Filters live in this gateway's memory, as geth keeps them in its node: a load balancer in
//! front of several gateways must send a client's polls to the one that installed its filter
//! (session affinity), and a restarted gateway has forgotten them ("filter not found", after
//! which clients install a new one). A filter nobody polls for `--filter-timeout-secs` expires.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{B256, U128};
use alloy_rpc_types_eth::{Filter, FilterBlockOption, Log as RpcLog};
use rand::rngs::SysRng;
use rand_core::{Rng as _, UnwrapErr};
use serde_json::Value;
use verity_primitives::Log;
use verity_proto::{b256_from, v1};

use crate::{
    Backends,
    jsonrpc::{LIMIT_EXCEEDED, RpcError, SERVER_ERROR},
};

/// What an installed filter reports.
#[derive(Debug, Clone)]
pub enum FilterKind {
    /// Logs matching the criteria, from blocks sealed after installation.
    Logs(Box<Filter>),
    /// Hashes of blocks sealed after installation.
    Blocks,
    /// Hashes of transactions that entered a mini-block after installation (fed by the chain
    /// feed, at most [`MAX_PENDING`] kept between polls).
    PendingTransactions,
}

/// Most transaction hashes a pending-transaction filter keeps between two polls; older ones are
/// dropped first.
pub const MAX_PENDING: usize = 10_000;

/// What a poll of a filter reports.
#[derive(Debug)]
pub enum Changes {
    /// Log filter: its criteria and the sealed blocks not reported yet.
    Logs(Box<Filter>, std::ops::RangeInclusive<u64>),
    /// Block filter: the sealed blocks not reported yet.
    Blocks(std::ops::RangeInclusive<u64>),
    /// Pending-transaction filter: the hashes seen since the last poll.
    PendingTransactions(Vec<B256>),
}

#[derive(Debug)]
struct Installed {
    kind: FilterKind,
    /// The client IP that installed it (`None` when the gateway does not know it).
    owner: Option<IpAddr>,
    /// First block not reported yet.
    next_block: u64,
    /// Transactions seen and not reported yet (pending-transaction filters).
    pending: std::collections::VecDeque<B256>,
    last_poll: Instant,
}

/// The installed filters.
#[derive(Debug)]
pub struct Filters {
    installed: Mutex<HashMap<U128, Installed>>,
    timeout: Duration,
    max: usize,
    max_pending: usize,
    max_per_client: usize,
}

tokio::task_local! {
    /// The IP of the client whose call is being answered (set around each call by the
    /// gateway), to which the filters it installs are counted.
    pub static CLIENT_IP: Option<IpAddr>;
}

/// Most filters one client IP may have installed at once unless set otherwise
/// ([`Filters::with_client_limit`]).
pub const DEFAULT_MAX_FILTERS_PER_IP: usize = 100;

/// Most addresses, and most values in one topic position, a log filter may name (geth's
/// limits): each is compared with every log read, and an installed filter keeps them.
pub const MAX_CRITERIA: usize = 1_000;

/// Refuses criteria larger than geth accepts, with geth's wording.
pub fn check_criteria(filter: &Filter) -> Result<(), RpcError> {
    let addresses = filter.address.len();
    if addresses > MAX_CRITERIA {
        return Err(RpcError::new(
            SERVER_ERROR,
            format!("exceed max addresses: {addresses} given, the limit is {MAX_CRITERIA}"),
        ));
    }
    if let Some(values) = filter
        .topics
        .iter()
        .map(|topic| topic.len())
        .find(|values| *values > MAX_CRITERIA)
    {
        return Err(RpcError::new(
            SERVER_ERROR,
            format!(
                "exceed max subtopics: {values} given in one position, the limit is {MAX_CRITERIA}"
            ),
        ));
    }
    Ok(())
}

/// Most pending-transaction filters at once unless set otherwise
/// ([`Filters::with_pending_limit`]): each keeps up to [`MAX_PENDING`] hashes, so they hold at
/// most 100 × 10,000 × 32 bytes = 32 MB together.
pub const DEFAULT_MAX_PENDING_FILTERS: usize = 100;

fn not_found() -> RpcError {
    RpcError::new(SERVER_ERROR, "filter not found")
}

impl Filters {
    /// No filters yet; each expires `timeout` after its last poll; at most `max` at once.
    pub fn new(timeout: Duration, max: usize) -> Self {
        Self {
            installed: Mutex::new(HashMap::new()),
            timeout,
            max,
            max_pending: DEFAULT_MAX_PENDING_FILTERS,
            max_per_client: DEFAULT_MAX_FILTERS_PER_IP,
        }
    }

    /// At most `max` of the filters may belong to one client IP, so that one client cannot
    /// take every filter of the gateway.
    pub fn with_client_limit(mut self, max: usize) -> Self {
        self.max_per_client = max;
        self
    }

    /// At most `max` of the filters may be pending-transaction filters (the ones that hold
    /// data between polls).
    pub fn with_pending_limit(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<U128, Installed>> {
        // A panic while holding the lock leaves the map consistent (every update is one insert
        // or remove), so a poisoned lock is still usable.
        self.installed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs a filter that reports from block `next_block` on, counted to the client IP of
    /// the call being answered ([`CLIENT_IP`]); returns its id.
    pub fn install(&self, kind: FilterKind, next_block: u64) -> Result<U128, RpcError> {
        let owner = CLIENT_IP.try_with(|ip| *ip).ok().flatten();
        self.install_for(owner, kind, next_block)
    }

    /// [`Filters::install`] for client `owner`; one without an IP is counted only to the
    /// gateway's limits.
    pub fn install_for(
        &self,
        owner: Option<IpAddr>,
        kind: FilterKind,
        next_block: u64,
    ) -> Result<U128, RpcError> {
        let mut installed = self.lock();
        let now = Instant::now();
        installed.retain(|_, f| now.duration_since(f.last_poll) < self.timeout);
        if installed.len() >= self.max {
            return Err(RpcError::new(
                LIMIT_EXCEEDED,
                format!(
                    "too many filters installed on this gateway (limit {}); uninstall some or wait for them to expire",
                    self.max
                ),
            ));
        }
        if let Some(ip) = owner
            && installed.values().filter(|f| f.owner == owner).count() >= self.max_per_client
        {
            return Err(RpcError::new(
                LIMIT_EXCEEDED,
                format!(
                    "too many filters installed from {ip} (limit {}); uninstall some or wait for them to expire",
                    self.max_per_client
                ),
            ));
        }
        if matches!(kind, FilterKind::PendingTransactions)
            && installed
                .values()
                .filter(|f| matches!(f.kind, FilterKind::PendingTransactions))
                .count()
                >= self.max_pending
        {
            return Err(RpcError::new(
                LIMIT_EXCEEDED,
                format!(
                    "too many pending-transaction filters installed on this gateway (limit {}); uninstall some or wait for them to expire",
                    self.max_pending
                ),
            ));
        }
        let mut rng = UnwrapErr(SysRng);
        let id = U128::from((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()));
        installed.insert(
            id,
            Installed {
                kind,
                owner,
                next_block,
                pending: std::collections::VecDeque::new(),
                last_poll: now,
            },
        );
        Ok(id)
    }

    /// The filter `id` and the blocks it has not reported yet up to `head` (empty when none),
    /// marking them reported: two concurrent polls never see the same block.
    pub fn poll(&self, id: U128, head: u64) -> Result<Changes, RpcError> {
        self.touch(id, |filter| {
            let range = filter.next_block..=head;
            filter.next_block = filter.next_block.max(head + 1);
            Ok(match &filter.kind {
                FilterKind::Logs(criteria) => Changes::Logs(criteria.clone(), range),
                FilterKind::Blocks => Changes::Blocks(range),
                FilterKind::PendingTransactions => {
                    Changes::PendingTransactions(filter.pending.drain(..).collect())
                }
            })
        })
    }

    /// Runs `f` on live filter `id`, which counts as a poll (it keeps the filter alive).
    fn touch<T>(
        &self,
        id: U128,
        f: impl FnOnce(&mut Installed) -> Result<T, RpcError>,
    ) -> Result<T, RpcError> {
        let mut installed = self.lock();
        let now = Instant::now();
        let filter = installed
            .get_mut(&id)
            .filter(|f| now.duration_since(f.last_poll) < self.timeout)
            .ok_or_else(not_found)?;
        filter.last_poll = now;
        f(filter)
    }

    /// Hands the transactions of a new mini-block to every pending-transaction filter.
    pub fn on_pending(&self, hashes: &[B256]) {
        if hashes.is_empty() {
            return;
        }
        let mut installed = self.lock();
        for filter in installed.values_mut() {
            if matches!(filter.kind, FilterKind::PendingTransactions) {
                filter.pending.extend(hashes.iter().copied());
                let excess = filter.pending.len().saturating_sub(MAX_PENDING);
                filter.pending.drain(..excess);
            }
        }
    }

    /// The criteria of log filter `id` (and keeps it alive).
    pub fn criteria(&self, id: U128) -> Result<Filter, RpcError> {
        self.touch(id, |filter| match &filter.kind {
            FilterKind::Logs(criteria) => Ok((**criteria).clone()),
            FilterKind::Blocks | FilterKind::PendingTransactions => Err(not_found()),
        })
    }

    /// Removes filter `id`; false when there was none.
    pub fn uninstall(&self, id: U128) -> bool {
        self.lock().remove(&id).is_some()
    }
}

/// Limits of `eth_getLogs` an operator sets.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Most blocks one query may span.
    pub max_block_range: u64,
    /// Most logs one query may return.
    pub max_results: usize,
}

/// The block number a filter bound names; `None` for a block not sealed yet.
fn bound(tag: Option<&BlockNumberOrTag>, head: &v1::ReplicaHead) -> Result<Option<u64>, RpcError> {
    let missing = |name: &str| {
        RpcError::new(
            SERVER_ERROR,
            format!("{name} block not found: no registered verifier has attested a block yet"),
        )
    };
    Ok(Some(match tag {
        None | Some(BlockNumberOrTag::Latest | BlockNumberOrTag::Pending) => head.block_number,
        Some(BlockNumberOrTag::Earliest) => 0,
        Some(BlockNumberOrTag::Safe) => head.safe_block_number.ok_or_else(|| missing("safe"))?,
        Some(BlockNumberOrTag::Finalized) => head
            .finalized_block_number
            .ok_or_else(|| missing("finalized"))?,
        Some(BlockNumberOrTag::Number(n)) => *n,
    }))
}

/// The inclusive block range a filter covers now.
async fn range_of(backends: &Backends, filter: &Filter) -> Result<(u64, u64), RpcError> {
    match filter.block_option {
        FilterBlockOption::AtBlockHash(hash) => {
            let number = crate::eth::sealed_block(backends, BlockId::from(hash))
                .await?
                .ok_or_else(|| RpcError::new(SERVER_ERROR, "unknown block"))?
                .number();
            Ok((number, number))
        }
        FilterBlockOption::Range {
            from_block,
            to_block,
        } => {
            let head = backends.head().await?;
            let from = bound(from_block.as_ref(), &head)?.unwrap_or(head.block_number);
            let to = bound(to_block.as_ref(), &head)?.unwrap_or(head.block_number);
            Ok((from, to))
        }
    }
}

/// The logs matching `filter` in blocks `from..=to` (at most `limits.max_results`).
pub async fn logs_in(
    backends: &Backends,
    filter: &Filter,
    from: u64,
    to: u64,
) -> Result<Vec<RpcLog>, RpcError> {
    let limits = backends.log_limits;
    if to < from {
        return Ok(Vec::new());
    }
    if to - from >= limits.max_block_range {
        return Err(RpcError::new(
            LIMIT_EXCEEDED,
            format!(
                "query exceeds max block range {} (blocks {from} to {to}); split it",
                limits.max_block_range
            ),
        ));
    }
    let logs = replica_logs(backends, filter, (from, 0), to).await?;
    if logs.len() > limits.max_results {
        return Err(RpcError::new(
            LIMIT_EXCEEDED,
            format!(
                "query returned more than {} results; narrow the block range or the filter",
                limits.max_results
            ),
        ));
    }
    logs.iter().map(rpc_log).collect()
}

/// The replica's logs matching `filter` from `(block, log index)` through block `to`: at most
/// one past `--max-logs`, where it stops reading.
async fn replica_logs(
    backends: &Backends,
    filter: &Filter,
    (from_block, from_log_index): (u64, u64),
    to: u64,
) -> Result<Vec<v1::IndexedLog>, RpcError> {
    Ok(backends
        .replica()
        .get_logs(v1::LogsRequest {
            from_block,
            from_log_index,
            to_block: to,
            addresses: filter.address.iter().map(|a| a.to_vec()).collect(),
            topics: filter
                .topics
                .iter()
                .map(|topic| v1::TopicFilter {
                    values: topic.iter().map(|t| t.to_vec()).collect(),
                })
                .collect(),
            max_logs: backends.log_limits.max_results as u64,
        })
        .await
        .map_err(crate::eth::from_status)?
        .into_inner()
        .logs)
}

/// Where a paginated log query resumes: a block and the index of the first log in it not yet
/// returned. Written `<block>.<log index>` in decimal; clients treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    block: u64,
    log_index: u64,
}

impl Cursor {
    fn encode(self) -> String {
        format!("{}.{}", self.block, self.log_index)
    }

    fn decode(cursor: &str) -> Result<Self, RpcError> {
        let invalid = || RpcError::invalid_params(format!("invalid cursor {cursor:?}"));
        let (block, log_index) = cursor.split_once('.').ok_or_else(invalid)?;
        Ok(Self {
            block: block.parse().map_err(|_| invalid())?,
            log_index: log_index.parse().map_err(|_| invalid())?,
        })
    }
}

/// MegaETH's `eth_getLogsWithCursor`: `eth_getLogs` that answers a query past the server's
/// limits (`--max-logs` results, `--max-logs-block-range` blocks) with the first part and a
/// cursor where it left off, instead of an error. `params[0]` is a filter with an optional
/// `cursor` from a previous answer; the answer is `{logs, cursor?}` (no cursor: complete).
pub async fn get_logs_with_cursor(
    backends: &Backends,
    params: &[Value],
) -> Result<Value, RpcError> {
    let mut object = params
        .first()
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| RpcError::invalid_params("missing value for required argument 0"))?;
    let cursor = match object.remove("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(Cursor::decode(&cursor)?),
        Some(other) => return Err(RpcError::invalid_params(format!("invalid cursor {other}"))),
    };
    let filter: Filter = serde_json::from_value(Value::Object(object))
        .map_err(|e| RpcError::invalid_params(format!("invalid filter: {e}")))?;
    check_criteria(&filter)?;
    let (from, to) = range_of(backends, &filter).await?;
    if from > to {
        return Err(RpcError::new(SERVER_ERROR, "invalid block range params"));
    }
    let start = match cursor {
        Some(c) if (from..=to).contains(&c.block) => c,
        Some(c) => {
            return Err(RpcError::invalid_params(format!(
                "invalid cursor {:?}: block {} is outside the filter's blocks {from} to {to}",
                c.encode(),
                c.block
            )));
        }
        None => Cursor {
            block: from,
            log_index: 0,
        },
    };
    let limits = backends.log_limits;
    // The block range limit cuts the range; the next page starts after it.
    let last = to.min(
        start
            .block
            .saturating_add(limits.max_block_range.max(1) - 1),
    );
    let mut logs = replica_logs(backends, &filter, (start.block, start.log_index), last).await?;
    let next = if logs.len() > limits.max_results {
        logs.truncate(limits.max_results);
        logs.last().map(|log| Cursor {
            block: log.block_number,
            log_index: log.log_index + 1,
        })
    } else if last < to {
        Some(Cursor {
            block: last + 1,
            log_index: 0,
        })
    } else {
        None
    };
    let logs = logs.iter().map(rpc_log).collect::<Result<Vec<_>, _>>()?;
    let mut answer = serde_json::json!({ "logs": logs });
    if let Some(next) = next {
        answer["cursor"] = Value::String(next.encode());
    }
    Ok(answer)
}

/// `eth_getLogs`: the logs matching `filter` over its block range or block hash.
pub async fn get_logs(backends: &Backends, filter: &Filter) -> Result<Vec<RpcLog>, RpcError> {
    let (from, to) = range_of(backends, filter).await?;
    if from > to {
        return Err(RpcError::new(SERVER_ERROR, "invalid block range params"));
    }
    logs_in(backends, filter, from, to).await
}

fn rpc_log(indexed: &v1::IndexedLog) -> Result<RpcLog, RpcError> {
    let wire = indexed
        .log
        .as_ref()
        .ok_or_else(|| RpcError::internal("indexed log without body"))?;
    let inner = Log::try_from(wire).map_err(RpcError::internal)?;
    let hash = |bytes: &[u8], field| b256_from(bytes, field).map_err(RpcError::internal);
    Ok(RpcLog {
        inner,
        block_hash: Some(hash(&indexed.block_hash, "block_hash")?),
        block_number: Some(indexed.block_number),
        block_timestamp: None,
        transaction_hash: Some(hash(&indexed.tx_hash, "tx_hash")?),
        transaction_index: Some(indexed.tx_index),
        log_index: Some(indexed.log_index),
        removed: false,
    })
}

/// The hashes of sealed blocks `range` (stopping at the first one the replica lacks).
pub async fn block_hashes(
    backends: &Backends,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Vec<B256>, RpcError> {
    let mut hashes = Vec::new();
    for number in range {
        match crate::eth::sealed_block(backends, BlockId::number(number)).await? {
            Some(block) => hashes.push(block.hash),
            None => break,
        }
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_reports_each_block_once_and_an_idle_filter_expires() {
        let filters = Filters::new(Duration::from_millis(200), 2);
        let id = filters.install(FilterKind::Blocks, 5).expect("accepted");
        let range = |changes| match changes {
            Changes::Blocks(range) => range,
            other => panic!("{other:?}"),
        };
        assert_eq!(range(filters.poll(id, 7).expect("accepted")), 5..=7);
        let again = range(filters.poll(id, 7).expect("accepted"));
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(range(filters.poll(id, 8).expect("accepted")), 8..=8);
        assert!(
            filters.criteria(id).is_err(),
            "a block filter has no criteria"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            filters.poll(id, 9).expect_err("refused").message,
            "filter not found"
        );
    }

    #[test]
    fn pending_transaction_filters_are_capped_apart_from_the_others() {
        let filters = Filters::new(Duration::from_secs(60), 10).with_pending_limit(2);
        for _ in 0..2 {
            filters
                .install(FilterKind::PendingTransactions, 0)
                .expect("accepted");
        }
        let refused = filters
            .install(FilterKind::PendingTransactions, 0)
            .expect_err("a third pending-transaction filter");
        assert_eq!(refused.code, LIMIT_EXCEEDED);
        assert!(
            refused.message.contains("pending-transaction filters"),
            "{refused:?}"
        );
        filters
            .install(FilterKind::Blocks, 0)
            .expect("other kinds still");
    }

    #[test]
    fn pending_transaction_filters_report_each_hash_once_and_keep_the_newest() {
        let filters = Filters::new(Duration::from_secs(60), 4);
        let id = filters
            .install(FilterKind::PendingTransactions, 0)
            .expect("accepted");
        let blocks = filters.install(FilterKind::Blocks, 0).expect("accepted");
        let hashes = |changes| match changes {
            Changes::PendingTransactions(hashes) => hashes,
            other => panic!("{other:?}"),
        };
        filters.on_pending(&[B256::repeat_byte(1), B256::repeat_byte(2)]);
        assert_eq!(
            hashes(filters.poll(id, 0).expect("accepted")),
            vec![B256::repeat_byte(1), B256::repeat_byte(2)]
        );
        assert!(hashes(filters.poll(id, 0).expect("accepted")).is_empty());
        let flood: Vec<B256> = (0..MAX_PENDING + 5)
            .map(|i| B256::left_padding_from(&(i as u64).to_be_bytes()))
            .collect();
        filters.on_pending(&flood);
        let kept = hashes(filters.poll(id, 0).expect("accepted"));
        assert_eq!(kept.len(), MAX_PENDING);
        assert_eq!(kept.first(), flood.get(5));
        assert!(matches!(
            filters.poll(blocks, 0).expect("accepted"),
            Changes::Blocks(_)
        ));
    }

    #[test]
    fn one_client_ip_cannot_take_every_filter() {
        let filters = Filters::new(Duration::from_secs(60), 10).with_client_limit(2);
        let (a, b) = (
            Some(IpAddr::from([10, 0, 0, 1])),
            Some(IpAddr::from([10, 0, 0, 2])),
        );
        let first = filters
            .install_for(a, FilterKind::Blocks, 0)
            .expect("accepted");
        filters
            .install_for(a, FilterKind::PendingTransactions, 0)
            .expect("accepted");
        let refused = filters
            .install_for(a, FilterKind::Blocks, 0)
            .expect_err("a third from the same IP");
        assert_eq!(refused.code, LIMIT_EXCEEDED);
        assert!(refused.message.contains("from 10.0.0.1"), "{refused:?}");
        filters
            .install_for(b, FilterKind::Blocks, 0)
            .expect("another IP still");
        assert!(filters.uninstall(first));
        filters
            .install_for(a, FilterKind::Blocks, 0)
            .expect("room again after an uninstall");
    }

    #[tokio::test]
    async fn a_filter_is_counted_to_the_client_of_the_call_being_answered() {
        let filters = Filters::new(Duration::from_secs(60), 10).with_client_limit(1);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        CLIENT_IP
            .scope(ip, async { filters.install(FilterKind::Blocks, 0) })
            .await
            .expect("accepted");
        let refused = CLIENT_IP
            .scope(ip, async { filters.install(FilterKind::Blocks, 0) })
            .await
            .expect_err("the same client again");
        assert_eq!(refused.code, LIMIT_EXCEEDED);
    }

    #[test]
    fn criteria_beyond_geths_limits_are_refused() {
        let addresses: Vec<alloy_primitives::Address> = (0..=MAX_CRITERIA)
            .map(|i| alloy_primitives::Address::left_padding_from(&(i as u64).to_be_bytes()))
            .collect();
        let refused =
            check_criteria(&Filter::new().address(addresses.clone())).expect_err("1,001 addresses");
        assert!(
            refused.message.starts_with("exceed max addresses"),
            "{refused:?}"
        );
        check_criteria(&Filter::new().address(addresses[..MAX_CRITERIA].to_vec()))
            .expect("1,000 addresses");
        let topics: Vec<B256> = (0..=MAX_CRITERIA)
            .map(|i| B256::left_padding_from(&(i as u64).to_be_bytes()))
            .collect();
        let refused =
            check_criteria(&Filter::new().event_signature(topics)).expect_err("1,001 values");
        assert!(
            refused.message.starts_with("exceed max subtopics"),
            "{refused:?}"
        );
    }

    #[test]
    fn filters_are_capped_and_uninstalled() {
        let filters = Filters::new(Duration::from_secs(60), 2);
        let a = filters.install(FilterKind::Blocks, 0).expect("accepted");
        let b = filters
            .install(FilterKind::Logs(Box::default()), 0)
            .expect("accepted");
        assert_ne!(a, b);
        let refused = filters.install(FilterKind::Blocks, 0).expect_err("refused");
        assert_eq!(refused.code, LIMIT_EXCEEDED);
        assert!(filters.uninstall(a));
        assert!(!filters.uninstall(a));
        assert!(filters.install(FilterKind::Blocks, 0).is_ok());
        assert_eq!(filters.criteria(b).expect("accepted"), Filter::default());
    }
}
