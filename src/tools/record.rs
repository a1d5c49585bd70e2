//! A recording TCP proxy: clients connect to it, it connects each one to the
//! real server and writes what both sides said into one transcript file per
//! connection (`# mupdate-record v1`, the format of src/tools/transcript.rs), so
//! a session against any MUPDATE server (Cyrus's master, mupdated) can be
//! replayed later with `mupdatectl replay`.
//!
//! A file looks like
//!
//! ```text
//! # mupdate-record v1
//! # conn conn-0001.txt opened=2026-11-29T20:12:01.412Z client=127.0.0.1:56668 listen=127.0.0.1:13906 upstream=127.0.0.1:13905
//! 0.004599 S: * OK MUPDATE "m" "Cyrus IMAP" "3.6.1" "(master)"\r\n
//! 0.004821 C: Q01 LOGOUT\r\n
//! 0.005266 S: Q01 OK "bye-bye"\r\n
//! # close 0.005301 closed_by=server c_bytes=11 s_bytes=80 drained_after_close=0
//! ```
//!
//! One line per chunk read, split after each `\n`; SECONDS count from the
//! accept. `closed_by` is the side that closed first (`client`, `server`,
//! or `recorder-stopped` when the proxy was shut down); after a side
//! closes, the other direction is still copied (`drained_after_close`
//! bytes) for at most [`DRAIN_TIMEOUT`].

use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::tools::transcript::escape;

/// How long the other direction is still copied after one side closed:
/// long enough for a LOGOUT answer, short enough not to hold dead peers.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read per chunk: one read is one transcript line (or a few).
const CHUNK: usize = 16 * 1024;

/// Bind `listen` and proxy to `upstream` until `shutdown` completes.
pub async fn run_proxy(
    listen: SocketAddr,
    upstream: String,
    out_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    serve(listener, upstream, out_dir, shutdown).await
}

