//! The fan-out of directory changes to UPDATE streams.
//!
//! A stream does not queue lines, it queues *names*: each subscription
//! keeps the set of names changed since its last flush, in first-change
//! order, and its connection task looks up the current effective record of
//! each name when it sends. So a name changed k times between two flushes
//! goes out once, with its state at send time, and a line can never be
//! older than one sent before it. Publishing costs one short lock per
//! subscriber and never waits for a stream; a stream that falls more than
//! `max_pending` names or `max_pending_bytes` bytes of names behind is
//! marked overflowed, its queue is dropped at once, and its task is woken
//! to close it even while it is blocked writing to a peer that stopped
//! reading ([`Subscription::overflowed`]); its Cyrus slave reconnects and
//! downloads the directory again.
//!
//! A changed name is one shared allocation (`Arc<[u8]>`) however many
//! streams queue it: a queued name costs a stream two pointers and a hash
//! slot (about 50 bytes), not a copy.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use crate::store::Change;

/// Where changes are published.
pub struct Hub {
    subscribers: RwLock<HashMap<u64, Arc<Subscription>>>,
    next_id: AtomicU64,
    max_pending: usize,
    max_pending_bytes: usize,
}

/// A stream fell too far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("UPDATE stream fell more than {names} names or {bytes} bytes of names behind")]
pub struct Overflow {
    pub names: usize,
    pub bytes: usize,
}

/// What a queued name costs a stream beyond its bytes (two `Arc<[u8]>`
/// pointers, a hash slot, the shared allocation's counts), counted against
/// `max_pending_bytes` so that the bound is one of memory.
pub const QUEUED_NAME_OVERHEAD: usize = 64;

#[derive(Default)]
struct Pending {
    order: VecDeque<Arc<[u8]>>,
    queued: HashSet<Arc<[u8]>>,
    /// Name bytes in `order`, plus [`QUEUED_NAME_OVERHEAD`] per name.
    bytes: usize,
    overflowed: bool,
}

/// One UPDATE stream's view of the hub. Dropping the [`Registration`]
/// unregisters it.
pub struct Subscription {
    hosts: Option<HashSet<Vec<u8>>>,
    pending: Mutex<Pending>,
    notify: Notify,
    /// Woken once, when the stream overflows.
    overflow: Notify,
    max_pending: usize,
    max_pending_bytes: usize,
}

/// Keeps a subscription registered; unregisters on drop.
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
    subscription: Arc<Subscription>,
}

impl Hub {
    /// A hub whose streams are closed past `max_pending` queued names.
    pub fn new(max_pending: usize) -> Arc<Hub> {
        Self::with_limits(max_pending, usize::MAX)
    }

    /// A hub whose streams are closed past `max_pending` queued names or
    /// `max_pending_bytes` bytes of queued names.
    pub fn with_limits(max_pending: usize, max_pending_bytes: usize) -> Arc<Hub> {
        Arc::new(Hub {
            subscribers: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            max_pending,
            max_pending_bytes,
        })
    }

    /// Register a stream (before it dumps, so nothing is missed). `hosts`
    /// empty means every change (plain UPDATE); otherwise PARTIAL-UPDATE.
    pub fn subscribe(self: &Arc<Self>, hosts: &[Vec<u8>]) -> Registration {
        let hosts = if hosts.is_empty() { None } else { Some(hosts.iter().cloned().collect()) };
        let subscription = Arc::new(Subscription {
            hosts,
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            overflow: Notify::new(),
            max_pending: self.max_pending,
            max_pending_bytes: self.max_pending_bytes,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.subscribers.write().unwrap_or_else(|e| e.into_inner()).insert(id, subscription.clone());
        Registration { hub: self.clone(), id, subscription }
    }

    /// Queue changed names for every interested stream and wake it.
    pub fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let shared: Vec<(Arc<[u8]>, &Change)> = changes.iter().map(|c| (Arc::from(c.name.as_slice()), c)).collect();
        let subscribers = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        for sub in subscribers.values() {
            sub.offer(&shared);
        }
    }

    /// Streams registered now.
    pub fn len(&self) -> usize {
        self.subscribers.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Subscription {
    fn wants(&self, change: &Change) -> bool {
        match &self.hosts {
            None => true,
            Some(hosts) => change.servers.iter().any(|s| hosts.contains(s)),
        }
    }

    fn offer(&self, changes: &[(Arc<[u8]>, &Change)]) {
        let mut woke = false;
        let mut overflowed = false;
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (name, _) in changes.iter().filter(|(_, c)| self.wants(c)) {
                if p.overflowed {
                    break;
                }
                // One hash per stream and change: insert answers whether
                // the name was queued already.
                if !p.queued.insert(name.clone()) {
                    continue;
                }
                let cost = name.len() + QUEUED_NAME_OVERHEAD;
                if p.order.len() >= self.max_pending || p.bytes.saturating_add(cost) > self.max_pending_bytes {
                    // Drop what is queued: the stream will be closed.
                    *p = Pending { overflowed: true, ..Pending::default() };
                    overflowed = true;
                } else {
                    p.order.push_back(name.clone());
                    p.bytes += cost;
                }
                woke = true;
            }
        }
        if overflowed {
            // A permit is kept if the task is not waiting yet.
            self.overflow.notify_one();
        }
        if woke {
            self.notify.notify_one();
        }
    }

    /// Does this stream follow only some hosts (PARTIAL-UPDATE)?
    pub fn hosts(&self) -> Option<&HashSet<Vec<u8>>> {
        self.hosts.as_ref()
    }

    /// Wait until something is queued.
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    /// Resolves once the stream has overflowed: a task busy writing to
    /// its peer selects on this to abort the write and close at once.
    pub async fn overflowed(&self) -> Overflow {
        loop {
            if self.pending.lock().unwrap_or_else(|e| e.into_inner()).overflowed {
                return self.overflow_error();
            }
            self.overflow.notified().await;
        }
    }

    fn overflow_error(&self) -> Overflow {
        Overflow { names: self.max_pending, bytes: self.max_pending_bytes }
    }

    /// Take every queued name, oldest change first.
    pub fn take(&self) -> Result<Vec<Arc<[u8]>>, Overflow> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.overflowed {
            return Err(self.overflow_error());
        }
        p.queued.clear();
        p.bytes = 0;
        Ok(std::mem::take(&mut p.order).into())
    }
}

impl Registration {
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.subscribers.write().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<Arc<[u8]>>) -> Vec<String> {
        v.iter().map(|n| String::from_utf8(n.to_vec()).unwrap()).collect()
    }

