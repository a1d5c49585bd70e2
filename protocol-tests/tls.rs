//! TLS: STARTTLS and implicit TLS with rustls, `require`, certificate
//! reloads, startup refusals and hostile TLS input, each hostile case with
//! a witness session answering FIND throughout. Test certificates are
//! made with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

use mupdated::config::Config;
use mupdated::net::Server;
use mupdated::protocol::{cyrus, Command, Entry, Status};
use mupdated::tools::client::{Client, ClientError};
use mupdated::tools::tls_client::{self, Mode, Options, TlsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::TestServer;

const WAIT: Duration = Duration::from_secs(20);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Process::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("cannot run openssl ({e}): install the openssl package (apt-get install openssl)")
    });
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A key and a certificate `name` signed by `issuer` (self-signed when
/// `None`), with `ext` as its extensions.
fn cert(dir: &Path, name: &str, subject: &str, issuer: Option<&str>, ext: &str) {
    let (key, csr, crt, extf) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
    std::fs::write(dir.join(&extf), ext).expect("write ext");
    openssl(dir, &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &key,
        "-out", &csr, "-subj", subject]);
    let mut args = vec!["x509", "-req", "-in", &csr, "-out", &crt, "-days", "2", "-extfile", &extf];
    let (ca, cakey);
    match issuer {
        Some(i) => {
            ca = format!("{i}.pem");
            cakey = format!("{i}.key");
            args.extend(["-CA", &ca, "-CAkey", &cakey, "-CAcreateserial"]);
        }
        None => args.extend(["-signkey", &key]),
    }
    openssl(dir, &args);
}

const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
const SERVER_EXT: &str = "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
const CLIENT_EXT: &str = "basicConstraints=CA:FALSE\nsubjectAltName=DNS:be1.example.org\nextendedKeyUsage=clientAuth\n";

/// A test CA, a server certificate (for 127.0.0.1) and a client one.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        cert(dir.path(), "ca", "/CN=mupdated test CA", None, CA_EXT);
        cert(dir.path(), "server", "/CN=server one", Some("ca"), SERVER_EXT);
        cert(dir.path(), "client", "/CN=be1", Some("ca"), CLIENT_EXT);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `[tls]` table, with `extra` keys.
    fn table(&self, extra: &str) -> String {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nhandshake_timeout = 2\n{extra}\n",
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem")
        )
    }

    fn verify(&self) -> Options {
        Options { ca: Some(self.path("ca.pem")), ..Options::default() }
    }
}

async fn start(pki: &Pki, extra: &str) -> TestServer {
    TestServer::start_in(tempfile::tempdir().expect("temp dir"), "", &pki.table(extra)).await
}

