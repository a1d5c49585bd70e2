//! `XEXPORT`: a point-in-time copy of the whole directory (`mupdatectl
//! backup`), in `mupdatectl export`'s JSON-lines format (store/export.rs,
//! store/backup.rs).
//!
//! Answer: `tag EXPORT line` per line, then `OK "done"`; `NO` when a
//! backup is already running.

use tokio::io::AsyncWrite;
use tracing::info;

use super::{data, AdminResult};
use crate::app::App;
use crate::session::connection::Output;
use crate::store::Reply;

/// No arguments.
pub(super) const ARITY: (usize, usize) = (0, 0);

/// Run XEXPORT.
pub(super) async fn run<S: AsyncWrite + Unpin>(app: &App, out: &mut Output<'_, S>, tag: &[u8]) -> AdminResult {
    let mut lines = 0u64;
    for line in app.store.backup()? {
        data(out, tag, "EXPORT", vec![line?.into_bytes()]).await?;
        lines += 1;
    }
    info!(lines, "backup sent");
    Ok(Reply::Done)
}
