//! `eth_feeHistory`: base fees, gas used ratios and reward percentiles over recent blocks, with
//! geth's rules (at most 1024 blocks, percentiles in 0..=100 and non-decreasing, rewards weighted
//! by the gas each transaction used).

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_rpc_types_eth::FeeHistory;
use serde_json::Value;
use verity_proto::u256_from;

use crate::{
    Backends,
    jsonrpc::{RpcError, SERVER_ERROR},
};

/// Most blocks one request covers (geth's `maxFeeHistory`).
pub const MAX_BLOCKS: u64 = 1024;

/// A block count given as a hex quantity or a decimal number (geth accepts both).
pub fn block_count(value: &Value) -> Result<u64, RpcError> {
    let parsed = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        },
        _ => None,
    };
    parsed.ok_or_else(|| {
        RpcError::invalid_params(format!("parameter 0: invalid block count {value}"))
    })
}

/// Checks reward percentiles as geth does.
pub fn check_percentiles(percentiles: &[f64]) -> Result<(), RpcError> {
    for (i, p) in percentiles.iter().enumerate() {
        if !(0.0..=100.0).contains(p) {
            return Err(RpcError::new(
                SERVER_ERROR,
                format!("invalid reward percentile: {p}"),
            ));
        }
        if i > 0 && *p < percentiles[i - 1] {
            return Err(RpcError::new(
                SERVER_ERROR,
                format!(
                    "invalid reward percentile: #{}:{} > #{i}:{p}",
                    i - 1,
                    percentiles[i - 1]
                ),
            ));
        }
    }
    Ok(())
}

/// The rewards of one block at `percentiles`: each transaction's effective tip, sorted, and
/// the tip at which the cumulative gas used reaches the percentile of the block's gas used.
/// Zeroes for an empty block.
pub fn rewards(mut tips: Vec<(u128, u64)>, block_gas_used: u64, percentiles: &[f64]) -> Vec<u128> {
    if tips.is_empty() {
        return vec![0; percentiles.len()];
    }
    tips.sort_unstable_by_key(|(tip, _)| *tip);
    let mut index = 0;
    let mut cumulative = tips[0].1;
    percentiles
        .iter()
        .map(|p| {
            let threshold = (block_gas_used as f64 * p / 100.0) as u64;
            while cumulative < threshold && index < tips.len() - 1 {
                index += 1;
                cumulative += tips[index].1;
            }
            tips[index].0
        })
        .collect()
}

async fn block(backends: &Backends, number: u64) -> Result<verity_primitives::Block, RpcError> {
    crate::eth::sealed_block(backends, BlockId::number(number))
        .await?
        .ok_or_else(|| RpcError::internal(format!("block {number} missing on the replica")))
}

async fn block_tips(
    backends: &Backends,
    number: u64,
    base_fee: u128,
) -> Result<Vec<(u128, u64)>, RpcError> {
    let receipts = crate::eth::sealed_block_receipts(backends, BlockId::number(number))
        .await?
        .ok_or_else(|| RpcError::internal(format!("block {number} missing on the replica")))?;
    Ok(receipts
        .iter()
        .map(|r| (r.effective_gas_price.saturating_sub(base_fee), r.gas_used))
        .collect())
}

/// `eth_feeHistory(blockCount, newestBlock, rewardPercentiles)`.
pub async fn fee_history(
    backends: &Backends,
    count: u64,
    newest: BlockNumberOrTag,
    percentiles: Option<Vec<f64>>,
) -> Result<FeeHistory, RpcError> {
    if let Some(percentiles) = &percentiles {
        check_percentiles(percentiles)?;
    }
    let head = backends.head().await?;
    let newest = match newest {
        BlockNumberOrTag::Latest | BlockNumberOrTag::Pending => head.block_number,
        BlockNumberOrTag::Earliest => 0,
        BlockNumberOrTag::Safe => head
            .safe_block_number
            .ok_or_else(|| RpcError::new(SERVER_ERROR, "safe block not found"))?,
        BlockNumberOrTag::Finalized => head
            .finalized_block_number
            .ok_or_else(|| RpcError::new(SERVER_ERROR, "finalized block not found"))?,
        BlockNumberOrTag::Number(n) if n > head.block_number => {
            return Err(RpcError::new(
                SERVER_ERROR,
                format!(
                    "request beyond head block: requested {n}, head {}",
                    head.block_number
                ),
            ));
        }
        BlockNumberOrTag::Number(n) => n,
    };
    let count = count.min(MAX_BLOCKS).min(newest + 1);
    if count == 0 {
        return Ok(FeeHistory::default());
    }
    let oldest = newest + 1 - count;
    let mut history = FeeHistory {
        oldest_block: oldest,
        reward: percentiles.as_ref().map(|_| Vec::new()),
        ..Default::default()
    };
    for number in oldest..=newest {
        let block = block(backends, number).await?;
        let base_fee = u128::from(block.header.base_fee_per_gas.unwrap_or_default());
        history.base_fee_per_gas.push(base_fee);
        history.gas_used_ratio.push(if block.header.gas_limit == 0 {
            0.0
        } else {
            block.header.gas_used as f64 / block.header.gas_limit as f64
        });
        if let (Some(percentiles), Some(rewards_by_block)) = (&percentiles, &mut history.reward) {
            let tips = if block.transaction_hashes.is_empty() {
                Vec::new()
            } else {
                block_tips(backends, number, base_fee).await?
            };
            rewards_by_block.push(rewards(tips, block.header.gas_used, percentiles));
        }
    }
    // The base fee of the block after the newest: the one being built, or the next sealed one.
    let next = if newest == head.block_number {
        u256_from(&head.base_fee, "base_fee")
            .map_err(RpcError::internal)?
            .saturating_to::<u128>()
    } else {
        u128::from(
            block(backends, newest + 1)
                .await?
                .header
                .base_fee_per_gas
                .unwrap_or_default(),
        )
    };
    history.base_fee_per_gas.push(next);
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_are_weighted_by_gas_used() {
        // Tips 1 (21,000 gas), 5 (60,000 gas), 9 (19,000 gas): 100,000 gas in all.
        let tips = vec![(9, 19_000), (1, 21_000), (5, 60_000)];
        assert_eq!(
            rewards(tips, 100_000, &[0.0, 10.0, 21.0, 50.0, 81.0, 90.0, 100.0]),
            vec![1, 1, 1, 5, 5, 9, 9]
        );
        assert_eq!(rewards(Vec::new(), 0, &[25.0, 75.0]), vec![0, 0]);
    }

    #[test]
    fn percentiles_and_counts_are_checked() {
        assert!(check_percentiles(&[10.0, 50.0, 50.0, 90.0]).is_ok());
        let error = check_percentiles(&[50.0, 10.0]).expect_err("refused");
        assert_eq!(error.message, "invalid reward percentile: #0:50 > #1:10");
        assert!(check_percentiles(&[101.0]).is_err());
        assert_eq!(
            block_count(&serde_json::json!("0x10")).expect("accepted"),
            16
        );
        assert_eq!(block_count(&serde_json::json!(4)).expect("accepted"), 4);
        assert_eq!(block_count(&serde_json::json!("12")).expect("accepted"), 12);
        assert!(block_count(&serde_json::json!("0xzz")).is_err());
    }
}
