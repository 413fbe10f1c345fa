//! `tern pub`, `tern sub` and `tern req`: command-line MQTT clients that take
//! `mosquitto_pub`'s and `mosquitto_sub`'s options with their letters and meanings (the table
//! in docs/client.md), built on `tern-client`.

pub(crate) mod connect;
mod format;
mod json;
mod properties;
pub(crate) mod publish;
pub(crate) mod request;
pub(crate) mod subscribe;
mod url;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tern_client::{Bytes, QoS};

/// Ends a command with this exit status (a refused connection's return code, mosquitto_sub's
/// 27 for a timeout), printing `message` unless it is `None` (`--quiet`).
#[derive(Debug)]
pub(crate) struct Exit {
    code: u8,
    message: Option<String>,
}

impl Exit {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: Some(message.into()),
        }
    }

    /// Prints the message, if any, and returns the exit status.
    pub(crate) fn report(&self) -> ExitCode {
        if let Some(message) = &self.message {
            eprintln!("tern: {message}");
        }
        ExitCode::from(self.code)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(message) => f.write_str(message),
            None => write!(f, "exit status {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

/// With `--quiet`, a runtime error keeps its exit status but prints nothing.
pub(crate) fn quieten(result: anyhow::Result<()>, quiet: bool) -> anyhow::Result<()> {
    match result {
        Err(error) if quiet => {
            let code = error.downcast_ref::<Exit>().map_or(1, |exit| exit.code);
            Err(Exit {
                code,
                message: None,
            }
            .into())
        }
        other => other,
    }
}

/// The `-h` flag means host, as in the mosquitto clients; help is `--help` only, and the
/// version `--version` only.
#[derive(Debug, clap::Args)]
pub(crate) struct HelpFlag {
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Print the version (`-V` is the protocol version, as in the mosquitto clients).
    #[arg(long = "version", action = clap::ArgAction::Version)]
    print_version: Option<bool>,
}

pub(crate) fn parse_qos(value: &str) -> Result<QoS, String> {
    value
        .parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("QoS must be 0, 1 or 2, not {value}"))
}

/// The payload sources of `pub` and `req`: -m, -f, -s, -n.
#[derive(Debug, clap::Args)]
pub(crate) struct PayloadArgs {
    /// Message payload.
    #[arg(short = 'm', long, group = "payload")]
    message: Option<String>,
    /// Send the contents of a file as the payload.
    #[arg(short = 'f', long, group = "payload")]
    file: Option<PathBuf>,
    /// Read the payload from standard input (all of it, as one message).
    #[arg(short = 's', long, group = "payload")]
    stdin_file: bool,
    /// Send an empty (null) payload.
    #[arg(short = 'n', long, group = "payload")]
    null_message: bool,
}

impl PayloadArgs {
    /// Whether a payload source was given.
    pub(crate) fn given(&self) -> bool {
        self.message.is_some() || self.file.is_some() || self.stdin_file || self.null_message
    }

    pub(crate) fn read(&self) -> anyhow::Result<Bytes> {
        if let Some(message) = &self.message {
            return Ok(Bytes::from(message.clone()));
        }
        if let Some(path) = &self.file {
            let data =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            return Ok(Bytes::from(data));
        }
        if self.stdin_file {
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .context("cannot read stdin")?;
            return Ok(Bytes::from(data));
        }
        Ok(Bytes::new())
    }
}

/// Runs a command's future on a current-thread runtime.
pub(crate) fn run<F: std::future::Future<Output = anyhow::Result<()>>>(
    future: F,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(future)
}
