//! The listener kinds: a unix socket (its mode, its login, root as admin
//! with `unix_peer_admin`, a stale socket file replaced, removed at stop),
//! sockets passed by systemd (Debian's `systemd-socket-activate`, TCP and
//! unix), and a start with no listener or `--inherit-cyrus` without
//! Cyrus's descriptors refused with a clear message.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use mupdated::config::Config;
use mupdated::net::{Server, ServerError};
use mupdated::tools::client::{plain_base64, Client};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::durability::{free_port, Daemon};
use crate::server::TestServer;

/// How long one answer may take before the test fails.
const WAIT: Duration = Duration::from_secs(20);

/// A raw MUPDATE connection over a unix socket, one line at a time.
struct Unix {
    stream: BufReader<UnixStream>,
}

impl Unix {
    /// Connect and read the greeting up to its `* OK MUPDATE` line.
    async fn connect(path: &Path) -> Unix {
        let stream = UnixStream::connect(path).await.unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
        let mut c = Unix { stream: BufReader::new(stream) };
        loop {
            let line = c.line().await;
            assert!(line.starts_with("* "), "greeting: {line:?}");
            if line.starts_with("* OK MUPDATE") {
                return c;
            }
        }
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        match tokio::time::timeout(WAIT, self.stream.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => line,
            other => panic!("no line from the server: {other:?}"),
        }
    }

    /// Send one command line; return every line up to and including its
    /// tagged answer.
    async fn run(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.stream.get_mut().write_all(format!("{tag} {command}\r\n").as_bytes()).await.unwrap();
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            let done = line.starts_with(&format!("{tag} OK")) || line.starts_with(&format!("{tag} NO"))
                || line.starts_with(&format!("{tag} BAD"));
            lines.push(line.trim_end().to_string());
            if done {
                return lines;
            }
        }
    }

    async fn login(&mut self, user: &str, password: &str) {
        let answer = self.run("A0", &format!("AUTHENTICATE \"PLAIN\" \"{}\"", plain_base64(user, password))).await;
        assert_eq!(answer.last().map(String::as_str), Some("A0 OK \"Authenticated\""), "{answer:?}");
    }
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("mupdated.sock")
}

async fn unix_server(mode: Option<&str>, peer_admin: bool) -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path());
    let mut head = format!("listen_unix = [\"{}\"]\nunix_peer_admin = {peer_admin}\n", path.display());
    if let Some(m) = mode {
        head.push_str(&format!("unix_socket_mode = \"{m}\"\n"));
    }
    (TestServer::start_in(dir, &head, "").await, path)
}

