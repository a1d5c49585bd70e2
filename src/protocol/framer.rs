//! Finds message boundaries in a byte stream: a message is one command (or
//! response) line, including the literals it carries. Size-capped.
//!
//! A message is a line through its line end (CRLF or a bare LF, as Cyrus's
//! `CHECKNEWLINE` accepts both), except that a line whose content ends with
//! a literal announcement `{n}` or `{n+}` goes on after the `n` literal
//! bytes that follow its line end. Literal bytes are opaque: they may hold
//! CR, LF, NUL or things that look like announcements.
//!
//! The framer does not look inside quoted strings: Cyrus's
//! `imapparse.c: getxstring` lets a backslash escape a line end inside a
//! quoted string, so it would read `"a\<LF>b"` as one string; here the LF
//! ends the message and the parser then sees an unterminated string. No
//! client writes that (line ends travel in literals), and reading on would
//! need the whole parser in the framer.

/// Caps on what one peer may make us buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest run of non-literal bytes on one line (tag, words, quoted
    /// strings), line end included.
    pub max_line: usize,
    /// Largest literal a peer may announce.
    pub max_literal: usize,
    /// Largest whole message (lines plus literals).
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Cyrus's own maxword/maxquoted are 128 KiB; ACLs of big shared
        // folders stay far below 1 MiB.
        Limits { max_line: 64 * 1024, max_literal: 1024 * 1024, max_message: 1024 * 1024 }
    }
}

/// What the framer found in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The first `len` bytes of the buffer are one whole message (its final
    /// line end included).
    Message(usize),
    /// More bytes are needed. `go_ahead` is true exactly once per
    /// synchronising literal `{n}`: the server must now send `+ go ahead`.
    ///
    /// Like Cyrus (`imapparse.c: getxstring` answers every `{n}` it reads),
    /// the framer reports the go-ahead as soon as it has seen the
    /// announcement's line end, even when the literal bytes are already
    /// buffered (a client that did not wait). So after
    /// `NeedMore { go_ahead: true }` the caller sends `+ go ahead` and calls
    /// [`Framer::decode`] again at once, before waiting for input.
    /// `NeedMore { go_ahead: false }` means: wait for more bytes.
    /// A client reading server responses ignores `go_ahead`.
    NeedMore {
        /// A synchronising literal was just announced: send `+ go ahead`
        /// before waiting for its bytes.
        go_ahead: bool,
    },
}

/// Why a stream cannot be framed; the connection is closed after a BYE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More than `max_line` non-literal bytes without a line end.
    #[error("line too long")]
    LineTooLong,
    /// A literal announcement over `max_literal` (or beyond any number).
    #[error("literal too large")]
    LiteralTooLarge,
    /// The message would grow beyond `max_message`.
    #[error("message too large")]
    MessageTooLarge,
}

/// Where the framer is inside the current message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Reading line bytes, looking for the line end.
    #[default]
    Line,
    /// Skipping literal bytes; the literal ends at this buffer offset.
    Literal { end: usize },
}

/// Incremental framer: call [`Framer::decode`] with the whole unconsumed
/// buffer each time bytes arrive; after `Message(len)` the caller removes
/// `len` bytes and calls again (the framer resets itself).
///
/// The framer remembers how far it has scanned, so a message arriving in
/// many small pieces is scanned once (linear time). The caller must pass the
/// same buffer, grown at its end, until a `Message` or an error; a buffer
/// shorter than what was already scanned makes the framer start over.
#[derive(Debug, Default)]
pub struct Framer {
    limits: Limits,
    /// Offset up to which the current message has been scanned.
    pos: usize,
    /// Start of the current run of non-literal bytes (message start, or the
    /// byte after the last literal).
    seg_start: usize,
    state: State,
}