    fn change(name: &str, servers: &[&str]) -> Change {
        Change { name: name.into(), servers: servers.iter().map(|s| s.as_bytes().to_vec()).collect() }
    }

    #[tokio::test]
    async fn coalesces_and_keeps_first_change_order() {
        let hub = Hub::new(100);
        let reg = hub.subscribe(&[]);
        hub.publish(&[change("b", &["s1"]), change("a", &["s1"]), change("b", &["s2"])]);
        reg.subscription().changed().await;
        assert_eq!(names(reg.subscription().take().unwrap()), ["b", "a"]);
        assert!(reg.subscription().take().unwrap().is_empty());
        hub.publish(&[change("b", &["s1"])]);
        assert_eq!(names(reg.subscription().take().unwrap()), ["b"]);
    }

    #[test]
    fn partial_update_filters_on_old_or_new_server() {
        let hub = Hub::new(100);
        let reg = hub.subscribe(&[b"s2".to_vec()]);
        hub.publish(&[change("a", &["s1"]), change("b", &["s1", "s2"]), change("c", &["s2"])]);
        assert_eq!(names(reg.subscription().take().unwrap()), ["b", "c"]);
    }

    #[test]
    fn overflow_is_reported_and_memory_dropped() {
        let hub = Hub::new(2);
        let reg = hub.subscribe(&[]);
        hub.publish(&[change("a", &["s"]), change("b", &["s"]), change("c", &["s"])]);
        assert_eq!(reg.subscription().take(), Err(Overflow { names: 2, bytes: usize::MAX }));
        assert!(reg.subscription().pending.lock().unwrap().order.is_empty());
    }

    #[tokio::test]
    async fn byte_bound_overflows_and_wakes_the_overflow_waiter() {
        let o = QUEUED_NAME_OVERHEAD;
        let hub = Hub::with_limits(100, 10 + 3 * o);
        let reg = hub.subscribe(&[]);
        hub.publish(&[change("abcd", &["s"]), change("efgh", &["s"])]);
        assert_eq!(reg.subscription().pending.lock().unwrap().bytes, 8 + 2 * o);
        // Not overflowed yet: the waiter is still waiting.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), reg.subscription().overflowed()).await;
        assert!(waiting.is_err());
        // Taking resets the count; 10 bytes in 3 names fit, 12 in 2 do
        // not (2 names fit in the overhead of 3).
        assert_eq!(reg.subscription().take().unwrap().len(), 2);
        hub.publish(&[change("abcd", &["s"]), change("efgh", &["s"]), change("ij", &["s"])]);
        assert!(reg.subscription().take().is_ok());
        hub.publish(&[change("abcdef", &["s"]), change("ghijkl", &["s"]), change("mnopqr", &["s"])]);
        let e = tokio::time::timeout(std::time::Duration::from_secs(1), reg.subscription().overflowed()).await;
        assert_eq!(e, Ok(Overflow { names: 100, bytes: 10 + 3 * o }));
        assert_eq!(reg.subscription().pending.lock().unwrap().bytes, 0);
        assert!(reg.subscription().take().is_err());
    }

    #[test]
    fn one_copy_of_a_name_is_shared_by_every_stream() {
        let hub = Hub::new(100);
        let regs: Vec<Registration> = (0..3).map(|_| hub.subscribe(&[])).collect();
        hub.publish(&[change("shared.name", &["s"])]);
        let taken: Vec<Arc<[u8]>> = regs.iter().map(|r| r.subscription().take().unwrap().remove(0)).collect();
        assert!(Arc::ptr_eq(&taken[0], &taken[1]) && Arc::ptr_eq(&taken[1], &taken[2]));
    }

    #[test]
    fn dropping_registration_unsubscribes() {
        let hub = Hub::new(2);
        let reg = hub.subscribe(&[]);
        assert_eq!(hub.len(), 1);
        drop(reg);
        assert!(hub.is_empty());
        hub.publish(&[change("a", &["s"])]);
    }
}
