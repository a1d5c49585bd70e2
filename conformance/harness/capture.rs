//! The capture proof: what crossed the loopback between the Cyrus clients
//! and a TLS master, read back from the recording proxy's raw files
//! (`conn-NNNN.c.raw`, `conn-NNNN.s.raw`, harness/recorder.rs), and checks
//! that nothing but TLS records follows the point where TLS starts.
//!
//! With STARTTLS, the master's side is clear text up to and including the
//! line beginning `S01 OK`, the client's up to its `S01 STARTTLS` line;
//! with implicit TLS, neither side has a clear byte. After that point each
//! side must be a chain of whole TLS records (content type 0x14-0x17,
//! record version 3.x, length at most 2^14 + 2048), starting with a
//! handshake record and carrying application data. Independently of that
//! parse, the protocol words of every writing session (AUTHENTICATE,
//! MAILBOX, RESERVE, ACTIVATE), the login name, the password and the PLAIN blob
//! must appear nowhere after the clear part, and nowhere in it either.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::differential::role_of;
use super::mupdate::TlsMode;

/// Largest TLS record payload allowed on the wire (RFC 8446 section 5.2).
const MAX_RECORD: usize = (1 << 14) + 2048;

/// One relayed connection as recorded.
#[derive(Debug)]
pub struct Conn {
    /// `conn-NNNN` and its murder folder, for messages.
    pub name: String,
    /// `imapd b1`, `ctl_mboxlist b2 -m`, `mupdate f` (see `role_of`).
    pub role: String,
    /// The address the master saw this connection come from.
    pub upstream_from: Option<String>,
    /// Client to master.
    pub c: Vec<u8>,
    /// Master to client.
    pub s: Vec<u8>,
}

/// The connections recorded in `dir` (one murder's recording folder).
pub fn load(dir: &Path) -> Vec<Conn> {
    let mut txts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("conn-") && n.ends_with(".txt"))
        })
        .collect();
    txts.sort();
    txts.iter()
        .map(|txt| {
            let text = std::fs::read_to_string(txt).unwrap_or_default();
            let header = |key: &str| {
                text.lines()
                    .take_while(|l| l.starts_with('#'))
                    .find_map(|l| l.strip_prefix(key).map(str::to_string))
            };
            let argv = header("# peer ")
                .and_then(|p| p.split_once("argv=").map(|(_, a)| a.to_string()))
                .unwrap_or_default();
            let raw = |ext: &str| std::fs::read(txt.with_extension(ext)).unwrap_or_default();
            Conn {
                name: format!(
                    "{}/{}",
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                    txt.file_stem().and_then(|n| n.to_str()).unwrap_or("?")
                ),
                role: role_of(&argv),
                upstream_from: header("# upstream-from "),
                c: raw("c.raw"),
                s: raw("s.raw"),
            }
        })
        .collect()
}

/// Parses `bytes` as whole TLS records: their content types in order, or
/// what is wrong and at which offset.
pub fn tls_records(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut types = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(h) = bytes.get(at..at + 5) else {
            return Err(format!("{} stray bytes at offset {at}: {:02x?}", bytes.len() - at, &bytes[at..]));
        };
        if !(0x14..=0x17).contains(&h[0]) || h[1] != 3 || !(1..=4).contains(&h[2]) {
            let end = bytes.len().min(at + 32);
            return Err(format!(
                "not a TLS record header at offset {at}: {:02x?} ({:?})",
                &h,
                String::from_utf8_lossy(&bytes[at..end])
            ));
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len > MAX_RECORD {
            return Err(format!("record of {len} bytes at offset {at}"));
        }
        if at + 5 + len > bytes.len() {
            return Err(format!("record at offset {at} cut short: {len} bytes announced, {} there", bytes.len() - at - 5));
        }
        types.push(h[0]);
        at += 5 + len;
    }
    Ok(types)
}

/// Bytes that must never cross the wire in clear: protocol words every
/// session sends or receives, the login, the password, the PLAIN blob.
pub fn secrets(user: &str, password: &str) -> Vec<Vec<u8>> {
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("{user}\0{user}\0{password}"));
    ["AUTHENTICATE", "MAILBOX", "RESERVE", "ACTIVATE", user, password, &plain]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where the clear-text part of each side ends.
