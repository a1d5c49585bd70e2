//! Typed configuration (TOML). Every key has a documented default; unknown
//! keys are an error, so a typo never silently changes behaviour.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::store::ReplicaGroup;

/// Role of a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Anything, including the admin extensions. A shared admin login has
    /// an unknown identity (the usual Cyrus setup).
    Admin,
    /// A backend bound to the server names in `servers`.
    Backend,
    /// FIND, LIST, UPDATE, NOOP only: what a frontend's slave needs.
    Reader,
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Plain-text password (demo and tests).
    #[serde(default)]
    pub password: Option<String>,
    /// PHC string made by `mupdatectl hash-password` (argon2).
    #[serde(default)]
    pub password_hash: Option<String>,
    pub role: Role,
    /// Server names a backend login may assert facts about.
    #[serde(default)]
    pub servers: Vec<String>,
}

/// One `[[replica_groups]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaGroupConfig {
    pub name: String,
    pub servers: Vec<String>,
    #[serde(default)]
    pub primary: Option<String>,
}

fn default_listen() -> Vec<SocketAddr> {
    vec!["127.0.0.1:3905".parse().expect("literal address")]
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_server_name() -> String {
    "mupdated".to_string()
}
fn default_max_connections() -> usize {
    // Cyrus's mupdate_connections_max is 128 with a thread per connection;
    // a task per connection costs a few KiB, so allow a large murder.
    4096
}
fn default_idle_timeout() -> u64 {
    // Cyrus's master drops idle connections after 180 minutes.
    180 * 60
}
fn default_login_timeout() -> u64 {
    // Cyrus clients give up on the greeting and AUTHENTICATE after 10 s.
    60
}
fn default_write_timeout() -> u64 {
    // A peer that reads nothing for this long is stalled; drop it alone.
    60
}
fn default_failed_login_pause() -> u64 {
    // Cyrus's failedloginpause default (seconds).
    3
}
fn default_max_message() -> usize {
    1024 * 1024
}
fn default_max_line() -> usize {
    64 * 1024
}
fn default_max_stream_pending() -> usize {
    // Names waiting for one UPDATE stream; past this the stream is too far
    // behind to be worth keeping and is closed (its slave resynchronises).
    1_000_000
}
fn default_compression() -> bool {
    // A third of the disk for about a sixth of the churn throughput
    // (README, Performance); directories are read far more than written.
    true
}
fn default_compression_level() -> i32 {
    // zstd level 1: measured against sled's default (5) in
    // docs/performance.md.
    1
}
fn default_verify_on_open() -> crate::store::verify::VerifyMode {
    // Quick: 1024 reads against the clean-stop seal, so a directory of 1M
    // mailboxes still serves within seconds; the full check reads every
    // key (docs/robustness/integrity.md) and is `mupdatectl verify`'s job.
    crate::store::verify::VerifyMode::Quick
}
fn default_cache_capacity_mb() -> u64 {
    // sled's page cache; its own default (1 GiB) is too much for a small box.
    128
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Folder of the database (relative to the working directory).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Name in the greeting's `* OK MUPDATE "name"` line.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// Connections beyond this get `* BYE "Server Unable"`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a logged-in connection may stay silent.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: u64,
    /// Seconds a connection has to log in.
    #[serde(default = "default_login_timeout")]
    pub login_timeout: u64,
    /// Seconds a write to a peer may stall before the connection is dropped.
    #[serde(default = "default_write_timeout")]
    pub write_timeout: u64,
    /// Seconds to wait before answering a failed AUTHENTICATE.
    #[serde(default = "default_failed_login_pause")]
    pub failed_login_pause: u64,
    /// Largest command (lines and literals), bytes.
    #[serde(default = "default_max_message")]
    pub max_message: usize,
    /// Longest line outside literals, bytes.
    #[serde(default = "default_max_line")]
    pub max_line: usize,
    /// Most names queued for one UPDATE stream before it is closed.
    #[serde(default = "default_max_stream_pending")]
    pub max_stream_pending: usize,
    /// sled page cache, MiB.
    #[serde(default = "default_cache_capacity_mb")]
    pub cache_capacity_mb: u64,
    /// Compress the database on disk (zstd).
    #[serde(default = "default_compression")]
    pub compression: bool,
    /// zstd level for what sled writes (1-22); any level reads any other.
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// Logins.
    #[serde(default)]
    pub users: Vec<User>,
    /// Servers that replicate one another.
    #[serde(default)]
    pub replica_groups: Vec<ReplicaGroupConfig>,
    /// How much of the directory to check before serving it.
    #[serde(default = "default_verify_on_open")]
    pub verify_on_open: crate::store::verify::VerifyMode,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.to_owned(), source },
            other => other,
        })?;
        Ok(config)
    }

    /// Parse and check configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|source| ConfigError::Parse { path: PathBuf::new(), source })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.is_empty() {
            return invalid("listen: at least one address is needed".into());
        }
        let mut names = std::collections::HashSet::new();
        for u in &self.users {
            if !names.insert(u.name.as_str()) {
                return invalid(format!("users: {:?} is listed twice", u.name));
            }
            match (&u.password, &u.password_hash) {
                (Some(_), Some(_)) => {
                    return invalid(format!("users: {:?} has both password and password_hash", u.name))
                }
                (None, None) => return invalid(format!("users: {:?} needs password or password_hash", u.name)),
                (None, Some(h)) if argon2::PasswordHash::new(h).is_err() => {
                    return invalid(format!("users: {:?}: password_hash is not a PHC string", u.name));
                }
                _ => {}
            }
            match u.role {
                Role::Backend if u.servers.is_empty() => {
                    return invalid(format!("users: {:?} has role backend but no servers", u.name))
                }
                Role::Admin | Role::Reader if !u.servers.is_empty() => {
                    return invalid(format!("users: {:?}: servers only go with role backend", u.name))
                }
                _ => {}
            }
        }
        let mut groups = std::collections::HashSet::new();
        let mut grouped = std::collections::HashMap::new();
        for g in &self.replica_groups {
            if !groups.insert(g.name.as_str()) {
                return invalid(format!("replica_groups: {:?} is listed twice", g.name));
            }
            for s in &g.servers {
                if let Some(other) = grouped.insert(s.as_str(), g.name.as_str()) {
                    return invalid(format!("replica_groups: server {s:?} is in both {other:?} and {:?}", g.name));
                }
            }
            if let Some(p) = &g.primary {
                if !g.servers.contains(p) {
                    return invalid(format!("replica_groups: primary {p:?} of {:?} is not one of its servers", g.name));
                }
            }
        }
        if self.max_line == 0 || self.max_message < self.max_line {
            return invalid("max_message must be at least max_line, and max_line above 0".into());
        }
        if !(1..=22).contains(&self.compression_level) {
            return invalid(format!("compression_level must be 1 to 22 (zstd levels), not {}", self.compression_level));
        }
        Ok(())
    }

    /// Replica groups in the store's terms.
    pub fn store_groups(&self) -> Vec<ReplicaGroup> {
        self.replica_groups
            .iter()
            .map(|g| ReplicaGroup {
                name: g.name.clone(),
                servers: g.servers.iter().map(|s| s.as_bytes().to_vec()).collect(),
                primary: g.primary.as_ref().map(|p| p.as_bytes().to_vec()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_parses() {
        let c = Config::parse(
            r#"
listen = ["127.0.0.1:3905"]
data_dir = "data"
server_name = "mupdate.example.org"

[[users]]
name = "mupdater"
password = "secret"
role = "admin"
"#,
        )
        .unwrap();
        assert_eq!(c.users[0].role, Role::Admin);
        assert_eq!(c.server_name, "mupdate.example.org");
        assert_eq!(c.idle_timeout, 180 * 60);
    }

    #[test]
    fn unknown_keys_and_bad_users_are_refused() {
        assert!(Config::parse("listne = []").is_err());
        assert!(Config::parse("[[users]]\nname='a'\nrole='admin'").is_err());
        assert!(Config::parse("[[users]]\nname='a'\npassword='x'\nrole='backend'").is_err());
        assert!(Config::parse("[[users]]\nname='a'\npassword='x'\nrole='reader'\nservers=['b']").is_err());
        assert!(Config::parse("[[users]]\nname='a'\npassword_hash='nope'\nrole='admin'").is_err());
        assert!(Config::parse(
            "[[replica_groups]]\nname='g'\nservers=['a','b']\nprimary='c'"
        )
        .is_err());
        assert!(Config::parse(
            "[[replica_groups]]\nname='g'\nservers=['a']\n[[replica_groups]]\nname='h'\nservers=['a']"
        )
        .is_err());
    }

    #[test]
    fn compression_level_is_a_zstd_level() {
        let with = |extra: &str| Config::parse(&format!("listen = [\"127.0.0.1:3905\"]\n{extra}"));
        assert_eq!(with("").unwrap().compression_level, 1);
        assert_eq!(with("compression_level = 5").unwrap().compression_level, 5);
        let e = with("compression_level = 0").unwrap_err().to_string();
        assert!(e.contains("compression_level must be 1 to 22"), "{e}");
        assert!(with("compression_level = 23").is_err());
    }
}
