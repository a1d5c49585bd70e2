//! `mupdatectl bench`: load and latency figures for any MUPDATE server
//! (mupdated or Cyrus's `mupdate -m`), measured from the wire only.
//!
//! Phases, in the order they run (each selectable with `--phases`):
//! - **load**: N Cyrus-like mailboxes over pipelined connections
//!   (batches of `ACTIVATE` with `{n+}` literals, then their OKs).
//! - **find**: `FIND` of random loaded names, several connections.
//! - **list**: full `LIST`, and `LIST "be07!"` (one server's share).
//! - **update**: `UPDATE` dump until `OK "streaming starts"`.
//! - **connect**: new connections one after another, each to its greeting
//!   (with `--tls`/`--starttls`: the TLS handshake included), then closed:
//!   what a connection costs before any login.
//! - **churn**: backend transactions as Cyrus backends make them (new
//!   connection, AUTHENTICATE PLAIN, RESERVE, ACTIVATE, LOGOUT without
//!   waiting), at several concurrency levels.
//! - **propagation**: writer's OK to subscriber's MAILBOX line, without
//!   and with a NOOP barrier (what a Cyrus frontend slave sends).
//! - **stalled**: churn throughput without, then with UPDATE subscribers that
//!   read nothing (`--stalled-subscribers`, default one).
//!
//! Over TLS (`mupdatectl --tls bench` or `--starttls`, with `--ca` to
//! verify the server; the flags are mupdatectl's global ones) every connection of every phase speaks TLS, so the
//! handshake is in each churn transaction and each connect sample.
//!
//! With `--server-pid` (server on this machine) each phase also reports the
//! server's CPU seconds, and the run its peak RSS; with `--data-dir` the
//! disk bytes after load.
//!
//! Load runs first so that FIND, LIST and UPDATE see exactly the loaded
//! directory and churn runs against a populated one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tools::client::{plain_base64, Client, ClientError, Greeting};
use crate::tools::tls_client;
use crate::protocol::{encode, parse, Command, Decoded, Entry, Framer, Limits, Response, Status};

/// A bench phase.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Backend transactions (connect, login, RESERVE, ACTIVATE, LOGOUT) at
    /// each `--churn-concurrency` level.
    Churn,
    /// ACTIVATE of the generated mailbox set over pipelined connections.
    Load,
    /// FIND of random loaded names.
    Find,
    /// A full LIST, then one server's share.
    List,
    /// An UPDATE dump, to its `OK "streaming starts"`.
    Update,
    /// Delay from a writer's OK to a subscriber's MAILBOX line.
    Propagation,
    /// Churn without, then with, UPDATE subscribers that never read.
    Stalled,
    /// The rights index (mupdated's `XRIGHTS`): skipped on servers without it.
    Rights,
    /// New connections one after another, to their greeting (TLS handshake
    /// included when the bench speaks TLS).
    Connect,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Churn => "churn",
            Phase::Load => "load",
            Phase::Find => "find",
            Phase::List => "list",
            Phase::Update => "update",
            Phase::Propagation => "propagation",
            Phase::Stalled => "stalled",
            Phase::Rights => "rights",
            Phase::Connect => "connect",
        }
    }
}

/// Order the phases run in, whatever order `--phases` names them.
const RUN_ORDER: [Phase; 9] = [
    Phase::Load,
    Phase::Find,
    Phase::List,
    Phase::Update,
    Phase::Rights,
    Phase::Connect,
    Phase::Churn,
    Phase::Propagation,
    Phase::Stalled,
];

/// Options of `mupdatectl bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Phases to run (they run in the order load, find, list, update, rights, connect, churn, propagation,
    /// stalled).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "churn,load,find,list,update,rights,connect,propagation,stalled"
    )]
    pub phases: Vec<Phase>,
    /// Mailboxes to load (and to pick FIND names from).
    #[arg(long, default_value_t = 10_000)]
    pub mailboxes: usize,
    /// Backends the loaded mailboxes are spread over (`be00!default`, `be01!default`, ...).
    #[arg(long, default_value_t = 20)]
    pub servers: usize,
    /// Skip the load when the directory already holds the mailboxes (first and last name found).
    #[arg(long)]
    pub skip_load: bool,
    /// Pipelined connections used by the load.
    #[arg(long, default_value_t = 4)]
    pub load_connections: usize,
    /// ACTIVATEs written per batch before reading their OKs.
    #[arg(long, default_value_t = 256)]
    pub load_batch: usize,
    /// Concurrency levels of the churn phase.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub churn_concurrency: Vec<usize>,
    /// Seconds per churn level.
    #[arg(long, default_value_t = 5.0)]
    pub churn_seconds: f64,
    /// Connections running FIND.
    #[arg(long, default_value_t = 8)]
    pub find_concurrency: usize,
    /// Seconds of FIND.
    #[arg(long, default_value_t = 5.0)]
    pub find_seconds: f64,
    /// Seconds of the connect phase (connections one after another).
    #[arg(long, default_value_t = 3.0)]
    pub connect_seconds: f64,
    /// Server name whose share `LIST "<server>!"` measures (default: be07, or the last one).
    #[arg(long)]
    pub list_server: Option<String>,
    /// Propagation samples per mode (without and with NOOP).
    #[arg(long, default_value_t = 200)]
    pub propagation_samples: usize,
    /// Seconds at most per propagation mode (a server that batches pushes,
    /// as Cyrus does every few seconds, gets fewer samples).
    #[arg(long, default_value_t = 12.0)]
    pub propagation_seconds: f64,
    /// Seconds a propagation sample may wait for its MAILBOX line before it counts as lost.
    #[arg(long, default_value_t = 8.0)]
    pub propagation_wait: f64,
    /// Concurrency of the stalled-subscriber churn runs.
    #[arg(long, default_value_t = 8)]
    pub stalled_concurrency: usize,
    /// Seconds of each stalled-subscriber churn run (without, then with the stalled subscriber).
    #[arg(long, default_value_t = 5.0)]
    pub stalled_seconds: f64,
    /// MiB of stream data to push at the stalled subscriber before its churn run
    /// (ACTIVATEs of a few names with 32 KiB ACLs, deleted afterwards), so that the
    /// server's send buffer for it is full whatever the directory size; 0: none.
    #[arg(long, default_value_t = 8)]
    pub stalled_fill_mib: usize,
    /// UPDATE subscribers that stop reading during the stalled phase's second churn run.
    #[arg(long, default_value_t = 1)]
    pub stalled_subscribers: usize,
    /// Every connection over implicit TLS (set from mupdatectl's global `--tls`).
    #[arg(skip)]
    pub tls: bool,
    /// Every connection upgraded with STARTTLS (mupdatectl's global `--starttls`).
    #[arg(skip)]
    pub starttls: bool,
    /// What the TLS connections check and present (mupdatectl's global
    /// `--ca`, `--cert`, `--key`): without a CA the server is not verified
    /// (encrypted, not authenticated), as Cyrus's client does.
    #[arg(skip)]
    pub tls_options: tls_client::Options,
    /// PID of the server process (same machine): report its CPU seconds per phase and peak RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's data folder (same machine): report its bytes after the load.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the FIND name picker.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON (set from mupdatectl's global `--json`).
    #[arg(skip)]
    pub json: bool,
    /// Seconds to wait for any answer (set from mupdatectl's global `--timeout`).
    #[arg(skip = 30u64)]
    pub timeout: u64,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            phases: RUN_ORDER.to_vec(),
            mailboxes: 10_000,
            servers: 20,
            skip_load: false,
            load_connections: 4,
            load_batch: 256,
            churn_concurrency: vec![1, 8, 64],
            churn_seconds: 5.0,
            find_concurrency: 8,
            find_seconds: 5.0,
            connect_seconds: 3.0,
            list_server: None,
            propagation_samples: 200,
            propagation_seconds: 12.0,
            propagation_wait: 8.0,
            stalled_concurrency: 8,
            stalled_seconds: 5.0,
            stalled_fill_mib: 8,
            stalled_subscribers: 1,
            server_pid: None,
            data_dir: None,
            seed: 1,
            tls: false,
            starttls: false,
            tls_options: tls_client::Options::default(),
            json: false,
            timeout: 30,
        }
    }
}

