//! Mini-blocks, EVM blocks and the ordered chain stream that carries both.
//!
//! The sequencer executes transactions into a mini-block about every 10 ms and seals the
//! mini-blocks produced since the previous block into an EVM block about every second. Both are
//! signed by the sequencer and numbered by one gap-free event sequence (`seq`), which is also the
//! JetStream stream sequence, so any consumer can resume from "the event after the last one I
//! applied".

use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, EMPTY_ROOT_HASH, Header, proofs, transaction::Recovered,
};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bloom, Bytes, Signature, U256, keccak256};
use alloy_trie::{HashBuilder, Nibbles};

use crate::{Receipt, StateDiff, Transaction, signing};

/// About 10 ms of executed transactions.
#[derive(Debug, Clone, PartialEq)]
pub struct MiniBlock {
    /// Global mini-block number, from 0.
    pub number: u64,
    /// The EVM block this mini-block belongs to.
    pub block_number: u64,
    /// Position inside that EVM block, from 0.
    pub index: u32,
    /// The sequencer epoch it was signed under.
    pub epoch: u64,
    /// Milliseconds since the Unix epoch at execution.
    pub timestamp_ms: u64,
    /// Hash of the previous mini-block (zero for the first).
    pub parent_hash: B256,
    /// Base fee per gas of the EVM block being built.
    pub base_fee: u64,
    /// Timestamp of the EVM block being built, seconds (what `TIMESTAMP` returned).
    pub block_timestamp: u64,
    /// Fee recipient of the EVM block being built (what `COINBASE` returned).
    pub beneficiary: Address,
    /// The transactions, in execution order.
    pub transactions: Vec<Transaction>,
    /// One receipt per transaction.
    pub receipts: Vec<Receipt>,
    /// Every state write.
    pub diff: StateDiff,
    /// `compute_hash()` of the above.
    pub hash: B256,
    /// Sequencer signature over `hash`.
    pub signature: Signature,
}

impl MiniBlock {
    /// The canonical hash: keccak256 over a fixed, length-prefixed encoding of every field but
    /// the hash and signature. Any change to a transaction, receipt or write changes it.
    pub fn compute_hash(&self) -> B256 {
        let mut buf = Vec::with_capacity(256 + self.transactions.len() * 256);
        put_u64(&mut buf, self.number);
        put_u64(&mut buf, self.block_number);
        put_u64(&mut buf, u64::from(self.index));
        put_u64(&mut buf, self.epoch);
        put_u64(&mut buf, self.timestamp_ms);
        buf.extend_from_slice(self.parent_hash.as_slice());
        put_u64(&mut buf, self.base_fee);
        put_u64(&mut buf, self.block_timestamp);
        buf.extend_from_slice(self.beneficiary.as_slice());
        put_u64(&mut buf, self.transactions.len() as u64);
        for tx in &self.transactions {
            buf.extend_from_slice(tx.tx_hash().as_slice());
            buf.extend_from_slice(tx.signer().as_slice());
        }
        put_u64(&mut buf, self.receipts.len() as u64);
        for receipt in &self.receipts {
            encode_receipt(&mut buf, receipt);
        }
        put_u64(&mut buf, self.diff.accounts.len() as u64);
        for (address, account) in &self.diff.accounts {
            buf.extend_from_slice(address.as_slice());
            buf.push(u8::from(account.destroyed));
            put_opt(&mut buf, account.balance.map(|b| b.to_be_bytes::<32>()));
            put_opt(&mut buf, account.nonce.map(u64::to_be_bytes));
            put_opt(&mut buf, account.code.as_ref().map(|c| keccak256(c).0));
            put_u64(&mut buf, account.storage.len() as u64);
            for (slot, value) in &account.storage {
                buf.extend_from_slice(&slot.to_be_bytes::<32>());
                buf.extend_from_slice(&value.to_be_bytes::<32>());
            }
        }
        keccak256(&buf)
    }

    /// Sets `hash` and `signature` for the current contents.
    pub fn seal(&mut self, key: &signing::SigningKey) {
        self.hash = self.compute_hash();
        self.signature = key.sign(&self.hash);
    }

