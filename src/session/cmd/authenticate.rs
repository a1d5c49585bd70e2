//! `AUTHENTICATE`: a SASL login (PLAIN).
//!
//! Grammar (RFC 3656 4.1 and Cyrus's client; `protocol::parse`):
//! `tag SP "AUTHENTICATE" SP string(mechanism) [SP string(initial-response)]`;
//! the response is base64, `"="` for an empty one (`imap/saslserver.c`).
//! Without an initial response the server sends an empty challenge `+ ""`
//! and the next message is the client's answer (`*` cancels).
//! Checks: arguments (a response that is not base64 is `NO "invalid SASL
//! response"`: SASL fails to decode it in Cyrus), then no login yet
//! (`BAD "already authenticated"`).
//! Answer: `OK "Authenticated"` (Cyrus: `cmd_authenticate`); `NO
//! "unsupported mechanism"`, `NO "client canceled authentication"`, or,
//! after `failed_login_pause`, `NO "authentication failed"`. Failures of
//! one peer address back off its next attempts (admission); at most
//! `max_hash_checks` password hashes run at once.

use tokio::io::AsyncWrite;
use tracing::{info, warn};

use super::{always, Gate, Role, Spec};
use crate::net::connection::Output;
use crate::net::log::Escaped;
use crate::protocol::parse::AuthAnswer;
use crate::protocol::{cyrus, Response, Status};
use crate::session::dispatch::no;
use crate::session::{Expect, Next, SessionError, State};

/// A SASL response that is not base64.
pub(in crate::session) const INVALID_SASL: &str = "invalid SASL response";
/// A mechanism other than PLAIN.
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

/// Start AUTHENTICATE: finish it with the initial response, or challenge.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    mechanism: Vec<u8>,
    initial_response: Option<Vec<u8>>,
) -> Result<Next, SessionError> {
    // Only what this connection offers (none before TLS when TLS is
    // required): a client cannot log in with what the banner left out.
    let offered = st.caps.auth.iter().any(|m| m.as_bytes().eq_ignore_ascii_case(&mechanism));
    if !offered || !mechanism.eq_ignore_ascii_case(b"PLAIN") {
        return no(out, &tag, UNSUPPORTED_MECHANISM).await;
    }
    match initial_response {
        Some(data) => finish(st, out, tag, AuthAnswer::Data(data)).await,
        None => {
            out.send(&Response::Challenge { data: Vec::new() }).await?;
            st.expect = Expect::AuthAnswer { tag };
            Ok(Next::Continue)
        }
    }
}

/// Check the credentials (the initial response or the answer to the
/// challenge) and answer.
pub(in crate::session) async fn finish<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    answer: AuthAnswer,
) -> Result<Next, SessionError> {
    let data = match answer {
        AuthAnswer::Data(d) => d,
        AuthAnswer::Cancel => return no(out, &tag, cyrus::CLIENT_CANCELED).await,
        AuthAnswer::Invalid => return no(out, &tag, INVALID_SASL).await,
    };
    let app = st.app.clone();
    let peer = st.slot.as_ref().and_then(|s| Some((s.admission().clone(), s.peer()?)));
    // A peer address whose logins failed waits before its next check
    // (within the login deadline, which ends the session).
    if let Some(until) = peer.as_ref().and_then(|(a, ip)| a.backoff_until(*ip)) {
        tokio::time::sleep_until(until.into()).await;
    }
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
            if !st.logged_in() {
                return Ok(Next::Close);
            }
            tracing::Span::current().record("user", tracing::field::display(Escaped(login.user.as_bytes())));
            info!(role = ?login.role, "logged in");
            st.login = Some(login);
            State::tagged(out, &tag, Status::Ok, cyrus::AUTHENTICATED).await?;
        }
        Err(e) => {
            if let Some((a, ip)) = &peer {
                a.login_failed(*ip);
            }
            // user and peer for fail2ban and the like, escaped.
            let user = Escaped(crate::auth::claimed_user(&data));
            warn!(user = %user, peer = %st.peer.describe(), reason = %e, "failed login");
            out.flush().await?;
            tokio::time::sleep(std::time::Duration::from_secs(app.config.failed_login_pause)).await;
            State::tagged(out, &tag, Status::No, FAILED).await?;
        }
    }
    Ok(Next::Continue)
}
