//! A forwarded batch is admitted entry by entry: every entry gets its own answer under its own
//! id, in order; an entry whose claimed sender did not sign it, or that does not decode, is
//! refused without taking the others down; the rest reach the mempool.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use alloy_genesis::{Genesis, GenesisAccount};
use alloy_primitives::{Address, U256};
use tokio::sync::watch;
use verity_primitives::ChainSpec;
use verity_proto::v1;
use verity_sequencer::{SharedState, mempool::MempoolLimits, producer::Head, service};
use verity_storage::Database;
use verity_workload::{Accounts, Kind, Signed, TxParams};

const PARAMS: TxParams = TxParams {
    chain_id: 1337,
    max_fee_per_gas: 10_000_000_000,
    max_priority_fee_per_gas: 1,
};

/// A sequencer's shared state at a genesis funding `accounts`, active.
fn sequencer(accounts: &Accounts) -> (Arc<SharedState>, tempfile::TempDir, watch::Sender<Head>) {
    let mut genesis = Genesis::default();
    genesis.config.chain_id = 1337;
    genesis.gas_limit = 300_000_000;
    genesis.base_fee_per_gas = Some(1_000_000_000);
    for i in 0..accounts.len() {
        genesis.alloc.insert(
            accounts.address(i),
            GenesisAccount::default().with_balance(U256::from(10u64).pow(U256::from(19))),
        );
    }
    let spec = ChainSpec::from_genesis(genesis).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    verity_sequencer::producer::init_genesis(&db, &spec).unwrap();
    let (keep, head) = watch::channel(Head::default());
    let shared = Arc::new(SharedState::new(db, spec, MempoolLimits::default(), head));
    shared.set_active(true);
    (shared, dir, keep)
}

/// `signed` as forwarded entries numbered from `first_id`, naming their senders when `named`
/// (a forwarder of the previous release) and leaving them out otherwise (ingress now).
fn entries(signed: &[Signed], first_id: u64, named: bool) -> Vec<v1::ForwardRequest> {
    signed
        .iter()
        .enumerate()
        .map(|(i, tx)| {
            let mut wire = v1::Transaction::from(&tx.transaction());
            if !named {
                wire.sender.clear();
            }
            v1::ForwardRequest {
                id: first_id + i as u64,
                transaction: Some(wire),
                ..Default::default()
            }
        })
        .collect()
}

#[tokio::test]
async fn each_entry_of_a_batch_is_answered_and_a_forged_sender_is_refused_alone() {
    let accounts = Accounts::new(4);
    let (shared, _dir, _head) = sequencer(&accounts);

    // Two rounds of the four senders: nonces 0 and 1 each.
    let signed = accounts
        .sign(Kind::Transfers, 0..8, &PARAMS, |_| 0)
        .unwrap();
    let mut entries = entries(&signed, 100, true);
    // Entry 2 claims another sender than the one that signed it; entry 5 is not a transaction.
    if let Some(wire) = entries[2].transaction.as_mut() {
        wire.sender = Address::repeat_byte(0x66).to_vec();
    }
    entries[5].transaction = Some(v1::Transaction {
        raw: vec![0x02, 0xc0],
        sender: accounts.address(1).to_vec(),
        hash: vec![0; 32],
    });

    let answers = service::admit_batch(&shared, entries).await;
    let ids: Vec<u64> = answers.iter().map(|a| a.id).collect();
    assert_eq!(ids, (100..108).collect::<Vec<_>>());
    for (i, answer) in answers.iter().enumerate() {
        match i {
            2 => {
                assert_eq!(answer.rejection, v1::TxRejection::Invalid as i32);
                assert!(
                    answer.message.starts_with("invalid sender"),
                    "{}",
                    answer.message
                );
            }
            5 => assert_eq!(
                answer.rejection,
                v1::TxRejection::Invalid as i32,
                "{answer:?}"
            ),
            // Sender 2's second nonce waits behind its refused first one; the rest are in.
            _ => assert_eq!(
                answer.rejection,
                v1::TxRejection::None as i32,
                "{i}: {answer:?}"
            ),
        }
    }
    assert_eq!(shared.lock_mempool().len(), 6);
}

/// Ingress forwards no sender: the sequencer recovers it, admits the transaction as that account
/// and refuses a signature that recovers to no key. With recovery skipped (a transaction taken
/// as sent by nobody, or by whoever the wire names) this goes red.
#[tokio::test]
async fn an_unnamed_sender_is_recovered_from_the_signature() {
    let accounts = Accounts::new(4);
    let (shared, _dir, _head) = sequencer(&accounts);
    let signed = accounts
        .sign(Kind::Transfers, 0..4, &PARAMS, |_| 0)
        .unwrap();
    let mut entries = entries(&signed, 0, false);
    // Entry 3's signature has an s of zero: it recovers to no key.
    let unsigned = {
        use alloy_consensus::SignableTransaction as _;
        use alloy_eips::eip2718::{Decodable2718 as _, Encodable2718 as _};
        let wire = entries[3].transaction.as_ref().unwrap();
        let alloy_consensus::TxEnvelope::Eip1559(signed) =
            alloy_consensus::TxEnvelope::decode_2718(&mut wire.raw.as_slice()).unwrap()
        else {
            panic!("the workload signs EIP-1559 transfers")
        };
        let signature = alloy_primitives::Signature::new(
            signed.signature().r(),
            U256::ZERO,
            signed.signature().v(),
        );
        let forged = alloy_consensus::TxEnvelope::from(signed.tx().clone().into_signed(signature));
        v1::Transaction {
            raw: forged.encoded_2718(),
            sender: Vec::new(),
            hash: forged.tx_hash().to_vec(),
        }
    };
    entries[3].transaction = Some(unsigned);

    let answers = service::admit_batch(&shared, entries).await;
    for answer in &answers[..3] {
        assert_eq!(
            answer.rejection,
            v1::TxRejection::None as i32,
            "{answers:?}"
        );
    }
    assert_eq!(answers[3].rejection, v1::TxRejection::Invalid as i32);
    assert_eq!(answers[3].message, "invalid sender", "{answers:?}");
    let mempool = shared.lock_mempool();
    assert_eq!(mempool.len(), 3);
    for i in 0..3 {
        assert_eq!(
            mempool.pending_nonce(accounts.address(i), 0),
            1,
            "sender {i} is the account that signed"
        );
    }
    assert_eq!(mempool.pending_nonce(accounts.address(3), 0), 0);
}
