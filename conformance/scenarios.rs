//! Murder scenarios, each written once as `fn scenario(kind: MasterKind)`
//! and instantiated by [`scenario!`] for every kind of master:
//! `<scenario>::cyrus_master` (Cyrus' own `mupdate -m`, the reference),
//! `<scenario>::mupdated` and `<scenario>::external_master`
//! (`MUPDATE_MASTER=host:port`).

use crate::harness::cyrus::Instance;
use std::time::Duration;

use crate::harness::mupdate::{Entry, Kind, Mupdate};
use crate::harness::{wait, MasterKind, Murder};

mod consistency;
mod faults;
mod lifecycle;

// ---------------------------------------------------------------------------
// f. Master outages while the frontend streams (scenarios/faults.rs):
// a master started for the test only (it is killed).

mod master_outages {
    use crate::harness::MasterKind;

    #[test]
    fn cyrus_master() {
        super::faults::master_outages(MasterKind::Cyrus)
    }

    #[test]
    fn mupdated() {
        super::faults::master_outages(MasterKind::Mupdated)
    }
}

// ---------------------------------------------------------------------------
// e. A murder's whole life over IMAP (scenarios/lifecycle.rs).

pub(crate) use lifecycle::imap_lifecycle;
scenario!(imap_lifecycle);

/// ACL Cyrus 3.6 gives a new user mailbox: the owner with all rights.
fn owner_acl(uid: &str) -> String {
    format!("{uid}\tlrswipkxtecdan\t")
}

#[track_caller]
fn find(mu: &mut Mupdate, name: &str) -> Option<Entry> {
    mu.find(name).unwrap_or_else(|e| panic!("FIND {name}: {e}"))
}

#[track_caller]
fn list(mu: &mut Mupdate, prefix: Option<&str>) -> Vec<Entry> {
    mu.list(prefix)
        .unwrap_or_else(|e| panic!("LIST {prefix:?}: {e}"))
}

/// LIST `"<servername>!"`: what the master holds for one backend.
#[track_caller]
fn list_server(mu: &mut Mupdate, backend: &Instance) -> Vec<Entry> {
    list(mu, Some(&format!("{}!", backend.servername)))
}

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

// ---------------------------------------------------------------------------
// a. Mailbox changes made on a backend reach the master.

scenario!(backend_changes);

fn backend_changes(kind: MasterKind) {
    let murder = Murder::start(kind, 2, false);
    apply_backend_changes(&murder);
}

