//! Play the client side of a transcript against a server and compare the
//! server's answers with the recorded ones.
//!
//! Two ways to compare: `Exact` (byte for byte; `{{version}}` in an
//! expectation stands for the server's version) and `Normalized`, which
//! compares message by message after removing only documented, harmless
//! differences (docs/compatibility.md): the form of a string (quoted,
//! `{n}` or `{n+}` literal), the greeting's server name, implementation and
//! version, and the optional capability lines `COMPRESS`, `STARTTLS` and
//! `X-MUPDATED-ADMIN`.

use super::tls_client::{self, AnyStream, Options};
use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use base64::Engine;

use crate::protocol::{encode, parse, Command, Decoded, Framer, Limits, Line, Response, Verb};
use crate::tools::transcript::{escape, Step};

/// How answers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Byte for byte, `{{version}}` standing for the server's version.
    Exact,
    /// Message by message, after removing the documented harmless
    /// differences (string forms, greeting fields, optional capabilities).
    Normalized,
}

/// One difference between what was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Index of the transcript step.
    pub step: usize,
    /// The connection the step is on.
    pub conn: String,
    /// What the transcript expected, escaped and broken after each `\n` (or
    /// [`NO_CONNECTION`], or `(server closes)`).
    pub expected: String,
    /// What the server sent instead, escaped likewise (or why no
    /// connection could be made, or `(connection still open)`).
    pub actual: String,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Steps in the transcript (all of them, even when the replay stopped
    /// early at an unreachable server).
    pub steps: usize,
    /// The differences, in step order; empty when the server answered as
    /// recorded.
    pub differences: Vec<Difference>,
}

/// `Difference::expected` when the server could not be reached at all.
pub const NO_CONNECTION: &str = "a connection";

impl Report {
    /// Every expectation was met: no difference.
    pub fn matched(&self) -> bool {
        self.differences.is_empty()
    }

    /// Whether the replay stopped because a connection could not be made
    /// (as opposed to the server answering differently).
    pub fn unreachable(&self) -> bool {
        self.differences.iter().any(|d| d.expected == NO_CONNECTION)
    }

    /// A readable diff, `-` expected, `+` actual.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for d in &self.differences {
            s.push_str(&format!("step {} on @{}:\n", d.step + 1, d.conn));
            for l in d.expected.lines() {
                s.push_str(&format!("- {l}\n"));
            }
            for l in d.actual.lines() {
                s.push_str(&format!("+ {l}\n"));
            }
        }
        s
    }
}

struct Peer {
    stream: AnyStream,
    input: Vec<u8>,
    eof: bool,
}

/// Capabilities that may differ between two correct servers.
const OPTIONAL_CAPABILITIES: &[&[u8]] = &[b"COMPRESS", b"STARTTLS", b"X-MUPDATED-ADMIN"];

/// Split server bytes into messages; a trailing partial message is kept whole.
fn split_messages(bytes: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut framer = Framer::new(Limits { max_line: usize::MAX / 4, max_literal: usize::MAX / 4, max_message: usize::MAX / 4 });
    let mut at = 0;
    while at < bytes.len() {
        match framer.decode(&bytes[at..]) {
            Ok(Decoded::Message(n)) => {
                out.push(bytes[at..at + n].to_vec());
                at += n;
            }
            _ => break,
        }
    }
    (out, at)
}

/// The normalized form of one server message, or None when it is dropped.
fn normalize(msg: &[u8]) -> Option<String> {
    match parse::parse_response(msg) {
        Ok(Response::Capability { name, .. })
            if OPTIONAL_CAPABILITIES.iter().any(|c| c.eq_ignore_ascii_case(&name)) =>
        {
            None
        }
        Ok(Response::Capability { name, params }) => {
            // `* AUTH "PLAIN"` and `* AUTH PLAIN` are the same offer.
            let params: Vec<u8> = params.into_iter().filter(|b| *b != b'"').collect();
            Some(format!("* {} {}", String::from_utf8_lossy(&name).to_ascii_uppercase(), escape(&params)))
        }
        Ok(Response::Greeting { .. }) => Some("* OK MUPDATE <server> <implementation> <version> \"(master)\"".into()),
        Ok(r) => {
            let mut out = Vec::new();
            encode::response(&r, &mut out);
            Some(escape(&out))
        }
        Err(_) => Some(format!("(unparsable) {}", escape(msg))),
    }
}

