//! Limits on sending an operator sets: transactions per second per client IP and per sender
//! (token buckets from `governor`, with a burst of one second's worth). A breach is JSON-RPC
//! error -32005 saying which limit and when to retry. Both are off (0) by default.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use alloy_consensus::{TxEnvelope, transaction::SignerRecoverable as _};
use alloy_eips::eip2718::Decodable2718 as _;
use alloy_primitives::Address;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};

use crate::jsonrpc::{LIMIT_EXCEEDED, RpcError};

/// The methods that send a transaction.
pub const SEND_METHODS: [&str; 3] = [
    "eth_sendRawTransaction",
    "eth_sendRawTransactionSync",
    "realtime_sendRawTransaction",
];

/// Per-IP and per-sender send rates.
#[derive(Debug)]
pub struct SendLimits {
    per_ip: Option<(u32, DefaultKeyedRateLimiter<IpAddr>)>,
    per_sender: Option<(u32, DefaultKeyedRateLimiter<Address>)>,
    clock: DefaultClock,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    per_second: u32,
) -> Option<(u32, DefaultKeyedRateLimiter<K>)> {
    NonZeroU32::new(per_second)
        .map(|rate| (per_second, RateLimiter::keyed(Quota::per_second(rate))))
}

impl SendLimits {
    /// At most `per_ip` sends per second from one client address and `per_sender` from one
    /// sender account (0: no limit).
    pub fn new(per_ip: u32, per_sender: u32) -> Self {
        Self {
            per_ip: limiter(per_ip),
            per_sender: limiter(per_sender),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one send of `raw` from `ip` (unknown when the connection has no address), or says
    /// which limit it breaks. A transaction that does not decode is left to ingress to refuse.
    pub fn check(&self, ip: Option<IpAddr>, raw: &[u8]) -> Result<(), RpcError> {
        if let (Some((rate, limiter)), Some(ip)) = (&self.per_ip, ip)
            && let Err(not_until) = limiter.check_key(&ip)
        {
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(breach(format!("{rate} per second from {ip}"), wait));
        }
        if let Some((rate, limiter)) = &self.per_sender
            && let Some(sender) = sender_of(raw)
            && let Err(not_until) = limiter.check_key(&sender)
        {
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(breach(
                format!("{rate} per second from sender {sender}"),
                wait,
            ));
        }
        Ok(())
    }

    /// Forgets keys whose bucket is full again (bounded memory under many clients).
    pub fn retain_recent(&self) {
        if let Some((_, limiter)) = &self.per_ip {
            limiter.retain_recent();
        }
        if let Some((_, limiter)) = &self.per_sender {
            limiter.retain_recent();
        }
    }
}

fn breach(limit: String, wait: Duration) -> RpcError {
    metrics::counter!("verity_gateway_rate_limited_total").increment(1);
    RpcError::new(
        LIMIT_EXCEEDED,
        format!(
            "rate limit exceeded: at most {limit} transactions; retry in {} ms",
            wait.as_millis().max(1)
        ),
    )
}

fn sender_of(raw: &[u8]) -> Option<Address> {
    let envelope = TxEnvelope::decode_2718(&mut &raw[..]).ok()?;
    envelope.recover_signer().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_rate_is_told_when_to_retry_and_others_are_not_affected() {
        let limits = SendLimits::new(3, 0);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(limits.check(a, &[]).is_ok());
        }
        let refused = limits.check(a, &[]).expect_err("over the rate");
        assert_eq!(refused.code, LIMIT_EXCEEDED);
        assert!(
            refused
                .message
                .starts_with("rate limit exceeded: at most 3 per second from 10.0.0.1"),
            "{refused:?}"
        );
        assert!(
            limits.check(b, &[]).is_ok(),
            "another client has its own bucket"
        );
        assert!(
            limits.check(None, &[]).is_ok(),
            "no address, no per-IP bucket"
        );
        std::thread::sleep(Duration::from_millis(400));
        assert!(limits.check(a, &[]).is_ok(), "the bucket refills");
    }

    #[test]
    fn no_limit_by_default() {
        let limits = SendLimits::new(0, 0);
        for _ in 0..1_000 {
            assert!(
                limits
                    .check(Some(IpAddr::from([127, 0, 0, 1])), &[1, 2, 3])
                    .is_ok()
            );
        }
    }
}
