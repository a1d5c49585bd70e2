//! SCRAM (RFC 5802; SHA-256 as RFC 7677): verifiers, a pure parser of the
//! client's messages, and the server's two steps. No tokio, no I/O: the
//! session feeds it the decoded SASL messages and sends what it returns.
//!
//! What mupdated accepts (the Cyrus 3.6.1 client over libsasl 2.1.28:
//! `plugins/scram.c`):
//! - gs2 flag `n` (no channel binding, what Cyrus sends) or `y` (the client
//!   could bind but thinks the server cannot: true, no `-PLUS` is offered);
//!   `p` (binding required) is refused;
//! - an authorization id (`a=`, Cyrus sends `mupdate_username`) checked by
//!   the caller; names with the `=2C`/`=3D` escapes and no other `=`;
//! - no mandatory extension (`m=`); optional ones after the nonce are ignored;
//! - iteration counts 4096 (RFC 5802's minimum) to 65536 (libsasl's client
//!   cancels above: `MAX_ITERATION_COUNTER`).
//!
//! Names and passwords are compared and hashed as their UTF-8 bytes (no
//! SASLprep, as libsasl's SCRAM does not apply it either).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};

/// Fewest iterations a verifier may have (RFC 5802 5.1 asks for 4096 or more).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations a verifier may have: libsasl's client cancels above.
pub const MAX_ITERATIONS: u32 = 65536;
/// Random bytes in the server's part of the nonce.
const NONCE_BYTES: usize = 18;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-1 (RFC 5802), for old libsasl; off by default.
    Sha1,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha1 => "SCRAM-SHA-1",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length.
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("hmac accepts any key length");
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            ScramHash::Sha256 => run::<Hmac<sha2::Sha256>>(key, data),
            ScramHash::Sha1 => run::<Hmac<sha1::Sha1>>(key, data),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            ScramHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            ScramHash::Sha1 => sha1::Sha1::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }

    fn output_len(self) -> usize {
        match self {
            ScramHash::Sha256 => 32,
            ScramHash::Sha1 => 20,
        }
    }
}

