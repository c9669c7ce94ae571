//! NATS identities (ADR 0014): each process authenticates with its own nkey, an ed25519 key
//! pair whose seed (`SU...`) it reads from a file; the server is configured with the public
//! keys (`U...`) only, so its configuration holds no secret.

use std::path::Path;

use crate::BusError;

/// An nkey identity.
#[derive(Clone)]
pub struct Nkey {
    /// The seed: the secret the client signs the server's challenge with.
    pub seed: String,
    /// The public key the server knows the client by.
    pub public: String,
}

impl std::fmt::Debug for Nkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nkey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn credential_error(path: &Path, reason: impl std::fmt::Display) -> BusError {
    BusError::Credential {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The prefix of the reply subjects of the identity whose public nkey is `public`
/// (`_INBOX_<public>`): each identity may subscribe to its own replies only, so no credential
/// reads another's JetStream answers or learns the names of its consumers.
pub fn inbox_prefix(public: &str) -> String {
    format!("_INBOX_{public}")
}

/// Reads the nkey seed in `path` (surrounding whitespace ignored).
pub fn read_nkey(path: &Path) -> Result<Nkey, BusError> {
    let seed = std::fs::read_to_string(path).map_err(|e| credential_error(path, e))?;
    let seed = seed.trim().to_string();
    let pair = nkeys::KeyPair::from_seed(&seed)
        .map_err(|e| credential_error(path, format!("not an nkey seed: {e}")))?;
    if !seed.starts_with("SU") {
        return Err(credential_error(
            path,
            "not a user nkey seed (it must start with SU)",
        ));
    }
    Ok(Nkey {
        public: pair.public_key(),
        seed,
    })
}

/// Reads the nkey seed in `path`, or makes a new user key there (readable by its owner only)
/// when the file is missing.
pub fn load_or_create_nkey(path: &Path) -> Result<Nkey, BusError> {
    if path.exists() {
        return read_nkey(path);
    }
    let pair = nkeys::KeyPair::new_user();
    let seed = pair
        .seed()
        .map_err(|e| credential_error(path, format!("cannot encode the seed: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| credential_error(path, e))?;
    }
    write_private(path, &seed).map_err(|e| credential_error(path, e))?;
    Ok(Nkey {
        public: pair.public_key(),
        seed,
    })
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// A TLS client configuration that trusts the CA certificates in `ca` (PEM) and nothing else:
/// the NATS server's certificate must chain to the chain's own CA, never to a public one.
pub fn tls_client_config(ca: &Path) -> Result<async_nats::rustls::ClientConfig, BusError> {
    use async_nats::rustls;
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca)
        .map_err(|e| credential_error(ca, format!("cannot read the CA: {e}")))?;
    for certificate in certificates {
        let certificate =
            certificate.map_err(|e| credential_error(ca, format!("not a PEM certificate: {e}")))?;
        roots
            .add(certificate)
            .map_err(|e| credential_error(ca, format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(credential_error(ca, "holds no certificate"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| credential_error(ca, e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
