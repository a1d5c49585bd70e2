//! The mailbox directory as facts, over a storage engine.
//!
//! One record per (mailbox, server); one stored, sticky effective record per
//! mailbox (docs/facts-model.md). Keys sort in Cyrus 3.6 mailboxes.db
//! order, so iteration is LIST order.
//!
//! # Shape
//! - [`Directory`] (directory.rs): the policy. It holds the facts model
//!   (model.rs, pure functions), the key spaces and indexes below, the
//!   stripe locks, replica groups and their primaries, and the hub its
//!   writes publish to. It reaches storage only through [`Engine`].
//! - [`engine`]: the seam. The [`Engine`] trait (read one key, apply a
//!   batch atomically, ordered scans, an epoch), the [`engine::Sequencer`]
//!   every engine numbers its writes with (durability waits, the changes
//!   handed to the streams), and one folder per engine: `engine/sled/`
//!   (the default) and `engine/memory/` (tests).
//! - [`verify`] (the checks at open, `mupdatectl verify`,
//!   `rebuild-indexes`, the clean-stop seal), [`export`] (the JSON-lines
//!   form of the whole directory, `mupdatectl export`/`import`) and
//!   `backup.rs` (its point-in-time online copy, `XEXPORT`).
//!
//! docs/architecture/storage.md follows one write from
//! [`Directory::activate`] to the disk and to the streams.
//!
//! # Layout
//! One ordered key space per engine, several key spaces (see `key.rs`):
//! - `n order_key 0 suffix` -> every record of the name plus which one is
//!   effective and a conflict flag (`model::Mailbox::encode`: hand-written,
//!   LEB128 length-prefixed, about 3 bytes of overhead per record). The
//!   records are keyed per (mailbox, server) *inside* one value: the server
//!   is the location's prefix, so it is not stored twice, and one name is
//!   one key, so a command's read-modify-write touches one value, under one
//!   per-name lock, without cross-key transactions.
//! - `s server 0 order_key 0 suffix` -> the record (an index value of one
//!   record): the index by server, one key per record. `LIST "S!"`,
//!   failover and prefix listing scan it.
//! - `x order_key 0 suffix` -> empty: names with an unresolved conflict.
//! - `g group` -> the group's run-time primary and the configured primary
//!   seen at the last open.
//! - `r identifier 0 handle` -> the rights the effective ACL gives that
//!   identifier: the rights index (`XRIGHTS`). The handle is the name's key
//!   part when it is at most 64 bytes, else 65 bytes (a prefix and a
//!   digest) with `h handle` -> key part beside it, so one identifier
//!   never copies more than 65 bytes of a name (`key::RIGHTS`).
//! - `m rights-layout` -> the rights index's layout version.
//! - `c stripe` -> the integrity summary of one write stripe (count and
//!   digest of its names), changed in the same batch as the name; with the
//!   sled engine's clean-stop seal file they let the store know when it is
//!   damaged ([`verify`]).
//!
//! A command's changes to all key spaces go into one [`engine::Batch`],
//! which the engine applies atomically, also across a crash: the index
//! never disagrees with the values.
//!
//! # Concurrency and durability
//! Writes to one name are serialised by one of [`STRIPES`] std mutexes
//! chosen by a hash of the name, held only around the synchronous
//! read-modify-write (never across an await); there is no global lock.
//! A write returns once it survives a power cut. With sled, a commit
//! thread runs sled's `flush()` and then fsyncs what that leaves undone
//! (sled makes its log "stable" with `sync_file_range`, which saves no
//! metadata and no disk cache, and never fsyncs its blob files or
//! folders): the log file, new blob files, and the folders whose entries
//! changed; one round for everyone who wrote since the last
//! (engine/sled/commit.rs).
//!
//! Reads never show a write a crash could lose. A write takes a sequence
//! number *before* it applies its batch, under its stripe lock, and
//! records it as its stripe's last ([`engine::Sequencer`]); the durable
//! mark covers a number only once every write numbered up to it was
//! applied and made durable. FIND and each UPDATE stream line wait for the
//! last number of the name's stripe (not for unrelated names); LIST and
//! the UPDATE dump wait once, before their completion, for the last number
//! begun (their lines go out as they are read: a line may precede the
//! durability of what it shows by one group commit, the OK never does). A
//! command that changed nothing waits for its stripe's number like a
//! reader: it never acknowledges state that is not durable. Reads
//! (`find`, `effective`, `list`, `list_prefix`) go to the engine directly,
//! one lock-free snapshot per key, and never copy the directory.
//!
//! Writes publish themselves: a write that changes what clients see hands
//! its [`Change`] to the sequencer with its number, under its stripe lock;
//! whoever advances the durable mark (sled's commit thread; the memory
//! engine's writer) hands the changes up to it to the hub, in number
//! order, and only then wakes the writers. A write whose durability failed
//! publishes nothing. No caller publishes.
//!
//! A failing disk (full, I/O errors) fails the writes that were not made
//! durable, with `StoreError::Durability`, which sessions answer with
//! `NO "mupdate directory storage failing, try again later"`; sled 0.34
//! then refuses every write, so the commit thread probes the data folder
//! every second (a 1 MiB file written and fsynced) and, once it can write
//! again, reopens sled, which holds everything acknowledged (the epoch
//! changes: a batch read before it is refused, a scan across it fails).
//! Reads go on meanwhile (except in the moment of the reopen); failing and
//! recovered are logged once each.
//!
//! Disk use with sled, measured by the ignored test `disk_per_mailbox`
//! (20,000 mailboxes, RESERVE + ACTIVATE each, one record per mailbox):
//! the live keys and values are about 100 bytes per mailbox (74 for the
//! value and name key, 28 for the index key), sled's log makes it about
//! 400-550 bytes on disk (varies run to run with segment cleaning).
//! Without the index keys it is about 290: sled's cost is mostly per key,
//! so the next step, if disk matters more, is an index with several
//! records per key.
//!
//! # The facts model
//! The model as this code implements it, and every decision taken where
//! the product's model is silent ("oldest", RESERVE over an existing
//! record, conflicts, successors, FIND from a bound backend, primaries
//! across restarts, ...), is written down in docs/facts-model.md, each
//! with the function in `model.rs` or [`Directory`] that implements it.

