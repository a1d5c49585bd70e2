//! Integrity: per-stripe summaries, the clean-stop seal, the checks at
//! open and in `mupdatectl verify`, and `mupdatectl rebuild-indexes`.
//!
//! # What is kept
//! - **Summaries** (`c stripe:u16be` -> count:u64be digest:u64be): per
//!   write stripe (the per-name lock, [`STRIPES`]), the number of names and
//!   the wrapping sum of a 64-bit hash of each name key and its value.
//!   [`Directory`](super::Directory)'s read-modify-write changes its
//!   stripe's summary in the same batch as the value, under the stripe
//!   lock, so no global lock is needed and a summary always matches its
//!   records in the engine.
//!   `c` alone holds the summary format version (1); a directory written
//!   before summaries existed gets them computed once at open.
//! - **The seal** (`<data_dir>/mupdated.seal`): written (and fsynced, with
//!   the folder) when the store closes cleanly, holding the total count
//!   and digest of all stripes; removed at open before the first write.
//!   sled's recovery drops a damaged log tail *atomically* (values and
//!   summaries together), so a truncation can only be seen against
//!   something outside sled's log: the seal.
//!
//! # The checks
//! - **quick** (at open by default): the 1024 summaries decode, and, when
//!   a seal is present, their total equals it ("the directory lost N
//!   mailboxes since it was cleanly stopped"). Costs 1024 reads. Without a
//!   seal (after a crash or `kill -9`) only sled's own recovery has run:
//!   every acknowledged write was fsynced, so a crash loses nothing that
//!   was acknowledged, but a damaged file is only found by the full check.
//! - **full** (`mupdatectl verify`, or `verify_on_open = "full"`): every
//!   key is read once; every value decodes; the summaries recomputed from
//!   the records equal the stored ones; the index by server, the rights
//!   index and the conflict keys recomputed from the records equal the
//!   stored ones (compared as order-independent digests, so the check
//!   needs constant memory); group states decode.
//!
//! The expected index entries of a name come from `index_entries`, used
//! by the full check and by [`rebuild`]; the rights part is in
//! `rights_entries` alone, so that a new rights-key layout changes one
//! function here (and the incremental code in `directory.rs`).
//!
//! Everything here reads and writes through the engine seam
//! ([`Engine`]); the seal file, [`open_offline`] and [`quietly`] are the
//! sled engine's (`engine/sled/seal.rs`, `engine/sled/offline.rs`),
//! re-exported here for the offline tools.
//!
//! A panic inside sled on a damaged file (seen with a database truncated
//! by 1 MiB) is caught ([`quietly`]) and becomes the damage message.

use std::path::Path;

use super::directory::{acl_entries, index_value, GroupState};
pub(crate) use super::engine::sled::seal::{read_seal, remove_seal, write_seal};
pub use super::engine::sled::seal::SEAL_FILE;
pub use super::engine::sled::offline::{compression_of, open_offline, quietly, OpenError};
use super::engine::{Batch, Engine, EngineError, Scan};
use super::key;
use super::model::Mailbox;
use super::STRIPES;

/// Key space of the per-stripe summaries (`c stripe:u16be`); `c` alone is
/// the summary format version.
pub(crate) const SUMMARIES: u8 = b'c';
const META_KEY: [u8; 1] = [SUMMARIES];
const SUMMARY_VERSION: u8 = 1;


/// What to tell an operator whose directory is damaged.
pub const WHAT_TO_DO: &str = "What to do: stop here and keep the folder as it is; restore a backup \
(`mupdatectl import --data-dir NEWDIR BACKUP/backup.jsonl`), or save what is readable \
(`mupdatectl export --data-dir DIR > FILE`, then `mupdatectl import --data-dir NEWDIR FILE`); \
`mupdatectl verify --data-dir DIR` lists every problem; when only the indexes are damaged, \
`mupdatectl rebuild-indexes --data-dir DIR` repairs them (and accepts the loss of anything already gone).";

/// How much to check when the store opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Summaries against the clean-stop seal: 1024 reads.
    #[default]
    Quick,
    /// Every key read (see the module documentation).
    Full,
}

