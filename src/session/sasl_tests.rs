//! SASL over whole in-memory sessions: SCRAM's rounds as Cyrus's client
//! sends them, EXTERNAL from a verified certificate, what each connection
//! is offered and refused.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::{Peer, Session, TlsInfo};
use crate::app::App;
use crate::auth::scram::{ClientExchange, ScramHash};
use crate::config::Config;
use crate::protocol::{Command, Status};
use crate::tools::client::{Client, ClientError, Greeting};

const WAIT: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
listen = ["127.0.0.1:0"]
failed_login_pause = 0

[[users]]
name = "mupdater"
password = "secret"
role = "admin"

[[users]]
name = "be1"
password = "be1pw"
certificate = "be1.example.org"
role = "backend"
servers = ["be1"]

[[users]]
name = "be2"
certificate = "be2.example.org"
role = "backend"
servers = ["be2"]
"#;

fn app_with(text: &str) -> (Arc<App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::parse(text).expect("config");
    config.data_dir = dir.path().join("data");
    (Arc::new(App::open(config).expect("store opens")), dir)
}

/// A session over an in-memory stream, with TLS as given; the client
/// after the greeting.
async fn connect(app: &Arc<App>, tls: Option<TlsInfo>) -> (Client<DuplexStream>, Greeting, watch::Sender<bool>) {
    let (stop_tx, stop) = watch::channel(false);
    let (server_end, client_end) = tokio::io::duplex(64 * 1024);
    let mut session = Session::new(server_end, app.clone(), Peer::None, stop);
    if let Some(tls) = tls {
        let caps = super::Capabilities::for_connection(app, Some(&tls));
        session = session.with_tls(tls).with_capabilities(caps);
    }
    tokio::spawn(session.run());
    let (client, greeting) = Client::over(client_end, WAIT).await.expect("greeting");
    (client, greeting, stop_tx)
}

fn auth_line(g: &Greeting) -> String {
    g.capabilities.iter().find(|(n, _)| n == "AUTH").map(|(_, p)| p.clone()).unwrap_or_default()
}

fn cert(names: &[&str]) -> TlsInfo {
    TlsInfo {
        version: "TLSv1_3".into(),
        cipher: "TLS13_AES_256_GCM_SHA384".into(),
        client_names: Some(names.iter().map(|n| n.to_string()).collect()),
    }
}

fn activate(name: &str, location: &str) -> Command {
    Command::Activate { name: name.into(), location: location.into(), acl: "".into() }
}

