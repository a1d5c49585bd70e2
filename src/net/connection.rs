//! A connection: bytes in through the framer, responses out through an
//! [`Output`] buffer whose every write is bounded in time.
//!
//! The connection owns its stream whole (no split halves, no lock between
//! them): reads and writes never overlap, since a session reads only
//! between commands and handlers only write. [`Connection::into_stream`]
//! hands the stream back for an upgrade (STARTTLS), dropping any input
//! pipelined after the command that asked for it, as Cyrus does.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{encode, Decoded, FrameError, Framer, Limits, Response};

/// Output is sent once this much is buffered (and at the end of every command).
const OUT_CHUNK: usize = 64 * 1024;
/// How long and how much a closing connection drains from its peer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A write did not complete within `write_timeout`.
    #[error("peer stopped reading for {0:?}")]
    WriteTimeout(Duration),
    /// The input broke a framing rule or limit.
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// One peer's byte stream, framed on the way in, buffered on the way out.
pub struct Connection<S> {
    stream: S,
    input: BytesMut,
    framer: Framer,
    out: Vec<u8>,
    write_timeout: Duration,
    go_ahead_pending: bool,
}

/// Where a command's answers go: responses are encoded into the
/// connection's buffer and written out whenever 64 KiB are queued, so a
/// LIST of millions of entries streams in bounded memory. What is still
/// queued when a command ends is flushed by the session.
pub struct Output<'a, S> {
    stream: &'a mut S,
    out: &'a mut Vec<u8>,
    write_timeout: Duration,
}

impl<S: AsyncWrite + Unpin> Output<'_, S> {
    /// Queue a response; sends when enough is buffered.
    pub async fn send(&mut self, r: &Response) -> Result<(), ConnError> {
        encode::response(r, self.out);
        if self.out.len() >= OUT_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Queue one bare line (`line` + CRLF): a SASL challenge as Cyrus's
    /// master sends it, base64 with no `+ ` (`imap/mupdate.c:
    /// cmd_authenticate` passes an empty continuation to `saslserver`).
    pub async fn send_line(&mut self, line: &[u8]) -> Result<(), ConnError> {
        self.out.extend_from_slice(line);
        self.out.extend_from_slice(b"\r\n");
        if self.out.len() >= OUT_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// Send everything queued, or fail if the peer stalls.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Taken while written: a write that fails or is cancelled halfway
        // is not sent again from its start by a closing BYE.
        let out = std::mem::take(self.out);
        let stream = &mut *self.stream;
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnError::WriteTimeout(self.write_timeout)),
        }
        *self.out = out;
        self.out.clear();
        if self.out.capacity() > 4 * OUT_CHUNK {
            self.out.shrink_to(4096);
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection over `stream`, framing with `limits`.
    pub fn new(stream: S, limits: Limits, write_timeout: Duration) -> Self {
        Connection {
            stream,
            input: BytesMut::with_capacity(READ_CHUNK),
            framer: Framer::new(limits),
            out: Vec::with_capacity(4096),
            write_timeout,
            go_ahead_pending: false,
        }
    }

    /// The sink a command writes its answers to.
    pub fn output(&mut self) -> Output<'_, S> {
        Output { stream: &mut self.stream, out: &mut self.out, write_timeout: self.write_timeout }
    }

    /// Enforce other limits from the next message on (at login). Only
    /// between messages: the framer holds no state then.
    pub fn set_limits(&mut self, limits: Limits) {
        self.framer = Framer::new(limits);
    }

    /// A whole message already buffered, if any. Never waits.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.input.is_empty() {
            return Ok(None);
        }
        match self.framer.decode(&self.input)? {
            Decoded::Message(len) => Ok(Some(self.input.split_to(len).freeze())),
            Decoded::NeedMore { go_ahead } => {
                self.go_ahead_pending |= go_ahead;
                Ok(None)
            }
        }
    }

    /// Send `+ go ahead` if a synchronising literal is waiting for it.
    /// Returns true when it did: the caller must then look for a whole
    /// message again before reading (the literal may be buffered already).
    pub async fn answer_literal(&mut self) -> Result<bool, ConnError> {
        if std::mem::take(&mut self.go_ahead_pending) {
            self.send(&Response::GoAhead).await?;
            self.flush().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Read more bytes; `Ok(false)` at end of stream. Cancel-safe.
    pub async fn read_more(&mut self) -> Result<bool, ConnError> {
        if self.input.capacity() - self.input.len() < READ_CHUNK / 2 {
            self.input.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.input).await {
            Ok(n) => Ok(n > 0),
            // A TLS peer that closes without close_notify (Cyrus never
            // sends one): an ordinary close, not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes received but not yet framed (a half message at EOF).
    pub fn has_partial_input(&self) -> bool {
        !self.input.is_empty()
    }

    /// Queue a response; sends when enough is buffered.
    pub async fn send(&mut self, r: &Response) -> Result<(), ConnError> {
        self.output().send(r).await
    }

    /// Send everything queued, or fail if the peer stalls.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        self.output().flush().await
    }

    /// The stream itself, for an upgrade: what is queued must have been
    /// flushed; input received but not yet read as a command is dropped
    /// (`imap/mupdate.c: docmd` discards what a client pipelines after
    /// STARTTLS, which would otherwise pass as if it came over TLS).
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// Best effort: send what is queued and a last line, then close. The
    /// peer may still be sending (an oversized line): its bytes are read
    /// and dropped for a moment, so that closing with unread input does
    /// not reset the connection before the peer has read our last line.
    pub async fn close_with(&mut self, last: Option<&Response>) {
        if let Some(r) = last {
            encode::response(r, &mut self.out);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
        let mut sink = [0u8; 8192];
        let mut budget = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while budget > 0 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => budget = budget.saturating_sub(n),
                }
            }
        })
        .await;
    }
}
