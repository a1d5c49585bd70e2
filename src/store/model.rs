//! The facts model on one mailbox, pure: no storage, no I/O.
//!
//! A [`Mailbox`] is every record of one name plus which one is effective.
//! Each command is a function that changes a `Mailbox` and returns the
//! reply; the engine reads the value, calls one of these under the name's
//! lock, and writes the result back in one batch.

use std::collections::HashMap;

use super::key::server_of;
use super::{Refusal, ReplicaGroup, Reply};
use crate::protocol::Entry;

/// The state of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// ACTIVATE: the server holds the mailbox.
    Active,
    /// RESERVE: the server is creating it.
    Reserved,
    /// DEACTIVATE: the server is moving it away (keeps its ACL).
    Moving,
}

/// One (mailbox, server) record. The server is the part of `location`
/// before its first `!`, so it is not stored twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub state: RecordState,
    /// The record presented to unmodified clients (at most one per name).
    pub effective: bool,
    /// Exactly the bytes last asserted.
    pub location: Vec<u8>,
    pub acl: Vec<u8>,
}

impl Record {
    pub fn server(&self) -> &[u8] {
        server_of(&self.location)
    }
}

/// Every record of one name, oldest first: the position in `records` is the
/// record's age ("oldest" in the successor rule), so no sequence number
/// needs storing. An upsert keeps a record's position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Mailbox {
    pub records: Vec<Record>,
    /// An ACTIVATE met an active effective record of an unrelated server
    /// and nobody has resolved it yet.
    pub conflict: bool,
}

/// Value format version (first byte of every stored value).
const VERSION: u8 = 1;
const FLAG_CONFLICT: u8 = 1;
const EFFECTIVE_BIT: u8 = 4;

impl Mailbox {
    pub fn eff(&self) -> Option<usize> {
        self.records.iter().position(|r| r.effective)
    }

    pub fn eff_record(&self) -> Option<&Record> {
        self.records.iter().find(|r| r.effective)
    }

    pub fn find(&self, server: &[u8]) -> Option<usize> {
        self.records.iter().position(|r| r.server() == server)
    }

    fn set_eff(&mut self, i: Option<usize>) {
        for (n, r) in self.records.iter_mut().enumerate() {
            r.effective = Some(n) == i;
        }
    }

    /// The line unmodified clients see for this name.
    pub fn present(&self, name: &[u8]) -> Option<Entry> {
        self.eff_record().map(|r| present(name, r))
    }

    /// [`Mailbox::present`], moving the bytes instead of copying them
    /// (LIST and UPDATE dumps decode a value only to present it).
    pub fn into_present(mut self, name: Vec<u8>) -> Option<Entry> {
        let i = self.eff()?;
        let r = self.records.swap_remove(i);
        Some(match r.state {
            RecordState::Active => Entry::Mailbox { name, location: r.location, acl: r.acl },
            RecordState::Reserved | RecordState::Moving => Entry::Reserve { name, location: r.location },
        })
    }

    /// Is there an active record outside the effective record's group
    /// while the effective record is active?
    fn conflicting(&self, g: &Groups) -> bool {
        match self.eff_record() {
            Some(e) if e.state == RecordState::Active => {
                let x = e.server();
                self.records.iter().any(|r| r.state == RecordState::Active && !g.same_group(r.server(), x))
            }
            _ => false,
        }
    }

    /// Clear the conflict flag once the condition is gone.
    fn settle(&mut self, g: &Groups) {
        if self.conflict && !self.conflicting(g) {
            self.conflict = false;
        }
    }

