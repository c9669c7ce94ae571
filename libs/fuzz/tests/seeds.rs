//! Writes the seed corpora in `fuzz/corpus` (run by hand when a target or a wire format
//! changes: `cargo test -p verity-fuzz --test seeds -- --ignored`; signatures are
//! deterministic, so the files only change when what they encode does). The seeds are real
//! messages: signed transactions of each type, a chain from genesis through a handover, and
//! each protobuf message a node receives, so the fuzzer starts past the decoders.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use prost::Message;
use verity_fuzz::{CHAIN_ID, fixture, keys};
use verity_primitives::{
    Transaction,
    governance::{Appointment, SignedAppointment},
};
use verity_proto::v1;
use verity_testkit::chain::ChainBuilder;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn signer() -> PrivateKeySigner {
    format!("0x{}", "77".repeat(32)).parse().unwrap()
}

fn to() -> TxKind {
    TxKind::Call(Address::repeat_byte(0xaa))
}

fn signed<T: SignableTransaction<alloy_primitives::Signature>>(tx: T) -> TxEnvelope
where
    TxEnvelope: From<alloy_consensus::Signed<T>>,
{
    let signature = signer().sign_hash_sync(&tx.signature_hash()).unwrap();
    TxEnvelope::from(tx.into_signed(signature))
}

fn transactions() -> Vec<(&'static str, TxEnvelope)> {
    vec![
        (
            "valid-legacy",
            signed(TxLegacy {
                chain_id: Some(CHAIN_ID),
                nonce: 0,
                gas_price: 1_000_000_000,
                gas_limit: 21_000,
                to: to(),
                value: U256::from(1u64),
                input: Bytes::new(),
            }),
        ),
        (
            "valid-eip2930",
            signed(TxEip2930 {
                chain_id: CHAIN_ID,
                nonce: 1,
                gas_price: 1_000_000_000,
                gas_limit: 30_000,
                to: to(),
                value: U256::ZERO,
                input: Bytes::from_static(&[0xde, 0xad]),
                access_list: alloy_eips::eip2930::AccessList(vec![
                    alloy_eips::eip2930::AccessListItem {
                        address: Address::repeat_byte(0xaa),
                        storage_keys: vec![B256::repeat_byte(1)],
                    },
                ]),
            }),
        ),
        (
            "valid-eip1559",
            signed(TxEip1559 {
                chain_id: CHAIN_ID,
                nonce: 2,
                gas_limit: 60_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1_000_000,
                to: TxKind::Create,
                value: U256::ZERO,
                input: Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xf3]),
                access_list: Default::default(),
            }),
        ),
        (
            "wrong-chain",
            signed(TxEip1559 {
                chain_id: CHAIN_ID + 1,
                gas_limit: 21_000,
                max_fee_per_gas: 2_000_000_000,
                to: to(),
                ..Default::default()
            }),
        ),
        (
            "pre-eip155",
            signed(TxLegacy {
                chain_id: None,
                gas_price: 1_000_000_000,
                gas_limit: 21_000,
                to: to(),
                ..Default::default()
            }),
        ),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand when a target or a wire format changes"]
