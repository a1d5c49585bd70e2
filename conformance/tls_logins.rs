//! Logins inside TLS with real Cyrus 3.6.1 backends: a backend with
//! `tls_client_cert`/`tls_client_key` logs in with EXTERNAL over STARTTLS,
//! its certificate mapped to its own `[[users]]` entry (`certificate =
//! "be1.test"`, servers = b1 only); another backend logs in with
//! SCRAM-SHA-256 inside TLS (Cyrus picks it by itself when offered). Then
//! the limits, through the harness's own client with the same
//! certificates: a be1 certificate cannot ACTIVATE a be2 location, a
//! certificate of another CA is refused (by Cyrus's client too), EXTERNAL
//! is offered only with a verified certificate.

use std::path::Path;

use crate::harness::cyrus::{Instance, Role, Workspace, MUPDATE_USER, PASSWORD};
use crate::harness::master::Master;
use crate::harness::mupdate::{Entry, Error, Mupdate};
use crate::harness::pki::Issued;
use crate::harness::ports::free_port;
use crate::harness::MasterKind;

/// ACL Cyrus 3.6 gives a new user mailbox: the owner with all rights.
fn owner_acl(uid: &str) -> String {
    format!("{uid}\tlrswipkxtecdan\t")
}

/// The master's address with a client certificate to present.
fn with_cert(master: &Master, cert: &Issued) -> crate::harness::mupdate::MasterAddr {
    let mut addr = master.addr.clone();
    if let Some(tls) = &mut addr.tls {
        tls.client_cert = Some((cert.cert.clone(), cert.key.clone()));
    }
    addr
}

/// A copy of `inst`'s imapd.conf with its client certificate replaced.
fn conf_with_cert(inst: &Instance, cert: &Issued, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(&inst.config).expect("read imapd.conf");
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("tls_client_cert:") && !l.starts_with("tls_client_key:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = inst.dir.join(name);
    std::fs::write(
        &path,
        format!("{text}tls_client_cert: {}\ntls_client_key: {}\n", cert.cert.display(), cert.key.display()),
    )
    .expect("write imapd.conf copy");
    path
}

fn log_has(log: &Path, words: &[&str]) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .any(|l| words.iter().all(|w| l.contains(w)))
}