mod backup;
pub mod cyrus_dump;
mod directory;
#[cfg(test)]
mod durability_tests;
pub mod engine;
pub mod export;
pub(crate) mod key;
mod model;
#[cfg(test)]
mod publish_tests;
pub mod verify;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use directory::Rights;
pub use engine::sled::SledConfig;
pub use engine::{Engine, EngineError};
pub use model::RecordState;

/// Number of per-name write locks: enough that unrelated names rarely
/// share one at a few thousand concurrent writers, small enough to be
/// negligible memory (1024 * 8 bytes).
pub const STRIPES: usize = 1024;

/// How to open the directory: which engine, and its settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The storage engine.
    pub engine: EngineKind,
}

/// The storage engines ([`engine`]).
#[derive(Debug, Clone)]
pub enum EngineKind {
    /// sled in a data folder (the default).
    Sled(SledConfig),
    /// In memory, durable at once, gone with the process (tests).
    Memory,
}

impl StoreConfig {
    /// The sled engine with these settings.
    pub fn sled(cfg: SledConfig) -> StoreConfig {
        StoreConfig { engine: EngineKind::Sled(cfg) }
    }

    /// The in-memory engine.
    pub fn memory() -> StoreConfig {
        StoreConfig { engine: EngineKind::Memory }
    }
}

/// A configured replica group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaGroup {
    /// The group's name in the configuration.
    pub name: String,
    /// Its servers: their records of a name are copies of one mailbox.
    pub servers: Vec<Vec<u8>>,
    /// The primary whose active records clients see, when set.
    pub primary: Option<Vec<u8>>,
}

/// Who is asserting a fact: the server names a login is bound to, or
/// `None` for a shared admin login (unknown identity).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `None`: an admin login that may speak for any server.
    pub servers: Option<Vec<Vec<u8>>>,
}