    /// Checks that `hash` matches the contents and that `sequencer` signed it.
    pub fn verify(&self, sequencer: Address) -> Result<(), BlockCheckError> {
        check_signed(self.hash, self.compute_hash(), &self.signature, sequencer)
    }

    /// Gas used by all transactions of this mini-block.
    pub fn gas_used(&self) -> u64 {
        self.receipts.iter().map(|r| r.gas_used).sum()
    }
}

fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_be_bytes());
}

fn put_opt<const N: usize>(buf: &mut Vec<u8>, value: Option<[u8; N]>) {
    match value {
        Some(bytes) => {
            buf.push(1);
            buf.extend_from_slice(&bytes);
        }
        None => buf.push(0),
    }
}

fn encode_receipt(buf: &mut Vec<u8>, receipt: &Receipt) {
    buf.extend_from_slice(receipt.tx_hash.as_slice());
    buf.push(receipt.tx_type as u8);
    buf.push(u8::from(receipt.success));
    put_u64(buf, receipt.gas_used);
    put_u64(buf, receipt.cumulative_gas_used);
    buf.extend_from_slice(&receipt.effective_gas_price.to_be_bytes());
    buf.extend_from_slice(receipt.from.as_slice());
    put_opt(buf, receipt.to.map(|a| a.0.0));
    put_opt(buf, receipt.contract_address.map(|a| a.0.0));
    put_u64(buf, receipt.logs.len() as u64);
    for log in &receipt.logs {
        buf.extend_from_slice(log.address.as_slice());
        put_u64(buf, log.topics().len() as u64);
        for topic in log.topics() {
            buf.extend_from_slice(topic.as_slice());
        }
        put_u64(buf, log.data.data.len() as u64);
        buf.extend_from_slice(&log.data.data);
    }
}

/// What a block's header and body take from its mini-blocks.
struct Roots {
    transactions_root: B256,
    receipts_root: B256,
    logs_bloom: Bloom,
    gas_used: u64,
    mini_block_count: u64,
    transaction_hashes: Vec<B256>,
}

/// A block's transactions root, receipts root, logs bloom, gas and transaction hashes, built a
/// mini-block at a time as the sequencer produces them ([`Block::seal_built`]): the tries take
/// their leaves in key order as they come, so sealing costs the same whatever the block's size,
/// instead of hashing every transaction and receipt at once on the producer's thread.
#[derive(Debug, Clone, Default)]
pub struct BlockRoots {
    transactions: OrderedTrie,
    receipts: OrderedTrie,
    logs_bloom: Bloom,
    gas_used: u64,
    mini_block_count: u64,
    transaction_hashes: Vec<B256>,
}

impl BlockRoots {
    /// Adds the block's next mini-block.
    pub fn push(&mut self, mini: &MiniBlock) {
        for tx in &mini.transactions {
            self.transactions.push(|buf| tx.inner().encode_2718(buf));
            self.transaction_hashes.push(*tx.tx_hash());
        }
        for receipt in &mini.receipts {
            let envelope = receipt.envelope();
            self.logs_bloom.accrue_bloom(envelope.logs_bloom());
            self.receipts.push(|buf| envelope.encode_2718(buf));
        }
        self.gas_used += mini.gas_used();
        self.mini_block_count += 1;
    }

    /// Gas the mini-blocks added so far used.
    pub fn gas_used(&self) -> u64 {
        self.gas_used
    }

    /// Mini-blocks added so far.
    pub fn mini_blocks(&self) -> u64 {
        self.mini_block_count
    }

    fn finish(self) -> Roots {
        Roots {
            transactions_root: self.transactions.root(),
            receipts_root: self.receipts.root(),
            logs_bloom: self.logs_bloom,
            gas_used: self.gas_used,
            mini_block_count: self.mini_block_count,
            transaction_hashes: self.transaction_hashes,
        }
    }
}

/// The root of the trie of a list keyed by `rlp(index)` (a block's transactions or receipts),
/// its items given one at a time in list order. The trie takes leaves in key order: 1..=127
/// (`0x01`..`0x7f`), then 0 (`0x80`), then 128 and up (`0x81 0x80`...), which is list order
/// but for the first item, held back until the 129th arrives or the list ends.
#[derive(Debug, Clone, Default)]
struct OrderedTrie {
    builder: HashBuilder,
    len: usize,
    first: Option<Vec<u8>>,
    buffer: Vec<u8>,
}

