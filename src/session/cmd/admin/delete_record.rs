//! `XDELETE name location`: remove one server's record of a mailbox (not
//! the others'); the streams get the new effective line.
//!
//! Answer: `OK "done"`, or `NO` with the store's reason.

use super::AdminResult;
use crate::app::App;

/// Two arguments: the name and the location.
pub(super) const ARITY: (usize, usize) = (2, 2);

/// Run XDELETE.
pub(super) async fn run(app: &App, mut args: Vec<Vec<u8>>) -> AdminResult {
    let (name, location) = (args.remove(0), args.remove(0));
    let outcome = app.store.delete_record(&name, &location).await?;
    Ok(outcome.reply)
}
