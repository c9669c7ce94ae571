//! The table set and the byte layout of every key and value.
//!
//! Modelled on reth's tables: plain (unhashed) state keyed by address, content-addressed
//! bytecode, and chain data keyed by number or hash. Numeric keys are fixed-width big-endian so
//! MDBX's lexicographic order is numeric order (cursors walk events and blocks in sequence).
//! Structured values are the protobuf encodings of the `verity.v1` wire messages, so what is
//! stored is exactly what is served.

use alloy_primitives::{Address, B256, U256};
use verity_primitives::Account;

use crate::StorageError;

/// `Address(20)` → [`Account`] in the fixed 72-byte layout of [`encode_account`].
pub const PLAIN_ACCOUNT_STATE: &str = "PlainAccountState";
/// `Address(20) ++ slot(32 BE)` → value (big-endian, leading zeros trimmed; zero is never
/// stored).
pub const PLAIN_STORAGE_STATE: &str = "PlainStorageState";
/// `code_hash(32)` → code.
pub const BYTECODES: &str = "Bytecodes";
/// `seq(u64 BE)` → protobuf `v1::ChainEvent` (without its trace context): the ordered stream.
pub const CHAIN_EVENTS: &str = "ChainEvents";
/// `block number(u64 BE)` → protobuf `v1::Block` (header RLP, hash, signature, tx hashes).
pub const HEADERS: &str = "Headers";
/// `block hash(32)` → block number (u64 BE).
pub const HEADER_NUMBERS: &str = "HeaderNumbers";
/// `tx hash(32)` → protobuf `v1::StoredTransaction`.
pub const TRANSACTIONS: &str = "Transactions";
/// `tx hash(32)` → protobuf `v1::Receipt`.
pub const RECEIPTS: &str = "Receipts";
/// `block number(u64 BE)` → the block's transaction hashes, 32 bytes each, concatenated.
pub const BLOCK_TRANSACTIONS: &str = "BlockTransactions";
/// UTF-8 key → bytes: cursor positions, heads and other small bookkeeping.
pub const META: &str = "Meta";
/// `tree key(32)` → nothing: the witness role's state-tree leaves that hold zero (an account
/// destroyed or a slot cleared after it had a leaf), which the plain state no longer has but the
/// tree keeps (libs/commitment, `Step`). Rebuilding the tree from the plain state needs them.
pub const TREE_TOMBSTONES: &str = "TreeTombstones";

/// `version(u64 BE) ++ tree key(32)` → what the key's state-tree leaf held before and after the
/// chunk that ends at `version` (66 bytes: two [`encode_leaf`] halves). A version is a count of
/// mini-blocks: the tree after mini-blocks `0..version`; the state after block `n` is the version
/// `first_mini_block + mini_block_count` of its header. Written by the witness role with each
/// chunk, so the tree at any version since [`META_TREE_JOURNAL_FROM`] is the tree at the head
/// with the later entries undone (`eth_getProof` at past blocks).
pub const TREE_JOURNAL: &str = "TreeJournal";
/// `version(u64 BE)` → the state-tree root at that version (32 bytes), for every version a chunk
/// of the witness role ended at.
pub const TREE_ROOTS: &str = "TreeRoots";
/// `block number(u64 BE) ++ verifier(20)` → protobuf `v1::FinalityAttestation`: every counted
/// attestation (registered verifier, good signature), kept so that a proof of state at a block
/// can be handed out with the signatures that vouch for that block's root.
pub const ATTESTATIONS: &str = "Attestations";

/// Meta key: the first version [`TREE_JOURNAL`] reaches back to (the tree before the first chunk
/// journaled).
pub const META_TREE_JOURNAL_FROM: &str = "tree_journal_from";

/// `Address(20) ++ block number(u64 BE)` → the account as it was before block `number` first
/// changed it (the [`encode_account`] layout; empty: the account did not exist). Written by
/// [`WriteTx::apply_diff_at`](crate::WriteTx::apply_diff_at); the state after block `n` is, per
/// account, the value of the first entry above `n`, or the plain state when there is none
/// (reth's change sets and history indices, folded into one table that a cursor seek answers).
pub const ACCOUNT_HISTORY: &str = "AccountHistory";
/// `Address(20) ++ slot(32 BE) ++ block number(u64 BE)` → the slot's value before block
/// `number` first changed it (trimmed big-endian; empty: zero). Read like [`ACCOUNT_HISTORY`].
pub const STORAGE_HISTORY: &str = "StorageHistory";

/// `Address(20) ++ block number(u64 BE) ++ index in block(u32 BE)` → tx hash(32): the
/// transactions an address took part in (as sender, recipient, created contract or log
/// emitter), for Otterscan's searches. A cursor walks one address's entries in chain order.
pub const ADDRESS_TRANSACTIONS: &str = "AddressTransactions";

/// Meta key: set once the address index holds every stored transaction (a database written
/// before the index existed is indexed at the next start).
pub const META_ADDRESS_INDEX_COMPLETE: &str = "address_index_complete";

/// Meta key: the first block whose resulting state can be read from the history tables (0 for a
/// database that recorded history from genesis; a database written before history existed
/// starts at the block after its head then).
pub const META_HISTORY_FROM: &str = "state_history_from";

/// Every table, created when the database is opened.
pub const ALL: [&str; 17] = [
    PLAIN_ACCOUNT_STATE,
    PLAIN_STORAGE_STATE,
    BYTECODES,
    CHAIN_EVENTS,
    HEADERS,
    HEADER_NUMBERS,
    TRANSACTIONS,
    RECEIPTS,
    BLOCK_TRANSACTIONS,
    META,
    TREE_TOMBSTONES,
    ACCOUNT_HISTORY,
    STORAGE_HISTORY,
    ADDRESS_TRANSACTIONS,
    TREE_JOURNAL,
    TREE_ROOTS,
    ATTESTATIONS,
];