impl OrderedTrie {
    fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let index = self.len;
        self.len += 1;
        if index == 0 {
            let mut first = Vec::new();
            encode(&mut first);
            self.first = Some(first);
            return;
        }
        if index == 0x80 {
            self.add_first();
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        encode(&mut buffer);
        self.add(index, &buffer);
        self.buffer = buffer;
    }

    fn add_first(&mut self) {
        if let Some(first) = self.first.take() {
            self.add(0, &first);
        }
    }

    fn add(&mut self, index: usize, value: &[u8]) {
        let key = alloy_rlp::encode_fixed_size(&index);
        self.builder.add_leaf(Nibbles::unpack(&key), value);
    }

    fn root(mut self) -> B256 {
        if self.len == 0 {
            return EMPTY_ROOT_HASH;
        }
        self.add_first();
        self.builder.root()
    }
}

/// An EVM block sealing the mini-blocks produced since the previous block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The Ethereum header; `hash` is its keccak256.
    pub header: Header,
    /// `header.hash_slow()`.
    pub hash: B256,
    /// First mini-block sealed.
    pub first_mini_block: u64,
    /// How many mini-blocks it seals (zero for an empty block).
    pub mini_block_count: u64,
    /// Hashes of its transactions, in order.
    pub transaction_hashes: Vec<B256>,
    /// Sequencer signature over `hash`.
    pub signature: Signature,
}

/// The fields of a block that the sequencer chooses; the rest derive from the mini-blocks.
#[derive(Debug, Clone)]
pub struct BlockTemplate {
    /// Block number.
    pub number: u64,
    /// Hash of the previous block.
    pub parent_hash: B256,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Base fee per gas.
    pub base_fee: u64,
    /// Fee recipient.
    pub beneficiary: Address,
    /// The sequencer epoch it is sealed under (in the header's `extra_data`, 8 bytes).
    pub epoch: u64,
}

impl Block {
    /// Builds the block over `mini_blocks` (which must be this block's, in order) and signs it:
    /// the reference, over the whole block with alloy's root functions. The sequencer seals
    /// with [`Self::seal_built`], its roots built as the mini-blocks were produced.
    ///
    /// `state_root` is zero: the state commitment is derived off the hot path by the witness
    /// replica, never by the sequencer. `mix_hash` carries the last mini-block hash, so the
    /// header commits to the mini-block chain.
    pub fn seal<M: std::borrow::Borrow<MiniBlock>>(
        template: BlockTemplate,
        first_mini_block: u64,
        mini_blocks: &[M],
        last_mini_block_hash: B256,
        key: &signing::SigningKey,
    ) -> Self {
        let mini_blocks: Vec<&MiniBlock> = mini_blocks.iter().map(M::borrow).collect();
        let transactions: Vec<&Recovered<_>> =
            mini_blocks.iter().flat_map(|m| &m.transactions).collect();
        let envelopes: Vec<_> = transactions.iter().map(|t| t.inner()).collect();
        let receipts: Vec<_> = mini_blocks
            .iter()
            .flat_map(|m| &m.receipts)
            .map(Receipt::envelope)
            .collect();
        let mut logs_bloom = Bloom::ZERO;
        for receipt in &receipts {
            logs_bloom.accrue_bloom(receipt.logs_bloom());
        }
        let transactions_root = proofs::calculate_transaction_root(&envelopes);
        let receipts_root = proofs::calculate_receipt_root(&receipts);
        let roots = Roots {
            transactions_root,
            receipts_root,
            logs_bloom,
            gas_used: mini_blocks.iter().map(|m| m.gas_used()).sum(),
            mini_block_count: mini_blocks.len() as u64,
            transaction_hashes: transactions.iter().map(|t| *t.tx_hash()).collect(),
        };
        Self::assemble(template, first_mini_block, roots, last_mini_block_hash, key)
    }

