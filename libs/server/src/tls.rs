//! Mutual TLS between Verity's services (ADR 0014): who a gRPC peer is, and what it may call.
//!
//! One CA per chain issues every service a certificate that names its **role** as a DNS
//! subject-alternative name `<role>.verity` ([`Role::dns_name`]). Each service serves gRPC
//! over TLS with its own certificate, asks every client for one (rustls checks it against the
//! CA), and an authorization layer ([`Policy`]) lets a method through only for the roles it
//! names. Clients check the server's certificate names the role they meant to call, so an
//! ingress only forwards to a sequencer and a gateway only queries a replica.
//!
//! Health (`grpc.health.v1.Health`) stays open to callers without a certificate: load balancers
//! and the devnet probe it. Everything else, reflection included, needs a certificate of an
//! allowed role; the admin role may call everything.
//!
//! A service started without `--tls-cert` serves plaintext and authorizes nobody (it logs so):
//! the in-process tests do that; the devnet and the chart always give certificates.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    Status,
    transport::{
        Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
        server::{TcpConnectInfo, TlsConnectInfo},
    },
};

/// What a certificate says its holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The sequencer (active or standby).
    Sequencer,
    /// Ingress.
    Ingress,
    /// A JSON-RPC gateway.
    Gateway,
    /// A full replica.
    Replica,
    /// The witness replica.
    Witness,
    /// A verifier replica.
    Verifier,
    /// A prover.
    Prover,
    /// The prover autoscaler.
    Autoscaler,
    /// Operators and their tools (`verity` CLI, tests): may call everything.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 9] = [
        Role::Sequencer,
        Role::Ingress,
        Role::Gateway,
        Role::Replica,
        Role::Witness,
        Role::Verifier,
        Role::Prover,
        Role::Autoscaler,
        Role::Admin,
    ];

    /// The role's name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Sequencer => "sequencer",
            Role::Ingress => "ingress",
            Role::Gateway => "gateway",
            Role::Replica => "replica",
            Role::Witness => "witness",
            Role::Verifier => "verifier",
            Role::Prover => "prover",
            Role::Autoscaler => "autoscaler",
            Role::Admin => "admin",
        }
    }

    /// The role named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The DNS subject-alternative name that certifies this role.
    pub fn dns_name(self) -> String {
        format!("{}.verity", self.name())
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The flags name some but not all of the three files.
    #[error(
        "--tls-cert, --tls-key and --tls-ca (VERITY_TLS_CERT, VERITY_TLS_KEY, VERITY_TLS_CA) go \
         together: give all three or none"
    )]
    Incomplete,
    /// The certificate is not usable.
    #[error("{path}: {reason}")]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Issuing a certificate failed.
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The TLS flags every service shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// This process's certificate (PEM), issued by the chain's CA for its role; with
    /// --tls-key and --tls-ca, gRPC is served and called over mutual TLS (ADR 0014).
    #[arg(long = "tls-cert", env = "VERITY_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long = "tls-key", env = "VERITY_TLS_KEY")]
    pub key: Option<PathBuf>,
    /// The chain's CA certificate (PEM): peers must present a certificate it issued.
    #[arg(long = "tls-ca", env = "VERITY_TLS_CA")]
    pub ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The three files of `dir` that [`issue`] writes for `name`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            cert: Some(dir.join(format!("{name}.pem"))),
            key: Some(dir.join(format!("{name}.key"))),
            ca: Some(dir.join(CA_CERT)),
        }
    }

    /// The flags as command-line arguments.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
            ("--tls-ca", &self.ca),
        ] {
            if let Some(path) = path {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
        }
        args
    }

    /// Loads the material (`None`: no TLS configured), checking the certificate names exactly
    /// one role.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        let (cert, key, ca) = match (&self.cert, &self.key, &self.ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            _ => return Err(TlsError::Incomplete),
        };
        let cert_pem = read(cert)?;
        let role = role_of_pem(&cert_pem).map_err(|reason| TlsError::Certificate {
            path: cert.clone(),
            reason,
        })?;
        Ok(Some(Tls {
            identity: Identity::from_pem(cert_pem, read(key)?),
            ca: Certificate::from_pem(read(ca)?),
            role,
        }))
    }
}

/// A service's TLS material: its identity, the CA it trusts, the role its certificate names.
#[derive(Debug, Clone)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
    /// The role this process's certificate names.
    pub role: Role,
}

impl Tls {
    /// The server side: this identity; clients asked for a certificate of the CA, which the
    /// [`Policy`] then requires per method (optional at the TLS layer so health stays open).
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
    }

    /// The client side, calling a server of role `peer`: the server's certificate must name
    /// it; this identity is presented.
    pub fn client_config(&self, peer: Role) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(peer.dns_name())
    }
}

