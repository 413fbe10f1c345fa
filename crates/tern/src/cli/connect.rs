//! The connection options `tern pub`, `sub` and `req` share, with mosquitto_pub/sub's letters
//! and meanings: where the broker is (`-h`, `-p`, `-L` URL, `--unix`, `-A`, `--proxy`), who we
//! are (`-i`, `-I`, `-u`, `-P`), the session (`-c`, `-x`, `-k`, `-V`), the will, `-D`
//! properties, and TLS; and the client and transport they make.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tern_client::codec::{MqttString, UserProperties};
use tern_client::tls::{TlsOptions, TlsVersion};
use tern_client::{
    Bytes, Client, ClientOptions, ConnectError, Dialer, LastWill, Messages, ProtocolVersion, QoS,
    Socks5Proxy, TcpTransport, TlsTransport, Transport, WsTransport,
};

use super::properties::PropertySet;
use super::url::{BrokerUrl, Scheme};
use super::{parse_qos, Exit};

/// Connection options shared by `pub`, `sub` and `req`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    /// Broker host (default localhost).
    #[arg(short = 'h', long)]
    host: Option<String>,
    /// Broker port (default 1883; 8883 with TLS; 80/443 with --ws).
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Broker as a URL: mqtt(s)://[user[:password]@]host[:port]/topic (also ws://, wss://).
    #[arg(short = 'L', long = "url")]
    url: Option<String>,
    /// Connect through this Unix domain socket instead of TCP.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["host", "url", "ws", "proxy"])]
    unix: Option<PathBuf>,
    /// Bind the outgoing socket to this local address.
    #[arg(short = 'A', long = "bind-address", value_name = "ADDRESS")]
    bind_address: Option<String>,
    /// SOCKS5 proxy: socks5h://[user[:password]@]host[:port].
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Client identifier (default: tern-<command>-<random>).
    #[arg(short = 'i', long = "id", conflicts_with = "id_prefix")]
    id: Option<String>,
    /// Client identifier: this prefix followed by the process id.
    #[arg(short = 'I', long = "id-prefix")]
    id_prefix: Option<String>,
    /// MQTT protocol version: 5 (mqttv5) or 311 (mqttv311).
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
    /// Persistent session: no clean start, and (MQTT 5) a session that never expires unless -x
    /// says otherwise. Needs -i or -I.
    #[arg(short = 'c', long = "disable-clean-session")]
    persistent: bool,
    /// Session expiry interval in seconds (MQTT 5); -1 or ∞: never (default: -1 with -c, else 0).
    #[arg(short = 'x', long = "session-expiry", value_parser = parse_expiry, allow_hyphen_values = true)]
    session_expiry: Option<u32>,
    /// MQTT 5 property: -D COMMAND IDENTIFIER VALUE, or -D COMMAND user-property NAME VALUE.
    #[arg(short = 'D', long = "property", num_args = 3..=4, value_names = ["COMMAND", "IDENTIFIER", "VALUE"])]
    properties: Vec<String>,
    /// Will topic: published by the broker if this client disconnects unexpectedly.
    #[arg(long = "will-topic")]
    will_topic: Option<String>,
    /// Will payload (default empty).
    #[arg(long = "will-payload", requires = "will_topic")]
    will_payload: Option<String>,
    /// Will QoS.
    #[arg(long = "will-qos", requires = "will_topic", value_parser = parse_qos)]
    will_qos: Option<QoS>,
    /// Retain the will.
    #[arg(long = "will-retain", requires = "will_topic")]
    will_retain: bool,
    /// Debug: report connection changes and acknowledgements on standard error.
    #[arg(short = 'd', long)]
    pub(crate) debug: bool,
    /// Print no runtime error (the exit status still tells).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Accepted for mosquitto compatibility: Tern always disables Nagle's algorithm.
    #[arg(long)]
    nodelay: bool,
    /// Connect over TLS.
    #[arg(long)]
    tls: bool,
    /// Trust the certificate authorities in this PEM file (implies TLS).
    #[arg(long)]
    cafile: Option<PathBuf>,
    /// Trust the certificate authorities in the PEM files of this directory (implies TLS).
    #[arg(long)]
    capath: Option<PathBuf>,
    /// Trust the operating system's certificate authorities (implies TLS).
    #[arg(long = "tls-use-os-certs")]
    tls_use_os_certs: bool,
    /// Client certificate (PEM), with --key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM), with --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Check the broker's certificate chain but not its host name.
    #[arg(long)]
    insecure: bool,
    /// TLS version: tlsv1.3 or tlsv1.2 (default: either).
    #[arg(long = "tls-version")]
    tls_version: Option<String>,
    /// ALPN protocol to offer.
    #[arg(long = "tls-alpn")]
    tls_alpn: Option<String>,
    /// Key format: only pem (OpenSSL engines are not supported).
    #[arg(long)]
    keyform: Option<String>,
    /// Not supported: rustls chooses among its own safe cipher suites.
    #[arg(long)]
    ciphers: Option<String>,
    /// Not supported: OpenSSL engines.
    #[arg(long = "tls-engine")]
    tls_engine: Option<String>,
    /// Not supported: OpenSSL engines.
    #[arg(long = "tls-engine-kpass-sha1")]
    tls_engine_kpass_sha1: Option<String>,
    /// Not supported: rustls has no TLS-PSK.
    #[arg(long)]
    psk: Option<String>,
    /// Not supported: rustls has no TLS-PSK.
    #[arg(long = "psk-identity")]
    psk_identity: Option<String>,
    /// Connect over WebSocket (ws://, or wss:// with TLS).
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