    /// Servers of active records that conflict with the effective one.
    pub fn conflicting_servers(&self, g: &Groups) -> Vec<Vec<u8>> {
        match self.eff_record() {
            Some(e) => {
                let x = e.server();
                self.records
                    .iter()
                    .filter(|r| r.state == RecordState::Active && !g.same_group(r.server(), x))
                    .map(|r| r.server().to_vec())
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// Compact binary form: version, flags, then per record a flags byte
    /// (state | effective), and the location and ACL, each behind a LEB128
    /// length. About 3 bytes of overhead per record.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self.records.iter().map(|r| 5 + r.location.len() + r.acl.len()).sum();
        let mut v = Vec::with_capacity(2 + size);
        v.push(VERSION);
        v.push(if self.conflict { FLAG_CONFLICT } else { 0 });
        for r in &self.records {
            let state = match r.state {
                RecordState::Active => 0,
                RecordState::Reserved => 1,
                RecordState::Moving => 2,
            };
            v.push(state | if r.effective { EFFECTIVE_BIT } else { 0 });
            put_bytes(&mut v, &r.location);
            put_bytes(&mut v, &r.acl);
        }
        v
    }

    pub fn decode(mut b: &[u8]) -> Result<Mailbox, String> {
        let (&version, rest) = b.split_first().ok_or("empty value")?;
        if version != VERSION {
            return Err(format!("unknown value version {version}"));
        }
        let (&flags, rest) = rest.split_first().ok_or("no flags")?;
        b = rest;
        let mut m = Mailbox { records: Vec::new(), conflict: flags & FLAG_CONFLICT != 0 };
        while let Some((&f, rest)) = b.split_first() {
            b = rest;
            let state = match f & 3 {
                0 => RecordState::Active,
                1 => RecordState::Reserved,
                2 => RecordState::Moving,
                _ => return Err("bad record state".into()),
            };
            let location = get_bytes(&mut b)?;
            let acl = get_bytes(&mut b)?;
            m.records.push(Record { state, effective: f & EFFECTIVE_BIT != 0, location, acl });
        }
        if m.records.iter().filter(|r| r.effective).count() > 1 {
            return Err("two effective records".into());
        }
        Ok(m)
    }
}

/// How unmodified clients see a record.
pub(crate) fn present(name: &[u8], r: &Record) -> Entry {
    match r.state {
        RecordState::Active => Entry::Mailbox { name: name.to_vec(), location: r.location.clone(), acl: r.acl.clone() },
        RecordState::Reserved | RecordState::Moving => Entry::Reserve { name: name.to_vec(), location: r.location.clone() },
    }
}

fn put_bytes(v: &mut Vec<u8>, b: &[u8]) {
    let mut n = b.len();
    loop {
        let byte = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            v.push(byte);
            break;
        }
        v.push(byte | 0x80);
    }
    v.extend_from_slice(b);
}

fn get_bytes(b: &mut &[u8]) -> Result<Vec<u8>, String> {
    let mut n: usize = 0;
    let mut shift = 0;
    loop {
        let (&byte, rest) = b.split_first().ok_or("truncated length")?;
        *b = rest;
        if shift > 28 {
            return Err("length too long".into());
        }
        n |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    if b.len() < n {
        return Err("truncated bytes".into());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head.to_vec())
}

/// Replica groups and their primaries, as the model sees them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Groups {
    pub list: Vec<ReplicaGroup>,
    by_server: HashMap<Vec<u8>, usize>,
}

impl Groups {
    pub fn new(list: Vec<ReplicaGroup>) -> Groups {
        let mut by_server = HashMap::new();
        for (i, g) in list.iter().enumerate() {
            for s in &g.servers {
                // A server listed in two groups belongs to the first.
                by_server.entry(s.clone()).or_insert(i);
            }
        }
        Groups { list, by_server }
    }

    /// Same server, or both in one configured group.
    pub fn same_group(&self, a: &[u8], b: &[u8]) -> bool {
        a == b || matches!((self.by_server.get(a), self.by_server.get(b)), (Some(x), Some(y)) if x == y)
    }

    pub fn group_of(&self, server: &[u8]) -> Option<&ReplicaGroup> {
        self.by_server.get(server).map(|&i| &self.list[i])
    }

    pub fn is_primary(&self, server: &[u8]) -> bool {
        self.group_of(server).and_then(|g| g.primary.as_deref()) == Some(server)
    }

