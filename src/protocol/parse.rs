//! Parsers over one whole framed message.
//!
//! The command parser mirrors Cyrus 3.6.1 `imap/mupdate.c: docmd` and the
//! readers of `imap/imapparse.c` it calls (`getword`, `getxstring` as
//! `getstring`): a cursor hands out one byte at a time and every decision is
//! taken on the byte just read, Cyrus's `ch`, so that each malformed line
//! gets the same answer as from Cyrus. Deliberate differences, all on input
//! no Cyrus client sends:
//! - a literal announcement may end with a bare LF (Cyrus wants CRLF there;
//!   the framer accepts both, so the parser does too);
//! - a NUL inside a quoted string fails the string, as Cyrus already does
//!   for a NUL inside a literal (Cyrus would silently cut the C string);
//! - tag and command word are cut at a NUL, as Cyrus's C strings are.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use nom::bytes::complete::take_till;
use nom::character::complete::{char, digit1};
use nom::combinator::opt;
use nom::IResult;

use super::types::*;

/// Cyrus's `int ch`: the byte just read; `None` stands for `EOF`, which is
/// also what a failed `getstring` returns.
type Ch = Option<u8>;

const SP: Ch = Some(b' ');

/// Most hosts one UPDATE may name (`docmd`: `int counter = 30`).
pub const MAX_UPDATE_HOSTS: usize = 30;

/// `isspace` of the C library in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Bytes that end a `getword` word (and a `getxstring` atom).
fn ends_word(b: u8) -> bool {
    is_c_space(b) || matches!(b, b'(' | b')' | b'"')
}

/// A C string's view of bytes: everything before the first NUL.
fn c_str(bytes: &[u8]) -> &[u8] {
    bytes.iter().position(|&b| b == 0).map_or(bytes, |i| &bytes[..i])
}

/// `{digits[+]}` and the line end after it, the `{` already read. Returns
/// the digits.
fn literal_header(i: &[u8]) -> IResult<&[u8], &[u8]> {
    let (i, digits) = digit1(i)?;
    let (i, _) = opt(char('+'))(i)?;
    let (i, _) = char('}')(i)?;
    let (i, _) = opt(char('\r'))(i)?;
    let (i, _) = char('\n')(i)?;
    Ok((i, digits))
}

/// A byte cursor with Cyrus's reading primitives.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// `prot_getc`.
    fn getc(&mut self) -> Ch {
        let c = self.buf.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// `imapparse.c: getword`: bytes up to whitespace, a parenthesis or a
    /// double quote; returns them and the byte that ended them (consumed).
    fn getword(&mut self) -> (&'a [u8], Ch) {
        let rest = self.rest();
        let word = match take_till::<_, _, nom::error::Error<&[u8]>>(ends_word)(rest) {
            Ok((_, word)) => word,
            Err(_) => rest,
        };
        self.pos += word.len();
        (word, self.getc())
    }

    /// `imapparse.c: getxstring(IMAP_STRING)`: a quoted string or a literal,
    /// then the byte after it. A failure returns `None` for the byte (the
    /// C code returns `EOF`) with whatever was read into the buffer so far.
    fn getstring(&mut self) -> (Vec<u8>, Ch) {
        match self.getc() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            // An atom, a space, a line end, EOF: "Invalid starting character".
            _ => (Vec::new(), None),
        }
    }

    fn quoted(&mut self) -> (Vec<u8>, Ch) {
        let mut out = Vec::new();
        loop {
            let c = match self.getc() {
                // A backslash escapes the next byte, whatever it is.
                Some(b'\\') => self.getc(),
                Some(b'"') => return (out, self.getc()),
                Some(b'\r' | b'\n') | None => return (out, None),
                c => c,
            };
            match c {
                Some(0) | None => return (out, None),
                Some(c) => out.push(c),
            }
        }
    }

    fn literal(&mut self) -> (Vec<u8>, Ch) {
        let Ok((data, digits)) = literal_header(self.rest()) else {
            return (Vec::new(), None);
        };
        let n = digits
            .iter()
            .try_fold(0usize, |n, &d| n.checked_mul(10)?.checked_add(usize::from(d - b'0')));
        self.pos = self.buf.len() - data.len();
        match n {
            Some(n) if n <= data.len() => {
                self.pos += n;
                let value = &data[..n];
                if value.contains(&0) {
                    // imapparse.c: "Disallow imbedded NUL".
                    (value.to_vec(), None)
                } else {
                    (value.to_vec(), self.getc())
                }
            }
            _ => {
                self.pos = self.buf.len();
                (data.to_vec(), None)
            }
        }
    }

    /// `CHECKNEWLINE`: an optional CR, then LF.
    fn check_newline(&mut self, ch: Ch) -> Result<(), ArgError> {
        let ch = if ch == Some(b'\r') { self.getc() } else { ch };
        if ch == Some(b'\n') {
            Ok(())
        } else {
            Err(ArgError::Extra)
        }
    }

    /// The line ends here and the message with it.
    fn at_end(&mut self, ch: Ch) -> bool {
        self.check_newline(ch).is_ok() && self.rest().is_empty()
    }
}

