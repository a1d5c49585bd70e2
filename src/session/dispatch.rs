//! The one dispatcher: every command line is answered in Cyrus 3.6.1's
//! check order (`imap/mupdate.c: docmd`), each check taken from the
//! command's [`Spec`] in its own file under `cmd/`:
//!
//! 1. tag: a line without a tag and a space is `* BAD "Need command"`, a
//!    tag without a word `BAD "Null command"`;
//! 2. command word: a word that is no command (or a command this server
//!    does not offer, such as COMPRESS) is `BAD "Unrecognized command"`,
//!    or `BAD "Please login first"` before login when its first letter is
//!    that of a command needing one (Cyrus's switch on that letter);
//! 3. login: `BAD "Please login first"`; the admin extensions are
//!    unknown words (`Unrecognized command`) to anyone but an admin login;
//! 4. arguments: `BAD` with Cyrus's label (AUTHENTICATE's response that is
//!    not base64 is a `NO`, from SASL, as in Cyrus);
//! 5. streaming: only NOOP (and LOGOUT) while an UPDATE streams;
//! 6. role: a write from a read-only login, AUTHENTICATE or STARTTLS
//!    after a login.

use tokio::io::AsyncWrite;

use super::cmd::{self, Gate, Role, Spec};
use super::{Next, SessionError, State};
use crate::session::connection::Output;
use crate::protocol::{cyrus, ArgError, Line, Status, Verb};

/// Answer one command line.
pub(super) async fn dispatch<S: AsyncWrite + Unpin + Send>(
    st: &mut State,
    out: &mut Output<'_, S>,
    line: Line,
) -> Result<Next, SessionError> {
    let (tag, verb, args) = match line {
        Line::NeedCommand => return bad(out, b"*", cyrus::NEED_COMMAND).await,
        Line::NullCommand { tag } => return bad(out, &tag, cyrus::NULL_COMMAND).await,
        Line::Command { tag, verb, args } => (tag, verb, args),
    };
    let spec: Spec = match cmd::spec(verb) {
        Some(spec) if (spec.offered)(&st.caps) => spec,
        Some(_) => return bad(out, &tag, cyrus::UNRECOGNIZED).await,
        None => {
            let needs_login = matches!(verb, Verb::Unknown { needs_login: true });
            let text = if needs_login && st.login.is_none() { cyrus::PLEASE_LOGIN } else { cyrus::UNRECOGNIZED };
            return bad(out, &tag, text).await;
        }
    };
    match (spec.login, &st.login) {
        (Gate::None, _) => {}
        (Gate::Login, None) => return bad(out, &tag, cyrus::PLEASE_LOGIN).await,
        (Gate::Login, Some(_)) => {}
        // Cyrus has no command starting with X: unknown but to an admin.
        (Gate::Admin, Some(login)) if login.is_admin() => {}
        (Gate::Admin, _) => return bad(out, &tag, cyrus::UNRECOGNIZED).await,
    }
    let command = match args {
        Ok(c) => c,
        // Cyrus answers NO when SASL cannot decode the response.
        Err(ArgError::NotBase64) => return no(out, &tag, cmd::authenticate::INVALID_SASL).await,
        Err(e) => return bad(out, &tag, arg_error_text(e)).await,
    };
    if st.streaming.is_some() && !spec.when_streaming {
        return bad(out, &tag, cyrus::NOT_WHEN_STREAMING).await;
    }
    match spec.role {
        Role::Any => {}
        Role::Writer if st.login.as_ref().is_some_and(|l| l.may_write()) => {}
        Role::Writer => return bad(out, &tag, cyrus::READ_ONLY).await,
        Role::NotLoggedIn(text) if st.login.is_some() => return bad(out, &tag, text).await,
        Role::NotLoggedIn(_) => {}
    }
    cmd::run(st, out, tag, command).await
}

/// Cyrus's label for arguments that do not parse.
fn arg_error_text(e: ArgError) -> &'static str {
    match e {
        ArgError::Missing => cyrus::MISSING_ARGS,
        ArgError::Extra => cyrus::EXTRA_ARGS,
        ArgError::BadlyFormed => cyrus::BADLY_FORMED,
        ArgError::NotBase64 => cmd::authenticate::INVALID_SASL,
    }
}

/// `tag BAD "text"`; the session goes on.
pub(super) async fn bad<S: AsyncWrite + Unpin>(
    out: &mut Output<'_, S>,
    tag: &[u8],
    text: &str,
) -> Result<Next, SessionError> {
    State::tagged(out, tag, Status::Bad, text).await?;
    Ok(Next::Continue)
}

/// `tag NO "text"`; the session goes on.
pub(super) async fn no<S: AsyncWrite + Unpin>(
    out: &mut Output<'_, S>,
    tag: &[u8],
    text: &str,
) -> Result<Next, SessionError> {
    State::tagged(out, tag, Status::No, text).await?;
    Ok(Next::Continue)
}
