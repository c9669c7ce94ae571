//! Tests over real MDBX files in temporary directories.

use std::collections::BTreeMap;

use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, Log, Signature, U256, keccak256};
use verity_primitives::{
    AccountDiff, Block, Header, InMemoryState, Receipt, StateDiff, StateView, TxType,
};
use verity_proto::v1;

use crate::{Database, StorageError};

fn open() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::open(&dir.path().join("db")).expect("open");
    (dir, db)
}

fn diff(entries: impl IntoIterator<Item = (Address, AccountDiff)>) -> StateDiff {
    StateDiff {
        accounts: entries.into_iter().collect(),
    }
}

fn block(number: u64, transaction_hashes: Vec<B256>) -> Block {
    let header = Header {
        number,
        parent_hash: B256::with_last_byte(number as u8),
        gas_limit: 30_000_000,
        base_fee_per_gas: Some(1_000_000_000),
        timestamp: 1_700_000_000 + number,
        ..Default::default()
    };
    let hash = header.hash_slow();
    Block {
        header,
        hash,
        first_mini_block: number * 3,
        mini_block_count: 3,
        transaction_hashes,
        signature: Signature::test_signature(),
    }
}

fn mini_block_event(seq: u64) -> v1::ChainEvent {
    v1::ChainEvent {
        seq,
        event: Some(v1::chain_event::Event::MiniBlock(v1::MiniBlock {
            number: seq * 10,
            block_number: 1,
            hash: B256::with_last_byte(seq as u8).to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn receipt(tx_hash: B256) -> Receipt {
    Receipt {
        tx_hash,
        tx_type: TxType::Eip1559,
        success: true,
        gas_used: 21_000,
        cumulative_gas_used: 42_000,
        effective_gas_price: 1_500_000_000,
        logs: vec![Log::new_unchecked(
            Address::repeat_byte(7),
            vec![B256::repeat_byte(8), B256::repeat_byte(9)],
            Bytes::from_static(b"log data"),
        )],
        contract_address: None,
        from: Address::repeat_byte(1),
        to: Some(Address::repeat_byte(2)),
    }
}

fn stored_transaction(hash: B256, block_number: u64) -> v1::StoredTransaction {
    v1::StoredTransaction {
        transaction: Some(v1::Transaction {
            raw: vec![0x02, 0xc0, 0x01],
            sender: Address::repeat_byte(1).to_vec(),
            hash: hash.to_vec(),
        }),
        block_number,
        block_hash: Vec::new(),
        index: 4,
        base_fee: verity_proto::u256_bytes(U256::from(1_000_000_000u64)),
    }
}

#[test]
fn handles_are_clone_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_clone<T: Clone>() {}
    assert_send_sync::<Database>();
    assert_clone::<Database>();
    assert_send_sync::<crate::ReadTx<'static>>();
    assert_send_sync::<crate::WriteTx<'static>>();
}

#[test]
fn an_empty_database_reads_as_empty() {
    let (_dir, db) = open();
    let read = db.read().expect("read");
    assert_eq!(read.account(Address::ZERO).expect("account"), None);
    assert_eq!(
        read.storage(Address::ZERO, U256::from(1)).expect("storage"),
        U256::ZERO
    );
    assert_eq!(read.code(KECCAK256_EMPTY).expect("code"), None);
    assert_eq!(read.last_event_seq().expect("seq"), 0);
    assert!(read.events_from(1, 10).expect("events").is_empty());
    assert_eq!(read.last_block_number().expect("last"), None);
    assert_eq!(StateView::block_hash(&read, 0).expect("hash"), None);
    assert!(read.block_transaction_hashes(0).expect("txs").is_empty());
    assert_eq!(read.meta("missing").expect("meta"), None);
    assert_eq!(read.meta_u64("missing").expect("meta"), None);
}

#[test]
fn diffs_set_fields_store_code_and_delete_zero_slots() {
    let (_dir, db) = open();
    let a = Address::repeat_byte(0xaa);
    let code = Bytes::from_static(&[0x60, 0x00, 0x60, 0x00, 0xf3]);
    let mut write = db.write().expect("write");
    write
        .apply_diff(&diff([(
            a,
            AccountDiff {
                balance: Some(U256::from(1_000)),
                nonce: Some(1),
                code: Some(code.clone()),
                storage: BTreeMap::from([
                    (U256::from(1), U256::from(10)),
                    (U256::from(2), U256::from(20)),
                    (U256::MAX, U256::MAX),
                ]),
                destroyed: false,
            },
        )]))
        .expect("apply");
    // The write transaction sees its own writes.
    assert_eq!(write.account(a).expect("account").map(|x| x.nonce), Some(1));
    write.commit().expect("commit");

    let read = db.read().expect("read");
    let account = read.account(a).expect("account").expect("exists");
    assert_eq!(account.balance, U256::from(1_000));
    assert_eq!(account.nonce, 1);
    assert_eq!(account.code_hash, keccak256(&code));
    assert_eq!(read.code(account.code_hash).expect("code"), Some(code));
    assert_eq!(read.storage(a, U256::MAX).expect("slot"), U256::MAX);
    drop(read);

    // Only the balance changes; slot 1 is zeroed, so deleted.
    let mut write = db.write().expect("write");
    write
        .apply_diff(&diff([(
            a,
            AccountDiff {
                balance: Some(U256::from(5)),
                storage: BTreeMap::from([(U256::from(1), U256::ZERO)]),
                ..Default::default()
            },
        )]))
        .expect("apply");
    write.commit().expect("commit");
    let read = db.read().expect("read");
    let updated = read.account(a).expect("account").expect("exists");
    assert_eq!(updated.balance, U256::from(5));
    assert_eq!(updated.nonce, 1);
    assert_eq!(updated.code_hash, account.code_hash);
    assert_eq!(read.storage(a, U256::from(1)).expect("slot"), U256::ZERO);
    assert_eq!(
        read.storage(a, U256::from(2)).expect("slot"),
        U256::from(20)
    );

    // A new account with only a nonce gets default balance and code hash.
    drop(read);
    let b = Address::repeat_byte(0xbb);
    let mut write = db.write().expect("write");
    write
        .apply_diff(&diff([(
            b,
            AccountDiff {
                nonce: Some(3),
                ..Default::default()
            },
        )]))
        .expect("apply");
    write.commit().expect("commit");
    let created = db.read().expect("read").account(b).expect("account");
    assert_eq!(
        created,
        Some(verity_primitives::Account {
            nonce: 3,
            balance: U256::ZERO,
            code_hash: KECCAK256_EMPTY,
        })
    );
}

#[test]
fn destroying_an_account_deletes_it_and_only_its_storage() {
    let (_dir, db) = open();
    // Addresses adjacent in key order, so a sloppy prefix scan would hit the neighbours.
    let before = Address::with_last_byte(0x10);
    let target = Address::with_last_byte(0x11);
    let after = Address::with_last_byte(0x12);
    let slots: BTreeMap<U256, U256> = (0..50u64)
        .map(|i| (U256::from(i), U256::from(i + 1)))
        .collect();
    let mut write = db.write().expect("write");
    write
        .apply_diff(&diff([before, target, after].map(|address| {
            (
                address,
                AccountDiff {
                    balance: Some(U256::from(7)),
                    code: Some(Bytes::from_static(&[0x00])),
                    storage: slots.clone(),
                    ..Default::default()
                },
            )
        })))
        .expect("apply");
    write.commit().expect("commit");

    let mut write = db.write().expect("write");
    write
        .apply_diff(&diff([(
            target,
            AccountDiff {
                destroyed: true,
                ..Default::default()
            },
        )]))
        .expect("apply");
    write.commit().expect("commit");

    let read = db.read().expect("read");
    assert_eq!(read.account(target).expect("account"), None);
    for slot in 0..50u64 {
        assert_eq!(
            read.storage(target, U256::from(slot)).expect("slot"),
            U256::ZERO
        );
        for neighbour in [before, after] {
            assert_eq!(
                read.storage(neighbour, U256::from(slot)).expect("slot"),
                U256::from(slot + 1)
            );
        }
    }
    assert!(read.account(before).expect("account").is_some());
    assert!(read.account(after).expect("account").is_some());
    drop(read);

    // Destroyed and recreated in one diff: fresh account, old storage gone, new writes kept.
    let mut write = db.write().expect("write");
    write
        .apply_diff(&diff([(
            before,
            AccountDiff {
                destroyed: true,
                nonce: Some(1),
                storage: BTreeMap::from([(U256::from(99), U256::from(1))]),
                ..Default::default()
            },
        )]))
        .expect("apply");
    write.commit().expect("commit");
    let read = db.read().expect("read");
    let recreated = read.account(before).expect("account").expect("exists");
    assert_eq!(recreated.nonce, 1);
    assert_eq!(recreated.balance, U256::ZERO);
    assert_eq!(recreated.code_hash, KECCAK256_EMPTY);
    assert_eq!(
        read.storage(before, U256::from(3)).expect("slot"),
        U256::ZERO
    );
    assert_eq!(
        read.storage(before, U256::from(99)).expect("slot"),
        U256::from(1)
    );
}

/// A small deterministic generator (xorshift64*), so the randomized test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_diffs_match_the_in_memory_state() {
    const ADDRESSES: u8 = 6;
    const SLOTS: u64 = 8;
    let (_dir, db) = open();
    let mut expected = InMemoryState::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _round in 0..60 {
        let mut d = StateDiff::default();
        for _ in 0..rng.below(4) + 1 {
            let address = Address::with_last_byte(rng.below(u64::from(ADDRESSES)) as u8);
            let mut change = AccountDiff {
                destroyed: rng.below(10) == 0,
                ..Default::default()
            };
            if rng.below(2) == 0 {
                change.balance = Some(U256::from(rng.below(1_000)));
            }
            if rng.below(3) == 0 {
                change.nonce = Some(rng.below(100));
            }
            if rng.below(8) == 0 {
                change.code = Some(Bytes::from(rng.next().to_be_bytes().to_vec()));
            }
            for _ in 0..rng.below(5) {
                let value = if rng.below(3) == 0 {
                    U256::ZERO
                } else {
                    U256::from(rng.next())
                };
                change.storage.insert(U256::from(rng.below(SLOTS)), value);
            }
            d.accounts.insert(address, change);
        }
        expected.apply(&d);
        let mut write = db.write().expect("write");
        write.apply_diff(&d).expect("apply");
        write.commit().expect("commit");

        let read = db.read().expect("read");
        for a in 0..ADDRESSES {
            let address = Address::with_last_byte(a);
            assert_eq!(
                read.account(address).expect("account"),
                expected.account(address).expect("infallible")
            );
            for slot in 0..SLOTS {
                let slot = U256::from(slot);
                assert_eq!(
                    read.storage(address, slot).expect("slot"),
                    expected.storage(address, slot).expect("infallible")
                );
            }
        }
        for (hash, code) in &expected.code {
            assert_eq!(read.code(*hash).expect("code").as_ref(), Some(code));
        }
    }
}

#[test]
fn everything_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("db");
    let a = Address::repeat_byte(3);
    let tx_hash = B256::repeat_byte(0x77);
    let first = block(1, vec![tx_hash]);
    {
        let db = Database::open(&path).expect("open");
        let clone = db.clone();
        let mut write = clone.write().expect("write");
        write
            .apply_diff(&diff([(
                a,
                AccountDiff {
                    balance: Some(U256::from(42)),
                    code: Some(Bytes::from_static(&[0xfe])),
                    storage: BTreeMap::from([(U256::from(5), U256::from(6))]),
                    ..Default::default()
                },
            )]))
            .expect("apply");
        write.put_event(&mini_block_event(1)).expect("event");
        write.put_block(&first).expect("block");
        write
            .put_transaction(tx_hash, &stored_transaction(tx_hash, 1))
            .expect("tx");
        write.put_receipt(&receipt(tx_hash)).expect("receipt");
        write.set_meta("head", b"abc").expect("meta");
        write.set_meta_u64("last_seq", 1).expect("meta");
        write.commit().expect("commit");

        // An uncommitted transaction leaves no trace.
        let mut discarded = db.write().expect("write");
        discarded.set_meta_u64("last_seq", 99).expect("meta");
        discarded.put_event(&mini_block_event(2)).expect("event");
        drop(discarded);
    }

    let db = Database::open(&path).expect("reopen");
    let read = db.read().expect("read");
    let account = read.account(a).expect("account").expect("exists");
    assert_eq!(account.balance, U256::from(42));
    assert_eq!(
        read.code(account.code_hash).expect("code"),
        Some(Bytes::from_static(&[0xfe]))
    );
    assert_eq!(read.storage(a, U256::from(5)).expect("slot"), U256::from(6));
    assert_eq!(read.last_event_seq().expect("seq"), 1);
    assert_eq!(read.event(1).expect("event"), Some(mini_block_event(1)));
    assert_eq!(read.block_by_number(1).expect("block"), Some(first.clone()));
    assert_eq!(
        read.block_number_by_hash(first.hash).expect("number"),
        Some(1)
    );
    // Its block (1) is sealed: the block hash is found by number.
    let mut sealed = stored_transaction(tx_hash, 1);
    sealed.block_hash = first.hash.to_vec();
    assert_eq!(read.transaction(tx_hash).expect("tx"), Some(sealed));
    assert_eq!(
        read.receipt(tx_hash).expect("receipt"),
        Some(receipt(tx_hash))
    );
    assert_eq!(read.meta("head").expect("meta"), Some(b"abc".to_vec()));
    assert_eq!(read.meta_u64("last_seq").expect("meta"), Some(1));
}

#[test]
fn put_event_refuses_gaps_and_repeats() {
    let (_dir, db) = open();
    let mut write = db.write().expect("write");
    assert!(matches!(
        write.put_event(&mini_block_event(0)),
        Err(StorageError::OutOfOrder {
            expected: 1,
            got: 0
        })
    ));
    write.put_event(&mini_block_event(1)).expect("first");
    assert!(matches!(
        write.put_event(&mini_block_event(3)),
        Err(StorageError::OutOfOrder {
            expected: 2,
            got: 3
        })
    ));
    assert!(matches!(
        write.put_event(&mini_block_event(1)),
        Err(StorageError::OutOfOrder {
            expected: 2,
            got: 1
        })
    ));
    write.put_event(&mini_block_event(2)).expect("second");
    assert_eq!(write.last_event_seq().expect("seq"), 2);
    write.commit().expect("commit");

    // The next transaction continues from the committed head.
    let mut write = db.write().expect("write");
    assert!(matches!(
        write.put_event(&mini_block_event(2)),
        Err(StorageError::OutOfOrder {
            expected: 3,
            got: 2
        })
    ));
    write.put_event(&mini_block_event(3)).expect("third");
    write.commit().expect("commit");
    assert_eq!(db.read().expect("read").last_event_seq().expect("seq"), 3);
}

#[test]
fn events_come_back_in_order_without_trace_context() {
    let (_dir, db) = open();
    // Enough events that the numeric order differs from a naive byte order of small keys
    // (256 needs a second byte).
    const COUNT: u64 = 300;
    let mut write = db.write().expect("write");
    for seq in 1..=COUNT {
        let mut event = mini_block_event(seq);
        if seq % 2 == 0 {
            let block = block(seq, vec![]);
            event.event = Some(v1::chain_event::Event::Block((&block).into()));
        }
        event
            .trace_context
            .insert("traceparent".into(), "00-abc-def-01".into());
        write.put_event(&event).expect("event");
    }
    write.commit().expect("commit");

    let read = db.read().expect("read");
    let all = read.events_from(1, usize::MAX).expect("events");
    assert_eq!(all.len() as u64, COUNT);
    for (i, event) in all.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1);
        assert!(event.trace_context.is_empty());
        let expected_block = event.seq % 2 == 0;
        assert_eq!(
            matches!(event.event, Some(v1::chain_event::Event::Block(_))),
            expected_block
        );
    }
    let page: Vec<u64> = read
        .events_from(250, 10)
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(page, (250..260).collect::<Vec<_>>());
    let tail: Vec<u64> = read
        .events_from(295, 100)
        .expect("events")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(tail, (295..=300).collect::<Vec<_>>());
    assert!(read.events_from(301, 10).expect("events").is_empty());
    assert!(read.events_from(1, 0).expect("events").is_empty());
    let mut expected = mini_block_event(7);
    expected.trace_context.clear();
    assert_eq!(read.event(7).expect("event"), Some(expected));
    assert_eq!(read.event(301).expect("event"), None);
}

