//! Conformance tests: the same murder scenarios against real Cyrus IMAP
//! 3.6.1 (Debian) with, as MUPDATE master, Cyrus' own `mupdate -m`,
//! mupdated, or any master given by `MUPDATE_MASTER=host:port`.
//! See conformance/README.md.

mod harness;
mod facts;
mod scenarios;