/// A logged-in session over STARTTLS that must keep answering FIND.
async fn witness(addr: &str, pki: &Pki) -> TlsClient {
    let (mut c, _) = tls_client::connect(addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("witness connects");
    c.authenticate("mupdater", "secret").await.expect("witness logs in");
    c
}

async fn still_answers(w: &mut TlsClient) {
    let r = tokio::time::timeout(Duration::from_secs(10), w.find(b"user.nobody")).await;
    assert!(matches!(r, Ok(Ok(None))), "the witness session stopped answering: {r:?}");
}

/// Read until EOF (true) or `limit` (false).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_then_login_and_directory_commands_inside_tls() {
    let pki = Pki::new();
    let server = start(&pki, "").await;
    let addr = server.addr();

    // Before TLS (require is the default): an empty AUTH and STARTTLS;
    // PLAIN is neither offered nor accepted.
    let (mut plain, greeting) = Client::connect(&addr, WAIT).await.expect("connect");
    assert!(greeting.has("STARTTLS"));
    let auth = greeting.capabilities.iter().find(|(n, _)| n == "AUTH").expect("an AUTH line");
    assert_eq!(auth.1, "", "no mechanism before TLS");
    let refused = plain.authenticate("be1", "be1pw").await;
    assert!(matches!(refused, Err(ClientError::Refused { status: Status::No, .. })), "{refused:?}");
    plain.logout().await;

    // STARTTLS, the server verified against the test CA.
    let (mut be1, greeting) = tls_client::connect(&addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("STARTTLS");
    assert!(!greeting.has("STARTTLS"), "STARTTLS is not offered a second time");
    let auth = greeting.capabilities.iter().find(|(n, _)| n == "AUTH").expect("an AUTH line");
    assert!(auth.1.contains("PLAIN"), "PLAIN inside TLS: {auth:?}");
    // STARTTLS inside TLS: Cyrus's answer.
    let (_, status, text) = be1.run(&Command::Starttls).await.expect("answered");
    assert_eq!((status, &text[..]), (Status::Bad, cyrus::STARTTLS_TWICE));
    be1.authenticate("be1", "be1pw").await.expect("login inside TLS");
    let activate = Command::Activate { name: b"user.alice".to_vec(), location: b"be1!default".to_vec(), acl: b"alice\tlrswipkxtecda\t".to_vec() };
    be1.run_ok(&activate).await.expect("ACTIVATE inside TLS");
    let found = be1.find(b"user.alice").await.expect("FIND inside TLS");
    assert!(matches!(found, Some(Entry::Mailbox { .. })), "{found:?}");
    assert_eq!(be1.list(None).await.expect("LIST").len(), 1);
    // STARTTLS after login: Cyrus's answer.
    let (_, status, text) = be1.run(&Command::Starttls).await.expect("answered");
    assert_eq!((status, &text[..]), (Status::Bad, cyrus::STARTTLS_AFTER_AUTH));

    // An UPDATE stream inside TLS hears a change made on another TLS session.
    let (mut fe, _) = tls_client::connect(&addr, WAIT, Mode::Starttls, &Options::default()).await.expect("unverified TLS");
    fe.authenticate("fe", "fepw").await.expect("reader login");
    fe.send(&Command::Update { hosts: vec![] }).await.expect("UPDATE");
    let named = |r: &mupdated::protocol::Response, n: &[u8]| {
        matches!(r, mupdated::protocol::Response::Entry { entry: Entry::Mailbox { name, .. }, .. } if name == n)
    };
    let first = fe.read_response().await.expect("dump");
    assert!(named(&first, b"user.alice"), "{first:?}");
    let bob = Command::Activate { name: b"user.bob".to_vec(), location: b"be1!default".to_vec(), acl: b"bob\tlrs\t".to_vec() };
    be1.run_ok(&bob).await.expect("ACTIVATE");
    let mut heard = false;
    for _ in 0..4 {
        let r = tokio::time::timeout(WAIT, fe.read_response()).await.expect("stream answers").expect("response");
        if named(&r, b"user.bob") {
            heard = true;
            break;
        }
    }
    assert!(heard, "the UPDATE stream inside TLS did not hear user.bob");
    be1.logout().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_greets_after_the_handshake_without_starttls() {
    let pki = Pki::new();
    let server = start(&pki, "listen_tls = [\"127.0.0.1:0\"]").await;
    let addr = server.tls_addrs[0].to_string();
    let (mut c, greeting) = tls_client::connect(&addr, WAIT, Mode::Implicit, &pki.verify()).await.expect("implicit TLS");
    assert!(!greeting.has("STARTTLS"));
    c.authenticate("be1", "be1pw").await.expect("login");
    assert_eq!(c.find(b"user.nobody").await.expect("FIND"), None);
    // A client certificate from the test CA is accepted (and named in the log).
    let with_cert =
        Options { cert: Some(pki.path("client.pem")), key: Some(pki.path("client.key")), ..pki.verify() };
    let (mut c2, _) = tls_client::connect(&addr, WAIT, Mode::Implicit, &with_cert).await.expect("client certificate");
    c2.authenticate("fe", "fepw").await.expect("login");
    c.logout().await;
    c2.logout().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_names_its_cn_and_dns_names() {
    let pki = Pki::new();
    let der = std::fs::read(pki.path("client.pem")).expect("read");
    let pem = String::from_utf8(der).expect("pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    assert_eq!(mupdated::net::tls::cert_names(&der), ["be1", "be1.example.org"]);
}

fn server_error(pki: &Pki, table: &str) -> String {
    let text = format!("{}\n{table}", crate::server::CONFIG);
    let _ = pki;
    let config = Config::parse(&text).expect("config parses");
    match Server::listen(config) {
        Ok(_) => panic!("started with {table}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn startup_refuses_unreadable_unparsable_or_mismatched_files_naming_them() {
    let pki = Pki::new();
    let (cert, key, ca) = (pki.path("server.pem"), pki.path("server.key"), pki.path("ca.pem"));
    let missing = pki.path("missing.pem");
    let t = |c: &Path, k: &Path| format!("[tls]\ncert = {c:?}\nkey = {k:?}\nclient_ca = {ca:?}\n");
    let e = server_error(&pki, &t(&missing, &key));
    assert!(e.contains(&missing.display().to_string()) && e.contains("cannot read"), "{e}");
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let e = server_error(&pki, &t(&garbage, &key));
    assert!(e.contains(&garbage.display().to_string()), "{e}");
    let e = server_error(&pki, &t(&cert, &garbage));
    assert!(e.contains(&garbage.display().to_string()), "{e}");
    // The client's key with the server's certificate.
    let other = pki.path("client.key");
    let e = server_error(&pki, &t(&cert, &other));
    assert!(e.contains(&cert.display().to_string()) && e.contains(&other.display().to_string()), "{e}");
}

/// The certificate the server presented on this connection.
fn served(c: &TlsClient) -> Vec<u8> {
    c.stream().get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec()).expect("a certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_the_new_certificate_to_new_connections_and_keeps_the_old_ones() {
    let pki = Pki::new();
    let server = start(&pki, "").await;
    let addr = server.addr();
    let tls = server.tls.clone().expect("TLS configured");
    let (mut old, _) = tls_client::connect(&addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("connect");
    old.authenticate("be1", "be1pw").await.expect("login");
    let first = served(&old);

    // A new certificate in place of the old one.
    cert(pki.dir.path(), "server", "/CN=server two", Some("ca"), SERVER_EXT);
    tls.reload().expect("reload");
    let (new, _) = tls_client::connect(&addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("connect");
    let second = served(&new);
    assert_ne!(first, second, "the new certificate is served after a reload");
    assert_eq!(old.find(b"user.nobody").await.expect("the old connection keeps working"), None);

    // A bad file: the reload fails, naming it, and the last good one stays.
    std::fs::write(pki.path("server.key"), "broken\n").expect("write");
    let e = tls.reload().expect_err("a bad key is refused");
    assert!(e.to_string().contains("server.key"), "{e}");
    let (after, _) = tls_client::connect(&addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("connect");
    assert_eq!(served(&after), second);
    old.logout().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tls_input_ends_only_its_own_connection() {
    let _heavy = crate::server::MEMORY_HEAVY.lock().await;
    let pki = Pki::new();
    let server = start(&pki, "listen_tls = [\"127.0.0.1:0\"]").await;
    let addr = server.addr();
    let tls_addr = server.tls_addrs[0].to_string();
    let mut w = witness(&addr, &pki).await;

    // Garbage instead of a ClientHello, on an implicit-TLS listener.
    let mut s = TcpStream::connect(&tls_addr).await.expect("connect");
    s.write_all(b"A01 AUTHENTICATE \"PLAIN\"\r\n").await.expect("write");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await, "garbage ClientHello: not closed");
    still_answers(&mut w).await;

    // A handshake that stops half-way: closed by handshake_timeout (2 s).
    let mut s = TcpStream::connect(&tls_addr).await.expect("connect");
    s.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]).await.expect("write");
    let started = std::time::Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(8)).await, "a stalled handshake was not closed");
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed before the handshake timeout");
    still_answers(&mut w).await;

    // STARTTLS, then clear text instead of a handshake.
    let (mut c, _) = Client::connect(&addr, WAIT).await.expect("connect");
    let (_, status, _) = c.run(&Command::Starttls).await.expect("answered");
    assert_eq!(status, Status::Ok);
    let mut s = c.into_stream();
    s.write_all(b"X1 NOOP\r\n").await.expect("write");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await, "clear text after STARTTLS: not closed");
    still_answers(&mut w).await;

    // STARTTLS twice in one go: the second is dropped with the pipelined
    // input and then breaks the handshake.
    let (mut c, _) = Client::connect(&addr, WAIT).await.expect("connect");
    c.send_raw(b"S1 STARTTLS\r\nS2 STARTTLS\r\n").await.expect("write");
    let r = c.read_response().await.expect("answer");
    let begin = mupdated::protocol::Response::Tagged { tag: b"S1".to_vec(), status: Status::Ok, text: cyrus::BEGIN_TLS.as_bytes().to_vec() };
    assert_eq!(r, begin);
    let mut s = c.into_stream();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await, "STARTTLS twice: not closed");
    still_answers(&mut w).await;

    // A client certificate chain of 100 certificates: refused, server fine.
    let dir = pki.dir.path();
    let mut issuer = "ca".to_string();
    for i in 0..99 {
        let name = format!("i{i}");
        cert(dir, &name, &format!("/CN=intermediate {i}"), Some(&issuer), CA_EXT);
        issuer = name;
    }
    cert(dir, "deep", "/CN=deep", Some(&issuer), CLIENT_EXT);
    let mut chain = std::fs::read_to_string(dir.join("deep.pem")).expect("read");
    for i in (0..99).rev() {
        chain.push_str(&std::fs::read_to_string(dir.join(format!("i{i}.pem"))).expect("read"));
    }
    std::fs::write(dir.join("chain.pem"), chain).expect("write");
    let deep = Options { cert: Some(dir.join("chain.pem")), key: Some(dir.join("deep.key")), ..pki.verify() };
    let r = tls_client::connect(&tls_addr, WAIT, Mode::Implicit, &deep).await;
    // The server refuses it with an alert (webpki's path-depth limit), the
    // client does not give up on its own.
    let refusal = format!("{:?}", r.as_ref().err());
    assert!(refusal.contains("AlertReceived"), "a 100-certificate chain was not refused by the server: {refusal}");
    still_answers(&mut w).await;

    // 500 handshakes at once, each logging in and answering FIND.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..500 {
        let (a, o) = (tls_addr.clone(), pki.verify());
        tasks.spawn(async move {
            let (mut c, _) = tls_client::connect(&a, Duration::from_secs(60), Mode::Implicit, &o).await?;
            c.authenticate("fe", "fepw").await?;
            let found = c.find(b"user.nobody").await?;
            c.logout().await;
            Ok::<_, ClientError>(found)
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        let mut ok = 0;
        while let Some(r) = tasks.join_next().await {
            if matches!(r, Ok(Ok(None))) {
                ok += 1;
            }
        }
        ok
    })
    .await
    .expect("500 handshakes finish in time");
    assert_eq!(all, 500, "every parallel TLS session logged in and answered");
    still_answers(&mut w).await;
    w.logout().await;
    server.stop().await;
}

/// The real daemon with `[tls]`: SIGHUP re-reads the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_daemons_certificate_without_dropping_a_connection() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = format!("127.0.0.1:{}", crate::durability::free_port());
    let config = dir.path().join("mupdated.toml");
    crate::durability::write_config(&config, &addr, &dir.path().join("data"));
    let mut text = std::fs::read_to_string(&config).expect("read");
    text.push_str(&pki.table(""));
    std::fs::write(&config, text).expect("write");
    let daemon = crate::durability::start(&config, &addr).await;
    let pid = rustix::process::Pid::from_raw(daemon.0.id() as i32).expect("pid");

    let (mut old, _) = tls_client::connect(&addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("connect");
    old.authenticate("mupdater", "secret").await.expect("login");
    let first = served(&old);
    cert(pki.dir.path(), "server", "/CN=server two", Some("ca"), SERVER_EXT);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    let mut second = first.clone();
    for _ in 0..100 {
        let (c, _) = tls_client::connect(&addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("connect");
        second = served(&c);
        if second != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(second, first, "SIGHUP did not bring the new certificate");
    assert_eq!(old.find(b"user.nobody").await.expect("the old connection survives SIGHUP"), None);

    // A broken key on SIGHUP: the daemon keeps serving the last good one.
    std::fs::write(pki.path("server.key"), "broken\n").expect("write");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c, _) = tls_client::connect(&addr, WAIT, Mode::Starttls, &pki.verify()).await.expect("still serving TLS");
    assert_eq!(served(&c), second);
    drop(daemon);
}

/// mupdatectl over STARTTLS and implicit TLS, verifying the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mupdatectl_speaks_starttls_and_implicit_tls() {
    let pki = Pki::new();
    let server = start(&pki, "listen_tls = [\"127.0.0.1:0\"]").await;
    let (addr, tls_addr) = (server.addr(), server.tls_addrs[0].to_string());
    let ca = pki.path("ca.pem").display().to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Process::new(env!("CARGO_BIN_EXE_mupdatectl")).args(&args).output().expect("run mupdatectl")
        })
    };
    let base = |server: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["--server", server, "--user", "mupdater", "--password", "secret"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("list".to_string());
        v
    };
    let out = run(base(&addr, &["--starttls", "--ca", &ca])).await.expect("joined");
    assert!(out.status.success(), "--starttls: {}", String::from_utf8_lossy(&out.stderr));
    let out = run(base(&tls_addr, &["--tls", "--ca", &ca])).await.expect("joined");
    assert!(out.status.success(), "--tls: {}", String::from_utf8_lossy(&out.stderr));
    // Without TLS, `require` leaves no mechanism: refused.
    let out = run(base(&addr, &[])).await.expect("joined");
    assert!(!out.status.success(), "logged in without TLS");
    // A CA that did not sign the server's certificate: refused.
    let out = run(base(&addr, &["--starttls", "--ca", &pki.path("client.pem").display().to_string()])).await.expect("joined");
    assert!(!out.status.success(), "verified against the wrong CA");
    server.stop().await;
}