#[test]
fn blocks_are_found_by_number_and_hash() {
    let (_dir, db) = open();
    let txs: Vec<B256> = (1..=3).map(B256::with_last_byte).collect();
    let genesis = block(0, vec![]);
    let one = block(1, txs.clone());
    let mut write = db.write().expect("write");
    write.put_block(&genesis).expect("genesis");
    write.put_block(&one).expect("block");
    write.commit().expect("commit");

    let read = db.read().expect("read");
    assert_eq!(read.last_block_number().expect("last"), Some(1));
    assert_eq!(
        read.block_by_number(0).expect("block"),
        Some(genesis.clone())
    );
    assert_eq!(read.block_by_number(1).expect("block"), Some(one.clone()));
    assert_eq!(read.block_by_number(2).expect("block"), None);
    assert_eq!(
        read.block_number_by_hash(one.hash).expect("number"),
        Some(1)
    );
    assert_eq!(
        read.block_number_by_hash(genesis.hash).expect("number"),
        Some(0)
    );
    assert_eq!(
        read.block_number_by_hash(B256::repeat_byte(1))
            .expect("number"),
        None
    );
    assert_eq!(read.block_transaction_hashes(1).expect("txs"), txs);
    assert!(read.block_transaction_hashes(0).expect("txs").is_empty());
    assert_eq!(
        StateView::block_hash(&read, 1).expect("hash"),
        Some(one.hash)
    );
    assert_eq!(StateView::block_hash(&read, 5).expect("hash"), None);
    drop(read);

    // Replacing block 1 unlinks the old hash.
    let mut other = block(1, vec![]);
    other.header.timestamp += 1;
    other.hash = other.header.hash_slow();
    let mut write = db.write().expect("write");
    write.put_block(&other).expect("block");
    write.commit().expect("commit");
    let read = db.read().expect("read");
    assert_eq!(read.block_number_by_hash(one.hash).expect("number"), None);
    assert_eq!(
        read.block_number_by_hash(other.hash).expect("number"),
        Some(1)
    );
    assert!(read.block_transaction_hashes(1).expect("txs").is_empty());
    assert_eq!(read.block_by_number(1).expect("block"), Some(other));
}

