//! The mailbox directory as facts, over sled (stub: to be implemented).
//!
//! One record per (mailbox, server); one stored, sticky effective record per
//! mailbox (see docs/facts-model.md). Keys sort in Cyrus 3.6 mailboxes.db
//! order, so iteration is LIST order.

use std::path::PathBuf;

use crate::protocol::Entry;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Folder of the sled database.
    pub path: PathBuf,
    /// sled page cache, bytes.
    pub cache_capacity: u64,
}

/// A configured replica group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaGroup {
    pub name: String,
    pub servers: Vec<Vec<u8>>,
    pub primary: Option<Vec<u8>>,
}

/// Who is asserting a fact: the server names a login is bound to, or
/// `None` for a shared admin login (unknown identity).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub servers: Option<Vec<Vec<u8>>>,
}

/// The answer a write gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// `OK "done"`
    Done,
    /// `NO "<text>"`
    No(&'static str),
}

/// A change of a mailbox's effective record, for UPDATE streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: Vec<u8>,
    /// Servers of the effective record before and after (a PARTIAL-UPDATE
    /// stream hears the change when it follows either).
    pub servers: Vec<Vec<u8>>,
}

/// Result of a write, returned only once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    pub reply: Reply,
    pub changes: Vec<Change>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// The directory. Cheap to clone; every method may be called concurrently.
#[derive(Clone)]
pub struct Store {}

impl Store {
    pub fn open(_cfg: &StoreConfig, _groups: &[ReplicaGroup]) -> Result<Store, StoreError> {
        todo!()
    }
    pub async fn reserve(&self, _who: &Identity, _name: &[u8], _location: &[u8]) -> Result<WriteOutcome, StoreError> {
        todo!()
    }
    pub async fn activate(&self, _who: &Identity, _name: &[u8], _location: &[u8], _acl: &[u8]) -> Result<WriteOutcome, StoreError> {
        todo!()
    }
    pub async fn deactivate(&self, _who: &Identity, _name: &[u8], _location: &[u8]) -> Result<WriteOutcome, StoreError> {
        todo!()
    }
    pub async fn delete(&self, _who: &Identity, _name: &[u8]) -> Result<WriteOutcome, StoreError> {
        todo!()
    }
    /// FIND: at most one entry (the effective record, or none for a
    /// backend's own replica sibling; facts model).
    pub fn find(&self, _who: &Identity, _name: &[u8]) -> Result<Option<Entry>, StoreError> {
        todo!()
    }
    /// The effective record now (UPDATE stream flushes).
    pub fn effective(&self, _name: &[u8]) -> Result<Option<Entry>, StoreError> {
        todo!()
    }
    /// LIST / UPDATE dump: the effective record of every name, in order,
    /// read straight from the store without a global lock.
    pub fn list(&self) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send> {
        todo!()
    }
    /// `LIST "prefix"`: every record whose location starts with `prefix`,
    /// in order; costs what its answer costs.
    pub fn list_prefix(&self, _prefix: &[u8]) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send> {
        todo!()
    }
}
