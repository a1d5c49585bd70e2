//! One connection's session: greeting, then commands until the peer, a
//! deadline, the server or a command ends it, over any byte stream.
//!
//! - The transport seam: a [`Session`] runs over any [`Transport`] (TCP, a
//!   unix socket, an in-memory `tokio::io::duplex`, later TLS) and
//!   [`Session::run`] says how it [`Ended`]: closed, or handing its stream
//!   back for an upgrade ([`Upgrade`], STARTTLS) that the connection layer
//!   wraps and resumes with [`Session::resume`].
//! - What the session announces is a value: [`Capabilities`], built by
//!   [`Capabilities::of`] and changed by the connection layer
//!   ([`Session::with_capabilities`]).
//! - Commands are answered in Cyrus 3.6.1's check order
//!   (`imap/mupdate.c: docmd`): tag, command word, login, arguments,
//!   streaming, then the role of the login, by one dispatcher
//!   (`dispatch.rs`); each command lives in its own file under `cmd/`.
//!   Handlers write responses to an [`Output`] sink, never to the stream.
//!
//! See docs/architecture/session.md.

mod capabilities;
mod cmd;
mod dispatch;

pub use capabilities::{Capabilities, ADMIN_CAPABILITY, IMPLEMENTATION, VERSION};
pub use cmd::STORAGE_FAILING;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::auth::Login;
use crate::net::admission::Slot;
use crate::net::connection::{ConnError, Connection, Output};
use crate::protocol::{parse, Limits, Response, Status};
use crate::replication::hub::Registration;
use crate::replication::stream::{self, Sink};

/// BYE text when a connection is closed to make room for a newer one.
pub const EVICTED: &str = "too many connections not logged in";
/// BYE text when a command takes longer than `command_timeout` to arrive.
pub const COMMAND_TIMEOUT: &str = "command timeout";
/// BYE text when the login or idle deadline passes.
pub const IDLE_TIMEOUT: &str = "idle timeout";
/// BYE text at a graceful shutdown.
pub const SHUTTING_DOWN: &str = "server shutting down";

/// A byte stream a session can run over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// Who is at the other end, as the listener knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A unix-socket peer, with its user id when the kernel said
    /// (`SO_PEERCRED`).
    Unix {
        /// The peer process's user id.
        uid: Option<u32>,
    },
    /// No peer to speak of (an in-memory stream, a test).
    None,
}

impl Peer {
    /// The peer as logged: its IP address, `unix` (with `:uid`), or `-`.
    pub fn describe(&self) -> String {
        match self {
            Peer::Tcp(a) => a.ip().to_string(),
            Peer::Unix { uid: Some(uid) } => format!("unix:{uid}"),
            Peer::Unix { uid: None } => "unix".into(),
            Peer::None => "-".into(),
        }
    }
}

/// What a session over TLS knows of its TLS, for the logs and for SASL
/// EXTERNAL. Set by the connection layer after the handshake
/// ([`Session::with_tls`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, as logged (`TLSv1_3`).
    pub version: String,
    /// The negotiated cipher suite, as logged.
    pub cipher: String,
    /// The subject CN and DNS subject alternative names of the client's
    /// certificate when it was verified against `client_ca`; `None`
    /// without a verified certificate.
    pub client_names: Option<Vec<String>>,
}

/// How a session ended.
#[must_use = "an upgrade hands the stream back to be wrapped and served again"]
pub enum Ended<S> {
    /// The connection is closed (or its stream dropped).
    Closed,
    /// The session answered a STARTTLS: the stream goes back to the
    /// connection layer to be wrapped and served again.
    Upgrade(Upgrade<S>),
}

/// A stream handed back for an upgrade, and what the session that goes on
/// over the upgraded stream keeps. Nothing of the protocol state is kept:
/// the session before an upgrade was not logged in (Cyrus refuses
/// STARTTLS after a login), and after it the client reads the greeting and
/// capabilities again (`imap/mupdate.c: cmd_starttls` reissues the banner).
pub struct Upgrade<S> {
    /// The stream, everything queued on it flushed; input the client sent
    /// after STARTTLS was dropped.
    pub stream: S,
    /// What the next session over the wrapped stream continues with.
    pub resume: Resume,
}

/// The connection's bounds, carried over an upgrade: its peer, its
/// admission slot and eviction signal, and its login deadline (which runs
/// from the accept, TLS handshake included).
pub struct Resume {
    peer: Peer,
    slot: Option<Slot>,
    evicted: Option<oneshot::Receiver<()>>,
    login_deadline: Instant,
}

impl Resume {
    /// The peer of the upgraded connection.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// When the login must be done by.
    pub fn login_deadline(&self) -> Instant {
        self.login_deadline
    }
}

