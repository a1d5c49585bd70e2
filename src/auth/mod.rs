//! Logins: SASL PLAIN, SCRAM-SHA-256 (and SCRAM-SHA-1) and EXTERNAL
//! against the configured users, roles and identities; which mechanisms a
//! connection is offered ([`Authenticator::offered`]).
//!
//! See docs/architecture/sasl.md.

pub mod scram;

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use blake2::{Blake2b512, Digest};

use crate::config::{Role, User};
use crate::store::Identity;

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user the session acts as: the authorization identity when an
    /// admin logged in on behalf of another configured user, else the
    /// authentication identity.
    pub user: String,
    /// That user's configured role (the target's role when an admin acts as
    /// another user): what the session may do.
    pub role: Role,
    /// The servers this login may assert facts about (`None`: any; an
    /// admin's identity is unknown, as with Cyrus's shared login).
    pub identity: Identity,
}

impl Login {
    /// May this login change the directory?
    pub fn may_write(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Backend)
    }
    /// May this login use the admin extensions?
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Why a login failed (logged, never sent: the peer only sees NO).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The response is not `authzid NUL authcid NUL password` with UTF-8
    /// names.
    #[error("malformed PLAIN response")]
    Malformed,
    /// No configured user has the authentication identity's name.
    #[error("unknown user")]
    UnknownUser,
    /// The password matches neither the user's plain password nor its hash.
    #[error("wrong password")]
    WrongPassword,
    /// A non-admin asked to act as someone else, or an admin asked to act
    /// as a user that is not configured.
    #[error("authorization identity differs and login is not an admin")]
    NotAuthorized,
    /// A SCRAM message was refused.
    #[error("{0}")]
    Scram(#[from] scram::ScramError),
    /// EXTERNAL without a verified client certificate, or one that maps to
    /// no entry (or to more than one).
    #[error("no configured certificate matches")]
    NoCertificate,
}

enum Secret {
    Plain(Vec<u8>),
    Hash(String),
    /// No password: SCRAM verifiers or a certificate only.
    None,
}

struct Account {
    role: Role,
    servers: Vec<Vec<u8>>,
    secret: Secret,
    scram_sha256: Option<scram::Verifier>,
    scram_sha1: Option<scram::Verifier>,
    certificate: Option<String>,
}

/// SASL settings beyond the users (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslOptions {
    /// Offer SCRAM-SHA-256 (`scram_sha256`, on by default).
    pub scram_sha256: bool,
    /// Offer SCRAM-SHA-1 (`scram_sha1`).
    pub scram_sha1: bool,
    /// Iterations of the verifiers derived from plain passwords.
    pub scram_iterations: u32,
}

impl Default for SaslOptions {
    fn default() -> Self {
        SaslOptions { scram_sha256: true, scram_sha1: false, scram_iterations: scram::MIN_ITERATIONS }
    }
}

/// A SCRAM exchange in progress: what the session keeps between the
/// server-first message and the client's final one.
#[derive(Debug)]
pub struct ScramLogin {
    exchange: scram::ServerExchange,
    hash: scram::ScramHash,
}

impl ScramLogin {
    /// The mechanism's hash.
    pub fn hash(&self) -> scram::ScramHash {
        self.hash
    }
}

/// What a connection is, for choosing the SASL mechanisms it is offered
/// ([`Authenticator::offered`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaslContext {
    /// The connection runs over TLS.
    pub in_tls: bool,
    /// The server requires TLS before any login (`[tls] require`).
    pub tls_required: bool,
    /// The TLS session carries a client certificate verified against
    /// `client_ca` (EXTERNAL is possible).
    pub verified_cert: bool,
}

