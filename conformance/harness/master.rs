//! The MUPDATE master under test: Cyrus' `mupdate -m`, mupdated, or any
//! master named by `MUPDATE_MASTER=host:port`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cyrus::{Instance, Role, Workspace, MUPDATE_USER, PASSWORD};
use super::mupdate::{MasterAddr, Mupdate, Tls, TlsMode};
use super::pki::Pki;
use super::ports::free_port;
use super::process::Running;
use super::wait;

/// How long mupdated may take to greet after it was started.
const MUPDATED_START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKind {
    /// Debian's Cyrus 3.6.1 `mupdate -m`, started for the test: the reference.
    Cyrus,
    /// This crate's `mupdated`, started for the test.
    Mupdated,
    /// Already running at `MUPDATE_MASTER=host:port`, logged into with
    /// `MUPDATE_USER`/`MUPDATE_PASSWORD` (default mupdater/secret).
    External,
    /// This crate's `mupdated`, run by a Cyrus 3.6.1 `master` from a
    /// cyrus.conf SERVICES entry (`--inherit-cyrus`, prefork=1).
    MupdatedUnderCyrusMaster,
    /// The same with `listen="PORT"`: master opens a socket per address
    /// family and starts one mupdated for each (one serves, one relays).
    MupdatedUnderCyrusMasterAnyAddress,
    /// mupdated with `[tls]` (`require`: an empty `* AUTH` before TLS), so
    /// every Cyrus client upgrades with STARTTLS; the harness's own
    /// sessions do too.
    MupdatedStartTls,
    /// mupdated with `[tls] listen_tls`: Cyrus connects with
    /// `mupdate_server: 127.0.0.1:PORT/tls`, TLS from the first byte.
    MupdatedImplicitTls,
}

impl MasterKind {
    /// True when the master is shared with others (names must be unique to
    /// the test and what it creates must be removed afterwards).
    pub fn is_shared(self) -> bool {
        self == MasterKind::External
    }

    /// How Cyrus reaches a master of this kind over TLS, if it does.
    pub fn tls_mode(self) -> Option<TlsMode> {
        match self {
            MasterKind::MupdatedStartTls => Some(TlsMode::StartTls),
            MasterKind::MupdatedImplicitTls => Some(TlsMode::Implicit),
            _ => None,
        }
    }
}

enum Process {
    Cyrus(Box<Instance>),
    Mupdated(Box<Mupdated>),
    External,
}

/// A mupdated process and what it takes to start it again.
struct Mupdated {
    running: Running,
    dir: PathBuf,
    config: PathBuf,
    addr: MasterAddr,
    starts: u32,
}

/// A running MUPDATE master and how to log into it.
pub struct Master {
    pub kind: MasterKind,
    pub addr: MasterAddr,
    pub user: String,
    pub password: String,
    /// The test PKI of a TLS master (its CA, its certificate, a stranger CA).
    pub pki: Option<Pki>,
    process: Process,
}

impl Master {
    /// A Cyrus `master` on `port` running `role` (Cyrus's own mupdate, or
    /// mupdated from a SERVICES entry), once it greets.
    fn under_cyrus_master(ws: &Workspace, kind: MasterKind, role: Role, port: u16) -> Master {
        let mut inst = Instance::spawn(ws, &format!("m{port}"), role, port);
        inst.wait_ready();
        Master {
            kind,
            addr: MasterAddr::loopback(port),
            user: MUPDATE_USER.into(),
            password: PASSWORD.into(),
            pki: None,
            process: Process::Cyrus(Box::new(inst)),
        }
    }

