//! Verity's storage: one MDBX environment (the engine of reth's storage, through the `libmdbx`
//! crate) holding the plain world state, bytecode, the ordered chain stream, blocks,
//! transactions and receipts.
//!
//! - [`Database`] is a cheap, cloneable handle (`Arc` inside) shared by every thread.
//! - [`Database::read`] gives a [`ReadTx`]: a consistent MVCC snapshot that never blocks the
//!   writer and that implements [`StateView`](verity_primitives::StateView), so the executor
//!   runs directly over it.
//! - [`Database::write`] gives the one [`WriteTx`] at a time; a second caller blocks until the
//!   first commits or drops. [`WriteTx::commit`] returns once the commit is durable (MDBX's
//!   durable sync mode); dropping an uncommitted transaction aborts it.
//!
//! The table set and the byte layout of keys and values are in [`tables`]. All calls block;
//! async callers go through `spawn_blocking`.

use std::{path::Path, sync::Arc};

use libmdbx::{DatabaseOptions, Mode, NoWriteMap, ReadWriteOptions, SyncMode, TableFlags};

pub mod tables;
mod tx;

pub use tx::{ReadTx, StateAt, StateDigest, WriteTx};

/// Default upper bound of the database file: 1 TiB of address space is reserved, the file grows
/// into it.
pub const MAX_SIZE: u64 = 1 << 40;
/// The smallest upper bound [`Database::open_with_max_size`] takes.
pub const MIN_MAX_SIZE: u64 = 4 << 20;
/// Step by which the file grows.
const GROWTH_STEP: isize = 64 << 20;
/// Named tables the environment can hold (the set in [`tables::ALL`] plus room to grow).
const MAX_TABLES: u64 = 32;

/// Where a search of an address's transactions starts ([`ReadTx::address_transactions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSearch {
    /// Blocks below this one, newest first.
    Before(u64),
    /// Blocks above this one, oldest first.
    After(u64),
}

/// One entry of the address index: a transaction, where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressEntry {
    /// Its block.
    pub block: u64,
    /// Its index in the block.
    pub index: u32,
    /// Its hash.
    pub hash: alloy_primitives::B256,
}

/// One entry of the state-tree journal ([`tables::TREE_JOURNAL`]): a key's leaf before and
/// after the chunk ending at `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeChange {
    /// The version the chunk ends at.
    pub version: u64,
    /// The tree key.
    pub key: alloy_primitives::B256,
    /// The leaf before the chunk (`None`: no leaf).
    pub before: Option<alloy_primitives::B256>,
    /// The leaf after it.
    pub after: Option<alloy_primitives::B256>,
}