/// Parse one client command message the way Cyrus 3.6.1's `docmd` reads it.
/// Never panics, whatever the bytes. Bytes after the first line end that
/// ends the command (the framer never leaves any) are ignored.
pub fn parse_line(msg: &[u8]) -> Line {
    let mut r = Reader::new(msg);
    let (tag, ch) = r.getword();
    if ch != SP {
        return Line::NeedCommand;
    }
    let tag = c_str(tag).to_vec();
    let (word, ch) = r.getword();
    let word = c_str(word);
    if word.is_empty() {
        return Line::NullCommand { tag };
    }
    let verb = verb(word);
    let args = arguments(verb, &mut r, ch);
    Line::Command { tag, verb, args }
}

/// `docmd`'s switch over the case-folded command word, through the one
/// table of verbs ([`super::verbs`]).
fn verb(word: &[u8]) -> Verb {
    if let Some(v) = super::verbs::lookup(word) {
        return v;
    }
    // The cases of docmd's switch that check the login before the name.
    let needs_login = matches!(
        word.first().map(u8::to_ascii_uppercase),
        Some(b'A' | b'D' | b'F' | b'L' | b'N' | b'R' | b'U')
    );
    Verb::Unknown { needs_login }
}

/// `n` space-separated strings, each preceded by a space (`Missing` when
/// one is not), the line end after the last (`Extra` when not there).
fn fixed_strings<const N: usize>(r: &mut Reader<'_>, mut ch: Ch) -> Result<[Vec<u8>; N], ArgError> {
    let mut out: [Vec<u8>; N] = std::array::from_fn(|_| Vec::new());
    for slot in out.iter_mut() {
        if ch != SP {
            return Err(ArgError::Missing);
        }
        let (s, next) = r.getstring();
        *slot = s;
        ch = next;
    }
    r.check_newline(ch)?;
    Ok(out)
}

/// The arguments of `verb`, `ch` being the byte after the command word.
/// Unknown verbs have none to parse (`args` is then `Err(Extra)` and means
/// nothing: the session answers "Unrecognized command" or "Please login
/// first").
fn arguments(verb: Verb, r: &mut Reader<'_>, ch: Ch) -> Result<Command, ArgError> {
    match verb {
        Verb::Authenticate => {
            if ch != SP {
                return Err(ArgError::Missing);
            }
            let (mechanism, mut ch) = r.getstring();
            let mut response = None;
            if ch == SP {
                let (s, next) = r.getstring();
                response = Some(s);
                ch = next;
            }
            r.check_newline(ch)?;
            // imap/saslserver.c: "=" is an empty initial response, anything
            // else is base64.
            let initial_response = match response {
                None => None,
                Some(s) if s == b"=" => Some(Vec::new()),
                Some(s) => Some(STANDARD.decode(&s).map_err(|_| ArgError::NotBase64)?),
            };
            Ok(Command::Authenticate { mechanism, initial_response })
        }
        Verb::Activate => {
            let [name, location, acl] = fixed_strings(r, ch)?;
            Ok(Command::Activate { name, location, acl })
        }
        Verb::Reserve => {
            let [name, location] = fixed_strings(r, ch)?;
            Ok(Command::Reserve { name, location })
        }
        Verb::Deactivate => {
            let [name, location] = fixed_strings(r, ch)?;
            Ok(Command::Deactivate { name, location })
        }
        Verb::Delete => {
            let [name] = fixed_strings(r, ch)?;
            Ok(Command::Delete { name })
        }
        Verb::Find => {
            let [name] = fixed_strings(r, ch)?;
            Ok(Command::Find { name })
        }
        Verb::Compress => {
            let [algorithm] = fixed_strings(r, ch)?;
            Ok(Command::Compress { algorithm })
        }
        Verb::List => {
            let mut ch = ch;
            let mut prefix = None;
            if ch == SP {
                let (s, next) = r.getstring();
                prefix = Some(s);
                ch = next;
            }
            r.check_newline(ch)?;
            Ok(Command::List { prefix })
        }
        Verb::Update => {
            let mut ch = ch;
            let mut hosts = Vec::new();
            while ch == SP {
                let (host, next) = r.getstring();
                // Checked in this order by docmd: empty first, then count.
                if host.is_empty() {
                    return Err(ArgError::BadlyFormed);
                }
                if hosts.len() == MAX_UPDATE_HOSTS {
                    return Err(ArgError::Extra);
                }
                hosts.push(host);
                ch = next;
            }
            r.check_newline(ch)?;
            Ok(Command::Update { hosts })
        }
        Verb::Noop | Verb::Logout | Verb::Starttls => {
            r.check_newline(ch)?;
            Ok(match verb {
                Verb::Noop => Command::Noop,
                Verb::Logout => Command::Logout,
                _ => Command::Starttls,
            })
        }
        Verb::Admin(admin) => {
            let mut ch = ch;
            let mut args = Vec::new();
            while ch == SP {
                let (s, next) = r.getstring();
                args.push(s);
                ch = next;
            }
            r.check_newline(ch)?;
            Ok(Command::Admin { verb: admin, args })
        }
        Verb::Unknown { .. } => Err(ArgError::Extra),
    }
}