// ---------------------------------------------------------------- report

/// What the server said about itself.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServerInfo {
    /// The `host:port` the bench connected to, as given.
    pub address: String,
    /// The server name of its greeting.
    pub server_name: String,
    /// The implementation named in its greeting.
    pub implementation: String,
    /// The version named in its greeting.
    pub version: String,
}

/// Latency distribution, milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// Median (nearest-rank), milliseconds; 0 without samples.
    pub p50_ms: f64,
    /// 99th percentile (nearest-rank), milliseconds.
    pub p99_ms: f64,
    /// Slowest sample, milliseconds.
    pub max_ms: f64,
}

impl Latency {
    fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            ms(samples[i])
        };
        Latency { p50_ms: rank(0.50), p99_ms: rank(0.99), max_ms: ms(samples[samples.len() - 1]) }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One churn level.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ChurnLevel {
    /// Connections making transactions at once.
    pub concurrency: usize,
    /// Wall-clock seconds the level ran (its duration plus the tail of the
    /// transactions under way at its end).
    pub seconds: f64,
    /// Transactions whose RESERVE and ACTIVATE both got OK.
    pub transactions: u64,
    /// Transactions that failed (refused, closed, timed out).
    pub errors: u64,
    /// `transactions` / `seconds`.
    pub tx_per_s: f64,
    /// Time of one whole successful transaction, connect to LOGOUT sent.
    #[serde(flatten)]
    pub latency: Latency,
    /// First error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// The load phase's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LoadReport {
    /// Mailboxes in the generated set.
    pub mailboxes: usize,
    /// True when `--skip-load` found them already there.
    pub skipped: bool,
    /// ACTIVATEs answered OK.
    pub ok: u64,
    /// ACTIVATEs answered NO or BAD.
    pub refused: u64,
    /// Wall-clock seconds from the first connection's login to the last
    /// OK (0 when skipped).
    pub seconds: f64,
    /// `ok` / `seconds`.
    pub mailboxes_per_s: f64,
    /// Pipelined connections used (`--load-connections`).
    pub connections: usize,
    /// ACTIVATEs sent per batch before reading their answers (`--load-batch`).
    pub batch: usize,
}

/// The find phase's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FindReport {
    /// Connections sending FIND one at a time each (`--find-concurrency`).
    pub concurrency: usize,
    /// Wall-clock seconds the phase ran.
    pub seconds: f64,
    /// FINDs answered (found or not).
    pub ops: u64,
    /// FINDs of a loaded name that found nothing.
    pub misses: u64,
    /// Connections that failed (a failed FIND ends its connection's run).
    pub errors: u64,
    /// `ops` / `seconds`.
    pub ops_per_s: f64,
    /// One FIND, sent to its OK.
    #[serde(flatten)]
    pub latency: Latency,
}

/// The connect phase's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ConnectReport {
    /// Connections made, each to its greeting.
    pub connections: u64,
    /// Wall-clock seconds the phase ran.
    pub seconds: f64,
    /// `connections` / `seconds`.
    pub per_s: f64,
    /// One connection: TCP connect, TLS handshake if any, greeting.
    #[serde(flatten)]
    pub latency: Latency,
}

/// The list phase's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ListReport {
    /// A full `LIST`, sent to its OK, milliseconds.
    pub full_ms: f64,
    /// MAILBOX and RESERVE lines the full LIST returned.
    pub full_entries: usize,
    /// The prefix of the second LIST: `<server>!` (`--list-server`).
    pub prefix: String,
    /// That `LIST "<prefix>"`, sent to its OK, milliseconds.
    pub prefix_ms: f64,
    /// Lines it returned.
    pub prefix_entries: usize,
}

/// The update phase's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct UpdateReport {
    /// From sending UPDATE to `OK "streaming starts"`.
    pub dump_ms: f64,
    /// MAILBOX and RESERVE lines of the dump.
    pub entries: usize,
}

/// Propagation in one mode.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PropagationStats {
    /// Samples whose MAILBOX line arrived.
    pub samples: usize,
    /// Samples whose MAILBOX line did not arrive within `--propagation-wait`.
    pub lost: usize,
    /// Writer's OK to the subscriber's MAILBOX line, over the samples that
    /// arrived.
    #[serde(flatten)]
    pub latency: Latency,
}

/// The propagation phase's figures: without and with a NOOP barrier.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PropagationReport {
    /// Pure push: the subscriber only reads.
    pub push: PropagationStats,
    /// The subscriber sends NOOP right after the writer's OK.
    pub noop: PropagationStats,
    /// NOOP sent to its `OK "Noop done"` (milliseconds, p50/p99/max).
    pub noop_ok: Latency,
}

/// The stalled phase's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StalledReport {
    /// Churn concurrency of both runs (`--stalled-concurrency`).
    pub concurrency: usize,
    /// Subscribers that never read during the second run (`--stalled-subscribers`).
    pub subscribers: usize,
    /// Churn before any stalled subscriber (after a one-second warm-up).
    pub baseline: ChurnLevel,
    /// Churn with the stalled subscribers connected and their streams filled.
    pub stalled: ChurnLevel,
    /// Throughput with the stalled subscribers, percent of the baseline.
    pub ratio_percent: f64,
    /// Throughput lost with the stalled subscribers, percent of the baseline.
    pub drop_percent: f64,
    /// Whether the server still had every stalled connection open at the end.
    pub stalled_connection_open: bool,
    /// How many of the stalled connections the server still had open at the end.
    pub stalled_connections_open: usize,
    /// Stream bytes pushed at the stalled subscriber before its run (`--stalled-fill-mib`).
    pub fill_bytes: u64,
    /// Seconds the fill writes took to be answered.
    pub fill_seconds: f64,
    /// Why the fill failed (a server that blocks every writer on one stalled stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_error: Option<String>,
}

/// The server's CPU and memory, read from `/proc` (`--server-pid`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Resources {
    /// The server's process id.
    pub pid: u32,
    /// Server CPU seconds (user + system) per phase.
    pub cpu_seconds: BTreeMap<String, f64>,
    /// VmHWM at the end of the run, KiB.
    pub peak_rss_kib: u64,
    /// VmRSS at the end of the run, KiB.
    pub rss_kib: u64,
}

