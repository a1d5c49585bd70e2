//! Listeners (TCP, unix sockets, sockets handed over by Cyrus's master or
//! systemd: [`listener`], [`inherit`]), admission (connection caps, allow
//! list), graceful shutdown, and a start that listens before the store is
//! open.

pub mod inherit;
pub mod listener;
pub mod relay;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

use crate::app::App;
use crate::auth::Login;
use crate::config::{Config, Role};
use crate::protocol::{encode, Response};
use crate::session::{Capabilities, Ended, Peer as SessionPeer, Session};
use crate::store::StoreError;
use crate::admission::{self, Admission, Caps, Refusal};
use crate::logging as log;
use inherit::Inherited;
use listener::{Accepted, Listener, SocketFiles};
use tls::Tls;

/// The [`Listener::kind`] of an implicit-TLS listener (`listen_tls`).
pub const TLS_KIND: &str = "tls";
/// The [`Listener::kind`] of the relay socket ([`relay`]): its peers are TCP
/// peers of a sibling process, so they are served as TCP peers (STARTTLS
/// offered, `[tls] require` applies), not as local ones.
pub const RELAY_KIND: &str = "relay";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The directory could not be opened.
    #[error("cannot open the directory in {path}: {source}")]
    Store {
        /// The data folder.
        path: String,
        /// Why.
        source: StoreError,
    },
    /// A listener could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address, path or handed-over descriptor.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The task opening the store ended without an answer.
    #[error("the store could not be opened: its task ended")]
    Opening,
    /// The `[tls]` certificates or keys could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// No listener of any kind.
    #[error(
        "no listener: `listen` is empty, `listen_unix` too, and no socket was handed over \
         (--inherit-cyrus, systemd's LISTEN_FDS); configure at least one"
    )]
    NoListener,
}

impl From<crate::app::OpenError> for ServerError {
    fn from(e: crate::app::OpenError) -> Self {
        ServerError::Store { path: e.path, source: e.source }
    }
}

/// The shared state once the store is open; `None` while it opens.
type Ready = watch::Receiver<Option<Arc<App>>>;

/// A bound server: listening, its store open or still to open.
pub struct Server {
    config: Config,
    listeners: Vec<Listener>,
    /// Unix socket files created here, removed at a clean stop.
    socket_files: SocketFiles,
    shared: Option<Arc<App>>,
    /// The TLS configuration, with `[tls]`.
    tls: Option<Arc<Tls>>,
}

