//! Debian's `nats-server` with JetStream on loopback, for the cluster tests: one server, or a
//! cluster of servers joined by routes. Every port is picked by the server itself (`-1`) and
//! read back from its log; every server is killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to start, or a cluster to elect its JetStream leader.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `nats-server` binary: on the PATH, or where Debian installs it.
fn binary() -> PathBuf {
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
            "server_name: {name}\nhost: 127.0.0.1\nport: -1\n\
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
            log,
            _dir: dir,
        };
        server.port = server.logged_port("Listening for client connections on ")?;
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
        let fixed = config.replace("port: -1", &format!("port: {}", self.port));
        std::fs::write(&self.config, fixed).expect("write nats.conf");
        self.log.lock().expect("log lock").clear();
        self.child = spawn(&self.config, &self.log);
        let port = self.logged_port("Listening for client connections on ");
        assert_eq!(port, Some(self.port), "restarted on its port");
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
        let servers = (0..5)
            .find_map(|_| {
                let ports: Vec<u16> = (0..size).map(|_| super::mosquitto::free_port()).collect();
                (0..size)
                    .map(|n| NatsServer::start_as(&format!("s{}", n + 1), Some((ports[n], &ports))))
                    .collect::<Option<Vec<_>>>()
            })
            .expect("free route ports");
        let deadline = Instant::now() + START_TIMEOUT;
        while !servers
            .iter()
            .any(|s| s.wait_for_log("JetStream cluster new metadata leader", Duration::ZERO))
        {
            assert!(
                Instant::now() < deadline,
                "no JetStream metadata leader elected"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { servers }
    }
}
