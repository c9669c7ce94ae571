//! The pipelined producer: a mini-block executes while the previous one is still being committed,
//! over the committed state with the uncommitted diff laid over it. Dependent transactions spread
//! over many small mini-blocks (every sender's nonces, a counter every third transaction
//! increments, token balances) come out as if each mini-block had waited for the one before,
//! blocks sealed in between included; and the overlapping path was taken.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use alloy_genesis::{Genesis, GenesisAccount};
use alloy_primitives::{Address, B256, U256};
use tokio::sync::watch;
use verity_primitives::{ChainSpec, SigningKey};
use verity_sequencer::{
    SharedState,
    mempool::MempoolLimits,
    producer::{Committer, Head, Producer},
};
use verity_storage::Database;
use verity_workload::{Accounts, Action, COUNTER, Kind, TOKEN, TxParams, token_balance_slot};

const SENDERS: usize = 8;
const PER_SENDER: usize = 24;
const TOKENS: u64 = 1_000_000;

fn spec(accounts: &Accounts) -> ChainSpec {
    let balance = U256::from(10u64).pow(U256::from(19));
    let mut genesis = Genesis::default();
    genesis.config.chain_id = 1337;
    genesis.gas_limit = 300_000_000;
    genesis.base_fee_per_gas = Some(1_000_000_000);
    for (address, change) in accounts.genesis(balance, U256::from(TOKENS)).accounts {
        let mut account = GenesisAccount::default()
            .with_balance(change.balance.unwrap_or_default())
            .with_nonce(change.nonce);
        account.code = change.code;
        account.storage = Some(
            change
                .storage
                .iter()
                .map(|(slot, value)| (B256::from(*slot), B256::from(*value)))
                .collect(),
        );
        genesis.alloc.insert(address, account);
    }
    ChainSpec::from_genesis(genesis).unwrap()
}

const PARAMS: TxParams = TxParams {
    chain_id: 1337,
    max_fee_per_gas: 10_000_000_000,
    max_priority_fee_per_gas: 1,
};

/// A producer of at most `max_txs` transactions per mini-block over a new database of
/// `accounts`' genesis, the shared state whose mempool it takes from, and its head's sender.
fn node(
    accounts: &Accounts,
    max_txs: usize,
) -> (
    tempfile::TempDir,
    Database,
    Producer,
    Arc<SharedState>,
    watch::Sender<Head>,
) {
    let spec = spec(accounts);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let key = SigningKey::random();
    let rules = spec.sequencing(Some(key.address())).unwrap();
    let producer = Producer::open(
        db.clone(),
        spec.clone(),
        &rules,
        key,
        Address::repeat_byte(0xfe),
        max_txs,
    )
    .unwrap();
    let (head_tx, head_rx) = watch::channel(producer.head());
    let shared = Arc::new(SharedState::new(
        db.clone(),
        spec,
        MempoolLimits::default(),
        head_rx,
    ));
    (dir, db, producer, shared, head_tx)
}

/// Puts `signed` into the mempool of `shared`.
fn fill(shared: &SharedState, signed: &[verity_workload::Signed]) {
    let mut mempool = shared.lock_mempool();
    for tx in signed {
        mempool
            .insert(tx.transaction(), 0, U256::from(10u64).pow(U256::from(19)))
            .unwrap();
    }
}

