//! Cyrus 3.6's `ctl_mboxlist -d`, read as the records mupdated would hold
//! had the backends told it the same facts through MUPDATE. Pure: bytes
//! in, entries out, each with its line number; no storage.
//!
//! # The format (imap/ctl_mboxlist.c of cyrus-imapd-3.6.1, `do_dump`, `dump_cb`)
//! JSON since 3.6.0, but not one JSON document per line: `{`, then one
//! entry per line as `"<name>": {...}` (jansson's `JSON_EMBED`, default
//! separators `", "` and `": "`), entries separated by `,` + newline, then
//! `}` on a line of its own. An empty directory dumps as `{`, an empty
//! line, `}`. Entries come in mailboxes.db order, tombstones included
//! (`MBOXTREE_TOMBSTONES`), intermediates only with `-y`. Verified on
//! Debian's 3.6.1 binaries (conformance/migration.rs dumps a real master):
//!
//! ```text
//! {
//! "user.alice": {"name": "user.alice", "mtime": "1796111842", "uidvalidity": "0", "createdmodseq": "0", "foldermodseq": "0", "mbtype": "er", "partition": "default", "server": "127.0.0.1:4143", "acl": {"alice": "lrswipkxtecdan"}, "name_history": []},
//! "shared.news": {"name": "shared.news", ..., "mbtype": "erz", "partition": "default", "server": "be2", "acl": {}, "name_history": []}
//! }
//! ```
//!
//! Fields used, per entry:
//! - `name`: the internal name, which is the MUPDATE wire name: `.` as the
//!   hierarchy separator whatever `unixhierarchysep` says (that setting
//!   only changes external names; a `.` typed by a user is stored as `^`),
//!   `user.` for users' mailboxes, `domain!` in front with virtual domains,
//!   non-ASCII as modified UTF-7. Kept byte for byte. The key before the
//!   `:` is the same string; a dump where they differ is refused.
//! - `mbtype`: an optional type letter (`e` mail, `n`, `b`, `c`, `a`, `s`,
//!   `p`, `f`: `mboxlist_mbtype_to_string`, imap/mboxlist.c) then flags:
//!   `d` deleted (a tombstone), `m` moving, `r` remote, `z` reserved, `i`
//!   intermediate, `l` legacy dirs. Cyrus's `mupdate` master skips `d` and
//!   `i` entries in LIST and UPDATE (`allmbox_p`, flags 0) and presents an
//!   entry as RESERVE when `z` is set, else as MAILBOX, whatever its type
//!   (`database_lookup`, imap/mupdate.c). The importer does the same:
//!   `z` -> a reserved record, else an active one; `d` and `i` are skipped
//!   and counted. (Seen on Debian's binaries: a master holds `er` and
//!   `erz`; a backend `e`, and `ed` tombstones, without partition, of the
//!   names it renamed or deleted; 3.6 creates missing parents as
//!   mailboxes, so `i` is rare.)
//! - `server`, `partition`: the location, as `database_lookup` joins them:
//!   `server!partition`, or the one that is present. A master's dump has
//!   `server` on every entry (a MUPDATE location always has one); a
//!   backend's has none (its mailboxes are local; it has a `uniqueid`
//!   instead, also verified), so a backend's dump needs the backend's
//!   servername from the operator ([`Reader::with_server`]); without it an
//!   entry without `server` is an error.
//! - `acl`: an object identifier -> rights in the order of the ACL string
//!   (`acl_to_json`), turned back into `id\trights\t...` (the form Cyrus
//!   sends in MUPDATE). A reserved entry's ACL is dropped: RESERVE carries
//!   none.
//!
//! What the dump cannot carry, and so the import cannot restore: an ACL
//! string without its final tab (Cyrus's backends always send one), an
//! identifier given twice in one ACL (the object keeps one), ACL entries
//! that are not UTF-8 (jansson leaves them out), and a mailbox whose name
//! is not UTF-8 (jansson refuses the entry and `dump_cb` prints only its
//! separator: a line with a lone `,`, which the reader refuses with that
//! line).
//!
//! `mtime`, `uidvalidity`, the modseqs, `uniqueid`, `legacy_specialuse` and
//! `name_history` are not part of what MUPDATE holds and are ignored; so is
//! any field a later Cyrus adds. The text format of Cyrus 3.4 and older
//! (`name TAB mbtype partition acl`) is recognised and refused with a
//! message saying so.

