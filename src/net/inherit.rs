//! Listening sockets handed over at exec: by Cyrus's `master` (a
//! `cyrus.conf` SERVICES entry) or by systemd socket activation.
//!
//! Taking ownership of a descriptor number is `unsafe` in Rust; the crate
//! forbids unsafe code, so the sockets go through the `listenfd` crate,
//! which checks that each descriptor is a stream socket of the kind asked
//! for before it wraps it, and Cyrus's status pipe through the
//! `filedescriptor` crate, which duplicates a descriptor number into an
//! owned one (reopening `/proc/self/fd/3` does not do: the pipe belongs to
//! root, master made it before it dropped to the cyrus user). Both read
//! the environment, and the Cyrus one sets it: call them before any thread
//! starts (at the top of `main`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;

use listenfd::ListenFd;

/// Cyrus 3.6.1 `master/service.h`: the status pipe to master.
pub const CYRUS_STATUS_FD: i32 = 3;
/// Cyrus 3.6.1 `master/service.h`: the service's listening socket.
pub const CYRUS_LISTEN_FD: i32 = 4;
/// Cyrus 3.6.1 `master/service.h` `MASTER_SERVICE_CONNECTION_MULTI`: a
/// threaded service took one more connection and is still available.
const MASTER_SERVICE_CONNECTION_MULTI: i32 = 0x04;

/// Who handed the sockets over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Cyrus's `master`, descriptor 4 (`--inherit-cyrus`).
    CyrusMaster,
    /// systemd (`LISTEN_FDS`, from descriptor 3 on).
    Systemd,
}

impl Origin {
    /// The listener kind as logged.
    pub fn kind(self) -> &'static str {
        match self {
            Origin::CyrusMaster => "cyrus-master",
            Origin::Systemd => "systemd",
        }
    }
}

/// One handed-over listening socket, as the standard library's type.
#[derive(Debug)]
pub enum Socket {
    /// A TCP listener (IPv4 or IPv6).
    Tcp(std::net::TcpListener),
    /// A unix stream listener.
    Unix(std::os::unix::net::UnixListener),
}

/// What was handed over.
#[derive(Debug)]
pub struct Inherited {
    /// Who handed it over.
    pub origin: Origin,
    /// The listening sockets, each with its name (`LISTEN_FDNAMES`, or the
    /// descriptor number).
    pub sockets: Vec<(String, Socket)>,
    /// Cyrus's status pipe, to tell master of each connection.
    pub status: Option<CyrusStatus>,
}

/// Why handed-over sockets could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// `--inherit-cyrus`, but descriptor 4 is not a listening socket.
    #[error(
        "--inherit-cyrus: descriptor {CYRUS_LISTEN_FD} is not a listening stream socket ({0}); \
         this flag is for a cyrus.conf SERVICES entry run by Cyrus's master"
    )]
    NoCyrusListener(String),
    /// `--inherit-cyrus`, but descriptor 3 is not master's status pipe.
    #[error("--inherit-cyrus: descriptor {CYRUS_STATUS_FD} is not Cyrus master's status pipe ({0})")]
    NoCyrusStatus(String),
    /// `LISTEN_FDS` names a descriptor that is not a stream socket.
    #[error("systemd socket activation: descriptor {fd} is not a listening TCP or unix stream socket")]
    NotASocket {
        /// The descriptor number.
        fd: usize,
    },
}

/// Cyrus master's status pipe: one 8-byte message (`struct
/// notify_message`: the message, then our pid, native ints) per event.
#[derive(Debug)]
pub struct CyrusStatus {
    pipe: File,
}

impl CyrusStatus {
    /// Tell master one more connection is served and we are still
    /// available, as Cyrus's own threaded services do after each accept
    /// (`master/service-thread.c`); master then never forks another.
    /// A failure is only logged: the connection goes on.
    pub fn connection(&self) {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&MASTER_SERVICE_CONNECTION_MULTI.to_ne_bytes());
        msg[4..].copy_from_slice(&(std::process::id() as i32).to_ne_bytes());
        // One write of 8 bytes to a pipe is atomic; the descriptor is non-blocking,
        // so a master that stopped reading never stalls the accept loop.
        if let Err(e) = (&self.pipe).write_all(&msg) {
            tracing::debug!(error = %e, "unable to tell master of a connection");
        }
    }
}

/// The listener Cyrus's master passes to a service (descriptor 4) and its
/// status pipe (descriptor 3). Sets and clears the `LISTEN_FDS` variables
/// for `listenfd`: call before any thread starts.
pub fn from_cyrus_master() -> Result<Inherited, InheritError> {
    std::env::set_var("LISTEN_FDS", "1");
    std::env::set_var("LISTEN_FDS_FIRST_FD", CYRUS_LISTEN_FD.to_string());
    std::env::remove_var("LISTEN_PID");
    let mut fds = ListenFd::from_env();
    std::env::remove_var("LISTEN_FDS_FIRST_FD");
    std::env::remove_var("LISTEN_FDNAMES");
    let socket = take(&mut fds, 0).map_err(InheritError::NoCyrusListener)?;
    // A duplicate of the pipe, non-blocking (master never writes to it).
    let status = |e: filedescriptor::Error| InheritError::NoCyrusStatus(e.to_string());
    let mut fd = filedescriptor::FileDescriptor::dup(&CYRUS_STATUS_FD).map_err(status)?;
    fd.set_non_blocking(true).map_err(status)?;
    let pipe = fd.as_file().map_err(status)?;
    match pipe.metadata() {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => return Err(InheritError::NoCyrusStatus("not a pipe".into())),
        Err(e) => return Err(InheritError::NoCyrusStatus(e.to_string())),
    }
    Ok(Inherited {
        origin: Origin::CyrusMaster,
        sockets: vec![(format!("fd {CYRUS_LISTEN_FD}"), socket)],
        status: Some(CyrusStatus { pipe }),
    })
}

/// The sockets systemd passed (`LISTEN_FDS` for this process's pid), if
/// any; the variables are cleared so nothing started later sees them.
pub fn from_systemd() -> Result<Option<Inherited>, InheritError> {
    if std::env::var_os("LISTEN_FDS").is_none() {
        return Ok(None);
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    std::env::remove_var("LISTEN_FDNAMES");
    // Clears LISTEN_FDS and LISTEN_PID; empty when they were for another pid.
    let mut fds = ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let mut sockets = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let socket = take(&mut fds, i).map_err(|_| InheritError::NotASocket { fd: 3 + i })?;
        let name = names.get(i).filter(|n| !n.is_empty()).cloned().unwrap_or_else(|| format!("fd {}", 3 + i));
        sockets.push((name, socket));
    }
    Ok(Some(Inherited { origin: Origin::Systemd, sockets, status: None }))
}

/// Descriptor `i` of `fds` as a TCP or else a unix listener.
fn take(fds: &mut ListenFd, i: usize) -> Result<Socket, String> {
    match fds.take_tcp_listener(i) {
        Ok(Some(l)) => return Ok(Socket::Tcp(l)),
        Ok(None) => return Err("no such descriptor".into()),
        Err(_) => {}
    }
    match fds.take_unix_listener(i) {
        Ok(Some(l)) => Ok(Socket::Unix(l)),
        Ok(None) => Err("no such descriptor".into()),
        Err(e) => Err(e.to_string()),
    }
}