fn parse_version(value: &str) -> Result<ProtocolVersion, String> {
    match value {
        "311" | "mqttv311" | "4" => Ok(ProtocolVersion::V311),
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "31" | "mqttv31" | "3" => {
            Err("MQTT 3.1 is not supported (Tern speaks 3.1.1 and 5); use 311 or 5".into())
        }
        other => Err(format!("unknown protocol version {other}; use 311 or 5")),
    }
}

/// `-x`: seconds, or -1, 4294967295 or ∞ for a session that never expires.
fn parse_expiry(value: &str) -> Result<u32, String> {
    match value {
        "-1" | "∞" => Ok(u32::MAX),
        other => other
            .parse()
            .map_err(|_| format!("session expiry must be 0 to 4294967295, -1 or ∞, not {other}")),
    }
}

/// Where to connect, after -L, -h, -p and the TLS flags are combined.
#[derive(Debug)]
struct Endpoint {
    host: String,
    port: u16,
    tls: Option<TlsOptions>,
    ws: bool,
}

impl ConnectArgs {
    /// The URL given with -L, parsed.
    pub(crate) fn url(&self) -> anyhow::Result<Option<BrokerUrl>> {
        self.url.as_deref().map(BrokerUrl::parse).transpose()
    }

    /// The -D properties, parsed.
    pub(crate) fn property_set(&self) -> anyhow::Result<PropertySet> {
        PropertySet::parse(&self.properties)
    }

