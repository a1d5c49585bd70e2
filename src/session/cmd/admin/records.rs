//! `XRECORDS name`: every record of a mailbox, oldest first.
//!
//! Answer: `tag RECORD name location state acl role` per record (state
//! `active`/`reserved`/`moving`; role `effective`, `shadow`, `conflict`
//! or `other`), then `OK "done"`.

use tokio::io::AsyncWrite;

use super::{data, AdminResult};
use crate::app::App;
use crate::session::connection::Output;
use crate::store::{RecordState, Reply};

/// One argument: the name.
pub(super) const ARITY: (usize, usize) = (1, 1);

fn state_word(s: RecordState) -> &'static [u8] {
    match s {
        RecordState::Active => b"active",
        RecordState::Reserved => b"reserved",
        RecordState::Moving => b"moving",
    }
}

/// Run XRECORDS.
pub(super) async fn run<S: AsyncWrite + Unpin>(
    app: &App,
    out: &mut Output<'_, S>,
    tag: &[u8],
    mut args: Vec<Vec<u8>>,
) -> AdminResult {
    let name = args.remove(0);
    for r in app.store.records(&name)? {
        let role = r.role.word().as_bytes().to_vec();
        let fields = vec![name.clone(), r.location, state_word(r.state).to_vec(), r.acl, role];
        data(out, tag, "RECORD", fields).await?;
    }
    Ok(Reply::Done)
}
