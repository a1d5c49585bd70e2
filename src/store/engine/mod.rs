//! The storage seam: what the directory ([`super::Directory`]) needs from
//! a storage engine, in engine terms (keys and values, batches, sequence
//! numbers), nothing of mailboxes.
//!
//! An engine is an ordered map of byte strings that can
//! - read one key ([`Engine::get`], [`Engine::read`]);
//! - apply a [`Batch`] atomically, also across a crash, numbering it with a
//!   sequence number from its [`Sequencer`] before it becomes visible
//!   ([`Engine::apply`]);
//! - scan keys in order ([`Engine::scan_prefix`], [`Engine::scan_from`]);
//! - tell when a sequence number is durable ([`Sequencer::durable`]);
//! - tell, with its epoch ([`Engine::epoch`]), that it was reopened (a scan
//!   that spans a reopen may have shown writes that were lost).
//!
//! Two engines live beside this file: [`sled`] (the default: a sled tree,
//! group commit with fsync, recovery from a failing disk) and [`memory`]
//! (a `BTreeMap` under a lock, durable at once: unit tests and fuzzing of
//! whole sessions). docs/architecture/storage.md says how to add one and
//! what it must guarantee.
//!
//! # Guards
//! A [`Batch`] may carry a [`Guard`]: the key the writer read, the value it
//! read there and the epoch it read it in. An engine shared between
//! processes (etcd: a transaction compared on the key's revision) must
//! refuse the batch with [`EngineError::Conflict`] when the key no longer
//! holds that value; the [`memory`] engine checks it. In one process the
//! directory's stripe lock already serialises every writer of a name, so
//! the [`sled`] engine gets the check for free and compares only the
//! epoch (a batch read from a database that was reopened since is refused
//! with [`EngineError::Unavailable`]).

pub mod memory;
pub mod sled;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;

use tokio::sync::watch;

use super::Change;
use crate::replication::Hub;

/// An immutable byte string as engines hand it out: sled's `IVec`
/// underneath (inline up to 22 bytes, else reference-counted), so that the
/// sled engine returns its values without a copy and a clone is cheap.
#[derive(Clone, Default)]
pub struct Bytes(::sled::IVec);

// Compared and hashed as the byte string, so that a map keyed by `Bytes`
// can be looked up with a `&[u8]`.
impl PartialEq for Bytes {
    fn eq(&self, o: &Bytes) -> bool {
        self[..] == o[..]
    }
}

impl Eq for Bytes {}

impl PartialOrd for Bytes {
    fn partial_cmp(&self, o: &Bytes) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Bytes {
    fn cmp(&self, o: &Bytes) -> std::cmp::Ordering {
        self[..].cmp(&o[..])
    }
}

impl std::hash::Hash for Bytes {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self[..].hash(h)
    }
}

impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v.into())
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(v.into())
    }
}

impl<const N: usize> From<[u8; N]> for Bytes {
    fn from(v: [u8; N]) -> Bytes {
        Bytes(v[..].into())
    }
}

impl<const N: usize> From<&[u8; N]> for Bytes {
    fn from(v: &[u8; N]) -> Bytes {
        Bytes(v[..].into())
    }
}

/// An ordered scan: keys and values, in key order.
pub type Scan = Box<dyn Iterator<Item = Result<(Bytes, Bytes), EngineError>> + Send>;

/// A failure, in engine terms.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// Reading or writing the storage failed (a full disk, an I/O error):
    /// not a bug; an engine that can recovers by itself.
    #[error("storage failing: {0}")]
    Io(String),
    /// The engine found damage in what it stores.
    #[error("storage damaged: {0}")]
    Corrupt(String),
    /// A write may not survive a crash (its flush or fsync failed).
    #[error("durability: {0}")]
    Durability(String),
    /// The engine is being reopened after a storage failure, or a batch was
    /// read from the database before a reopen.
    #[error("storage unavailable: reopening after a storage failure")]
    Unavailable,
    /// A batch's [`Guard`] no longer holds: another writer changed the key.
    #[error("the key changed since it was read")]
    Conflict,
    /// Anything else the engine reports.
    #[error("storage: {0}")]
    Other(String),
}

