//! A connection: bytes in through the framer, responses out through a
//! buffer whose every write is bounded in time.

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
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer stopped reading for {0:?}")]
    WriteTimeout(Duration),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

pub struct Connection<R, W> {
    reader: R,
    writer: W,
    input: BytesMut,
    framer: Framer,
    out: Vec<u8>,
    write_timeout: Duration,
    go_ahead_pending: bool,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    pub fn new(reader: R, writer: W, limits: Limits, write_timeout: Duration) -> Self {
        Connection {
            reader,
            writer,
            input: BytesMut::with_capacity(READ_CHUNK),
            framer: Framer::new(limits),
            out: Vec::with_capacity(4096),
            write_timeout,
            go_ahead_pending: false,
        }
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
        let n = self.reader.read_buf(&mut self.input).await?;
        Ok(n > 0)
    }

    /// Bytes received but not yet framed (a half message at EOF).
    pub fn has_partial_input(&self) -> bool {
        !self.input.is_empty()
    }

    /// Queue a response; sends when enough is buffered.
    pub async fn send(&mut self, r: &Response) -> Result<(), ConnError> {
        encode::response(r, &mut self.out);
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
        let out = std::mem::take(&mut self.out);
        let write = async {
            self.writer.write_all(&out).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(r) => r?,
            Err(_) => return Err(ConnError::WriteTimeout(self.write_timeout)),
        }
        self.out = out;
        self.out.clear();
        if self.out.capacity() > 4 * OUT_CHUNK {
            self.out.shrink_to(4096);
        }
        Ok(())
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
            let _ = self.writer.shutdown().await;
        })
        .await;
        let mut sink = [0u8; 8192];
        let mut budget = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while budget > 0 {
                match self.reader.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => budget = budget.saturating_sub(n),
                }
            }
        })
        .await;
    }
}