/// Checks credentials. Argon2 checks are slow by design and backends log in
/// for every mailbox change, so a successful check is remembered (as a
/// keyed digest of the password, never the password) until the password
/// presented changes.
///
/// When any account has a hash, every failing check costs one argon2
/// verification (an unknown user and a wrong plain password are verified
/// against a dummy hash), so the time to a NO does not tell users apart;
/// and at most `max_hash_checks` verifications run at once ([`Self::hash_permits`]),
/// which bounds their CPU and memory whatever peers send.
pub struct Authenticator {
    accounts: HashMap<String, Account>,
    verified: Mutex<HashMap<String, [u8; 64]>>,
    /// A hash of a random password, verified for the failures that have
    /// no hash of their own; present when any account has a hash.
    dummy: Option<String>,
    hash_permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// argon2's working memory, reused: allocating 19 MiB per check let
    /// the allocator keep gigabytes across threads under a flood of
    /// checks; kept are at most `max_hash_checks` of them.
    memory: Mutex<Vec<Vec<argon2::Block>>>,
    max_hash_checks: usize,
    options: SaslOptions,
    /// Key of the fake salts answered to unknown SCRAM users: random per
    /// start, so one user's fake salt stays the same within a run.
    fake_key: [u8; 32],
}

fn digest(user: &str, password: &[u8]) -> [u8; 64] {
    let mut h = Blake2b512::new();
    h.update(b"mupdated-login-cache\0");
    h.update(user.as_bytes());
    h.update([0u8]);
    h.update(password);
    h.finalize().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// Accounts for `users`, as many hash checks at once as cores.
    pub fn new(users: &[User]) -> Self {
        Self::with_max_hash_checks(users, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
    }

    /// Accounts for `users`, at most `max_hash_checks` argon2 checks at once.
    pub fn with_max_hash_checks(users: &[User], max_hash_checks: usize) -> Self {
        Self::with_options(users, max_hash_checks, SaslOptions::default())
    }

    /// Accounts for `users`, at most `max_hash_checks` argon2 checks at
    /// once, SCRAM as `options` say. Plain passwords get SCRAM verifiers
    /// (a fresh salt each start); entries that cannot do SCRAM are logged,
    /// since they keep SCRAM from being offered.
    pub fn with_options(users: &[User], max_hash_checks: usize, options: SaslOptions) -> Self {
        use scram::{ScramHash, Verifier};
        let accounts: HashMap<String, Account> = users
            .iter()
            .map(|u| {
                let secret = match (&u.password, &u.password_hash) {
                    (_, Some(h)) => Secret::Hash(h.clone()),
                    (Some(p), None) => Secret::Plain(p.as_bytes().to_vec()),
                    (None, None) => Secret::None,
                };
                let derived = |hash| {
                    u.password.as_ref().map(|p| Verifier::generate(hash, p.as_bytes(), options.scram_iterations))
                };
                // Checked by Config::check; a bad one here is simply absent.
                let given = |hash, v: &Option<String>| v.as_ref().and_then(|v| Verifier::parse(hash, v).ok());
                let scram_sha256 = given(ScramHash::Sha256, &u.scram_sha256).or_else(|| derived(ScramHash::Sha256));
                let scram_sha1 = if options.scram_sha1 {
                    given(ScramHash::Sha1, &u.scram_sha1).or_else(|| derived(ScramHash::Sha1))
                } else {
                    None
                };
                let servers = u.servers.iter().map(|s| s.as_bytes().to_vec()).collect();
                let certificate = u.certificate.clone();
                (u.name.clone(), Account { role: u.role, servers, secret, scram_sha256, scram_sha1, certificate })
            })
            .collect();
        let mut blocking: Vec<&str> = if !options.scram_sha256 {
            Vec::new()
        } else {
            accounts
                .iter()
                .filter(|(_, a)| a.scram_sha256.is_none() && !matches!(a.secret, Secret::None))
                .map(|(n, _)| n.as_str())
                .collect()
        };
        blocking.sort_unstable();
        if !blocking.is_empty() {
            tracing::warn!(
                users = ?blocking,
                "SCRAM-SHA-256 is not offered: these entries have a password_hash but no scram_sha256 \
                 (mupdatectl hash-password --scram makes both)"
            );
        }
        let any_hash = accounts.values().any(|a| matches!(a.secret, Secret::Hash(_)));
        let dummy = any_hash.then(|| {
            let mut random = [0u8; 32];
            use argon2::password_hash::rand_core::RngCore;
            argon2::password_hash::rand_core::OsRng.fill_bytes(&mut random);
            hash_password(&blake2_hex(&random)).ok()
        });
        Authenticator {
            accounts,
            verified: Mutex::new(HashMap::new()),
            dummy: dummy.flatten(),
            hash_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(max_hash_checks.max(1))),
            memory: Mutex::new(Vec::new()),
            max_hash_checks: max_hash_checks.max(1),
            options,
            fake_key: scram::random::<32>(),
        }
    }

    /// Does `password` match the PHC string `phc`? Computed with a reused
    /// working memory.
    fn verify(&self, phc: &str, password: &[u8]) -> bool {
        let mut memory = self.memory.lock().ok().and_then(|mut m| m.pop()).unwrap_or_default();
        let ok = verify_with(&mut memory, phc, password).unwrap_or(false);
        if let Ok(mut m) = self.memory.lock() {
            if m.len() < self.max_hash_checks {
                m.push(memory);
            }
        }
        ok
    }

    /// Permits for argon2 verifications: hold one while calling
    /// [`Self::plain`] whenever [`Self::needs_hash`] says so.
    pub fn hash_permits(&self) -> &std::sync::Arc<tokio::sync::Semaphore> {
        &self.hash_permits
    }

    /// Would checking this response run an argon2 verification? False only
    /// when it succeeds cheaply (a plain password, or a hash already
    /// verified for this very password) or is malformed.
    pub fn needs_hash(&self, response: &[u8]) -> bool {
        let Some((_, authcid, password)) = split_plain(response) else {
            return false;
        };
        match self.accounts.get(authcid) {
            None => self.dummy.is_some(),
            Some(Account { secret: Secret::Plain(p), .. }) => !constant_time_eq(p, password) && self.dummy.is_some(),
            Some(Account { secret: Secret::Hash(_), .. }) => !self.cached(authcid, password),
            Some(Account { secret: Secret::None, .. }) => self.dummy.is_some(),
        }
    }

    fn cached(&self, user: &str, password: &[u8]) -> bool {
        let d = digest(user, password);
        self.verified.lock().is_ok_and(|cache| cache.get(user).is_some_and(|c| constant_time_eq(c, &d)))
    }

    /// Spend what a real check of a hash costs, for a failure without one.
    fn dummy_check(&self, password: &[u8]) {
        if let Some(h) = &self.dummy {
            let _ = self.verify(h, password);
        }
    }

    /// Could every login that may use SCRAM with `hash` on a connection
    /// like `ctx` complete it? Entries without any password can log in
    /// only with a certificate, so they count only where one was verified
    /// (the Cyrus client ranks SCRAM above EXTERNAL and would pick it).
    fn scram_complete(&self, hash: scram::ScramHash, ctx: &SaslContext) -> bool {
        self.accounts.values().all(|a| {
            let v = match hash {
                scram::ScramHash::Sha256 => &a.scram_sha256,
                scram::ScramHash::Sha1 => &a.scram_sha1,
            };
            v.is_some() || (matches!(a.secret, Secret::None) && a.scram_sha256.is_none() && !ctx.verified_cert)
        })
    }

    /// The mechanisms a connection is offered in its `* AUTH` line: only
    /// those every login that may pick one can complete there (a Cyrus
    /// client picks by its own order and never falls back):
    /// - nothing before TLS when TLS is required (the client then sends
    ///   STARTTLS), so PLAIN only inside TLS then;
    /// - SCRAM-SHA-256 (and SCRAM-SHA-1 when enabled) when every entry has
    ///   a verifier: one with only an argon2 `password_hash` blocks it;
    /// - EXTERNAL only on a TLS session with a verified client certificate,
    ///   when some entry names a `certificate`;
    /// - PLAIN.
    pub fn offered(&self, ctx: &SaslContext) -> Vec<&'static str> {
        use scram::ScramHash;
        if ctx.tls_required && !ctx.in_tls {
            return Vec::new();
        }
        let mut m = Vec::new();
        if self.options.scram_sha256 && self.scram_complete(ScramHash::Sha256, ctx) {
            m.push(ScramHash::Sha256.mechanism());
        }
        if self.options.scram_sha1 && self.scram_complete(ScramHash::Sha1, ctx) {
            m.push(ScramHash::Sha1.mechanism());
        }
        if ctx.in_tls && ctx.verified_cert && self.accounts.values().any(|a| a.certificate.is_some()) {
            m.push("EXTERNAL");
        }
        m.push("PLAIN");
        m
    }

    /// The deterministic fake verifier answered for an unknown SCRAM user:
    /// a salt keyed by the user's name, the usual iteration count, keys
    /// that no proof matches.
    fn fake_verifier(&self, hash: scram::ScramHash, user: &str) -> scram::Verifier {
        let mut h = Blake2b512::new();
        h.update(self.fake_key);
        h.update(hash.mechanism().as_bytes());
        h.update(user.as_bytes());
        let d = h.finalize();
        let len = match hash {
            scram::ScramHash::Sha256 => 32,
            scram::ScramHash::Sha1 => 20,
        };
        scram::Verifier {
            salt: d[..16].to_vec(),
            iterations: self.options.scram_iterations,
            stored_key: d[16..16 + len].to_vec(),
            server_key: d[16..16 + len].to_vec(),
        }
    }

    /// Begin SCRAM with the client-first message: the exchange to keep and
    /// the server-first message to send. An unknown user (or one without a
    /// verifier) gets a fake salt and fails at the proof.
    pub fn scram_start(&self, hash: scram::ScramHash, client_first: &[u8]) -> Result<(ScramLogin, Vec<u8>), AuthError> {
        let first = scram::parse_client_first(client_first)?;
        let verifier = self.accounts.get(&first.user).and_then(|a| match hash {
            scram::ScramHash::Sha256 => a.scram_sha256.clone(),
            scram::ScramHash::Sha1 => a.scram_sha1.clone(),
        });
        let fake = self.fake_verifier(hash, &first.user);
        let (exchange, out) = scram::ServerExchange::start(hash, first, verifier, fake);
        Ok((ScramLogin { exchange, hash }, out))
    }

    /// Check the client-final message: the login and the server-final
    /// message (sent as a challenge; the client answers it with an empty
    /// line before the OK).
    pub fn scram_finish(&self, login: ScramLogin, client_final: &[u8]) -> Result<(Login, Vec<u8>), AuthError> {
        let first = login.exchange.client_first().clone();
        if !self.accounts.contains_key(&first.user) {
            let _ = login.exchange.finish(client_final);
            return Err(AuthError::UnknownUser);
        }
        let out = login.exchange.finish(client_final)?;
        let login = self.authorize(&first.user, first.authzid.as_deref().unwrap_or(""))?;
        Ok((login, out))
    }

    /// The user a SCRAM exchange claims to be, for the log of a failure.
    pub fn scram_user(login: &ScramLogin) -> &str {
        &login.exchange.client_first().user
    }

    /// SASL EXTERNAL: the entry whose `certificate` is one of the verified
    /// client certificate's names (CN and DNS SANs, any case), acting as
    /// itself: the authorization id must be empty or that entry's name.
    pub fn external(&self, client_names: Option<&[String]>, authzid: &[u8]) -> Result<Login, AuthError> {
        let names = client_names.ok_or(AuthError::NoCertificate)?;
        let mut matching = self.accounts.iter().filter(|(_, a)| {
            a.certificate.as_ref().is_some_and(|c| names.iter().any(|n| n.eq_ignore_ascii_case(c)))
        });
        let (user, account) = match (matching.next(), matching.next()) {
            (Some(m), None) => m,
            _ => return Err(AuthError::NoCertificate),
        };
        if !(authzid.is_empty() || authzid == user.as_bytes()) {
            return Err(AuthError::NotAuthorized);
        }
        Ok(Login { user: user.clone(), role: account.role, identity: identity_of(account) })
    }

    /// The login of `authcid` (already authenticated) acting as `authzid`:
    /// itself when empty or equal; another configured user only for an
    /// admin (as Cyrus's admins may).
    fn authorize(&self, authcid: &str, authzid: &str) -> Result<Login, AuthError> {
        let account = self.accounts.get(authcid).ok_or(AuthError::UnknownUser)?;
        let (user, account) = if authzid.is_empty() || authzid == authcid {
            (authcid, account)
        } else if account.role == Role::Admin {
            let target = self.accounts.get(authzid).ok_or(AuthError::NotAuthorized)?;
            (authzid, target)
        } else {
            return Err(AuthError::NotAuthorized);
        };
        Ok(Login { user: user.to_string(), role: account.role, identity: identity_of(account) })
    }

    /// Check a SASL PLAIN response (`authzid NUL authcid NUL password`).
    /// May run an argon2 verification: call from a blocking context.
    pub fn plain(&self, response: &[u8]) -> Result<Login, AuthError> {
        let (authzid, authcid, password) = split_plain(response).ok_or(AuthError::Malformed)?;
        let Some(account) = self.accounts.get(authcid) else {
            self.dummy_check(password);
            return Err(AuthError::UnknownUser);
        };
        self.check_password(authcid, account, password)?;
        self.authorize(authcid, authzid)
    }

    fn check_password(&self, user: &str, account: &Account, password: &[u8]) -> Result<(), AuthError> {
        match &account.secret {
            Secret::None => {
                self.dummy_check(password);
                Err(AuthError::WrongPassword)
            }
            Secret::Plain(p) => {
                if constant_time_eq(p, password) {
                    Ok(())
                } else {
                    self.dummy_check(password);
                    Err(AuthError::WrongPassword)
                }
            }
            Secret::Hash(h) => {
                let d = digest(user, password);
                if let Ok(cache) = self.verified.lock() {
                    if cache.get(user).is_some_and(|c| constant_time_eq(c, &d)) {
                        return Ok(());
                    }
                }
                if !self.verify(h, password) {
                    return Err(AuthError::WrongPassword);
                }
                if let Ok(mut cache) = self.verified.lock() {
                    cache.insert(user.to_string(), d);
                }
                Ok(())
            }
        }
    }
}

