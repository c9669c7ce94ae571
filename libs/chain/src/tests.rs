//! The one suite of the chain rules: each rule an event must meet, refused one by one (each test
//! fails when its check is taken out of [`Cursor::advance`]), and the batch written in one MDBX
//! transaction or not at all.

#![allow(clippy::unwrap_used)]

use alloy_primitives::{Address, B256, U256};
use verity_primitives::{
    Block, ChainEvent, ChainEventKind, ChainSpec, MiniBlock, SigningKey, genesis_diff,
    governance::{Appointment, EPOCH_META_KEY, Epoch, Governance, Sequencing, SignedAppointment},
};
use verity_proto::v1;
use verity_storage::{Database, StorageError, WriteTx};

use verity_testkit::chain::{ChainBuilder, written_account};

use crate::{ChainError, CheckedEvent, Cursor, Layout, Redelivered, apply_batch, check_signer};

const CHAIN_ID: u64 = 31337;

/// A layout that keeps what a test asks for and records what it was handed.
#[derive(Debug, Default)]
struct Recording {
    history: bool,
    events: bool,
    written: Vec<(u64, u64)>,
    finished: Option<Cursor>,
}

impl Layout for Recording {
    fn history(&self) -> bool {
        self.history
    }

    fn keeps_events(&self) -> bool {
        self.events
    }

    fn write_event(
        &mut self,
        _: &mut WriteTx<'_>,
        event: &CheckedEvent<'_>,
    ) -> Result<(), StorageError> {
        self.written
            .push((event.event().seq, event.open_txs_before()));
        Ok(())
    }

    fn finish(&mut self, _: &mut WriteTx<'_>, cursor: &Cursor) -> Result<(), StorageError> {
        self.finished = Some(cursor.clone());
        Ok(())
    }
}

/// A node at genesis: epoch 0 is `first`'s, two of the three `governors` appoint.
struct Node {
    _dir: tempfile::TempDir,
    db: Database,
    rules: Sequencing,
    cursor: Cursor,
    chain: ChainBuilder,
    first: SigningKey,
    second: SigningKey,
    governors: Vec<SigningKey>,
    layout: Recording,
}

impl Node {
    fn new() -> Self {
        let first = SigningKey::random();
        let governors: Vec<SigningKey> = (0..3).map(|_| SigningKey::random()).collect();
        let governance =
            Governance::new(governors.iter().map(SigningKey::address).collect(), 2).unwrap();
        let spec = ChainSpec::dev(CHAIN_ID, 2, 100)
            .unwrap()
            .with_sequencing(first.address(), Some(governance))
            .unwrap();
        Self::with_spec(spec, first, governors)
    }

    fn with_spec(spec: ChainSpec, first: SigningKey, governors: Vec<SigningKey>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let mut write = db.write().unwrap();
        write.apply_diff(&genesis_diff(&spec.genesis)).unwrap();
        write.put_block(&spec.genesis_block()).unwrap();
        write.commit().unwrap();
        let rules = spec.sequencing(None).unwrap();
        Self {
            _dir: dir,
            db,
            cursor: Cursor::genesis(spec.genesis_block(), rules.genesis),
            rules,
            chain: ChainBuilder::new(spec.genesis_block()),
            first,
            second: SigningKey::random(),
            governors,
            layout: Recording {
                events: true,
                ..Recording::default()
            },
        }
    }

    fn apply(&mut self, wires: &[v1::ChainEvent]) -> Result<usize, ChainError> {
        apply_batch(
            &self.db,
            &self.rules,
            &mut self.cursor,
            wires,
            Redelivered::MustMatch,
            &mut self.layout,
        )
    }

    /// Applies `wire`, which must be refused; nothing moves and nothing is written.
    fn refuse(&mut self, wire: v1::ChainEvent) -> ChainError {
        let before = (self.cursor.clone(), self.stored());
        let error = self.apply(&[wire]).unwrap_err();
        assert_eq!((self.cursor.clone(), self.stored()), before, "{error}");
        error
    }

    /// What the database holds: the last event, the last block, the epoch.
    fn stored(&self) -> (u64, Option<u64>, Option<Vec<u8>>) {
        let read = self.db.read().unwrap();
        (
            read.last_event_seq().unwrap(),
            read.last_block_number().unwrap(),
            read.meta(EPOCH_META_KEY).unwrap(),
        )
    }

