//! An in-process mupdated on a free loopback port with a fresh database.

use std::net::SocketAddr;

use std::time::Duration;

use mupdated::tools::client::Client;
use mupdated::config::Config;
use mupdated::app::App;
use mupdated::net::Server;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Held by the test that bounds this process's memory growth
/// (`limits::stalled_subscribers`) and by the tests that take hundreds of
/// connections at once (`tls::hostile_tls_input_ends_only_its_own_connection`),
/// so that the one never measures the other: the bound allows for the
/// ordinary tests running beside it, not for 500 parallel handshakes.
pub static MEMORY_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const CONFIG: &str = r#"
listen = ["127.0.0.1:0"]
server_name = "mupdate.test"
failed_login_pause = 1

[[users]]
name = "mupdater"
password = "secret"
role = "admin"

[[users]]
name = "be1"
password = "be1pw"
role = "backend"
servers = ["be1"]

[[users]]
name = "be2"
password = "be2pw"
role = "backend"
servers = ["be2"]

[[users]]
name = "be1a"
password = "be1apw"
role = "backend"
servers = ["be1a"]

[[users]]
name = "be1b"
password = "be1bpw"
role = "backend"
servers = ["be1b"]

[[users]]
name = "fe"
password = "fepw"
role = "reader"
"#;

pub struct TestServer {
    addr: SocketAddr,
    /// The server's store, hub and configuration (tests that measure them).
    pub shared: std::sync::Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    /// The server's TLS, with `[tls]` (to reload it as SIGHUP does).
    pub tls: Option<std::sync::Arc<mupdated::net::tls::Tls>>,
    /// The implicit-TLS addresses (`listen_tls`).
    pub tls_addrs: Vec<SocketAddr>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("").await
    }

    /// Start with extra top-level configuration keys prepended.
    pub async fn start_with(extra: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, extra, "").await
    }

    /// Start with top-level keys before and tables (`[[replica_groups]]`)
    /// after the common configuration.
    pub async fn start_in(dir: tempfile::TempDir, head: &str, tail: &str) -> TestServer {
        let mut config = Config::parse(&format!("{head}\n{CONFIG}\n{tail}")).expect("test config");
        config.data_dir = dir.path().join("data");
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addrs()[0];
        let shared = server.shared().expect("bound servers have their store open");
        let (tls, tls_addrs) = (server.tls(), server.tls_addrs());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server
                .run(async {
                    let _ = rx.await;
                })
                .await;
        });
        TestServer { addr, shared, stop: Some(tx), task: Some(task), dir, tls, tls_addrs }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Graceful stop; returns the data folder for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, dir)
    }
}

/// How long the shared helpers wait for an answer before the test fails.
const HELPER_WAIT: Duration = Duration::from_secs(20);

/// A logged-in admin connection.
pub async fn admin(addr: &str) -> Client {
    let (mut c, _) = Client::connect(addr, HELPER_WAIT).await.expect("connect");
    c.authenticate("mupdater", "secret").await.expect("login");
    c
}

/// Read until EOF or `limit`; returns the bytes and whether EOF came.
pub async fn drain(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (all, true),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => return (all, false),
        }
    }
}

/// A small deterministic generator (xorshift64; tests print or fix their
/// seeds, so a failing run can be replayed).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
