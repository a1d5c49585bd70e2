//! `XRESOLVE name server`: make that server's record of a mailbox win a
//! conflict; the streams get the new effective line.
//!
//! Answer: `OK "done"`, or `NO` when that server has no record.

use tracing::info;

use super::AdminResult;
use crate::app::App;
use crate::logging::Escaped;
use crate::store::Reply;

/// Two arguments: the name and the server.
pub(super) const ARITY: (usize, usize) = (2, 2);

/// Run XRESOLVE.
pub(super) async fn run(app: &App, mut args: Vec<Vec<u8>>) -> AdminResult {
    let (name, server) = (args.remove(0), args.remove(0));
    let outcome = app.store.resolve(&name, &server).await?;
    if let Reply::Done = outcome.reply {
        info!(name = %Escaped(&name), server = %Escaped(&server), "conflict resolved");
    }
    Ok(outcome.reply)
}
