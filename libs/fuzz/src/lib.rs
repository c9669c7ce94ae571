//! The decoders every hostile byte meets, as fuzz targets. Each target takes arbitrary bytes,
//! must never panic, and checks what must hold of whatever it accepts:
//!
//! - [`raw_transaction`]: ingress's validation of `eth_sendRawTransaction` bytes. An accepted
//!   envelope is canonical (re-encoded, it is the same bytes), its hash is the one a client
//!   computes (keccak of the bytes), and the sequencer decodes what ingress forwards to the same
//!   transaction.
//! - [`chain_events`]: a sequence of length-delimited chain events as the stream carries them,
//!   converted and checked one after the other against a chain at genesis
//!   ([`verity_chain::Cursor::advance`], the rules every node applies). A refused event leaves
//!   the chain where it was.
//! - [`proto_messages`]: every `TryFrom<proto>` a node runs on what it receives (the first byte
//!   picks the message): transactions, receipts, state diffs, mini-blocks, blocks, appointments,
//!   handovers, chain events, chunk jobs, proofs, prover results, fraud evidence, finality
//!   attestations. What is accepted re-encodes to a message that is accepted again and re-encodes
//!   the same.
//! - [`json_rpc`]: a JSON-RPC request body through the gateway's parsing: batches, calls, every
//!   parameter type the methods take, and `eth_call`'s conversion (state and block overrides)
//!   into the replica's request.
//!
//! `fuzz/` holds the cargo-fuzz harness (`make fuzz`, nightly) and the corpora; `make test`
//! replays `fuzz/corpus/<target>` and `fuzz/regressions/<target>` through these same functions
//! (`tests/corpora.rs`), so a crash once found stays fixed.

use std::sync::OnceLock;

use alloy_consensus::transaction::SignerRecoverable as _;
use alloy_eips::eip2718::Encodable2718 as _;
use alloy_primitives::{Address, B256, U64, U256, keccak256};
use alloy_rpc_types_eth::{BlockId, BlockNumberOrTag, Filter, TransactionRequest};
use prost::Message;
use verity_chain::Cursor;
use verity_primitives::{
    ChainEvent, ChainSpec, SigningKey, Transaction,
    governance::{Governance, Sequencing},
};
use verity_proto::v1;

/// A fuzz target: arbitrary bytes in, a panic when something that must hold does not.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and the corpus folders name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("raw_transaction", raw_transaction),
    ("chain_events", chain_events),
    ("proto_messages", proto_messages),
    ("json_rpc", json_rpc),
];

/// The chain id the targets' chain and transactions use.
pub const CHAIN_ID: u64 = 31337;

/// The keys of the targets' chain: the genesis sequencer, the one governance may appoint, and
/// three governors (two of whom appoint). Fixed, so that the seed corpora carry events signed
/// by them.
pub mod keys {
    use verity_primitives::SigningKey;

    fn key(byte: u8) -> SigningKey {
        // A random key in its place would silently make every seed's signature wrong.
        SigningKey::from_hex(&format!("0x{}", format!("{byte:02x}").repeat(32)))
            .expect("a fixed 32-byte key")
    }

    /// The sequencer of epoch 0.
    pub fn first() -> SigningKey {
        key(0x11)
    }

    /// A sequencer governance may appoint.
    pub fn second() -> SigningKey {
        key(0x22)
    }

    /// The governors (2 of 3 appoint).
    pub fn governors() -> [SigningKey; 3] {
        [key(0x33), key(0x44), key(0x55)]
    }
}

/// The chain at genesis the event targets check against.
#[derive(Debug)]
pub struct Fixture {
    /// The chain spec (dev accounts, epoch 0 held by [`keys::first`], the governors).
    pub spec: ChainSpec,
    /// Its sequencing rules.
    pub rules: Sequencing,
    /// The chain at genesis.
    pub cursor: Cursor,
}