/// The answer a write gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Done (`OK "done"` on the wire).
    Done,
    /// Refused (`NO` with the refusal's text, which the session chooses).
    No(Refusal),
}

/// Why the directory refused a write. The session turns each into its
/// wire text (Cyrus's, src/protocol/cyrus.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// RESERVE of a name that another server holds.
    MailboxExists,
    /// No record of the name at all.
    NoSuchMailbox,
    /// The name is held elsewhere, or only reserved, not active here.
    NotActive,
    /// A backend login asserted a fact about a server it is not bound to.
    NotServed,
}

/// A change of a mailbox's effective record, for UPDATE streams (the
/// hub's type: the directory publishes into the hub, below it).
pub use crate::replication::hub::Change;

/// Result of a write, returned only once it is durable. What it changed
/// for clients has gone to the streams by then, from the directory itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The answer.
    pub reply: Reply,
}

/// One record of a mailbox, for admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView {
    /// The record's server (its location before the first `!`).
    pub server: Vec<u8>,
    /// Where the server keeps it (`server!partition`), as last asserted.
    pub location: Vec<u8>,
    /// Reserved, active or moving.
    pub state: RecordState,
    /// The ACL last asserted (`id TAB rights TAB` pairs).
    pub acl: Vec<u8>,
    /// This is the record unmodified clients see.
    pub effective: bool,
    /// How it stands next to the effective record.
    pub role: RecordRole,
}

/// How a record stands next to its name's effective record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordRole {
    /// The record unmodified clients see.
    Effective,
    /// A replica's copy: same replica group as the effective record (or a
    /// copy kept hidden because its group's effective record was deleted).
    Shadow,
    /// Active on a server outside the effective record's group: the same
    /// mailbox created twice.
    Conflict,
    /// Reserved or moving on a server outside the effective record's group.
    Other,
}

impl RecordRole {
    /// The word admins see (`XRECORDS`, `mupdatectl records`).
    pub fn word(self) -> &'static str {
        match self {
            RecordRole::Effective => "effective",
            RecordRole::Shadow => "shadow",
            RecordRole::Conflict => "conflict",
            RecordRole::Other => "other",
        }
    }
}

/// A mailbox that two unrelated servers both hold active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The mailbox.
    pub name: Vec<u8>,
    /// Server of the effective record (the first fact).
    pub effective: Vec<u8>,
    /// Servers outside its group that also hold an active record.
    pub others: Vec<Vec<u8>>,
}

/// What went wrong in the directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed ([`EngineError`]; its durability and
    /// unavailability become [`StoreError::Durability`] and
    /// [`StoreError::Unavailable`]).
    #[error("{0}")]
    Engine(EngineError),
    /// A stored value does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The fsync after a write failed: the write may not survive a crash.
    #[error("durability: {0}")]
    Durability(String),
    /// The database is being reopened after a storage failure.
    #[error("storage unavailable: reopening after a storage failure")]
    Unavailable,
    /// An admin request named something that does not exist (a group, a
    /// server outside the group).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The directory is damaged (found at open or by a read): it is not
    /// served, or writes are refused. Says what is wrong and what to do.
    #[error("the directory is damaged: {0}")]
    Damaged(String),
}

impl StoreError {
    /// The disk failed (full, I/O error) or the store is reopening after
    /// that: not a bug, and writes resume by themselves when it recovers.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, StoreError::Durability(_) | StoreError::Unavailable | StoreError::Engine(EngineError::Io(_)))
    }
}

impl From<EngineError> for StoreError {
    fn from(e: EngineError) -> StoreError {
        match e {
            EngineError::Durability(m) => StoreError::Durability(m),
            EngineError::Unavailable => StoreError::Unavailable,
            e => StoreError::Engine(e),
        }
    }
}

/// The directory: the facts model and the indexes over a storage engine;
/// its writes publish their changes to its hub. Cheap to clone; every
/// method may be called concurrently.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<directory::Inner>,
}