/// How long running connections get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Accept errors (out of descriptors and the like) are logged once per this.
pub(crate) const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept error: descriptors free up as connections close.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl Server {
    /// Bind every listen address, then open the store.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let mut server = Server::listen(config)?;
        let config = server.config.clone();
        let shared =
            tokio::task::spawn_blocking(move || App::open(config)).await.map_err(|_| ServerError::Opening)??;
        server.shared = Some(Arc::new(shared));
        Ok(server)
    }

    /// Bind every listen address; the store opens in [`Server::run`],
    /// while connections are already accepted (their greeting waits for
    /// it, within their login deadline), so that a restart looks to peers
    /// like a slow answer rather than a refused connection.
    pub fn listen(config: Config) -> Result<Server, ServerError> {
        Server::listen_with(config, Vec::new())
    }

    /// [`Server::listen`], serving the sockets handed over by Cyrus's
    /// master or systemd too. Refuses to start with no listener at all.
    pub fn listen_with(config: Config, inherited: Vec<Inherited>) -> Result<Server, ServerError> {
        // The certificates first: a server that cannot do the TLS it is
        // configured for does not start (the error names the file).
        let tls = config.tls.as_ref().map(Tls::load).transpose()?.map(Arc::new);
        let mut listeners = Vec::new();
        for i in inherited {
            listeners.extend(listener::adopt(i)?);
        }
        let mut socket_files = SocketFiles::default();
        let mode = config.unix_mode().map_err(|e| ServerError::Bind {
            addr: "unix_socket_mode".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        for path in &config.listen_unix {
            listeners.push(listener::bind_unix(path, mode)?);
            socket_files.0.push(path.clone());
        }
        let listen_tls = config.tls.as_ref().map(|t| t.listen_tls.clone()).unwrap_or_default();
        for addr in config.tcp_listen(listeners.len() + listen_tls.len()) {
            listeners.push(listener::bind_tcp(addr, config.listen_backlog)?);
        }
        for addr in listen_tls {
            let mut l = listener::bind_tcp(addr, config.listen_backlog)?;
            l.kind = TLS_KIND;
            listeners.push(l);
        }
        if listeners.is_empty() {
            return Err(ServerError::NoListener);
        }
        Ok(Server { config, listeners, socket_files, shared: None, tls })
    }

    /// Also serve on `listener` (the relay socket of [`relay`]); `file` is
    /// removed at a clean stop.
    pub fn with_listener(mut self, listener: Listener, file: Option<std::path::PathBuf>) -> Server {
        self.listeners.push(listener);
        self.socket_files.0.extend(file);
        self
    }

    /// The TCP addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(Listener::tcp_addr).collect()
    }

    /// The implicit-TLS addresses actually bound (`listen_tls`).
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter(|l| l.kind == TLS_KIND).filter_map(Listener::tcp_addr).collect()
    }

    /// The TLS configuration, to reload on SIGHUP ([`Tls::reload`]).
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
    }

    /// Every listener, as logged: its kind and what it listens on.
    pub fn listeners(&self) -> Vec<(&'static str, String)> {
        self.listeners.iter().map(|l| (l.kind, l.label.clone())).collect()
    }

    /// The shared state, once the store is open.
    pub fn shared(&self) -> Option<Arc<App>> {
        self.shared.clone()
    }

    /// Serve until `shutdown` completes, then close every connection
    /// gracefully: each finishes the command it is running and gets a BYE.
    /// Opens the store first if [`Server::listen`] made this server; an
    /// error opening it ends the server.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(self.shared.clone());
        let labels: Vec<(&'static str, String)> = self.listeners();
        let config = Arc::new(self.config.clone());
        let admission = Admission::new(Caps {
            max_connections: config.max_connections,
            max_unauthenticated: config.max_unauthenticated(),
            max_per_peer: config.max_connections_per_peer,
            failed_login_pause: Duration::from_secs(config.failed_login_pause),
            max_login_backoff: Duration::from_secs(config.max_login_backoff),
        });
        let ids = Arc::new(AtomicU64::new(1));
        let throttle = Arc::new(Mutex::new(log::Throttle::new(ACCEPT_ERROR_LOG_INTERVAL)));
        let mut acceptors = JoinSet::new();
        for listener in std::mem::take(&mut self.listeners) {
            let ctx = AcceptContext {
                config: config.clone(),
                ready: ready_rx.clone(),
                admission: admission.clone(),
                ids: ids.clone(),
                throttle: throttle.clone(),
                tls: self.tls.clone(),
            };
            acceptors.spawn(accept_loop(listener, ctx, stop_rx.clone()));
        }
        for (kind, label) in &labels {
            info!(kind, listen = %label, "listening");
        }
        tokio::pin!(shutdown);
        let mut failed = None;
        if self.shared.is_none() {
            let started = std::time::Instant::now();
            let c = (*config).clone();
            let opening = tokio::task::spawn_blocking(move || App::open(c));
            tokio::select! {
                r = opening => match r {
                    Ok(Ok(shared)) => {
                        info!(ms = started.elapsed().as_millis() as u64, "store open");
                        let _ = ready_tx.send(Some(Arc::new(shared)));
                    }
                    Ok(Err(e)) => failed = Some(e.into()),
                    Err(_) => failed = Some(ServerError::Opening),
                },
                _ = &mut shutdown => {}
            }
        }
        if let Some(e) = &failed {
            error!(error = %e, "cannot serve");
        } else if ready_tx.borrow().is_some() {
            for (kind, label) in &labels {
                info!(kind, listen = %label, "mupdated ready");
            }
            shutdown.await;
        }
        info!("shutting down");
        let _ = stop_tx.send(true);
        // Connections still waiting for the store give up now.
        drop(ready_tx);
        let mut sessions = JoinSet::new();
        while let Some(r) = acceptors.join_next().await {
            if let Ok(s) = r {
                sessions = merge(sessions, s);
            }
        }
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            warn!("connections still open after the grace period; closing them");
        }
        self.socket_files.remove();
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn merge(mut into: JoinSet<()>, mut from: JoinSet<()>) -> JoinSet<()> {
    // JoinSet cannot be merged directly; move the remaining tasks' handles
    // by waiting on them in a single task.
    into.spawn(async move { while from.join_next().await.is_some() {} });
    into
}