fn fnv1a(chunks: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in chunks {
        for &b in *c {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// splitmix64's finaliser: spreads FNV's weak high bits, so that sums of
/// hashes behave.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash of one stored entry. Stable across builds and Rust versions
/// (hand-written FNV-1a), since it is kept on disk.
pub(crate) fn entry_hash(key: &[u8], value: &[u8]) -> u64 {
    mix(fnv1a(&[&(key.len() as u64).to_le_bytes(), key, value]))
}

/// The write stripe of a name, from its [`key::mailbox_part`]: the lock
/// and the summary it belongs to. Stable across builds (it is on disk).
pub(crate) fn stripe_of(part: &[u8]) -> usize {
    (mix(fnv1a(&[part])) % STRIPES as u64) as usize
}

/// Number of entries and the wrapping sum of their hashes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    pub count: u64,
    pub digest: u64,
}

impl Summary {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.count = self.count.wrapping_add(1);
        self.digest = self.digest.wrapping_add(entry_hash(key, value));
    }

    pub fn sub(&mut self, key: &[u8], value: &[u8]) {
        self.count = self.count.wrapping_sub(1);
        self.digest = self.digest.wrapping_sub(entry_hash(key, value));
    }

    pub fn merge(&mut self, o: Summary) {
        self.count = self.count.wrapping_add(o.count);
        self.digest = self.digest.wrapping_add(o.digest);
    }

    pub fn encode(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.count.to_be_bytes());
        v[8..].copy_from_slice(&self.digest.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Option<Summary> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let (c, d) = b.split_at(8);
        Some(Summary {
            count: u64::from_be_bytes(c.try_into().ok()?),
            digest: u64::from_be_bytes(d.try_into().ok()?),
        })
    }
}

/// Key of a stripe's summary.
pub(crate) fn summary_key(stripe: usize) -> [u8; 3] {
    let s = (stripe as u16).to_be_bytes();
    [SUMMARIES, s[0], s[1]]
}

/// The rights index entries (key, value) of a name: one small function so
/// that a change of the rights-key layout changes only this here.
pub(crate) fn rights_entries(part: &[u8], m: &Mailbox) -> Vec<(Vec<u8>, Vec<u8>)> {
    let acl = acl_entries(m);
    if acl.is_empty() {
        return Vec::new();
    }
    // The layout of key.rs: one key per identifier under the name's
    // handle, and for a long name one key mapping the handle back to it.
    let handle = key::rights_handle(part);
    let mut out: Vec<(Vec<u8>, Vec<u8>)> =
        acl.into_iter().map(|(id, rights)| (key::rights_key(&id, &handle), rights)).collect();
    if key::is_long_handle(&handle) {
        out.push((key::handle_key(&handle), part.to_vec()));
    }
    out
}

/// Every index entry a name's value implies.
pub(crate) struct IndexEntries {
    pub servers: Vec<(Vec<u8>, Vec<u8>)>,
    pub rights: Vec<(Vec<u8>, Vec<u8>)>,
    pub conflict: Option<Vec<u8>>,
}

pub(crate) fn index_entries(part: &[u8], m: &Mailbox) -> IndexEntries {
    IndexEntries {
        servers: m
            .records
            .iter()
            .map(|r| (key::server_key(r.server(), part), index_value(r)))
            .collect(),
        rights: rights_entries(part, m),
        conflict: m.conflict.then(|| key::conflict_key(part)),
    }
}

// ---- summaries as stored ----

/// The stored summaries, one per stripe (missing ones are empty), and the
/// problems met reading them.
fn stored_summaries(db: &dyn Engine) -> Result<(Vec<Summary>, Vec<String>), EngineError> {
    let mut out = vec![Summary::default(); STRIPES];
    let mut problems = Vec::new();
    for kv in db.scan_prefix(&[SUMMARIES]) {
        let (k, v) = kv?;
        if k.len() == 1 {
            continue;
        }
        let stripe = (k.len() == 3)
            .then(|| usize::from(u16::from_be_bytes([k[1], k[2]])))
            .filter(|&s| s < STRIPES);
        match (stripe, Summary::decode(&v)) {
            (Some(s), Some(sum)) => out[s] = sum,
            _ => problems.push(format!(
                "a summary key or value is malformed ({} bytes of key, {} of value)",
                k.len(),
                v.len()
            )),
        }
    }
    Ok((out, problems))
}

fn total(sums: &[Summary]) -> Summary {
    let mut t = Summary::default();
    for s in sums {
        t.merge(*s);
    }
    t
}

/// Sum of the stored summaries (what the seal records at a clean stop).
pub(crate) fn stored_total(db: &dyn Engine) -> Result<Summary, EngineError> {
    Ok(total(&stored_summaries(db)?.0))
}

/// Summaries recomputed from the records.
fn computed_summaries(db: &dyn Engine) -> Result<Vec<Summary>, EngineError> {
    let mut out = vec![Summary::default(); STRIPES];
    for kv in db.scan_prefix(&[key::NAMES]) {
        let (k, v) = kv?;
        out[stripe_of(&k[1..])].add(&k, &v);
    }
    Ok(out)
}

fn write_summaries(db: &dyn Engine, sums: &[Summary]) -> Result<(), EngineError> {
    let mut batch = Batch::default();
    for (i, s) in sums.iter().enumerate() {
        if *s == Summary::default() {
            batch.remove(summary_key(i));
        } else {
            batch.insert(summary_key(i), s.encode());
        }
    }
    batch.insert(META_KEY, [SUMMARY_VERSION]);
    db.apply_unnumbered(batch)
}

fn lost_text(seal: Summary, now: Summary) -> String {
    if seal.count == now.count {
        format!(
            "it holds {} mailboxes, as many as when it was cleanly stopped, but their contents changed since \
             (checksum {:016x}, sealed {:016x}): something wrote to it behind mupdated's back or the file is damaged",
            now.count, now.digest, seal.digest
        )
    } else if now.count < seal.count {
        format!(
            "the directory lost {} mailboxes since it was cleanly stopped (it holds {}, the seal says {})",
            seal.count - now.count,
            now.count,
            seal.count
        )
    } else {
        format!(
            "it holds {} more mailboxes than when it was cleanly stopped ({} against {}): something wrote to it behind mupdated's back",
            now.count - seal.count,
            now.count,
            seal.count
        )
    }
}

/// The check at open. `Err` is the damage (what is wrong); `Ok` carries
/// notes worth logging. Writes only when a directory from before summaries
/// existed gets its summaries.
pub(crate) fn check_at_open(
    db: &dyn Engine,
    dir: &Path,
    mode: VerifyMode,
) -> Result<Vec<String>, String> {
    let seal = read_seal(dir)?;
    let mut notes = Vec::new();
    let se = |e: EngineError| format!("reading the database failed: {e}");
    let has_meta = db.get(&META_KEY).map_err(se)?;
    match has_meta.as_deref() {
        Some([SUMMARY_VERSION]) => {}
        Some(v) => return Err(format!("unknown summary format {v:?}")),
        None => {
            let sums = computed_summaries(db).map_err(se)?;
            let t = total(&sums);
            if t.count > 0 {
                notes.push(format!(
                    "computed the integrity summaries of {} mailboxes (first open by this version)",
                    t.count
                ));
            }
            write_summaries(db, &sums).map_err(se)?;
        }
    }
    let (sums, problems) = stored_summaries(db).map_err(se)?;
    if let Some(p) = problems.first() {
        return Err(p.clone());
    }
    let now = total(&sums);
    match seal {
        Some(s) if s != now => return Err(lost_text(s, now)),
        Some(_) => {}
        None if now.count > 0 => notes.push(
            "no clean-stop seal (the last stop was a crash, a kill, or a version without seals): sled recovered its log, \
             which keeps every acknowledged write; a damaged file is only found by `mupdatectl verify` (or verify_on_open = \"full\")"
                .into(),
        ),
        None => {}
    }
    if mode == VerifyMode::Full {
        let report = full_check(db, dir, |_| {}).map_err(se)?;
        if !report.is_clean() {
            return Err(report.problems.join("; "));
        }
    }
    Ok(notes)
}

// ---- the background read after a quick open ----

/// Read every key once and decode every name value, group state and
/// summary: the part of the full check that holds on a live store (what a
/// value decodes to does not depend on writes to other keys, while
/// comparing indexes or summaries with records would race the writers).
/// Run after a quick open, so that damage in a page sled did not read
/// while it recovered is found within seconds of the start, not at the
/// first read of that name. `Ok(None)`: nothing found, or `stop` was set
/// (the store is closing). A sled panic on a damaged page is damage too.
pub(crate) fn read_everything(all: Scan, stop: &std::sync::atomic::AtomicBool) -> Option<String> {
    let scan = quietly(|| -> Result<Option<String>, EngineError> {
        for (n, kv) in all.enumerate() {
            if n % 1024 == 0 && stop.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(None);
            }
            let (k, v) = kv?;
            let bad = match k.first().copied() {
                Some(key::NAMES) => match Mailbox::decode(&v) {
                    Ok(m) if key::name_of_part(&k[1..]).is_some() && !m.records.is_empty() => None,
                    Ok(_) => Some(format!("{}: a key without a name, or no records", name_text(&k[1..]))),
                    Err(e) => Some(format!("{}: {e}", name_text(&k[1..]))),
                },
                Some(key::GROUPS) if GroupState::decode(&v).is_none() => Some("a replica-group state does not decode".into()),
                Some(SUMMARIES) if k.len() == 3 && Summary::decode(&v).is_none() => Some("a stripe summary does not decode".into()),
                _ => None,
            };
            if let Some(b) = bad {
                return Ok(Some(format!("a mailbox value does not decode ({b})")));
            }
        }
        Ok(None)
    });
    match scan {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => Some(format!("reading the database failed: {e}")),
        Err(panic) => Some(format!("the storage engine failed on this directory ({panic})")),
    }
}

