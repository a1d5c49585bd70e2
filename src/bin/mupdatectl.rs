//! mupdatectl: the operator's tool for any MUPDATE server.
//!
//! Exit codes: 0 success, 1 the server refused or the answer differs,
//! 2 usage or configuration error, 3 connection or protocol failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mupdated::client::{Client, ClientError};
use mupdated::protocol::Entry;

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
    HashPassword,
    /// Benchmark the server: backend churn, bulk load, FIND, LIST, UPDATE, propagation, stalled subscriber.
    Bench(Box<mupdated::bench::BenchArgs>),
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
    let s = |b: &[u8]| mupdated::transcript::escape(b);
    match e {
        Entry::Mailbox { name, location, acl } => format!("MAILBOX {} {} {}", s(name), s(location), s(acl)),
        Entry::Reserve { name, location } => format!("RESERVE {} {}", s(name), s(location)),
    }
}

async fn connect(args: &Args) -> Result<Client, ClientError> {
    let (mut c, _greeting) = Client::connect(&args.server, Duration::from_secs(args.timeout)).await?;
    c.authenticate(&args.user, &args.password).await?;
    Ok(c)
}

fn fail(e: ClientError) -> ExitCode {
    eprintln!("mupdatectl: {e}");
    match e {
        ClientError::Refused { .. } => ExitCode::from(1),
        _ => ExitCode::from(3),
    }
}

async fn run(args: Args) -> ExitCode {
    match &args.command {
        Cmd::Bench(bench) => {
            let bench = mupdated::bench::BenchArgs { json: args.json, timeout: args.timeout, ..(**bench).clone() };
            mupdated::bench::run(&args.server, &args.user, &args.password, &bench).await
        }
        Cmd::HashPassword => {
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
            match mupdated::auth::hash_password(pw) {
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
