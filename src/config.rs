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
    /// SCRAM-SHA-256 verifier `salt,iterations,StoredKey,ServerKey` (base64
    /// fields) made by `mupdatectl hash-password --scram`.
    #[serde(default)]
    pub scram_sha256: Option<String>,
    /// SCRAM-SHA-1 verifier, same form (`hash-password --scram-sha1`); used
    /// only with the top-level `scram_sha1 = true`.
    #[serde(default)]
    pub scram_sha1: Option<String>,
    /// Subject CN or DNS name of a client certificate (verified against
    /// `[tls] client_ca`) that logs in as this entry with SASL EXTERNAL.
    #[serde(default)]
    pub certificate: Option<String>,
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

/// The `[tls]` table: the server's certificate, client certificates, and
/// whether a login needs TLS first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) to verify client certificates against;
    /// clients without a certificate still connect.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// No login before TLS on TCP: the banner before STARTTLS offers no
    /// mechanism.
    #[serde(default = "default_tls_require")]
    pub require: bool,
    /// Implicit-TLS listeners: the handshake first, then the banner.
    #[serde(default)]
    pub listen_tls: Vec<SocketAddr>,
    /// Seconds a TLS handshake may take.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: u64,
}

fn default_tls_require() -> bool {
    // Cyrus clients upgrade only when no mechanism they can use is offered
    // before TLS: with PLAIN on offer they log in in clear text.
    true
}
fn default_handshake_timeout() -> u64 {
    // A handshake is two round trips and a signature, milliseconds on a
    // LAN; a peer that stalls one holds a slot not logged in no longer.
    10
}

