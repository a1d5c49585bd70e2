//! Store tests: the facts-model table row by row (docs/facts-model.md),
//! ordering, prefix LIST, groups and primaries, admin reads, durability,
//! and a property test over random interleavings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

use super::*;
use crate::protocol::Entry;
use crate::replication::hub::Registration;
use crate::replication::Hub;
use Refusal::{MailboxExists as MAILBOX_EXISTS, NoSuchMailbox as DOESNT_EXIST, NotActive as NOT_ACTIVE, NotServed as NOT_SERVED};

pub(super) fn sled_cfg(dir: &TempDir) -> SledConfig {
    SledConfig { path: dir.path().join("db"), cache_capacity: 8 << 20, compression: false, compression_level: 1, verify_on_open: Default::default() }
}

pub(super) fn cfg(dir: &TempDir) -> StoreConfig {
    StoreConfig::sled(sled_cfg(dir))
}

/// A directory with a tap on its hub: each write answers with what it
/// published to the streams (the changes UPDATE streams were handed), so
/// that the tests see the changes of every write through the directory
/// itself, as a stream would.
pub(super) struct Tapped {
    d: Directory,
    _tap: Registration,
    /// The revision of the first change not yet taken by a write.
    next: AtomicU64,
}

/// A write's answer and the changes it published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Out {
    pub reply: Reply,
    pub changes: Vec<Change>,
}

impl std::ops::Deref for Tapped {
    type Target = Directory;

    fn deref(&self) -> &Directory {
        &self.d
    }
}

impl Tapped {
    fn new(d: Directory) -> Tapped {
        // Registered and never taking: every change stays logged.
        let tap = d.hub().subscribe(&[]);
        let next = AtomicU64::new(d.hub().head_revision());
        Tapped { d, _tap: tap, next }
    }

    /// What was published since the last write.
    pub(super) fn published(&self) -> Vec<Change> {
        let from = self.next.load(Ordering::Acquire);
        let got = self.d.hub().logged_since(from);
        self.next.store(self.d.hub().head_revision(), Ordering::Release);
        got
    }

    fn out(&self, r: Result<WriteOutcome, StoreError>) -> Result<Out, StoreError> {
        let changes = self.published();
        r.map(|o| Out { reply: o.reply, changes })
    }

    pub(super) async fn reserve(&self, who: &Identity, name: &[u8], location: &[u8]) -> Result<Out, StoreError> {
        let r = self.d.reserve(who, name, location).await;
        self.out(r)
    }

    pub(super) async fn activate(&self, who: &Identity, name: &[u8], location: &[u8], acl: &[u8]) -> Result<Out, StoreError> {
        let r = self.d.activate(who, name, location, acl).await;
        self.out(r)
    }

    pub(super) async fn deactivate(&self, who: &Identity, name: &[u8], location: &[u8]) -> Result<Out, StoreError> {
        let r = self.d.deactivate(who, name, location).await;
        self.out(r)
    }

    pub(super) async fn delete(&self, who: &Identity, name: &[u8]) -> Result<Out, StoreError> {
        let r = self.d.delete(who, name).await;
        self.out(r)
    }

    pub(super) async fn resolve(&self, name: &[u8], server: &[u8]) -> Result<Out, StoreError> {
        let r = self.d.resolve(name, server).await;
        self.out(r)
    }

    pub(super) async fn delete_record(&self, name: &[u8], location: &[u8]) -> Result<Out, StoreError> {
        let r = self.d.delete_record(name, location).await;
        self.out(r)
    }

    /// The changes published, checked against the count returned.
    pub(super) async fn set_primary(&self, group: &str, server: Option<&[u8]>) -> Result<Vec<Change>, StoreError> {
        let r = self.d.set_primary(group, server).await;
        let changes = self.published();
        let n = r?;
        assert_eq!(n, changes.len(), "set_primary's count and what it published");
        Ok(changes)
    }
}

/// Open a directory with its own hub, tapped.
pub(super) fn open_at(cfg: &StoreConfig, groups: &[ReplicaGroup]) -> Result<Tapped, StoreError> {
    Directory::open(cfg, groups, Hub::new(usize::MAX)).map(Tapped::new)
}

/// A directory on the in-memory engine (the folder is for tests that also
/// write files).
fn open(groups: &[ReplicaGroup]) -> (TempDir, Tapped) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&StoreConfig::memory(), groups).unwrap();
    (dir, store)
}

/// The same on sled.
fn open_sled(groups: &[ReplicaGroup]) -> (TempDir, Tapped) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_at(&cfg(&dir), groups).unwrap();
    (dir, store)
}

fn group(name: &str, servers: &[&str], primary: Option<&str>) -> ReplicaGroup {
    ReplicaGroup {
        name: name.into(),
        servers: servers.iter().map(|s| s.as_bytes().to_vec()).collect(),
        primary: primary.map(|p| p.as_bytes().to_vec()),
    }
}

/// The replica pair used by most group rows: P and R replicate each other.
fn pair() -> Vec<ReplicaGroup> {
    vec![group("pr", &["P", "R"], None)]
}

pub(super) fn admin() -> Identity {
    Identity { servers: None }
}

fn as_(servers: &[&str]) -> Identity {
    Identity { servers: Some(servers.iter().map(|s| s.as_bytes().to_vec()).collect()) }
}

fn mailbox(name: &str, loc: &str, acl: &str) -> Entry {
    Entry::Mailbox { name: name.into(), location: loc.into(), acl: acl.into() }
}

fn reserve_line(name: &str, loc: &str) -> Entry {
    Entry::Reserve { name: name.into(), location: loc.into() }
}

fn change(name: &str, servers: &[&str]) -> Change {
    Change { name: name.into(), servers: servers.iter().map(|s| s.as_bytes().to_vec()).collect() }
}

fn done(changes: Vec<Change>) -> Out {
    Out { reply: Reply::Done, changes }
}

fn no(r: Refusal) -> Out {
    Out { reply: Reply::No(r), changes: vec![] }
}

fn list(s: &Directory) -> Vec<Entry> {
    s.list().collect::<Result<_, _>>().unwrap()
}

fn list_prefix(s: &Directory, prefix: &str) -> Vec<Entry> {
    s.list_prefix(prefix.as_bytes()).collect::<Result<_, _>>().unwrap()
}

/// (server, state, effective) of every record, oldest first.
fn recs(s: &Directory, name: &str) -> Vec<(String, RecordState, bool)> {
    s.records(name.as_bytes())
        .unwrap()
        .into_iter()
        .map(|r| (String::from_utf8(r.server).unwrap(), r.state, r.effective))
        .collect()
}

fn eff(s: &Directory, name: &str) -> Option<Entry> {
    s.effective(name.as_bytes()).unwrap()
}

use RecordState::{Active, Moving, Reserved};

// ---- RESERVE ----

