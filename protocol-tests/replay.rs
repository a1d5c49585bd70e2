//! Replay of recorded sessions (fixtures/captures, recorded against Cyrus's
//! own mupdate master) against mupdated, and the replay tool's own checks:
//! a server that answers differently must fail with a diff that names the
//! differing line. Setup and selection: fixtures/captures/README.md;
//! normalisation: docs/transcripts.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mupdated::tools::replay::{play, Mode, Report};
use mupdated::tools::transcript::{self, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::server::TestServer;

const WAIT: Duration = Duration::from_secs(5);

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures")
}

fn load(path: &Path) -> Vec<Step> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    transcript::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn replay(addr: &str, steps: &[Step], mode: Mode) -> Report {
    play(addr, steps, mode, mupdated::session::VERSION, WAIT).await
}

/// For servers that answer wrongly: every missing answer costs the wait.
const SHORT_WAIT: Duration = Duration::from_millis(300);

/// Every capture in fixtures/captures, each on a fresh server after its
/// `NAME.setup` (if any), compared in Normalized mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyrus_captures_replay_against_mupdated() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(captures_dir())
        .expect("fixtures/captures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "captures missing: {names:?}");
    let mut failures = String::new();
    for capture in &names {
        // Cyrus's master offered PLAIN alone: so does the server here.
        let server = TestServer::start_with("scram_sha256 = false").await;
        let setup = capture.with_extension("setup");
        if setup.exists() {
            let report = replay(&server.addr(), &load(&setup), Mode::Normalized).await;
            if !report.matched() {
                failures.push_str(&format!("{} (setup):\n{}", setup.display(), report.render()));
            }
        }
        let report = replay(&server.addr(), &load(capture), Mode::Normalized).await;
        if !report.matched() {
            failures.push_str(&format!("{}:\n{}", capture.display(), report.render()));
        }
        server.stop().await;
    }
    assert!(failures.is_empty(), "captures that do not replay:\n{failures}");
}

/// A fake server that plays the server side of `steps` (one connection):
/// each recorded answer, passed through `answer`, after reading as many
/// bytes as the client sent at that point in the recording.
async fn fake_of(steps: Vec<Step>, answer: fn(&[u8]) -> Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else { return };
        for step in &steps {
            match step {
                Step::Expect { bytes, .. } => {
                    if s.write_all(&answer(bytes)).await.is_err() {
                        return;
                    }
                }
                Step::Send { bytes, .. } => {
                    let mut buf = vec![0u8; bytes.len()];
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                }
                Step::Eof { .. } => return,
                Step::Close { .. } | Step::Sleep { .. } => {}
            }
        }
        // Wait for the client to go.
        let _ = s.read(&mut [0u8; 64]).await;
    });
    addr
}