/// A client's answer to a SASL challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Base64 data (already decoded).
    Data(Vec<u8>),
    /// `*`: the client gives up.
    Cancel,
    /// Not base64, not a string.
    Invalid,
}

/// Parse a client's answer to `+ "..."`: a line holding base64, as an atom,
/// a quoted string or a literal; `*` cancels. An empty line is empty data.
pub fn parse_auth_answer(msg: &[u8]) -> AuthAnswer {
    let mut r = Reader::new(msg);
    let (token, ch) = match msg.first() {
        Some(b'"' | b'{') => r.getstring(),
        _ => {
            let (word, ch) = r.getword();
            (word.to_vec(), ch)
        }
    };
    if !r.at_end(ch) {
        return AuthAnswer::Invalid;
    }
    if token == b"*" {
        return AuthAnswer::Cancel;
    }
    match STANDARD.decode(&token) {
        Ok(data) => AuthAnswer::Data(data),
        Err(_) => AuthAnswer::Invalid,
    }
}

/// Why a server line could not be parsed (client side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparsable server line: {0}")]
pub struct ResponseError(pub String);

fn bad(what: &str) -> ResponseError {
    ResponseError(what.to_string())
}

/// The admin data keywords a client knows.
const DATA_KEYWORDS: [&str; 6] = ["RECORD", "CONFLICT", "GROUP", "PRIMARY", "RIGHTS", "EXPORT"];

/// A line's bytes without its line end.
pub fn line_content(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// `count` strings, each after a space, then the end of the message.
fn response_strings(
    r: &mut Reader<'_>,
    mut ch: Ch,
    count: usize,
) -> Result<Vec<Vec<u8>>, ResponseError> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if ch != SP {
            return Err(bad("missing string"));
        }
        let (s, next) = r.getstring();
        if next.is_none() {
            return Err(bad("not a string"));
        }
        out.push(s);
        ch = next;
    }
    if !r.at_end(ch) {
        return Err(bad("extra bytes at end of line"));
    }
    Ok(out)
}

/// The text of OK/NO/BAD/BYE: one string; leniently, for the unquoted texts
/// some Cyrus answers carry (`NO Client canceled authentication`), the raw
/// rest of the line.
fn response_text(r: &mut Reader<'_>, ch: Ch) -> Result<Vec<u8>, ResponseError> {
    if ch != SP {
        return Err(bad("status without text"));
    }
    let start = r.pos;
    let (s, next) = r.getstring();
    if next.is_some() && r.at_end(next) {
        return Ok(s);
    }
    r.pos = start;
    Ok(line_content(r.rest()).to_vec())
}

fn status(word: &[u8]) -> Option<Status> {
    if word.eq_ignore_ascii_case(b"OK") {
        Some(Status::Ok)
    } else if word.eq_ignore_ascii_case(b"NO") {
        Some(Status::No)
    } else if word.eq_ignore_ascii_case(b"BAD") {
        Some(Status::Bad)
    } else {
        None
    }
}

