//! `UPDATE`: the whole directory, then every change as it happens.
//!
//! Grammar (RFC 3656 4.10; `protocol::parse`):
//! `tag SP "UPDATE" *(SP string(host))`, at most 30 hosts, none empty
//! (`BAD "Badly formed arguments"`, `BAD "Extra arguments"`, as `docmd`).
//! Hosts make it a PARTIAL-UPDATE: only entries on those servers.
//! Checks: login, arguments, not while streaming (a second UPDATE); any
//! role.
//! Answer: the stream registers first, then the dump
//! ([`crate::replication::stream::dump`]), then `OK "streaming starts"`
//! (Cyrus: `cmd_startupdate`); from then on `MAILBOX`/`RESERVE`/`DELETE`
//! lines under this tag ([`crate::replication::stream::flush`]) and only
//! NOOP is accepted. Never `NO`, `BAD` or `BYE` after the arguments
//! passed: a Cyrus slave takes those for an empty directory and deletes
//! its whole list, so any failure closes the connection instead.

use tokio::io::AsyncWrite;
use tracing::info;

use super::{Spec, LOGGED_IN};
use crate::session::connection::Output;
use crate::protocol::{cyrus, Status};
use crate::replication::stream;
use crate::session::{Lines, Next, SessionError, State, Streaming};

/// After login, not while streaming.
pub(in crate::session) const SPEC: Spec = LOGGED_IN;

/// Run UPDATE: register, dump, wait for durability, start streaming.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin + Send>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    hosts: Vec<Vec<u8>>,
) -> Result<Next, SessionError> {
    let registration = st.app.hub.subscribe(&hosts);
    stream::dump(&st.app.store, registration.subscription(), &tag, &mut Lines(out)).await?;
    State::tagged(out, &tag, Status::Ok, cyrus::STREAMING_STARTS).await?;
    info!(hosts = hosts.len(), "streaming");
    st.streaming = Some(Streaming { tag, registration });
    Ok(Next::Continue)
}
