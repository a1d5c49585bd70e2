//! `ACTIVATE`: a backend says a mailbox is active on its server.
//!
//! Grammar (RFC 3656 4.1; parsed by `protocol::parse`, `fixed_strings`):
//! `tag SP "ACTIVATE" SP string(name) SP string(location) SP string(acl)`.
//! Checks: login, arguments, not while streaming, a login that may write.
//! Then, before the store: no NUL in any argument, name, location and ACL
//! within `max_mailbox_name`, `max_location`, `max_acl_identifier`,
//! `max_acl_entries` (`NO` with the limit's text).
//! Answer: `OK "done"`, or `NO` with the store's reason (another server's
//! location, a conflict); changes go to the UPDATE streams first.

use tokio::io::AsyncWrite;

use super::write_args::refused;
use super::{write_done, Spec, WRITE};
use crate::session::connection::Output;
use crate::session::dispatch::no;
use crate::session::{Next, SessionError, State};

/// A write, after login.
pub(in crate::session) const SPEC: Spec = WRITE;

/// Run ACTIVATE.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    name: Vec<u8>,
    location: Vec<u8>,
    acl: Vec<u8>,
) -> Result<Next, SessionError> {
    if let Some(text) = refused(&st.app.config, &name, &location, Some(&acl)) {
        return no(out, &tag, text).await;
    }
    let identity = st.identity();
    let r = st.app.store.activate(&identity, &name, &location, &acl).await;
    write_done(out, &tag, r).await
}