/// Stalled handshakes hold their admission slots only until
/// handshake_timeout: with the peer's cap filled by them, a new connection
/// is refused; once they time out, the slots are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_frees_its_slot_at_the_timeout() {
    let pki = Pki::new();
    let server = TestServer::start_in(
        tempfile::tempdir().expect("temp dir"),
        "max_connections_per_peer = 4",
        &pki.table("listen_tls = [\"127.0.0.1:0\"]"),
    )
    .await;
    let (addr, tls_addr) = (server.addr(), server.tls_addrs[0].to_string());
    let mut w = witness(&addr, &pki).await;
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&tls_addr).await.expect("connect");
        s.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The cap (witness + 3 stalled) is full: refused with Cyrus's text.
    let mut s = TcpStream::connect(&addr).await.expect("connect");
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.expect("answer").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).contains(cyrus::SERVER_UNABLE), "{:?}", String::from_utf8_lossy(&buf[..n]));
    still_answers(&mut w).await;
    for s in &mut stalled {
        assert!(closed_within(s, Duration::from_secs(8)).await, "a stalled handshake was not closed");
    }
    // The slots are back: a new TLS session logs in.
    let (mut c, _) = tls_client::connect(&tls_addr, WAIT, Mode::Implicit, &pki.verify()).await.expect("connect after the timeouts");
    c.authenticate("fe", "fepw").await.expect("login");
    still_answers(&mut w).await;
    c.logout().await;
    w.logout().await;
    server.stop().await;
}