/// What the next message is.
enum Expect {
    /// A command line.
    Command,
    /// The answer to a SASL challenge for the AUTHENTICATE with this tag,
    /// at this step of its mechanism.
    AuthAnswer { tag: Vec<u8>, step: cmd::authenticate::Step },
}

/// An UPDATE stream in progress.
pub(crate) struct Streaming {
    tag: Vec<u8>,
    registration: Registration,
}

/// What a command asks of the connection afterwards.
pub(crate) enum Next {
    Continue,
    /// Close after what is queued (LOGOUT, or a failure that must not be
    /// answered, such as on UPDATE).
    Close,
    /// Flush what is queued and hand the stream back (STARTTLS).
    Upgrade,
}

/// How [`Session::serve`] stopped.
enum Served {
    Closed,
    Upgrade,
}

enum Event {
    Input,
    Eof,
    Idle,
    CommandTimeout,
    Changes,
    Stop,
}

/// A failure that ends the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Overflow(#[from] crate::replication::Overflow),
}

/// The session's output as UPDATE's dump and flush see it.
pub(crate) struct Lines<'a, 'b, S>(pub(crate) &'a mut Output<'b, S>);

impl<S: AsyncWrite + Unpin + Send> Sink for Lines<'_, '_, S> {
    type Error = SessionError;

    async fn send(&mut self, r: &Response) -> Result<(), SessionError> {
        Ok(self.0.send(r).await?)
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        Ok(self.0.flush().await?)
    }
}

/// Everything a command may look at or change, apart from the stream:
/// handlers get it with an [`Output`] to answer on.
pub(crate) struct State {
    app: Arc<App>,
    caps: Capabilities,
    login: Option<Login>,
    streaming: Option<Streaming>,
    expect: Expect,
    peer: Peer,
    /// The connection's slot, when a server admitted it.
    slot: Option<Slot>,
    /// Set at login: the login deadline no longer applies.
    logged_in: Arc<AtomicBool>,
    /// Framer limits for the next message on, set at login.
    new_limits: Option<Limits>,
    /// The connection's TLS, once it has one.
    tls: Option<TlsInfo>,
}

impl State {
    /// Called at a successful login: lift the pre-login limits. False when
    /// the connection was evicted meanwhile and must close.
    pub(crate) fn logged_in(&mut self) -> bool {
        if let Some(slot) = &mut self.slot {
            if !slot.logged_in() {
                return false;
            }
        }
        self.logged_in.store(true, Ordering::Release);
        self.new_limits = Some(self.app.limits);
        true
    }

    /// Whom the login speaks for (an empty identity before login).
    pub(crate) fn identity(&self) -> crate::store::Identity {
        self.login.as_ref().map(|l| l.identity.clone()).unwrap_or_default()
    }

    /// Queue a tagged completion.
    pub(crate) async fn tagged<S: AsyncWrite + Unpin>(
        out: &mut Output<'_, S>,
        tag: &[u8],
        status: Status,
        text: &str,
    ) -> Result<(), SessionError> {
        out.send(&Response::Tagged { tag: tag.to_vec(), status, text: text.as_bytes().to_vec() }).await?;
        Ok(())
    }

    /// Send the UPDATE stream's queued changes, if this session streams.
    async fn flush_stream<S: AsyncWrite + Unpin + Send>(&self, out: &mut Output<'_, S>) -> Result<(), SessionError> {
        match &self.streaming {
            Some(s) => stream::flush(&self.app.store, s.registration.subscription(), &s.tag, &mut Lines(out)).await,
            None => Ok(()),
        }
    }

    async fn handle<S: AsyncWrite + Unpin + Send>(
        &mut self,
        msg: Bytes,
        out: &mut Output<'_, S>,
    ) -> Result<Next, SessionError> {
        match std::mem::replace(&mut self.expect, Expect::Command) {
            Expect::AuthAnswer { tag, step } => {
                let answer = parse::parse_auth_answer(&msg);
                cmd::authenticate::answer(self, out, tag, step, answer).await
            }
            Expect::Command => dispatch::dispatch(self, out, parse::parse_line(&msg)).await,
        }
    }
}

/// One connection's session over the stream `S`.
pub struct Session<S> {
    conn: Connection<S>,
    state: State,
    stop: watch::Receiver<bool>,
    /// The whole login, from connect to a successful AUTHENTICATE, ends here.
    login_deadline: Instant,
    /// The eviction signal carried over an upgrade.
    evicted: Option<oneshot::Receiver<()>>,
    /// When the first byte of the command now arriving came.
    command_started: Option<Instant>,
}

