//! Admin extensions: the facts model's control surface, for admin logins
//! and this project's tools only (announced by `* X-MUPDATED-ADMIN`;
//! unmodified Cyrus clients never send them and never see their lines).
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

use tracing::{error, info};

use super::{Next, Session, SessionError};
use crate::net::log::Escaped;
use crate::protocol::{cyrus, AdminVerb, Response, Status};
use crate::store::{RecordState, Reply, StoreError};

/// The answer to a write (or a backup) when the store found damage.
pub(crate) const DAMAGED: &str = "the directory is damaged: writes are refused; stop the server and run mupdatectl verify";

fn state_word(s: RecordState) -> &'static [u8] {
    match s {
        RecordState::Active => b"active",
        RecordState::Reserved => b"reserved",
        RecordState::Moving => b"moving",
    }
}

/// Expected number of arguments of each admin verb: (least, most).
fn arity(verb: AdminVerb) -> (usize, usize) {
    match verb {
        AdminVerb::Records => (1, 1),
        AdminVerb::Rights => (1, 31),
        AdminVerb::Conflicts | AdminVerb::Groups | AdminVerb::Export => (0, 0),
        AdminVerb::Resolve | AdminVerb::DeleteRecord => (2, 2),
        AdminVerb::Primary => (1, 2),
    }
}

impl Session {
    pub(super) async fn admin(&mut self, tag: Vec<u8>, verb: AdminVerb, args: Vec<Vec<u8>>) -> Result<Next, SessionError> {
        let (least, most) = arity(verb);
        if args.len() < least {
            self.tagged(&tag, Status::Bad, cyrus::MISSING_ARGS).await?;
            return Ok(Next::Continue);
        }
        if args.len() > most {
            self.tagged(&tag, Status::Bad, cyrus::EXTRA_ARGS).await?;
            return Ok(Next::Continue);
        }
        match self.admin_inner(&tag, verb, args).await {
            Ok(()) => {}
            Err(AdminError::Session(e)) => return Err(e),
            Err(AdminError::Store(StoreError::Invalid(m))) => {
                self.tagged(&tag, Status::No, &m).await?;
            }
            Err(AdminError::Store(e @ StoreError::Damaged(_))) => {
                error!(error = %e, "admin command refused");
                self.tagged(&tag, Status::No, DAMAGED).await?;
            }
            Err(AdminError::Store(e)) => {
                error!(error = %e, "store failure in an admin command");
                self.tagged(&tag, Status::No, "internal error, see the server log").await?;
            }
        }
        Ok(Next::Continue)
    }

    async fn data(&mut self, tag: &[u8], keyword: &'static str, fields: Vec<Vec<u8>>) -> Result<(), SessionError> {
        self.conn.send(&Response::Data { tag: tag.to_vec(), keyword, fields }).await?;
        Ok(())
    }

    async fn admin_inner(&mut self, tag: &[u8], verb: AdminVerb, mut args: Vec<Vec<u8>>) -> Result<(), AdminError> {
        let store = self.shared.store.clone();
        match verb {
            AdminVerb::Records => {
                let name = args.remove(0);
                for r in store.records(&name)? {
                    let role = r.role.word().as_bytes().to_vec();
                    let fields = vec![name.clone(), r.location, state_word(r.state).to_vec(), r.acl, role];
                    self.data(tag, "RECORD", fields).await?;
                }
            }
            AdminVerb::Conflicts => {
                for c in store.conflicts()? {
                    let mut fields = vec![c.name, c.effective];
                    fields.extend(c.others);
                    self.data(tag, "CONFLICT", fields).await?;
                }
            }
            AdminVerb::Resolve => {
                let (name, server) = (args.remove(0), args.remove(0));
                let outcome = store.resolve(&name, &server).await?;
                if let Reply::No(r) = outcome.reply {
                    self.tagged(tag, Status::No, super::commands::refusal_text(r)).await?;
                    return Ok(());
                }
                info!(name = %Escaped(&name), server = %Escaped(&server), "conflict resolved");
            }
            AdminVerb::Groups => {
                for g in store.groups() {
                    let mut fields = vec![g.name.into_bytes(), g.primary.unwrap_or_default()];
                    fields.extend(g.servers);
                    self.data(tag, "GROUP", fields).await?;
                }
            }
            AdminVerb::Primary => {
                let group = String::from_utf8_lossy(&args[0]).into_owned();
                if args.len() == 1 {
                    let Some(g) = store.groups().into_iter().find(|g| g.name == group) else {
                        return Err(StoreError::Invalid(format!("no replica group {group}")).into());
                    };
                    self.data(tag, "PRIMARY", vec![g.name.into_bytes(), g.primary.unwrap_or_default()]).await?;
                } else {
                    let server = args.remove(1);
                    let server = if server.is_empty() { None } else { Some(&server[..]) };
                    let changed = store.set_primary(&group, server).await?;
                    info!(group = %Escaped(group.as_bytes()), primary = %Escaped(server.unwrap_or(b"")), changed, "primary set");
                }
            }
            AdminVerb::DeleteRecord => {
                let (name, location) = (args.remove(0), args.remove(0));
                let outcome = store.delete_record(&name, &location).await?;
                if let Reply::No(r) = outcome.reply {
                    self.tagged(tag, Status::No, super::commands::refusal_text(r)).await?;
                    return Ok(());
                }
            }
            AdminVerb::Export => {
                let mut lines = 0u64;
                for line in store.backup()? {
                    self.data(tag, "EXPORT", vec![line?.into_bytes()]).await?;
                    lines += 1;
                }
                info!(lines, "backup sent");
            }
            AdminVerb::Rights => {
                let user = args.remove(0);
                for (name, rights) in store.rights_of(&user, &args)? {
                    self.data(tag, "RIGHTS", vec![name, rights]).await?;
                }
            }
        }
        self.tagged(tag, Status::Ok, cyrus::DONE).await?;
        Ok(())
    }
}

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
