//! One connection's state machine. Commands are answered in Cyrus 3.6.1's
//! check order (`imap/mupdate.c: docmd`): tag, command word, login,
//! arguments, streaming, then the role of the login.

mod admin;
mod commands;
pub use commands::STORAGE_FAILING;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::auth::Login;
use crate::net::admission::Slot;
use crate::net::connection::{ConnError, Connection};
use crate::app::App;
use crate::protocol::{parse, Limits, Response, Status};
use crate::replication::hub::Registration;

/// Version in the greeting.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Implementation name in the greeting.
pub const IMPLEMENTATION: &str = "mupdated";
/// Capability line that announces the admin extensions.
pub const ADMIN_CAPABILITY: &str = "X-MUPDATED-ADMIN";

/// The read half of a session's stream.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a session's stream.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) type Conn = Connection<Reader, Writer>;

/// BYE text when a connection is closed to make room for a newer one.
pub const EVICTED: &str = "too many connections not logged in";
/// BYE text when a command takes longer than `command_timeout` to arrive.
pub const COMMAND_TIMEOUT: &str = "command timeout";

/// What the next message is.
enum Expect {
    /// A command line.
    Command,
    /// The answer to a SASL challenge for the AUTHENTICATE with this tag.
    AuthAnswer { tag: Vec<u8> },
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
}

enum Event {
    Input,
    Eof,
    Idle,
    CommandTimeout,
    Changes,
    Stop,
}

pub struct Session {
    shared: Arc<App>,
    conn: Conn,
    stop: watch::Receiver<bool>,
    login: Option<Login>,
    streaming: Option<Streaming>,
    expect: Expect,
    /// The peer's address, when it has one (a TCP peer).
    peer: Option<SocketAddr>,
    /// The connection's slot, when a server admitted it.
    slot: Option<Slot>,
    /// The whole login, from connect to a successful AUTHENTICATE, ends here.
    login_deadline: Instant,
    /// Set at login: the login deadline no longer applies.
    logged_in: Arc<AtomicBool>,
    /// When the first byte of the command now arriving came.
    command_started: Option<Instant>,
}

/// How a session ended, when not by its own doing.
enum End {
    Served(Result<(), SessionError>),
    LoginDeadline,
    Evicted,
}

