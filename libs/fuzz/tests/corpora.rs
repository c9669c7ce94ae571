//! `make test`'s share of fuzzing: every input of every target's seed corpus
//! (`fuzz/corpus/<target>`) and every crash a fuzzer once found (`fuzz/regressions/<target>`)
//! runs through the target again. A regression is fixed when its file passes here.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_seed_and_every_regression_runs_through_its_target() {
    for &(target, run) in verity_fuzz::TARGETS {
        let seeds = inputs("corpus", target);
        assert!(
            seeds.len() >= 5,
            "{target}: fuzz/corpus/{target} holds {} inputs; its seed corpus is missing",
            seeds.len()
        );
        for (path, bytes) in seeds.iter().chain(&inputs("regressions", target)) {
            let outcome = std::panic::catch_unwind(|| run(bytes));
            assert!(outcome.is_ok(), "{target} fails on {}", path.display());
        }
    }
}

/// The seeds reach past the decoders: the valid chains are accepted whole, so mutations of
/// them exercise every check of `Cursor::advance`, and the valid transactions pass ingress.
#[test]
fn the_valid_seeds_are_accepted() {
    let chains: Vec<_> = inputs("corpus", "chain_events")
        .into_iter()
        .filter(|(path, _)| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("valid-")
        })
        .collect();
    assert!(!chains.is_empty());
    for (path, bytes) in chains {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let events: u64 = name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: valid-<what>-<events>"));
        assert_eq!(verity_fuzz::accepted_chain_events(&bytes), events, "{name}");
    }
    let rules = verity_ingress::validate::ChainRules {
        chain_id: verity_fuzz::CHAIN_ID,
        block_gas_limit: 30_000_000,
        base_fee: 7,
        max_tx_bytes: verity_ingress::validate::DEFAULT_MAX_TX_BYTES,
    };
    let mut valid = 0;
    for (path, bytes) in inputs("corpus", "raw_transaction") {
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("valid-")
        {
            verity_ingress::validate::validate(&bytes, &rules)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            valid += 1;
        }
    }
    assert!(valid >= 3, "legacy, EIP-2930 and EIP-1559 seeds");
}
