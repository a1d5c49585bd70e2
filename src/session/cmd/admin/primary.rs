//! `XPRIMARY group [server]`: show or set a replica group's primary.
//!
//! Answer: with one argument `tag PRIMARY group server` (`""` when none)
//! and `OK "done"`, `NO` for an unknown group; with two, `OK "done"` after
//! setting it (`""` clears it), the streams getting the lines that changed.

use tokio::io::AsyncWrite;
use tracing::info;

use super::{data, AdminResult};
use crate::app::App;
use crate::session::connection::Output;
use crate::logging::Escaped;
use crate::store::{Reply, StoreError};

/// The group, and optionally the server.
pub(super) const ARITY: (usize, usize) = (1, 2);

/// Run XPRIMARY.
pub(super) async fn run<S: AsyncWrite + Unpin>(
    app: &App,
    out: &mut Output<'_, S>,
    tag: &[u8],
    mut args: Vec<Vec<u8>>,
) -> AdminResult {
    let group = String::from_utf8_lossy(&args[0]).into_owned();
    if args.len() == 1 {
        let Some(g) = app.store.groups().into_iter().find(|g| g.name == group) else {
            return Err(StoreError::Invalid(format!("no replica group {group}")).into());
        };
        data(out, tag, "PRIMARY", vec![g.name.into_bytes(), g.primary.unwrap_or_default()]).await?;
    } else {
        let server = args.remove(1);
        let server = if server.is_empty() { None } else { Some(&server[..]) };
        let changed = app.store.set_primary(&group, server).await?;
        info!(group = %Escaped(group.as_bytes()), primary = %Escaped(server.unwrap_or(b"")), changed, "primary set");
    }
    Ok(Reply::Done)
}