/// The server's data directory after the load (`--data-dir`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct DiskReport {
    /// The directory measured.
    pub dir: String,
    /// Sum of file sizes after the load.
    pub bytes: u64,
    /// Allocated blocks after the load, bytes.
    pub allocated_bytes: u64,
    /// `bytes` / mailboxes.
    pub bytes_per_mailbox: f64,
}

/// Every figure of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BenchReport {
    /// Who answered.
    pub server: ServerInfo,
    /// How every connection spoke: `clear`, `tls` (implicit) or `starttls`.
    pub transport: String,
    /// The phases selected, in the order they ran.
    pub phases: Vec<Phase>,
    /// Mailboxes in the generated set (`--mailboxes`).
    pub mailboxes: usize,
    /// Backends the set is spread over (`--servers`).
    pub servers: usize,
    /// Load figures; `None` when not run or failed (likewise below).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadReport>,
    /// Find figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub find: Option<FindReport>,
    /// List figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<ListReport>,
    /// Update figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateReport>,
    /// One entry per churn concurrency level, in the order given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<Vec<ChurnLevel>>,
    /// Propagation figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<PropagationReport>,
    /// Stalled-subscriber figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalled: Option<StalledReport>,
    /// Connect figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectReport>,
    /// Rights-index figures; also `None` on a server without `XRIGHTS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rights: Option<RightsReport>,
    /// Server CPU and memory, with `--server-pid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Disk use after the load, with `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskReport>,
    /// Phases that failed, with why.
    pub errors: Vec<String>,
    /// Wall-clock seconds of the whole run, first connection included.
    pub total_seconds: f64,
}

// ---------------------------------------------------------------- names

/// The loaded set: Cyrus-like users `user.u0000123`, every third with
/// `Sent` and `Trash`, spread round-robin over the servers by user.
/// Deterministic, so a later run (`--skip-load`) knows the same names.
pub fn mailbox_set(n: usize, servers: usize) -> Vec<(String, String)> {
    let servers = servers.max(1);
    let mut out = Vec::with_capacity(n);
    let mut user = 0usize;
    while out.len() < n {
        let loc = location(user % servers);
        let inbox = format!("user.u{user:07}");
        if user.is_multiple_of(3) {
            for folder in ["Sent", "Trash"] {
                out.push((format!("{inbox}.{folder}"), loc.clone()));
            }
        }
        out.push((inbox, loc));
        user += 1;
    }
    out.truncate(n);
    out
}

fn server_name(i: usize) -> String {
    format!("be{i:02}")
}

fn location(i: usize) -> String {
    format!("{}!default", server_name(i))
}

/// ACL as Cyrus writes it: `identifier TAB rights TAB`, for the owner.
fn acl_for(name: &str) -> String {
    let owner = name.strip_prefix("user.").and_then(|r| r.split('.').next()).unwrap_or("anyone");
    format!("{owner}\tlrswipkxtecdan\t")
}

/// Run id for fresh names, so repeated runs on one directory never collide.
fn run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{:x}{:x}", now.as_secs() & 0xffffff, std::process::id() & 0xfff)
}

/// xorshift64*: enough to pick FIND names without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    }
}

// ---------------------------------------------------------------- server resources

/// Clock ticks per second of /proc/PID/stat (USER_HZ: 100 on Linux).
const USER_HZ: f64 = 100.0;

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse().ok())
}

/// (apparent bytes, allocated bytes) under a folder; bounded depth.
fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, depth: u32, acc: &mut (u64, u64)) {
        if depth > 16 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                walk(&e.path(), depth + 1, acc);
            } else if md.is_file() {
                acc.0 += md.len();
                acc.1 += md.blocks() * 512;
            }
        }
    }
    let mut acc = (0, 0);
    walk(dir, 0, &mut acc);
    acc
}

// ---------------------------------------------------------------- progress

/// Prints `label: done/total (rate/s)` on stderr every second until dropped.
struct Progress {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(label: &'static str, done: Arc<AtomicU64>, total: Option<u64>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last = (start, 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                let d = done.load(Ordering::Relaxed);
                let rate = (d - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
                last = (now, d);
                match total {
                    Some(t) => eprintln!(
                        "  {label}: {d}/{t} ({rate:.0}/s, {:.0} s)",
                        (now - start).as_secs_f64()
                    ),
                    None => eprintln!("  {label}: {d} ({rate:.0}/s, {:.0} s)", (now - start).as_secs_f64()),
                }
            }
        });
        Progress { stop, task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

// ---------------------------------------------------------------- connections

/// A bench connection: TCP, or TLS over TCP (the TCP socket stays
/// reachable for the stalled phase's peek).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &tokio::net::TcpStream;
}

impl Io for tokio::net::TcpStream {
    fn tcp(&self) -> &tokio::net::TcpStream {
        self
    }
}

impl Io for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn tcp(&self) -> &tokio::net::TcpStream {
        self.get_ref().0
    }
}

/// The stream every phase's client runs over.
type Stream = Box<dyn Io>;

/// Opens the bench's connections the way it was asked: clear, implicit
/// TLS or STARTTLS (one rustls configuration for the whole run).
#[derive(Clone)]
struct Dialer {
    server: String,
    tls: Option<(tls_client::Mode, Arc<rustls::ClientConfig>)>,
}

impl Dialer {
    fn new(server: &str, args: &BenchArgs) -> Result<Dialer, String> {
        let mode = match (args.tls, args.starttls) {
            (true, _) => Some(tls_client::Mode::Implicit),
            (false, true) => Some(tls_client::Mode::Starttls),
            (false, false) => None,
        };
        let tls = match mode {
            None => None,
            Some(m) => {
                Some((m, Arc::new(tls_client::client_config(&args.tls_options).map_err(|e| e.to_string())?)))
            }
        };
        Ok(Dialer { server: server.to_string(), tls })
    }

    fn transport(&self) -> &'static str {
        match &self.tls {
            None => "clear",
            Some((tls_client::Mode::Implicit, _)) => "tls",
            Some((tls_client::Mode::Starttls, _)) => "starttls",
        }
    }

    /// `tcp` made ready for the (next) greeting: as it is, after the TLS
    /// handshake, or after the clear greeting, STARTTLS and the handshake.
    async fn wrap(&self, tcp: tokio::net::TcpStream, timeout: Duration) -> Result<Stream, ClientError> {
        let Some((mode, config)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let tcp = match mode {
            tls_client::Mode::Implicit => tcp,
            tls_client::Mode::Starttls => {
                let (mut c, greeting) = Client::over(tcp, timeout).await?;
                if !greeting.has("STARTTLS") {
                    return Err(ClientError::Protocol("tls: the server does not offer STARTTLS".into()));
                }
                let (_, status, text) = c.run(&Command::Starttls).await?;
                if status != Status::Ok {
                    return Err(ClientError::Refused { status, text });
                }
                c.into_stream()
            }
        };
        Ok(Box::new(tls_client::handshake(tcp, &self.server, config.clone(), timeout).await?))
    }

    /// A new connection and its greeting (inside TLS when TLS is used).
    async fn open(&self, timeout: Duration) -> Result<(Client<Stream>, Greeting), ClientError> {
        let tcp = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&self.server))
            .await
            .map_err(|_| ClientError::Timeout)??;
        let _ = tcp.set_nodelay(true);
        let stream = self.wrap(tcp, timeout).await?;
        Client::over(stream, timeout).await
    }
}

