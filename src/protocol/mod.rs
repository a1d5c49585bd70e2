//! The MUPDATE wire protocol: bytes <-> typed messages. Pure: no tokio, no
//! store, so the framer and parsers can be fuzzed and reused by the tools.
//!
//! - [`framer`] finds where one message ends (lines, `{n}`/`{n+}` literals,
//!   bare LF), with caps on every size.
//! - [`parse`] turns one whole message into a [`types::Line`] (server side)
//!   or a [`types::Response`] (client side, for the tools and tests).
//! - [`encode`] writes responses and commands.
//! - [`verbs`] is the one table of command words.
//! - [`cyrus`] holds every wire-visible Cyrus string.

pub mod cyrus;
pub mod encode;
pub mod framer;
pub mod parse;
pub mod types;
pub mod verbs;

pub use framer::{Decoded, FrameError, Framer, Limits};
pub use types::*;
