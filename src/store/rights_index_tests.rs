//! The linear ACL parser and the rights index layout (bounded handles,
//! the one-time rebuild of a database written with an older layout).

use super::*;
use crate::store::engine::Batch;
use crate::store::tests::{admin, cfg, open_at, pairs, rights};
use crate::store::StoreConfig;

/// The keys of one key space, through the engine.
fn keys(s: &Directory, space: u8) -> Vec<Bytes> {
    s.engine().scan_prefix(&[space]).map(|kv| kv.unwrap().0).collect()
}

#[test]
fn parser_keeps_last_rights_at_the_last_place_and_skips_empty_ids() {
    let v = parse_acl(b"a\tlr\t\tzz\tb\tx\ta\tlrs\tc\t\tb\ty\t");
    let want: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b"a".to_vec(), b"lrs".to_vec()), (b"c".to_vec(), b"".to_vec()), (b"b".to_vec(), b"y".to_vec())];
    assert_eq!(v, want);
    // A trailing identifier without rights is no entry.
    assert_eq!(parse_acl(b"a\tl\tdangling"), vec![(b"a".to_vec(), b"l".to_vec())]);
}

#[test]
fn parser_is_linear_on_a_large_acl_with_repeats() {
    // 200,000 entries over 100,000 identifiers, each listed twice: the
    // quadratic parser took minutes on this; the answer is each one once,
    // with its second rights, in the order of the second listing.
    let mut acl = Vec::new();
    for round in 0..2 {
        for i in 0..100_000 {
            acl.extend_from_slice(format!("id{i}\t{}\t", if round == 0 { "l" } else { "lr" }).as_bytes());
        }
    }
    let started = std::time::Instant::now();
    let v = parse_acl(&acl);
    assert_eq!(v.len(), 100_000);
    assert!(v.iter().all(|(_, r)| r == b"lr"));
    assert_eq!(v[0].0, b"id0");
    assert_eq!(v[99_999].0, b"id99999");
    // Generous: about 20 ms in a debug build.
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn rights_keys_hold_a_bounded_handle_of_the_name() {
    let s = open_at(&StoreConfig::memory(), &[]).unwrap();
    let long = format!("shared.{}", "n".repeat(1000));
    let short = "user.user7";
    let acl: Vec<u8> = (0..100).flat_map(|i| format!("user{i}\tlrs\t").into_bytes()).collect();
    s.activate(&admin(), long.as_bytes(), b"be1!p", &acl).await.unwrap();
    let db = s.engine();
    let rights_keys = keys(&s, key::RIGHTS);
    assert_eq!(rights_keys.len(), 100);
    // A long name: a handle of LONG_HANDLE bytes, not the name, and one
    // key that maps the handle back.
    for k in &rights_keys {
        assert!(k.len() <= 1 + "user99".len() + 1 + key::LONG_HANDLE, "{} bytes", k.len());
    }
    assert_eq!(keys(&s, key::HANDLES).len(), 1);
    // A short name is its own handle: no lookup key, keys in LIST order.
    s.activate(&admin(), short.as_bytes(), b"be1!p", b"user7\tlr\t").await.unwrap();
    let part = key::mailbox_part(short.as_bytes());
    assert_eq!(db.get(&key::rights_key(b"user7", &part)).unwrap().as_deref(), Some(&b"lr"[..]));
    assert_eq!(keys(&s, key::HANDLES).len(), 1);
    assert_eq!(rights(&s, "user7", &[]), pairs(&[(&long, "lrs"), (short, "lr")]));
    // Removing the ACLs removes every key, the handle's too.
    s.activate(&admin(), long.as_bytes(), b"be1!p", b"").await.unwrap();
    s.activate(&admin(), short.as_bytes(), b"be1!p", b"").await.unwrap();
    assert_eq!(keys(&s, key::RIGHTS).len(), 0);
    assert_eq!(keys(&s, key::HANDLES).len(), 0);
    assert!(rights(&s, "user7", &[]).is_empty());
}

#[tokio::test]
async fn a_database_with_the_old_layout_is_rebuilt_once_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(&cfg(&dir), &[]).unwrap();
    let a = admin();
    s.activate(&a, b"user.bob", b"be1!p", b"bob\tlrswipkxtecdan\t").await.unwrap();
    s.activate(&a, b"user.alice", b"be1!p", b"alice\tlrs\tbob\tlr\t").await.unwrap();
    s.activate(&a, b"shared..odd", b"be2!p", b"anyone\tlrs\t-bob\ts\t").await.unwrap();
    let want_bob = rights(&s, "bob", &[]);
    assert_eq!(want_bob, pairs(&[("shared..odd", "lr"), ("user.alice", "lr"), ("user.bob", "lrswipkxtecdan")]));
    // Turn it into a database of the old layout: `r id 0 part` -> rights,
    // no digest keys, no layout key; plus a stale old key that the values
    // do not back (the rebuild trusts the values only).
    let db = s.engine().clone();
    let mut b = Batch::default();
    for k in keys(&s, key::RIGHTS).into_iter().chain(keys(&s, key::HANDLES)) {
        b.remove(k);
    }
    b.remove(key::rights_layout_key());
    let old_key = |id: &[u8], name: &[u8]| {
        let mut k = vec![key::RIGHTS];
        k.extend_from_slice(id);
        k.push(0);
        k.extend_from_slice(&key::mailbox_part(name));
        k
    };
    b.insert(old_key(b"bob", b"user.bob"), &b"lrswipkxtecdan"[..]);
    b.insert(old_key(b"bob", b"user.alice"), &b"lr"[..]);
    b.insert(old_key(b"bob", b"user.gone"), &b"lr"[..]);
    db.apply_unnumbered(b).unwrap();
    db.sync_now().unwrap();
    drop(db);
    drop(s);
    let s = open_at(&cfg(&dir), &[]).unwrap();
    assert_eq!(rights(&s, "bob", &[]), want_bob);
    assert_eq!(rights(&s, "carol", &[]), pairs(&[("shared..odd", "lrs")]));
    assert_eq!(s.engine().get(&key::rights_layout_key()).unwrap().as_deref(), Some(key::RIGHTS_LAYOUT));
    assert_eq!(keys(&s, key::RIGHTS).len(), 5);
    // Reopening again does not rebuild (the layout key is there) and keeps it.
    drop(s);
    let s = open_at(&cfg(&dir), &[]).unwrap();
    assert_eq!(rights(&s, "bob", &[]), want_bob);
}

/// Measures the synchronous part (parse, rights index, batch) of the worst
/// ACTIVATE the default limits allow: what it holds an async worker for.
/// `cargo test --release --lib worst_allowed_activate_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn worst_allowed_activate_cost() {
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(&cfg(&dir), &[]).unwrap();
    let mut name = b"shared.".to_vec();
    name.resize(1024, b'n');
    let mut location = b"be1!".to_vec();
    location.resize(578, b'p');
    let acl = |round: usize| -> Vec<u8> {
        let rights = if round.is_multiple_of(2) { "lrs" } else { "lrswipkxtecdan" };
        let width = if round % 4 < 2 { 256 } else { 255 };
        (0..1024).flat_map(|i| format!("{i:0>width$}\t{rights}\t").into_bytes()).collect()
    };
    let mut times = Vec::new();
    for round in 0..40 {
        let a = acl(round);
        let t = std::time::Instant::now();
        s.update(&name, |m, g| model::activate(m, &location, &a, g)).unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!("worst allowed ACTIVATE, synchronous part: median {:?}, max {:?}", times[times.len() / 2], times[times.len() - 1]);
}
