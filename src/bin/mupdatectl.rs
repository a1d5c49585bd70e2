//! mupdatectl: the operator's tool for any MUPDATE server.
//!
//! Exit codes: 0 success, 1 the server refused or the answer differs,
//! 2 usage or configuration error, 3 connection or protocol failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mupdated::tools::client::{Client, ClientError};
use mupdated::tools::tls_client::{self, AnyStream, Mode as TlsMode, Options as TlsOptions};
use mupdated::protocol::{AdminVerb, Command, Entry, Response};
use mupdated::tools::replay::{self, Mode};
use mupdated::tools::transcript::{self, Step};

#[derive(Parser, Debug)]
#[command(version, about = "Admin, replay and benchmark tool for MUPDATE servers (mupdated or Cyrus)")]
struct Args {
    /// Server address.
    #[arg(long, short, global = true, default_value = "127.0.0.1:3905", env = "MUPDATE_SERVER")]
    server: String,
    /// Login name.
    #[arg(long, short, global = true, default_value = "mupdater", env = "MUPDATE_USER")]
    user: String,
    /// Password (prefer the environment variable).
    #[arg(long, global = true, env = "MUPDATE_PASSWORD", hide_env_values = true, default_value = "")]
    password: String,
    /// Seconds to wait for any answer.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Implicit TLS: the handshake first (mupdated's `listen_tls`).
    #[arg(long, global = true, conflicts_with = "starttls")]
    tls: bool,
    /// STARTTLS after the banner, then log in inside TLS.
    #[arg(long, global = true)]
    starttls: bool,
    /// Verify the server's certificate against these CAs (PEM) and its
    /// name against the host in --server. Without it the connection is
    /// encrypted but the server is not verified (as Cyrus's client does).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) to present, with --key.
    #[arg(long, global = true, value_name = "FILE", requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "cert")]
    key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// FIND a mailbox: where it lives and its ACL.
    Find { name: String },
    /// LIST the directory, or every record whose location starts with PREFIX (e.g. `be1!`).
    List { prefix: Option<String> },
    /// Make a password_hash (argon2 PHC string) for the configuration; reads the password from stdin.
    HashPassword {
        /// Also print a SCRAM-SHA-256 verifier line (`scram_sha256 = "..."`),
        /// so SCRAM can be offered; the argon2 line keeps PLAIN working.
        #[arg(long)]
        scram: bool,
        /// Also print a SCRAM-SHA-1 verifier line (for `scram_sha1 = true`).
        #[arg(long)]
        scram_sha1: bool,
        /// PBKDF2 iterations of the SCRAM verifiers (4096-65536).
        #[arg(long, default_value_t = 4096)]
        iterations: u32,
    },
    /// Every record of a mailbox (one per server), and which one clients see (mupdated admin extension).
    Records { name: String },
    /// Mailboxes held active by two unrelated servers.
    Conflicts,
    /// Resolve a conflict: make SERVER's record the one clients see.
    Resolve {
        name: String,
        /// The server whose record wins.
        #[arg(value_name = "SERVER")]
        winner: String,
    },
    /// Replica groups and their primaries.
    Groups,
    /// Show a replica group's primary, or set it (failover): frontends are re-routed through their streams.
    Primary {
        group: String,
        /// The new primary.
        #[arg(value_name = "SERVER")]
        primary: Option<String>,
        /// Remove the group's primary.
        #[arg(long, conflicts_with = "primary")]
        clear: bool,
    },
    /// Delete one server's record of a mailbox (LOCATION is `server!partition`; only its server part counts).
    DeleteRecord { name: String, location: String },
    /// Mailboxes on which USER has rights (through USER, `anyone` and the given groups), with the rights.
    Rights {
        #[arg(value_name = "USER")]
        identifier: String,
        /// A group USER belongs to, e.g. `group:staff` (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Play recorded sessions against --server and show where the answers differ.
    ///
    /// A CAPTURE is a transcript (our recording proxy's files, protocol-tests
    /// transcripts) or a tcpdump .pcap/.pcapng file (told apart by its first
    /// bytes). Answers are compared after the normalisation of
    /// docs/transcripts.md unless --exact. When --password (or
    /// MUPDATE_PASSWORD) is set, every AUTHENTICATE PLAIN in the capture is
    /// rewritten to --user/--password. Exit 0: all matched; 1: an answer
    /// differed; 3: a capture could not be read or the server not reached.
    Replay {
        #[arg(required = true)]
        captures: Vec<std::path::PathBuf>,
        /// Compare byte for byte.
        #[arg(long)]
        exact: bool,
        /// Server port in packet captures (else the side that greets with `* OK MUPDATE`).
        #[arg(long, default_value_t = mupdated::tools::pcap::MUPDATE_PORT)]
        port: u16,
        /// Milliseconds to wait for each expected answer.
        #[arg(long, default_value_t = 5000)]
        wait_ms: u64,
        /// Print each capture as a transcript instead of playing it.
        #[arg(long)]
        dump: bool,
    },
    /// Record sessions: listen, forward each connection to --upstream and
    /// write one transcript per connection into --out, until Ctrl-C.
    Record {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Check a stopped server's data directory (offline): every value decodes, the indexes and the
    /// integrity summaries agree with the records, the clean-stop seal matches. Exit 0: clean;
    /// 1: damaged (what is wrong and what to do on stderr); 2: not a data directory; 3: cannot open it.
    Verify {
        #[arg(long, value_name = "DIR")]
        data_dir: std::path::PathBuf,
    },
    /// Write every readable record of a stopped server's data directory as JSON lines (stdout or --out);
    /// what cannot be read is skipped and listed on stderr (exit 1 then).
    Export {
        #[arg(long, value_name = "DIR")]
        data_dir: std::path::PathBuf,
        /// Output format (only jsonl).
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Build a new data directory from an export or a backup, or from Cyrus's `ctl_mboxlist -d`
    /// (offline; DIR must not exist or be empty; nothing is left behind on error).
    Import {
        #[arg(long, value_name = "DIR")]
        data_dir: std::path::PathBuf,
        /// The JSON lines (`mupdatectl export`, or BACKUP/backup.jsonl); `-` reads stdin.
        #[arg(required_unless_present = "from_cyrus_dump", conflicts_with = "from_cyrus_dump")]
        file: Option<std::path::PathBuf>,
        /// Read the output of Cyrus 3.6's `ctl_mboxlist -d` (taken on the mupdate master) instead;
        /// `-` reads stdin.
        #[arg(long, value_name = "FILE")]
        from_cyrus_dump: Option<std::path::PathBuf>,
        /// With --from-cyrus-dump of a backend's dump (its entries name no server): that backend's
        /// servername.
        #[arg(long = "server-name", value_name = "NAME", requires = "from_cyrus_dump")]
        server_name: Option<String>,
        /// Create the database uncompressed (for a configuration with `compression = false`).
        #[arg(long)]
        uncompressed: bool,
    },
    /// Drop and rebuild the index by server, the rights index, the conflict list and the integrity
    /// summaries of a stopped server's data directory from its records, then seal it as it now is.
    RebuildIndexes {
        #[arg(long, value_name = "DIR")]
        data_dir: std::path::PathBuf,
        /// Remove mailbox values that do not decode (export what is readable first).
        #[arg(long)]
        drop_undecodable: bool,
    },
    /// Copy the running server's whole directory as of one moment (XEXPORT) into DIR/backup.jsonl,
    /// while it keeps serving. Restore: `mupdatectl import --data-dir NEWDIR DIR/backup.jsonl`.
    Backup {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// Benchmark the server: backend churn, bulk load, FIND, LIST, UPDATE, propagation, stalled subscriber.
    Bench(Box<mupdated::tools::bench::BenchArgs>),
}

/// Run an admin extension and return its data lines' fields.
async fn admin(args: &Args, verb: AdminVerb, params: Vec<&str>) -> Result<Vec<Vec<String>>, ClientError> {
    let mut c = connect(args).await?;
    let cmd = Command::Admin { verb, args: params.iter().map(|p| p.as_bytes().to_vec()).collect() };
    let data = c.run_ok(&cmd).await?;
    c.logout().await;
    Ok(data
        .into_iter()
        .filter_map(|r| match r {
            Response::Data { fields, .. } => {
                Some(fields.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect())
            }
            _ => None,
        })
        .collect())
}

/// Print admin rows as JSON objects with these keys (the last key takes
/// the remaining fields as a list when `rest` is set) or as text.
fn print_rows(args: &Args, rows: &[Vec<String>], keys: &[&str], rest: bool) {
    if args.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut o = serde_json::Map::new();
                for (i, k) in keys.iter().enumerate() {
                    if rest && i == keys.len() - 1 {
                        o.insert(k.to_string(), serde_json::json!(r.get(i..).unwrap_or(&[]).to_vec()));
                    } else {
                        o.insert(k.to_string(), serde_json::json!(r.get(i).cloned().unwrap_or_default()));
                    }
                }
                serde_json::Value::Object(o)
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        for r in rows {
            let fields: Vec<String> = r.iter().map(|f| mupdated::tools::transcript::escape(f.as_bytes())).collect();
            println!("{}", fields.join("\t"));
        }
    }
}

async fn run_admin(args: &Args) -> Option<ExitCode> {
    let (verb, params, keys, rest): (AdminVerb, Vec<&str>, &[&str], bool) = match &args.command {
        Cmd::Records { name } => (AdminVerb::Records, vec![name], &["name", "location", "state", "acl", "role"], false),
        Cmd::Conflicts => (AdminVerb::Conflicts, vec![], &["name", "effective", "others"], true),
        Cmd::Resolve { name, winner } => (AdminVerb::Resolve, vec![name, winner], &[], false),
        Cmd::Groups => (AdminVerb::Groups, vec![], &["group", "primary", "servers"], true),
        Cmd::Primary { group, primary, clear } => match (primary, clear) {
            (Some(s), _) => (AdminVerb::Primary, vec![group, s], &[], false),
            (None, true) => (AdminVerb::Primary, vec![group, ""], &[], false),
            (None, false) => (AdminVerb::Primary, vec![group], &["group", "primary"], false),
        },
        Cmd::DeleteRecord { name, location } => (AdminVerb::DeleteRecord, vec![name, location], &[], false),
        Cmd::Rights { identifier, groups } => {
            let mut p = vec![identifier.as_str()];
            p.extend(groups.iter().map(String::as_str));
            (AdminVerb::Rights, p, &["name", "rights"], false)
        }
        _ => return None,
    };
    Some(match admin(args, verb, params).await {
        Ok(rows) => {
            if keys.is_empty() {
                if args.json {
                    println!("{}", serde_json::json!({"ok": true}));
                }
            } else {
                print_rows(args, &rows, keys, rest);
            }
            if matches!(args.command, Cmd::Records { .. }) && rows.is_empty() {
                if !args.json {
                    eprintln!("mupdatectl: no such mailbox");
                }
                return Some(ExitCode::from(1));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    })
}

fn entry_json(e: &Entry) -> serde_json::Value {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match e {
        Entry::Mailbox { name, location, acl } => {
            serde_json::json!({"kind": "mailbox", "name": s(name), "location": s(location), "acl": s(acl)})
        }
        Entry::Reserve { name, location } => serde_json::json!({"kind": "reserve", "name": s(name), "location": s(location)}),
    }
}

fn entry_text(e: &Entry) -> String {
    let s = |b: &[u8]| mupdated::tools::transcript::escape(b);
    match e {
        Entry::Mailbox { name, location, acl } => format!("MAILBOX {} {} {}", s(name), s(location), s(acl)),
        Entry::Reserve { name, location } => format!("RESERVE {} {}", s(name), s(location)),
    }
}

async fn connect(args: &Args) -> Result<Client<AnyStream>, ClientError> {
    let mode = match (args.tls, args.starttls) {
        (true, _) => Some(TlsMode::Implicit),
        (false, true) => Some(TlsMode::Starttls),
        (false, false) => None,
    };
    let options = TlsOptions { ca: args.ca.clone(), cert: args.cert.clone(), key: args.key.clone() };
    let (mut c, greeting) =
        tls_client::connect_any(&args.server, Duration::from_secs(args.timeout), mode, &options).await?;
    // SCRAM when offered (the password never crosses the wire), else PLAIN.
    c.login(&greeting, &args.user, &args.password).await?;
    Ok(c)
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("mupdatectl: {e}");
    match e {
        ClientError::Refused { .. } => ExitCode::from(1),
        _ => ExitCode::from(3),
    }
}

/// One capture file as transcript steps, and its transcript text.
fn load_capture(path: &std::path::Path, port: u16) -> Result<(Vec<Step>, String), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    if mupdated::tools::pcap::is_capture(&data) {
        let capture = mupdated::tools::pcap::read(&data, port).map_err(|e| e.to_string())?;
        if capture.connections.is_empty() {
            return Err(format!(
                "no MUPDATE connection (port {port} or a `* OK MUPDATE` greeting) among {} TCP connections",
                capture.skipped_connections
            ));
        }
        for c in capture.connections.iter().filter(|c| c.missing_bytes > 0) {
            eprintln!("mupdatectl: {}: @{}: {} bytes were not captured", path.display(), c.name, c.missing_bytes);
        }
        Ok((capture.steps(), capture.to_transcript()))
    } else {
        let text = String::from_utf8(data).map_err(|_| "neither a packet capture nor a UTF-8 transcript".to_string())?;
        let steps = transcript::parse(&text).map_err(|e| e.to_string())?;
        Ok((steps, text))
    }
}

/// `mupdatectl replay`: exit 0 all matched, 1 some answer differs, 3 unreadable/unreachable.
async fn replay_captures(args: &Args, captures: &[std::path::PathBuf], mode: Mode, port: u16, wait: Duration, dump: bool) -> ExitCode {
    let mut worst = 0u8;
    let mut json = Vec::new();
    for path in captures {
        let name = path.display().to_string();
        let (mut steps, text) = match load_capture(path, port) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mupdatectl: {name}: {e}");
                worst = 3;
                continue;
            }
        };
        if dump {
            print!("{text}");
            continue;
        }
        if !args.password.is_empty() {
            replay::substitute_plain_credentials(&mut steps, &args.user, &args.password);
        }
        let report = if args.tls {
            let options = TlsOptions { ca: args.ca.clone(), cert: args.cert.clone(), key: args.key.clone() };
            replay::play_tls(&args.server, &steps, mode, mupdated::session::VERSION, wait, &options).await
        } else {
            replay::play(&args.server, &steps, mode, mupdated::session::VERSION, wait).await
        };
        let mut conns: Vec<&str> = Vec::new();
        for s in &steps {
            if let Step::Send { conn, .. } | Step::Expect { conn, .. } | Step::Close { conn } | Step::Eof { conn } = s {
                if !conns.contains(&conn.as_str()) {
                    conns.push(conn);
                }
            }
        }
        let code = if report.unreachable() {
            3
        } else if report.matched() {
            0
        } else {
            1
        };
        worst = worst.max(code);
        if args.json {
            let diffs: Vec<_> = report
                .differences
                .iter()
                .map(|d| serde_json::json!({"step": d.step + 1, "conn": d.conn, "expected": d.expected, "actual": d.actual}))
                .collect();
            json.push(serde_json::json!({"capture": name, "steps": report.steps, "matched": report.matched(), "differences": diffs}));
            continue;
        }
        let verdict = match code {
            0 => "matched",
            1 => "differs",
            _ => "server not reached",
        };
        println!("{name}: {verdict} ({} steps, {} connections)", report.steps, conns.len());
        for conn in conns {
            let n = report.differences.iter().filter(|d| d.conn == conn).count();
            if n > 0 {
                println!("  @{conn}: {n} differences");
            }
        }
        if !report.matched() {
            for l in report.render().lines() {
                println!("    {l}");
            }
        }
    }
    if args.json && !dump {
        println!("{}", serde_json::Value::Array(json));
    }
    ExitCode::from(worst)
}

/// `mupdatectl record`: the recording proxy until Ctrl-C.
async fn record(listen: std::net::SocketAddr, upstream: &str, out: &std::path::Path) -> ExitCode {
    eprintln!("mupdatectl: recording {listen} -> {upstream} into {}; Ctrl-C stops", out.display());
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match mupdated::tools::record::run_proxy(listen, upstream.to_string(), out.to_path_buf(), stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mupdatectl: record: {e}");
            ExitCode::from(3)
        }
    }
}

/// An offline tool's failure to open a directory, as an exit code.
fn open_failed(e: mupdated::store::verify::OpenError) -> ExitCode {
    use mupdated::store::verify::{OpenError, WHAT_TO_DO};
    match e {
        OpenError::NotADirectory(m) => {
            eprintln!("mupdatectl: {m}");
            ExitCode::from(2)
        }
        OpenError::Unavailable(m) => {
            eprintln!("mupdatectl: {m}");
            ExitCode::from(3)
        }
        OpenError::Damaged(m) => {
            eprintln!("mupdatectl: the directory is damaged: {m}\n{WHAT_TO_DO}");
            ExitCode::from(1)
        }
    }
}

/// `mupdatectl verify`, `export`, `import`, `rebuild-indexes`: offline.
fn run_offline(args: &Args) -> Option<ExitCode> {
    use mupdated::store::{export, verify};
    Some(match &args.command {
        Cmd::Verify { data_dir } => {
            let start = std::time::Instant::now();
            let db = match verify::open_offline(data_dir) {
                Ok(db) => db,
                Err(e) => return Some(open_failed(e)),
            };
            let report = match verify::quietly(|| {
                verify::full_check(&db, data_dir, |n| eprintln!("mupdatectl: {n} keys read"))
            }) {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => verify::Report {
                    problems: vec![format!("the database failed while reading: {e}")],
                    ..Default::default()
                },
                Err(e) => verify::Report {
                    problems: vec![e],
                    ..Default::default()
                },
            };
            let secs = start.elapsed().as_secs_f64();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"clean": report.is_clean(), "mailboxes": report.mailboxes, "records": report.records,
                        "problems": report.problems, "notes": report.notes, "seconds": secs})
                );
            } else {
                println!(
                    "{}: {} mailboxes, {} records, checked in {secs:.2} s",
                    data_dir.display(),
                    report.mailboxes,
                    report.records
                );
                for n in &report.notes {
                    println!("note: {n}");
                }
            }
            if report.is_clean() {
                if !args.json {
                    println!("clean");
                }
                ExitCode::SUCCESS
            } else {
                eprintln!("mupdatectl: the directory is damaged:");
                for p in &report.problems {
                    eprintln!("  - {p}");
                }
                eprintln!("{}", verify::WHAT_TO_DO);
                ExitCode::from(1)
            }
        }
        Cmd::Export { data_dir, out, .. } => {
            let db = match verify::open_offline(data_dir) {
                Ok(db) => db,
                Err(e) => return Some(open_failed(e)),
            };
            let mut w: Box<dyn std::io::Write> = match out {
                Some(p) => match std::fs::File::create(p) {
                    Ok(f) => Box::new(std::io::BufWriter::new(f)),
                    Err(e) => {
                        eprintln!("mupdatectl: cannot create {}: {e}", p.display());
                        return Some(ExitCode::from(2));
                    }
                },
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let r = verify::quietly(|| {
                export::export(&db, &mut w, |n| {
                    eprintln!("mupdatectl: {n} mailboxes exported")
                })
            });
            match r {
                Ok(Ok(r)) => {
                    eprintln!(
                        "mupdatectl: exported {} mailboxes and {} replica groups",
                        r.mailboxes, r.groups
                    );
                    if r.skipped.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!(
                            "mupdatectl: {} could not be read and were skipped:",
                            r.skipped.len()
                        );
                        for s in &r.skipped {
                            eprintln!("  - {s}");
                        }
                        ExitCode::from(1)
                    }
                }
                Ok(Err(e)) | Err(e) => {
                    eprintln!("mupdatectl: export: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Import { data_dir, from_cyrus_dump: Some(dump), server_name, uncompressed, .. } => {
            import_cyrus_dump(data_dir, dump, server_name.as_deref(), !uncompressed, args.json)
        }
        Cmd::Import { server_name: Some(_), .. } => {
            eprintln!("mupdatectl: --server-name goes with --from-cyrus-dump (an export names its servers)");
            ExitCode::from(2)
        }
        Cmd::Import {
            data_dir,
            file: Some(file),
            uncompressed,
            ..
        } => {
            let f = match open_input(file) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("mupdatectl: cannot open {}: {e}", file.display());
                    return Some(ExitCode::from(2));
                }
            };
            let size = std::fs::metadata(file).ok().filter(|m| m.is_file()).map(|m| m.len());
            match export::import(data_dir, Progress::new(f, size), !uncompressed) {
                Ok(r) => {
                    eprintln!(
                        "mupdatectl: imported {} mailboxes and {} replica groups into {}",
                        r.mailboxes,
                        r.groups,
                        data_dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "mupdatectl: import: {}: {e}; nothing was imported",
                        file.display()
                    );
                    ExitCode::from(1)
                }
            }
        }
        Cmd::RebuildIndexes {
            data_dir,
            drop_undecodable,
        } => {
            let db = match verify::open_offline(data_dir) {
                Ok(db) => db,
                Err(e) => return Some(open_failed(e)),
            };
            match verify::quietly(|| verify::rebuild(&db, data_dir, *drop_undecodable))
                .and_then(|r| r)
            {
                Ok(r) => {
                    for d in &r.dropped {
                        eprintln!("mupdatectl: removed undecodable {d}");
                    }
                    eprintln!("mupdatectl: rebuilt {} index entries of {} mailboxes; the directory is sealed as it is now", r.index_entries, r.mailboxes);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mupdatectl: rebuild-indexes: {e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => return None,
    })
}

/// A file to read, or stdin for `-`.
fn open_input(path: &std::path::Path) -> std::io::Result<Box<dyn std::io::BufRead>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())))
    } else {
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?)))
    }
}