    fn client_id(&self, tag: &str) -> anyhow::Result<String> {
        let needs_id = self.persistent
            || (self.version == ProtocolVersion::V5 && self.session_expiry == Some(u32::MAX));
        Ok(match (&self.id, &self.id_prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) if needs_id => {
                bail!("a persistent session (-c, or -x -1) needs a client id: give -i or -I")
            }
            (None, None) => format!("tern-{tag}-{:08x}", fastrand::u32(..)),
        })
    }

    /// Client options for this command; `tag` names the command in generated client ids.
    pub(crate) fn options(
        &self,
        tag: &str,
        properties: &PropertySet,
    ) -> anyhow::Result<ClientOptions> {
        self.refuse_unsupported()?;
        let mut options = ClientOptions::new(self.client_id(tag)?);
        options.version = self.version;
        options.keep_alive = Duration::from_secs(u64::from(self.keepalive));
        options.connect_timeout = Duration::from_secs(self.connect_timeout);
        let url = self.url()?;
        options.username = self
            .username
            .clone()
            .or_else(|| url.as_ref().and_then(|u| u.username.clone()));
        options.password = self
            .password
            .clone()
            .or_else(|| url.as_ref().and_then(|u| u.password.clone()))
            .map(Bytes::from);
        options.connect_user_properties = self.user_properties()?;
        // -c: resume the session, which (MQTT 5) outlives the connection for good unless -x
        // says otherwise; without -c, a session ends with its connection unless -x is given.
        options.clean_start = !self.persistent;
        options.session_expiry_secs =
            self.session_expiry
                .unwrap_or(if self.persistent { u32::MAX } else { 0 });
        properties.apply_connect(&mut options)?;
        if let Some(topic) = &self.will_topic {
            options.will = Some(LastWill {
                topic: topic.clone(),
                payload: Bytes::from(self.will_payload.clone().unwrap_or_default()),
                qos: self.will_qos.unwrap_or(QoS::AtMostOnce),
                retain: self.will_retain,
                properties: properties.will.clone(),
            });
        }
        Ok(options)
    }

    fn refuse_unsupported(&self) -> anyhow::Result<()> {
        let refused = [
            (
                self.ciphers.is_some(),
                "--ciphers: rustls offers only its own safe cipher suites",
            ),
            (
                self.tls_engine.is_some() || self.tls_engine_kpass_sha1.is_some(),
                "--tls-engine: OpenSSL engines are not supported (Tern uses rustls)",
            ),
            (
                self.psk.is_some() || self.psk_identity.is_some(),
                "--psk: rustls does not implement TLS-PSK",
            ),
            (
                self.keyform.as_deref().is_some_and(|k| k != "pem"),
                "--keyform: only pem keys are supported (no OpenSSL engines)",
            ),
        ];
        for (given, why) in refused {
            if given {
                bail!("not supported: {why}");
            }
        }
        Ok(())
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

    fn tls_options(&self, url_tls: bool) -> anyhow::Result<Option<TlsOptions>> {
        let explicit = self.tls
            || self.cafile.is_some()
            || self.capath.is_some()
            || self.tls_use_os_certs
            || self.cert.is_some();
        // As mosquitto: an mqtts:// URL, or port 8883 with no other TLS option, means TLS
        // trusting the system's certificate authorities.
        let implied = url_tls || (!explicit && self.port == Some(8883));
        if !explicit && !implied {
            return Ok(None);
        }
        let version = match self.tls_version.as_deref() {
            None => None,
            Some("tlsv1.3") => Some(TlsVersion::V1_3),
            Some("tlsv1.2") => Some(TlsVersion::V1_2),
            Some(other) => bail!("--tls-version {other}: rustls supports tlsv1.2 and tlsv1.3 only"),
        };
        let system_roots = self.tls_use_os_certs
            || (implied && self.cafile.is_none() && self.capath.is_none() && !self.tls);
        Ok(Some(TlsOptions {
            ca_file: self.cafile.clone(),
            ca_dir: self.capath.clone(),
            system_roots,
            client_cert: self.cert.clone(),
            client_key: self.key.clone(),
            skip_hostname_check: self.insecure,
            version,
            alpn: self
                .tls_alpn
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        }))
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let url = self.url()?;
        let url_tls = url
            .as_ref()
            .is_some_and(|u| matches!(u.scheme, Scheme::Mqtts | Scheme::Wss));
        let tls = self.tls_options(url_tls)?;
        let ws = self.ws
            || url
                .as_ref()
                .is_some_and(|u| matches!(u.scheme, Scheme::Ws | Scheme::Wss));
        let host = self
            .host
            .clone()
            .or_else(|| url.as_ref().map(|u| u.host.clone()))
            .unwrap_or_else(|| "localhost".to_owned());
        let default_port = match (ws, tls.is_some()) {
            (true, true) => 443,
            (true, false) => 80,
            (false, true) => 8883,
            (false, false) => 1883,
        };
        let port = self
            .port
            .or_else(|| url.as_ref().and_then(|u| u.port))
            .unwrap_or(default_port);
        Ok(Endpoint {
            host,
            port,
            tls,
            ws,
        })
    }

    fn dialer(&self) -> anyhow::Result<Dialer> {
        let local_address = match &self.bind_address {
            None => None,
            Some(address) => Some(match address.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => (address.as_str(), 0)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve -A {address}"))?
                    .next()
                    .with_context(|| format!("-A {address} has no address"))?
                    .ip(),
            }),
        };
        let socks5 = self.proxy.as_deref().map(parse_socks5).transpose()?;
        Ok(Dialer {
            local_address,
            socks5,
        })
    }

    fn transport(&self) -> anyhow::Result<Box<dyn Transport>> {
        #[cfg(unix)]
        if let Some(path) = &self.unix {
            if self.tls || self.cafile.is_some() || self.capath.is_some() {
                bail!("--unix carries plain MQTT only");
            }
            return Ok(Box::new(tern_client::UnixTransport::new(path)));
        }
        #[cfg(not(unix))]
        if self.unix.is_some() {
            bail!("--unix: this system has no Unix domain sockets");
        }
        let endpoint = self.endpoint()?;
        let dialer = self.dialer()?;
        let config = match &endpoint.tls {
            Some(options) => {
                Some(tern_client::tls::client_config_with(options).context("TLS setup")?)
            }
            None => None,
        };
        let Endpoint { host, port, ws, .. } = endpoint;
        let transport: Box<dyn Transport> = match (ws, config) {
            (true, config) => {
                let scheme = if config.is_some() { "wss" } else { "ws" };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let url = format!("{scheme}://{host}:{port}{}", self.ws_path);
                Box::new(WsTransport::new(url, config).with_dialer(dialer))
            }
            (false, Some(config)) => {
                Box::new(TlsTransport::new(host, port, config).with_dialer(dialer))
            }
            (false, None) => {
                Box::new(TcpTransport::new(format!("{host}:{port}")).with_dialer(dialer))
            }
        };
        Ok(transport)
    }

    /// Starts a client and waits for its first connection; with `inbox`, every message the
    /// broker sends is also handed to the returned receiver (see `Client::start_with_inbox`).
    pub(crate) async fn connect(
        &self,
        options: ClientOptions,
        inbox: bool,
    ) -> anyhow::Result<(Client, Option<Messages>)> {
        let transport = BoxedTransport(self.transport()?);
        let (client, messages) = if inbox {
            let (client, messages, _task) = Client::start_with_inbox(options, transport)?;
            (client, Some(messages))
        } else {
            let (client, _task) = Client::start(options, transport)?;
            (client, None)
        };
        if self.debug {
            let mut state = client.state();
            tokio::spawn(async move {
                eprintln!("connection: {:?}", *state.borrow_and_update());
                while state.changed().await.is_ok() {
                    eprintln!("connection: {:?}", *state.borrow_and_update());
                }
            });
        }
        let timeout = Duration::from_secs(self.connect_timeout);
        match client.wait_connected(timeout).await {
            Ok(_) => Ok((client, messages)),
            Err(ConnectError::Refused(code)) => {
                client.disconnect().await;
                // As mosquitto: the exit status is the CONNACK's return code.
                let status = refused_status(self.version, code.as_u8());
                Err(Exit::new(status, format!("connection refused: {code:?}")).into())
            }
            Err(error) => {
                client.disconnect().await;
                let host = self.endpoint().map(|e| e.host).unwrap_or_default();
                Err(anyhow::Error::new(error).context(format!("cannot connect to {host}")))
            }
        }
    }
}

