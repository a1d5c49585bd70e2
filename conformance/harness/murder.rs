//! A whole Cyrus murder around one MUPDATE master: N backends and
//! optionally one frontend, in one workspace.

use super::cyrus::{Instance, Role, Workspace};
use super::master::{Master, MasterKind};
use super::ports::free_port;
use super::recorder::Recorder;
use std::path::PathBuf;

/// Fields drop in declaration order: Cyrus instances first, then the
/// master, then the workspace folder (processes must be gone before it is).
pub struct Murder {
    pub frontend: Option<Instance>,
    pub backends: Vec<Instance>,
    /// The recording proxy every Cyrus client goes through, if asked.
    pub recorder: Option<Recorder>,
    pub master: Master,
    /// Unique suffix for mailbox names on a shared master, empty otherwise.
    pub tag: String,
    pub ws: Workspace,
}

/// What to start besides the master.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra `imapd.conf` options of each backend; one entry per backend
    /// (an empty list for a plain one).
    pub backends: Vec<Vec<(String, String)>>,
    /// `Some(extra imapd.conf options)` starts a frontend.
    pub frontend: Option<Vec<(String, String)>>,
    /// Put a recording proxy between the Cyrus clients and the master,
    /// writing transcripts into this folder.
    pub record: Option<PathBuf>,
}

impl Options {
    /// `backends` plain backends and, if asked, a plain frontend.
    pub fn new(backends: usize, frontend: bool) -> Options {
        Options {
            backends: vec![Vec::new(); backends],
            frontend: frontend.then(Vec::new),
            record: None,
        }
    }

    /// Records every MUPDATE session of the Cyrus clients into `dir`.
    pub fn record(mut self, dir: Option<PathBuf>) -> Options {
        self.record = dir;
        self
    }

    /// Adds `key: value` to backend `i`'s imapd.conf.
    pub fn backend_option(mut self, i: usize, key: &str, value: &str) -> Options {
        self.backends[i].push((key.into(), value.into()));
        self
    }

    /// Adds `key: value` to the frontend's imapd.conf.
    pub fn frontend_option(mut self, key: &str, value: &str) -> Options {
        self.frontend
            .as_mut()
            .expect("these options start no frontend")
            .push((key.into(), value.into()));
        self
    }
}

impl Murder {
    /// Starts the master of `kind`, then `backends` backends and, if asked,
    /// a frontend, all following that master, and waits until all serve.
    pub fn start(kind: MasterKind, backends: usize, frontend: bool) -> Murder {
        Murder::start_with(kind, Options::new(backends, frontend))
    }

    /// [`Murder::start`] with per-instance options.
    pub fn start_with(kind: MasterKind, options: Options) -> Murder {
        let ws = Workspace::new();
        let master = Master::start(&ws, kind);
        let tag = if kind.is_shared() {
            unique_tag(&ws)
        } else {
            String::new()
        };
        let record = options.record.clone().or_else(next_recording_dir);
        let recorder = record
            .as_ref()
            .map(|dir| Recorder::start(&master.addr, dir));
        // Where the Cyrus clients connect: the proxy if recording.
        let via = recorder
            .as_ref()
            .map_or_else(|| master.addr.clone(), |r| r.addr.clone());

        let mut started: Vec<Instance> = options
            .backends
            .iter()
            .enumerate()
            .map(|(i, extra)| {
                let role = Role::Backend {
                    master: via.clone(),
                    mupdate_user: master.user.clone(),
                    mupdate_password: master.password.clone(),
                };
                Instance::spawn_with(&ws, &format!("b{}", i + 1), role, free_port(), extra)
            })
            .collect();
        let mut fe = options.frontend.as_ref().map(|extra| {
            let role = Role::Frontend {
                master: via.clone(),
                mupdate_user: master.user.clone(),
                mupdate_password: master.password.clone(),
                slave_port: free_port(),
                serverlist: started.iter().map(|b| b.servername.clone()).collect(),
            };
            Instance::spawn_with(&ws, "f", role, free_port(), extra)
        });
        // All started in parallel above; now wait for each.
        for b in &mut started {
            b.wait_ready();
        }
        if let Some(f) = &mut fe {
            f.wait_ready();
        }
        if let Some(dir) = &record {
            // Run-specific names, replaced by placeholders when two runs
            // are compared.
            let mut names = String::new();
            for b in &started {
                names.push_str(&format!("{} <{}>\n", b.servername, b.name));
            }
            if let Some(f) = &fe {
                names.push_str(&format!("{} <{}>\n", f.servername, f.name));
            }
            names.push_str(&format!("{} <master>\n", master.addr));
            let _ = std::fs::write(dir.join("names.txt"), names);
        }
        Murder {
            frontend: fe,
            backends: started,
            recorder,
            master,
            tag,
            ws,
        }
    }

