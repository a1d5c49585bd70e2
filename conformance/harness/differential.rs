//! Differential comparison of two recorded runs of one scenario: Cyrus'
//! `mupdate -m` (the reference) and another master. Only what
//! docs/compatibility.md lists is normalised away; every other difference
//! is reported and fails the test.
//!
//! Rules (each names its row in docs/compatibility.md):
//! - strings are compared by value: quoted, `{n}` and `{n+}` are one form
//!   (`string-forms`);
//! - the greeting's `* OK MUPDATE ...` line and the capability lines
//!   `COMPRESS`, `STARTTLS`, `X-MUPDATED-*` are not compared (`greeting`);
//! - servernames (`127.0.0.1:<port>`, different in each run) become
//!   `<b1>`, `<b2>`, `<f>`, the master's port `<master>`, and the hex time
//!   of `DELETED.<name>.<hex>` becomes `<time>` (run-specific values, no
//!   row needed);
//! - an UPDATE stream is compared as the final state of every name it
//!   mentioned (the dump and every streamed line folded in order), not line
//!   by line: Cyrus flushes every 5 s and repeats a name once per change,
//!   a master may push at once and coalesce (`stream-batching`); NOOP
//!   round trips on it are not counted (`stream-batching`: idle NOOPs
//!   depend on timing);
//! - connections are paired by client role (program and instance, e.g.
//!   `imapd b1`, `ctl_mboxlist b2 -m -w`, `mupdate f`) and compared as a
//!   multiset per role, so concurrent clients may interleave differently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::wire::tokenize;

/// One recorded connection, normalised.
#[derive(Debug, Clone)]
pub struct Session {
    pub file: String,
    pub role: String,
    /// Normalised lines (`C: ...`/`S: ...`), or the folded stream state.
    pub text: String,
}

