//! Command dispatch in Cyrus's check order, and the commands themselves.

use tracing::{error, info, warn};

use super::{Expect, Next, Session, SessionError, Streaming};
use crate::net::log::Escaped;
use crate::protocol::parse::AuthAnswer;
use crate::protocol::{cyrus, ArgError, Command, Entry, Line, Response, Status, Verb};
use crate::store::key::server_of;
use crate::store::{Refusal, Reply, StoreError, WriteOutcome};

/// Answer to a write or read the store could not complete.
const INTERNAL_ERROR: &str = "internal error, see the server log";
/// Answer when the directory's disk fails (full, I/O error): the write
/// may not have been made durable; a Cyrus backend reports it and retries.
pub const STORAGE_FAILING: &str = "mupdate directory storage failing, try again later";
/// A SASL response that is not base64.
const INVALID_SASL: &str = "invalid SASL response";
/// A name, location or ACL holding a NUL byte cannot be a Cyrus string.
const NUL_IN_ARGUMENT: &str = "NUL byte in argument";
/// A write whose mailbox name is over `max_mailbox_name` (Cyrus has no
/// text: its buffers are MAX_MAILBOX_BUFFER bytes).
const NAME_TOO_LONG: &str = "mailbox name too long";
/// A location over `max_location`.
const LOCATION_TOO_LONG: &str = "location too long";
/// An ACL identifier over `max_acl_identifier`.
const ACL_IDENTIFIER_TOO_LONG: &str = "ACL identifier too long";
/// An ACL of more than `max_acl_entries` entries.
const TOO_MANY_ACL_ENTRIES: &str = "too many ACL entries";

/// The limits a write's arguments are checked against before the store is
/// touched: every one bounds the work and the bytes one command costs.
struct ArgLimits {
    name: usize,
    location: usize,
    identifier: usize,
    entries: usize,
}

impl ArgLimits {
    fn of(c: &crate::config::Config) -> ArgLimits {
        ArgLimits {
            name: c.max_mailbox_name,
            location: c.max_location,
            identifier: c.max_acl_identifier,
            entries: c.max_acl_entries,
        }
    }

    /// The `NO` text for the first argument over its limit, logged once.
    fn check(&self, name: &[u8], location: Option<&[u8]>, acl: Option<&[u8]>) -> Result<(), &'static str> {
        let refuse = |text: &'static str, limit: usize, got: usize| {
            warn!(limit, got, mailbox_prefix = %String::from_utf8_lossy(&name[..name.len().min(64)]), "refused: {text}");
            Err(text)
        };
        if name.len() > self.name {
            return refuse(NAME_TOO_LONG, self.name, name.len());
        }
        if let Some(l) = location.filter(|l| l.len() > self.location) {
            return refuse(LOCATION_TOO_LONG, self.location, l.len());
        }
        if let Some(acl) = acl {
            // Counted as the store parses it (`id TAB rights TAB`, empty
            // identifiers skipped), without allocating.
            let (mut entries, mut fields) = (0usize, acl.split(|&b| b == b'\t'));
            while let (Some(id), Some(_)) = (fields.next(), fields.next()) {
                if id.len() > self.identifier {
                    return refuse(ACL_IDENTIFIER_TOO_LONG, self.identifier, id.len());
                }
                if !id.is_empty() {
                    entries += 1;
                    if entries > self.entries {
                        return refuse(TOO_MANY_ACL_ENTRIES, self.entries, entries);
                    }
                }
            }
        }
        Ok(())
    }
}

fn arg_error_text(e: ArgError) -> &'static str {
    match e {
        ArgError::Missing => cyrus::MISSING_ARGS,
        ArgError::Extra => cyrus::EXTRA_ARGS,
        ArgError::BadlyFormed => cyrus::BADLY_FORMED,
        ArgError::NotBase64 => INVALID_SASL,
    }
}

fn entry_location(entry: &Entry) -> &[u8] {
    match entry {
        Entry::Mailbox { location, .. } | Entry::Reserve { location, .. } => location,
    }
}

