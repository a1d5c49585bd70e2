//! The sled engine (the default): one sled tree in the data folder, group
//! commit with the fsyncs sled leaves undone (`commit.rs`), recovery from a
//! failing disk by reopening, and what only sled needs: its recovery
//! quirks (a damaged file can make it panic: caught, and reported as
//! damage), the clean-stop seal and the checks at open (`verify.rs`),
//! compression.
//!
//! sled is opened in `Mode::LowSpace`: the directory is small records,
//! written rarely compared with how often it is read, and its size on disk
//! matters more than peak write rate. (sled 0.34.7 accepts the mode but
//! does not act on it; measured, both modes give the same sizes.)

mod commit;
pub mod offline;
pub mod seal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) use commit::engine_error;
use commit::{Committer, DbCell};

use super::{Batch, Bytes, Engine, EngineError, Read, Scan, Sequencer};
use crate::store::{verify, Change, StoreError, STRIPES};

/// How to open the sled engine.
#[derive(Debug, Clone)]
pub struct SledConfig {
    /// Folder of the sled database.
    pub path: PathBuf,
    /// sled page cache, bytes.
    pub cache_capacity: u64,
    /// Compress what sled writes (zstd): about a third of the disk, for
    /// some CPU per write (measured in README's benchmark section).
    pub compression: bool,
    /// zstd level when `compression` is on (1-22).
    pub compression_level: i32,
    /// How much to check at open (verify.rs).
    pub verify_on_open: verify::VerifyMode,
}

/// The sled engine.
pub struct SledEngine {
    /// The database, reopened after a storage failure.
    cell: Arc<DbCell>,
    seq: Arc<Sequencer>,
    /// The data folder (the seal is written there at a clean stop).
    path: PathBuf,
    /// The background read after a quick open: its stop flag and thread.
    background: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>>,
    quick: bool,
    // Last: dropping it joins the commit thread, which closes the database.
    _committer: Committer,
}

fn ivec(b: Bytes) -> sled::IVec {
    b.0
}

fn scan(it: sled::Iter) -> Scan {
    Box::new(it.map(|kv| kv.map(|(k, v)| (Bytes(k), Bytes(v))).map_err(engine_error)))
}

impl SledEngine {
    /// Open (or create) the database at `cfg.path`: sled's own recovery,
    /// then the checks at open (`verify.rs`: the seal, the summaries);
    /// the seal is removed (from the first write on it no longer describes
    /// the folder). Damage is [`StoreError::Damaged`], with what to do.
    pub fn open(cfg: &SledConfig) -> Result<SledEngine, StoreError> {
        let damaged = |what: String| StoreError::Damaged(format!("{}: {what}. {}", cfg.path.display(), verify::WHAT_TO_DO));
        let sled_config = sled::Config::new()
            .path(&cfg.path)
            .cache_capacity(cfg.cache_capacity)
            .mode(sled::Mode::LowSpace)
            .use_compression(cfg.compression)
            .compression_factor(cfg.compression_level);
        // A damaged file can make sled panic (seen with 1 MiB cut off):
        // that is the damage message, not a crash.
        let mut engine = verify::quietly(|| Self::open_raw(sled_config, &cfg.path)).map_err(damaged)?.map_err(|e| match e {
            EngineError::Corrupt(e) => damaged(e),
            e => e.into(),
        })?;
        engine.quick = cfg.verify_on_open == verify::VerifyMode::Quick;
        let notes = verify::quietly(|| verify::check_at_open(&engine, &cfg.path, cfg.verify_on_open))
            .and_then(|r| r)
            .map_err(damaged)?;
        for n in notes {
            tracing::info!("{n}");
        }
        verify::remove_seal(&cfg.path).map_err(|e| StoreError::Durability(format!("cannot remove the seal: {e}")))?;
        Ok(engine)
    }

    /// Open sled with `config` in `dir` and start the commit thread, with
    /// no check (offline tools, import; [`SledEngine::open`] checks).
    pub fn open_raw(config: sled::Config, dir: &Path) -> Result<SledEngine, EngineError> {
        let cell = Arc::new(DbCell::open(config, dir)?);
        let seq = Arc::new(Sequencer::threaded(STRIPES));
        let committer = Committer::start(cell.clone(), &seq)?;
        Ok(SledEngine {
            cell,
            seq,
            path: dir.to_path_buf(),
            background: Mutex::new(None),
            quick: false,
            _committer: committer,
        })
    }