#[tokio::test]
async fn reserve_no_records_reserves_and_becomes_effective() {
    let (_d, s) = open(&[]);
    let out = s.reserve(&admin(), b"user.x", b"A!p").await.unwrap();
    assert_eq!(out, done(vec![change("user.x", &["A"])]));
    assert_eq!(eff(&s, "user.x"), Some(reserve_line("user.x", "A!p")));
    assert_eq!(recs(&s, "user.x"), [("A".into(), Reserved, true)]);
}

#[tokio::test]
async fn reserve_when_server_already_has_a_record_changes_nothing() {
    let (_d, s) = open(&[]);
    s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap();
    // Never demote an active record (Cyrus 3.6.1 does), not even to another partition.
    assert_eq!(s.reserve(&admin(), b"n", b"A!p").await.unwrap(), done(vec![]));
    assert_eq!(s.reserve(&as_(&["A"]), b"n", b"A!q").await.unwrap(), done(vec![]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "A!p", "acl")));
    // A reserved record stays as it was too.
    s.reserve(&admin(), b"m", b"A!p").await.unwrap();
    assert_eq!(s.reserve(&admin(), b"m", b"A!q").await.unwrap(), done(vec![]));
    assert_eq!(eff(&s, "m"), Some(reserve_line("m", "A!p")));
}

#[tokio::test]
async fn reserve_with_only_group_records_adds_a_shadow() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    // The replica's RESERVE is a fact: accepted, E unchanged (Cyrus refuses it).
    assert_eq!(s.reserve(&as_(&["R"]), b"n", b"R!p").await.unwrap(), done(vec![]));
    assert_eq!(recs(&s, "n"), [("P".into(), Active, true), ("R".into(), Reserved, false)]);
}

#[tokio::test]
async fn reserve_with_only_group_records_and_no_effective_becomes_effective() {
    let (_d, s) = open(&[group("g", &["P", "R", "Q"], None)]);
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    // P deletes: the successor must be outside P's group, so none; R's shadow stays.
    assert_eq!(s.delete(&as_(&["P"]), b"n").await.unwrap(), done(vec![change("n", &["P"])]));
    assert_eq!(eff(&s, "n"), None);
    assert_eq!(s.reserve(&as_(&["Q"]), b"n", b"Q!p").await.unwrap(), done(vec![change("n", &["Q"])]));
    assert_eq!(eff(&s, "n"), Some(reserve_line("n", "Q!p")));
}

#[tokio::test]
async fn reserve_refused_when_a_server_outside_the_group_has_a_record() {
    let (_d, s) = open(&pair());
    s.activate(&admin(), b"a", b"A!p", b"acl").await.unwrap();
    assert_eq!(s.reserve(&admin(), b"a", b"C!p").await.unwrap(), no(MAILBOX_EXISTS));
    s.reserve(&admin(), b"r", b"A!p").await.unwrap();
    assert_eq!(s.reserve(&admin(), b"r", b"P!p").await.unwrap(), no(MAILBOX_EXISTS));
    s.activate(&admin(), b"m", b"A!p", b"acl").await.unwrap();
    s.deactivate(&admin(), b"m", b"A!p").await.unwrap();
    assert_eq!(s.reserve(&admin(), b"m", b"C!p").await.unwrap(), no(MAILBOX_EXISTS));
    assert_eq!(recs(&s, "a"), [("A".into(), Active, true)]);
    assert_eq!(recs(&s, "r"), [("A".into(), Reserved, true)]);
    assert_eq!(recs(&s, "m"), [("A".into(), Moving, true)]);
}

// ---- ACTIVATE ----

#[tokio::test]
async fn activate_with_no_effective_record_makes_s_effective() {
    let (_d, s) = open(&[]);
    let out = s.activate(&admin(), b"n", b"A!p", b"u\tlrs\t").await.unwrap();
    assert_eq!(out, done(vec![change("n", &["A"])]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "A!p", "u\tlrs\t")));
}

#[tokio::test]
async fn activate_when_e_is_s_streams_only_if_the_line_changed() {
    let (_d, s) = open(&[]);
    s.reserve(&admin(), b"n", b"A!p").await.unwrap();
    // RESERVE -> MAILBOX: the line changed.
    assert_eq!(s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap(), done(vec![change("n", &["A"])]));
    // A foldermodseq re-ACTIVATE: silent.
    assert_eq!(s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap(), done(vec![]));
    // ACL and partition changes stream.
    assert_eq!(s.activate(&admin(), b"n", b"A!p", b"acl2").await.unwrap(), done(vec![change("n", &["A"])]));
    assert_eq!(s.activate(&admin(), b"n", b"A!q", b"acl2").await.unwrap(), done(vec![change("n", &["A"])]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "A!q", "acl2")));
    assert_eq!(recs(&s, "n").len(), 1);
}

#[tokio::test]
async fn activate_when_e_is_a_group_sibling_is_a_shadow() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    assert_eq!(s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap(), done(vec![]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "P!p", "acl")));
    assert_eq!(recs(&s, "n"), [("P".into(), Active, true), ("R".into(), Active, false)]);
    assert!(s.conflicts().unwrap().is_empty());
}

#[tokio::test]
async fn activate_by_the_group_primary_takes_over() {
    let (_d, s) = open(&[group("pr", &["P", "R"], Some("R"))]);
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    assert_eq!(s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap(), done(vec![change("n", &["P", "R"])]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "R!p", "acl")));
    // The non-primary's later ACTIVATE is a shadow again.
    assert_eq!(s.activate(&as_(&["P"]), b"n", b"P!p", b"acl2").await.unwrap(), done(vec![]));
}

#[tokio::test]
async fn activate_over_a_moving_record_outside_the_group_completes_an_xfer() {
    let (_d, s) = open(&[]);
    s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap();
    assert_eq!(s.deactivate(&admin(), b"n", b"A!p").await.unwrap(), done(vec![change("n", &["A"])]));
    assert_eq!(eff(&s, "n"), Some(reserve_line("n", "A!p")));
    assert_eq!(s.activate(&admin(), b"n", b"B!q", b"acl").await.unwrap(), done(vec![change("n", &["A", "B"])]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "B!q", "acl")));
    // A's moving record is gone.
    assert_eq!(recs(&s, "n"), [("B".into(), Active, true)]);
}

#[tokio::test]
async fn activate_over_a_reserved_record_outside_the_group_takes_over_and_keeps_it() {
    let (_d, s) = open(&[]);
    s.reserve(&admin(), b"n", b"X!p").await.unwrap();
    assert_eq!(s.activate(&admin(), b"n", b"B!q", b"acl").await.unwrap(), done(vec![change("n", &["X", "B"])]));
    assert_eq!(recs(&s, "n"), [("X".into(), Reserved, false), ("B".into(), Active, true)]);
}