/// The steps of scenario a, each followed by a check of the master.
/// Scenario b reuses them.
fn apply_backend_changes(m: &Murder) {
    let (b1, b2) = (m.backend(0), m.backend(1));
    let mut mu = m.master.login();
    let mut imap1 = b1.imap();
    let mut imap2 = b2.imap();
    let on_b1 = b1.location("default");
    let alice = m.user("alice");
    let alice_acl = owner_acl(&m.uid("alice"));

    // CREATE: RESERVE + ACTIVATE with the owner's ACL.
    imap1.create(&alice, None).assert_ok();
    assert_eq!(
        find(&mut mu, &alice),
        Some(Entry::mailbox(&alice, &on_b1, &alice_acl))
    );

    // A sub-folder.
    let sent = format!("{alice}.Sent");
    imap1.create(&sent, None).assert_ok();
    assert_eq!(
        find(&mut mu, &sent),
        Some(Entry::mailbox(&sent, &on_b1, &alice_acl))
    );

    // A mailbox on the second backend.
    let carol = m.user("carol");
    imap2.create(&carol, None).assert_ok();
    let carol_entry = Entry::mailbox(&carol, &b2.location("default"), &owner_acl(&m.uid("carol")));
    assert_eq!(find(&mut mu, &carol), Some(carol_entry.clone()));

    // A name another backend holds: the master refuses the RESERVE, the
    // backend refuses the CREATE, nothing changes.
    imap2.create(&alice, None).assert_no();
    assert_eq!(
        find(&mut mu, &alice),
        Some(Entry::mailbox(&alice, &on_b1, &alice_acl))
    );

    // SETACL / DELETEACL: one ACTIVATE with the whole new ACL.
    let bob = m.uid("bob");
    imap1.setacl(&sent, &bob, "lrs").assert_ok();
    let with_bob = format!("{alice_acl}{bob}\tlrs\t");
    assert_eq!(
        find(&mut mu, &sent),
        Some(Entry::mailbox(&sent, &on_b1, &with_bob))
    );
    imap1.deleteacl(&sent, &bob).assert_ok();
    assert_eq!(
        find(&mut mu, &sent),
        Some(Entry::mailbox(&sent, &on_b1, &alice_acl))
    );

    // RENAME of a subtree: per mailbox DELETE old, RESERVE + ACTIVATE new.
    // Cyrus 3.6.1 sends the new location with an empty partition
    // ("server!"), which the master stores as it is.
    let projects = format!("{alice}.Projects");
    let work = format!("{alice}.Work");
    imap1.create(&projects, None).assert_ok();
    imap1.create(&format!("{projects}.2024"), None).assert_ok();
    imap1.rename(&projects, &work).assert_ok();
    let renamed_loc = b1.location("");
    assert_eq!(find(&mut mu, &projects), None);
    assert_eq!(find(&mut mu, &format!("{projects}.2024")), None);
    assert_eq!(
        find(&mut mu, &work),
        Some(Entry::mailbox(&work, &renamed_loc, &alice_acl))
    );
    let work2024 = format!("{work}.2024");
    assert_eq!(
        find(&mut mu, &work2024),
        Some(Entry::mailbox(&work2024, &renamed_loc, &alice_acl))
    );

    // DELETE (delete_mode: delayed): admins need the x right first; the
    // mailbox then moves to DELETED.<name>.<hex time>. SETACL sends the real
    // partition again.
    imap1.setacl(&work2024, "admin", "x").assert_ok();
    let with_admin = format!("{alice_acl}admin\txc\t");
    assert_eq!(
        find(&mut mu, &work2024),
        Some(Entry::mailbox(&work2024, &on_b1, &with_admin))
    );
    imap1.delete(&work2024).assert_ok();
    assert_eq!(find(&mut mu, &work2024), None);

    // LIST "server!" in mailboxes.db order; every entry agrees with FIND.
    let listed = list_server(&mut mu, b1);
    let deleted_prefix = format!("DELETED.{work2024}.");
    assert_eq!(listed.len(), 4, "LIST {}!: {listed:#?}", b1.servername);
    let tombstone = &listed[0];
    assert!(
        tombstone.name.starts_with(&deleted_prefix)
            && tombstone.name[deleted_prefix.len()..]
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
        "expected {deleted_prefix}<hex> first: {listed:#?}"
    );
    assert_eq!(
        tombstone,
        &Entry::mailbox(&tombstone.name, &renamed_loc, &with_admin)
    );
    assert_eq!(
        names(&listed[1..]),
        vec![alice.as_str(), sent.as_str(), work.as_str()]
    );
    for e in &listed {
        assert_eq!(
            find(&mut mu, &e.name).as_ref(),
            Some(e),
            "FIND {} disagrees with LIST",
            e.name
        );
    }
    assert_eq!(list_server(&mut mu, b2), vec![carol_entry]);
    imap1.logout();
    imap2.logout();
    let _ = mu.logout();
}

// ---------------------------------------------------------------------------
// b. `ctl_mboxlist -m` on the backends agrees with the master.

scenario!(ctl_mboxlist_clean);

