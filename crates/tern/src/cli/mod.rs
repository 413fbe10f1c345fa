//! `tern pub`, `tern sub` and `tern req`: command-line MQTT clients with options familiar to
//! `mosquitto_pub` and `mosquitto_sub` users, built on `tern-client`.

pub(crate) mod publish;
pub(crate) mod request;
pub(crate) mod subscribe;

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tern_client::codec::{MqttString, UserProperties};
use tern_client::{
    Bytes, Client, ClientOptions, ProtocolVersion, QoS, TcpTransport, TlsTransport, Transport,
    WsTransport,
};

/// Connection options shared by `pub`, `sub` and `req`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// Broker host.
    #[arg(short = 'h', long, default_value = "localhost")]
    host: String,
    /// Broker port (default 1883; 8883 with --tls; 80/443 with --ws).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Client identifier (default: tern-<command>-<random>).
    #[arg(short = 'i', long = "id")]
    id: Option<String>,
    /// MQTT protocol version: 311 or 5.
    #[arg(short = 'V', long = "protocol-version", default_value = "5", value_parser = parse_version)]
    version: ProtocolVersion,
    /// User name.
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    password: Option<String>,
    /// Keep-alive in seconds.
    #[arg(short = 'k', long, default_value_t = 60)]
    keepalive: u16,
    /// Connect over TLS.
    #[arg(long)]
    tls: bool,
    /// Trust the certificate authorities in this PEM file (implies --tls).
    #[arg(long)]
    cafile: Option<PathBuf>,
    /// Connect over WebSocket (ws://, or wss:// with --tls).
    #[arg(long)]
    ws: bool,
    /// WebSocket path.
    #[arg(long, default_value = "/mqtt")]
    ws_path: String,
    /// User property KEY=VALUE sent with CONNECT and with each message (MQTT 5; repeatable).
    #[arg(long = "user-property", value_name = "KEY=VALUE")]
    user_properties: Vec<String>,
    /// Seconds to wait for the connection.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
}

/// The `-h` flag means host, as in the mosquitto clients; help is `--help` only.
#[derive(Debug, clap::Args)]
pub(crate) struct HelpFlag {
    /// Print help.
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn parse_version(value: &str) -> Result<ProtocolVersion, String> {
    match value {
        "311" | "mqttv311" | "4" => Ok(ProtocolVersion::V311),
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        other => Err(format!("unknown protocol version {other}; use 311 or 5")),
    }
}

pub(crate) fn parse_qos(value: &str) -> Result<QoS, String> {
    value
        .parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("QoS must be 0, 1 or 2, not {value}"))
}

impl ConnectArgs {
    /// Client options for this command; `tag` names the command in generated client ids.
    pub(crate) fn options(&self, tag: &str) -> anyhow::Result<ClientOptions> {
        let id = match &self.id {
            Some(id) => id.clone(),
            None => format!("tern-{tag}-{:08x}", fastrand::u32(..)),
        };
        let mut options = ClientOptions::new(id);
        options.version = self.version;
        options.keep_alive = Duration::from_secs(u64::from(self.keepalive));
        options.connect_timeout = Duration::from_secs(self.connect_timeout);
        options.username = self.username.clone();
        options.password = self.password.clone().map(Bytes::from);
        options.connect_user_properties = self.user_properties()?;
        Ok(options)
    }

    /// The user properties given with --user-property.
    pub(crate) fn user_properties(&self) -> anyhow::Result<UserProperties> {
        let mut properties = UserProperties::new();
        for pair in &self.user_properties {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("--user-property expects KEY=VALUE, got {pair:?}");
            };
            properties.push(&MqttString::new(key)?, &MqttString::new(value)?);
        }
        Ok(properties)
    }

    fn transport(&self) -> anyhow::Result<Box<dyn Transport>> {
        let tls = self.tls || self.cafile.is_some();
        let config = if tls {
            Some(tern_client::tls::client_config(self.cafile.as_deref()).context("TLS setup")?)
        } else {
            None
        };
        let transport: Box<dyn Transport> = match (self.ws, config) {
            (true, config) => {
                let scheme = if config.is_some() { "wss" } else { "ws" };
                let port = self.port.unwrap_or(if config.is_some() { 443 } else { 80 });
                let host = if self.host.contains(':') {
                    format!("[{}]", self.host)
                } else {
                    self.host.clone()
                };
                let url = format!("{scheme}://{host}:{port}{}", self.ws_path);
                Box::new(WsTransport::new(url, config))
            }
            (false, Some(config)) => Box::new(TlsTransport::new(
                self.host.clone(),
                self.port.unwrap_or(8883),
                config,
            )),
            (false, None) => {
                let port = self.port.unwrap_or(1883);
                Box::new(TcpTransport::new(format!("{}:{port}", self.host)))
            }
        };
        Ok(transport)
    }

    /// Starts a client and waits for its first connection.
    pub(crate) async fn connect(&self, options: ClientOptions) -> anyhow::Result<Client> {
        let (client, _task) = Client::start(options, BoxedTransport(self.transport()?))?;
        client
            .wait_connected(Duration::from_secs(self.connect_timeout))
            .await
            .with_context(|| format!("cannot connect to {}", self.host))?;
        Ok(client)
    }
}

struct BoxedTransport(Box<dyn Transport>);

impl Transport for BoxedTransport {
    fn connect(&self) -> tern_client::transport::ConnectFuture<'_> {
        self.0.connect()
    }
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
