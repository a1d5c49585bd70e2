//! Who gets a connection slot: the total cap, the cap on connections not
//! logged in (the oldest of them makes room for a newcomer, so a real
//! backend always gets its chance to log in, and a logged-in peer never
//! loses its slot to a stranger), the cap per peer address, and the
//! backoff of peer addresses whose logins fail.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Peer addresses with a failed-login record kept at most; past it,
/// records whose backoff has ended are forgotten first, then the rest.
const MAX_BACKOFF_RECORDS: usize = 65_536;

/// The caps, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Connections open at once, logged in or not (`max_connections`).
    pub max_connections: usize,
    /// Of those, connections not yet logged in; a newcomer past it evicts
    /// the oldest of them (`max_unauthenticated`).
    pub max_unauthenticated: usize,
    /// Connections open at once from one peer address; past it a newcomer
    /// is refused, never another connection evicted (`max_connections_per_peer`).
    pub max_per_peer: usize,
    /// The wait before a peer's next password check after its first failed
    /// login; it doubles with each further failure (`failed_login_pause`).
    pub failed_login_pause: Duration,
    /// The longest that wait grows to; a record whose wait ended longer
    /// ago than this starts over at one failure (`max_login_backoff`).
    pub max_login_backoff: Duration,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is held by a logged-in connection.
    Full,
    /// This peer address holds `max_connections_per_peer` already.
    PerPeer,
}