// ---------------------------------------------------------------- phases

struct Ctx<'a> {
    server: &'a str,
    dialer: Dialer,
    user: &'a str,
    password: &'a str,
    args: &'a BenchArgs,
    timeout: Duration,
    run: String,
}

impl Ctx<'_> {
    async fn login(&self) -> Result<Client<Stream>, ClientError> {
        let (mut c, _) = self.dialer.open(self.timeout).await?;
        c.authenticate(self.user, self.password).await?;
        Ok(c)
    }
}

fn err(phase: &str, e: impl std::fmt::Display) -> String {
    format!("{phase}: {e}")
}

/// The rights index query (`XRIGHTS`) for a user who has rights on 100
/// mailboxes (`RIGHTS_MAILBOXES`) among the loaded directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RightsReport {
    /// Rows each query returned.
    pub rows: usize,
    /// Queries timed, one at a time on one connection.
    pub queries: usize,
    /// One `XRIGHTS`, sent to its OK.
    pub latency: Latency,
}

/// Mailboxes shared with the user of the rights phase.
const RIGHTS_MAILBOXES: usize = 100;
/// Queries timed in the rights phase.
const RIGHTS_QUERIES: usize = 500;

/// Share [`RIGHTS_MAILBOXES`] mailboxes with a fresh identifier, time
/// `XRIGHTS` for it, then remove them. `None` on servers without the
/// admin extensions (Cyrus): there is nothing to measure.
async fn rights(ctx: &Ctx<'_>) -> Result<Option<RightsReport>, String> {
    let (mut c, greeting) = ctx.dialer.open(ctx.timeout).await.map_err(|e| err("rights", e))?;
    if !greeting.has("X-MUPDATED-ADMIN") {
        eprintln!("bench: rights: the server has no rights index (no X-MUPDATED-ADMIN); skipped");
        return Ok(None);
    }
    c.authenticate(ctx.user, ctx.password).await.map_err(|e| err("rights", e))?;
    let who = format!("rights{}", ctx.run);
    let names: Vec<String> = (0..RIGHTS_MAILBOXES).map(|i| format!("user.{who}o.f{i:03}")).collect();
    for n in &names {
        let acl = format!("{who}o\tlrswipkxtecdan\t{who}\tlrs\t");
        let cmd = Command::Activate { name: n.clone().into_bytes(), location: b"be00!default".to_vec(), acl: acl.into_bytes() };
        c.run_ok(&cmd).await.map_err(|e| err("rights", e))?;
    }
    let query = Command::Admin { verb: crate::protocol::AdminVerb::Rights, args: vec![who.clone().into_bytes()] };
    let mut samples = Vec::with_capacity(RIGHTS_QUERIES);
    let mut rows = 0;
    for _ in 0..RIGHTS_QUERIES {
        let t0 = Instant::now();
        let data = c.run_ok(&query).await.map_err(|e| err("rights", e))?;
        samples.push(t0.elapsed());
        rows = data.len();
    }
    for n in &names {
        c.run_ok(&Command::Delete { name: n.clone().into_bytes() }).await.map_err(|e| err("rights", e))?;
    }
    c.logout().await;
    if rows != RIGHTS_MAILBOXES {
        return Err(format!("rights: XRIGHTS returned {rows} rows, expected {RIGHTS_MAILBOXES}"));
    }
    Ok(Some(RightsReport { rows, queries: RIGHTS_QUERIES, latency: Latency::of(&mut samples) }))
}