    /// The data folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Engine for SledEngine {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn sequencer(&self) -> &Arc<Sequencer> {
        &self.seq
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
        Ok(self.cell.get()?.get(key).map_err(engine_error)?.map(Bytes))
    }

    fn read(&self, key: &[u8], stripe: usize) -> Result<Read, EngineError> {
        self.cell.with(|db| {
            let value = db.get(key).map_err(engine_error)?.map(Bytes);
            Ok(Read { value, seq: self.seq.stripe_seq(stripe), epoch: self.cell.epoch() })
        })
    }

    fn apply(&self, stripe: usize, batch: Batch, note: Option<Change>) -> Result<u64, EngineError> {
        let (ops, guard) = batch.into_parts();
        // Held while the batch is numbered and applied: a reopen waits, so
        // that the write lands in the database it was read from.
        self.cell.with(|db| {
            // The stripe lock makes the guard's value hold; only a reopen
            // since the read can break it.
            if guard.is_some_and(|g| g.epoch != self.cell.epoch()) {
                return Err(EngineError::Unavailable);
            }
            let mut b = sled::Batch::default();
            for (k, v) in ops {
                match v {
                    Some(v) => b.insert(ivec(k), ivec(v)),
                    None => b.remove(ivec(k)),
                }
            }
            // Numbered before it is applied: once it is visible to readers,
            // its number is the stripe's.
            let seq = self.seq.begin(stripe, note);
            match db.apply_batch(b) {
                Ok(()) => {
                    self.seq.end(seq);
                    Ok(seq)
                }
                Err(e) => {
                    self.seq.abandon(seq);
                    Err(engine_error(e))
                }
            }
        })
    }

    fn apply_unnumbered(&self, batch: Batch) -> Result<(), EngineError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.into_parts().0 {
            match v {
                Some(v) => b.insert(ivec(k), ivec(v)),
                None => b.remove(ivec(k)),
            }
        }
        self.cell.get()?.apply_batch(b).map_err(engine_error)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        match self.cell.get() {
            Ok(db) => scan(db.scan_prefix(prefix)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn scan_from(&self, start: &[u8]) -> Scan {
        match self.cell.get() {
            Ok(db) => scan(db.range(start.to_vec()..)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn epoch(&self) -> u64 {
        self.cell.epoch()
    }

    fn sync_now(&self) -> Result<(), EngineError> {
        self.cell.sync_now()
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        self.cell.get()?.size_on_disk().map_err(engine_error)
    }

    /// A clean stop: make everything durable and write the seal that the
    /// next open compares with (verify.rs). Not when damage was seen.
    fn close(&self, clean: bool) {
        let background = self.background.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((stop, thread)) = background {
            stop.store(true, Ordering::Release);
            let _ = thread.join();
        }
        if !clean {
            return;
        }
        // Everything sled wrote is fsynced first: the seal must not claim
        // more than a power cut right after it would leave.
        let sealed = self
            .cell
            .sync_now()
            .map_err(|e| e.to_string())
            .and_then(|_| verify::stored_total(self).map_err(|e| e.to_string()))
            .and_then(|t| verify::write_seal(&self.path, t).map_err(|e| e.to_string()));
        if let Err(e) = sealed {
            tracing::warn!(error = %e, "could not write the clean-stop seal; the next open will check less");
        }
    }

    /// After a quick open, read every value once in a thread of its own
    /// (`verify::read_everything`); damage it finds is noted as a damaged
    /// read is (logged once, writes refused from then on). The close stops
    /// it.
    fn check_in_background(&self, damaged: Arc<OnceLock<String>>) -> Result<(), EngineError> {
        if !self.quick {
            return Ok(());
        }
        let all = self.scan_prefix(&[]);
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, path) = (stop.clone(), self.path.clone());
        let thread = std::thread::Builder::new()
            .name("mupdated-check".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match verify::read_everything(all, &flag) {
                    // Not when a read found damage first (it logged it).
                    Some(what) if damaged.set(what.clone()).is_ok() => {
                        tracing::error!(
                            error = %what,
                            data_dir = %path.display(),
                            "the directory is damaged (found by the check after a quick open): writes are refused from now on; stop the server and run `mupdatectl verify --data-dir DIR`"
                        );
                    }
                    Some(_) => {}
                    None if !flag.load(Ordering::Acquire) => {
                        tracing::info!(ms = started.elapsed().as_millis() as u64, "every value read back after open: no damage found")
                    }
                    None => {}
                }
            })
            .map_err(|e| EngineError::Other(format!("cannot start the check thread: {e}")))?;
        *self.background.lock().unwrap_or_else(|e| e.into_inner()) = Some((stop, thread));
        Ok(())
    }
}
