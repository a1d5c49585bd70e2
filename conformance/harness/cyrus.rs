//! Real Cyrus IMAP (Debian 3.6.1): checking it is installed, a per-test
//! workspace folder the `cyrus` user can use, SASL users, and Cyrus
//! instances (`master -C imapd.conf -M cyrus.conf`) in the roles of a murder.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::imap::Imap;
use super::mupdate::MasterAddr;
use super::process::{run_bounded, Finished, Running};
use super::wait;

pub const CYRUS_BIN: &str = "/usr/lib/cyrus/bin";
pub const SASLPASSWD2: &str = "/usr/sbin/saslpasswd2";
pub const INSTALL_HINT: &str =
    "apt-get install -y cyrus-imapd cyrus-murder cyrus-clients cyrus-admin cyrus-replication sasl2-bin";

/// Password of every SASL user the harness creates.
pub const PASSWORD: &str = "secret";
/// IMAP admin on backends and frontend.
pub const ADMIN: &str = "admin";
/// The frontend's `proxy_authname`; admin on the backends.
pub const PROXY_USER: &str = "mailproxy";
/// `mupdate_username`/`mupdate_authname` of every Cyrus process talking to a master.
pub const MUPDATE_USER: &str = "mupdater";

/// How long a Cyrus instance may take to come up (a backend runs
/// `ctl_mboxlist -m` against the master first).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The installed Cyrus and the uid/gid its processes run as.
#[derive(Debug, Clone, Copy)]
pub struct Cyrus {
    pub uid: u32,
    pub gid: u32,
}

impl Cyrus {
    /// Panics, saying what to install, unless Debian's Cyrus murder
    /// binaries, saslpasswd2 and the `cyrus` user are present and we are
    /// root (Cyrus `master` must start as root to drop to `cyrus`).
    /// Conformance tests fail rather than skip without Cyrus.
    pub fn require() -> Cyrus {
        let mut missing = Vec::new();
        for bin in ["master", "imapd", "mupdate", "ctl_mboxlist", "ctl_cyrusdb"] {
            let p = Path::new(CYRUS_BIN).join(bin);
            if !p.is_file() {
                missing.push(p.display().to_string());
            }
        }
        if !Path::new(SASLPASSWD2).is_file() {
            missing.push(SASLPASSWD2.to_string());
        }
        let user = passwd_entry("cyrus");
        if user.is_none() {
            missing.push("user `cyrus`".to_string());
        }
        if !missing.is_empty() {
            panic!(
                "the conformance tests need real Cyrus IMAP 3.6 (Debian packages); missing: {}.\n\
                 Install it with: {INSTALL_HINT}",
                missing.join(", ")
            );
        }
        if !rustix::process::geteuid().is_root() {
            panic!("the conformance tests must run as root: Cyrus `master` starts as root and drops to the `cyrus` user");
        }
        let (uid, gid) = user.expect("checked above");
        Cyrus { uid, gid }
    }

    pub fn bin(name: &str) -> PathBuf {
        Path::new(CYRUS_BIN).join(name)
    }
}