/// The exit status for a refused connection: the MQTT 5 reason code, or the 3.1.1 return
/// code it stands for.
fn refused_status(version: ProtocolVersion, code: u8) -> u8 {
    if version == ProtocolVersion::V5 {
        return code;
    }
    match code {
        0x84 => 1,
        0x85 => 2,
        0x88 => 3,
        0x86 => 4,
        0x87 => 5,
        other => other,
    }
}

/// `--proxy socks5h://[user[:password]@]host[:port]`; %25, %3A and %40 in the user name and
/// password stand for %, : and @.
fn parse_socks5(url: &str) -> anyhow::Result<Socks5Proxy> {
    let Some(rest) = url.strip_prefix("socks5h://") else {
        bail!("--proxy {url}: only socks5h:// proxies are supported");
    };
    let rest = rest.trim_end_matches('/');
    let (credentials, address) = match rest.rsplit_once('@') {
        Some((credentials, address)) => {
            let decode = |s: &str| {
                s.replace("%3A", ":")
                    .replace("%3a", ":")
                    .replace("%40", "@")
                    .replace("%25", "%")
            };
            let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
            (Some((decode(user), decode(password))), address)
        }
        None => (None, rest),
    };
    let (host, port) = super::url::split_host_port(address)?;
    Ok(Socks5Proxy {
        host,
        port: port.unwrap_or(1080),
        credentials,
    })
}

struct BoxedTransport(Box<dyn Transport>);

impl Transport for BoxedTransport {
    fn connect(&self) -> tern_client::transport::ConnectFuture<'_> {
        self.0.connect()
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_expiry, parse_socks5};

    #[test]
    fn expiry_accepts_mosquittos_spellings_of_forever() {
        for forever in ["-1", "4294967295", "∞"] {
            assert_eq!(parse_expiry(forever), Ok(u32::MAX));
        }
        assert_eq!(parse_expiry("30"), Ok(30));
        assert!(parse_expiry("-2").is_err());
    }

    #[test]
    fn socks5_urls() {
        let proxy = parse_socks5("socks5h://me%40home:p%3Ass@proxy.lan:9050");
        let proxy = proxy.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(proxy.host, "proxy.lan");
        assert_eq!(proxy.port, 9050);
        assert_eq!(proxy.credentials, Some(("me@home".into(), "p:ss".into())));
        let plain = parse_socks5("socks5h://127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((plain.port, plain.credentials), (1080, None));
        assert!(parse_socks5("socks4://host").is_err());
    }
}
