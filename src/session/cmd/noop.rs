//! `NOOP`: nothing, except that on an UPDATE stream every change queued
//! so far is sent first (a client's barrier: what it wrote before is in
//! its view after the answer).
//!
//! Grammar (RFC 3656 4.6; `protocol::parse`): `tag SP "NOOP"`.
//! Checks: login, arguments; allowed while streaming; any role.
//! Answer: the stream's queued lines, then `OK "Noop done"` (Cyrus:
//! `docmd`).

use tokio::io::AsyncWrite;

use super::{Spec, LOGGED_IN};
use crate::session::connection::Output;
use crate::protocol::{cyrus, Status};
use crate::session::{Next, SessionError, State};

/// After login, also while streaming.
pub(in crate::session) const SPEC: Spec = Spec { when_streaming: true, ..LOGGED_IN };

/// Run NOOP.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin + Send>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
) -> Result<Next, SessionError> {
    st.flush_stream(out).await?;
    State::tagged(out, &tag, Status::Ok, cyrus::NOOP_DONE).await?;
    Ok(Next::Continue)
}