    /// Stops the Cyrus instances (their MUPDATE connections close), then
    /// waits until the recording proxy has written every transcript.
    pub fn finish_recording(&mut self) -> Option<PathBuf> {
        if let Some(f) = &mut self.frontend {
            f.stop();
        }
        for b in &mut self.backends {
            b.stop();
        }
        let r = self.recorder.as_mut()?;
        r.finish(std::time::Duration::from_secs(10));
        Some(r.dir.clone())
    }

    pub fn backend(&self, i: usize) -> &Instance {
        &self.backends[i]
    }

    #[track_caller]
    pub fn frontend(&self) -> &Instance {
        self.frontend
            .as_ref()
            .expect("this murder was started without a frontend")
    }

    /// A user's INBOX name, made unique on a shared master: `user.alice`.
    pub fn user(&self, who: &str) -> String {
        format!("user.{}", self.uid(who))
    }

    /// A user id, made unique on a shared master: `alice`.
    pub fn uid(&self, who: &str) -> String {
        format!("{who}{}", self.tag)
    }
}

impl Drop for Murder {
    /// On a shared master, remove every entry located on this murder's
    /// backends (their servernames carry ports unique to this run). A
    /// recording murder first copies its master's log next to its recordings.
    fn drop(&mut self) {
        // A recorded murder keeps its master's log beside the recordings
        // (the workspace, where it is written, goes away with the murder).
        if let (Some(r), Some(log)) = (&self.recorder, self.master.log_path()) {
            let _ = std::fs::copy(&log, r.dir.join("mupdated.log"));
        }
        if !self.master.kind.is_shared() {
            return;
        }
        let Ok(mut m) = super::mupdate::Mupdate::login(
            &self.master.addr,
            &self.master.user,
            &self.master.password,
        ) else {
            return;
        };
        for b in &self.backends {
            let Ok(entries) = m.list(Some(&format!("{}!", b.servername))) else {
                continue;
            };
            for e in entries {
                let _ = m.delete(&e.name);
            }
        }
        let _ = m.logout();
    }
}

thread_local! {
    /// Set by [`record_murders_into`]: every murder this thread starts
    /// records its MUPDATE sessions into `<dir>/m<n>`.
    static RECORD_INTO: std::cell::RefCell<Option<(PathBuf, u32)>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes every murder started by this thread record into `dir/m1`, `dir/m2`...
pub fn record_murders_into(dir: &std::path::Path) {
    RECORD_INTO.with(|r| *r.borrow_mut() = Some((dir.to_path_buf(), 0)));
}

/// Is this thread recording murders for a comparison with Cyrus? Then
/// mupdated offers what the reference Cyrus master offers (PLAIN alone).
pub fn recording() -> bool {
    RECORD_INTO.with(|r| r.borrow().is_some())
}

fn next_recording_dir() -> Option<PathBuf> {
    RECORD_INTO.with(|r| {
        let mut r = r.borrow_mut();
        let (dir, n) = r.as_mut()?;
        *n += 1;
        Some(dir.join(format!("m{n}")))
    })
}

/// A short lower-case suffix unique to this workspace (its folder name).
pub fn unique_tag(ws: &Workspace) -> String {
    let t: String = ws
        .label
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("z{t}")
}
