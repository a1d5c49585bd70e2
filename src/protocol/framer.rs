//! Finds message boundaries in a byte stream: a message is one command (or
//! response) line, including the literals it carries. Size-capped.
//! (stub: to be implemented)

/// Caps on what one peer may make us buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest run of non-literal bytes on one line (tag, words, quoted strings).
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
    NeedMore { go_ahead: bool },
}

/// Why a stream cannot be framed; the connection is closed after a BYE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("line too long")]
    LineTooLong,
    #[error("literal too large")]
    LiteralTooLarge,
    #[error("message too large")]
    MessageTooLarge,
}

/// Incremental framer: call [`Framer::decode`] with the whole unconsumed
/// buffer each time bytes arrive; after `Message(len)` the caller removes
/// `len` bytes and calls again (the framer resets itself).
#[derive(Debug, Default)]
pub struct Framer {
    limits: Limits,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Framer { limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn decode(&mut self, _buf: &[u8]) -> Result<Decoded, FrameError> {
        todo!()
    }
}
