//! Listeners, admission (connection caps, allow list), graceful shutdown,
//! and a start that listens before the store is open.

pub mod admission;
pub mod connection;
pub mod log;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

use crate::app::App;
use crate::config::Config;
use crate::protocol::{encode, Response};
use crate::session::{Peer, Session};
use crate::store::StoreError;
use admission::{Admission, Caps, Refusal};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the directory in {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the store could not be opened: its task ended")]
    Opening,
}

/// The shared state once the store is open; `None` while it opens.
type Ready = watch::Receiver<Option<Arc<App>>>;

/// A bound server: listening, its store open or still to open.
pub struct Server {
    config: Config,
    listeners: Vec<TcpListener>,
    shared: Option<Arc<App>>,
}

/// How long running connections get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Accept errors (out of descriptors and the like) are logged once per this.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept error: descriptors free up as connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Bind one address with the configured backlog (tokio's default is 128).
fn bind_one(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(backlog).map_err(err)
}

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
        let listeners = config.listen.iter().map(|a| bind_one(*a, config.listen_backlog)).collect::<Result<_, _>>()?;
        Ok(Server { config, listeners, shared: None })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// The shared state, once the store is open.
    pub fn shared(&self) -> Option<Arc<App>> {
        self.shared.clone()
    }

    /// Serve until `shutdown` completes, then close every connection
    /// gracefully: each finishes the command it is running and gets a BYE.
    /// Opens the store first if [`Server::listen`] made this server; an
    /// error opening it ends the server.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(self.shared.clone());
        let config = Arc::new(self.config);
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
        for listener in self.listeners {
            let ctx = AcceptContext {
                config: config.clone(),
                ready: ready_rx.clone(),
                admission: admission.clone(),
                ids: ids.clone(),
                throttle: throttle.clone(),
            };
            acceptors.spawn(accept_loop(listener, ctx, stop_rx.clone()));
        }
        for a in config.listen.iter() {
            info!(listen = %a, "listening");
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
                    Ok(Err(e)) => failed = Some(e),
                    Err(_) => failed = Some(ServerError::Opening),
                },
                _ = &mut shutdown => {}
            }
        }
        if let Some(e) = &failed {
            error!(error = %e, "cannot serve");
        } else if ready_tx.borrow().is_some() {
            for a in config.listen.iter() {
                info!(listen = %a, "mupdated ready");
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
}

/// Send one line and close, in the background (a refused connection).
fn refuse(sessions: &mut JoinSet<()>, mut socket: TcpStream, text: &str) {
    let mut out = Vec::new();
    encode::response(&Response::Bye { text: text.as_bytes().to_vec() }, &mut out);
    sessions.spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&out)).await;
    });
}

async fn accept_loop(listener: TcpListener, ctx: AcceptContext, mut stop: watch::Receiver<bool>) -> JoinSet<()> {
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Reap finished sessions so the set stays small.
        while sessions.try_join_next().is_some() {}
        let (socket, peer) = match accepted {
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
        if !ctx.config.allows(peer.ip()) {
            // Not one of the murder's networks: closed without a word.
            tracing::debug!(%peer, "not in allow, closed");
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        let id = ctx.ids.fetch_add(1, Ordering::Relaxed);
        let slot = match ctx.admission.admit(id, peer.ip()) {
            Ok(s) => s,
            Err(r) => {
                let why = match r {
                    Refusal::Full => "connection limit reached, refusing",
                    Refusal::PerPeer => "connection limit of this peer reached, refusing",
                };
                warn!(%peer, "{why}");
                refuse(&mut sessions, socket, crate::protocol::cyrus::SERVER_UNABLE);
                continue;
            }
        };
        let span = tracing::info_span!("conn", id, %peer, user = tracing::field::Empty);
        let mut ready = ctx.ready.clone();
        let stop = stop.clone();
        let login_deadline = accepted_at + Duration::from_secs(ctx.config.login_timeout);
        sessions.spawn(
            async move {
                // The greeting waits for the store, within the login deadline.
                let shared = match tokio::time::timeout_at(login_deadline, ready.wait_for(|s| s.is_some())).await {
                    Ok(Ok(s)) => s.clone(),
                    _ => return,
                };
                let Some(shared) = shared else { return };
                // No STARTTLS offered yet: the session never hands its stream back.
                let _ = Session::new(socket, shared, Peer::Tcp(peer), stop)
                    .with_slot(slot)
                    .with_login_deadline(login_deadline)
                    .run()
                    .await;
            }
            .instrument(span),
        );
    }
    sessions
}