#[test]
fn transactions_and_receipts_round_trip() {
    let (_dir, db) = open();
    let hash = B256::repeat_byte(0x42);
    let mut write = db.write().expect("write");
    write
        .put_transaction(hash, &stored_transaction(hash, 9))
        .expect("tx");
    write.put_receipt(&receipt(hash)).expect("receipt");
    // Once the block is sealed, the stored transaction learns its block hash.
    let mut stored = write.transaction(hash).expect("tx").expect("exists");
    stored.block_hash = B256::repeat_byte(0x99).to_vec();
    write.put_transaction(hash, &stored).expect("tx");
    write.commit().expect("commit");

    let read = db.read().expect("read");
    assert_eq!(read.transaction(hash).expect("tx"), Some(stored));
    assert_eq!(read.receipt(hash).expect("receipt"), Some(receipt(hash)));
    let creation = Receipt {
        contract_address: Some(Address::repeat_byte(5)),
        to: None,
        success: false,
        logs: vec![],
        ..receipt(B256::repeat_byte(0x43))
    };
    drop(read);
    let mut write = db.write().expect("write");
    write.put_receipt(&creation).expect("receipt");
    write.commit().expect("commit");
    let read = db.read().expect("read");
    assert_eq!(
        read.receipt(creation.tx_hash).expect("receipt"),
        Some(creation)
    );
    assert_eq!(read.transaction(B256::ZERO).expect("tx"), None);
    assert_eq!(read.receipt(B256::ZERO).expect("receipt"), None);
}

