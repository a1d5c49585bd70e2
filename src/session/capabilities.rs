//! What a session announces before its first command: the capability
//! lines and the greeting, built in one place from values the connection
//! layer may change (after STARTTLS the list differs).

use super::TlsInfo;
use crate::app::App;
use crate::auth::SaslContext;
use crate::protocol::Response;

/// Version in the greeting.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Implementation name in the greeting.
pub const IMPLEMENTATION: &str = "mupdated";
/// Capability line that announces the admin extensions.
pub const ADMIN_CAPABILITY: &str = "X-MUPDATED-ADMIN";

/// The capability list of a session, in the order Cyrus sends its banner
/// (`imap/mupdate.c: dobanner`: AUTH, STARTTLS, COMPRESS, PARTIAL-UPDATE),
/// this project's admin extensions last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// SASL mechanisms offered (`* AUTH "PLAIN"`).
    pub auth: Vec<&'static str>,
    /// Offer STARTTLS (`* STARTTLS`) and answer it by handing the stream
    /// back ([`super::Ended::Upgrade`]). Off until the server has TLS:
    /// STARTTLS is then `BAD "Unrecognized command"`, as from a Cyrus
    /// built without TLS.
    pub starttls: bool,
    /// The session runs over TLS already: STARTTLS is answered `BAD
    /// "Already did a successful Starttls"` (Cyrus: `docmd`), not as an
    /// unknown word.
    pub in_tls: bool,
    /// `* PARTIAL-UPDATE`: UPDATE may name hosts.
    pub partial_update: bool,
    /// `* X-MUPDATED-ADMIN`: the admin extensions.
    pub admin: bool,
}

impl Capabilities {
    /// What a fresh connection to this server announces (no TLS yet).
    pub fn of(app: &App) -> Capabilities {
        Capabilities::for_connection(app, None)
    }

    /// What a TCP connection announces given its TLS (`None`: not in TLS):
    /// with `[tls]` configured, STARTTLS until the connection is in TLS,
    /// and the facts SASL's policy needs ([`crate::auth::Authenticator::offered`]
    /// picks the mechanisms: none before TLS when `require`).
    pub fn for_connection(app: &App, tls: Option<&TlsInfo>) -> Capabilities {
        let configured = app.config.tls.as_ref();
        let ctx = SaslContext {
            in_tls: tls.is_some(),
            tls_required: configured.is_some_and(|t| t.require),
            verified_cert: tls.is_some_and(|t| t.client_names.is_some()),
        };
        Capabilities {
            auth: app.auth.offered(&ctx),
            starttls: configured.is_some() && tls.is_none(),
            in_tls: tls.is_some(),
            partial_update: true,
            admin: true,
        }
    }

    /// What a unix-socket connection announces: no STARTTLS, and TLS is
    /// not required there (nothing leaves the host; the socket's mode
    /// says who may connect).
    pub fn local(app: &App) -> Capabilities {
        let ctx = SaslContext { in_tls: false, tls_required: false, verified_cert: false };
        Capabilities { auth: app.auth.offered(&ctx), starttls: false, in_tls: false, partial_update: true, admin: true }
    }

    /// The capability lines, then the `* OK MUPDATE` greeting.
    pub fn banner(&self, server_name: &str) -> Vec<Response> {
        let cap = |name: &str, params: Vec<u8>| Response::Capability { name: name.as_bytes().to_vec(), params };
        let mechs: Vec<String> = self.auth.iter().map(|m| format!("\"{m}\"")).collect();
        let mut lines = vec![cap("AUTH", mechs.join(" ").into_bytes())];
        if self.starttls {
            lines.push(cap("STARTTLS", vec![]));
        }
        if self.partial_update {
            lines.push(cap("PARTIAL-UPDATE", vec![]));
        }
        if self.admin {
            lines.push(cap(ADMIN_CAPABILITY, vec![]));
        }
        lines.push(Response::Greeting {
            server_name: server_name.as_bytes().to_vec(),
            implementation: IMPLEMENTATION.as_bytes().to_vec(),
            version: VERSION.as_bytes().to_vec(),
        });
        lines
    }
}