/// An endpoint for `url` of a server of role `peer`: over TLS when `tls` is given (the URL's
/// scheme becomes `https`, so that a URL advertised as `http://` cannot silently go plaintext),
/// plaintext otherwise.
pub fn endpoint(url: &str, tls: Option<&Tls>, peer: Role) -> Result<Endpoint, String> {
    let url = match tls {
        Some(_) => {
            // tonic speaks TLS only to a scheme of exactly `https`; anything else would go out
            // in plaintext with the server unchecked.
            let (scheme, rest) = url
                .split_once("://")
                .ok_or_else(|| format!("{url:?}: no scheme (http:// or https://)"))?;
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(format!(
                    "{url:?}: scheme {scheme:?} is neither http nor https"
                ));
            }
            format!("https://{rest}")
        }
        None => url.to_string(),
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| format!("{url:?}: {e}"))?;
    match tls {
        Some(tls) => endpoint
            .tls_config(tls.client_config(peer))
            .map_err(|e| format!("{url:?}: {e}")),
        None => Ok(endpoint),
    }
}

/// The single role a certificate (PEM, the first one in the file) certifies.
fn role_of_pem(pem: &[u8]) -> Result<Role, String> {
    let der = pem_first_certificate(pem).ok_or("no PEM certificate in the file")?;
    role_of_der(&der)
}

/// The single role a DER certificate certifies; refused when it names none or several (a
/// wildcard would name them all).
fn role_of_der(der: &[u8]) -> Result<Role, String> {
    let der = rustls_pki_types::CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| format!("{e:?}"))?;
    let mut roles = Role::ALL.into_iter().filter(|role| {
        rustls_pki_types::ServerName::try_from(role.dns_name())
            .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
    });
    match (roles.next(), roles.next()) {
        (Some(role), None) => Ok(role),
        (None, _) => Err("the certificate names no Verity role (<role>.verity)".into()),
        (Some(_), Some(_)) => Err("the certificate names more than one Verity role".into()),
    }
}

fn pem_first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// Which roles may call which methods.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `(path, roles)`: a path ending in `/` covers every method of that service. The admin
    /// role may call everything; health is open; any other path is the admin's only.
    pub rules: &'static [(&'static str, &'static [Role])],
}

/// The health service's path prefix: open to callers without a certificate.
pub const HEALTH: &str = "/grpc.health.v1.Health/";

impl Policy {
    /// A service that serves only health (and reflection, for admins).
    pub const HEALTH_ONLY: Policy = Policy { rules: &[] };

