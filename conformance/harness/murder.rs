//! A whole Cyrus murder around one MUPDATE master: N backends and
//! optionally one frontend, in one workspace.

use super::cyrus::{Instance, Role, Workspace};
use super::master::{Master, MasterKind};
use super::ports::free_port;

/// Fields drop in declaration order: Cyrus instances first, then the
/// master, then the workspace folder (processes must be gone before it is).
pub struct Murder {
    pub frontend: Option<Instance>,
    pub backends: Vec<Instance>,
    pub master: Master,
    /// Unique suffix for mailbox names on a shared master, empty otherwise.
    pub tag: String,
    pub ws: Workspace,
}

impl Murder {
    /// Starts the master of `kind`, then `backends` backends and, if asked,
    /// a frontend, all following that master, and waits until all serve.
    pub fn start(kind: MasterKind, backends: usize, frontend: bool) -> Murder {
        let ws = Workspace::new();
        let master = Master::start(&ws, kind);
        let tag = if kind.is_shared() {
            unique_tag(&ws)
        } else {
            String::new()
        };

        let mut started: Vec<Instance> = (1..=backends)
            .map(|i| {
                let role = Role::Backend {
                    master: master.addr.clone(),
                    mupdate_user: master.user.clone(),
                    mupdate_password: master.password.clone(),
                };
                Instance::spawn(&ws, &format!("b{i}"), role, free_port())
            })
            .collect();
        let mut fe = frontend.then(|| {
            let role = Role::Frontend {
                master: master.addr.clone(),
                mupdate_user: master.user.clone(),
                mupdate_password: master.password.clone(),
                slave_port: free_port(),
                serverlist: started.iter().map(|b| b.servername.clone()).collect(),
            };
            Instance::spawn(&ws, "f", role, free_port())
        });
        // All started in parallel above; now wait for each.
        for b in &mut started {
            b.wait_ready();
        }
        if let Some(f) = &mut fe {
            f.wait_ready();
        }
        Murder {
            frontend: fe,
            backends: started,
            master,
            tag,
            ws,
        }
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
    /// backends (their servernames carry ports unique to this run).
    fn drop(&mut self) {
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
