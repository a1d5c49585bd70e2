//! Integrity of the store: a damaged data directory is refused with a
//! message that says what to do (never served, never a panic), `mupdatectl
//! verify` reports it, `rebuild-indexes` repairs index damage,
//! export/import round-trip every record and flag, and an online backup
//! taken while writers run restores to a directory that has every write
//! acknowledged before the backup started.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mupdated::tools::client::Client;
use mupdated::protocol::{AdminVerb, Command, Response, Status};

use crate::durability::{free_port, Daemon};

impl Daemon {
    /// SIGTERM by PID and wait: a clean stop (writes the seal).
    fn stop(mut self) {
        let pid = self.0.id().to_string();
        let st = Process::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(st.success());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "clean stop: {status:?}");
    }
}

const GROUPS: &str =
    "[[replica_groups]]\nname = \"pair-1\"\nservers = [\"be1a\", \"be1b\"]\nprimary = \"be1a\"\n";

/// A configuration file for `data` with one admin login.
fn config(dir: &Path, data: &Path, verify: &str) -> (PathBuf, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let path = dir.join(format!("mupdated-{}.toml", addr.replace([':', '.'], "_")));
    let text = format!(
        "listen = [\"{addr}\"]\ndata_dir = \"{}\"\nverify_on_open = \"{verify}\"\n[[users]]\nname = \"mupdater\"\npassword = \"secret\"\nrole = \"admin\"\n{GROUPS}",
        data.display()
    );
    std::fs::write(&path, text).unwrap();
    (path, addr)
}

fn spawn(config: &Path) -> Child {
    spawn_to(config, "warn", Stdio::piped())
}

/// The daemon with its log filter and its stderr where the test wants it.
fn spawn_to(config: &Path, log: &str, stderr: Stdio) -> Child {
    Process::new(env!("CARGO_BIN_EXE_mupdated"))
        .arg("--config")
        .arg(config)
        .arg("--log")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start mupdated")
}

async fn start(config: &Path, addr: &str) -> Daemon {
    wait_started(Daemon(spawn(config)), addr).await
}