    /// Whether a caller of `role` (`None`: no certificate) may call `path`.
    pub fn check(&self, path: &str, role: Option<Role>) -> Result<(), Status> {
        if path.starts_with(HEALTH) {
            return Ok(());
        }
        let allowed: &[Role] = self
            .rules
            .iter()
            .find(|(rule, _)| {
                if rule.ends_with('/') {
                    path.starts_with(rule)
                } else {
                    path == *rule
                }
            })
            .map_or(&[], |(_, roles)| roles);
        let names = || {
            std::iter::once("admin")
                .chain(allowed.iter().map(|r| r.name()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match role {
            Some(Role::Admin) => Ok(()),
            Some(role) if allowed.contains(&role) => Ok(()),
            Some(role) => Err(Status::permission_denied(format!(
                "{path} may be called by {} only, not by a {role} certificate",
                names()
            ))),
            None => Err(Status::unauthenticated(format!(
                "{path} needs a client certificate of the chain's CA naming one of: {}",
                names()
            ))),
        }
    }
}

/// The role of the peer of a request, from the certificate rustls verified on its connection.
fn peer_role<B>(request: &http::Request<B>, known: &KnownRoles) -> Option<Role> {
    let certs = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    known.role_of(certs.first()?.as_ref())
}

/// How many callers' certificates [`KnownRoles`] keeps (a service has a handful of peers).
const KNOWN_ROLES: usize = 64;

/// The roles of the certificates callers presented lately, by their whole DER encoding. Parsing
/// a certificate and matching its names against every role cost more than a small read it
/// guards (5 % of a replica's CPU under reads), and a connection presents the same certificate on
/// every call. Keyed on every byte, so a cached role is only ever that very certificate's
/// (rustls checked its chain at the handshake; a role is a property of the bytes alone).
#[derive(Debug, Default)]
struct KnownRoles(std::sync::Mutex<Vec<(Vec<u8>, Role)>>);

impl KnownRoles {
    fn role_of(&self, der: &[u8]) -> Option<Role> {
        let lock = || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((_, role)) = lock().iter().find(|(known, _)| known.as_slice() == der) {
            return Some(*role);
        }
        let role = role_of_der(der).ok()?;
        let mut known = lock();
        if known.len() >= KNOWN_ROLES {
            known.clear();
        }
        known.push((der.to_vec(), role));
        Some(role)
    }
}

/// The tower layer that applies a [`Policy`] to every request of a TLS server (or lets every
/// request through, on a plaintext server, where no caller can be known).
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    policy: Option<Arc<Policy>>,
    known: Arc<KnownRoles>,
}

impl AuthorizeLayer {
    /// Applies `policy` when `enforce`.
    pub fn new(policy: Policy, enforce: bool) -> Self {
        Self {
            policy: enforce.then(|| Arc::new(policy)),
            known: Arc::default(),
        }
    }
}

impl<S> tower::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policy: self.policy.clone(),
            known: self.known.clone(),
        }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Option<Arc<Policy>>,
    known: Arc<KnownRoles>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Authorize<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(policy) = &self.policy else {
            return Box::pin(self.inner.call(request));
        };
        let role = peer_role(&request, &self.known);
        match policy.check(request.uri().path(), role) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => {
                metrics::counter!("verity_grpc_refused_total", "code" => format!("{:?}", status.code()))
                    .increment(1);
                tracing::warn!(
                    path = request.uri().path(),
                    role = role.map(Role::name),
                    reason = status.message(),
                    "gRPC call refused"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The CA certificate's file name in a directory written by [`issue`].
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name in a directory written by [`issue`] (keep it offline in production).
pub const CA_KEY: &str = "ca.key";

fn ca_params() -> Result<rcgen::CertificateParams, TlsError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Issue(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Verity chain CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Makes (once) a CA in `dir` and a certificate for each `(name, role)` that has none yet:
/// `<name>.pem` and `<name>.key` (0600), the role as its DNS name. Existing files are kept, so
/// running it again only fills what is missing. Returns the names issued now.
pub fn issue(dir: &Path, identities: &[(&str, Role)]) -> Result<Vec<String>, TlsError> {
    let issuer = chain_ca(dir)?;
    let mut issued = Vec::new();
    for (name, role) in identities {
        if issue_one(
            dir,
            &issuer,
            name,
            vec![role.dns_name()],
            &format!("verity {role} {name}"),
        )? {
            issued.push((*name).to_string());
        }
    }
    Ok(issued)
}

/// Makes (once) the CA in `dir` and a server certificate `<name>.pem`/`<name>.key` for a
/// server that is not a Verity role, the NATS server: `hosts` are the DNS names (`*.` wildcards
/// allowed) and IP addresses its clients dial. Kept when it exists and names exactly `hosts`;
/// made again when the hosts changed. Returns whether it was issued now.
pub fn issue_server(dir: &Path, name: &str, hosts: &[String]) -> Result<bool, TlsError> {
    let issuer = chain_ca(dir)?;
    let stamp = dir.join(format!("{name}.hosts"));
    let wanted = hosts.join("\n");
    let current = std::fs::read_to_string(&stamp).unwrap_or_default();
    if current != wanted {
        let _ = std::fs::remove_file(dir.join(format!("{name}.pem")));
    }
    let issued = issue_one(
        dir,
        &issuer,
        name,
        hosts.to_vec(),
        &format!("verity {name}"),
    )?;
    if issued {
        std::fs::write(&stamp, wanted).map_err(|source| TlsError::Io {
            path: stamp.clone(),
            source,
        })?;
    }
    Ok(issued)
}

/// The chain's CA in `dir`, made there when it has none.
fn chain_ca(dir: &Path) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let issue_error = |e: rcgen::Error| TlsError::Issue(e.to_string());
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let ca_key_pair = if ca_key.is_file() && ca_cert.is_file() {
        let pem = String::from_utf8_lossy(&read(&ca_key)?).into_owned();
        rcgen::KeyPair::from_pem(&pem).map_err(issue_error)?
    } else {
        let key = rcgen::KeyPair::generate().map_err(issue_error)?;
        let cert = ca_params()?.self_signed(&key).map_err(issue_error)?;
        write_private(&ca_key, &key.serialize_pem())?;
        write_private(&ca_cert, &cert.pem())?;
        key
    };
    Ok(rcgen::Issuer::new(ca_params()?, ca_key_pair))
}

/// Issues `<name>.pem`/`<name>.key` naming `names` (IP addresses become IP names) unless both
/// exist; returns whether it did.
fn issue_one(
    dir: &Path,
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    name: &str,
    names: Vec<String>,
    common_name: &str,
) -> Result<bool, TlsError> {
    let issue_error = |e: rcgen::Error| TlsError::Issue(e.to_string());
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    if cert_path.is_file() && key_path.is_file() {
        return Ok(false);
    }
    let key = rcgen::KeyPair::generate().map_err(issue_error)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(issue_error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, issuer).map_err(issue_error)?;
    write_private(&key_path, &key.serialize_pem())?;
    write_private(&cert_path, &cert.pem())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An issued certificate names its role and only it; the policy lets each role call only
    /// its methods, the admin everything, and health anyone.
    #[test]
    fn certificates_name_one_role_and_the_policy_admits_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let issued = issue(
            dir.path(),
            &[("ingress", Role::Ingress), ("admin", Role::Admin)],
        )
        .unwrap();
        assert_eq!(issued, ["ingress", "admin"]);
        // A second run keeps what exists.
        assert!(
            issue(dir.path(), &[("ingress", Role::Ingress)])
                .unwrap()
                .is_empty()
        );
        let tls = TlsArgs::in_dir(dir.path(), "ingress")
            .load()
            .unwrap()
            .unwrap();
        assert_eq!(tls.role, Role::Ingress);
        let mode = std::fs::metadata(dir.path().join("ingress.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );

        let policy = Policy {
            rules: &[
                ("/verity.v1.Sequencer/Forward", &[Role::Ingress]),
                ("/verity.v1.Replica/", &[Role::Gateway]),
            ],
        };
        let forward = "/verity.v1.Sequencer/Forward";
        assert!(policy.check(forward, Some(Role::Ingress)).is_ok());
        assert!(policy.check(forward, Some(Role::Admin)).is_ok());
        let denied = policy.check(forward, Some(Role::Gateway)).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let anonymous = policy.check(forward, None).unwrap_err();
        assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
        assert!(
            policy
                .check("/verity.v1.Replica/GetHead", Some(Role::Gateway))
                .is_ok()
        );
        assert!(
            policy
                .check("/verity.v1.Sequencer/GetHead", Some(Role::Ingress))
                .is_err()
        );
        assert!(policy.check("/grpc.health.v1.Health/Check", None).is_ok());
        assert!(
            policy
                .check(
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                    Some(Role::Gateway)
                )
                .is_err()
        );
        // With a certificate, every URL is called over TLS, whatever case its scheme is in.
        for url in [
            "http://127.0.0.1:1",
            "HTTP://127.0.0.1:1",
            "https://127.0.0.1:1",
        ] {
            let endpoint = endpoint(url, Some(&tls), Role::Sequencer).unwrap();
            assert_eq!(endpoint.uri().scheme_str(), Some("https"), "{url}");
        }
        assert!(endpoint("ftp://127.0.0.1:1", Some(&tls), Role::Sequencer).is_err());
        // Half the flags is an error, not plaintext.
        let half = TlsArgs {
            cert: Some(dir.path().join("ingress.pem")),
            ..TlsArgs::default()
        };
        assert!(matches!(half.load(), Err(TlsError::Incomplete)));
    }

    /// A remembered role belongs to those exact certificate bytes: another certificate, one
    /// byte changed or one that names no role, is never given it.
    #[test]
    fn a_remembered_role_is_only_that_certificates() {
        let dir = tempfile::tempdir().unwrap();
        issue(
            dir.path(),
            &[("ingress", Role::Ingress), ("gateway", Role::Gateway)],
        )
        .unwrap();
        let der = |name: &str| {
            pem_first_certificate(&std::fs::read(dir.path().join(format!("{name}.pem"))).unwrap())
                .unwrap()
        };
        let (ingress, gateway) = (der("ingress"), der("gateway"));
        let known = KnownRoles::default();
        for _ in 0..3 {
            assert_eq!(known.role_of(&ingress), Some(Role::Ingress));
            assert_eq!(known.role_of(&gateway), Some(Role::Gateway));
        }
        // The same bytes but one, at the start and at the end: no longer a certificate (its
        // outer tag), and the cached role's certificate but for its signature's last byte.
        let mut tagged = ingress.clone();
        tagged[0] ^= 1;
        assert_eq!(known.role_of(&tagged), None);
        let mut signed = gateway.clone();
        if let Some(last) = signed.last_mut() {
            *last ^= 1;
        }
        assert_eq!(known.role_of(&signed), role_of_der(&signed).ok());
        assert_eq!(known.role_of(b"not a certificate"), None);
        // Past its bound it starts over, and still answers.
        for i in 0..KNOWN_ROLES {
            let _ = known.role_of(&[i as u8]);
        }
        assert_eq!(known.role_of(&gateway), Some(Role::Gateway));
        assert_eq!(known.role_of(&ingress), Some(Role::Ingress));
    }
}