/// What each accept loop shares.
struct AcceptContext {
    config: Arc<Config>,
    ready: Ready,
    admission: Arc<Admission>,
    ids: Arc<AtomicU64>,
    throttle: Arc<Mutex<log::Throttle>>,
    tls: Option<Arc<Tls>>,
}

/// What a session starts with, whatever its stream.
struct Start {
    app: Arc<App>,
    slot: admission::Slot,
    login_deadline: Instant,
    login: Option<Login>,
    stop: watch::Receiver<bool>,
    /// The server's TLS, on a TCP connection (STARTTLS, implicit TLS).
    tls: Option<Arc<Tls>>,
}

impl Start {
    /// Serve a unix-socket connection: no TLS there.
    async fn run_local<S: crate::session::Transport>(self, stream: S, peer: SessionPeer) {
        let caps = Capabilities::local(&self.app);
        let mut session = Session::new(stream, self.app, peer, self.stop)
            .with_slot(self.slot)
            .with_login_deadline(self.login_deadline)
            .with_capabilities(caps);
        if let Some(login) = self.login {
            info!(user = %login.user, "root on a unix socket: logged in as admin (unix_peer_admin)");
            session = session.with_login(login);
        }
        let _ = session.run().await;
    }

    /// Serve a TCP connection; with `[tls]`, STARTTLS is offered and a
    /// stream it hands back is wrapped in TLS and served again.
    async fn run_tcp<S: crate::session::Transport>(self, stream: S, peer: SessionPeer) {
        let caps = Capabilities::for_connection(&self.app, None);
        let session = Session::new(stream, self.app.clone(), peer, self.stop.clone())
            .with_slot(self.slot)
            .with_login_deadline(self.login_deadline)
            .with_capabilities(caps);
        let Ended::Upgrade(upgrade) = session.run().await else { return };
        // STARTTLS is offered only with a TLS configuration.
        let Some(tls) = self.tls else { return };
        let deadline = upgrade.resume.login_deadline();
        // A failed handshake drops the stream, and with the resume its
        // admission slot.
        let (stream, info) = match tls.accept(upgrade.stream, deadline).await {
            Ok(s) => s,
            Err(e) => {
                info!(error = %e, "closing after STARTTLS");
                return;
            }
        };
        let caps = Capabilities::for_connection(&self.app, Some(&info));
        let session = Session::resume(stream, self.app, upgrade.resume, self.stop).with_tls(info).with_capabilities(caps);
        // In TLS, STARTTLS is refused: the session never hands back again.
        let _ = session.run().await;
    }

    /// Serve an implicit-TLS connection: the handshake, then the banner.
    async fn run_implicit(self, stream: TcpStream, peer: SessionPeer, tls: Arc<Tls>) {
        let (stream, info) = match tls.accept(stream, self.login_deadline).await {
            Ok(s) => s,
            Err(e) => {
                info!(error = %e, "closing");
                return;
            }
        };
        let caps = Capabilities::for_connection(&self.app, Some(&info));
        let session = Session::new(stream, self.app, peer, self.stop)
            .with_slot(self.slot)
            .with_login_deadline(self.login_deadline)
            .with_tls(info)
            .with_capabilities(caps);
        let _ = session.run().await;
    }
}

/// Send one line and close, in the background (a refused connection).
fn refuse<S: AsyncWrite + Unpin + Send + 'static>(sessions: &mut JoinSet<()>, mut socket: S, text: &str) {
    let mut out = Vec::new();
    encode::response(&Response::Bye { text: text.as_bytes().to_vec() }, &mut out);
    sessions.spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&out)).await;
    });
}

/// An accepted connection's stream.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connection on its way to a session, with what the logs say of its peer.
struct Incoming {
    stream: Stream,
    /// The TCP address (`None` on a unix socket).
    addr: Option<SocketAddr>,
    /// As logged: the address, or `unix uid=N pid=N`.
    label: PeerLabel,
    /// Logged in without AUTHENTICATE (root on a unix socket with
    /// `unix_peer_admin`).
    login: Option<Login>,
}

/// A peer as logged, formatted only when a line is written.
enum PeerLabel {
    Tcp(SocketAddr),
    Unix { uid: Option<u32>, pid: Option<i32> },
}