#[derive(Default)]
struct State {
    total: usize,
    /// Connections not logged in, oldest first (ids grow).
    unauthenticated: BTreeMap<u64, oneshot::Sender<()>>,
    per_peer: HashMap<IpAddr, usize>,
    backoff: HashMap<IpAddr, Backoff>,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

/// Shared by every listener of one server.
pub struct Admission {
    caps: Caps,
    state: Mutex<State>,
}

/// One admitted connection's slot, released on drop.
pub struct Slot {
    admission: Arc<Admission>,
    id: u64,
    /// The peer's address; `None` (a unix socket peer) is under no
    /// per-address cap or backoff.
    peer: Option<IpAddr>,
    /// Still counted among the unauthenticated.
    counted: bool,
    /// Given up by an eviction that raced with the login.
    released: bool,
    /// Fires when a newer connection evicted this one.
    evicted: Option<oneshot::Receiver<()>>,
}

impl Admission {
    /// No connection admitted yet and no failed login recorded; shared by
    /// every listener of the server (hence the `Arc`: each [`Slot`] holds one).
    pub fn new(caps: Caps) -> Arc<Admission> {
        Arc::new(Admission { caps, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only counters behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit connection `id` (ids must grow) from `peer`, evicting the
    /// oldest unauthenticated connection when that is what makes room. A
    /// peer without an address (a unix socket) counts against the total
    /// caps only.
    pub fn admit(self: &Arc<Self>, id: u64, peer: Option<IpAddr>) -> Result<Slot, Refusal> {
        let mut s = self.lock();
        if let Some(peer) = peer {
            if s.per_peer.get(&peer).copied().unwrap_or(0) >= self.caps.max_per_peer {
                return Err(Refusal::PerPeer);
            }
        }
        let full = s.total >= self.caps.max_connections || s.unauthenticated.len() >= self.caps.max_unauthenticated;
        if full {
            // Room is made only at a stranger's expense, never a login's.
            let Some((_, tell)) = s.unauthenticated.pop_first() else {
                return Err(Refusal::Full);
            };
            let _ = tell.send(());
            // The evicted slot is given up now, so the caps hold exactly;
            // its socket closes within a second or two.
            s.total -= 1;
        }
        let (tx, rx) = oneshot::channel();
        s.unauthenticated.insert(id, tx);
        s.total += 1;
        if let Some(peer) = peer {
            *s.per_peer.entry(peer).or_insert(0) += 1;
        }
        Ok(Slot { admission: self.clone(), id, peer, counted: true, released: false, evicted: Some(rx) })
    }

    /// Connections open, and how many of them are not logged in.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.total, s.unauthenticated.len())
    }

    /// When the next password check from `peer` may run (`None`: now).
    pub fn backoff_until(&self, peer: IpAddr) -> Option<Instant> {
        self.lock().backoff.get(&peer).map(|b| b.until).filter(|u| *u > Instant::now())
    }

    /// A failed login from `peer`: its next check waits failed_login_pause
    /// times 2^(failures - 1), at most max_login_backoff.
    pub fn login_failed(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut s = self.lock();
        if s.backoff.len() >= MAX_BACKOFF_RECORDS && !s.backoff.contains_key(&peer) {
            s.backoff.retain(|_, b| b.until > now);
            if s.backoff.len() >= MAX_BACKOFF_RECORDS {
                s.backoff.clear();
            }
        }
        let b = s.backoff.entry(peer).or_insert(Backoff { failures: 0, until: now });
        // A record whose backoff ended long ago starts over.
        if b.until + self.caps.max_login_backoff < now {
            b.failures = 0;
        }
        b.failures = b.failures.saturating_add(1);
        let factor = 1u32.checked_shl(b.failures - 1).unwrap_or(u32::MAX);
        let wait = self.caps.failed_login_pause.saturating_mul(factor).min(self.caps.max_login_backoff);
        b.until = now + wait;
    }

    /// A successful login from `peer` clears its record.
    pub fn login_succeeded(&self, peer: IpAddr) {
        self.lock().backoff.remove(&peer);
    }
}

impl Slot {
    /// The connection logged in: it no longer counts against
    /// `max_unauthenticated` and can no longer be evicted. False when it
    /// was evicted just before: it must close all the same.
    pub fn logged_in(&mut self) -> bool {
        if std::mem::take(&mut self.counted) && self.admission.lock().unauthenticated.remove(&self.id).is_none() {
            self.released = true;
        }
        self.evicted = None;
        !self.released
    }

    /// The eviction signal, for a session to wait on: it resolves `Ok`
    /// when a newer connection evicts this one, `Err` at login.
    pub fn take_eviction(&mut self) -> Option<oneshot::Receiver<()>> {
        self.evicted.take()
    }

    /// Resolves when a newer connection evicts this one; never once
    /// logged in.
    pub async fn evicted(&mut self) {
        match self.evicted.as_mut() {
            Some(rx) => {
                if rx.await.is_err() {
                    // Sender gone without a send: logged in meanwhile.
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending().await,
        }
    }

    /// The peer's address (`None`: a unix socket peer).
    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// The admission this slot came from: where the session reports its
    /// login failures and successes for the peer.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        // An evicted slot was already given up when it was evicted.
        let given_up = self.released || (self.counted && s.unauthenticated.remove(&self.id).is_none());
        if !given_up {
            s.total = s.total.saturating_sub(1);
        }
        if let Some(peer) = self.peer {
            if let Some(n) = s.per_peer.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    s.per_peer.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, unauth: usize, per_peer: usize) -> Arc<Admission> {
        Admission::new(Caps {
            max_connections: total,
            max_unauthenticated: unauth,
            max_per_peer: per_peer,
            failed_login_pause: Duration::from_secs(1),
            max_login_backoff: Duration::from_secs(5),
        })
    }
    impl Admission {
        fn admit_ip(self: &Arc<Self>, id: u64, peer: IpAddr) -> Result<Slot, Refusal> {
            self.admit(id, Some(peer))
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn oldest_stranger_makes_room_and_logins_are_kept() {
        let a = caps(4, 2, 10);
        let mut s1 = a.admit_ip(1, ip("10.0.0.1")).unwrap();
        assert!(s1.logged_in());
        let mut s2 = a.admit_ip(2, ip("10.0.0.2")).unwrap();
        let s3 = a.admit_ip(3, ip("10.0.0.3")).unwrap();
        assert_eq!(a.counts(), (3, 2));
        // Unauthenticated cap full: 2 (the oldest stranger) is evicted.
        let s4 = a.admit_ip(4, ip("10.0.0.4")).unwrap();
        tokio::time::timeout(Duration::from_millis(100), s2.evicted()).await.expect("2 evicted");
        assert_eq!(a.counts(), (3, 2));
        assert!(!s2.logged_in(), "an evicted connection cannot log in after all");
        drop(s2);
        assert_eq!(a.counts(), (3, 2), "an evicted slot is not released twice");
        let mut s3 = s3;
        s3.logged_in();
        let mut s4 = s4;
        s4.logged_in();
        let _s5 = a.admit_ip(5, ip("10.0.0.5")).unwrap();
        assert_eq!(a.counts(), (4, 1));
        // All 4 slots held, one stranger among them: it makes room again.
        let _s6 = a.admit_ip(6, ip("10.0.0.6")).unwrap();
        assert_eq!(a.counts(), (4, 1));
        let mut s6 = _s6;
        s6.logged_in();
        // Only logins left: refused, and a login is never evicted.
        assert_eq!(a.admit_ip(7, ip("10.0.0.7")).err(), Some(Refusal::Full));
        assert!(tokio::time::timeout(Duration::from_millis(50), s1.evicted()).await.is_err());
        drop((s1, s3, s4, s6));
        assert_eq!(a.counts(), (0, 0));
    }

    #[test]
    fn per_peer_cap_and_release() {
        let a = caps(100, 100, 2);
        let x = a.admit_ip(1, ip("10.0.0.1")).unwrap();
        let _y = a.admit_ip(2, ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit_ip(3, ip("10.0.0.1")).err(), Some(Refusal::PerPeer));
        assert!(a.admit_ip(4, ip("10.0.0.2")).is_ok());
        drop(x);
        assert!(a.admit_ip(5, ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn peers_without_an_address_count_against_the_total_only() {
        let a = caps(3, 3, 1);
        // Two unix peers: no per-peer cap of 1 between them.
        let _x = a.admit(1, None).unwrap();
        let _y = a.admit(2, None).unwrap();
        let _z = a.admit_ip(3, ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit_ip(4, ip("10.0.0.1")).err(), Some(Refusal::PerPeer));
        assert_eq!(a.counts(), (3, 3));
        drop(_x);
        assert_eq!(a.counts(), (2, 2));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_clears_on_success() {
        let a = caps(10, 10, 10);
        let p = ip("10.0.0.9");
        assert_eq!(a.backoff_until(p), None);
        let waits: Vec<Duration> = (0..5)
            .map(|_| {
                let now = Instant::now();
                a.login_failed(p);
                a.backoff_until(p).unwrap().duration_since(now)
            })
            .collect();
        for (w, want) in waits.iter().zip([1, 2, 4, 5, 5]) {
            assert!(w.as_millis().abs_diff(want * 1000) < 100, "{waits:?}");
        }
        assert_eq!(a.backoff_until(ip("10.0.0.8")), None);
        a.login_succeeded(p);
        assert_eq!(a.backoff_until(p), None);
    }
}
