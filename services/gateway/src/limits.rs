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

/// Load shedding at the edge: the sends this gateway has in flight (to ingress, and for the
/// realtime methods until their receipt), bounded by what it saw complete over the last second
/// times `max_delay`, with at least `floor` let through. Past it a send is refused at once,
/// before any work for it, with geth's "txpool is full" text: the sequencer sheds what reaches
/// its mempool, but when the request path itself is what runs out (CPU, connections), the
/// overload queues here, and only the edge can keep it from taking the throughput down.
#[derive(Debug)]
pub struct InFlightSends {
    max_delay: Option<Duration>,
    floor: usize,
    state: std::sync::Mutex<ShedState>,
}

#[derive(Debug, Default)]
struct ShedState {
    in_flight: usize,
    /// Sends completed over the last second.
    completed: verity_server::rate::RecentCount,
}

/// One admitted send; dropping it ends it ([`SendSlot::completed`] counts it toward the rate).
#[derive(Debug)]
pub struct SendSlot<'a> {
    sends: &'a InFlightSends,
    completed: bool,
}

impl SendSlot<'_> {
    /// The send was taken (admitted, or receipted): it counts toward the rate sends complete
    /// at. A refused or failed one does not, so refusals cannot raise the bound.
    pub fn completed(mut self) {
        self.completed = true;
    }
}

impl Drop for SendSlot<'_> {
    fn drop(&mut self) {
        let mut state = self.sends.state.lock().unwrap_or_else(|e| e.into_inner());
        state.in_flight -= 1;
        if self.completed {
            state.completed.add(1);
        }
    }
}

impl InFlightSends {
    /// Sends in flight bounded by `max_delay` (`None`: unbounded) of completions at the rate
    /// of the last second, and never below `floor`.
    pub fn new(max_delay: Option<Duration>, floor: usize) -> Self {
        // The series of refusals exists from the start, at 0 (dashboards read it).
        metrics::counter!("verity_gateway_shed_sends_total").increment(0);
        Self {
            max_delay,
            floor: floor.max(1),
            state: std::sync::Mutex::default(),
        }
    }

    /// Admits one send, or refuses it at once.
    pub fn enter(&self) -> Result<SendSlot<'_>, RpcError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(max_delay) = self.max_delay {
            let rate = state.completed.count();
            let room = ((rate as f64 * max_delay.as_secs_f64()) as usize).max(self.floor);
            if state.in_flight >= room {
                metrics::counter!("verity_gateway_shed_sends_total").increment(1);
                return Err(RpcError::new(
                    crate::jsonrpc::SERVER_ERROR,
                    format!(
                        "txpool is full: this gateway has {} sends in flight ({rate} completed in the last second); retry later",
                        state.in_flight
                    ),
                ));
            }
        }
        state.in_flight += 1;
        Ok(SendSlot {
            sends: self,
            completed: false,
        })
    }

    /// Sends in flight now.
    pub fn in_flight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
    }
}

#[cfg(test)]
mod in_flight_tests {
    use super::*;

    /// An idle gateway lets `floor` sends through at once; the bound then follows what
    /// completed in the last second; refusals and failures do not raise it.
    #[test]
    fn sends_in_flight_are_bounded_by_the_completion_rate() {
        let sends = InFlightSends::new(Some(Duration::from_millis(500)), 2);
        let a = sends.enter().expect("under the floor");
        let b = sends.enter().expect("under the floor");
        let refused = sends.enter().expect_err("at the floor");
        assert_eq!(refused.code, crate::jsonrpc::SERVER_ERROR);
        assert!(
            refused.message.starts_with("txpool is full"),
            "{}",
            refused.message
        );
        drop(a);
        b.completed();
        assert_eq!(sends.in_flight(), 0);
        for _ in 0..9 {
            sends.enter().expect("room").completed();
        }
        // 10 completed in the last second, 500 ms: 5 may be in flight.
        let held: Vec<_> = (0..5).map(|_| sends.enter().expect("room for 5")).collect();
        assert!(sends.enter().is_err());
        drop(held);
        assert!(sends.enter().is_ok());

        let unbounded = InFlightSends::new(None, 1);
        let held: Vec<_> = (0..100)
            .map(|_| unbounded.enter().expect("no bound"))
            .collect();
        assert_eq!(unbounded.in_flight(), 100);
        drop(held);
    }
}
