//! mupdated: a MUPDATE (RFC 3656) master for Cyrus IMAP murders.
#![forbid(unsafe_code)]

pub mod protocol;
pub mod store;