fn identity_of(account: &Account) -> Identity {
    match account.role {
        Role::Backend => Identity { servers: Some(account.servers.clone()) },
        Role::Admin | Role::Reader => Identity { servers: None },
    }
}

/// argon2 verification of `password` against `phc` in `memory` (grown to
/// the hash's own cost when needed): what `PasswordVerifier` does, without
/// a fresh allocation of the whole working memory each time.
fn verify_with(memory: &mut Vec<argon2::Block>, phc: &str, password: &[u8]) -> Option<bool> {
    let parsed = PasswordHash::new(phc).ok()?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(v) => argon2::Version::try_from(v).ok()?,
        None => argon2::Version::default(),
    };
    let params = argon2::Params::try_from(&parsed).ok()?;
    let expected = parsed.hash?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, &mut out, &mut memory[..])
        .ok()?;
    Some(constant_time_eq(&out, expected.as_bytes()))
}

/// `authzid NUL authcid NUL password`, the names as UTF-8.
fn split_plain(response: &[u8]) -> Option<(&str, &str, &[u8])> {
    let mut parts = response.split(|b| *b == 0);
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(z), Some(c), Some(p), None) => Some((std::str::from_utf8(z).ok()?, std::str::from_utf8(c).ok()?, p)),
        _ => None,
    }
}