impl Framer {
    /// A framer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Framer { limits, pos: 0, seg_start: 0, state: State::Line }
    }

    /// The limits this framer enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Forget the message in progress (also done after each `Message`).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.seg_start = 0;
        self.state = State::Line;
    }

    /// Look for the end of the message that starts at `buf[0]`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Decoded, FrameError> {
        if buf.len() < self.pos {
            self.reset();
        }
        loop {
            match self.state {
                State::Literal { end } => {
                    if buf.len() < end {
                        return Ok(Decoded::NeedMore { go_ahead: false });
                    }
                    self.pos = end;
                    self.seg_start = end;
                    self.state = State::Line;
                }
                State::Line => {
                    // Look at no byte past the first one that breaks a
                    // limit, so the error does not depend on how the bytes
                    // were split: byte `line_limit - 1` without a line end
                    // before it makes the line too long, byte `max_message`
                    // makes the message too large (the earlier wins; on a
                    // tie, the line).
                    let line_limit = self.seg_start.saturating_add(self.limits.max_line);
                    let msg_limit = self.limits.max_message.saturating_add(1);
                    let window_end = buf.len().min(line_limit).min(msg_limit);
                    let from = self.pos.min(window_end);
                    let Some(i) = buf[from..window_end].iter().position(|&b| b == b'\n') else {
                        self.pos = window_end;
                        if window_end == line_limit && line_limit <= msg_limit {
                            return Err(FrameError::LineTooLong);
                        }
                        if window_end == msg_limit {
                            return Err(FrameError::MessageTooLarge);
                        }
                        return Ok(Decoded::NeedMore { go_ahead: false });
                    };
                    let lf = from + i;
                    let line_end = lf + 1;
                    if line_end > self.limits.max_message {
                        return Err(FrameError::MessageTooLarge);
                    }
                    let mut content_end = lf;
                    if content_end > self.seg_start && buf[content_end - 1] == b'\r' {
                        content_end -= 1;
                    }
                    match literal_announcement(&buf[self.seg_start..content_end]) {
                        None => {
                            self.reset();
                            return Ok(Decoded::Message(line_end));
                        }
                        Some(announced) => {
                            let (n, synchronising) =
                                announced.ok_or(FrameError::LiteralTooLarge)?;
                            if n > self.limits.max_literal {
                                return Err(FrameError::LiteralTooLarge);
                            }
                            let end = line_end
                                .checked_add(n)
                                .filter(|&end| end <= self.limits.max_message)
                                .ok_or(FrameError::MessageTooLarge)?;
                            self.state = State::Literal { end };
                            self.pos = line_end;
                            if synchronising {
                                return Ok(Decoded::NeedMore { go_ahead: true });
                            }
                        }
                    }
                }
            }
        }
    }
}

