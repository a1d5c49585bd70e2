//! Writes publish themselves: every write kind that changes what clients
//! see reaches the hub's streams from inside the directory, once durable,
//! in commit order; a write whose durability failed publishes nothing.
//! The directory is what these tests drive (no session, no caller that
//! could publish for it).

use std::sync::Arc;

use super::engine::memory::MemoryEngine;
use super::*;
use crate::replication::Hub;

fn pair(primary: Option<&str>) -> Vec<ReplicaGroup> {
    vec![ReplicaGroup {
        name: "pr".into(),
        servers: vec![b"P".to_vec(), b"R".to_vec()],
        primary: primary.map(|p| p.as_bytes().to_vec()),
    }]
}

fn admin() -> Identity {
    Identity { servers: None }
}

fn change(name: &str, servers: &[&str]) -> Change {
    Change { name: name.into(), servers: servers.iter().map(|s| s.as_bytes().to_vec()).collect() }
}

/// Everything the hub logged, oldest first.
fn logged(hub: &Hub) -> Vec<Change> {
    hub.logged_since(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_kind_reaches_the_streams_in_commit_order() {
    let engine = Arc::new(MemoryEngine::new());
    let hub = Hub::new(usize::MAX);
    let stream = hub.subscribe(&[]);
    let d = Directory::open_with(engine.clone(), "memory".into(), &pair(None), hub.clone()).unwrap();
    let a = admin();
    let done = WriteOutcome { reply: Reply::Done };
    assert_eq!(d.reserve(&a, b"a", b"P!p").await.unwrap(), done);
    assert_eq!(d.activate(&a, b"a", b"P!p", b"acl").await.unwrap(), done);
    d.activate(&a, b"b", b"R!p", b"acl").await.unwrap();
    // A replica's copy: nothing clients see changes, nothing is published.
    d.activate(&a, b"b", b"P!p", b"acl").await.unwrap();
    assert_eq!(d.set_primary("pr", Some(b"P")).await.unwrap(), 1);
    d.activate(&a, b"c", b"X!p", b"acl").await.unwrap();
    // A conflict: the first fact stays effective, nothing changes for clients.
    d.activate(&a, b"c", b"Y!p", b"acl").await.unwrap();
    d.resolve(b"c", b"Y").await.unwrap();
    d.delete_record(b"c", b"Y!").await.unwrap();
    d.deactivate(&a, b"a", b"P!p").await.unwrap();
    d.delete(&a, b"a").await.unwrap();
    // Refused writes publish nothing.
    assert_eq!(d.reserve(&a, b"c", b"Z!p").await.unwrap(), WriteOutcome { reply: Reply::No(Refusal::MailboxExists) });
    assert_eq!(
        logged(&hub),
        [
            change("a", &["P"]),
            change("a", &["P"]),
            change("b", &["R"]),
            change("b", &["R", "P"]),
            change("c", &["X"]),
            change("c", &["X", "Y"]),
            change("c", &["Y", "X"]),
            change("a", &["P"]),
            change("a", &["P"]),
        ]
    );
    // What a stream takes: each name once, in first-change order.
    let names: Vec<Vec<u8>> = stream.subscription().take().unwrap().iter().map(|n| n.to_vec()).collect();
    assert_eq!(names, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    drop(d);

    // The takeover at open publishes too: the configured primary changed
    // (R), it wins over the run-time one (P) and takes b over.
    let hub = Hub::new(usize::MAX);
    let _stream = hub.subscribe(&[]);
    let d = Directory::open_with(engine, "memory".into(), &pair(Some("R")), hub.clone()).unwrap();
    assert_eq!(logged(&hub), [change("b", &["P", "R"])]);
    assert_eq!(d.find(&a, b"b").unwrap().map(|e| e.name().to_vec()), Some(b"b".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_reach_the_streams_in_commit_order() {
    // Many writers on many stripes: what the hub logs for each name is in
    // the order of that name's writes, and every write is there.
    let hub = Hub::new(usize::MAX);
    let _stream = hub.subscribe(&[]);
    let d = Directory::open(&StoreConfig::memory(), &[], hub.clone()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let name = format!("user.u{t}.m{i}");
                d.reserve(&admin(), name.as_bytes(), b"A!p").await.unwrap();
                d.activate(&admin(), name.as_bytes(), b"B!p", b"acl").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = logged(&hub);
    assert_eq!(got.len(), 8 * 20 * 2);
    for t in 0..8 {
        for i in 0..20 {
            let name = format!("user.u{t}.m{i}").into_bytes();
            let mine: Vec<&Change> = got.iter().filter(|c| c.name == name).collect();
            // RESERVE on A, then ACTIVATE on B over the reservation (an
            // XFER completing): A's line, then B's.
            assert_eq!(mine.len(), 2);
            assert_eq!(mine[0].servers, [b"A".to_vec()]);
            assert_eq!(mine[1].servers, [b"A".to_vec(), b"B".to_vec()]);
        }
    }
}

#[tokio::test]
async fn a_write_whose_durability_failed_publishes_nothing() {
    let engine = Arc::new(MemoryEngine::new());
    let hub = Hub::new(usize::MAX);
    let _stream = hub.subscribe(&[]);
    let d = Directory::open_with(engine.clone(), "memory".into(), &[], hub.clone()).unwrap();
    engine.fail_durability(true);
    let r = d.activate(&admin(), b"lost", b"A!p", b"acl").await;
    assert!(matches!(r, Err(StoreError::Durability(_))), "{r:?}");
    assert!(r.unwrap_err().is_storage_failure());
    assert_eq!(logged(&hub), []);
    engine.fail_durability(false);
    d.activate(&admin(), b"kept", b"A!p", b"acl").await.unwrap();
    // Only the durable write, and the failed one never later.
    assert_eq!(logged(&hub), [change("kept", &["A"])]);
}