/// How a session ended, when not by its own doing.
enum End {
    Served(Result<Served, SessionError>),
    LoginDeadline,
    Evicted,
}

/// What the framer enforces before login: a SASL exchange, no more.
fn unauthenticated_limits(app: &App) -> Limits {
    let m = app.config.max_unauthenticated_message.min(app.limits.max_message);
    Limits { max_line: app.limits.max_line.min(m), max_literal: m, max_message: m }
}

impl<S: Transport> Session<S> {
    /// A session over `stream`, from `peer`, ending when `stop` turns true.
    pub fn new(stream: S, app: Arc<App>, peer: Peer, stop: watch::Receiver<bool>) -> Self {
        let write_timeout = Duration::from_secs(app.config.write_timeout);
        let conn = Connection::new(stream, unauthenticated_limits(&app), write_timeout);
        let login_deadline = Instant::now() + Duration::from_secs(app.config.login_timeout);
        let caps = Capabilities::of(&app);
        Session {
            conn,
            state: State {
                app,
                caps,
                login: None,
                streaming: None,
                expect: Expect::Command,
                peer,
                slot: None,
                logged_in: Arc::new(AtomicBool::new(false)),
                new_limits: None,
                tls: None,
            },
            stop,
            login_deadline,
            evicted: None,
            command_started: None,
        }
    }

    /// The session that goes on over an upgraded stream: same peer, slot
    /// and login deadline; it greets again. Set its capabilities with
    /// [`Session::with_capabilities`] (after STARTTLS, no `STARTTLS`).
    pub fn resume(stream: S, app: Arc<App>, resume: Resume, stop: watch::Receiver<bool>) -> Self {
        let mut s = Session::new(stream, app, resume.peer, stop).with_login_deadline(resume.login_deadline);
        s.state.slot = resume.slot;
        s.evicted = resume.evicted;
        s
    }

    /// The session runs over TLS (after STARTTLS, or on a `listen_tls`
    /// listener): what it negotiated and the verified client certificate.
    pub fn with_tls(mut self, tls: TlsInfo) -> Self {
        self.state.tls = Some(tls);
        self
    }

    /// The slot the server admitted this connection with (released when
    /// the session ends; its eviction ends the session).
    pub fn with_slot(mut self, slot: Slot) -> Self {
        self.state.slot = Some(slot);
        self
    }

    /// The login must be done by `deadline` (the server counts from the
    /// accept, so a wait for the store counts too).
    pub fn with_login_deadline(mut self, deadline: Instant) -> Self {
        self.login_deadline = deadline;
        self
    }

    /// A session that starts logged in (a unix-socket peer the listener
    /// trusts): no AUTHENTICATE, the post-login limits from the start.
    pub fn with_login(mut self, login: Login) -> Self {
        self.state.login = Some(login);
        self
    }

