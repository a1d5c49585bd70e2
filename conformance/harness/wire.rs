//! The string syntax IMAP and MUPDATE share: atoms, quoted strings,
//! `{n}` / `{n+}` literals, parenthesised lists. Just enough to read what
//! servers send back; deliberately independent of the crate's own parser.

use std::io::{self, BufRead, Read};

/// Largest logical line (literals included) the test clients accept.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Atom(String),
    /// A quoted string or a literal.
    Str(String),
    List(Vec<Token>),
}

impl Token {
    /// The text of an atom or string; `None` for a list.
    pub fn text(&self) -> Option<&str> {
        match self {
            Token::Atom(s) | Token::Str(s) => Some(s),
            Token::List(_) => None,
        }
    }
}

/// Reads one logical line: a CRLF (or bare LF) terminated line, and when it
/// ends in a literal announcement `{n}`/`{n+}`, the n bytes and the rest of
/// the line after them, again and again. The result keeps the `{n}\r\n`
/// markers (so [`tokenize`] can find the literals) and drops the final CRLF.
pub fn read_logical_line(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let mut segment = Vec::new();
        let budget = (MAX_LINE.saturating_sub(line.len()) + 2) as u64;
        let n = reader
            .by_ref()
            .take(budget)
            .read_until(b'\n', &mut segment)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        if segment.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "line too long or truncated",
            ));
        }
        segment.pop();
        if segment.last() == Some(&b'\r') {
            segment.pop();
        }
        let literal = literal_announcement(&segment);
        line.extend_from_slice(&segment);
        match literal {
            None => return Ok(line),
            Some(len) => {
                if line.len() + len > MAX_LINE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "literal too long",
                    ));
                }
                let mut bytes = vec![0; len];
                reader.read_exact(&mut bytes)?;
                line.extend_from_slice(b"\r\n");
                line.extend_from_slice(&bytes);
            }
        }
    }
}

/// `Some(n)` if `segment` ends in `{n}` or `{n+}`.
fn literal_announcement(segment: &[u8]) -> Option<usize> {
    let body = segment.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Splits a logical line (from [`read_logical_line`]) into tokens.
pub fn tokenize(line: &[u8]) -> Result<Vec<Token>, String> {
    let mut p = Tokenizer { buf: line, pos: 0 };
    let tokens = p.items(false)?;
    Ok(tokens)
}

struct Tokenizer<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Tokenizer<'_> {
    fn items(&mut self, in_list: bool) -> Result<Vec<Token>, String> {
        let mut out = Vec::new();
        loop {
            while self.buf.get(self.pos) == Some(&b' ') {
                self.pos += 1;
            }
            let Some(&c) = self.buf.get(self.pos) else {
                return if in_list {
                    Err("unterminated list".into())
                } else {
                    Ok(out)
                };
            };
            match c {
                b')' if in_list => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'(' => {
                    self.pos += 1;
                    out.push(Token::List(self.items(true)?));
                }
                b'"' => out.push(Token::Str(self.quoted()?)),
                b'{' => out.push(Token::Str(self.literal()?)),
                _ => {
                    let start = self.pos;
                    while let Some(&b) = self.buf.get(self.pos) {
                        if b == b' ' || b == b'(' || b == b')' {
                            break;
                        }
                        self.pos += 1;
                    }
                    out.push(Token::Atom(
                        String::from_utf8_lossy(&self.buf[start..self.pos]).into_owned(),
                    ));
                }
            }
        }
    }

    fn quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut s = Vec::new();
        loop {
            match self.buf.get(self.pos) {
                None => return Err("unterminated quoted string".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&s).into_owned());
                }
                Some(b'\\') => {
                    let &escaped = self.buf.get(self.pos + 1).ok_or("dangling backslash")?;
                    s.push(escaped);
                    self.pos += 2;
                }
                Some(&b) => {
                    s.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<String, String> {
        let close = self.buf[self.pos..]
            .iter()
            .position(|&b| b == b'}')
            .ok_or("unterminated literal length")?;
        let spec = &self.buf[self.pos + 1..self.pos + close];
        let spec = spec.strip_suffix(b"+").unwrap_or(spec);
        let len: usize = std::str::from_utf8(spec)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad literal length {:?}", String::from_utf8_lossy(spec)))?;
        self.pos += close + 1;
        if self.buf.get(self.pos..self.pos + 2) != Some(b"\r\n") {
            return Err("literal length not followed by CRLF".into());
        }
        self.pos += 2;
        let bytes = self
            .buf
            .get(self.pos..self.pos + len)
            .ok_or("literal shorter than announced")?;
        self.pos += len;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// An IMAP/MUPDATE quoted string (backslash-escaping `\` and `"`).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A non-synchronising literal, the way Cyrus' MUPDATE clients send every argument.
pub fn literal_plus(s: &str) -> String {
    format!("{{{}+}}\r\n{s}", s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_quoted_and_lists() {
        let mut input: &[u8] =
            b"X1 MAILBOX {6+}\r\nuser.a {9}\r\nh!default \"a\\\"\tlr\t\"\r\nnext\r\n";
        let line = read_logical_line(&mut input).unwrap();
        let toks = tokenize(&line).unwrap();
        assert_eq!(
            toks,
            vec![
                Token::Atom("X1".into()),
                Token::Atom("MAILBOX".into()),
                Token::Str("user.a".into()),
                Token::Str("h!default".into()),
                Token::Str("a\"\tlr\t".into()),
            ]
        );
        assert_eq!(read_logical_line(&mut input).unwrap(), b"next");
        let toks = tokenize(b"* LIST (\\HasNoChildren) \".\" {10}\r\nshared.o a").unwrap();
        assert_eq!(
            toks[2],
            Token::List(vec![Token::Atom("\\HasNoChildren".into())])
        );
        assert_eq!(toks[4], Token::Str("shared.o a".into()));
    }

    #[test]
    fn literal_content_that_looks_like_an_announcement() {
        let mut input: &[u8] = b"A {4}\r\nx{3}\r\n";
        let line = read_logical_line(&mut input).unwrap();
        assert_eq!(tokenize(&line).unwrap()[1], Token::Str("x{3}".into()));
    }
}
