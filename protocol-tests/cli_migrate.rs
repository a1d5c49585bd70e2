//! `mupdatectl export | mupdatectl import -` round-trips a directory that
//! holds every kind of fact (replica groups with a primary set at run time,
//! shadows, a resolved and an unresolved conflict, reserved and moving
//! records, a name that is not UTF-8): the second export equals the first
//! byte for byte and a server on each directory answers XRECORDS,
//! XCONFLICTS, XGROUPS, LIST and FIND the same. Damaged input (an export or
//! a Cyrus `ctl_mboxlist -d` dump) is refused naming its line, with the
//! target left absent or empty.

use std::io::Write;
use std::path::Path;
use std::process::{Command as Process, Output, Stdio};
use std::time::Duration;

use mupdated::protocol::{AdminVerb, Command, Entry, Response};
use mupdated::tools::client::Client;

use crate::cli::GROUPS;
use crate::durability::{free_port, Daemon};

/// mupdated as a process on `data` (the test server's logins and
/// `GROUPS`), once it accepts connections: the directory is released when
/// it stops, for the offline tools.
async fn start(root: &Path, data: &Path) -> (Daemon, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let config = root.join(format!("mupdated-{}.toml", addr.replace([':', '.'], "_")));
    let text = format!("data_dir = \"{}\"\n{}\n{GROUPS}", data.display(), crate::server::CONFIG.replace("127.0.0.1:0", &addr));
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon(
        Process::new(env!("CARGO_BIN_EXE_mupdated"))
            .arg("--config")
            .arg(&config)
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start mupdated"),
    );
    for _ in 0..400 {
        if Client::connect(&addr, Duration::from_secs(1)).await.is_ok() {
            return (d, addr);
        }
        assert!(d.0.try_wait().unwrap().is_none(), "mupdated exited before serving {}", data.display());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mupdated did not start on {addr}");
}

/// SIGTERM by PID and wait: a clean stop.
fn stop(mut d: Daemon) {
    let pid = d.0.id().to_string();
    assert!(Process::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(d.0.wait().unwrap().success(), "clean stop");
}

fn ctl(args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_mupdatectl")).args(args).output().expect("run mupdatectl")
}

/// `mupdatectl ARGS` with `input` on its stdin.
fn ctl_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mupdatectl");
    // A refusal may come before all of stdin is read: a broken pipe is fine.
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child.wait_with_output().expect("wait for mupdatectl")
}

fn text(o: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn export(data: &Path) -> Vec<u8> {
    let o = ctl(&["export", "--format", "jsonl", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    o.stdout
}

async fn login(addr: &str, user: &str, pw: &str) -> Client {
    let (mut c, _) = Client::connect(addr, Duration::from_secs(10)).await.unwrap();
    c.authenticate(user, pw).await.unwrap();
    c
}

fn activate(name: &[u8], loc: &str, acl: &str) -> Command {
    Command::Activate { name: name.to_vec(), location: loc.into(), acl: acl.into() }
}

const NAMES: [&[u8]; 8] = [
    b"user.shadowed",
    b"user.open",
    b"user.settled",
    b"user.reserved",
    b"user.moving",
    b"user.caf\xc3\xa9.a b",
    b"user.raw\xff",
    b"shared.none",
];

/// A data line or an entry, readable (bytes escaped as transcripts do).
fn show_fields(keyword: &str, fields: &[&[u8]]) -> String {
    let f: Vec<String> = fields.iter().map(|f| mupdated::tools::transcript::escape(f)).collect();
    format!("{keyword} {}", f.join(" "))
}

fn show(r: &Response) -> String {
    match r {
        Response::Data { keyword, fields, .. } => show_fields(keyword, &fields.iter().map(Vec::as_slice).collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

fn show_entry(e: &Entry) -> String {
    match e {
        Entry::Mailbox { name, location, acl } => show_fields("MAILBOX", &[name, location, acl]),
        Entry::Reserve { name, location } => show_fields("RESERVE", &[name, location]),
    }
}

/// What admins and clients see of the directory: every name's records and
/// FIND, the conflicts, the groups, LIST, as the server sent them.
async fn snapshot(addr: &str) -> Vec<String> {
    let mut c = login(addr, "mupdater", "secret").await;
    let mut out = Vec::new();
    let admin = |verb, args: Vec<Vec<u8>>| Command::Admin { verb, args };
    for n in NAMES {
        for r in c.run_ok(&admin(AdminVerb::Records, vec![n.to_vec()])).await.unwrap() {
            out.push(show(&r));
        }
        out.push(format!("FIND {:?}", c.find(n).await.unwrap().as_ref().map(show_entry)));
    }
    for verb in [AdminVerb::Conflicts, AdminVerb::Groups] {
        for r in c.run_ok(&admin(verb, vec![])).await.unwrap() {
            out.push(show(&r));
        }
    }
    for e in c.list(None).await.unwrap() {
        out.push(format!("LIST {}", show_entry(&e)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_piped_into_import_round_trips_every_record_and_flag() {
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("old");
    let (server, addr) = start(root.path(), &old).await;
    let mut a = login(&addr, "be1a", "be1apw").await;
    let mut b = login(&addr, "be1b", "be1bpw").await;
    let mut one = login(&addr, "be1", "be1pw").await;
    let mut two = login(&addr, "be2", "be2pw").await;
    let mut adm = login(&addr, "mupdater", "secret").await;
    let acl = "anyone\tlrs\tgroup:staff\tlrswipkxtecdan\t";
    // A replica's copy: a shadow.
    a.run_ok(&activate(b"user.shadowed", "be1a!p1", acl)).await.unwrap();
    b.run_ok(&activate(b"user.shadowed", "be1b!p2", acl)).await.unwrap();
    // Two unrelated servers: one conflict left open, one resolved.
    a.run_ok(&activate(b"user.open", "be1a!p1", "u\tlr\t")).await.unwrap();
    two.run_ok(&activate(b"user.open", "be2!p9", "u\tlrs\t")).await.unwrap();
    a.run_ok(&activate(b"user.settled", "be1a!p1", "u\tlr\t")).await.unwrap();
    two.run_ok(&activate(b"user.settled", "be2!p9", "u\tlrs\t")).await.unwrap();
    let resolve = Command::Admin { verb: AdminVerb::Resolve, args: vec![b"user.settled".to_vec(), b"be2".to_vec()] };
    adm.run_ok(&resolve).await.unwrap();
    // Reserved, and moving (deactivated).
    one.run_ok(&Command::Reserve { name: b"user.reserved".to_vec(), location: b"be1!x".to_vec() }).await.unwrap();
    one.run_ok(&activate(b"user.moving", "be1!default", acl)).await.unwrap();
    one.run_ok(&Command::Deactivate { name: b"user.moving".to_vec(), location: b"be1!default".to_vec() }).await.unwrap();
    one.run_ok(&activate("user.caf\u{e9}.a b".as_bytes(), "be1!default", "caf\u{e9}\tlrs\t")).await.unwrap();
    one.run_ok(&activate(b"user.raw\xff", "be1!default", "")).await.unwrap();
    // The group's primary, set at run time.
    let primary = Command::Admin { verb: AdminVerb::Primary, args: vec![b"pair-1".to_vec(), b"be1b".to_vec()] };
    adm.run_ok(&primary).await.unwrap();
    let before = snapshot(&addr).await;
    for want in [" shadow", " conflict", "RESERVE user.reserved be1!x", " moving ", "GROUP pair-1 be1b"] {
        assert!(before.iter().any(|l| l.contains(want)), "{want} in {before:#?}");
    }
    for c in [a, b, one, two, adm] {
        c.logout().await;
    }
    stop(server);
    let first = export(&old);

    // export | import -
    let new = root.path().join("new");
    let mut exporter = Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(["export", "--data-dir", old.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let importer = Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(["import", "--data-dir", new.to_str().unwrap(), "-"])
        .stdin(exporter.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(exporter.wait().unwrap().success());
    assert_eq!(importer.status.code(), Some(0), "{}", text(&importer));
    let o = ctl(&["verify", "--data-dir", new.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&export(&new)), String::from_utf8_lossy(&first), "the second export equals the first");

    let (server, addr) = start(root.path(), &new).await;
    let after = snapshot(&addr).await;
    assert_eq!(after, before, "what a server on the imported directory answers");
    stop(server);

    // Only jsonl is a format.
    let o = ctl(&["export", "--format", "xml", "--data-dir", old.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn damaged_input_names_its_line_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let export = [
        r#"{"kind":"mupdated-export","version":1}"#,
        r#"{"kind":"mailbox","name":"user.a","conflict":false,"records":[{"location":"be1!p","state":"active","acl":"","effective":true}]}"#,
        r#"{"kind":"mailbox","name":"user.b","conflict":false,"records":[{"location":"be1!p","state":"active","acl":"","effective":true}]}"#,
        r#"{"kind":"mailbox","name":"user.c","conflict":false,"records":[{"location":"be1!p","state":"active","acl":"","effective":true}]}"#,
    ];
    let dump = [
        "{",
        r#""user.a": {"name": "user.a", "mbtype": "er", "partition": "p", "server": "be1", "acl": {"a": "lrs"}},"#,
        r#""user.b": {"name": "user.b", "mbtype": "er", "partition": "p", "server": "be1", "acl": {"b": "lrs"}},"#,
        r#""user.c": {"name": "user.c", "mbtype": "er", "partition": "p", "server": "be1", "acl": {"c": "lrs"}}"#,
        "}",
    ];
    let damage = |lines: &[&str], n: usize, with: &str| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        l[n - 1] = with.to_string();
        l.join("\n") + "\n"
    };
    let half = |s: &str| s[..s.len() / 2].to_string();
    let cases: Vec<(Vec<&str>, String, &str)> = vec![
        (vec!["import"], damage(&export, 3, &half(export[2])), "line 3: not JSON"),
        (vec!["import"], damage(&export, 3, r#"{"kind":"mailbox","name":"user.b","conflict":false,"records":[]}"#), "line 3: records"),
        (vec!["import", "--from-cyrus-dump"], damage(&dump, 3, &half(dump[2])), "line 3: entry \"user.b\""),
        (vec!["import"], export.join("\n"), ""),
        (vec!["import", "--from-cyrus-dump"], dump.join("\n"), ""),
        (vec!["import", "--from-cyrus-dump"], damage(&dump, 3, &dump[1].replace("\"er\"", "\"eq\"")), "line 3: entry \"user.a\": mbtype"),
        (vec!["import", "--from-cyrus-dump"], damage(&dump, 3, dump[1]), "line 3: mailbox \"user.a\" appears twice"),
        (vec!["import", "--from-cyrus-dump"], dump[..3].join("\n"), "line 3: the dump ends before its closing `}`"),
    ];
    // --server-name is for a backend's Cyrus dump only.
    let o = ctl_stdin(&["import", "--server-name", "be1", "-", "--data-dir", root.path().join("u").to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for (i, (args, input, want)) in cases.iter().enumerate() {
        if want.is_empty() {
            // The control: the undamaged input imports.
            let ok = root.path().join(format!("ok{i}"));
            let o = ctl_stdin(&[&["--json"], &args[..], &["-", "--data-dir", ok.to_str().unwrap()]].concat(), input.as_bytes());
            assert_eq!(o.status.code(), Some(0), "case {i}: {}", text(&o));
            if args.len() == 2 {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                assert_eq!(v["mailboxes"], 3, "{v}");
                assert_eq!(v["skipped"], serde_json::json!({"tombstones": 0, "intermediates": 0}), "{v}");
            }
            continue;
        }
        // Absent, then existing and empty: both stay as they were.
        for existing in [false, true] {
            let target = root.path().join(format!("t{i}-{existing}"));
            if existing {
                std::fs::create_dir(&target).unwrap();
            }
            let o = ctl_stdin(&[&args[..], &["-", "--data-dir", target.to_str().unwrap()]].concat(), input.as_bytes());
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "case {i}: {}", text(&o));
            assert!(err.contains(want) && err.contains("nothing was imported"), "case {i}: want {want:?}: {err}");
            assert_eq!(target.exists(), existing, "case {i}");
            if existing {
                assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0, "case {i}: left empty");
            }
            assert!(!root.path().join(format!("t{i}-{existing}.tmp")).exists(), "case {i}: no staging folder left");
        }
    }
}
