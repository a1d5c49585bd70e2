//! Faults: the master dies (SIGKILL) and comes back at once, then stays
//! away longer than the frontend slave's retry delay. The frontend keeps
//! serving its last list (sampled every 200 ms: never empty, never
//! missing a mailbox that exists), its slave reconnects and converges.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::consistency::assert_consistent;
use crate::harness::cyrus::{ADMIN, PASSWORD};
use crate::harness::imap::Imap;
use crate::harness::{wait, MasterKind, Murder, Options};

/// The frontend slave's `mupdate_retry_delay` (default 20 s): it sleeps
/// 5-7.5 s before reconnecting.
const RETRY_DELAY: &str = "5";
/// How long the master stays away in the second fault (> the retry delay).
const OUTAGE: Duration = Duration::from_secs(8);
/// Sampling period of the frontend's LIST.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long the slave may take to reconnect and converge after the master
/// is back: retry delay (up to 7.5 s) plus resync plus Cyrus' 5 s flush.
const RECONVERGE: Duration = Duration::from_secs(25);

/// Samples the frontend's LIST until stopped; records every violation.
struct Sampler {
    stop: Arc<AtomicBool>,
    /// Names every sample must contain (grown as mailboxes are confirmed).
    pub required: Arc<Mutex<BTreeSet<String>>>,
    handle: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Sampler {
    fn start(port: u16, required: BTreeSet<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let required = Arc::new(Mutex::new(required));
        let (s, r) = (stop.clone(), required.clone());
        let handle = std::thread::spawn(move || {
            let mut violations = Vec::new();
            let mut samples = 0;
            let mut imap = Imap::login(port, ADMIN, PASSWORD);
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                let listed: BTreeSet<String> = imap.list().into_iter().collect();
                samples += 1;
                let need = r.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let missing: Vec<&String> = need.difference(&listed).collect();
                if listed.is_empty() || !missing.is_empty() {
                    violations.push(format!(
                        "sample {samples}: {} listed, missing {missing:?}",
                        listed.len()
                    ));
                }
                std::thread::sleep(SAMPLE_EVERY.saturating_sub(t.elapsed()));
            }
            imap.logout();
            (samples, violations)
        });
        Sampler {
            stop,
            required,
            handle: Some(handle),
        }
    }

    fn require(&self, names: impl IntoIterator<Item = String>) {
        self.required
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(names);
    }

    /// Stops sampling; panics on any violation.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, violations) = self
            .handle
            .take()
            .expect("running")
            .join()
            .expect("sampler thread");
        assert!(
            violations.is_empty(),
            "the frontend's LIST lost mailboxes during a master outage:\n{}",
            violations.join("\n")
        );
        samples
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Creates `names` on the backend, retrying while the master is still
/// coming back (the backend answers NO while it cannot reach it).
fn create_all(port: u16, names: &[String]) {
    let mut imap = Imap::login(port, ADMIN, PASSWORD);
    for n in names {
        wait::until(&format!("CREATE {n}"), Duration::from_secs(15), || {
            let r = imap.create(n, None);
            if r.is_ok() {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.text))
            }
        });
    }
    imap.logout();
}

pub fn master_outages(kind: MasterKind) {
    let mut m = Murder::start_with(
        kind,
        Options::new(1, true).frontend_option("mupdate_retry_delay", RETRY_DELAY),
    );
    let port = m.backend(0).port;
    let before: Vec<String> = (0..20).map(|i| m.user(&format!("f{i:02}"))).collect();
    create_all(port, &before);
    assert_consistent(&m);
    let sampler = Sampler::start(m.frontend().port, before.iter().cloned().collect());

    // 1. SIGKILL, started again at once (Cyrus' own master restarts its
    // killed mupdate service by itself).
    m.master.kill();
    m.master.start_again();
    let after_crash: Vec<String> = (0..5).map(|i| m.user(&format!("g{i:02}"))).collect();
    create_all(port, &after_crash);
    wait_converged(&m);
    sampler.require(after_crash.iter().cloned());

    // 2. Away longer than the slave's retry delay.
    match kind {
        MasterKind::Mupdated => m.master.kill(),
        _ => m.master.stop(),
    }
    std::thread::sleep(OUTAGE);
    m.master.start_again();
    let after_outage: Vec<String> = (0..5).map(|i| m.user(&format!("h{i:02}"))).collect();
    create_all(port, &after_outage);
    wait_converged(&m);
    sampler.require(after_outage.iter().cloned());
    std::thread::sleep(Duration::from_millis(500));
    let samples = sampler.finish();
    assert!(
        samples > 20,
        "only {samples} samples of the frontend's LIST"
    );
}

/// [`assert_consistent`] once the frontend's slave has had time to
/// reconnect (it only notices the master's return after its retry delay).
fn wait_converged(m: &Murder) {
    let start = Instant::now();
    loop {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_consistent(m)));
        match r {
            Ok(_) => return,
            Err(e) if start.elapsed() > RECONVERGE => std::panic::resume_unwind(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}