/// If a line's content (line end removed) ends with `{n}` or `{n+}`, the
/// literal's size (None when it does not fit a usize) and whether it is
/// synchronising (`{n}`).
fn literal_announcement(content: &[u8]) -> Option<Option<(usize, bool)>> {
    let rest = content.strip_suffix(b"}")?;
    let (rest, synchronising) = match rest.strip_suffix(b"+") {
        Some(rest) => (rest, false),
        None => (rest, true),
    };
    let digits_start = rest.iter().rposition(|b| !b.is_ascii_digit()).map_or(0, |i| i + 1);
    let digits = &rest[digits_start..];
    if digits.is_empty() || rest[..digits_start].last() != Some(&b'{') {
        return None;
    }
    let n = digits
        .iter()
        .try_fold(0usize, |n, &d| n.checked_mul(10)?.checked_add(usize::from(d - b'0')));
    Some(n.map(|n| (n, synchronising)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode until a message, an error, or a plain NeedMore; count the
    /// go-aheads seen on the way.
    fn run(f: &mut Framer, buf: &[u8]) -> Outcome {
        let mut go_aheads = 0;
        for _ in 0..=buf.len() + 1 {
            match f.decode(buf) {
                Ok(Decoded::Message(n)) => return (go_aheads, Ok(Some(n))),
                Ok(Decoded::NeedMore { go_ahead: true }) => go_aheads += 1,
                Ok(Decoded::NeedMore { go_ahead: false }) => return (go_aheads, Ok(None)),
                Err(e) => return (go_aheads, Err(e)),
            }
        }
        panic!("framer reports go-aheads forever");
    }

    const SMALL: Limits = Limits { max_line: 40, max_literal: 30, max_message: 80 };

    /// What [`run`] reports: go-aheads seen, then a message length, a wait
    /// for more (None) or an error.
    type Outcome = (usize, Result<Option<usize>, FrameError>);

    /// One case: input, limits, expected go-aheads and result.
    type Case = (&'static [u8], Limits, usize, Result<Option<usize>, FrameError>);

    /// (input, limits, expected go-aheads, expected outcome)
    fn table() -> Vec<Case> {
        let d = Limits::default();
        vec![
            (b"", d, 0, Ok(None)),
            (b"A01 NOOP\r\n", d, 0, Ok(Some(10))),
            (b"A01 NOOP\n", d, 0, Ok(Some(9))),
            (b"\r\n", d, 0, Ok(Some(2))),
            (b"\n", d, 0, Ok(Some(1))),
            (b"A01 NOOP\r\nB02 NOOP\r\n", d, 0, Ok(Some(10))),
            (b"A01 NOOP", d, 0, Ok(None)),
            (b"A01 NOOP\r", d, 0, Ok(None)),
            (
                b"X1 ACTIVATE {10+}\r\nuser.alice {23+}\r\n127.0.0.1:14101!default {21+}\r\nalice\tlrswipkxtecdan\t\r\n",
                d,
                0,
                Ok(Some(91)),
            ),
            // Synchronising literals: one go-ahead each.
            (b"A FIND {3}\r\nabc\r\n", d, 1, Ok(Some(17))),
            (b"A ACTIVATE {1}\r\na {1}\r\nb {1}\r\nc\r\nNEXT\r\n", d, 3, Ok(Some(33))),
            // Literal data holding CRLF and an announcement.
            (b"A FIND {5+}\r\n{3}\r\n\r\n", d, 0, Ok(Some(20))),
            (b"A FIND {9}\r\na\r\nb{3}\r\n\r\n", d, 1, Ok(Some(23))),
            // Bare LF after the announcement and at the end.
            (b"A FIND {2+}\nab\n", d, 0, Ok(Some(15))),
            // Empty literal.
            (b"A ACTIVATE \"a\" \"b\" {0+}\r\n\r\n", d, 0, Ok(Some(27))),
            // Not announcements.
            (b"A FIND {}\r\n", d, 0, Ok(Some(11))),
            (b"A FIND {+}\r\n", d, 0, Ok(Some(12))),
            (b"A FIND {3}x\r\n", d, 0, Ok(Some(13))),
            (b"A FIND {3} \r\n", d, 0, Ok(Some(13))),
            (b"A FIND 3}\r\n", d, 0, Ok(Some(11))),
            (b"A FIND {-3}\r\n", d, 0, Ok(Some(13))),
            (b"A FIND {3}\r\r\n", d, 0, Ok(Some(13))),
            // Incomplete literal.
            (b"A FIND {10+}\r\nabc", d, 0, Ok(None)),
            // Limits.
            (b"A234567890123456789012345678901234567890123", SMALL, 0, Err(FrameError::LineTooLong)),
            (b"A23456789012345678901234567890123456789\n", SMALL, 0, Ok(Some(40))),
            (b"A234567890123456789012345678901234567890\n", SMALL, 0, Err(FrameError::LineTooLong)),
            (b"A FIND {31+}\r\n", SMALL, 0, Err(FrameError::LiteralTooLarge)),
            (b"A FIND {30+}\r\n", SMALL, 0, Ok(None)),
            (b"A FIND {1073741824+}\r\n", d, 0, Err(FrameError::LiteralTooLarge)),
            (b"A FIND {99999999999999999999999999}\r\n", d, 0, Err(FrameError::LiteralTooLarge)),
            (
                b"A FIND {30+}\r\n012345678901234567890123456789 {30+}\r\n",
                SMALL,
                0,
                Err(FrameError::MessageTooLarge),
            ),
            (
                b"A FIND {30+}\r\n012345678901234567890123456789 {26+}\r\n01234567890123456789012345\r\n",
                SMALL,
                0,
                Ok(Some(80)),
            ),
            (
                b"A FIND {30+}\r\n012345678901234567890123456789 {26+}\r\n01234567890123456789012345 \r\n",
                SMALL,
                0,
                Err(FrameError::MessageTooLarge),
            ),
            // Line length counts from the end of the last literal.
            (
                b"A FIND {30+}\r\n012345678901234567890123456789 23456789012345678901234567890123456789012\r\n",
                SMALL,
                0,
                Err(FrameError::MessageTooLarge),
            ),
            (
                b"A FIND {30+}\r\n012345678901234567890123456789 23456789012345678901234567890123456789012\r\n",
                Limits { max_message: 200, ..SMALL },
                0,
                Err(FrameError::LineTooLong),
            ),
        ]
    }

    #[test]
    fn table_split_at_every_offset() {
        for (input, limits, go_aheads, outcome) in table() {
            let mut whole = Framer::new(limits);
            assert_eq!(
                run(&mut whole, input),
                (go_aheads, outcome.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            for k in 0..=input.len() {
                let mut f = Framer::new(limits);
                let (g1, r1) = run(&mut f, &input[..k]);
                let (g, r) = match r1 {
                    Ok(None) => {
                        let (g2, r2) = run(&mut f, input);
                        (g1 + g2, r2)
                    }
                    done => (g1, done),
                };
                assert_eq!(
                    (g, r),
                    (go_aheads, outcome.clone()),
                    "{:?} split at {k}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn resets_after_message() {
        let mut f = Framer::new(Limits::default());
        let mut buf = b"A FIND {3}\r\nabc\r\nB NOOP\n".to_vec();
        assert_eq!(f.decode(&buf), Ok(Decoded::NeedMore { go_ahead: true }));
        assert_eq!(f.decode(&buf), Ok(Decoded::Message(17)));
        buf.drain(..17);
        assert_eq!(f.decode(&buf), Ok(Decoded::Message(7)));
        buf.drain(..7);
        assert_eq!(f.decode(&buf), Ok(Decoded::NeedMore { go_ahead: false }));
    }

    #[test]
    fn literal_announced_before_any_data() {
        let mut f = Framer::new(Limits::default());
        assert_eq!(f.decode(b"A FIND {1073741824+}\r"), Ok(Decoded::NeedMore { go_ahead: false }));
        assert_eq!(f.decode(b"A FIND {1073741824+}\r\n"), Err(FrameError::LiteralTooLarge));
    }

    #[test]
    fn large_literal_in_one_byte_pieces_is_linear() {
        let limits = Limits { max_line: 1024, max_literal: 1 << 20, max_message: 2 << 20 };
        let mut msg = b"A FIND {1048576+}\r\n".to_vec();
        msg.extend(std::iter::repeat_n(b'\n', 1 << 20));
        msg.extend_from_slice(b"\r\n");
        let mut f = Framer::new(limits);
        let start = std::time::Instant::now();
        for k in 1..msg.len() {
            assert_eq!(f.decode(&msg[..k]), Ok(Decoded::NeedMore { go_ahead: false }));
        }
        assert_eq!(f.decode(&msg), Ok(Decoded::Message(msg.len())));
        // Quadratic rescanning would take minutes.
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn long_line_is_refused_without_buffering_it() {
        let mut f = Framer::new(SMALL);
        let long = [b'a'; 1000];
        assert_eq!(f.decode(&long), Err(FrameError::LineTooLong));
        // Even when a line end follows far away.
        let mut f = Framer::new(SMALL);
        let mut line = vec![b'a'; 1000];
        line.push(b'\n');
        assert_eq!(f.decode(&line), Err(FrameError::LineTooLong));
    }

    #[test]
    fn shrunk_buffer_starts_over() {
        let mut f = Framer::new(Limits::default());
        assert_eq!(f.decode(b"A FIND {3}\r\nab"), Ok(Decoded::NeedMore { go_ahead: true }));
        assert_eq!(f.decode(b"B NOOP\r\n"), Ok(Decoded::Message(8)));
    }
}
