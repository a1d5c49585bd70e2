//! A MUPDATE client for the tools (mupdatectl, bench, replay) and tests.
//! Talks to any MUPDATE server, Cyrus's included, over TCP
//! ([`Client::connect`]) or any byte stream ([`Client::over`], e.g. one
//! end of a `tokio::io::duplex` whose other end a session serves).

use std::time::Duration;

use base64::Engine;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::{encode, parse, Command, Decoded, Entry, Framer, Limits, Response, Status};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// No answer (or no room to send) within the client's timeout.
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server sent something that is not MUPDATE.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server answered NO or BAD (or BYE, as `No`), with its text.
    #[error("{status:?} \"{text}\"")]
    Refused {
        /// The status word.
        status: Status,
        /// The server's text.
        text: String,
    },
}

/// The greeting: capability lines, then the `* OK MUPDATE` line.
#[derive(Debug, Clone, Default)]
pub struct Greeting {
    /// Each capability line: its name and its parameters as sent.
    pub capabilities: Vec<(String, String)>,
    /// The server name of the `* OK MUPDATE` line.
    pub server_name: String,
    /// The implementation name (`mupdated`, or Cyrus's).
    pub implementation: String,
    /// The implementation's version.
    pub version: String,
}

impl Greeting {
    /// Did the server announce this capability (any case)?
    pub fn has(&self, name: &str) -> bool {
        self.capabilities.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// A client connection over the stream `S` (TCP unless said otherwise).
pub struct Client<S = TcpStream> {
    stream: S,
    input: BytesMut,
    framer: Framer,
    next_tag: u64,
    timeout: Duration,
    /// Send string arguments as `{n+}` literals, as Cyrus clients do.
    pub literal_plus: bool,
}

impl Client<TcpStream> {
    /// Connect and read the greeting.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<(Client, Greeting), ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)??;
        let _ = stream.set_nodelay(true);
        Client::over(stream, timeout).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client over a stream whose greeting was read already (a stream
    /// moved from one wrapper to another).
    pub fn over_connected(stream: S, timeout: Duration) -> Client<S> {
        let limits = Limits { max_line: 1 << 20, max_literal: 64 << 20, max_message: 64 << 20 };
        Client {
            stream,
            input: BytesMut::with_capacity(16 * 1024),
            framer: Framer::new(limits),
            next_tag: 1,
            timeout,
            literal_plus: true,
        }
    }

    /// Read the greeting over an already connected stream.
    pub async fn over(stream: S, timeout: Duration) -> Result<(Client<S>, Greeting), ClientError> {
        let mut c = Client::over_connected(stream, timeout);
        let mut greeting = Greeting::default();
        loop {
            match c.read_response().await? {
                Response::Capability { name, params } => greeting
                    .capabilities
                    .push((String::from_utf8_lossy(&name).into(), String::from_utf8_lossy(&params).into())),
                Response::Greeting { server_name, implementation, version } => {
                    greeting.server_name = String::from_utf8_lossy(&server_name).into();
                    greeting.implementation = String::from_utf8_lossy(&implementation).into();
                    greeting.version = String::from_utf8_lossy(&version).into();
                    return Ok((c, greeting));
                }
                Response::Bye { text } => {
                    return Err(ClientError::Refused { status: Status::No, text: String::from_utf8_lossy(&text).into() })
                }
                other => return Err(ClientError::Protocol(format!("unexpected in greeting: {other:?}"))),
            }
        }
    }

    /// Read one server message.
    pub async fn read_response(&mut self) -> Result<Response, ClientError> {
        let msg = self.read_message().await?;
        parse::parse_response(&msg).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Send raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes)).await.map_err(|_| ClientError::Timeout)??;
        Ok(())
    }

    fn tag(&mut self) -> Vec<u8> {
        let t = format!("T{}", self.next_tag);
        self.next_tag += 1;
        t.into_bytes()
    }

    /// Send a command with a fresh tag; return the tag.
    pub async fn send(&mut self, cmd: &Command) -> Result<Vec<u8>, ClientError> {
        let tag = self.tag();
        let mut out = Vec::new();
        encode::command(&tag, cmd, self.literal_plus, &mut out);
        self.send_raw(&out).await?;
        Ok(tag)
    }

    /// Run a command: the untagged/data lines, then its completion.
    /// Any OK/NO/BAD ends it, as in Cyrus's client.
    pub async fn run(&mut self, cmd: &Command) -> Result<(Vec<Response>, Status, String), ClientError> {
        self.send(cmd).await?;
        let mut data = Vec::new();
        loop {
            match self.read_response().await? {
                Response::Tagged { status, text, .. } => return Ok((data, status, String::from_utf8_lossy(&text).into())),
                Response::Bye { text } => {
                    return Err(ClientError::Refused { status: Status::No, text: String::from_utf8_lossy(&text).into() })
                }
                other => data.push(other),
            }
        }
    }

    /// Run a command and count its MAILBOX/RESERVE lines without parsing
    /// them (benchmarks of LIST and UPDATE dumps, where a full parse of
    /// millions of lines would measure the client, not the server). Each
    /// message is still framed, literals included.
    pub async fn run_counting(&mut self, cmd: &Command) -> Result<(usize, Status, String), ClientError> {
        self.send(cmd).await?;
        let mut entries = 0;
        loop {
            let msg = self.read_message().await?;
            let word = msg.iter().position(|&b| b == b' ').map(|i| &msg[i + 1..]).unwrap_or(&[]);
            if word.starts_with(b"MAILBOX ") || word.starts_with(b"RESERVE ") {
                entries += 1;
                continue;
            }
            match parse::parse_response(&msg).map_err(|e| ClientError::Protocol(e.to_string()))? {
                Response::Tagged { status, text, .. } => return Ok((entries, status, String::from_utf8_lossy(&text).into())),
                Response::Bye { text } => {
                    return Err(ClientError::Refused { status: Status::No, text: String::from_utf8_lossy(&text).into() })
                }
                _ => {}
            }
        }
    }

    /// Read one whole server message, unparsed.
    pub async fn read_message(&mut self) -> Result<bytes::BytesMut, ClientError> {
        loop {
            if !self.input.is_empty() {
                loop {
                    match self.framer.decode(&self.input).map_err(|e| ClientError::Protocol(e.to_string()))? {
                        Decoded::Message(n) => return Ok(self.input.split_to(n)),
                        Decoded::NeedMore { go_ahead: true } => continue,
                        Decoded::NeedMore { go_ahead: false } => break,
                    }
                }
            }
            let n = tokio::time::timeout(self.timeout, self.stream.read_buf(&mut self.input))
                .await
                .map_err(|_| ClientError::Timeout)??;
            if n == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Run a command that must end in OK.
    pub async fn run_ok(&mut self, cmd: &Command) -> Result<Vec<Response>, ClientError> {
        let (data, status, text) = self.run(cmd).await?;
        if status != Status::Ok {
            return Err(ClientError::Refused { status, text });
        }
        Ok(data)
    }

    /// AUTHENTICATE "PLAIN" with an initial response, as Cyrus does.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        let response = format!("{user}\0{user}\0{password}").into_bytes();
        self.run_ok(&Command::Authenticate { mechanism: b"PLAIN".to_vec(), initial_response: Some(response) }).await?;
        Ok(())
    }

    /// Log in with the best mechanism the greeting offers: SCRAM-SHA-256,
    /// then SCRAM-SHA-1, else PLAIN (as a Cyrus client would choose, less
    /// the mechanisms this client lacks). Returns the mechanism used.
    pub async fn login(&mut self, greeting: &Greeting, user: &str, password: &str) -> Result<&'static str, ClientError> {
        use crate::auth::scram::ScramHash;
        let offered = |m: &str| {
            greeting.capabilities.iter().any(|(n, p)| {
                n.eq_ignore_ascii_case("AUTH")
                    && p.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).any(|w| w.eq_ignore_ascii_case(m))
            })
        };
        for hash in [ScramHash::Sha256, ScramHash::Sha1] {
            if offered(hash.mechanism()) {
                self.authenticate_scram(hash, user, None, password).await?;
                return Ok(hash.mechanism());
            }
        }
        self.authenticate(user, password).await?;
        Ok("PLAIN")
    }

