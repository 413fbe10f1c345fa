//! Debian's `nats-server` with JetStream on loopback, for the cluster tests: one server, or a
//! cluster of servers joined by routes. Every port is picked by the server itself (`-1`) and
//! read back from its log; every server is killed when dropped. A cluster's state (its
//! JetStream leaders) is read from the servers' monitoring endpoint (`/jsz`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to start, or a cluster to elect its JetStream leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nats-server` binary: on the PATH, or where Debian installs it.
pub(crate) fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file());
    let binary = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
    assert!(
        binary.is_file(),
        "nats-server is not installed: run scripts/setup-test-deps.sh"
    );
    binary
}

/// One running `nats-server`.
pub(crate) struct NatsServer {
    child: Child,
    /// Its configuration file, which a restart reads again.
    config: PathBuf,
    /// The port clients connect to.
    pub(crate) port: u16,
    /// The port other servers route to, in a cluster.
    pub(crate) route_port: Option<u16>,
    /// The monitoring (HTTP) port.
    monitor_port: u16,
    /// Its name in the cluster.
    pub(crate) name: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// One server with JetStream, on its own.
    pub(crate) fn start() -> Self {
        Self::start_as("s1", None).expect("nats-server starts")
    }

    /// A server named `name`; with `cluster`, it listens for routes on the first port and
    /// routes to all of them (JetStream needs every server to be configured with its routes).
    fn start_as(name: &str, cluster: Option<(u16, &[u16])>) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().join("jetstream");
        let mut config = format!(
            "server_name: {name}\nhost: 127.0.0.1\nport: -1\nhttp_port: -1\n\
             jetstream {{ store_dir: {store:?} }}\n"
        );
        if let Some((listen, all)) = cluster {
            let routes = all
                .iter()
                .map(|port| format!("nats-route://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(", ");
            config.push_str(&format!(
                "cluster {{ name: tern, host: 127.0.0.1, port: {listen}, routes: [{routes}] }}\n"
            ));
        }
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, config).expect("write nats.conf");
        let log = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(&path, &log);
        let mut server = Self {
            child,
            config: path,
            port: 0,
            route_port: None,
            monitor_port: 0,
            name: name.to_owned(),
            log,
            _dir: dir,
        };
        server.port = server.logged_port("Listening for client connections on ")?;
        server.monitor_port = server.logged_port(MONITOR_LINE)?;
        if cluster.is_some() {
            server.route_port = Some(server.logged_port("Listening for route connections on ")?);
        }
        Some(server)
    }

    /// Kills the server (SIGKILL); its store stays for [`NatsServer::restart`].
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its port with its store, after [`NatsServer::kill`]; returns
    /// once it listens. Its log starts afresh.
    pub(crate) fn restart(&mut self) {
        let config = std::fs::read_to_string(&self.config).expect("read nats.conf");
        let fixed = config.replace("\nport: -1", &format!("\nport: {}", self.port));
        std::fs::write(&self.config, fixed).expect("write nats.conf");
        self.log.lock().expect("log lock").clear();
        self.child = spawn(&self.config, &self.log);
        let port = self.logged_port("Listening for client connections on ");
        assert_eq!(port, Some(self.port), "restarted on its port");
        self.monitor_port = self.logged_port(MONITOR_LINE).expect("monitoring port");
    }

    /// What the server's `/jsz` endpoint says, with `query` (`accounts=true&streams=true`);
    /// `None` while it does not answer.
    fn jsz(&self, query: &str) -> Option<serde_json::Value> {
        self.monitor("jsz", query)
    }

    /// Whether a client connection named `name` is connected to this server (its `/connz`).
    pub(crate) fn serves(&self, name: &str) -> bool {
        let connz = self.monitor("connz", "");
        let connections = connz.as_ref().and_then(|c| c["connections"].as_array());
        connections.is_some_and(|all| all.iter().any(|c| c["name"] == name))
    }

