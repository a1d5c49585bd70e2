//! `AUTHENTICATE`: a SASL login (SCRAM-SHA-256, SCRAM-SHA-1, EXTERNAL, PLAIN).
//!
//! Grammar (RFC 3656 4.1 and Cyrus's client; `protocol::parse`):
//! `tag SP "AUTHENTICATE" SP string(mechanism) [SP string(initial-response)]`;
//! the response is base64, `"="` for an empty one (`imap/saslserver.c`).
//! Without an initial response the server sends an empty challenge `+ ""`
//! and the next message is the client's answer (`*` cancels).
//! A mechanism not offered on this connection ([`crate::auth::Authenticator::offered`])
//! is `NO "unsupported mechanism"`.
//!
//! SCRAM takes two more rounds, in the shapes of Cyrus's master and client
//! (`imap/mupdate.c: cmd_authenticate` calls `saslserver` with empty
//! continuation and response prefixes; `imap/saslclient.c` reads every line
//! that is not `A01 OK`/`A01 NO` as base64): the server-first and
//! server-final messages go out as bare base64 lines, the client's answers
//! come back as bare base64 lines (quoted strings and literals are taken
//! too), and after server-final the client sends an empty line, then reads
//! the OK. A wrong proof, an unknown user (who is answered a fake salt) and
//! a malformed message all fail the same way.
//!
//! Checks: arguments (a response that is not base64 is `NO "invalid SASL
//! response"`: SASL fails to decode it in Cyrus), then no login yet
//! (`BAD "already authenticated"`).
//! Answer: `OK "Authenticated"` (Cyrus: `cmd_authenticate`); `NO
//! "unsupported mechanism"`, `NO "client canceled authentication"`, or,
//! after `failed_login_pause`, `NO "authentication failed"`. Failures of
//! one peer address back off its next attempts (admission); at most
//! `max_hash_checks` password hashes run at once (SCRAM runs none: its
//! verifiers are computed at start or configured).

use base64::Engine;
use tokio::io::AsyncWrite;
use tracing::{info, warn};

use super::{always, Gate, Role, Spec};
use crate::net::connection::Output;
use crate::auth::scram::ScramHash;
use crate::auth::{AuthError, Login, ScramLogin};
use crate::net::log::Escaped;
use crate::protocol::parse::AuthAnswer;
use crate::protocol::{cyrus, Response, Status};
use crate::session::dispatch::no;
use crate::session::{Expect, Next, SessionError, State};

/// A SASL response that is not base64.
pub(in crate::session) const INVALID_SASL: &str = "invalid SASL response";
/// A mechanism not offered on this connection.
const UNSUPPORTED_MECHANISM: &str = "unsupported mechanism";
/// Wrong user or password (after the pause).
const FAILED: &str = "authentication failed";

/// Before login only.
pub(in crate::session) const SPEC: Spec = Spec {
    offered: always,
    login: Gate::None,
    when_streaming: true,
    role: Role::NotLoggedIn(cyrus::ALREADY_AUTHENTICATED),
};

/// Where an AUTHENTICATE stands while the session waits for the client's
/// next answer.
#[derive(Debug)]
pub(in crate::session) enum Step {
    /// PLAIN's response, after the empty challenge.
    Plain,
    /// SCRAM's client-first message, after the empty challenge.
    ScramFirst(ScramHash),
    /// SCRAM's client-final message, after server-first.
    ScramFinal(Box<ScramLogin>),
    /// The empty line after server-final; the login is made.
    ScramDone(Box<Login>, ScramHash),
    /// EXTERNAL's authorization id, after the empty challenge.
    External,
}

/// Start AUTHENTICATE: finish it with the initial response, or challenge.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    mechanism: Vec<u8>,
    initial_response: Option<Vec<u8>>,
) -> Result<Next, SessionError> {
    let offered = st.caps.auth.iter().find(|m| m.as_bytes().eq_ignore_ascii_case(&mechanism)).copied();
    let step = match offered {
        Some("PLAIN") => Step::Plain,
        Some("SCRAM-SHA-256") => Step::ScramFirst(ScramHash::Sha256),
        Some("SCRAM-SHA-1") => Step::ScramFirst(ScramHash::Sha1),
        Some("EXTERNAL") => Step::External,
        _ => return no(out, &tag, UNSUPPORTED_MECHANISM).await,
    };
    match initial_response {
        Some(data) => answer(st, out, tag, step, AuthAnswer::Data(data)).await,
        None => {
            out.send(&Response::Challenge { data: Vec::new() }).await?;
            st.expect = Expect::AuthAnswer { tag, step };
            Ok(Next::Continue)
        }
    }
}

