//! The mupdated daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mupdated::config::Config;
use mupdated::net::Server;

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
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    tracing_subscriber::fmt()
        .fmt_fields(fields)
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mupdated: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mupdated: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Listen first: connections that arrive while the store opens
        // (sled's recovery after a crash takes seconds) wait for their
        // greeting instead of being refused.
        let server = match Server::listen(config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mupdated: {e}");
                return ExitCode::FAILURE;
            }
        };
        match server.run(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mupdated: {e}");
                ExitCode::FAILURE
            }
        }
    })
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
