//! Parsers over one whole framed message (stub: to be implemented).

use super::types::*;

/// Parse one client command message the way Cyrus 3.6.1's `docmd` reads it.
/// Never panics, whatever the bytes.
pub fn parse_line(_msg: &[u8]) -> Line {
    todo!()
}

/// A client's answer to a SASL challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Base64 data (already decoded).
    Data(Vec<u8>),
    /// `*`: the client gives up.
    Cancel,
    /// Not base64, not a string.
    Invalid,
}

/// Parse a client's answer to `+ "..."`: a line holding base64, as an atom,
/// a quoted string or a literal; `*` cancels.
pub fn parse_auth_answer(_msg: &[u8]) -> AuthAnswer {
    todo!()
}

/// Why a server line could not be parsed (client side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparsable server line: {0}")]
pub struct ResponseError(pub String);

/// Parse one server message (client side: tools and tests).
pub fn parse_response(_msg: &[u8]) -> Result<Response, ResponseError> {
    todo!()
}
