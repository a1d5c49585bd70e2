//! Moving a murder's directory from Cyrus's `mupdate -m` to mupdated:
//! backends of a real Cyrus 3.6.1 murder fill Cyrus's master, `ctl_mboxlist
//! -d` dumps that master's mailboxes.db, `mupdatectl import
//! --from-cyrus-dump` loads the dump into a new data directory, and
//! mupdated started on it answers LIST and FIND exactly as that master
//! does, line for line and in the same order.

use std::process::Command;

use crate::harness::cyrus::Instance;
use crate::harness::master::{start_mupdated, write_mupdated_config};
use crate::harness::mupdate::{Entry, Kind, MasterAddr, Mupdate};
use crate::harness::ports::free_port;
use crate::harness::{MasterKind, Murder, Options};

/// `ctl_mboxlist -d` on the master's own imapd.conf (`-C`).
fn dump(master: &Instance) -> String {
    let out = master.ctl_mboxlist(&["-d"]);
    assert!(out.success(), "ctl_mboxlist -d on the master: {}{}", out.stdout, out.stderr);
    out.stdout
}

fn login(addr: &MasterAddr) -> Mupdate {
    Mupdate::login(addr, crate::harness::cyrus::MUPDATE_USER, crate::harness::cyrus::PASSWORD)
        .unwrap_or_else(|e| panic!("MUPDATE login to {addr}: {e}"))
}

fn import(data: &std::path::Path, dump: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .arg("import")
        .arg("--data-dir")
        .arg(data)
        .arg("--from-cyrus-dump")
        .arg(dump)
        .output()
        .expect("run mupdatectl")
}

