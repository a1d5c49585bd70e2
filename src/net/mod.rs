//! Listener, connection cap, graceful shutdown.

pub mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn, Instrument};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::protocol::{encode, Limits, Response};
use crate::replication::Hub;
use crate::session::Session;
use crate::store::{Store, StoreConfig, StoreError};

/// What every connection shares.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub auth: Authenticator,
    pub limits: Limits,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the directory in {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
}

/// How long running connections get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Server {
    /// Open the store and bind every listen address.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let store_config = StoreConfig {
            path: config.data_dir.clone(),
            cache_capacity: config.cache_capacity_mb.saturating_mul(1024 * 1024),
            compression: config.compression,
            compression_level: config.compression_level,
            verify_on_open: config.verify_on_open,
        };
        let store = Store::open(&store_config, &config.store_groups())
            .map_err(|source| ServerError::Store { path: config.data_dir.display().to_string(), source })?;
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr: *addr, source })?;
            listeners.push(l);
        }
        let limits = Limits { max_line: config.max_line, max_literal: config.max_message, max_message: config.max_message };
        let shared = Arc::new(Shared {
            auth: Authenticator::new(&config.users),
            hub: Hub::new(config.max_stream_pending),
            store,
            limits,
            config,
        });
        Ok(Server { shared, listeners })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// The shared state (tests and the admin tools use it).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serve until `shutdown` completes, then close every connection
    /// gracefully: each finishes the command it is running and gets a BYE.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(self.shared.config.max_connections));
        let ids = Arc::new(AtomicU64::new(1));
        let mut acceptors = JoinSet::new();
        for listener in self.listeners {
            let shared = self.shared.clone();
            let permits = permits.clone();
            let ids = ids.clone();
            let stop_rx = stop_rx.clone();
            acceptors.spawn(accept_loop(listener, shared, permits, ids, stop_rx));
        }
        for a in self.shared.config.listen.iter() {
            info!(listen = %a, "mupdated ready");
        }
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
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
    }
}

fn merge(mut into: JoinSet<()>, mut from: JoinSet<()>) -> JoinSet<()> {
    // JoinSet cannot be merged directly; move the remaining tasks' handles
    // by waiting on them in a single task.
    into.spawn(async move { while from.join_next().await.is_some() {} });
    into
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut sessions = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Reap finished sessions so the set stays small.
        while sessions.try_join_next().is_some() {}
        let (mut socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, don't spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, "connection limit reached, refusing");
            let mut out = Vec::new();
            encode::response(&Response::Bye { text: crate::protocol::cyrus::SERVER_UNABLE.into() }, &mut out);
            sessions.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&out)).await;
            });
            continue;
        };
        let span = tracing::info_span!("conn", id, %peer, user = tracing::field::Empty);
        let shared = shared.clone();
        let stop = stop.clone();
        sessions.spawn(
            async move {
                Session::new(shared, socket, stop).run().await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    sessions
}
