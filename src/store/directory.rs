//! The directory's policy over an engine: per-name read-modify-write
//! under a stripe lock, the key spaces and indexes (by server, rights,
//! conflicts, stripe summaries), ordered reads, replica groups, and the
//! changes each write hands to the streams once it is durable.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use super::engine::memory::MemoryEngine;
use super::engine::sled::SledEngine;
use super::engine::{Batch, Bytes, Engine, EngineError, Guard, Scan, Sequencer};
use super::key::{self, server_of};
use super::model::{self, Activated, Groups, Mailbox};
use super::{backup, verify};
use super::{
    Change, Conflict, Directory, EngineKind, Identity, RecordRole, RecordView, ReplicaGroup, Reply, StoreConfig, StoreError,
    WriteOutcome, STRIPES,
};
use crate::protocol::Entry;
use crate::replication::Hub;

pub(crate) struct Inner {
    /// The storage engine.
    pub(super) engine: Arc<dyn Engine>,
    /// The engine's numbering of writes (kept here: no dynamic call on
    /// the way to a durability wait).
    pub(super) seq: Arc<Sequencer>,
    /// Where durable changes go.
    hub: Arc<Hub>,
    stripes: Box<[Mutex<()>]>,
    groups: RwLock<Arc<Groups>>,
    /// Serialises set_primary calls (each one still locks names one by one).
    pub(super) primary: Mutex<()>,
    conflicts_seen: AtomicU64,
    /// Large ACTIVATEs running their read-modify-write on the blocking pool.
    offload: tokio::sync::Semaphore,
    /// What the logs call the directory (its data folder).
    label: String,
    /// Set once when a read finds damage: writes are refused from then on.
    /// Shared with the engine's background check after open.
    pub(super) damaged: Arc<OnceLock<String>>,
    /// The backup running now, if any ([`backup`]).
    pub(super) backup: RwLock<Option<Arc<backup::Backup>>>,
}

/// An ACTIVATE whose name and ACL together are larger than this runs its
/// read-modify-write on tokio's blocking pool instead of an async worker:
/// the worst one the default limits allow (1,024 ACL entries of 256-byte
/// identifiers, a 1 KiB name) took 14-61 ms of synchronous work, mostly
/// sled applying one key per ACL entry (docs/robustness/limits.md), while
/// an ordinary one (a few entries) takes microseconds and stays inline.
pub(crate) const OFFLOAD_BYTES: usize = 16 * 1024;

/// Large ACTIVATEs running at once on the blocking pool: each costs up to
/// a core for tens of milliseconds, so more than the cores only queues.
fn offload_permits() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// A group's persisted state.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupState {
    /// The primary in effect (configured, or set at run time).
    pub primary: Option<Vec<u8>>,
    /// The configured primary seen at the last open.
    pub config_primary: Option<Vec<u8>>,
}

impl GroupState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for o in [&self.primary, &self.config_primary] {
            match o {
                None => v.push(0),
                Some(s) => {
                    v.push(1);
                    v.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    v.extend_from_slice(s);
                }
            }
        }
        v
    }

    pub(crate) fn decode(mut b: &[u8]) -> Option<GroupState> {
        let mut one = || -> Option<Option<Vec<u8>>> {
            let (&tag, rest) = b.split_first()?;
            b = rest;
            if tag == 0 {
                return Some(None);
            }
            let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
            let s = b.get(4..4 + n)?.to_vec();
            b = &b[4 + n..];
            Some(Some(s))
        };
        let primary = one()?;
        let config_primary = one()?;
        Some(GroupState { primary, config_primary })
    }
}


fn corrupt(e: String) -> StoreError {
    StoreError::Corrupt(e)
}

fn engine_err(e: EngineError) -> StoreError {
    e.into()
}

/// The change a client sees when a name's presented line moves from `old`
/// to `new`.
fn change(name: &[u8], old: &Mailbox, new: &Mailbox) -> Option<Change> {
    if old.present(name) == new.present(name) {
        return None;
    }
    let mut servers: Vec<Vec<u8>> = Vec::with_capacity(2);
    for m in [old, new] {
        if let Some(r) = m.eff_record() {
            let s = r.server().to_vec();
            if !servers.contains(&s) {
                servers.push(s);
            }
        }
    }
    Some(Change { name: name.to_vec(), servers })
}

/// The value of a record's key in the index by server: the record itself,
/// so that `LIST "server!"` reads one ordered range and nothing else.
pub(crate) fn index_value(r: &model::Record) -> Vec<u8> {
    Mailbox { records: vec![model::Record { effective: false, ..r.clone() }], conflict: false }.encode()
}

