//! The prover pool's scaling policy: how many workers the job backlog needs to be proved within
//! the latency target, with cooldowns and bounds. Pure (time is passed in), so every rule is
//! unit-tested; [`crate::autoscaler`] feeds it and applies its decisions.
//!
//! - **Throughput** per worker is measured, not assumed: over the intervals of the last
//!   `rate_window` in which every *ready* worker had a job (the backlog at least the ready
//!   workers at both ends), `finished jobs / worker-seconds`. Intervals in which nothing
//!   finished count too (a proof can take longer than an interval); while nothing at all has
//!   finished in the window the rate is at most one job per its worker-seconds. Pods not ready
//!   yet (scheduling, loading parameters) are not counted as workers. Until a busy interval
//!   exists the configured seconds per job stand in.
//! - **Need**: `ceil(backlog / (per-worker rate × latency target))` workers clear the backlog
//!   within the target; at least one while anything is queued; then bounded by min and max.
//! - **Up** at once, at most once per up-cooldown (the new workers need time to start and show
//!   in the throughput).
//! - **Down** to the largest need seen over the whole down-cooldown window, and only once that
//!   window has passed since the last change (a burst's tail does not flap the pool).

use std::{collections::VecDeque, time::Duration};

/// Bounds and targets of the pool.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Workers kept even when idle.
    pub min_replicas: u32,
    /// Workers never exceeded.
    pub max_replicas: u32,
    /// A job queued now should be proved within this.
    pub latency_target: Duration,
    /// One worker's time per job until throughput is measured.
    pub seconds_per_job: Duration,
    /// Least time between two scale-ups.
    pub scale_up_cooldown: Duration,
    /// Least time after any change before scaling down, and the window whose largest need a
    /// scale-down keeps.
    pub scale_down_cooldown: Duration,
    /// How far back busy intervals count towards the measured per-worker rate.
    pub rate_window: Duration,
}

impl Policy {
    /// The autoscaler's defaults (its flags start from these): 1 to 16 workers, a job proved
    /// within 60 s, 10 s per job until measured, 30 s between scale-ups, 5 minutes before a
    /// scale-down, a 10-minute rate window.
    pub const DEFAULT: Self = Self {
        min_replicas: 1,
        max_replicas: 16,
        latency_target: Duration::from_secs(60),
        seconds_per_job: Duration::from_secs(10),
        scale_up_cooldown: Duration::from_secs(30),
        scale_down_cooldown: Duration::from_secs(300),
        rate_window: Duration::from_secs(600),
    };

    /// Checks the bounds and durations.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_replicas == 0 {
            return Err("the maximum number of workers must be at least 1".into());
        }
        if self.min_replicas > self.max_replicas {
            return Err(format!(
                "the minimum number of workers ({}) is above the maximum ({})",
                self.min_replicas, self.max_replicas
            ));
        }
        if self.latency_target.is_zero()
            || self.seconds_per_job.is_zero()
            || self.rate_window.is_zero()
        {
            return Err(
                "the latency target, the seconds per job and the rate window must be above zero"
                    .into(),
            );
        }
        Ok(())
    }
}

/// One reading of the job queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When, since any fixed origin.
    pub at: Duration,
    /// Jobs not yet finished (queued or being proved).
    pub backlog: u64,
    /// Jobs finished since the queue began (monotonic).
    pub finished: u64,
}

/// What the policy decided and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Workers the pool should have now.
    pub replicas: u32,
    /// Workers the backlog needs (bounded by min and max), before cooldowns.
    pub needed: u32,
    /// Jobs per second one worker finishes (measured, or the configured estimate).
    pub worker_rate: f64,
    /// Why `replicas` is what it is.
    pub reason: Reason,
}

/// The rule that set a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The pool has what the backlog needs.
    Steady,
    /// Scaling up to the need.
    Up,
    /// Scaling down to the largest need of the window.
    Down,
    /// More are needed, but the last scale-up is too recent.
    UpCooldown,
    /// Fewer are needed, but not for long enough or the last change is too recent.
    DownCooldown,
    /// The pool was outside min and max (changed by hand): brought back at once.
    Bounds,
}