fn normalized(bytes: &[u8]) -> Vec<String> {
    let (msgs, used) = split_messages(bytes);
    let mut v: Vec<String> = msgs.iter().filter_map(|m| normalize(m)).collect();
    if used < bytes.len() {
        v.push(format!("(partial) {}", escape(&bytes[used..])));
    }
    v
}

/// Play `steps` against `addr`. `wait` bounds each wait for an answer.
pub async fn play(addr: &str, steps: &[Step], mode: Mode, version: &str, wait: Duration) -> Report {
    play_over(addr, steps, mode, version, wait, None).await
}

/// [`play`], every connection in implicit TLS (`listen_tls`) made with
/// `tls`: the transcript is what is said inside TLS.
pub async fn play_tls(addr: &str, steps: &[Step], mode: Mode, version: &str, wait: Duration, tls: &Options) -> Report {
    play_over(addr, steps, mode, version, wait, Some(tls)).await
}

/// Open one connection of a transcript, in TLS when `tls` says.
async fn open(addr: &str, wait: Duration, tls: Option<&Options>) -> Result<AnyStream, String> {
    let stream = match tokio::time::timeout(wait, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("timeout".into()),
    };
    let _ = stream.set_nodelay(true);
    let Some(options) = tls else { return Ok(AnyStream::Plain(stream)) };
    let config = std::sync::Arc::new(tls_client::client_config(options).map_err(|e| e.to_string())?);
    let tls = tls_client::handshake(stream, addr, config, wait).await.map_err(|e| e.to_string())?;
    Ok(AnyStream::Tls(Box::new(tls)))
}

async fn play_over(addr: &str, steps: &[Step], mode: Mode, version: &str, wait: Duration, tls: Option<&Options>) -> Report {
    let mut peers: HashMap<String, Peer> = HashMap::new();
    let mut report = Report { steps: steps.len(), differences: Vec::new() };
    for (i, step) in steps.iter().enumerate() {
        let conn = match step {
            Step::Send { conn, .. } | Step::Expect { conn, .. } | Step::Close { conn } | Step::Eof { conn } => conn.clone(),
            Step::Sleep { millis } => {
                tokio::time::sleep(Duration::from_millis(*millis)).await;
                continue;
            }
        };
        if !peers.contains_key(&conn) {
            if matches!(step, Step::Close { .. }) {
                continue;
            }
            match open(addr, wait, tls).await {
                Ok(stream) => {
                    peers.insert(conn.clone(), Peer { stream, input: Vec::new(), eof: false });
                }
                Err(err) => {
                    report.differences.push(Difference { step: i, conn, expected: NO_CONNECTION.into(), actual: err });
                    return report;
                }
            }
        }
        let Some(peer) = peers.get_mut(&conn) else { continue };
        match step {
            Step::Send { bytes, .. } => {
                if let Err(e) = peer.stream.write_all(bytes).await {
                    // A server may close early (limits); later Expect/Eof steps judge it.
                    peer.eof = true;
                    tracing::debug!(error = %e, "write failed");
                }
            }
            Step::Close { .. } => {
                peers.remove(&conn);
            }
            Step::Expect { bytes, .. } => {
                let expected = String::from_utf8_lossy(bytes).replace("{{version}}", version).into_bytes();
                let d = match mode {
                    Mode::Exact => expect_exact(peer, &expected, wait).await,
                    Mode::Normalized => expect_normalized(peer, &expected, wait).await,
                };
                if let Some((e, a)) = d {
                    report.differences.push(Difference { step: i, conn, expected: e, actual: a });
                }
            }
            Step::Eof { .. } => {
                let deadline = tokio::time::Instant::now() + wait;
                while !peer.eof {
                    if !read_some(peer, deadline).await {
                        break;
                    }
                }
                if !peer.eof || !peer.input.is_empty() {
                    let actual = if peer.input.is_empty() {
                        "(connection still open)".to_string()
                    } else {
                        escape(&std::mem::take(&mut peer.input))
                    };
                    report.differences.push(Difference { step: i, conn, expected: "(server closes)".into(), actual });
                }
            }
            Step::Sleep { .. } => {}
        }
    }
    report
}