    pub fn index_of(&self, group: &str) -> Option<usize> {
        self.list.iter().position(|g| g.name == group)
    }
}

/// A backend identity may only assert facts about its own servers.
pub(crate) fn may_assert(who: Option<&[Vec<u8>]>, server: &[u8]) -> bool {
    who.is_none_or(|list| list.iter().any(|s| s == server))
}

/// RESERVE n S!p.
pub(crate) fn reserve(m: &mut Mailbox, location: &[u8], g: &Groups) -> Reply {
    let s = server_of(location);
    if m.find(s).is_some() {
        // Never demote: a RESERVE for a record S already has changes nothing.
        return Reply::Done;
    }
    if m.records.iter().any(|r| !g.same_group(r.server(), s)) {
        return Reply::No(Refusal::MailboxExists);
    }
    let first = m.eff().is_none();
    m.records.push(Record { state: RecordState::Reserved, effective: first, location: location.to_vec(), acl: Vec::new() });
    m.settle(g);
    Reply::Done
}

/// What an ACTIVATE did besides answering OK.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Activated {
    Plain,
    /// It created a conflict with the active effective record of this
    /// unrelated server.
    Conflict(Vec<u8>),
}

/// ACTIVATE n S!p acl: a fact, always accepted.
pub(crate) fn activate(m: &mut Mailbox, location: &[u8], acl: &[u8], g: &Groups) -> Activated {
    let s = server_of(location).to_vec();
    let was_active = match m.find(&s) {
        Some(i) => {
            let r = &mut m.records[i];
            let was = r.state == RecordState::Active;
            r.state = RecordState::Active;
            r.location = location.to_vec();
            r.acl = acl.to_vec();
            was
        }
        None => {
            m.records.push(Record { state: RecordState::Active, effective: false, location: location.to_vec(), acl: acl.to_vec() });
            false
        }
    };
    let mut out = Activated::Plain;
    match m.eff() {
        None => {
            let i = m.find(&s);
            m.set_eff(i);
        }
        Some(e) if m.records[e].server() == s.as_slice() => {}
        Some(e) => {
            let x = m.records[e].server().to_vec();
            if g.same_group(&x, &s) {
                // A shadow, unless S is its group's primary.
                if g.is_primary(&s) {
                    let i = m.find(&s);
                    m.set_eff(i);
                }
            } else if m.records[e].state != RecordState::Active {
                // An XFER completing: the moving records of servers outside
                // S's group are gone; S's record becomes effective.
                m.records.retain(|r| r.state != RecordState::Moving || g.same_group(r.server(), &s));
                let i = m.find(&s);
                m.set_eff(i);
            } else if !was_active {
                // Two unrelated servers both hold it: the first fact stays
                // effective. A re-ACTIVATE of an already active record (ACL
                // change, foldermodseq) does not raise it again after an
                // admin resolved it.
                m.conflict = true;
                out = Activated::Conflict(x);
            }
        }
    }
    m.settle(g);
    out
}

/// DEACTIVATE n S!p.
pub(crate) fn deactivate(m: &mut Mailbox, location: &[u8], g: &Groups) -> Reply {
    let s = server_of(location);
    let reply = match m.find(s) {
        // Cyrus's words are about the name: it exists when any server
        // holds it (Cyrus answers "not currently active" for a name it
        // holds at another location), and only an unknown name "doesn't
        // exist". Either way S has nothing to move.
        None if m.records.is_empty() => Reply::No(Refusal::NoSuchMailbox),
        None => Reply::No(Refusal::NotActive),
        Some(i) => {
            let r = &mut m.records[i];
            match r.state {
                RecordState::Active => {
                    // Cyrus presents the location supplied (RESERVE n loc).
                    r.state = RecordState::Moving;
                    r.location = location.to_vec();
                    Reply::Done
                }
                RecordState::Moving => Reply::Done,
                RecordState::Reserved => Reply::No(Refusal::NotActive),
            }
        }
    };
    m.settle(g);
    reply
}

/// Remove the records `gone` selects; when that removes the effective
/// record, the successor (relative to the removed record's server) takes
/// its place.
fn remove_records(m: &mut Mailbox, g: &Groups, gone: impl Fn(&[u8]) -> bool) {
    let old_eff = m.eff_record().map(|r| r.server().to_vec());
    m.records.retain(|r| !gone(r.server()));
    if let Some(x) = old_eff {
        if m.eff().is_none() {
            let next = successor(m, &x, g);
            m.set_eff(next);
        }
    }
    m.settle(g);
}

