//! Child processes owned by a test: started in their own process group,
//! stopped by their own pid when dropped (also while a test panics).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, waitid, Pid, Signal, WaitId, WaitIdOptions};

/// How long a process gets to exit after SIGTERM before its group gets SIGKILL.
/// Cyrus `master` stops its children and exits well within a second.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A process the harness started. Dropping it stops it.
pub struct Running {
    name: String,
    child: Child,
    reaped: Option<ExitStatus>,
    log: PathBuf,
}

impl Running {
    /// Starts `cmd` in a new process group (Cyrus `master` signals its whole
    /// group on SIGTERM, which must not include the test runner), with stdout
    /// and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Running {
        let out =
            File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Running {
            name: name.to_string(),
            child,
            reaped: None,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exit status once the process has ended, `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reaped = Some(status);
            }
        }
        self.reaped
    }

    /// Whatever the process wrote to stdout/stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL to the process (by its pid, a crash: no chance to clean up),
    /// then to its group for stragglers; waits until it is gone.
    pub fn kill(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        let pid = Pid::from_child(&self.child);
        // Our own unreaped child and the group it leads.
        let _ = kill_process(pid, Signal::KILL);
        let _ = kill_process_group(pid, Signal::KILL);
        self.reaped = self.child.wait().ok();
    }

    /// SIGTERM to the process, up to [`STOP_TIMEOUT`] for it to exit, then
    /// SIGKILL to its process group (stragglers such as Cyrus services).
    /// The group id is the child's pid, which cannot be reused before we
    /// reap the child, so the group signal reaches only processes we started.
    pub fn stop(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        let pid = Pid::from_child(&self.child);
        // A pid we own and have not reaped.
        let _ = kill_process(pid, Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && !exited_without_reaping(pid) {
            sleep(Duration::from_millis(10));
        }
        // As above; the group is led by our unreaped child.
        let _ = kill_process_group(pid, Signal::KILL);
        self.reaped = self.child.wait().ok();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Send `sig` to process `pid` (one this test started, or a child of it);
/// a pid that is gone already is not an error.
pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

/// True once `pid` (our child) has exited; leaves it unreaped.
fn exited_without_reaping(pid: Pid) -> bool {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    // An error (no such child) counts as gone, as does a status.
    !matches!(waitid(WaitId::Pid(pid), options), Ok(None))
}

/// Output of a finished short-lived command (ctl_mboxlist and friends).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs a short command to completion, killing it if it takes longer than
/// `timeout` (a stuck MUPDATE master must fail the test, not hang it).
pub fn run_bounded(name: &str, mut cmd: Command, scratch: &Path, timeout: Duration) -> Finished {
    let stamp = format!(
        "{}-{}",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let out_path = scratch.join(format!("{stamp}.out"));
    let err_path = scratch.join(format!("{stamp}.err"));
    let out = File::create(&out_path).expect("create stdout capture");
    let err = File::create(&err_path).expect("create stderr capture");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name} ({cmd:?}): {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= deadline {
            // Our own unreaped child's group.
            let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
            let _ = child.wait();
            panic!("{name} did not finish within {timeout:?}");
        }
        sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}