fn ctl_mboxlist_clean(kind: MasterKind) {
    let m = Murder::start(kind, 2, false);
    apply_backend_changes(&m);
    let mut mu = m.master.login();
    let before: Vec<Vec<Entry>> = m.backends.iter().map(|b| list_server(&mut mu, b)).collect();

    // The renames left locations with an empty partition ("server!"); the
    // backend's own list says "server!default", so the first push
    // re-activates exactly those, in mailboxes.db order. The dry run only
    // reports them.
    for (b, listed) in m.backends.iter().zip(&before) {
        let expected: String = listed
            .iter()
            .filter(|e| e.location == b.location(""))
            .map(|e| format!("Force Activate: {}\n", e.name))
            .collect();
        let dry = b.ctl_mboxlist(&["-m", "-w"]);
        assert!(
            dry.success() && dry.stderr.is_empty(),
            "ctl_mboxlist -m -w on {}: {dry:?}",
            b.name
        );
        assert_eq!(dry.stdout, expected, "ctl_mboxlist -m -w on {}", b.name);
        assert_eq!(
            &list_server(&mut mu, b),
            listed,
            "a dry run changed the master"
        );
    }
    let repaired: Vec<Vec<Entry>> = before
        .iter()
        .zip(&m.backends)
        .map(|(listed, b)| {
            listed
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if e.location == b.location("") {
                        e.location = b.location("default");
                    }
                    e
                })
                .collect()
        })
        .collect();

    // Then every push runs clean: exit 0, no output, nothing changes.
    for round in 0..2 {
        for b in &m.backends {
            let push = b.ctl_mboxlist(&["-m"]);
            assert!(
                push.success() && push.stdout.is_empty() && push.stderr.is_empty(),
                "ctl_mboxlist -m on {} (round {round}): {push:?}",
                b.name
            );
        }
        let now: Vec<Vec<Entry>> = m.backends.iter().map(|b| list_server(&mut mu, b)).collect();
        assert_eq!(
            now, repaired,
            "master after ctl_mboxlist -m (round {round})"
        );
    }
    for b in &m.backends {
        let dry = b.ctl_mboxlist(&["-m", "-w"]);
        assert!(
            dry.success() && dry.stdout.is_empty() && dry.stderr.is_empty(),
            "ctl_mboxlist -m -w on {}: {dry:?}",
            b.name
        );
    }

    // Drift in both directions: a stale entry the backend does not have,
    // and a mailbox the master lost. The dry run reports, changes nothing.
    let (b1, b2) = (m.backend(0), m.backend(1));
    let ghost = m.user("ghost");
    mu.activate(&ghost, &b1.location("default"), &owner_acl(&m.uid("ghost")))
        .expect("ACTIVATE ghost");
    let carol = m.user("carol");
    let carol_entry = find(&mut mu, &carol).expect("carol on the master");
    mu.delete(&carol).expect("DELETE carol");

    let dry = b1.ctl_mboxlist(&["-m", "-w"]);
    assert!(
        dry.success() && dry.stdout.contains(&ghost),
        "ctl_mboxlist -m -w should report {ghost}: {dry:?}"
    );
    assert!(
        find(&mut mu, &ghost).is_some(),
        "a dry run changed the master"
    );

    let push = b1.ctl_mboxlist(&["-m"]);
    assert!(push.success(), "ctl_mboxlist -m on b1: {push:?}");
    assert_eq!(
        find(&mut mu, &ghost),
        None,
        "ctl_mboxlist -m did not remove the stale entry"
    );
    let push = b2.ctl_mboxlist(&["-m"]);
    assert!(push.success(), "ctl_mboxlist -m on b2: {push:?}");
    assert_eq!(
        find(&mut mu, &carol),
        Some(carol_entry),
        "ctl_mboxlist -m did not restore the lost entry"
    );
    let after: Vec<Vec<Entry>> = m.backends.iter().map(|b| list_server(&mut mu, b)).collect();
    assert_eq!(after, repaired);
    let _ = mu.logout();
}

// ---------------------------------------------------------------------------
// c. The frontend follows the master.

scenario!(frontend_follows);

/// How long a frontend's slave may take to show a change made directly on
/// a backend: Cyrus' master flushes pending updates every 5 s, and after a
/// failed NOOP the slave reconnects after 20-29 s.
const SLAVE_CATCH_UP: Duration = Duration::from_secs(30);

pub(crate) fn frontend_follows(kind: MasterKind) {
    frontend_follows_in(&Murder::start(kind, 2, true));
}