/// The TCP address used when `listen` is absent and no other listener is
/// configured or inherited: Cyrus's mupdate port, on loopback only.
pub fn default_listen() -> Vec<SocketAddr> {
    vec!["127.0.0.1:3905".parse().expect("literal address")]
}
fn default_unix_socket_mode() -> String {
    // Owner and group (the cyrus user and mail group), as Cyrus's own
    // lmtp and idle sockets are used; nobody else.
    "0660".to_string()
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
    // Changes one UPDATE stream has not taken yet; past this the stream is
    // too far behind to be worth keeping and is closed (its slave
    // resynchronises).
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
    // mailboxes still serves within seconds, then every value read back in
    // the background (9.9 s at 1M); the full check compares every index
    // before serving (docs/robustness/integrity.md).
    crate::store::verify::VerifyMode::Quick
}
fn default_cache_capacity_mb() -> u64 {
    // sled's page cache; its own default (1 GiB) is too much for a small box.
    128
}
fn default_max_mailbox_name() -> usize {
    // Cyrus 3.6.1 MAX_MAILBOX_BUFFER (imap/mailbox.h:62), the buffer every
    // name in its mupdate.c is copied into (`struct pending`); its
    // MAX_MAILBOX_NAME (490, imap/mailbox.h:60) is not enforced for
    // DELETED.* names (imap/mboxname.c: mboxname_policycheck).
    1024
}
fn default_max_location() -> usize {
    // Cyrus 3.6.1 `server!partition` buffers: HOSTNAME_SIZE (512,
    // imap/mboxlist.h:103) + MAX_PARTITION_LEN (64, imap/mboxlist.h:57) + 2
    // (imap/mboxlist.c, imap/imapd.c `buf[MAX_PARTITION_LEN + HOSTNAME_SIZE + 2]`).
    512 + 64 + 2
}
fn default_max_acl_identifier() -> usize {
    // Cyrus canonical identifiers are far shorter (auth_unix: 80 bytes,
    // lib/auth_unix.c mycanonifyid); room for domains and a leading '-'.
    256
}
fn default_max_acl_entries() -> usize {
    // Cyrus has no limit; real mailboxes have a handful of entries, shared
    // ones a few hundred groups at most. Bounds one ACTIVATE's rights-index
    // work and writes (docs/robustness/limits.md).
    1024
}
fn default_max_stream_pending_bytes() -> usize {
    // Bytes of the shared change log one UPDATE stream may lag behind
    // (name and server bytes + 128 per change). A failover publishes one
    // change per mailbox of the group at once and every stream lags by that
    // burst until it has sent it: 1M mailboxes of 30-byte names are about
    // 165 MB, so a server of 1M mailboxes fails over without dropping every
    // frontend. The log is shared: this bounds all streams together.
    256 * 1024 * 1024
}
fn default_command_timeout() -> u64 {
    // max_message (1 MiB) at 20 KB/s; a murder's LAN is far faster, and a
    // peer that dribbles a command holds its slot no longer than this.
    60
}
fn default_max_connections_per_peer() -> usize {
    // Every imapd process of a backend opens its own connection for a
    // mailbox operation: hundreds at once from one busy backend are real.
    512
}
fn default_max_login_backoff() -> u64 {
    // A peer's failed logins double its wait before the next check, from
    // failed_login_pause up to this; a minute stops guessing at 1/min.
    60
}
fn default_max_hash_checks() -> usize {
    // argon2 is CPU- and memory-bound (19 MiB each at the default cost):
    // more at once than cores only queues inside the kernel and costs memory.
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}
fn default_listen_backlog() -> u32 {
    // A restart's reconnect storm (every backend process and frontend at
    // once) must wait in the kernel, not be reset; 128 dropped hundreds of 5,000.
    1024
}
fn default_true() -> bool {
    // SCRAM-SHA-256 keeps the password off the wire and Cyrus's client
    // (libsasl >= 2.1.27) picks it by itself when offered.
    true
}
fn default_scram_iterations() -> u32 {
    // RFC 5802's minimum: verifiers of plain passwords are derived at every
    // start, and Cyrus's client refuses more than 65536.
    4096
}
fn default_max_unauthenticated_message() -> usize {
    // A SASL PLAIN exchange with 255-byte names and password is under
    // 1 KiB of base64; nothing else is said before login.
    8 * 1024
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// TCP addresses to listen on. Absent: 127.0.0.1:3905, unless another
    /// listener (unix socket, inherited) exists; see [`Config::tcp_listen`].
    #[serde(default)]
    pub listen: Option<Vec<SocketAddr>>,
    /// Unix socket paths to listen on (same protocol).
    #[serde(default)]
    pub listen_unix: Vec<PathBuf>,
    /// Permissions of the unix sockets, octal digits (`"0660"`).
    #[serde(default = "default_unix_socket_mode")]
    pub unix_socket_mode: String,
    /// Connections on a unix socket whose peer is root (SO_PEERCRED uid 0)
    /// are logged in as admin without AUTHENTICATE.
    #[serde(default)]
    pub unix_peer_admin: bool,
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
    /// Longest mailbox name a write may carry, bytes.
    #[serde(default = "default_max_mailbox_name")]
    pub max_mailbox_name: usize,
    /// Longest location (`server!partition`), bytes.
    #[serde(default = "default_max_location")]
    pub max_location: usize,
    /// Longest ACL identifier, bytes.
    #[serde(default = "default_max_acl_identifier")]
    pub max_acl_identifier: usize,
    /// Most ACL entries in one ACTIVATE.
    #[serde(default = "default_max_acl_entries")]
    pub max_acl_entries: usize,
    /// Most bytes queued for one UPDATE stream (names + 64 each) before it is closed.
    #[serde(default = "default_max_stream_pending_bytes")]
    pub max_stream_pending_bytes: usize,
    /// Seconds one command may take to arrive once its first byte did.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: u64,
    /// Most connections not logged in at once (default: a quarter of
    /// `max_connections`); past it the oldest of them is closed.
    #[serde(default)]
    pub max_unauthenticated: Option<usize>,
    /// Most connections from one peer address.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Longest wait, seconds, imposed on a peer address after failed logins.
    #[serde(default = "default_max_login_backoff")]
    pub max_login_backoff: u64,
    /// Password hash verifications running at once.
    #[serde(default = "default_max_hash_checks")]
    pub max_hash_checks: usize,
    /// Networks that may connect at all (empty: any).
    #[serde(default)]
    pub allow: Vec<Network>,
    /// Length of the kernel's queue of connections not yet accepted.
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
    /// Largest message (line or literal) accepted before login, bytes.
    #[serde(default = "default_max_unauthenticated_message")]
    pub max_unauthenticated_message: usize,
    /// Offer SCRAM-SHA-256 wherever every login can complete it; false:
    /// never (to offer exactly what a Cyrus master with only PLAIN offers).
    #[serde(default = "default_true")]
    pub scram_sha256: bool,
    /// Offer SCRAM-SHA-1 too (for libsasl older than 2.1.27, which has no
    /// SCRAM-SHA-256); off: SHA-1 is weaker and current Cyrus picks SHA-256.
    #[serde(default)]
    pub scram_sha1: bool,
    /// PBKDF2 iterations of the SCRAM verifiers derived at start from plain
    /// `password` entries (4096-65536).
    #[serde(default = "default_scram_iterations")]
    pub scram_iterations: u32,
    /// How much of the directory to check before serving it.
    #[serde(default = "default_verify_on_open")]
    pub verify_on_open: crate::store::verify::VerifyMode,
    /// TLS (STARTTLS on every TCP listener, and implicit-TLS listeners).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
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
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
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
        // An empty `listen` is checked at start, once inherited listeners
        // (Cyrus's master, systemd) are counted: see [`Config::tcp_listen`].
        if let Err(e) = self.unix_mode() {
            return invalid(e);
        }
        let mut paths = std::collections::HashSet::new();
        for p in &self.listen_unix {
            if p.as_os_str().is_empty() {
                return invalid("listen_unix: a path is empty".into());
            }
            if !paths.insert(p) {
                return invalid(format!("listen_unix: {} is listed twice", p.display()));
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut certificates = std::collections::HashSet::new();
        for u in &self.users {
            if !names.insert(u.name.as_str()) {
                return invalid(format!("users: {:?} is listed twice", u.name));
            }
            match (&u.password, &u.password_hash) {
                (Some(_), Some(_)) => {
                    return invalid(format!("users: {:?} has both password and password_hash", u.name))
                }
                (None, None) if u.scram_sha256.is_none() && u.scram_sha1.is_none() && u.certificate.is_none() => {
                    return invalid(format!(
                        "users: {:?} needs password, password_hash, scram_sha256 or certificate",
                        u.name
                    ))
                }
                (None, Some(h)) if argon2::PasswordHash::new(h).is_err() => {
                    return invalid(format!("users: {:?}: password_hash is not a PHC string", u.name));
                }
                _ => {}
            }
            if u.password.is_some() && (u.scram_sha256.is_some() || u.scram_sha1.is_some()) {
                return invalid(format!(
                    "users: {:?}: a plain password's SCRAM verifiers are derived at start; drop scram_*",
                    u.name
                ));
            }
            for (key, v, hash) in [
                ("scram_sha256", &u.scram_sha256, crate::auth::scram::ScramHash::Sha256),
                ("scram_sha1", &u.scram_sha1, crate::auth::scram::ScramHash::Sha1),
            ] {
                if let Some(v) = v {
                    if let Err(e) = crate::auth::scram::Verifier::parse(hash, v) {
                        return invalid(format!("users: {:?}: {key}: {e}", u.name));
                    }
                }
            }
            if let Some(c) = &u.certificate {
                if c.is_empty() {
                    return invalid(format!("users: {:?}: certificate is empty", u.name));
                }
                if !certificates.insert(c.to_ascii_lowercase()) {
                    return invalid(format!("users: certificate {c:?} is given to two entries"));
                }
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
        for (key, v) in [
            ("max_mailbox_name", self.max_mailbox_name),
            ("max_location", self.max_location),
            ("max_acl_identifier", self.max_acl_identifier),
            ("max_acl_entries", self.max_acl_entries),
            ("max_stream_pending_bytes", self.max_stream_pending_bytes),
        ] {
            if v == 0 {
                return invalid(format!("{key} must be above 0"));
            }
        }
        if !(1..=22).contains(&self.compression_level) {
            return invalid(format!("compression_level must be 1 to 22 (zstd levels), not {}", self.compression_level));
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be above 0".into());
        }
        if let Some(n) = self.max_unauthenticated {
            if n == 0 || n > self.max_connections {
                return invalid(format!(
                    "max_unauthenticated must be 1 to max_connections ({}), not {n}",
                    self.max_connections
                ));
            }
        }
        if self.max_connections_per_peer == 0 {
            return invalid("max_connections_per_peer must be above 0".into());
        }
        if self.max_hash_checks == 0 {
            return invalid("max_hash_checks must be above 0".into());
        }
        if let Err(e) = crate::auth::scram::check_iterations(self.scram_iterations) {
            return invalid(format!("scram_iterations: {e}"));
        }
        if self.listen_backlog == 0 {
            return invalid("listen_backlog must be above 0".into());
        }
        if self.max_unauthenticated_message < 1024 {
            return invalid("max_unauthenticated_message must be at least 1024 (a SASL PLAIN exchange)".into());
        }
        if self.command_timeout == 0 || self.login_timeout == 0 {
            return invalid("command_timeout and login_timeout must be above 0".into());
        }
        if let Some(t) = &self.tls {
            if t.cert.as_os_str().is_empty() || t.key.as_os_str().is_empty() {
                return invalid("tls: cert and key must name files".into());
            }
            if t.client_ca.as_ref().is_some_and(|c| c.as_os_str().is_empty()) {
                return invalid("tls: client_ca must name a file".into());
            }
            if t.handshake_timeout == 0 {
                return invalid("tls: handshake_timeout must be above 0".into());
            }
            let mut seen = std::collections::HashSet::new();
            for a in &t.listen_tls {
                if a.port() != 0 && (!seen.insert(a) || self.listen.as_ref().is_some_and(|l| l.contains(a))) {
                    return invalid(format!("tls: listen_tls address {a} is listed twice (or in listen too)"));
                }
            }
        }
        Ok(())
    }

    /// The TCP addresses to bind: `listen` as given, or when it is absent
    /// and there is no other listener (`other_listeners`: unix sockets and
    /// inherited ones), the default 127.0.0.1:3905.
    pub fn tcp_listen(&self, other_listeners: usize) -> Vec<SocketAddr> {
        match &self.listen {
            Some(l) => l.clone(),
            None if other_listeners == 0 => default_listen(),
            None => Vec::new(),
        }
    }

    /// `unix_socket_mode` as permission bits: 3 or 4 octal digits, no
    /// setuid/setgid/sticky bits.
    pub fn unix_mode(&self) -> Result<u32, String> {
        let s = self.unix_socket_mode.as_str();
        let bad = || format!("unix_socket_mode must be octal permissions such as \"0660\", not {s:?}");
        if !(3..=4).contains(&s.len()) || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(bad());
        }
        let mode = u32::from_str_radix(s, 8).map_err(|_| bad())?;
        if mode > 0o777 {
            return Err(bad());
        }
        Ok(mode)
    }

    /// Connections not logged in that may be open at once.
    pub fn max_unauthenticated(&self) -> usize {
        self.max_unauthenticated.unwrap_or((self.max_connections / 4).max(1)).min(self.max_connections)
    }

    /// May a peer at this address connect?
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip))
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

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one
/// address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    /// Is `ip` inside this network? An IPv4 address seen as IPv6
    /// (`::ffff:a.b.c.d`, a dual-stack listener) counts as IPv4.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.as_str(), None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| format!("allow: {s:?} is not an address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("allow: {s:?}: prefix length must be 0 to {max}")),
            },
        };
        Ok(Network { addr, prefix })
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
        assert!(Config::parse("[[replica_groups]]\nname='g'\nservers=['a','b']\nprimary='c'").is_err());
        assert!(Config::parse(
            "[[replica_groups]]\nname='g'\nservers=['a']\n[[replica_groups]]\nname='h'\nservers=['a']"
        )
        .is_err());
    }

    #[test]
    fn command_limits_default_to_cyrus_buffers_and_refuse_zero() {
        let with = |extra: &str| Config::parse(&format!("listen = [\"127.0.0.1:3905\"]\n{extra}"));
        let c = with("").unwrap();
        assert_eq!((c.max_mailbox_name, c.max_location, c.max_acl_identifier, c.max_acl_entries), (1024, 578, 256, 1024));
        assert_eq!(c.max_stream_pending_bytes, 256 << 20);
        assert_eq!(with("max_acl_entries = 5").unwrap().max_acl_entries, 5);
        for key in ["max_mailbox_name", "max_location", "max_acl_identifier", "max_acl_entries", "max_stream_pending_bytes"] {
            let e = with(&format!("{key} = 0")).unwrap_err().to_string();
            assert!(e.contains(&format!("{key} must be above 0")), "{e}");
        }
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

    #[test]
    fn connection_limits_are_checked() {
        let with = |extra: &str| Config::parse(&format!("listen = [\"127.0.0.1:3905\"]\n{extra}"));
        let c = with("").unwrap();
        assert_eq!((c.max_unauthenticated(), c.listen_backlog, c.max_unauthenticated_message), (1024, 1024, 8192));
        assert_eq!(with("max_connections = 2").unwrap().max_unauthenticated(), 1);
        assert!(with("max_connections = 10\nmax_unauthenticated = 11").is_err());
        assert!(with("max_unauthenticated = 0").is_err());
        assert!(with("max_hash_checks = 0").is_err());
        assert!(with("max_unauthenticated_message = 10").is_err());
        assert!(with("allow = [\"10.0.0.0/33\"]").is_err());
        assert!(with("allow = [\"nonsense\"]").is_err());
    }

    #[test]
    fn listener_keys_have_defaults_and_are_checked() {
        let c = Config::parse("").unwrap();
        assert_eq!((c.listen.clone(), c.listen_unix.len(), c.unix_peer_admin), (None, 0, false));
        assert_eq!(c.unix_mode(), Ok(0o660));
        // Absent `listen`: the default only when nothing else listens.
        assert_eq!(c.tcp_listen(0), default_listen());
        assert!(c.tcp_listen(2).is_empty());
        let given = Config::parse("listen = [\"127.0.0.1:1\"]").unwrap();
        assert_eq!(given.tcp_listen(2), vec!["127.0.0.1:1".parse().unwrap()]);
        // An empty list parses: the start refuses it when nothing else listens.
        assert!(Config::parse("listen = []").unwrap().tcp_listen(0).is_empty());
        assert_eq!(Config::parse("unix_socket_mode = \"600\"").unwrap().unix_mode(), Ok(0o600));
        for bad in ["", "66", "06600", "0668", "rw-", "1777"] {
            assert!(Config::parse(&format!("unix_socket_mode = \"{bad}\"")).is_err(), "{bad:?}");
        }
        assert!(Config::parse("listen_unix = [\"\"]").is_err());
        assert!(Config::parse("listen_unix = [\"/a\", \"/a\"]").is_err());
    }

    #[test]
    fn allow_list_matches_networks() {
        let c = Config::parse("allow = [\"10.0.0.0/8\", \"192.168.1.7\", \"2001:db8::/32\"]").unwrap();
        let ok = |s: &str| c.allows(s.parse().unwrap());
        assert!(ok("10.200.3.4") && ok("192.168.1.7") && ok("::ffff:10.0.0.1") && ok("2001:db8:1::5"));
        assert!(!ok("11.0.0.1") && !ok("192.168.1.8") && !ok("2001:db9::1") && !ok("127.0.0.1"));
        assert!(Config::parse("allow = [\"0.0.0.0/0\"]").unwrap().allows("8.8.8.8".parse().unwrap()));
        assert!(Config::parse("").unwrap().allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn sasl_keys_are_checked() {
        let v = crate::auth::scram::Verifier::generate(crate::auth::scram::ScramHash::Sha256, b"pw", 4096).encode();
        let user = |extra: &str| Config::parse(&format!("[[users]]\nname='a'\nrole='admin'\n{extra}"));
        let err = |extra: &str| user(extra).unwrap_err().to_string();
        assert!(user(&format!("scram_sha256 = '{v}'")).is_ok(), "a verifier alone is a login");
        assert!(user("certificate = 'a.example'").is_ok(), "so is a certificate");
        assert!(err("").contains("needs password, password_hash, scram_sha256 or certificate"));
        assert!(err("scram_sha256 = 'x,4096,y'").contains("scram_sha256: expected salt,iterations"));
        assert!(err(&format!("scram_sha1 = '{v}'")).contains("scram_sha1: StoredKey has 32 bytes"));
        assert!(err(&format!("password = 'pw'\nscram_sha256 = '{v}'")).contains("derived at start"));
        assert!(err("certificate = ''").contains("certificate is empty"));
        let two = "[[users]]\nname='a'\nrole='admin'\ncertificate='X.example'\n\
                   [[users]]\nname='b'\nrole='admin'\ncertificate='x.example'";
        assert!(Config::parse(two).unwrap_err().to_string().contains("given to two entries"));
        let top = |extra: &str| Config::parse(extra);
        let c = top("").unwrap();
        assert!(c.scram_sha256 && !c.scram_sha1 && c.scram_iterations == 4096);
        assert!(top("scram_iterations = 65536").is_ok());
        assert!(top("scram_iterations = 65537").unwrap_err().to_string().contains("4096 to 65536"));
        assert!(top("scram_iterations = 100").is_err());
    }
}