#[tokio::test]
async fn activate_over_an_active_record_outside_the_group_is_a_conflict() {
    let (_d, s) = open(&[]);
    s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap();
    assert_eq!(s.activate(&admin(), b"n", b"C!p", b"other").await.unwrap(), done(vec![]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "A!p", "acl")));
    assert_eq!(recs(&s, "n"), [("A".into(), Active, true), ("C".into(), Active, false)]);
    assert_eq!(s.conflicts_seen(), 1);
    let c = s.conflicts().unwrap();
    assert_eq!(c, [Conflict { name: b"n".to_vec(), effective: b"A".to_vec(), others: vec![b"C".to_vec()] }]);
    // Each side's LIST "S!" shows its own record, so neither -m wipes it.
    assert_eq!(list_prefix(&s, "C!"), [mailbox("n", "C!p", "other")]);
    assert_eq!(list_prefix(&s, "A!"), [mailbox("n", "A!p", "acl")]);
}

// ---- DEACTIVATE ----

#[tokio::test]
async fn deactivate_active_becomes_moving_and_streams_reserve() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    // The shadow's DEACTIVATE changes no line.
    assert_eq!(s.deactivate(&as_(&["R"]), b"n", b"R!p").await.unwrap(), done(vec![]));
    // E's DEACTIVATE shows the location supplied.
    assert_eq!(s.deactivate(&as_(&["P"]), b"n", b"P!q").await.unwrap(), done(vec![change("n", &["P"])]));
    assert_eq!(eff(&s, "n"), Some(reserve_line("n", "P!q")));
    // The ACL is kept: a failed XFER re-ACTIVATEs.
    let acl: Vec<_> = s.records(b"n").unwrap().into_iter().map(|r| r.acl).collect();
    assert_eq!(acl, [b"acl".to_vec(), b"acl".to_vec()]);
}

#[tokio::test]
async fn deactivate_moving_is_an_idempotent_retry() {
    let (_d, s) = open(&[]);
    s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap();
    s.deactivate(&admin(), b"n", b"A!p").await.unwrap();
    assert_eq!(s.deactivate(&admin(), b"n", b"A!p").await.unwrap(), done(vec![]));
    assert_eq!(recs(&s, "n"), [("A".into(), Moving, true)]);
    // XFER failure: the source re-activates.
    assert_eq!(s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap(), done(vec![change("n", &["A"])]));
}

#[tokio::test]
async fn deactivate_reserved_is_not_active() {
    let (_d, s) = open(&[]);
    s.reserve(&admin(), b"n", b"A!p").await.unwrap();
    assert_eq!(s.deactivate(&admin(), b"n", b"A!p").await.unwrap(), no(NOT_ACTIVE));
    assert_eq!(recs(&s, "n"), [("A".into(), Reserved, true)]);
}

#[tokio::test]
async fn deactivate_without_a_record_of_s_does_not_exist() {
    let (_d, s) = open(&[]);
    // Cyrus 3.6.1 crashes here.
    assert_eq!(s.deactivate(&admin(), b"n", b"A!p").await.unwrap(), no(DOESNT_EXIST));
    // The name exists on another server: not active here (Cyrus's text for
    // a name held elsewhere; fixtures/captures/conn-0033.txt).
    s.activate(&admin(), b"n", b"B!p", b"acl").await.unwrap();
    assert_eq!(s.deactivate(&admin(), b"n", b"A!p").await.unwrap(), no(NOT_ACTIVE));
    assert_eq!(recs(&s, "n"), [("B".into(), Active, true)]);
}

// ---- DELETE ----

#[tokio::test]
async fn delete_known_identity_removes_only_its_record() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    // The replica's DELETE removes its shadow; frontends hear nothing.
    assert_eq!(s.delete(&as_(&["R"]), b"n").await.unwrap(), done(vec![]));
    assert_eq!(recs(&s, "n"), [("P".into(), Active, true)]);
    // Absent: still OK.
    assert_eq!(s.delete(&as_(&["R"]), b"n").await.unwrap(), done(vec![]));
    assert_eq!(s.delete(&as_(&["P"]), b"n").await.unwrap(), done(vec![change("n", &["P"])]));
    assert!(recs(&s, "n").is_empty());
    assert_eq!(s.delete(&as_(&["P"]), b"n").await.unwrap(), done(vec![]));
}

#[tokio::test]
async fn delete_known_identity_of_e_with_a_group_shadow_leaves_no_effective_record() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    assert_eq!(s.delete(&as_(&["P"]), b"n").await.unwrap(), done(vec![change("n", &["P"])]));
    assert_eq!(eff(&s, "n"), None);
    assert_eq!(recs(&s, "n"), [("R".into(), Active, false)]);
    assert!(list(&s).is_empty());
    // R still sees its own fact in LIST "R!".
    assert_eq!(list_prefix(&s, "R!"), [mailbox("n", "R!p", "acl")]);
}

#[tokio::test]
async fn delete_known_identity_successor_is_the_oldest_active_record_outside_the_group() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    s.activate(&as_(&["C"]), b"n", b"C!p", b"c1").await.unwrap();
    s.activate(&as_(&["D"]), b"n", b"D!p", b"d1").await.unwrap();
    assert_eq!(s.conflicts_seen(), 2);
    assert_eq!(s.delete(&as_(&["P"]), b"n").await.unwrap(), done(vec![change("n", &["P", "C"])]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "C!p", "c1")));
    // D still conflicts with C.
    assert_eq!(s.conflicts().unwrap().len(), 1);
}

#[tokio::test]
async fn delete_successor_falls_back_to_a_reserved_record_outside_the_group() {
    let (_d, s) = open(&[]);
    s.reserve(&admin(), b"n", b"X!p").await.unwrap();
    s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap();
    assert_eq!(s.delete(&as_(&["A"]), b"n").await.unwrap(), done(vec![change("n", &["A", "X"])]));
    assert_eq!(eff(&s, "n"), Some(reserve_line("n", "X!p")));
}

#[tokio::test]
async fn delete_unknown_identity_removes_e_and_its_group() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    s.activate(&as_(&["C"]), b"n", b"C!p", b"c").await.unwrap();
    assert_eq!(s.delete(&admin(), b"n").await.unwrap(), done(vec![change("n", &["P", "C"])]));
    assert_eq!(recs(&s, "n"), [("C".into(), Active, true)]);
    // One record: exactly Cyrus.
    assert_eq!(s.delete(&admin(), b"n").await.unwrap(), done(vec![change("n", &["C"])]));
    assert!(recs(&s, "n").is_empty());
}

#[tokio::test]
async fn delete_unknown_identity_with_only_shadows_removes_everything() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    s.delete(&as_(&["P"]), b"n").await.unwrap();
    assert_eq!(s.delete(&admin(), b"n").await.unwrap(), done(vec![]));
    assert!(recs(&s, "n").is_empty());
    assert!(list_prefix(&s, "R!").is_empty());
}