/// The targets' chain, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let governors = keys::governors();
        let build = || -> Result<Fixture, String> {
            let governance =
                Governance::new(governors.iter().map(SigningKey::address).collect(), 2)
                    .map_err(|e| e.to_string())?;
            let spec = ChainSpec::dev(CHAIN_ID, 2, 100)
                .map_err(|e| e.to_string())?
                .with_sequencing(keys::first().address(), Some(governance))
                .map_err(|e| e.to_string())?;
            let rules = spec.sequencing(None).map_err(|e| e.to_string())?;
            let cursor = Cursor::genesis(spec.genesis_block(), rules.genesis);
            Ok(Fixture {
                spec,
                rules,
                cursor,
            })
        };
        match build() {
            Ok(fixture) => fixture,
            Err(e) => panic!("the fuzz targets' chain spec is invalid: {e}"),
        }
    })
}

/// Ingress's validation of raw transaction bytes.
pub fn raw_transaction(data: &[u8]) {
    let rules = verity_ingress::validate::ChainRules {
        chain_id: CHAIN_ID,
        block_gas_limit: 30_000_000,
        base_fee: 7,
        max_tx_bytes: verity_ingress::validate::DEFAULT_MAX_TX_BYTES,
    };
    let Ok(envelope) = verity_ingress::validate::validate(data, &rules) else {
        return;
    };
    assert_eq!(
        *envelope.tx_hash(),
        keccak256(data),
        "an accepted transaction's hash is the one its sender computed"
    );
    assert_eq!(
        envelope.encoded_2718(),
        data,
        "an accepted envelope is canonical"
    );
    // What the sequencer takes from ingress: the envelope decodes to the same transaction, and
    // a sender named on the wire is the one the signature gives.
    for name_sender in [false, true] {
        let Ok(wire) = verity_ingress::validate::forwarded(data, &envelope, name_sender) else {
            // Only naming the sender recovers it, and a signature may recover to nothing.
            assert!(name_sender, "forwarding without the sender cannot fail");
            continue;
        };
        let forwarded = match verity_proto::envelope_from(&wire) {
            Ok(forwarded) => forwarded,
            Err(e) => panic!("the sequencer refuses what ingress accepted: {e}"),
        };
        assert_eq!(forwarded.tx_hash(), envelope.tx_hash());
        if name_sender {
            let named = Transaction::try_from(&wire)
                .unwrap_or_else(|e| panic!("the sequencer refuses a named sender: {e}"));
            assert_eq!(Some(named.signer()), envelope.recover_signer().ok());
        }
    }
}

/// Most events of one input (the fuzzer keeps inputs small anyway).
const MAX_EVENTS: usize = 32;

/// Length-delimited chain events checked in order against the chain at genesis.
pub fn chain_events(data: &[u8]) {
    accepted_chain_events(data);
}

/// [`chain_events`], returning how many events the chain accepted (the seed corpus's valid
/// chains must be accepted whole, or the fuzzer starts from nothing that reaches the checks).
pub fn accepted_chain_events(data: &[u8]) -> u64 {
    let fixture = fixture();
    let mut cursor = fixture.cursor.clone();
    let mut buf = data;
    for _ in 0..MAX_EVENTS {
        if buf.is_empty() {
            break;
        }
        let Ok(wire) = v1::ChainEvent::decode_length_delimited(&mut buf) else {
            break;
        };
        round_trip::<v1::ChainEvent, ChainEvent>(&wire);
        let Ok(event) = ChainEvent::try_from(&wire) else {
            continue;
        };
        let before = cursor.clone();
        if cursor.advance(&fixture.rules, &event).is_err() {
            assert_eq!(cursor, before, "a refused event moves nothing");
        } else {
            assert_eq!(cursor.last_seq, event.seq);
        }
    }
    cursor.last_seq
}

/// What `proto_messages` decodes, by its first byte (modulo the count).
pub const PROTO_MESSAGES: &[&str] = &[
    "Transaction",
    "Receipt",
    "StateDiff",
    "MiniBlock",
    "Block",
    "SignedAppointment",
    "Handover",
    "ChainEvent",
    "ChunkJob",
    "ChunkProof",
    "ProverResult",
    "FraudEvidence",
    "FinalityAttestation",
    "ForwardRequest",
];