#[test]
fn readers_see_a_snapshot_and_may_overlap_the_writer() {
    let (_dir, db) = open();
    let mut write = db.write().expect("write");
    write.set_meta_u64("n", 1).expect("meta");
    write.commit().expect("commit");

    // A reader open on this thread while the writer works (as `match db.read()?.meta(..)?`
    // with a write in an arm does).
    let snapshot = db.read().expect("read");
    let mut write = db.write().expect("write");
    write.set_meta_u64("n", 2).expect("meta");
    assert_eq!(snapshot.meta_u64("n").expect("meta"), Some(1));
    write.commit().expect("commit");
    assert_eq!(snapshot.meta_u64("n").expect("meta"), Some(1));
    drop(snapshot);
    assert_eq!(
        db.read().expect("read").meta_u64("n").expect("meta"),
        Some(2)
    );
}

#[test]
fn writers_from_many_threads_take_turns() {
    let (_dir, db) = open();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let mut write = db.write().expect("write");
                    let n = write.meta_u64("counter").expect("meta").unwrap_or(0);
                    write.set_meta_u64("counter", n + 1).expect("meta");
                    write.commit().expect("commit");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("join");
    }
    assert_eq!(
        db.read().expect("read").meta_u64("counter").expect("meta"),
        Some(100)
    );
}