/// A fake server: a Cyrus-style greeting, then `TAG OK "done"` to every
/// command, whatever it was.
async fn done_to_everything() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let greeting = b"* AUTH \"PLAIN\"\r\n* OK MUPDATE \"fake\" \"Fake\" \"0\" \"(master)\"\r\n";
                if s.write_all(greeting).await.is_err() {
                    return;
                }
                let mut framer = mupdated::protocol::Framer::new(Default::default());
                let mut input = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Ok(mupdated::protocol::Decoded::Message(n)) = framer.decode(&input) {
                        let msg: Vec<u8> = input.drain(..n).collect();
                        let tag = msg.split(|&b| b == b' ').next().unwrap_or(b"*").to_vec();
                        let reply = [&tag[..], b" OK \"done\"\r\n"].concat();
                        if s.write_all(&reply).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => input.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_faithful_server_matches_in_both_modes() {
    let steps = load(&captures_dir().join("conn-0033.txt"));
    let addr = fake_of(steps.clone(), |b| b.to_vec()).await;
    let report = replay(&addr, &steps, Mode::Exact).await;
    assert!(report.matched(), "{}", report.render());
    let addr = fake_of(steps.clone(), |b| b.to_vec()).await;
    let report = replay(&addr, &steps, Mode::Normalized).await;
    assert!(report.matched(), "{}", report.render());
}

/// What Normalized forgives: the greeting's names and version, optional
/// capabilities, and literal versus quoted strings.
#[tokio::test]
async fn documented_differences_only_matter_in_exact_mode() {
    fn mupdated_style(b: &[u8]) -> Vec<u8> {
        let s = String::from_utf8_lossy(b)
            .replace("* COMPRESS \"DEFLATE\"\r\n", "")
            .replace("\"mupdate-master\" \"Cyrus IMAP\" \"3.6.1-Debian-3.6.1-4+deb12u5\"", "\"m.test\" \"mupdated\" \"9.9\"")
            .replace("{10+}\r\nuser.carol", "\"user.carol\"");
        s.into_bytes()
    }
    let steps = load(&captures_dir().join("conn-0033.txt"));
    let addr = fake_of(steps.clone(), mupdated_style).await;
    let report = replay(&addr, &steps, Mode::Normalized).await;
    assert!(report.matched(), "{}", report.render());
    let addr = fake_of(steps.clone(), mupdated_style).await;
    let report = play(&addr, &steps, Mode::Exact, "", SHORT_WAIT).await;
    assert!(!report.matched());
}

#[tokio::test]
async fn one_altered_line_is_named_in_the_diff() {
    fn altered(b: &[u8]) -> Vec<u8> {
        String::from_utf8_lossy(b).replace("D2 NO \"mailbox not currently active\"", "D2 OK \"done\"").into_bytes()
    }
    let steps = load(&captures_dir().join("conn-0033.txt"));
    let addr = fake_of(steps.clone(), altered).await;
    let report = replay(&addr, &steps, Mode::Normalized).await;
    assert!(!report.matched());
    assert!(!report.unreachable());
    assert_eq!(report.differences.len(), 1, "{}", report.render());
    let d = &report.differences[0];
    assert!(matches!(&steps[d.step], Step::Expect { bytes, .. } if bytes.starts_with(b"D2 NO")));
    let diff = report.render();
    assert!(diff.contains("- D2 NO \"mailbox not currently active\""), "{diff}");
    assert!(diff.contains("+ D2 OK \"done\""), "{diff}");
}

#[tokio::test]
async fn a_server_that_says_done_to_everything_fails_with_a_diff() {
    let steps = load(&captures_dir().join("conn-0031.txt"));
    let report = play(&done_to_everything().await, &steps, Mode::Normalized, "", SHORT_WAIT).await;
    assert!(!report.matched());
    assert!(!report.unreachable());
    let diff = report.render();
    assert!(diff.contains("- A01 OK \"Authenticated\""), "{diff}");
    assert!(diff.contains("+ A01 OK \"done\""), "{diff}");
    assert!(diff.contains("- F1 MAILBOX \"user.bob\" \"127.0.0.1:14101!default\""), "{diff}");
}

#[tokio::test]
async fn an_unreachable_server_is_reported_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let steps = load(&captures_dir().join("conn-0002.txt"));
    let report = replay(&addr, &steps, Mode::Normalized).await;
    assert!(report.unreachable(), "{}", report.render());
}

/// The sessions of a whole recorded murder run against Cyrus's master
/// (fixtures/captures-murder: every backend and ctl_mboxlist connection of
/// the conformance scenario `imap_lifecycle`, from an empty master), played
/// one after another in the order Cyrus's master accepted them, on one
/// fresh mupdated. The frontend slave's stream is left out: its lines
/// follow Cyrus's 5-second batching (docs/compatibility.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_murder_replays_against_mupdated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures-murder");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/captures-murder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt") && p.file_name().is_some_and(|n| n != "names.txt"))
        .collect();
    names.sort();
    assert!(names.len() > 300, "captures missing: {}", names.len());
    // Cyrus's master offered PLAIN alone: so does the server here.
    let server = TestServer::start_with("scram_sha256 = false").await;
    let mut failures = String::new();
    let mut played = 0;
    for capture in &names {
        let text = std::fs::read_to_string(capture).unwrap();
        if text.lines().any(|l| l.starts_with("# peer ") && l.contains("argv=mupdate ")) {
            continue;
        }
        played += 1;
        let report = replay(&server.addr(), &load(capture), Mode::Normalized).await;
        if !report.matched() {
            failures.push_str(&format!("{}:\n{}", capture.display(), report.render()));
        }
    }
    assert!(played > 300);
    assert!(failures.is_empty(), "recorded sessions that do not replay:\n{failures}");
    server.stop().await;
}
