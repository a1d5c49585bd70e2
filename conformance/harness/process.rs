//! Child processes owned by a test: started in their own process group,
//! stopped by their own pid when dropped (also while a test panics).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

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
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signals to our own unreaped child and the group it leads.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::killpg(pid, libc::SIGKILL);
        }
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
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain syscalls on a pid we own and have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline && !exited_without_reaping(pid) {
            sleep(Duration::from_millis(10));
        }
        // SAFETY: as above; the group is led by our unreaped child.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
        self.reaped = self.child.wait().ok();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True once `pid` (our child) has exited; leaves it unreaped.
fn exited_without_reaping(pid: libc::pid_t) -> bool {
    // SAFETY: siginfo_t is plain data; waitid only writes into it.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        r != 0 || info.si_pid() != 0
    }
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
            // SAFETY: signalling our own unreaped child's group.
            unsafe {
                libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
            }
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
