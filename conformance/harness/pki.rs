//! A throw-away PKI for one test run, made with the `openssl` command in
//! the test's own folder: a CA, mupdated's server certificate and client
//! certificates for Cyrus backends (and for `mupdatectl --cert`).
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM (what `openssl req -nodes` writes);
//! certificates are X.509 v3 with the extensions webpki insists on
//! (basicConstraints, keyUsage, extendedKeyUsage). Files are mode 0644 so
//! that Cyrus, running as the `cyrus` user, can read its client key.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Certificates are valid this many days: a test run is much shorter.
const DAYS: &str = "2";

/// A certificate authority: its certificate and key, and the folder it
/// issues into.
#[derive(Debug, Clone)]
pub struct Ca {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: PathBuf,
}

/// A certificate issued by a [`Ca`] and its key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a certificate is for (its extendedKeyUsage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// Runs `openssl` with `args` in `dir`; panics with its output on failure
/// (or with what to install when the command is missing).
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): apt-get install -y openssl"));
    assert!(
        out.status.success(),
        "openssl {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

impl Ca {
    /// A new self-signed CA named `name` (its CN), files `<dir>/<name>-ca.pem`
    /// and `<dir>/<name>-ca.key`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        let subj = format!("/CN={name} test CA");
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", path(&key), "-out", path(&cert), "-days", DAYS, "-subj", &subj,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        readable(&cert);
        readable(&key);
        Ca {
            name: name.into(),
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// Issues a certificate with subject CN `cn` and the given DNS names and
    /// IP addresses as subjectAltName: `<dir>/<cn>.pem` and `<dir>/<cn>.key`.
    pub fn issue(&self, cn: &str, dns: &[&str], ips: &[&str], usage: Usage) -> Issued {
        let stem = format!("{}-{cn}", self.name);
        let cert = self.dir.join(format!("{stem}.pem"));
        let key = self.dir.join(format!("{stem}.key"));
        let csr = self.dir.join(format!("{stem}.csr"));
        let ext = self.dir.join(format!("{stem}.ext"));
        let mut san: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        san.extend(ips.iter().map(|i| format!("IP:{i}")));
        let eku = match usage {
            Usage::Server => "serverAuth",
            Usage::Client => "clientAuth",
        };
        let mut text = format!(
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage={eku}\n"
        );
        if !san.is_empty() {
            text.push_str(&format!("subjectAltName={}\n", san.join(",")));
        }
        std::fs::write(&ext, text).unwrap_or_else(|e| panic!("write {}: {e}", ext.display()));
        let subj = format!("/CN={cn}");
        openssl(
            &self.dir,
            &[
                "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", path(&key), "-out", path(&csr), "-subj", &subj,
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509", "-req", "-in", path(&csr), "-CA", path(&self.cert), "-CAkey", path(&self.key),
                "-CAcreateserial", "-out", path(&cert), "-days", DAYS, "-extfile", path(&ext),
            ],
        );
        readable(&cert);
        readable(&key);
        Issued { cert, key }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The PKI of one TLS test run: the murder's CA, mupdated's certificate
/// (CN and DNS name `mupdated.test`, IP 127.0.0.1: Cyrus checks neither,
/// but gives the server a CN, which its EXTERNAL code reads), and a CA
/// that has nothing to do with the murder.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: Ca,
    pub server: Issued,
    pub other_ca: Ca,
}

impl Pki {
    /// Makes the CAs and the server certificate under `dir`.
    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::new(dir, "murder");
        let server = ca.issue("mupdated.test", &["mupdated.test"], &["127.0.0.1"], Usage::Server);
        let other_ca = Ca::new(dir, "stranger");
        Pki { ca, server, other_ca }
    }

    /// A client certificate of the murder's CA with CN and DNS SAN `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.ca.issue(name, &[name], &[], Usage::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&ca.cert).expect("CA PEM")).expect("CA accepted");
        Arc::new(roots)
    }

    /// rustls (webpki) accepts what openssl made: the server certificate
    /// for its name and IP, a client certificate of the murder CA, and
    /// refuses one of the stranger CA.
    #[test]
    fn rustls_accepts_the_test_pki() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&pki.ca), provider.clone())
            .build()
            .expect("server verifier");
        let cert = CertificateDer::from_pem_file(&pki.server.cert).expect("server PEM");
        for name in ["mupdated.test", "127.0.0.1"] {
            let name = ServerName::try_from(name).expect("name");
            server.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()).expect("server certificate verifies");
        }
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&pki.ca), provider)
            .build()
            .expect("client verifier");
        let be1 = CertificateDer::from_pem_file(&pki.client("be1.test").cert).expect("client PEM");
        clients.verify_client_cert(&be1, &[], UnixTime::now()).expect("client certificate verifies");
        let stranger = pki.other_ca.issue("be1.test", &["be1.test"], &[], Usage::Client);
        let stranger = CertificateDer::from_pem_file(&stranger.cert).expect("stranger PEM");
        assert!(clients.verify_client_cert(&stranger, &[], UnixTime::now()).is_err());
    }
}