#[tokio::test]
async fn delete_of_an_unknown_name_is_done() {
    // Cyrus 3.6.1 segfaults here; DELETE is idempotent.
    let (_d, s) = open(&[]);
    assert_eq!(s.delete(&admin(), b"nope").await.unwrap(), done(vec![]));
    assert_eq!(s.delete(&as_(&["A"]), b"nope").await.unwrap(), done(vec![]));
}

// ---- FIND ----

#[tokio::test]
async fn find_presents_the_effective_record() {
    let (_d, s) = open(&[]);
    assert_eq!(s.find(&admin(), b"n").unwrap(), None);
    s.reserve(&admin(), b"n", b"A!p").await.unwrap();
    assert_eq!(s.find(&admin(), b"n").unwrap(), Some(reserve_line("n", "A!p")));
    s.activate(&admin(), b"n", b"A!p", b"acl").await.unwrap();
    assert_eq!(s.find(&as_(&["B"]), b"n").unwrap(), Some(mailbox("n", "A!p", "acl")));
}

#[tokio::test]
async fn find_by_a_replica_without_a_record_answers_nothing() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"n", b"P!p", b"acl").await.unwrap();
    // ctl_mboxlist -m on R then registers its copy instead of deleting it.
    assert_eq!(s.find(&as_(&["R"]), b"n").unwrap(), None);
    assert_eq!(s.find(&admin(), b"n").unwrap(), Some(mailbox("n", "P!p", "acl")));
    assert_eq!(s.find(&as_(&["P"]), b"n").unwrap(), Some(mailbox("n", "P!p", "acl")));
    assert_eq!(s.find(&as_(&["C"]), b"n").unwrap(), Some(mailbox("n", "P!p", "acl")));
    s.activate(&as_(&["R"]), b"n", b"R!p", b"acl").await.unwrap();
    assert_eq!(s.find(&as_(&["R"]), b"n").unwrap(), Some(mailbox("n", "P!p", "acl")));
}

// ---- identities ----

#[tokio::test]
async fn a_backend_may_only_assert_its_own_locations() {
    let (_d, s) = open(&[]);
    let a = as_(&["A"]);
    assert_eq!(s.reserve(&a, b"n", b"B!p").await.unwrap(), no(NOT_SERVED));
    assert_eq!(s.activate(&a, b"n", b"B!p", b"acl").await.unwrap(), no(NOT_SERVED));
    assert_eq!(s.deactivate(&a, b"n", b"B!p").await.unwrap(), no(NOT_SERVED));
    assert!(recs(&s, "n").is_empty());
    // A login bound to several servers speaks for each.
    let ab = as_(&["A", "B"]);
    assert_eq!(s.activate(&ab, b"n", b"B!p", b"acl").await.unwrap(), done(vec![change("n", &["B"])]));
    // The admin acts as the server named in the location.
    assert_eq!(s.activate(&admin(), b"m", b"Z!p", b"acl").await.unwrap(), done(vec![change("m", &["Z"])]));
    assert_eq!(recs(&s, "m"), [("Z".into(), Active, true)]);
}

#[tokio::test]
async fn a_location_without_bang_is_one_record_of_server_empty() {
    let (_d, s) = open(&[]);
    s.reserve(&admin(), b"n", b"default").await.unwrap();
    s.activate(&admin(), b"n", b"default", b"acl").await.unwrap();
    s.activate(&admin(), b"n", b"other", b"acl").await.unwrap();
    assert_eq!(recs(&s, "n"), [("".into(), Active, true)]);
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "other", "acl")));
    assert_eq!(list_prefix(&s, "oth"), [mailbox("n", "other", "acl")]);
    assert!(list_prefix(&s, "def").is_empty());
}

// ---- LIST ----

#[tokio::test]
async fn list_is_in_cyrus_order_and_skips_names_without_effective_record() {
    let (_d, s) = open(&pair());
    let names = ["shared.o_c", "shared.oA", "shared.o-a", "shared.o a", "shared.o.b.c", "shared.o.b", "shared.o", "shared.O"];
    for n in names {
        s.activate(&admin(), n.as_bytes(), b"A!p", b"").await.unwrap();
    }
    s.activate(&admin(), b"example.com!user.a", b"A!p", b"").await.unwrap();
    s.activate(&admin(), b"DELETED.user.x.y.6B0C8724", b"A!p", b"").await.unwrap();
    s.activate(&admin(), b"user.x.y", b"A!p", b"").await.unwrap();
    s.activate(&as_(&["P"]), b"gone", b"P!p", b"").await.unwrap();
    s.activate(&as_(&["R"]), b"gone", b"R!p", b"").await.unwrap();
    s.delete(&as_(&["P"]), b"gone").await.unwrap();
    let got: Vec<String> = list(&s).iter().map(|e| String::from_utf8(e.name().to_vec()).unwrap()).collect();
    assert_eq!(
        got,
        [
            "DELETED.user.x.y.6B0C8724",
            "example.com!user.a",
            "shared.O",
            "shared.o",
            "shared.o.b",
            "shared.o.b.c",
            "shared.o a",
            "shared.o-a",
            "shared.oA",
            "shared.o_c",
            "user.x.y"
        ]
    );
}

#[tokio::test]
async fn list_prefix_server_and_partition() {
    let (_d, s) = open(&[]);
    s.activate(&admin(), b"user.b", b"be1!p1", b"acl").await.unwrap();
    s.activate(&admin(), b"user.a", b"be1!p2", b"acl").await.unwrap();
    s.reserve(&admin(), b"user.c", b"be1!p1").await.unwrap();
    s.activate(&admin(), b"user.d", b"be10!p1", b"acl").await.unwrap();
    s.activate(&admin(), b"user.e", b"be2!p1", b"acl").await.unwrap();
    // "S!": every record of S, in order, not S's namesakes with a longer name.
    assert_eq!(
        list_prefix(&s, "be1!"),
        [mailbox("user.a", "be1!p2", "acl"), mailbox("user.b", "be1!p1", "acl"), reserve_line("user.c", "be1!p1")]
    );
    // "S!p": that partition prefix only.
    assert_eq!(list_prefix(&s, "be1!p1"), [mailbox("user.b", "be1!p1", "acl"), reserve_line("user.c", "be1!p1")]);
    assert!(list_prefix(&s, "be3!").is_empty());
    // Without '!': strncmp on the location, so several servers, merged in order.
    assert_eq!(
        list_prefix(&s, "be1"),
        [
            mailbox("user.a", "be1!p2", "acl"),
            mailbox("user.b", "be1!p1", "acl"),
            reserve_line("user.c", "be1!p1"),
            mailbox("user.d", "be10!p1", "acl")
        ]
    );
    assert_eq!(list_prefix(&s, "").len(), 5);
    assert_eq!(list_prefix(&s, "b"), list_prefix(&s, ""));
    assert_eq!(s.servers_with_prefix(b"be").unwrap(), [b"be1".to_vec(), b"be10".to_vec(), b"be2".to_vec()]);
}