#[test]
fn a_cyrus_master_dump_imports_with_the_same_list() {
    let murder = Murder::start_with(
        MasterKind::Cyrus,
        Options::new(3, false)
            .backend_option(1, "delete_mode", "immediate")
            // imapd's own form of the option (a second generic one is fatal).
            .backend_option(2, "imap_unixhierarchysep", "yes"),
    );
    let (b1, b2, b3) = (murder.backend(0), murder.backend(1), murder.backend(2));
    let master = murder.master.cyrus_instance().expect("a Cyrus master");

    // Users' hierarchies, shared mailboxes, spaces, modified UTF-7, ACLs,
    // renames and deletes, on three backends.
    let mut i1 = b1.imap();
    for name in [
        "user.alice",
        "user.alice.Sent",
        "user.alice.a b",
        "user.alice.Gr&APw-n",
        "user.alice.Archive.2023.Q1",
        "user.alice.Trash",
        "shared",
        "shared.news",
        "shared.news.local",
    ] {
        i1.create(name, None).assert_ok();
    }
    i1.setacl("user.alice.Sent", "bob", "lrs").assert_ok();
    i1.setacl("shared.news", "anyone", "lrsp").assert_ok();
    i1.setacl("shared.news", "group:staff", "lrswipkxtecdan").assert_ok();
    i1.rename("user.alice.Archive", "user.alice.Old").assert_ok();
    // Delayed delete (the default): a DELETED.* name on b1.
    i1.setacl("user.alice.Trash", "admin", "x").assert_ok();
    i1.delete("user.alice.Trash").assert_ok();
    i1.logout();
    let mut i2 = b2.imap();
    for name in ["user.bob", "user.bob.Drafts", "user.bob.x-y_z", "user.bob.&ZeVnLIqe-", "team", "team.Projects Q1"] {
        i2.create(name, None).assert_ok();
    }
    i2.setacl("team.Projects Q1", "bob", "lrswi").assert_ok();
    i2.deleteacl("user.bob.Drafts", "bob").assert_ok();
    // Immediate delete on b2: Cyrus 3.6.1 sends no MUPDATE DELETE for it
    // (scenarios/lifecycle.rs), so the master, and the import, keep it.
    i2.create("user.bob.Gone", None).assert_ok();
    i2.setacl("user.bob.Gone", "admin", "x").assert_ok();
    i2.delete("user.bob.Gone").assert_ok();
    i2.logout();
    let mut i3 = b3.imap();
    // b3 speaks `/` (unixhierarchysep): the master, and the dump, still
    // hold internal names, with `.` between levels and `^` for a typed `.`.
    for name in ["user/carol", "user/carol/A", "user/carol/a", "user/carol/A/b", "user/carol/B", "user/carol/v1.2"] {
        i3.create(name, None).assert_ok();
    }
    i3.logout();
    // Names reserved on the master (as by a CREATE in progress on b2).
    let mut m = murder.master.login();
    let c = m.reserve("user.dave", &b2.location("default")).expect("RESERVE");
    assert_eq!(c.status, "OK", "{c:?}");
    let c = m.reserve("shared.pending", &b2.location("p2")).expect("RESERVE");
    assert_eq!(c.status, "OK", "{c:?}");
    let cyrus_list = m.list(None).expect("LIST on Cyrus");
    let names: Vec<&str> = cyrus_list.iter().map(|e| e.name.as_str()).collect();
    for want in ["user.carol.A.b", "user.carol.v1^2", "user.alice.a b", "user.alice.Gr&APw-n", "user.alice.Old.2023.Q1", "user.bob.&ZeVnLIqe-", "shared.news"] {
        assert!(names.contains(&want), "{want} not on the Cyrus master: {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("DELETED.user.alice.Trash.")), "{names:?}");
    assert!(cyrus_list.iter().any(|e| e.kind == Kind::Reserve), "{cyrus_list:?}");
    let prefix = format!("{}!", b2.servername);
    let cyrus_prefix = m.list(Some(&prefix)).expect("LIST prefix on Cyrus");
    let b3_prefix = format!("{}!", b3.servername);
    let cyrus_b3 = m.list(Some(&b3_prefix)).expect("LIST prefix on Cyrus");
    let probes = ["user.alice", "user.alice.a b", "shared.news", "user.dave", "shared.pending", "user.bob.Gone", "nosuch"];
    let cyrus_finds: Vec<Option<Entry>> = probes.iter().map(|n| m.find(n).expect("FIND on Cyrus")).collect();
    drop(m.logout());

    // The dump, taken on the running master as an operator would.
    let text = dump(master);
    assert!(text.starts_with("{\n") && text.trim_end().ends_with('}'), "{text}");
    assert!(text.contains("\"mbtype\": \"erz\""), "a reserved entry in the dump: {text}");
    assert!(text.contains("\"user.carol.v1^2\": {"), "internal names in the dump: {text}");
    let file = murder.ws.root().join("mailboxes.dump");
    std::fs::write(&file, &text).expect("write the dump");

    let port = free_port();
    let (dir, config) = write_mupdated_config(&murder.ws, port);
    let data = dir.join("data");
    let out = import(&data, &file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mupdatectl import --from-cyrus-dump: {err}\n{text}");
    assert!(err.contains(&format!("imported {} mailboxes", cyrus_list.len())), "{err}");
    let _mupdated = start_mupdated(&dir, &config, port, 0);
    let mut ours = login(&MasterAddr::loopback(port));
    let our_list = ours.list(None).expect("LIST on mupdated");
    assert_eq!(our_list.len(), cyrus_list.len(), "ours {our_list:#?}\nCyrus's {cyrus_list:#?}");
    for (i, (o, c)) in our_list.iter().zip(&cyrus_list).enumerate() {
        assert_eq!(o, c, "LIST line {} differs", i + 1);
    }
    assert_eq!(ours.list(Some(&prefix)).expect("LIST prefix"), cyrus_prefix, "LIST {prefix}");
    for (n, want) in probes.iter().zip(&cyrus_finds) {
        assert_eq!(&ours.find(n).expect("FIND on mupdated"), want, "FIND {n}");
    }
    drop(ours.logout());

    // A backend's own dump names no server: given with --server-name, it
    // imports as what that backend holds on the master (b3 renamed and
    // deleted nothing, so its part of the master's LIST is exactly that).
    let backend = dump(b3);
    assert!(!backend.contains("\"server\""), "a backend's dump names no server: {backend}");
    let file3 = murder.ws.root().join("b3.dump");
    std::fs::write(&file3, &backend).expect("write the dump");
    let port3 = free_port();
    let (dir3, config3) = write_mupdated_config(&murder.ws, port3);
    let out = import(&dir3.join("data"), &file3);
    assert_eq!(out.status.code(), Some(1), "refused without --server-name");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server-name"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(["import", "--server-name", &b3.servername, "--data-dir"])
        .arg(dir3.join("data"))
        .arg("--from-cyrus-dump")
        .arg(&file3)
        .output()
        .expect("run mupdatectl");
    assert!(out.status.success(), "{}\n{backend}", String::from_utf8_lossy(&out.stderr));
    let _mupdated3 = start_mupdated(&dir3, &config3, port3, 0);
    let mut ours3 = login(&MasterAddr::loopback(port3));
    assert_eq!(ours3.list(None).expect("LIST"), cyrus_b3, "a backend's dump: {backend}");
    drop(ours3.logout());

    // A backend keeps tombstones (`d`) of what it renamed or deleted, and
    // `-y` adds intermediates (`i`, none here: Cyrus 3.6 creates missing
    // parents as mailboxes): skipped and counted.
    let with_y = b1.ctl_mboxlist(&["-d", "-y"]);
    assert!(with_y.success(), "ctl_mboxlist -d -y: {}", with_y.stderr);
    let flags: Vec<&str> = with_y
        .stdout
        .lines()
        .filter_map(|l| l.split("\"mbtype\": \"").nth(1)?.split('"').next())
        .collect();
    let tombstones = flags.iter().filter(|f| f.contains('d')).count();
    let intermediates = flags.iter().filter(|f| f.contains('i') && !f.contains('d')).count();
    assert!(tombstones >= 4, "tombstones of user.alice.Archive(.2023(.Q1)) and user.alice.Trash: {}", with_y.stdout);
    let file1 = murder.ws.root().join("b1.dump");
    std::fs::write(&file1, &with_y.stdout).expect("write the dump");
    let out = Command::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(["import", "--server-name", &b1.servername, "--data-dir"])
        .arg(murder.ws.root().join("b1-import"))
        .arg("--from-cyrus-dump")
        .arg(&file1)
        .output()
        .expect("run mupdatectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let counts = format!("{} entries: {tombstones} deleted (tombstones), {intermediates} intermediate", tombstones + intermediates);
    assert!(err.contains(&counts), "{counts}: {err}\n{}", with_y.stdout);
    assert!(err.contains(&format!("imported {} mailboxes", flags.len() - tombstones - intermediates)), "{err}");

    // A dump cut short is refused, with nothing left behind.
    let cut = murder.ws.root().join("cut.dump");
    let keep = text.lines().count() / 2;
    std::fs::write(&cut, text.lines().take(keep).collect::<Vec<_>>().join("\n")).expect("write");
    let target = murder.ws.root().join("never");
    let out = import(&target, &cut);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("line {keep}:")) && err.contains("cut short"), "{err}");
    assert!(!target.exists() && !murder.ws.root().join("never.tmp").exists(), "nothing half-imported");
}