/// The clear-text part of a STARTTLS exchange, as a transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_transcript() {
    use mupdated::tools::replay::{play, Mode as Replay};
    let pki = Pki::new();
    let server = start(&pki, "").await;
    let text = include_str!("transcripts/starttls_require.txt");
    let steps = mupdated::tools::transcript::parse(text).expect("transcript parses");
    let report = play(&server.addr(), &steps, Replay::Exact, mupdated::session::VERSION, Duration::from_secs(5)).await;
    assert!(report.matched(), "server answers differ from the transcript\n{}", report.render());
    server.stop().await;
}

/// A clear-text transcript replayed inside implicit TLS gets the same
/// answers (what mupdatectl replay --tls does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_replays_unchanged_inside_implicit_tls() {
    use mupdated::tools::replay::{play_tls, Mode as Replay};
    let pki = Pki::new();
    let server = start(&pki, "listen_tls = [\"127.0.0.1:0\"]").await;
    let text = include_str!("transcripts/writes_and_find.txt");
    let steps = mupdated::tools::transcript::parse(text).expect("transcript parses");
    let addr = server.tls_addrs[0].to_string();
    let report = play_tls(&addr, &steps, Replay::Exact, mupdated::session::VERSION, Duration::from_secs(5), &pki.verify()).await;
    assert!(report.matched(), "answers inside TLS differ from the transcript\n{}", report.render());
    server.stop().await;
}

