//! A small blocking MUPDATE (RFC 3656) client for the tests. It sends every
//! argument as a `{n+}` literal, as Cyrus' own clients do, and accepts quoted
//! strings and both literal forms in answers. It is strict about tags: a
//! line carrying another tag is an error, because Cyrus clients would
//! misread it (cyrus-interop.md section 1, item 4).

use std::fmt;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::wire::{literal_plus, read_logical_line, tokenize, Token};

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Clear(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

/// Read/write timeout: a master that does not answer within this fails the test.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// host:port of a MUPDATE master, and whether (and how) to speak TLS to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterAddr {
    pub host: String,
    pub port: u16,
    /// `None`: clear text (the default).
    pub tls: Option<Tls>,
}

/// How a client reaches a master over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub mode: TlsMode,
    /// The CA the master's certificate must chain to (the harness's own
    /// client checks it; Cyrus checks nothing).
    pub ca: PathBuf,
    /// The name the master's certificate must carry.
    pub server_name: String,
    /// A client certificate and its key (PEM) to present, if any.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Clear text first, then `S01 STARTTLS` (Cyrus does it when no
    /// mechanism is offered before TLS).
    StartTls,
    /// TLS from the first byte (`mupdate_server: host:port/tls` in Cyrus).
    Implicit,
}

impl MasterAddr {
    pub fn loopback(port: u16) -> MasterAddr {
        MasterAddr {
            host: "127.0.0.1".into(),
            port,
            tls: None,
        }
    }

    /// The same master at another port (a relay in front of it), same TLS.
    pub fn with_port(&self, host: &str, port: u16) -> MasterAddr {
        MasterAddr {
            host: host.into(),
            port,
            tls: self.tls.clone(),
        }
    }

    /// The value of `mupdate_server` in a Cyrus imapd.conf: `host:port`,
    /// with `/tls` for implicit TLS (STARTTLS needs nothing there).
    pub fn cyrus_spec(&self) -> String {
        match &self.tls {
            Some(Tls {
                mode: TlsMode::Implicit,
                ..
            }) => format!("{self}/tls"),
            _ => self.to_string(),
        }
    }

    /// Parses `host:port` (the value of `MUPDATE_MASTER`).
    pub fn parse(s: &str) -> std::result::Result<MasterAddr, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        let port = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(MasterAddr {
            host: host.to_string(),
            port,
            tls: None,
        })
    }
}

impl fmt::Display for MasterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mailbox,
    Reserve,
}

/// One MAILBOX or RESERVE line of a FIND, LIST or UPDATE answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub name: String,
    pub location: String,
    /// `None` for RESERVE.
    pub acl: Option<String>,
}

impl Entry {
    pub fn mailbox(name: &str, location: &str, acl: &str) -> Entry {
        Entry {
            kind: Kind::Mailbox,
            name: name.into(),
            location: location.into(),
            acl: Some(acl.into()),
        }
    }
}

/// A line in answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Entry(Entry),
    Delete(String),
}

/// The completion of a command: OK, NO, BAD or BYE with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub status: String,
    pub text: String,
}

#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    /// The server sent something this client cannot read.
    Protocol(String),
    /// The command completed with NO/BAD/BYE.
    Refused(Completion),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o: {e}"),
            Error::Protocol(s) => write!(f, "protocol: {s}"),
            Error::Refused(c) => write!(f, "{} {:?}", c.status, c.text),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The mechanisms of a greeting's `* AUTH` line (quoted or not).
pub fn mechanisms(greeting: &[String]) -> Vec<String> {
    greeting
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("* ")?;
            let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
            word.eq_ignore_ascii_case("AUTH").then_some(args)
        })
        .flat_map(|args| args.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')))
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect()
}

