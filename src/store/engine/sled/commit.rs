//! Group commit: one fsync for every write that arrived while the previous
//! one ran; and recovery from a failing disk.
//!
//! A writer, holding its name's stripe lock, takes a sequence number with
//! [`Sequencer::begin`] *before* it applies its batch to sled (in memory,
//! fast), records it as the stripe's last number, applies, and calls
//! [`Sequencer::end`]; then it awaits [`Sequencer::durable`]. A dedicated
//! thread loops: take the highest number below which every begun write
//! has ended, `flush()` sled, fsync what sled's flush does not (see
//! [`Syncer`]), and advance the sequencer's mark to that number (which
//! hands the changes up to it to the streams, then wakes the waiters). A reader that
//! saw a name's value waits for its stripe's last number, so no answer
//! shows a write a crash could lose; writers that pile up behind a running
//! fsync share the next one. The fsync never runs on a tokio worker
//! thread, and no lock is held while anyone waits (the small mutex of
//! begun numbers is held for an insert or a remove).
//!
//! When a flush or fsync fails (a full disk, an I/O error), the numbers up
//! to it fail, the store is *failing* (logged once), and every write after
//! it fails at once (sled 0.34 keeps the error and refuses all writes). The
//! thread then probes the data folder every second; once a probe file can
//! be written and fsynced, it reopens sled (what was acknowledged was
//! fsynced, so it is there) and logs the recovery once.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::super::{EngineError, Sequencer};

/// How often a failing store checks whether it can write again.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Size of the probe file: more than one sled segment (512 KiB by
/// default), so a probe that succeeds leaves room for the next log write.
const PROBE_BYTES: usize = 1 << 20;
/// How long a reopen waits for the last handles on the old database
/// (iterators of reads in progress) to go.
const REOPEN_TRIES: u32 = 50;

/// The open database; replaced when the store recovers from a failing
/// disk. `None` only while a reopen runs.
pub(crate) struct DbCell {
    db: RwLock<Option<sled::Db>>,
    /// How many times it was reopened.
    epoch: AtomicU64,
    config: sled::Config,
    dir: PathBuf,
}

impl DbCell {
    pub fn open(config: sled::Config, dir: &Path) -> Result<DbCell, EngineError> {
        let db = config.open().map_err(engine_error)?;
        Ok(DbCell { db: RwLock::new(Some(db)), epoch: AtomicU64::new(0), config, dir: dir.to_path_buf() })
    }

    /// The database now (a cheap handle).
    pub fn get(&self) -> Result<sled::Db, EngineError> {
        self.db.read().unwrap_or_else(|e| e.into_inner()).clone().ok_or(EngineError::Unavailable)
    }

    /// Hold the database while `f` reads or writes it: a reopen waits, so
    /// that a write lands in, and a reader's stripe number belongs to, the
    /// database it used.
    pub fn with<R>(&self, f: impl FnOnce(&sled::Db) -> Result<R, EngineError>) -> Result<R, EngineError> {
        let g = self.db.read().unwrap_or_else(|e| e.into_inner());
        f(g.as_ref().ok_or(EngineError::Unavailable)?)
    }

    /// Changes when the database is reopened.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Flush sled and fsync everything it wrote (used at open).
    pub fn sync_now(&self) -> Result<(), EngineError> {
        self.get()?.flush().map_err(engine_error)?;
        Syncer::open(&self.dir).map_err(io_error)?;
        Ok(())
    }
}

/// sled's errors in engine terms.
pub(crate) fn engine_error(e: sled::Error) -> EngineError {
    match e {
        sled::Error::Io(e) => EngineError::Io(e.to_string()),
        e @ sled::Error::Corruption { .. } => EngineError::Corrupt(e.to_string()),
        e => EngineError::Other(e.to_string()),
    }
}

fn io_error(e: std::io::Error) -> EngineError {
    EngineError::Durability(e.to_string())
}

/// What sled's `flush()` leaves undone on Linux: it makes its log
/// "stable" with `sync_file_range`, which saves no metadata (a file that
/// grew) and flushes no disk cache, and it never fsyncs blob files
/// (`blobs/`) or the folders it creates files in. This fsyncs the log
/// file through a handle of its own, every blob file not yet fsynced, and
/// the folders whose entries changed.
struct Syncer {
    dir: PathBuf,
    db: File,
    dir_names: HashSet<OsString>,
    /// Blob files and their sizes when last fsynced.
    blobs: HashMap<OsString, u64>,
}

