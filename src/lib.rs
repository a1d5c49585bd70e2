//! mupdated: a MUPDATE (RFC 3656) master for Cyrus IMAP murders.
#![forbid(unsafe_code)]

pub mod auth;
pub mod client;
pub mod config;
pub mod fuzzing;
pub mod net;
pub mod pcap;
pub mod protocol;
pub mod record;
pub mod replay;
pub mod replication;
pub mod session;
pub mod store;
pub mod transcript;