/// Wait until `d` accepts connections on `addr` (panics with its stderr,
/// when piped, if it exits first).
async fn wait_started(mut d: Daemon, addr: &str) -> Daemon {
    for _ in 0..400 {
        if Client::connect(addr, Duration::from_secs(1)).await.is_ok() {
            return d;
        }
        if let Ok(Some(st)) = d.0.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            if let Some(mut e) = d.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("mupdated exited with {st:?}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mupdated did not start on {addr}");
}

/// Start a server that must refuse its directory: its exit status and stderr.
/// (A server still running after 20 s is serving: killed, and reported as
/// such.)
fn refused(config: &Path) -> (Option<i32>, String) {
    let mut d = Daemon(spawn(config));
    let mut err = String::new();
    for _ in 0..400 {
        if let Ok(Some(st)) = d.0.try_wait() {
            use std::io::Read;
            let _ = d.0.stderr.take().unwrap().read_to_string(&mut err);
            return (st.code(), err);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (Some(0), "still serving after 20 s".into())
}

fn ctl(args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(["--user", "mupdater", "--timeout", "20"])
        .args(args)
        .env("MUPDATE_PASSWORD", "secret")
        .output()
        .expect("run mupdatectl")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn login(addr: &str) -> Client {
    let (mut c, _) = Client::connect(addr, Duration::from_secs(10))
        .await
        .unwrap();
    c.authenticate("mupdater", "secret").await.unwrap();
    c
}

fn activate(name: &str, loc: &str) -> Command {
    Command::Activate {
        name: name.into(),
        location: loc.into(),
        acl: format!("{name}\tlrs\tanyone\tl\t").into_bytes(),
    }
}

/// `mupdatectl import` of `file` into `dir`, which must then verify
/// clean and serve with the full check at open.
async fn import_and_start(root: &Path, file: &Path, dir: &Path, what: &str) -> (Daemon, String) {
    let o = ctl(&["import", "--data-dir", dir.to_str().unwrap(), file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{what}: {}", text(&o));
    assert_verify_clean(dir, what);
    let (cfg, addr) = config(root, dir, "full");
    (start(&cfg, &addr).await, addr)
}

/// A cleanly stopped directory of `n` mailboxes (user.m0 ...), written by
/// the server with 4 concurrent writers.
async fn make_store(root: &Path, n: usize) -> PathBuf {
    let data = root.join("base");
    let (cfg, addr) = config(root, &data, "quick");
    let d = start(&cfg, &addr).await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let addr = addr.clone();
        writers.push(tokio::spawn(async move {
            let mut c = login(&addr).await;
            for i in (w..n).step_by(4) {
                c.run_ok(&activate(&format!("user.m{i}"), "be1!default"))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    d.stop();
    data
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The store's key of a plain name (`n` order-key 0).
fn name_key(name: &str) -> Vec<u8> {
    let mut k = vec![b'n'];
    k.extend(name.replace('.', "\x1F").bytes());
    k.push(0);
    k
}

fn assert_refused(config: &Path, what: &str) {
    let (code, err) = refused(config);
    assert_ne!(
        code,
        Some(0),
        "{what}: the server must not serve a damaged directory; stderr: {err}"
    );
    assert!(
        err.contains("damaged") && err.contains("mupdatectl verify"),
        "{what}: no damage message: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: a panic instead of a message: {err}"
    );
}

/// The server refuses the directory and verify reports it (true), or
/// nothing was lost: verify finds it clean and the server serves all `n`
/// names (false).
async fn refused_or_intact(cfg: &Path, addr: &str, data: &Path, what: &str, n: usize) -> bool {
    let o = ctl(&["verify", "--data-dir", data.to_str().unwrap()]);
    if o.status.code() == Some(0) {
        let d = start(cfg, addr).await;
        let mut c = login(addr).await;
        let listed = c.list(None).await.unwrap();
        assert_eq!(
            listed.len(),
            n,
            "{what}: verify said clean, but mailboxes are missing"
        );
        drop(c);
        d.stop();
        eprintln!("{what}: nothing lost");
        return false;
    }
    assert_verify_damaged(data, what, "");
    assert_refused(cfg, what);
    // Still refused the second time (nothing was "accepted" by trying).
    assert_refused(cfg, what);
    true
}

fn assert_verify_damaged(data: &Path, what: &str, expect: &str) {
    let o = ctl(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: verify must report damage\n{}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("damaged") && err.contains(expect),
        "{what}: verify says\n{}",
        text(&o)
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

fn assert_verify_clean(data: &Path, what: &str) {
    let o = ctl(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{what}: verify\n{}", text(&o));
}

/// The directory's sled database opened directly, to damage it behind the
/// server's back (the server is stopped).
fn open_behind_the_server(data: &Path) -> sled::Db {
    sled::Config::new().path(data).use_compression(true).open().unwrap()
}

/// Once the database opened by [`open_behind_the_server`] is dropped, wait
/// until its lock is free: another test of this process may fork (to run
/// a tool) while it is open, and the child then shares the lock until it
/// execs. The tools this test runs next must find the directory free.
fn wait_until_released(data: &Path) {
    let file = std::fs::File::open(data.join("db")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while file.try_lock().is_err() {
        assert!(std::time::Instant::now() < deadline, "{}: sled's lock is still held", data.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// After a quick open (the default) a value damaged behind sled's back is
/// found by the read of every value that follows the open, not only when
/// someone asks for that name: writes to other names are refused within
/// seconds, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_open_finds_a_damaged_value_in_the_background() {
    let root = tempfile::tempdir().unwrap();
    let base = make_store(root.path(), 500).await;
    let data = root.path().join("garbage-unread");
    copy_dir(&base, &data);
    {
        let db = open_behind_the_server(&data);
        db.insert(name_key("user.m321"), &b"\x01\x00\x07garbage"[..]).unwrap();
        db.flush().unwrap();
    }
    wait_until_released(&data);
    let (quick, addr) = config(root.path(), &data, "quick");
    let log = data.with_extension("log");
    let stderr = Stdio::from(std::fs::File::create(&log).unwrap());
    let _d = wait_started(Daemon(spawn_to(&quick, "info", stderr)), &addr).await;
    let mut c = login(&addr).await;
    let mut refused = None;
    for i in 0..200 {
        let (_, st, text) = c.run(&activate(&format!("user.fresh{i}"), "be1!default")).await.unwrap();
        if st == Status::No {
            refused = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = refused.expect("writes are refused once the background read found the damaged value (20 s)");
    assert!(text.contains("damaged") && text.contains("mupdatectl verify"), "{text}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("found by the check after a quick open") && logged.contains("user.m321"), "{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_directories_are_refused_and_reported() {
    let root = tempfile::tempdir().unwrap();
    let base = make_store(root.path(), 3000).await;
    assert_verify_clean(&base, "the clean store");
    let db_len = std::fs::metadata(base.join("db")).unwrap().len();

    // Cut off the end of the database file. Whether that loses anything
    // depends on where sled's log was writing (the file is 512 KiB
    // segments, reused): a cut that loses nothing must be served whole, a
    // cut that loses anything must be refused. Opened with the full check
    // (what `verify` finds, the server finds): a cut may also land in a
    // page sled reads only later, which the quick check cannot see (the
    // quick check's own promise, a lost tail against the seal, is the unit
    // test `store::tests::the_seal_refuses_a_directory_that_lost_its_tail`).
    let mut refusals = 0;
    for (what, cut) in [
        ("truncated by 4 KiB", 4096u64),
        ("truncated by 1 MiB", (1 << 20).min(db_len / 2)),
    ] {
        let data = root.path().join(what.replace(' ', "-"));
        copy_dir(&base, &data);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(data.join("db"))
            .unwrap();
        f.set_len(db_len - cut).unwrap();
        drop(f);
        let (cfg, addr) = config(root.path(), &data, "full");
        if refused_or_intact(&cfg, &addr, &data, what, 3000).await {
            refusals += 1;
        }
    }
    assert!(refusals > 0, "no truncation was refused");

    // Bytes flipped near the end of the file, and near the end of its
    // first half (the same rule: refused when anything was lost). Where
    // the flips land depends on the run: in a page sled reads while it
    // recovers (a lost tail: the seal catches it), or in one it reads only
    // later, which only the full check finds (the quick check compares the
    // stored summaries with the seal). So these are opened with the full
    // check, which finds exactly what `verify` finds.
    for (what, at) in [
        ("bytes flipped near the end", db_len - 3000),
        ("bytes flipped mid-file", db_len / 2 - 3000),
    ] {
        let data = root.path().join(what.replace(' ', "-"));
        copy_dir(&base, &data);
        let mut bytes = std::fs::read(data.join("db")).unwrap();
        for b in &mut bytes[at as usize..at as usize + 100] {
            *b ^= 0x5A;
        }
        std::fs::write(data.join("db"), bytes).unwrap();
        let (cfg, addr) = config(root.path(), &data, "full");
        refused_or_intact(&cfg, &addr, &data, what, 3000).await;
    }

    // A value overwritten with garbage through sled, behind the server's back.
    {
        let data = root.path().join("garbage");
        copy_dir(&base, &data);
        {
            let db = open_behind_the_server(&data);
            assert!(db.get(name_key("user.m7")).unwrap().is_some());
            db.insert(name_key("user.m7"), &b"\x01\x00\x07garbage"[..])
                .unwrap();
            db.flush().unwrap();
        }
        wait_until_released(&data);
        assert_verify_damaged(&data, "garbage value", "do not decode");
        let (full, _) = config(root.path(), &data, "full");
        assert_refused(&full, "garbage value, full check at open");
        // The quick check cannot see inside sled: the server starts, but
        // the first read of the damaged value stops writes.
        let (quick, addr) = config(root.path(), &data, "quick");
        let _d = start(&quick, &addr).await;
        let mut c = login(&addr).await;
        let (_, st, _) = c
            .run(&Command::Find {
                name: b"user.m7".to_vec(),
            })
            .await
            .unwrap();
        assert_eq!(st, Status::No, "a damaged value is not answered as absent");
        let (_, st, text) = c.run(&activate("user.new", "be1!default")).await.unwrap();
        assert_eq!(st, Status::No);
        assert!(
            text.contains("damaged") && text.contains("mupdatectl verify"),
            "{text}"
        );
    }

    // An index key removed through sled: verify sees it, rebuild-indexes
    // repairs it, and the server serves the repaired directory.
    {
        let data = root.path().join("index");
        copy_dir(&base, &data);
        {
            let db = open_behind_the_server(&data);
            let mut k = b"sbe1\0".to_vec();
            k.extend(b"user\x1Fm11\0");
            assert!(db.remove(&k).unwrap().is_some(), "the index key exists");
            db.flush().unwrap();
        }
        wait_until_released(&data);
        assert_verify_damaged(&data, "index key removed", "index by server");
        let (full, addr) = config(root.path(), &data, "full");
        assert_refused(&full, "index key removed, full check at open");
        let o = ctl(&["rebuild-indexes", "--data-dir", data.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_verify_clean(&data, "after rebuild-indexes");
        let d = start(&full, &addr).await;
        let mut c = login(&addr).await;
        let listed = c.list(Some(b"be1!")).await.unwrap();
        assert_eq!(listed.len(), 3000, "LIST be1! after the rebuild");
        assert!(listed.iter().any(|e| e.name() == b"user.m11"));
        drop(c);
        d.stop();
        assert_verify_clean(&data, "after serving the rebuilt directory");
    }
}

/// Every record of every name, every conflict, every group, as the admin
/// extensions show them.
async fn snapshot(addr: &str, names: &[&str]) -> Vec<Vec<Vec<u8>>> {
    let mut c = login(addr).await;
    let mut out = Vec::new();
    let admin = |verb, args: Vec<Vec<u8>>| Command::Admin { verb, args };
    for n in names {
        for r in c
            .run_ok(&admin(AdminVerb::Records, vec![n.as_bytes().to_vec()]))
            .await
            .unwrap()
        {
            if let Response::Data { fields, .. } = r {
                out.push(fields);
            }
        }
    }
    for verb in [AdminVerb::Conflicts, AdminVerb::Groups] {
        for r in c.run_ok(&admin(verb, vec![])).await.unwrap() {
            if let Response::Data { fields, .. } = r {
                out.push(fields);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trips_groups_shadows_and_conflicts() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("old");
    let (cfg, addr) = config(root.path(), &data, "quick");
    let d = start(&cfg, &addr).await;
    let mut c = login(&addr).await;
    let acl = |n: &str| format!("{n}\tlrs\t");
    for (name, loc) in [
        ("user.shadowed", "be1a!p1"),
        ("user.shadowed", "be1b!p2"),
        ("user.conflict", "be1a!p1"),
        ("user.conflict", "be2!p9"),
        ("user.plain", "be3!default"),
        ("user.movingaway", "be3!default"),
        ("user.caf\u{e9}", "be1b!p"),
    ] {
        c.run_ok(&Command::Activate {
            name: name.into(),
            location: loc.into(),
            acl: acl(name).into_bytes(),
        })
        .await
        .unwrap();
    }
    c.run_ok(&Command::Reserve {
        name: b"user.reserved".to_vec(),
        location: b"be4!x".to_vec(),
    })
    .await
    .unwrap();
    c.run_ok(&Command::Deactivate {
        name: b"user.movingaway".to_vec(),
        location: b"be3!default".to_vec(),
    })
    .await
    .unwrap();
    c.run_ok(&Command::Admin {
        verb: AdminVerb::Primary,
        args: vec![b"pair-1".to_vec(), b"be1b".to_vec()],
    })
    .await
    .unwrap();
    let names = [
        "user.shadowed",
        "user.conflict",
        "user.plain",
        "user.movingaway",
        "user.caf\u{e9}",
        "user.reserved",
    ];
    let before = snapshot(&addr, &names).await;
    assert!(
        before
            .iter()
            .any(|f| f.last().map(Vec::as_slice) == Some(b"shadow")),
        "{before:?}"
    );
    assert!(before
        .iter()
        .any(|f| f.last().map(Vec::as_slice) == Some(b"conflict")));
    drop(c);
    d.stop();

    let file = root.path().join("export.jsonl");
    let o = ctl(&[
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let new = root.path().join("new");
    let (d2, addr2) = import_and_start(root.path(), &file, &new, "imported").await;
    let after = snapshot(&addr2, &names).await;
    assert_eq!(
        after, before,
        "every record, role, conflict and primary survives export + import"
    );
    d2.stop();

    // Bad input: the line is named and nothing is left behind.
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.insert(
        3,
        "{\"kind\":\"mailbox\",\"name\":\"user.bad\",\"conflict\":false,\"records\":[]}".into(),
    );
    let bad = root.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let target = root.path().join("never");
    let o = ctl(&[
        "import",
        "--data-dir",
        target.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 4"),
        "{}",
        text(&o)
    );
    assert!(
        !target.exists() && !root.path().join("never.tmp").exists(),
        "nothing half-imported"
    );
    // Never into a directory that holds something.
    let o = ctl(&[
        "import",
        "--data-dir",
        data.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writers_run_restores_every_acknowledged_write() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("live");
    let (cfg, addr) = config(root.path(), &data, "quick");
    let _d = start(&cfg, &addr).await;
    {
        let mut c = login(&addr).await;
        for i in 0..2000 {
            c.run_ok(&activate(&format!("user.pre{i}"), "be1!default"))
                .await
                .unwrap();
        }
    }
    // Writers keep creating and deleting names during the backup.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (addr, acked, stop) = (addr.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut c = login(&addr).await;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("user.w{w}.{i}");
                c.run_ok(&activate(&name, "be2!default")).await.unwrap();
                acked.lock().unwrap().insert(name);
                // Deleting an old name the backup may not have copied yet.
                let old = format!("user.pre{}", (i * 3 + w) % 2000);
                if i % 2 == 0 {
                    c.run_ok(&Command::Delete {
                        name: old.into_bytes(),
                    })
                    .await
                    .unwrap();
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked_before: BTreeSet<String> = acked.lock().unwrap().clone();
    let deleted_before_possible = true;
    let out = root.path().join("backup");
    let o = tokio::task::spawn_blocking({
        let (out, addr) = (out.clone(), addr.clone());
        move || ctl(&["--server", &addr, "backup", out.to_str().unwrap()])
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        acked_before.len() > 10,
        "writers were running ({})",
        acked_before.len()
    );

    let restored = root.path().join("restored");
    let file = out.join("backup.jsonl");
    let (d2, addr2) = import_and_start(root.path(), &file, &restored, "restored backup").await;
    let mut c = login(&addr2).await;
    let listed: BTreeSet<String> = c
        .list(None)
        .await
        .unwrap()
        .iter()
        .map(|e| String::from_utf8_lossy(e.name()).into_owned())
        .collect();
    let missing: Vec<_> = acked_before
        .iter()
        .filter(|n| !listed.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "{} writes acknowledged before the backup are missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let _ = deleted_before_possible;
    // Nothing in the copy was never written.
    let all_acked = acked.lock().unwrap().clone();
    assert!(listed
        .iter()
        .all(|n| n.starts_with("user.pre") || all_acked.contains(n)));
    // The restored server takes writes.
    c.run_ok(&activate("user.after", "be1!default"))
        .await
        .unwrap();
    drop(c);
    d2.stop();
}