#[test]
fn external_and_scram_with_real_cyrus_over_starttls() {
    let ws = Workspace::new();
    let (p1, p2) = (free_port(), free_port());
    let (s1, s2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let users = format!(
        "\n[[users]]\nname = \"be1\"\ncertificate = \"be1.test\"\nrole = \"backend\"\nservers = [\"{s1}\"]\n\
         \n[[users]]\nname = \"be2\"\npassword = \"{PASSWORD}\"\nrole = \"backend\"\nservers = [\"{s2}\"]\n"
    );
    let master = Master::start_tls(&ws, MasterKind::MupdatedStartTls, &users);
    let pki = master.pki.clone().expect("a TLS master has a PKI");
    let log = master.log_path().expect("mupdated's log");
    let be1 = pki.client("be1.test");
    let stranger = pki.other_ca.issue("be1.test", &["be1.test"], &[], crate::harness::pki::Usage::Client);

    // b1: EXTERNAL with its certificate (Cyrus prefers SCRAM when both are
    // offered, hence force_sasl_client_mech); the authzid it sends is
    // mupdate_username, the entry's own name. b2: SCRAM-SHA-256 by choice.
    let b1_extra: Vec<(String, String)> = vec![
        ("tls_client_cert".into(), be1.cert.display().to_string()),
        ("tls_client_key".into(), be1.key.display().to_string()),
        ("force_sasl_client_mech".into(), "EXTERNAL".into()),
    ];
    let role = |user: &str, password: &str| Role::Backend {
        master: master.addr.clone(),
        mupdate_user: user.into(),
        mupdate_password: password.into(),
    };
    let mut b1 = Instance::spawn_with(&ws, "b1", role("be1", "not-used-by-external"), p1, &b1_extra);
    let mut b2 = Instance::spawn_with(&ws, "b2", role("be2", PASSWORD), p2, &[]);
    b1.wait_ready();
    b2.wait_ready();

    // Both backends work: their creates reach the master.
    let mut mu = master.login();
    b1.imap().create("user.xena", None).assert_ok();
    b2.imap().create("user.yuri", None).assert_ok();
    assert_eq!(
        mu.find("user.xena").expect("FIND"),
        Some(Entry::mailbox("user.xena", &b1.location("default"), &owner_acl("xena")))
    );
    assert_eq!(
        mu.find("user.yuri").expect("FIND"),
        Some(Entry::mailbox("user.yuri", &b2.location("default"), &owner_acl("yuri")))
    );
    assert!(log_has(&log, &["EXTERNAL", "be1"]), "no EXTERNAL login of be1 in {}", log.display());
    assert!(log_has(&log, &["SCRAM-SHA-256", "be2"]), "no SCRAM-SHA-256 login of be2 in {}", log.display());

    // The same certificate through the harness's client: EXTERNAL is
    // offered only inside TLS with the verified certificate.
    let mut c1 = Mupdate::connect(&with_cert(&master, &be1)).expect("STARTTLS with be1's certificate");
    assert_eq!(crate::harness::mupdate::mechanisms(&c1.clear_greeting), Vec::<String>::new(), "{:?}", c1.clear_greeting);
    assert!(c1.mechanisms().iter().any(|m| m == "EXTERNAL"), "{:?}", c1.greeting);
    let plain = Mupdate::connect(&master.addr).expect("STARTTLS without a certificate");
    assert!(!plain.mechanisms().iter().any(|m| m == "EXTERNAL"), "EXTERNAL offered without a certificate: {:?}", plain.greeting);
    drop(plain);

    // be1 speaks for b1 only.
    c1.authenticate_external("be1").expect("EXTERNAL as be1");
    let on_b2 = b2.location("default");
    match c1.activate("user.zoe", &on_b2, &owner_acl("zoe")) {
        Err(Error::Refused(c)) if c.status == "NO" => {}
        other => panic!("be1 activated a b2 location: {other:?}"),
    }
    assert_eq!(mu.find("user.zoe").expect("FIND"), None);
    c1.activate("user.zoe", &b1.location("default"), &owner_acl("zoe")).expect("be1 activates its own location");
    assert_eq!(
        mu.find("user.zoe").expect("FIND"),
        Some(Entry::mailbox("user.zoe", &b1.location("default"), &owner_acl("zoe")))
    );
    let _ = c1.logout();

    // Another authorization id than the entry's own is refused.
    let mut c = Mupdate::connect(&with_cert(&master, &be1)).expect("STARTTLS with be1's certificate");
    match c.authenticate_external(MUPDATE_USER) {
        Err(Error::Refused(_)) => {}
        other => panic!("EXTERNAL as {MUPDATE_USER} with be1's certificate: {other:?}"),
    }
    drop(c);

    // A certificate of another CA, same name: refused, to the harness's
    // client and to Cyrus's (ctl_mboxlist with b1's settings and that
    // certificate), while the real one still works.
    assert!(
        Mupdate::connect(&with_cert(&master, &stranger)).and_then(|mut c| c.authenticate_external("be1")).is_err(),
        "a certificate of another CA was accepted"
    );
    let ok = b1.ctl_mboxlist(&["-m", "-w"]);
    assert!(ok.status.success(), "ctl_mboxlist -m -w with be1's certificate: {}{}", ok.stdout, ok.stderr);
    let bad_conf = conf_with_cert(&b1, &stranger, "imapd-stranger.conf");
    let bad = b1.ctl_mboxlist_as(&bad_conf, &["-m", "-w"]);
    assert!(!bad.status.success(), "ctl_mboxlist with a stranger's certificate succeeded: {}{}", bad.stdout, bad.stderr);
    // The master is fine after all that.
    assert!(mu.find("user.xena").expect("FIND after the refusals").is_some());
    let _ = mu.logout();
    b1.stop();
    b2.stop();
}