    /// [`Self::seal`] of the mini-blocks `roots` was built over (one at a time, as they were
    /// produced): the same block, for the cost of finishing the two tries.
    pub fn seal_built(
        template: BlockTemplate,
        first_mini_block: u64,
        roots: BlockRoots,
        last_mini_block_hash: B256,
        key: &signing::SigningKey,
    ) -> Self {
        let roots = roots.finish();
        Self::assemble(template, first_mini_block, roots, last_mini_block_hash, key)
    }

    fn assemble(
        template: BlockTemplate,
        first_mini_block: u64,
        roots: Roots,
        last_mini_block_hash: B256,
        key: &signing::SigningKey,
    ) -> Self {
        let Roots {
            transactions_root,
            receipts_root,
            logs_bloom,
            gas_used,
            mini_block_count,
            transaction_hashes,
        } = roots;
        let header = Header {
            parent_hash: template.parent_hash,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: template.beneficiary,
            state_root: B256::ZERO,
            transactions_root,
            receipts_root,
            logs_bloom,
            difficulty: U256::ZERO,
            number: template.number,
            gas_limit: template.gas_limit,
            gas_used,
            timestamp: template.timestamp,
            extra_data: Bytes::copy_from_slice(&template.epoch.to_be_bytes()),
            mix_hash: last_mini_block_hash,
            nonce: Default::default(),
            base_fee_per_gas: Some(template.base_fee),
            ..Default::default()
        };
        let hash = header.hash_slow();
        Self {
            header,
            hash,
            first_mini_block,
            mini_block_count,
            transaction_hashes,
            signature: key.sign(&hash),
        }
    }

    /// Checks that `hash` is the header's hash and that `sequencer` signed it.
    pub fn verify(&self, sequencer: Address) -> Result<(), BlockCheckError> {
        check_signed(
            self.hash,
            self.header.hash_slow(),
            &self.signature,
            sequencer,
        )
    }

    /// Block number.
    pub fn number(&self) -> u64 {
        self.header.number
    }

    /// The sequencer epoch it was sealed under (`extra_data` as a big-endian u64; none: 0).
    pub fn epoch(&self) -> u64 {
        let data = self.header.extra_data.as_ref();
        <[u8; 8]>::try_from(data).map_or(0, u64::from_be_bytes)
    }

    /// The EIP-2718 encodings of transactions are not kept here: replicas keep transactions by
    /// hash. This returns the size of the header's RLP, for metrics.
    pub fn header_size(&self) -> usize {
        alloy_rlp::Encodable::length(&self.header)
    }
}

/// The transaction envelope's canonical encoding, used wherever a transaction is stored.
pub fn encode_transaction(tx: &Transaction) -> Vec<u8> {
    tx.inner().encoded_2718()
}

/// Checks that the `claimed` hash is the `computed` one and that `sequencer` signed it.
fn check_signed(
    claimed: B256,
    computed: B256,
    signature: &Signature,
    sequencer: Address,
) -> Result<(), BlockCheckError> {
    if computed != claimed {
        return Err(BlockCheckError::HashMismatch { claimed, computed });
    }
    signing::verify(&claimed, signature, sequencer)?;
    Ok(())
}

/// Why a mini-block or block was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlockCheckError {
    /// The claimed hash does not match the contents.
    #[error("hash mismatch: claimed {claimed}, contents hash to {computed}")]
    HashMismatch {
        /// The hash carried by the message.
        claimed: B256,
        /// The hash of its contents.
        computed: B256,
    },
    /// The signature is malformed or from the wrong key.
    #[error("bad sequencer signature: {0}")]
    Signature(#[from] signing::SignatureCheckError),
    /// Signed under another epoch than the one in force.
    #[error("{0}")]
    Epoch(String),
}

/// What an event of the chain stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainEventKind {
    /// A mini-block.
    MiniBlock(Box<MiniBlock>),
    /// A sealed EVM block.
    Block(Box<Block>),
    /// A new sequencer takes over from this position on.
    Handover(Box<crate::governance::Handover>),
}

/// One entry of the ordered chain stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEvent {
    /// Position in the stream, from 1 with no gap.
    pub seq: u64,
    /// The mini-block or block.
    pub kind: ChainEventKind,
}

impl ChainEvent {
    /// The hash that identifies this event (the mini-block's or block's hash); used as the
    /// JetStream message id so a re-publish is recognised as a duplicate.
    pub fn hash(&self) -> B256 {
        match &self.kind {
            ChainEventKind::MiniBlock(m) => m.hash,
            ChainEventKind::Block(b) => b.hash,
            ChainEventKind::Handover(h) => h.hash,
        }
    }

