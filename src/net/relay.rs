//! One directory, several processes: Cyrus's `master` given
//! `listen=PORT` (no address) opens one socket per address family and
//! starts a service process for each, but only one process can hold the
//! directory. With `--inherit-cyrus` each process first takes
//! `DATA_DIR.owner.lock` ([`claim`]): the one that gets it serves and also
//! listens on `DATA_DIR.relay.sock`; the others relay every connection
//! they accept there, byte for byte ([`run`]), and tell master of each
//! connection as the owner does. They stay up, so master never respawns
//! them; when the owner restarts, relayed connections retry the socket
//! within the login deadline.
//!
//! A relayed peer reaches the owner as a unix-socket peer: the allow list
//! is checked by the relaying process; the per-address caps and login
//! backoff do not apply to it (as for any unix peer), and
//! `unix_peer_admin` never applies to the relay socket.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::listener::{Accepted, Listener};
use crate::config::Config;

/// The lock file and the relay socket beside a data folder.
pub fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut p = data_dir.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    (with(".owner.lock"), with(".relay.sock"))
}

/// What this process is among the siblings sharing a data folder.
pub enum Role {
    /// It holds the lock (kept open for the process's life) and serves.
    Owner(File),
    /// Another process holds it: relay to its socket.
    Relay,
}

/// Take the owner's lock if nobody holds it.
pub fn claim(data_dir: &Path) -> std::io::Result<Role> {
    let (lock, _) = paths(data_dir);
    let file = File::options().create(true).truncate(false).write(true).open(&lock)?;
    match file.try_lock() {
        Ok(()) => Ok(Role::Owner(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Role::Relay),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// How often a relayed connection retries the owner's socket.
const RETRY: Duration = Duration::from_millis(100);

/// Relay every connection accepted on `listeners` to the owner's `socket`
/// until `shutdown` completes; the relayed connections are closed then
/// (their Cyrus clients reconnect, as after any restart).
pub async fn run(listeners: Vec<Listener>, socket: PathBuf, config: Arc<Config>, shutdown: impl std::future::Future<Output = ()>) {
    let socket = Arc::new(socket);
    let mut loops = JoinSet::new();
    for l in listeners {
        info!(kind = l.kind, listen = %l.label, to = %socket.display(), "relaying to the process that holds the directory");
        let (socket, config) = (socket.clone(), config.clone());
        loops.spawn(async move {
            let mut relays = JoinSet::new();
            // Accept errors as the server's own loop takes them: a pause,
            // and one line per interval.
            let mut throttle = crate::logging::Throttle::new(super::ACCEPT_ERROR_LOG_INTERVAL);
            loop {
                let accepted = match l.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        if let Some(suppressed) = throttle.hit(std::time::Instant::now()) {
                            warn!(error = %e, suppressed, "accept failed; backing off");
                        }
                        tokio::time::sleep(super::ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                while relays.try_join_next().is_some() {}
                if let Some(status) = &l.status {
                    status.connection();
                }
                let deadline = tokio::time::Instant::now() + Duration::from_secs(config.login_timeout);
                match accepted {
                    Accepted::Tcp(s, addr) => {
                        if !config.allows(addr.ip()) {
                            debug!(peer = %addr, "not in allow, closed");
                            continue;
                        }
                        let _ = s.set_nodelay(true);
                        relays.spawn(relay(s, socket.clone(), deadline));
                    }
                    Accepted::Unix(s) => {
                        relays.spawn(relay(s, socket.clone(), deadline));
                    }
                }
            }
        });
    }
    shutdown.await;
    info!("shutting down the relay");
    loops.shutdown().await;
}

/// One connection: connect to the owner (retrying until `deadline`), then
/// copy both ways until either side closes.
async fn relay<S>(mut peer: S, socket: Arc<PathBuf>, deadline: tokio::time::Instant)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut owner = loop {
        match UnixStream::connect(socket.as_path()).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() + RETRY < deadline => {
                debug!(error = %e, "the owner's socket is not there yet; retrying");
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => {
                warn!(error = %e, socket = %socket.display(), "no process holds the directory; closing");
                return;
            }
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut peer, &mut owner).await {
        debug!(error = %e, "relayed connection ended");
    }
}