fn clear_prefix(conn: &Conn, mode: TlsMode) -> Result<(usize, usize), String> {
    match mode {
        TlsMode::Implicit => Ok((0, 0)),
        TlsMode::StartTls => {
            let c_end = if conn.c.starts_with(b"S01 STARTTLS\r\n") {
                b"S01 STARTTLS\r\n".len()
            } else {
                let end = conn.c.len().min(64);
                return Err(format!(
                    "the client's first bytes are not S01 STARTTLS: {:?}",
                    String::from_utf8_lossy(&conn.c[..end])
                ));
            };
            let mut at = 0;
            loop {
                let Some(nl) = conn.s[at..].iter().position(|&b| b == b'\n') else {
                    return Err(format!(
                        "no S01 OK line from the master: {:?}",
                        String::from_utf8_lossy(&conn.s[..conn.s.len().min(400)])
                    ));
                };
                let line = &conn.s[at..at + nl + 1];
                at += nl + 1;
                if line.starts_with(b"S01 OK") {
                    return Ok((c_end, at));
                }
                if !line.starts_with(b"* ") {
                    return Err(format!("clear line before S01 OK: {:?}", String::from_utf8_lossy(line)));
                }
            }
        }
    }
}

/// Checks one connection; `Err` says what is wrong.
pub fn check(conn: &Conn, mode: TlsMode, secrets: &[Vec<u8>]) -> Result<(), String> {
    let (c_end, s_end) = clear_prefix(conn, mode)?;
    for (side, bytes, end) in [("client", &conn.c, c_end), ("master", &conn.s, s_end)] {
        let types = tls_records(&bytes[end..]).map_err(|e| format!("{side} after the clear part: {e}"))?;
        if types.first() != Some(&0x16) {
            return Err(format!("{side}: TLS does not start with a handshake record: {types:02x?}"));
        }
        if !types.contains(&0x17) {
            return Err(format!("{side}: no application data in TLS: {types:02x?}"));
        }
        for s in secrets {
            if let Some(at) = find(bytes, s) {
                return Err(format!(
                    "{side}: {:?} in clear at offset {at} (TLS from offset {end})",
                    String::from_utf8_lossy(s)
                ));
            }
        }
    }
    Ok(())
}

/// Checks every connection of `conns`; panics listing each failure.
#[track_caller]
pub fn assert_all_encrypted(conns: &[Conn], mode: TlsMode, secrets: &[Vec<u8>]) {
    assert!(!conns.is_empty(), "no MUPDATE connection was recorded");
    let failures: Vec<String> = conns
        .iter()
        .filter_map(|c| check(c, mode, secrets).err().map(|e| format!("{} ({}): {e}", c.name, c.role)))
        .collect();
    assert!(failures.is_empty(), "{} of {} connections not (only) TLS:\n{}", failures.len(), conns.len(), failures.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(c: &[u8], s: &[u8]) -> Conn {
        Conn { name: "t".into(), role: "t".into(), upstream_from: None, c: c.to_vec(), s: s.to_vec() }
    }

    fn record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn the_check_tells_tls_from_clear_text() {
        let secrets = secrets("mupdater", "secret");
        let tls = [record(0x16, &[1, 2, 3]), record(0x17, &[9; 40])].concat();
        let banner = b"* AUTH\r\n* STARTTLS\r\n* OK MUPDATE \"x\" \"y\" \"z\"\r\nS01 OK Begin TLS negotiation now\r\n";
        let good = conn(&[b"S01 STARTTLS\r\n".as_slice(), &tls].concat(), &[banner.as_slice(), &tls].concat());
        assert_eq!(check(&good, TlsMode::StartTls, &secrets), Ok(()));
        assert!(check(&good, TlsMode::Implicit, &secrets).is_err(), "implicit TLS has no clear banner");
        let implicit = conn(&tls, &tls);
        assert_eq!(check(&implicit, TlsMode::Implicit, &secrets), Ok(()));
        // Clear text after the OK, a secret inside a record, a cut record, no STARTTLS.
        let clear_after = conn(&good.c, &[banner.as_slice(), b"* OK again\r\n"].concat());
        assert!(check(&clear_after, TlsMode::StartTls, &secrets).is_err());
        let leaked = conn(&[b"S01 STARTTLS\r\n".as_slice(), &tls, &record(0x17, b"A01 AUTHENTICATE")].concat(), &good.s);
        assert!(check(&leaked, TlsMode::StartTls, &secrets).unwrap_err().contains("AUTHENTICATE"));
        let cut = conn(&good.c, &[banner.as_slice(), &tls[..tls.len() - 1]].concat());
        assert!(check(&cut, TlsMode::StartTls, &secrets).unwrap_err().contains("cut short"));
        let no_starttls = conn(b"A01 AUTHENTICATE \"PLAIN\"\r\n", &good.s);
        assert!(check(&no_starttls, TlsMode::StartTls, &secrets).is_err());
    }
}
