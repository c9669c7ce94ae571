//! `verity verify-proof`: checks an `eth_getProof` answer without trusting the node that gave
//! it: every account and storage proof against the answer's state root
//! ([`verity_commitment::state_proof`]), and that root against something the caller trusts: a
//! root it names (`--root`), or finality attestations of that very block signed by verifiers it
//! names (`--verifier`, `--quorum`), which the answer carries.

use std::io::Read as _;

use alloy_primitives::{Address, B256, Bytes, U256};
use anyhow::{Context as _, bail};
use serde::Deserialize;
use verity_commitment::state_proof::{decode_proof, verify_account, verify_storage};
use verity_primitives::Account;

/// Flags of `verity verify-proof`.
#[derive(clap::Args, Debug)]
pub struct VerifyProofArgs {
    /// The answer of `eth_getProof` (its `result`, or the whole JSON-RPC response) as JSON; `-`
    /// reads standard input.
    #[arg(long)]
    pub proof: String,
    /// Trust this state root (e.g. read from a node you run).
    #[arg(long)]
    pub root: Option<B256>,
    /// Trust the root when verifiers at these addresses signed a finality attestation of the
    /// answer's block with that root (repeat the flag, or separate with commas).
    #[arg(long = "verifier", value_delimiter = ',')]
    pub verifiers: Vec<Address>,
    /// Distinct listed verifiers whose attestations are needed.
    #[arg(long, default_value_t = 1)]
    pub quorum: usize,
    /// Chain id the attestations are signed for (needed with --verifier).
    #[arg(long)]
    pub chain_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    address: Address,
    balance: U256,
    nonce: U256,
    code_hash: B256,
    account_proof: Vec<Bytes>,
    #[serde(default)]
    storage_proof: Vec<SlotAnswer>,
    /// Verity's answer names the root; an answer as other tools re-print it (e.g. `cast proof`)
    /// keeps only `storageHash`, which Verity sets to the same root.
    state_root: Option<B256>,
    storage_hash: Option<B256>,
    block_number: Option<U256>,
    block_hash: Option<B256>,
    #[serde(default)]
    attestations: Vec<Bytes>,
}

#[derive(Debug, Deserialize)]
struct SlotAnswer {
    key: U256,
    value: U256,
    proof: Vec<Bytes>,
}

/// What a checked answer established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The block (when the answer names it) and the root the proofs hold under.
    pub block: Option<(u64, B256)>,
    pub state_root: B256,
    /// Who vouched for the root.
    pub vouched_by: String,
    /// The account (`None`: it does not exist) and the checked slots.
    pub account: Option<Account>,
    pub slots: Vec<(U256, U256)>,
}

/// Checks an `eth_getProof` answer (`result` or the whole response) against what `args` trusts.
pub fn check(json: &serde_json::Value, args: &VerifyProofArgs) -> anyhow::Result<Verified> {
    let result = json.get("result").unwrap_or(json);
    if let Some(error) = json.get("error") {
        bail!("the answer is a JSON-RPC error: {error}");
    }
    let answer: Answer =
        serde_json::from_value(result.clone()).context("not an eth_getProof answer of Verity")?;
    let root = answer
        .state_root
        .or(answer.storage_hash)
        .context("the answer has neither stateRoot nor storageHash")?;
    let block = match (answer.block_number, answer.block_hash) {
        (Some(number), Some(hash)) => Some((u64::try_from(number).context("blockNumber")?, hash)),
        _ => None,
    };
    let vouched_by = vouch(&answer, root, block, args)?;

    let nonce = u64::try_from(answer.nonce).context("nonce")?;
    let account = if answer.code_hash.is_zero() {
        if nonce != 0 || !answer.balance.is_zero() {
            bail!(
                "the answer says the account does not exist (codeHash zero) yet gives it a nonce or balance"
            );
        }
        None
    } else {
        Some(Account {
            nonce,
            balance: answer.balance,
            code_hash: answer.code_hash,
        })
    };
    let proof = decode_proof(&answer.account_proof).context("accountProof")?;
    verify_account(root, answer.address, account.as_ref(), &proof)
        .with_context(|| format!("the account proof of {} does not hold", answer.address))?;
    let mut slots = Vec::new();
    for slot in &answer.storage_proof {
        let proof =
            decode_proof(&slot.proof).with_context(|| format!("proof of slot {}", slot.key))?;
        verify_storage(root, answer.address, slot.key, slot.value, &proof).with_context(|| {
            format!(
                "the proof of slot {} of {} does not hold",
                slot.key, answer.address
            )
        })?;
        slots.push((slot.key, slot.value));
    }
    Ok(Verified {
        block,
        state_root: root,
        vouched_by,
        account,
        slots,
    })
}

