//! `COMPRESS`: not offered. Cyrus built with zlib offers `COMPRESS
//! "DEFLATE"`; this server answers as a Cyrus built without it.
//!
//! Grammar (`protocol::parse`): `tag SP "COMPRESS" SP string(algorithm)`.
//! Checks: none apply: a command this server does not offer is an unknown
//! word, `BAD "Unrecognized command"` (Cyrus: `docmd`, `badcmd`), before
//! or after login, whatever its arguments.

use tokio::io::AsyncWrite;

use super::{Gate, Role, Spec};
use crate::session::connection::Output;
use crate::protocol::cyrus;
use crate::session::capabilities::Capabilities;
use crate::session::dispatch::bad;
use crate::session::{Next, SessionError};

/// Never offered yet.
pub(in crate::session) const SPEC: Spec = Spec { offered: never, login: Gate::None, when_streaming: false, role: Role::Any };

fn never(_: &Capabilities) -> bool {
    false
}

/// Unreachable while not offered; answers as an unknown word.
pub(in crate::session) async fn run<S: AsyncWrite + Unpin>(out: &mut Output<'_, S>, tag: Vec<u8>) -> Result<Next, SessionError> {
    bad(out, &tag, cyrus::UNRECOGNIZED).await
}
