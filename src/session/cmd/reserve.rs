//! `RESERVE`: a backend reserves a mailbox name for its server (a create
//! or rename in progress).
//!
//! Grammar (RFC 3656 4.7; `protocol::parse`, `fixed_strings`):
//! `tag SP "RESERVE" SP string(name) SP string(location)`.
//! Checks: login, arguments, not while streaming, a login that may write;
//! then no NUL, name and location within their limits (`NO`).
//! Answer: `OK "done"`, or `NO "mailbox already exists"` and the store's
//! other reasons; changes go to the UPDATE streams first.

use tokio::io::AsyncWrite;

use super::write_args::refused;
use super::{write_done, Spec, WRITE};
use crate::session::connection::Output;
use crate::session::dispatch::no;
use crate::session::{Next, SessionError, State};

/// A write, after login.
pub(in crate::session) const SPEC: Spec = WRITE;

/// Run RESERVE.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    name: Vec<u8>,
    location: Vec<u8>,
) -> Result<Next, SessionError> {
    if let Some(text) = refused(&st.app.config, &name, &location, None) {
        return no(out, &tag, text).await;
    }
    let identity = st.identity();
    let r = st.app.store.reserve(&identity, &name, &location).await;
    write_done(out, &tag, r).await
}
