//! How many of something happened over a recent window (the last second, say): what load
//! shedding sizes its bound by (the sequencer's mempool, the gateway's sends in flight).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Counts added within this long of each other share one entry, so a busy counter keeps
/// `window / MERGE` entries at most.
const MERGE: Duration = Duration::from_millis(10);

/// A count over a sliding window.
#[derive(Debug)]
pub struct RecentCount {
    window: Duration,
    entries: VecDeque<(Instant, usize)>,
    total: usize,
}

impl Default for RecentCount {
    /// Over the last second.
    fn default() -> Self {
        Self::new(Duration::from_secs(1))
    }
}

impl RecentCount {
    /// An empty count over `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: VecDeque::new(),
            total: 0,
        }
    }

    /// What was added over the last window.
    pub fn count(&mut self) -> usize {
        let now = Instant::now();
        while let Some(&(at, n)) = self.entries.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.entries.pop_front();
            self.total -= n;
        }
        self.total
    }

    /// Adds `n` now.
    pub fn add(&mut self, n: usize) {
        self.count();
        let now = Instant::now();
        match self.entries.back_mut() {
            Some((at, last)) if now.duration_since(*at) < MERGE => *last += n,
            _ => self.entries.push_back((now, n)),
        }
        self.total += n;
    }

    /// Takes back up to `n` of the last addition (what turned out not to have happened).
    pub fn take_back(&mut self, n: usize) {
        if let Some((_, last)) = self.entries.back_mut() {
            let n = n.min(*last);
            *last -= n;
            self.total -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_was_added_within_the_window_and_forgets_the_rest() {
        let mut recent = RecentCount::new(Duration::from_millis(50));
        recent.add(3);
        recent.add(2);
        recent.take_back(1);
        assert_eq!(recent.count(), 4);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(recent.count(), 0);
        recent.add(1);
        assert_eq!(recent.count(), 1);
    }
}
