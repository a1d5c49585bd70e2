//! Bounded work per command and UPDATE streams under stalled subscribers
//! (issue 9, findings 3, 4 and 8): the worst allowed ACTIVATE does not
//! stall other sessions, an over-limit one gets a `NO`, one command's
//! writes are bounded, a stalled stream over its bound is closed while
//! blocked, and stalled subscribers neither halve writers nor hold
//! unbounded memory. A witness session keeps working throughout.

use std::time::{Duration, Instant};

use mupdated::tools::client::Client;
use mupdated::protocol::{Command, Entry, Status};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::server::{admin, TestServer};

const WAIT: Duration = Duration::from_secs(20);
/// How long a witness FIND may take while an attack runs (generous: a
/// starvation check, not a timing figure).
const WITNESS_BOUND: Duration = Duration::from_millis(500);

/// FIND on its own connection every 20 ms until told to stop; returns
/// the slowest answer.
fn witness(addr: String) -> (oneshot::Sender<()>, JoinHandle<Duration>) {
    let (tx, mut rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut w = admin(&addr).await;
        w.run_ok(&Command::Activate { name: b"user.witness".to_vec(), location: b"be1!p".to_vec(), acl: b"w\tlrs\t".to_vec() })
            .await
            .expect("witness ACTIVATE");
        let mut worst = Duration::ZERO;
        loop {
            let t = Instant::now();
            let found = w.find(b"user.witness").await.expect("witness FIND");
            assert!(matches!(found, Some(Entry::Mailbox { .. })));
            worst = worst.max(t.elapsed());
            tokio::select! {
                _ = &mut rx => return worst,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    (tx, task)
}

/// `n` entries of identifiers `id_len` bytes long, rights `rights`.
fn acl(n: usize, id_len: usize, rights: &str) -> Vec<u8> {
    let mut a = Vec::new();
    for i in 0..n {
        let id = format!("{i:0>width$}", width = id_len);
        a.extend_from_slice(id.as_bytes());
        a.push(b'\t');
        a.extend_from_slice(rights.as_bytes());
        a.push(b'\t');
    }
    a
}

async fn activate(c: &mut Client, name: Vec<u8>, location: Vec<u8>, acl: Vec<u8>) -> (Status, String) {
    let (_, status, text) = c.run(&Command::Activate { name, location, acl }).await.expect("ACTIVATE answered");
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worst_allowed_activate_keeps_a_witness_fast_and_over_limit_ones_get_no() {
    let server = TestServer::start_with("").await;
    let (stop, worst) = witness(server.addr().clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut a = admin(&server.addr()).await;
    let c = &server.shared.config;
    let (name_max, loc_max, id_max, entries_max) = (c.max_mailbox_name, c.max_location, c.max_acl_identifier, c.max_acl_entries);
    let location = |len: usize| {
        let mut l = b"be1!".to_vec();
        l.resize(len, b'p');
        l
    };
    // The worst allowed ACTIVATE, then re-ACTIVATEd with other rights
    // (every rights key rewritten) and other identifiers (every key
    // removed and added), a few times.
    let mut name = b"shared.".to_vec();
    name.resize(name_max, b'n');
    let mut slowest = Duration::ZERO;
    for round in 0..6 {
        let rights = if round % 2 == 0 { "lrs" } else { "lrswipkxtecdan" };
        let id_len = if round % 4 < 2 { id_max } else { id_max - 1 };
        let t = Instant::now();
        let (status, text) = activate(&mut a, name.clone(), location(loc_max), acl(entries_max, id_len, rights)).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!((status, text.as_str()), (Status::Ok, "done"), "round {round}");
    }
    eprintln!("worst allowed ACTIVATE ({entries_max} entries of {id_max} bytes, {name_max}-byte name): slowest {slowest:?}");
    let found = a.find(&name).await.expect("FIND");
    assert!(matches!(found, Some(Entry::Mailbox { .. })));

    // One over each limit: NO with a clear text, nothing stored.
    let mut long_name = name.clone();
    long_name.push(b'n');
    type Case = (Vec<u8>, Vec<u8>, Vec<u8>, &'static str);
    let cases: Vec<Case> = vec![
        (long_name, location(10), acl(1, 5, "l"), "mailbox name too long"),
        (b"user.a".to_vec(), location(loc_max + 1), acl(1, 5, "l"), "location too long"),
        (b"user.b".to_vec(), location(10), acl(3, id_max + 1, "l"), "ACL identifier too long"),
        (b"user.c".to_vec(), location(10), acl(entries_max + 1, 5, "l"), "too many ACL entries"),
        // Finding 3's attack: 64,000 identifiers (444 KB), which held an
        // async worker for 8 s.
        (b"user.d".to_vec(), location(10), acl(64_000, 5, "lr"), "too many ACL entries"),
    ];
    for (n, l, acl, want) in cases {
        let (status, text) = activate(&mut a, n.clone(), l, acl).await;
        assert_eq!((status, text.as_str()), (Status::No, want));
        assert_eq!(a.find(&n).await.expect("FIND"), None, "nothing stored for an over-limit ACTIVATE");
    }
    // RESERVE and DEACTIVATE check the name and location too.
    let mut long_name = name.clone();
    long_name.push(b'n');
    for cmd in [
        Command::Reserve { name: long_name.clone(), location: location(10) },
        Command::Deactivate { name: b"user.witness".to_vec(), location: location(loc_max + 1) },
    ] {
        let (_, status, text) = a.run(&cmd).await.expect("answered");
        assert_eq!(status, Status::No, "{text}");
    }
    stop.send(()).expect("witness running");
    let worst = worst.await.expect("witness ok");
    eprintln!("witness FIND slowest: {worst:?}");
    assert!(worst < WITNESS_BOUND, "a witness FIND waited {worst:?}");
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_large_allowed_activate_writes_within_the_documented_bound() {
    // Finding 4's command, at the limits: a 1,024-byte name and 1,024
    // identifiers. Each rights key used to hold the whole name (1,024 x
    // 1,024 bytes more); now an identifier, the name's handle (for a name
    // over 64 bytes: 65 bytes, its first 48, a marker and a digest) and its
    // rights. Bound (docs/robustness/limits.md, from the key layout): the
    // key and value bytes one ACTIVATE of a new name writes are at most
    // 3 x the bytes received + 3 x the name + 65 per ACL entry + 90;
    // measured here on the store.
    let server = TestServer::start_with("").await;
    let mut a = admin(&server.addr()).await;
    let store = &server.shared.store;
    let mut name = b"shared.".to_vec();
    name.resize(1024, b'n');
    let acl = acl(1024, 16, "lrs");
    let location = b"be1!default".to_vec();
    let received = name.len() + location.len() + acl.len();
    let before = store.stored_bytes().expect("stored bytes");
    let (status, _) = activate(&mut a, name.clone(), location, acl).await;
    assert_eq!(status, Status::Ok);
    let written = store.stored_bytes().expect("stored bytes") - before;
    let bound = 3 * received + 3 * name.len() + 65 * 1024 + 90;
    eprintln!("one ACTIVATE: {received} bytes received, {written} bytes of keys and values stored (bound {bound})");
    assert!(written <= bound as u64, "{written} bytes stored for {received} received (bound {bound})");
}

/// Connect with a small receive buffer, log in, send UPDATE, and never
/// read again: the server's writes to it block once a few hundred KiB
/// are in flight.
async fn stalled_subscriber(addr: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut s = socket.connect(addr.parse().expect("address")).await.expect("connect");
    s.write_all(b"A01 AUTHENTICATE \"PLAIN\" \"bXVwZGF0ZXIAbXVwZGF0ZXIAc2VjcmV0\"\r\nU01 UPDATE\r\n").await.expect("write");
    s
}

/// ACTIVATE `n` mailboxes with `acl_bytes`-byte ACLs (pipelined, 32 at a time).
async fn fill(c: &mut Client, prefix: &str, n: usize, acl_bytes: usize) {
    let entry_len = 64;
    let a = acl(acl_bytes / entry_len, entry_len - 5, "lrs");
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let mut out = Vec::new();
        for i in chunk {
            let cmd =
                Command::Activate { name: format!("{prefix}.{i:05}").into_bytes(), location: b"be2!p".to_vec(), acl: a.clone() };
            mupdated::protocol::encode::command(format!("F{i}").as_bytes(), &cmd, true, &mut out);
        }
        c.send_raw(&out).await.expect("send");
        for _ in chunk {
            loop {
                match c.read_response().await.expect("answer") {
                    mupdated::protocol::Response::Tagged { status: Status::Ok, .. } => break,
                    mupdated::protocol::Response::Tagged { status, text, .. } => panic!("{status:?} {text:?}"),
                    _ => {}
                }
            }
        }
    }
}

async fn wait_until(mut f: impl FnMut() -> bool, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_over_its_byte_bound_is_closed_while_blocked() {
    // write_timeout is long: only the byte bound can close the stream.
    let server = TestServer::start_with("write_timeout = 120\nmax_stream_pending_bytes = 65536").await;
    let hub = server.shared.hub.clone();
    let mut w = admin(&server.addr()).await;
    let mut stream = admin(&server.addr()).await;
    stream.run_ok(&Command::Update { hosts: vec![] }).await.expect("witness UPDATE");
    let _stalled = stalled_subscriber(&server.addr()).await;
    assert!(wait_until(|| hub.len() == 2, WAIT).await.is_some(), "both streams registered");
    // 8 MiB of MAILBOX lines: far more than the socket buffers take, so
    // the stalled stream's task is blocked in its write.
    fill(&mut w, "shared.fill", 128, 64 * 1024).await;
    for _ in 0..128 {
        stream.read_response().await.expect("witness stream line");
    }
    assert_eq!(hub.len(), 2, "the stalled stream is still open (blocked, under its bound)");
    // 100 names of 1,000 bytes: over the 64 KiB bound while blocked.
    let t = Instant::now();
    for i in 0..100 {
        let mut name = format!("shared.long.{i:03}.").into_bytes();
        name.resize(1000, b'x');
        w.run_ok(&Command::Activate { name, location: b"be1!p".to_vec(), acl: b"a\tl\t".to_vec() }).await.expect("ACTIVATE");
        stream.read_response().await.expect("witness stream line");
    }
    let closed = wait_until(|| hub.len() == 1, Duration::from_secs(2)).await;
    eprintln!("stalled stream closed {closed:?} after the writes started ({:?} of writes)", t.elapsed());
    assert!(closed.is_some(), "a stalled stream over its byte bound is closed within 2 s, not at write_timeout");
    // The witness stream goes on.
    w.run_ok(&Command::Activate { name: b"user.after".to_vec(), location: b"be1!p".to_vec(), acl: vec![] }).await.expect("ACTIVATE");
    match stream.read_response().await.expect("stream line") {
        mupdated::protocol::Response::Entry { entry, .. } => assert_eq!(entry.name(), b"user.after"),
        other => panic!("stream sent {other:?}"),
    }
}

/// The process's resident set, KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// ACTIVATEs per second from `writers` sessions for `seconds`.
async fn churn(addr: &str, writers: usize, seconds: f64, prefix: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let addr = addr.to_string();
        let prefix = format!("{prefix}.w{w}");
        tasks.push(tokio::spawn(async move {
            let mut c = admin(&addr).await;
            let mut n = 0usize;
            while Instant::now() < deadline {
                let name = format!("{prefix}.{:06}", n % 500).into_bytes();
                let location = if n.is_multiple_of(2) { b"be1!p".to_vec() } else { b"be1!q".to_vec() };
                c.run_ok(&Command::Activate { name, location, acl: b"owner\tlrswipkxtecdan\t".to_vec() }).await.expect("churn");
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    total as f64 / seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_stalled_subscribers_hold_bounded_memory() {
    stalled_subscribers(false).await;
}

/// Ignored: with the shared change log a publish costs about 0.2 us per
/// change with 200 stalled streams (9.2 us before), but on the shared
/// 2-core machine two 2-second churn runs differ by more than the 60 %
/// this asserts whatever the hub does (debug build, 3 runs: 58 %, 170 %,
/// 119 %): docs/robustness/limits.md.
/// `cargo test --release --test protocol limits::two_hundred_stalled_subscribers_do_not_halve_writers -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn two_hundred_stalled_subscribers_do_not_halve_writers() {
    stalled_subscribers(true).await;
}

async fn stalled_subscribers(check_ratio: bool) {
    const STALLED: usize = 200;
    let _heavy = crate::server::MEMORY_HEAVY.lock().await;
    let server = TestServer::start_with("write_timeout = 120").await;
    let hub = server.shared.hub.clone();
    let (stop, worst) = witness(server.addr().clone());
    let mut w = admin(&server.addr()).await;
    churn(&server.addr(), 4, 0.5, "user.warm").await;
    let baseline = churn(&server.addr(), 4, 2.0, "user.base").await;
    let rss0 = rss_kib();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stalled_subscriber(&server.addr()).await);
    }
    assert!(wait_until(|| hub.len() == STALLED, WAIT).await.is_some(), "every subscriber registered");
    // 4 MiB of MAILBOX lines at each: more than its socket buffers take,
    // so every subscriber's task is blocked in a write.
    fill(&mut w, "shared.fill", 64, 64 * 1024).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.send(()).expect("witness running");
    let worst_fill = worst.await.expect("witness ok");
    let (stop, worst) = witness(server.addr().clone());
    let rss1 = rss_kib();
    let with = churn(&server.addr(), 4, 2.0, "user.stalled").await;
    let rss2 = rss_kib();
    assert_eq!(hub.len(), STALLED, "under their bounds, blocked streams stay open");
    let ratio = with / baseline;
    eprintln!(
        "{STALLED} stalled subscribers: {baseline:.0} -> {with:.0} ACTIVATE/s ({:.1} %); RSS {rss0} KiB -> {rss1} KiB after the fill -> {rss2} KiB after the churn",
        ratio * 100.0
    );
    stop.send(()).expect("witness running");
    let worst = worst.await.expect("witness ok");
    eprintln!("witness FIND slowest: {worst_fill:?} during the fill, {worst:?} during the churn");
    // The fill itself is 200 x 4 MiB of legitimate output (about 1 s in a
    // debug build): printed, not asserted.
    assert!(worst < WITNESS_BOUND, "a witness FIND waited {worst:?} while writers churned");
    assert!(!check_ratio || ratio >= 0.6, "writers fell to {:.1} % of their rate without stalled subscribers", ratio * 100.0);
    // Memory: per blocked stream, the output in flight (a 64 KiB chunk plus
    // one 64 KiB line, in a buffer of up to twice that) and its queue
    // (bounded by max_stream_pending_bytes; here the churn's 4 x 500
    // names of 20 bytes + 64 each); plus 128 MiB for the store's cache,
    // the fill's values and the other tests of this process.
    let per_stream_kib = 2 * (64 + 64) + 4 * 500 * (20 + 64) / 1024;
    let bound = STALLED as u64 * per_stream_kib + 128 * 1024;
    let grown = rss2.saturating_sub(rss0);
    assert!(grown < bound, "RSS grew {grown} KiB with {STALLED} stalled subscribers (bound {bound} KiB)");
    drop(stalled);
}