#[test]
fn corrupt_values_are_reported_not_panicked_on() {
    let (_dir, db) = open();
    let mut write = db.write().expect("write");
    write.set_meta("short", &[1, 2, 3]).expect("meta");
    write.commit().expect("commit");
    let read = db.read().expect("read");
    assert!(matches!(
        read.meta_u64("short"),
        Err(StorageError::Decode { table: "Meta", .. })
    ));
}

#[test]
fn the_state_walk_visits_every_account_and_non_zero_slot_once() {
    let (_dir, db) = open();
    let (a, b) = (Address::repeat_byte(0xaa), Address::repeat_byte(0x0b));
    let mut write = db.write().expect("write");
    write
        .apply_diff(&diff([
            (
                a,
                AccountDiff {
                    balance: Some(U256::from(5)),
                    storage: BTreeMap::from([
                        (U256::from(1), U256::from(10)),
                        (U256::from(2), U256::from(20)),
                    ]),
                    ..Default::default()
                },
            ),
            (
                b,
                AccountDiff {
                    nonce: Some(3),
                    ..Default::default()
                },
            ),
        ]))
        .expect("apply");
    // Zeroing a slot deletes it, so the walk does not see it.
    write
        .apply_diff(&diff([(
            a,
            AccountDiff {
                storage: BTreeMap::from([(U256::from(2), U256::ZERO)]),
                ..Default::default()
            },
        )]))
        .expect("apply");
    write.commit().expect("commit");
    let (mut accounts, mut slots) = (vec![], vec![]);
    db.read()
        .expect("read")
        .for_each_state(
            |address, account| accounts.push((address, account.nonce, account.balance)),
            |address, slot, value| slots.push((address, slot, value)),
        )
        .expect("walk");
    assert_eq!(
        accounts,
        vec![(b, 3, U256::ZERO), (a, 0, U256::from(5))],
        "accounts in address order"
    );
    assert_eq!(slots, vec![(a, U256::from(1), U256::from(10))]);
}

#[test]
fn tree_tombstones_are_kept_in_key_order_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    let keys = [
        B256::repeat_byte(9),
        B256::repeat_byte(1),
        B256::repeat_byte(9),
    ];
    {
        let db = Database::open(&path).expect("open");
        assert!(
            db.read()
                .expect("read")
                .tree_tombstones()
                .expect("walk")
                .is_empty()
        );
        let mut write = db.write().expect("write");
        write.put_tree_tombstones(&keys).expect("put");
        write.commit().expect("commit");
    }
    let db = Database::open(&path).expect("reopen");
    assert_eq!(
        db.read().expect("read").tree_tombstones().expect("walk"),
        vec![B256::repeat_byte(1), B256::repeat_byte(9)]
    );
}

mod history {
    use proptest::prelude::*;

    use super::*;
    use crate::StateAt;

    const ADDRESSES: u8 = 3;
    const SLOTS: u64 = 3;

    fn account_diff() -> impl Strategy<Value = AccountDiff> {
        (
            proptest::option::of(0u64..4),
            proptest::option::of(0u64..4),
            proptest::bool::weighted(0.15),
            proptest::collection::btree_map(0..SLOTS, 0u64..3, 0..3),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(balance, nonce, code, storage, destroyed)| AccountDiff {
                balance: balance.map(U256::from),
                nonce,
                code: code.then(|| Bytes::from(vec![0x60, 0x00])),
                storage: storage
                    .into_iter()
                    .map(|(slot, value)| (U256::from(slot), U256::from(value)))
                    .collect(),
                destroyed,
            })
    }

    /// Blocks of one to three diffs, each over a few of a small set of accounts and slots, so
    /// that keys change again and again, within a block and across blocks.
    fn blocks() -> impl Strategy<Value = Vec<Vec<StateDiff>>> {
        let state_diff = proptest::collection::btree_map(0..ADDRESSES, account_diff(), 1..3)
            .prop_map(|accounts| StateDiff {
                accounts: accounts
                    .into_iter()
                    .map(|(a, d)| (Address::repeat_byte(a + 1), d))
                    .collect(),
            });
        proptest::collection::vec(proptest::collection::vec(state_diff, 1..4), 1..8)
    }