use std::io::BufRead;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::model::RecordState;

/// One mailbox of the dump, as the record mupdated holds for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpEntry {
    /// The internal (wire) name, exactly as dumped.
    pub name: Vec<u8>,
    /// Active, or reserved for `z` entries.
    pub state: RecordState,
    /// `server!partition`.
    pub location: Vec<u8>,
    /// `id\trights\t...`; empty for a reserved entry.
    pub acl: Vec<u8>,
}

/// Why an entry of the dump holds no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `d`: a deleted mailbox's tombstone (Cyrus's LIST does not show it).
    Tombstone,
    /// `i`: a placeholder for a parent that does not exist (`-y` dumps).
    Intermediate,
}

impl SkipReason {
    /// How the summary names it.
    pub fn word(self) -> &'static str {
        match self {
            SkipReason::Tombstone => "deleted (tombstones)",
            SkipReason::Intermediate => "intermediate",
        }
    }
}

/// What one line of the dump holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A mailbox to import.
    Entry(DumpEntry),
    /// An entry that holds no record, and why.
    Skipped {
        /// The entry's name.
        name: Vec<u8>,
        /// Why.
        reason: SkipReason,
    },
}

/// A dump that cannot be read: the 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DumpError {
    /// 1-based line of the input.
    pub line: usize,
    /// What is wrong, in a sentence.
    pub message: String,
}

/// The mbtype letters: (skip reason, reserved).
fn mbtype(s: &str) -> Result<(Option<SkipReason>, bool), String> {
    let mut chars = s.chars().peekable();
    if chars.peek().is_some_and(|c| "enbcaspf".contains(*c)) {
        chars.next();
    }
    let (mut seen, mut skip, mut reserved) = (String::new(), None, false);
    for c in chars {
        if !"dmrzil".contains(c) {
            return Err(format!("mbtype {s:?}: unknown letter {c:?} (Cyrus 3.6 writes a type of enbcaspf, then flags of dmrzil)"));
        }
        if seen.contains(c) {
            return Err(format!("mbtype {s:?}: {c:?} twice"));
        }
        seen.push(c);
        match c {
            'd' => skip = Some(SkipReason::Tombstone),
            'i' => skip = skip.or(Some(SkipReason::Intermediate)),
            'z' => reserved = true,
            _ => {}
        }
    }
    if s.is_empty() {
        return Err("mbtype: empty".into());
    }
    Ok((skip, reserved))
}

/// An ACL object turned back into Cyrus's tab string, in its order.
struct Acl(Vec<u8>);

impl<'de> Deserialize<'de> for Acl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Acl, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Acl;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of identifier -> rights strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Acl, A::Error> {
                let mut acl = Vec::new();
                while let Some((id, rights)) = map.next_entry::<String, String>()? {
                    if id.contains(['\t', '\0']) || rights.contains(['\t', '\0']) {
                        return Err(de::Error::custom(format!("identifier {id:?}: a tab or NUL in the ACL")));
                    }
                    acl.extend_from_slice(id.as_bytes());
                    acl.push(b'\t');
                    acl.extend_from_slice(rights.as_bytes());
                    acl.push(b'\t');
                }
                Ok(Acl(acl))
            }
        }
        d.deserialize_map(V)
    }
}

/// The fields of one entry that MUPDATE holds (others are ignored).
#[derive(Deserialize)]
struct Raw {
    name: Option<String>,
    mbtype: Option<String>,
    partition: Option<String>,
    server: Option<String>,
    acl: Option<Acl>,
}

