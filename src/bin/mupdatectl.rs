//! mupdatectl: the operator's tool for any MUPDATE server.
//!
//! Exit codes: 0 success, 1 the server refused or the answer differs,
//! 2 usage or configuration error, 3 connection or protocol failure.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mupdated::client::{Client, ClientError};
use mupdated::protocol::{AdminVerb, Command, Entry, Response};

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
            let fields: Vec<String> = r.iter().map(|f| mupdated::transcript::escape(f.as_bytes())).collect();
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
    if let Some(code) = run_admin(&args).await {
        return code;
    }
    match &args.command {
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
        Cmd::Records { .. }
        | Cmd::Conflicts
        | Cmd::Resolve { .. }
        | Cmd::Groups
        | Cmd::Primary { .. }
        | Cmd::DeleteRecord { .. }
        | Cmd::Rights { .. } => ExitCode::from(2),
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
