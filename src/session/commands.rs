//! Command dispatch in Cyrus's check order, and the commands themselves.

use tracing::{error, info, warn};

use super::{Expect, Next, Session, SessionError, Streaming};
use crate::protocol::parse::AuthAnswer;
use crate::protocol::{cyrus, ArgError, Command, Entry, Line, Response, Status, Verb};
use crate::store::key::server_of;
use crate::store::{Reply, StoreError, WriteOutcome};

/// Answer to a write or read the store could not complete.
const INTERNAL_ERROR: &str = "internal error, see the server log";
/// A SASL response that is not base64.
const INVALID_SASL: &str = "invalid SASL response";
/// A name, location or ACL holding a NUL byte cannot be a Cyrus string.
const NUL_IN_ARGUMENT: &str = "NUL byte in argument";

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
                    Command::Activate { .. } | Command::Reserve { .. } | Command::Deactivate { .. } | Command::Delete { .. }
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
                let r = store.activate(&identity, &name, &location, &acl).await;
                self.write_done(&tag, r).await
            }
            Command::Reserve { name, location } => {
                if name.contains(&0) || location.contains(&0) {
                    return self.no(&tag, NUL_IN_ARGUMENT).await;
                }
                let r = store.reserve(&identity, &name, &location).await;
                self.write_done(&tag, r).await
            }
            Command::Deactivate { name, location } => {
                if name.contains(&0) || location.contains(&0) {
                    return self.no(&tag, NUL_IN_ARGUMENT).await;
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
                match store.find(&identity, &name) {
                    Ok(Some(entry)) => self.conn.send(&Response::Entry { tag: tag.clone(), entry }).await?,
                    Ok(None) => {}
                    Err(e) => return self.internal(&tag, e).await,
                }
                self.tagged(&tag, Status::Ok, cyrus::SEARCH_COMPLETED).await?;
                Ok(Next::Continue)
            }
            Command::List { prefix } => {
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
        error!(error = %e, "store failure");
        if let StoreError::Damaged(_) = e {
            return self.no(tag, super::admin::DAMAGED).await;
        }
        self.no(tag, INTERNAL_ERROR).await
    }

    async fn write_done(&mut self, tag: &[u8], r: Result<WriteOutcome, StoreError>) -> Result<Next, SessionError> {
        match r {
            Ok(outcome) => {
                // Durable by now: tell the streams, then the writer.
                self.shared.hub.publish(&outcome.changes);
                match outcome.reply {
                    Reply::Done => self.tagged(tag, Status::Ok, cyrus::DONE).await?,
                    Reply::No(text) => self.tagged(tag, Status::No, text).await?,
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
        let hosts_filter = registration.subscription().hosts().cloned();
        for entry in self.shared.store.list() {
            let entry = entry?;
            if let Some(h) = &hosts_filter {
                // The same server the change stream's filter uses.
                if !h.contains(server_of(entry_location(&entry))) {
                    continue;
                }
            }
            self.conn.send(&Response::Entry { tag: tag.clone(), entry }).await?;
        }
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
        let result = if shared.auth.is_slow() {
            let s = shared.clone();
            match tokio::task::spawn_blocking(move || s.auth.plain(&data)).await {
                Ok(r) => r,
                Err(_) => Err(crate::auth::AuthError::Malformed),
            }
        } else {
            shared.auth.plain(&data)
        };
        match result {
            Ok(login) => {
                tracing::Span::current().record("user", login.user.as_str());
                info!(role = ?login.role, "logged in");
                self.login = Some(login);
                self.tagged(&tag, Status::Ok, cyrus::AUTHENTICATED).await?;
            }
            Err(e) => {
                warn!(reason = %e, "failed login");
                self.conn.flush().await?;
                tokio::time::sleep(std::time::Duration::from_secs(shared.config.failed_login_pause)).await;
                self.tagged(&tag, Status::No, "authentication failed").await?;
            }
        }
        Ok(Next::Continue)
    }
}
