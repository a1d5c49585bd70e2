//! The TLS side of the tools' client: a [`Client`] over implicit TLS
//! ([`connect`] with [`Mode::Implicit`]) or over a connection upgraded by
//! STARTTLS ([`Mode::Starttls`]), verifying the server against `--ca` or
//! (like Cyrus's own client) not at all, optionally with a client
//! certificate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::client::{Client, ClientError, Greeting};
use crate::protocol::{Command, Status};

/// How TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The handshake first (`listen_tls`, Cyrus's `host:port/tls`).
    Implicit,
    /// Read the banner, send STARTTLS, then the handshake.
    Starttls,
}

/// What the client checks and presents.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Verify the server's certificate against these CAs (PEM), and its
    /// name against the host connected to. Without it the server is not
    /// verified at all (the connection is encrypted, not authenticated),
    /// as Cyrus's client does.
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM), with [`Options::key`].
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
}

/// A client over TLS on TCP.
pub type TlsClient = Client<TlsStream<TcpStream>>;

fn tls_error(what: impl std::fmt::Display) -> ClientError {
    ClientError::Protocol(format!("tls: {what}"))
}

/// Build the rustls client configuration for `options`.
pub fn client_config(options: &Options) -> Result<ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_error)?;
    let builder = match &options.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| tls_error(format!("{}: {e}", ca.display())))? {
                let c = c.map_err(|e| tls_error(format!("{}: {e}", ca.display())))?;
                roots.add(c).map_err(|e| tls_error(format!("{}: {e}", ca.display())))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder.dangerous().with_custom_certificate_verifier(Arc::new(Unverified(provider))),
    };
    match (&options.cert, &options.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| tls_error(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(format!("{}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(tls_error)
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(tls_error("--cert and --key go together")),
    }
}

/// The name the server's certificate is checked against: the host part
/// of `addr` (an IP address or a DNS name).
fn server_name(addr: &str) -> Result<ServerName<'static>, ClientError> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string()).map_err(|e| tls_error(format!("{host}: {e}")))
}

/// Wrap `stream` in TLS (the client side of the handshake).
pub async fn handshake(
    stream: TcpStream,
    addr: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let name = server_name(addr)?;
    match tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(tls_error(e)),
        Err(_) => Err(ClientError::Timeout),
    }
}

/// Connect to `addr` over TLS and read the greeting (after STARTTLS, the
/// second one).
pub async fn connect(
    addr: &str,
    timeout: Duration,
    mode: Mode,
    options: &Options,
) -> Result<(TlsClient, Greeting), ClientError> {
    let config = Arc::new(client_config(options)?);
    let stream =
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| ClientError::Timeout)??;
    let _ = stream.set_nodelay(true);
    let stream = match mode {
        Mode::Implicit => stream,
        Mode::Starttls => {
            let (mut c, greeting) = Client::over(stream, timeout).await?;
            if !greeting.has("STARTTLS") {
                return Err(tls_error("the server does not offer STARTTLS"));
            }
            let (_, status, text) = c.run(&Command::Starttls).await?;
            if status != Status::Ok {
                return Err(ClientError::Refused { status, text });
            }
            c.into_stream()
        }
    };
    let tls = handshake(stream, addr, config, timeout).await?;
    Client::over(tls, timeout).await
}

/// A verifier that accepts any server certificate but still checks the
/// handshake's signatures: what Cyrus's client does (it verifies nothing).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TCP stream in clear text or in TLS, for tools that take either
/// (mupdatectl's `--tls`/`--starttls`).
pub enum AnyStream {
    /// Clear text.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for AnyStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            AnyStream::Tls(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for AnyStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AnyStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            AnyStream::Tls(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            AnyStream::Tls(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AnyStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            AnyStream::Tls(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Connect in clear text (`mode` `None`) or over TLS, and read the
/// greeting (after STARTTLS, the second one).
pub async fn connect_any(
    addr: &str,
    timeout: Duration,
    mode: Option<Mode>,
    options: &Options,
) -> Result<(Client<AnyStream>, Greeting), ClientError> {
    match mode {
        None => {
            let stream =
                tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| ClientError::Timeout)??;
            let _ = stream.set_nodelay(true);
            Client::over(AnyStream::Plain(stream), timeout).await
        }
        Some(mode) => {
            let (c, greeting) = connect(addr, timeout, mode, options).await?;
            Ok((Client::over_connected(AnyStream::Tls(Box::new(c.into_stream())), timeout), greeting))
        }
    }
}