/// Read what is available until `deadline`; false on timeout.
async fn read_some(peer: &mut Peer, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 16384];
    match tokio::time::timeout_at(deadline, peer.stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {
            peer.eof = true;
            true
        }
        Ok(Ok(n)) => {
            peer.input.extend_from_slice(&buf[..n]);
            true
        }
        Err(_) => false,
    }
}

async fn expect_exact(peer: &mut Peer, expected: &[u8], wait: Duration) -> Option<(String, String)> {
    let deadline = tokio::time::Instant::now() + wait;
    while peer.input.len() < expected.len() && !peer.eof {
        if !read_some(peer, deadline).await {
            break;
        }
    }
    let n = expected.len().min(peer.input.len());
    let got: Vec<u8> = peer.input.drain(..n).collect();
    if got == expected {
        None
    } else {
        Some((escape_lines(expected), escape_lines(&got)))
    }
}

async fn expect_normalized(peer: &mut Peer, expected: &[u8], wait: Duration) -> Option<(String, String)> {
    let want = normalized(expected);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (msgs, _) = split_messages(&peer.input);
        let have = msgs.iter().filter(|m| normalize(m).is_some()).count();
        if have >= want.len() || peer.eof {
            break;
        }
        if !read_some(peer, deadline).await {
            break;
        }
    }
    // Take just enough whole messages to match the expectation's count.
    let (msgs, _) = split_messages(&peer.input);
    let mut taken = 0;
    let mut got = Vec::new();
    for m in &msgs {
        if got.len() == want.len() {
            break;
        }
        taken += m.len();
        if let Some(n) = normalize(m) {
            got.push(n);
        }
    }
    if got.len() < want.len() && taken == peer.input.len() && !peer.input.is_empty() {
        // nothing partial to add
    } else if got.len() < want.len() && taken < peer.input.len() {
        got.push(format!("(partial) {}", escape(&peer.input[taken..])));
        taken = peer.input.len();
    }
    peer.input.drain(..taken);
    if got == want {
        None
    } else {
        Some((want.join("\n"), got.join("\n")))
    }
}

fn escape_lines(bytes: &[u8]) -> String {
    let s = escape(bytes);
    s.replace("\\n", "\\n\n").trim_end().to_string()
}

