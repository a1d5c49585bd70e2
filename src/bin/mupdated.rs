//! The mupdated daemon.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mupdated::config::Config;
use mupdated::net::{inherit, Server};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// A MUPDATE (RFC 3656) master for Cyrus IMAP murders: backends tell it
/// where each mailbox lives, frontends stream the directory from it.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Configuration file (TOML; see README for every key).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Listen on this address instead of the file's `listen` (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Keep the database in this folder instead of the file's `data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `mupdated=debug`);
    /// the RUST_LOG environment variable is used when this is absent.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
    /// Append the log to this file instead of standard error (Cyrus's
    /// master sends its services' standard error to /dev/null).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Serve the listening socket Cyrus's `master` passes to a cyrus.conf
    /// SERVICES entry (descriptor 4, status pipe 3). Arguments Cyrus's
    /// services take (`-C FILE`, `-U N`, `-T N`, `-D`, `-X`, `-m`, any other)
    /// are ignored with this flag.
    #[arg(long)]
    inherit_cyrus: bool,
}

/// Our own options that take a value (the next argument unless `=` joins it).
const VALUE_OPTIONS: [&str; 6] = ["-c", "--config", "--listen", "--data-dir", "--log", "--log-file"];
/// Our own options without a value.
const FLAG_OPTIONS: [&str; 5] = ["--inherit-cyrus", "-h", "--help", "-V", "--version"];
/// Cyrus service options that take a value (master/service.c `getopt` "C:U:T:").
const CYRUS_VALUE_OPTIONS: [&str; 3] = ["-C", "-U", "-T"];

/// Under `--inherit-cyrus`, keep only our own arguments: a cyrus.conf
/// `cmd=` line may carry Cyrus's (`-C /etc/imapd.conf`, `-m`). Returns the
/// arguments kept and those dropped.
fn without_cyrus_args(raw: Vec<OsString>) -> (Vec<OsString>, Vec<OsString>) {
    let mut kept = Vec::with_capacity(raw.len());
    let mut dropped = Vec::new();
    let mut it = raw.into_iter();
    kept.extend(it.next());
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        let name = s.split('=').next().unwrap_or("");
        if VALUE_OPTIONS.contains(&s.as_ref()) {
            kept.push(a);
            kept.extend(it.next());
        } else if FLAG_OPTIONS.contains(&s.as_ref())
            || (s.starts_with("--") && VALUE_OPTIONS.contains(&name))
            || (s.starts_with("-c") && !s.starts_with("--"))
        {
            kept.push(a);
        } else if CYRUS_VALUE_OPTIONS.contains(&s.as_ref()) {
            dropped.push(a);
            dropped.extend(it.next());
        } else {
            dropped.push(a);
        }
    }
    (kept, dropped)
}

fn main() -> ExitCode {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let (argv, ignored) = if raw.iter().any(|a| a == "--inherit-cyrus") {
        without_cyrus_args(raw)
    } else {
        (raw, Vec::new())
    };
    let args = Args::parse_from(argv);
    let filter = match &args.log {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    // Every field value goes through one escaping step, so that nothing a
    // peer sends (a name with a line feed, a terminal escape) can forge a
    // line, whichever call site logged it.
    use tracing_subscriber::field::MakeExt;
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = mupdated::net::log::escape_str(&format!("{value:?}"));
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ");
    let (writer, ansi) = match &args.log_file {
        None => (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal()),
        Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => (BoxMakeWriter::new(std::sync::Mutex::new(f)), false),
            Err(e) => {
                eprintln!("mupdated: cannot open the log file {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    tracing_subscriber::fmt().fmt_fields(fields).with_env_filter(filter).with_ansi(ansi).with_writer(writer).init();
    // A failure to start goes to standard error, and to the log file too.
    let to_file = args.log_file.is_some();
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("mupdated: {e}");
        if to_file {
            tracing::error!("{e}");
        }
    };
    // Sockets handed over at exec are taken before any thread starts (the
    // environment is read and cleared).
    let inherited = if args.inherit_cyrus {
        inherit::from_cyrus_master().map(Some)
    } else {
        inherit::from_systemd()
    };
    let inherited = match inherited {
        Ok(i) => i,
        Err(e) => {
            fail(&e);
            return ExitCode::FAILURE;
        }
    };
    if !ignored.is_empty() {
        let ignored: Vec<String> = ignored.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        tracing::info!(arguments = %ignored.join(" "), "--inherit-cyrus: ignoring Cyrus's arguments");
    }

    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            fail(&e);
            return ExitCode::from(2);
        }
    };
    if !args.listen.is_empty() {
        config.listen = Some(args.listen);
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            fail(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Listen first: connections that arrive while the store opens
        // (sled's recovery after a crash takes seconds) wait for their
        // greeting instead of being refused.
        let server = match Server::listen_with(config, inherited.into_iter().collect()) {
            Ok(s) => s,
            Err(e) => {
                fail(&e);
                return ExitCode::FAILURE;
            }
        };
        if let Some(tls) = server.tls() {
            tokio::spawn(reload_on_hangup(tls));
        }
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ mupdated::net::ServerError::Store { .. }) if args.inherit_cyrus => {
                // `listen=3905` makes master open one socket per address
                // family (ipv4, ipv6) and start a process for each; only
                // one can hold the directory.
                fail(&format!(
                    "{e} (is another mupdated serving this data_dir? With listen=PORT, Cyrus's master starts one \
                     process per address family: give the SERVICES entry one address, e.g. listen=\"0.0.0.0:3905\")"
                ));
                ExitCode::FAILURE
            }
            Err(e) => {
                fail(&e);
                ExitCode::FAILURE
            }
        }
    })
}

/// On every SIGHUP, re-read the TLS certificates and keys; a bad file
/// keeps the ones in use.
async fn reload_on_hangup(tls: std::sync::Arc<mupdated::net::tls::Tls>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot catch SIGHUP: TLS certificates will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificates and keys reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed, keeping the certificates in use"),
        }
    }
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn cyrus_arguments_are_dropped_and_ours_kept() {
        let (kept, dropped) = without_cyrus_args(args(&[
            "/usr/sbin/mupdated",
            "-C",
            "/etc/imapd.conf",
            "--config",
            "/etc/mupdated.toml",
            "-U",
            "30",
            "--inherit-cyrus",
            "-m",
            "-D",
            "--log=debug",
            "--log-file",
            "/var/log/m.log",
            "stray",
        ]));
        let want = [
            "/usr/sbin/mupdated",
            "--config",
            "/etc/mupdated.toml",
            "--inherit-cyrus",
            "--log=debug",
            "--log-file",
            "/var/log/m.log",
        ];
        assert_eq!(kept, args(&want));
        assert_eq!(dropped, args(&["-C", "/etc/imapd.conf", "-U", "30", "-m", "-D", "stray"]));
        let parsed = Args::parse_from(kept);
        assert!(parsed.inherit_cyrus);
        assert_eq!(parsed.config, PathBuf::from("/etc/mupdated.toml"));
    }
}
