//! mupdated as a Cyrus service: a real Cyrus 3.6.1 `master` runs it from a
//! cyrus.conf SERVICES entry (`cmd="mupdated -C imapd.conf --config FILE
//! --inherit-cyrus" prefork=1`), backends and a frontend slave work against
//! it, and master starts exactly one mupdated and never respawns it. With
//! `listen="PORT"` master starts one per address family: one serves, the
//! other relays to it, both addresses serve the one directory.

use std::time::Duration;

use crate::harness::cyrus::Instance;
use crate::harness::mupdate::{MasterAddr, Mupdate};
use crate::harness::{wait, MasterKind, Murder};

/// The frontend's slave follows the master's stream within this.
const FOLLOW: Duration = Duration::from_secs(30);

/// The one mupdated child of the murder's Cyrus `master`, and its start
/// time (field 22 of /proc/PID/stat), which a respawn would change.
fn the_mupdated(master: &Instance) -> (u32, String) {
    let all = mupdateds(master);
    assert_eq!(
        all.len(),
        1,
        "prefork=1: Cyrus master runs exactly one mupdated, found {all:?}; master's output:\n{}",
        master.output()
    );
    all[0].clone()
}

/// Every mupdated child of `master` with its start time, by pid.
fn mupdateds(master: &Instance) -> Vec<(u32, String)> {
    let mut pids = master.service_pids("/mupdated");
    pids.sort_unstable();
    pids.into_iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The command name (field 2) is in parentheses and may hold spaces.
            let started =
                stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(19)).unwrap_or("").to_string();
            (pid, started)
        })
        .collect()
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

/// `listen="PORT"`, Cyrus's usual form: master opens an IPv4 and an IPv6
/// socket and starts one mupdated for each. The one that takes the data
/// folder's lock serves; the other relays its connections to it. Both
/// addresses show the one directory, a write through either is seen
/// through the other, and master respawns neither.
#[test]
fn mupdated_under_cyrus_master_on_every_address_family_serves_one_directory() {
    let m = Murder::start(MasterKind::MupdatedUnderCyrusMasterAnyAddress, 2, true);
    let master = m.master.cyrus_instance().expect("a Cyrus master runs mupdated");
    let first = mupdateds(master);
    assert_eq!(first.len(), 2, "one mupdated per address family, found {first:?}; master's output:\n{}", master.output());

    // The murder works (its backends and slave use 127.0.0.1).
    crate::scenarios::frontend_follows_in(&m);

    let v6_addr = MasterAddr { host: "::1".into(), ..m.master.addr.clone() };
    let log = m.master.mupdated_log().expect("mupdated's log file");
    let login_v6 = || {
        Mupdate::login(&v6_addr, &m.master.user, &m.master.password).unwrap_or_else(|e| {
            panic!("login over {v6_addr}: {e}; mupdated's log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        })
    };
    let mut v4 = m.master.login();
    let mut v6 = login_v6();
    let list = v4.list(None).expect("LIST over IPv4");
    assert!(!list.is_empty(), "the scenario left mailboxes");
    assert_eq!(v6.list(None).expect("LIST over IPv6"), list, "both address families serve the one directory");
    // A write through the relaying process is seen through the serving one.
    let probe = m.user("relayprobe");
    v6.activate(&probe, "be-relay!default", "anyone\tlr\t").expect("ACTIVATE over IPv6");
    let seen = v4.find(&probe).expect("FIND over IPv4").expect("the write made over IPv6");
    assert_eq!(seen.location, "be-relay!default");
    v6.delete(&probe).expect("DELETE over IPv6");
    assert_eq!(v4.find(&probe).expect("FIND over IPv4"), None);
    let _ = v4.logout();
    let _ = v6.logout();

    for _ in 0..10 {
        let _ = m.master.login().logout();
        let _ = login_v6().logout();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(mupdateds(master), first, "master respawned or added an mupdated");

    // One process served (and listened on the relay socket), one relayed.
    let output = std::fs::read_to_string(log).unwrap_or_default();
    assert_eq!(output.matches("listening kind=\"relay\"").count(), 1, "{output}");
    assert_eq!(output.matches("relaying to the process that holds the directory").count(), 1, "{output}");
}