/// Rewrite the credentials of every AUTHENTICATE PLAIN in the client bytes
/// to `user`/`password`, so a session recorded with one account (Cyrus's
/// `mupdater`/`secret`) replays against a server with another. Both the
/// initial response (`A01 AUTHENTICATE "PLAIN" {32+}` + base64, or a quoted
/// one) and the answer line after a bare `AUTHENTICATE "PLAIN"` are
/// rewritten; a non-empty authorization identity becomes `user` as well.
/// The command keeps its tag and string form (literal or quoted). A command
/// split across client chunks (a synchronising `{n}` literal, which waits
/// for `+ go ahead`) is left as recorded. Returns how many were rewritten.
pub fn substitute_plain_credentials(steps: &mut [Step], user: &str, password: &str) -> usize {
    let mut rewritten = 0;
    // Connections whose next client message answers a bare AUTHENTICATE PLAIN.
    let mut awaiting: Vec<String> = Vec::new();
    let credentials = |old: &[u8]| -> Vec<u8> {
        let authz: &[u8] = if old.first() == Some(&0) || old.is_empty() { b"" } else { user.as_bytes() };
        [authz, b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat()
    };
    for step in steps.iter_mut() {
        let Step::Send { conn, bytes } = step else { continue };
        let mut framer = Framer::new(Limits { max_line: usize::MAX / 4, max_literal: usize::MAX / 4, max_message: usize::MAX / 4 });
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            let n = match framer.decode(&bytes[at..]) {
                Ok(Decoded::Message(n)) => n,
                Ok(Decoded::NeedMore { go_ahead: true }) => continue,
                _ => break,
            };
            let msg = &bytes[at..at + n];
            at += n;
            if let Some(i) = awaiting.iter().position(|c| c == conn) {
                awaiting.remove(i);
                if let parse::AuthAnswer::Data(old) = parse::parse_auth_answer(msg) {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(credentials(&old));
                    out.extend_from_slice(b64.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    rewritten += 1;
                    continue;
                }
            } else if let Line::Command {
                tag,
                verb: Verb::Authenticate,
                args: Ok(Command::Authenticate { mechanism, initial_response }),
            } = parse::parse_line(msg)
            {
                if mechanism.eq_ignore_ascii_case(b"PLAIN") {
                    match initial_response {
                        Some(old) => {
                            let cmd = Command::Authenticate { mechanism, initial_response: Some(credentials(&old)) };
                            encode::command(&tag, &cmd, msg.contains(&b'{'), &mut out);
                            rewritten += 1;
                            continue;
                        }
                        None => awaiting.push(conn.clone()),
                    }
                }
            }
            out.extend_from_slice(msg);
        }
        out.extend_from_slice(&bytes[at..]);
        *bytes = out;
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::transcript::parse as parse_transcript;

    fn sent(steps: &[Step]) -> Vec<u8> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn plain_credentials_are_rewritten_in_every_form() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        // Cyrus's form: {n+} literal, then more commands in the same chunk.
        let cyrus = format!(
            "C: A01 AUTHENTICATE \"PLAIN\" {{32+}}\\r\\n{}\\r\\nN1 NOOP\\r\\n\n",
            b64("mupdater\0mupdater\0secret")
        );
        let mut steps = parse_transcript(&cyrus).unwrap();
        assert_eq!(substitute_plain_credentials(&mut steps, "admin", "pw"), 1);
        let want = format!("A01 AUTHENTICATE \"PLAIN\" {{20+}}\r\n{}\r\nN1 NOOP\r\n", b64("admin\0admin\0pw"));
        assert_eq!(String::from_utf8(sent(&steps)).unwrap(), want);

        // Quoted initial response, empty authorization identity kept empty.
        let quoted = format!("@x C: T1 authenticate \"plain\" \"{}\"\\r\\n\n", b64("\0u\0p"));
        let mut steps = parse_transcript(&quoted).unwrap();
        assert_eq!(substitute_plain_credentials(&mut steps, "admin", "pw"), 1);
        let want = format!("T1 AUTHENTICATE \"plain\" \"{}\"\r\n", b64("\0admin\0pw"));
        assert_eq!(String::from_utf8(sent(&steps)).unwrap(), want);

        // No initial response: the answer line after `+ ""` is rewritten.
        let bare = format!(
            "C: A AUTHENTICATE \"PLAIN\"\\r\\n\nS: + \"\"\\r\\n\nC: {}\\r\\n\nS: A OK \"Authenticated\"\\r\\n\nC: B AUTHENTICATE \"X\"\\r\\n\n",
            b64("u\0u\0p")
        );
        let mut steps = parse_transcript(&bare).unwrap();
        assert_eq!(substitute_plain_credentials(&mut steps, "admin", "pw"), 1);
        let want = format!("A AUTHENTICATE \"PLAIN\"\r\n{}\r\nB AUTHENTICATE \"X\"\r\n", b64("admin\0admin\0pw"));
        assert_eq!(String::from_utf8(sent(&steps)).unwrap(), want);
    }
}
