//! `tern serve --nodes N`: N cluster nodes on one machine, one broker to its clients, over a
//! `nats-server` with JetStream that this process starts beside them and stops after them
//! (docs/cluster.md, "Several cores on one machine").
//!
//! Each node is a `tern serve` process of its own, exactly what `[cluster]` runs on many
//! machines: one broker thread per node, so N nodes use N cores, and a node that fails stops
//! alone. This process only starts them, forwards their logs with a prefix, and stops them.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::config::Durability;

/// How long nats-server may take to listen.
const NATS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node or the NATS server may take to stop after SIGTERM (a node's shutdown grace
/// is 5 s) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The line nats-server logs once it takes clients, followed by its address.
const NATS_LISTENING: &str = "Listening for client connections on ";

/// What `tern serve --nodes` was asked to run.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) nodes: u16,
    /// The `nats-server` binary.
    pub(crate) nats_server: PathBuf,
    /// Node i keeps its store in `node-i` under it, the NATS server its JetStream in `nats`.
    pub(crate) data_dir: PathBuf,
    pub(crate) config: Option<PathBuf>,
    pub(crate) bind: Option<IpAddr>,
    /// Node i listens for MQTT on this port + i (0: each picks a free one).
    pub(crate) port: u16,
    /// Node i serves HTTP on this port + i, if given.
    pub(crate) http_port: Option<u16>,
    pub(crate) durability: Option<Durability>,
    pub(crate) recover: bool,
    pub(crate) log: String,
}

/// Something the supervisor waits for.
enum Event {
    /// SIGINT or SIGTERM.
    Stop,
    /// A child process ended by itself (its name, how).
    Exited(String, ExitStatus),
}

/// A child process the supervisor started and has not yet seen end.
struct Running {
    name: String,
    pid: Pid,
}

/// The port of a node: `base + index`, 0 staying 0.
fn offset_port(base: u16, index: u16, what: &str) -> anyhow::Result<u16> {
    if base == 0 {
        return Ok(0);
    }
    base.checked_add(index)
        .with_context(|| format!("{what} port {base} + {index} is past 65535"))
}

/// The embedded configuration: loopback only, JetStream in `dir`, a port picked by the server
/// (read back from its log).
fn nats_config(dir: &Path) -> String {
    let store = dir.join("jetstream");
    format!(
        "server_name: tern-nodes\nhost: 127.0.0.1\nport: -1\n\
         jetstream {{ store_dir: {store:?} }}\n"
    )
}

/// Runs the NATS server and the nodes until SIGINT/SIGTERM or until one of them ends; then
/// stops the nodes, then the server.
pub(crate) fn run(plan: Plan) -> anyhow::Result<()> {
    if plan.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    // Checked before anything starts.
    for index in 0..plan.nodes {
        offset_port(plan.port, index, "MQTT")?;
        if let Some(http) = plan.http_port {
            offset_port(http, index, "HTTP")?;
        }
    }
    let nats_dir = plan.data_dir.join("nats");
    std::fs::create_dir_all(&nats_dir)
        .with_context(|| format!("cannot create {}", nats_dir.display()))?;
    let nats_conf = nats_dir.join("nats.conf");
    std::fs::write(&nats_conf, nats_config(&nats_dir))
        .with_context(|| format!("cannot write {}", nats_conf.display()))?;

    let (events, incoming) = mpsc::channel();
    let mut command = Command::new(&plan.nats_server);
    command.arg("-c").arg(&nats_conf);
    let mut nats = spawn(&mut command).with_context(|| {
        format!(
            "cannot start {} (install nats-server, or give --nats-server)",
            plan.nats_server.display()
        )
    })?;
    let (listening, nats_port) = mpsc::channel();
    forward_log(&mut nats, "nats-server", Some(listening));
    let nats_running = [watch(nats, "nats-server", &events)];
    let mut gone = HashSet::new();
    let port = match nats_port.recv_timeout(NATS_START_TIMEOUT) {
        Ok(port) => port,
        Err(_) => {
            stop(&nats_running, &incoming, &mut gone);
            bail!("nats-server did not listen within {NATS_START_TIMEOUT:?} (its log is above)");
        }
    };
    let url = format!("nats://127.0.0.1:{port}");
    info!("nats-server (JetStream in {}) on {url}", nats_dir.display());

    let exe = std::env::current_exe().context("cannot find the tern binary to run the nodes")?;
    let mut nodes = Vec::new();
    for index in 0..plan.nodes {
        let name = format!("node-{index}");
        let mut command = node_command(&exe, &plan, index, &url)?;
        match spawn(&mut command) {
            Ok(mut child) => {
                forward_log(&mut child, &name, None);
                nodes.push(watch(child, &name, &events));
            }
            Err(error) => {
                stop(&nodes, &incoming, &mut gone);
                stop(&nats_running, &incoming, &mut gone);
                return Err(error).context(format!("cannot start {name}"));
            }
        }
    }
    info!(
        "{} nodes started over {url}; SIGINT or SIGTERM stops them",
        plan.nodes
    );
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(crate::shutdown_signal());
        }
        let _ = events.send(Event::Stop);
    });

    let ended = match incoming.recv() {
        Ok(Event::Exited(name, status)) => {
            gone.insert(name.clone());
            Some((name, status))
        }
        Ok(Event::Stop) | Err(_) => None,
    };
    stop(&nodes, &incoming, &mut gone);
    stop(&nats_running, &incoming, &mut gone);
    match ended {
        None => Ok(()),
        Some((name, status)) => bail!("{name} ended ({status}), so the others were stopped"),
    }
}