    /// A standing appointment of `second` to `epoch`, signed by the governors `by`.
    fn appointment(&self, epoch: u64, by: &[&SigningKey]) -> SignedAppointment {
        let appointment = Appointment {
            chain_id: CHAIN_ID,
            epoch,
            sequencer: self.second.address(),
            first_height: 0,
            parent_hash: B256::ZERO,
        };
        SignedAppointment {
            signatures: by.iter().map(|key| appointment.sign(key)).collect(),
            appointment,
        }
    }

    /// A valid appointment of `second` to epoch 1.
    fn appointed(&self) -> SignedAppointment {
        self.appointment(1, &[&self.governors[0], &self.governors[1]])
    }

    fn mini(&self, mini: MiniBlock) -> v1::ChainEvent {
        self.chain.wire(ChainEventKind::MiniBlock(Box::new(mini)))
    }

    fn block(&self, block: Block) -> v1::ChainEvent {
        self.chain.wire(ChainEventKind::Block(Box::new(block)))
    }
}

fn reason(error: &ChainError) -> &str {
    match error {
        ChainError::Invalid { reason, .. } => reason,
        other => panic!("not a refusal of the event: {other}"),
    }
}

/// A block signed by `key` but with header fields changed by `change` (and hashed again).
fn reseal_block(mut block: Block, key: &SigningKey, change: impl FnOnce(&mut Block)) -> Block {
    change(&mut block);
    block.hash = block.header.hash_slow();
    block.signature = key.sign(&block.hash);
    block
}

#[test]
fn the_appointed_chain_is_applied_in_one_transaction_per_batch() {
    let mut node = Node::new();
    let (first, second) = (node.first.clone(), node.second.clone());
    let appointed = node.appointed();
    let batch = vec![
        node.chain.push_mini_block(&first),
        node.chain.push_mini_block(&first),
        node.chain.push_block(&first),
        node.chain.push_handover(appointed, &second),
        node.chain.push_mini_block(&second),
    ];
    assert_eq!(node.apply(&batch).unwrap(), 5);
    let cursor = node.cursor.clone();
    assert_eq!(
        (cursor.last_seq, cursor.next_mini, cursor.head.number()),
        (5, 3, 1)
    );
    assert_eq!(
        cursor.epoch,
        Epoch {
            number: 1,
            sequencer: second.address()
        }
    );
    assert_eq!(cursor.head, *node.chain.head());
    // The layout saw each event with the open block's transactions before it, then the cursor.
    assert_eq!(
        node.layout.written,
        [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]
    );
    assert_eq!(node.layout.finished.as_ref(), Some(&cursor));
    // On disk: the diffs, the block, the epoch the handover opened, the events.
    let read = node.db.read().unwrap();
    for number in 0..3 {
        assert_eq!(
            read.account(written_account(number))
                .unwrap()
                .map(|a| a.balance),
            Some(U256::from(number + 1))
        );
    }
    assert_eq!(read.last_block_number().unwrap(), Some(1));
    assert_eq!(
        read.meta(EPOCH_META_KEY).unwrap(),
        Some(cursor.epoch.to_bytes().to_vec())
    );
    assert_eq!(read.last_event_seq().unwrap(), 5);
    assert_eq!(read.event(4).unwrap().as_ref(), Some(&batch[3]));
}

#[test]
fn an_event_not_signed_by_the_epochs_key_is_refused() {
    let mut node = Node::new();
    let (first, stranger) = (node.first.clone(), SigningKey::random());
    // A mini-block and a block signed by a key that is not the epoch's.
    let wire = node.mini(node.chain.mini_block(&stranger));
    assert!(reason(&node.refuse(wire)).contains("signature"));
    let wire = node.block(node.chain.block(&stranger));
    assert!(reason(&node.refuse(wire)).contains("signature"));
    // Contents changed after the epoch's key signed them.
    let mut forged = node.chain.mini_block(&first);
    forged.diff.accounts.insert(
        Address::repeat_byte(0xee),
        verity_primitives::AccountDiff {
            balance: Some(U256::MAX),
            ..Default::default()
        },
    );
    let wire = node.mini(forged);
    assert!(reason(&node.refuse(wire)).contains("hash mismatch"));
    // Signed by the right key under another epoch than the one in force.
    let mut other_epoch = node.chain.mini_block(&first);
    other_epoch.epoch = 1;
    other_epoch.seal(&first);
    let wire = node.mini(other_epoch);
    assert!(reason(&node.refuse(wire)).contains("epoch 0 is in force"));
    // The honest one goes through.
    let wire = node.chain.push_mini_block(&first);
    node.apply(&[wire]).unwrap();
}