/// Read bytes until `want` has arrived (or fail after WAIT).
async fn read_until(s: &mut DuplexStream, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("in time").expect("read");
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[tokio::test]
async fn scram_session_in_cyrus_wire_shapes() {
    let (app, _dir) = app_with(CONFIG);
    let (stop_tx, stop) = watch::channel(false);
    let (server_end, mut c) = tokio::io::duplex(64 * 1024);
    tokio::spawn(Session::new(server_end, app.clone(), Peer::None, stop).run());
    let banner = read_until(&mut c, b"(master)\"\r\n").await;
    // be2 has no password: without a verified certificate it cannot log
    // in at all, so it does not keep SCRAM from being offered here.
    assert!(banner.starts_with(b"* AUTH \"SCRAM-SHA-256\" \"PLAIN\"\r\n"), "{}", String::from_utf8_lossy(&banner));
    // As imap/saslclient.c sends it: the client-first as a {n+} literal,
    // then bare base64 lines, then an empty line after server-final.
    let (mut ex, first) = ClientExchange::new(ScramHash::Sha256, "be1", Some("be1"), b"be1pw");
    let b64 = STANDARD.encode(&first);
    c.write_all(format!("A01 AUTHENTICATE \"SCRAM-SHA-256\" {{{}+}}\r\n{b64}\r\n", b64.len()).as_bytes()).await.unwrap();
    let line = read_until(&mut c, b"\r\n").await;
    let server_first = STANDARD.decode(&line[..line.len() - 2]).expect("server-first is a bare base64 line");
    assert!(server_first.starts_with(b"r="), "{}", String::from_utf8_lossy(&server_first));
    let fin = ex.respond(&server_first).unwrap();
    c.write_all(format!("{}\r\n", STANDARD.encode(fin)).as_bytes()).await.unwrap();
    let line = read_until(&mut c, b"\r\n").await;
    let server_final = STANDARD.decode(&line[..line.len() - 2]).expect("server-final is a bare base64 line");
    ex.verify(&server_final).expect("the server holds the verifier");
    c.write_all(b"\r\n").await.unwrap();
    let ok = read_until(&mut c, b"\r\n").await;
    assert_eq!(ok, b"A01 OK \"Authenticated\"\r\n");
    c.write_all(b"X1 ACTIVATE \"user.a\" \"be1!p\" \"\"\r\n").await.unwrap();
    assert_eq!(read_until(&mut c, b"\r\n").await, b"X1 OK \"done\"\r\n");
    drop(stop_tx);
}

#[tokio::test]
async fn scram_with_the_tools_client_and_its_failures() {
    let (app, _dir) = app_with(CONFIG);
    let (mut c, g, _stop) = connect(&app, None).await;
    assert_eq!(c.login(&g, "mupdater", "secret").await.expect("login"), "SCRAM-SHA-256");
    assert!(c.list(None).await.is_ok());
    // Wrong password, unknown user, someone else's authzid: each a NO.
    for (user, authzid, pw) in
        [("be1", None, "wrong"), ("nobody", None, "x"), ("be1", Some("mupdater"), "be1pw"), ("be2", None, "")]
    {
        let (mut c, _, _stop) = connect(&app, None).await;
        match c.authenticate_scram(ScramHash::Sha256, user, authzid, pw).await {
            Err(ClientError::Refused { status: Status::No, text }) => assert_eq!(text, "authentication failed"),
            other => panic!("{user}/{authzid:?}: {other:?}"),
        }
    }
    // An admin may act as another configured user, as with PLAIN.
    let (mut c, _, _stop) = connect(&app, None).await;
    c.authenticate_scram(ScramHash::Sha256, "mupdater", Some("be1"), "secret").await.expect("admin as be1");
    // SCRAM-SHA-1 is off by default: refused like any mechanism not offered.
    let (mut c, _, _stop) = connect(&app, None).await;
    match c.authenticate_scram(ScramHash::Sha1, "be1", None, "be1pw").await {
        Err(ClientError::Refused { status: Status::No, text }) => assert_eq!(text, "unsupported mechanism"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn malformed_scram_messages_and_cancels_get_a_no() {
    let (app, _dir) = app_with(CONFIG);
    for (first, second) in [
        ("p=tls-unique,,n=be1,r=abc", None),
        ("n,,n=be1", None),
        ("garbage", None),
        ("n,,n=be1,r=abc", Some("c=biws,r=abc,p=AAAA")),
        ("n,,n=be1,r=abc", Some("nonsense")),
        ("n,,n=be1,r=abc", Some("*")),
    ] {
        let (mut c, _, _stop) = connect(&app, None).await;
        let b64 = STANDARD.encode(first);
        c.send_raw(format!("A1 AUTHENTICATE \"SCRAM-SHA-256\" \"{b64}\"\r\n").as_bytes()).await.unwrap();
        if let Some(second) = second {
            let challenge = c.read_message().await.expect("server-first");
            assert!(!challenge.starts_with(b"A1 "), "{:?}", String::from_utf8_lossy(&challenge));
            let line = if second == "*" { "*".to_string() } else { STANDARD.encode(second) };
            c.send_raw(format!("{line}\r\n").as_bytes()).await.unwrap();
        }
        let answer = c.read_message().await.expect("answer");
        let want: &[u8] =
            if second == Some("*") { b"A1 NO \"client canceled authentication\"\r\n" } else { b"A1 NO \"authentication failed\"\r\n" };
        assert_eq!(&answer[..], want, "{first} / {second:?}");
        // The session goes on: PLAIN still works.
        c.authenticate("be1", "be1pw").await.expect("PLAIN after a failed SCRAM");
    }
}

#[tokio::test]
async fn external_maps_a_verified_certificate_to_its_entry() {
    let (app, _dir) = app_with(CONFIG);
    // Without TLS, and over TLS without a verified certificate: no EXTERNAL,
    // and trying it is refused.
    for tls in [None, Some(TlsInfo { client_names: None, ..cert(&[]) })] {
        let (mut c, g, _stop) = connect(&app, tls).await;
        assert!(!auth_line(&g).contains("EXTERNAL"), "{}", auth_line(&g));
        match c.authenticate_external("").await {
            Err(ClientError::Refused { status: Status::No, text }) => assert_eq!(text, "unsupported mechanism"),
            other => panic!("{other:?}"),
        }
    }
    // be2's certificate: EXTERNAL offered; be2 has no password, so SCRAM is not.
    let (mut c, g, _stop) = connect(&app, Some(cert(&["be2.example.org"]))).await;
    assert_eq!(auth_line(&g), "\"EXTERNAL\" \"PLAIN\"");
    c.authenticate_external("").await.expect("EXTERNAL as be2");
    c.run_ok(&activate("user.b", "be2!p")).await.expect("be2 asserts its own location");
    // be1's certificate (as a DNS name, any case): be1's identity only.
    let (mut c, _, _stop) = connect(&app, Some(cert(&["Other CN", "BE1.example.org"]))).await;
    c.authenticate_external("be1").await.expect("EXTERNAL as be1, authzid its own name");
    let (_, status, _) = c.run(&activate("user.c", "be2!p")).await.expect("answered");
    assert_eq!(status, Status::No, "a certificate mapped to be1 cannot ACTIVATE a be2 location");
    c.run_ok(&activate("user.c", "be1!p")).await.expect("its own");
    // Another authorization id, or a certificate of no entry: refused.
    for (names, authzid) in [(&["be1.example.org"][..], "mupdater"), (&["be1.example.org"][..], "be2"), (&["x.example.org"][..], "")] {
        let (mut c, _, _stop) = connect(&app, Some(cert(names))).await;
        match c.authenticate_external(authzid).await {
            Err(ClientError::Refused { status: Status::No, text }) => assert_eq!(text, "authentication failed"),
            other => panic!("{names:?}/{authzid}: {other:?}"),
        }
    }
}