/// The user a PLAIN response claims to be (its authcid), as sent: for the
/// log of a failed login. Empty when the response has no such field.
pub fn claimed_user(response: &[u8]) -> &[u8] {
    response.split(|b| *b == 0).nth(1).unwrap_or_default()
}

fn blake2_hex(bytes: &[u8]) -> String {
    Blake2b512::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Make a PHC string (argon2id, random salt) for `password_hash`, with the
/// argon2 crate's default cost: argon2id v19, m = 19456 KiB, t = 2, p = 1
/// (OWASP's first recommendation), about 20-40 ms of one core per check.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Vec<User> {
        vec![
            User {
                name: "admin".into(),
                password: Some("pw".into()),
                password_hash: None,
                scram_sha256: None,
                scram_sha1: None,
                certificate: None,
                role: Role::Admin,
                servers: vec![],
            },
            User {
                name: "be1".into(),
                password: None,
                password_hash: Some(hash_password("secret").unwrap()),
                scram_sha256: None,
                scram_sha1: None,
                certificate: None,
                role: Role::Backend,
                servers: vec!["be1".into()],
            },
            User {
                name: "fe".into(),
                password: Some("r".into()),
                password_hash: None,
                scram_sha256: None,
                scram_sha1: None,
                certificate: None,
                role: Role::Reader,
                servers: vec![],
            },
        ]
    }

    #[test]
    fn plain_logins() {
        let a = Authenticator::with_max_hash_checks(&users(), 2);
        let l = a.plain(b"\0admin\0pw").unwrap();
        assert_eq!((l.user.as_str(), l.role, l.identity.servers.clone()), ("admin", Role::Admin, None));
        assert!(l.may_write() && l.is_admin());
        assert_eq!(a.plain(b"admin\0admin\0pw").unwrap().user, "admin");
        assert_eq!(a.plain(b"\0admin\0pW"), Err(AuthError::WrongPassword));
        assert_eq!(a.plain(b"\0nobody\0pw"), Err(AuthError::UnknownUser));
        assert_eq!(a.plain(b"admin\0pw"), Err(AuthError::Malformed));
        let b = a.plain(b"\0be1\0secret").unwrap();
        assert_eq!(b.identity.servers, Some(vec![b"be1".to_vec()]));
        // Cached the second time, still checked.
        assert!(a.plain(b"\0be1\0secret").is_ok());
        assert_eq!(a.plain(b"\0be1\0secreT"), Err(AuthError::WrongPassword));
        let r = a.plain(b"\0fe\0r").unwrap();
        assert!(!r.may_write() && !r.is_admin());
        // Only admins may act as someone else.
        assert_eq!(a.plain(b"admin\0fe\0r"), Err(AuthError::NotAuthorized));
        assert_eq!(a.plain(b"fe\0admin\0pw").unwrap().user, "fe");
    }

    #[test]
    fn only_failures_and_uncached_hashes_need_a_hash_check() {
        let a = Authenticator::with_max_hash_checks(&users(), 2);
        assert!(!a.needs_hash(b"\0admin\0pw"), "plain, right");
        assert!(a.needs_hash(b"\0admin\0wrong"), "plain, wrong: dummy check");
        assert!(a.needs_hash(b"\0nobody\0x"), "unknown: dummy check");
        assert!(!a.needs_hash(b"garbage"), "malformed");
        assert!(a.needs_hash(b"\0be1\0secret"), "not yet cached");
        assert!(a.plain(b"\0be1\0secret").is_ok());
        assert!(!a.needs_hash(b"\0be1\0secret"), "cached");
        assert!(a.needs_hash(b"\0be1\0other"));
        // Without any hash configured, nothing is slow.
        let plain_only = Authenticator::new(&users()[..1]);
        assert!(!plain_only.needs_hash(b"\0nobody\0x") && !plain_only.needs_hash(b"\0admin\0x"));
        assert_eq!(claimed_user(b"z\0be1\0pw"), b"be1");
        assert_eq!(claimed_user(b"nonul"), b"");
    }

    fn user(name: &str, password: Option<&str>, hash: Option<String>, scram: Option<String>, cert: Option<&str>) -> User {
        User {
            name: name.into(),
            password: password.map(Into::into),
            password_hash: hash,
            scram_sha256: scram,
            scram_sha1: None,
            certificate: cert.map(Into::into),
            role: Role::Backend,
            servers: vec![name.into()],
        }
    }

    #[test]
    fn offering_policy() {
        let ctx = |in_tls, tls_required, verified_cert| SaslContext { in_tls, tls_required, verified_cert };
        let plain_only = [user("a", Some("pw"), None, None, None)];
        let with_cert = [user("a", Some("pw"), None, None, None), user("b", None, None, None, Some("b.example"))];
        let verifier = scram::Verifier::generate(scram::ScramHash::Sha256, b"pw", 4096).encode();
        let argon_only = [user("a", Some("pw"), None, None, None), user("h", None, Some(hash_password("x").unwrap()), None, None)];
        let argon_and_scram = [user("h", None, Some(hash_password("x").unwrap()), Some(verifier), None)];
        let a = |users: &[User]| Authenticator::with_max_hash_checks(users, 1);
        let table: Vec<(&[User], SaslContext, Vec<&str>)> = vec![
            (&plain_only, ctx(false, false, false), vec!["SCRAM-SHA-256", "PLAIN"]),
            (&plain_only, ctx(false, true, false), vec![]),
            (&plain_only, ctx(true, true, false), vec!["SCRAM-SHA-256", "PLAIN"]),
            // No certificate entry: EXTERNAL could not succeed.
            (&plain_only, ctx(true, true, true), vec!["SCRAM-SHA-256", "PLAIN"]),
            (&with_cert, ctx(false, false, false), vec!["SCRAM-SHA-256", "PLAIN"]),
            (&with_cert, ctx(true, false, false), vec!["SCRAM-SHA-256", "PLAIN"]),
            // A certificate-only entry can log in here, and not with SCRAM.
            (&with_cert, ctx(true, false, true), vec!["EXTERNAL", "PLAIN"]),
            (&with_cert, ctx(true, true, true), vec!["EXTERNAL", "PLAIN"]),
            // An argon2-only entry blocks SCRAM everywhere.
            (&argon_only, ctx(false, false, false), vec!["PLAIN"]),
            (&argon_only, ctx(true, true, false), vec!["PLAIN"]),
            (&argon_and_scram, ctx(false, false, false), vec!["SCRAM-SHA-256", "PLAIN"]),
        ];
        for (i, (users, c, want)) in table.into_iter().enumerate() {
            assert_eq!(a(users).offered(&c), want, "row {i}: {c:?}");
        }
        let sha1 = Authenticator::with_options(&plain_only, 1, SaslOptions { scram_sha1: true, ..SaslOptions::default() });
        assert_eq!(sha1.offered(&ctx(false, false, false)), ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
        let sha1_blocked = Authenticator::with_options(&argon_and_scram, 1, SaslOptions { scram_sha1: true, ..SaslOptions::default() });
        assert_eq!(sha1_blocked.offered(&ctx(false, false, false)), ["SCRAM-SHA-256", "PLAIN"]);
    }

    #[test]
    fn unknown_scram_users_get_a_stable_fake_salt() {
        let a = Authenticator::with_max_hash_checks(&[user("a", Some("pw"), None, None, None)], 1);
        let first = |u: &str| {
            let (_, out) = a.scram_start(scram::ScramHash::Sha256, format!("n,,n={u},r=abc").as_bytes()).unwrap();
            String::from_utf8(out).unwrap().split_once(",s=").unwrap().1.to_string()
        };
        assert_eq!(first("ghost"), first("ghost"), "same answer each time");
        assert_ne!(first("ghost"), first("other"));
        assert!(first("ghost").ends_with(",i=4096") && first("a").ends_with(",i=4096"));
    }
}