// ---- the full check ----

/// What the full check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Names whose value decodes.
    pub mailboxes: u64,
    /// Records of those names.
    pub records: u64,
    /// Damage, one sentence each.
    pub problems: Vec<String>,
    /// Names (as far as their keys say) whose value does not decode.
    pub undecodable: Vec<String>,
    /// Worth knowing, not damage.
    pub notes: Vec<String>,
}

impl Report {
    /// Nothing wrong found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn name_text(part: &[u8]) -> String {
    key::name_of_part(part)
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_else(|| format!("{part:?}"))
}

/// Read every key once and compare everything that can be recomputed.
/// `progress` gets the number of keys read every 100,000 keys.
pub fn full_check(
    db: &dyn Engine,
    dir: &Path,
    mut progress: impl FnMut(u64),
) -> Result<Report, EngineError> {
    let mut r = Report::default();
    let mut sums = vec![Summary::default(); STRIPES];
    let (mut want_s, mut want_r, mut want_x) =
        (Summary::default(), Summary::default(), Summary::default());
    let (mut have_s, mut have_r, mut have_x) =
        (Summary::default(), Summary::default(), Summary::default());
    let mut undecodable = 0u64;
    let mut unknown = 0u64;
    let mut bad_groups = 0u64;
    let mut seen = 0u64;
    for kv in db.scan_prefix(&[]) {
        let (k, v) = kv?;
        seen += 1;
        if seen.is_multiple_of(100_000) {
            progress(seen);
        }
        match k.first().copied() {
            Some(key::NAMES) => {
                let part = &k[1..];
                sums[stripe_of(part)].add(&k, &v);
                match Mailbox::decode(&v) {
                    Ok(m) if key::name_of_part(part).is_some() && !m.records.is_empty() => {
                        r.mailboxes += 1;
                        r.records += m.records.len() as u64;
                        let e = index_entries(part, &m);
                        for (k, v) in &e.servers {
                            want_s.add(k, v);
                        }
                        for (k, v) in &e.rights {
                            want_r.add(k, v);
                        }
                        if let Some(k) = &e.conflict {
                            want_x.add(k, b"");
                        }
                    }
                    Ok(_) => {
                        undecodable += 1;
                        if r.undecodable.len() < 10 {
                            r.undecodable.push(format!(
                                "{} (a key without a name, or no records)",
                                name_text(part)
                            ));
                        }
                    }
                    Err(e) => {
                        undecodable += 1;
                        if r.undecodable.len() < 10 {
                            r.undecodable.push(format!("{} ({e})", name_text(part)));
                        }
                    }
                }
            }
            Some(key::SERVERS) => have_s.add(&k, &v),
            Some(key::RIGHTS) | Some(key::HANDLES) => have_r.add(&k, &v),
            Some(key::META) => {}
            Some(key::CONFLICTS) => have_x.add(&k, &v),
            Some(key::GROUPS) => {
                if GroupState::decode(&v).is_none() {
                    bad_groups += 1;
                }
            }
            Some(SUMMARIES) => {}
            _ => unknown += 1,
        }
    }
    if undecodable > 0 {
        r.problems.push(format!(
            "{undecodable} mailbox values do not decode (e.g. {})",
            r.undecodable.join(", ")
        ));
    }
    let (stored, problems) = stored_summaries(db)?;
    r.problems.extend(problems);
    if db.get(&META_KEY)?.is_none() {
        r.notes.push(
            "no integrity summaries yet (written by an older version; the next open computes them)"
                .into(),
        );
    } else {
        let differ = stored.iter().zip(&sums).filter(|(a, b)| a != b).count();
        if differ > 0 {
            let (a, b) = (total(&stored), total(&sums));
            r.problems.push(format!(
                "{differ} of {STRIPES} stripe summaries disagree with the records (summaries count {} mailboxes, the records {}): \
                 values were changed, lost or added without their summary",
                a.count, b.count
            ));
        }
    }
    for (what, want, have) in [
        ("the index by server", want_s, have_s),
        ("the rights index", want_r, have_r),
        ("the conflict list", want_x, have_x),
    ] {
        if want != have {
            r.problems.push(format!(
                "{what} disagrees with the records ({} entries expected, {} present{})",
                want.count,
                have.count,
                if want.count == have.count {
                    ", with different contents"
                } else {
                    ""
                }
            ));
        }
    }
    if bad_groups > 0 {
        r.problems
            .push(format!("{bad_groups} replica-group states do not decode"));
    }
    if unknown > 0 {
        r.notes.push(format!(
            "{unknown} keys in key spaces this version does not know (left alone)"
        ));
    }
    match read_seal(dir) {
        Ok(Some(s)) if s != total(&stored) => r.problems.push(lost_text(s, total(&stored))),
        Ok(Some(_)) => r.notes.push("the clean-stop seal matches".into()),
        Ok(None) => r.notes.push(
            "no clean-stop seal (the last stop was not clean, or the server is running)".into(),
        ),
        Err(e) => r.problems.push(e),
    }
    Ok(r)
}