/// Scenario c's steps in a running murder of two backends and a frontend
/// (also run with mupdated under a Cyrus master: conformance/under_master.rs).
pub(crate) fn frontend_follows_in(m: &Murder) {
    let (b1, b2, fe) = (m.backend(0), m.backend(1), m.frontend());
    let mut mu = m.master.login();

    // Created on the backends directly: no kick, the slave learns it from
    // the master's stream.
    let dave = m.user("dave");
    let dave_sent = format!("{dave}.Sent");
    let erin = m.user("erin");
    let mut imap1 = b1.imap();
    imap1.create(&dave, None).assert_ok();
    imap1.create(&dave_sent, None).assert_ok();
    b2.imap().create(&erin, None).assert_ok();
    let mut front = fe.imap();
    wait::until(
        "the frontend's LIST to show mailboxes created on the backends",
        SLAVE_CATCH_UP,
        || {
            let listed = front.list();
            if [&dave, &dave_sent, &erin]
                .iter()
                .all(|n| listed.contains(n))
            {
                Ok(())
            } else {
                Err(format!("frontend LIST: {listed:?}"))
            }
        },
    );

    // Created through the frontend: the frontend waits for its slave's NOOP
    // round trip before answering, so its next LIST shows the mailbox.
    let frank = m.user("frank");
    front
        .create(&frank, Some(&b2.location("default")))
        .assert_ok();
    assert!(
        front.list().contains(&frank),
        "frontend LIST right after CREATE {frank}"
    );
    let frank_entry = Entry::mailbox(&frank, &b2.location("default"), &owner_acl(&m.uid("frank")));
    assert_eq!(find(&mut mu, &frank), Some(frank_entry));

    // A sub-folder through the frontend lands on its parent's backend.
    let drafts = format!("{dave}.Drafts");
    front.create(&drafts, None).assert_ok();
    assert!(
        front.list().contains(&drafts),
        "frontend LIST right after CREATE {drafts}"
    );
    let dave_acl = owner_acl(&m.uid("dave"));
    assert_eq!(
        find(&mut mu, &drafts),
        Some(Entry::mailbox(&drafts, &b1.location("default"), &dave_acl))
    );

    // RENAME through the frontend.
    let old = format!("{frank}.Old");
    let new = format!("{frank}.New");
    front.create(&old, None).assert_ok();
    front.rename(&old, &new).assert_ok();
    let listed = front.list();
    assert!(
        listed.contains(&new) && !listed.contains(&old),
        "frontend LIST after RENAME: {listed:?}"
    );
    assert_eq!(find(&mut mu, &old), None);
    assert_eq!(
        find(&mut mu, &new).map(|e| e.location),
        Some(b2.location(""))
    );

    // SETACL through the frontend (admins have no implicit read right),
    // then SELECT, which the frontend proxies to the backend the master names.
    front.setacl(&frank, "admin", "lrs").assert_ok();
    let frank_acl = format!("{}admin\tlrs\t", owner_acl(&m.uid("frank")));
    assert_eq!(
        find(&mut mu, &frank),
        Some(Entry::mailbox(&frank, &b2.location("default"), &frank_acl))
    );
    front.select(&frank).assert_ok();
    front.logout();
    imap1.logout();
    let _ = mu.logout();
}

// ---------------------------------------------------------------------------
// d. LIST order is Cyrus' mailboxes.db order.

scenario!(list_order);

/// Names that exercise the order: the hierarchy separator sorts before
/// every printable byte, domains, DELETED.*, '-', '_', upper case.
/// ACTIVATEd in this (scrambled) order; `user.bob2` only RESERVEd.
const ORDER_PROBE: &[&str] = &[
    "shared.o_c",
    "user.bob-smith",
    "shared.o.b.c",
    "example.com!user.x.y",
    "shared.O",
    "user.Bob",
    "DELETED.user.bob.Trash.6B0C8726",
    "shared.o a",
    "user.bob.Trash",
    "example.org!shared.a",
    "shared.oA",
    "user.bob_smith",
    "shared.o",
    "user.bob2",
    "example.com!user.x",
    "user.BOB.x",
    "shared.o-a",
    "user.bob",
    "shared.o.b",
    "user.x",
];

