//! One connection's state machine. Commands are answered in Cyrus 3.6.1's
//! check order (`imap/mupdate.c: docmd`): tag, command word, login,
//! arguments, streaming, then the role of the login.

mod admin;
mod commands;
pub use commands::STORAGE_FAILING;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::auth::Login;
use crate::net::connection::{ConnError, Connection};
use crate::net::Shared;
use crate::protocol::{parse, Response, Status};
use crate::replication::hub::Registration;

/// Version in the greeting.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Implementation name in the greeting.
pub const IMPLEMENTATION: &str = "mupdated";
/// Capability line that announces the admin extensions.
pub const ADMIN_CAPABILITY: &str = "X-MUPDATED-ADMIN";

pub(crate) type Conn = Connection<OwnedReadHalf, OwnedWriteHalf>;

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
    Changes,
    Stop,
}

pub struct Session {
    shared: Arc<Shared>,
    conn: Conn,
    stop: watch::Receiver<bool>,
    login: Option<Login>,
    streaming: Option<Streaming>,
    expect: Expect,
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
    pub fn new(shared: Arc<Shared>, socket: TcpStream, stop: watch::Receiver<bool>) -> Self {
        let (r, w) = socket.into_split();
        let conn = Connection::new(r, w, shared.limits, Duration::from_secs(shared.config.write_timeout));
        Session { shared, conn, stop, login: None, streaming: None, expect: Expect::Command }
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

    fn read_timeout(&self) -> Duration {
        let c = &self.shared.config;
        Duration::from_secs(if self.login.is_some() { c.idle_timeout } else { c.login_timeout })
    }

    /// Run the connection to its end. Never panics on peer input; every
    /// failure ends only this connection.
    pub async fn run(mut self) {
        debug!("connected");
        let result = self.serve().await;
        match result {
            Ok(()) => debug!("closed"),
            Err(e) => info!(error = %e, "connection ended"),
        }
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
            let timeout = self.read_timeout();
            let streaming = self.streaming.as_ref().map(|s| &s.registration);
            let event = tokio::select! {
                read = tokio::time::timeout(timeout, self.conn.read_more()) => match read {
                    Ok(Ok(true)) => Event::Input,
                    Ok(Ok(false)) => Event::Eof,
                    Ok(Err(e)) => return Err(e.into()),
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
    /// looked up at send time.
    pub(crate) async fn flush_stream(&mut self) -> Result<(), SessionError> {
        let Some(streaming) = &self.streaming else { return Ok(()) };
        let names = streaming.registration.subscription().take()?;
        let tag = streaming.tag.clone();
        for name in names {
            let response = match self.shared.store.effective_durable(&name).await? {
                Some(entry) => Response::Entry { tag: tag.clone(), entry },
                None => Response::Delete { tag: tag.clone(), name },
            };
            self.conn.send(&response).await?;
        }
        self.conn.flush().await?;
        Ok(())
    }

    pub(crate) async fn tagged(&mut self, tag: &[u8], status: Status, text: &str) -> Result<(), SessionError> {
        self.conn.send(&Response::Tagged { tag: tag.to_vec(), status, text: text.as_bytes().to_vec() }).await?;
        Ok(())
    }
}
