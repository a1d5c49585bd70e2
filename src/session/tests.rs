//! Whole sessions over an in-memory stream (`tokio::io::duplex`): no TCP,
//! no listener, the session and the client of the tools at either end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Capabilities, Ended, Peer, Session};
use crate::app::App;
use crate::config::Config;
use crate::protocol::{cyrus, Command, Entry, Response, Status};
use crate::tools::client::{Client, ClientError};

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
role = "backend"
servers = ["be1"]
"#;

/// A server's shared state over a fresh directory, without listeners.
fn app() -> (Arc<App>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::parse(CONFIG).expect("config");
    config.data_dir = dir.path().join("data");
    (Arc::new(App::open(config).expect("store opens")), dir)
}

/// The server end of a new in-memory connection, and the client end.
fn pipe() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(64 * 1024)
}

/// Serve `session` in a task; the client reads its greeting.
async fn serve<S: super::Transport>(
    session: Session<S>,
    client_end: DuplexStream,
) -> (Client<DuplexStream>, Vec<String>, JoinHandle<Ended<S>>) {
    let task = tokio::spawn(session.run());
    let (client, greeting) = Client::over(client_end, WAIT).await.expect("greeting");
    let caps = greeting.capabilities.into_iter().map(|(name, _)| name).collect();
    (client, caps, task)
}

fn entry(name: &str, location: &str, acl: &str) -> Entry {
    Entry::Mailbox { name: name.into(), location: location.into(), acl: acl.into() }
}

fn activate(name: &str, location: &str, acl: &str) -> Command {
    Command::Activate { name: name.into(), location: location.into(), acl: acl.into() }
}

/// Read an UPDATE stream's lines up to the completion tagged `tag`.
async fn stream_lines(c: &mut Client<DuplexStream>, tag: &[u8]) -> (Vec<Response>, Status, Vec<u8>) {
    let mut lines = Vec::new();
    loop {
        match c.read_response().await.expect("stream line") {
            Response::Tagged { tag: t, status, text } if t == tag => return (lines, status, text),
            other => lines.push(other),
        }
    }
}

#[tokio::test]
async fn a_whole_session_runs_over_an_in_memory_stream() {
    let (app, _dir) = app();
    let (_stop_tx, stop) = watch::channel(false);

    // A backend writes; a second connection follows with UPDATE.
    let (server_end, client_end) = pipe();
    let (mut be, caps, be_task) = serve(Session::new(server_end, app.clone(), Peer::None, stop.clone()), client_end).await;
    assert_eq!(caps, ["AUTH", "PARTIAL-UPDATE", "X-MUPDATED-ADMIN"]);
    be.authenticate("be1", "be1pw").await.expect("backend login");
    be.run_ok(&activate("user.a", "be1!p", "a\tlrs\t")).await.expect("ACTIVATE");
    assert_eq!(be.find(b"user.a").await.expect("FIND"), Some(entry("user.a", "be1!p", "a\tlrs\t")));
    assert_eq!(be.find(b"user.none").await.expect("FIND"), None);

    let (server_end, client_end) = pipe();
    let (mut follower, _, follower_task) =
        serve(Session::new(server_end, app.clone(), Peer::None, stop.clone()), client_end).await;
    follower.authenticate("mupdater", "secret").await.expect("admin login");
    let update = follower.send(&Command::Update { hosts: vec![] }).await.expect("UPDATE sent");
    let (dump, status, text) = stream_lines(&mut follower, &update).await;
    assert_eq!((status, &text[..]), (Status::Ok, cyrus::STREAMING_STARTS.as_bytes()));
    assert_eq!(dump, [Response::Entry { tag: update.clone(), entry: entry("user.a", "be1!p", "a\tlrs\t") }]);

    // A change after the dump reaches the stream, unasked.
    be.run_ok(&activate("user.b", "be1!p", "")).await.expect("ACTIVATE");
    let line = tokio::time::timeout(WAIT, follower.read_response()).await.expect("change in time").expect("line");
    assert_eq!(line, Response::Entry { tag: update.clone(), entry: entry("user.b", "be1!p", "") });
    // Only NOOP while streaming; NOOP is a barrier.
    let (_, status, text) = follower.run(&Command::Find { name: b"user.a".to_vec() }).await.expect("FIND answered");
    assert_eq!((status, &text[..]), (Status::Bad, cyrus::NOT_WHEN_STREAMING));
    be.run_ok(&Command::Delete { name: b"user.a".to_vec() }).await.expect("DELETE");
    let noop = follower.send(&Command::Noop).await.expect("NOOP sent");
    let (lines, status, _) = stream_lines(&mut follower, &noop).await;
    assert_eq!(status, Status::Ok);
    assert_eq!(lines, [Response::Delete { tag: update, name: b"user.a".to_vec() }]);

    assert_eq!(
        be.list(None).await.expect("LIST"),
        [entry("user.b", "be1!p", "")],
        "LIST after the DELETE"
    );
    be.logout().await;
    follower.logout().await;
    for task in [be_task, follower_task] {
        let ended = tokio::time::timeout(WAIT, task).await.expect("session ends").expect("no panic");
        assert!(matches!(ended, Ended::Closed));
    }
}

