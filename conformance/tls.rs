//! The murder scenarios over TLS: `imap_lifecycle` and `frontend_follows`
//! run unchanged against mupdated with `[tls]`, once with every Cyrus
//! MUPDATE connection (backends' imapd, `ctl_mboxlist -m`, the frontend's
//! slave with its UPDATE stream) upgrading with STARTTLS, once with
//! implicit TLS (`mupdate_server: 127.0.0.1:PORT/tls`). The harness's own
//! sessions (the scenario's checks) use the same transport.
//!
//! Every Cyrus connection goes through the recording proxy; afterwards the
//! capture (harness/capture.rs) must be TLS records only from the
//! `S01 OK` on (implicit: from the first byte), with no protocol word,
//! login or password in clear, every client role must have been seen, and
//! mupdated's log must name the TLS version and cipher suite of each
//! recorded connection (found by the address the proxy connected from).

use std::path::{Path, PathBuf};

use crate::differential::report_dir;
use crate::harness::capture;
use crate::harness::cyrus::{MUPDATE_USER, PASSWORD};
use crate::harness::murder::record_murders_into;
use crate::harness::mupdate::TlsMode;
use crate::harness::MasterKind;

/// Instantiates a scenario for STARTTLS and for implicit TLS.
macro_rules! over_tls {
    ($name:ident, $f:path, $roles:ident) => {
        mod $name {
            use crate::harness::MasterKind;

            #[test]
            fn starttls() {
                super::run(stringify!($name), MasterKind::MupdatedStartTls, $f, super::$roles)
            }

            #[test]
            fn implicit_tls() {
                super::run(stringify!($name), MasterKind::MupdatedImplicitTls, $f, super::$roles)
            }
        }
    };
}

/// The Cyrus clients a two-backend murder with a frontend must have
/// connected with: each backend's imapd and its `ctl_mboxlist -m` at
/// start, and the frontend's slave.
const MURDER_ROLES: &[&str] = &["imapd b1", "imapd b2", "ctl_mboxlist b1 -m", "ctl_mboxlist b2 -m", "mupdate f"];

over_tls!(imap_lifecycle, crate::scenarios::imap_lifecycle, MURDER_ROLES);
over_tls!(frontend_follows, crate::scenarios::frontend_follows, MURDER_ROLES);

/// Runs `f(kind)` with every murder recorded, then checks the capture and
/// the log of each murder it started.
pub fn run(scenario: &str, kind: MasterKind, f: fn(MasterKind), roles: &[&str]) {
    let mode = kind.tls_mode().expect("a TLS master kind");
    let base = report_dir().join("recordings").join(format!("tls-{scenario}-{kind:?}").to_ascii_lowercase());
    let _ = std::fs::remove_dir_all(&base);
    record_murders_into(&base);
    f(kind);
    let murders = murder_dirs(&base);
    assert!(!murders.is_empty(), "{scenario} recorded no murder in {}", base.display());
    let secrets = capture::secrets(MUPDATE_USER, PASSWORD);
    for dir in &murders {
        let conns = capture::load(dir);
        capture::assert_all_encrypted(&conns, mode, &secrets);
        for role in roles {
            assert!(
                conns.iter().any(|c| c.role == *role),
                "no MUPDATE connection from `{role}` in {}: {:?}",
                dir.display(),
                conns.iter().map(|c| &c.role).collect::<Vec<_>>()
            );
        }
        assert_logged_tls(dir, &conns);
    }
}

fn murder_dirs(base: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(base)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// mupdated's log has, for each recorded connection, a line of that
/// connection's span (`peer=<address>`) naming a TLS version and a cipher
/// suite.
fn assert_logged_tls(dir: &Path, conns: &[capture::Conn]) {
    let path = dir.join("mupdated.log");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let versions = ["TLSv1_3", "TLSv1_2", "TLSv1.3", "TLSv1.2"];
    let suites = ["TLS13_", "TLS_ECDHE_", "TLS_AES_", "TLS_CHACHA20_"];
    for c in conns {
        let from = c
            .upstream_from
            .as_deref()
            .unwrap_or_else(|| panic!("{}: the proxy did not record where it connected from", c.name));
        let peer = format!("peer={from}");
        // `peer=127.0.0.1:5000` must not match `peer=127.0.0.1:50001`.
        let names_peer = |l: &str| {
            l.match_indices(&peer).any(|(at, _)| {
                !l[at + peer.len()..].starts_with(|ch: char| ch.is_ascii_digit())
            })
        };
        let found = log.lines().any(|l| {
            names_peer(l)
                && versions.iter().any(|v| l.contains(v))
                && suites.iter().any(|s| l.contains(s))
        });
        assert!(
            found,
            "{} ({}): no line in {} with {peer}, a TLS version and a cipher suite",
            c.name,
            c.role,
            path.display()
        );
    }
}

/// The capture check on a clear-text murder's real recordings: every
/// connection fails it, in both modes, naming what crossed in clear.
#[test]
fn the_capture_check_fails_on_a_clear_murder() {
    let base = report_dir().join("recordings").join("tls-clear-control");
    let _ = std::fs::remove_dir_all(&base);
    {
        let options = crate::harness::Options::new(1, false).record(Some(base.join("m1")));
        let mut m = crate::harness::Murder::start_with(MasterKind::Mupdated, options);
        m.backend(0).imap().create("user.clear", None).assert_ok();
        m.finish_recording();
    }
    let conns = capture::load(&base.join("m1"));
    assert!(!conns.is_empty(), "nothing recorded");
    let secrets = capture::secrets(MUPDATE_USER, PASSWORD);
    for c in &conns {
        for mode in [TlsMode::StartTls, TlsMode::Implicit] {
            assert!(capture::check(c, mode, &secrets).is_err(), "{} ({}) passed as {mode:?}", c.name, c.role);
        }
    }
    // With the framing checks out of the way, the words themselves are
    // found in clear: a connection that wrote a mailbox shows ACTIVATE.
    assert!(
        conns.iter().any(|c| c.c.windows(8).any(|w| w == b"ACTIVATE")),
        "no ACTIVATE in the clear recordings"
    );
}
