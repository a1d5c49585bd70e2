//! `XRIGHTS user [group...]`: the mailboxes on which an identifier has
//! rights, by the effective ACLs.
//!
//! Answer: `tag RIGHTS name rights` per mailbox where the ACL gives
//! `user` (as a member of those groups, e.g. `group:staff`) any right:
//! `user`, `anyone` and the groups' rights less their negative rights;
//! then `OK "done"`.

use tokio::io::AsyncWrite;

use super::{data, AdminResult};
use crate::app::App;
use crate::session::connection::Output;
use crate::store::Reply;

/// The user and up to 30 groups.
pub(super) const ARITY: (usize, usize) = (1, 31);

/// Run XRIGHTS.
pub(super) async fn run<S: AsyncWrite + Unpin>(
    app: &App,
    out: &mut Output<'_, S>,
    tag: &[u8],
    mut args: Vec<Vec<u8>>,
) -> AdminResult {
    let user = args.remove(0);
    for (name, rights) in app.store.rights_of(&user, &args)? {
        data(out, tag, "RIGHTS", vec![name, rights]).await?;
    }
    Ok(Reply::Done)
}
