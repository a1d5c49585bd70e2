//! mupdated: a MUPDATE (RFC 3656) master for Cyrus IMAP murders.
//!
//! # Layout
//!
//! The server, from the wire inwards. A layer imports only the layers
//! below it (checked by reading the `use` lines; the one place two modules
//! meet both ways is [`replication`]: the directory publishes into its
//! hub, below the store, and its stream dump and flush read the
//! directory, above it):
//!
//! | layer | module | what it holds | imports |
//! |---|---|---|---|
//! | listeners | [`net`] | listener kinds (TCP, unix, Cyrus master, systemd), TLS (STARTTLS, implicit TLS, reload), the accept loops, shutdown; builds the [`app::App`] and runs a [`session`] per connection | app, session, admission, auth, config, logging, protocol, store |
//! | connection | [`session`] | one connection over any byte stream ([`session::connection`]: framer in, buffered output), capabilities, the dispatcher in Cyrus's check order, `cmd/`: one file per command | app, admission, auth, config, logging, protocol, replication, store |
//! | context | [`app`] | what every connection shares: directory, hub, authenticator, configuration, limits | auth, config, protocol, replication, store |
//! | streams | [`replication`] | `stream`: each UPDATE stream's dump, host filter and flush | protocol, store |
//! | logins | [`auth`] | users, roles, SASL, password checks | config, store (identities) |
//! | directory | [`store`] | the facts model and its indexes (`Directory`) over a storage engine trait (`store::engine`: sled, memory) | protocol, replication's hub |
//! | fan-out | [`replication`] | `hub`: the shared change log that wakes streams | nothing |
//! | settings | [`config`] | the TOML configuration | store (its types), `auth::scram` (pure: to check verifiers at load) |
//! | admission | [`admission`] | connection caps, eviction, per-address backoff | nothing |
//! | log text | [`logging`] | escaping of peer bytes in the log, throttling | nothing |
//! | wire | [`protocol`] | pure bytes <-> messages: framer, verb table, parser, encoder, Cyrus's strings | nothing (no tokio, no store) |
//!
//! Apart from the server:
//! - [`tools`]: the client library and what is built on it (transcripts,
//!   replay, recording, pcap reading, TLS client, the benchmark); it
//!   imports only [`protocol`] and the pure SCRAM exchange of
//!   `auth::scram` (the client's side of it), and the daemon never
//!   imports it.
//! - [`fuzzing`]: entry points for the fuzz targets in `fuzz/`.
//!
//! docs/architecture.md describes the data flow of one write and how to
//! add a command, an engine or a listener kind.
#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod auth;
pub mod config;
pub mod fuzzing;
pub mod logging;
pub mod net;
pub mod protocol;
pub mod replication;
pub mod session;
pub mod store;
pub mod tools;