    /// What the greeting announces and which optional commands answer
    /// (`STARTTLS` only when [`Capabilities::starttls`] is set).
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.state.caps = caps;
        self
    }

    /// When the next read gives up, and whether that is the command
    /// deadline (rather than the idle or login one).
    fn read_deadline(&self) -> (Instant, bool) {
        let c = &self.state.app.config;
        let base = if self.state.login.is_some() {
            Instant::now() + Duration::from_secs(c.idle_timeout)
        } else {
            self.login_deadline
        };
        match self.command_started {
            Some(t) if t + Duration::from_secs(c.command_timeout) < base => {
                (t + Duration::from_secs(c.command_timeout), true)
            }
            _ => (base, false),
        }
    }

    /// Run the connection to its end. Never panics on peer input; every
    /// failure ends only this connection.
    pub async fn run(mut self) -> Ended<S> {
        debug!("connected");
        if self.state.login.is_some() {
            if !self.state.logged_in() {
                self.conn.close_with(Some(&Response::Bye { text: EVICTED.as_bytes().to_vec() })).await;
                return Ended::Closed;
            }
            if let Some(login) = &self.state.login {
                let user = crate::net::log::Escaped(login.user.as_bytes());
                tracing::Span::current().record("user", tracing::field::display(user));
            }
        }
        let deadline = self.login_deadline;
        let logged_in = self.state.logged_in.clone();
        let mut evicted = self.evicted.take().or_else(|| self.state.slot.as_mut().and_then(|s| s.take_eviction()));
        let end = tokio::select! {
            r = self.serve() => End::Served(r),
            // Whatever the peer does, the login is over by the deadline.
            _ = async {
                tokio::time::sleep_until(deadline).await;
                if logged_in.load(Ordering::Acquire) {
                    std::future::pending::<()>().await
                }
            } => End::LoginDeadline,
            _ = async {
                match &mut evicted {
                    // The sender goes away unused at login: never evicted then.
                    Some(rx) => if rx.await.is_err() { std::future::pending::<()>().await },
                    None => std::future::pending().await,
                }
            } => End::Evicted,
        };
        match end {
            End::Served(Ok(Served::Closed)) => debug!("closed"),
            End::Served(Ok(Served::Upgrade)) => {
                debug!("handing the stream over for an upgrade");
                // Not logged in (STARTTLS is refused after a login): the
                // eviction signal has not fired and still applies.
                let resume = Resume {
                    peer: self.state.peer,
                    slot: self.state.slot.take(),
                    evicted: if self.state.login.is_none() { evicted } else { None },
                    login_deadline: self.login_deadline,
                };
                return Ended::Upgrade(Upgrade { stream: self.conn.into_stream(), resume });
            }
            End::Served(Err(e)) => info!(error = %e, "connection ended"),
            End::LoginDeadline => {
                info!("login deadline passed");
                self.conn.close_with(Some(&Response::Bye { text: IDLE_TIMEOUT.as_bytes().to_vec() })).await;
            }
            End::Evicted => {
                info!("evicted for a newer connection not logged in");
                self.conn.close_with(Some(&Response::Bye { text: EVICTED.as_bytes().to_vec() })).await;
            }
        }
        Ended::Closed
    }

    /// The session's loop: greet; then answer every whole message already
    /// buffered (pipelining), flush, and wait for input, a change for the
    /// UPDATE stream, a deadline or the server's stop.
    async fn serve(&mut self) -> Result<Served, SessionError> {
        self.apply_limits();
        for r in self.state.caps.banner(&self.state.app.config.server_name) {
            self.conn.send(&r).await?;
        }
        self.conn.flush().await?;
        loop {
            loop {
                let msg = match self.conn.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        warn!(error = %e, "closing: unframeable input");
                        let text = format!("{e}").into_bytes();
                        self.conn.close_with(Some(&Response::Bye { text })).await;
                        return Ok(Served::Closed);
                    }
                };
                let next = self.state.handle(msg, &mut self.conn.output()).await?;
                self.apply_limits();
                match next {
                    Next::Continue => {}
                    Next::Close => {
                        self.conn.close_with(None).await;
                        return Ok(Served::Closed);
                    }
                    Next::Upgrade => {
                        self.conn.flush().await?;
                        return Ok(Served::Upgrade);
                    }
                }
                if *self.stop.borrow() {
                    break;
                }
            }
            self.conn.flush().await?;
            if self.conn.answer_literal().await? {
                continue;
            }
            if *self.stop.borrow() {
                self.conn.close_with(Some(&Response::Bye { text: SHUTTING_DOWN.as_bytes().to_vec() })).await;
                return Ok(Served::Closed);
            }
            // A command's deadline runs from its first byte until it is whole.
            if self.conn.has_partial_input() {
                self.command_started.get_or_insert_with(Instant::now);
            } else {
                self.command_started = None;
            }
            let (deadline, command_deadline) = self.read_deadline();
            let streaming = self.state.streaming.as_ref().map(|s| &s.registration);
            let event = tokio::select! {
                read = tokio::time::timeout_at(deadline, self.conn.read_more()) => match read {
                    Ok(Ok(true)) => Event::Input,
                    Ok(Ok(false)) => Event::Eof,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) if command_deadline => Event::CommandTimeout,
                    Err(_) => Event::Idle,
                },
                _ = async {
                    match streaming {
                        Some(r) => r.subscription().changed().await,
                        None => std::future::pending().await,
                    }
                } => Event::Changes,
                _ = self.stop.changed() => Event::Stop,
            };
            match event {
                Event::Input | Event::Stop => {}
                Event::Changes => self.state.flush_stream(&mut self.conn.output()).await?,
                Event::Eof => {
                    if self.conn.has_partial_input() {
                        debug!("peer closed in the middle of a command");
                    }
                    return Ok(Served::Closed);
                }
                Event::CommandTimeout => {
                    info!("command timeout");
                    self.conn.close_with(Some(&Response::Bye { text: COMMAND_TIMEOUT.as_bytes().to_vec() })).await;
                    return Ok(Served::Closed);
                }
                Event::Idle => {
                    info!("idle timeout");
                    self.conn.close_with(Some(&Response::Bye { text: IDLE_TIMEOUT.as_bytes().to_vec() })).await;
                    return Ok(Served::Closed);
                }
            }
        }
    }

    /// Limits set by a login apply from the next message on.
    fn apply_limits(&mut self) {
        if let Some(limits) = self.state.new_limits.take() {
            self.conn.set_limits(limits);
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod sasl_tests;