/// What a batch's writer read, for the engine to check ([module docs](self)).
#[derive(Debug, Clone)]
pub struct Guard {
    /// The key read.
    pub key: Bytes,
    /// Its value then (`None`: absent).
    pub value: Option<Bytes>,
    /// [`Engine::epoch`] when it was read.
    pub epoch: u64,
}

/// Writes applied together, atomically; later operations on a key win.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    ops: Vec<(Bytes, Option<Bytes>)>,
    guard: Option<Guard>,
}

impl Batch {
    /// Set `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: impl Into<Bytes>) {
        self.ops.push((key.into(), None));
    }

    /// Apply only if the guard still holds.
    pub fn guard(&mut self, guard: Guard) {
        self.guard = Some(guard);
    }

    /// Operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// No operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order (`None`: remove), and the guard.
    pub fn into_parts(self) -> (Vec<(Bytes, Option<Bytes>)>, Option<Guard>) {
        (self.ops, self.guard)
    }
}

/// One key read together with what a reader must wait for before it shows
/// the value: the last sequence number begun on the key's stripe, taken
/// atomically with the read against a reopen.
#[derive(Debug, Clone)]
pub struct Read {
    /// The value (`None`: absent).
    pub value: Option<Bytes>,
    /// Wait for this number to be durable before answering with it.
    pub seq: u64,
    /// [`Engine::epoch`] the value was read in (for a [`Guard`]).
    pub epoch: u64,
}

/// A storage engine (see the [module docs](self)). Every method may be
/// called concurrently; none blocks on durability (that is
/// [`Sequencer::durable`], async).
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs ("sled", "memory").
    fn name(&self) -> &'static str;

    /// The numbering of writes and the durable mark.
    fn sequencer(&self) -> &Arc<Sequencer>;

    /// Read one key.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, EngineError>;

    /// Read one key and the number a reader of it waits for (the last
    /// begun on `stripe`), atomically with respect to a reopen.
    fn read(&self, key: &[u8], stripe: usize) -> Result<Read, EngineError>;

    /// Apply `batch` atomically, numbered on `stripe` (the caller holds the
    /// directory's lock of that stripe): the number is taken with
    /// [`Sequencer::begin`] before the batch is visible to readers, with
    /// `note`, and ended ([`Sequencer::end`], or [`Sequencer::abandon`] when
    /// the batch failed) once it was applied. Returns the number.
    fn apply(&self, stripe: usize, batch: Batch, note: Option<Change>) -> Result<u64, EngineError>;

    /// Apply `batch` atomically outside the stripes (a group's state):
    /// durable once a number taken after it ([`Sequencer::fresh`]) is.
    fn apply_unnumbered(&self, batch: Batch) -> Result<(), EngineError>;

    /// Every key starting with `prefix`, in order.
    fn scan_prefix(&self, prefix: &[u8]) -> Scan;

    /// Every key from `start` on, in order.
    fn scan_from(&self, start: &[u8]) -> Scan;

    /// Changes when the engine is reopened (a scan compares it before and
    /// after).
    fn epoch(&self) -> u64;

    /// Make everything applied so far durable now (at open, at a clean
    /// stop).
    fn sync_now(&self) -> Result<(), EngineError>;

    /// The engine's estimate of its size on disk, bytes.
    fn size_on_disk(&self) -> Result<u64, EngineError>;

    /// The directory is closing: `clean` when no damage was seen (the sled
    /// engine then writes its clean-stop seal).
    fn close(&self, clean: bool) {
        let _ = clean;
    }

    /// Start what the engine checks in the background after open; damage it
    /// finds is set in `damaged` (writes are refused from then on).
    fn check_in_background(&self, damaged: Arc<OnceLock<String>>) -> Result<(), EngineError> {
        let _ = damaged;
        Ok(())
    }
}

/// What the durable mark says.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every write numbered up to this is durable, except those in
    /// `failed`.
    seq: u64,
    /// The last failure.
    error: Option<Arc<str>>,
    /// Ranges of numbers whose writes may be lost (one per failure; the
    /// last one grows while the engine is failing).
    failed: Vec<(u64, u64)>,
}

impl Durable {
    fn failed(&self, seq: u64) -> bool {
        self.failed.iter().any(|&(a, b)| a <= seq && seq <= b)
    }
}

