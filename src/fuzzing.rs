//! Bodies of the fuzz targets (fuzz/, cargo-fuzz) so that the same checks
//! run on stable in the test suite (protocol-tests/fuzz_smoke.rs).

mod session;

pub use session::session;

use crate::protocol::{encode, parse, Decoded, Framer, Limits};

const LIMITS: Limits = Limits { max_line: 4096, max_literal: 65536, max_message: 65536 };

/// Frame `data` fed whole and fed in two pieces split at `split`: the same
/// messages must come out, and each must parse without panicking.
pub fn framer(data: &[u8], split: usize) {
    let whole = frame_all(&[data]);
    let at = if data.is_empty() { 0 } else { split % (data.len() + 1) };
    let pieces = frame_all(&[&data[..at], &data[at..]]);
    assert_eq!(whole, pieces, "framing depends on how the bytes arrive");
    for m in whole.0 {
        let _ = parse::parse_line(&m);
        let _ = parse::parse_response(&m);
        let _ = parse::parse_auth_answer(&m);
    }
}

/// The SCRAM parser and server steps on arbitrary bytes: the first part
/// (up to the first NUL) as a client-first message, the rest as the
/// client-final one. Nothing panics; a parsed client-first message keeps
/// its parts (the gs2 header and the bare message make the whole); no
/// forged final message logs in.
pub fn scram(data: &[u8]) {
    use crate::auth::scram::{self, ScramHash, ServerExchange, Verifier};
    let (first, last) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let _ = scram::parse_client_final(data);
    if let Ok(name) = std::str::from_utf8(first) {
        if let Ok(u) = scram::unescape_saslname(name) {
            assert_eq!(scram::unescape_saslname(&scram::escape_saslname(&u)).as_deref(), Ok(u.as_str()));
        }
    }
    let Ok(parsed) = scram::parse_client_first(first) else {
        return;
    };
    assert_eq!(format!("{}{}", parsed.gs2_header, parsed.bare).as_bytes(), first);
    // The cheapest verifier the server accepts: a fuzz run stays fast.
    let v = Verifier::derive(ScramHash::Sha256, b"pw", b"salt", scram::MIN_ITERATIONS);
    let (ex, server_first) = ServerExchange::start(ScramHash::Sha256, parsed, Some(v.clone()), v);
    assert!(server_first.starts_with(b"r="));
    assert!(ex.finish(last).is_err(), "a proof made without the server's nonce cannot be right");
}

type Framed = (Vec<Vec<u8>>, Option<String>);

fn frame_all(chunks: &[&[u8]]) -> Framed {
    let mut framer = Framer::new(LIMITS);
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match framer.decode(&buf) {
                Ok(Decoded::Message(n)) => {
                    assert!(n > 0 && n <= buf.len(), "message length within the buffer");
                    out.push(buf.drain(..n).collect());
                }
                // The literal may be buffered already: decode again.
                Ok(Decoded::NeedMore { go_ahead: true }) => continue,
                Ok(Decoded::NeedMore { go_ahead: false }) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
            if buf.is_empty() {
                break;
            }
        }
    }
    (out, None)
}

/// Any bytes as a server command: parse never panics, and a parsed
/// command encodes to bytes that frame and parse to the same command.
pub fn command_round_trip(data: &[u8]) {
    if let crate::protocol::Line::Command { tag, args: Ok(cmd), .. } = parse::parse_line(data) {
        if tag.is_empty() || tag.iter().any(|b| b.is_ascii_whitespace() || b"()\"{".contains(b)) {
            return;
        }
        for literal_plus in [true, false] {
            let mut out = Vec::new();
            encode::command(&tag, &cmd, literal_plus, &mut out);
            let mut framer = Framer::new(Limits { max_line: 1 << 20, max_literal: 1 << 20, max_message: 1 << 22 });
            let mut decoded = framer.decode(&out);
            while let Ok(Decoded::NeedMore { go_ahead: true }) = decoded {
                decoded = framer.decode(&out);
            }
            let Ok(Decoded::Message(n)) = decoded else {
                panic!("encoded command does not frame: {:?}", String::from_utf8_lossy(&out))
            };
            assert_eq!(n, out.len());
            match parse::parse_line(&out) {
                crate::protocol::Line::Command { args: Ok(again), .. } => assert_eq!(again, cmd),
                other => panic!("re-parse gave {other:?}"),
            }
        }
    }
}
