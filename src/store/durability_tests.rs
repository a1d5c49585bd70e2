//! Reads wait for the durability of what they saw: the commit thread is
//! held (it publishes nothing) while a write is applied but not durable.

use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::protocol::Entry;

fn open() -> (TempDir, Directory) {
    open_on(false)
}

/// On sled, or (`memory`) on the in-memory engine.
fn open_on(memory: bool) -> (TempDir, Directory) {
    let dir = tempfile::tempdir().unwrap();
    if memory {
        let store = Directory::open(&StoreConfig::memory(), &[], crate::replication::Hub::new(usize::MAX)).unwrap();
        return (dir, store);
    }
    let cfg = StoreConfig::sled(SledConfig {
        path: dir.path().join("db"),
        cache_capacity: 8 << 20,
        compression: false,
        compression_level: 1,
        verify_on_open: Default::default(),
    });
    let store = Directory::open(&cfg, &[], crate::replication::Hub::new(usize::MAX)).unwrap();
    (dir, store)
}

fn admin() -> Identity {
    Identity { servers: None }
}

fn mailbox(name: &str, loc: &str) -> Entry {
    Entry::Mailbox { name: name.into(), location: loc.into(), acl: b"a\tlrs\t".to_vec() }
}

async fn activate(s: &Directory, name: &str, loc: &str) -> Result<WriteOutcome, StoreError> {
    s.activate(&admin(), name.as_bytes(), loc.as_bytes(), b"a\tlrs\t").await
}

/// A name on another stripe than `name`.
fn other_stripe(s: &Directory, name: &str) -> String {
    (0..).map(|i| format!("user.other{i}")).find(|o| s.stripe(o.as_bytes()) != s.stripe(name.as_bytes())).unwrap()
}

/// Hold the commit thread and start an ACTIVATE of `name` that changes
/// it to `loc`; returns once the change is visible (applied, not durable).
async fn pending_write(s: &Directory, name: &str, loc: &str) -> tokio::task::JoinHandle<Result<WriteOutcome, StoreError>> {
    s.inner.seq.hold(true);
    let w = {
        let s = s.clone();
        let (name, loc) = (name.to_string(), loc.to_string());
        tokio::spawn(async move { activate(&s, &name, &loc).await })
    };
    for _ in 0..500 {
        if s.find(&admin(), name.as_bytes()).unwrap() == Some(mailbox(name, loc)) {
            return w;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the write was never applied");
}

/// Not finished within a while: it is waiting.
async fn waits<T>(h: &mut tokio::task::JoinHandle<T>) -> bool {
    tokio::time::timeout(Duration::from_millis(300), h).await.is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_waits_for_the_write_it_saw() {
    let (_d, s) = open();
    activate(&s, "user.a", "A!p").await.unwrap();
    let other = other_stripe(&s, "user.a");
    activate(&s, &other, "A!p").await.unwrap();
    let w = pending_write(&s, "user.a", "A!q").await;
    let mut find = {
        let s = s.clone();
        tokio::spawn(async move { s.find_durable(&admin(), b"user.a").await })
    };
    assert!(waits(&mut find).await, "FIND answered with a write that is not durable");
    // A name of another stripe is answered at once: no wait for fsyncs of
    // unrelated names.
    let unrelated = tokio::time::timeout(Duration::from_secs(2), s.find_durable(&admin(), other.as_bytes())).await;
    assert_eq!(unrelated.expect("FIND of an unrelated name waited").unwrap(), Some(mailbox(&other, "A!p")));
    s.inner.seq.hold(false);
    assert_eq!(find.await.unwrap().unwrap(), Some(mailbox("user.a", "A!q")));
    assert!(w.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_changed_nothing_waits_for_what_it_read() {
    let (_d, s) = open();
    let w = pending_write(&s, "user.a", "A!p").await;
    // The same ACTIVATE again changes nothing, but it read the first one.
    let mut again = {
        let s = s.clone();
        tokio::spawn(async move { activate(&s, "user.a", "A!p").await })
    };
    assert!(waits(&mut again).await, "a write that changed nothing was acknowledged before what it read was durable");
    // RESERVE for a server that has a record changes nothing either.
    let mut reserve = {
        let s = s.clone();
        tokio::spawn(async move { s.reserve(&admin(), b"user.a", b"A!q").await })
    };
    assert!(waits(&mut reserve).await, "a RESERVE that changed nothing did not wait");
    s.inner.seq.hold(false);
    assert!(again.await.unwrap().is_ok());
    assert!(reserve.await.unwrap().is_ok());
    assert!(w.await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_ends_once_what_it_saw_is_durable() {
    let (_d, s) = open();
    let w = pending_write(&s, "user.a", "A!p").await;
    let mark = s.scan_mark();
    let seen: Vec<Entry> = s.list().collect::<Result<_, _>>().unwrap();
    assert_eq!(seen, vec![mailbox("user.a", "A!p")]);
    let mut end = {
        let s = s.clone();
        tokio::spawn(async move { s.scan_durable(mark).await })
    };
    assert!(waits(&mut end).await, "LIST completed before what it listed was durable");
    let mut effective = {
        let s = s.clone();
        tokio::spawn(async move { s.effective_durable(b"user.a").await })
    };
    assert!(waits(&mut effective).await, "an UPDATE stream line was sent before it was durable");
    s.inner.seq.hold(false);
    assert!(end.await.unwrap().is_ok());
    assert_eq!(effective.await.unwrap().unwrap(), Some(mailbox("user.a", "A!p")));
    assert!(w.await.unwrap().is_ok());
}

/// The streams hear a write once it is durable, not when it is applied:
/// while the durable mark is held, a write visible to readers is not in
/// the hub; once the mark moves, it is, before its writer is answered.
async fn streams_hear_a_write_once_it_is_durable(memory: bool) {
    let (_d, s) = open_on(memory);
    let _stream = s.hub().subscribe(&[]);
    let w = pending_write(&s, "user.a", "A!p").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(s.hub().logged_since(0).is_empty(), "a change reached the streams before it was durable");
    s.inner.seq.hold(false);
    assert!(w.await.unwrap().is_ok());
    let got = s.hub().logged_since(0);
    assert_eq!(got, [Change { name: b"user.a".to_vec(), servers: vec![b"A".to_vec()] }]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_hear_a_write_once_it_is_durable_on_sled() {
    streams_hear_a_write_once_it_is_durable(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_hear_a_write_once_it_is_durable_in_memory() {
    streams_hear_a_write_once_it_is_durable(true).await;
}