/// One entry line (`"name": {...}` with or without its trailing `,`):
/// the item and whether a `,` followed it.
pub fn parse_entry(line: &[u8], default_server: Option<&[u8]>) -> Result<(Item, bool), String> {
    let mut keys = serde_json::Deserializer::from_slice(line).into_iter::<String>();
    let key = match keys.next() {
        Some(Ok(k)) => k,
        Some(Err(e)) => return Err(format!("not a dump entry (`\"name\": {{...}}`): {}", json_error(&e, 0))),
        None => return Err("not a dump entry (`\"name\": {...}`)".into()),
    };
    let rest = skip_ws(&line[keys.byte_offset()..]);
    let rest_at = line.len() - rest.len() + 1;
    let rest = rest
        .strip_prefix(b":")
        .ok_or("not a dump entry: no `:` after the name")?;
    let mut objs = serde_json::Deserializer::from_slice(rest).into_iter::<Raw>();
    let raw = match objs.next() {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(format!("entry {key:?}: {}", json_error(&e, rest_at))),
        None => return Err(format!("entry {key:?}: no object after the name")),
    };
    let tail = skip_ws(&rest[objs.byte_offset()..]);
    let comma = match tail {
        [] => false,
        [b','] => true,
        _ => return Err(format!("entry {key:?}: text after the entry (one entry per line, as ctl_mboxlist -d writes)")),
    };
    let name = match raw.name {
        Some(n) if n != key => return Err(format!("entry {key:?}: its \"name\" is {n:?}")),
        _ => key,
    };
    if name.is_empty() || name.contains('\0') {
        return Err(format!("entry {name:?}: an empty name or one with a NUL"));
    }
    let e = |m: String| format!("entry {name:?}: {m}");
    let (skip, reserved) = mbtype(raw.mbtype.as_deref().ok_or_else(|| e("no mbtype".into()))?).map_err(e)?;
    if let Some(reason) = skip {
        return Ok((Item::Skipped { name: name.into_bytes(), reason }, comma));
    }
    let server = match (raw.server, default_server) {
        (Some(s), _) => s.into_bytes(),
        (None, Some(s)) => s.to_vec(),
        (None, None) => {
            return Err(e("no \"server\": this is a backend's dump (a master's names a server on every entry); \
                 give that backend's servername with --server-name"
                .into()))
        }
    };
    if server.contains(&b'!') || server.contains(&0) {
        return Err(e(format!("server {:?} holds `!` or NUL", String::from_utf8_lossy(&server))));
    }
    let mut location = server;
    if let Some(p) = raw.partition {
        if p.contains('\0') {
            return Err(e("partition holds a NUL".into()));
        }
        location.push(b'!');
        location.extend_from_slice(p.as_bytes());
    }
    let (state, acl) = if reserved {
        (RecordState::Reserved, Vec::new())
    } else {
        (RecordState::Active, raw.acl.map(|a| a.0).unwrap_or_default())
    };
    Ok((Item::Entry(DumpEntry { name: name.into_bytes(), state, location, acl }), comma))
}

/// serde_json's message with the column in the whole line (its own
/// "line 1 column N" counts in the slice it was given).
fn json_error(e: &serde_json::Error, offset: usize) -> String {
    let text = e.to_string();
    let msg = text.split(" at line ").next().unwrap_or(&text);
    format!("{msg} (column {})", e.column() + offset)
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the opening `{`.
    Start,
    /// Inside; whether the last entry ended with `,` (another must follow).
    Body { more: bool, entries: bool },
    /// After the closing `}`.
    Done,
}

/// Reads a dump line by line: an iterator of items with their line
/// numbers, ending with an error if the dump is damaged or cut short.
pub struct Reader<R> {
    input: R,
    buf: Vec<u8>,
    line: usize,
    place: Place,
    server: Option<Vec<u8>>,
    failed: bool,
}

impl<R: BufRead> Reader<R> {
    /// A reader of a master's dump (every entry names its server).
    pub fn new(input: R) -> Reader<R> {
        Reader { input, buf: Vec::new(), line: 0, place: Place::Start, server: None, failed: false }
    }

    /// Entries without `server` (a backend's dump) are on `server`.
    pub fn with_server(mut self, server: Option<Vec<u8>>) -> Reader<R> {
        self.server = server;
        self
    }

    /// Lines read so far.
    pub fn lines(&self) -> usize {
        self.line
    }

