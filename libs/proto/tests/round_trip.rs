//! Every domain type survives the wire unchanged, and malformed wire messages are refused with
//! the offending field named.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_primitives::{Address, B256, Bytes, Log, TxKind, U256};
use alloy_signer_local::PrivateKeySigner;
use verity_primitives::{
    AccountDiff, ChainEvent, ChainEventKind, MiniBlock, Receipt, SigningKey, StateDiff,
    Transaction, TxType,
};
use verity_proto::v1;

fn signed_transfer(signer: &PrivateKeySigner) -> Transaction {
    use alloy_signer::SignerSync;
    let tx = TxEip1559 {
        chain_id: 4242,
        nonce: 7,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000,
        to: TxKind::Call(Address::repeat_byte(0xaa)),
        value: U256::from(1_000u64),
        ..Default::default()
    };
    let signature = signer.sign_hash_sync(&tx.signature_hash()).expect("sign");
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    Transaction::new_unchecked(envelope, signer.address())
}

fn mini_block(key: &SigningKey) -> MiniBlock {
    let signer = PrivateKeySigner::random();
    let tx = signed_transfer(&signer);
    let receipt = Receipt {
        tx_hash: *tx.tx_hash(),
        tx_type: TxType::Eip1559,
        success: true,
        gas_used: 21_000,
        cumulative_gas_used: 21_000,
        effective_gas_price: 1_001_000_000,
        logs: vec![Log::new_unchecked(
            Address::repeat_byte(3),
            vec![B256::repeat_byte(4)],
            Bytes::from_static(b"data"),
        )],
        contract_address: None,
        from: signer.address(),
        to: Some(Address::repeat_byte(0xaa)),
    };
    let mut diff = StateDiff::default();
    diff.accounts.insert(
        signer.address(),
        AccountDiff {
            balance: Some(U256::from(5u64)),
            nonce: Some(8),
            ..Default::default()
        },
    );
    diff.accounts.insert(
        Address::repeat_byte(3),
        AccountDiff {
            code: Some(Bytes::from_static(&[0x60, 0x00])),
            storage: [(U256::from(1u64), U256::from(2u64))].into(),
            ..Default::default()
        },
    );
    let mut block = MiniBlock {
        number: 12,
        block_number: 2,
        index: 3,
        epoch: 0,
        timestamp_ms: 1_700_000_000_123,
        parent_hash: B256::repeat_byte(1),
        base_fee: 1_000_000_000,
        block_timestamp: 1_700_000_000,
        beneficiary: alloy_primitives::Address::repeat_byte(4),
        transactions: vec![tx],
        receipts: vec![receipt],
        diff,
        hash: B256::ZERO,
        signature: alloy_primitives::Signature::test_signature(),
    };
    block.seal(key);
    block
}

#[test]
fn a_mini_block_event_round_trips_and_still_verifies() {
    let key = SigningKey::random();
    let event = ChainEvent {
        seq: 40,
        kind: ChainEventKind::MiniBlock(Box::new(mini_block(&key))),
    };
    let wire = v1::ChainEvent::from(&event);
    let back = ChainEvent::try_from(&wire).expect("decodes");
    assert_eq!(back, event);
    let epoch = verity_primitives::governance::Epoch {
        number: 0,
        sequencer: key.address(),
    };
    back.verify(&epoch).expect("signature and hash still hold");
    // Signed under epoch 0, so refused where epoch 1 is in force.
    let later = verity_primitives::governance::Epoch { number: 1, ..epoch };
    assert!(back.verify(&later).is_err());
}

#[test]
fn a_handover_event_round_trips() {
    use verity_primitives::governance::{Appointment, Handover, SignedAppointment};
    let governor = SigningKey::random();
    let sequencer = SigningKey::random();
    let appointment = Appointment {
        chain_id: 7,
        epoch: 3,
        sequencer: sequencer.address(),
        first_height: 0,
        parent_hash: Default::default(),
    };
    let signed = SignedAppointment {
        signatures: vec![appointment.sign(&governor)],
        appointment,
    };
    let handover = Handover::new(
        signed,
        12,
        alloy_primitives::B256::repeat_byte(4),
        &sequencer,
    );
    let event = ChainEvent {
        seq: 41,
        kind: ChainEventKind::Handover(Box::new(handover)),
    };
    let wire = v1::ChainEvent::from(&event);
    assert_eq!(ChainEvent::try_from(&wire).expect("decodes"), event);
}

#[test]
fn a_transaction_whose_hash_does_not_match_its_envelope_is_refused() {
    let tx = signed_transfer(&PrivateKeySigner::random());
    let mut wire = v1::Transaction::from(&tx);
    wire.hash = vec![0u8; 32];
    let error = Transaction::try_from(&wire).expect_err("refused");
    assert_eq!(error.field, "transaction.hash");
}

#[test]
fn a_short_address_is_refused_with_the_field_named() {
    let key = SigningKey::random();
    let mut wire = v1::MiniBlock::from(&mini_block(&key));
    if let Some(diff) = wire.diff.as_mut() {
        diff.accounts[0].address = vec![1, 2, 3];
    }
    let error = MiniBlock::try_from(&wire).expect_err("refused");
    assert_eq!(error.field, "account_diff.address");
    assert!(error.to_string().contains("expected 20 bytes, got 3"));
}