/// The successor of the effective record of server `x` once it is gone:
/// the oldest active record outside `x`'s group; else the oldest reserved
/// or moving record outside it (it is a live fact that another server is
/// creating or moving the name, and hiding it would let a third server
/// create it); else none: a shadow of `x`'s group never resurrects a name
/// its lineage deleted.
pub(crate) fn successor(m: &Mailbox, x: &[u8], g: &Groups) -> Option<usize> {
    let outside = |r: &&Record| !g.same_group(r.server(), x);
    let pos = |want: &Record| m.records.iter().position(|r| std::ptr::eq(r, want));
    m.records
        .iter()
        .filter(outside)
        .find(|r| r.state == RecordState::Active)
        .or_else(|| m.records.iter().find(outside))
        .and_then(pos)
}

/// DELETE n from a login bound to `servers`: remove their records.
pub(crate) fn delete_known(m: &mut Mailbox, servers: &[Vec<u8>], g: &Groups) -> Reply {
    remove_records(m, g, |s| servers.iter().any(|x| x == s));
    Reply::Done
}

/// DELETE n from a login of unknown identity: remove the effective record
/// and its group's records (one record: exactly Cyrus); with no effective
/// record (only shadows left), remove every record.
pub(crate) fn delete_unknown(m: &mut Mailbox, g: &Groups) -> Reply {
    match m.eff_record().map(|r| r.server().to_vec()) {
        Some(x) => remove_records(m, g, |s| g.same_group(s, &x)),
        None => m.records.clear(),
    }
    Reply::Done
}

/// Admin: make `server`'s record effective and clear the conflict.
pub(crate) fn resolve(m: &mut Mailbox, server: &[u8]) -> Reply {
    match m.find(server) {
        Some(i) => {
            m.set_eff(Some(i));
            m.conflict = false;
            Reply::Done
        }
        None => Reply::No(Refusal::NoSuchMailbox),
    }
}

/// Failover: the primary `p` takes over when the effective record is
/// another server of its group and `p` holds an active record.
pub(crate) fn take_over(m: &mut Mailbox, p: &[u8], g: &Groups) {
    if let (Some(e), Some(i)) = (m.eff_record(), m.find(p)) {
        if e.server() != p && g.same_group(e.server(), p) && m.records[i].state == RecordState::Active {
            m.set_eff(Some(i));
        }
    }
    m.settle(g);
}

/// FIND n from `who`: the effective record, except that a backend whose
/// own group holds the effective record on a sibling, while it has no
/// record itself, hears nothing (so `ctl_mboxlist -m` on a replica
/// registers its copy instead of deleting it).
pub(crate) fn find(m: &Mailbox, name: &[u8], who: Option<&[Vec<u8>]>, g: &Groups) -> Option<Entry> {
    let e = m.eff_record()?;
    if let Some(list) = who {
        let has_own = list.iter().any(|s| m.find(s).is_some());
        let sibling = list.iter().any(|s| s.as_slice() != e.server() && g.same_group(s, e.server()));
        if !has_own && sibling && !list.iter().any(|s| s.as_slice() == e.server()) {
            return None;
        }
    }
    Some(present(name, e))
}

/// Guard shared by RESERVE, ACTIVATE and DEACTIVATE.
pub(crate) fn check_identity(who: Option<&[Vec<u8>]>, location: &[u8]) -> Result<(), Reply> {
    if may_assert(who, server_of(location)) {
        Ok(())
    } else {
        Err(Reply::No(Refusal::NotServed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trip() {
        let m = Mailbox {
            records: vec![
                Record { state: RecordState::Active, effective: false, location: b"a!p".to_vec(), acl: vec![b'x'; 300] },
                Record { state: RecordState::Moving, effective: true, location: b"b!".to_vec(), acl: b"".to_vec() },
                Record { state: RecordState::Reserved, effective: false, location: b"c".to_vec(), acl: b"u\tlrs\t".to_vec() },
            ],
            conflict: true,
        };
        let v = m.encode();
        assert_eq!(Mailbox::decode(&v).unwrap(), m);
        for cut in 0..v.len() {
            // never panics on a truncated value
            let _ = Mailbox::decode(&v[..cut]);
        }
        let one = Mailbox {
            records: vec![Record { state: RecordState::Active, effective: true, location: b"be1!default".to_vec(), acl: b"fred\tlrswipkxtecdan\t".to_vec() }],
            conflict: false,
        };
        assert_eq!(one.encode().len(), 2 + 1 + 1 + 11 + 1 + 20);
    }
}
