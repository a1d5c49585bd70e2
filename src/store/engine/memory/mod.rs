//! The in-memory engine: an ordered map under a lock, durable once applied
//! (nothing survives the process). For unit tests and fuzzing of whole
//! sessions: the directory's policy runs unchanged, without a disk.
//!
//! It checks a batch's [`Guard`](super::Guard) against the map (as an
//! engine shared between processes must), and tests can make durability
//! fail ([`MemoryEngine::fail_durability`]) to see that a failed write is
//! answered as failed and published nowhere.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use super::{Batch, Bytes, Engine, EngineError, Read, Scan, Sequencer};
use crate::store::{Change, STRIPES};

/// The in-memory engine.
pub struct MemoryEngine {
    map: Arc<RwLock<BTreeMap<Bytes, Bytes>>>,
    seq: Arc<Sequencer>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new()
    }
}

/// How many keys a scan copies out of the map per lock: a scan does not
/// hold the lock between its items (writers go on), and sees each key as
/// it is when its chunk is read, as a sled scan does.
const CHUNK: usize = 256;

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> MemoryEngine {
        MemoryEngine { map: Arc::new(RwLock::new(BTreeMap::new())), seq: Arc::new(Sequencer::immediate(STRIPES)) }
    }

    /// Tests: while `on`, every write's durability fails (the write stays
    /// applied, as a failed flush leaves it in sled's memory, and is
    /// answered with a durability error).
    pub fn fail_durability(&self, on: bool) {
        self.seq.inject_failure(on);
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Bytes, Bytes>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Bytes, Bytes>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    fn scan(&self, start: Bytes, prefix: Bytes) -> Scan {
        let map = self.map.clone();
        let mut from = Bound::Included(start);
        let mut buf: std::vec::IntoIter<(Bytes, Bytes)> = Vec::new().into_iter();
        let mut done = false;
        Box::new(std::iter::from_fn(move || loop {
            if let Some(kv) = buf.next() {
                return Some(Ok(kv));
            }
            if done {
                return None;
            }
            let chunk: Vec<(Bytes, Bytes)> = {
                let m = map.read().unwrap_or_else(|e| e.into_inner());
                m.range((from.clone(), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .take(CHUNK)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if chunk.len() < CHUNK {
                done = true;
            }
            match chunk.last() {
                Some((k, _)) => from = Bound::Excluded(k.clone()),
                None => return None,
            }
            buf = chunk.into_iter();
        }))
    }

    fn apply_ops(map: &mut BTreeMap<Bytes, Bytes>, ops: Vec<(Bytes, Option<Bytes>)>) {
        for (k, v) in ops {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn sequencer(&self) -> &Arc<Sequencer> {
        &self.seq
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
        Ok(self.read_map().get(key).cloned())
    }

    fn read(&self, key: &[u8], stripe: usize) -> Result<Read, EngineError> {
        let m = self.read_map();
        Ok(Read { value: m.get(key).cloned(), seq: self.seq.stripe_seq(stripe), epoch: 0 })
    }

    fn apply(&self, stripe: usize, batch: Batch, note: Option<Change>) -> Result<u64, EngineError> {
        let (ops, guard) = batch.into_parts();
        let seq = {
            let mut m = self.write_map();
            if let Some(g) = guard {
                if m.get(&g.key) != g.value.as_ref() {
                    return Err(EngineError::Conflict);
                }
            }
            let seq = self.seq.begin(stripe, note);
            Self::apply_ops(&mut m, ops);
            seq
        };
        // Ended outside the map's lock: ending advances the mark, which
        // publishes to the streams.
        self.seq.end(seq);
        Ok(seq)
    }

    fn apply_unnumbered(&self, batch: Batch) -> Result<(), EngineError> {
        Self::apply_ops(&mut self.write_map(), batch.into_parts().0);
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        self.scan(prefix.into(), prefix.into())
    }

    fn scan_from(&self, start: &[u8]) -> Scan {
        self.scan(start.into(), Bytes::default())
    }

    fn epoch(&self) -> u64 {
        0
    }

    fn sync_now(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(0)
    }
}