fn write_the_seed_corpora() {
    // Transactions, and damaged ones.
    let txs = transactions();
    for (name, envelope) in &txs {
        write("raw_transaction", name, &envelope.encoded_2718());
    }
    let good = txs[2].1.encoded_2718();
    write("raw_transaction", "truncated", &good[..good.len() - 3]);
    write(
        "raw_transaction",
        "trailing-byte",
        &[good.as_slice(), &[0]].concat(),
    );
    write(
        "raw_transaction",
        "blob-type",
        &[&[3u8][..], &good[1..]].concat(),
    );
    write("raw_transaction", "empty", &[]);

    // A chain from genesis: two mini-blocks and their block by the first sequencer, a handover
    // to the second, then its mini-block and block.
    let fixture = fixture();
    let (first, second, governors) = (keys::first(), keys::second(), keys::governors());
    let mut chain = ChainBuilder::new(fixture.spec.genesis_block());
    let appointment = Appointment {
        chain_id: CHAIN_ID,
        epoch: 1,
        sequencer: second.address(),
        first_height: 0,
        parent_hash: B256::ZERO,
    };
    let appointment = SignedAppointment {
        signatures: vec![
            appointment.sign(&governors[0]),
            appointment.sign(&governors[1]),
        ],
        appointment,
    };
    let events = vec![
        chain.push_mini_block(&first),
        chain.push_mini_block(&first),
        chain.push_block(&first),
        chain.push_handover(appointment.clone(), &second),
        chain.push_mini_block(&second),
        chain.push_block(&second),
    ];
    let delimited = |events: &[v1::ChainEvent]| {
        let mut out = Vec::new();
        for event in events {
            event.encode_length_delimited(&mut out).unwrap();
        }
        out
    };
    write(
        "chain_events",
        &format!("valid-handover-{}", events.len()),
        &delimited(&events),
    );
    write(
        "chain_events",
        "valid-mini-block-1",
        &delimited(&events[..1]),
    );
    write("chain_events", "valid-block-3", &delimited(&events[..3]));
    write(
        "chain_events",
        "block-without-its-mini-blocks",
        &delimited(&[events[0].clone(), events[2].clone()]),
    );
    let mut outsider = ChainBuilder::new(fixture.spec.genesis_block());
    write(
        "chain_events",
        "mini-block-by-an-unappointed-key",
        &delimited(&[outsider.push_mini_block(&second)]),
    );

    // One of each protobuf message a node receives, behind its selector byte.
    let tx = {
        let envelope = txs[2].1.clone();
        Transaction::new_unchecked(envelope, signer().address())
    };
    let tx_wire = v1::Transaction::from(&tx);
    let mini = match &events[0].event {
        Some(v1::chain_event::Event::MiniBlock(mini)) => mini.clone(),
        _ => panic!("event 1 is a mini-block"),
    };
    let block = match &events[2].event {
        Some(v1::chain_event::Event::Block(block)) => block.clone(),
        _ => panic!("event 3 is a block"),
    };
    let handover = match &events[3].event {
        Some(v1::chain_event::Event::Handover(handover)) => handover.clone(),
        _ => panic!("event 4 is a handover"),
    };
    let messages: Vec<(u8, &str, Vec<u8>)> = vec![
        (0, "transaction", tx_wire.encode_to_vec()),
        (
            1,
            "receipt",
            mini.receipts
                .first()
                .map(Message::encode_to_vec)
                .unwrap_or_default(),
        ),
        (
            2,
            "state-diff",
            mini.diff
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default(),
        ),
        (3, "mini-block", mini.encode_to_vec()),
        (4, "block", block.encode_to_vec()),
        (
            5,
            "appointment",
            v1::SignedAppointment::from(&appointment).encode_to_vec(),
        ),
        (6, "handover", handover.encode_to_vec()),
        (7, "chain-event", events[3].encode_to_vec()),
        (8, "chunk-job", v1::ChunkJob::default().encode_to_vec()),
        (9, "chunk-proof", v1::ChunkProof::default().encode_to_vec()),
        (
            10,
            "prover-result",
            v1::ProverResult::default().encode_to_vec(),
        ),
        (
            11,
            "fraud-evidence",
            v1::FraudEvidence::default().encode_to_vec(),
        ),
        (
            12,
            "finality-attestation",
            v1::FinalityAttestation::default().encode_to_vec(),
        ),
        (
            13,
            "forward-request",
            v1::ForwardRequest {
                transaction: Some(tx_wire.clone()),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    for (selector, name, bytes) in messages {
        write(
            "proto_messages",
            &format!("{selector:02}-{name}"),
            &[&[selector][..], &bytes].concat(),
        );
    }

    // JSON-RPC bodies.
    let raw = alloy_primitives::hex::encode_prefixed(&good);
    let bodies = [
        ("block-number", r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}"#.to_owned()),
        (
            "send-raw",
            format!(r#"{{"jsonrpc":"2.0","id":"a","method":"eth_sendRawTransaction","params":["{raw}"]}}"#),
        ),
        (
            "call-with-overrides",
            r#"{"jsonrpc":"2.0","id":2,"method":"eth_call","params":[{"from":"0x00000000000000000000000000000000000000aa","to":"0x00000000000000000000000000000000000c0de0","gas":"0x4000000000000000","data":"0x6410000000005100","accessList":[{"address":"0x00000000000000000000000000000000000000aa","storageKeys":["0x0000000000000000000000000000000000000000000000000000000000000001"]}]},"latest",{"0x00000000000000000000000000000000000c0de0":{"code":"0x5b600056","balance":"0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff","stateDiff":{"0x0000000000000000000000000000000000000000000000000000000000000001":"0x0000000000000000000000000000000000000000000000000000000000000002"}}},{"gasLimit":"0x4000000000000000","number":"0x10","baseFee":"0x7"}]}"#.to_owned(),
        ),
        (
            "logs",
            r#"{"jsonrpc":"2.0","id":3,"method":"eth_getLogs","params":[{"fromBlock":"0x0","toBlock":"latest","address":["0x00000000000000000000000000000000000000aa"],"topics":[null,["0x0000000000000000000000000000000000000000000000000000000000000001"]]}]}"#.to_owned(),
        ),
        (
            "batch",
            r#"[{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x00000000000000000000000000000000000000aa","pending"]},{"jsonrpc":"2.0","id":2,"method":"eth_feeHistory","params":["0x4","latest",[25,75]]},{"jsonrpc":"2.0","method":"eth_getBlockByNumber","params":["0x1",true]},{"id":4}]"#.to_owned(),
        ),
        (
            "block-hash",
            r#"{"jsonrpc":"2.0","id":5,"method":"eth_getBlockByHash","params":[{"blockHash":"0x0000000000000000000000000000000000000000000000000000000000000001","requireCanonical":true},false]}"#.to_owned(),
        ),
        ("not-json", "{\"jsonrpc\":".to_owned()),
        ("deep", format!("{}{}", "[".repeat(200), "]".repeat(200))),
    ];
    for (name, body) in bodies {
        write("json_rpc", name, body.as_bytes());
    }
}
