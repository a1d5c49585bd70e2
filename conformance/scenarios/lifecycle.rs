//! A murder's life over IMAP: the frontend and the backends create,
//! re-ACL, rename, delete and move mailboxes, then load it with several
//! hundred concurrent CREATEs; after every phase the whole murder agrees
//! ([`assert_consistent`]) and `ctl_mboxlist -m` has nothing to repair.

use std::time::Duration;

use super::consistency::{assert_consistent, assert_ctl_mboxlist_clean, server_of};
use crate::harness::imap::Imap;
use crate::harness::{MasterKind, Murder, Options};

/// Mailboxes created concurrently in the load phase (half per backend).
const LOAD_MAILBOXES: usize = 300;
/// IMAP connections per backend in the load phase.
const LOAD_THREADS: usize = 3;

/// Depth of the deep hierarchy (`user.<u>.d01. ... .d12`).
const DEPTH: usize = 12;

pub fn imap_lifecycle(kind: MasterKind) {
    // b1 deletes the default way (delayed: DELETED.*), b2 at once.
    let m = Murder::start_with(
        kind,
        Options::new(2, true).backend_option(1, "delete_mode", "immediate"),
    );
    let (b1, b2, fe) = (m.backend(0), m.backend(1), m.frontend());
    let mut front = fe.imap();
    let mut imap1 = b1.imap();
    let mut imap2 = b2.imap();
    let alice = m.user("alice");
    let bob = m.user("bob");
    let carol = m.user("carol");
    let dave = m.user("dave");
    let team = format!("shared{}.team", m.tag);

    // --- 1. Creation: user and shared mailboxes, sub-folders, names that
    // exercise order and encoding, a deep hierarchy. Through the frontend
    // (kicks its slave) and directly on the backends (only the stream).
    front
        .create(&alice, Some(&b1.location("default")))
        .assert_ok();
    for sub in [
        "Sent",
        "Sent Items",
        "To-Do",
        "my_folder",
        "UPPER",
        "&AOQ-pfel", // "äpfel" in modified UTF-7, as IMAP clients send it
        "Work",
    ] {
        front.create(&format!("{alice}.{sub}"), None).assert_ok();
    }
    // Raw UTF-8: Cyrus 3.6 has no UTF8=ACCEPT and refuses 8-bit names
    // ("NO Invalid mailbox name"); clients must send modified UTF-7.
    front.create(&format!("{alice}.Grün"), None).assert_no();
    front.create(&format!("{alice}.Gr&APw-n"), None).assert_ok();
    let deep: Vec<String> = (1..=DEPTH)
        .map(|d| {
            let path: Vec<String> = (1..=d).map(|i| format!("d{i:02}")).collect();
            format!("{alice}.Work.{}", path.join("."))
        })
        .collect();
    // One CREATE of the deepest: Cyrus creates the missing ancestors.
    front.create(deep.last().unwrap(), None).assert_ok();
    front
        .create(&dave, Some(&b2.location("default")))
        .assert_ok();
    imap2.create(&bob, None).assert_ok();
    imap2
        .create(&format!("{bob}.Archive.2023"), None)
        .assert_ok();
    imap2
        .create(&format!("{team}.Projects-Q1"), None)
        .assert_ok();
    imap1.create(&carol, None).assert_ok();
    imap1.create(&format!("{carol}.Drafts"), None).assert_ok();
    let entries = assert_consistent(&m);
    for d in &deep {
        assert!(entries.iter().any(|e| &e.name == d), "{d} missing");
    }
    assert!(entries
        .iter()
        .any(|e| e.name == format!("{alice}.Gr&APw-n")));
    assert_ctl_mboxlist_clean(&m, "after creation");
    assert_consistent(&m);

    // --- 2. ACLs: SETACL and DELETEACL through the frontend and on a backend.
    let sent = format!("{alice}.Sent");
    front.setacl(&sent, &m.uid("bob"), "lrs").assert_ok();
    front.setacl(&team, "anyone", "lr").assert_ok();
    imap2.setacl(&bob, &m.uid("carol"), "lrswi").assert_ok();
    let with_bob = assert_consistent(&m);
    let acl_of = |entries: &[crate::harness::mupdate::Entry], name: &str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.acl.clone())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert!(acl_of(&with_bob, &sent).contains(&format!("{}\tlrs\t", m.uid("bob"))));
    front.deleteacl(&sent, &m.uid("bob")).assert_ok();
    imap2.deleteacl(&bob, &m.uid("carol")).assert_ok();
    let without = assert_consistent(&m);
    assert!(!acl_of(&without, &sent).contains(&format!("{}\t", m.uid("bob"))));
    assert_ctl_mboxlist_clean(&m, "after ACL changes");

    // --- 3. RENAME of a folder tree (13 mailboxes) through the frontend,
    // and of a smaller one directly on a backend.
    let work = format!("{alice}.Work");
    let job = format!("{alice}.Job");
    front.rename(&work, &job).assert_ok();
    imap2
        .rename(&format!("{bob}.Archive"), &format!("{bob}.Old"))
        .assert_ok();
    let renamed = assert_consistent(&m);
    assert!(!renamed
        .iter()
        .any(|e| e.name.starts_with(&format!("{work}."))));
    assert_eq!(
        renamed
            .iter()
            .filter(|e| e.name.starts_with(&format!("{job}.d01")))
            .count(),
        DEPTH
    );
    assert_ctl_mboxlist_clean(&m, "after renames");
    assert_consistent(&m);

    // --- 4. DELETE: delayed on b1 (the mailbox becomes DELETED.<name>.<hex>
    // on the master), immediate on b2 (gone). Admins need the x right.
    let todo = format!("{alice}.To-Do");
    front.setacl(&todo, "admin", "x").assert_ok();
    front.delete(&todo).assert_ok();
    let old2023 = format!("{bob}.Old.2023");
    imap2.setacl(&old2023, "admin", "x").assert_ok();
    imap2.delete(&old2023).assert_ok();
    // Cyrus 3.6.1 sends no MUPDATE DELETE for an immediate delete on a
    // backend (observed: no connection at all): the master keeps the entry
    // until the backend's next `ctl_mboxlist -m`, which the dry run
    // announces and the push performs.
    let mut mu = m.master.login();
    assert!(mu.find(&old2023).expect("FIND").is_some());
    let _ = mu.logout();
    let dry = b2.ctl_mboxlist(&["-m", "-w"]);
    assert!(
        dry.success() && dry.stdout.contains(&old2023),
        "ctl_mboxlist -m -w on b2 should report {old2023}: {dry:?}"
    );
    assert_ctl_mboxlist_clean(&m, "after deletes");
    let deleted = assert_consistent(&m);
    let tombstones: Vec<&str> = deleted
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| n.starts_with("DELETED."))
        .collect();
    assert_eq!(tombstones.len(), 1, "one delayed delete: {tombstones:?}");
    assert!(tombstones[0].starts_with(&format!("DELETED.{todo}.")));
    assert!(!deleted.iter().any(|e| e.name == old2023 || e.name == todo));

    // --- 5. Moving users between backends: XFER on the source backend.
    // (`RENAME user.x user.x server!partition` on the frontend, which the
    // frontend should proxy as XFER, hung here until the IMAP timeout with
    // no XFER reaching the source: see README.)
    //
    // Cyrus 3.6.1 gives mailboxes created by IMAP sessions started in the
    // same second the same unique ids (seen as "SYNCNOTICE: mailbox
    // uniqueid already in use" on the destination, which then refuses the
    // copy: "Mailbox has been moved to another server"). So each user to
    // move is created by a session of its own, opened in a second of its
    // own.
    let movers = [m.user("mover1"), m.user("mover2")];
    for (mover, b) in movers.iter().zip([b1, b2]) {
        std::thread::sleep(Duration::from_millis(1100));
        let mut fresh = b.imap();
        fresh.create(mover, None).assert_ok();
        fresh.create(&format!("{mover}.Drafts"), None).assert_ok();
        fresh.logout();
    }
    std::thread::sleep(Duration::from_millis(1100));
    for (mover, (from, to)) in movers.iter().zip([(b1, b2), (b2, b1)]) {
        let mut source = from.imap();
        source
            .command(&format!("XFER \"{mover}\" {}", to.servername))
            .assert_ok();
        source.logout();
    }
    let moved = assert_consistent(&m);
    let server = |name: &str| {
        moved
            .iter()
            .find(|e| e.name == name)
            .map(|e| server_of(&e.location).to_string())
            .unwrap_or_else(|| panic!("{name} missing after the move"))
    };
    for (mover, to) in movers.iter().zip([b2, b1]) {
        assert_eq!(server(mover), to.servername, "{mover} moved");
        assert_eq!(server(&format!("{mover}.Drafts")), to.servername);
    }
    assert_ctl_mboxlist_clean(&m, "after moves");
    assert_consistent(&m);

    // --- 6. Load: several hundred CREATEs at once from both backends.
    let per_thread = LOAD_MAILBOXES / (2 * LOAD_THREADS);
    std::thread::scope(|s| {
        for (bi, b) in [b1, b2].into_iter().enumerate() {
            for t in 0..LOAD_THREADS {
                let port = b.port;
                let uid_base = m.uid(&format!("load{bi}x{t}"));
                s.spawn(move || {
                    let mut imap = Imap::login(
                        port,
                        crate::harness::cyrus::ADMIN,
                        crate::harness::cyrus::PASSWORD,
                    );
                    for i in 0..per_thread {
                        let name = if i % 2 == 0 {
                            format!("user.{uid_base}-{i:03}")
                        } else {
                            format!("user.{uid_base}-{:03}.Sub_{i}", i - 1)
                        };
                        imap.create(&name, None).assert_ok();
                    }
                    imap.logout();
                });
            }
        }
    });
    let loaded = assert_consistent(&m);
    let load_count = loaded.iter().filter(|e| e.name.contains("load")).count();
    assert_eq!(load_count, per_thread * 2 * LOAD_THREADS);
    assert_ctl_mboxlist_clean(&m, "after load");
    std::thread::sleep(Duration::from_millis(0));
    front.logout();
    imap1.logout();
    imap2.logout();
}
