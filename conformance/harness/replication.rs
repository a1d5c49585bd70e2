//! What the facts-model tests need beyond a plain murder: mupdated with
//! per-backend logins and replica groups, Cyrus replication between two
//! backends (sync_client on the primary, sync_server on the replica), and
//! `mupdatectl`.
//!
//! Backends are ordinary [`Instance`]s; the replication pieces are added
//! to a running instance: the replica gets a `syncserver` service through
//! its cyrus.conf and a SIGHUP to its own Cyrus `master` (which rereads
//! cyrus.conf and starts listening), the primary gets `sync_*` keys in its
//! imapd.conf (read by every `sync_client` run).

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use super::cyrus::{Cyrus, Instance, Workspace, ADMIN, INSTALL_HINT, MUPDATE_USER, PASSWORD};
use super::mupdate::{MasterAddr, Mupdate};
use super::ports::free_port;
use super::process::{run_bounded, Finished, Running};
use super::wait;

const MUPDATED_START_TIMEOUT: Duration = Duration::from_secs(20);
const SYNC_SERVER_TIMEOUT: Duration = Duration::from_secs(20);

/// One `[[users]]` entry of mupdated's configuration.
#[derive(Debug, Clone)]
pub struct Login {
    pub name: String,
    pub password: String,
    /// `admin`, `backend` or `reader`.
    pub role: &'static str,
    /// For `backend`: the server names it may speak for.
    pub servers: Vec<String>,
}

impl Login {
    /// A backend login bound to one server name (`127.0.0.1:PORT`).
    pub fn backend(name: &str, server: &str) -> Login {
        Login {
            name: name.into(),
            password: PASSWORD.into(),
            role: "backend",
            servers: vec![server.into()],
        }
    }

    pub fn reader(name: &str) -> Login {
        Login {
            name: name.into(),
            password: PASSWORD.into(),
            role: "reader",
            servers: vec![],
        }
    }
}

/// One `[[replica_groups]]` entry.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub servers: Vec<String>,
    pub primary: Option<String>,
}

/// mupdated started with the admin login `mupdater`/`secret` plus the given
/// logins and replica groups. Dropping it stops the process (by its pid).
pub struct FactsMaster {
    pub addr: MasterAddr,
    pub dir: PathBuf,
    process: Running,
}

impl FactsMaster {
    pub fn start(ws: &Workspace, logins: &[Login], groups: &[Group]) -> FactsMaster {
        let port = free_port();
        // The common configuration (listen, data, the admin login), then
        // this test's logins and groups.
        let (dir, config) = super::master::write_mupdated_config(ws, port);
        let mut toml = std::fs::read_to_string(&config).expect("read mupdated config");
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for l in logins {
            let _ = write!(
                toml,
                "\n[[users]]\nname = \"{}\"\npassword = \"{}\"\nrole = \"{}\"\n",
                l.name, l.password, l.role
            );
            if !l.servers.is_empty() {
                let _ = writeln!(toml, "servers = [{}]", list(&l.servers));
            }
        }
        for g in groups {
            let _ = write!(
                toml,
                "\n[[replica_groups]]\nname = \"{}\"\nservers = [{}]\n",
                g.name,
                list(&g.servers)
            );
            if let Some(p) = &g.primary {
                let _ = writeln!(toml, "primary = \"{p}\"");
            }
        }
        std::fs::write(&config, toml).expect("write mupdated config");
        let process = super::master::start_mupdated(&dir, &config, port, 0);
        let addr = MasterAddr::loopback(port);
        FactsMaster { addr, dir, process }
    }

    /// An admin MUPDATE session.
    #[track_caller]
    pub fn login(&self) -> Mupdate {
        Mupdate::login(&self.addr, MUPDATE_USER, PASSWORD)
            .unwrap_or_else(|e| panic!("MUPDATE login to mupdated at {}: {e}", self.addr))
    }