// ---- rebuild ----

/// What [`rebuild`] did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    /// Mailbox names kept (one value each in the name space), after any
    /// undecodable ones were dropped.
    pub mailboxes: u64,
    /// Entries written back: one in the index by server per record, the
    /// rights index's entries, and one conflict-list entry per name in
    /// conflict.
    pub index_entries: u64,
    /// Undecodable values removed (only with `drop_undecodable`).
    pub dropped: Vec<String>,
}

fn remove_space(db: &dyn Engine, space: u8) -> Result<(), EngineError> {
    loop {
        let keys: Vec<_> = db
            .scan_prefix(&[space])
            .take(10_000)
            .map(|kv| kv.map(|(k, _)| k))
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut b = Batch::default();
        for k in keys {
            b.remove(k);
        }
        db.apply_unnumbered(b)?;
    }
}

/// Drop and rebuild the index by server, the rights index, the conflict
/// list and the summaries from the records; then seal the directory as it
/// now is (the loss of anything already gone is accepted). Refuses when a
/// value does not decode, unless `drop_undecodable` (then those names are
/// removed and listed).
pub fn rebuild(db: &dyn Engine, dir: &Path, drop_undecodable: bool) -> Result<Rebuilt, String> {
    let se = |e: EngineError| format!("the database failed: {e}");
    let mut out = Rebuilt::default();
    let mut bad = Vec::new();
    for kv in db.scan_prefix(&[key::NAMES]) {
        let (k, v) = kv.map_err(se)?;
        let ok = matches!(Mailbox::decode(&v), Ok(m) if !m.records.is_empty())
            && key::name_of_part(&k[1..]).is_some();
        if !ok {
            bad.push(k);
        }
    }
    if !bad.is_empty() && !drop_undecodable {
        let names: Vec<String> = bad.iter().take(10).map(|k| name_text(&k[1..])).collect();
        return Err(format!(
            "{} mailbox values do not decode (e.g. {}); nothing was changed. Export what is readable first \
             (`mupdatectl export`), then run again with --drop-undecodable to remove them",
            bad.len(),
            names.join(", ")
        ));
    }
    remove_seal(dir).map_err(|e| format!("cannot remove the seal: {e}"))?;
    let mut drop_bad = Batch::default();
    for k in bad {
        out.dropped.push(name_text(&k[1..]));
        drop_bad.remove(k);
    }
    db.apply_unnumbered(drop_bad).map_err(se)?;
    for space in [key::SERVERS, key::RIGHTS, key::HANDLES, key::CONFLICTS, SUMMARIES] {
        remove_space(db, space).map_err(se)?;
    }
    let mut indexer = Indexer::default();
    let mut batch = Batch::default();
    let mut in_batch = 0;
    for kv in db.scan_prefix(&[key::NAMES]) {
        let (k, v) = kv.map_err(se)?;
        let m = Mailbox::decode(&v).map_err(|e| format!("{}: {e}", name_text(&k[1..])))?;
        out.mailboxes += 1;
        in_batch += indexer.add(&k, &v, &m, &mut batch);
        if in_batch >= OFFLINE_BATCH {
            db.apply_unnumbered(std::mem::take(&mut batch)).map_err(se)?;
            in_batch = 0;
        }
    }
    db.apply_unnumbered(batch).map_err(se)?;
    out.index_entries = indexer.index_entries as u64;
    indexer.finish(db, dir)?;
    Ok(out)
}

