//! The fan-out of directory changes to UPDATE streams.
//!
//! A stream does not queue lines, it queues *names*: each subscription
//! keeps the set of names changed since its last flush, in first-change
//! order, and its connection task looks up the current effective record of
//! each name when it sends. So a name changed k times between two flushes
//! goes out once, with its state at send time, and a line can never be
//! older than one sent before it. Publishing costs one short lock per
//! subscriber and never waits for a stream; a stream that falls more than
//! `max_pending` names behind is marked overflowed and closed by its task
//! (its Cyrus slave reconnects and downloads the directory again).

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
}

/// A stream fell too far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("UPDATE stream fell more than {0} names behind")]
pub struct Overflow(pub usize);

#[derive(Default)]
struct Pending {
    order: VecDeque<Vec<u8>>,
    queued: HashSet<Vec<u8>>,
    overflowed: bool,
}

/// One UPDATE stream's view of the hub. Dropping the [`Registration`]
/// unregisters it.
pub struct Subscription {
    hosts: Option<HashSet<Vec<u8>>>,
    pending: Mutex<Pending>,
    notify: Notify,
    max_pending: usize,
}

/// Keeps a subscription registered; unregisters on drop.
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
    subscription: Arc<Subscription>,
}

impl Hub {
    pub fn new(max_pending: usize) -> Arc<Hub> {
        Arc::new(Hub { subscribers: RwLock::new(HashMap::new()), next_id: AtomicU64::new(1), max_pending })
    }

    /// Register a stream (before it dumps, so nothing is missed). `hosts`
    /// empty means every change (plain UPDATE); otherwise PARTIAL-UPDATE.
    pub fn subscribe(self: &Arc<Self>, hosts: &[Vec<u8>]) -> Registration {
        let hosts = if hosts.is_empty() { None } else { Some(hosts.iter().cloned().collect()) };
        let subscription = Arc::new(Subscription {
            hosts,
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            max_pending: self.max_pending,
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
        let subscribers = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        for sub in subscribers.values() {
            sub.offer(changes);
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

    fn offer(&self, changes: &[Change]) {
        let mut woke = false;
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for c in changes.iter().filter(|c| self.wants(c)) {
                if p.overflowed {
                    break;
                }
                if p.queued.contains(&c.name) {
                    continue;
                }
                if p.order.len() >= self.max_pending {
                    // Drop what is queued: the stream will be closed.
                    p.overflowed = true;
                    p.order = VecDeque::new();
                    p.queued = HashSet::new();
                } else {
                    p.queued.insert(c.name.clone());
                    p.order.push_back(c.name.clone());
                }
                woke = true;
            }
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

    /// Take every queued name, oldest change first.
    pub fn take(&self) -> Result<Vec<Vec<u8>>, Overflow> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.overflowed {
            return Err(Overflow(self.max_pending));
        }
        p.queued.clear();
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

    fn change(name: &str, servers: &[&str]) -> Change {
        Change { name: name.into(), servers: servers.iter().map(|s| s.as_bytes().to_vec()).collect() }
    }

    #[tokio::test]
    async fn coalesces_and_keeps_first_change_order() {
        let hub = Hub::new(100);
        let reg = hub.subscribe(&[]);
        hub.publish(&[change("b", &["s1"]), change("a", &["s1"]), change("b", &["s2"])]);
        reg.subscription().changed().await;
        assert_eq!(reg.subscription().take().unwrap(), vec![b"b".to_vec(), b"a".to_vec()]);
        assert!(reg.subscription().take().unwrap().is_empty());
        hub.publish(&[change("b", &["s1"])]);
        assert_eq!(reg.subscription().take().unwrap(), vec![b"b".to_vec()]);
    }

    #[test]
    fn partial_update_filters_on_old_or_new_server() {
        let hub = Hub::new(100);
        let reg = hub.subscribe(&[b"s2".to_vec()]);
        hub.publish(&[change("a", &["s1"]), change("b", &["s1", "s2"]), change("c", &["s2"])]);
        assert_eq!(reg.subscription().take().unwrap(), vec![b"b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn overflow_is_reported_and_memory_dropped() {
        let hub = Hub::new(2);
        let reg = hub.subscribe(&[]);
        hub.publish(&[change("a", &["s"]), change("b", &["s"]), change("c", &["s"])]);
        assert_eq!(reg.subscription().take(), Err(Overflow(2)));
        assert!(reg.subscription().pending.lock().unwrap().order.is_empty());
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
