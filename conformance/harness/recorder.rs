//! A recording proxy between the Cyrus clients of a murder and its master:
//! every connection is relayed byte for byte and written to
//! `<dir>/conn-NNNN.txt` in the `# mupdate-record v1` transcript format
//! (`shared/research/captures/mupdate/`), with the client's pid and
//! command line found through /proc. The bytes of each direction are also
//! kept as they crossed the wire, in `conn-NNNN.c.raw` (client to master)
//! and `conn-NNNN.s.raw` (master to client), for checks that need the
//! exact bytes (the TLS capture proof, harness/capture.rs).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::mupdate::MasterAddr;
use super::ports::free_port;

/// A running recording proxy; dropping it stops it.
pub struct Recorder {
    /// Where the Cyrus clients connect.
    pub addr: MasterAddr,
    pub dir: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Recorder {
    /// Listens on a free loopback port, relays to `upstream`, writes
    /// transcripts into `dir` (created).
    pub fn start(upstream: &MasterAddr, dir: &Path) -> Recorder {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("recording proxy bind 127.0.0.1:{port}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        // Clients reach the master through the proxy the same way (TLS or not).
        let addr = upstream.with_port("127.0.0.1", port);
        let upstream = upstream.clone();
        let out = dir.to_path_buf();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            let seq = AtomicU32::new(1);
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, peer)) => {
                        let n = seq.fetch_add(1, Ordering::Relaxed);
                        let path = out.join(format!("conn-{n:04}.txt"));
                        let up = upstream.clone();
                        let h = std::thread::spawn(move || relay(client, peer, port, &up, &path));
                        conns2.lock().unwrap_or_else(|e| e.into_inner()).push(h);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Recorder {
            addr,
            dir: dir.to_path_buf(),
            stop,
            accept: Some(accept),
            conns,
        }
    }

    /// Stops accepting and waits (bounded) until every relayed connection
    /// has been closed by one side and its transcript is complete.
    pub fn finish(&mut self, timeout: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.retain(|h| !h.is_finished());
            if conns.is_empty() || Instant::now() >= deadline {
                return;
            }
            drop(conns);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Recorder {
    /// Dropped after the Cyrus instances (see `Murder`): their connections
    /// are closing, so the transcripts complete quickly.
    fn drop(&mut self) {
        self.finish(Duration::from_secs(10));
    }
}

/// One transcript being written by both directions.
struct Transcript {
    file: File,
    start: Instant,
}

impl Transcript {
    /// One `<secs> C:|S: <line>` per line of `bytes`, CR/LF/TAB and
    /// non-printables escaped as in the capture format.
    fn write(&mut self, side: char, bytes: &[u8]) {
        let t = self.start.elapsed().as_secs_f64();
        let mut out = String::new();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            out.push_str(&format!("{t:.6} {side}: {}\n", mupdated::tools::transcript::escape(line)));
        }
        let _ = self.file.write_all(out.as_bytes());
    }
}

fn relay(
    client: TcpStream,
    peer: SocketAddr,
    listen_port: u16,
    upstream: &MasterAddr,
    path: &Path,
) {
    let start = Instant::now();
    let Ok(mut file) = File::create(path) else {
        return;
    };
    let (pid, argv) = peer_process(peer.port(), listen_port).unwrap_or((0, String::new()));
    let _ = writeln!(
        file,
        "# mupdate-record v1\n# conn {} client={peer} listen=127.0.0.1:{listen_port} upstream={upstream}\n# peer pid={pid} argv={argv}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
    );
    let server = match TcpStream::connect((upstream.host.as_str(), upstream.port)) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                file,
                "# close 0.000000 closed_by=upstream-refused error={e}"
            );
            return;
        }
    };
    // The address the master sees this connection come from (in its log).
    if let Ok(local) = server.local_addr() {
        let _ = writeln!(file, "# upstream-from {local}");
    }
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let t = Arc::new(Mutex::new(Transcript { file, start }));
    let raw = |side: char| File::create(path.with_extension(format!("{}.raw", side.to_ascii_lowercase()))).ok();
    let closed_by: Arc<Mutex<Option<&'static str>>> = Arc::default();
    let pump = |mut from: TcpStream, mut to: TcpStream, side: char, who: &'static str| {
        let t = t.clone();
        let closed_by = closed_by.clone();
        let mut raw = raw(side);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        total += n;
                        if let Some(f) = &mut raw {
                            let _ = f.write_all(&buf[..n]);
                        }
                        t.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .write(side, &buf[..n]);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            closed_by
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(who);
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
            total
        })
    };
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = pump(client, s2, 'C', "client");
    let down = pump(server, c2, 'S', "server");
    let c_bytes = up.join().unwrap_or(0);
    let s_bytes = down.join().unwrap_or(0);
    let who = closed_by
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or("?");
    let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
    let secs = t.start.elapsed().as_secs_f64();
    let _ = writeln!(
        t.file,
        "# close {secs:.6} closed_by={who} c_bytes={c_bytes} s_bytes={s_bytes}"
    );
}

/// The pid and command line of the local process whose TCP socket has
/// local port `client_port` and remote port `listen_port` (/proc/net/tcp,
/// then the socket inode among /proc/*/fd).
fn peer_process(client_port: u16, listen_port: u16) -> Option<(u32, String)> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want_local = format!(":{client_port:04X}");
    let want_remote = format!(":{listen_port:04X}");
    let inode = tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1].ends_with(&want_local) && f[2].ends_with(&want_remote))
            .then(|| f[9].to_string())
    })?;
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(target.as_str())) {
                let cmdline = std::fs::read(proc_entry.path().join("cmdline")).unwrap_or_default();
                let argv = cmdline
                    .split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                return Some((pid, argv));
            }
        }
    }
    None
}