#[tokio::test]
async fn list_prefix_merges_records_of_one_name_on_several_servers() {
    let (_d, s) = open(&pair());
    s.activate(&as_(&["P"]), b"user.a", b"P!x", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"user.a", b"R!x", b"acl").await.unwrap();
    s.activate(&as_(&["R"]), b"user.b", b"R!x", b"acl").await.unwrap();
    s.activate(&as_(&["P"]), b"user.c", b"P!x", b"acl").await.unwrap();
    s.deactivate(&as_(&["P"]), b"user.c", b"P!x").await.unwrap();
    assert_eq!(
        list_prefix(&s, ""),
        [
            mailbox("user.a", "P!x", "acl"),
            mailbox("user.a", "R!x", "acl"),
            mailbox("user.b", "R!x", "acl"),
            reserve_line("user.c", "P!x")
        ]
    );
    // The full LIST shows one line per name.
    assert_eq!(list(&s).len(), 3);
}

// ---- groups, primaries, admin ----

#[tokio::test]
async fn set_primary_makes_the_primary_effective_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let groups = vec![group("pr", &["P", "R"], None)];
    {
        let s = open_at(&cfg(&dir), &groups).unwrap();
        for n in ["a", "b", "c"] {
            s.activate(&as_(&["P"]), n.as_bytes(), b"P!p", b"acl").await.unwrap();
        }
        s.activate(&as_(&["R"]), b"a", b"R!p", b"acl").await.unwrap();
        s.activate(&as_(&["R"]), b"b", b"R!p", b"acl").await.unwrap();
        s.deactivate(&as_(&["R"]), b"b", b"R!p").await.unwrap();
        let changes = s.set_primary("pr", Some(b"R")).await.unwrap();
        // b's R record is moving, c has none: only a moves.
        assert_eq!(changes, [change("a", &["P", "R"])]);
        assert_eq!(eff(&s, "a"), Some(mailbox("a", "R!p", "acl")));
        assert_eq!(s.groups(), [group("pr", &["P", "R"], Some("R"))]);
        assert!(matches!(s.set_primary("nope", None).await, Err(StoreError::Invalid(_))));
        assert!(matches!(s.set_primary("pr", Some(b"X")).await, Err(StoreError::Invalid(_))));
    }
    {
        // Same configuration: the run-time primary persists.
        let s = open_at(&cfg(&dir), &groups).unwrap();
        assert_eq!(s.groups(), [group("pr", &["P", "R"], Some("R"))]);
        assert_eq!(eff(&s, "a"), Some(mailbox("a", "R!p", "acl")));
        assert_eq!(s.set_primary("pr", None).await.unwrap(), []);
    }
    {
        // The configuration names a new primary: it wins and takes over.
        let s = open_at(&cfg(&dir), &[group("pr", &["P", "R"], Some("P"))]).unwrap();
        assert_eq!(s.groups(), [group("pr", &["P", "R"], Some("P"))]);
        assert_eq!(eff(&s, "a"), Some(mailbox("a", "P!p", "acl")));
    }
}

#[tokio::test]
async fn admin_records_resolve_and_delete_record() {
    let (_d, s) = open(&[]);
    s.activate(&admin(), b"n", b"A!p", b"acl-a").await.unwrap();
    s.activate(&admin(), b"n", b"C!q", b"acl-c").await.unwrap();
    let r = s.records(b"n").unwrap();
    assert_eq!(
        r,
        [
            RecordView { server: b"A".to_vec(), location: b"A!p".to_vec(), state: Active, acl: b"acl-a".to_vec(), effective: true, role: RecordRole::Effective },
            RecordView {
                server: b"C".to_vec(),
                location: b"C!q".to_vec(),
                state: Active,
                acl: b"acl-c".to_vec(),
                effective: false,
                role: RecordRole::Conflict,
            },
        ]
    );
    assert_eq!(s.resolve(b"n", b"X").await.unwrap(), no(DOESNT_EXIST));
    assert_eq!(s.resolve(b"n", b"C").await.unwrap(), done(vec![change("n", &["A", "C"])]));
    assert_eq!(eff(&s, "n"), Some(mailbox("n", "C!q", "acl-c")));
    assert!(s.conflicts().unwrap().is_empty());
    // The loser's routine re-ACTIVATE does not raise it again.
    s.activate(&admin(), b"n", b"A!p", b"acl-a2").await.unwrap();
    assert!(s.conflicts().unwrap().is_empty());
    assert_eq!(s.delete_record(b"n", b"C!").await.unwrap(), done(vec![change("n", &["C", "A"])]));
    assert_eq!(recs(&s, "n"), [("A".into(), Active, true)]);
    assert_eq!(s.delete_record(b"n", b"C!").await.unwrap(), done(vec![]));
}

// ---- durability and concurrency ----