impl Session {
    pub(super) async fn dispatch(&mut self, line: Line) -> Result<Next, SessionError> {
        let (tag, verb, args) = match line {
            Line::NeedCommand => {
                self.tagged(b"*", Status::Bad, cyrus::NEED_COMMAND).await?;
                return Ok(Next::Continue);
            }
            Line::NullCommand { tag } => {
                self.tagged(&tag, Status::Bad, cyrus::NULL_COMMAND).await?;
                return Ok(Next::Continue);
            }
            Line::Command { tag, verb, args } => (tag, verb, args),
        };
        match verb {
            Verb::Authenticate => {
                let cmd = match args {
                    Ok(c) => c,
                    // Cyrus answers NO when SASL cannot decode the response.
                    Err(ArgError::NotBase64) => return self.no(&tag, INVALID_SASL).await,
                    Err(e) => return self.bad(&tag, arg_error_text(e)).await,
                };
                if self.login.is_some() {
                    return self.bad(&tag, cyrus::ALREADY_AUTHENTICATED).await;
                }
                let Command::Authenticate { mechanism, initial_response } = cmd else {
                    return self.bad(&tag, cyrus::UNRECOGNIZED).await;
                };
                self.start_authenticate(tag, mechanism, initial_response).await
            }
            Verb::Logout => {
                if let Err(e) = args {
                    return self.bad(&tag, arg_error_text(e)).await;
                }
                self.tagged(&tag, Status::Ok, cyrus::BYE_BYE).await?;
                Ok(Next::Close)
            }
            // No TLS and no COMPRESS yet: answered as Cyrus built without them.
            Verb::Starttls | Verb::Compress => self.bad(&tag, cyrus::UNRECOGNIZED).await,
            Verb::Unknown { needs_login } => {
                if needs_login && self.login.is_none() {
                    self.bad(&tag, cyrus::PLEASE_LOGIN).await
                } else {
                    self.bad(&tag, cyrus::UNRECOGNIZED).await
                }
            }
            // Cyrus has no command starting with X: unknown before login.
            Verb::Admin(_) if self.login.is_none() => self.bad(&tag, cyrus::UNRECOGNIZED).await,
            _ => {
                let Some(login) = &self.login else {
                    return self.bad(&tag, cyrus::PLEASE_LOGIN).await;
                };
                if let Verb::Admin(_) = verb {
                    if !login.is_admin() {
                        return self.bad(&tag, cyrus::UNRECOGNIZED).await;
                    }
                }
                let cmd = match args {
                    Ok(c) => c,
                    Err(e) => return self.bad(&tag, arg_error_text(e)).await,
                };
                if self.streaming.is_some() && !matches!(cmd, Command::Noop) {
                    return self.bad(&tag, cyrus::NOT_WHEN_STREAMING).await;
                }
                let writes = matches!(
                    cmd,
                    Command::Activate { .. }
                        | Command::Reserve { .. }
                        | Command::Deactivate { .. }
                        | Command::Delete { .. }
                );
                if writes && !login.may_write() {
                    return self.bad(&tag, cyrus::READ_ONLY).await;
                }
                self.execute(tag, cmd).await
            }
        }
    }

    async fn bad(&mut self, tag: &[u8], text: &str) -> Result<Next, SessionError> {
        self.tagged(tag, Status::Bad, text).await?;
        Ok(Next::Continue)
    }