/// What the server keeps of a password for SCRAM (RFC 5802 3): never the
/// password, nor anything a client could log in with.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    /// The salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier of `password` with this salt and iteration count.
    pub fn derive(hash: ScramHash, password: &[u8], salt: &[u8], iterations: u32) -> Verifier {
        let salted = hash.salted_password(password, salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Verifier {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// The verifier of `password` with a fresh random salt (16 bytes).
    pub fn generate(hash: ScramHash, password: &[u8], iterations: u32) -> Verifier {
        Verifier::derive(hash, password, &random::<16>(), iterations)
    }

    /// Parse `salt,iterations,StoredKey,ServerKey` (base64 fields, as
    /// `mupdatectl hash-password --scram` prints them).
    pub fn parse(hash: ScramHash, text: &str) -> Result<Verifier, String> {
        let fields: Vec<&str> = text.trim().split(',').collect();
        let [salt, iterations, stored, server] = fields[..] else {
            return Err(format!("expected salt,iterations,StoredKey,ServerKey: {} fields found", fields.len()));
        };
        let b64 = |name: &str, v: &str| STANDARD.decode(v).map_err(|_| format!("{name} is not base64"));
        let salt = b64("salt", salt)?;
        if salt.is_empty() {
            return Err("salt is empty".into());
        }
        let iterations: u32 = iterations.parse().map_err(|_| format!("iterations {iterations:?} is not a number"))?;
        check_iterations(iterations)?;
        let stored_key = b64("StoredKey", stored)?;
        let server_key = b64("ServerKey", server)?;
        for (name, key) in [("StoredKey", &stored_key), ("ServerKey", &server_key)] {
            if key.len() != hash.output_len() {
                return Err(format!(
                    "{name} has {} bytes, {} has {}",
                    key.len(),
                    hash.mechanism(),
                    hash.output_len()
                ));
            }
        }
        Ok(Verifier { salt, iterations, stored_key, server_key })
    }

    /// The `salt,iterations,StoredKey,ServerKey` text [`Verifier::parse`] reads.
    pub fn encode(&self) -> String {
        format!(
            "{},{},{},{}",
            STANDARD.encode(&self.salt),
            self.iterations,
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

/// Is `n` an iteration count mupdated uses (4096 to 65536)?
pub fn check_iterations(n: u32) -> Result<(), String> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&n) {
        Ok(())
    } else {
        Err(format!("iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS} (Cyrus's client refuses more), not {n}"))
    }
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    use argon2::password_hash::rand_core::RngCore;
    let mut b = [0u8; N];
    argon2::password_hash::rand_core::OsRng.fill_bytes(&mut b);
    b
}

/// Why a SCRAM message was refused (logged; the peer only sees NO).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// Not UTF-8 text.
    #[error("SCRAM message is not UTF-8")]
    NotUtf8,
    /// The gs2 header is not `n,` / `y,` with an optional `a=` authzid.
    #[error("bad gs2 header")]
    Gs2Header,
    /// The client requires channel binding (`p=`), which mupdated does not offer.
    #[error("channel binding requested but not offered")]
    ChannelBinding,
    /// A mandatory extension (`m=`).
    #[error("unsupported mandatory extension")]
    MandatoryExtension,
    /// An attribute is missing, out of order or malformed.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// A name with an `=` that is not `=2C` or `=3D`, or empty.
    #[error("bad saslname")]
    BadName,
    /// The channel binding (`c=`) does not repeat the gs2 header.
    #[error("channel binding data differs from the gs2 header")]
    BindingMismatch,
    /// The nonce of the final message is not the one the server sent.
    #[error("nonce differs")]
    NonceMismatch,
    /// The proof is wrong (or the user unknown).
    #[error("wrong proof")]
    WrongProof,
}

/// The gs2 channel-binding flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: it does but thinks the server does not.
    Yes,
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The gs2 flag.
    pub flag: Gs2Flag,
    /// The authorization id (`a=`), unescaped; `None` when absent.
    pub authzid: Option<String>,
    /// The authentication id (`n=`), unescaped.
    pub user: String,
    /// The client's nonce (`r=`).
    pub nonce: String,
    /// The gs2 header as sent (`n,a=x,`): the final message's `c=` repeats it.
    pub gs2_header: String,
    /// client-first-message-bare, as sent: part of the AuthMessage.
    pub bare: String,
}

/// A parsed client-final message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal {
    /// The decoded channel binding (`c=`).
    pub channel_binding: Vec<u8>,
    /// The combined nonce (`r=`).
    pub nonce: String,
    /// The decoded proof (`p=`).
    pub proof: Vec<u8>,
    /// client-final-message-without-proof, as sent.
    pub without_proof: String,
}