    /// AUTHENTICATE with SCRAM: the client-first message as the initial
    /// response, the client-final one as a bare base64 line, the empty line
    /// after the server-final message (as Cyrus's client does); the
    /// server's signature is checked before the OK is accepted.
    pub async fn authenticate_scram(
        &mut self,
        hash: crate::auth::scram::ScramHash,
        user: &str,
        authzid: Option<&str>,
        password: &str,
    ) -> Result<(), ClientError> {
        let (mut exchange, first) = crate::auth::scram::ClientExchange::new(hash, user, authzid, password.as_bytes());
        let mechanism = hash.mechanism().as_bytes().to_vec();
        let tag = self.send(&Command::Authenticate { mechanism, initial_response: Some(first) }).await?;
        let server_first = self.read_challenge(&tag).await?;
        let fin = exchange.respond(&server_first).map_err(ClientError::Protocol)?;
        let mut line = base64::engine::general_purpose::STANDARD.encode(fin).into_bytes();
        line.extend_from_slice(b"\r\n");
        self.send_raw(&line).await?;
        let server_final = self.read_challenge(&tag).await?;
        if let Err(e) = exchange.verify(&server_final) {
            let _ = self.send_raw(b"*\r\n").await;
            return Err(ClientError::Protocol(e));
        }
        self.send_raw(b"\r\n").await?;
        match self.read_response().await? {
            Response::Tagged { status: Status::Ok, .. } => Ok(()),
            Response::Tagged { status, text, .. } => Err(ClientError::Refused { status, text: String::from_utf8_lossy(&text).into() }),
            other => Err(ClientError::Protocol(format!("unexpected after SCRAM: {other:?}"))),
        }
    }