    fn err(&mut self, message: String) -> Option<Result<(usize, Item), DumpError>> {
        self.failed = true;
        Some(Err(DumpError { line: self.line, message }))
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<(usize, Item), DumpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            let n = match self.input.read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) => {
                    self.line += 1;
                    return self.err(format!("cannot read: {e}"));
                }
            };
            if n == 0 {
                // At the end: the last line (line 1 of an empty input).
                self.line = self.line.max(1);
                return match self.place {
                    Place::Done => None,
                    Place::Start => self.err("the input is empty (a ctl_mboxlist -d dump starts with `{`)".into()),
                    Place::Body { .. } => {
                        self.err("the dump ends before its closing `}` (cut short?)".into())
                    }
                };
            }
            self.line += 1;
            let mut text: &[u8] = &self.buf;
            while let [rest @ .., b'\n' | b'\r'] = text {
                text = rest;
            }
            let trimmed = skip_ws(text);
            match self.place {
                Place::Start if trimmed == b"{" => self.place = Place::Body { more: false, entries: false },
                Place::Start if trimmed.is_empty() => {}
                Place::Start if trimmed.contains(&b'\t') => {
                    return self.err(
                        "a text dump (Cyrus 3.4 or older: name TAB mbtype partition acl); \
                         only the JSON dump of Cyrus 3.6 and later is read"
                            .into(),
                    )
                }
                Place::Start => return self.err("not a ctl_mboxlist -d dump: it starts with `{` on a line of its own".into()),
                Place::Body { .. } | Place::Done if trimmed.is_empty() => {}
                Place::Body { more, .. } if trimmed == b"}" => {
                    if more {
                        return self.err("a `}` after a `,`: the entry before it is missing".into());
                    }
                    self.place = Place::Done;
                }
                Place::Body { .. } if trimmed == b"," => {
                    // `dump_cb` prints its separator and then nothing when
                    // jansson refused the entry (a name not UTF-8).
                    return self.err(
                        "an empty entry: ctl_mboxlist could not write one mailbox here (a name that is not \
                         UTF-8?); it is not in the dump"
                            .into(),
                    );
                }
                Place::Body { more, entries } => {
                    if entries && !more {
                        return self.err("no `,` after the entry on the line before".into());
                    }
                    let line = self.line;
                    return match parse_entry(trimmed, self.server.as_deref()) {
                        Ok((item, comma)) => {
                            self.place = Place::Body { more: comma, entries: true };
                            Some(Ok((line, item)))
                        }
                        Err(m) => self.err(m),
                    };
                }
                Place::Done => return self.err("text after the dump's closing `}`".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<(usize, Item)>, DumpError> {
        Reader::new(text.as_bytes()).collect()
    }

    fn read_as(text: &str, server: &str) -> Result<Vec<(usize, Item)>, DumpError> {
        Reader::new(text.as_bytes()).with_server(Some(server.into())).collect()
    }

    fn active(name: &str, location: &str, acl: &str) -> Item {
        Item::Entry(DumpEntry {
            name: name.into(),
            state: RecordState::Active,
            location: location.into(),
            acl: acl.into(),
        })
    }

    fn err_at(text: &str) -> (usize, String) {
        match read(text) {
            Err(e) => (e.line, e.message),
            Ok(items) => panic!("read {items:?} from {text:?}"),
        }
    }

    /// As Debian's 3.6.1 master wrote it (a real dump, fields kept).
    const MASTER: &str = concat!(
        "{\n",
        r#""example.com!user.bob": {"name": "example.com!user.bob", "mtime": "1796111842", "uidvalidity": "0", "createdmodseq": "0", "foldermodseq": "0", "mbtype": "er", "partition": "part2", "server": "backend2", "acl": {"bob@example.com": "lrswipkxtecdan", "anyone": "lrs"}, "name_history": []},"#,
        "\n",
        r#""shared.news": {"name": "shared.news", "mtime": "1796111842", "uidvalidity": "0", "createdmodseq": "0", "foldermodseq": "0", "mbtype": "erz", "partition": "default", "server": "backend2", "acl": {}, "name_history": []},"#,
        "\n",
        r#""user.alice.a b": {"name": "user.alice.a b", "mtime": "1796111842", "uidvalidity": "0", "createdmodseq": "0", "foldermodseq": "0", "mbtype": "er", "partition": "default", "server": "backend1", "acl": {"alice": "lrswipkxtecdan"}, "name_history": []}"#,
        "\n}\n"
    );

    #[test]
    fn a_master_dump_reads_as_records() {
        let items = read(MASTER).unwrap();
        assert_eq!(
            items,
            vec![
                (2, active("example.com!user.bob", "backend2!part2", "bob@example.com\tlrswipkxtecdan\tanyone\tlrs\t")),
                (
                    3,
                    Item::Entry(DumpEntry {
                        name: b"shared.news".to_vec(),
                        state: RecordState::Reserved,
                        location: b"backend2!default".to_vec(),
                        acl: vec![],
                    })
                ),
                (4, active("user.alice.a b", "backend1!default", "alice\tlrswipkxtecdan\t")),
            ]
        );
    }

    #[test]
    fn an_empty_dump_is_empty() {
        // `puts("{")`, no entry, `puts("\n}")`.
        assert_eq!(read("{\n\n}\n").unwrap(), vec![]);
        assert_eq!(read("{\n}").unwrap(), vec![]);
    }

    #[test]
    fn mbtype_flags_and_types() {
        let line = |t: &str| format!("{{\n\"x\": {{\"mbtype\": \"{t}\", \"server\": \"s\", \"partition\": \"p\", \"acl\": {{\"u\": \"l\"}}}}\n}}\n");
        for (t, want) in [
            ("e", Some(RecordState::Active)),
            ("er", Some(RecordState::Active)),
            ("c", Some(RecordState::Active)),
            ("a", Some(RecordState::Active)),
            ("r", Some(RecordState::Active)),
            ("erl", Some(RecordState::Active)),
            ("emr", Some(RecordState::Active)),
            ("erz", Some(RecordState::Reserved)),
            ("emrz", Some(RecordState::Reserved)),
            ("z", Some(RecordState::Reserved)),
            ("ed", None),
            ("edr", None),
            ("ei", None),
        ] {
            let items = read(&line(t)).unwrap_or_else(|e| panic!("{t}: {e}"));
            match (&items[0].1, want) {
                (Item::Entry(e), Some(s)) => {
                    assert_eq!(e.state, s, "{t}");
                    let acl: &[u8] = if s == RecordState::Reserved { b"" } else { b"u\tl\t" };
                    assert_eq!(e.acl, acl, "{t}: a reserved entry carries no ACL");
                }
                (Item::Skipped { reason, .. }, None) => {
                    let r = if t.contains('d') { SkipReason::Tombstone } else { SkipReason::Intermediate };
                    assert_eq!(*reason, r, "{t}")
                }
                (other, _) => panic!("{t}: {other:?}"),
            }
        }
        for bad in ["", "q", "eq", "ee", "err", "ze"] {
            let (line, msg) = err_at(&line(bad));
            assert_eq!(line, 2, "{bad}");
            assert!(msg.contains("mbtype"), "{bad}: {msg}");
        }
    }

    #[test]
    fn locations_from_server_and_partition() {
        let one = |fields: &str| read(&format!("{{\n\"x\": {{\"mbtype\": \"e\", {fields}}}\n}}\n"));
        let loc = |r: Result<Vec<(usize, Item)>, DumpError>| match r.unwrap().remove(0).1 {
            Item::Entry(e) => String::from_utf8(e.location).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(loc(one(r#""server": "be1", "partition": "p""#)), "be1!p");
        assert_eq!(loc(one(r#""server": "be1""#)), "be1");
        assert_eq!(loc(one(r#""server": "", "partition": "p""#)), "!p");
        // A backend's dump: no server, given by the operator.
        let backend = "{\n\"user.a\": {\"mbtype\": \"e\", \"partition\": \"default\", \"uniqueid\": \"u-1\", \"acl\": {\"a\": \"lrs\"}}\n}\n";
        assert_eq!(read_as(backend, "be9").unwrap(), vec![(2, active("user.a", "be9!default", "a\tlrs\t"))]);
        // An entry's own server wins over the given one.
        assert_eq!(loc(Ok(read_as("{\n\"x\": {\"mbtype\": \"er\", \"server\": \"be1\"}\n}", "be9").unwrap())), "be1");
        let (line, msg) = err_at(backend);
        assert_eq!(line, 2);
        assert!(msg.contains("--server-name"), "{msg}");
        let (_, msg) = err_at("{\n\"x\": {\"mbtype\": \"e\", \"server\": \"a!b\"}\n}\n");
        assert!(msg.contains("`!`"), "{msg}");
    }

    #[test]
    fn names_are_kept_byte_for_byte() {
        // Modified UTF-7, spaces, `^` for a `.` typed under unixhierarchysep,
        // a domain, JSON escapes.
        for name in ["user.j&AOQ-rg", "user.a b.c", "user.joe.2024^01", "example.com!user.bob", "shared.\"q\\"] {
            let json = serde_json::to_string(name).unwrap();
            let text = format!("{{\n{json}: {{\"name\": {json}, \"mbtype\": \"er\", \"server\": \"s\", \"partition\": \"p\", \"acl\": {{}}}}\n}}\n");
            assert_eq!(read(&text).unwrap(), vec![(2, active(name, "s!p", ""))], "{name}");
        }
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let good = "\"a\": {\"mbtype\": \"e\", \"server\": \"s\"}";
        for (text, line, what) in [
            ("", 1, "empty"),
            ("[\n", 1, "starts with `{`"),
            ("user.a\t1 default a\tlrs\t\n", 1, "Cyrus 3.4"),
            ("{\n", 1, "cut short"),
            (&format!("{{\n{good},\n"), 2, "cut short"),
            (&format!("{{\n{good},\n{good}\n"), 3, "cut short"),
            (&format!("{{\n{good},\n}}\n"), 3, "missing"),
            (&format!("{{\n{good}\n{good}\n}}\n"), 3, "no `,`"),
            (&format!("{{\n{good},\n\"b\": {{\"mbtype\": \"e\", \"server\": \"s\"\n}}\n"), 3, "entry \"b\""),
            (&format!("{{\n{good},\n\"b\" {{\"mbtype\": \"e\"}}\n}}\n"), 3, "no `:`"),
            (&format!("{{\n{good},\nnot json\n}}\n"), 3, "not a dump entry"),
            (&format!("{{\n{good},\n\"b\": {{\"mbtype\": 5}}\n}}\n"), 3, "entry \"b\""),
            (&format!("{{\n{good},\n\"b\": {{\"mbtype\": \"e\", \"acl\": {{\"u\": 1}}}}\n}}\n"), 3, "entry \"b\""),
            (&format!("{{\n{good},\n\"b\": {{\"server\": \"s\"}}\n}}\n"), 3, "no mbtype"),
            (&format!("{{\n{good},\n\"b\": {{\"name\": \"c\", \"mbtype\": \"e\"}}\n}}\n"), 3, "its \"name\" is \"c\""),
            (&format!("{{\n{good},\n\"b\": {{\"mbtype\": \"e\", \"server\": \"s\"}} x\n}}\n"), 3, "text after"),
            (&format!("{{\n{good},\n\"\": {{\"mbtype\": \"e\", \"server\": \"s\"}}\n}}\n"), 3, "empty name"),
            (&format!("{{\n{good}\n}}\n{{\n"), 4, "after the dump's closing"),
            (&format!("{{\n{good},\n,\n{good}\n}}\n"), 3, "an empty entry"),
        ] {
            match read(text) {
                Err(e) => {
                    assert_eq!(e.line, line, "{text:?}: {e}");
                    assert!(e.message.contains(what), "{text:?}: {e}");
                    assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
                }
                Ok(items) => panic!("{text:?} read as {items:?}"),
            }
        }
    }

    #[test]
    fn an_error_ends_the_items_and_crlf_is_read() {
        let mut r = Reader::new(&b"{\r\n\"a\": {\"mbtype\": \"e\", \"server\": \"s\"},\r\nbad\r\n\"c\": {}\r\n}\r\n"[..]);
        assert!(matches!(r.next(), Some(Ok((2, Item::Entry(_))))));
        assert!(matches!(r.next(), Some(Err(DumpError { line: 3, .. }))));
        assert!(r.next().is_none());
    }
}
