//! The `tern` command line: `serve` runs the broker, `passwd` manages password files, `key`
//! the HTTP bridge's keys; `pub`, `sub` and `req` are clients, `http sign` signs requests for
//! curl; `bench` loads a broker.

mod auth_config;
mod auth_redis;
mod bench;
mod cli;
mod cluster_config;
mod config;
mod device;
mod firmware;
mod http_config;
mod key;
#[cfg(target_os = "linux")]
mod nodes;
mod passwd;
mod process;
mod token;

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tern_core::{Snapshot, Store};
use tern_net::{Server, ServerConfig};
use tern_store::{DiskStore, WallClock};
use tracing::info;
use tracing_subscriber::EnvFilter;

// mimalloc hands freed pages back to the system soon after a burst (a flood of connections
// holding large partial packets), where glibc's heap keeps them fragmented; see ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands what the broker thread freed back to the system now. mimalloc returns freed pages
/// only after a delay, and only when it next runs on that thread: after a burst, a broker with
/// nothing more to do would keep them resident for ever. tern-net calls this once the broker
/// thread falls quiet; see ARCHITECTURE.md.
#[allow(unsafe_code)] // One call into the allocator's C API.
fn release_freed_memory() {
    // SAFETY: `mi_collect` has no preconditions: it may be called on any thread at any time,
    // and only gives back memory that no allocation uses.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Tern: an MQTT 3.1.1 and 5.0 broker and client toolkit.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (with no options: all interfaces, MQTT on port 1883 and HTTP on 8080).
    Serve(ServeArgs),
    /// Add, change (-D: delete) a user in a password file; the password is prompted for, or
    /// read from standard input when it is not a terminal.
    Passwd(passwd::PasswdArgs),
    /// Publish a message (like mosquitto_pub).
    Pub(cli::publish::PubArgs),
    /// Subscribe and print messages (like mosquitto_sub).
    Sub(cli::subscribe::SubArgs),
    /// Send a request and print the response (MQTT 5 request/response).
    Req(cli::request::ReqArgs),
    /// Load-test a broker: fan-in, fan-out, pairs, shared, latency, connections, retained.
    Bench(tern_bench::BenchArgs),
    /// Manage the HTTP bridge's keys in a data directory (the broker may be running).
    Key(key::KeyArgs),
    /// Manage the operator tokens of the HTTP operator API (`/v1/admin`, `/v1/events`).
    Token(token::TokenArgs),
    /// HTTP bridge tools: `sign` prints a request's signing headers.
    Http(key::HttpArgs),
    /// Manage the device fleet of a running broker: add, list, show, disable, enable, delete
    /// devices; give owners a password (through the operator API).
    Device(device::DeviceArgs),
    /// Manage the device fleet's firmware catalogue of a running broker: add, list, show,
    /// delete releases offered to registering devices (through the operator API).
    Firmware(firmware::FirmwareArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML); see tern.example.toml.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (replaces the file's listeners).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Port to listen on; 0 picks a free port and logs it (replaces the file's listeners).
    #[arg(long, short)]
    port: Option<u16>,
    /// Port to serve the HTTP bridge on (8080 when no listener is configured); 0 picks a
    /// free port and logs it (replaces the file's HTTP listeners).
    #[arg(long)]
    http_port: Option<u16>,
    /// Data directory for the durable store (replaces the file's `store.dir`; default
    /// ./tern-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How durable acknowledged state is (replaces the file's `store.durability`).
    #[arg(long, value_enum)]
    durability: Option<config::Durability>,
    /// Start on a damaged data directory with what reads back, logging what was lost
    /// (without it, a damaged store stops the broker); also `store.recover` in the file.
    #[arg(long)]
    recover: bool,
    /// Log filter, e.g. "info" or "tern_net=debug" (RUST_LOG also works).
    #[arg(long, default_value = "info")]
    log: String,
    /// Run this many cluster nodes over a `nats-server` started beside them (loopback,
    /// JetStream under the data directory): node i listens on `--port` + i (default 1883 + i;
    /// 0: each picks a free port), HTTP only with `--http-port`, on that + i; its store is
    /// `node-i` in the data directory. See docs/cluster.md.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    nodes: Option<u16>,
    /// The `nats-server` binary `--nodes` runs.
    #[arg(long, default_value = "nats-server", requires = "nodes")]
    nats_server: PathBuf,
    /// A node of `--nodes`: the NATS server to join (the rest of `[cluster]` at its defaults).
    #[arg(
        long,
        hide = true,
        requires = "cluster_node_id",
        conflicts_with = "nodes"
    )]
    cluster_nats: Option<String>,
    /// A node of `--nodes`: its node id.
    #[arg(long, hide = true, requires = "cluster_nats")]
    cluster_node_id: Option<String>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Passwd(args) => passwd::run(&args),
        Command::Pub(args) => cli::publish::run(args),
        Command::Sub(args) => cli::subscribe::run(args),
        Command::Req(args) => cli::request::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Key(args) => key::run_key(args),
        Command::Token(args) => token::run_token(args),
        Command::Http(args) => key::run_http(args),
        Command::Device(args) => device::run(args),
        Command::Firmware(args) => firmware::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A client command chose its exit status (as the mosquitto clients do).
            if let Some(exit) = error.downcast_ref::<cli::Exit>() {
                return exit.report();
            }
            eprintln!("tern: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&args.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    process::disable_huge_pages();

    let mut file = match &args.config {
        Some(path) => config::load(path)?,
        None => config::FileConfig::default(),
    };
    if let Some(nodes) = args.nodes {
        return serve_nodes(&args, &file, nodes);
    }
    if let (Some(nats), Some(node_id)) = (args.cluster_nats.clone(), args.cluster_node_id.clone()) {
        file.cluster = Some(cluster_config::ClusterConfig::local(nats, node_id));
    }
    let durability = config::durability(&file, args.durability);
    let mut core = tern_core::Config {
        limits: file.limits.to_limits()?,
        assigned_id_prefix: assigned_prefix(),
        persistence: durability != config::Durability::None,
        trees: file.trees.to_core(),
        other_identity: file.sessions.to_core(),
        fleet: file.fleet.to_core()?,
        cluster: false,
        history: http_config::history(&file.history)?,
        mailbox_classes: file.http.mailbox_classes(),
        wall_clock_epoch_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let base = args
        .config
        .as_deref()
        .and_then(|p| p.parent())
        .unwrap_or(Path::new("."));
    // Joins NATS before anything listens: a node that cannot join stops here.
    let cluster = match &file.cluster {
        Some(section) => Some(cluster_config::join(section, base, &mut core)?),
        None => None,
    };
    let mut auth = auth_config::build(&file.auth, &file.acl, file.acl_file.as_deref(), base)?;
    auth.acl = auth.acl.with_fleet_topics(core.fleet.clone());
    let data_dir = config::data_dir(&file, args.data_dir.clone());
    let mut service_settings = auth_config::ServiceSettings {
        login_cache_entries_max: file.limits.login_cache_entries_max(),
        fake_salt_key: match auth_config::uses_scram(&file.auth) {
            true => Some(auth_config::fake_salt_key(&data_dir)?),
            false => None,
        },
        http_keys: None,
    };
    let listener_auth_profiles = config::listener_auth_names(&file, args.bind, args.port)
        .iter()
        .map(|name| auth.profile_index(name.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Before the store or the runtime start a thread.
    let descriptor_limit = process::raise_open_file_limit();
    let connections_max = process::connections_max(file.limits.connections_max(), descriptor_limit);
    let admission = file.limits.to_admission(connections_max);
    process::reserve_descriptors(admission.connections_max, descriptor_limit);
    // A socket that takes nothing is given as long as a subscriber that makes no progress.
    let write_stall_timeout = Duration::from_millis(core.limits.stall_timeout_millis);
    let server_config = ServerConfig {
        listeners: config::listeners(&file, base, args.bind, args.port)?,
        admission,
        core,
        sys_interval: config::sys_interval(&file),
        shutdown_grace: Duration::from_secs(5),
        listener_auth_profiles,
        busy_poll: config::busy_poll(&file),
        direct_write_quiet_gap: tern_net::DIRECT_WRITE_QUIET_GAP,
        release_memory: Some(release_freed_memory),
        write_stall_timeout,
        close_timeout: tern_net::CLOSE_TIMEOUT,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    // Open and load the store before listening: a store that cannot be read stops here.
    let mut store = match durability {
        config::Durability::None => None,
        config::Durability::Fsync | config::Durability::Os => Some(open_store(
            &data_dir,
            durability,
            args.recover || file.store.recover,
        )?),
    };
    // The request guard's records are the HTTP bridge's, not the core's.
    let guard = store
        .as_mut()
        .map(|(_, snapshot, _)| std::mem::take(&mut snapshot.guard))
        .unwrap_or_default();
    let http = http_config::http_config(
        &file,
        base,
        args.bind,
        args.port,
        args.http_port,
        data_dir.clone(),
    )?
    .map(|mut config| {
        config.fleet_topics = server_config.core.fleet.clone();
        tern_http::HttpBridge::start(config, guard)
    })
    .transpose()?;
    // The bridge's threads run until the broker has stopped (dropped after `block_on`).
    let (http_bridge, http_edge) = match http {
        Some((bridge, edge)) => {
            for line in bridge.describe() {
                info!("listening for HTTP on {line}");
            }
            if let Some(link) = bridge.console_login_link() {
                let kept = data_dir.join(tern_http::console_session::ADMIN_TOKEN_FILE);
                info!(
                    "web console: no operator token yet, so one was made: log in once at {link} (the token is in {})",
                    kept.display()
                );
            }
            (Some(bridge), Some(edge))
        }
        None => (None, None),
    };
    // While the bridge runs, its keys log in over MQTT too (as the identity they have in HTTP).
    service_settings.http_keys = http_bridge.as_ref().map(|bridge| bridge.key_logins());
    // SIGHUP builds the same from the file again (when there is a file).
    let auth_reload = args.config.clone().map(|path| {
        let profiles = auth.profiles.clone();
        auth_config::reloader(path, base.to_path_buf(), profiles, service_settings.clone())
    });
    let (cluster_node, cluster_link) = cluster.unzip();
    runtime.block_on(async {
        let mut server = Server::bind(server_config).await?;
        if let Some(edge) = http_edge {
            server.add_edge(edge);
        }
        let service = service_settings.apply(auth.service);
        server.set_auth(Box::new(service), Box::new(auth.acl));
        if let Some(reload) = auth_reload {
            server.set_auth_reload(reload);
        }
        if let Some((store, snapshot, epoch)) = store {
            server = server.with_store(store, snapshot, epoch);
        }
        if let Some(link) = cluster_link {
            server.set_cluster(tern_net::ClusterLink {
                batches: link.batches,
                inputs: link.inputs,
                qos0_backlog_bytes_max: tern_net::CLUSTER_QOS0_BACKLOG_BYTES_MAX,
            });
        }
        server.run(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    // The server dropped its end of the link: the node finishes what it was handed.
    if let Some(node) = cluster_node {
        node.join();
    }
    Ok(())
}

/// `tern serve --nodes N`: see `nodes.rs`.
#[cfg(target_os = "linux")]
fn serve_nodes(args: &ServeArgs, file: &config::FileConfig, nodes: u16) -> anyhow::Result<()> {
    if file.cluster.is_some() {
        anyhow::bail!(
            "--nodes runs its own NATS server: leave [cluster] out of the file, or run each              node with its own [cluster] section (docs/cluster.md)"
        );
    }
    nodes::run(nodes::Plan {
        nodes,
        nats_server: args.nats_server.clone(),
        data_dir: config::data_dir(file, args.data_dir.clone()),
        config: args.config.clone(),
        bind: args.bind,
        port: args.port.unwrap_or(1883),
        http_port: args.http_port,
        durability: args.durability,
        recover: args.recover,
        log: args.log.clone(),
    })
}

#[cfg(not(target_os = "linux"))]
fn serve_nodes(_: &ServeArgs, _: &config::FileConfig, _: u16) -> anyhow::Result<()> {
    anyhow::bail!("--nodes runs on Linux only: run each node with its own [cluster] section")
}

/// Opens the store in `dir` and reads everything it holds. The instant returned is `Time`
/// zero for the broker, taken together with the wall-clock time the store converts with.
fn open_store(
    dir: &Path,
    durability: config::Durability,
    recover: bool,
) -> anyhow::Result<(DiskStore, Snapshot, Instant)> {
    let epoch = Instant::now();
    let epoch_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .context("the system clock is before 1970")?;
    let mode = match durability {
        config::Durability::Os => tern_store::Durability::Os,
        _ => tern_store::Durability::Fsync,
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let clock = WallClock { epoch_unix_ms };
    let opened = match recover {
        true => DiskStore::recover(dir, mode, clock),
        false => DiskStore::open(dir, mode, clock),
    };
    let mut store =
        opened.with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let started = Instant::now();
    let snapshot = store
        .load()
        .with_context(|| format!("cannot load the store in {}", dir.display()))?;
    let queued: usize = snapshot.sessions.iter().map(|s| s.deliveries.len()).sum();
    info!(
        "store {} ({durability:?}): {} sessions, {queued} queued messages, {} retained, {} \
         fleet devices, loaded in {:.2} s",
        dir.display(),
        snapshot.sessions.len(),
        // Records without a payload are deletions kept for key/value listings.
        snapshot
            .retained
            .iter()
            .filter(|m| !m.payload.is_empty())
            .count(),
        snapshot.fleet_devices.len(),
        started.elapsed().as_secs_f64()
    );
    Ok((store, snapshot, epoch))
}

/// Assigned client identifiers start with a prefix unique to this run, so they never collide
/// with sessions kept from an earlier run.
fn assigned_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("tern-{:x}-", nanos & 0xFFFF_FFFF_FFFF)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