/// `=2C` -> `,`, `=3D` -> `=`; any other `=`, a `,` or an empty name is an error.
pub fn unescape_saslname(s: &str) -> Result<String, ScramError> {
    if s.is_empty() || s.contains(',') {
        return Err(ScramError::BadName);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).ok_or(ScramError::BadName)?;
        out.push(match code {
            "2C" | "2c" => ',',
            "3D" | "3d" => '=',
            _ => return Err(ScramError::BadName),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `,` -> `=2C`, `=` -> `=3D`.
pub fn escape_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// A printable nonce: no `,`, no control characters (RFC 5802 7).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Parse a client-first message.
pub fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(msg).map_err(|_| ScramError::NotUtf8)?;
    let mut parts = text.splitn(3, ',');
    let flag = match parts.next() {
        Some("n") => Gs2Flag::No,
        Some("y") => Gs2Flag::Yes,
        Some(f) if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
        _ => return Err(ScramError::Gs2Header),
    };
    let authzid = match parts.next() {
        Some("") => None,
        Some(a) => Some(unescape_saslname(a.strip_prefix("a=").ok_or(ScramError::Gs2Header)?)?),
        None => return Err(ScramError::Gs2Header),
    };
    let bare = parts.next().ok_or(ScramError::Gs2Header)?;
    let gs2_header = text[..text.len() - bare.len()].to_string();
    let mut attrs = bare.split(',');
    let user = match attrs.next() {
        Some(a) if a.starts_with("m=") => return Err(ScramError::MandatoryExtension),
        Some(a) => unescape_saslname(a.strip_prefix("n=").ok_or(ScramError::Malformed("n= expected"))?)?,
        None => return Err(ScramError::Malformed("n= expected")),
    };
    let nonce = nonce_then_extensions(&mut attrs)?;
    Ok(ClientFirst { flag, authzid, user, nonce: nonce.to_string(), gs2_header, bare: bare.to_string() })
}

/// The `r=nonce` attribute, then optional extensions (`x=value`, ignored),
/// as both client messages end.
fn nonce_then_extensions<'a>(attrs: &mut std::str::Split<'a, char>) -> Result<&'a str, ScramError> {
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("r= expected"))?;
    if !valid_nonce(nonce) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    for a in attrs {
        if a.len() < 2 || a.as_bytes()[1] != b'=' || !a.as_bytes()[0].is_ascii_alphabetic() {
            return Err(ScramError::Malformed("bad extension"));
        }
    }
    Ok(nonce)
}

/// Parse a client-final message.
pub fn parse_client_final(msg: &[u8]) -> Result<ClientFinal, ScramError> {
    let text = std::str::from_utf8(msg).map_err(|_| ScramError::NotUtf8)?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("p= expected last"))?;
    let proof = STANDARD.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
    let mut attrs = without_proof.split(',');
    let cb = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Malformed("c= expected"))?;
    let channel_binding = STANDARD.decode(cb).map_err(|_| ScramError::Malformed("c= is not base64"))?;
    let nonce = nonce_then_extensions(&mut attrs)?;
    Ok(ClientFinal { channel_binding, nonce: nonce.to_string(), proof, without_proof: without_proof.to_string() })
}

/// A SCRAM exchange between the server's first and final messages.
#[derive(Debug)]
pub struct ServerExchange {
    hash: ScramHash,
    first: ClientFirst,
    server_first: String,
    nonce: String,
    /// `None`: unknown user (answered with a fake salt; fails at the proof).
    verifier: Option<Verifier>,
    fake: Verifier,
}

impl ServerExchange {
    /// Begin with the client-first message: `verifier` is the user's, or
    /// `None` for an unknown user, who is sent `fake`'s salt and iteration
    /// count (so the answer does not tell users apart) and fails at the
    /// proof. Returns the exchange and the server-first message.
    pub fn start(
        hash: ScramHash,
        first: ClientFirst,
        verifier: Option<Verifier>,
        fake: Verifier,
    ) -> (ServerExchange, Vec<u8>) {
        let nonce = format!("{}{}", first.nonce, STANDARD.encode(random::<NONCE_BYTES>()));
        Self::start_with_nonce(hash, first, verifier, fake, nonce)
    }

    fn start_with_nonce(
        hash: ScramHash,
        first: ClientFirst,
        verifier: Option<Verifier>,
        fake: Verifier,
        nonce: String,
    ) -> (ServerExchange, Vec<u8>) {
        let shown = verifier.as_ref().unwrap_or(&fake);
        let server_first = format!("r={nonce},s={},i={}", STANDARD.encode(&shown.salt), shown.iterations);
        let out = server_first.clone().into_bytes();
        (ServerExchange { hash, first, server_first, nonce, verifier, fake }, out)
    }

    /// The client-first message this exchange began with.
    pub fn client_first(&self) -> &ClientFirst {
        &self.first
    }