#[test]
fn after_a_handover_only_the_new_key_is_accepted() {
    let mut node = Node::new();
    let (first, second) = (node.first.clone(), node.second.clone());
    // Before its handover, the appointed key is nobody.
    let wire = node.mini(node.chain.mini_block(&second));
    node.refuse(wire);
    let wire = node.chain.push_mini_block(&first);
    node.apply(&[wire]).unwrap();
    let appointed = node.appointed();
    let wire = node.chain.push_handover(appointed, &second);
    node.apply(&[wire]).unwrap();
    assert_eq!(node.cursor.epoch.sequencer, second.address());
    // The deposed key is refused from here on, under its old epoch or the new one.
    let mut late = node.chain.mini_block(&first);
    late.epoch = 0;
    late.seal(&first);
    let wire = node.mini(late);
    node.refuse(wire);
    let wire = node.mini(node.chain.mini_block(&first));
    node.refuse(wire);
    let wire = node.block(node.chain.block(&first));
    node.refuse(wire);
    // The new key, under the new epoch only.
    let mut old_epoch = node.chain.mini_block(&second);
    old_epoch.epoch = 0;
    old_epoch.seal(&second);
    let wire = node.mini(old_epoch);
    node.refuse(wire);
    let wire = node.chain.push_mini_block(&second);
    node.apply(&[wire]).unwrap();
    let wire = node.chain.push_block(&second);
    node.apply(&[wire]).unwrap();
}

#[test]
fn an_event_off_its_parent_is_refused() {
    let mut node = Node::new();
    let first = node.first.clone();
    let wire = node.chain.push_mini_block(&first);
    node.apply(&[wire]).unwrap();
    // A mini-block on another parent than the last mini-block.
    let mut orphan = node.chain.mini_block(&first);
    orphan.parent_hash = B256::repeat_byte(1);
    orphan.seal(&first);
    let wire = node.mini(orphan);
    assert!(reason(&node.refuse(wire)).contains("is not the last mini-block"));
    // A block on another parent than the last block.
    let block = reseal_block(node.chain.block(&first), &first, |b| {
        b.header.parent_hash = B256::repeat_byte(2);
    });
    let wire = node.block(block);
    assert!(reason(&node.refuse(wire)).contains("block parent"));
    // A block that does not seal the last mini-block.
    let block = reseal_block(node.chain.block(&first), &first, |b| {
        b.header.mix_hash = B256::repeat_byte(3);
    });
    let wire = node.block(block);
    assert!(reason(&node.refuse(wire)).contains("does not seal the last applied mini-block"));
    let wire = node.chain.push_block(&first);
    node.apply(&[wire]).unwrap();
}

#[test]
fn an_event_at_the_wrong_height_is_refused() {
    let mut node = Node::new();
    let first = node.first.clone();
    // A gap in the stream's sequence.
    let mut gap = node.mini(node.chain.mini_block(&first));
    gap.seq += 1;
    assert!(reason(&node.refuse(gap)).contains("expected event 1 next"));
    let wire = node.chain.push_mini_block(&first);
    node.apply(&[wire]).unwrap();
    // A mini-block number skipped.
    let mut skipped = node.chain.mini_block(&first);
    skipped.number += 1;
    skipped.seal(&first);
    let wire = node.mini(skipped);
    assert!(reason(&node.refuse(wire)).contains("where 1 was due"));
    // A mini-block of another block than the one being built.
    let mut elsewhere = node.chain.mini_block(&first);
    elsewhere.block_number += 1;
    elsewhere.seal(&first);
    let wire = node.mini(elsewhere);
    assert!(reason(&node.refuse(wire)).contains("while block 1 is being built"));
    // A block at another height than the next.
    let block = reseal_block(node.chain.block(&first), &first, |b| b.header.number = 2);
    let wire = node.block(block);
    assert!(reason(&node.refuse(wire)).contains("block 2 after block 0"));
    // A block claiming other mini-blocks or transactions than those applied.
    let mut block = node.chain.block(&first);
    block.mini_block_count += 1;
    let wire = node.block(block);
    assert!(reason(&node.refuse(wire)).contains("but 1 were applied"));
    let mut block = node.chain.block(&first);
    block.transaction_hashes.push(B256::repeat_byte(4));
    let wire = node.block(block);
    assert!(reason(&node.refuse(wire)).contains("1 transactions, 0 were applied"));
    let wire = node.chain.push_block(&first);
    node.apply(&[wire]).unwrap();
}