#[test]
fn pipelined_mini_blocks_read_what_the_uncommitted_one_wrote() {
    let accounts = Accounts::new(SENDERS);
    // Four transactions per mini-block: each sender's next ones depend on the mini-block before.
    let (_dir, db, mut producer, shared, head_tx) = node(&accounts, 4);
    let total = SENDERS * PER_SENDER;
    let signed = accounts
        .sign(Kind::Mixed, 0..total, &PARAMS, |_| 0)
        .unwrap();
    fill(&shared, &signed);
    let count = |action| {
        (0..total)
            .filter(|&i| Kind::Mixed.action(i) == action)
            .count() as u64
    };

    let committer =
        Committer::spawn(shared.clone(), Arc::new(head_tx), producer.head().last_seq).unwrap();
    let mut mini_blocks = 0;
    while producer.produce_mini_block(&shared, &committer).unwrap() {
        mini_blocks += 1;
        if mini_blocks % 7 == 0 {
            producer.seal_block(&committer).unwrap();
        }
    }
    producer.seal_block(&committer).unwrap();
    let last_seq = producer.head().last_seq;
    committer.finish().unwrap();

    assert_eq!(
        mini_blocks,
        total / 4,
        "four transactions in every mini-block"
    );
    assert!(
        producer.pipelined() > 0,
        "no mini-block executed while its predecessor was being committed"
    );
    let read = db.read().unwrap();
    assert_eq!(read.last_event_seq().unwrap(), last_seq);
    assert_eq!(
        read.storage(COUNTER, U256::ZERO).unwrap(),
        U256::from(count(Action::Counter)),
        "every counter call counted"
    );
    let mut tokens = U256::ZERO;
    for i in 0..SENDERS {
        let account = read.account(accounts.address(i)).unwrap().unwrap();
        assert_eq!(account.nonce, PER_SENDER as u64, "sender {i}");
        tokens += read
            .storage(TOKEN, token_balance_slot(accounts.address(i)))
            .unwrap();
    }
    assert_eq!(
        tokens,
        U256::from(TOKENS * SENDERS as u64 - count(Action::Erc20)),
        "each token transfer moved one unit out of the senders"
    );
    // Every mini-block paid the fee recipient (a tip of 1 wei per gas): its balance adds up
    // only if each one read the balance the one before left.
    let last_block = read.last_block_number().unwrap().unwrap();
    let gas: u64 = (1..=last_block)
        .map(|n| read.block_by_number(n).unwrap().unwrap().header.gas_used)
        .sum();
    assert!(gas > 0);
    assert_eq!(
        read.account(Address::repeat_byte(0xfe))
            .unwrap()
            .unwrap()
            .balance,
        U256::from(gas)
    );
}

/// A mini-block's chain event stays within `--max-mini-block-bytes` counting what execution
/// adds (receipts, logs, the state diff), not only the transactions' bytes: token transfers,
/// each with a log, are cut into more mini-blocks, none larger than the bound, and every one of
/// them is included.
#[test]
fn a_mini_blocks_event_stays_within_its_byte_bound_with_its_logs_and_writes() {
    use prost::Message as _;
    const MAX_BYTES: usize = 8 * 1024;
    let accounts = Accounts::new(SENDERS);
    let (_dir, db, mut producer, shared, head_tx) = node(&accounts, 10_000);
    producer.set_max_bytes(MAX_BYTES);
    let total = SENDERS * PER_SENDER;
    let signed = accounts
        .sign(Kind::Erc20, 0..total, &PARAMS, |_| 0)
        .unwrap();
    let tx_bytes: usize = {
        let mut mempool = shared.lock_mempool();
        signed
            .iter()
            .map(|tx| {
                mempool
                    .insert(tx.transaction(), 0, U256::from(10u64).pow(U256::from(19)))
                    .unwrap();
                tx.raw.len()
            })
            .sum()
    };
    let committer =
        Committer::spawn(shared.clone(), Arc::new(head_tx), producer.head().last_seq).unwrap();
    while producer.produce_mini_block(&shared, &committer).unwrap() {}
    producer.seal_block(&committer).unwrap();
    committer.finish().unwrap();

    let read = db.read().unwrap();
    let (mut included, mut largest, mut mini_blocks) = (0, 0, 0);
    for seq in 1..=read.last_event_seq().unwrap() {
        let event = read.event(seq).unwrap().unwrap();
        if let Some(verity_proto::v1::chain_event::Event::MiniBlock(mini)) = &event.event {
            mini_blocks += 1;
            included += mini.transactions.len();
            let bytes = event.encoded_len();
            assert!(
                bytes <= MAX_BYTES || mini.transactions.len() == 1,
                "mini-block {} of {} transactions takes {bytes} bytes",
                mini.number,
                mini.transactions.len()
            );
            largest = largest.max(bytes);
        }
    }
    assert_eq!(included, total, "every transfer included");
    assert!(
        tx_bytes < MAX_BYTES * mini_blocks / 2,
        "the transactions alone ({tx_bytes} bytes) would have fit in half as many mini-blocks \
         ({mini_blocks}): the bound did not count the logs and writes"
    );
    assert!(largest > MAX_BYTES / 2, "largest event {largest} bytes");
}

