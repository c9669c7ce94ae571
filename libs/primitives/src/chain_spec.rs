//! The chain spec: chain id, gas limit, fee parameters and the genesis allocation, read from a
//! geth-style genesis JSON file (the format `alloy-genesis` parses), plus the devnet genesis.

use std::path::Path;

use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Header};
use alloy_eips::eip1559::{BaseFeeParams, INITIAL_BASE_FEE};
use alloy_genesis::{Genesis, GenesisAccount};
use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::{MnemonicBuilder, coins_bip39::English};

/// The standard test mnemonic that Hardhat, Anvil and Foundry derive their dev accounts from.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Gas limit used when the genesis file gives none (Ethereum's; a genesis written by this
/// release names its own, [`REALTIME_GAS_LIMIT`] unless told otherwise).
pub const DEFAULT_GAS_LIMIT: u64 = 30_000_000;

/// Most gas one transaction may ask for (EIP-7825's cap, 2^24): with blocks of a billion gas,
/// what bounds the work, the logs (~2 MiB) and the writes one transaction can put in one
/// mini-block, which no bound can split. Ingress refuses more with geth's text.
pub const MAX_TX_GAS: u64 = 1 << 24;

/// Block gas limit of a new chain from `verity devnet` and `verity chain init` unless told
/// otherwise: 1 Ggas per block, ~47,000 transfers per 1 s block, far above what one machine
/// executes, so the limit never caps throughput (MegaETH's mainnet runs ~1.7 Ggas/s). The fee
/// market's target is the limit over the elasticity (2), so it scales with it: the base fee
/// rises only past 500 Mgas per block.
pub const REALTIME_GAS_LIMIT: u64 = 1_000_000_000;

/// Why a genesis file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChainSpecError {
    /// The file could not be read.
    #[error("cannot read genesis file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON does not parse as a genesis.
    #[error("genesis is not valid JSON of the geth genesis format: {0}")]
    Parse(#[from] serde_json::Error),
    /// A field has a value that cannot work.
    #[error("genesis field `{field}` is invalid: {reason}")]
    Invalid {
        /// The JSON field.
        field: &'static str,
        /// What would be valid.
        reason: String,
    },
    /// The dev accounts could not be derived.
    #[error("cannot derive dev account {index}: {reason}")]
    DevAccount {
        /// Account index.
        index: u32,
        /// The derivation error.
        reason: String,
    },
}

/// Everything about the chain that every node must agree on.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    /// The parsed genesis.
    pub genesis: Genesis,
    /// The genesis block header (block 0).
    pub genesis_header: Header,
    /// `genesis_header.hash_slow()`.
    pub genesis_hash: B256,
    /// EIP-1559 parameters: Ethereum's unless the genesis sets `config.verity.eip1559Elasticity`
    /// and `config.verity.eip1559Denominator`.
    pub base_fee_params: BaseFeeParams,
    /// The sequencer of epoch 0 (`config.verity.sequencer`), if genesis names one.
    pub sequencer: Option<Address>,
    /// Who may appoint later sequencers (`config.verity.governance`: `{keys, threshold}`).
    pub governance: Option<crate::governance::Governance>,
}

/// The chain-specific part of the genesis `config` (`config.verity`).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerityConfig {
    /// Gas limit over gas target (Ethereum: 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip1559_elasticity: Option<u64>,
    /// The base fee moves by at most 1/denominator per block (Ethereum: 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eip1559_denominator: Option<u64>,
    /// The sequencer key of epoch 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<Address>,
    /// The governance keys and how many must sign an appointment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<crate::governance::Governance>,
}

/// Domain tag of the genesis commitment to its sequencing configuration.
const SEQUENCING_DOMAIN: &[u8] = b"verity/genesis-sequencing/v1";

/// `config.verity` of a genesis (all defaults when absent).
fn verity_config(genesis: &Genesis) -> Result<VerityConfig, ChainSpecError> {
    match genesis.config.extra_fields.get_deserialized("verity") {
        None => Ok(VerityConfig::default()),
        Some(parsed) => parsed.map_err(|e| ChainSpecError::Invalid {
            field: "config.verity",
            reason: e.to_string(),
        }),
    }
}