#[test]
fn a_handover_governance_did_not_appoint_is_refused() {
    let mut node = Node::new();
    let (second, stranger) = (node.second.clone(), SigningKey::random());
    let governors = node.governors.clone();
    let handover = |node: &Node, appointment: SignedAppointment, key: &SigningKey| {
        node.chain.wire(ChainEventKind::Handover(Box::new(
            node.chain.handover(appointment, key),
        )))
    };
    let refused = |node: &mut Node, wire: v1::ChainEvent, why: &str| {
        let error = node.refuse(wire);
        assert!(
            reason(&error).starts_with("handover refused: ") && reason(&error).contains(why),
            "{error}"
        );
    };
    // Unsigned; signed by one governor of the two needed; signed by a key that is not a
    // governor's.
    let wire = handover(&node, node.appointment(1, &[]), &second);
    refused(&mut node, wire, "0 valid governance signature(s), 2 needed");
    let wire = handover(&node, node.appointment(1, &[&governors[0]]), &second);
    refused(&mut node, wire, "1 valid governance signature(s), 2 needed");
    let wire = handover(
        &node,
        node.appointment(1, &[&governors[0], &stranger]),
        &second,
    );
    refused(&mut node, wire, "which is not a governance key");
    // A valid appointment spent by a key that is not the appointed one.
    let wire = handover(&node, node.appointed(), &stranger);
    refused(&mut node, wire, "handover signature");
    // An appointment altered after governance signed it.
    let mut altered = node.appointed();
    altered.appointment.sequencer = stranger.address();
    let wire = handover(&node, altered, &stranger);
    refused(&mut node, wire, "is not a governance key");
    // An epoch not above the one in force; another chain's; placed elsewhere in the chain.
    let wire = handover(
        &node,
        node.appointment(0, &[&governors[0], &governors[1]]),
        &second,
    );
    refused(&mut node, wire, "is not above the current epoch 0");
    let mut elsewhere = node.appointed();
    elsewhere.appointment.chain_id = 1;
    elsewhere.signatures = vec![
        elsewhere.appointment.sign(&governors[0]),
        elsewhere.appointment.sign(&governors[1]),
    ];
    let wire = handover(&node, elsewhere, &second);
    refused(&mut node, wire, "is for chain 1");
    let mut misplaced = node.appointed();
    misplaced.appointment.first_height = 5;
    misplaced.appointment.parent_hash = B256::repeat_byte(5);
    misplaced.signatures = vec![
        misplaced.appointment.sign(&governors[0]),
        misplaced.appointment.sign(&governors[1]),
    ];
    let wire = handover(&node, misplaced, &second);
    refused(&mut node, wire, "appointment starts at block 5");
    assert_eq!(node.cursor.epoch.number, 0);
    // The appointed key with the governors' signatures takes over.
    let appointed = node.appointed();
    let wire = node.chain.push_handover(appointed, &second);
    node.apply(&[wire]).unwrap();
    assert_eq!(node.cursor.epoch.number, 1);
}

#[test]
fn without_governance_no_handover_is_valid() {
    let first = SigningKey::random();
    let spec = ChainSpec::dev(CHAIN_ID, 2, 100)
        .unwrap()
        .with_sequencing(first.address(), None)
        .unwrap();
    let governors: Vec<SigningKey> = (0..3).map(|_| SigningKey::random()).collect();
    let mut node = Node::with_spec(spec, first, governors);
    let wire = node.chain.wire(ChainEventKind::Handover(Box::new(
        node.chain.handover(node.appointed(), &node.second),
    )));
    assert!(reason(&node.refuse(wire)).contains("sets no governance"));
}