/// An input that reports on stderr, at most once a second, how much of it
/// was read (the jsonl import's progress, whatever reads it).
struct Progress<R> {
    inner: R,
    read: u64,
    size: Option<u64>,
    last: std::time::Instant,
    unchecked: u64,
}

impl<R> Progress<R> {
    fn new(inner: R, size: Option<u64>) -> Progress<R> {
        Progress { inner, read: 0, size, last: std::time::Instant::now(), unchecked: 0 }
    }

    fn advance(&mut self, n: usize) {
        self.read += n as u64;
        self.unchecked += n as u64;
        // The clock is read once per 64 KiB, not per line.
        if self.unchecked >= 1 << 16 {
            self.unchecked = 0;
            if self.last.elapsed() >= Duration::from_secs(1) {
                self.last = std::time::Instant::now();
                let mib = |b: u64| b as f64 / (1 << 20) as f64;
                match self.size {
                    Some(t) if t > 0 => eprintln!(
                        "mupdatectl: read {:.0} of {:.0} MiB ({:.0}%)",
                        mib(self.read),
                        mib(t),
                        100.0 * self.read as f64 / t as f64
                    ),
                    _ => eprintln!("mupdatectl: read {:.0} MiB", mib(self.read)),
                }
            }
        }
    }
}

impl<R: std::io::Read> std::io::Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.advance(n);
        Ok(n)
    }
}

