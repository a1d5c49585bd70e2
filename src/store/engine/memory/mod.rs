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

#[cfg(test)]
mod tests {
    use super::super::Guard;
    use super::*;

    fn put(e: &MemoryEngine, k: &[u8], v: &[u8], guard: Option<Guard>) -> Result<u64, EngineError> {
        let mut b = Batch::default();
        b.insert(k, v);
        if let Some(g) = guard {
            b.guard(g);
        }
        e.apply(0, b, None)
    }

    #[tokio::test]
    async fn a_batch_whose_guard_no_longer_holds_is_refused() {
        let e = MemoryEngine::new();
        let seen = e.read(b"k", 0).unwrap();
        assert!(seen.value.is_none());
        let guard = Guard { key: b"k".into(), value: seen.value.clone(), epoch: seen.epoch };
        // Another writer gets there first.
        put(&e, b"k", b"theirs", None).unwrap();
        assert!(matches!(put(&e, b"k", b"mine", Some(guard)), Err(EngineError::Conflict)));
        assert_eq!(e.get(b"k").unwrap().as_deref(), Some(&b"theirs"[..]));
        // With what is there now, it applies; numbers are durable at once.
        let now = e.read(b"k", 0).unwrap();
        let seq = put(&e, b"k", b"mine", Some(Guard { key: b"k".into(), value: now.value, epoch: 0 })).unwrap();
        assert_eq!(e.read(b"k", 0).unwrap().seq, seq);
        e.sequencer().durable(seq).await.unwrap();
    }

    #[test]
    fn scans_are_ordered_and_bounded_by_their_prefix_across_chunks() {
        let e = MemoryEngine::new();
        let mut b = Batch::default();
        for i in (0..1000u32).rev() {
            b.insert(format!("a{i:04}").into_bytes(), vec![1]);
        }
        b.insert(&b"b"[..], &b"x"[..]);
        b.insert(&b"\x00"[..], &b"y"[..]);
        e.apply_unnumbered(b).unwrap();
        let keys: Vec<Vec<u8>> = e.scan_prefix(b"a").map(|kv| kv.unwrap().0.to_vec()).collect();
        let want: Vec<Vec<u8>> = (0..1000u32).map(|i| format!("a{i:04}").into_bytes()).collect();
        assert_eq!(keys, want);
        let from: Vec<Vec<u8>> = e.scan_from(b"a0998").map(|kv| kv.unwrap().0.to_vec()).collect();
        assert_eq!(from, [b"a0998".to_vec(), b"a0999".to_vec(), b"b".to_vec()]);
        assert_eq!(e.scan_prefix(b"").count(), 1002);
    }

    #[tokio::test]
    async fn an_injected_failure_fails_the_numbers_it_covers_only() {
        let e = MemoryEngine::new();
        e.fail_durability(true);
        let lost = put(&e, b"k", b"v", None).unwrap();
        assert!(matches!(e.sequencer().durable(lost).await, Err(EngineError::Durability(_))));
        e.fail_durability(false);
        let kept = put(&e, b"k", b"w", None).unwrap();
        e.sequencer().durable(kept).await.unwrap();
        assert!(e.sequencer().durable(lost).await.is_err(), "a failed number stays failed");
    }
}