    /// Check the client-final message: the server-final message (`v=`) when
    /// the proof is right.
    pub fn finish(self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let fin = parse_client_final(msg)?;
        if fin.channel_binding != self.first.gs2_header.as_bytes() {
            return Err(ScramError::BindingMismatch);
        }
        if !super::constant_time_eq(fin.nonce.as_bytes(), self.nonce.as_bytes()) {
            return Err(ScramError::NonceMismatch);
        }
        let auth_message = format!("{},{},{}", self.first.bare, self.server_first, fin.without_proof);
        // The same work for an unknown user as for a known one.
        let (v, known) = match &self.verifier {
            Some(v) => (v, true),
            None => (&self.fake, false),
        };
        let signature = self.hash.hmac(&v.stored_key, auth_message.as_bytes());
        if fin.proof.len() != signature.len() {
            return Err(ScramError::WrongProof);
        }
        let client_key: Vec<u8> = fin.proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let ok = super::constant_time_eq(&self.hash.digest(&client_key), &v.stored_key);
        if !(ok && known) {
            return Err(ScramError::WrongProof);
        }
        let server_signature = self.hash.hmac(&v.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// The client's side of SCRAM (mupdatectl, tests).
pub struct ClientExchange {
    hash: ScramHash,
    password: Vec<u8>,
    bare: String,
    gs2_header: String,
    nonce: String,
    server_signature: Option<Vec<u8>>,
}

impl ClientExchange {
    /// The client-first message for `user` (and an authzid, when given).
    pub fn new(hash: ScramHash, user: &str, authzid: Option<&str>, password: &[u8]) -> (ClientExchange, Vec<u8>) {
        Self::with_nonce(hash, user, authzid, password, &STANDARD.encode(random::<NONCE_BYTES>()))
    }

    fn with_nonce(
        hash: ScramHash,
        user: &str,
        authzid: Option<&str>,
        password: &[u8],
        nonce: &str,
    ) -> (ClientExchange, Vec<u8>) {
        let gs2_header = match authzid {
            Some(a) => format!("n,a={},", escape_saslname(a)),
            None => "n,,".to_string(),
        };
        let bare = format!("n={},r={nonce}", escape_saslname(user));
        let first = format!("{gs2_header}{bare}").into_bytes();
        let c = ClientExchange {
            hash,
            password: password.to_vec(),
            bare,
            gs2_header,
            nonce: nonce.to_string(),
            server_signature: None,
        };
        (c, first)
    }

    /// Answer the server-first message: the client-final message.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first is not UTF-8".to_string())?;
        let mut attrs = text.split(',');
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or("server-first: r= expected")?;
        let salt = attrs.next().and_then(|a| a.strip_prefix("s=")).ok_or("server-first: s= expected")?;
        let iterations = attrs.next().and_then(|a| a.strip_prefix("i=")).ok_or("server-first: i= expected")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("server nonce does not extend ours".into());
        }
        let salt = STANDARD.decode(salt).map_err(|_| "salt is not base64".to_string())?;
        let iterations: u32 = iterations.parse().map_err(|_| "iteration count is not a number".to_string())?;
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!("iteration count {iterations} out of range"));
        }
        let salted = self.hash.salted_password(&self.password, &salt, iterations);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let stored_key = self.hash.digest(&client_key);
        let without_proof = format!("c={},r={nonce}", STANDARD.encode(&self.gs2_header));
        let auth_message = format!("{},{},{}", self.bare, text, without_proof);
        let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        self.server_signature = Some(self.hash.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Check the server-final message: does the server know the verifier?
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final is not UTF-8".to_string())?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("server error {e}"));
        }
        let v = text.strip_prefix("v=").ok_or("server-final: v= expected")?;
        let v = STANDARD.decode(v).map_err(|_| "server signature is not base64".to_string())?;
        match &self.server_signature {
            Some(s) if super::constant_time_eq(s, &v) => Ok(()),
            _ => Err("the server's signature is wrong: it does not hold this password's verifier".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> Verifier {
        Verifier::derive(ScramHash::Sha256, b"nope", b"fakesalt", 4096)
    }

    /// RFC 7677 3: user "user", password "pencil", the nonces and salt given.
    #[test]
    fn rfc7677_sha256_vector() {
        let hash = ScramHash::Sha256;
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::derive(hash, b"pencil", &salt, 4096);
        let client_first = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        let first = parse_client_first(client_first).unwrap();
        assert_eq!((first.user.as_str(), first.authzid.clone(), first.flag), ("user", None, Gs2Flag::No));
        let (ex, server_first) = ServerExchange::start_with_nonce(
            hash,
            first,
            Some(v),
            fake(),
            "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        );
        assert_eq!(server_first, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let client_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(ex.finish(client_final).unwrap(), b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // The client side computes the same messages.
        let (mut c, cf) = ClientExchange::with_nonce(hash, "user", None, b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(cf, client_first);
        assert_eq!(c.respond(&server_first).unwrap(), client_final);
        c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert!(c.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").is_err());
    }

    /// RFC 5802 5: user "user", password "pencil".
    #[test]
    fn rfc5802_sha1_vector() {
        let hash = ScramHash::Sha1;
        let salt = STANDARD.decode("QSXCR+Q6sek8bf92").unwrap();
        let v = Verifier::derive(hash, b"pencil", &salt, 4096);
        let first = parse_client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        let (ex, server_first) = ServerExchange::start_with_nonce(
            hash,
            first,
            Some(v),
            fake(),
            "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j".into(),
        );
        assert_eq!(server_first, b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
        let fin = b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
        assert_eq!(ex.finish(fin).unwrap(), b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }

    fn exchange(password: &[u8], authzid: Option<&str>) -> Result<Vec<u8>, ScramError> {
        let hash = ScramHash::Sha256;
        let v = Verifier::generate(hash, b"secret", 4096);
        let (mut c, cf) = ClientExchange::new(hash, "be1", authzid, password);
        let (ex, sf) = ServerExchange::start(hash, parse_client_first(&cf)?, Some(v), fake());
        let fin = c.respond(&sf).unwrap();
        let out = ex.finish(&fin)?;
        c.verify(&out).unwrap();
        Ok(out)
    }

    #[test]
    fn generated_verifiers_log_in_and_wrong_passwords_do_not() {
        assert!(exchange(b"secret", None).is_ok());
        assert!(exchange(b"secret", Some("be1")).is_ok());
        assert_eq!(exchange(b"Secret", None), Err(ScramError::WrongProof));
    }

    #[test]
    fn unknown_users_get_the_fake_salt_and_fail_at_the_proof() {
        let hash = ScramHash::Sha256;
        let f = fake();
        let (mut c, cf) = ClientExchange::new(hash, "nobody", None, b"nope");
        let (ex, sf) = ServerExchange::start(hash, parse_client_first(&cf).unwrap(), None, f.clone());
        let text = String::from_utf8(sf.clone()).unwrap();
        assert!(text.ends_with(&format!(",s={},i=4096", STANDARD.encode(&f.salt))), "{text}");
        // Even the fake's own password does not log an unknown user in.
        let fin = c.respond(&sf).unwrap();
        assert_eq!(ex.finish(&fin), Err(ScramError::WrongProof));
    }

    #[test]
    fn tampered_final_messages_are_refused() {
        let hash = ScramHash::Sha256;
        let run = |edit: &dyn Fn(String) -> String| {
            let v = Verifier::generate(hash, b"pw", 4096);
            let (mut c, cf) = ClientExchange::new(hash, "u", None, b"pw");
            let (ex, sf) = ServerExchange::start(hash, parse_client_first(&cf).unwrap(), Some(v), fake());
            let fin = String::from_utf8(c.respond(&sf).unwrap()).unwrap();
            ex.finish(edit(fin).as_bytes())
        };
        assert!(run(&|s| s).is_ok());
        assert_eq!(run(&|s| s.replacen("c=biws", "c=eSws", 1)), Err(ScramError::BindingMismatch));
        assert_eq!(run(&|s| s.replacen(",r=", ",r=x", 1)), Err(ScramError::NonceMismatch));
        assert_eq!(run(&|s| s.replacen(",p=", ",p=!", 1)), Err(ScramError::Malformed("proof is not base64")));
        assert_eq!(run(&|s| s.replacen(",p=", ",p=AAAA", 1)), Err(ScramError::WrongProof), "longer proof");
        assert_eq!(run(&|s| format!("{},p=AAAA", s.rsplit_once(",p=").unwrap().0)), Err(ScramError::WrongProof));
        assert!(run(&|s| s.replacen(",p=", ",x=1,p=", 1)).is_err(), "an extension is part of the signed message");
        assert_eq!(run(&|s| s.replacen("c=", "C=", 1)), Err(ScramError::Malformed("c= expected")));
        assert_eq!(run(&|s| s.rsplit_once(",p=").unwrap().0.to_string()), Err(ScramError::Malformed("p= expected last")));
        assert_eq!(run(&|_| "\u{0}\u{ff}".into()), Err(ScramError::Malformed("p= expected last")));
    }

    #[test]
    fn malformed_client_first_messages() {
        use ScramError::*;
        let cases: &[(&[u8], ScramError)] = &[
            (b"", Gs2Header),
            (b"n", Gs2Header),
            (b"n,", Gs2Header),
            (b"x,,n=u,r=a", Gs2Header),
            (b"p=tls-unique,,n=u,r=a", ChannelBinding),
            (b"n,b=x,n=u,r=a", Gs2Header),
            (b"n,a=,n=u,r=a", BadName),
            (b"n,a=x=2,n=u,r=a", BadName),
            (b"n,,m=x,n=u,r=a", MandatoryExtension),
            (b"n,,u,r=a", Malformed("n= expected")),
            (b"n,,n=,r=a", BadName),
            (b"n,,n=a=41,r=a", BadName),
            (b"n,,n=u", Malformed("r= expected")),
            (b"n,,n=u,x=a", Malformed("r= expected")),
            (b"n,,n=u,r=", Malformed("bad nonce")),
            (b"n,,n=u,r=a b", Malformed("bad nonce")),
            (b"n,,n=u,r=a,1", Malformed("bad extension")),
            (b"n,,n=u,r=a,", Malformed("bad extension")),
            (b"n,,n=\xff,r=a", NotUtf8),
        ];
        for (msg, want) in cases {
            assert_eq!(parse_client_first(msg).as_ref().err(), Some(want), "{:?}", String::from_utf8_lossy(msg));
        }
        let ok = parse_client_first(b"y,a=be=2C1=3D,n=a=3Db=2cc,r=abc,x=ext").unwrap();
        assert_eq!((ok.flag, ok.authzid.as_deref(), ok.user.as_str()), (Gs2Flag::Yes, Some("be,1="), "a=b,c"));
        assert_eq!((ok.gs2_header.as_str(), ok.bare.as_str()), ("y,a=be=2C1=3D,", "n=a=3Db=2cc,r=abc,x=ext"));
        assert_eq!(unescape_saslname(&escape_saslname("a,=b")).unwrap(), "a,=b");
    }

    #[test]
    fn verifier_text_round_trips_and_is_checked() {
        let v = Verifier::generate(ScramHash::Sha256, b"pw", 8192);
        assert_eq!(Verifier::parse(ScramHash::Sha256, &v.encode()).unwrap(), v);
        assert!(Verifier::parse(ScramHash::Sha1, &v.encode()).unwrap_err().contains("StoredKey has 32 bytes"));
        let e = |s: &str| Verifier::parse(ScramHash::Sha256, s).unwrap_err();
        assert!(e("a,b,c").contains("3 fields"));
        assert!(e(&v.encode().replacen(",8192,", ",100000,", 1)).contains("4096 to 65536"));
        assert!(e(&v.encode().replacen(",8192,", ",1000,", 1)).contains("4096 to 65536"));
        assert!(e(&v.encode().replacen(",8192,", ",x,", 1)).contains("not a number"));
        assert!(e(&format!("!{}", v.encode())).contains("salt is not base64"));
        assert!(format!("{v:?}").contains("8192") && !format!("{v:?}").contains(&STANDARD.encode(&v.stored_key)));
    }
}
