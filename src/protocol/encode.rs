//! Encoders (stub: to be implemented).

use super::types::*;

/// Append a string in the form every Cyrus client version reads: a quoted
/// string when short and free of CR, LF and NUL; else a `{n}` literal.
pub fn string(_s: &[u8], _out: &mut Vec<u8>) {
    todo!()
}

/// Append one response, with its CRLF.
pub fn response(_r: &Response, _out: &mut Vec<u8>) {
    todo!()
}

/// Append a client command (tools and tests) with `{n+}` literals as Cyrus
/// clients send them when `literal_plus`, quoted strings otherwise.
pub fn command(_tag: &[u8], _cmd: &Command, _literal_plus: bool, _out: &mut Vec<u8>) {
    todo!()
}
