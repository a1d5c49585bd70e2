//! `STARTTLS`: the client asks for TLS on this connection.
//!
//! Grammar (RFC 3656 4.9; `protocol::parse`): `tag SP "STARTTLS"`.
//! Offered only when [`Capabilities::starttls`] is set (the connection
//! layer sets it when it can wrap the stream in TLS); otherwise an unknown
//! word, `BAD "Unrecognized command"`, as from a Cyrus built without TLS.
//! Checks when offered (Cyrus: `docmd`, case 'S'): arguments, then no
//! login yet (`BAD "Can't Starttls after authentication"`), then not in
//! TLS already (`BAD "Already did a successful Starttls"`).
//! Answer: `OK "Begin TLS negotiation now"` (Cyrus: `cmd_starttls`),
//! flushed; then the session ends with [`crate::session::Ended::Upgrade`]
//! and hands its stream to the connection layer, which wraps it and
//! resumes a session that greets again (Cyrus reissues its banner). Input
//! pipelined after STARTTLS is dropped, as Cyrus does.

use tokio::io::AsyncWrite;

use super::{Gate, Role, Spec};
use crate::net::connection::Output;
use crate::protocol::{cyrus, Status};
use crate::session::capabilities::Capabilities;
use crate::session::{Next, SessionError, State};

/// Before login, when offered.
pub(in crate::session) const SPEC: Spec = Spec {
    offered: when_tls,
    login: Gate::None,
    when_streaming: false,
    role: Role::NotLoggedIn(cyrus::STARTTLS_AFTER_AUTH),
};

fn when_tls(caps: &Capabilities) -> bool {
    caps.starttls || caps.in_tls
}

/// Answer STARTTLS and ask for the stream to be handed over.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
) -> Result<Next, SessionError> {
    if st.caps.in_tls {
        State::tagged(out, &tag, Status::Bad, cyrus::STARTTLS_TWICE).await?;
        return Ok(Next::Continue);
    }
    State::tagged(out, &tag, Status::Ok, cyrus::BEGIN_TLS).await?;
    Ok(Next::Upgrade)
}