impl Reason {
    /// A short label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::Up => "up",
            Self::Down => "down",
            Self::UpCooldown => "up_cooldown",
            Self::DownCooldown => "down_cooldown",
            Self::Bounds => "bounds",
        }
    }
}

/// The policy's memory between samples.
#[derive(Debug, Clone)]
pub struct Scaler {
    policy: Policy,
    last: Option<Sample>,
    /// Busy intervals of the rate window: (end, worker-seconds, finished jobs).
    busy: VecDeque<(Duration, f64, u64)>,
    last_up: Option<Duration>,
    last_change: Option<Duration>,
    /// (when, need) over the down-cooldown window.
    needs: VecDeque<(Duration, u32)>,
    first: Option<Duration>,
}

impl Scaler {
    /// A scaler with no history.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            last: None,
            busy: VecDeque::new(),
            last_up: None,
            last_change: None,
            needs: VecDeque::new(),
            first: None,
        }
    }

    /// The measured jobs per second of one worker, once a busy interval was seen.
    pub fn measured_rate(&self) -> Option<f64> {
        let worker_seconds: f64 = self.busy.iter().map(|&(_, w, _)| w).sum();
        let finished: u64 = self.busy.iter().map(|&(_, _, f)| f).sum();
        if worker_seconds <= 0.0 {
            return None;
        }
        let prior = 1.0 / self.policy.seconds_per_job.as_secs_f64();
        Some(if finished == 0 {
            // Not one job in that many worker-seconds: slower than both bounds say.
            prior.min(1.0 / worker_seconds)
        } else {
            finished as f64 / worker_seconds
        })
    }

    /// Takes a sample, the pool's size (desired replicas) and its ready workers, and decides
    /// its size now.
    pub fn observe(&mut self, sample: Sample, current: u32, ready: u32) -> Decision {
        let policy = self.policy.clone();
        self.measure(sample, ready);
        let worker_rate = self
            .measured_rate()
            .unwrap_or(1.0 / policy.seconds_per_job.as_secs_f64());
        let needed = need(sample.backlog, worker_rate, policy.latency_target)
            .clamp(policy.min_replicas, policy.max_replicas);
        let first = *self.first.get_or_insert(sample.at);
        self.needs.push_back((sample.at, needed));
        while let Some(&(at, _)) = self.needs.front() {
            if sample.at.saturating_sub(at) > policy.scale_down_cooldown {
                self.needs.pop_front();
            } else {
                break;
            }
        }
        let since = |t: Option<Duration>| t.map(|t| sample.at.saturating_sub(t));
        let (replicas, reason) = if current < policy.min_replicas || current > policy.max_replicas {
            (
                current.clamp(policy.min_replicas, policy.max_replicas),
                Reason::Bounds,
            )
        } else if needed > current {
            match since(self.last_up) {
                Some(age) if age < policy.scale_up_cooldown => (current, Reason::UpCooldown),
                _ => (needed, Reason::Up),
            }
        } else if needed < current {
            let window_full = sample.at.saturating_sub(first) >= policy.scale_down_cooldown;
            let settled =
                since(self.last_change).is_none_or(|age| age >= policy.scale_down_cooldown);
            let keep = self.needs.iter().map(|&(_, n)| n).max().unwrap_or(needed);
            if window_full && settled && keep < current {
                (keep, Reason::Down)
            } else {
                (current, Reason::DownCooldown)
            }
        } else {
            (current, Reason::Steady)
        };
        if replicas != current {
            self.last_change = Some(sample.at);
            if replicas > current {
                self.last_up = Some(sample.at);
            }
        }
        Decision {
            replicas,
            needed,
            worker_rate,
            reason,
        }
    }

    /// Records the interval since the last sample when every ready worker had work throughout
    /// it (otherwise idle time would read as slowness), and forgets intervals older than the
    /// rate window.
    fn measure(&mut self, sample: Sample, workers: u32) {
        if let Some(last) = self.last
            && sample.at > last.at
            && workers > 0
            && sample.finished >= last.finished
            && last.backlog >= u64::from(workers)
            && sample.backlog >= u64::from(workers)
        {
            let worker_seconds = f64::from(workers) * (sample.at - last.at).as_secs_f64();
            self.busy
                .push_back((sample.at, worker_seconds, sample.finished - last.finished));
        }
        while let Some(&(end, _, _)) = self.busy.front() {
            if sample.at.saturating_sub(end) > self.policy.rate_window {
                self.busy.pop_front();
            } else {
                break;
            }
        }
        self.last = Some(sample);
    }
}