/// The producer builds a block's roots a mini-block at a time, and after a restart from the
/// mini-blocks it recovers: a block open across a restart, and the ones before and after it,
/// are the blocks `Block::seal` makes of their mini-blocks as stored.
#[test]
fn a_block_open_across_a_restart_seals_over_all_its_mini_blocks() {
    let accounts = Accounts::new(SENDERS);
    let spec = spec(&accounts);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let key = SigningKey::random();
    let rules = spec.sequencing(Some(key.address())).unwrap();
    let open = || {
        Producer::open(
            db.clone(),
            spec.clone(),
            &rules,
            key.clone(),
            Address::repeat_byte(0xfe),
            3,
        )
        .unwrap()
    };
    let mut producer = open();
    let (head_tx, head_rx) = watch::channel(producer.head());
    let head_tx = Arc::new(head_tx);
    let shared = Arc::new(SharedState::new(
        db.clone(),
        spec.clone(),
        MempoolLimits::default(),
        head_rx,
    ));
    let total = SENDERS * PER_SENDER;
    let signed = accounts
        .sign(Kind::Mixed, 0..total, &PARAMS, |_| 0)
        .unwrap();
    fill(&shared, &signed);
    let produce = |producer: &mut Producer, mini_blocks: usize, seal: bool| {
        let committer =
            Committer::spawn(shared.clone(), head_tx.clone(), producer.head().last_seq).unwrap();
        for _ in 0..mini_blocks {
            assert!(producer.produce_mini_block(&shared, &committer).unwrap());
        }
        if seal {
            producer.seal_block(&committer).unwrap();
        }
        committer.finish().unwrap();
    };
    // A block of 30 transactions, then one of 150 (past the tries' 128th item) left open by a
    // restart after 90 of them, then one of 12.
    produce(&mut producer, 10, true);
    produce(&mut producer, 30, false);
    drop(producer);
    let mut producer = open();
    produce(&mut producer, 20, true);
    produce(&mut producer, 4, true);

    let read = db.read().unwrap();
    let mut minis: Vec<verity_primitives::MiniBlock> = Vec::new();
    for event in read.events_from(1, 10_000).unwrap() {
        let event = verity_primitives::ChainEvent::try_from(&event).unwrap();
        if let verity_primitives::ChainEventKind::MiniBlock(mini) = event.kind {
            minis.push(*mini);
        }
    }
    let last = read.last_block_number().unwrap().unwrap();
    assert_eq!(last, 3);
    let sizes: Vec<usize> = (1..=last)
        .map(|n| {
            read.block_by_number(n)
                .unwrap()
                .unwrap()
                .transaction_hashes
                .len()
        })
        .collect();
    assert_eq!(sizes, [30, 150, 12]);
    for number in 1..=last {
        let stored = read.block_by_number(number).unwrap().unwrap();
        let own: Vec<_> = minis
            .iter()
            .filter(|m| m.block_number == number)
            .cloned()
            .collect();
        let header = &stored.header;
        let template = verity_primitives::BlockTemplate {
            number,
            parent_hash: header.parent_hash,
            timestamp: header.timestamp,
            gas_limit: header.gas_limit,
            base_fee: header.base_fee_per_gas.unwrap(),
            beneficiary: header.beneficiary,
            epoch: stored.epoch(),
        };
        let sealed = verity_primitives::Block::seal(
            template,
            stored.first_mini_block,
            &own,
            own.last().unwrap().hash,
            &key,
        );
        assert_eq!(stored, sealed, "block {number}");
    }
}
