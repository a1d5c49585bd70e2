//! The directory as JSON lines: `mupdatectl export` (offline),
//! `mupdatectl backup` (online, through `XEXPORT`) and `mupdatectl import`.
//!
//! One JSON object per line; every field of the store is carried, so that
//! an import rebuilds exactly the same directory (indexes and summaries are
//! recomputed, not carried):
//!
//! ```text
//! {"kind":"mupdated-export","version":1}
//! {"kind":"group","name":"pair-1","primary":"be1b","config_primary":"be1a"}
//! {"kind":"mailbox","name":"user.a","conflict":false,"records":[
//!    {"server":"be1","location":"be1!default","state":"active","acl":"a\tlrs\t","effective":true}]}
//! ```
//!
//! (each object on one line). The first line is the header. Records are
//! oldest first (their order is their age in the facts model). `primary`
//! and `config_primary` are `null` when unset. A byte string that is not
//! UTF-8 is written as `{"base64":"..."}` instead of a JSON string; every
//! string field accepts both forms. `server` is derived from `location`
//! (before the first `!`) and is there for people and other tools; import
//! checks it.
//!
//! [`import_cyrus_dump`] builds a directory the same way from Cyrus 3.6's
//! `ctl_mboxlist -d` ([`super::cyrus_dump`] reads it);
//! docs/architecture/migration.md describes both.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};

use super::directory::GroupState;
use super::engine::sled::SledEngine;
use super::engine::{Batch, Engine, EngineError};
use super::key;
use super::model::{Mailbox, Record, RecordState};
use super::verify;

/// Format version in the header line.
pub const FORMAT_VERSION: u64 = 1;

/// The first line of every export.
pub fn header() -> String {
    json!({"kind": "mupdated-export", "version": FORMAT_VERSION}).to_string()
}

fn bytes(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({"base64": STANDARD.encode(b)}),
    }
}

fn opt_bytes(b: &Option<Vec<u8>>) -> Value {
    b.as_deref().map(bytes).unwrap_or(Value::Null)
}

fn state_word(s: RecordState) -> &'static str {
    match s {
        RecordState::Active => "active",
        RecordState::Reserved => "reserved",
        RecordState::Moving => "moving",
    }
}

/// The line of one stored name (`n` key and value).
pub(crate) fn mailbox_line(nkey: &[u8], value: &[u8]) -> Result<String, String> {
    let name = nkey
        .get(1..)
        .and_then(key::name_of_part)
        .ok_or("a name key without a name")?;
    let m = Mailbox::decode(value)?;
    let records: Vec<Value> = m
        .records
        .iter()
        .map(|r| {
            json!({
                "server": bytes(r.server()),
                "location": bytes(&r.location),
                "state": state_word(r.state),
                "acl": bytes(&r.acl),
                "effective": r.effective,
            })
        })
        .collect();
    Ok(json!({"kind": "mailbox", "name": bytes(&name), "conflict": m.conflict, "records": records}).to_string())
}

/// The line of one replica group's state (`g` key and value).
pub(crate) fn group_line(gkey: &[u8], value: &[u8]) -> Result<String, String> {
    let st = GroupState::decode(value).ok_or("a group state that does not decode")?;
    let name = String::from_utf8_lossy(gkey.get(1..).unwrap_or_default()).into_owned();
    Ok(json!({"kind": "group", "name": name, "primary": opt_bytes(&st.primary), "config_primary": opt_bytes(&st.config_primary)})
        .to_string())
}

/// What an export wrote and skipped.
#[derive(Debug, Default)]
pub struct Exported {
    /// Mailbox lines written.
    pub mailboxes: u64,
    /// Group lines written.
    pub groups: u64,
    /// What could not be read, one sentence each.
    pub skipped: Vec<String>,
}