#[test]
fn a_batch_is_applied_whole_or_not_at_all() {
    let mut node = Node::new();
    let first = node.first.clone();
    let fine = node.chain.push_mini_block(&first);
    let also_fine = node.chain.push_mini_block(&first);
    let mut broken = node.chain.mini_block(&first);
    broken.parent_hash = B256::repeat_byte(1);
    broken.seal(&first);
    let broken = node.mini(broken);
    let before = node.cursor.clone();
    let error = node
        .apply(&[fine.clone(), also_fine.clone(), broken])
        .unwrap_err();
    assert!(
        matches!(error, ChainError::Invalid { seq: 3, .. }),
        "{error}"
    );
    assert_eq!(node.cursor, before);
    assert!(node.layout.finished.is_none());
    let read = node.db.read().unwrap();
    assert_eq!(read.last_event_seq().unwrap(), 0);
    assert_eq!(read.account(written_account(0)).unwrap(), None);
    drop(read);
    assert_eq!(node.apply(&[fine, also_fine]).unwrap(), 2);
}

#[test]
fn an_event_at_or_below_the_cursor_is_skipped_or_must_match() {
    let mut node = Node::new();
    let first = node.first.clone();
    let a = node.chain.push_mini_block(&first);
    node.apply(std::slice::from_ref(&a)).unwrap();
    // Under MustMatch: the same event again is recognised, within a batch too; another one at
    // that position is a divergence.
    assert_eq!(node.apply(std::slice::from_ref(&a)).unwrap(), 0);
    let b = node.chain.push_mini_block(&first);
    assert_eq!(node.apply(&[b.clone(), b.clone()]).unwrap(), 1);
    let mut other = ChainBuilder::new(node.cursor.head.clone()).mini_block(&first);
    other.timestamp_ms += 1;
    other.seal(&first);
    let other: v1::ChainEvent = (&ChainEvent {
        seq: 1,
        kind: ChainEventKind::MiniBlock(Box::new(other)),
    })
        .into();
    assert!(matches!(
        node.refuse(other.clone()),
        ChainError::Diverged { seq: 1, .. }
    ));
    // Under Skip: whatever it is, it was applied before.
    let applied = apply_batch(
        &node.db,
        &node.rules,
        &mut node.cursor,
        &[other, a],
        Redelivered::Skip,
        &mut node.layout,
    )
    .unwrap();
    assert_eq!((applied, node.cursor.last_seq), (0, 2));
    // Under Skip, only what was stored before the batch is skipped: a sequence repeated inside
    // one batch is out of order, and the whole batch is refused.
    let c = node.chain.push_mini_block(&first);
    let refused = apply_batch(
        &node.db,
        &node.rules,
        &mut node.cursor,
        &[c.clone(), c],
        Redelivered::Skip,
        &mut node.layout,
    )
    .unwrap_err();
    assert!(
        matches!(refused, ChainError::Invalid { seq: 3, .. }),
        "{refused}"
    );
    assert_eq!(node.cursor.last_seq, 2);
}

#[test]
fn a_layout_with_history_keeps_the_state_before_each_block() {
    for history in [false, true] {
        let mut node = Node::new();
        node.layout.history = history;
        let first = node.first.clone();
        let wire = node.chain.push_mini_block(&first);
        node.apply(&[wire]).unwrap();
        let read = node.db.read().unwrap();
        let before = read.account_at(written_account(0), 0).unwrap();
        assert_eq!(before.is_none(), history, "history {history}");
    }
}

#[test]
fn an_unknown_epoch_lets_no_signer_through() {
    let node = Node::new();
    let first = node.first.clone();
    let honest = ChainEvent::try_from(&node.mini(node.chain.mini_block(&first))).unwrap();
    let stranger =
        ChainEvent::try_from(&node.mini(node.chain.mini_block(&SigningKey::random()))).unwrap();
    let epoch = node.rules.genesis;
    check_signer(&honest, Some(&epoch)).unwrap();
    assert!(matches!(
        check_signer(&stranger, Some(&epoch)),
        Err(ChainError::Invalid { seq: 1, .. })
    ));
    for event in [&honest, &stranger] {
        assert!(matches!(
            check_signer(event, None),
            Err(ChainError::UnknownEpoch { seq: 1 })
        ));
    }
}
