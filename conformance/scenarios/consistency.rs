//! One murder, one truth: the master's LIST and FIND, each backend's own
//! mailbox list and the frontend's LIST must all say the same thing.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::cyrus::Instance;
use crate::harness::mupdate::{Entry, Kind, Mupdate};
use crate::harness::{wait, Murder};

/// How long the frontend may take to show the master's state: Cyrus'
/// master flushes changes made directly on backends every 5 s.
pub const FRONTEND_CATCH_UP: Duration = Duration::from_secs(20);

/// The server part of a location (`127.0.0.1:143!default` -> `127.0.0.1:143`).
pub fn server_of(location: &str) -> &str {
    location.split_once('!').map_or(location, |(s, _)| s)
}

/// True for names an admin's IMAP LIST does not show. None: Cyrus 3.6
/// shows admins the `DELETED.*` (delayed-delete) mailboxes too, on the
/// backends and on the frontend.
pub fn hidden_from_imap(_name: &str) -> bool {
    false
}

/// What the master holds for this murder's backends, in LIST order.
pub fn master_entries(m: &Murder, mu: &mut Mupdate) -> Vec<Entry> {
    let servers: BTreeSet<&str> = m.backends.iter().map(|b| b.servername.as_str()).collect();
    mu.list(None)
        .unwrap_or_else(|e| panic!("LIST: {e}"))
        .into_iter()
        .filter(|e| servers.contains(server_of(&e.location)))
        .collect()
}

/// IMAP `LIST "" "*"` on an instance, as a set.
pub fn imap_names(i: &Instance) -> BTreeSet<String> {
    let mut imap = i.imap();
    let names = imap.list();
    imap.logout();
    names.into_iter().collect()
}

/// Checks, and returns the master's entries (LIST order):
///
/// - LIST names each mailbox once, every entry equals its FIND, and at
///   rest nothing is left RESERVEd;
/// - `LIST "server!"` is exactly the full LIST's entries of that server,
///   in the same order, and the backend's own IMAP LIST shows exactly
///   those names (`DELETED.*` included);
/// - the frontend's IMAP LIST converges (bounded) to every active name.
#[track_caller]
pub fn assert_consistent(m: &Murder) -> Vec<Entry> {
    let mut mu = m.master.login();
    let all = master_entries(m, &mut mu);
    let mut seen = BTreeSet::new();
    for e in &all {
        assert!(seen.insert(e.name.clone()), "LIST names {} twice", e.name);
        assert_eq!(e.kind, Kind::Mailbox, "left reserved at rest: {e:?}");
        let found = mu
            .find(&e.name)
            .unwrap_or_else(|err| panic!("FIND {}: {err}", e.name));
        assert_eq!(
            found.as_ref(),
            Some(e),
            "FIND {} disagrees with LIST",
            e.name
        );
    }
    for b in &m.backends {
        let prefix = format!("{}!", b.servername);
        let by_prefix = mu
            .list(Some(&prefix))
            .unwrap_or_else(|e| panic!("LIST {prefix}: {e}"));
        let from_all: Vec<Entry> = all
            .iter()
            .filter(|e| server_of(&e.location) == b.servername)
            .cloned()
            .collect();
        assert_eq!(by_prefix, from_all, "LIST {prefix} disagrees with LIST");
        let expected: BTreeSet<String> = from_all
            .iter()
            .map(|e| e.name.clone())
            .filter(|n| !hidden_from_imap(n))
            .collect();
        let local = imap_names(b);
        assert_eq!(
            local, expected,
            "{}'s own IMAP LIST (left) disagrees with the master's LIST {prefix} (right)",
            b.name
        );
    }
    let _ = mu.logout();
    if let Some(fe) = &m.frontend {
        let expected: BTreeSet<String> = all
            .iter()
            .map(|e| e.name.clone())
            .filter(|n| !hidden_from_imap(n))
            .collect();
        let mut front = fe.imap();
        wait::until(
            "the frontend's LIST to equal the master's",
            FRONTEND_CATCH_UP,
            || {
                let listed: BTreeSet<String> = front.list().into_iter().collect();
                if listed == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "frontend only: {:?}; master only: {:?}",
                        listed.difference(&expected).collect::<Vec<_>>(),
                        expected.difference(&listed).collect::<Vec<_>>()
                    ))
                }
            },
        );
        front.logout();
    }
    all
}

/// `ctl_mboxlist -m` on every backend must succeed silently, and a dry
/// run right after it must have nothing left to do.
#[track_caller]
pub fn assert_ctl_mboxlist_clean(m: &Murder, phase: &str) {
    for b in &m.backends {
        let push = b.ctl_mboxlist(&["-m"]);
        assert!(
            push.success() && push.stderr.is_empty(),
            "{phase}: ctl_mboxlist -m on {}: {push:?}",
            b.name
        );
        let dry = b.ctl_mboxlist(&["-m", "-w"]);
        assert!(
            dry.success() && dry.stdout.is_empty() && dry.stderr.is_empty(),
            "{phase}: ctl_mboxlist -m -w on {} after a push: {dry:?}",
            b.name
        );
    }
}