/// One protobuf message, picked by the first byte, decoded and converted.
pub fn proto_messages(data: &[u8]) {
    use verity_chunk::{
        ChunkJob,
        wire::{ChunkProof, FinalityAttestation, FraudEvidence, ProverResult},
    };
    use verity_primitives::{
        Block, MiniBlock, Receipt, StateDiff,
        governance::{Handover, SignedAppointment},
    };
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match usize::from(which) % PROTO_MESSAGES.len() {
        0 => decode_and_round_trip::<v1::Transaction, Transaction>(bytes),
        1 => decode_and_round_trip::<v1::Receipt, Receipt>(bytes),
        2 => decode_and_round_trip::<v1::StateDiff, StateDiff>(bytes),
        3 => decode_and_round_trip::<v1::MiniBlock, MiniBlock>(bytes),
        4 => decode_and_round_trip::<v1::Block, Block>(bytes),
        5 => decode_and_round_trip::<v1::SignedAppointment, SignedAppointment>(bytes),
        6 => decode_and_round_trip::<v1::Handover, Handover>(bytes),
        7 => decode_and_round_trip::<v1::ChainEvent, ChainEvent>(bytes),
        8 => decode_and_round_trip::<v1::ChunkJob, ChunkJob>(bytes),
        9 => decode_and_round_trip::<v1::ChunkProof, ChunkProof>(bytes),
        10 => decode_and_round_trip::<v1::ProverResult, ProverResult>(bytes),
        11 => decode_and_round_trip::<v1::FraudEvidence, FraudEvidence>(bytes),
        12 => decode_and_round_trip::<v1::FinalityAttestation, FinalityAttestation>(bytes),
        _ => {
            // What the sequencer's Forward stream decodes before it recovers the sender.
            if let Ok(request) = v1::ForwardRequest::decode(bytes)
                && let Some(wire) = &request.transaction
            {
                round_trip::<v1::Transaction, Transaction>(wire);
            }
        }
    }
}

fn decode_and_round_trip<W, D>(bytes: &[u8])
where
    W: Message + Default + PartialEq + std::fmt::Debug,
    D: for<'a> TryFrom<&'a W>,
    W: for<'a> From<&'a D>,
{
    if let Ok(wire) = W::decode(bytes) {
        round_trip::<W, D>(&wire);
    }
}

/// If `wire` converts, its re-encoding converts again and re-encodes the same: a node passes
/// on (stores, serves, re-publishes) exactly what it checked.
fn round_trip<W, D>(wire: &W)
where
    W: Message + PartialEq + std::fmt::Debug,
    D: for<'a> TryFrom<&'a W>,
    W: for<'a> From<&'a D>,
{
    let Ok(domain) = D::try_from(wire) else {
        return;
    };
    let again = W::from(&domain);
    let Ok(back) = D::try_from(&again) else {
        panic!("an accepted message, re-encoded, is refused: {again:?}");
    };
    assert_eq!(W::from(&back), again, "re-encoding is stable");
}

/// A JSON-RPC body through the gateway's parsing.
pub fn json_rpc(data: &[u8]) {
    use verity_gateway::jsonrpc::{Body, optional_param, parse_body, parse_call};
    let calls = match parse_body(data) {
        Ok(Body::Single(call)) => vec![call],
        Ok(Body::Batch(calls)) => calls,
        Err(_) => return,
    };
    for value in calls {
        let Ok(call) = parse_call(value) else {
            continue;
        };
        let params = &call.params;
        for index in 0..params.len().min(4) {
            let _ = optional_param::<BlockId>(params, index);
            let _ = optional_param::<BlockNumberOrTag>(params, index);
            let _ = optional_param::<Filter>(params, index);
            let _ = optional_param::<TransactionRequest>(params, index);
            let _ = optional_param::<B256>(params, index);
            let _ = optional_param::<Address>(params, index);
            let _ = optional_param::<U256>(params, index);
            let _ = optional_param::<U64>(params, index);
            let _ = optional_param::<Vec<f64>>(params, index);
            let _ = optional_param::<alloy_primitives::Bytes>(params, index);
        }
        let _ = verity_gateway::eth::call_request(params, call.method == "eth_estimateGas");
    }
}