/// The EIP-1559 parameters a genesis sets in `config.verity`, each defaulting to Ethereum's.
fn base_fee_params(config: &VerityConfig) -> Result<BaseFeeParams, ChainSpecError> {
    let ethereum = BaseFeeParams::ethereum();
    let positive = |value: Option<u64>, default: u128, field| match value {
        None => Ok(default),
        Some(0) => Err(ChainSpecError::Invalid {
            field,
            reason: "must be a positive integer".into(),
        }),
        Some(v) => Ok(u128::from(v)),
    };
    Ok(BaseFeeParams::new(
        positive(
            config.eip1559_denominator,
            ethereum.max_change_denominator,
            "config.verity.eip1559Denominator",
        )?,
        positive(
            config.eip1559_elasticity,
            ethereum.elasticity_multiplier,
            "config.verity.eip1559Elasticity",
        )?,
    ))
}

impl ChainSpec {
    /// Reads and validates a genesis JSON file.
    pub fn load(path: &Path) -> Result<Self, ChainSpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| ChainSpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// Parses and validates genesis JSON.
    pub fn from_json(text: &str) -> Result<Self, ChainSpecError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        // alloy's ChainConfig defaults a missing chain id to 1 (mainnet); a rollup must never
        // start with mainnet's id by accident, so the field is required.
        if value.pointer("/config/chainId").is_none() {
            return Err(ChainSpecError::Invalid {
                field: "config.chainId",
                reason: "missing; set the rollup's own chain id".into(),
            });
        }
        Self::from_genesis(serde_json::from_value(value)?)
    }

    /// Validates a genesis and derives block 0.
    pub fn from_genesis(mut genesis: Genesis) -> Result<Self, ChainSpecError> {
        if genesis.config.chain_id == 0 {
            return Err(ChainSpecError::Invalid {
                field: "config.chainId",
                reason: "must be a positive integer".into(),
            });
        }
        if genesis.gas_limit == 0 {
            genesis.gas_limit = DEFAULT_GAS_LIMIT;
        }
        if genesis.gas_limit < 21_000 {
            return Err(ChainSpecError::Invalid {
                field: "gasLimit",
                reason: format!("{} is below the 21000 a transfer needs", genesis.gas_limit),
            });
        }
        let base_fee = match genesis.base_fee_per_gas {
            None => INITIAL_BASE_FEE,
            Some(fee) => u64::try_from(fee).map_err(|_| ChainSpecError::Invalid {
                field: "baseFeePerGas",
                reason: format!("{fee} does not fit in 64 bits"),
            })?,
        };
        genesis.base_fee_per_gas = Some(u128::from(base_fee));
        let config = verity_config(&genesis)?;
        let base_fee_params = base_fee_params(&config)?;
        let governance = match &config.governance {
            None => None,
            Some(g) => Some(
                crate::governance::Governance::new(g.keys.clone(), g.threshold).map_err(|e| {
                    ChainSpecError::Invalid {
                        field: "config.verity.governance",
                        reason: e.to_string(),
                    }
                })?,
            ),
        };
        // The block-0 header commits to who sequences the chain and who may appoint, so nodes
        // configured with different governance never share a genesis hash.
        if config.sequencer.is_some() || governance.is_some() {
            if !genesis.extra_data.is_empty() {
                return Err(ChainSpecError::Invalid {
                    field: "extraData",
                    reason: "must be empty when config.verity names a sequencer or governance \
                             (block 0's extraData commits to them)"
                        .into(),
                });
            }
            let mut buf = SEQUENCING_DOMAIN.to_vec();
            buf.extend_from_slice(config.sequencer.unwrap_or_default().as_slice());
            if let Some(g) = &governance {
                buf.extend_from_slice(&(g.threshold as u64).to_be_bytes());
                for key in &g.keys {
                    buf.extend_from_slice(key.as_slice());
                }
            }
            genesis.extra_data = alloy_primitives::keccak256(buf).0.to_vec().into();
        }
        let genesis_header = Header {
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: genesis.coinbase,
            number: 0,
            gas_limit: genesis.gas_limit,
            timestamp: genesis.timestamp,
            extra_data: genesis.extra_data.clone(),
            mix_hash: genesis.mix_hash,
            base_fee_per_gas: Some(base_fee),
            ..Default::default()
        };
        let genesis_hash = genesis_header.hash_slow();
        Ok(Self {
            genesis,
            genesis_header,
            genesis_hash,
            base_fee_params,
            sequencer: config.sequencer,
            governance,
        })
    }

    /// The devnet genesis: the first `accounts` accounts of [`DEV_MNEMONIC`] funded with
    /// `balance_eth` ETH each.
    pub fn dev(chain_id: u64, accounts: u32, balance_eth: u64) -> Result<Self, ChainSpecError> {
        Self::dev_with_gas_limit(chain_id, accounts, balance_eth, DEFAULT_GAS_LIMIT)
    }

    /// [`ChainSpec::dev`] with another block gas limit (a 1 s block of 30M gas holds ~1,400
    /// transfers; load tests at 10,000 transfers/s need more).
    pub fn dev_with_gas_limit(
        chain_id: u64,
        accounts: u32,
        balance_eth: u64,
        gas_limit: u64,
    ) -> Result<Self, ChainSpecError> {
        let balance = U256::from(balance_eth) * U256::from(10u64).pow(U256::from(18));
        let mut genesis = Genesis::default();
        genesis.config.chain_id = chain_id;
        genesis.gas_limit = gas_limit;
        genesis.base_fee_per_gas = Some(u128::from(INITIAL_BASE_FEE));
        for address in dev_accounts(accounts)? {
            genesis
                .alloc
                .insert(address, GenesisAccount::default().with_balance(balance));
        }
        Self::from_genesis(genesis)
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.genesis.config.chain_id
    }

    /// Gas limit of every block.
    pub fn gas_limit(&self) -> u64 {
        self.genesis.gas_limit
    }

    /// Base fee of block 0.
    pub fn initial_base_fee(&self) -> u64 {
        self.genesis_header
            .base_fee_per_gas
            .unwrap_or(INITIAL_BASE_FEE)
    }

    /// EIP-1559 parameters (Ethereum mainnet's).
    pub fn base_fee_params(&self) -> BaseFeeParams {
        self.base_fee_params
    }

    /// Base fee of the block after `parent` (EIP-1559).
    pub fn next_base_fee(&self, parent: &Header) -> u64 {
        parent
            .next_block_base_fee(self.base_fee_params())
            .unwrap_or_else(|| self.initial_base_fee())
    }

    /// Block 0, derived from the spec by every node alike (not signed by anyone).
    pub fn genesis_block(&self) -> crate::Block {
        crate::Block {
            header: self.genesis_header.clone(),
            hash: self.genesis_hash,
            first_mini_block: 0,
            mini_block_count: 0,
            transaction_hashes: Vec::new(),
            signature: crate::UNSIGNED,
        }
    }

    /// The genesis as pretty JSON, for writing a genesis file (the derived `extraData` is
    /// left out: it is recomputed on load).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut genesis = self.genesis.clone();
        if self.sequencer.is_some() || self.governance.is_some() {
            genesis.extra_data = Default::default();
        }
        serde_json::to_string_pretty(&genesis)
    }

    /// Sets who sequences epoch 0 and who may appoint later sequencers (`config.verity`), and
    /// re-derives block 0.
    pub fn with_sequencing(
        &self,
        sequencer: Address,
        governance: Option<crate::governance::Governance>,
    ) -> Result<Self, ChainSpecError> {
        let mut genesis = self.genesis.clone();
        if self.sequencer.is_some() || self.governance.is_some() {
            genesis.extra_data = Default::default();
        }
        let mut config = verity_config(&genesis)?;
        config.sequencer = Some(sequencer);
        config.governance = governance;
        let value = serde_json::to_value(&config)?;
        genesis
            .config
            .extra_fields
            .insert("verity".to_string(), value);
        Self::from_genesis(genesis)
    }

    /// The chain's sequencing rules (see [`ChainSpec::genesis_epoch`] for `fallback`).
    pub fn sequencing(
        &self,
        fallback: Option<Address>,
    ) -> Result<crate::governance::Sequencing, ChainSpecError> {
        Ok(crate::governance::Sequencing {
            chain_id: self.chain_id(),
            governance: self.governance.clone(),
            genesis: self.genesis_epoch(fallback)?,
        })
    }

    /// The epoch in force at genesis: epoch 0 of the sequencer genesis names, or of `fallback`
    /// (a `--sequencer-address` flag) for a genesis that names none. Refused when both are
    /// given and differ, or neither is.
    pub fn genesis_epoch(
        &self,
        fallback: Option<Address>,
    ) -> Result<crate::governance::Epoch, ChainSpecError> {
        let sequencer = match (self.sequencer, fallback) {
            (Some(named), Some(flag)) if named != flag => {
                return Err(ChainSpecError::Invalid {
                    field: "config.verity.sequencer",
                    reason: format!("genesis names {named}, but {flag} was configured"),
                });
            }
            (Some(named), _) => named,
            (None, Some(flag)) => flag,
            (None, None) => {
                return Err(ChainSpecError::Invalid {
                    field: "config.verity.sequencer",
                    reason: "genesis names no sequencer and none was configured".into(),
                });
            }
        };
        Ok(crate::governance::Epoch {
            number: 0,
            sequencer,
        })
    }
}