/// What Cyrus 3.6.1's `mupdate -m` answers to LIST after [`ORDER_PROBE`]
/// (observed, then recorded here).
const CYRUS_LIST_ORDER: &[&str] = &[
    "DELETED.user.bob.Trash.6B0C8726",
    "example.com!user.x",
    "example.com!user.x.y",
    "example.org!shared.a",
    "shared.O",
    "shared.o",
    "shared.o.b",
    "shared.o.b.c",
    "shared.o a",
    "shared.o-a",
    "shared.oA",
    "shared.o_c",
    "user.BOB.x",
    "user.Bob",
    "user.bob",
    "user.bob.Trash",
    "user.bob-smith",
    "user.bob2",
    "user.bob_smith",
    "user.x",
];

/// `name` made unique to this test on a shared master: the tag goes at
/// the end of the first hierarchy component (after any `domain!`), which
/// keeps every name's relation to the others.
fn probe_name(name: &str, tag: &str) -> String {
    let (domain, rest) = match name.split_once('!') {
        Some((d, r)) => (format!("{d}!"), r),
        None => (String::new(), name),
    };
    match rest.split_once('.') {
        Some((first, tail)) => format!("{domain}{first}{tag}.{tail}"),
        None => format!("{domain}{rest}{tag}"),
    }
}

/// ACTIVATEs (or RESERVEs) the probe names on `master`, returns LIST "location-server!".
fn run_order_probe(mu: &mut Mupdate, tag: &str, server: &str) -> Vec<Entry> {
    let location = format!("{server}!default");
    for name in ORDER_PROBE {
        let name = probe_name(name, tag);
        if name.starts_with("user.bob2") {
            mu.reserve(&name, &location)
                .unwrap_or_else(|e| panic!("RESERVE {name}: {e}"));
        } else {
            mu.activate(&name, &location, "anyone\tlrs\t")
                .unwrap_or_else(|e| panic!("ACTIVATE {name}: {e}"));
        }
    }
    list(mu, Some(&format!("{server}!")))
}

fn list_order(kind: MasterKind) {
    let ws = crate::harness::cyrus::Workspace::new();
    let subject = crate::harness::master::Master::start(&ws, kind);
    let tag = if kind.is_shared() {
        crate::harness::murder::unique_tag(&ws)
    } else {
        String::new()
    };
    let server = format!("probe{tag}.invalid");
    let mut mu = subject.login();
    let _cleanup = kind.is_shared().then(|| DeleteOnDrop {
        master: &subject,
        names: ORDER_PROBE.iter().map(|n| probe_name(n, &tag)).collect(),
    });
    let listed = run_order_probe(&mut mu, &tag, &server);
    if !kind.is_shared() {
        assert_eq!(
            list(&mut mu, None),
            listed,
            "LIST and LIST \"{server}!\" differ on a master holding only the probe"
        );
    }

    if kind == MasterKind::Cyrus {
        assert_eq!(
            names(&listed),
            CYRUS_LIST_ORDER,
            "Cyrus LIST order changed: {listed:#?}"
        );
        for e in &listed {
            let reserved = e.name == "user.bob2";
            assert_eq!(e.kind == Kind::Reserve, reserved, "{e:?}");
            assert_eq!(e.acl.is_none(), reserved, "{e:?}");
            assert_eq!(e.location, "probe.invalid!default");
        }
    } else {
        // Differential: the same probe against a live Cyrus master.
        let reference = crate::harness::master::Master::start(&ws, MasterKind::Cyrus);
        let expected = run_order_probe(&mut reference.login(), &tag, &server);
        assert_eq!(
            names(&listed),
            names(&expected),
            "LIST order differs from Cyrus' mupdate -m"
        );
        assert_eq!(
            listed, expected,
            "LIST entries differ from Cyrus' mupdate -m"
        );
    }
    let _ = mu.logout();
}

/// Removes test entries from a shared master, also when the test panics.
struct DeleteOnDrop<'a> {
    master: &'a crate::harness::master::Master,
    names: Vec<String>,
}

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let Ok(mut mu) =
            Mupdate::login(&self.master.addr, &self.master.user, &self.master.password)
        else {
            return;
        };
        for name in &self.names {
            // Only names that exist: Cyrus 3.6.1's master crashes on DELETE of an unknown name.
            if matches!(mu.find(name), Ok(Some(_))) {
                let _ = mu.delete(name);
            }
        }
        let _ = mu.logout();
    }
}