    /// `mupdatectl --server ADDR --user mupdater ARGS` (password from the
    /// environment, as an operator would run it).
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mupdatectl"))
            .args(["--server", &self.addr.to_string(), "--user", MUPDATE_USER])
            .args(["--timeout", "10"])
            .args(args)
            .env("MUPDATE_PASSWORD", PASSWORD)
            .output()
            .expect("run mupdatectl")
    }

    /// `mupdatectl --json ARGS`, which must exit 0; its JSON output.
    #[track_caller]
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let o = self.ctl(&all);
        assert_eq!(
            o.status.code(),
            Some(0),
            "mupdatectl {all:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "mupdatectl {all:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
    }

    /// mupdated's own log so far (for failure messages).
    pub fn log(&self) -> String {
        self.process.output()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Panics, saying what to install, unless Cyrus replication
/// (`sync_client`, `sync_server`: Debian's cyrus-replication) is installed.
pub fn require_replication() {
    for bin in ["sync_client", "sync_server"] {
        let p = Cyrus::bin(bin);
        assert!(
            p.is_file(),
            "the replica tests need Cyrus replication; missing {}.\nInstall it with: {INSTALL_HINT}",
            p.display()
        );
    }
}

/// Adds a `syncserver` service (Cyrus `sync_server`) on a new loopback
/// port to a running Cyrus instance: rewrites its cyrus.conf, sends SIGHUP
/// to its own `master` (by pid) and waits until the port greets. Returns
/// the port.
pub fn add_sync_server(inst: &Instance) -> u16 {
    require_replication();
    let port = free_port();
    let path = inst.dir.join("cyrus.conf");
    let conf = std::fs::read_to_string(&path).expect("read cyrus.conf");
    let service = format!(
        "SERVICES {{\n  syncserver cmd=\"sync_server -C {}\" listen=\"127.0.0.1:{port}\" prefork=0\n",
        inst.config.display()
    );
    assert!(
        conf.contains("SERVICES {\n"),
        "unexpected cyrus.conf: {conf}"
    );
    std::fs::write(&path, conf.replacen("SERVICES {\n", &service, 1)).expect("write cyrus.conf");
    // The Cyrus master this test started, by its pid.
    super::process::signal(inst.pid(), rustix::process::Signal::HUP);
    wait::until(
        &format!("sync_server of {} to greet on port {port}", inst.name),
        SYNC_SERVER_TIMEOUT,
        || {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line)
                .map_err(|e| e.to_string())?;
            if line.starts_with("* ") {
                Ok(())
            } else {
                Err(format!("greeting {line:?}"))
            }
        },
    );
    port
}

/// Points the primary's `sync_client` at a replica's `sync_server`
/// (`sync_host`, `sync_port`, the replica's admin login), by appending to
/// the primary's imapd.conf.
pub fn point_sync_client(primary: &Instance, replica_sync_port: u16) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&primary.config)
        .expect("open imapd.conf");
    write!(
        f,
        "sync_host: 127.0.0.1\n\
         sync_port: {replica_sync_port}\n\
         sync_try_imap: no\n\
         sync_authname: {ADMIN}\n\
         sync_password: {PASSWORD}\n"
    )
    .expect("append sync settings");
}

/// Runs `sync_client -C <config> -v -o ARGS` on the primary as the cyrus
/// user, e.g. `["-u", "alice"]` or `["-m", "user.alice"]`.
pub fn sync_client(primary: &Instance, args: &[&str]) -> Finished {
    let mut cmd = Command::new(Cyrus::bin("sync_client"));
    let uid_gid = std::fs::metadata(&primary.config).map(|m| {
        use std::os::unix::fs::MetadataExt;
        (m.uid(), m.gid())
    });
    let (uid, gid) = uid_gid.expect("stat imapd.conf");
    cmd.arg("-C")
        .arg(&primary.config)
        .args(["-v", "-o"])
        .args(args)
        .uid(uid)
        .gid(gid)
        .current_dir(&primary.dir);
    run_bounded(
        &format!("sync_client {}", args.join(" ")),
        cmd,
        &primary.dir,
        Duration::from_secs(60),
    )
}
