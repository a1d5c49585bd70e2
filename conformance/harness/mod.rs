//! The conformance harness: real Cyrus processes in throw-away folders on
//! free loopback ports, and small self-contained IMAP and MUPDATE clients.
//!
//! - [`cyrus`]: `Cyrus::require()`, the per-test [`cyrus::Workspace`], Cyrus
//!   instances (reference master, backends, frontend) and `ctl_mboxlist`.
//! - [`master`]: the master under test, by [`master::MasterKind`].
//! - [`murder`]: a master, N backends and a frontend started together.
//! - [`imap`], [`mupdate`], [`wire`]: the clients.
//! - [`process`], [`ports`], [`wait`]: processes stopped by pid on drop,
//!   free ports, bounded polling.

// Not every scenario uses every helper.
#![allow(dead_code)]

pub mod cyrus;
pub mod capture;
pub mod differential;
pub mod imap;
pub mod master;
pub mod mupdate;
pub mod murder;
pub mod pki;
pub mod ports;
pub mod process;
pub mod recorder;
pub mod replication;
pub mod wait;
pub mod wire;

pub use master::MasterKind;
pub use murder::{Murder, Options};