/// Parse one server message (client side: tools and tests).
///
/// Strings may be quoted or `{n}`/`{n+}` literals. A challenge's base64 is
/// decoded, so that [`Response::Challenge`] holds the raw SASL bytes on both
/// sides (the encoder writes them as base64).
pub fn parse_response(msg: &[u8]) -> Result<Response, ResponseError> {
    let mut r = Reader::new(msg);
    let (tag, ch) = r.getword();
    if tag == b"+" {
        return continuation(&mut r, ch);
    }
    if tag.is_empty() || ch != SP {
        return Err(bad("no tag"));
    }
    let tag = tag.to_vec();
    let (word, ch) = r.getword();
    if word.is_empty() {
        return Err(bad("no keyword"));
    }
    if tag == b"*" {
        if word.eq_ignore_ascii_case(b"OK") && ch == SP {
            let start = r.pos;
            let (next_word, next) = r.getword();
            if next_word.eq_ignore_ascii_case(b"MUPDATE") && next == SP {
                let [server_name, implementation, version, _role]: [Vec<u8>; 4] =
                    response_strings(&mut r, next, 4)?.try_into().map_err(|_| bad("greeting"))?;
                return Ok(Response::Greeting { server_name, implementation, version });
            }
            r.pos = start;
        }
        if let Some(status) = status(word) {
            let text = response_text(&mut r, ch)?;
            return Ok(Response::Tagged { tag, status, text });
        }
        if word.eq_ignore_ascii_case(b"BYE") {
            let text = response_text(&mut r, ch)?;
            return Ok(Response::Bye { text });
        }
        let name = word.to_vec();
        let params = if ch == SP {
            line_content(r.rest()).to_vec()
        } else if r.at_end(ch) {
            Vec::new()
        } else {
            return Err(bad("capability"));
        };
        return Ok(Response::Capability { name, params });
    }
    if let Some(status) = status(word) {
        let text = response_text(&mut r, ch)?;
        return Ok(Response::Tagged { tag, status, text });
    }
    if word.eq_ignore_ascii_case(b"MAILBOX") {
        let [name, location, acl]: [Vec<u8>; 3] =
            response_strings(&mut r, ch, 3)?.try_into().map_err(|_| bad("MAILBOX"))?;
        return Ok(Response::Entry { tag, entry: Entry::Mailbox { name, location, acl } });
    }
    if word.eq_ignore_ascii_case(b"RESERVE") {
        let [name, location]: [Vec<u8>; 2] =
            response_strings(&mut r, ch, 2)?.try_into().map_err(|_| bad("RESERVE"))?;
        return Ok(Response::Entry { tag, entry: Entry::Reserve { name, location } });
    }
    if word.eq_ignore_ascii_case(b"DELETE") {
        let [name]: [Vec<u8>; 1] =
            response_strings(&mut r, ch, 1)?.try_into().map_err(|_| bad("DELETE"))?;
        return Ok(Response::Delete { tag, name });
    }
    if let Some(keyword) = DATA_KEYWORDS.iter().find(|k| word.eq_ignore_ascii_case(k.as_bytes())) {
        let mut ch = ch;
        let mut fields = Vec::new();
        while ch == SP {
            let (s, next) = r.getstring();
            if next.is_none() {
                return Err(bad("not a string"));
            }
            fields.push(s);
            ch = next;
        }
        if !r.at_end(ch) {
            return Err(bad("extra bytes at end of line"));
        }
        return Ok(Response::Data { tag, keyword, fields });
    }
    Err(ResponseError(format!("unknown keyword {:?}", String::from_utf8_lossy(word))))
}

/// `+ go ahead` or `+ <base64 challenge>` (a string or a bare atom).
fn continuation(r: &mut Reader<'_>, ch: Ch) -> Result<Response, ResponseError> {
    if r.at_end(ch) {
        return Ok(Response::Challenge { data: Vec::new() });
    }
    if ch != SP {
        return Err(bad("continuation"));
    }
    if line_content(r.rest()).eq_ignore_ascii_case(b"go ahead") {
        return Ok(Response::GoAhead);
    }
    let (encoded, ch) = match r.rest().first() {
        Some(b'"' | b'{') => r.getstring(),
        _ => {
            let (word, ch) = r.getword();
            (word.to_vec(), ch)
        }
    };
    if !r.at_end(ch) {
        return Err(bad("challenge"));
    }
    let data = STANDARD.decode(&encoded).map_err(|_| bad("challenge is not base64"))?;
    Ok(Response::Challenge { data })
}

#[cfg(test)]
mod tests;
