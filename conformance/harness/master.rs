//! The MUPDATE master under test: Cyrus' `mupdate -m`, mupdated, or any
//! master named by `MUPDATE_MASTER=host:port`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::cyrus::{Instance, Role, Workspace, MUPDATE_USER, PASSWORD};
use super::mupdate::{MasterAddr, Mupdate};
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
}

impl MasterKind {
    /// True when the master is shared with others (names must be unique to
    /// the test and what it creates must be removed afterwards).
    pub fn is_shared(self) -> bool {
        self == MasterKind::External
    }
}

enum Process {
    Cyrus(Box<Instance>),
    Mupdated(Mupdated),
    External,
}

/// A mupdated process and what it takes to start it again.
struct Mupdated {
    running: Running,
    dir: PathBuf,
    config: PathBuf,
    port: u16,
    starts: u32,
}

/// A running MUPDATE master and how to log into it.
pub struct Master {
    pub kind: MasterKind,
    pub addr: MasterAddr,
    pub user: String,
    pub password: String,
    process: Process,
}

impl Master {
    /// Starts (or, for `External`, checks) a master of `kind` and waits
    /// until it greets.
    pub fn start(ws: &Workspace, kind: MasterKind) -> Master {
        match kind {
            MasterKind::Cyrus => {
                let port = free_port();
                let mut inst = Instance::spawn(ws, &format!("m{port}"), Role::MupdateMaster, port);
                inst.wait_ready();
                Master {
                    kind,
                    addr: MasterAddr::loopback(port),
                    user: MUPDATE_USER.into(),
                    password: PASSWORD.into(),
                    process: Process::Cyrus(Box::new(inst)),
                }
            }
            MasterKind::Mupdated => {
                let port = free_port();
                let (dir, config) = write_mupdated_config(ws, port);
                let running = start_mupdated(&dir, &config, port, 0);
                Master {
                    kind,
                    addr: MasterAddr::loopback(port),
                    user: MUPDATE_USER.into(),
                    password: PASSWORD.into(),
                    process: Process::Mupdated(Mupdated {
                        running,
                        dir,
                        config,
                        port,
                        starts: 1,
                    }),
                }
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
                let mut inst = Instance::spawn(ws, &format!("m{port}"), role, port);
                inst.wait_ready();
                Master {
                    kind,
                    addr: MasterAddr::loopback(port),
                    user: MUPDATE_USER.into(),
                    password: PASSWORD.into(),
                    process: Process::Cyrus(Box::new(inst)),
                }
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
                    process: Process::External,
                };
                drop(master.login());
                master
            }
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
                m.running = start_mupdated(&m.dir, &m.config, m.port, m.starts);
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

/// Starts `mupdated --config FILE` (output in `mupdated.log`, or
/// `mupdated.<n>.log` for the n-th restart) and waits until `port` greets.
pub fn start_mupdated(dir: &Path, config: &Path, port: u16, n: u32) -> Running {
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
    let addr = MasterAddr::loopback(port);
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
            Mupdate::connect(&addr).map(drop).map_err(|e| e.to_string())
        },
    );
    running
}
