//! mupdated: a MUPDATE (RFC 3656) master for Cyrus IMAP murders.
//!
//! # Layout
//!
//! The server, from the wire inwards (each layer imports only the layers
//! below it):
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | listeners | [`net`] | TCP listeners, admission, shutdown, TLS (STARTTLS, implicit TLS, reload); builds the [`app::App`] and runs a [`session`] per connection |
//! | context | [`app`] | what every connection shares: directory, hub, authenticator, configuration |
//! | connection | [`session`] | one connection's session over any byte stream: capabilities, the dispatcher in Cyrus's check order, one file per command |
//! | logins | [`auth`] | users, roles, password checks |
//! | streams | [`replication`] | the change hub that UPDATE streams read; each stream's dump and flush |
//! | directory | [`store`] | the facts model and its indexes over a storage engine (sled, or in memory for tests) |
//! | wire | [`protocol`] | pure bytes <-> messages: framer, parser, encoder, Cyrus's strings |
//! | settings | [`config`] | the TOML configuration |
//!
//! Apart from the server:
//! - [`tools`]: the client library and what is built on it (transcripts,
//!   replay, recording, pcap reading, the benchmark); the daemon never
//!   imports it.
//! - [`fuzzing`]: entry points for the fuzz targets in `fuzz/`.
//!
//! docs/architecture.md describes the data flow of one write and how to
//! add a command, an engine or a listener kind.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod config;
pub mod fuzzing;
pub mod net;
pub mod protocol;
pub mod replication;
pub mod session;
pub mod store;
pub mod tools;
