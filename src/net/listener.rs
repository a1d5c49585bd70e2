//! The listener kinds: TCP addresses and unix socket paths from the
//! configuration, and sockets handed over by Cyrus's master or systemd
//! ([`super::inherit`]). Each accepts into an [`Accepted`] stream with its
//! peer description; the accept loop in [`super`] does the rest.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};

use super::inherit::{CyrusStatus, Inherited, Socket};
use super::ServerError;

/// One listening socket of the server.
pub struct Listener {
    /// The socket.
    pub socket: Kind,
    /// How it was set up, as logged: `tcp`, `unix`, `cyrus-master`, `systemd`.
    pub kind: &'static str,
    /// What it listens on, as logged (address, path, or descriptor name).
    pub label: String,
    /// Cyrus master's status pipe, told of each connection.
    pub status: Option<Arc<CyrusStatus>>,
    /// `unix_peer_admin` may log root in here without AUTHENTICATE (the
    /// `listen_unix` sockets only: never the relay socket, whose peer is
    /// a sibling mupdated relaying somebody else).
    pub peer_admin: bool,
}

/// The socket of a [`Listener`].
pub enum Kind {
    /// TCP.
    Tcp(TcpListener),
    /// A unix stream socket.
    Unix(UnixListener),
}

/// An accepted connection.
pub enum Accepted {
    /// A TCP peer and its address.
    Tcp(TcpStream, SocketAddr),
    /// A unix socket peer.
    Unix(UnixStream),
}

impl Listener {
    /// Accept the next connection.
    pub async fn accept(&self) -> std::io::Result<Accepted> {
        match &self.socket {
            Kind::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a)),
            Kind::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }

    /// The TCP address, when it is a TCP listener (port 0 resolved).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Kind::Tcp(l) => l.local_addr().ok(),
            Kind::Unix(_) => None,
        }
    }
}

/// Bind one address with the configured backlog (tokio's default is 128).
pub fn bind_tcp(addr: SocketAddr, backlog: u32) -> Result<Listener, ServerError> {
    let err = |source| ServerError::Bind { addr: addr.to_string(), source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let listener = socket.listen(backlog).map_err(err)?;
    let label = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.to_string());
    Ok(Listener { socket: Kind::Tcp(listener), kind: "tcp", label, status: None, peer_admin: false })
}

/// Bind a unix socket at `path` with permissions `mode`. A socket file left
/// by a previous run (nobody accepts on it) is replaced; a live one, or a
/// file that is not a socket, is an error.
pub fn bind_unix(path: &Path, mode: u32) -> Result<Listener, ServerError> {
    let err = |source| ServerError::Bind { addr: path.display().to_string(), source };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server accepts on this socket",
                )));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a file that is not a socket")));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(Listener {
        socket: Kind::Unix(listener),
        kind: "unix",
        label: path.display().to_string(),
        status: None,
        peer_admin: true,
    })
}

/// The sockets handed over by Cyrus's master or systemd, for tokio.
pub fn adopt(inherited: Inherited) -> Result<Vec<Listener>, ServerError> {
    let kind = inherited.origin.kind();
    let status = inherited.status.map(Arc::new);
    let mut out = Vec::with_capacity(inherited.sockets.len());
    for (name, socket) in inherited.sockets {
        let what = format!("{kind} {name}");
        let err = |source| ServerError::Bind { addr: what.clone(), source };
        let (socket, label) = match socket {
            Socket::Tcp(l) => {
                l.set_nonblocking(true).map_err(err)?;
                let l = TcpListener::from_std(l).map_err(err)?;
                let label = l.local_addr().map(|a| format!("{name} {a}")).unwrap_or(name);
                (Kind::Tcp(l), label)
            }
            Socket::Unix(l) => {
                l.set_nonblocking(true).map_err(err)?;
                let path = l.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
                let label = match path {
                    Some(p) => format!("{name} {p}"),
                    None => name,
                };
                (Kind::Unix(UnixListener::from_std(l).map_err(err)?), label)
            }
        };
        // A unix socket systemd passes stands for a `listen_unix` one.
        let peer_admin = matches!(socket, Kind::Unix(_));
        out.push(Listener { socket, kind, label, status: status.clone(), peer_admin });
    }
    Ok(out)
}

/// The unix socket files this server created, removed at a clean stop.
#[derive(Default)]
pub struct SocketFiles(pub Vec<PathBuf>);

impl SocketFiles {
    /// Remove them (a file already gone is not an error).
    pub fn remove(&mut self) {
        for p in self.0.drain(..) {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove the unix socket");
                }
            }
        }
    }
}

/// Bind the relay socket at `path` (owner only, mode 0600: only the same
/// user's sibling processes connect; see [`super::relay`]).
pub fn bind_relay(path: &Path) -> Result<Listener, ServerError> {
    let mut l = bind_unix(path, 0o600)?;
    l.kind = super::RELAY_KIND;
    l.peer_admin = false;
    Ok(l)
}