/// Write every readable record of an (offline) database. `progress` gets
/// the number of mailboxes written every 100,000.
pub fn export(
    db: &dyn Engine,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<Exported, String> {
    let io = |e: std::io::Error| format!("cannot write: {e}");
    let mut r = Exported::default();
    writeln!(out, "{}", header()).map_err(io)?;
    for (space, is_group) in [(key::GROUPS, true), (key::NAMES, false)] {
        let mut it = db.scan_prefix(&[space]);
        loop {
            let (k, v) = match it.next() {
                None => break,
                Some(Ok(kv)) => kv,
                Some(Err(e)) => {
                    // The engine cannot go on past this point of the tree.
                    r.skipped.push(format!(
                        "the database failed while reading: {e}; what follows it is not exported"
                    ));
                    break;
                }
            };
            let line = if is_group {
                group_line(&k, &v)
            } else {
                mailbox_line(&k, &v)
            };
            match line {
                Ok(l) => {
                    writeln!(out, "{l}").map_err(io)?;
                    if is_group {
                        r.groups += 1;
                    } else {
                        r.mailboxes += 1;
                        if r.mailboxes % 100_000 == 0 {
                            progress(r.mailboxes);
                        }
                    }
                }
                Err(e) => {
                    let what = k
                        .get(1..)
                        .and_then(key::name_of_part)
                        .map(|n| String::from_utf8_lossy(&n).into_owned());
                    r.skipped.push(format!(
                        "{}: {e}",
                        what.unwrap_or_else(|| format!("{:?}", &k[..]))
                    ));
                }
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(r)
}

/// An import that failed: nothing was left behind.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ImportError {
    /// 1-based line of the input, when a line is at fault.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

fn at(line: usize) -> impl Fn(String) -> ImportError {
    move |message| ImportError {
        line: Some(line),
        message,
    }
}

fn plain(message: String) -> ImportError {
    ImportError {
        line: None,
        message,
    }
}

fn get_bytes(v: &Value, field: &str) -> Result<Vec<u8>, String> {
    match v.get(field) {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        Some(Value::Object(o)) => match o.get("base64") {
            Some(Value::String(b)) => STANDARD
                .decode(b)
                .map_err(|e| format!("{field}: bad base64: {e}")),
            _ => Err(format!("{field}: an object without \"base64\"")),
        },
        Some(_) => Err(format!("{field}: not a string")),
        None => Err(format!("missing {field}")),
    }
}

fn get_opt_bytes(v: &Value, field: &str) -> Result<Option<Vec<u8>>, String> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => get_bytes(v, field).map(Some),
    }
}

fn get_bool(v: &Value, field: &str) -> Result<bool, String> {
    v.get(field)
        .and_then(Value::as_bool)
        .ok_or_else(|| format!("{field}: missing or not true/false"))
}

/// A mailbox line as the name and its value.
fn parse_mailbox(v: &Value) -> Result<(Vec<u8>, Mailbox), String> {
    let name = get_bytes(v, "name")?;
    if name.contains(&0) {
        return Err("name: holds a NUL byte".into());
    }
    let conflict = get_bool(v, "conflict")?;
    let list = v
        .get("records")
        .and_then(Value::as_array)
        .ok_or("records: missing or not a list")?;
    if list.is_empty() {
        return Err("records: empty (a mailbox has at least one record)".into());
    }
    let mut records: Vec<Record> = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let e = |m: String| format!("records[{i}]: {m}");
        let location = get_bytes(r, "location").map_err(e)?;
        let acl = get_bytes(r, "acl").map_err(e)?;
        let state = match r.get("state").and_then(Value::as_str) {
            Some("active") => RecordState::Active,
            Some("reserved") => RecordState::Reserved,
            Some("moving") => RecordState::Moving,
            _ => return Err(e("state: not \"active\", \"reserved\" or \"moving\"".into())),
        };
        let effective = get_bool(r, "effective").map_err(e)?;
        let rec = Record {
            state,
            effective,
            location,
            acl,
        };
        if let Some(s) = get_opt_bytes(r, "server").map_err(e)? {
            if s != rec.server() {
                return Err(e(format!(
                    "server {:?} is not the server of its location",
                    String::from_utf8_lossy(&s)
                )));
            }
        }
        if records.iter().any(|o| o.server() == rec.server()) {
            return Err(e("a second record of the same server".into()));
        }
        records.push(rec);
    }
    if records.iter().filter(|r| r.effective).count() > 1 {
        return Err("records: more than one effective record".into());
    }
    Ok((name, Mailbox { records, conflict }))
}

/// What an import wrote.
#[derive(Debug, Default)]
pub struct Imported {
    /// Mailboxes imported.
    pub mailboxes: u64,
    /// Replica-group states imported.
    pub groups: u64,
}

/// The folder an import builds before renaming it to `dir`.
pub fn staging_dir(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Import an export into `dir`, which must not exist or be empty. Builds
/// everything in `dir.tmp`, with the indexes, summaries and seal, then
/// renames it: on any error nothing is left half-imported.
pub fn import(dir: &Path, input: impl BufRead, compression: bool) -> Result<Imported, ImportError> {
    import_with(dir, compression, |sink| read_export(input, sink))
}

/// The import path that every input format feeds (an export, a Cyrus
/// dump): `feed` hands each mailbox (and group state) to the
/// [`ImportSink`], which writes them through the engine's batches into
/// `dir.tmp`; the indexes, summaries and seal are then built from the
/// records and the folder renamed to `dir`, which must not exist or be
/// empty. On any error (`feed`'s included) nothing is left behind.
pub fn import_with(
    dir: &Path,
    compression: bool,
    feed: impl FnOnce(&mut ImportSink) -> Result<(), ImportError>,
) -> Result<Imported, ImportError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(plain(format!(
                    "{} is not empty: import only into a new or empty folder",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(plain(format!("cannot read {}: {e}", dir.display()))),
    }
    let tmp = staging_dir(dir);
    if tmp.exists() {
        return Err(plain(format!(
            "{} exists (left by an interrupted import?): remove it first",
            tmp.display()
        )));
    }
    let result = build(&tmp, compression, feed);
    let result = result.and_then(|r| {
        if dir.exists() {
            std::fs::remove_dir(dir)
                .map_err(|e| plain(format!("cannot replace the empty {}: {e}", dir.display())))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| {
            plain(format!(
                "cannot rename {} to {}: {e}",
                tmp.display(),
                dir.display()
            ))
        })?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(parent).and_then(|f| f.sync_all());
        }
        Ok(r)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Where an import writes: a fresh sled engine in the staging folder.
pub struct ImportSink {
    db: SledEngine,
    batch: Batch,
    in_batch: usize,
    names: std::collections::HashSet<Vec<u8>>,
    indexer: verify::Indexer,
    r: Imported,
}

fn se(e: EngineError) -> ImportError {
    plain(format!("the new database failed: {e}"))
}

impl ImportSink {
    fn add(&mut self, k: Vec<u8>, v: Vec<u8>) -> Result<(), ImportError> {
        self.batch.insert(k, v);
        self.in_batch += 1;
        self.apply_if_full()
    }

    fn apply_if_full(&mut self) -> Result<(), ImportError> {
        if self.in_batch >= verify::OFFLINE_BATCH {
            self.db.apply_unnumbered(std::mem::take(&mut self.batch)).map_err(se)?;
            self.in_batch = 0;
        }
        Ok(())
    }

    /// One mailbox (`line`: where the input had it, for the error when the
    /// name was given twice). Its records are oldest first, at most one
    /// effective (readers of other formats in this crate build the
    /// [`Mailbox`]).
    pub(crate) fn mailbox(&mut self, line: usize, name: &[u8], m: &Mailbox) -> Result<(), ImportError> {
        let part = key::mailbox_part(name);
        if !self.names.insert(part.clone()) {
            return Err(at(line)(format!("mailbox {:?} appears twice", String::from_utf8_lossy(name))));
        }
        self.r.mailboxes += 1;
        let (nkey, value) = (key::name_key(&part), m.encode());
        // The name's index keys and summary go beside it: no second pass.
        self.in_batch += self.indexer.add(&nkey, &value, m, &mut self.batch);
        self.add(nkey, value)
    }

    /// One replica group's state: its run-time primary and the configured
    /// primary seen at the last open.
    pub fn group(&mut self, name: &str, primary: Option<Vec<u8>>, config_primary: Option<Vec<u8>>) -> Result<(), ImportError> {
        self.r.groups += 1;
        self.add(key::group_key(name), GroupState { primary, config_primary }.encode())
    }

    /// What was handed so far.
    pub fn imported(&self) -> &Imported {
        &self.r
    }
}

fn build(
    tmp: &Path,
    compression: bool,
    feed: impl FnOnce(&mut ImportSink) -> Result<(), ImportError>,
) -> Result<Imported, ImportError> {
    // Written through the engine's batches, each name with its index keys
    // and summary (verify::Indexer, which `mupdatectl rebuild-indexes`
    // uses too), then sealed.
    let db = SledEngine::open_raw(sled::Config::new().path(tmp).use_compression(compression), tmp).map_err(se)?;
    let mut sink = ImportSink {
        db,
        batch: Batch::default(),
        in_batch: 0,
        names: Default::default(),
        indexer: Default::default(),
        r: Imported::default(),
    };
    feed(&mut sink)?;
    let ImportSink { db, batch, r, indexer, .. } = sink;
    db.apply_unnumbered(batch).map_err(se)?;
    indexer.finish(&db, tmp).map_err(plain)?;
    // Closed (its commit thread joined, sled's files released) before the
    // folder is renamed.
    drop(db);
    Ok(r)
}

/// The lines of an export, into the sink.
fn read_export(input: impl BufRead, sink: &mut ImportSink) -> Result<(), ImportError> {
    let mut header_seen = false;
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| at(n)(format!("cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| at(n)(format!("not JSON: {e}")))?;
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        if !header_seen {
            if kind != "mupdated-export" {
                return Err(at(n)(
                    "the first line is not a mupdated export header".into(),
                ));
            }
            if v.get("version").and_then(Value::as_u64) != Some(FORMAT_VERSION) {
                return Err(at(n)(format!(
                    "unsupported export version (this mupdated reads {FORMAT_VERSION})"
                )));
            }
            header_seen = true;
            continue;
        }
        match kind {
            "mailbox" => {
                let (name, m) = parse_mailbox(&v).map_err(at(n))?;
                sink.mailbox(n, &name, &m)?;
            }
            "group" => {
                let name = v
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| at(n)("name: missing or not a string".into()))?;
                let primary = get_opt_bytes(&v, "primary").map_err(at(n))?;
                let config_primary = get_opt_bytes(&v, "config_primary").map_err(at(n))?;
                sink.group(name, primary, config_primary)?;
            }
            other => return Err(at(n)(format!("unknown kind {other:?}"))),
        }
    }
    if !header_seen {
        return Err(plain("the input is empty (no export header)".into()));
    }
    Ok(())
}


/// What an import of a Cyrus dump wrote and skipped.
#[derive(Debug, Default, Clone)]
pub struct CyrusImported {
    /// Lines of the dump read.
    pub lines: usize,
    /// Mailboxes written (one record each).
    pub mailboxes: u64,
    /// Of those, reserved (`z`) ones.
    pub reserved: u64,
    /// Entries that hold no record: tombstones (`d`).
    pub tombstones: u64,
    /// Entries that hold no record: intermediates (`i`).
    pub intermediates: u64,
}

/// How often (in entries) [`import_cyrus_dump`] reports progress: often
/// enough for a report every second at sled's rate (measured on 2 shared
/// cores: 300,000 entries in 36 s with compression, in one pass;
/// the jsonl import takes the same: sled, not the reader, is the cost).
pub const CYRUS_PROGRESS_EVERY: u64 = 1_000;

/// Import the output of Cyrus 3.6's `ctl_mboxlist -d` ([`super::cyrus_dump`])
/// into `dir`, which must not exist or be empty: each mailbox becomes the
/// one effective record mupdated holds after that server's ACTIVATE (or
/// RESERVE, for `z` entries). `server` is the servername of a backend
/// whose dump this is (its entries name none). Through [`import_with`]: on
/// any error (with the dump's line number) nothing is left behind.
/// `progress` is called every [`CYRUS_PROGRESS_EVERY`] entries.
pub fn import_cyrus_dump(
    dir: &Path,
    input: impl BufRead,
    server: Option<Vec<u8>>,
    compression: bool,
    mut progress: impl FnMut(&CyrusImported),
) -> Result<CyrusImported, ImportError> {
    use super::cyrus_dump::{Item, Reader, SkipReason};
    let mut r = CyrusImported::default();
    import_with(dir, compression, |sink| {
        let mut reader = Reader::new(input).with_server(server);
        for item in reader.by_ref() {
            let (n, item) = item.map_err(|e| at(e.line)(e.message))?;
            match item {
                Item::Skipped { reason: SkipReason::Tombstone, .. } => r.tombstones += 1,
                Item::Skipped { reason: SkipReason::Intermediate, .. } => r.intermediates += 1,
                Item::Entry(e) => {
                    if e.state == RecordState::Reserved {
                        r.reserved += 1;
                    }
                    let rec = Record { state: e.state, effective: true, location: e.location, acl: e.acl };
                    sink.mailbox(n, &e.name, &Mailbox { records: vec![rec], conflict: false })?;
                    r.mailboxes += 1;
                }
            }
            if (r.mailboxes + r.tombstones + r.intermediates) % CYRUS_PROGRESS_EVERY == 0 {
                r.lines = n;
                progress(&r);
            }
        }
        r.lines = reader.lines();
        Ok(())
    })?;
    Ok(r)
}
