//! Logins: SASL PLAIN against the configured users, roles and identities.

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
}

enum Secret {
    Plain(Vec<u8>),
    Hash(String),
}

struct Account {
    role: Role,
    servers: Vec<Vec<u8>>,
    secret: Secret,
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
        let accounts: HashMap<String, Account> = users
            .iter()
            .map(|u| {
                let secret = match (&u.password, &u.password_hash) {
                    (_, Some(h)) => Secret::Hash(h.clone()),
                    (Some(p), None) => Secret::Plain(p.as_bytes().to_vec()),
                    (None, None) => Secret::Plain(Vec::new()),
                };
                let servers = u.servers.iter().map(|s| s.as_bytes().to_vec()).collect();
                (u.name.clone(), Account { role: u.role, servers, secret })
            })
            .collect();
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

    /// SASL mechanisms offered in the greeting.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        &["PLAIN"]
    }

    /// The mechanisms a connection is offered in its `* AUTH` line: only
    /// those every login that may pick one can complete there (a Cyrus
    /// client never falls back from the one it picks). Nothing before TLS
    /// when TLS is required (the client then sends STARTTLS).
    pub fn offered(&self, ctx: &SaslContext) -> Vec<&'static str> {
        if ctx.tls_required && !ctx.in_tls {
            return Vec::new();
        }
        self.mechanisms().to_vec()
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
        // An admin may act as another configured user (as Cyrus's admins may).
        let (user, account) = if authzid.is_empty() || authzid == authcid {
            (authcid, account)
        } else if account.role == Role::Admin {
            let target = self.accounts.get(authzid).ok_or(AuthError::NotAuthorized)?;
            (authzid, target)
        } else {
            return Err(AuthError::NotAuthorized);
        };
        let identity = match account.role {
            Role::Backend => Identity { servers: Some(account.servers.clone()) },
            Role::Admin | Role::Reader => Identity { servers: None },
        };
        Ok(Login { user: user.to_string(), role: account.role, identity })
    }

    fn check_password(&self, user: &str, account: &Account, password: &[u8]) -> Result<(), AuthError> {
        match &account.secret {
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
                role: Role::Admin,
                servers: vec![],
            },
            User {
                name: "be1".into(),
                password: None,
                password_hash: Some(hash_password("secret").unwrap()),
                role: Role::Backend,
                servers: vec!["be1".into()],
            },
            User {
                name: "fe".into(),
                password: Some("r".into()),
                password_hash: None,
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
}