    /// Starts (or, for `External`, checks) a master of `kind` and waits
    /// until it greets.
    pub fn start(ws: &Workspace, kind: MasterKind) -> Master {
        match kind {
            MasterKind::Cyrus => Master::under_cyrus_master(ws, kind, Role::MupdateMaster, free_port()),
            MasterKind::Mupdated => {
                let port = free_port();
                let (dir, config) = write_mupdated_config(ws, port);
                let running = start_mupdated(&dir, &config, port, 0);
                Master {
                    kind,
                    addr: MasterAddr::loopback(port),
                    user: MUPDATE_USER.into(),
                    password: PASSWORD.into(),
                    pki: None,
                    process: Process::Mupdated(Box::new(Mupdated {
                        running,
                        dir,
                        config,
                        addr: MasterAddr::loopback(port),
                        starts: 1,
                    })),
                }
            }
            MasterKind::MupdatedStartTls | MasterKind::MupdatedImplicitTls => {
                Master::start_tls(ws, kind, "")
            }
            MasterKind::MupdatedUnderCyrusMaster | MasterKind::MupdatedUnderCyrusMasterAnyAddress => {
                let port = free_port();
                let (dir, config) = write_mupdated_config(ws, port);
                // `listen` absent: the socket is master's, handed over.
                let text = std::fs::read_to_string(&config).expect("read mupdated config");
                let text: String = text.lines().filter(|l| !l.starts_with("listen =")).map(|l| format!("{l}\n")).collect();
                std::fs::write(&config, text).expect("write mupdated config");
                // mupdated runs as the cyrus user there.
                ws.give_to_cyrus(&dir);
                ws.give_to_cyrus(&dir.join("data"));
                let any_address = kind == MasterKind::MupdatedUnderCyrusMasterAnyAddress;
                let role = Role::MupdatedService { config, any_address };
                Master::under_cyrus_master(ws, kind, role, port)
            }
            MasterKind::External => {
                let spec = std::env::var("MUPDATE_MASTER").unwrap_or_else(|_| {
                    panic!("this test needs MUPDATE_MASTER=host:port (the master to test)")
                });
                let addr =
                    MasterAddr::parse(&spec).unwrap_or_else(|e| panic!("MUPDATE_MASTER: {e}"));
                let user = std::env::var("MUPDATE_USER").unwrap_or_else(|_| MUPDATE_USER.into());
                let password =
                    std::env::var("MUPDATE_PASSWORD").unwrap_or_else(|_| PASSWORD.into());
                let master = Master {
                    kind,
                    addr,
                    user,
                    password,
                    pki: None,
                    process: Process::External,
                };
                drop(master.login());
                master
            }
        }
    }

    /// A TLS master (`MupdatedStartTls` or `MupdatedImplicitTls`) with
    /// `extra_toml` (e.g. more `[[users]]`) appended to its config.
    pub fn start_tls(ws: &Workspace, kind: MasterKind, extra_toml: &str) -> Master {
        let mode = kind.tls_mode().expect("a TLS kind");
        let port = free_port();
        let (dir, config) = write_mupdated_config(ws, port);
        let pki = Pki::new(&dir.join("pki"));
        let mut text = std::fs::read_to_string(&config).expect("read mupdated config");
        if mode == TlsMode::Implicit {
            // The clear listener moves to another port; `port` is TLS only.
            let clear = free_port();
            text = text.replace(
                &format!("listen = [\"127.0.0.1:{port}\"]"),
                &format!("listen = [\"127.0.0.1:{clear}\"]"),
            );
        }
        text.push_str(&tls_section(&pki, (mode == TlsMode::Implicit).then_some(port)));
        text.push_str(extra_toml);
        std::fs::write(&config, text).expect("write mupdated config");
        let addr = MasterAddr {
            tls: Some(Tls {
                mode,
                ca: pki.ca.cert.clone(),
                server_name: "mupdated.test".into(),
                client_cert: None,
            }),
            ..MasterAddr::loopback(port)
        };
        let running = start_mupdated_at(&dir, &config, &addr, 0);
        Master {
            kind,
            addr: addr.clone(),
            user: MUPDATE_USER.into(),
            password: PASSWORD.into(),
            pki: Some(pki),
            process: Process::Mupdated(Box::new(Mupdated {
                running,
                dir,
                config,
                addr,
                starts: 1,
            })),
        }
    }

    /// A new MUPDATE session, authenticated. Panics on failure.
    #[track_caller]
    pub fn login(&self) -> Mupdate {
        Mupdate::login(&self.addr, &self.user, &self.password).unwrap_or_else(|e| {
            panic!(
                "MUPDATE login to {:?} master at {} as {}: {e}",
                self.kind, self.addr, self.user
            )
        })
    }

    /// mupdated's log file, when a Cyrus master runs mupdated.
    pub fn mupdated_log(&self) -> Option<PathBuf> {
        match &self.process {
            Process::Cyrus(i) => match &i.role {
                Role::MupdatedService { config, .. } => Some(config.with_file_name("mupdated.log")),
                _ => None,
            },
            _ => None,
        }
    }

    /// The log of the first start of a mupdated the test started itself
    /// (or mupdated under a Cyrus master).
    pub fn log_path(&self) -> Option<PathBuf> {
        match &self.process {
            Process::Mupdated(m) => Some(m.dir.join("mupdated.log")),
            _ => self.mupdated_log(),
        }
    }

    /// What a mupdated master started by the harness has logged so far.
    pub fn mupdated_output(&self) -> Option<String> {
        match &self.process {
            Process::Mupdated(m) => Some(m.running.output()),
            _ => None,
        }
    }

