//! `XGROUPS`: the replica groups and their primaries.
//!
//! Answer: `tag GROUP name primary server...` per group (primary `""`
//! when none), then `OK "done"`.

use tokio::io::AsyncWrite;

use super::{data, AdminResult};
use crate::app::App;
use crate::session::connection::Output;
use crate::store::Reply;

/// No arguments.
pub(super) const ARITY: (usize, usize) = (0, 0);

/// Run XGROUPS.
pub(super) async fn run<S: AsyncWrite + Unpin>(app: &App, out: &mut Output<'_, S>, tag: &[u8]) -> AdminResult {
    for g in app.store.groups() {
        let mut fields = vec![g.name.into_bytes(), g.primary.unwrap_or_default()];
        fields.extend(g.servers);
        data(out, tag, "GROUP", fields).await?;
    }
    Ok(Reply::Done)
}