/// Workers that clear `backlog` within `target` at `worker_rate` jobs/s each (at least one
/// while anything is queued).
fn need(backlog: u64, worker_rate: f64, target: Duration) -> u32 {
    if backlog == 0 {
        return 0;
    }
    let per_worker = worker_rate * target.as_secs_f64();
    let workers = if per_worker > 0.0 {
        (backlog as f64 / per_worker).ceil()
    } else {
        f64::from(u32::MAX)
    };
    (workers.min(f64::from(u32::MAX)) as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, backlog: u64, finished: u64) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            backlog,
            finished,
        }
    }

    #[test]
    fn the_need_is_the_backlog_over_what_one_worker_proves_within_the_target() {
        // 10 s per job and a 60 s target: 6 jobs per worker.
        assert_eq!(need(0, 0.1, Duration::from_secs(60)), 0);
        assert_eq!(need(1, 0.1, Duration::from_secs(60)), 1);
        assert_eq!(need(6, 0.1, Duration::from_secs(60)), 1);
        assert_eq!(need(7, 0.1, Duration::from_secs(60)), 2);
        assert_eq!(need(60, 0.1, Duration::from_secs(60)), 10);
    }

    #[test]
    fn a_backlog_scales_up_at_once_within_the_bounds() {
        let mut scaler = Scaler::new(Policy::DEFAULT);
        let d = scaler.observe(at(0, 40, 0), 1, 1);
        assert_eq!((d.replicas, d.reason), (7, Reason::Up));
        let mut scaler = Scaler::new(Policy::DEFAULT);
        let d = scaler.observe(at(0, 10_000, 0), 1, 1);
        assert_eq!((d.replicas, d.needed), (16, 16));
    }

    #[test]
    fn scale_ups_wait_for_their_cooldown() {
        let mut scaler = Scaler::new(Policy::DEFAULT);
        assert_eq!(scaler.observe(at(0, 12, 0), 1, 1).replicas, 2);
        // (Two workers finishing a job each per 10 s: the measured rate is the prior's.)
        let d = scaler.observe(at(10, 30, 2), 2, 2);
        assert_eq!((d.replicas, d.reason), (2, Reason::UpCooldown));
        let d = scaler.observe(at(30, 30, 6), 2, 2);
        assert_eq!((d.replicas, d.reason), (5, Reason::Up));
    }

    #[test]
    fn scale_downs_keep_the_largest_need_of_the_window_and_wait_for_it() {
        let mut scaler = Scaler::new(Policy::DEFAULT);
        assert_eq!(scaler.observe(at(0, 60, 0), 1, 1).replicas, 10);
        // The backlog drains: no scale-down before 300 s since the change.
        for t in (10..300).step_by(10) {
            let d = scaler.observe(at(t, 0, 60), 10, 10);
            assert_eq!(
                (d.replicas, d.reason),
                (10, Reason::DownCooldown),
                "at {t} s"
            );
        }
        // At 300 s the window still holds the need of 10 seen at 0 s: nothing to drop.
        let d = scaler.observe(at(300, 0, 60), 10, 10);
        assert_eq!(d.replicas, 10);
        // Past the window only idle needs remain: down to the minimum.
        let d = scaler.observe(at(310, 0, 60), 10, 10);
        assert_eq!((d.replicas, d.reason), (1, Reason::Down));
    }

    #[test]
    fn a_short_dip_does_not_shrink_the_pool() {
        let mut scaler = Scaler::new(Policy::DEFAULT);
        assert_eq!(scaler.observe(at(0, 30, 0), 1, 1).replicas, 5);
        for t in (10..=400).step_by(10) {
            // Every 100 s a burst needs 5 workers again.
            let backlog = if t % 100 == 0 { 30 } else { 0 };
            let d = scaler.observe(at(t, backlog, t), 5, 5);
            assert_eq!(d.replicas, 5, "at {t} s: {d:?}");
        }
    }

    #[test]
    fn proofs_longer_than_the_interval_are_measured_with_their_idle_intervals() {
        // One worker, 60 s per proof, a reading every 5 s: eleven intervals finish nothing,
        // the twelfth one job. Counting only the twelfth would read 0.2 jobs/s.
        let mut scaler = Scaler::new(Policy::DEFAULT);
        for i in 0..=24u64 {
            scaler.observe(at(i * 5, 50, i / 12), 1, 1);
        }
        let rate = scaler.measured_rate().unwrap_or_default();
        assert!((rate - 1.0 / 60.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn nothing_finished_yet_bounds_the_rate_from_above() {
        // 4 ready workers busy for 100 s with nothing finished: at most 1 job per 400
        // worker-seconds, well below the 10 s prior.
        let mut scaler = Scaler::new(Policy::DEFAULT);
        scaler.observe(at(0, 100, 0), 4, 4);
        scaler.observe(at(100, 100, 0), 4, 4);
        let rate = scaler.measured_rate().unwrap_or_default();
        assert!((rate - 1.0 / 400.0).abs() < 1e-12, "{rate}");
    }

    #[test]
    fn pods_not_ready_are_not_counted_as_slow_workers() {
        // 8 desired, 2 ready: 2 workers finished 4 jobs in 10 s = 0.2 jobs/s each.
        let mut scaler = Scaler::new(Policy::DEFAULT);
        scaler.observe(at(0, 100, 0), 8, 2);
        scaler.observe(at(10, 100, 4), 8, 2);
        let rate = scaler.measured_rate().unwrap_or_default();
        assert!((rate - 0.2).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn intervals_older_than_the_window_are_forgotten() {
        let mut p = Policy::DEFAULT;
        p.rate_window = Duration::from_secs(30);
        let mut scaler = Scaler::new(p);
        scaler.observe(at(0, 100, 0), 1, 1);
        scaler.observe(at(10, 100, 10), 1, 1); // 1 job/s
        for t in (20..=60).step_by(10) {
            scaler.observe(at(t, 100, 10 + (t - 10) / 10), 1, 1); // 0.1 job/s
        }
        let rate = scaler.measured_rate().unwrap_or_default();
        assert!((rate - 0.1).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn the_measured_rate_replaces_the_estimate_only_from_saturated_intervals() {
        let mut scaler = Scaler::new(Policy::DEFAULT);
        scaler.observe(at(0, 100, 0), 4, 4);
        // Idle workers (backlog below the pool) say nothing about speed.
        scaler.observe(at(10, 2, 98), 4, 4);
        assert_eq!(scaler.measured_rate(), None);
        let mut scaler = Scaler::new(Policy::DEFAULT);
        scaler.observe(at(0, 100, 0), 4, 4);
        // 4 workers finished 20 jobs in 10 s: 0.5 jobs/s each (5x the 10 s estimate).
        scaler.observe(at(10, 100, 20), 4, 4);
        let rate = scaler.measured_rate().unwrap_or_default();
        assert!((rate - 0.5).abs() < 1e-9, "{rate}");
        // With 0.5 jobs/s and 60 s, one worker clears 30: a backlog of 100 needs 4.
        assert_eq!(scaler.observe(at(20, 100, 40), 4, 4).needed, 4);
    }

    #[test]
    fn a_pool_changed_by_hand_is_brought_back_within_the_bounds() {
        let mut scaler = Scaler::new(Policy::DEFAULT);
        let d = scaler.observe(at(0, 0, 0), 40, 40);
        assert_eq!((d.replicas, d.reason), (16, Reason::Bounds));
        let d = scaler.observe(at(1, 0, 0), 0, 0);
        assert_eq!((d.replicas, d.reason), (1, Reason::Bounds));
    }

    #[test]
    fn bad_policies_are_refused() {
        let mut p = Policy::DEFAULT;
        p.min_replicas = 20;
        assert!(p.validate().is_err());
        let mut p = Policy::DEFAULT;
        p.latency_target = Duration::ZERO;
        assert!(p.validate().is_err());
        assert!(Policy::DEFAULT.validate().is_ok());
    }
}