    fn assert_same(view: &impl StateView<Error = StorageError>, model: &InMemoryState, at: u64) {
        for a in 0..ADDRESSES {
            let address = Address::repeat_byte(a + 1);
            assert_eq!(
                view.account(address).expect("account"),
                model.account(address).expect("model"),
                "account {address} after block {at}"
            );
            for slot in 0..SLOTS {
                let slot = U256::from(slot);
                assert_eq!(
                    view.storage(address, slot).expect("slot"),
                    model.storage(address, slot).expect("model"),
                    "slot {slot} of {address} after block {at}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The state read at every past block is the state a model had after applying the diffs
        /// up to that block, and the plain state stays the newest one.
        #[test]
        fn every_past_block_reads_as_it_was(blocks in blocks()) {
            let (_dir, db) = open();
            let mut model = InMemoryState::default();
            let genesis = diff([(
                Address::repeat_byte(1),
                AccountDiff { balance: Some(U256::from(9)), ..Default::default() },
            )]);
            let mut write = db.write().expect("write");
            write.apply_diff(&genesis).expect("genesis");
            write.set_history_from(0).expect("meta");
            write.commit().expect("commit");
            model.apply(&genesis);
            let mut snapshots = vec![model.clone()];
            for (i, diffs) in blocks.iter().enumerate() {
                let number = i as u64 + 1;
                for diff in diffs {
                    // One MDBX transaction per diff, as a replica applies mini-blocks.
                    let mut write = db.write().expect("write");
                    write.apply_diff_at(diff, number).expect("apply");
                    write.commit().expect("commit");
                    model.apply(diff);
                }
                snapshots.push(model.clone());
            }
            let read = db.read().expect("read");
            prop_assert_eq!(read.history_from().expect("meta"), Some(0));
            for (number, snapshot) in snapshots.iter().enumerate() {
                assert_same(&StateAt::new(&read, number as u64), snapshot, number as u64);
            }
            assert_same(&read, &model, u64::MAX);
        }
    }

    #[test]
    fn a_block_being_built_is_not_part_of_the_state_after_the_head() {
        let (_dir, db) = open();
        let address = Address::repeat_byte(7);
        let credit = |balance: u64| {
            diff([(
                address,
                AccountDiff {
                    balance: Some(U256::from(balance)),
                    ..Default::default()
                },
            )])
        };
        let mut write = db.write().expect("write");
        write.apply_diff_at(&credit(5), 1).expect("apply");
        // Two mini-blocks of block 2 (not sealed yet): the state after block 1 ignores both.
        write.apply_diff_at(&credit(6), 2).expect("apply");
        write.apply_diff_at(&credit(7), 2).expect("apply");
        write.commit().expect("commit");
        let read = db.read().expect("read");
        let balance = |n| {
            read.account_at(address, n)
                .expect("read")
                .map(|a| a.balance)
        };
        assert_eq!(balance(0), None, "the account did not exist before block 1");
        assert_eq!(balance(1), Some(U256::from(5)));
        assert_eq!(balance(2), Some(U256::from(7)));
        assert_eq!(
            read.account(address).expect("read").map(|a| a.balance),
            Some(U256::from(7))
        );
        assert_eq!(read.history_from().expect("meta"), None);
    }
}

#[test]
fn the_state_digest_depends_on_the_state_not_on_how_it_was_written() {
    let a = Address::repeat_byte(0xa1);
    let b = Address::repeat_byte(0xb2);
    let account = |balance: u64, slots: &[(u64, u64)]| AccountDiff {
        balance: Some(U256::from(balance)),
        nonce: Some(1),
        storage: slots
            .iter()
            .map(|(k, v)| (U256::from(*k), U256::from(*v)))
            .collect(),
        ..AccountDiff::default()
    };
    // One database writes the final state at once; the other gets there in two steps, with a
    // slot written and zeroed again and an account that comes and goes.
    let (_one_dir, one) = open();
    let mut write = one.write().expect("write");
    write
        .apply_diff(&diff([(a, account(5, &[(1, 10)])), (b, account(7, &[]))]))
        .expect("apply");
    write.commit().expect("commit");
    let (_two_dir, two) = open();
    let gone = Address::repeat_byte(0xc3);
    for step in [
        diff([
            (a, account(3, &[(1, 10), (2, 20)])),
            (gone, account(1, &[(9, 9)])),
        ]),
        diff([
            (a, account(5, &[(2, 0)])),
            (b, account(7, &[])),
            (
                gone,
                AccountDiff {
                    destroyed: true,
                    ..AccountDiff::default()
                },
            ),
        ]),
    ] {
        let mut write = two.write().expect("write");
        write.apply_diff(&step).expect("apply");
        write.commit().expect("commit");
    }
    let first = one.read().expect("read").state_digest().expect("digest");
    let second = two.read().expect("read").state_digest().expect("digest");
    assert_eq!(first, second);
    assert_eq!((first.accounts, first.slots), (2, 1));

    let mut write = two.write().expect("write");
    write
        .apply_diff(&diff([(b, account(8, &[]))]))
        .expect("apply");
    write.commit().expect("commit");
    let changed = two.read().expect("read").state_digest().expect("digest");
    assert_ne!(changed.digest, first.digest, "one balance differs");
}

/// A database at its size ceiling refuses the write that needs more, recognisably, with nothing
/// of it written and everything committed before intact; opened again with a larger ceiling, the
/// same write succeeds.
#[test]
fn a_full_database_refuses_the_write_whole_and_takes_it_with_more_room() {
    let dir = tempfile::tempdir().expect("a step of the test");
    let value = vec![0xab_u8; 256 * 1024];
    let mut committed = 0;
    let full = {
        let db = Database::open_with_max_size(dir.path(), crate::MIN_MAX_SIZE)
            .expect("a step of the test");
        loop {
            let mut write = db.write().expect("a step of the test");
            let outcome = write
                .set_meta(&format!("k{committed}"), &value)
                .and_then(|()| write.set_meta_u64("count", committed + 1))
                .and_then(|()| write.commit());
            match outcome {
                Ok(()) => committed += 1,
                Err(error) => break error,
            }
            assert!(committed < 100, "4 MiB cannot hold 100 values of 256 KiB");
        }
    };
    assert!(full.is_full(), "{full}");
    assert!(committed >= 4, "{committed} values fit");

    let db = Database::open_with_max_size(dir.path(), 64 << 20).expect("a step of the test");
    let read = db.read().expect("a step of the test");
    assert_eq!(
        read.meta_u64("count").expect("a step of the test"),
        Some(committed)
    );
    assert_eq!(
        read.meta(&format!("k{committed}"))
            .expect("a step of the test"),
        None
    );
    assert_eq!(
        read.meta(&format!("k{}", committed - 1))
            .expect("a step of the test"),
        Some(value.clone())
    );
    drop(read);
    let mut write = db.write().expect("a step of the test");
    write
        .set_meta(&format!("k{committed}"), &value)
        .expect("a step of the test");
    write.commit().expect("a step of the test");
}

/// The address index walks one address's transactions in either direction from an exclusive
/// bound, never splitting a block, says whether more lie beyond, and keeps other addresses'
/// entries apart (including one whose address shares a prefix).
#[test]
#[allow(clippy::unwrap_used)]
fn the_address_index_pages_by_whole_blocks_in_both_directions() {
    use crate::{AddressEntry, AddressSearch};
    let (_dir, db) = open();
    let alice = Address::repeat_byte(0xa1);
    let neighbour = {
        let mut bytes = [0xa1; 20];
        bytes[19] = 0xa2;
        Address::from(bytes)
    };
    let hash = |block: u64, index: u32| B256::with_last_byte((block * 10 + u64::from(index)) as u8);
    // Alice: two transactions in block 2, one in 3, three in 5, one in 9.
    let alices = [(2, 0), (2, 1), (3, 0), (5, 0), (5, 1), (5, 2), (9, 0)];
    let mut write = db.write().unwrap();
    for (block, index) in alices {
        write
            .index_transaction([alice, alice], block, index, hash(block, index))
            .unwrap();
    }
    write
        .index_transaction([neighbour], 4, 0, hash(4, 0))
        .unwrap();
    // Searches cover sealed blocks: the head is block 9.
    let mut head = verity_primitives::ChainSpec::dev(31337, 1, 1)
        .unwrap()
        .genesis_block();
    head.header.number = 9;
    write.put_block(&head).unwrap();
    write.commit().unwrap();
    let read = db.read().unwrap();
    let blocks = |entries: &[AddressEntry]| -> Vec<(u64, u32)> {
        entries.iter().map(|e| (e.block, e.index)).collect()
    };

    // Newest first from the head: at least 2, then the rest of block 5.
    let (page, more) = read
        .address_transactions(alice, AddressSearch::Before(u64::MAX), 2)
        .unwrap();
    assert_eq!(blocks(&page), [(9, 0), (5, 2), (5, 1), (5, 0)]);
    assert!(more);
    assert_eq!(page[0].hash, hash(9, 0));
    // The next page: before block 5.
    let (page, more) = read
        .address_transactions(alice, AddressSearch::Before(5), 2)
        .unwrap();
    assert_eq!(blocks(&page), [(3, 0), (2, 1), (2, 0)]);
    assert!(!more);
    // Oldest first after block 2: 3, then all of 5; then 9 alone.
    let (page, more) = read
        .address_transactions(alice, AddressSearch::After(2), 2)
        .unwrap();
    assert_eq!(blocks(&page), [(3, 0), (5, 0), (5, 1), (5, 2)]);
    assert!(more);
    let (page, more) = read
        .address_transactions(alice, AddressSearch::After(5), 2)
        .unwrap();
    assert_eq!(blocks(&page), [(9, 0)]);
    assert!(!more);
    // The neighbour sees only its own entry; an address without entries none.
    let (page, _) = read
        .address_transactions(neighbour, AddressSearch::Before(u64::MAX), 10)
        .unwrap();
    assert_eq!(blocks(&page), [(4, 0)]);
    let (page, more) = read
        .address_transactions(Address::ZERO, AddressSearch::After(0), 10)
        .unwrap();
    assert!(page.is_empty() && !more);
}

/// The tree journal reads back per version range in version then key order, its first chunk
/// records where it begins (with that version's root), and attestations read back per block.
#[test]
#[allow(clippy::unwrap_used)]
fn tree_journal_and_attestations_read_back_by_range() {
    let (_dir, db) = open();
    let (a, b) = (B256::repeat_byte(0xa), B256::repeat_byte(0xb));
    let (one, two) = (B256::with_last_byte(1), B256::with_last_byte(2));
    let mut write = db.write().unwrap();
    write
        .put_tree_changes(
            (0, B256::repeat_byte(0xf0)),
            3,
            B256::repeat_byte(0xf3),
            &[(b, None, Some(one)), (a, Some(one), Some(two))],
        )
        .unwrap();
    // The journal has a beginning now: a later chunk's start is not recorded.
    write
        .put_tree_changes(
            (3, B256::repeat_byte(0xee)),
            5,
            B256::repeat_byte(0xf5),
            &[(a, Some(two), None)],
        )
        .unwrap();
    let verifier = Address::repeat_byte(9);
    write.put_attestation(5, verifier, b"five").unwrap();
    write.put_attestation(6, verifier, b"six").unwrap();
    write.commit().unwrap();
    let read = db.read().unwrap();
    assert_eq!(
        read.meta_u64(crate::tables::META_TREE_JOURNAL_FROM)
            .unwrap(),
        Some(0)
    );
    assert_eq!(read.tree_root(0).unwrap(), Some(B256::repeat_byte(0xf0)));
    assert_eq!(read.tree_root(3).unwrap(), Some(B256::repeat_byte(0xf3)));
    assert_eq!(read.tree_root(4).unwrap(), None);
    let all = read.tree_changes(0, 5).unwrap();
    let order: Vec<(u64, B256)> = all.iter().map(|c| (c.version, c.key)).collect();
    assert_eq!(order, vec![(3, a), (3, b), (5, a)]);
    assert_eq!(all[1].before, None);
    assert_eq!(all[1].after, Some(one));
    assert_eq!(all[2].after, None);
    assert_eq!(read.tree_changes(3, 5).unwrap().len(), 1);
    assert_eq!(read.tree_changes(0, 4).unwrap().len(), 2);
    assert!(read.tree_changes(5, 9).unwrap().is_empty());
    assert_eq!(read.attestations(5).unwrap(), vec![b"five".to_vec()]);
    assert!(read.attestations(4).unwrap().is_empty());
}

/// A transaction stored with its mini-block has no block hash until its block is sealed, then
/// reads with it; the address index, written at the mini-block, is searched up to the sealed
/// head only.
#[test]
fn an_unsealed_blocks_transactions_have_no_block_hash_and_are_not_searched() {
    let (_dir, db) = open();
    let alice = Address::repeat_byte(0xa1);
    let hash = B256::repeat_byte(0x42);
    let mut write = db.write().expect("write");
    write
        .put_transaction(hash, &stored_transaction(hash, 1))
        .expect("tx");
    write.index_transaction([alice], 1, 0, hash).expect("index");
    write.commit().expect("commit");

    let read = db.read().expect("read");
    let stored = read.transaction(hash).expect("tx").expect("stored");
    assert!(stored.block_hash.is_empty(), "block 1 is not sealed");
    for search in [
        crate::AddressSearch::Before(u64::MAX),
        crate::AddressSearch::After(0),
    ] {
        let (found, more) = read
            .address_transactions(alice, search, 10)
            .expect("search");
        assert!(found.is_empty() && !more, "{search:?}: {found:?}");
    }
    drop(read);

    let mut block = verity_primitives::ChainSpec::dev(31337, 1, 1)
        .expect("spec")
        .genesis_block();
    block.header.number = 1;
    block.hash = B256::repeat_byte(0xb1);
    block.transaction_hashes = vec![hash];
    let mut write = db.write().expect("write");
    write.put_block(&block).expect("block");
    write.commit().expect("commit");

    let read = db.read().expect("read");
    let stored = read.transaction(hash).expect("tx").expect("stored");
    assert_eq!(stored.block_hash, block.hash.to_vec());
    for search in [
        crate::AddressSearch::Before(u64::MAX),
        crate::AddressSearch::After(0),
    ] {
        let (found, _) = read
            .address_transactions(alice, search, 10)
            .expect("search");
        assert_eq!(found.len(), 1, "{search:?}");
    }
}

/// A replayable database's commits survive closing and reopening (the OS holds them even
/// before a sync), and syncing it works.
#[test]
fn a_replayable_databases_commits_survive_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("db");
    {
        let db = Database::open_replayable(&path).expect("open");
        let mut write = db.write().expect("write");
        write.set_meta_u64("last_seq", 7).expect("meta");
        write.commit().expect("commit");
        db.sync().expect("sync");
        let mut write = db.write().expect("write");
        write.set_meta_u64("last_seq", 8).expect("meta");
        write.commit().expect("commit");
    }
    let db = Database::open_replayable(&path).expect("reopen");
    assert_eq!(
        db.read().expect("read").meta_u64("last_seq").expect("meta"),
        Some(8)
    );
}
