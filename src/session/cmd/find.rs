//! `FIND`: one mailbox's effective entry.
//!
//! Grammar (RFC 3656 4.4; `protocol::parse`, `fixed_strings`):
//! `tag SP "FIND" SP string(name)`.
//! Checks: login, arguments, not while streaming; any role. The entry is
//! the one this login sees (a backend sees its own server's record of a
//! name first), read once it is durable.
//! Answer: `tag MAILBOX name location acl` or `tag RESERVE name location`
//! when there is one, then `OK "Search completed"` (Cyrus: `cmd_find`);
//! `NO` when the store fails.

use tokio::io::AsyncWrite;

use super::{internal, Spec, LOGGED_IN};
use crate::session::connection::Output;
use crate::protocol::{cyrus, Response, Status};
use crate::session::{Next, SessionError, State};

/// After login, not while streaming.
pub(in crate::session) const SPEC: Spec = LOGGED_IN;

/// Run FIND.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    name: Vec<u8>,
) -> Result<Next, SessionError> {
    let identity = st.identity();
    match st.app.store.find_durable(&identity, &name).await {
        Ok(Some(entry)) => out.send(&Response::Entry { tag: tag.clone(), entry }).await?,
        Ok(None) => {}
        Err(e) => return internal(out, &tag, e).await,
    }
    State::tagged(out, &tag, Status::Ok, cyrus::SEARCH_COMPLETED).await?;
    Ok(Next::Continue)
}
