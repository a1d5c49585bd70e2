//! `XCONFLICTS`: every recorded conflict (a mailbox active on servers
//! that are not one replica group).
//!
//! Answer: `tag CONFLICT name effective-server other-server...` per
//! conflict, then `OK "done"`.

use tokio::io::AsyncWrite;

use super::{data, AdminResult};
use crate::app::App;
use crate::session::connection::Output;
use crate::store::Reply;

/// No arguments.
pub(super) const ARITY: (usize, usize) = (0, 0);

/// Run XCONFLICTS.
pub(super) async fn run<S: AsyncWrite + Unpin>(app: &App, out: &mut Output<'_, S>, tag: &[u8]) -> AdminResult {
    for c in app.store.conflicts()? {
        let mut fields = vec![c.name, c.effective];
        fields.extend(c.others);
        data(out, tag, "CONFLICT", fields).await?;
    }
    Ok(Reply::Done)
}
