//! Transcripts of MUPDATE sessions: the format of `fixtures/` and of
//! `protocol-tests/`, and what `mupdatectl replay` plays.
//!
//! One event a line: `[SECONDS ]['@'CONN ]C: BYTES` for bytes the client
//! sent, `... S: BYTES` for bytes the server sent. BYTES are escaped:
//! `\r`, `\n`, `\t`, `\\` and `\xHH`; nothing is added, so a line end is
//! written `\r\n`. CONN names a connection (default `main`), so one
//! transcript can drive several sessions in a fixed order. Lines starting
//! with `#` are comments, except `# close ...` lines of recorded captures,
//! which mark where the recorded connection ended. Directives start with
//! `!`: `!close [CONN]` (client closes), `!eof [CONN]` (the server must
//! close), `!sleep MILLIS`. This is the format our recording proxy writes
//! (`# mupdate-record v1` header), so a capture is a transcript.

use std::fmt;

/// One step of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes the client sends on a connection.
    Send {
        /// The connection's name (`main` unless the line says `@CONN`).
        conn: String,
        /// The bytes, unescaped.
        bytes: Vec<u8>,
    },
    /// Bytes the server must send next on a connection.
    Expect {
        /// The connection's name.
        conn: String,
        /// The bytes expected, unescaped, exactly (or normalized, in a
        /// normalized replay).
        bytes: Vec<u8>,
    },
    /// The client closes a connection.
    Close {
        /// The connection's name.
        conn: String,
    },
    /// The server must close the connection (EOF after what was expected).
    Eof {
        /// The connection's name.
        conn: String,
    },
    /// Wait.
    Sleep {
        /// How long, in milliseconds.
        millis: u64,
    },
}

/// A transcript that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TranscriptError {
    /// The line that cannot be read, counted from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Default connection name.
pub const MAIN: &str = "main";

/// Unescape `\r \n \t \\ \xHH`.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).ok_or("truncated \\x escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x escape {hex:?}"))?);
                i += 2;
            }
            Some(c) => return Err(format!("unknown escape \\{}", *c as char)),
            None => return Err("trailing backslash".into()),
        }
        i += 2;
    }
    Ok(out)
}

/// Escape bytes for a transcript line.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &c in bytes {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

/// Parse a transcript. Consecutive chunks in the same direction on the
/// same connection are joined.
pub fn parse(text: &str) -> Result<Vec<Step>, TranscriptError> {
    let mut steps: Vec<Step> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let err = |message: String| TranscriptError { line, message };
        let l = raw.trim_end_matches('\r');
        if l.trim().is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix('#') {
            // Recorded captures end with `# close <secs> closed_by=server ...`.
            let rest = rest.trim();
            if let Some(c) = rest.strip_prefix("close ") {
                if c.contains("closed_by=server") {
                    steps.push(Step::Eof { conn: MAIN.into() });
                }
            }
            continue;
        }
        if let Some(d) = l.strip_prefix('!') {
            let mut words = d.split_whitespace();
            let conn = |w: Option<&str>| w.unwrap_or(MAIN).trim_start_matches('@').to_string();
            match words.next() {
                Some("close") => steps.push(Step::Close { conn: conn(words.next()) }),
                Some("eof") => steps.push(Step::Eof { conn: conn(words.next()) }),
                Some("sleep") => {
                    let millis = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| err("!sleep needs milliseconds".into()))?;
                    steps.push(Step::Sleep { millis });
                }
                other => return Err(err(format!("unknown directive {other:?}"))),
            }
            continue;
        }
        let mut rest = l;
        // Optional timestamp.
        if let Some((first, tail)) = rest.split_once(' ') {
            if !first.is_empty() && first.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
                rest = tail;
            }
        }
        let mut conn = MAIN.to_string();
        if let Some(r) = rest.strip_prefix('@') {
            let (name, tail) = r.split_once(' ').ok_or_else(|| err("connection name without event".into()))?;
            conn = name.to_string();
            rest = tail;
        }
        let (dir, payload) = if let Some(p) = rest.strip_prefix("C:") {
            ('C', p)
        } else if let Some(p) = rest.strip_prefix("S:") {
            ('S', p)
        } else {
            return Err(err(format!("expected C: or S:, got {l:?}")));
        };
        let payload = payload.strip_prefix(' ').unwrap_or(payload);
        let bytes = unescape(payload).map_err(err)?;
        match (steps.last_mut(), dir) {
            (Some(Step::Send { conn: c, bytes: b }), 'C') | (Some(Step::Expect { conn: c, bytes: b }), 'S')
                if *c == conn =>
            {
                b.extend_from_slice(&bytes)
            }
            (_, 'C') => steps.push(Step::Send { conn, bytes }),
            _ => steps.push(Step::Expect { conn, bytes }),
        }
    }
    Ok(steps)
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Send { conn, bytes } => write!(f, "@{conn} C: {}", escape(bytes)),
            Step::Expect { conn, bytes } => write!(f, "@{conn} S: {}", escape(bytes)),
            Step::Close { conn } => write!(f, "!close @{conn}"),
            Step::Eof { conn } => write!(f, "!eof @{conn}"),
            Step::Sleep { millis } => write!(f, "!sleep {millis}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_recorded_capture() {
        let t = "# mupdate-record v1\n# conn conn-0004.txt opened=...\n\
                 0.004599 S: * AUTH \"PLAIN\"\\r\\n\n0.004599 S: * OK MUPDATE \"m\"\\r\\n\n\
                 0.004821 C: A01 AUTHENTICATE \"PLAIN\" {32+}\\r\\n\n0.004821 C: bXVw\\r\\n\n\
                 0.005266 S: A01 OK \"Authenticated\"\\r\\n\n# close 0.1 closed_by=server c_bytes=1\n";
        let steps = parse(t).unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0], Step::Expect { conn: "main".into(), bytes: b"* AUTH \"PLAIN\"\r\n* OK MUPDATE \"m\"\r\n".to_vec() });
        assert_eq!(steps[1], Step::Send { conn: "main".into(), bytes: b"A01 AUTHENTICATE \"PLAIN\" {32+}\r\nbXVw\r\n".to_vec() });
        assert_eq!(steps[3], Step::Eof { conn: "main".into() });
    }

    #[test]
    fn connections_directives_and_escapes() {
        let t = "@b C: x\\x00\\t\\\\\\r\\n\n!sleep 5\n!close @b\n!eof\n";
        let steps = parse(t).unwrap();
        assert_eq!(steps[0], Step::Send { conn: "b".into(), bytes: b"x\0\t\\\r\n".to_vec() });
        assert_eq!(steps[1], Step::Sleep { millis: 5 });
        assert_eq!(steps[2], Step::Close { conn: "b".into() });
        assert_eq!(steps[3], Step::Eof { conn: "main".into() });
        assert!(parse("X: nope").is_err());
        assert!(parse("C: \\q").is_err());
        let all: Vec<u8> = (0u8..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
    }
}