    /// Checks a mini-block's or block's hash, sequencer signature and epoch against the epoch
    /// in force. A handover is checked by [`crate::governance::Epoch::check_handover`], which
    /// needs the chain's position; here it passes.
    pub fn verify(&self, epoch: &crate::governance::Epoch) -> Result<(), BlockCheckError> {
        let claimed = match &self.kind {
            ChainEventKind::MiniBlock(m) => {
                m.verify(epoch.sequencer)?;
                m.epoch
            }
            ChainEventKind::Block(b) => {
                b.verify(epoch.sequencer)?;
                b.epoch()
            }
            ChainEventKind::Handover(_) => return Ok(()),
        };
        epoch
            .check_producer(claimed)
            .map_err(|e| BlockCheckError::Epoch(e.to_string()))
    }
}

/// Checks that `mini` is the next link of the chain: mini-block number `next_mini`, after the
/// mini-block `last_mini_hash`, in the block after `head_number`.
pub fn check_mini_block_link(
    mini: &MiniBlock,
    next_mini: u64,
    last_mini_hash: B256,
    head_number: u64,
) -> Result<(), String> {
    if mini.number != next_mini {
        return Err(format!(
            "mini-block {} where {next_mini} was due",
            mini.number
        ));
    }
    if mini.parent_hash != last_mini_hash {
        return Err(format!(
            "mini-block parent {} is not the last mini-block {last_mini_hash}",
            mini.parent_hash
        ));
    }
    if mini.block_number != head_number + 1 {
        return Err(format!(
            "mini-block of block {} while block {} is being built",
            mini.block_number,
            head_number + 1
        ));
    }
    Ok(())
}

