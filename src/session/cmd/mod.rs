//! One file per command: its grammar, arguments, the checks the
//! dispatcher makes for it (its [`Spec`]), its handler and its answers.
//! The admin extensions are under `admin/`.
//!
//! The command words are in the protocol's one table
//! (`src/protocol/verbs.rs`) and each command's arguments are parsed by
//! `src/protocol/parse.rs` (pure, fuzzed); this module maps a verb to its
//! file ([`spec`], [`run`]).
//!
//! What every write shares lives here, once: [`answer_reply`] turns the
//! store's [`Reply`] into wire text ([`refusal_text`]). The UPDATE streams
//! hear a write from the directory itself, once it is durable: no command
//! publishes anything.

pub(super) mod activate;
pub(super) mod admin;
pub(super) mod authenticate;
pub(super) mod compress;
pub(super) mod deactivate;
pub(super) mod delete;
pub(super) mod find;
pub(super) mod list;
pub(super) mod logout;
pub(super) mod noop;
pub(super) mod reserve;
pub(super) mod starttls;
pub(super) mod update;
mod write_args;

use tokio::io::AsyncWrite;
use tracing::error;

use super::capabilities::Capabilities;
use super::dispatch::no;
use super::{Next, SessionError, State};
use crate::net::connection::Output;
use crate::protocol::{cyrus, Command, Status, Verb};
use crate::store::{Refusal, Reply, StoreError, WriteOutcome};

/// Answer to a write or read the store could not complete.
pub(super) const INTERNAL_ERROR: &str = "internal error, see the server log";
/// Answer when the directory's disk fails (full, I/O error): the write
/// may not have been made durable; a Cyrus backend reports it and retries.
pub const STORAGE_FAILING: &str = "mupdate directory storage failing, try again later";
/// The answer to a write (or a backup) when the store found damage.
pub(super) const DAMAGED: &str =
    "the directory is damaged: writes are refused; stop the server and run mupdatectl verify";
/// A name, location or ACL holding a NUL byte cannot be a Cyrus string.
pub(super) const NUL_IN_ARGUMENT: &str = "NUL byte in argument";

/// Whether the command needs a login, and which (checked third).
#[derive(Debug, Clone, Copy)]
pub(super) enum Gate {
    /// Before or after login.
    None,
    /// `BAD "Please login first"` without one.
    Login,
    /// An unknown word to anyone but an admin login.
    Admin,
}

/// What the login must be (checked last).
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    /// Any.
    Any,
    /// One that may change the directory (`BAD "read-only session"`).
    Writer,
    /// None yet: `BAD` with this text after a login.
    NotLoggedIn(&'static str),
}

/// The dispatcher's checks for one command, in Cyrus's order.
#[derive(Clone, Copy)]
pub(super) struct Spec {
    /// Does this server answer the command at all (else it is an unknown
    /// word)? COMPRESS never yet, STARTTLS when the capabilities say so.
    pub offered: fn(&Capabilities) -> bool,
    /// The login it needs.
    pub login: Gate,
    /// Allowed while an UPDATE streams.
    pub when_streaming: bool,
    /// The role the login must have.
    pub role: Role,
}

/// The [`Spec`] of a command most commands share: after login, not while
/// streaming, any role.
pub(super) const LOGGED_IN: Spec = Spec { offered: always, login: Gate::Login, when_streaming: false, role: Role::Any };
/// A write: as [`LOGGED_IN`], by a login that may write.
pub(super) const WRITE: Spec = Spec { role: Role::Writer, ..LOGGED_IN };

/// For [`Spec::offered`]: every server answers it.
pub(super) fn always(_: &Capabilities) -> bool {
    true
}

/// The checks of a known verb; `None` for a word that is no command.
pub(super) fn spec(verb: Verb) -> Option<Spec> {
    Some(match verb {
        Verb::Authenticate => authenticate::SPEC,
        Verb::Activate => activate::SPEC,
        Verb::Compress => compress::SPEC,
        Verb::Deactivate => deactivate::SPEC,
        Verb::Delete => delete::SPEC,
        Verb::Find => find::SPEC,
        Verb::List => list::SPEC,
        Verb::Logout => logout::SPEC,
        Verb::Noop => noop::SPEC,
        Verb::Reserve => reserve::SPEC,
        Verb::Starttls => starttls::SPEC,
        Verb::Update => update::SPEC,
        Verb::Admin(_) => admin::SPEC,
        Verb::Unknown { .. } => return None,
    })
}