fn names(dir: &Path) -> std::io::Result<HashSet<OsString>> {
    std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect()
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Syncer {
    /// Fsync everything once (what sled wrote or recovered at open).
    fn open(dir: &Path) -> std::io::Result<Syncer> {
        let db = File::open(dir.join("db"))?;
        let blobs = dir.join("blobs");
        let mut blob_sizes = HashMap::new();
        for e in std::fs::read_dir(&blobs)? {
            let e = e?;
            sync_file(&e.path())?;
            if let Ok(m) = e.metadata() {
                blob_sizes.insert(e.file_name(), m.len());
            }
        }
        fsync_dir(&blobs)?;
        db.sync_all()?;
        let dir_names = names(dir)?;
        fsync_dir(dir)?;
        // The data folder itself, when sled has just created it.
        match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => fsync_dir(Path::new("."))?,
            Some(p) => fsync_dir(p)?,
            None => {}
        }
        Ok(Syncer { dir: dir.to_path_buf(), db, dir_names, blobs: blob_sizes })
    }

    fn sync(&mut self) -> std::io::Result<()> {
        // Blobs first: the log written by this flush may point to them
        // (a new file's own folder entry goes with its fsync on ext4). sled
        // writes a blob in several writes, so one seen half-written is
        // fsynced again once its size has changed.
        let blobs = self.dir.join("blobs");
        let mut now = HashMap::new();
        for e in std::fs::read_dir(&blobs)? {
            let e = e?;
            let len = match e.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let name = e.file_name();
            if self.blobs.get(&name) != Some(&len) {
                sync_file(&blobs.join(&name))?;
            }
            now.insert(name, len);
        }
        self.db.sync_all()?;
        // Then the folder, which also makes sled's blob removals durable:
        // after the log that replaced them.
        if now.len() != self.blobs.len() || now.keys().any(|k| !self.blobs.contains_key(k)) {
            fsync_dir(&blobs)?;
        }
        self.blobs = now;
        // Snapshots sled wrote (it fsyncs their data, not their renames).
        let now = names(&self.dir)?;
        if now != self.dir_names {
            fsync_dir(&self.dir)?;
            self.dir_names = now;
        }
        Ok(())
    }
}

/// Fsync one file; one that is gone already (sled removed it) needs none.
fn sync_file(path: &Path) -> std::io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The commit thread: it advances the sequencer's durable mark after each
/// flush and fsync; dropping this stops and joins it.
pub(crate) struct Committer {
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub fn start(cell: Arc<DbCell>, seq: &Arc<Sequencer>) -> Result<Committer, EngineError> {
        let syncer = Syncer::open(&cell.dir).map_err(io_error)?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let (s, stop) = (seq.clone(), shutdown.clone());
        let thread = std::thread::Builder::new()
            .name("mupdated-commit".into())
            .spawn(move || run(cell, syncer, s, stop))
            .map_err(io_error)?;
        seq.set_thread(thread.thread().clone());
        Ok(Committer { shutdown, thread: Some(thread) })
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            // The thread owns a handle on the database: wait for it so that
            // the database is closed (and reopenable) once the store is gone.
            let _ = t.join();
        }
    }
}

fn flush(cell: &DbCell, syncer: &mut Syncer) -> Result<(), String> {
    let db = cell.get().map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    syncer.sync().map_err(|e| e.to_string())
}

/// Can the data folder take a write again? Write and fsync a probe file.
fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("space-probe");
    let r = File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    r
}

/// Close the failed database and open it again. Returns the new syncer
/// and the last number begun on the old database: every write up to it
/// that was not durable is lost.
fn reopen(cell: &DbCell, seq: &Sequencer) -> Result<(Syncer, u64), String> {
    let last_old = {
        // No write is between begin and end while this is held.
        let mut g = cell.db.write().unwrap_or_else(|e| e.into_inner());
        drop(g.take());
        cell.epoch.fetch_add(1, Ordering::AcqRel);
        // A stripe's number now speaks of the old database: a reader of
        // the new one has nothing to wait for.
        seq.reset_stripes();
        seq.latest()
    };
    let mut last = String::new();
    for _ in 0..REOPEN_TRIES {
        match cell.config.open() {
            Ok(db) => {
                *cell.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
                return Syncer::open(&cell.dir).map(|s| (s, last_old)).map_err(|e| e.to_string());
            }
            // Reads in progress may still hold the old database (its file
            // lock): give them a moment.
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

fn run(cell: Arc<DbCell>, mut syncer: Syncer, seq: Arc<Sequencer>, shutdown: Arc<AtomicBool>) {
    let mut done = 0u64;
    let mut failing = false;
    let mut last_probe = Instant::now();
    loop {
        if seq.held() && !shutdown.load(Ordering::Acquire) {
            std::thread::park_timeout(Duration::from_millis(50));
            continue;
        }
        let target = seq.covered();
        if failing {
            if shutdown.load(Ordering::Acquire) {
                return;
            }
            if target > done {
                // Everything numbered since the failure fails too.
                seq.grow_failed(target);
                done = target;
            }
            if last_probe.elapsed() >= PROBE_INTERVAL {
                last_probe = Instant::now();
                if probe(&cell.dir).is_ok() {
                    match reopen(&cell, &seq) {
                        Ok((s, last_old)) => {
                            syncer = s;
                            // Writes applied to the old database since the
                            // failure are gone: they fail (before anything
                            // is published as durable again).
                            seq.grow_failed(last_old);
                            failing = false;
                            tracing::warn!("storage recovered: writes are accepted again");
                            continue;
                        }
                        Err(e) => tracing::debug!(error = %e, "storage still failing"),
                    }
                }
            }
            std::thread::park_timeout(PROBE_INTERVAL.saturating_sub(last_probe.elapsed()));
            continue;
        }
        if target > done {
            match flush(&cell, &mut syncer) {
                // The changes up to it go to the streams, then the writers
                // are woken.
                Ok(()) => seq.advance(target),
                Err(e) => {
                    tracing::error!(error = %e, "storage failing: writes are refused until it can write again");
                    failing = true;
                    last_probe = Instant::now();
                    seq.fail(done + 1, target, &e);
                }
            }
            done = target;
            continue;
        }
        if shutdown.load(Ordering::Acquire) {
            return;
        }
        std::thread::park();
    }
}