#[tokio::test]
async fn writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let s = open_at(&cfg(&dir), &[]).unwrap();
        s.activate(&admin(), b"user.a", b"A!p", b"acl").await.unwrap();
        s.reserve(&admin(), b"user.b", b"B!p").await.unwrap();
        s.activate(&admin(), b"user.a", b"C!p", b"acl").await.unwrap();
        list(&s)
    };
    let s = open_at(&cfg(&dir), &[]).unwrap();
    assert_eq!(list(&s), before);
    assert_eq!(recs(&s, "user.a").len(), 2);
    assert_eq!(s.conflicts().unwrap().len(), 1);
    assert_eq!(list_prefix(&s, "C!"), [mailbox("user.a", "C!p", "acl")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_land() {
    let (_d, s) = open(&[]);
    concurrent_writers(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_land_on_sled() {
    let (_d, s) = open_sled(&[]);
    concurrent_writers(&s).await;
}

async fn concurrent_writers(s: &Directory) {
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let name = format!("user.u{t}.m{i}");
                s.reserve(&admin(), name.as_bytes(), b"A!p").await.unwrap();
                s.activate(&admin(), name.as_bytes(), b"A!p", b"acl").await.unwrap();
                // Everyone also hammers one shared name.
                s.activate(&admin(), b"shared.hot", format!("S{t}!p").as_bytes(), b"acl").await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(list(s).len(), 8 * 25 + 1);
    assert_eq!(recs(s, "shared.hot").len(), 8);
    assert_eq!(recs(s, "shared.hot").iter().filter(|r| r.2).count(), 1);
}

// ---- property test ----

mod prop {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 4] = ["user.x", "user.x.y", "shared.o", "DELETED.user.x.5"];
    /// P and R form a group, C and D are alone, "" is a replicated location.
    const LOCS: [&str; 6] = ["P!p", "R!p", "C!p", "D!q", "C!", "default"];

    #[derive(Debug, Clone)]
    enum Op {
        Reserve(usize, usize, usize),
        Activate(usize, usize, usize, u8),
        Deactivate(usize, usize, usize),
        Delete(usize, usize),
        Primary(Option<bool>),
        Resolve(usize, usize),
    }

    fn identity(i: usize, loc: usize) -> Identity {
        match i {
            0 => admin(),
            1 => Identity { servers: Some(vec![key::server_of(LOCS[loc].as_bytes()).to_vec()]) },
            2 => as_(&["P", "R"]),
            _ => as_(&["C"]),
        }
    }

    fn op() -> impl Strategy<Value = Op> {
        let n = 0..NAMES.len();
        let l = 0..LOCS.len();
        let w = 0..4usize;
        prop_oneof![
            3 => (n.clone(), l.clone(), w.clone()).prop_map(|(n, l, w)| Op::Reserve(n, l, w)),
            4 => (n.clone(), l.clone(), w.clone(), 0..3u8).prop_map(|(n, l, w, a)| Op::Activate(n, l, w, a)),
            2 => (n.clone(), l.clone(), w.clone()).prop_map(|(n, l, w)| Op::Deactivate(n, l, w)),
            2 => (n.clone(), w).prop_map(|(n, w)| Op::Delete(n, w)),
            1 => proptest::option::of(any::<bool>()).prop_map(Op::Primary),
            1 => (n, 0..5usize).prop_map(|(n, s)| Op::Resolve(n, s)),
        ]
    }

    fn check_name(s: &Directory, name: &str) {
        let r = s.records(name.as_bytes()).unwrap();
        let effs: Vec<_> = r.iter().filter(|r| r.effective).collect();
        assert!(effs.len() <= 1, "{name}: {r:?}");
        let servers: std::collections::HashSet<_> = r.iter().map(|r| r.server.clone()).collect();
        assert_eq!(servers.len(), r.len(), "one record per server");
        let e = eff(s, name);
        assert_eq!(e.is_some(), effs.len() == 1);
        if let (Some(e), Some(rec)) = (&e, effs.first()) {
            let want = match rec.state {
                Active => mailbox(name, std::str::from_utf8(&rec.location).unwrap(), std::str::from_utf8(&rec.acl).unwrap()),
                _ => reserve_line(name, std::str::from_utf8(&rec.location).unwrap()),
            };
            assert_eq!(*e, want);
        }
        assert_eq!(s.find(&admin(), name.as_bytes()).unwrap(), e);
        let in_list: Vec<Entry> = list(s).into_iter().filter(|x| x.name() == name.as_bytes()).collect();
        assert_eq!(in_list, e.into_iter().collect::<Vec<_>>());
        // The index agrees with the records.
        for rec in &r {
            let prefix = [rec.server.as_slice(), b"!"].concat();
            let mine = if rec.server.is_empty() { list_prefix(s, std::str::from_utf8(&rec.location).unwrap()) } else { s.list_prefix(&prefix).collect::<Result<Vec<_>, _>>().unwrap() };
            assert!(mine.iter().any(|x| x.name() == name.as_bytes()), "{name} missing from index of {:?}", rec.server);
        }
    }

    /// On sled (`memory` false: and the reopen keeps everything) or on
    /// the in-memory engine.
    async fn run(ops: Vec<Op>, memory: bool) {
        let dir = tempfile::tempdir().unwrap();
        let groups = vec![group("pr", &["P", "R"], None)];
        let s = open_at(&if memory { StoreConfig::memory() } else { cfg(&dir) }, &groups).unwrap();
        // What UPDATE streams would hold: replaying changes.
        let mut seen: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        // ACTIVATEs answered done that nothing later took back: (name, server).
        let mut facts: std::collections::HashSet<(usize, Vec<u8>)> = Default::default();
        for op in ops {
            let name_of = |n: usize| NAMES[n];
            let (touched, before, out) = match &op {
                Op::Reserve(n, l, w) => {
                    let b = eff(&s, name_of(*n));
                    (vec![*n], vec![b], s.reserve(&identity(*w, *l), NAMES[*n].as_bytes(), LOCS[*l].as_bytes()).await.unwrap())
                }
                Op::Activate(n, l, w, a) => {
                    let b = eff(&s, name_of(*n));
                    let acl = format!("acl{a}");
                    let out = s.activate(&identity(*w, *l), NAMES[*n].as_bytes(), LOCS[*l].as_bytes(), acl.as_bytes()).await.unwrap();
                    if out.reply == Reply::Done {
                        facts.insert((*n, key::server_of(LOCS[*l].as_bytes()).to_vec()));
                    }
                    (vec![*n], vec![b], out)
                }
                Op::Deactivate(n, l, w) => {
                    let b = eff(&s, name_of(*n));
                    let out = s.deactivate(&identity(*w, *l), NAMES[*n].as_bytes(), LOCS[*l].as_bytes()).await.unwrap();
                    if out.reply == Reply::Done {
                        facts.remove(&(*n, key::server_of(LOCS[*l].as_bytes()).to_vec()));
                    }
                    (vec![*n], vec![b], out)
                }
                Op::Delete(n, w) => {
                    let b = eff(&s, name_of(*n));
                    let who = identity(*w, 0);
                    let out = s.delete(&who, NAMES[*n].as_bytes()).await.unwrap();
                    assert_eq!(out.reply, Reply::Done);
                    match &who.servers {
                        Some(list) => facts.retain(|(m, srv)| !(*m == *n && list.contains(srv))),
                        None => {
                            let left = s.records(NAMES[*n].as_bytes()).unwrap();
                            facts.retain(|(m, srv)| *m != *n || left.iter().any(|r| &r.server == srv));
                        }
                    }
                    (vec![*n], vec![b], out)
                }
                Op::Primary(p) => {
                    let all: Vec<usize> = (0..NAMES.len()).collect();
                    let before = all.iter().map(|&n| eff(&s, NAMES[n])).collect();
                    let server: Option<&[u8]> = p.map(|r| if r { b"R".as_slice() } else { b"P".as_slice() });
                    let changes = s.set_primary("pr", server).await.unwrap();
                    (all, before, Out { reply: Reply::Done, changes })
                }
                Op::Resolve(n, srv) => {
                    let b = eff(&s, name_of(*n));
                    let server = ["P", "R", "C", "D", ""][*srv];
                    (vec![*n], vec![b], s.resolve(NAMES[*n].as_bytes(), server.as_bytes()).await.unwrap())
                }
            };
            if let Reply::No(_) = out.reply {
                assert!(out.changes.is_empty());
            }
            // A change is reported exactly when the presented line changed.
            for (n, b) in touched.iter().zip(before) {
                let after = eff(&s, NAMES[*n]);
                let reported = out.changes.iter().any(|c| c.name == NAMES[*n].as_bytes());
                assert_eq!(reported, b != after, "{op:?} on {}: {b:?} -> {after:?}", NAMES[*n]);
                if let (true, Some(c)) = (reported, out.changes.iter().find(|c| c.name == NAMES[*n].as_bytes())) {
                    for e in [&b, &after].into_iter().flatten() {
                        let loc = match e {
                            Entry::Mailbox { location, .. } | Entry::Reserve { location, .. } => location,
                        };
                        assert!(c.servers.contains(&key::server_of(loc).to_vec()), "{c:?}");
                    }
                }
            }
            for c in &out.changes {
                match s.effective(&c.name).unwrap() {
                    Some(e) => seen.insert(c.name.clone(), e),
                    None => seen.remove(&c.name),
                };
            }
            for n in NAMES {
                check_name(&s, n);
            }
            for (n, srv) in &facts {
                let r = s.records(NAMES[*n].as_bytes()).unwrap();
                assert!(r.iter().any(|r| &r.server == srv && r.state == Active), "lost ACTIVATE of {} on {srv:?}: {r:?}", NAMES[*n]);
            }
        }
        let listed = list(&s);
        // Replaying the changes reproduces LIST (modulo order, which LIST fixes).
        let mut replay: Vec<Entry> = seen.into_values().collect();
        replay.sort_by_key(|e| key::mailbox_part(e.name()));
        assert_eq!(replay, listed);
        if memory {
            return;
        }
        drop(s);
        let s = open_at(&cfg(&dir), &groups).unwrap();
        assert_eq!(list(&s), listed);
        for n in NAMES {
            check_name(&s, n);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn random_interleavings_keep_the_invariants(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(run(ops, false));
        }

        #[test]
        fn random_interleavings_keep_the_invariants_in_memory(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(run(ops, true));
        }
    }
}

/// Disk use per mailbox for a typical directory (run by hand:
/// `cargo test --lib store::tests::disk_per_mailbox -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn disk_per_mailbox() {
    const USERS: usize = 2000;
    const BOXES: [&str; 10] = ["", ".Sent", ".Drafts", ".Trash", ".Junk", ".Archive", ".Archive.2023", ".Archive.2024", ".Lists", ".Lists.rust-users"];
    let dir = tempfile::tempdir().unwrap();
    let s = open_at(&cfg(&dir), &[]).unwrap();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for u in (t..USERS).step_by(32) {
                for b in BOXES {
                    let name = format!("user.user{u:05}{b}");
                    let acl = format!("user{u:05}\tlrswipkxtecdan\tanyone\tp\t");
                    let loc = format!("be{}!default", u % 4 + 1);
                    s.reserve(&admin(), name.as_bytes(), loc.as_bytes()).await.unwrap();
                    s.activate(&admin(), name.as_bytes(), loc.as_bytes(), acl.as_bytes()).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = USERS * BOXES.len();
    let elapsed = started.elapsed();
    drop(s);
    let s = open_at(&cfg(&dir), &[]).unwrap();
    assert_eq!(list(&s).len(), n);
    let on_disk = s.size_on_disk().unwrap();
    let files: u64 = walk(dir.path());
    let (mut keys, mut raw) = (0u64, 0u64);
    for kv in s.engine().scan_prefix(&[]) {
        let (k, v) = kv.unwrap();
        keys += 1;
        raw += (k.len() + v.len()) as u64;
    }
    println!("{keys} keys, raw key+value {} B/mailbox", raw / n as u64);
    println!("{n} mailboxes, {} writes in {elapsed:?}; sled size_on_disk {} B/mailbox, files {} B/mailbox", 2 * n, on_disk / n as u64, files / n as u64);

    fn walk(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.is_dir() { walk(&e.path()) } else { m.len() }
            })
            .sum()
    }
}

// --- the rights index (user -> mailboxes with rights) ---

pub(super) fn rights(s: &Directory, user: &str, groups: &[&str]) -> Vec<(String, String)> {
    let groups: Vec<Vec<u8>> = groups.iter().map(|g| g.as_bytes().to_vec()).collect();
    s.rights_of(user.as_bytes(), &groups)
        .unwrap()
        .into_iter()
        .map(|(n, r)| (String::from_utf8(n).unwrap(), String::from_utf8(r).unwrap()))
        .collect()
}

pub(super) fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn rights_index_follows_every_acl_change() {
    let (dir, s) = open_sled(&[]);
    let a = admin();
    s.activate(&a, b"user.bob", b"be1!p", b"bob\tlrswipkxtecdan\t").await.unwrap();
    s.activate(&a, b"user.alice", b"be1!p", b"alice\tlrswipkxtecdan\tbob\tlr\t").await.unwrap();
    s.activate(&a, b"shared.news", b"be2!p", b"anyone\tlrs\t-bob\ts\t").await.unwrap();
    s.activate(&a, b"shared.staff", b"be2!p", b"group:staff\tlrsw\t").await.unwrap();
    s.reserve(&a, b"user.bob.new", b"be1!p").await.unwrap();
    assert_eq!(
        rights(&s, "bob", &[]),
        pairs(&[("shared.news", "lr"), ("user.alice", "lr"), ("user.bob", "lrswipkxtecdan")])
    );
    assert_eq!(
        rights(&s, "carol", &["group:staff"]),
        pairs(&[("shared.news", "lrs"), ("shared.staff", "lrsw")])
    );
    // An ACL change replaces the entries; a DEACTIVATE hides the ACL; a
    // DELETE removes them.
    s.activate(&a, b"user.alice", b"be1!p", b"alice\tlrswipkxtecdan\t").await.unwrap();
    s.deactivate(&a, b"user.bob", b"be1!p").await.unwrap();
    assert_eq!(rights(&s, "bob", &[]), pairs(&[("shared.news", "lr")]));
    s.activate(&a, b"user.bob", b"be2!p", b"bob\tlr\t").await.unwrap();
    s.delete(&a, b"shared.news").await.unwrap();
    assert_eq!(rights(&s, "bob", &[]), pairs(&[("user.bob", "lr")]));
    drop(s);
    let s = open_at(&cfg(&dir), &[]).unwrap();
    assert_eq!(rights(&s, "bob", &[]), pairs(&[("user.bob", "lr")]));
    assert_eq!(rights(&s, "nobody", &[]), pairs(&[]));
}

#[test]
fn acl_parsing_keeps_the_last_entry_of_an_identifier() {
    let v = directory::parse_acl(b"a\tlr\tb\tx\ta\tlrs\t\t");
    assert_eq!(v, vec![(b"b".to_vec(), b"x".to_vec()), (b"a".to_vec(), b"lrs".to_vec())]);
    assert!(directory::parse_acl(b"").is_empty());
}

#[tokio::test]
async fn compressed_store_keeps_its_data_and_refuses_a_mismatched_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let compressed = StoreConfig::sled(SledConfig { compression: true, ..sled_cfg(&dir) });
    let s = open_at(&compressed, &[]).unwrap();
    s.activate(&admin(), b"user.z", b"A!p", b"z\tlrs\t").await.unwrap();
    drop(s);
    let s = open_at(&compressed, &[]).unwrap();
    assert_eq!(s.find(&admin(), b"user.z").unwrap(), Some(mailbox("user.z", "A!p", "z\tlrs\t")));
    drop(s);
    // The setting is the database's: a reopen with the other one is refused
    // with an error, and loses nothing.
    let err = open_at(&cfg(&dir), &[]).err().expect("mismatch refused");
    assert!(err.to_string().contains("compression"), "{err}");
    let s = open_at(&compressed, &[]).unwrap();
    assert!(s.find(&admin(), b"user.z").unwrap().is_some());
}

#[tokio::test]
async fn prefix_list_reads_records_from_the_index_and_follows_every_change() {
    let (_d, s) = open(&[]);
    let a = admin();
    let prefix = |s: &Directory| -> Vec<Entry> { s.list_prefix(b"A!").map(|e| e.unwrap()).collect() };
    s.reserve(&a, b"user.x", b"A!p").await.unwrap();
    assert_eq!(prefix(&s), [reserve_line("user.x", "A!p")]);
    s.activate(&a, b"user.x", b"A!p", b"x\tlr\t").await.unwrap();
    assert_eq!(prefix(&s), [mailbox("user.x", "A!p", "x\tlr\t")]);
    s.activate(&a, b"user.x", b"A!q", b"x\tlrs\t").await.unwrap();
    assert_eq!(prefix(&s), [mailbox("user.x", "A!q", "x\tlrs\t")]);
    s.deactivate(&a, b"user.x", b"A!q").await.unwrap();
    assert_eq!(prefix(&s), [reserve_line("user.x", "A!q")]);
    s.delete(&a, b"user.x").await.unwrap();
    assert!(prefix(&s).is_empty());
}

#[tokio::test]
async fn record_roles_say_how_each_record_stands() {
    let (_d, s) = open(&pair());
    let a = admin();
    s.activate(&a, b"n", b"P!p", b"").await.unwrap();
    s.activate(&a, b"n", b"R!p", b"").await.unwrap();
    s.activate(&a, b"n", b"X!p", b"").await.unwrap();
    s.reserve(&a, b"m", b"Y!p").await.unwrap();
    s.deactivate(&a, b"n", b"X!p").await.unwrap();
    let roles = |name: &[u8]| -> Vec<RecordRole> { s.records(name).unwrap().iter().map(|r| r.role).collect() };
    assert_eq!(roles(b"n"), [RecordRole::Effective, RecordRole::Shadow, RecordRole::Other]);
    s.activate(&a, b"n", b"X!p", b"").await.unwrap();
    assert_eq!(roles(b"n"), [RecordRole::Effective, RecordRole::Shadow, RecordRole::Conflict]);
    assert_eq!(roles(b"m"), [RecordRole::Effective]);
    assert_eq!(RecordRole::Conflict.word(), "conflict");
}

/// The largest ACTIVATE the default limits allow (1,024 ACL entries of
/// 256-byte identifiers, a 1 KiB name) must not hold the async worker it
/// was called on: on a one-thread runtime, a ticker task keeps ticking
/// while it runs. Measured (test build, loaded 2-core machine), median of
/// five rounds of the ticker's longest gap: inline 15-20 ms (the whole
/// synchronous part), on the blocking pool 2-3 ms.
#[test]
fn a_large_activate_does_not_hold_the_async_worker() {
    const OFFLOAD_TICK: std::time::Duration = std::time::Duration::from_millis(8);
    let (_dir, s) = open(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let name = vec![b'n'; 1024];
    let mut acl = Vec::new();
    for i in 0..1024 {
        acl.extend_from_slice(format!("{i:0>256}\tlrswipkxtecda\t").as_bytes());
    }
    assert!(name.len() + acl.len() > directory::OFFLOAD_BYTES);
    let mut gaps = Vec::new();
    for round in 0..5 {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gap = rt.block_on(async {
            let flag = done.clone();
            let ticker = tokio::spawn(async move {
                let mut longest = std::time::Duration::ZERO;
                while !flag.load(std::sync::atomic::Ordering::Acquire) {
                    let t = std::time::Instant::now();
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    longest = longest.max(t.elapsed());
                }
                longest
            });
            tokio::task::yield_now().await;
            // Each round changes every right, so every rights key is rewritten.
            let acl = if round % 2 == 0 { acl.clone() } else { acl.iter().map(|&b| if b == b'a' { b'c' } else { b }).collect() };
            s.activate(&admin(), &name, b"be1!p", &acl).await.unwrap();
            done.store(true, std::sync::atomic::Ordering::Release);
            ticker.await.unwrap()
        });
        gaps.push(gap);
    }
    gaps.sort();
    // The median round: one slow tick on a loaded machine is not the point.
    eprintln!("ticker gaps {gaps:?}");
    assert!(gaps[2] < OFFLOAD_TICK, "the async worker was held: ticker gaps {gaps:?}");
}

/// The quick check at open: after a clean stop, a directory that lost a
/// name together with its stripe summary (what sled's recovery does with
/// a damaged log tail: both go, atomically) no longer matches the seal
/// and is refused; the same directory untouched opens.
#[test]
fn the_seal_refuses_a_directory_that_lost_its_tail() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    {
        let s = open_at(&cfg(&dir), &[]).unwrap();
        for n in ["user.a", "user.b", "user.c"] {
            rt.block_on(s.activate(&admin(), n.as_bytes(), b"be1!p", b"a\tlrs\t")).unwrap();
        }
    }
    // A clean stop sealed it: it opens, and stops cleanly again.
    drop(open_at(&cfg(&dir), &[]).unwrap());
    {
        let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
        let part = key::mailbox_part(b"user.b");
        let nkey = key::name_key(&part);
        let skey = verify::summary_key(verify::stripe_of(&part));
        let value = db.get(&nkey).unwrap().expect("user.b is stored");
        let mut sum = verify::Summary::decode(&db.get(skey).unwrap().expect("its stripe's summary")).unwrap();
        sum.sub(&nkey, &value);
        let mut batch = sled::Batch::default();
        batch.remove(nkey);
        batch.insert(&skey[..], &sum.encode()[..]);
        db.apply_batch(batch).unwrap();
        db.flush().unwrap();
    }
    match open_at(&cfg(&dir), &[]) {
        Err(StoreError::Damaged(m)) => assert!(m.contains("lost 1 mailboxes"), "{m}"),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a directory that lost a mailbox since its clean stop was served"),
    }
}