impl<R: std::io::BufRead> std::io::BufRead for Progress<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.advance(amt);
    }
}

/// `mupdatectl import --from-cyrus-dump FILE`: progress at most once a
/// second, a summary at the end (also as JSON on stdout with `--json`).
fn import_cyrus_dump(
    data_dir: &std::path::Path,
    dump: &std::path::Path,
    server: Option<&str>,
    compression: bool,
    json: bool,
) -> ExitCode {
    use mupdated::store::export;
    let input = match open_input(dump) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mupdatectl: cannot open {}: {e}", dump.display());
            return ExitCode::from(2);
        }
    };
    let start = std::time::Instant::now();
    let mut last = start;
    let progress = |r: &export::CyrusImported| {
        if last.elapsed() >= Duration::from_secs(1) {
            last = std::time::Instant::now();
            eprintln!("mupdatectl: line {}: {} mailboxes so far", r.lines, r.mailboxes);
        }
    };
    let server = server.map(|s| s.as_bytes().to_vec());
    match export::import_cyrus_dump(data_dir, input, server, compression, progress) {
        Ok(r) => {
            eprintln!(
                "mupdatectl: imported {} mailboxes ({} records: {} active, {} reserved) from {} lines into {} in {:.1} s",
                r.mailboxes,
                r.mailboxes,
                r.mailboxes - r.reserved,
                r.reserved,
                r.lines,
                data_dir.display(),
                start.elapsed().as_secs_f64()
            );
            eprintln!(
                "mupdatectl: skipped {} entries: {} deleted (tombstones), {} intermediate",
                r.tombstones + r.intermediates,
                r.tombstones,
                r.intermediates
            );
            if json {
                println!(
                    "{}",
                    serde_json::json!({"mailboxes": r.mailboxes, "records": r.mailboxes, "active": r.mailboxes - r.reserved,
                        "reserved": r.reserved, "lines": r.lines,
                        "skipped": {"tombstones": r.tombstones, "intermediates": r.intermediates},
                        "seconds": start.elapsed().as_secs_f64()})
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mupdatectl: import: {}: {e}; nothing was imported", dump.display());
            ExitCode::from(1)
        }
    }
}

/// `mupdatectl backup DIR`: XEXPORT into DIR/backup.jsonl (through a
/// temporary file, fsynced, then renamed).
async fn backup(args: &Args, dir: &std::path::Path) -> ExitCode {
    use std::io::Write;
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("mupdatectl: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let (path, tmp) = (dir.join("backup.jsonl"), dir.join("backup.jsonl.tmp"));
    let mut out = match std::fs::File::create(&tmp) {
        Ok(f) => std::io::BufWriter::new(f),
        Err(e) => {
            eprintln!("mupdatectl: cannot create {}: {e}", tmp.display());
            return ExitCode::from(2);
        }
    };
    let mut c = match connect(args).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let result: Result<u64, String> = async {
        let tag = c
            .send(&Command::Admin {
                verb: AdminVerb::Export,
                args: vec![],
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut lines = 0u64;
        loop {
            match c.read_response().await.map_err(|e| e.to_string())? {
                Response::Data {
                    tag: t,
                    keyword: "EXPORT",
                    fields,
                } if t == tag => {
                    let line = fields.into_iter().next().unwrap_or_default();
                    out.write_all(&line)
                        .and_then(|_| out.write_all(b"\n"))
                        .map_err(|e| format!("cannot write: {e}"))?;
                    lines += 1;
                    if lines.is_multiple_of(100_000) {
                        eprintln!("mupdatectl: {lines} lines");
                    }
                }
                Response::Tagged {
                    tag: t,
                    status: mupdated::protocol::Status::Ok,
                    ..
                } if t == tag => return Ok(lines),
                Response::Tagged { tag: t, text, .. } if t == tag => {
                    return Err(format!(
                        "the server refused: {}",
                        String::from_utf8_lossy(&text)
                    ))
                }
                _ => {}
            }
        }
    }
    .await;
    c.logout().await;
    let done = result.and_then(|lines| {
        let f = out.into_inner().map_err(|e| format!("cannot write: {e}"))?;
        f.sync_all().map_err(|e| format!("cannot fsync: {e}"))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot rename: {e}"))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot fsync {}: {e}", dir.display()))?;
        Ok(lines)
    });
    match done {
        Ok(lines) => {
            eprintln!("mupdatectl: backup of {} lines in {}; restore with `mupdatectl import --data-dir NEWDIR {}`", lines, path.display(), path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("mupdatectl: backup: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(args: Args) -> ExitCode {
    if let Some(code) = run_offline(&args) {
        return code;
    }
    if let Some(code) = run_admin(&args).await {
        return code;
    }
    match &args.command {
        Cmd::Backup { dir } => backup(&args, dir).await,
        Cmd::Replay { captures, exact, port, wait_ms, dump } => {
            let mode = if *exact { Mode::Exact } else { Mode::Normalized };
            replay_captures(&args, captures, mode, *port, Duration::from_millis(*wait_ms), *dump).await
        }
        Cmd::Record { listen, upstream, out } => record(*listen, upstream, out).await,
        Cmd::Bench(bench) => {
            let bench = mupdated::tools::bench::BenchArgs {
                json: args.json,
                timeout: args.timeout,
                tls: args.tls,
                starttls: args.starttls,
                tls_options: TlsOptions { ca: args.ca.clone(), cert: args.cert.clone(), key: args.key.clone() },
                ..(**bench).clone()
            };
            mupdated::tools::bench::run(&args.server, &args.user, &args.password, &bench).await
        }
        Cmd::HashPassword { scram, scram_sha1, iterations } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("mupdatectl: cannot read the password from stdin");
                return ExitCode::from(2);
            }
            let pw = line.trim_end_matches(['\r', '\n']);
            if pw.is_empty() {
                eprintln!("mupdatectl: empty password");
                return ExitCode::from(2);
            }
            if let Err(e) = mupdated::auth::scram::check_iterations(*iterations) {
                eprintln!("mupdatectl: {e}");
                return ExitCode::from(2);
            }
            match mupdated::auth::hash_password(pw) {
                Ok(h) if *scram || *scram_sha1 => {
                    // Ready to paste into a [[users]] entry.
                    use mupdated::auth::scram::{ScramHash, Verifier};
                    if *scram {
                        let v = Verifier::generate(ScramHash::Sha256, pw.as_bytes(), *iterations);
                        println!("scram_sha256 = \"{}\"", v.encode());
                    }
                    if *scram_sha1 {
                        let v = Verifier::generate(ScramHash::Sha1, pw.as_bytes(), *iterations);
                        println!("scram_sha1 = \"{}\"", v.encode());
                    }
                    println!("password_hash = \"{h}\"");
                    ExitCode::SUCCESS
                }
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mupdatectl: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Find { name } => {
            let mut c = match connect(&args).await {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match c.find(name.as_bytes()).await {
                Ok(found) => {
                    c.logout().await;
                    if args.json {
                        println!("{}", found.as_ref().map(entry_json).unwrap_or(serde_json::Value::Null));
                    } else if let Some(e) = &found {
                        println!("{}", entry_text(e));
                    }
                    if found.is_some() {
                        ExitCode::SUCCESS
                    } else {
                        if !args.json {
                            eprintln!("mupdatectl: {name}: not found");
                        }
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(e),
            }
        }
        Cmd::Records { .. }
        | Cmd::Conflicts
        | Cmd::Resolve { .. }
        | Cmd::Groups
        | Cmd::Primary { .. }
        | Cmd::DeleteRecord { .. }
        | Cmd::Rights { .. }
        | Cmd::Verify { .. }
        | Cmd::Export { .. }
        | Cmd::Import { .. }
        | Cmd::RebuildIndexes { .. } => ExitCode::from(2),
        Cmd::List { prefix } => {
            let mut c = match connect(&args).await {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match c.list(prefix.as_deref().map(str::as_bytes)).await {
                Ok(entries) => {
                    c.logout().await;
                    if args.json {
                        let v: Vec<_> = entries.iter().map(entry_json).collect();
                        println!("{}", serde_json::Value::Array(v));
                    } else {
                        for e in &entries {
                            println!("{}", entry_text(e));
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("mupdatectl: {e}");
            ExitCode::FAILURE
        }
    }
}
