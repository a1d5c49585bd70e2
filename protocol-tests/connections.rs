//! Connections, logins and startup (issue 9, findings 1, 2, 7 and 8):
//! deadlines, caps, the allow list, bounded password checks, a start that
//! accepts before the store is open, escaped logs. Where a finding is
//! about others being starved, a witness session keeps working throughout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mupdated::tools::client::{plain_base64, Client};
use mupdated::protocol::{Command, Entry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::server::{TestServer, admin, drain};

const WAIT: Duration = Duration::from_secs(10);


/// A TCP connection to `addr` from the loopback address `from`
/// (127.0.0.0/8 is all loopback on Linux: distinct peers on one machine).
async fn connect_from(from: &str, addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{from}:0").parse::<SocketAddr>().expect("source address"))?;
    s.connect(addr.parse().expect("server address")).await
}


/// Read until the greeting's last line (`* OK MUPDATE ...`) or EOF.
async fn greeting(s: &mut TcpStream, limit: Duration) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while !String::from_utf8_lossy(&all).contains("* OK MUPDATE") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => all.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// The witness: a FIND of a name it wrote, answered within 2 s.
async fn witness(w: &mut Client, i: usize) {
    let name = format!("user.witness.{i}").into_bytes();
    let started = Instant::now();
    w.run_ok(&Command::Activate { name: name.clone(), location: b"be1!default".to_vec(), acl: b"w\tlrs\t".to_vec() })
        .await
        .expect("witness ACTIVATE");
    let found = w.find(&name).await.expect("witness FIND");
    assert!(matches!(found, Some(Entry::Mailbox { .. })), "witness sees its mailbox");
    assert!(started.elapsed() < Duration::from_secs(2), "witness waited {:?}", started.elapsed());
}

fn login_line(user: &str, password: &str) -> Vec<u8> {
    format!("A1 AUTHENTICATE \"PLAIN\" \"{}\"\r\n", plain_base64(user, password)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_logins_are_closed_at_the_login_deadline() {
    let server = TestServer::start_with("login_timeout = 2").await;
    let addr = server.addr();
    let mut w = admin(&addr).await;
    // One byte of a long line every 200 ms, and a NOOP every 500 ms: both
    // kept the old per-read timeout from ever firing.
    let mut dribble = TcpStream::connect(&addr).await.unwrap();
    let mut noops = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let dribbler = tokio::spawn(async move {
        for _ in 0..40 {
            if dribble.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        drain(&mut dribble, Duration::from_millis(100)).await
    });
    let nooper = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..16 {
            if noops.write_all(b"a NOOP\r\n").await.is_err() {
                break;
            }
            let (got, eof) = drain(&mut noops, Duration::from_millis(500)).await;
            seen.extend(got);
            if eof {
                return (seen, true);
            }
        }
        (seen, false)
    });
    for i in 0..3 {
        witness(&mut w, i).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (got, _) = dribbler.await.unwrap();
    let (seen, eof) = nooper.await.unwrap();
    assert!(eof, "a peer sending NOOPs without logging in is closed at the deadline");
    assert!(String::from_utf8_lossy(&seen).contains("* BYE \"idle timeout\""), "{}", String::from_utf8_lossy(&seen));
    assert!(String::from_utf8_lossy(&got).contains("* BYE \"idle timeout\""), "{}", String::from_utf8_lossy(&got));
    // The dribbler wrote for at most ~2 s: its writes failed after the close.
    assert!(started.elapsed() < Duration::from_secs(8), "closed at the deadline, not at the end of the attack");
    witness(&mut w, 3).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_must_arrive_within_command_timeout() {
    let server = TestServer::start_with("command_timeout = 1").await;
    let addr = server.addr();
    let mut w = admin(&addr).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&login_line("mupdater", "secret")).await.unwrap();
    let started = Instant::now();
    // Logged in, then half a command and nothing more.
    s.write_all(b"F1 FIND \"user.").await.unwrap();
    let (got, eof) = drain(&mut s, WAIT).await;
    let text = String::from_utf8_lossy(&got);
    assert!(eof && text.contains("A1 OK") && text.ends_with("* BYE \"command timeout\"\r\n"), "{text:?}");
    assert!(started.elapsed() >= Duration::from_millis(900) && started.elapsed() < Duration::from_secs(5));
    // A logged-in peer that sends whole commands is not affected.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    witness(&mut w, 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_holding_slots_cannot_lock_out_a_login() {
    // 50 slots (of which 12, a quarter, for connections not logged in).
    let server = TestServer::start_with("max_connections = 50").await;
    let addr = server.addr();
    let mut w = admin(&addr).await;
    let mut logged_in = Vec::new();
    for _ in 0..5 {
        logged_in.push(admin(&addr).await);
    }
    // 60 strangers that never log in and keep their connections busy.
    let mut strangers = Vec::new();
    for _ in 0..60 {
        let addr = addr.clone();
        strangers.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(&addr).await else { return String::new() };
            let mut seen = Vec::new();
            for _ in 0..20 {
                if s.write_all(b"a NOOP\r\n").await.is_err() {
                    break;
                }
                let (got, eof) = drain(&mut s, Duration::from_millis(200)).await;
                seen.extend(got);
                if eof {
                    break;
                }
            }
            String::from_utf8_lossy(&seen).into_owned()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A fresh admin gets in, every time.
    for i in 0..10 {
        let (mut c, _) = Client::connect(&addr, WAIT).await.expect("connect");
        c.authenticate("mupdater", "secret").await.unwrap_or_else(|e| panic!("fresh login {i} refused: {e}"));
        witness(&mut c, 100 + i).await;
        logged_in.push(c);
    }
    witness(&mut w, 0).await;
    // Logged-in peers never lost their slot to a stranger.
    for c in logged_in.iter_mut() {
        c.run_ok(&Command::Noop).await.expect("a logged-in session is never evicted");
    }
    let mut evicted = 0;
    for s in strangers {
        if s.await.unwrap().contains("* BYE \"too many connections not logged in\"") {
            evicted += 1;
        }
    }
    assert!(evicted > 0, "strangers made room");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_unauthenticated_connection_is_evicted() {
    let server = TestServer::start_with("max_unauthenticated = 3").await;
    let addr = server.addr();
    let mut w = admin(&addr).await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        assert!(greeting(&mut s, WAIT).await.contains("* OK MUPDATE"));
        conns.push(s);
    }
    let mut newest = TcpStream::connect(&addr).await.unwrap();
    assert!(greeting(&mut newest, WAIT).await.contains("* OK MUPDATE"), "the newcomer is greeted");
    let (got, eof) = drain(&mut conns[0], WAIT).await;
    assert!(eof, "the oldest is closed");
    assert_eq!(String::from_utf8_lossy(&got), "* BYE \"too many connections not logged in\"\r\n");
    // The others are still there and may log in.
    for s in conns[1..].iter_mut().chain(std::iter::once(&mut newest)) {
        s.write_all(&login_line("mupdater", "secret")).await.unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"A1 OK \"Authenticated\"\r\n");
    }
    // Now logged in: none of them is evicted by 3 more strangers.
    let mut more = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        assert!(greeting(&mut s, WAIT).await.contains("* OK MUPDATE"));
        more.push(s);
    }
    for s in conns[1..].iter_mut().chain(std::iter::once(&mut newest)) {
        s.write_all(b"N1 NOOP\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"N1 OK \"Noop done\"\r\n");
    }
    witness(&mut w, 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_address_gets_at_most_its_cap() {
    let server = TestServer::start_with("max_connections_per_peer = 3").await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect_from("127.0.0.5", &addr).await.unwrap();
        assert!(greeting(&mut s, WAIT).await.contains("* OK MUPDATE"));
        held.push(s);
    }
    let mut over = connect_from("127.0.0.5", &addr).await.unwrap();
    let (got, eof) = drain(&mut over, WAIT).await;
    assert!(eof);
    assert_eq!(got, b"* BYE \"Server Unable\"\r\n");
    // Another address is not affected, and a closed slot is given back.
    let mut w = admin(&addr).await;
    witness(&mut w, 0).await;
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut s = connect_from("127.0.0.5", &addr).await.unwrap();
        if greeting(&mut s, WAIT).await.contains("* OK MUPDATE") {
            again = Some(s);
            break;
        }
    }
    assert!(again.is_some(), "a slot of this peer frees when one of its connections closes");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_networks_may_connect() {
    let server = TestServer::start_with("allow = [\"127.0.0.2/32\", \"10.0.0.0/8\"]").await;
    let addr = server.addr();
    let mut denied = connect_from("127.0.0.1", &addr).await.unwrap();
    let (got, eof) = drain(&mut denied, WAIT).await;
    assert!(eof && got.is_empty(), "closed without a greeting: {:?}", String::from_utf8_lossy(&got));
    let mut ok = connect_from("127.0.0.2", &addr).await.unwrap();
    assert!(greeting(&mut ok, WAIT).await.contains("* OK MUPDATE"));
    ok.write_all(&login_line("mupdater", "secret")).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, ok.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"A1 OK \"Authenticated\"\r\n");
    server.stop().await;
}

/// Time from sending a failed AUTHENTICATE to its NO.
async fn failed_login_takes(s: &mut TcpStream) -> Duration {
    let started = Instant::now();
    s.write_all(&login_line("mupdater", "wrong")).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.expect("answered").unwrap();
    assert_eq!(&buf[..n], b"A1 NO \"authentication failed\"\r\n");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_back_off_per_peer_address() {
    // failed_login_pause is 1 s in the test configuration.
    let server = TestServer::start_with("max_login_backoff = 8").await;
    let addr = server.addr();
    let mut x = connect_from("127.0.0.3", &addr).await.unwrap();
    greeting(&mut x, WAIT).await;
    failed_login_takes(&mut x).await;
    failed_login_takes(&mut x).await;
    // A new connection from the same address: its check waits for the
    // address's backoff (2 s after the second failure, 1 s of which the
    // failing connection spent in its own pause), then the pause.
    let mut y = connect_from("127.0.0.3", &addr).await.unwrap();
    greeting(&mut y, WAIT).await;
    let same_peer = failed_login_takes(&mut y).await;
    let mut z = connect_from("127.0.0.4", &addr).await.unwrap();
    greeting(&mut z, WAIT).await;
    let other_peer = failed_login_takes(&mut z).await;
    assert!(same_peer >= Duration::from_millis(1800), "same address waited {same_peer:?}");
    assert!(other_peer < Duration::from_millis(1600), "another address waited {other_peer:?}");
    // The right password from the backed-off address still gets in.
    let mut good = connect_from("127.0.0.3", &addr).await.unwrap();
    greeting(&mut good, WAIT).await;
    good.write_all(&login_line("mupdater", "secret")).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), good.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"A1 OK \"Authenticated\"\r\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_login_are_capped_at_a_sasl_exchange() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut w = admin(&addr).await;
    // A 1 MiB literal before login: BYE at the announcement, nothing buffered.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    greeting(&mut s, WAIT).await;
    s.write_all(b"A1 AUTHENTICATE \"PLAIN\" {1048576+}\r\n").await.unwrap();
    let (got, eof) = drain(&mut s, WAIT).await;
    assert!(eof);
    assert_eq!(String::from_utf8_lossy(&got), "* BYE \"literal too large\"\r\n");
    // A synchronising one gets no go-ahead.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    greeting(&mut s, WAIT).await;
    s.write_all(b"A1 AUTHENTICATE \"PLAIN\" {9000}\r\n").await.unwrap();
    let (got, eof) = drain(&mut s, WAIT).await;
    assert!(eof);
    assert_eq!(String::from_utf8_lossy(&got), "* BYE \"literal too large\"\r\n");
    // A 9000-byte line before login.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    greeting(&mut s, WAIT).await;
    let _ = s.write_all(&vec![b'a'; 9000]).await;
    let (got, eof) = drain(&mut s, WAIT).await;
    assert!(eof && String::from_utf8_lossy(&got).starts_with("* BYE"), "{:?}", String::from_utf8_lossy(&got));
    // A PLAIN exchange in a literal fits, and after login the full limits apply.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    greeting(&mut s, WAIT).await;
    let b64 = plain_base64("mupdater", "secret");
    s.write_all(format!("A1 AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{b64}\r\n", b64.len()).as_bytes()).await.unwrap();
    let acl = vec![b'a'; 100_000];
    let mut cmd = format!("X1 ACTIVATE \"user.big\" \"be1!p\" {{{}+}}\r\n", acl.len()).into_bytes();
    cmd.extend_from_slice(&acl);
    cmd.extend_from_slice(b"\r\n");
    s.write_all(&cmd).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("X1 ") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("A1 OK") && text.contains("X1 OK \"done\""), "{text}");
    witness(&mut w, 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connects_is_all_greeted() {
    let server = TestServer::start_with(
        "max_connections = 3000\nmax_unauthenticated = 3000\nmax_connections_per_peer = 3000\nlisten_backlog = 2048",
    )
    .await;
    let addr = server.addr();
    let port = addr.rsplit(':').next().unwrap().to_string();
    // The kernel's queue is what was configured (ss shows a listener's
    // backlog as its Send-Q).
    let ss = std::process::Command::new("ss").args(["-ltnH", &format!("sport = :{port}")]).output().expect("ss");
    let line = String::from_utf8_lossy(&ss.stdout).into_owned();
    let backlog: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(backlog.get(2).copied(), Some("2048"), "ss: {line:?}");
    // 2,000 connects at once: every one greeted.
    let mut tasks = Vec::new();
    for _ in 0..2000 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(&addr).await else { return false };
            greeting(&mut s, Duration::from_secs(30)).await.contains("* OK MUPDATE")
        }));
    }
    let mut greeted = 0;
    for t in tasks {
        if t.await.unwrap() {
            greeted += 1;
        }
    }
    assert_eq!(greeted, 2000);
    server.stop().await;
}
