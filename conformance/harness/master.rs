//! The MUPDATE master under test: Cyrus' `mupdate -m`, mupdated, or any
//! master named by `MUPDATE_MASTER=host:port`.

use std::path::PathBuf;
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
    Mupdated(Running),
    External,
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
                let running = start_mupdated(ws, port);
                Master {
                    kind,
                    addr: MasterAddr::loopback(port),
                    user: MUPDATE_USER.into(),
                    password: PASSWORD.into(),
                    process: Process::Mupdated(running),
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
            Process::Mupdated(r) => Some(r.pid()),
            Process::External => None,
        }
    }
}

/// Writes a mupdated config under `<workspace>/d<port>` and starts
/// `mupdated --config FILE`, waiting until its port greets.
pub fn start_mupdated(ws: &Workspace, port: u16) -> Running {
    let dir: PathBuf = ws.root().join(format!("d{port}"));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("mkdir {}: {e}", data.display()));
    let config = dir.join("mupdated.toml");
    let toml = format!(
        "listen = [\"127.0.0.1:{port}\"]\n\
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mupdated"));
    cmd.arg("--config")
        .arg(&config)
        .current_dir(&dir)
        .env("RUST_LOG", "info");
    let mut running = Running::spawn("mupdated", cmd, &dir.join("mupdated.log"));
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