    /// What the server's monitoring endpoint `/<endpoint>?<query>` says; `None` while it does
    /// not answer.
    fn monitor(&self, endpoint: &str, query: &str) -> Option<serde_json::Value> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.monitor_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!("GET /{endpoint}?{query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// The last sequence of the stream `stream` (a KV bucket's: its last revision), as this
    /// server reports it; `None` while it does not answer or has no such stream.
    pub(crate) fn stream_last_seq(&self, stream: &str) -> Option<u64> {
        let jsz = self.jsz("accounts=true&streams=true")?;
        let accounts = jsz.get("account_details")?.as_array()?;
        accounts
            .iter()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|detail| detail["name"] == stream)?
            .pointer("/state/last_seq")?
            .as_u64()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server process.
    pub(crate) fn signal(&self, signal: &str) {
        super::signal_process(self.child.id(), signal);
    }

    /// Stops the server (SIGSTOP) and waits until every one of its threads has stopped.
    pub(crate) fn pause(&self) {
        super::stop_process(self.child.id());
    }

    /// The client URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the server has logged a line containing `needle` within `timeout`.
    pub(crate) fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        super::logged_line(&self.log, needle, timeout).is_some()
    }

    /// What the server has logged so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The port in the line starting after `needle`, once the server has logged it; `None`
    /// if the server exited first because a port it was given is taken.
    fn logged_port(&mut self, needle: &str) -> Option<u16> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self.log.lock().expect("log lock").iter().find_map(|line| {
                let rest = line.split(needle).nth(1)?;
                rest.trim().rsplit(':').next()?.parse::<u16>().ok()
            });
            if let Some(port) = found {
                return Some(port);
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                let log = self.log.lock().expect("log lock").join("\n");
                if log.contains("address already in use") {
                    return None;
                }
                panic!("nats-server logged no {needle:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// How a server says where its monitoring endpoint listens.
const MONITOR_LINE: &str = "Starting http monitor on ";

/// Runs `nats-server -c config`, its log lines collected into `log`.
fn spawn(config: &std::path::Path, log: &Arc<Mutex<Vec<String>>>) -> Child {
    let mut child = Command::new(binary())
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats-server starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let lines = Arc::clone(log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            lines.lock().expect("log lock").push(line);
        }
    });
    child
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Servers joined by routes on loopback, with a JetStream metadata leader elected.
pub(crate) struct NatsCluster {
    pub(crate) servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// `size` servers, each routing to all. Route ports must be known before any server
    /// starts, so they are picked free (bound, then released) and, should another process take
    /// one in between, picked again.
    pub(crate) fn start(size: usize) -> Self {
        let cluster = Self::launch(size);
        cluster.leader_of(|server| server.jsz("")?.pointer("/meta_cluster/leader").cloned());
        cluster
    }

    /// As [`NatsCluster::start`], returning as soon as every server listens, before they have
    /// elected a JetStream leader.
    pub(crate) fn launch(size: usize) -> Self {
        let servers = (0..5)
            .find_map(|_| {
                let ports: Vec<u16> = (0..size).map(|_| super::mosquitto::free_port()).collect();
                (0..size)
                    .map(|n| NatsServer::start_as(&format!("s{}", n + 1), Some((ports[n], &ports))))
                    .collect::<Option<Vec<_>>>()
            })
            .expect("free route ports");
        Self { servers }
    }

    /// Every server's client URL.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    /// The index of the server the client connection named `name` is connected to, once one
    /// lists it (a Tern node's connection is named `tern <node_id>`).
    pub(crate) fn serving(&self, name: &str) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(index) = self.servers.iter().position(|s| s.serves(name)) {
                return index;
            }
            assert!(Instant::now() < deadline, "no server lists {name:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The index of the server that leads the stream `stream`, as the servers still answering
    /// see it (one that is stopped or killed is not asked), once one does.
    pub(crate) fn stream_leader(&self, stream: &str) -> usize {
        self.leader_of(|server| {
            let jsz = server.jsz("accounts=true&streams=true")?;
            let accounts = jsz.get("account_details")?.as_array()?;
            accounts
                .iter()
                .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
                .find(|detail| detail["name"] == stream)
                .and_then(|detail| detail.pointer("/cluster/leader").cloned())
        })
    }

    /// The index of the server named by the first answer of `leader` (asked of each server in
    /// turn), polled until one names a server within [`START_TIMEOUT`].
    fn leader_of(&self, leader: impl Fn(&NatsServer) -> Option<serde_json::Value>) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let named = self.servers.iter().find_map(|server| {
                let name = leader(server)?;
                self.servers.iter().position(|s| name == s.name.as_str())
            });
            if let Some(index) = named {
                return index;
            }
            assert!(Instant::now() < deadline, "no JetStream leader elected");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
