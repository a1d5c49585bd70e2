//! Group commit: one fsync for every write that arrived while the previous
//! one ran.
//!
//! A writer applies its batch to sled (in memory, fast), then takes a
//! sequence number with [`Committer::written`] and awaits
//! [`Committer::durable`] for it. A dedicated thread loops: read the
//! latest sequence number, `flush()` (sled's fsync), publish that number on
//! a `watch` channel. Every batch applied before its writer took a number
//! is covered by the flush that starts after it, so writers that pile up
//! behind a running fsync share the next one. The fsync never runs on a
//! tokio worker thread, and no lock is held while anyone waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::StoreError;

/// What the commit thread publishes.
#[derive(Debug, Clone, Default)]
struct Durable {
    /// Every write numbered up to this is on disk.
    seq: u64,
    /// The last flush failed: writers up to `failed_upto` get this error.
    error: Option<Arc<str>>,
    failed_upto: u64,
}

struct Shared {
    written: AtomicU64,
    shutdown: AtomicBool,
}

pub(crate) struct Committer {
    shared: Arc<Shared>,
    durable: watch::Receiver<Durable>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub fn start(db: sled::Db) -> std::io::Result<Committer> {
        let shared = Arc::new(Shared { written: AtomicU64::new(0), shutdown: AtomicBool::new(false) });
        let (tx, rx) = watch::channel(Durable::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("mupdated-commit".into()).spawn(move || run(db, s, tx))?;
        Ok(Committer { shared, durable: rx, thread: Some(thread) })
    }

    /// Number the writes applied so far and wake the commit thread.
    pub fn written(&self) -> u64 {
        let seq = self.shared.written.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        seq
    }

    /// The number of the latest write (for a command that wrote nothing but
    /// answered from state that must be durable before it is acknowledged).
    pub fn latest(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Wait until write `seq` is on disk.
    pub async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        if seq == 0 || self.durable.borrow().seq >= seq {
            return Ok(());
        }
        let mut rx = self.durable.clone();
        let d = rx
            .wait_for(|d| d.seq >= seq || (d.error.is_some() && d.failed_upto >= seq))
            .await
            .map_err(|_| StoreError::Durability("commit thread stopped".into()))?;
        if d.seq >= seq {
            Ok(())
        } else {
            Err(StoreError::Durability(d.error.as_deref().unwrap_or("flush failed").to_string()))
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            // The thread owns a handle on the database: wait for it so that
            // the database is closed (and reopenable) once the store is gone.
            let _ = t.join();
        }
    }
}

fn run(db: sled::Db, shared: Arc<Shared>, tx: watch::Sender<Durable>) {
    let mut done = 0u64;
    loop {
        let target = shared.written.load(Ordering::Acquire);
        if target > done {
            match db.flush() {
                Ok(_) => {
                    done = target;
                    tx.send_modify(|d| {
                        d.seq = target;
                        d.error = None;
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "store flush failed");
                    tx.send_modify(|d| {
                        d.error = Some(e.to_string().into());
                        d.failed_upto = target;
                    });
                    // Do not spin on a failing disk; the next write retries.
                    std::thread::sleep(Duration::from_millis(100));
                    if shared.written.load(Ordering::Acquire) == target {
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                }
            }
            continue;
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        std::thread::park();
    }
}
