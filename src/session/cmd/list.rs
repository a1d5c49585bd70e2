//! `LIST`: every effective entry, in name order, or those whose location
//! starts with a prefix.
//!
//! Grammar (RFC 3656 4.5; `protocol::parse`):
//! `tag SP "LIST" [SP string(prefix)]`.
//! Checks: login, arguments, not while streaming; any role.
//! Answer: one `MAILBOX`/`RESERVE` line per entry, streamed from the
//! store through the output (bounded memory for millions of names), then,
//! once what the scan showed is durable, `OK "list complete"` (Cyrus:
//! `docmd`); a store failure midway is `NO`.

use tokio::io::AsyncWrite;

use super::{internal, Spec, LOGGED_IN};
use crate::session::connection::Output;
use crate::protocol::{cyrus, Response, Status};
use crate::session::{Next, SessionError, State};

/// After login, not while streaming.
pub(in crate::session) const SPEC: Spec = LOGGED_IN;

/// Run LIST.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    prefix: Option<Vec<u8>>,
) -> Result<Next, SessionError> {
    let store = &st.app.store;
    let mark = store.scan_mark();
    let entries = match &prefix {
        Some(p) => store.list_prefix(p),
        None => store.list(),
    };
    for entry in entries {
        match entry {
            Ok(entry) => out.send(&Response::Entry { tag: tag.clone(), entry }).await?,
            Err(e) => return internal(out, &tag, e).await,
        }
    }
    if let Err(e) = store.scan_durable(mark).await {
        return internal(out, &tag, e).await;
    }
    State::tagged(out, &tag, Status::Ok, cyrus::LIST_COMPLETE).await?;
    Ok(Next::Continue)
}