/// Reads every `conn-*.txt` of a folder (recursively) and normalises it.
/// `names` maps run-specific strings (servernames) to placeholders.
pub fn load(dir: &Path) -> Vec<Session> {
    let mut out = Vec::new();
    let mut murders: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    murders.sort();
    for m in murders {
        let murder = m
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("m")
            .to_string();
        let names: Vec<(String, String)> = std::fs::read_to_string(m.join("names.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut files = Vec::new();
        collect(&m, &mut files);
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let mut s = normalise(&f.display().to_string(), &text, &names);
            s.role = format!("{murder} {}", s.role);
            out.push(s);
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("conn-") && n.ends_with(".txt"))
        {
            out.push(p);
        }
    }
}

/// `imapd -C /tmp/cmX/b1/imapd.conf` -> `imapd b1`;
/// `/usr/lib/cyrus/bin/ctl_mboxlist -C /tmp/cmX/b2/imapd.conf -m -w` -> `ctl_mboxlist b2 -m -w`.
pub fn role_of(argv: &str) -> String {
    let words: Vec<&str> = argv.split_whitespace().collect();
    let Some(prog) = words.first() else {
        return "unknown".into();
    };
    let prog = prog.rsplit('/').next().unwrap_or(prog);
    let mut role = prog.to_string();
    let mut i = 1;
    while i < words.len() {
        if words[i] == "-C" && i + 1 < words.len() {
            let inst = Path::new(words[i + 1])
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("?");
            role.push(' ');
            role.push_str(inst);
            i += 2;
        } else {
            role.push(' ');
            role.push_str(words[i]);
            i += 1;
        }
    }
    role
}

fn normalise(file: &str, text: &str, names: &[(String, String)]) -> Session {
    let mut role = "unknown".to_string();
    let (mut client, mut server) = (Vec::new(), Vec::new());
    // Interleaving matters for request/answer pairs: keep the order of
    // direction changes.
    let mut order: Vec<(char, Vec<u8>)> = Vec::new();
    for line in text.lines() {
        if let Some(argv) = line.strip_prefix("# peer ") {
            let argv = argv.split_once("argv=").map_or("", |(_, a)| a);
            role = role_of(argv);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((_, rest)) = line.split_once(' ') else {
            continue;
        };
        let (side, bytes) = match rest.split_at_checked(3) {
            Some(("C: ", b)) => ('C', b),
            Some(("S: ", b)) => ('S', b),
            _ => continue,
        };
        let bytes = mupdated::tools::transcript::unescape(bytes).unwrap_or_default();
        match order.last_mut() {
            Some((s, buf)) if *s == side => buf.extend_from_slice(&bytes),
            _ => order.push((side, bytes)),
        }
        if side == 'C' {
            client.push(());
        } else {
            server.push(());
        }
    }
    let mut lines: Vec<(char, String)> = Vec::new();
    for (side, bytes) in &order {
        for l in logical_lines(bytes) {
            if let Some(n) = normalise_line(&l, names) {
                lines.push((*side, n));
            }
        }
    }
    let text = if role.starts_with("mupdate ") {
        fold_stream(&lines)
    } else {
        lines
            .iter()
            .map(|(s, l)| format!("{s}: {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Session {
        file: file.to_string(),
        role,
        text,
    }
}

/// Splits bytes into logical lines: a line ending in `{n}`/`{n+}` goes on
/// with the literal's n bytes.
fn logical_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut r: &[u8] = bytes;
    while !r.is_empty() {
        match super::wire::read_logical_line(&mut r) {
            Ok(l) => out.push(l),
            Err(_) => {
                out.push(r.to_vec());
                break;
            }
        }
    }
    out
}

/// Tokens re-joined with strings in one canonical form; `None` for lines
/// not compared (greeting, optional capabilities, the go-ahead `+`).
fn normalise_line(line: &[u8], names: &[(String, String)]) -> Option<String> {
    let shown = String::from_utf8_lossy(line).into_owned();
    if shown.starts_with("+ ") || shown == "+" {
        return None; // go-ahead for {n} literals: part of the string form
    }
    let Ok(tokens) = tokenize(line) else {
        return Some(format!("UNPARSED {}", subst(&shown, names)));
    };
    let words: Vec<String> = tokens
        .iter()
        .map(|t| match t {
            super::wire::Token::Atom(a) => subst(a, names),
            super::wire::Token::Str(s) => format!("{:?}", subst(s, names)),
            super::wire::Token::List(_) => "(list)".into(),
        })
        .collect();
    if words.first().map(String::as_str) == Some("*") {
        let kw = words
            .get(1)
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        if kw == "OK" || kw == "COMPRESS" || kw == "STARTTLS" || kw.starts_with("X-MUPDATED") {
            return None;
        }
    }
    Some(words.join(" "))
}

fn subst(s: &str, names: &[(String, String)]) -> String {
    let mut s = s.to_string();
    for (from, to) in names {
        s = s.replace(from.as_str(), to);
    }
    // DELETED.<name>.<8 hex digits>
    if let Some(rest) = s.strip_prefix("DELETED.") {
        if let Some((head, hex)) = rest.rsplit_once('.') {
            if hex.len() == 8 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return format!("DELETED.{head}.<time>");
            }
        }
    }
    s
}

/// An UPDATE session: the lines before the stream as they are, then the
/// final state of every name the dump or the stream mentioned.
fn fold_stream(lines: &[(char, String)]) -> String {
    let mut head = Vec::new();
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut streaming = false;
    for (side, l) in lines {
        let w: Vec<&str> = l.splitn(3, ' ').collect();
        let tag = w.first().copied().unwrap_or("");
        let kw = w.get(1).copied().unwrap_or("");
        if tag == "U01" && kw == "UPDATE" {
            head.push(format!("{side}: {l}"));
            streaming = true;
            continue;
        }
        if !streaming {
            head.push(format!("{side}: {l}"));
            continue;
        }
        match kw {
            "MAILBOX" | "RESERVE" | "DELETE" if tag == "U01" => {
                let args = w.get(2).copied().unwrap_or("");
                let name = tokenize(args.as_bytes())
                    .ok()
                    .and_then(|t| t.first().and_then(|t| t.text().map(str::to_string)))
                    .unwrap_or_else(|| args.to_string());
                state.insert(name, format!("{kw} {args}"));
            }
            "OK" if tag == "U01" => head.push(format!("{side}: {l}")),
            // NOOP round trips on the stream: timing-dependent.
            "NOOP" => {}
            "OK" if tag.starts_with('N') => {}
            _ => head.push(format!("{side}: {l}")),
        }
    }
    let mut out = head.join("\n");
    out.push_str("\n-- final state per name --");
    for v in state.values() {
        out.push('\n');
        out.push_str(v);
    }
    out
}

/// The differences between two runs: per role, sessions only in one.
pub struct Comparison {
    pub report: String,
    pub differences: usize,
}

pub fn compare(
    scenario: &str,
    reference: &[Session],
    subject: &[Session],
    subject_name: &str,
) -> Comparison {
    let group = |s: &[Session]| {
        let mut m: BTreeMap<String, Vec<Session>> = BTreeMap::new();
        for x in s {
            m.entry(x.role.clone()).or_default().push(x.clone());
        }
        m
    };
    let (a, b) = (group(reference), group(subject));
    let roles: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut report = format!(
        "# Differential: {scenario}\n\nCyrus `mupdate -m` ({} sessions) vs {subject_name} ({} sessions), after the normalisation documented in conformance/harness/differential.rs and docs/compatibility.md.\n\n",
        reference.len(),
        subject.len()
    );
    let mut differences = 0;
    for role in roles {
        let empty = Vec::new();
        let ra = a.get(role).unwrap_or(&empty);
        let rb = b.get(role).unwrap_or(&empty);
        let mut only_a: Vec<&Session> = Vec::new();
        let mut pool: Vec<&Session> = rb.iter().collect();
        for s in ra {
            if let Some(i) = pool.iter().position(|x| x.text == s.text) {
                pool.remove(i);
            } else {
                only_a.push(s);
            }
        }
        report.push_str(&format!(
            "## `{role}`: {} vs {} sessions, {} only in Cyrus, {} only in {subject_name}\n\n",
            ra.len(),
            rb.len(),
            only_a.len(),
            pool.len()
        ));
        if let Some(first) = ra.first() {
            let shown: String = first.text.lines().take(40).collect::<Vec<_>>().join("\n");
            report.push_str(&format!(
                "<details><summary>first Cyrus session, normalised</summary>\n\n```\n{shown}\n```\n</details>\n\n"
            ));
        }
        // Pair leftovers in order to show line diffs.
        for (i, s) in only_a.iter().enumerate() {
            differences += 1;
            report.push_str(&format!(
                "### difference {differences}\n\nCyrus `{}`:\n\n```\n{}\n```\n\n",
                s.file, s.text
            ));
            if let Some(o) = pool.get(i) {
                report.push_str(&format!(
                    "{subject_name} `{}`:\n\n```\n{}\n```\n\n",
                    o.file, o.text
                ));
            }
        }
        for o in pool.iter().skip(only_a.len()) {
            differences += 1;
            report.push_str(&format!(
                "### difference {differences}\n\nonly {subject_name} `{}`:\n\n```\n{}\n```\n\n",
                o.file, o.text
            ));
        }
    }
    if differences == 0 {
        report.push_str("No differences.\n");
    }
    Comparison {
        report,
        differences,
    }
}
