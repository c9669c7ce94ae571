//! What the chunk benches share.

use alloy_primitives::{B256, keccak256};

/// A deterministic, uniformly spread tree key.
pub fn key(n: u64) -> B256 {
    keccak256(n.to_be_bytes())
}

/// Peak resident memory of this process so far, MiB (Linux).
pub fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