/// Load the generated set over pipelined connections.
async fn load(ctx: &Ctx<'_>, names: &Arc<Vec<(String, String)>>) -> Result<LoadReport, String> {
    let a = ctx.args;
    let mut report = LoadReport {
        mailboxes: names.len(),
        connections: a.load_connections.max(1),
        batch: a.load_batch.max(1),
        ..Default::default()
    };
    if a.skip_load && !names.is_empty() {
        let mut c = ctx.login().await.map_err(|e| err("load", e))?;
        let first = c.find(names[0].0.as_bytes()).await.map_err(|e| err("load", e))?;
        let last = c.find(names[names.len() - 1].0.as_bytes()).await.map_err(|e| err("load", e))?;
        c.logout().await;
        if first.is_some() && last.is_some() {
            report.skipped = true;
            return Ok(report);
        }
    }
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("load", done.clone(), Some(names.len() as u64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..report.connections {
        // A server may serve pipelined connections unfairly (Cyrus's worker
        // threads do): one connection can wait long for its next OK while
        // the others progress. Only a much longer silence is a failure.
        let (mut c, _) = ctx.dialer.open(ctx.timeout * 10).await.map_err(|e| err("load", e))?;
        c.authenticate(ctx.user, ctx.password).await.map_err(|e| err("load", e))?;
        let names = names.clone();
        let done = done.clone();
        let (conns, batch) = (report.connections, report.batch);
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut refused = 0u64;
            let mine: Vec<usize> = (k..names.len()).step_by(conns).collect();
            let mut out = Vec::with_capacity(batch * 96);
            for chunk in mine.chunks(batch) {
                out.clear();
                for &i in chunk {
                    let (name, loc) = &names[i];
                    let cmd = Command::Activate {
                        name: name.as_bytes().to_vec(),
                        location: loc.as_bytes().to_vec(),
                        acl: acl_for(name).into_bytes(),
                    };
                    encode::command(format!("L{i}").as_bytes(), &cmd, true, &mut out);
                }
                c.send_raw(&out).await?;
                let mut answered = 0;
                while answered < chunk.len() {
                    match c.read_response().await? {
                        Response::Tagged { status: Status::Ok, .. } => ok += 1,
                        Response::Tagged { .. } => refused += 1,
                        Response::Bye { text } => {
                            return Err(ClientError::Protocol(format!("BYE {}", String::from_utf8_lossy(&text))))
                        }
                        _ => continue,
                    }
                    answered += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            c.logout().await;
            Ok::<_, ClientError>((ok, refused))
        }));
    }
    for t in tasks {
        let (ok, refused) = t.await.map_err(|e| err("load", e))?.map_err(|e| err("load", e))?;
        report.ok += ok;
        report.refused += refused;
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.mailboxes_per_s = report.ok as f64 / report.seconds.max(1e-9);
    Ok(report)
}

/// FIND random loaded names on `--find-concurrency` connections.
async fn find(ctx: &Ctx<'_>, names: &Arc<Vec<(String, String)>>) -> Result<FindReport, String> {
    let a = ctx.args;
    if names.is_empty() {
        return Err("find: no mailboxes to look for (--mailboxes 0)".into());
    }
    let concurrency = a.find_concurrency.max(1);
    let deadline = Duration::from_secs_f64(a.find_seconds.max(0.1));
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("find", done.clone(), None);
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        clients.push(ctx.login().await.map_err(|e| err("find", e))?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        let names = names.clone();
        let done = done.clone();
        let mut rng = Rng::new(a.seed.wrapping_add(k as u64 * 7919));
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut misses, mut errors) = (Vec::new(), 0u64, 0u64);
            while start.elapsed() < deadline {
                let name = &names[rng.below(names.len())].0;
                let t0 = Instant::now();
                match c.find(name.as_bytes()).await {
                    Ok(found) => {
                        lat.push(t0.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                        if found.is_none() {
                            misses += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            c.logout().await;
            (lat, misses, errors)
        }));
    }
    let mut report = FindReport { concurrency, ..Default::default() };
    let mut lat = Vec::new();
    for t in tasks {
        let (l, m, e) = t.await.map_err(|e| err("find", e))?;
        lat.extend(l);
        report.misses += m;
        report.errors += e;
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.ops = lat.len() as u64;
    report.ops_per_s = report.ops as f64 / report.seconds.max(1e-9);
    report.latency = Latency::of(&mut lat);
    Ok(report)
}

/// Full LIST, then one server's share.
async fn list(ctx: &Ctx<'_>) -> Result<ListReport, String> {
    let a = ctx.args;
    let server = a.list_server.clone().unwrap_or_else(|| server_name(7.min(a.servers.max(1) - 1)));
    let prefix = format!("{server}!");
    let mut c = ctx.login().await.map_err(|e| err("list", e))?;
    // Entries are counted, not parsed: on one machine the client shares the
    // cores with the server, and parsing a million lines would dominate.
    let t0 = Instant::now();
    let (full_entries, status, text) =
        c.run_counting(&Command::List { prefix: None }).await.map_err(|e| err("list", e))?;
    let full_ms = ms(t0.elapsed());
    if status != Status::Ok {
        return Err(format!("list: {status:?} {text}"));
    }
    let t1 = Instant::now();
    let cmd = Command::List { prefix: Some(prefix.clone().into_bytes()) };
    let (prefix_entries, status, text) = c.run_counting(&cmd).await.map_err(|e| err("list", e))?;
    let prefix_ms = ms(t1.elapsed());
    if status != Status::Ok {
        return Err(format!("list: {status:?} {text}"));
    }
    c.logout().await;
    Ok(ListReport { full_ms, full_entries, prefix, prefix_ms, prefix_entries })
}

/// Send UPDATE and read the dump until its tagged OK. Returns the client
/// (now streaming), the entry count and the time.
async fn start_stream(ctx: &Ctx<'_>) -> Result<(Client<Stream>, usize, Duration), ClientError> {
    let mut c = ctx.login().await?;
    let t0 = Instant::now();
    let (entries, status, text) = c.run_counting(&Command::Update { hosts: vec![] }).await?;
    if status != Status::Ok {
        return Err(ClientError::Refused { status, text });
    }
    Ok((c, entries, t0.elapsed()))
}

async fn update(ctx: &Ctx<'_>) -> Result<UpdateReport, String> {
    let (c, entries, took) = start_stream(ctx).await.map_err(|e| err("update", e))?;
    drop(c);
    Ok(UpdateReport { dump_ms: ms(took), entries })
}

/// One backend transaction, as a Cyrus backend makes it: connect, greeting,
/// `AUTHENTICATE "PLAIN" {n+}`, RESERVE, ACTIVATE, then LOGOUT sent without
/// waiting for its answer, and close.
async fn backend_transaction(ctx: &ChurnCtx, name: &str, loc: &str) -> Result<(), ClientError> {
    let (mut c, _) = ctx.dialer.open(ctx.timeout).await?;
    let b64 = plain_base64(&ctx.user, &ctx.password);
    let auth = format!("A01 AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{b64}\r\n", b64.len());
    c.send_raw(auth.as_bytes()).await?;
    expect_ok(&mut c).await?;
    let mut out = Vec::with_capacity(128);
    let (n, l) = (name.as_bytes().to_vec(), loc.as_bytes().to_vec());
    encode::command(b"X0", &Command::Reserve { name: n.clone(), location: l.clone() }, true, &mut out);
    c.send_raw(&out).await?;
    expect_ok(&mut c).await?;
    out.clear();
    encode::command(b"X1", &Command::Activate { name: n, location: l, acl: acl_for(name).into_bytes() }, true, &mut out);
    c.send_raw(&out).await?;
    expect_ok(&mut c).await?;
    c.send_raw(b"Q01 LOGOUT\r\n").await?;
    Ok(())
}

/// Read to the next completion; it must be OK.
async fn expect_ok(c: &mut Client<Stream>) -> Result<(), ClientError> {
    loop {
        match c.read_response().await? {
            Response::Tagged { status: Status::Ok, .. } => return Ok(()),
            Response::Tagged { status, text, .. } => {
                return Err(ClientError::Refused { status, text: String::from_utf8_lossy(&text).into() })
            }
            Response::Bye { text } => {
                return Err(ClientError::Refused { status: Status::No, text: String::from_utf8_lossy(&text).into() })
            }
            _ => {}
        }
    }
}

#[derive(Clone)]
struct ChurnCtx {
    dialer: Dialer,
    user: String,
    password: String,
    timeout: Duration,
}

/// Churn at one concurrency level for `seconds`, on names `user.<tag>NNN`.
async fn churn_level(ctx: &Ctx<'_>, concurrency: usize, seconds: f64, tag: &str) -> ChurnLevel {
    let cc = ChurnCtx {
        dialer: ctx.dialer.clone(),
        user: ctx.user.to_string(),
        password: ctx.password.to_string(),
        // A transaction that waits this long is a stall worth reporting, not a hang.
        timeout: ctx.timeout.min(Duration::from_secs(10)),
    };
    let concurrency = concurrency.max(1);
    let servers = ctx.args.servers.max(1);
    let seq = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let _progress = Progress::start("churn", done.clone(), None);
    let deadline = Duration::from_secs_f64(seconds.max(0.1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (cc, seq, done) = (cc.clone(), seq.clone(), done.clone());
        let prefix = format!("user.{tag}");
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut first_error) = (Vec::new(), 0u64, None);
            while start.elapsed() < deadline {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let name = format!("{prefix}{n:06}");
                let loc = location(n as usize % servers);
                let t0 = Instant::now();
                match backend_transaction(&cc, &name, &loc).await {
                    Ok(()) => {
                        lat.push(t0.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        // Do not spin on a server that refuses everything.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut level = ChurnLevel { concurrency, ..Default::default() };
    let mut lat = Vec::new();
    for t in tasks {
        match t.await {
            Ok((l, e, f)) => {
                lat.extend(l);
                level.errors += e;
                if level.first_error.is_none() {
                    level.first_error = f;
                }
            }
            Err(e) => {
                level.errors += 1;
                level.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    level.seconds = start.elapsed().as_secs_f64();
    level.transactions = lat.len() as u64;
    level.tx_per_s = level.transactions as f64 / level.seconds.max(1e-9);
    level.latency = Latency::of(&mut lat);
    level
}

/// Read stream lines until the MAILBOX line for `name` (and, when
/// `noop_tag` is given, the NOOP's OK). Returns when each arrived.
async fn await_mailbox(
    sub: &mut Client<Stream>,
    name: &[u8],
    noop_tag: Option<&[u8]>,
    wait: Duration,
) -> Result<(Option<Instant>, Option<Instant>), ClientError> {
    let (mut seen, mut noop_ok) = (None, None);
    let end = Instant::now() + wait;
    while seen.is_none() || (noop_tag.is_some() && noop_ok.is_none()) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let r = match tokio::time::timeout(left, sub.read_response()).await {
            Ok(r) => r?,
            Err(_) => break,
        };
        match r {
            Response::Entry { entry: Entry::Mailbox { name: n, .. }, .. } if n == name => seen = Some(Instant::now()),
            Response::Tagged { tag, status, text } if Some(&tag[..]) == noop_tag => {
                if status != Status::Ok {
                    return Err(ClientError::Refused { status, text: String::from_utf8_lossy(&text).into() });
                }
                noop_ok = Some(Instant::now());
            }
            Response::Tagged { status, text, .. } if status != Status::Ok => {
                return Err(ClientError::Refused { status, text: String::from_utf8_lossy(&text).into() })
            }
            Response::Bye { text } => {
                return Err(ClientError::Refused { status: Status::No, text: String::from_utf8_lossy(&text).into() })
            }
            _ => {}
        }
    }
    Ok((seen, noop_ok))
}

async fn propagation(ctx: &Ctx<'_>) -> Result<PropagationReport, String> {
    let a = ctx.args;
    let wait = Duration::from_secs_f64(a.propagation_wait.max(0.1));
    let (mut sub, _, _) = start_stream(ctx).await.map_err(|e| err("propagation", e))?;
    let mut writer = ctx.login().await.map_err(|e| err("propagation", e))?;
    let mut report = PropagationReport::default();
    let mut noop_ok_lat = Vec::new();
    for (mode, with_noop) in [("p", false), ("q", true)] {
        let budget = Duration::from_secs_f64(a.propagation_seconds.max(0.1));
        let start = Instant::now();
        let mut lat = Vec::new();
        let mut lost = 0usize;
        let mut n = 0usize;
        while n < a.propagation_samples && start.elapsed() < budget {
            let name = format!("user.{mode}{}x{n:05}", ctx.run);
            n += 1;
            let cmd = Command::Activate {
                name: name.as_bytes().to_vec(),
                location: location(0).into_bytes(),
                acl: acl_for(&name).into_bytes(),
            };
            writer.run_ok(&cmd).await.map_err(|e| err("propagation", e))?;
            let ok_at = Instant::now();
            let noop_tag =
                if with_noop { Some(sub.send(&Command::Noop).await.map_err(|e| err("propagation", e))?) } else { None };
            let (seen, noop_ok) = await_mailbox(&mut sub, name.as_bytes(), noop_tag.as_deref(), wait)
                .await
                .map_err(|e| err("propagation", e))?;
            match seen {
                Some(t) => lat.push(t.saturating_duration_since(ok_at)),
                None => lost += 1,
            }
            if let Some(t) = noop_ok {
                noop_ok_lat.push(t.saturating_duration_since(ok_at));
            } else if with_noop {
                return Err(format!("propagation: no answer to NOOP within {:.1} s", wait.as_secs_f64()));
            }
        }
        let stats = PropagationStats { samples: lat.len(), lost, latency: Latency::of(&mut lat) };
        eprintln!(
            "  propagation {}: {} samples, {} lost, p50 {:.2} ms",
            if with_noop { "with NOOP" } else { "push" },
            stats.samples,
            stats.lost,
            stats.latency.p50_ms
        );
        if with_noop {
            report.noop = stats;
        } else {
            report.push = stats;
        }
    }
    report.noop_ok = Latency::of(&mut noop_ok_lat);
    writer.logout().await;
    drop(sub);
    Ok(report)
}

/// Connections one after another for `--connect-seconds`, each timed from
/// the TCP connect to the end of its greeting (the TLS handshake included
/// when the bench speaks TLS), then dropped without a command.
async fn connect(ctx: &Ctx<'_>) -> Result<ConnectReport, String> {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(ctx.args.connect_seconds.max(0.0));
    let mut lat = Vec::new();
    loop {
        let t0 = Instant::now();
        let (c, _) = ctx.dialer.open(ctx.timeout).await.map_err(|e| err("connect", e))?;
        lat.push(t0.elapsed());
        drop(c);
        if Instant::now() >= until {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let connections = lat.len() as u64;
    let report = ConnectReport {
        connections,
        seconds,
        per_s: connections as f64 / seconds.max(1e-9),
        latency: Latency::of(&mut lat),
    };
    eprintln!("  connect: {:.0}/s, p50 {:.2} ms", report.per_s, report.latency.p50_ms);
    Ok(report)
}

/// A subscriber that logs in, sends UPDATE and never reads again. Its
/// receive buffer is small so that the server's sends to it back up soon.
async fn stalled_subscriber(ctx: &Ctx<'_>) -> Result<Stream, String> {
    let addr = tokio::net::lookup_host(ctx.server)
        .await
        .map_err(|e| err("stalled", e))?
        .next()
        .ok_or_else(|| err("stalled", "no address"))?;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|e| err("stalled", e))?;
    let _ = socket.set_recv_buffer_size(4096);
    let tcp = tokio::time::timeout(ctx.timeout, socket.connect(addr))
        .await
        .map_err(|_| err("stalled", "connect timed out"))?
        .map_err(|e| err("stalled", e))?;
    let mut stream = ctx.dialer.wrap(tcp, ctx.timeout).await.map_err(|e| err("stalled", e))?;
    let mut framer =
        Framer::new(Limits { max_line: 1 << 20, max_literal: 64 << 20, max_message: 64 << 20 });
    let mut input = BytesMut::with_capacity(4096);
    // Greeting, then the AUTHENTICATE answer.
    let mut greeted = false;
    let b64 = plain_base64(ctx.user, ctx.password);
    loop {
        let msg = loop {
            if !input.is_empty() {
                if let Decoded::Message(n) = framer.decode(&input).map_err(|e| err("stalled", e))? {
                    break input.split_to(n);
                }
            }
            let n = tokio::time::timeout(ctx.timeout, stream.read_buf(&mut input))
                .await
                .map_err(|_| err("stalled", "timed out"))?
                .map_err(|e| err("stalled", e))?;
            if n == 0 {
                return Err(err("stalled", "server closed the connection"));
            }
        };
        match parse::parse_response(&msg).map_err(|e| err("stalled", e))? {
            Response::Greeting { .. } if !greeted => {
                greeted = true;
                let auth = format!("A01 AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{b64}\r\n", b64.len());
                stream.write_all(auth.as_bytes()).await.map_err(|e| err("stalled", e))?;
            }
            Response::Tagged { status: Status::Ok, .. } if greeted => break,
            Response::Tagged { text, .. } | Response::Bye { text } => {
                return Err(err("stalled", String::from_utf8_lossy(&text)))
            }
            _ => {}
        }
    }
    stream.write_all(b"U01 UPDATE\r\n").await.map_err(|e| err("stalled", e))?;
    Ok(stream)
}

async fn stalled(ctx: &Ctx<'_>) -> Result<StalledReport, String> {
    let a = ctx.args;
    let c = a.stalled_concurrency.max(1);
    // Warm up first: a server that has been idle (Cyrus trims its worker
    // threads) is slower for a second or two, which would skew the baseline.
    eprintln!("  stalled: warm-up churn at concurrency {c}");
    churn_level(ctx, c, 1.0, &format!("s{}w", ctx.run)).await;
    eprintln!("  stalled: baseline churn at concurrency {c}");
    let baseline = churn_level(ctx, c, a.stalled_seconds, &format!("s{}a", ctx.run)).await;
    let n = a.stalled_subscribers.max(1);
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(stalled_subscriber(ctx).await?);
    }
    let fill: Vec<String> = (0..(a.stalled_fill_mib * 32)).map(|i| format!("user.s{}f{i:04}", ctx.run)).collect();
    let t_fill = Instant::now();
    let (fill_bytes, fill_error) = match fill_stream(ctx, &fill).await {
        Ok(b) => (b, None),
        Err(e) => {
            eprintln!("  {e}");
            (0, Some(e))
        }
    };
    let fill_seconds = t_fill.elapsed().as_secs_f64();
    eprintln!(
        "  stalled: churn at concurrency {c} with {n} subscribers that never read ({fill_bytes} bytes pushed at each first)"
    );
    let stalled = churn_level(ctx, c, a.stalled_seconds, &format!("s{}b", ctx.run)).await;
    // Still open? A peek that would block means open; 0 bytes means closed.
    let mut open = 0;
    for stream in &streams {
        let mut probe = [0u8; 1];
        open += match tokio::time::timeout(Duration::from_millis(10), stream.tcp().peek(&mut probe)).await {
            Err(_) => 1,
            Ok(Ok(n)) => usize::from(n > 0),
            Ok(Err(_)) => 0,
        };
    }
    drop(streams);
    if let Err(e) = clean_fill(ctx, &fill).await {
        eprintln!("  {e}");
    }
    let ratio_percent = if baseline.tx_per_s > 0.0 { stalled.tx_per_s / baseline.tx_per_s * 100.0 } else { 0.0 };
    let drop_percent = if baseline.tx_per_s > 0.0 { 100.0 - ratio_percent } else { 0.0 };
    Ok(StalledReport {
        concurrency: c,
        subscribers: n,
        baseline,
        stalled,
        ratio_percent,
        drop_percent,
        stalled_connection_open: open == n,
        stalled_connections_open: open,
        fill_bytes,
        fill_seconds,
        fill_error,
    })
}

/// Size of one fill ACL: well under Cyrus's 128 KiB string limit.
const FILL_ACL_BYTES: usize = 32 * 1024;

/// ACTIVATE the fill names with big ACLs (pipelined): every one becomes a
/// 32 KiB MAILBOX line queued for the stalled subscriber. Returns the bytes.
async fn fill_stream(ctx: &Ctx<'_>, names: &[String]) -> Result<u64, String> {
    if names.is_empty() {
        return Ok(0);
    }
    let mut c = ctx.login().await.map_err(|e| err("stalled fill", e))?;
    let mut bytes = 0u64;
    for chunk in names.chunks(32) {
        let mut out = Vec::new();
        for (i, name) in chunk.iter().enumerate() {
            // 64-byte entries: 512 of them, within mupdated's default
            // max_acl_entries (1024) and max_acl_identifier (256).
            let unit = format!("{:x<59}\tlrs\t", &name[5..]);
            let acl = unit.repeat(FILL_ACL_BYTES / unit.len());
            bytes += (name.len() + acl.len() + 32) as u64;
            let cmd = Command::Activate {
                name: name.as_bytes().to_vec(),
                location: location(0).into_bytes(),
                acl: acl.into_bytes(),
            };
            encode::command(format!("F{i}").as_bytes(), &cmd, true, &mut out);
        }
        c.send_raw(&out).await.map_err(|e| err("stalled fill", e))?;
        for _ in chunk {
            expect_ok(&mut c).await.map_err(|e| err("stalled fill", e))?;
        }
    }
    c.logout().await;
    Ok(bytes)
}

/// DELETE the fill names again (the stalled subscriber is gone by now).
async fn clean_fill(ctx: &Ctx<'_>, names: &[String]) -> Result<(), String> {
    if names.is_empty() {
        return Ok(());
    }
    let mut c = ctx.login().await.map_err(|e| err("stalled cleanup", e))?;
    for name in names {
        c.run_ok(&Command::Delete { name: name.as_bytes().to_vec() }).await.map_err(|e| err("stalled cleanup", e))?;
    }
    c.logout().await;
    Ok(())
}

// ---------------------------------------------------------------- driver

/// Run the selected phases and return every figure. Errors of one phase
/// are recorded in `errors` and the others still run; `Err` only when the
/// server cannot be reached or refuses the login.
pub async fn run_report(server: &str, user: &str, password: &str, args: &BenchArgs) -> Result<BenchReport, String> {
    let total = Instant::now();
    let timeout = Duration::from_secs(args.timeout.max(1));
    let dialer = Dialer::new(server, args)?;
    let (mut probe, greeting) =
        dialer.open(timeout).await.map_err(|e| format!("cannot connect to {server}: {e}"))?;
    probe.authenticate(user, password).await.map_err(|e| format!("login as {user} refused: {e}"))?;
    probe.logout().await;

    let transport = dialer.transport().to_string();
    let ctx = Ctx { server, dialer, user, password, args, timeout, run: run_id() };
    let mut report = BenchReport {
        transport,
        server: ServerInfo {
            address: server.to_string(),
            server_name: greeting.server_name,
            implementation: greeting.implementation,
            version: greeting.version,
        },
        phases: RUN_ORDER.iter().copied().filter(|p| args.phases.contains(p)).collect(),
        mailboxes: args.mailboxes,
        servers: args.servers,
        ..Default::default()
    };
    let names = Arc::new(mailbox_set(args.mailboxes, args.servers));
    let mut resources = args.server_pid.map(|pid| Resources { pid, ..Default::default() });

    for phase in report.phases.clone() {
        eprintln!("bench: {} ...", phase.name());
        let cpu0 = args.server_pid.and_then(cpu_seconds);
        let t0 = Instant::now();
        let outcome: Result<(), String> = match phase {
            Phase::Load => load(&ctx, &names).await.map(|r| {
                if let Some(dir) = &args.data_dir {
                    let (bytes, allocated) = dir_bytes(dir);
                    report.disk = Some(DiskReport {
                        dir: dir.display().to_string(),
                        bytes,
                        allocated_bytes: allocated,
                        bytes_per_mailbox: bytes as f64 / names.len().max(1) as f64,
                    });
                }
                report.load = Some(r);
            }),
            Phase::Find => find(&ctx, &names).await.map(|r| report.find = Some(r)),
            Phase::List => list(&ctx).await.map(|r| report.list = Some(r)),
            Phase::Update => update(&ctx).await.map(|r| report.update = Some(r)),
            Phase::Churn => {
                let mut levels = Vec::new();
                for &c in &args.churn_concurrency {
                    let level = churn_level(&ctx, c, args.churn_seconds, &format!("c{}l{c}n", ctx.run)).await;
                    eprintln!(
                        "  churn c={c}: {:.0} tx/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                        level.tx_per_s, level.latency.p50_ms, level.latency.p99_ms, level.errors
                    );
                    levels.push(level);
                }
                report.churn = Some(levels);
                Ok(())
            }
            Phase::Propagation => propagation(&ctx).await.map(|r| report.propagation = Some(r)),
            Phase::Stalled => stalled(&ctx).await.map(|r| report.stalled = Some(r)),
            Phase::Rights => rights(&ctx).await.map(|r| report.rights = r),
            Phase::Connect => connect(&ctx).await.map(|r| report.connect = Some(r)),
        };
        eprintln!("bench: {} done in {:.1} s", phase.name(), t0.elapsed().as_secs_f64());
        if let Err(e) = outcome {
            eprintln!("bench: {e}");
            report.errors.push(e);
        }
        if let (Some(res), Some(c0), Some(c1)) = (resources.as_mut(), cpu0, args.server_pid.and_then(cpu_seconds)) {
            res.cpu_seconds.insert(phase.name().to_string(), ((c1 - c0) * 100.0).round() / 100.0);
        }
    }
    if let Some(res) = resources.as_mut() {
        res.peak_rss_kib = status_kib(res.pid, "VmHWM:").unwrap_or(0);
        res.rss_kib = status_kib(res.pid, "VmRSS:").unwrap_or(0);
    }
    report.resources = resources;
    report.total_seconds = total.elapsed().as_secs_f64();
    Ok(report)
}

/// `mupdatectl bench`: run, then print JSON or a table. Exit 0 when every
/// phase produced its figures, 1 when some failed, 3 when the server
/// cannot be reached.
pub async fn run(server: &str, user: &str, password: &str, args: &BenchArgs) -> ExitCode {
    match run_report(server, user, password, args).await {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("mupdatectl: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", table(&report));
            }
            if report.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("mupdatectl: {e}");
            ExitCode::from(3)
        }
    }
}

/// The human table: one figure a line.
pub fn table(r: &BenchReport) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: String, v: String| rows.push((k, v));
    row("server".into(), format!("{} ({} {}) at {}", r.server.server_name, r.server.implementation, r.server.version, r.server.address));
    if let Some(l) = &r.load {
        if l.skipped {
            row("load".into(), format!("skipped: {} mailboxes already there", l.mailboxes));
        } else {
            row("load mailboxes/s".into(), format!("{:.0} ({} in {:.2} s, {} refused)", l.mailboxes_per_s, l.ok, l.seconds, l.refused));
        }
    }
    if let Some(d) = &r.disk {
        row("disk after load".into(), format!("{} bytes, {:.0} bytes/mailbox", d.bytes, d.bytes_per_mailbox));
    }
    if let Some(f) = &r.find {
        row(format!("find ops/s (c={})", f.concurrency), format!("{:.0}", f.ops_per_s));
        row("find p50 / p99 ms".into(), format!("{:.3} / {:.3}", f.latency.p50_ms, f.latency.p99_ms));
        if f.misses > 0 || f.errors > 0 {
            row("find misses / errors".into(), format!("{} / {}", f.misses, f.errors));
        }
    }
    if let Some(l) = &r.list {
        row("list full".into(), format!("{:.1} ms, {} entries", l.full_ms, l.full_entries));
        row(format!("list \"{}\"", l.prefix), format!("{:.1} ms, {} entries", l.prefix_ms, l.prefix_entries));
    }
    if let Some(u) = &r.update {
        row("update dump".into(), format!("{:.1} ms, {} entries", u.dump_ms, u.entries));
    }
    if let Some(q) = &r.rights {
        row(
            format!("rights of a user ({} mailboxes)", q.rows),
            format!("p50 {:.3} ms, p99 {:.3} ms ({} queries)", q.latency.p50_ms, q.latency.p99_ms, q.queries),
        );
    }
    for c in r.churn.iter().flatten() {
        row(
            format!("churn c={} tx/s", c.concurrency),
            format!("{:.0} (p50 {:.2} ms, p99 {:.2} ms, {} errors)", c.tx_per_s, c.latency.p50_ms, c.latency.p99_ms, c.errors),
        );
    }
    if let Some(p) = &r.propagation {
        for (k, s) in [("propagation push", &p.push), ("propagation with NOOP", &p.noop)] {
            row(
                format!("{k} ms"),
                format!(
                    "p50 {:.2}, p99 {:.2}, max {:.2} ({} samples, {} lost)",
                    s.latency.p50_ms, s.latency.p99_ms, s.latency.max_ms, s.samples, s.lost
                ),
            );
        }
    }
    if let Some(s) = &r.stalled {
        row(
            format!("stalled subscribers {} c={}", s.subscribers, s.concurrency),
            format!(
                "{:.0} -> {:.0} tx/s ({:.1} % of the baseline, {:.1}% drop, {} errors, {} of {} still open)",
                s.baseline.tx_per_s,
                s.stalled.tx_per_s,
                s.ratio_percent,
                s.drop_percent,
                s.stalled.errors,
                s.stalled_connections_open,
                s.subscribers
            ),
        );
    }
    if let Some(res) = &r.resources {
        let cpu: Vec<String> = res.cpu_seconds.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
        row("server cpu s".into(), cpu.join(", "));
        row("server peak rss".into(), format!("{} KiB", res.peak_rss_kib));
    }
    for e in &r.errors {
        row("ERROR".into(), e.clone());
    }
    row("total".into(), format!("{:.1} s", r.total_seconds));
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:<w$}  {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_set_is_cyrus_like_and_deterministic() {
        let set = mailbox_set(10, 4);
        assert_eq!(set.len(), 10);
        assert_eq!(set[0], ("user.u0000000.Sent".to_string(), "be00!default".to_string()));
        assert_eq!(set[2], ("user.u0000000".to_string(), "be00!default".to_string()));
        assert_eq!(set[3], ("user.u0000001".to_string(), "be01!default".to_string()));
        assert_eq!(set, mailbox_set(10, 4));
        let names: std::collections::HashSet<_> = mailbox_set(1000, 20).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 1000);
        assert_eq!(acl_for("user.u0000001.Sent"), "u0000001\tlrswipkxtecdan\t");
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Latency::of(&mut []).max_ms, 0.0);
    }

    #[test]
    fn own_process_resources_read() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(status_kib(pid, "VmHWM:").unwrap_or(0) > 0);
    }

    #[test]
    fn args_parse_with_defaults() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            b: BenchArgs,
        }
        let t = T::parse_from(["t", "--phases", "find,load", "--churn-concurrency", "1,2"]);
        assert_eq!(t.b.phases, vec![Phase::Find, Phase::Load]);
        assert_eq!(t.b.churn_concurrency, vec![1, 2]);
        assert_eq!(t.b.timeout, 30);
        let d = T::parse_from(["t"]);
        assert_eq!(d.b.phases.len(), RUN_ORDER.len());
        assert_eq!(d.b.mailboxes, BenchArgs::default().mailboxes);
    }
}