impl std::fmt::Display for PeerLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerLabel::Tcp(a) => write!(f, "{a}"),
            PeerLabel::Unix { uid, pid } => {
                write!(f, "unix")?;
                if let Some(u) = uid {
                    write!(f, " uid={u}")?;
                }
                if let Some(p) = pid {
                    write!(f, " pid={p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Split an accepted connection; `None` when it is closed at once (a TCP
/// peer outside `allow`).
fn peer_of(accepted: Accepted, config: &Config, peer_admin: bool) -> Option<Incoming> {
    match accepted {
        Accepted::Tcp(socket, addr) => {
            if !config.allows(addr.ip()) {
                // Not one of the murder's networks: closed without a word.
                tracing::debug!(peer = %addr, "not in allow, closed");
                return None;
            }
            let _ = socket.set_nodelay(true);
            let label = PeerLabel::Tcp(addr);
            Some(Incoming { stream: Stream::Tcp(socket), addr: Some(addr), label, login: None })
        }
        Accepted::Unix(socket) => {
            let cred = socket.peer_cred().ok();
            let uid = cred.as_ref().map(|c| c.uid());
            let label = PeerLabel::Unix { uid, pid: cred.as_ref().and_then(|c| c.pid()) };
            let login = (peer_admin && config.unix_peer_admin && uid == Some(0)).then(|| Login {
                user: "root".to_string(),
                role: Role::Admin,
                identity: crate::store::Identity { servers: None },
            });
            Some(Incoming { stream: Stream::Unix(socket), addr: None, label, login })
        }
    }
}

async fn accept_loop(listener: Listener, ctx: AcceptContext, mut stop: watch::Receiver<bool>) -> JoinSet<()> {
    let mut sessions = JoinSet::new();
    let implicit_tls = if listener.kind == TLS_KIND { ctx.tls.clone() } else { None };
    let relayed = listener.kind == RELAY_KIND;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Reap finished sessions so the set stays small.
        while sessions.try_join_next().is_some() {}
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, and say so
                // once per interval, not once per try.
                let hit = ctx.throttle.lock().map(|mut t| t.hit(std::time::Instant::now())).unwrap_or(None);
                if let Some(suppressed) = hit {
                    let (open, unauthenticated) = ctx.admission.counts();
                    warn!(error = %e, suppressed, open, unauthenticated, "accept failed; backing off");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let accepted_at = Instant::now();
        let Some(peer) = peer_of(accepted, &ctx.config, listener.peer_admin) else { continue };
        if let Some(status) = &listener.status {
            status.connection();
        }
        let id = ctx.ids.fetch_add(1, Ordering::Relaxed);
        // The per-address caps do not apply to unix peers (no address).
        let slot = match ctx.admission.admit(id, peer.addr.map(|a| a.ip())) {
            Ok(s) => s,
            Err(r) => {
                let why = match r {
                    Refusal::Full => "connection limit reached, refusing",
                    Refusal::PerPeer => "connection limit of this peer reached, refusing",
                };
                warn!(peer = %peer.label, "{why}");
                let text = crate::protocol::cyrus::SERVER_UNABLE;
                match peer.stream {
                    Stream::Tcp(s) => refuse(&mut sessions, s, text),
                    Stream::Unix(s) => refuse(&mut sessions, s, text),
                }
                continue;
            }
        };
        let span = tracing::info_span!("conn", id, peer = %peer.label, user = tracing::field::Empty);
        let mut ready = ctx.ready.clone();
        let stop = stop.clone();
        let login_deadline = accepted_at + Duration::from_secs(ctx.config.login_timeout);
        let tls = ctx.tls.clone();
        let implicit_tls = implicit_tls.clone();
        sessions.spawn(
            async move {
                // The greeting waits for the store, within the login deadline.
                let shared = match tokio::time::timeout_at(login_deadline, ready.wait_for(|s| s.is_some())).await {
                    Ok(Ok(s)) => s.clone(),
                    _ => return,
                };
                let Some(shared) = shared else { return };
                let start = Start { app: shared, slot, login_deadline, login: peer.login, stop, tls };
                let session_peer = match peer.label {
                    PeerLabel::Tcp(addr) => SessionPeer::Tcp(addr),
                    PeerLabel::Unix { uid, .. } => SessionPeer::Unix { uid },
                };
                match (peer.stream, implicit_tls) {
                    (Stream::Tcp(s), Some(tls)) => start.run_implicit(s, session_peer, tls).await,
                    (Stream::Tcp(s), None) => start.run_tcp(s, session_peer).await,
                    (Stream::Unix(s), _) if relayed => start.run_tcp(s, session_peer).await,
                    (Stream::Unix(s), _) => start.run_local(s, session_peer).await,
                }
            }
            .instrument(span),
        );
    }
    sessions
}