/// `tern serve` for node `index`.
fn node_command(exe: &Path, plan: &Plan, index: u16, url: &str) -> anyhow::Result<Command> {
    let mut command = Command::new(exe);
    command.arg("serve");
    if let Some(config) = &plan.config {
        command.arg("--config").arg(config);
    }
    if let Some(bind) = plan.bind {
        command.arg("--bind").arg(bind.to_string());
    }
    command
        .arg("--port")
        .arg(offset_port(plan.port, index, "MQTT")?.to_string());
    if let Some(http) = plan.http_port {
        command
            .arg("--http-port")
            .arg(offset_port(http, index, "HTTP")?.to_string());
    }
    command
        .arg("--data-dir")
        .arg(plan.data_dir.join(format!("node-{index}")));
    if let Some(durability) = plan.durability {
        let name = clap::ValueEnum::to_possible_value(&durability)
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default();
        command.arg("--durability").arg(name);
    }
    if plan.recover {
        command.arg("--recover");
    }
    command
        .arg("--log")
        .arg(&plan.log)
        .arg("--cluster-nats")
        .arg(url)
        .arg("--cluster-node-id")
        .arg(format!("node-{index}"));
    Ok(command)
}

/// Starts a child in a process group of its own (a terminal's Ctrl-C reaches only this
/// process, which stops the nodes before the NATS server they need to stop cleanly), told to
/// end should this process die without stopping it.
#[allow(unsafe_code)] // One system call between fork and exec.
fn spawn(command: &mut Command) -> std::io::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl(2) is one system call, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    command.spawn()
}

/// Copies the child's log lines to this process's standard error, each after `name |`;
/// with `listening`, sends the port nats-server logs that it takes clients on.
fn forward_log(child: &mut Child, name: &str, listening: Option<Sender<u16>>) {
    let Some(stderr) = child.stderr.take() else {
        return;
    };
    let prefix = format!("{name} | ");
    std::thread::spawn(move || copy_lines(stderr, &prefix, listening));
}

fn copy_lines(from: impl Read, prefix: &str, mut listening: Option<Sender<u16>>) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { break };
        if let Some(sender) = &listening {
            let port = line
                .split(NATS_LISTENING)
                .nth(1)
                .and_then(|address| address.trim().rsplit(':').next()?.parse::<u16>().ok());
            if let Some(port) = port {
                let _ = sender.send(port);
                listening = None;
            }
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{prefix}{line}");
    }
}

/// Waits for the child on a thread of its own, which reports its end as an [`Event`].
fn watch(mut child: Child, name: &str, events: &Sender<Event>) -> Running {
    let running = Running {
        name: name.to_owned(),
        pid: Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
    };
    let (name, events) = (name.to_owned(), events.clone());
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = events.send(Event::Exited(name, status));
        }
    });
    running
}

/// Sends SIGTERM to each of `children` not yet `gone`, waits for them to end, and kills those
/// that have not within [`STOP_TIMEOUT`]. Every end it hears of goes into `gone` (a process
/// that ended is never signalled: its id may have been given to another).
fn stop(children: &[Running], incoming: &Receiver<Event>, gone: &mut HashSet<String>) {
    let mut left: Vec<&Running> = children
        .iter()
        .filter(|child| !gone.contains(&child.name))
        .collect();
    for child in &left {
        let _ = kill(child.pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !left.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match incoming.recv_timeout(wait) {
            Ok(Event::Exited(name, _)) => {
                left.retain(|child| child.name != name);
                gone.insert(name);
            }
            Ok(Event::Stop) => {}
            Err(_) => {
                for child in &left {
                    warn!(
                        "{} did not stop within {STOP_TIMEOUT:?}: killed",
                        child.name
                    );
                    let _ = kill(child.pid, Signal::SIGKILL);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    #[test]
    fn ports_follow_the_base_and_a_free_port_stays_free() {
        assert_eq!(offset_port(1883, 2, "MQTT").unwrap(), 1885);
        assert_eq!(offset_port(0, 2, "MQTT").unwrap(), 0);
        assert!(offset_port(65535, 1, "MQTT").is_err());
    }

    #[test]
    fn the_server_is_found_listening_in_its_log() {
        let log = "[1] [INF] Starting nats-server\n[1] [INF] Listening for client connections \
                   on 127.0.0.1:41234\n[1] [INF] Server is ready\n";
        let (sender, port) = mpsc::channel();
        copy_lines(log.as_bytes(), "nats-server | ", Some(sender));
        assert_eq!(port.try_recv().ok(), Some(41234));
    }
}