/// The relay socket (a sibling process under Cyrus's master relays its TCP
/// peers there, `net::relay`) serves its peers as TCP peers: with `[tls]`
/// and `require`, STARTTLS is offered and no mechanism is before TLS. A
/// relayed peer cannot skip TLS by coming in through the sibling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_socket_requires_tls_like_tcp() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config =
        Config::parse(&format!("{}\n{}", crate::server::CONFIG, pki.table(""))).expect("test config");
    config.data_dir = dir.path().join("data");
    let socket = dir.path().join("data.relay.sock");
    let relay = mupdated::net::listener::bind_relay(&socket).expect("relay socket");
    let server = Server::bind(config).await.expect("server starts").with_listener(relay, Some(socket.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));

    let stream = tokio::net::UnixStream::connect(&socket).await.expect("connect to the relay socket");
    let (mut c, greeting) = Client::over(stream, WAIT).await.expect("greeting");
    assert!(greeting.has("STARTTLS"), "{greeting:?}");
    let auth = greeting.capabilities.iter().find(|(n, _)| n == "AUTH").expect("an AUTH line");
    assert_eq!(auth.1, "", "no mechanism before TLS on the relay socket");
    let refused = c.authenticate("mupdater", "secret").await;
    assert!(matches!(refused, Err(ClientError::Refused { status: Status::No, .. })), "{refused:?}");
    c.logout().await;

    let _ = tx.send(());
    let _ = task.await;
}
