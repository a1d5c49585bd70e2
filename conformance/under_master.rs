//! mupdated as a Cyrus service: a real Cyrus 3.6.1 `master` runs it from a
//! cyrus.conf SERVICES entry (`cmd="mupdated -C imapd.conf --config FILE
//! --inherit-cyrus" prefork=1`), backends and a frontend slave work against
//! it, and master starts exactly one mupdated and never respawns it.

use std::time::Duration;

use crate::harness::cyrus::Instance;
use crate::harness::{wait, MasterKind, Murder};

/// The frontend's slave follows the master's stream within this.
const FOLLOW: Duration = Duration::from_secs(30);

/// The one mupdated child of the murder's Cyrus `master`, and its start
/// time (field 22 of /proc/PID/stat), which a respawn would change.
fn the_mupdated(master: &Instance) -> (u32, String) {
    let pids = master.service_pids("/mupdated");
    assert_eq!(
        pids.len(),
        1,
        "prefork=1: Cyrus master runs exactly one mupdated, found {pids:?}; master's output:\n{}",
        master.output()
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pids[0])).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces.
    let started = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(19)).unwrap_or("").to_string();
    (pids[0], started)
}

#[track_caller]
fn frontend_lists(m: &Murder, what: &str, present: &[&str], absent: &[&str]) {
    let mut front = m.frontend().imap();
    wait::until(what, FOLLOW, || {
        let listed = front.list();
        if present.iter().all(|n| listed.iter().any(|l| l == n)) && !absent.iter().any(|n| listed.iter().any(|l| l == n)) {
            Ok(())
        } else {
            Err(format!("frontend LIST: {listed:?}"))
        }
    });
    front.logout();
}

#[test]
fn mupdated_under_cyrus_master_serves_a_murder_and_is_never_respawned() {
    let m = Murder::start(MasterKind::MupdatedUnderCyrusMaster, 2, true);
    let master = m.master.cyrus_instance().expect("a Cyrus master runs mupdated");
    let first = the_mupdated(master);

    // Backends and the frontend's slave against it: the scenario the other
    // masters pass (creates on the backends followed through the stream,
    // CREATE, RENAME, SETACL through the frontend).
    crate::scenarios::frontend_follows_in(&m);
    assert_eq!(the_mupdated(master), first, "mupdated was respawned during the scenario");

    // Made on a backend directly, followed by the frontend through its
    // UPDATE stream: create, rename, delete.
    let b1 = m.backend(0);
    let gail = m.user("gail");
    let (old, new) = (format!("{gail}.Old"), format!("{gail}.New"));
    let mut imap = b1.imap();
    imap.create(&gail, None).assert_ok();
    imap.create(&old, None).assert_ok();
    frontend_lists(&m, "the frontend to list mailboxes created on a backend", &[&gail, &old], &[]);
    imap.rename(&old, &new).assert_ok();
    frontend_lists(&m, "the frontend to follow a RENAME on a backend", &[&new], &[&old]);
    // (Admins need the x right to delete.)
    imap.setacl(&new, "admin", "x").assert_ok();
    imap.delete(&new).assert_ok();
    frontend_lists(&m, "the frontend to follow a DELETE on a backend", &[&gail], &[&new]);
    imap.logout();

    // Every connection is reported to master (CONNECTION_MULTI, as Cyrus's
    // threaded services do); it must not fork another mupdated for them.
    for _ in 0..20 {
        let mu = m.master.login();
        let _ = mu.logout();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(the_mupdated(master), first, "mupdated was respawned or doubled");

    // When a syslog daemon runs, master's log has no exit of it either.
    let pid = format!("pid {}", first.0);
    let exits: Vec<String> =
        m.ws.syslog_lines().into_iter().filter(|l| l.contains(&pid) && (l.contains("exited") || l.contains("signaled"))).collect();
    assert!(exits.is_empty(), "master saw mupdated exit: {exits:?}");
    // mupdated logged its inherited listener once: it started once.
    let log = m.master.mupdated_log().expect("mupdated's log file");
    let output = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(output.matches("listening kind=\"cyrus-master\"").count(), 1, "{output}");
    assert!(output.contains("--inherit-cyrus: ignoring Cyrus's arguments"), "{output}");
}