/// A state-tree leaf as [`TREE_JOURNAL`] stores it: 33 bytes, `0` and zeros for no leaf, `1`
/// and the value for a leaf.
pub fn encode_leaf(leaf: Option<B256>) -> [u8; 33] {
    let mut out = [0u8; 33];
    if let Some(value) = leaf {
        out[0] = 1;
        out[1..].copy_from_slice(value.as_slice());
    }
    out
}

/// The inverse of [`encode_leaf`].
pub fn decode_leaf(bytes: &[u8]) -> Result<Option<B256>, StorageError> {
    match bytes.split_first() {
        Some((0, rest)) if rest.len() == 32 => Ok(None),
        Some((1, rest)) if rest.len() == 32 => Ok(Some(B256::from_slice(rest))),
        _ => Err(StorageError::decode(
            TREE_JOURNAL,
            "leaf is not a tag and 32 bytes",
        )),
    }
}

/// The key of `address`'s entry for transaction `index` of block `number`.
pub fn address_transaction_key(address: Address, number: u64, index: u32) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..20].copy_from_slice(address.as_slice());
    key[20..28].copy_from_slice(&number.to_be_bytes());
    key[28..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Size of an encoded account: nonce (8) ++ balance (32) ++ code hash (32).
pub const ACCOUNT_LEN: usize = 8 + 32 + 32;

/// Encodes an account as `nonce u64 BE ++ balance U256 BE ++ code_hash`.
pub fn encode_account(account: &Account) -> [u8; ACCOUNT_LEN] {
    let mut out = [0u8; ACCOUNT_LEN];
    out[..8].copy_from_slice(&account.nonce.to_be_bytes());
    out[8..40].copy_from_slice(&account.balance.to_be_bytes::<32>());
    out[40..].copy_from_slice(account.code_hash.as_slice());
    out
}

/// Decodes the layout of [`encode_account`].
pub fn decode_account(bytes: &[u8]) -> Result<Account, StorageError> {
    let bytes: &[u8; ACCOUNT_LEN] = bytes.try_into().map_err(|_| {
        StorageError::decode(
            PLAIN_ACCOUNT_STATE,
            format!("expected {ACCOUNT_LEN} bytes, got {}", bytes.len()),
        )
    })?;
    let (nonce, rest) = bytes.split_at(8);
    let (balance, code_hash) = rest.split_at(32);
    Ok(Account {
        nonce: decode_u64(nonce, PLAIN_ACCOUNT_STATE)?,
        balance: U256::from_be_slice(balance),
        code_hash: B256::from_slice(code_hash),
    })
}

/// The `PlainStorageState` key of a slot.
pub fn storage_key(address: Address, slot: U256) -> [u8; 52] {
    let mut key = [0u8; 52];
    key[..20].copy_from_slice(address.as_slice());
    key[20..].copy_from_slice(&slot.to_be_bytes::<32>());
    key
}

/// The `AccountHistory` key of `address` changed in block `number`.
pub fn account_history_key(address: Address, number: u64) -> [u8; 28] {
    let mut key = [0u8; 28];
    key[..20].copy_from_slice(address.as_slice());
    key[20..].copy_from_slice(&number.to_be_bytes());
    key
}

/// The `StorageHistory` key of a slot changed in block `number`.
pub fn storage_history_key(address: Address, slot: U256, number: u64) -> [u8; 60] {
    let mut key = [0u8; 60];
    key[..52].copy_from_slice(&storage_key(address, slot));
    key[52..].copy_from_slice(&number.to_be_bytes());
    key
}

/// Encodes a storage value: big-endian with leading zero bytes trimmed.
pub fn encode_storage_value(value: U256) -> Vec<u8> {
    value.to_be_bytes_trimmed_vec()
}

/// Decodes a storage value of at most 32 big-endian bytes.
pub fn decode_storage_value(bytes: &[u8]) -> Result<U256, StorageError> {
    U256::try_from_be_slice(bytes).ok_or_else(|| {
        StorageError::decode(
            PLAIN_STORAGE_STATE,
            format!("{} bytes exceed 32", bytes.len()),
        )
    })
}

/// Decodes a big-endian u64 (a numeric key or value) found in `table`.
pub fn decode_u64(bytes: &[u8], table: &'static str) -> Result<u64, StorageError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
        StorageError::decode(table, format!("expected 8 bytes, got {}", bytes.len()))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_layout_round_trips() {
        let account = Account {
            nonce: 0x0102_0304_0506_0708,
            balance: U256::from(123_456_789u64) << 100,
            code_hash: B256::repeat_byte(0xab),
        };
        let bytes = encode_account(&account);
        assert_eq!(bytes.len(), ACCOUNT_LEN);
        assert_eq!(&bytes[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode_account(&bytes).ok(), Some(account));
        assert!(decode_account(&bytes[1..]).is_err());
    }

    #[test]
    fn storage_values_are_trimmed_and_round_trip() {
        for value in [U256::from(1), U256::from(0x1234), U256::MAX] {
            let bytes = encode_storage_value(value);
            assert_ne!(bytes.first(), Some(&0));
            assert_eq!(decode_storage_value(&bytes).ok(), Some(value));
        }
        assert!(decode_storage_value(&[1u8; 33]).is_err());
    }
}
