//! What sled needs for an offline tool to open a data folder: the
//! compression setting it was created with, its panics on damaged files
//! caught ([`quietly`]), and the open itself ([`open_offline`]).

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::SledEngine;
use crate::store::engine::EngineError;

/// Run `f`, turning a panic into an error with the panic's message, and
/// without printing it (a damaged file must give the damage message, not
/// a backtrace). Panics of other threads meanwhile go to the usual hook.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::thread::current().id();
    let caught: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let prev = Arc::new(panic::take_hook());
    {
        let caught = caught.clone();
        let prev = prev.clone();
        panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == me {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let what = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                *caught.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{what}{at}"));
            } else {
                prev(info);
            }
        }));
    }
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    // Drop our hook (and its clone of `prev`) before restoring `prev`.
    panic::set_hook(Box::new(|_| {}));
    match Arc::try_unwrap(prev) {
        Ok(p) => panic::set_hook(p),
        Err(p) => panic::set_hook(Box::new(move |i| p(i))),
    }
    r.map_err(|_| {
        let msg = caught.lock().unwrap_or_else(|e| e.into_inner()).take();
        format!(
            "the storage engine failed on this directory ({})",
            msg.unwrap_or_else(|| "panic".into())
        )
    })
}

/// Does sled's `conf` in `dir` say the database is compressed? (Offline
/// tools must open it with the value it was created with.)
pub fn compression_of(dir: &Path) -> Result<bool, String> {
    let conf = dir.join("conf");
    // Text lines followed by a binary checksum.
    let bytes = std::fs::read(&conf).map_err(|e| {
        format!(
            "{} is not a mupdated data directory (cannot read {}: {e})",
            dir.display(),
            conf.display()
        )
    })?;
    Ok(!String::from_utf8_lossy(&bytes)
        .lines()
        .any(|l| l.trim() == "use_compression: false"))
}

/// Why an offline tool could not open a data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No sled database there (usage error).
    #[error("{0}")]
    NotADirectory(String),
    /// Locked by a running server, or an I/O failure.
    #[error("{0}")]
    Unavailable(String),
    /// The engine panicked or reported corruption: the file is damaged.
    #[error("{0}")]
    Damaged(String),
}

/// Open an existing data directory for an offline tool: the sled engine,
/// without the checks at open (they are the tool's to run) and without
/// touching the seal.
pub fn open_offline(dir: &Path) -> Result<SledEngine, OpenError> {
    let compression = compression_of(dir).map_err(OpenError::NotADirectory)?;
    let r = quietly(|| SledEngine::open_raw(sled::Config::new().path(dir).use_compression(compression), dir))
        .map_err(OpenError::Damaged)?;
    r.map_err(|e| match e {
        EngineError::Corrupt(e) => OpenError::Damaged(format!("cannot open {}: {e}", dir.display())),
        e => {
            let s = e.to_string();
            if s.contains("lock") || s.contains("WouldBlock") || s.contains("temporarily unavailable") {
                OpenError::Unavailable(format!(
                    "cannot open {}: {s} (is mupdated running on it? stop it first, or use `mupdatectl backup` for a live copy)",
                    dir.display()
                ))
            } else {
                OpenError::Unavailable(format!("cannot open {}: {s}", dir.display()))
            }
        }
    })
}

