//! TLS on the transport seam: the server's rustls configuration, loaded
//! from `[tls]`, swapped whole on SIGHUP ([`Tls::reload`]), and the
//! handshake that turns an accepted stream (or the stream a STARTTLS
//! handed back) into a TLS stream and the session's [`TlsInfo`].
//!
//! One certificate for every connection, whatever the client names (Cyrus
//! sends no SNI); TLS 1.2 and 1.3 only; with `client_ca`, client
//! certificates are verified against it, and clients without one still
//! connect (they log in with a password). See docs/architecture/tls.md.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::session::TlsInfo;

/// Why the certificates or keys could not be loaded; every variant names
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or held no usable PEM.
    #[error("tls: {path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the certificate and key together (a key that does
    /// not match the certificate, an unsupported key type).
    #[error("tls: certificate {cert} with key {key}: {why}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
}

/// Why a handshake failed (the connection is then closed).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not done within `handshake_timeout` (or the login deadline).
    #[error("TLS handshake timed out")]
    Timeout,
    /// The peer closed or sent what is not TLS, or rustls refused it.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// The server's TLS: the paths to re-read and the configuration new
/// handshakes use.
pub struct Tls {
    paths: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// Most time a handshake may take.
    pub handshake_timeout: Duration,
}

impl Tls {
    /// Load the certificate chain, the key and the client CAs named in
    /// `[tls]`; an error names the file.
    pub fn load(paths: &TlsConfig) -> Result<Tls, TlsError> {
        let config = build(paths)?;
        Ok(Tls {
            paths: paths.clone(),
            current: RwLock::new(Arc::new(config)),
            handshake_timeout: Duration::from_secs(paths.handshake_timeout),
        })
    }

    /// Re-read every file (SIGHUP). New handshakes use the new files;
    /// connections already in TLS keep theirs. On an error the old
    /// configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(build(&self.paths)?);
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    /// Whether client certificates are verified (`client_ca` is set).
    pub fn verifies_clients(&self) -> bool {
        self.paths.client_ca.is_some()
    }

    fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Do the server side of a handshake over `stream`, by `deadline` at
    /// the latest (the login deadline) and within `handshake_timeout`.
    /// Logs the version and cipher suite, and the client certificate's
    /// names when one was verified.
    pub async fn accept<S>(
        &self,
        stream: S,
        deadline: tokio::time::Instant,
    ) -> Result<(TlsStream<S>, TlsInfo), HandshakeError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.config());
        let deadline = deadline.min(tokio::time::Instant::now() + self.handshake_timeout);
        let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
            Err(_) => return Err(HandshakeError::Timeout),
        };
        let info = info_of(stream.get_ref().1);
        match &info.client_names {
            Some(names) => tracing::info!(
                version = %info.version,
                cipher = %info.cipher,
                client = %crate::net::log::Escaped(names.join(",").as_bytes()),
                "TLS handshake done"
            ),
            None => tracing::info!(version = %info.version, cipher = %info.cipher, "TLS handshake done"),
        }
        Ok((stream, info))
    }
}

/// What a finished handshake negotiated, and the verified client
/// certificate's names (its CN and DNS subject alternative names).
fn info_of(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
    let cipher = conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default();
    // rustls hands out peer certificates only once its verifier accepted
    // them: a client certificate here is a verified one.
    let client_names = conn.peer_certificates().and_then(|c| c.first()).map(|c| cert_names(c.as_ref()));
    TlsInfo { version, cipher, client_names }
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), why: why.to_string() }
}

/// Read a whole file, naming it in the error.
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)"));
    }
    Ok(certs)
}

/// Build the rustls configuration from the files.
fn build(paths: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&paths.cert)?;
    let key_pem = read(&paths.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        file_error(&paths.key, format!("no private key (PEM PKCS#8, PKCS#1 or SEC1 expected): {e}"))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair_error = |e: rustls::Error| TlsError::Pair {
        cert: paths.cert.clone(),
        key: paths.key.clone(),
        why: e.to_string(),
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(pair_error)?;
    let builder = match &paths.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c).map_err(|e| file_error(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| file_error(ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // Check that the key belongs to the certificate: a mismatch would
    // otherwise only show as failed handshakes.
    let signing = provider.key_provider.load_private_key(key.clone_key()).map_err(pair_error)?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing).keys_match().map_err(pair_error)?;
    builder.with_single_cert(chain, key).map_err(pair_error)
}

/// A DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed DER value.
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, content, rest) = der(input)?;
        input = rest;
        Some((tag, content))
    })
}

/// OID 2.5.4.3 (commonName) and 2.5.29.17 (subjectAltName), encoded.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// The subject CN(s), then the DNS subject alternative names, of a DER
/// certificate; what cannot be read is left out (the certificate was
/// verified already: this only names it).
pub fn cert_names(cert: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let Some((0x30, certificate, _)) = der(cert) else { return names };
    let Some((0x30, tbs, _)) = der(certificate) else { return names };
    let mut fields: Vec<(u8, &[u8])> = elements(tbs).collect();
    // [0] version is optional.
    if fields.first().is_some_and(|(t, _)| *t == 0xa0) {
        fields.remove(0);
    }
    // serial, signature, issuer, validity, subject, spki, then [3] extensions.
    if let Some((0x30, subject)) = fields.get(4) {
        for (_, set) in elements(subject) {
            for (_, attr) in elements(set) {
                let mut parts = elements(attr);
                if let (Some((0x06, oid)), Some((_, value))) = (parts.next(), parts.next()) {
                    if oid == OID_CN {
                        names.push(String::from_utf8_lossy(value).into_owned());
                    }
                }
            }
        }
    }
    if let Some((_, extensions)) = fields.iter().find(|(t, _)| *t == 0xa3) {
        let Some((0x30, list, _)) = der(extensions) else { return names };
        for (_, ext) in elements(list) {
            let parts: Vec<(u8, &[u8])> = elements(ext).collect();
            let (Some((0x06, oid)), Some((0x04, value))) = (parts.first(), parts.last()) else { continue };
            if *oid != OID_SAN {
                continue;
            }
            let Some((0x30, general_names, _)) = der(value) else { continue };
            for (tag, name) in elements(general_names) {
                // dNSName [2] IA5String.
                if tag == 0x82 {
                    names.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose reads end as tokio-rustls reports a peer that closed
    /// without close_notify.
    struct NoCloseNotify;

    impl AsyncRead for NoCloseNotify {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer closed connection without sending TLS close_notify");
            std::task::Poll::Ready(Err(e))
        }
    }

    impl AsyncWrite for NoCloseNotify {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            b: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_missing_close_notify_is_an_ordinary_end_of_stream() {
        let limits = crate::protocol::Limits { max_line: 1024, max_literal: 1024, max_message: 1024 };
        let mut conn = crate::net::connection::Connection::new(NoCloseNotify, limits, Duration::from_secs(1));
        assert!(matches!(conn.read_more().await, Ok(false)));
    }

    #[test]
    fn der_reader_refuses_truncated_and_oversized_lengths() {
        assert!(der(&[]).is_none());
        assert!(der(&[0x30]).is_none());
        assert!(der(&[0x30, 0x05, 1, 2]).is_none());
        assert!(der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert_eq!(der(&[0x30, 0x81, 0x01, 7, 9]), Some((0x30, &[7u8][..], &[9u8][..])));
        assert!(cert_names(&[0x30, 0x03, 0x30, 0x01]).is_empty());
    }
}