/// Why the answer's root is to be trusted, or an error saying why it is not.
fn vouch(
    answer: &Answer,
    root: B256,
    block: Option<(u64, B256)>,
    args: &VerifyProofArgs,
) -> anyhow::Result<String> {
    if let Some(trusted) = args.root {
        if trusted != root {
            bail!("the proofs are against root {root}, not the trusted root {trusted}");
        }
        return Ok(format!("the trusted root {trusted}"));
    }
    if args.verifiers.is_empty() {
        bail!("nothing vouches for the answer's root: pass --root, or --verifier with --chain-id");
    }
    let chain_id = args
        .chain_id
        .context("--verifier needs --chain-id (attestations are signed per chain)")?;
    let (block_number, block_hash) = block
        .context("the answer names no block (blockNumber, blockHash) to match attestations to")?;
    let mut signed: Vec<Address> = answer
        .attestations
        .iter()
        .filter_map(|bytes| crate::status::checked_attestation(bytes, chain_id))
        .filter(|a| {
            a.block_number == block_number
                && a.block_hash == block_hash
                && a.state_root == root
                && a.fraud.is_none()
                && args.verifiers.contains(&a.verifier)
        })
        .map(|a| a.verifier)
        .collect();
    signed.sort();
    signed.dedup();
    let quorum = args.quorum.max(1);
    if signed.len() < quorum {
        bail!(
            "{} of the listed verifiers attested block {block_number} ({block_hash}) with root {root}; {quorum} needed",
            signed.len(),
        );
    }
    Ok(format!(
        "finality attestations signed by {}",
        signed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Runs the command: prints what holds, or fails saying what does not.
pub fn run(args: VerifyProofArgs) -> anyhow::Result<()> {
    let text = if args.proof == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(&args.proof).with_context(|| format!("reading {}", args.proof))?
    };
    let json: serde_json::Value = serde_json::from_str(&text).context("the proof is not JSON")?;
    let verified = check(&json, &args)?;
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match verified.block {
        Some((number, hash)) => write!(out, "block {number} ({hash}), ")?,
        None => write!(out, "block not named, ")?,
    }
    writeln!(
        out,
        "state root {}: vouched for by {}",
        verified.state_root, verified.vouched_by
    )?;
    match &verified.account {
        Some(a) => writeln!(
            out,
            "account: nonce {}, balance {}, code hash {} (proven)",
            a.nonce, a.balance, a.code_hash
        )?,
        None => writeln!(out, "account: does not exist (proven)")?,
    }
    for (slot, value) in &verified.slots {
        writeln!(out, "slot {slot:#x}: {value:#x} (proven)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;
    use verity_chunk::wire::{FinalityAttestation, finality_hash};
    use verity_commitment::{
        Poseidon2Bn254, SparseMerkleTree, account_key, account_value, state_proof::encode_proof,
        storage_key, storage_value,
    };
    use verity_primitives::SigningKey;

    use super::*;

    const CHAIN_ID: u64 = 31337;

    fn hex_items(items: Vec<Vec<u8>>) -> Vec<String> {
        items
            .into_iter()
            .map(alloy_primitives::hex::encode_prefixed)
            .collect()
    }

    /// An answer for `address` (balance 7, slot 1 = 5) at block 9, with an attestation by
    /// `verifier` of `attested_root` (or the tree's own root).
    fn answer(verifier: &SigningKey, attested_root: Option<B256>) -> serde_json::Value {
        let address = Address::repeat_byte(0xab);
        let account = Account {
            nonce: 2,
            balance: U256::from(7),
            ..Default::default()
        };
        let mut tree = SparseMerkleTree::new(Poseidon2Bn254);
        let mut writes: Vec<verity_commitment::Update> = (0..30u8)
            .map(|i| {
                (
                    account_key(Address::repeat_byte(i)),
                    Some(B256::repeat_byte(i + 1)),
                )
            })
            .collect();
        writes.push((account_key(address), Some(account_value(&account))));
        writes.push((
            storage_key(address, U256::from(1)),
            Some(storage_value(U256::from(5))),
        ));
        tree.apply(writes);
        let root = tree.root();
        let block_hash = B256::repeat_byte(9);
        let mut attestation = FinalityAttestation {
            block_number: 9,
            block_hash,
            state_root: attested_root.unwrap_or(root),
            fraud: None,
            false_accusations: Vec::new(),
            verifier: verifier.address(),
            signature: verity_primitives::signing::UNSIGNED,
        };
        attestation.signature = verifier.sign(&finality_hash(CHAIN_ID, &attestation));
        let encoded = prost::Message::encode_to_vec(&verity_proto::v1::FinalityAttestation::from(
            &attestation,
        ));
        json!({
            "address": address,
            "balance": "0x7",
            "nonce": "0x2",
            "codeHash": account.code_hash,
            "storageHash": root,
            "accountProof": hex_items(encode_proof(&tree.prove(&account_key(address)))),
            "storageProof": [{
                "key": B256::from(U256::from(1)),
                "value": "0x5",
                "proof": hex_items(encode_proof(&tree.prove(&storage_key(address, U256::from(1))))),
            }],
            "stateRoot": root,
            "blockNumber": "0x9",
            "blockHash": block_hash,
            "attestations": [alloy_primitives::hex::encode_prefixed(encoded)],
        })
    }

    fn args(verifier: Address) -> VerifyProofArgs {
        VerifyProofArgs {
            proof: String::new(),
            root: None,
            verifiers: vec![verifier],
            quorum: 1,
            chain_id: Some(CHAIN_ID),
        }
    }

    #[test]
    fn an_attested_answer_holds_and_every_tampering_is_refused() {
        let verifier = SigningKey::random();
        let good = answer(&verifier, None);
        let verified = check(&good, &args(verifier.address())).unwrap();
        assert_eq!(verified.account.unwrap().balance, U256::from(7));
        assert_eq!(verified.slots, vec![(U256::from(1), U256::from(5))]);

        // Another balance or slot value than the proof's.
        let mut bad = good.clone();
        bad["balance"] = json!("0x8");
        assert!(check(&bad, &args(verifier.address())).is_err());
        let mut bad = good.clone();
        bad["storageProof"][0]["value"] = json!("0x6");
        assert!(check(&bad, &args(verifier.address())).is_err());
        // One byte of a sibling changed.
        let mut bad = good.clone();
        let sibling = bad["accountProof"][0].as_str().unwrap().to_string();
        let flipped = if sibling.ends_with('0') { "1" } else { "0" };
        bad["accountProof"][0] = json!(format!("{}{flipped}", &sibling[..sibling.len() - 1]));
        assert!(check(&bad, &args(verifier.address())).is_err());
        // A verifier not listed, another chain, or no trust at all.
        assert!(check(&good, &args(Address::repeat_byte(1))).is_err());
        let mut other_chain = args(verifier.address());
        other_chain.chain_id = Some(1);
        assert!(check(&good, &other_chain).is_err());
        let mut nothing = args(verifier.address());
        nothing.verifiers.clear();
        assert!(check(&good, &nothing).is_err());
        // An attestation of another root does not vouch for this one.
        let other = answer(&verifier, Some(B256::repeat_byte(3)));
        assert!(check(&other, &args(verifier.address())).is_err());
        // A trusted root: this one holds, another block's is refused.
        let mut by_root = args(verifier.address());
        by_root.verifiers.clear();
        by_root.root = Some(verified.state_root);
        check(&good, &by_root).unwrap();
        by_root.root = Some(B256::repeat_byte(3));
        assert!(check(&good, &by_root).is_err());
    }
}
