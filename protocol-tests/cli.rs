//! mupdatectl against an in-process mupdated: lookups, the facts model's
//! control surface (failover, conflicts, records, rights) with stable exit
//! codes and JSON, and that a failover reaches an UPDATE stream.

use std::process::{Command as Process, Output};
use std::time::Duration;

use mupdated::tools::client::Client;
use mupdated::protocol::{Command, Entry, Response};

use crate::server::TestServer;

/// One replica group with a configured primary (also the migration tests').
pub(crate) const GROUPS: &str = r#"
[[replica_groups]]
name = "pair-1"
servers = ["be1a", "be1b"]
primary = "be1a"
"#;

fn ctl(addr: &str, args: &[&str]) -> Output {
    Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(["--server", addr, "--user", "mupdater", "--timeout", "10"])
        .args(args)
        .env("MUPDATE_PASSWORD", "secret")
        .output()
        .expect("run mupdatectl")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

async fn login(addr: &str, user: &str, pw: &str) -> Client {
    let (mut c, _) = Client::connect(addr, Duration::from_secs(10)).await.unwrap();
    c.authenticate(user, pw).await.unwrap();
    c
}

async fn activate(c: &mut Client, name: &str, loc: &str, acl: &str) {
    c.run_ok(&Command::Activate { name: name.into(), location: loc.into(), acl: acl.into() }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_conflicts_and_records_through_mupdatectl() {
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), "", GROUPS).await;
    let addr = server.addr();
    let mut a = login(&addr, "be1a", "be1apw").await;
    let mut b = login(&addr, "be1b", "be1bpw").await;
    activate(&mut a, "user.x", "be1a!default", "x\tlrswipkxtecdan\t").await;
    // The replica asserts its own copy: kept, not effective.
    activate(&mut b, "user.x", "be1b!default", "x\tlrswipkxtecdan\t").await;

    let mut stream = login(&addr, "fe", "fepw").await;
    let dump = stream.run_ok(&Command::Update { hosts: vec![] }).await.unwrap();
    assert!(matches!(&dump[..], [Response::Entry { entry: Entry::Mailbox { location, .. }, .. }] if location == b"be1a!default"));

    let o = ctl(&addr, &["--json", "records", "user.x"]);
    assert_eq!(o.status.code(), Some(0), "{addr}: {}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["location"], "be1a!default");
    assert_eq!(v[0]["role"], "effective");
    assert_eq!(v[1]["role"], "shadow");
    assert_eq!(v[1]["state"], "active");

    let o = ctl(&addr, &["--json", "groups"]);
    assert_eq!(json(&o), serde_json::json!([{"group": "pair-1", "primary": "be1a", "servers": ["be1a", "be1b"]}]));

    // Failover: the stream is re-routed at once.
    let o = ctl(&addr, &["primary", "pair-1", "be1b"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    match stream.read_response().await.unwrap() {
        Response::Entry { entry: Entry::Mailbox { name, location, .. }, .. } => {
            assert_eq!((name.as_slice(), location.as_slice()), (&b"user.x"[..], &b"be1b!default"[..]))
        }
        other => panic!("stream sent {other:?}"),
    }
    let o = ctl(&addr, &["--json", "primary", "pair-1"]);
    assert_eq!(json(&o), serde_json::json!([{"group": "pair-1", "primary": "be1b"}]));
    assert_eq!(ctl(&addr, &["find", "user.x"]).stdout, b"MAILBOX user.x be1b!default x\\tlrswipkxtecdan\\t\n");
    // Errors have stable exit codes.
    assert_eq!(ctl(&addr, &["primary", "nosuch", "be1a"]).status.code(), Some(1));
    assert_eq!(ctl(&addr, &["primary", "pair-1", "be2"]).status.code(), Some(1));
    assert_eq!(ctl(&addr, &["find", "user.none"]).status.code(), Some(1));
    assert_eq!(ctl(&addr, &["records", "user.none"]).status.code(), Some(1));
    assert_eq!(ctl("127.0.0.1:1", &["find", "x"]).status.code(), Some(3));
    assert_eq!(ctl(&addr, &["no-such-command"]).status.code(), Some(2));

    // An unrelated server creates the same mailbox: a recorded conflict.
    let mut c = login(&addr, "be2", "be2pw").await;
    activate(&mut c, "user.x", "be2!default", "x\tlr\t").await;
    let o = ctl(&addr, &["--json", "conflicts"]);
    assert_eq!(json(&o), serde_json::json!([{"name": "user.x", "effective": "be1b", "others": ["be2"]}]));
    let o = ctl(&addr, &["resolve", "user.x", "be2"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    match stream.read_response().await.unwrap() {
        Response::Entry { entry: Entry::Mailbox { location, .. }, .. } => assert_eq!(location, b"be2!default"),
        other => panic!("stream sent {other:?}"),
    }
    assert_eq!(ctl(&addr, &["resolve", "user.x", "be9"]).status.code(), Some(1));

    // Rights through the index.
    let o = ctl(&addr, &["--json", "rights", "x"]);
    assert_eq!(json(&o), serde_json::json!([{"name": "user.x", "rights": "lr"}]));

    // Per-record delete: be2's record goes, a successor takes over.
    let o = ctl(&addr, &["delete-record", "user.x", "be2!default"]);
    assert_eq!(o.status.code(), Some(0));
    let o = ctl(&addr, &["--json", "records", "user.x"]);
    assert_eq!(json(&o).as_array().unwrap().len(), 2);
    let o = ctl(&addr, &["--json", "list"]);
    assert_eq!(json(&o)[0]["name"], "user.x");
    server.stop().await;
}

/// Run `mupdatectl ARGS` with `stdin` on its standard input: what it
/// printed, once it succeeded.
fn hash_password(args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let mut child = Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn hash_password_makes_a_usable_phc_string() {
    let hash = hash_password(&["hash-password"], b"s3cret\n").trim().to_string();
    assert!(hash.starts_with("$argon2"), "{hash}");
    let users = vec![mupdated::config::User {
        name: "u".into(),
        password: None,
        password_hash: Some(hash),
        scram_sha256: None,
        scram_sha1: None,
        certificate: None,
        role: mupdated::config::Role::Admin,
        servers: vec![],
    }];
    let auth = mupdated::auth::Authenticator::new(&users);
    assert!(auth.plain(b"\0u\0s3cret").is_ok());
    assert!(auth.plain(b"\0u\0s3creT").is_err());
}

/// `hash-password --scram` prints lines that paste into a `[[users]]`
/// entry; a server with them offers SCRAM and logs the user in with it,
/// and PLAIN still works through the argon2 line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_password_scram_lines_paste_into_a_working_entry() {
    let lines = hash_password(&["hash-password", "--scram", "--iterations", "8192"], b"s3cret\n");
    assert!(lines.starts_with("scram_sha256 = \"") && lines.contains(",8192,"), "{lines}");
    assert!(lines.contains("\npassword_hash = \"$argon2"), "{lines}");
    let config = format!("[[users]]\nname = \"pasted\"\nrole = \"reader\"\n{lines}");
    mupdated::config::Config::parse(&config).expect("the printed lines make a valid entry");
    let bad = Process::new(env!("CARGO_BIN_EXE_mupdatectl"))
        .args(["hash-password", "--scram", "--iterations", "100000"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "iterations above Cyrus's limit are refused");

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = mupdated::config::Config::parse(&format!("listen = [\"127.0.0.1:0\"]\nfailed_login_pause = 0\n{config}"))
        .unwrap();
    cfg.data_dir = dir.path().join("data");
    let app = std::sync::Arc::new(mupdated::app::App::open(cfg).unwrap());
    for use_scram in [true, false] {
        let (server_end, client_end) = tokio::io::duplex(64 * 1024);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(mupdated::session::Session::new(server_end, app.clone(), mupdated::session::Peer::None, stop).run());
        let (mut c, greeting) = Client::over(client_end, Duration::from_secs(10)).await.unwrap();
        if use_scram {
            assert_eq!(c.login(&greeting, "pasted", "s3cret").await.unwrap(), "SCRAM-SHA-256");
        } else {
            c.authenticate("pasted", "s3cret").await.unwrap();
        }
        c.list(None).await.unwrap();
    }
}