/// Derives the addresses of the first `count` accounts of [`DEV_MNEMONIC`]
/// (path m/44'/60'/0'/0/i).
pub fn dev_accounts(count: u32) -> Result<Vec<Address>, ChainSpecError> {
    Ok(dev_signers(count)?.iter().map(|s| s.address()).collect())
}

/// The first `count` signing keys of [`DEV_MNEMONIC`].
pub fn dev_signers(
    count: u32,
) -> Result<Vec<alloy_signer_local::PrivateKeySigner>, ChainSpecError> {
    (0..count)
        .map(|index| {
            MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .index(index)
                .and_then(|b| b.build())
                .map_err(|e| ChainSpecError::DevAccount {
                    index,
                    reason: e.to_string(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_accounts_are_the_well_known_hardhat_accounts() {
        let accounts = dev_accounts(2).expect("derive");
        assert_eq!(
            accounts[0],
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
                .parse::<Address>()
                .expect("address")
        );
        assert_eq!(
            accounts[1],
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
                .parse::<Address>()
                .expect("address")
        );
    }

    #[test]
    fn dev_genesis_round_trips_through_json() {
        let spec = ChainSpec::dev(4242, 10, 10_000).expect("dev spec");
        assert_eq!(spec.genesis.alloc.len(), 10);
        let again = ChainSpec::from_json(&spec.to_json().expect("json")).expect("parse");
        assert_eq!(again.chain_id(), 4242);
        assert_eq!(again.genesis_hash, spec.genesis_hash);
    }

    #[test]
    fn a_genesis_without_chain_id_is_refused_with_the_field_named() {
        let error = ChainSpec::from_json(r#"{"config":{},"alloc":{}}"#).expect_err("refused");
        assert!(error.to_string().contains("config.chainId"), "{error}");
    }

    #[test]
    fn eip1559_parameters_come_from_the_genesis_and_drive_the_base_fee() {
        let parent = |gas_used: u64| Header {
            gas_limit: 30_000_000,
            gas_used,
            base_fee_per_gas: Some(1_000_000_000),
            ..Default::default()
        };
        let ethereum =
            ChainSpec::from_json(r#"{"config":{"chainId":7},"alloc":{}}"#).expect("parse");
        assert_eq!(ethereum.base_fee_params(), BaseFeeParams::ethereum());
        // A full block raises the base fee by 1/8 with Ethereum's parameters...
        assert_eq!(ethereum.next_base_fee(&parent(30_000_000)), 1_125_000_000);
        let custom = ChainSpec::from_json(
            r#"{"config":{"chainId":7,"verity":{"eip1559Elasticity":4,"eip1559Denominator":50}},"alloc":{}}"#,
        )
        .expect("parse");
        assert_eq!(custom.base_fee_params(), BaseFeeParams::new(50, 4));
        // ...and by 1/50 of (used - target) / target with a target of a quarter of the limit.
        assert_eq!(custom.next_base_fee(&parent(30_000_000)), 1_060_000_000);
        assert_eq!(custom.next_base_fee(&parent(7_500_000)), 1_000_000_000);
        for bad in [
            r#"{"config":{"chainId":7,"verity":{"eip1559Denominator":0}},"alloc":{}}"#,
            r#"{"config":{"chainId":7,"verity":{"eip1559Elasticity":0}},"alloc":{}}"#,
            r#"{"config":{"chainId":7,"verity":{"eip1559Elastic":2}},"alloc":{}}"#,
        ] {
            let error = ChainSpec::from_json(bad).expect_err("refused");
            assert!(error.to_string().contains("config.verity"), "{error}");
        }
    }
}
