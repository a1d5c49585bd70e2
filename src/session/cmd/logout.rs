//! `LOGOUT`: the client is done.
//!
//! Grammar (RFC 3656 4.8; `protocol::parse`): `tag SP "LOGOUT"`.
//! Checks: arguments only (before or after login, also while streaming).
//! Answer: `OK "bye-bye"` (Cyrus: `docmd`), then the connection closes.

use tokio::io::AsyncWrite;

use super::{always, Gate, Role, Spec};
use crate::session::connection::Output;
use crate::protocol::{cyrus, Status};
use crate::session::{Next, SessionError, State};

/// Anyone, any time.
pub(in crate::session) const SPEC: Spec = Spec { offered: always, login: Gate::None, when_streaming: true, role: Role::Any };

/// Run LOGOUT.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(out: &mut Output<'_, S>, tag: Vec<u8>) -> Result<Next, SessionError> {
    State::tagged(out, &tag, Status::Ok, cyrus::BYE_BYE).await?;
    Ok(Next::Close)
}
