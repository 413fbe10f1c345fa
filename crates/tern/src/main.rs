//! The `tern` command line: `serve` runs the broker, `passwd` manages password files;
//! `pub`, `sub` and `req` are clients.

mod auth_config;
mod cli;
mod config;
mod passwd;

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tern_net::{Server, ServerConfig};
use tracing_subscriber::EnvFilter;

// mimalloc hands freed pages back to the system soon after a burst (a flood of connections
// holding large partial packets), where glibc's heap keeps them fragmented; see ARCHITECTURE.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tern: an MQTT 3.1.1 and 5.0 broker and client toolkit.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (with no options: all interfaces, port 1883).
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
    /// Log filter, e.g. "info" or "tern_net=debug" (RUST_LOG also works).
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Passwd(args) => passwd::run(&args),
        Command::Pub(args) => cli::publish::run(args),
        Command::Sub(args) => cli::subscribe::run(args),
        Command::Req(args) => cli::request::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
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

    let file = match &args.config {
        Some(path) => config::load(path)?,
        None => config::FileConfig::default(),
    };
    let core = tern_core::Config {
        limits: file.limits.to_limits()?,
        assigned_id_prefix: assigned_prefix(),
        // The durable store is not wired in yet: state lives in memory.
        persistence: false,
        trees: file.trees.to_core(),
    };
    let base = args
        .config
        .as_deref()
        .and_then(|p| p.parent())
        .unwrap_or(std::path::Path::new("."));
    let auth = auth_config::build(&file.auth, &file.acl, file.acl_file.as_deref(), base)?;
    let listener_auth_profiles = config::listener_auth_names(&file, args.bind, args.port)
        .iter()
        .map(|name| auth.profile_index(name.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let server_config = ServerConfig {
        listeners: config::listeners(&file, base, args.bind, args.port)?,
        admission: file.limits.to_admission(),
        core,
        sys_interval: config::sys_interval(&file),
        shutdown_grace: Duration::from_secs(5),
        listener_auth_profiles,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let mut server = Server::bind(server_config).await?;
        server.set_auth(Box::new(auth.service), Box::new(auth.acl));
        server.run(shutdown_signal()).await;
        anyhow::Ok(())
    })
}

/// Assigned client identifiers start with a prefix unique to this run, so they never collide
/// with sessions kept from an earlier run.
fn assigned_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
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