/// A mailbox name and the rights someone has on it.
pub type Rights = (Vec<u8>, Vec<u8>);

/// The (identifier, rights) pairs of the ACL clients see for a name: the
/// effective record's, when it is active (a reserved or moving mailbox
/// shows no ACL). An identifier listed twice keeps its last rights, as in
/// Cyrus's ACL parsing.
pub(crate) fn acl_entries(m: &Mailbox) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Some(r) = m.eff_record().filter(|r| r.state == model::RecordState::Active) else {
        return Vec::new();
    };
    parse_acl(&r.acl)
}

/// Parse a Cyrus ACL string: `id TAB rights TAB` pairs. Linear: an
/// identifier listed twice keeps its last rights, at the place of its last
/// occurrence (as the quadratic `retain` + `push` this replaces did);
/// empty identifiers are skipped.
pub(crate) fn parse_acl(acl: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    let mut fields = acl.split(|&b| b == b'\t');
    while let (Some(id), Some(rights)) = (fields.next(), fields.next()) {
        if !id.is_empty() {
            pairs.push((id, rights));
        }
    }
    let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(pairs.len());
    for (i, (id, _)) in pairs.iter().enumerate() {
        last.insert(id, i);
    }
    pairs
        .iter()
        .enumerate()
        .filter(|(i, (id, _))| last.get(id) == Some(i))
        .map(|(_, (id, rights))| (id.to_vec(), rights.to_vec()))
        .collect()
}

/// The rights index changes that take a name's effective ACL from `old` to
/// `new` (each identifier once, as [`parse_acl`] gives them): one hash map,
/// linear in the entries.
fn index_rights(batch: &mut Batch, part: &[u8], old: &[(Vec<u8>, Vec<u8>)], new: &[(Vec<u8>, Vec<u8>)]) {
    if old.is_empty() && new.is_empty() {
        return;
    }
    let handle = key::rights_handle(part);
    let before: HashMap<&[u8], &[u8]> = old.iter().map(|(i, r)| (i.as_slice(), r.as_slice())).collect();
    let after: HashMap<&[u8], &[u8]> = new.iter().map(|(i, r)| (i.as_slice(), r.as_slice())).collect();
    for (id, _) in old {
        if !after.contains_key(id.as_slice()) {
            batch.remove(key::rights_key(id, &handle));
        }
    }
    for (id, rights) in new {
        if before.get(id.as_slice()) != Some(&rights.as_slice()) {
            batch.insert(key::rights_key(id, &handle), rights.as_slice());
        }
    }
    if key::is_long_handle(&handle) {
        match (old.is_empty(), new.is_empty()) {
            (true, false) => batch.insert(key::handle_key(&handle), part),
            (false, true) => batch.remove(key::handle_key(&handle)),
            _ => {}
        }
    }
}

/// Rebuild the rights index from the names' values when the database has
/// an older layout (or none): drop every rights key, index every effective
/// ACL, record the layout. Once per database; costs one pass over it.
fn migrate_rights_index(db: &dyn Engine) -> Result<(), StoreError> {
    let layout = key::rights_layout_key();
    if db.get(&layout)?.as_deref() == Some(key::RIGHTS_LAYOUT) {
        return Ok(());
    }
    let fresh = db.scan_prefix(&[key::NAMES]).next().is_none() && db.scan_prefix(&[key::RIGHTS]).next().is_none();
    if !fresh {
        tracing::info!("rebuilding the rights index (database written with an older layout)");
        const BATCH: usize = 10_000;
        let mut dropped = 0usize;
        let mut batch = Batch::default();
        for (n, kv) in db.scan_prefix(&[key::RIGHTS]).enumerate() {
            batch.remove(kv?.0);
            dropped += 1;
            if (n + 1) % BATCH == 0 {
                db.apply_unnumbered(std::mem::take(&mut batch))?;
            }
        }
        for kv in db.scan_prefix(&[key::HANDLES]) {
            batch.remove(kv?.0);
        }
        db.apply_unnumbered(std::mem::take(&mut batch))?;
        let (mut names, mut entries) = (0usize, 0usize);
        for kv in db.scan_prefix(&[key::NAMES]) {
            let (k, v) = kv?;
            let m = Mailbox::decode(&v).map_err(corrupt)?;
            let acl = acl_entries(&m);
            entries += acl.len();
            index_rights(&mut batch, &k[1..], &[], &acl);
            names += 1;
            if names % BATCH == 0 {
                db.apply_unnumbered(std::mem::take(&mut batch))?;
            }
        }
        db.apply_unnumbered(batch)?;
        tracing::info!(old_keys = dropped, names, entries, "rights index rebuilt");
    }
    let mut b = Batch::default();
    b.insert(layout, key::RIGHTS_LAYOUT);
    db.apply_unnumbered(b)?;
    Ok(())
}