fn mode_of(path: &Path) -> u32 {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(m.file_type().is_socket(), "{} is not a socket", path.display());
    m.permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_session_logs_in_finds_and_lists() {
    let (server, path) = unix_server(None, false).await;
    assert_eq!(mode_of(&path), 0o660, "unix_socket_mode defaults to 0660");
    let mut c = Unix::connect(&path).await;
    // A login is required there as on TCP.
    assert_eq!(c.run("F0", "FIND \"user.u\"").await, ["F0 BAD \"Please login first\""]);
    c.login("be1", "be1pw").await;
    assert_eq!(c.run("A1", "ACTIVATE \"user.u\" \"be1!default\" \"u\tlrs\t\"").await, ["A1 OK \"done\""]);
    assert_eq!(
        c.run("F1", "FIND \"user.u\"").await,
        ["F1 MAILBOX \"user.u\" \"be1!default\" \"u\tlrs\t\"", "F1 OK \"Search completed\""]
    );
    let list = c.run("L1", "LIST").await;
    assert_eq!(list, ["L1 MAILBOX \"user.u\" \"be1!default\" \"u\tlrs\t\"", "L1 OK \"list complete\""]);
    // The same directory over TCP.
    let mut tcp = crate::server::admin(&server.addr()).await;
    assert!(tcp.find(b"user.u").await.unwrap().is_some());
    // (The folder is kept until the check: only the socket file must go.)
    let dir = server.stop().await;
    assert!(dir.path().join("data").exists());
    assert!(!path.exists(), "a clean stop removes the socket file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_mode_is_the_configured_one_and_bad_modes_are_refused() {
    let (server, path) = unix_server(Some("0600"), false).await;
    assert_eq!(mode_of(&path), 0o600);
    server.stop().await;
    for bad in ["660x", "0868", "12345", "", "4755"] {
        let e = Config::parse(&format!("unix_socket_mode = \"{bad}\"")).unwrap_err().to_string();
        assert!(e.contains("unix_socket_mode must be octal permissions"), "{bad:?}: {e}");
    }
    assert!(Config::parse("listen_unix = [\"/a\", \"/a\"]").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_on_the_unix_socket_is_admin_only_with_unix_peer_admin() {
    assert!(rustix::process::geteuid().is_root(), "this test checks SO_PEERCRED uid 0: run the tests as root");
    let (server, path) = unix_server(None, true).await;
    let mut c = Unix::connect(&path).await;
    // No AUTHENTICATE: an admin command and a write go through.
    assert_eq!(c.run("G1", "XGROUPS").await, ["G1 OK \"done\""]);
    assert_eq!(c.run("A1", "ACTIVATE \"user.r\" \"be1!default\" \"r\tlrs\t\"").await, ["A1 OK \"done\""]);
    assert_eq!(c.run("R1", "XRECORDS \"user.r\"").await.len(), 2);
    // TCP is untouched by the key: a login is still needed there.
    let (mut tcp, _) = Client::connect(&server.addr(), WAIT).await.unwrap();
    tcp.send_raw(b"N1 NOOP\r\n").await.unwrap();
    assert!(matches!(
        tcp.read_response().await.unwrap(),
        mupdated::protocol::Response::Tagged { status: mupdated::protocol::Status::Bad, text, .. }
            if text == b"Please login first"
    ));
    server.stop().await;

    // Without the key, root logs in like anyone else.
    let (server, path) = unix_server(None, false).await;
    let mut c = Unix::connect(&path).await;
    // (Cyrus's docmd: only words starting like its own commands get
    // "Please login first"; the admin extensions are unknown words then.)
    assert_eq!(c.run("G1", "XGROUPS").await, ["G1 BAD \"Unrecognized command\""]);
    assert_eq!(c.run("N1", "NOOP").await, ["N1 BAD \"Please login first\""]);
    assert_eq!(c.run("A1", "ACTIVATE \"user.q\" \"be1!default\" \"\"").await, ["A1 BAD \"Please login first\""]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path());
    // A previous run's socket: the file stays, nobody accepts.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let head = format!("listen_unix = [\"{}\"]\n", path.display());
    let server = TestServer::start_in(dir, &head, "").await;
    let mut c = Unix::connect(&path).await;
    assert_eq!(c.run("N1", "NOOP").await, ["N1 BAD \"Please login first\""]);

    // A second server on the same path while the first serves: refused.
    let mut config = Config::parse(&format!("{head}listen = []\n")).unwrap();
    config.data_dir = server.dir.path().join("other");
    let e = Server::listen(config).err().expect("a live socket is not taken over");
    assert!(e.to_string().contains("another server accepts on this socket"), "{e}");
    // ... and a file that is not a socket is not removed.
    let plain = server.dir.path().join("plain");
    std::fs::write(&plain, "keep").unwrap();
    let mut config = Config::parse(&format!("listen_unix = [\"{}\"]\nlisten = []\n", plain.display())).unwrap();
    config.data_dir = server.dir.path().join("other");
    assert!(Server::listen(config).is_err());
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep");
    server.stop().await;
}

#[tokio::test]
async fn no_listener_of_any_kind_is_refused_with_a_message() {
    let config = Config::parse("listen = []\n").unwrap();
    let e = Server::listen(config).err().expect("refused");
    assert!(matches!(e, ServerError::NoListener), "{e}");
    assert!(e.to_string().starts_with("no listener:"), "{e}");
    // `listen` absent means the default only when nothing else listens.
    assert_eq!(Config::parse("").unwrap().tcp_listen(0), mupdated::config::default_listen());
    assert!(Config::parse("").unwrap().tcp_listen(1).is_empty());

    // The daemon says so and exits non-zero.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mupdated.toml");
    std::fs::write(&config, format!("listen = []\ndata_dir = \"{}\"\n", dir.path().join("data").display())).unwrap();
    let out = Process::new(env!("CARGO_BIN_EXE_mupdated")).arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("mupdated: no listener:"), "{stderr}");
}

#[test]
fn inherit_cyrus_without_the_descriptors_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mupdated.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", dir.path().join("data").display())).unwrap();
    // Cyrus's own arguments are ignored; descriptor 4 is not there.
    let out = Process::new(env!("CARGO_BIN_EXE_mupdated"))
        .args(["-C", "/etc/imapd.conf", "--config"])
        .arg(&config)
        .args(["--inherit-cyrus", "-m"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--inherit-cyrus: descriptor 4 is not a listening stream socket"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "nothing was opened");
}

/// `systemd-socket-activate` (Debian package systemd) passes a TCP and a
/// unix listener with LISTEN_FDS; mupdated, with no `listen` of its own,
/// serves both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activation_serves_every_passed_listener() {
    let activate = Path::new("/usr/bin/systemd-socket-activate");
    assert!(activate.exists(), "{} is missing: apt-get install systemd", activate.display());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mupdated.toml");
    let unix = socket_path(dir.path());
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[[users]]\nname = \"mupdater\"\npassword = \"secret\"\nrole = \"admin\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("log");
    let child = Process::new(activate)
        .arg("-l")
        .arg(&addr)
        .arg("-l")
        .arg(&unix)
        .arg("--fdname=murder:local")
        .arg(env!("CARGO_BIN_EXE_mupdated"))
        .arg("--config")
        .arg(&config)
        .args(["--log", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start systemd-socket-activate");
    let _daemon = Daemon(child);
    // It listens at once and starts mupdated at the first connection.
    // Within WAIT in all: a connection refused (not listening yet) is
    // tried again, a greeting that does not come fails the test.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tcp = None;
    while tokio::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match Client::connect(&addr, left).await {
            Ok(c) => {
                tcp = Some(c.0);
                break;
            }
            Err(mupdated::tools::client::ClientError::Io(_)) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(_) => break,
        }
    }
    let mut tcp =
        tcp.unwrap_or_else(|| panic!("no greeting on {addr}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    tcp.authenticate("mupdater", "secret").await.unwrap();
    tcp.run_ok(&mupdated::protocol::Command::Activate {
        name: "user.s".into(),
        location: "be1!default".into(),
        acl: "s\tlrs\t".into(),
    })
    .await
    .unwrap();
    let mut c = Unix::connect(&unix).await;
    c.login("mupdater", "secret").await;
    assert_eq!(
        c.run("F1", "FIND \"user.s\"").await,
        ["F1 MAILBOX \"user.s\" \"be1!default\" \"s\tlrs\t\"", "F1 OK \"Search completed\""]
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("listening kind=\"systemd\" listen=murder {addr}")), "{text}");
    assert!(text.contains(&format!("listening kind=\"systemd\" listen=local {}", unix.display())), "{text}");
    assert!(!text.contains("127.0.0.1:3905"), "no default TCP listener next to passed ones: {text}");
}
