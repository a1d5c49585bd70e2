//! SASL with real Cyrus 3.6.1 clients: a backend's imapd and
//! `ctl_mboxlist -m`, and the frontend's slave, log in to mupdated with
//! SCRAM-SHA-256 without TLS, because mupdated offers it and libsasl's
//! client ranks it above PLAIN (`libsasl2-modules` holds the SCRAM plugin).

use crate::harness::{wait, MasterKind, Murder};
use std::time::Duration;

/// The mechanisms of mupdated's "logged in" lines so far.
fn logins(m: &Murder) -> Vec<String> {
    let log = m.master.mupdated_output().expect("mupdated's log");
    log.lines()
        .filter(|l| l.contains("logged in"))
        .map(|l| {
            let at = l.find("mechanism=").map(|i| &l[i + "mechanism=".len()..]).unwrap_or("");
            at.split_whitespace().next().unwrap_or("").trim_matches('"').to_string()
        })
        .collect()
}

#[test]
fn cyrus_clients_log_in_with_scram_sha256_and_the_murder_works() {
    assert!(
        std::path::Path::new("/usr/lib/x86_64-linux-gnu/sasl2/libscram.so.2").exists()
            || std::path::Path::new("/usr/lib/x86_64-linux-gnu/sasl2/libscram.so").exists(),
        "Cyrus's SCRAM client plugin is missing: apt-get install libsasl2-modules"
    );
    let m = Murder::start(MasterKind::Mupdated, 1, true);
    let mut mu = m.master.login();
    let b = m.backend(0);
    // ctl_mboxlist -m: a LIST, then nothing to change.
    let out = b.ctl_mboxlist(&["-m"]);
    assert!(out.success(), "ctl_mboxlist -m: {out:?}");
    // A backend mailbox change (imapd's own mupdate client) reaches the
    // master and the frontend's slave stream.
    let pushed = b.ctl_mboxlist(&["-m"]);
    assert!(pushed.success(), "{pushed:?}");
    let name = format!("user.{}", m.uid("scram"));
    let mut imap =
        crate::harness::imap::Imap::login(b.port, crate::harness::cyrus::ADMIN, crate::harness::cyrus::PASSWORD);
    imap.create(&name, None).assert_ok();
    imap.logout();
    wait::until("the master to hold the new mailbox", Duration::from_secs(20), || {
        match mu.find(&name) {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let mechanisms = logins(&m);
    eprintln!("mupdated logins: {mechanisms:?}");
    let scram = mechanisms.iter().filter(|m| *m == "SCRAM-SHA-256").count();
    // The slave, ctl_mboxlist twice and imapd's CREATE: four Cyrus logins
    // at least, each with SCRAM-SHA-256 (the harness's own client uses PLAIN).
    assert!(scram >= 4, "Cyrus clients should log in with SCRAM-SHA-256; logins: {mechanisms:?}");
    assert!(
        mechanisms.iter().all(|m| m == "SCRAM-SHA-256" || m == "PLAIN"),
        "{mechanisms:?}"
    );
}