/// Simultaneous read transactions (reader slots); one per concurrent request is needed.
const MAX_READERS: u32 = 4096;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// MDBX reported an error (I/O, full map, corruption, ...).
    #[error("mdbx: {0}")]
    Mdbx(#[from] libmdbx::Error),
    /// Creating the database directory failed.
    #[error("cannot create the database directory: {0}")]
    Io(#[from] std::io::Error),
    /// A stored key or value does not decode: the database is corrupt or from another version.
    #[error("cannot decode a value of table {table}: {reason}")]
    Decode {
        /// The table holding the value.
        table: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A chain event was not the next one of the stream.
    #[error("chain event {got} is out of order: event {expected} is next")]
    OutOfOrder {
        /// The sequence that would have been accepted.
        expected: u64,
        /// The sequence offered.
        got: u64,
    },
}

impl StorageError {
    /// Whether the database cannot grow: its size ceiling is reached (`MDBX_MAP_FULL`) or the
    /// disk is full (`ENOSPC`). Nothing of the failed write transaction was written; more room
    /// (a larger ceiling, a larger volume) lets the same write succeed.
    pub fn is_full(&self) -> bool {
        const ENOSPC: i32 = 28;
        match self {
            Self::Mdbx(libmdbx::Error::MapFull | libmdbx::Error::UnableExtendMapsize) => true,
            Self::Mdbx(libmdbx::Error::Other(code)) => *code == ENOSPC,
            Self::Mdbx(libmdbx::Error::IoError(e)) | Self::Io(e) => {
                e.raw_os_error() == Some(ENOSPC)
            }
            _ => false,
        }
    }

    pub(crate) fn decode(table: &'static str, reason: impl ToString) -> Self {
        Self::Decode {
            table,
            reason: reason.to_string(),
        }
    }
}

/// A handle to the database; clones share one MDBX environment.
#[derive(Debug, Clone)]
pub struct Database {
    env: Arc<libmdbx::Database<NoWriteMap>>,
}

impl Database {
    /// Opens (creating if needed) the database in directory `path`, with every table of
    /// [`tables::ALL`]. Commits are durable (fsync on commit); the file grows on demand up to
    /// 1 TiB.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::open_with_max_size(path, MAX_SIZE)
    }

    /// [`Database::open`] with the file growing up to `max_size` bytes (at least
    /// [`MIN_MAX_SIZE`]); a write that needs more fails with an error that
    /// [`StorageError::is_full`] recognises. A database opened again with a larger bound can
    /// grow into it.
    pub fn open_with_max_size(path: &Path, max_size: u64) -> Result<Self, StorageError> {
        Self::open_with(path, max_size, SyncMode::Durable)
    }

    /// [`Database::open`] for state derived from a log its owner replays from its own stored
    /// position (a replica following the chain stream): a commit reaches the OS at once and the
    /// disk at the next [`Database::sync`] (MDBX's `SafeNoSync`). A process that dies loses
    /// nothing (the OS holds the pages); a machine that dies takes the database back to its last
    /// synced commit, consistent, and the owner replays from there. Saves an fsync per commit.
    pub fn open_replayable(path: &Path) -> Result<Self, StorageError> {
        Self::open_with(path, MAX_SIZE, SyncMode::SafeNoSync)
    }

    /// Flushes every commit so far to the disk (a no-op for a durable database's commits).
    pub fn sync(&self) -> Result<(), StorageError> {
        self.env.sync(true)?;
        Ok(())
    }

    fn open_with(path: &Path, max_size: u64, sync_mode: SyncMode) -> Result<Self, StorageError> {
        let max_size = max_size.max(MIN_MAX_SIZE);
        std::fs::create_dir_all(path)?;
        let options = DatabaseOptions {
            max_tables: Some(MAX_TABLES),
            max_readers: Some(MAX_READERS),
            mode: Mode::ReadWrite(ReadWriteOptions {
                sync_mode,
                min_size: None,
                max_size: Some(isize::try_from(max_size).unwrap_or(isize::MAX)),
                growth_step: Some(
                    GROWTH_STEP.min(isize::try_from(max_size / 8).unwrap_or(GROWTH_STEP)),
                ),
                shrink_threshold: None,
            }),
            ..DatabaseOptions::default()
        };
        let env = libmdbx::Database::<NoWriteMap>::open_with_options(path, options)?;
        let txn = env.begin_rw_txn()?;
        for name in tables::ALL {
            txn.create_table(Some(name), TableFlags::empty())?;
        }
        txn.commit()?;
        tracing::debug!(path = %path.display(), "database open");
        Ok(Self { env: Arc::new(env) })
    }

    /// Starts a read transaction: a consistent snapshot of the last commit, which writes do not
    /// affect. Keep it short-lived: a long-lived reader keeps old pages from being reused.
    pub fn read(&self) -> Result<ReadTx<'_>, StorageError> {
        Ok(ReadTx::new(self.env.begin_ro_txn()?))
    }

    /// Starts the write transaction, blocking while another one is open. It sees its own
    /// writes; nothing is visible to readers until [`WriteTx::commit`].
    pub fn write(&self) -> Result<WriteTx<'_>, StorageError> {
        Ok(WriteTx::new(self.env.begin_rw_txn()?))
    }
}

#[cfg(test)]
mod tests;
