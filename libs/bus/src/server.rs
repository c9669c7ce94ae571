//! Starting a private `nats-server` with JetStream as a child process, for the devnet and for
//! tests. It listens on 127.0.0.1 on a port the server picks itself (`-p -1`), which it reports
//! through a ports file, so nothing races for a fixed port.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No `nats-server` binary was found.
    #[error(
        "nats-server not found (looked for $VERITY_NATS_SERVER, nats-server on PATH, /usr/sbin/nats-server); run `make bootstrap` or `apt-get install nats-server`"
    )]
    NotFound,
    /// The process could not be spawned or its files written.
    #[error("cannot start nats-server: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not report its port in time.
    #[error("nats-server did not become ready within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
}

/// A running `nats-server`, killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    url: String,
}

/// Finds the `nats-server` binary.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    if let Some(path) = std::env::var_os("VERITY_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or(ServerError::NotFound)
}

/// The certificate a TLS-only NATS server presents (PEM files; the client checks it against
/// the CA it was given, `--nats-tls-ca`).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate, naming the hosts clients dial.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl ServerTls {
    /// The server configuration's `tls` block: every client connection is TLS (a client that
    /// does not upgrade is closed), the handshake given 2 s.
    pub fn config(&self) -> String {
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  timeout: 2\n}}\n",
            quoted_one(&self.cert.display().to_string()),
            quoted_one(&self.key.display().to_string())
        )
    }
}

fn quoted_one(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A NATS user of [`NatsServer::start_with`]: an nkey and what it may do.
#[derive(Debug, Clone)]
pub struct User {
    /// The public nkey (`U...`).
    pub nkey: String,
    /// What it may do (`None`: anything).
    pub permissions: Option<Permissions>,
}

/// Subjects a NATS user may publish and subscribe to (wildcards as NATS has them); everything
/// else is refused, and `publish_deny` is refused even where an allowed wildcard covers it.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    /// Subjects it may publish to (JetStream API requests and acknowledgements included).
    pub publish: Vec<String>,
    /// Subjects it may never publish to.
    pub publish_deny: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

fn quoted(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| quoted_one(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `authorization` block of a NATS server configuration that admits exactly `users`, each to
/// what its permissions say (the devnet's server, and the file `verity chain init` writes for a
/// cluster's).
pub fn authorization(users: &[User]) -> String {
    let mut text = String::from("authorization {\n  users = [\n");
    for user in users {
        text.push_str(&user.config());
    }
    text.push_str("  ]\n}\n");
    text
}

impl User {
    fn config(&self) -> String {
        let Some(p) = &self.permissions else {
            return format!("    {{ nkey: \"{}\" }}\n", self.nkey);
        };
        format!(
            "    {{ nkey: \"{}\", permissions: {{ publish: {{ allow: {}, deny: {} }}, subscribe: {{ allow: {} }} }} }}\n",
            self.nkey,
            quoted(&p.publish),
            quoted(&p.publish_deny),
            quoted(&p.subscribe)
        )
    }
}

impl NatsServer {
    /// Starts a JetStream server keeping its store in `dir/jetstream` and its log in
    /// `dir/nats.log`, and waits until it reports its client port. The store survives restarts,
    /// so a server started again on the same `dir` has the same streams.
    pub async fn start(dir: &Path) -> Result<Self, ServerError> {
        Self::start_with(dir, &[], None).await
    }

    /// [`NatsServer::start`], accepting only clients that authenticate with one of the nkeys of
    /// `users`, each allowed what its permissions say (none: every client, unauthenticated),
    /// and with `tls` only over TLS with that certificate (none: plaintext).
    pub async fn start_with(
        dir: &Path,
        users: &[User],
        tls: Option<&ServerTls>,
    ) -> Result<Self, ServerError> {
        let binary = find_binary()?;
        let ports_dir = dir.join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        for stale in std::fs::read_dir(&ports_dir)?.flatten() {
            let _ = std::fs::remove_file(stale.path());
        }
        let log = dir.join("nats.log");
        // Chunk jobs carry a mini-block with its witness and tree proofs: allow 8 MiB messages
        // (the default is 1 MiB; nats-server accepts up to 8 MiB without warning).
        let config = dir.join("nats.conf");
        let mut text = String::from("max_payload: 8388608\n");
        if !users.is_empty() {
            text.push_str(&authorization(users));
        }
        if let Some(tls) = tls {
            text.push_str(&tls.config());
        }
        std::fs::write(&config, text)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .arg("-sd")
            .arg(dir.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let timeout = Duration::from_secs(20);
        let started = Instant::now();
        loop {
            if let Some(url) = read_ports_file(&ports_dir) {
                return Ok(Self { child, url });
            }
            if started.elapsed() > timeout {
                return Err(ServerError::NotReady(timeout, log));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client URL (`nats://127.0.0.1:PORT`, or `tls://` when it serves TLS only).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and waits for it to exit.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.child.kill().await
    }
}

fn read_ports_file(dir: &Path) -> Option<String> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    // {"nats":["nats://127.0.0.1:45605"]}, or tls:// for a TLS-only server
    let start = text.find("nats://").or_else(|| text.find("tls://"))?;
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_string())
}
