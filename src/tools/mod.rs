//! The tools, apart from the server: a MUPDATE client and what is built on
//! it. The daemon (`net`, `session`, `store`, `replication`) never imports
//! anything from here.
//!
//! - [`client`]: a MUPDATE client over any stream.
//! - [`transcript`]: scripted exchanges (the protocol tests' format).
//! - [`replay`]: replaying a capture against a server.
//! - [`record`]: a recording proxy.
//! - [`pcap`]: reading MUPDATE sessions out of pcap captures.
//! - [`bench`](mod@bench): `mupdatectl bench`.

pub mod bench;
pub mod client;
pub mod tls_client;
pub mod pcap;
pub mod record;
pub mod replay;
pub mod transcript;