/// uid and primary gid of a local user, from /etc/passwd.
fn passwd_entry(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A fresh temporary folder for one test, usable by the `cyrus` user, with
/// one SASL database shared by every Cyrus instance started in it.
pub struct Workspace {
    pub cyrus: Cyrus,
    root: PathBuf,
    /// `syslog_prefix` stem of every instance: the folder's name.
    pub label: String,
    pub sasldb: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Workspace {
    /// Short path on purpose: unix socket paths are limited to 108 bytes
    /// and Cyrus puts sockets in `<configdirectory>/socket/`.
    pub fn new() -> Workspace {
        let cyrus = Cyrus::require();
        let tmp = tempfile::Builder::new()
            .prefix("cm")
            .tempdir_in("/tmp")
            .expect("create workspace folder");
        let root = tmp.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
            .expect("chmod workspace");
        let label = root
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("cm")
            .to_string();
        let sasldb = root.join("sasldb2");
        Workspace {
            cyrus,
            root,
            label,
            sasldb,
            tmp: Some(tmp),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates `<root>/<name>` owned by cyrus:mail.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.give_to_cyrus(&dir);
        dir
    }

    /// chown cyrus:mail (not recursive).
    pub fn give_to_cyrus(&self, path: &Path) {
        chown(path, Some(self.cyrus.uid), Some(self.cyrus.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }

    /// `saslpasswd2 -p -c -f <sasldb> -u <realm> <user>`. Cyrus passes its
    /// servername as the SASL server FQDN, so every instance needs its users
    /// in the realm named after its servername.
    pub fn add_sasl_user(&self, user: &str, realm: &str, password: &str) {
        let mut child = Command::new(SASLPASSWD2)
            .args(["-p", "-c", "-f"])
            .arg(&self.sasldb)
            .args(["-u", realm, user])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {SASLPASSWD2}: {e}"));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("wait for saslpasswd2");
        assert!(
            out.status.success(),
            "saslpasswd2 -u {realm} {user} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.give_to_cyrus(&self.sasldb);
        std::fs::set_permissions(&self.sasldb, std::fs::Permissions::from_mode(0o640))
            .expect("chmod sasldb");
    }

    /// The murder's users (admin, mailproxy, mupdater) in `realm`.
    pub fn add_murder_users(&self, realm: &str) {
        for user in [ADMIN, PROXY_USER, MUPDATE_USER] {
            self.add_sasl_user(user, realm, PASSWORD);
        }
    }

    /// Lines of the system mail log written by instances of this workspace
    /// (Cyrus logs only to syslog; empty if no syslog daemon runs).
    pub fn syslog_lines(&self) -> Vec<String> {
        let log = std::fs::read_to_string("/var/log/mail.log").unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(&self.label))
            .map(str::to_string)
            .collect()
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self.syslog_lines();
            let tail = &lines[lines.len().saturating_sub(40)..];
            if !tail.is_empty() {
                eprintln!(
                    "--- Cyrus syslog of {} (last {} lines) ---",
                    self.label,
                    tail.len()
                );
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
        if std::env::var_os("CONFORMANCE_KEEP").is_some() {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("CONFORMANCE_KEEP: leaving {}", tmp.keep().display());
            }
        }
    }
}

/// What a Cyrus instance is in the murder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `mupdate -m`: the reference MUPDATE master.
    MupdateMaster,
    /// mupdated as the MUPDATE master, run by this `master` from a SERVICES
    /// entry with `--inherit-cyrus` (and Cyrus's `-C`, which it ignores).
    MupdatedService {
        /// mupdated's configuration file.
        config: PathBuf,
        /// The SERVICES entry says `listen="PORT"` (every address family:
        /// master starts one mupdated per family) instead of
        /// `listen="127.0.0.1:PORT"`.
        any_address: bool,
    },
    /// imapd with `proxyservers`; pushes its list with `ctl_mboxlist -m` at START.
    Backend {
        master: MasterAddr,
        mupdate_user: String,
        mupdate_password: String,
    },
    /// imapd without `proxyservers`, plus its `mupdate` slave on `slave_port`.
    Frontend {
        master: MasterAddr,
        mupdate_user: String,
        mupdate_password: String,
        slave_port: u16,
        serverlist: Vec<String>,
    },
}

/// One Cyrus `master` process and its folder.
pub struct Instance {
    pub name: String,
    pub role: Role,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `127.0.0.1:<port>`: the port in the servername lets several
    /// backends share one address (frontends connect to the server part
    /// of a location).
    pub servername: String,
    /// IMAP port (MUPDATE port for the master role).
    pub port: u16,
    cyrus: Cyrus,
    process: Running,
    /// `cyrus.conf`, to start the same instance again.
    cyrus_conf: PathBuf,
    /// How many times it was started (names its output file).
    starts: u32,
}

impl Instance {
    /// Writes imapd.conf and cyrus.conf under `<workspace>/<name>`, adds the
    /// SASL users for its realm and starts `master` (not yet waiting for it).
    pub fn spawn(ws: &Workspace, name: &str, role: Role, port: u16) -> Instance {
        Instance::spawn_with(ws, name, role, port, &[])
    }

    /// [`Instance::spawn`] with extra `imapd.conf` options appended
    /// (e.g. `("delete_mode", "immediate")`).
    pub fn spawn_with(
        ws: &Workspace,
        name: &str,
        role: Role,
        port: u16,
        extra: &[(String, String)],
    ) -> Instance {
        let dir = ws.subdir(name);
        let conf = dir.join("conf");
        let spool = dir.join("spool");
        for d in [&conf, &spool] {
            ws.subdir(
                d.strip_prefix(ws.root())
                    .expect("inside workspace")
                    .to_str()
                    .expect("utf-8 path"),
            );
        }
        for sub in ["socket", "db", "proc", "log", "lock"] {
            ws.give_to_cyrus(&{
                let p = conf.join(sub);
                std::fs::create_dir_all(&p).expect("mkdir conf subfolder");
                p
            });
        }
        let servername = format!("127.0.0.1:{port}");
        let config = dir.join("imapd.conf");
        let mut imapd = String::new();
        let _ = write!(
            imapd,
            "configdirectory: {conf}\n\
             partition-default: {spool}\n\
             servername: {servername}\n\
             syslog_prefix: {label}-{name}\n\
             sasl_pwcheck_method: auxprop\n\
             sasl_auxprop_plugin: sasldb\n\
             sasl_sasldb_path: {sasldb}\n\
             sasl_mech_list: PLAIN\n\
             allowplaintext: yes\n\
             unixhierarchysep: no\n\
             altnamespace: no\n",
            conf = conf.display(),
            spool = spool.display(),
            label = ws.label,
            sasldb = ws.sasldb.display(),
        );
        let c = config.display();
        let services = match &role {
            Role::MupdateMaster => {
                imapd.push_str(&format!("admins: {MUPDATE_USER}\n"));
                format!(
                    "  mupdate cmd=\"mupdate -C {c} -m\" listen=\"127.0.0.1:{port}\" prefork=1\n"
                )
            }
            Role::MupdatedService { config, any_address } => format!(
                "  mupdate cmd=\"{bin} -C {c} --config {mupdated_config} --inherit-cyrus --log-file {log}\" \
                 listen=\"{host}{port}\" prefork=1\n",
                host = if *any_address { "" } else { "127.0.0.1:" },
                bin = env!("CARGO_BIN_EXE_mupdated"),
                mupdated_config = config.display(),
                log = config.with_file_name("mupdated.log").display(),
            ),
            Role::Backend {
                master,
                mupdate_user,
                mupdate_password,
            } => {
                let _ = write!(
                    imapd,
                    "admins: {ADMIN} {PROXY_USER}\n\
                     proxyservers: {PROXY_USER}\n\
                     allowusermoves: yes\n\
                     proxy_authname: {PROXY_USER}\n\
                     proxy_password: {PASSWORD}\n\
                     mupdate_server: {spec}\n\
                     mupdate_username: {mupdate_user}\n\
                     mupdate_authname: {mupdate_user}\n\
                     mupdate_password: {mupdate_password}\n",
                    spec = master.cyrus_spec(),
                );
                format!("  imap cmd=\"imapd -C {c}\" listen=\"127.0.0.1:{port}\" prefork=0\n")
            }
            Role::Frontend {
                master,
                mupdate_user,
                mupdate_password,
                slave_port,
                serverlist,
            } => {
                let _ = write!(
                    imapd,
                    "admins: {ADMIN}\n\
                     mupdate_server: {spec}\n\
                     mupdate_username: {mupdate_user}\n\
                     mupdate_authname: {mupdate_user}\n\
                     mupdate_password: {mupdate_password}\n\
                     proxy_authname: {PROXY_USER}\n\
                     proxy_password: {PASSWORD}\n\
                     serverlist: {}\n",
                    serverlist.join(" "),
                    spec = master.cyrus_spec(),
                );
                // prefork=1: otherwise the slave only starts on its first
                // client and the frontend's list never syncs.
                format!(
                    "  imap cmd=\"imapd -C {c}\" listen=\"127.0.0.1:{port}\" prefork=0\n\
                     \x20 mupdate cmd=\"mupdate -C {c}\" listen=\"127.0.0.1:{slave_port}\" prefork=1\n"
                )
            }
        };
        for (key, value) in extra {
            let _ = writeln!(imapd, "{key}: {value}");
        }
        // The backend pushes its mailbox list at start, as a real murder does.
        let start = match role {
            Role::Backend { .. } => format!("  mupdatepush cmd=\"ctl_mboxlist -C {c} -m\"\n"),
            _ => String::new(),
        };
        let cyrus_conf = dir.join("cyrus.conf");
        write_owned(ws, &config, &imapd);
        write_owned(
            ws,
            &cyrus_conf,
            &format!("START {{\n{start}}}\nSERVICES {{\n{services}}}\nEVENTS {{\n}}\n"),
        );
        ws.add_murder_users(&servername);
        let process = spawn_master(name, &dir, &config, &cyrus_conf, 0);
        Instance {
            name: name.to_string(),
            role,
            dir,
            config,
            servername,
            port,
            cyrus: ws.cyrus,
            process,
            cyrus_conf,
            starts: 1,
        }
    }

    /// Stops the instance (SIGTERM to its `master`, by pid) and leaves it
    /// stopped; its folder and data stay.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts a stopped instance again with the same folder, config and
    /// port, and waits until it serves.
    pub fn start_again(&mut self) {
        self.process.stop();
        self.process = spawn_master(
            &self.name,
            &self.dir,
            &self.config,
            &self.cyrus_conf,
            self.starts,
        );
        self.starts += 1;
        self.wait_ready();
    }

    /// SIGKILL to the child of this instance's `master` whose command
    /// line contains `service` (e.g. `mupdate`); Cyrus' `master` starts a
    /// new one (prefork). Returns the killed pid.
    pub fn kill_service(&self, service: &str) -> u32 {
        let master = self.process.pid();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            if String::from_utf8_lossy(argv0).contains(service) {
                // A pid that is a child of our child.
                super::process::signal(pid, rustix::process::Signal::KILL);
                return pid;
            }
        }
        panic!(
            "no `{service}` child of Cyrus {} (pid {master}): {children:?}",
            self.name
        );
    }

    /// Waits until the instance serves: its port greets (for a backend that
    /// means START, i.e. `ctl_mboxlist -m`, succeeded) and, for a frontend,
    /// its slave has synchronised with the master (it creates the kick
    /// socket `socket/mupdate.target` only then).
    pub fn wait_ready(&mut self) {
        let what = format!(
            "Cyrus {} ({}) to accept connections",
            self.name, self.servername
        );
        let port = self.port;
        let is_master = matches!(self.role, Role::MupdateMaster | Role::MupdatedService { .. });
        let kick_socket = self.dir.join("conf/socket/mupdate.target");
        let is_frontend = matches!(self.role, Role::Frontend { .. });
        let process = &mut self.process;
        wait::until(&what, START_TIMEOUT, || {
            if let Some(status) = process.exit_status() {
                panic!(
                    "Cyrus {} exited ({status}) while starting:\n{}",
                    process.name(),
                    process.output()
                );
            }
            if is_master {
                super::mupdate::Mupdate::connect(&MasterAddr::loopback(port))
                    .map_err(|e| e.to_string())?;
            } else {
                Imap::connect(port).map_err(|e| e.to_string())?.logout();
            }
            if is_frontend && !kick_socket.exists() {
                return Err("frontend mupdate slave has not synchronised yet".into());
            }
            Ok(())
        });
    }

    /// `server!partition` as Cyrus writes locations.
    pub fn location(&self, partition: &str) -> String {
        format!("{}!{partition}", self.servername)
    }

    /// An IMAP session logged in as the admin.
    pub fn imap(&self) -> Imap {
        Imap::login(self.port, ADMIN, PASSWORD)
    }

    /// Runs `ctl_mboxlist -C <config> <args>` as the cyrus user, e.g.
    /// `["-m"]` (push the local list to the master) or `["-m", "-w"]` (dry run).
    pub fn ctl_mboxlist(&self, args: &[&str]) -> Finished {
        self.ctl_mboxlist_as(&self.config, args)
    }

    /// `ctl_mboxlist` on this instance's data with another imapd.conf
    /// (e.g. a copy with other MUPDATE client settings).
    pub fn ctl_mboxlist_as(&self, config: &Path, args: &[&str]) -> Finished {
        let mut cmd = Command::new(Cyrus::bin("ctl_mboxlist"));
        cmd.arg("-C")
            .arg(config)
            .args(args)
            .uid(self.cyrus.uid)
            .gid(self.cyrus.gid)
            .current_dir(&self.dir);
        run_bounded(
            &format!("ctl_mboxlist {}", args.join(" ")),
            cmd,
            &self.dir,
            Duration::from_secs(60),
        )
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The pids of this instance's `master`'s children whose program
    /// (argv[0]) ends in `program`, e.g. `/mupdated`.
    pub fn service_pids(&self, program: &str) -> Vec<u32> {
        let master = self.process.pid();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(argv0).ends_with(program)
            })
            .collect()
    }

    /// What `master` wrote to its standard output and error (its
    /// services' too), this start.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// False once its `master` has exited (or was stopped).
    pub fn is_running(&mut self) -> bool {
        self.process.exit_status().is_none()
    }
}

/// `master -C imapd.conf -M cyrus.conf -p master.pid` in `dir`; output to
/// `master.out` (`master.<n>.out` for the n-th restart).
fn spawn_master(name: &str, dir: &Path, config: &Path, cyrus_conf: &Path, n: u32) -> Running {
    let mut cmd = Command::new(Cyrus::bin("master"));
    cmd.arg("-C")
        .arg(config)
        .arg("-M")
        .arg(cyrus_conf)
        .arg("-p")
        .arg(dir.join("master.pid"))
        .current_dir(dir);
    let out = if n == 0 {
        dir.join("master.out")
    } else {
        dir.join(format!("master.{n}.out"))
    };
    Running::spawn(&format!("cyrus {name}"), cmd, &out)
}

fn write_owned(ws: &Workspace, path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    ws.give_to_cyrus(path);
}