/// The connection under the protocol: clear or TLS.
enum Stream {
    Clear(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Clear(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Clear(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Clear(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Shakes hands over `tcp` as a TLS client checking the master's
/// certificate against `tls.ca` and `tls.server_name`.
fn handshake(tcp: TcpStream, tls: &Tls) -> Result<Stream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca)
        .map_err(|e| Error::Protocol(format!("CA {}: {e}", tls.ca.display())))?
    {
        let cert = cert.map_err(|e| Error::Protocol(format!("CA {}: {e}", tls.ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| Error::Protocol(format!("CA {}: {e}", tls.ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Protocol(format!("TLS config: {e}")))?
        .with_root_certificates(roots);
    let config = match &tls.client_cert {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::PrivateKeyDer;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect())
                .map_err(|e| Error::Protocol(format!("client certificate {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Protocol(format!("client key {}: {e}", key.display())))?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Protocol(format!("client certificate {}: {e}", cert.display())))?
        }
    };
    let name = ServerName::try_from(tls.server_name.clone())
        .map_err(|e| Error::Protocol(format!("server name {:?}: {e}", tls.server_name)))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Error::Protocol(format!("TLS: {e}")))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(Stream::Tls(Box::new(s)))
}

pub struct Mupdate {
    conn: BufReader<Stream>,
    next_tag: u32,
    /// Greeting lines, the final `* OK ...` included (after STARTTLS: the
    /// greeting inside TLS).
    pub greeting: Vec<String>,
    /// The greeting before STARTTLS, when there was one.
    pub clear_greeting: Vec<String>,
}

impl Mupdate {
    /// Connects and reads the greeting: capability lines up to `* OK`.
    /// With `addr.tls`, shakes hands first (implicit) or sends STARTTLS
    /// after the clear-text greeting and reads the greeting again.
    pub fn connect(addr: &MasterAddr) -> Result<Mupdate> {
        let sock = (addr.host.as_str(), addr.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::Protocol(format!("{addr} does not resolve")))?;
        let stream = TcpStream::connect_timeout(&sock, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        let stream = match &addr.tls {
            Some(tls) if tls.mode == TlsMode::Implicit => handshake(stream, tls)?,
            _ => Stream::Clear(stream),
        };
        let mut client = Mupdate {
            conn: BufReader::new(stream),
            next_tag: 0,
            greeting: Vec::new(),
            clear_greeting: Vec::new(),
        };
        client.read_greeting()?;
        if let Some(tls) = addr.tls.as_ref().filter(|t| t.mode == TlsMode::StartTls) {
            client.starttls(tls)?;
        }
        Ok(client)
    }

    /// `S01 STARTTLS` as Cyrus sends it: one line back that must start
    /// with `S01 OK`, nothing after it before the handshake, then the
    /// greeting again inside TLS.
    fn starttls(&mut self, tls: &Tls) -> Result<()> {
        if !self.greeting.iter().any(|l| l.eq_ignore_ascii_case("* STARTTLS")) {
            return Err(Error::Protocol(format!("no * STARTTLS in the greeting {:?}", self.greeting)));
        }
        self.send(b"S01 STARTTLS\r\n")?;
        let line = read_logical_line(&mut self.conn)?;
        let text = String::from_utf8_lossy(&line).into_owned();
        if !text.starts_with("S01 OK") {
            return Err(Error::Protocol(format!("STARTTLS answered {text:?}")));
        }
        if !self.conn.buffer().is_empty() {
            return Err(Error::Protocol(format!(
                "bytes after the STARTTLS OK before the handshake: {:?}",
                String::from_utf8_lossy(self.conn.buffer())
            )));
        }
        let placeholder = BufReader::new(Stream::Clear(self.conn.get_ref().tcp().try_clone()?));
        let tcp = match std::mem::replace(&mut self.conn, placeholder).into_inner() {
            Stream::Clear(t) => t,
            Stream::Tls(_) => return Err(Error::Protocol("STARTTLS inside TLS".into())),
        };
        self.conn = BufReader::new(handshake(tcp, tls)?);
        self.clear_greeting = std::mem::take(&mut self.greeting);
        self.read_greeting()
    }

    fn read_greeting(&mut self) -> Result<()> {
        let client = self;
        loop {
            let line = read_logical_line(&mut client.conn)?;
            let text = String::from_utf8_lossy(&line).into_owned();
            let done = text.len() >= 4 && text[..4].eq_ignore_ascii_case("* OK");
            if !text.starts_with("* ") {
                return Err(Error::Protocol(format!(
                    "greeting line not untagged: {text:?}"
                )));
            }
            client.greeting.push(text);
            if done {
                return Ok(());
            }
            if client.greeting.len() > 64 {
                return Err(Error::Protocol("greeting has no * OK line".into()));
            }
        }
    }

    /// Connects and authenticates.
    pub fn login(addr: &MasterAddr, user: &str, password: &str) -> Result<Mupdate> {
        let mut c = Mupdate::connect(addr)?;
        c.authenticate(user, password)?;
        Ok(c)
    }

    /// SASL PLAIN with the initial response as a `{n+}` literal, exactly
    /// as Cyrus' backends send it: `A01 AUTHENTICATE "PLAIN" {n+}`.
    pub fn authenticate(&mut self, user: &str, password: &str) -> Result<()> {
        let blob =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}\0{user}\0{password}"));
        self.send(format!("A01 AUTHENTICATE \"PLAIN\" {}\r\n", literal_plus(&blob)).as_bytes())?;
        self.complete("A01").map(|_| ())
    }

    /// SASL EXTERNAL with `authzid` (may be empty) as the initial response,
    /// the way Cyrus sends it: `A01 AUTHENTICATE "EXTERNAL" {n+}`.
    pub fn authenticate_external(&mut self, authzid: &str) -> Result<()> {
        let blob = if authzid.is_empty() {
            "=".to_string()
        } else {
            base64::engine::general_purpose::STANDARD.encode(authzid)
        };
        self.send(format!("A01 AUTHENTICATE \"EXTERNAL\" {}\r\n", literal_plus(&blob)).as_bytes())?;
        self.complete("A01").map(|_| ())
    }

    /// The mechanisms of the greeting's `* AUTH` line (after STARTTLS: the
    /// one inside TLS); empty when the line is empty or missing.
    pub fn mechanisms(&self) -> Vec<String> {
        mechanisms(&self.greeting)
    }

    /// `FIND name`: the entry, or `None` when the master does not know it.
    pub fn find(&mut self, name: &str) -> Result<Option<Entry>> {
        let entries = self.entries("FIND", &[name])?;
        if entries.len() > 1 {
            return Err(Error::Protocol(format!(
                "FIND {name} answered {} entries: {entries:?}",
                entries.len()
            )));
        }
        Ok(entries.into_iter().next())
    }

    /// `LIST` or `LIST prefix`, entries in wire order.
    pub fn list(&mut self, prefix: Option<&str>) -> Result<Vec<Entry>> {
        match prefix {
            Some(p) => self.entries("LIST", &[p]),
            None => self.entries("LIST", &[]),
        }
    }

    pub fn activate(&mut self, name: &str, location: &str, acl: &str) -> Result<Completion> {
        self.expect_no_replies("ACTIVATE", &[name, location, acl])
    }

    pub fn reserve(&mut self, name: &str, location: &str) -> Result<Completion> {
        self.expect_no_replies("RESERVE", &[name, location])
    }

    pub fn deactivate(&mut self, name: &str, location: &str) -> Result<Completion> {
        self.expect_no_replies("DEACTIVATE", &[name, location])
    }

    pub fn delete(&mut self, name: &str) -> Result<Completion> {
        self.expect_no_replies("DELETE", &[name])
    }

    pub fn noop(&mut self) -> Result<Completion> {
        self.expect_no_replies("NOOP", &[])
    }

    /// `Q01 LOGOUT`; waits for the answer.
    pub fn logout(mut self) -> Result<Completion> {
        self.send(b"Q01 LOGOUT\r\n")?;
        Ok(self.complete("Q01")?.1)
    }

    /// Sends `TAG VERB args...` (args as `{n+}` literals) and returns the
    /// lines answered before the completion. NO/BAD/BYE become `Err(Refused)`.
    pub fn command(&mut self, verb: &str, args: &[&str]) -> Result<(Vec<Reply>, Completion)> {
        let tag = format!("X{}", self.next_tag);
        self.next_tag += 1;
        let mut line = format!("{tag} {verb}");
        for a in args {
            line.push(' ');
            line.push_str(&literal_plus(a));
        }
        line.push_str("\r\n");
        self.send(line.as_bytes())?;
        self.complete(&tag)
    }

    /// Sends `bytes` as they are (they must end in CRLF) and reads the
    /// answer to `tag`, which must be the tag used in `bytes`.
    pub fn raw(&mut self, tag: &str, bytes: &[u8]) -> Result<(Vec<Reply>, Completion)> {
        self.send(bytes)?;
        self.complete(tag)
    }

    fn entries(&mut self, verb: &str, args: &[&str]) -> Result<Vec<Entry>> {
        let (replies, _) = self.command(verb, args)?;
        replies
            .into_iter()
            .map(|r| match r {
                Reply::Entry(e) => Ok(e),
                Reply::Delete(n) => Err(Error::Protocol(format!("{verb} answered DELETE {n:?}"))),
            })
            .collect()
    }

    fn expect_no_replies(&mut self, verb: &str, args: &[&str]) -> Result<Completion> {
        let (replies, done) = self.command(verb, args)?;
        if !replies.is_empty() {
            return Err(Error::Protocol(format!(
                "{verb} answered unexpected lines {replies:?}"
            )));
        }
        Ok(done)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let w = self.conn.get_mut();
        w.write_all(bytes)?;
        w.flush()?;
        Ok(())
    }

    /// The TLS version and cipher suite of this session, if it is in TLS.
    pub fn tls_session(&self) -> Option<(String, String)> {
        match self.conn.get_ref() {
            Stream::Clear(_) => None,
            Stream::Tls(s) => Some((
                format!("{:?}", s.conn.protocol_version()?),
                format!("{:?}", s.conn.negotiated_cipher_suite()?.suite()),
            )),
        }
    }

    fn complete(&mut self, tag: &str) -> Result<(Vec<Reply>, Completion)> {
        let mut replies = Vec::new();
        loop {
            let line = read_logical_line(&mut self.conn)?;
            let shown = String::from_utf8_lossy(&line).into_owned();
            let tokens =
                tokenize(&line).map_err(|e| Error::Protocol(format!("{e} in {shown:?}")))?;
            let texts: Option<Vec<&str>> = tokens.iter().map(Token::text).collect();
            let Some(texts) = texts else {
                return Err(Error::Protocol(format!("unexpected list in {shown:?}")));
            };
            if texts.len() < 2 {
                return Err(Error::Protocol(format!("short line {shown:?}")));
            }
            if texts[0] != tag {
                return Err(Error::Protocol(format!(
                    "expected tag {tag}, got line {shown:?}"
                )));
            }
            let keyword = texts[1].to_ascii_uppercase();
            let strings_only = tokens[2..].iter().all(|t| matches!(t, Token::Str(_)));
            let args = &texts[2..];
            match keyword.as_str() {
                "OK" | "NO" | "BAD" | "BYE" => {
                    if args.len() != 1 || !strings_only {
                        return Err(Error::Protocol(format!(
                            "completion must carry exactly one string: {shown:?}"
                        )));
                    }
                    let done = Completion {
                        status: keyword,
                        text: args[0].to_string(),
                    };
                    return if done.status == "OK" {
                        Ok((replies, done))
                    } else {
                        Err(Error::Refused(done))
                    };
                }
                "MAILBOX" if args.len() == 3 && strings_only => replies.push(Reply::Entry(Entry {
                    kind: Kind::Mailbox,
                    name: args[0].into(),
                    location: args[1].into(),
                    acl: Some(args[2].into()),
                })),
                "RESERVE" if args.len() == 2 && strings_only => replies.push(Reply::Entry(Entry {
                    kind: Kind::Reserve,
                    name: args[0].into(),
                    location: args[1].into(),
                    acl: None,
                })),
                "DELETE" if args.len() == 1 && strings_only => {
                    replies.push(Reply::Delete(args[0].into()))
                }
                _ => return Err(Error::Protocol(format!("unexpected line {shown:?}"))),
            }
        }
    }
}