    /// AUTHENTICATE "EXTERNAL" with this authorization id (empty: the
    /// certificate's own entry).
    pub async fn authenticate_external(&mut self, authzid: &str) -> Result<(), ClientError> {
        let cmd = Command::Authenticate { mechanism: b"EXTERNAL".to_vec(), initial_response: Some(authzid.as_bytes().to_vec()) };
        self.run_ok(&cmd).await?;
        Ok(())
    }

    /// The next SASL challenge of the AUTHENTICATE tagged `tag`: a bare
    /// base64 line (Cyrus's master, mupdated) or `+ ...`; its completion
    /// (NO, BAD) is an error.
    async fn read_challenge(&mut self, tag: &[u8]) -> Result<Vec<u8>, ClientError> {
        let msg = self.read_message().await?;
        let line = parse::line_content(&msg);
        let tagged = line.len() > tag.len() && line.starts_with(tag) && line[tag.len()] == b' ';
        if tagged || line.starts_with(b"+") || line.starts_with(b"* ") {
            return match parse::parse_response(&msg).map_err(|e| ClientError::Protocol(e.to_string()))? {
                Response::Challenge { data } => Ok(data),
                Response::Tagged { status, text, .. } => {
                    Err(ClientError::Refused { status, text: String::from_utf8_lossy(&text).into() })
                }
                Response::Bye { text } => Err(ClientError::Refused { status: Status::No, text: String::from_utf8_lossy(&text).into() }),
                other => Err(ClientError::Protocol(format!("unexpected during SASL: {other:?}"))),
            };
        }
        base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|_| ClientError::Protocol(format!("challenge is not base64: {:?}", String::from_utf8_lossy(line))))
    }

    /// FIND: the entry, if any.
    pub async fn find(&mut self, name: &[u8]) -> Result<Option<Entry>, ClientError> {
        let data = self.run_ok(&Command::Find { name: name.to_vec() }).await?;
        Ok(data.into_iter().find_map(|r| match r {
            Response::Entry { entry, .. } => Some(entry),
            _ => None,
        }))
    }

    /// LIST [prefix]: every entry, in server order.
    pub async fn list(&mut self, prefix: Option<&[u8]>) -> Result<Vec<Entry>, ClientError> {
        let data = self.run_ok(&Command::List { prefix: prefix.map(|p| p.to_vec()) }).await?;
        Ok(data
            .into_iter()
            .filter_map(|r| match r {
                Response::Entry { entry, .. } => Some(entry),
                _ => None,
            })
            .collect())
    }

    /// LOGOUT, best effort.
    pub async fn logout(mut self) {
        let _ = self.run(&Command::Logout).await;
    }

    /// The stream (to look at its TLS session, say).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The stream, for an upgrade (after STARTTLS's `OK`): bytes read but
    /// not yet taken as a response are dropped.
    pub fn into_stream(self) -> S {
        self.stream
    }
}

/// base64 of a SASL PLAIN response (for raw transcripts).
pub fn plain_base64(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}\0{user}\0{password}"))
}