/// How numbers become durable.
enum Mode {
    /// A commit thread of the engine advances the mark; it is woken
    /// (unparked) when there is something to do.
    Thread(OnceLock<Thread>),
    /// Durable once applied (the memory engine): whoever ends a number
    /// advances the mark. `fail` (tests) makes the next advances fail.
    Immediate { commit: Mutex<u64>, fail: AtomicBool },
}

/// The numbering of writes and the durable mark, the same for every engine:
/// a writer takes a number before its batch is visible ([`Sequencer::begin`])
/// and ends it once applied; the mark advances to the highest number below
/// which every begun write has ended and been made durable. Each number
/// may carry a note, the [`Change`] its write makes to what clients see:
/// when the mark advances, the notes up to it go to the hub's streams in
/// number order, before any waiter is woken; the notes of numbers that
/// failed are dropped. A reader that saw a name waits for the last number
/// of the name's stripe.
pub struct Sequencer {
    /// The next number to hand out, and the numbers begun but not ended.
    seqs: Mutex<(u64, BTreeSet<u64>)>,
    /// The last number begun on each stripe.
    stripes: Box<[AtomicU64]>,
    /// Changes waiting for the durability of their numbers.
    notes: Mutex<BTreeMap<u64, Change>>,
    hub: Mutex<Option<Arc<Hub>>>,
    tx: watch::Sender<Durable>,
    rx: watch::Receiver<Durable>,
    mode: Mode,
    /// Tests: while set, the mark does not advance.
    hold: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sequencer {
    fn new(stripes: usize, mode: Mode) -> Sequencer {
        let (tx, rx) = watch::channel(Durable::default());
        Sequencer {
            seqs: Mutex::new((1, BTreeSet::new())),
            stripes: (0..stripes).map(|_| AtomicU64::new(0)).collect(),
            notes: Mutex::new(BTreeMap::new()),
            hub: Mutex::new(None),
            tx,
            rx,
            mode,
            hold: AtomicBool::new(false),
        }
    }

    /// For an engine whose commit thread advances the mark
    /// ([`Sequencer::set_thread`], [`Sequencer::advance`]).
    pub fn threaded(stripes: usize) -> Sequencer {
        Self::new(stripes, Mode::Thread(OnceLock::new()))
    }

    /// For an engine whose writes are durable once applied.
    pub fn immediate(stripes: usize) -> Sequencer {
        Self::new(stripes, Mode::Immediate { commit: Mutex::new(0), fail: AtomicBool::new(false) })
    }

    /// The commit thread to wake when a number ends or is waited for.
    pub fn set_thread(&self, t: Thread) {
        if let Mode::Thread(slot) = &self.mode {
            let _ = slot.set(t);
        }
    }

    /// Where durable changes go (the hub of the directory open on this
    /// engine), set before its first write; notes before it go nowhere.
    pub fn set_hub(&self, hub: Arc<Hub>) {
        *lock(&self.hub) = Some(hub);
    }

    fn wake(&self) {
        match &self.mode {
            Mode::Thread(t) => {
                if let Some(t) = t.get() {
                    t.unpark();
                }
            }
            Mode::Immediate { .. } => self.commit_now(),
        }
    }

    /// The immediate mode's commit: advance (or fail) up to what is
    /// covered.
    fn commit_now(&self) {
        let Mode::Immediate { commit, fail } = &self.mode else { return };
        let mut done = lock(commit);
        if self.hold.load(Ordering::Acquire) {
            return;
        }
        let target = self.covered();
        if target <= *done {
            return;
        }
        if fail.load(Ordering::Acquire) {
            self.fail(*done + 1, target, "injected durability failure");
        } else {
            self.advance(target);
        }
        *done = target;
    }

    /// Tests of the immediate mode: while `on`, every write's durability
    /// fails (its data stays applied, as a failed flush leaves it).
    pub fn inject_failure(&self, on: bool) {
        if let Mode::Immediate { fail, .. } = &self.mode {
            fail.store(on, Ordering::Release);
        }
    }

    /// Number a write that is about to be applied, on `stripe` (whose lock
    /// the caller holds), with the change it makes.
    pub fn begin(&self, stripe: usize, note: Option<Change>) -> u64 {
        let seq = {
            let mut g = lock(&self.seqs);
            let seq = g.0;
            g.0 += 1;
            g.1.insert(seq);
            seq
        };
        if let Some(c) = note {
            lock(&self.notes).insert(seq, c);
        }
        self.stripes[stripe].store(seq, Ordering::Release);
        seq
    }

    /// Write `seq` was applied: the mark may cover it now.
    pub fn end(&self, seq: u64) {
        lock(&self.seqs).1.remove(&seq);
        self.wake();
    }

    /// Write `seq` failed before it was applied: its note is dropped, then
    /// it ends.
    pub fn abandon(&self, seq: u64) {
        lock(&self.notes).remove(&seq);
        self.end(seq);
    }

    /// The last write begun on `stripe`.
    pub fn stripe_seq(&self, stripe: usize) -> u64 {
        self.stripes[stripe].load(Ordering::Acquire)
    }

    /// Forget the stripes' numbers (after a reopen they speak of the old
    /// database: a reader of the new one has nothing to wait for).
    pub fn reset_stripes(&self) {
        for s in self.stripes.iter() {
            s.store(0, Ordering::Release);
        }
    }

    /// A number after every write applied so far (for a write made outside
    /// the stripes, e.g. a group's primary).
    pub fn fresh(&self) -> u64 {
        let seq = {
            let mut g = lock(&self.seqs);
            g.0 += 1;
            g.0 - 1
        };
        self.wake();
        seq
    }

    /// The number of the latest write begun (LIST and the UPDATE dump wait
    /// for it at their end: they may have seen any of them).
    pub fn latest(&self) -> u64 {
        lock(&self.seqs).0 - 1
    }

    /// The highest number below which every begun write has ended.
    pub fn covered(&self) -> u64 {
        let g = lock(&self.seqs);
        match g.1.first() {
            Some(&oldest) => oldest - 1,
            None => g.0 - 1,
        }
    }

    /// The mark now.
    pub fn durable_now(&self) -> u64 {
        self.rx.borrow().seq
    }

    /// Every write up to `upto` is durable: its changes go to the streams,
    /// in number order, then the waiters are woken.
    pub fn advance(&self, upto: u64) {
        let ready = {
            let mut notes = lock(&self.notes);
            let rest = notes.split_off(&(upto + 1));
            std::mem::replace(&mut *notes, rest)
        };
        if !ready.is_empty() {
            let hub = lock(&self.hub).clone();
            if let Some(hub) = hub {
                let changes: Vec<Change> = ready.into_values().collect();
                hub.publish(&changes);
            }
        }
        self.tx.send_modify(|d| {
            d.seq = d.seq.max(upto);
            d.error = None;
        });
    }

    /// Writes `from..=to` may be lost: they fail, their changes are never
    /// published.
    pub fn fail(&self, from: u64, to: u64, error: &str) {
        self.drop_notes(to);
        self.tx.send_modify(|d| {
            d.error = Some(error.into());
            d.failed.push((from, to));
        });
    }

    /// The current failure grows up to `upto` (everything numbered while
    /// the engine is failing fails too).
    pub fn grow_failed(&self, upto: u64) {
        self.drop_notes(upto);
        self.tx.send_modify(|d| {
            if let Some(last) = d.failed.last_mut() {
                last.1 = last.1.max(upto);
            }
        });
    }

    fn drop_notes(&self, upto: u64) {
        let mut notes = lock(&self.notes);
        let rest = notes.split_off(&(upto + 1));
        *notes = rest;
    }

    /// Wait until write `seq` is durable.
    pub async fn durable(&self, seq: u64) -> Result<(), EngineError> {
        {
            let d = self.rx.borrow();
            if seq == 0 || (d.seq >= seq && !d.failed(seq)) {
                return Ok(());
            }
            if d.failed(seq) {
                return Err(EngineError::Durability(d.error.as_deref().unwrap_or("flush failed").to_string()));
            }
        }
        self.wake();
        let mut rx = self.rx.clone();
        let d = rx
            .wait_for(|d| d.seq >= seq || d.failed(seq))
            .await
            .map_err(|_| EngineError::Durability("commit thread stopped".into()))?;
        if d.failed(seq) {
            Err(EngineError::Durability(d.error.as_deref().unwrap_or("flush failed").to_string()))
        } else {
            Ok(())
        }
    }

    /// Tests: stop (or resume) advancing the mark.
    pub fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::Release);
        self.wake();
    }

    /// Is the mark held ([`Sequencer::hold`])?
    pub fn held(&self) -> bool {
        self.hold.load(Ordering::Acquire)
    }
}
