//! `eth_getProof`: an account's fields and its storage slots with proofs against Verity's state
//! tree root after a sealed block, from a witness replica (`--proof-replica-url`), in geth's
//! answer shape plus the fields a client needs to check it without trusting this node: the
//! block's number, hash and state root, and the verifiers' signed finality attestations of that
//! block (docs/json-rpc.md, "eth_getProof").

use alloy_eips::BlockId;
use alloy_primitives::{Address, B256, Bytes, U256, hex};
use serde_json::{Value, json};
use verity_proto::{b256_from, u256_bytes, u256_from, v1};

use crate::{
    Backends,
    eth::{from_status, sealed_block},
    jsonrpc::{RpcError, SERVER_ERROR, optional_param, param},
};

/// The answer's proof items as hex strings.
fn items(proof: Option<&v1::StateProof>) -> Vec<Bytes> {
    proof
        .map(|p| p.items.iter().map(|i| Bytes::copy_from_slice(i)).collect())
        .unwrap_or_default()
}

/// The witness's answer at `block` (default `latest`: the newest sealed block), checked to be
/// about the block the gateway's replica holds under that number.
async fn witness_answer(
    backends: &Backends,
    address: Option<Address>,
    keys: &[U256],
    block: Option<BlockId>,
) -> Result<(v1::ProofResponse, B256, B256), RpcError> {
    let Some(mut prover) = backends.proofs() else {
        return Err(RpcError::new(
            SERVER_ERROR,
            "this method needs a witness replica, which keeps the state tree: this gateway runs \
             without --proof-replica-url",
        ));
    };
    let id = block.unwrap_or(BlockId::latest());
    let sealed = sealed_block(backends, id)
        .await?
        .ok_or_else(|| RpcError::new(SERVER_ERROR, "header not found"))?;
    let answer = prover
        .get_proof(v1::ProofRequest {
            address: address.map(|a| a.to_vec()).unwrap_or_default(),
            slots: keys.iter().map(|k| u256_bytes(*k)).collect(),
            block_number: sealed.number(),
        })
        .await
        .map_err(from_status)?
        .into_inner();
    let block_hash = b256_from(&answer.block_hash, "block_hash").map_err(RpcError::internal)?;
    if block_hash != sealed.hash || answer.block_number != sealed.number() {
        return Err(RpcError::internal(format!(
            "the witness replica holds block {} with hash {block_hash}, the gateway's replica {}",
            sealed.number(),
            sealed.hash
        )));
    }
    let root = b256_from(&answer.state_root, "state_root").map_err(RpcError::internal)?;
    Ok((answer, block_hash, root))
}

fn attestations(answer: &v1::ProofResponse) -> Vec<String> {
    answer
        .attestations
        .iter()
        .map(hex::encode_prefixed)
        .collect()
}

/// `verity_getStateRoot(block)`: the state tree's root after the block, with the verifiers'
/// attestations of it.
pub async fn get_state_root(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let block: Option<BlockId> = optional_param(params, 0)?;
    let (answer, block_hash, root) = witness_answer(backends, None, &[], block).await?;
    Ok(json!({
        "blockNumber": U256::from(answer.block_number),
        "blockHash": block_hash,
        "stateRoot": root,
        "attestations": attestations(&answer),
    }))
}

/// Roots the witness recorded, by block number, for block objects: a block's root never
/// changes, so each is asked for once (the table is emptied when it fills).
#[derive(Debug, Default)]
pub struct RootCache(std::sync::Mutex<std::collections::HashMap<u64, (B256, B256)>>);

/// Roots kept at most.
const ROOT_CACHE: usize = 4096;

/// The state root after `block` (number, hash) as the witness recorded it, when this gateway has
/// a witness and the witness has it for that very block; otherwise `None` (block objects then
/// carry no `verityStateRoot`).
pub async fn recorded_root(backends: &Backends, number: u64, hash: B256) -> Option<B256> {
    let mut prover = backends.proofs()?;
    let cached = backends
        .roots
        .0
        .lock()
        .ok()
        .and_then(|roots| roots.get(&number).copied());
    if let Some((root, of)) = cached {
        return (of == hash).then_some(root);
    }
    let answer = prover
        .get_proof(v1::ProofRequest {
            address: Vec::new(),
            slots: Vec::new(),
            block_number: number,
        })
        .await
        .ok()?
        .into_inner();
    let of = B256::try_from(answer.block_hash.as_slice()).ok()?;
    let root = B256::try_from(answer.state_root.as_slice()).ok()?;
    if let Ok(mut roots) = backends.roots.0.lock() {
        if roots.len() >= ROOT_CACHE {
            roots.clear();
        }
        roots.insert(number, (root, of));
    }
    (of == hash).then_some(root)
}

/// `eth_getProof(address, storageKeys, block)`.
pub async fn get_proof(backends: &Backends, params: &[Value]) -> Result<Value, RpcError> {
    let address: Address = param(params, 0)?;
    let keys: Vec<U256> = param(params, 1)?;
    let block: Option<BlockId> = optional_param(params, 2)?;
    let (answer, block_hash, root) = witness_answer(backends, Some(address), &keys, block).await?;
    let wire = |e: verity_proto::ConversionError| RpcError::internal(e);
    let storage = answer
        .storage
        .iter()
        .map(|s| {
            Ok(json!({
                "key": B256::from(u256_from(&s.slot, "slot").map_err(wire)?),
                "value": u256_from(&s.value, "value").map_err(wire)?,
                "proof": items(s.proof.as_ref()),
            }))
        })
        .collect::<Result<Vec<Value>, RpcError>>()?;
    // geth's shape for an account that does not exist: nonce and balance zero, code hash zero.
    let code_hash = if answer.exists {
        b256_from(&answer.code_hash, "code_hash").map_err(wire)?
    } else {
        B256::ZERO
    };
    Ok(json!({
        "address": address,
        "balance": u256_from(&answer.balance, "balance").map_err(wire)?,
        "codeHash": code_hash,
        "nonce": U256::from(answer.nonce),
        // One tree holds accounts and slots: storage proofs are against the state root too.
        "storageHash": root,
        "accountProof": items(answer.account_proof.as_ref()),
        "storageProof": storage,
        "stateRoot": root,
        "blockNumber": U256::from(answer.block_number),
        "blockHash": block_hash,
        "attestations": attestations(&answer),
    }))
}