    async fn execute(&mut self, tag: Vec<u8>, cmd: Command) -> Result<Next, SessionError> {
        let identity = self.login.as_ref().map(|l| l.identity.clone()).unwrap_or_default();
        let store = self.shared.store.clone();
        match cmd {
            Command::Activate { name, location, acl } => {
                if [&name, &location, &acl].iter().any(|a| a.contains(&0)) {
                    return self.no(&tag, NUL_IN_ARGUMENT).await;
                }
                if let Err(text) = ArgLimits::of(&self.shared.config).check(&name, Some(&location), Some(&acl)) {
                    return self.no(&tag, text).await;
                }
                let r = store.activate(&identity, &name, &location, &acl).await;
                self.write_done(&tag, r).await
            }
            Command::Reserve { name, location } => {
                if name.contains(&0) || location.contains(&0) {
                    return self.no(&tag, NUL_IN_ARGUMENT).await;
                }
                if let Err(text) = ArgLimits::of(&self.shared.config).check(&name, Some(&location), None) {
                    return self.no(&tag, text).await;
                }
                let r = store.reserve(&identity, &name, &location).await;
                self.write_done(&tag, r).await
            }
            Command::Deactivate { name, location } => {
                if name.contains(&0) || location.contains(&0) {
                    return self.no(&tag, NUL_IN_ARGUMENT).await;
                }
                if let Err(text) = ArgLimits::of(&self.shared.config).check(&name, Some(&location), None) {
                    return self.no(&tag, text).await;
                }
                let r = store.deactivate(&identity, &name, &location).await;
                self.write_done(&tag, r).await
            }
            Command::Delete { name } => {
                if name.contains(&0) {
                    return self.no(&tag, NUL_IN_ARGUMENT).await;
                }
                let r = store.delete(&identity, &name).await;
                self.write_done(&tag, r).await
            }
            Command::Find { name } => {
                match store.find_durable(&identity, &name).await {
                    Ok(Some(entry)) => self.conn.send(&Response::Entry { tag: tag.clone(), entry }).await?,
                    Ok(None) => {}
                    Err(e) => return self.internal(&tag, e).await,
                }
                self.tagged(&tag, Status::Ok, cyrus::SEARCH_COMPLETED).await?;
                Ok(Next::Continue)
            }
            Command::List { prefix } => {
                let mark = store.scan_mark();
                let entries = match &prefix {
                    Some(p) => store.list_prefix(p),
                    None => store.list(),
                };
                for entry in entries {
                    match entry {
                        Ok(entry) => self.conn.send(&Response::Entry { tag: tag.clone(), entry }).await?,
                        Err(e) => return self.internal(&tag, e).await,
                    }
                }
                if let Err(e) = store.scan_durable(mark).await {
                    return self.internal(&tag, e).await;
                }
                self.tagged(&tag, Status::Ok, cyrus::LIST_COMPLETE).await?;
                Ok(Next::Continue)
            }
            Command::Update { hosts } => self.start_update(tag, hosts).await,
            Command::Noop => {
                self.flush_stream().await?;
                self.tagged(&tag, Status::Ok, cyrus::NOOP_DONE).await?;
                Ok(Next::Continue)
            }
            Command::Admin { verb, args } => self.admin(tag, verb, args).await,
            // Handled in dispatch.
            Command::Authenticate { .. } | Command::Logout | Command::Starttls | Command::Compress { .. } => {
                self.bad(&tag, cyrus::UNRECOGNIZED).await
            }
        }
    }

    async fn no(&mut self, tag: &[u8], text: &str) -> Result<Next, SessionError> {
        self.tagged(tag, Status::No, text).await?;
        Ok(Next::Continue)
    }

    async fn internal(&mut self, tag: &[u8], e: StoreError) -> Result<Next, SessionError> {
        if e.is_storage_failure() {
            // The store logs the failing and recovered states once each.
            tracing::debug!(error = %e, "storage failing");
            return self.no(tag, STORAGE_FAILING).await;
        }
        error!(error = %e, "store failure");
        if let StoreError::Damaged(_) = e {
            return self.no(tag, super::admin::DAMAGED).await;
        }
        self.no(tag, INTERNAL_ERROR).await
    }

    async fn write_done(&mut self, tag: &[u8], r: Result<WriteOutcome, StoreError>) -> Result<Next, SessionError> {
        match r {
            Ok(outcome) => {
                // Durable by now, and the streams were told by the store.
                match outcome.reply {
                    Reply::Done => self.tagged(tag, Status::Ok, cyrus::DONE).await?,
                    Reply::No(r) => self.tagged(tag, Status::No, refusal_text(r)).await?,
                }
                Ok(Next::Continue)
            }
            Err(e) => self.internal(tag, e).await,
        }
    }

    /// UPDATE: register first, then dump the directory in order straight
    /// from the store, then stream. Never answered with NO/BAD/BYE: a Cyrus
    /// slave takes those as an empty directory and deletes its whole list,
    /// so any failure here closes the connection instead.
    async fn start_update(&mut self, tag: Vec<u8>, hosts: Vec<Vec<u8>>) -> Result<Next, SessionError> {
        let registration = self.shared.hub.subscribe(&hosts);
        let subscription = registration.subscription();
        let hosts_filter = subscription.hosts();
        let mark = self.shared.store.scan_mark();
        let (store, conn) = (&self.shared.store, &mut self.conn);
        let dump = async {
            for entry in store.list() {
                let entry = entry?;
                if let Some(h) = hosts_filter {
                    // The same server the change stream's filter uses.
                    if !h.contains(server_of(entry_location(&entry))) {
                        continue;
                    }
                }
                conn.send(&Response::Entry { tag: tag.clone(), entry }).await?;
            }
            Ok::<(), SessionError>(())
        };
        // Changes queue up while the dump is written: a peer that stops
        // reading during it is closed as soon as its stream overflows.
        tokio::select! {
            r = dump => r?,
            overflow = subscription.overflowed() => return Err(overflow.into()),
        }
        // The dump may have shown writes not yet durable: wait for them.
        self.shared.store.scan_durable(mark).await?;
        self.tagged(&tag, Status::Ok, cyrus::STREAMING_STARTS).await?;
        info!(hosts = hosts.len(), "streaming");
        self.streaming = Some(Streaming { tag, registration });
        Ok(Next::Continue)
    }