/// Keys per batch the offline writers (import, `rebuild-indexes`) apply.
/// sled 0.34 holds much more memory with larger batches: importing
/// 300,000 mailboxes (a name key, a server-index key and two rights keys
/// each) peaked at 4.3 GB resident with 10,000 keys a batch, 2.8 GB with
/// 2,000, 0.27-0.31 GB with 500 and 0.26 GB with 100, in 32, 32, 36 and
/// 38 s (release, 2 cores).
pub(crate) const OFFLINE_BATCH: usize = 500;

/// The index entries, summaries and seal of a directory, built one name at
/// a time: what [`rebuild`] writes after its scan, and what an import
/// writes beside each value as it goes (one pass, no second scan).
pub(crate) struct Indexer {
    sums: Vec<Summary>,
    /// Index keys added so far.
    pub(crate) index_entries: usize,
}

impl Default for Indexer {
    fn default() -> Indexer {
        Indexer { sums: vec![Summary::default(); STRIPES], index_entries: 0 }
    }
}

impl Indexer {
    /// Add the index keys of the name whose value is `value` under `nkey`
    /// (decoded: `m`) to `batch`, and count it in its stripe's summary.
    /// Returns the number of keys added.
    pub(crate) fn add(&mut self, nkey: &[u8], value: &[u8], m: &Mailbox, batch: &mut Batch) -> usize {
        let part = &nkey[1..];
        self.sums[stripe_of(part)].add(nkey, value);
        let e = index_entries(part, m);
        let mut n = 0;
        for (k, v) in e.servers.iter().chain(&e.rights) {
            batch.insert(&k[..], &v[..]);
            n += 1;
        }
        if let Some(k) = e.conflict {
            batch.insert(k, Vec::new());
            n += 1;
        }
        self.index_entries += n;
        n
    }

    /// Once every name and its keys are applied: the rights layout, the
    /// summaries, everything made durable, then the seal.
    pub(crate) fn finish(self, db: &dyn Engine, dir: &Path) -> Result<(), String> {
        let se = |e: EngineError| format!("the database failed: {e}");
        // What was just built is the current rights layout: no migration at open.
        let mut batch = Batch::default();
        batch.insert(key::rights_layout_key(), key::RIGHTS_LAYOUT);
        db.apply_unnumbered(batch).map_err(se)?;
        write_summaries(db, &self.sums).map_err(se)?;
        db.sync_now().map_err(se)?;
        write_seal(dir, total(&self.sums)).map_err(|e| format!("cannot write the seal: {e}"))
    }
}