/// Checks that `block` seals exactly the mini-blocks applied since `head`, on `head`.
pub fn check_block_link(
    block: &Block,
    head: &Block,
    next_mini: u64,
    last_mini_hash: B256,
    open_txs: u64,
) -> Result<(), String> {
    if block.number() != head.number() + 1 {
        return Err(format!(
            "block {} after block {}",
            block.number(),
            head.number()
        ));
    }
    if block.header.parent_hash != head.hash {
        return Err(format!(
            "block parent {} is not block {} ({})",
            block.header.parent_hash,
            head.number(),
            head.hash
        ));
    }
    if block.first_mini_block + block.mini_block_count != next_mini {
        return Err(format!(
            "block seals mini-blocks {}..{} but {} were applied",
            block.first_mini_block,
            block.first_mini_block + block.mini_block_count,
            next_mini
        ));
    }
    if block.header.mix_hash != last_mini_hash {
        return Err("block does not seal the last applied mini-block".into());
    }
    if block.transaction_hashes.len() as u64 != open_txs {
        return Err(format!(
            "block lists {} transactions, {open_txs} were applied",
            block.transaction_hashes.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountDiff, SigningKey};

    fn mini_block() -> MiniBlock {
        let mut diff = StateDiff::default();
        diff.accounts.insert(
            Address::repeat_byte(2),
            AccountDiff {
                balance: Some(U256::from(100)),
                ..Default::default()
            },
        );
        MiniBlock {
            number: 4,
            block_number: 1,
            index: 0,
            epoch: 0,
            timestamp_ms: 1_700_000_000_000,
            parent_hash: B256::repeat_byte(9),
            base_fee: 1_000_000_000,
            block_timestamp: 1_700_000_000,
            beneficiary: Address::repeat_byte(5),
            transactions: vec![],
            receipts: vec![],
            diff,
            hash: B256::ZERO,
            signature: Signature::test_signature(),
        }
    }

    #[test]
    fn a_sealed_mini_block_verifies_and_any_tampered_write_is_caught() {
        let key = SigningKey::random();
        let mut block = mini_block();
        block.seal(&key);
        assert!(block.verify(key.address()).is_ok());
        assert!(block.verify(SigningKey::random().address()).is_err());

        let mut tampered = block.clone();
        if let Some(account) = tampered.diff.accounts.get_mut(&Address::repeat_byte(2)) {
            account.balance = Some(U256::from(1_000_000));
        }
        assert!(matches!(
            tampered.verify(key.address()),
            Err(BlockCheckError::HashMismatch { .. })
        ));
    }

    fn template() -> BlockTemplate {
        BlockTemplate {
            number: 1,
            parent_hash: B256::repeat_byte(1),
            timestamp: 1_700_000_000,
            gas_limit: 30_000_000,
            base_fee: 1_000_000_000,
            beneficiary: Address::ZERO,
            epoch: 3,
        }
    }

    /// A mini-block of `count` signed transfers with their receipts (every third with a log).
    fn mini_block_of(key: &SigningKey, first_nonce: u64, count: usize) -> MiniBlock {
        use alloy_consensus::{SignableTransaction, TxEip1559, TxType};
        use alloy_primitives::{Log, TxKind};
        let mut mini = mini_block();
        for n in 0..count {
            let nonce = first_nonce + n as u64;
            let tx = TxEip1559 {
                chain_id: 1,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: 2_000_000_000,
                max_priority_fee_per_gas: 1,
                to: TxKind::Call(Address::with_last_byte(n as u8)),
                value: U256::from(nonce),
                ..Default::default()
            };
            let signature = key.sign(&tx.signature_hash());
            let envelope: alloy_consensus::TxEnvelope = tx.into_signed(signature).into();
            let tx = Transaction::new_unchecked(envelope, key.address());
            let logs = if nonce.is_multiple_of(3) {
                vec![Log::new_unchecked(
                    Address::with_last_byte(7),
                    vec![B256::repeat_byte(n as u8)],
                    Bytes::from(vec![1, 2, 3]),
                )]
            } else {
                vec![]
            };
            mini.receipts.push(Receipt {
                tx_hash: *tx.tx_hash(),
                tx_type: TxType::Eip1559,
                success: !nonce.is_multiple_of(5),
                gas_used: 21_000,
                cumulative_gas_used: 21_000 * (nonce + 1),
                effective_gas_price: 1_000_000_001,
                logs,
                contract_address: None,
                from: key.address(),
                to: Some(Address::with_last_byte(n as u8)),
            });
            mini.transactions.push(tx);
        }
        mini
    }

    /// The tries take the first item last up to 128 items and after the 128th beyond: every
    /// size around those edges, split over mini-blocks of every shape, gives the block
    /// `Block::seal` gives.
    #[test]
    fn a_block_built_a_mini_block_at_a_time_is_the_block_sealed_at_once() {
        let key = SigningKey::random();
        let template = template();
        for total in [0, 1, 2, 3, 126, 127, 128, 129, 130, 200, 255, 256, 257, 600] {
            for per_mini in [1, 7, 128, 1_000] {
                let mut minis = Vec::new();
                let mut nonce = 0;
                while nonce < total || minis.is_empty() {
                    let count = per_mini.min(total - nonce);
                    minis.push(mini_block_of(&key, nonce as u64, count));
                    nonce += count;
                    if total == 0 {
                        break;
                    }
                }
                let mut roots = BlockRoots::default();
                for mini in &minis {
                    roots.push(mini);
                }
                assert_eq!(roots.mini_blocks(), minis.len() as u64);
                let at_once = Block::seal(template.clone(), 4, &minis, B256::ZERO, &key);
                let built = Block::seal_built(template.clone(), 4, roots, B256::ZERO, &key);
                assert_eq!(
                    built, at_once,
                    "{total} transactions, {per_mini} a mini-block"
                );
            }
        }
    }

    #[test]
    fn a_sealed_block_commits_to_its_mini_blocks() {
        let key = SigningKey::random();
        let mut mini = mini_block();
        mini.seal(&key);
        let template = template();
        let block = Block::seal(
            template.clone(),
            4,
            std::slice::from_ref(&mini),
            mini.hash,
            &key,
        );
        assert!(block.verify(key.address()).is_ok());
        assert_eq!(block.header.mix_hash, mini.hash);
        assert_eq!(block.epoch(), 3);
        let other = Block::seal::<MiniBlock>(template, 4, &[], B256::ZERO, &key);
        assert_ne!(block.hash, other.hash);
    }
}