    async fn start_authenticate(
        &mut self,
        tag: Vec<u8>,
        mechanism: Vec<u8>,
        initial_response: Option<Vec<u8>>,
    ) -> Result<Next, SessionError> {
        if !mechanism.eq_ignore_ascii_case(b"PLAIN") {
            return self.no(&tag, "unsupported mechanism").await;
        }
        match initial_response {
            Some(data) => self.finish_authenticate(tag, AuthAnswer::Data(data)).await,
            None => {
                self.conn.send(&Response::Challenge { data: Vec::new() }).await?;
                self.expect = Expect::AuthAnswer { tag };
                Ok(Next::Continue)
            }
        }
    }

    pub(super) async fn finish_authenticate(&mut self, tag: Vec<u8>, answer: AuthAnswer) -> Result<Next, SessionError> {
        let data = match answer {
            AuthAnswer::Data(d) => d,
            AuthAnswer::Cancel => return self.no(&tag, "client canceled authentication").await,
            AuthAnswer::Invalid => return self.no(&tag, INVALID_SASL).await,
        };
        let shared = self.shared.clone();
        let peer = self.slot.as_ref().map(|s| (s.admission().clone(), s.peer()));
        // A peer address whose logins failed waits before its next check
        // (within the login deadline, which ends the session).
        if let Some(until) = peer.as_ref().and_then(|(a, ip)| a.backoff_until(*ip)) {
            tokio::time::sleep_until(until.into()).await;
        }
        let auth = shared.auth.clone();
        let result = if auth.needs_hash(&data) {
            // At most max_hash_checks argon2 runs at once; the rest queue
            // here, each within its own login deadline.
            match auth.hash_permits().clone().acquire_owned().await {
                Ok(permit) => {
                    let (a, d) = (auth.clone(), data.clone());
                    match tokio::task::spawn_blocking(move || {
                        let r = a.plain(&d);
                        drop(permit);
                        r
                    })
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(crate::auth::AuthError::Malformed),
                    }
                }
                Err(_) => Err(crate::auth::AuthError::Malformed),
            }
        } else {
            auth.plain(&data)
        };
        match result {
            Ok(login) => {
                if let Some((a, ip)) = &peer {
                    a.login_succeeded(*ip);
                }
                if !self.logged_in() {
                    return Ok(Next::Close);
                }
                tracing::Span::current().record("user", tracing::field::display(Escaped(login.user.as_bytes())));
                info!(role = ?login.role, "logged in");
                self.login = Some(login);
                self.tagged(&tag, Status::Ok, cyrus::AUTHENTICATED).await?;
            }
            Err(e) => {
                if let Some((a, ip)) = &peer {
                    a.login_failed(*ip);
                }
                // user and peer for fail2ban and the like, escaped.
                let user = Escaped(crate::auth::claimed_user(&data));
                warn!(user = %user, peer = %self.peer_ip(), reason = %e, "failed login");
                self.conn.flush().await?;
                tokio::time::sleep(std::time::Duration::from_secs(shared.config.failed_login_pause)).await;
                self.tagged(&tag, Status::No, "authentication failed").await?;
            }
        }
        Ok(Next::Continue)
    }
}

/// The wire text of a refused write (Cyrus's, with its source pointers in
/// src/protocol/cyrus.rs).
pub(super) fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::MailboxExists => cyrus::MAILBOX_EXISTS,
        Refusal::NoSuchMailbox => cyrus::DOESNT_EXIST,
        Refusal::NotActive => cyrus::NOT_ACTIVE,
        Refusal::NotServed => cyrus::NOT_SERVED,
    }
}