/// Run a command that passed every check of its [`Spec`].
pub(super) async fn run<S: AsyncWrite + Unpin + Send>(
    st: &mut State,
    out: &mut Output<'_, S>,
    tag: Vec<u8>,
    command: Command,
) -> Result<Next, SessionError> {
    match command {
        Command::Authenticate { mechanism, initial_response } => {
            authenticate::run(st, out, tag, mechanism, initial_response).await
        }
        Command::Activate { name, location, acl } => activate::run(st, out, tag, name, location, acl).await,
        Command::Reserve { name, location } => reserve::run(st, out, tag, name, location).await,
        Command::Deactivate { name, location } => deactivate::run(st, out, tag, name, location).await,
        Command::Delete { name } => delete::run(st, out, tag, name).await,
        Command::Find { name } => find::run(st, out, tag, name).await,
        Command::List { prefix } => list::run(st, out, tag, prefix).await,
        Command::Update { hosts } => update::run(st, out, tag, hosts).await,
        Command::Noop => noop::run(st, out, tag).await,
        Command::Logout => logout::run(out, tag).await,
        Command::Starttls => starttls::run(st, out, tag).await,
        Command::Compress { .. } => compress::run(out, tag).await,
        Command::Admin { verb, args } => admin::run(st, out, tag, verb, args).await,
    }
}

/// The wire answer to the store's verdict on a write: `OK "done"` or
/// `NO` with its text.
pub(super) fn reply_answer(reply: &Reply) -> (Status, &'static str) {
    match reply {
        Reply::Done => (Status::Ok, cyrus::DONE),
        Reply::No(r) => (Status::No, refusal_text(*r)),
    }
}

/// The wire text of a refused write (Cyrus's, with its source pointers in
/// src/protocol/cyrus.rs).
pub(super) fn refusal_text(r: Refusal) -> &'static str {
    match r {
        Refusal::MailboxExists => cyrus::MAILBOX_EXISTS,
        Refusal::NoSuchMailbox => cyrus::DOESNT_EXIST,
        Refusal::NotActive => cyrus::NOT_ACTIVE,
        Refusal::NotServed => cyrus::NOT_SERVED,
    }
}

/// Send the answer to the store's verdict on a write.
pub(super) async fn answer_reply<S: AsyncWrite + Unpin>(
    out: &mut Output<'_, S>,
    tag: &[u8],
    reply: &Reply,
) -> Result<(), SessionError> {
    let (status, text) = reply_answer(reply);
    State::tagged(out, tag, status, text).await
}

/// The end of a write command: its answer (the streams were told by the
/// directory before the write returned).
pub(super) async fn write_done<S: AsyncWrite + Unpin>(
    out: &mut Output<'_, S>,
    tag: &[u8],
    r: Result<WriteOutcome, StoreError>,
) -> Result<Next, SessionError> {
    match r {
        Ok(outcome) => {
            // Durable by now, and the streams were told.
            answer_reply(out, tag, &outcome.reply).await?;
            Ok(Next::Continue)
        }
        Err(e) => internal(out, tag, e).await,
    }
}

/// `NO` for a store failure in a command of the RFC: its text says
/// whether the disk is failing, the directory is damaged, or else.
pub(super) async fn internal<S: AsyncWrite + Unpin>(
    out: &mut Output<'_, S>,
    tag: &[u8],
    e: StoreError,
) -> Result<Next, SessionError> {
    if e.is_storage_failure() {
        // The store logs the failing and recovered states once each.
        tracing::debug!(error = %e, "storage failing");
        return no(out, tag, STORAGE_FAILING).await;
    }
    error!(error = %e, "store failure");
    if let StoreError::Damaged(_) = e {
        return no(out, tag, DAMAGED).await;
    }
    no(out, tag, INTERNAL_ERROR).await
}