/// A stream wrapper, standing in for TLS: a different type over the same
/// stream, as the connection layer will build after STARTTLS.
struct Wrapped<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Wrapped<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wrapped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn starttls_is_unrecognized_unless_offered() {
    let (app, _dir) = app();
    let (_stop_tx, stop) = watch::channel(false);
    let (server_end, client_end) = pipe();
    let (mut c, caps, task) = serve(Session::new(server_end, app, Peer::None, stop), client_end).await;
    assert!(!caps.iter().any(|c| c == "STARTTLS"));
    let (_, status, text) = c.run(&Command::Starttls).await.expect("answered");
    assert_eq!((status, &text[..]), (Status::Bad, cyrus::UNRECOGNIZED));
    c.logout().await;
    assert!(matches!(task.await.expect("no panic"), Ended::Closed));
}

#[tokio::test]
async fn starttls_hands_the_stream_back_and_the_wrapped_stream_greets_again() {
    let (app, _dir) = app();
    let (_stop_tx, stop) = watch::channel(false);
    let (server_end, client_end) = pipe();
    let caps = Capabilities { starttls: true, ..Capabilities::of(&app) };
    let session = Session::new(server_end, app.clone(), Peer::None, stop.clone()).with_capabilities(caps.clone());
    let (mut c, announced, task) = serve(session, client_end).await;
    assert_eq!(announced, ["AUTH", "STARTTLS", "PARTIAL-UPDATE", "X-MUPDATED-ADMIN"]);

    // Arguments are checked first, then the upgrade; a command pipelined
    // after STARTTLS is dropped, not answered after the upgrade.
    let (_, status, text) = c.run(&Command::Compress { algorithm: b"x".to_vec() }).await.expect("answered");
    assert_eq!((status, &text[..]), (Status::Bad, cyrus::UNRECOGNIZED));
    c.send_raw(b"S1 STARTTLS extra\r\n").await.expect("sent");
    assert_eq!(
        c.read_response().await.expect("answer"),
        Response::Tagged { tag: b"S1".to_vec(), status: Status::Bad, text: cyrus::EXTRA_ARGS.as_bytes().to_vec() }
    );
    c.send_raw(b"S2 STARTTLS\r\nP1 NOOP\r\n").await.expect("sent");
    assert_eq!(
        c.read_response().await.expect("answer"),
        Response::Tagged { tag: b"S2".to_vec(), status: Status::Ok, text: cyrus::BEGIN_TLS.as_bytes().to_vec() }
    );
    let Ended::Upgrade(upgrade) = tokio::time::timeout(WAIT, task).await.expect("hands over").expect("no panic") else {
        panic!("STARTTLS did not hand the stream back");
    };
    assert_eq!(upgrade.resume.peer(), Peer::None);

    // The connection layer wraps the stream and goes on; the client reads
    // the banner again, without STARTTLS now.
    let after = Capabilities { starttls: false, ..caps };
    let resumed = Session::resume(Wrapped(upgrade.stream), app, upgrade.resume, stop).with_capabilities(after);
    let task = tokio::spawn(resumed.run());
    let (mut c, greeting) = Client::over(c.into_stream(), WAIT).await.expect("second greeting");
    assert!(!greeting.has("STARTTLS"));
    assert!(greeting.has("AUTH"));
    let (_, status, text) = c.run(&Command::Noop).await.expect("answered");
    assert_eq!((status, &text[..]), (Status::Bad, cyrus::PLEASE_LOGIN), "the pipelined NOOP was not dropped");
    c.authenticate("mupdater", "secret").await.expect("login after the upgrade");
    c.logout().await;
    assert!(matches!(task.await.expect("no panic"), Ended::Closed));
}

#[tokio::test]
async fn starttls_after_login_is_refused() {
    let (app, _dir) = app();
    let (_stop_tx, stop) = watch::channel(false);
    let (server_end, client_end) = pipe();
    let caps = Capabilities { starttls: true, ..Capabilities::of(&app) };
    let session = Session::new(server_end, app, Peer::None, stop).with_capabilities(caps);
    let (mut c, _, task) = serve(session, client_end).await;
    c.authenticate("be1", "be1pw").await.expect("login");
    let (_, status, text) = c.run(&Command::Starttls).await.expect("answered");
    assert_eq!((status, &text[..]), (Status::Bad, cyrus::STARTTLS_AFTER_AUTH));
    c.logout().await;
    assert!(matches!(task.await.expect("no panic"), Ended::Closed));
}

#[tokio::test]
async fn a_session_can_start_logged_in() {
    let (app, _dir) = app();
    let (_stop_tx, stop) = watch::channel(false);
    let login = app.auth.plain(b"mupdater\0mupdater\0secret").expect("admin login");
    let (server_end, client_end) = pipe();
    let session = Session::new(server_end, app, Peer::Unix { uid: Some(0) }, stop).with_login(login);
    let (mut c, _, task) = serve(session, client_end).await;
    c.run_ok(&activate("user.u", "be9!p", "")).await.expect("an admin write without AUTHENTICATE");
    let refused = c.authenticate("mupdater", "secret").await;
    assert!(
        matches!(&refused, Err(ClientError::Refused { status: Status::Bad, text }) if text == cyrus::ALREADY_AUTHENTICATED),
        "{refused:?}"
    );
    c.logout().await;
    assert!(matches!(task.await.expect("no panic"), Ended::Closed));
}

#[test]
fn peers_are_described_for_the_log() {
    let tcp: std::net::SocketAddr = "192.0.2.7:3905".parse().expect("address");
    assert_eq!(Peer::Tcp(tcp).describe(), "192.0.2.7");
    assert_eq!(Peer::Unix { uid: Some(0) }.describe(), "unix:0");
    assert_eq!(Peer::Unix { uid: None }.describe(), "unix");
    assert_eq!(Peer::None.describe(), "-");
}
