//! Admin extensions: the facts model's control surface, for admin logins
//! and this project's tools only (announced by `* X-MUPDATED-ADMIN`;
//! unmodified Cyrus clients never send them and never see their lines).
//! One file per verb; each says its grammar, arity and answer.
//!
//! | command | data lines | completion |
//! |---|---|---|
//! | `XRECORDS name` | `RECORD name location state acl role` per record, oldest first; state `active`/`reserved`/`moving`; role `effective`, `shadow` (same replica group), `conflict` (active on an unrelated server) or `other` (reserved or moving on an unrelated server) | `OK "done"` |
//! | `XCONFLICTS` | `CONFLICT name effective-server other-server...` | `OK "done"` |
//! | `XRESOLVE name server` | | `OK "done"`, or `NO` when that server has no record |
//! | `XGROUPS` | `GROUP name primary server...` (primary `""` when none) | `OK "done"` |
//! | `XPRIMARY group` | `PRIMARY group server` (`""` when none) | `OK "done"` |
//! | `XPRIMARY group server` | | `OK "done"`; `""` clears the primary; streams get the new lines |
//! | `XDELETE name location` | | `OK "done"`: removes that server's record only |
//! | `XEXPORT` | `EXPORT line` per line of a point-in-time copy of the whole directory, in `mupdatectl export`'s JSON-lines format (store/export.rs, store/backup.rs) | `OK "done"`; `NO` when a backup is already running |
//! | `XRIGHTS user [group...]` | `RIGHTS name rights` per mailbox where the effective ACL gives `user` (as a member of those groups, e.g. `group:staff`) any right: `user`, `anyone` and the groups' rights less their negative rights | `OK "done"` |
//!
//! Checks (the dispatcher's, then here): an admin login (to anyone else
//! the verb is an unknown word), arguments as strings, not while
//! streaming, then the verb's arity (`BAD "Missing arguments"` / `BAD
//! "Extra arguments"`). A store failure is `NO` with the store's reason
//! for invalid input, the damage text, or the internal-error text.

mod conflicts;
mod delete_record;
mod export;
mod groups;
mod primary;
mod records;
mod resolve;
mod rights;

use tokio::io::AsyncWrite;
use tracing::error;

use super::{always, answer_reply, Gate, Role, Spec, DAMAGED, INTERNAL_ERROR};
use crate::session::connection::Output;
use crate::protocol::{cyrus, AdminVerb, Response, Status};
use crate::session::dispatch::bad;
use crate::session::{Next, SessionError, State};
use crate::store::{Reply, StoreError};

/// Admin logins only, not while streaming.
pub(in crate::session) const SPEC: Spec = Spec { offered: always, login: Gate::Admin, when_streaming: false, role: Role::Any };

/// Expected number of arguments of each admin verb: (least, most).
fn arity(verb: AdminVerb) -> (usize, usize) {
    match verb {
        AdminVerb::Records => records::ARITY,
        AdminVerb::Rights => rights::ARITY,
        AdminVerb::Conflicts => conflicts::ARITY,
        AdminVerb::Groups => groups::ARITY,
        AdminVerb::Export => export::ARITY,
        AdminVerb::Resolve => resolve::ARITY,
        AdminVerb::DeleteRecord => delete_record::ARITY,
        AdminVerb::Primary => primary::ARITY,
    }
}

/// Run an admin verb: arity, then the verb's file, then its answer.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    verb: AdminVerb,
    args: Vec<Vec<u8>>,
) -> Result<Next, SessionError> {
    let (least, most) = arity(verb);
    if args.len() < least {
        return bad(out, &tag, cyrus::MISSING_ARGS).await;
    }
    if args.len() > most {
        return bad(out, &tag, cyrus::EXTRA_ARGS).await;
    }
    let app = st.app.clone();
    let r = match verb {
        AdminVerb::Records => records::run(&app, out, &tag, args).await,
        AdminVerb::Conflicts => conflicts::run(&app, out, &tag).await,
        AdminVerb::Resolve => resolve::run(&app, args).await,
        AdminVerb::Groups => groups::run(&app, out, &tag).await,
        AdminVerb::Primary => primary::run(&app, out, &tag, args).await,
        AdminVerb::DeleteRecord => delete_record::run(&app, args).await,
        AdminVerb::Export => export::run(&app, out, &tag).await,
        AdminVerb::Rights => rights::run(&app, out, &tag, args).await,
    };
    match r {
        Ok(reply) => answer_reply(out, &tag, &reply).await?,
        Err(AdminError::Session(e)) => return Err(e),
        Err(AdminError::Store(StoreError::Invalid(m))) => State::tagged(out, &tag, Status::No, &m).await?,
        Err(AdminError::Store(e @ StoreError::Damaged(_))) => {
            error!(error = %e, "admin command refused");
            State::tagged(out, &tag, Status::No, DAMAGED).await?;
        }
        Err(AdminError::Store(e)) => {
            error!(error = %e, "store failure in an admin command");
            State::tagged(out, &tag, Status::No, INTERNAL_ERROR).await?;
        }
    }
    Ok(Next::Continue)
}

/// Queue one data line `tag KEYWORD fields...`.
async fn data<S: AsyncWrite + Unpin>(
    out: &mut Output<'_, S>,
    tag: &[u8],
    keyword: &'static str,
    fields: Vec<Vec<u8>>,
) -> Result<(), AdminError> {
    out.send(&Response::Data { tag: tag.to_vec(), keyword, fields }).await.map_err(SessionError::from)?;
    Ok(())
}

/// What an admin verb's handler returns: the store's verdict (`OK "done"`
/// for the read verbs).
type AdminResult = Result<Reply, AdminError>;

/// How an admin verb failed: the connection, or the store (answered).
enum AdminError {
    Session(SessionError),
    Store(StoreError),
}

impl From<SessionError> for AdminError {
    fn from(e: SessionError) -> Self {
        AdminError::Session(e)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}
