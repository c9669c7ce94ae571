//! Chains built by hand, for tests of code that applies the chain (`verity-chain`'s suite, and
//! each node's own layout): the next valid mini-block, block or handover at each step, signed by the
//! key a test names, and as the stream carries it. A test that expects a refusal alters one of
//! them (and seals it again) before sending it with [`ChainBuilder::wire`].
//!
//! Nothing here is needed to run a node; it only uses what `verity-primitives` offers anyone.

use alloy_primitives::{Address, B256, U256};
use verity_primitives::{
    AccountDiff, Block, BlockTemplate, ChainEvent, ChainEventKind, MiniBlock, SigningKey,
    StateDiff,
    governance::{Handover, SignedAppointment},
};
use verity_proto::v1;

/// The account mini-block `number` of a [`ChainBuilder`] writes (its balance becomes
/// `number + 1`).
pub fn written_account(number: u64) -> Address {
    Address::from_word(B256::from(U256::from(0x1000 + number)))
}

/// Mini-block `number` of block 1 (at index `number`), without transactions or writes, under
/// `epoch`, signed by `key`: for checks of hashes, signatures and chunk shape that read no state.
pub fn empty_mini_block(number: u64, epoch: u64, key: &SigningKey) -> MiniBlock {
    let mut mini = MiniBlock {
        number,
        block_number: 1,
        index: number as u32,
        epoch,
        timestamp_ms: 1_700_000_000_000 + number,
        parent_hash: B256::ZERO,
        base_fee: 1_000_000_000,
        block_timestamp: 1_700_000_000,
        beneficiary: Address::repeat_byte(0xfe),
        transactions: vec![],
        receipts: vec![],
        diff: StateDiff::default(),
        hash: B256::ZERO,
        signature: verity_primitives::UNSIGNED,
    };
    mini.seal(key);
    mini
}

/// A chain under construction from genesis: where it ends and what it would accept next.
#[derive(Debug, Clone)]
pub struct ChainBuilder {
    next_seq: u64,
    next_mini: u64,
    last_mini_hash: B256,
    head: Block,
    open: Vec<MiniBlock>,
    epoch: u64,
}

impl ChainBuilder {
    /// An empty chain on `genesis` (block 0), in epoch 0.
    pub fn new(genesis: Block) -> Self {
        Self {
            next_seq: 1,
            next_mini: genesis.first_mini_block + genesis.mini_block_count,
            last_mini_hash: genesis.header.mix_hash,
            head: genesis,
            open: Vec::new(),
            epoch: 0,
        }
    }

    /// The sequence the next event takes.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last sealed block.
    pub fn head(&self) -> &Block {
        &self.head
    }

    /// The next mini-block, without transactions, writing [`written_account`]'s balance, under
    /// the epoch in force, signed by `key`.
    pub fn mini_block(&self, key: &SigningKey) -> MiniBlock {
        let number = self.next_mini;
        let mut mini = MiniBlock {
            number,
            block_number: self.head.number() + 1,
            index: self.open.len() as u32,
            epoch: self.epoch,
            timestamp_ms: 1_700_000_000_000 + number,
            parent_hash: self.last_mini_hash,
            base_fee: 1_000_000_000,
            block_timestamp: 1_700_000_000 + self.head.number() + 1,
            beneficiary: Address::ZERO,
            transactions: vec![],
            receipts: vec![],
            diff: StateDiff {
                accounts: [(
                    written_account(number),
                    AccountDiff {
                        balance: Some(U256::from(number + 1)),
                        ..Default::default()
                    },
                )]
                .into(),
            },
            hash: B256::ZERO,
            signature: verity_primitives::UNSIGNED,
        };
        mini.seal(key);
        mini
    }

    /// The block sealing the mini-blocks since the last block, under the epoch in force, signed
    /// by `key`.
    pub fn block(&self, key: &SigningKey) -> Block {
        Block::seal(
            BlockTemplate {
                number: self.head.number() + 1,
                parent_hash: self.head.hash,
                timestamp: 1_700_000_000 + self.head.number() + 1,
                gas_limit: self.head.header.gas_limit,
                base_fee: 1_000_000_000,
                beneficiary: Address::ZERO,
                epoch: self.epoch,
            },
            self.next_mini - self.open.len() as u64,
            &self.open,
            self.last_mini_hash,
            key,
        )
    }

    /// A handover to `key` under `appointment`, at the block being built.
    pub fn handover(&self, appointment: SignedAppointment, key: &SigningKey) -> Handover {
        Handover::new(appointment, self.head.number() + 1, self.head.hash, key)
    }

    /// `kind` as the stream's next event, without adding it to the chain (an event a test
    /// expects refused, or sends more than once).
    pub fn wire(&self, kind: ChainEventKind) -> v1::ChainEvent {
        (&ChainEvent {
            seq: self.next_seq,
            kind,
        })
            .into()
    }

    /// Adds `kind` to the chain and returns it as the stream's next event.
    pub fn push(&mut self, kind: ChainEventKind) -> v1::ChainEvent {
        let wire = self.wire(kind.clone());
        match kind {
            ChainEventKind::MiniBlock(mini) => {
                self.next_mini = mini.number + 1;
                self.last_mini_hash = mini.hash;
                self.open.push(*mini);
            }
            ChainEventKind::Block(block) => {
                self.head = *block;
                self.open.clear();
            }
            ChainEventKind::Handover(handover) => self.epoch = handover.epoch(),
        }
        self.next_seq += 1;
        wire
    }

    /// Adds the next mini-block signed by `key` ([`Self::mini_block`]).
    pub fn push_mini_block(&mut self, key: &SigningKey) -> v1::ChainEvent {
        let mini = self.mini_block(key);
        self.push(ChainEventKind::MiniBlock(Box::new(mini)))
    }

    /// Adds the block sealing the open mini-blocks, signed by `key` ([`Self::block`]).
    pub fn push_block(&mut self, key: &SigningKey) -> v1::ChainEvent {
        let block = self.block(key);
        self.push(ChainEventKind::Block(Box::new(block)))
    }

    /// Adds a handover to `key` under `appointment` ([`Self::handover`]).
    pub fn push_handover(
        &mut self,
        appointment: SignedAppointment,
        key: &SigningKey,
    ) -> v1::ChainEvent {
        let handover = self.handover(appointment, key);
        self.push(ChainEventKind::Handover(Box::new(handover)))
    }
}