impl Directory {
    /// Mailboxes on which `user` (a member of `groups`, e.g. `group:staff`)
    /// has rights, with those rights, in LIST order: the union of the
    /// rights of `user`, `anyone` and each group, less the negative rights
    /// (`-user`, `-anyone`, `-group`). Reads only the rights index entries
    /// of those identifiers: the cost is that of the answer.
    pub fn rights_of(&self, user: &[u8], groups: &[Vec<u8>]) -> Result<Vec<Rights>, StoreError> {
        let mut ids: Vec<Vec<u8>> = vec![user.to_vec(), b"anyone".to_vec()];
        ids.extend(groups.iter().cloned());
        let db = &*self.inner.engine;
        let mut acc: HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)> = HashMap::new();
        for (negative, id) in ids.iter().flat_map(|i| {
            let mut neg = b"-".to_vec();
            neg.extend_from_slice(i);
            [(false, i.clone()), (true, neg)]
        }) {
            let start = key::rights_range_start(&id);
            for kv in db.scan_prefix(&start) {
                let (k, v) = kv?;
                let slot = acc.entry(k[start.len()..].to_vec()).or_default();
                let into = if negative { &mut slot.1 } else { &mut slot.0 };
                for c in v.iter() {
                    if !into.contains(c) {
                        into.push(*c);
                    }
                }
            }
        }
        // Only mailboxes with rights left are kept (a long handle costs one
        // lookup of its part); the answer is sorted into LIST order by
        // mailbox part: O(answer log answer).
        let mut out = Vec::new();
        for (handle, (pos, neg)) in acc {
            let rights: Vec<u8> = pos.into_iter().filter(|c| !neg.contains(c)).collect();
            if rights.is_empty() {
                continue;
            }
            let part = if key::is_long_handle(&handle) {
                db.get(&key::handle_key(&handle))?
                    .ok_or_else(|| corrupt("rights key without its handle key".into()))?
                    .to_vec()
            } else {
                handle
            };
            out.push((part, rights));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.into_iter()
            .map(|(part, rights)| {
                let name = key::name_of_part(&part).ok_or_else(|| corrupt("rights handle without separator".into()))?;
                Ok((name, rights))
            })
            .collect()
    }

    /// Open (or create) the directory on the engine `cfg` selects.
    /// `groups` is the configured replica groups; their primaries seed the
    /// directory (see the module documentation for run-time primaries).
    /// Durable changes go to `hub`'s streams.
    pub fn open(cfg: &StoreConfig, groups: &[ReplicaGroup], hub: Arc<Hub>) -> Result<Directory, StoreError> {
        match &cfg.engine {
            EngineKind::Sled(c) => {
                let label = c.path.display().to_string();
                Self::open_with(Arc::new(SledEngine::open(c)?), label, groups, hub)
            }
            EngineKind::Memory => Self::open_with(Arc::new(MemoryEngine::new()), "memory".into(), groups, hub),
        }
    }

    /// Open the directory on an engine already open; `label` names it in
    /// logs (the data folder).
    pub fn open_with(engine: Arc<dyn Engine>, label: String, groups: &[ReplicaGroup], hub: Arc<Hub>) -> Result<Directory, StoreError> {
        let seq = engine.sequencer().clone();
        seq.set_hub(hub.clone());
        migrate_rights_index(&*engine)?;
        let mut list = groups.to_vec();
        let mut takeovers = Vec::new();
        for g in &mut list {
            let k = key::group_key(&g.name);
            let stored = match engine.get(&k)? {
                Some(v) => Some(GroupState::decode(&v).ok_or_else(|| corrupt(format!("group {}", g.name)))?),
                None => None,
            };
            match stored {
                Some(st) if st.config_primary == g.primary && st.primary.as_ref().is_none_or(|p| g.servers.contains(p)) => {
                    g.primary = st.primary;
                }
                _ => {
                    let st = GroupState { primary: g.primary.clone(), config_primary: g.primary.clone() };
                    let mut b = Batch::default();
                    b.insert(k, st.encode());
                    engine.apply_unnumbered(b)?;
                    if let Some(p) = &g.primary {
                        takeovers.push(p.clone());
                    }
                }
            }
        }
        let store = Directory {
            inner: Arc::new(Inner {
                engine,
                seq,
                hub,
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                groups: RwLock::new(Arc::new(Groups::new(list))),
                primary: Mutex::new(()),
                conflicts_seen: AtomicU64::new(0),
                offload: tokio::sync::Semaphore::new(offload_permits()),
                label,
                damaged: Arc::new(OnceLock::new()),
                backup: RwLock::new(None),
            }),
        };
        // A newly configured primary takes over now; its changes go to the
        // hub like any write's (no stream is registered yet).
        for p in takeovers {
            store.take_over_all(&p)?;
        }
        store.inner.engine.sync_now()?;
        store.inner.engine.check_in_background(store.inner.damaged.clone())?;
        Ok(store)
    }