/// Proxy connections from an already bound listener (tests bind port 0).
/// Returns after `shutdown` once every connection's file is complete.
pub async fn serve(
    listener: TcpListener,
    upstream: String,
    out_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(&out_dir)?;
    let listen = listener.local_addr()?;
    tracing::info!(%listen, %upstream, dir = %out_dir.display(), "recording proxy");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut count = 0u32;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (client, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: pause, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                count += 1;
                let name = next_free_name(&out_dir, &mut count);
                let path = out_dir.join(&name);
                let header = format!(
                    "# mupdate-record v1\n# conn {name} opened={} client={peer} listen={listen} upstream={upstream}\n",
                    utc_now()
                );
                let upstream = upstream.clone();
                let stop = stop_rx.clone();
                tasks.spawn(async move {
                    if let Err(e) = record_one(client, &upstream, &path, header, stop).await {
                        tracing::warn!(%peer, error = %e, file = %path.display(), "recording failed");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// `conn-NNNN.txt`, skipping names already in the folder (a restarted
/// proxy keeps earlier recordings).
fn next_free_name(dir: &Path, count: &mut u32) -> String {
    loop {
        let name = format!("conn-{:04}.txt", *count);
        if !dir.join(&name).exists() {
            return name;
        }
        *count += 1;
    }
}

/// Copy one connection both ways, writing the transcript as bytes pass.
async fn record_one(
    mut client: TcpStream,
    upstream: &str,
    path: &Path,
    header: String,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let started = Instant::now();
    // Plain blocking writes: one small write per chunk to a local file,
    // so a crash loses at most the chunk in flight.
    let mut file = File::create(path)?;
    file.write_all(header.as_bytes())?;
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            let line = format!("# close {:.6} closed_by=upstream-unreachable error={e:?}\n", secs(started));
            file.write_all(line.as_bytes())?;
            let _ = client.shutdown().await;
            return Ok(());
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    let mut cbuf = vec![0u8; CHUNK];
    let mut sbuf = vec![0u8; CHUNK];
    let mut from_client = Direction { label: "C", peer: "client", open: true, bytes: 0 };
    let mut from_server = Direction { label: "S", peer: "server", open: true, bytes: 0 };
    let mut log = Log {
        file,
        started,
        closed: None,
        drained: 0,
        drain_until: tokio::time::Instant::now() + Duration::from_secs(86400 * 365),
    };
    while from_client.open || from_server.open {
        tokio::select! {
            r = client_r.read(&mut cbuf), if from_client.open => {
                log.relay(r, &cbuf, &mut from_client, &mut server_w, &mut from_server).await?;
            }
            r = server_r.read(&mut sbuf), if from_server.open => {
                log.relay(r, &sbuf, &mut from_server, &mut client_w, &mut from_client).await?;
            }
            _ = tokio::time::sleep_until(log.drain_until) => break,
            _ = stop.changed() => {
                log.closed.get_or_insert(("recorder-stopped", secs(started)));
                break;
            }
        }
    }
    let (by, at) = log.closed.unwrap_or(("recorder-stopped", secs(started)));
    let line = format!(
        "# close {at:.6} closed_by={by} c_bytes={} s_bytes={} drained_after_close={}\n",
        from_client.bytes, from_server.bytes, log.drained
    );
    log.file.write_all(line.as_bytes())?;
    log.file.flush()
}

/// One direction of a recorded connection: what its reads are labelled in
/// the transcript and in `closed_by`, whether it is still read, and how
/// many bytes came from it.
struct Direction {
    label: &'static str,
    peer: &'static str,
    open: bool,
    bytes: u64,
}

/// The transcript of one connection and how its close went.
struct Log {
    file: File,
    started: Instant,
    /// The side that closed first, and when.
    closed: Option<(&'static str, f64)>,
    /// Bytes copied after the first close.
    drained: u64,
    /// When to stop copying the other direction after the first close.
    drain_until: tokio::time::Instant,
}

impl Log {
    /// What one read from `from` gave: record it and copy it to `to`
    /// (whose direction `back` stops if `to` cannot be written), or, at
    /// its end, stop reading `from`, shut `to` down and start the drain.
    async fn relay(
        &mut self,
        read: std::io::Result<usize>,
        buf: &[u8],
        from: &mut Direction,
        to: &mut (impl AsyncWriteExt + Unpin),
        back: &mut Direction,
    ) -> std::io::Result<()> {
        match read {
            Ok(n) if n > 0 => {
                from.bytes += n as u64;
                if self.closed.is_some() {
                    self.drained += n as u64;
                }
                write_lines(&mut self.file, secs(self.started), from.label, &buf[..n])?;
                if to.write_all(&buf[..n]).await.is_err() {
                    back.open = false;
                }
            }
            _ => {
                from.open = false;
                let _ = to.shutdown().await;
                if self.closed.is_none() {
                    self.closed = Some((from.peer, secs(self.started)));
                    self.drain_until = tokio::time::Instant::now() + DRAIN_TIMEOUT;
                }
            }
        }
        Ok(())
    }
}

fn write_lines(file: &mut File, at: f64, dir: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut text = String::new();
    for piece in bytes.split_inclusive(|&b| b == b'\n') {
        text.push_str(&format!("{at:.6} {dir}: {}\n", escape(piece)));
    }
    file.write_all(text.as_bytes())
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    utc(d.as_secs() as i64, d.subsec_millis())
}

fn utc(secs: i64, millis: u32) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Days to civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::transcript::{parse, Step};
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(utc(1_795_983_119, 412), "2026-11-29T20:11:59.412Z");
    }

    /// A line server: greets, answers each `TAG ...` line with `TAG OK`,
    /// and closes after answering LOGOUT.
    async fn tiny_server(listener: TcpListener) {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"* AUTH \"PLAIN\"\r\n* OK MUPDATE \"tiny\"\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let tag = line.split(' ').next().unwrap_or("*").to_string();
                    w.write_all(format!("{tag} OK \"done\"\r\n").as_bytes()).await.unwrap();
                    if line.ends_with("LOGOUT") {
                        return;
                    }
                }
            });
        }
    }

    async fn read_until(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(end) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn records_each_connection_in_the_transcript_format() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap().to_string();
        tokio::spawn(tiny_server(upstream));
        let dir = tempfile::tempdir().unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let out = dir.path().to_path_buf();
        let task = tokio::spawn(serve(proxy, upstream_addr.clone(), out, async {
            let _ = stop_rx.await;
        }));

        // Connection 1: the server closes after LOGOUT.
        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        read_until(&mut c, b"\"tiny\"\r\n").await;
        c.write_all(b"N1 NOOP\r\n").await.unwrap();
        read_until(&mut c, b"N1 OK \"done\"\r\n").await;
        c.write_all(b"Q1 LOGOUT\r\n").await.unwrap();
        read_until(&mut c, b"Q1 OK \"done\"\r\n").await;
        assert_eq!(c.read(&mut [0u8; 8]).await.unwrap(), 0);

        // Connection 2: the client closes; binary bytes are escaped.
        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        read_until(&mut c, b"\"tiny\"\r\n").await;
        c.write_all(b"B1 NOOP \x01\t\\\r\n").await.unwrap();
        read_until(&mut c, b"B1 OK \"done\"\r\n").await;
        drop(c);

        // Give connection 2 time to see the close, then stop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();

        let one = std::fs::read_to_string(dir.path().join("conn-0001.txt")).unwrap();
        let lines: Vec<&str> = one.lines().collect();
        assert_eq!(lines[0], "# mupdate-record v1");
        assert!(lines[1].starts_with("# conn conn-0001.txt opened=20"), "{}", lines[1]);
        assert!(lines[1].ends_with(&format!("listen={proxy_addr} upstream={upstream_addr}")), "{}", lines[1]);
        // Split after each \n, one stamp per chunk.
        let body: Vec<&str> = lines[2..lines.len() - 1].iter().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(
            body,
            [
                "S: * AUTH \"PLAIN\"\\r\\n",
                "S: * OK MUPDATE \"tiny\"\\r\\n",
                "C: N1 NOOP\\r\\n",
                "S: N1 OK \"done\"\\r\\n",
                "C: Q1 LOGOUT\\r\\n",
                "S: Q1 OK \"done\"\\r\\n",
            ]
        );
        assert_eq!(lines[2].split_once(' ').unwrap().0, lines[3].split_once(' ').unwrap().0);
        let close = lines.last().unwrap();
        assert!(close.starts_with("# close "), "{close}");
        assert!(close.ends_with(" closed_by=server c_bytes=20 s_bytes=65 drained_after_close=0"), "{close}");
        let steps = parse(&one).unwrap();
        assert_eq!(steps.len(), 6);
        assert_eq!(steps[5], Step::Eof { conn: "main".into() });

        let two = std::fs::read_to_string(dir.path().join("conn-0002.txt")).unwrap();
        assert!(two.contains(" C: B1 NOOP \\x01\\t\\\\\\r\\n\n"), "{two}");
        assert!(two.lines().last().unwrap().contains(" closed_by=client c_bytes=13 "), "{two}");
        let steps = parse(&two).unwrap();
        assert_eq!(steps[1], Step::Send { conn: "main".into(), bytes: b"B1 NOOP \x01\t\\\r\n".to_vec() });
        assert!(!steps.iter().any(|s| matches!(s, Step::Eof { .. })));
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_recorded_and_the_client_closed() {
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let dir = tempfile::tempdir().unwrap();
        // An earlier recording is kept.
        std::fs::write(dir.path().join("conn-0001.txt"), "old").unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(proxy, dead_addr, dir.path().to_path_buf(), async {
            let _ = stop_rx.await;
        }));
        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        assert_eq!(c.read(&mut [0u8; 8]).await.unwrap(), 0);
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("conn-0001.txt")).unwrap(), "old");
        let two = std::fs::read_to_string(dir.path().join("conn-0002.txt")).unwrap();
        assert!(two.contains("closed_by=upstream-unreachable"), "{two}");
    }
}
