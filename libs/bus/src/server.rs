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
        "nats-server not found (looked for $VERITY_NATS_SERVER, /usr/local/bin/nats-server, nats-server on PATH, /usr/sbin/nats-server); run `make bootstrap`"
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
    /// Its monitoring endpoint (`http://127.0.0.1:PORT`), when it serves one.
    monitor: Option<String>,
}

/// Finds the `nats-server` binary.
pub fn find_binary() -> Result<PathBuf, ServerError> {
    if let Some(path) = std::env::var_os("VERITY_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    // Where `make bootstrap` installs the release the chart runs, before whatever PATH has.
    let path = std::env::var_os("PATH").unwrap_or_default();
    [PathBuf::from("/usr/local/bin")]
        .into_iter()
        .chain(std::env::split_paths(&path))
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
        launch(dir, &base_config(users, tls), None).await
    }

    /// The client URL (`nats://127.0.0.1:PORT`, or `tls://` when it serves TLS only).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and waits for it to exit.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.child.kill().await
    }

    fn port(&self) -> Option<u16> {
        self.url.rsplit(':').next()?.parse().ok()
    }
}

/// The configuration every server of ours shares: 8 MiB messages, and the users and TLS given.
fn base_config(users: &[User], tls: Option<&ServerTls>) -> String {
    // Chunk jobs carry a mini-block with its witness and tree proofs: allow 8 MiB messages
    // (the default is 1 MiB; nats-server accepts up to 8 MiB without warning).
    let mut text = String::from("max_payload: 8388608\n");
    if !users.is_empty() {
        text.push_str(&authorization(users));
    }
    if let Some(tls) = tls {
        text.push_str(&tls.config());
    }
    text
}

/// Starts nats-server with `config` in `dir` on the client `port` (`None`: one it picks) and
/// waits until it reports the port it listens on.
async fn launch(dir: &Path, config: &str, port: Option<u16>) -> Result<NatsServer, ServerError> {
    let binary = find_binary()?;
    let ports_dir = dir.join("ports");
    std::fs::create_dir_all(&ports_dir)?;
    for stale in std::fs::read_dir(&ports_dir)?.flatten() {
        let _ = std::fs::remove_file(stale.path());
    }
    let log = dir.join("nats.log");
    let config_file = dir.join("nats.conf");
    std::fs::write(&config_file, config)?;
    let port = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config_file)
        .arg("-js")
        .args(["-a", "127.0.0.1", "-p", &port])
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
        if let Some((url, monitor)) = read_ports_file(&ports_dir) {
            return Ok(NatsServer {
                child,
                url,
                monitor,
            });
        }
        if started.elapsed() > timeout {
            return Err(ServerError::NotReady(timeout, log));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JetStream cluster of nats-servers on loopback (one node: a plain server, no cluster), for
/// the devnet and for tests of what losing a node does. Node `i` is named `n<i>` and keeps its
/// store and log in `dir/n<i>` (a single node: in `dir` itself, as [`NatsServer::start`]). A
/// node stopped and started again comes back on the same ports with its store. Several nodes
/// sync every write to disk before acknowledging it (`sync_interval: always`), as the chart's
/// servers do (ADR 0016; the new leader's "duplicate message id is in process" that this once
/// met after a SIGKILL is answered by publishing under a fresh id).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
}

#[derive(Debug)]
struct ClusterNode {
    dir: PathBuf,
    config: String,
    /// Its client port, once it has had one (kept across restarts).
    port: Option<u16>,
    /// Its last URL (kept while it is down, so clients may be given every node's).
    url: String,
    server: Option<NatsServer>,
}

/// The cluster's name in every node's `cluster` block.
pub const CLUSTER_NAME: &str = "verity";

