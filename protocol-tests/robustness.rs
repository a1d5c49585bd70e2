//! Hostile and broken peers: each gets an answer or loses only its own
//! connection, while another session keeps working throughout.

use std::time::Duration;

use mupdated::tools::client::Client;
use mupdated::protocol::{Command, Entry, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::server::{TestServer, admin, drain};

const WAIT: Duration = Duration::from_secs(10);



/// A session that must keep working: an ACTIVATE then a FIND, each time
/// with a fresh name, and the stream must see it.
async fn witness_round(w: &mut Client, stream: &mut Client, i: usize) {
    let name = format!("user.witness.{i}").into_bytes();
    w.run_ok(&Command::Activate { name: name.clone(), location: b"be1!default".to_vec(), acl: b"w\tlrs\t".to_vec() })
        .await
        .expect("witness ACTIVATE");
    let found = w.find(&name).await.expect("witness FIND");
    assert!(matches!(found, Some(Entry::Mailbox { .. })), "witness sees its mailbox");
    match stream.read_response().await.expect("stream line") {
        Response::Entry { entry, .. } => assert_eq!(entry.name(), &name[..]),
        other => panic!("stream sent {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_lose_only_their_own_connection() {
    // Its 900 KiB ACLs have 31,000 entries: over the default max_acl_entries.
    let server = TestServer::start_with("write_timeout = 2\nmax_acl_entries = 40000").await;
    let addr = server.addr();
    let mut w = admin(&addr).await;
    let mut stream = admin(&addr).await;
    stream.run_ok(&Command::Update { hosts: vec![] }).await.expect("UPDATE");
    witness_round(&mut w, &mut stream, 0).await;

    // A 200 KiB tag: over max_line, the connection gets a BYE and closes.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut tag = vec![b'T'; 200 * 1024];
    tag.extend_from_slice(b" NOOP\r\n");
    let _ = s.write_all(&tag).await;
    let (got, eof) = drain(&mut s, WAIT).await;
    assert!(eof, "server closes after an oversized line");
    assert!(String::from_utf8_lossy(&got).contains("* BYE \"line too long\""), "got {:?}", String::from_utf8_lossy(&got));
    witness_round(&mut w, &mut stream, 1).await;

    // A 1 GiB literal announcement, after login: refused at once.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"A01 AUTHENTICATE \"PLAIN\" \"bXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\"\r\nX1 ACTIVATE {1073741824+}\r\n")
        .await
        .unwrap();
    let (got, eof) = drain(&mut s, WAIT).await;
    assert!(eof);
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("A01 OK \"Authenticated\"") && text.contains("* BYE \"literal too large\""), "got {text:?}");
    witness_round(&mut w, &mut stream, 2).await;

    // Random bytes on several connections (a fixed seed: reproducible).
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for _ in 0..8 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let junk: Vec<u8> = (0..65536)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let _ = s.write_all(&junk).await;
        // Whatever it answers, it answers or closes; then we hang up.
        let _ = drain(&mut s, Duration::from_millis(200)).await;
    }
    witness_round(&mut w, &mut stream, 3).await;

    // A client that stops reading in the middle of a LIST: 12 mailboxes
    // with 900 KiB ACLs make a LIST far larger than the socket buffers.
    let big_acl = {
        let mut a = Vec::new();
        while a.len() < 900 * 1024 {
            a.extend_from_slice(b"someone.with.a.long.name\tlrs\t");
        }
        a
    };
    for i in 0..12 {
        let name = format!("shared.big.{i:02}").into_bytes();
        w.run_ok(&Command::Activate { name, location: b"be2!default".to_vec(), acl: big_acl.clone() })
            .await
            .expect("big ACTIVATE");
        // Each is streamed too: read it so the witness stream stays current.
        stream.read_response().await.expect("stream line");
    }
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"A01 AUTHENTICATE \"PLAIN\" \"bXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\"\r\nL1 LIST\r\n")
        .await
        .unwrap();
    // While it reads nothing, everyone else goes on.
    for i in 4..8 {
        witness_round(&mut w, &mut stream, i).await;
    }
    // After write_timeout the server gives up on it: what it buffered,
    // then EOF, and never the end of the LIST.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (got, eof) = drain(&mut stalled, WAIT).await;
    assert!(eof, "a stalled reader is disconnected");
    assert!(got.len() < 12 * 900 * 1024, "the LIST was not completed ({} bytes)", got.len());
    assert!(!String::from_utf8_lossy(&got).contains("list complete"));
    witness_round(&mut w, &mut stream, 8).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_answers_server_unable() {
    let server = TestServer::start_with("max_connections = 2").await;
    let addr = server.addr();
    let a = admin(&addr).await;
    let b = admin(&addr).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let (got, eof) = drain(&mut s, WAIT).await;
    assert!(eof);
    assert_eq!(got, b"* BYE \"Server Unable\"\r\n");
    drop(a);
    // A freed slot is usable again.
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok((mut c, _)) = Client::connect(&addr, WAIT).await {
            if c.authenticate("mupdater", "secret").await.is_ok() {
                ok = true;
                break;
            }
        }
    }
    assert!(ok, "a slot frees when a connection closes");
    drop(b);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_does_not_block_writers_and_overflow_closes_it() {
    let server = TestServer::start_with("max_stream_pending = 50\nwrite_timeout = 2").await;
    let addr = server.addr();
    let mut w = admin(&addr).await;
    // A stream that never reads again after "streaming starts".
    let mut lazy = TcpStream::connect(&addr).await.unwrap();
    lazy.write_all(b"A01 AUTHENTICATE \"PLAIN\" \"bXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\"\r\nU01 UPDATE\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    for i in 0..400 {
        let name = format!("user.churn.{i}").into_bytes();
        w.run_ok(&Command::Activate { name, location: b"be1!default".to_vec(), acl: vec![b'x'; 60_000] })
            .await
            .expect("writers never wait for streams");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let (_, eof) = drain(&mut lazy, WAIT).await;
    assert!(eof, "a stream that falls behind is closed, not buffered without bound");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_time_out_with_a_bye() {
    let server = TestServer::start_with("login_timeout = 1\nidle_timeout = 2").await;
    let addr = server.addr();
    // Not logged in: login_timeout.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    let (got, eof) = drain(&mut s, WAIT).await;
    assert!(eof && String::from_utf8_lossy(&got).ends_with("* BYE \"idle timeout\"\r\n"), "{got:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Logged in: idle_timeout, counted from the last command.
    let mut c = admin(&addr).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.run_ok(&Command::Noop).await.expect("still open after 1.2 s");
    match c.read_response().await {
        Ok(Response::Bye { text }) => assert_eq!(text, b"idle timeout"),
        other => panic!("expected BYE, got {other:?}"),
    }
    server.stop().await;
}