/// What the framer enforces before login: a SASL exchange, no more.
fn unauthenticated_limits(shared: &App) -> Limits {
    let m = shared.config.max_unauthenticated_message.min(shared.limits.max_message);
    Limits { max_line: shared.limits.max_line.min(m), max_literal: m, max_message: m }
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

impl Session {
    /// A session over any byte stream; `peer` is its address, if any.
    pub fn new<S>(shared: Arc<App>, stream: S, peer: Option<SocketAddr>, stop: watch::Receiver<bool>) -> Self
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Self::from_halves(shared, Box::new(r), Box::new(w), peer, stop)
    }

    /// A session over two halves of a stream (a TCP socket's own split).
    pub fn from_halves(
        shared: Arc<App>,
        reader: Reader,
        writer: Writer,
        peer: Option<SocketAddr>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let write_timeout = Duration::from_secs(shared.config.write_timeout);
        let conn = Connection::new(reader, writer, unauthenticated_limits(&shared), write_timeout);
        let login_deadline = Instant::now() + Duration::from_secs(shared.config.login_timeout);
        Session {
            shared,
            conn,
            stop,
            login: None,
            streaming: None,
            expect: Expect::Command,
            peer,
            slot: None,
            login_deadline,
            logged_in: Arc::new(AtomicBool::new(false)),
            command_started: None,
        }
    }

    /// The slot the server admitted this connection with (released when
    /// the session ends; its eviction ends the session).
    pub fn with_slot(mut self, slot: Slot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The login must be done by `deadline` (the server counts from the
    /// accept, so a wait for the store counts too).
    pub fn with_login_deadline(mut self, deadline: Instant) -> Self {
        self.login_deadline = deadline;
        self
    }

    /// The connection is logged in from the start (a peer the listener
    /// vouches for: root on a unix socket with `unix_peer_admin`). When its
    /// slot was evicted meanwhile it stays logged out and ends at its login
    /// deadline.
    pub fn with_login(mut self, login: Login) -> Self {
        if self.logged_in() {
            self.login = Some(login);
        }
        self
    }

    fn greeting(&self) -> Vec<Response> {
        let mechs: Vec<String> = self.shared.auth.mechanisms().iter().map(|m| format!("\"{m}\"")).collect();
        vec![
            Response::Capability { name: b"AUTH".to_vec(), params: mechs.join(" ").into_bytes() },
            Response::Capability { name: b"PARTIAL-UPDATE".to_vec(), params: vec![] },
            Response::Capability { name: ADMIN_CAPABILITY.as_bytes().to_vec(), params: vec![] },
            Response::Greeting {
                server_name: self.shared.config.server_name.as_bytes().to_vec(),
                implementation: IMPLEMENTATION.as_bytes().to_vec(),
                version: VERSION.as_bytes().to_vec(),
            },
        ]
    }

    /// When the next read gives up, and whether that is the command
    /// deadline (rather than the idle or login one).
    fn read_deadline(&self) -> (Instant, bool) {
        let c = &self.shared.config;
        let base = if self.login.is_some() {
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
    pub async fn run(mut self) {
        debug!("connected");
        let deadline = self.login_deadline;
        let logged_in = self.logged_in.clone();
        let evicted = self.slot.as_mut().and_then(|s| s.take_eviction());
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
                match evicted {
                    // The sender goes away unused at login: never evicted then.
                    Some(rx) => if rx.await.is_err() { std::future::pending::<()>().await },
                    None => std::future::pending().await,
                }
            } => End::Evicted,
        };
        match end {
            End::Served(Ok(())) => debug!("closed"),
            End::Served(Err(e)) => info!(error = %e, "connection ended"),
            End::LoginDeadline => {
                info!("login deadline passed");
                self.conn.close_with(Some(&Response::Bye { text: b"idle timeout".to_vec() })).await;
            }
            End::Evicted => {
                info!("evicted for a newer connection not logged in");
                self.conn.close_with(Some(&Response::Bye { text: EVICTED.as_bytes().to_vec() })).await;
            }
        }
    }

    /// Called at a successful login: lift the pre-login limits. False when
    /// the connection was evicted meanwhile and must close.
    pub(crate) fn logged_in(&mut self) -> bool {
        if let Some(slot) = &mut self.slot {
            if !slot.logged_in() {
                return false;
            }
        }
        self.logged_in.store(true, Ordering::Release);
        self.conn.set_limits(self.shared.limits);
        true
    }

    /// The peer's IP address as logged (`-` without one).
    pub(crate) fn peer_ip(&self) -> String {
        self.peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "-".into())
    }

    async fn serve(&mut self) -> Result<(), SessionError> {
        for r in self.greeting() {
            self.conn.send(&r).await?;
        }
        self.conn.flush().await?;
        loop {
            // Answer every whole message already buffered (pipelining).
            loop {
                let msg = match self.conn.next_message() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) => {
                        warn!(error = %e, "closing: unframeable input");
                        let text = format!("{e}").into_bytes();
                        self.conn.close_with(Some(&Response::Bye { text })).await;
                        return Ok(());
                    }
                };
                match self.handle(msg).await? {
                    Next::Continue => {}
                    Next::Close => {
                        self.conn.close_with(None).await;
                        return Ok(());
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
                self.conn.close_with(Some(&Response::Bye { text: b"server shutting down".to_vec() })).await;
                return Ok(());
            }
            // A command's deadline runs from its first byte until it is whole.
            if self.conn.has_partial_input() {
                self.command_started.get_or_insert_with(Instant::now);
            } else {
                self.command_started = None;
            }
            let (deadline, command_deadline) = self.read_deadline();
            let streaming = self.streaming.as_ref().map(|s| &s.registration);
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
                Event::Changes => self.flush_stream().await?,
                Event::Eof => {
                    if self.conn.has_partial_input() {
                        debug!("peer closed in the middle of a command");
                    }
                    return Ok(());
                }
                Event::CommandTimeout => {
                    info!("command timeout");
                    self.conn.close_with(Some(&Response::Bye { text: COMMAND_TIMEOUT.as_bytes().to_vec() })).await;
                    return Ok(());
                }
                Event::Idle => {
                    info!("idle timeout");
                    self.conn.close_with(Some(&Response::Bye { text: b"idle timeout".to_vec() })).await;
                    return Ok(());
                }
            }
        }
    }

    async fn handle(&mut self, msg: Bytes) -> Result<Next, SessionError> {
        match std::mem::replace(&mut self.expect, Expect::Command) {
            Expect::AuthAnswer { tag } => {
                let answer = parse::parse_auth_answer(&msg);
                self.finish_authenticate(tag, answer).await
            }
            Expect::Command => {
                let line = parse::parse_line(&msg);
                self.dispatch(line).await
            }
        }
    }

    /// Send every queued change of the UPDATE stream, current state first
    /// looked up at send time. The writes race the subscription's overflow:
    /// a stream that overflows while its peer has stopped reading is closed
    /// at once (no BYE: its Cyrus slave reconnects and reloads), not after
    /// `write_timeout`.
    pub(crate) async fn flush_stream(&mut self) -> Result<(), SessionError> {
        let Some(streaming) = &self.streaming else { return Ok(()) };
        let subscription = streaming.registration.subscription();
        let names = subscription.take()?;
        let (tag, store, conn) = (&streaming.tag, &self.shared.store, &mut self.conn);
        let send = async {
            for name in names {
                let response = match store.effective_durable(&name).await? {
                    Some(entry) => Response::Entry { tag: tag.clone(), entry },
                    None => Response::Delete { tag: tag.clone(), name: name.to_vec() },
                };
                conn.send(&response).await?;
            }
            conn.flush().await?;
            Ok::<(), SessionError>(())
        };
        tokio::select! {
            r = send => r,
            overflow = subscription.overflowed() => Err(overflow.into()),
        }
    }

    pub(crate) async fn tagged(&mut self, tag: &[u8], status: Status, text: &str) -> Result<(), SessionError> {
        self.conn.send(&Response::Tagged { tag: tag.to_vec(), status, text: text.as_bytes().to_vec() }).await?;
        Ok(())
    }
}