impl NatsCluster {
    /// Starts `nodes` servers (1, or 3 and more for a JetStream cluster, which needs a majority
    /// of them to elect leaders), each with the users and TLS given, and waits until each
    /// reports its client port. The route ports are free ports found now; the client ports are
    /// picked by the servers.
    pub async fn start(
        dir: &Path,
        nodes: usize,
        users: &[User],
        tls: Option<&ServerTls>,
    ) -> Result<Self, ServerError> {
        let base = base_config(users, tls);
        let mut cluster = Self { nodes: Vec::new() };
        if nodes <= 1 {
            cluster.nodes.push(ClusterNode {
                dir: dir.to_path_buf(),
                config: base,
                port: None,
                url: String::new(),
                server: None,
            });
        } else {
            // Every node lists every route, its own included (a server skips itself).
            let listeners = (0..nodes)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                .collect::<Result<Vec<_>, _>>()?;
            let routes = listeners
                .iter()
                .map(|l| l.local_addr().map(|a| a.port()))
                .collect::<Result<Vec<_>, _>>()?;
            drop(listeners);
            let route_list = routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect::<Vec<_>>()
                .join(", ");
            for (i, route) in routes.iter().enumerate() {
                let config = format!(
                    "{base}server_name: \"{}\"\nhttp_port: -1\njetstream {{\n  sync_interval: always\n}}\ncluster {{\n  name: \"{CLUSTER_NAME}\"\n  listen: \"127.0.0.1:{route}\"\n  routes: [{route_list}]\n}}\n",
                    Self::name(i)
                );
                cluster.nodes.push(ClusterNode {
                    dir: dir.join(Self::name(i)),
                    config,
                    port: None,
                    url: String::new(),
                    server: None,
                });
            }
        }
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i).await?;
        }
        Ok(cluster)
    }

    /// Node `i`'s server name (`n<i>`), as JetStream reports stream leaders and peers.
    pub fn name(i: usize) -> String {
        format!("n{i}")
    }

    /// The node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|i| Self::name(*i) == name)
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node (never: [`NatsCluster::start`] makes at least one).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, running or not, comma-separated: what a client is given so it
    /// can reach whichever node is up.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.server.is_some())
    }

    /// Starts node `i` again (after [`NatsCluster::kill`]), on its ports and with its store.
    pub async fn start_node(&mut self, i: usize) -> Result<(), ServerError> {
        let node = &mut self.nodes[i];
        if node.server.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&node.dir)?;
        let server = launch(&node.dir, &node.config, node.port).await?;
        node.port = server.port();
        node.url = server.url().to_string();
        node.server = Some(server);
        Ok(())
    }

    /// Waits until node `i` reports itself healthy on its monitoring endpoint (`/healthz`:
    /// JetStream current with the metadata leader and every stream it keeps), as the chart's
    /// startup probe does before its StatefulSet takes down another; fails after `within`.
    pub async fn wait_healthy(&self, i: usize, within: Duration) -> Result<(), String> {
        let monitor = self
            .nodes
            .get(i)
            .and_then(|n| n.server.as_ref())
            .and_then(|s| s.monitor.clone())
            .ok_or_else(|| format!("node {i} is not running or has no monitoring endpoint"))?;
        let deadline = Instant::now() + within;
        while !healthz(&monitor).await {
            if Instant::now() > deadline {
                return Err(format!(
                    "node {i} not healthy at {monitor} within {within:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Kills node `i` (SIGKILL: no lame-duck mode, no flush) and waits for it to exit.
    pub async fn kill(&mut self, i: usize) -> std::io::Result<()> {
        match self.nodes.get_mut(i).and_then(|n| n.server.take()) {
            Some(server) => server.stop().await,
            None => Ok(()),
        }
    }

    /// Stops node `i` as an operator would (SIGTERM: it shuts down cleanly, its store flushed)
    /// and waits for it to exit; killed after 10 s.
    pub async fn stop_node(&mut self, i: usize) -> std::io::Result<()> {
        let Some(mut server) = self.nodes.get_mut(i).and_then(|n| n.server.take()) else {
            return Ok(());
        };
        if let Some(pid) = server.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(Duration::from_secs(10), server.child.wait()).await {
            Ok(status) => status.map(|_| ()),
            Err(_) => server.stop().await,
        }
    }

    /// Stops every node.
    pub async fn stop(mut self) -> std::io::Result<()> {
        for i in 0..self.nodes.len() {
            self.kill(i).await?;
        }
        Ok(())
    }
}

fn read_ports_file(dir: &Path) -> Option<(String, Option<String>)> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "ports"))?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    // {"nats":["nats://127.0.0.1:45605"],"monitoring":["http://..."],"cluster":[...]}, tls://
    // for a TLS-only server
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports["nats"].get(0)?.as_str()?.to_string();
    let monitor = ports["monitoring"]
        .get(0)
        .and_then(|m| m.as_str())
        .map(str::to_string);
    Some((url, monitor))
}

/// Whether the monitoring endpoint `monitor` (`http://HOST:PORT`) answers `/healthz` with 200:
/// the server is up and, with JetStream, current with its metadata leader and streams.
async fn healthz(monitor: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(address) = monitor.strip_prefix("http://") else {
        return false;
    };
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    else {
        return false;
    };
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await,
        Ok(Ok(_))
    ) && head.ends_with(b" 200")
}
