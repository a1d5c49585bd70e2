//! `DELETE`: a mailbox is gone.
//!
//! Grammar (RFC 3656 4.3; `protocol::parse`, `fixed_strings`):
//! `tag SP "DELETE" SP string(name)`.
//! Checks: login, arguments, not while streaming, a login that may write;
//! then no NUL in the name (`NO`).
//! Answer: `OK "done"`, or `NO "mailbox doesn't exist"` and the store's
//! other reasons; changes go to the UPDATE streams first.

use tokio::io::AsyncWrite;

use super::{write_done, Spec, NUL_IN_ARGUMENT, WRITE};
use crate::session::connection::Output;
use crate::session::dispatch::no;
use crate::session::{Next, SessionError, State};

/// A write, after login.
pub(in crate::session) const SPEC: Spec = WRITE;

/// Run DELETE.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    name: Vec<u8>,
) -> Result<Next, SessionError> {
    if name.contains(&0) {
        return no(out, &tag, NUL_IN_ARGUMENT).await;
    }
    let identity = st.identity();
    let r = st.app.store.delete(&identity, &name).await;
    write_done(out, &tag, r).await
}