    /// The hub this directory publishes its durable changes to (UPDATE
    /// streams subscribe there).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// The storage engine, for reads of what is stored (diagnostics,
    /// tests); a write through it bypasses the directory's locks, indexes
    /// and streams.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    fn groups_now(&self) -> Arc<Groups> {
        self.inner.groups.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The stripe (write lock, last sequence number, integrity summary)
    /// of a name: [`verify::stripe_of`] of its key part, stable on disk.
    #[cfg(test)]
    pub(super) fn stripe(&self, name: &[u8]) -> usize {
        verify::stripe_of(&key::mailbox_part(name))
    }

    /// The lock of a stripe.
    pub(super) fn lock_stripe(&self, stripe: usize) -> MutexGuard<'_, ()> {
        self.inner.stripes[stripe].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, part: &[u8]) -> Result<Option<Mailbox>, StoreError> {
        let raw = self.inner.engine.get(&key::name_key(part)).map_err(|e| self.inner.seen(e.into()))?;
        self.decode(raw.as_deref())
    }

    /// What a name's stored value decodes to; damage found here marks the
    /// store damaged.
    fn decode(&self, raw: Option<&[u8]>) -> Result<Option<Mailbox>, StoreError> {
        match raw {
            Some(v) => Ok(Some(Mailbox::decode(v).map_err(|e| self.inner.seen(corrupt(e)))?)),
            None => Ok(None),
        }
    }

    /// A name's mailbox, and the number of the write a reader must wait
    /// for before it shows it (the last one begun on its stripe: it may
    /// be what was read).
    fn load_seen(&self, name: &[u8]) -> Result<(Option<Mailbox>, u64), StoreError> {
        let part = key::mailbox_part(name);
        let stripe = verify::stripe_of(&part);
        let read = self.inner.engine.read(&key::name_key(&part), stripe).map_err(|e| self.inner.seen(e.into()))?;
        Ok((self.decode(read.value.as_deref())?, read.seq))
    }

    /// Read-modify-write of one name under its lock: `f` changes the
    /// records, the value, index and conflict keys are written in one
    /// batch, with the change clients see as the write's note (published
    /// once it is durable). Returns `f`'s result, whether clients see a
    /// change, and the number of the write to wait for before answering:
    /// its own, or, if it changed nothing, the stripe's last (the state it
    /// read).
    fn update<R>(&self, name: &[u8], f: impl FnOnce(&mut Mailbox, &Groups) -> R) -> Result<(R, bool, u64), StoreError> {
        let part = key::mailbox_part(name);
        let stripe = verify::stripe_of(&part);
        let _guard = self.lock_stripe(stripe);
        if let Some(d) = self.inner.damaged.get() {
            return Err(StoreError::Damaged(d.clone()));
        }
        let engine = &*self.inner.engine;
        // Held (shared) for the whole read-modify-write: set_primary swaps
        // the groups under the exclusive lock, so once it has swapped, no
        // write decided with the old groups is still in flight.
        let groups = self.inner.groups.read().unwrap_or_else(|e| e.into_inner());
        let nkey = key::name_key(&part);
        let read = engine.read(&nkey, stripe).map_err(|e| self.inner.seen(e.into()))?;
        let old = self.decode(read.value.as_deref())?.unwrap_or_default();
        let mut new = old.clone();
        let r = f(&mut new, &groups);
        if new == old {
            return Ok((r, false, read.seq));
        }
        let mut batch = Batch::default();
        // The stripe's summary changes in the same batch (verify.rs).
        let skey = verify::summary_key(stripe);
        let mut sum = match engine.get(&skey).map_err(|e| self.inner.seen(e.into()))? {
            Some(v) => verify::Summary::decode(&v).ok_or_else(|| self.inner.seen(corrupt("summary".into())))?,
            None => verify::Summary::default(),
        };
        if let Some(v) = &read.value {
            sum.sub(&nkey, v);
        }
        if new.records.is_empty() {
            batch.remove(nkey.clone());
        } else {
            let v = new.encode();
            sum.add(&nkey, &v);
            batch.insert(nkey.clone(), v);
        }
        batch.insert(skey, sum.encode());
        if let Some(b) = self.inner.backup.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.before_write(&nkey, read.value.clone());
        }
        for r in &old.records {
            if new.find(r.server()).is_none() {
                batch.remove(key::server_key(r.server(), &part));
            }
        }
        for r in &new.records {
            let before = old.find(r.server()).map(|i| &old.records[i]);
            if before.is_none_or(|b| (b.state, &b.location, &b.acl) != (r.state, &r.location, &r.acl)) {
                batch.insert(key::server_key(r.server(), &part), index_value(r));
            }
        }
        index_rights(&mut batch, &part, &acl_entries(&old), &acl_entries(&new));
        if old.conflict != new.conflict {
            if new.conflict {
                batch.insert(key::conflict_key(&part), Vec::new());
            } else {
                batch.remove(key::conflict_key(&part));
            }
        }
        batch.guard(Guard { key: nkey.into(), value: read.value, epoch: read.epoch });
        let note = change(name, &old, &new);
        let changed = note.is_some();
        let seq = engine.apply(stripe, batch, note).map_err(engine_err)?;
        Ok((r, changed, seq))
    }

    /// Wait until write `seq` (what a command wrote, or read) is on disk.
    async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        Ok(self.inner.seq.durable(seq).await?)
    }

    async fn write(&self, name: &[u8], f: impl FnOnce(&mut Mailbox, &Groups) -> Reply) -> Result<WriteOutcome, StoreError> {
        let (reply, _, seq) = self.update(name, f)?;
        self.durable(seq).await?;
        Ok(WriteOutcome { reply })
    }

    fn refused(reply: Reply) -> WriteOutcome {
        WriteOutcome { reply }
    }

    /// `RESERVE name location`.
    pub async fn reserve(&self, who: &Identity, name: &[u8], location: &[u8]) -> Result<WriteOutcome, StoreError> {
        if let Err(r) = model::check_identity(who.servers.as_deref(), location) {
            return Ok(Self::refused(r));
        }
        self.write(name, |m, g| model::reserve(m, location, g)).await
    }

    /// `ACTIVATE name location acl`: always `OK "done"` for a location the
    /// login may speak for.
    pub async fn activate(&self, who: &Identity, name: &[u8], location: &[u8], acl: &[u8]) -> Result<WriteOutcome, StoreError> {
        if let Err(r) = model::check_identity(who.servers.as_deref(), location) {
            return Ok(Self::refused(r));
        }
        let (activated, _, seq) = if name.len() + acl.len() > OFFLOAD_BYTES {
            let _permit = self.inner.offload.acquire().await.map_err(|_| StoreError::Unavailable)?;
            let (store, name, location, acl) = (self.clone(), name.to_vec(), location.to_vec(), acl.to_vec());
            tokio::task::spawn_blocking(move || store.update(&name, |m, g| model::activate(m, &location, &acl, g)))
                .await
                .map_err(|e| StoreError::Durability(format!("write task failed: {e}")))??
        } else {
            self.update(name, |m, g| model::activate(m, location, acl, g))?
        };
        if let Activated::Conflict(x) = activated {
            self.inner.conflicts_seen.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                mailbox = %String::from_utf8_lossy(name),
                effective = %String::from_utf8_lossy(&x),
                server = %String::from_utf8_lossy(server_of(location)),
                "conflict: two unrelated servers hold this mailbox; the first stays effective"
            );
        }
        self.durable(seq).await?;
        Ok(WriteOutcome { reply: Reply::Done })
    }

    /// `DEACTIVATE name location`.
    pub async fn deactivate(&self, who: &Identity, name: &[u8], location: &[u8]) -> Result<WriteOutcome, StoreError> {
        if let Err(r) = model::check_identity(who.servers.as_deref(), location) {
            return Ok(Self::refused(r));
        }
        self.write(name, |m, g| model::deactivate(m, location, g)).await
    }

    /// `DELETE name`: a known identity removes its own records; an unknown
    /// one the effective record and its group's. Always `OK "done"`.
    pub async fn delete(&self, who: &Identity, name: &[u8]) -> Result<WriteOutcome, StoreError> {
        match &who.servers {
            Some(list) => self.write(name, |m, g| model::delete_known(m, list, g)).await,
            None => self.write(name, model::delete_unknown).await,
        }
    }

    /// FIND: at most one entry (the effective record, or none for a
    /// backend's own replica sibling; facts model).
    pub fn find(&self, who: &Identity, name: &[u8]) -> Result<Option<Entry>, StoreError> {
        let part = key::mailbox_part(name);
        Ok(match self.load(&part)? {
            Some(m) => model::find(&m, name, who.servers.as_deref(), &self.groups_now()),
            None => None,
        })
    }

    /// The effective record now (UPDATE stream flushes).
    pub fn effective(&self, name: &[u8]) -> Result<Option<Entry>, StoreError> {
        let part = key::mailbox_part(name);
        Ok(self.load(&part)?.and_then(|m| m.present(name)))
    }

    /// FIND for a session: [`Directory::find`], answered once what it read is
    /// durable (a write it saw could otherwise be lost by a crash after
    /// the answer). Waits for the name's stripe only, never for unrelated
    /// names' fsyncs beyond the one in progress.
    pub async fn find_durable(&self, who: &Identity, name: &[u8]) -> Result<Option<Entry>, StoreError> {
        let (m, seq) = self.load_seen(name)?;
        self.durable(seq).await?;
        Ok(m.and_then(|m| model::find(&m, name, who.servers.as_deref(), &self.groups_now())))
    }

    /// The effective record, once what was read is durable (UPDATE
    /// streams).
    pub async fn effective_durable(&self, name: &[u8]) -> Result<Option<Entry>, StoreError> {
        let (m, seq) = self.load_seen(name)?;
        self.durable(seq).await?;
        Ok(m.and_then(|m| m.present(name)))
    }

    /// A mark taken before a scan ([`Directory::list`], [`Directory::list_prefix`]);
    /// [`Directory::scan_durable`] with it after the scan.
    pub fn scan_mark(&self) -> u64 {
        self.inner.engine.epoch()
    }

    /// Wait, once at the end of a scan, until everything it may have seen
    /// is durable; an error if the database was reopened meanwhile (the
    /// scan may have shown writes that were lost).
    pub async fn scan_durable(&self, mark: u64) -> Result<(), StoreError> {
        self.durable(self.inner.seq.latest()).await?;
        if self.inner.engine.epoch() != mark {
            return Err(StoreError::Unavailable);
        }
        Ok(())
    }

    /// LIST / UPDATE dump: the effective record of every name, in order,
    /// read straight from the store without a global lock.
    pub fn list(&self) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send> {
        let inner = self.inner.clone();
        let it = self.inner.engine.scan_prefix(&[key::NAMES]).filter_map(move |kv| {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return Some(Err(inner.seen(e.into()))),
            };
            let name = match key::name_of_part(&k[1..]) {
                Some(n) => n,
                None => return Some(Err(inner.seen(corrupt("name key without separator".into())))),
            };
            match Mailbox::decode(&v) {
                Ok(m) => m.into_present(name).map(Ok),
                Err(e) => Some(Err(inner.seen(corrupt(e)))),
            }
        });
        Box::new(it)
    }

    /// `LIST "prefix"`: every record whose location starts with `prefix`,
    /// in order; costs what its answer costs.
    pub fn list_prefix(&self, prefix: &[u8]) -> Box<dyn Iterator<Item = Result<Entry, StoreError>> + Send> {
        let servers = match prefix.iter().position(|&b| b == b'!') {
            Some(i) => Ok(vec![prefix[..i].to_vec()]),
            None => self.servers_with_prefix(prefix).map(|mut v| {
                // Records of server "" have no '!' and may match as a whole.
                if !v.iter().any(|s| s.is_empty()) {
                    v.push(Vec::new());
                }
                v
            }),
        };
        match servers {
            Ok(servers) => Box::new(RecordScan::new(self.clone(), servers, prefix.to_vec())),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// Every server that holds a record and whose name starts with
    /// `prefix`: one index seek per server.
    pub fn servers_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        let mut start = vec![key::SERVERS];
        start.extend_from_slice(prefix);
        let db = &*self.inner.engine;
        while let Some(kv) = db.scan_from(&start).next() {
            let (k, _) = kv?;
            if k.first() != Some(&key::SERVERS) {
                break;
            }
            let end = k.iter().skip(1).position(|&b| b == 0).ok_or_else(|| corrupt("index key without separator".into()))?;
            let server = &k[1..1 + end];
            if !server.starts_with(prefix) {
                break;
            }
            out.push(server.to_vec());
            start = vec![key::SERVERS];
            start.extend_from_slice(server);
            start.push(1);
        }
        Ok(out)
    }

    /// Every record of `name`, oldest first (admin view).
    pub fn records(&self, name: &[u8]) -> Result<Vec<RecordView>, StoreError> {
        let part = key::mailbox_part(name);
        Ok(self
            .load(&part)?
            .map(|m| {
                let groups = self.groups_now();
                let eff = m.eff_record().map(|e| e.server().to_vec());
                m.records
                    .iter()
                    .map(|r| {
                        let role = match &eff {
                            _ if r.effective => RecordRole::Effective,
                            Some(e) if !groups.same_group(r.server(), e) => match r.state {
                                model::RecordState::Active => RecordRole::Conflict,
                                _ => RecordRole::Other,
                            },
                            // A replica's copy, or a copy kept hidden when
                            // its group's effective record was deleted.
                            _ => RecordRole::Shadow,
                        };
                        RecordView {
                            server: r.server().to_vec(),
                            location: r.location.clone(),
                            state: r.state,
                            acl: r.acl.clone(),
                            effective: r.effective,
                            role,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every unresolved conflict, in LIST order.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, StoreError> {
        let groups = self.groups_now();
        let mut out = Vec::new();
        for kv in self.inner.engine.scan_prefix(&[key::CONFLICTS]) {
            let (k, _) = kv?;
            let part = &k[1..];
            let name = key::name_of_part(part).ok_or_else(|| corrupt("conflict key without separator".into()))?;
            if let Some(m) = self.load(part)? {
                if let Some(e) = m.eff_record() {
                    out.push(Conflict { name, effective: e.server().to_vec(), others: m.conflicting_servers(&groups) });
                }
            }
        }
        Ok(out)
    }

    /// ACTIVATEs that met an active record of an unrelated server since
    /// this process started.
    pub fn conflicts_seen(&self) -> u64 {
        self.inner.conflicts_seen.load(Ordering::Relaxed)
    }

    /// Admin: make `server`'s record of `name` the effective one (and mark
    /// a conflict resolved). `NO "mailbox doesn't exist"` when that server
    /// has no record.
    pub async fn resolve(&self, name: &[u8], server: &[u8]) -> Result<WriteOutcome, StoreError> {
        self.write(name, |m, _| model::resolve(m, server)).await
    }

    /// Admin / `DELETE name location`: remove the record of the location's
    /// server. `OK "done"` also when it had none.
    pub async fn delete_record(&self, name: &[u8], location: &[u8]) -> Result<WriteOutcome, StoreError> {
        let server = vec![server_of(location).to_vec()];
        self.write(name, |m, g| model::delete_known(m, &server, g)).await
    }

    /// Replica groups with the primaries in effect.
    pub fn groups(&self) -> Vec<ReplicaGroup> {
        self.groups_now().list.clone()
    }

    /// Set (or clear) the primary of `group`, durably; the primary's
    /// active records become effective for every name whose effective
    /// record is in the group. Costs the primary's records (index scan).
    /// Returns how many names changed for clients (their changes reach the
    /// streams by themselves).
    pub async fn set_primary(&self, group: &str, server: Option<&[u8]>) -> Result<usize, StoreError> {
        let changes = {
            let _one_at_a_time = self.inner.primary.lock().unwrap_or_else(|e| e.into_inner());
            let groups = self.groups_now();
            let i = groups.index_of(group).ok_or_else(|| StoreError::Invalid(format!("no replica group {group}")))?;
            if let Some(s) = server {
                if !groups.list[i].servers.iter().any(|x| x == s) {
                    return Err(StoreError::Invalid(format!("{} is not in group {group}", String::from_utf8_lossy(s))));
                }
            }
            let k = key::group_key(group);
            let db = &*self.inner.engine;
            let mut st = match db.get(&k)? {
                Some(v) => GroupState::decode(&v).ok_or_else(|| corrupt(format!("group {group}")))?,
                None => GroupState::default(),
            };
            st.primary = server.map(<[u8]>::to_vec);
            let mut b = Batch::default();
            b.insert(k, st.encode());
            db.apply_unnumbered(b)?;
            let mut list = groups.list.clone();
            list[i].primary = st.primary.clone();
            *self.inner.groups.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Groups::new(list));
            match server {
                Some(p) => self.take_over_all(p)?,
                None => 0,
            }
        };
        self.durable(self.inner.seq.fresh()).await?;
        Ok(changes)
    }

    /// Make primary `p`'s active records effective wherever the effective
    /// record is in its group.
    /// Returns how many names changed for clients.
    fn take_over_all(&self, p: &[u8]) -> Result<usize, StoreError> {
        let start = key::server_range_start(p);
        let mut changes = 0;
        for kv in self.inner.engine.scan_prefix(&start) {
            let (k, _) = kv?;
            let name = key::name_of_part(&k[start.len()..]).ok_or_else(|| corrupt("index key without separator".into()))?;
            let ((), changed, _) = self.update(&name, |m, g| model::take_over(m, p, g))?;
            changes += changed as usize;
        }
        Ok(changes)
    }

    /// Bytes of every live key and value: what the directory holds before
    /// sled's own overhead (a diagnostic and test measure; reads everything).
    pub fn stored_bytes(&self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for kv in self.inner.engine.scan_prefix(&[]) {
            let (k, v) = kv?;
            n += (k.len() + v.len()) as u64;
        }
        Ok(n)
    }

    /// The engine's estimate of the database size on disk, bytes.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.engine.size_on_disk()?)
    }
}

/// `LIST prefix`: the ordered merge of some servers' index ranges, each hit
/// presented as that server's record.
struct RecordScan {
    store: Directory,
    prefix: Vec<u8>,
    servers: Vec<Vec<u8>>,
    iters: Vec<Scan>,
    /// (order_key 0 suffix, server index, the index value): the next key
    /// of each scan.
    heads: BinaryHeap<Reverse<(Vec<u8>, usize, Bytes)>>,
    failed: Option<StoreError>,
}

impl RecordScan {
    fn new(store: Directory, servers: Vec<Vec<u8>>, prefix: Vec<u8>) -> RecordScan {
        let iters = servers.iter().map(|s| store.inner.engine.scan_prefix(&key::server_range_start(s))).collect();
        let mut scan = RecordScan { store, prefix, servers, iters, heads: BinaryHeap::new(), failed: None };
        for i in 0..scan.iters.len() {
            scan.advance(i);
        }
        scan
    }

    fn advance(&mut self, i: usize) {
        match self.iters[i].next() {
            Some(Ok((k, v))) => {
                let skip = 2 + self.servers[i].len();
                self.heads.push(Reverse((k[skip..].to_vec(), i, v)));
            }
            Some(Err(e)) => self.failed = Some(e.into()),
            None => {}
        }
    }

    fn entry(&self, part: &[u8], server: &[u8], value: &[u8]) -> Result<Option<Entry>, StoreError> {
        let name = key::name_of_part(part).ok_or_else(|| corrupt("index key without separator".into()))?;
        // The index value is the record (one key read, in order); an empty
        // value (a database written before records were kept there) sends
        // us to the name's value.
        let m = if value.is_empty() {
            // The record may have gone since the index was read: skip it.
            let Some(m) = self.store.load(part)? else { return Ok(None) };
            m
        } else {
            Mailbox::decode(value).map_err(|e| self.store.inner.seen(corrupt(e)))?
        };
        Ok(m.find(server)
            .map(|i| &m.records[i])
            .filter(|r| r.location.starts_with(&self.prefix))
            .map(|r| model::present(&name, r)))
    }
}

impl Iterator for RecordScan {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.failed.take() {
                self.heads.clear();
                return Some(Err(e));
            }
            let Reverse((part, i, value)) = self.heads.pop()?;
            self.advance(i);
            match self.entry(&part, &self.servers[i], &value) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
#[path = "rights_index_tests.rs"]
mod rights_index_tests;

impl Inner {
    /// Note damage that a read found (a value that does not decode, the
    /// engine reporting corruption): logged once, and from then on writes are
    /// refused ([`StoreError::Damaged`]) instead of acknowledged into a
    /// damaged store. Other errors pass through.
    pub(super) fn seen(&self, e: StoreError) -> StoreError {
        let damage = matches!(&e, StoreError::Corrupt(_) | StoreError::Engine(EngineError::Corrupt(_)));
        if damage && self.damaged.set(e.to_string()).is_ok() {
            tracing::error!(
                error = %e,
                data_dir = %self.label,
                "the directory is damaged: writes are refused from now on; stop the server and run `mupdatectl verify --data-dir DIR`"
            );
        }
        e
    }
}

impl Drop for Inner {
    /// A clean stop: the engine makes everything durable (the sled engine
    /// writes its seal, verify.rs). Not clean when damage was seen.
    fn drop(&mut self) {
        self.engine.close(self.damaged.get().is_none());
    }
}