    /// The `mupdate -m` instance, for a Cyrus master.
    pub fn cyrus_instance(&self) -> Option<&Instance> {
        match &self.process {
            Process::Cyrus(i) => Some(i),
            _ => None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match &self.process {
            Process::Cyrus(i) => Some(i.pid()),
            Process::Mupdated(m) => Some(m.running.pid()),
            Process::External => None,
        }
    }
}

impl Master {
    /// A crash: SIGKILL to mupdated (by pid), or to the `mupdate -m` service
    /// process of a Cyrus master (Cyrus' `master` starts a new one at once).
    /// mupdated stays down until [`Master::start_again`].
    pub fn kill(&mut self) {
        match &mut self.process {
            Process::Mupdated(m) => m.running.kill(),
            Process::Cyrus(i) => {
                i.kill_service("mupdate");
            }
            Process::External => panic!("cannot kill an external master"),
        }
    }

    /// An orderly stop (SIGTERM by pid); the data stays.
    pub fn stop(&mut self) {
        match &mut self.process {
            Process::Mupdated(m) => m.running.stop(),
            Process::Cyrus(i) => i.stop(),
            Process::External => panic!("cannot stop an external master"),
        }
    }

    /// Starts the master again on the same port with the same data (a
    /// no-op for a Cyrus master whose service was only killed: its
    /// `master` restarted it; then this waits until it greets).
    pub fn start_again(&mut self) {
        match &mut self.process {
            Process::Mupdated(m) => {
                m.running.stop();
                m.running = start_mupdated_at(&m.dir, &m.config, &m.addr, m.starts);
                m.starts += 1;
            }
            Process::Cyrus(i) => {
                if i.is_running() {
                    i.wait_ready();
                } else {
                    i.start_again();
                }
            }
            Process::External => panic!("cannot restart an external master"),
        }
    }
}

/// Writes a mupdated config under `<workspace>/d<port>`: (folder, config file).
pub fn write_mupdated_config(ws: &Workspace, port: u16) -> (PathBuf, PathBuf) {
    let dir: PathBuf = ws.root().join(format!("d{port}"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("mkdir {}: {e}", data.display()));
    let config = dir.join("mupdated.toml");
    // Compared with Cyrus's master, which offers PLAIN alone: the same
    // offer, so that the clients' sessions can be compared line by line.
    let scram = if super::murder::recording() { "scram_sha256 = false\n" } else { "" };
    let toml = format!(
        "{scram}listen = [\"127.0.0.1:{port}\"]\n\
         data_dir = \"{data}\"\n\
         server_name = \"mupdated-conformance-{port}\"\n\
         \n\
         [[users]]\n\
         name = \"{MUPDATE_USER}\"\n\
         password = \"{PASSWORD}\"\n\
         role = \"admin\"\n",
        data = data.display(),
    );
    std::fs::write(&config, toml).expect("write mupdated config");
    (dir, config)
}

/// The `[tls]` section of a TLS master's config: the murder CA verifies
/// client certificates (optional for the client), no login before TLS,
/// and `listen_tls` on `implicit_port` if given.
pub fn tls_section(pki: &Pki, implicit_port: Option<u16>) -> String {
    let mut s = format!(
        "\n[tls]\n\
         cert = \"{cert}\"\n\
         key = \"{key}\"\n\
         client_ca = \"{ca}\"\n\
         require = true\n",
        cert = pki.server.cert.display(),
        key = pki.server.key.display(),
        ca = pki.ca.cert.display(),
    );
    if let Some(port) = implicit_port {
        s.push_str(&format!("listen_tls = [\"127.0.0.1:{port}\"]\n"));
    }
    s
}

/// Starts `mupdated --config FILE` (output in `mupdated.log`, or
/// `mupdated.<n>.log` for the n-th restart) and waits until `port` greets.
pub fn start_mupdated(dir: &Path, config: &Path, port: u16, n: u32) -> Running {
    start_mupdated_at(dir, config, &MasterAddr::loopback(port), n)
}

/// [`start_mupdated`], waiting for a greeting at `addr` (over TLS if it says so).
pub fn start_mupdated_at(dir: &Path, config: &Path, addr: &MasterAddr, n: u32) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mupdated"));
    cmd.arg("--config")
        .arg(config)
        .current_dir(dir)
        .env("RUST_LOG", "info");
    let log = if n == 0 {
        dir.join("mupdated.log")
    } else {
        dir.join(format!("mupdated.{n}.log"))
    };
    let mut running = Running::spawn("mupdated", cmd, &log);
    wait::until(
        &format!("mupdated to greet on {addr}"),
        MUPDATED_START_TIMEOUT,
        || {
            if let Some(status) = running.exit_status() {
                panic!(
                    "mupdated exited ({status}) before greeting on {addr}; its output:\n{}",
                    running.output()
                );
            }
            Mupdate::connect(addr).map(drop).map_err(|e| e.to_string())
        },
    );
    running
}