/// Take the client's answer (the initial response, or the answer to a
/// challenge) at `step`: challenge again or answer.
pub(in crate::session) async fn answer<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    step: Step,
    answer: AuthAnswer,
) -> Result<Next, SessionError> {
    let data = match answer {
        AuthAnswer::Data(d) => d,
        AuthAnswer::Cancel => return no(out, &tag, cyrus::CLIENT_CANCELED).await,
        AuthAnswer::Invalid => return no(out, &tag, INVALID_SASL).await,
    };
    let auth = st.app.auth.clone();
    match step {
        Step::Plain => plain(st, out, tag, data).await,
        Step::ScramFirst(hash) => match auth.scram_start(hash, &data) {
            Ok((login, server_first)) => {
                out.send_line(base64::engine::general_purpose::STANDARD.encode(server_first).as_bytes()).await?;
                st.expect = Expect::AuthAnswer { tag, step: Step::ScramFinal(Box::new(login)) };
                Ok(Next::Continue)
            }
            Err(e) => failed(st, out, &tag, hash.mechanism(), b"", &e).await,
        },
        Step::ScramFinal(login) => {
            backoff(st).await;
            let user = crate::auth::Authenticator::scram_user(&login).as_bytes().to_vec();
            let hash = login.hash();
            match auth.scram_finish(*login, &data) {
                Ok((login, server_final)) => {
                    out.send_line(base64::engine::general_purpose::STANDARD.encode(server_final).as_bytes()).await?;
                    st.expect = Expect::AuthAnswer { tag, step: Step::ScramDone(Box::new(login), hash) };
                    Ok(Next::Continue)
                }
                Err(e) => failed(st, out, &tag, hash.mechanism(), &user, &e).await,
            }
        }
        Step::ScramDone(login, hash) => {
            if !data.is_empty() {
                let user = login.user.as_bytes().to_vec();
                return failed(st, out, &tag, hash.mechanism(), &user, &AuthError::Malformed).await;
            }
            succeeded(st, out, &tag, hash.mechanism(), *login).await
        }
        Step::External => {
            backoff(st).await;
            let names = st.tls.as_ref().and_then(|t| t.client_names.clone());
            match auth.external(names.as_deref(), &data) {
                Ok(login) => succeeded(st, out, &tag, "EXTERNAL", login).await,
                Err(e) => failed(st, out, &tag, "EXTERNAL", &data, &e).await,
            }
        }
    }
}

/// A peer address whose logins failed waits before its next check
/// (within the login deadline, which ends the session).
async fn backoff(st: &State) {
    let peer = st.slot.as_ref().and_then(|s| Some((s.admission().clone(), s.peer()?)));
    if let Some(until) = peer.as_ref().and_then(|(a, ip)| a.backoff_until(*ip)) {
        tokio::time::sleep_until(until.into()).await;
    }
}

/// A login: lift the pre-login limits and answer OK.
async fn succeeded<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: &[u8],
    mechanism: &str,
    login: Login,
) -> Result<Next, SessionError> {
    if let Some((a, ip)) = st.slot.as_ref().and_then(|s| Some((s.admission().clone(), s.peer()?))) {
        a.login_succeeded(ip);
    }
    if !st.logged_in() {
        return Ok(Next::Close);
    }
    tracing::Span::current().record("user", tracing::field::display(Escaped(login.user.as_bytes())));
    info!(role = ?login.role, mechanism, tls = st.tls.is_some(), "logged in");
    st.login = Some(login);
    State::tagged(out, tag, Status::Ok, cyrus::AUTHENTICATED).await?;
    Ok(Next::Continue)
}

/// A failed login: log it, count it against the peer, and answer NO after
/// the pause.
async fn failed<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: &[u8],
    mechanism: &str,
    user: &[u8],
    e: &AuthError,
) -> Result<Next, SessionError> {
    if let Some((a, ip)) = st.slot.as_ref().and_then(|s| Some((s.admission().clone(), s.peer()?))) {
        a.login_failed(ip);
    }
    // user and peer for fail2ban and the like, escaped.
    let user = Escaped(user);
    warn!(user = %user, peer = %st.peer.describe(), mechanism, reason = %e, "failed login");
    out.flush().await?;
    tokio::time::sleep(std::time::Duration::from_secs(st.app.config.failed_login_pause)).await;
    State::tagged(out, tag, Status::No, FAILED).await?;
    Ok(Next::Continue)
}

/// Check a PLAIN response and answer.
async fn plain<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    data: Vec<u8>,
) -> Result<Next, SessionError> {
    let app = st.app.clone();
    backoff(st).await;
    let auth = app.auth.clone();
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
                    Err(_) => Err(AuthError::Malformed),
                }
            }
            Err(_) => Err(AuthError::Malformed),
        }
    } else {
        auth.plain(&data)
    };
    match result {
        Ok(login) => succeeded(st, out, &tag, "PLAIN", login).await,
        Err(e) => failed(st, out, &tag, "PLAIN", crate::auth::claimed_user(&data), &e).await,
    }
}
