//! `tern device` manages the device fleet's registry of a running broker, through its operator
//! API (`/v1/admin/devices`, with a token of the whole broker or of an owner), over HTTP or
//! HTTPS: devices added with their credential (a password is hashed here, so it never leaves
//! this process), listed, shown, disabled, enabled and deleted; owners given a password.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// Where the operator API is and how to reach it: shared by the commands that drive it.
#[derive(Debug, clap::Args)]
pub(crate) struct ApiArgs {
    /// The operator API, e.g. http://127.0.0.1:8080 or https://broker:8443.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// With an https:// URL: trust the certificate authorities of this PEM file (default: the
    /// web PKI's).
    #[arg(long, global = true)]
    cafile: Option<PathBuf>,
    /// An operator token (`tern token add`; scopes read and write; `tern device` also takes
    /// an owner's); also TERN_TOKEN.
    #[arg(long, global = true)]
    token: Option<String>,
}

/// `tern device`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DeviceCommand {
    /// Add a device of OWNER whose udid (its MQTT client identifier) is UDID, with one
    /// credential.
    Add {
        /// The owner's id.
        owner: String,
        /// The device's udid.
        udid: String,
        /// A name for people.
        #[arg(long, default_value = "")]
        alias: String,
        /// Its platform (e.g. esp32).
        #[arg(long, default_value = "")]
        platform: String,
        /// Its firmware version.
        #[arg(long, default_value = "")]
        firmware: String,
        /// A tag; repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// It logs in with an MQTT password: prompted for, or read from standard input.
        #[arg(long, group = "credential", required = true)]
        password: bool,
        /// It logs in with the HTTP bridge's key d:UDID (made now, its secret shown once).
        #[arg(long, group = "credential")]
        key: bool,
        /// It logs in with a client certificate of this CN.
        #[arg(long, group = "credential")]
        cert_cn: Option<String>,
    },
    /// List the devices (of one owner).
    List {
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one device.
    Show {
        /// Its udid.
        udid: String,
    },
    /// Disable a device: its connection is closed at once and it is refused until enabled.
    Disable {
        /// Its udid.
        udid: String,
    },
    /// Enable a disabled device.
    Enable {
        /// Its udid.
        udid: String,
    },
    /// Delete a device, with its session and its retained channel and status.
    Delete {
        /// Its udid.
        udid: String,
    },
    /// Give an owner a password to log in with over MQTT (its whole fleet: `<prefix><owner>/#`);
    /// the password is prompted for, or read from standard input.
    Owner {
        /// The owner's id.
        owner: String,
    },
}

pub(crate) fn run(args: DeviceArgs) -> anyhow::Result<()> {
    let api = Api::from_args(&args.api)?;
    let (method, path, body) = match args.command {
        DeviceCommand::Add {
            owner,
            udid,
            alias,
            platform,
            firmware,
            tags,
            password,
            key,
            cert_cn,
        } => {
            let mut body = json!({
                "owner": owner, "udid": udid, "alias": alias, "platform": platform,
                "firmware": firmware, "tags": tags,
            });
            if password {
                body["credential"] = json!("password");
                body["password_hash"] = json!(hashed_password()?);
            } else if key {
                body["credential"] = json!("key");
            } else if let Some(cn) = cert_cn {
                body["credential"] = json!("cert-cn");
                body["cn"] = json!(cn);
            }
            // One request: the broker makes the device and its key together, or neither.
            let mut device = api.call("POST", "/v1/admin/devices", Some(&body))?;
            let made = device.as_object_mut().and_then(|d| d.remove("key"));
            print(&device)?;
            if let Some(made) = made {
                print(&made)?;
            }
            return Ok(());
        }
        DeviceCommand::List { owner } => {
            let query = owner
                .map(|o| format!("?owner={}", encode(&o)))
                .unwrap_or_default();
            ("GET", format!("/v1/admin/devices{query}"), None)
        }
        DeviceCommand::Show { udid } => ("GET", device_path(&udid), None),
        DeviceCommand::Disable { udid } => (
            "PATCH",
            device_path(&udid),
            Some(json!({ "disabled": true })),
        ),
        DeviceCommand::Enable { udid } => (
            "PATCH",
            device_path(&udid),
            Some(json!({ "disabled": false })),
        ),
        DeviceCommand::Delete { udid } => ("DELETE", device_path(&udid), None),
        DeviceCommand::Owner { owner } => {
            let body = json!({ "password_hash": hashed_password()? });
            (
                "PUT",
                format!("/v1/admin/owners/{}", encode(&owner)),
                Some(body),
            )
        }
    };
    print(&api.call(method, &path, body.as_ref())?)
}

fn hashed_password() -> anyhow::Result<String> {
    let password = crate::passwd::read_password()?;
    if password.is_empty() {
        bail!("an empty password");
    }
    Ok(tern_auth::passwd::hash_password(&password)?)
}

fn device_path(udid: &str) -> String {
    format!("/v1/admin/devices/{}", encode(udid))
}

pub(crate) fn print(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Percent-encodes a path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte))
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// TLS towards the operator API: what is trusted, and the name the certificate must have.
type Tls = (
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// The operator API over HTTP/1.1 or HTTPS, one connection per request.
pub(crate) struct Api {
    host: String,
    token: String,
    tls: Option<Tls>,
}

impl Api {
    /// The API `args` name, with the token from `--token` or else TERN_TOKEN.
    pub(crate) fn from_args(args: &ApiArgs) -> anyhow::Result<Self> {
        let token = args
            .token
            .clone()
            .or_else(|| std::env::var("TERN_TOKEN").ok());
        Self::new(&args.url, token.as_deref(), args.cafile.as_deref())
    }

    pub(crate) fn new(
        url: &str,
        token: Option<&str>,
        cafile: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let (rest, secure) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => bail!("--url must be http://HOST:PORT or https://HOST:PORT"),
        };
        let host = rest.trim_end_matches('/').to_owned();
        let tls = match (secure, cafile) {
            (false, Some(_)) => bail!("--cafile is for an https:// URL"),
            (false, None) => None,
            (true, cafile) => {
                let config = tern_client::tls::client_config(cafile)
                    .context("cannot set up TLS (--cafile)")?;
                let name = host
                    .rsplit_once(':')
                    .map_or(host.as_str(), |(name, _)| name)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(name.to_owned())
                    .with_context(|| format!("{name:?} is not a host name"))?;
                Some((config, name))
            }
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            bail!("an operator token is needed: --token or TERN_TOKEN (tern token add)");
        };
        Ok(Self {
            host,
            token: token.to_owned(),
            tls,
        })
    }

    /// Sends a request and returns its JSON answer; an error status is an error with the
    /// answer's message.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        self.send(method, path, "application/json", &body)
    }

    /// Sends a request with a body of `content_type` and returns its JSON answer; an error
    /// status is an error with the answer's message.
    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<Value> {
        let stream = TcpStream::connect(&self.host)
            .with_context(|| format!("cannot reach the operator API at {}", self.host))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host,
            self.token,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        let answer = match &self.tls {
            None => exchange(stream, &request)?,
            Some((config, name)) => {
                let connection = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                    .context("cannot start TLS")?;
                exchange(rustls::StreamOwned::new(connection, stream), &request)
                    .context("the TLS exchange with the operator API failed")?
            }
        };
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("a malformed HTTP answer")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("a malformed HTTP status line")?;
        let head = head.to_ascii_lowercase();
        let chunked = head.contains("transfer-encoding: chunked");
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok());
        if length.is_some_and(|length| body.len() < length) {
            bail!("{method} {path}: the answer was cut short");
        }
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        };
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if status >= 400 {
            let message = value["error"]["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            bail!("{method} {path}: {status}: {message}");
        }
        Ok(value)
    }
}

/// Sends a request and reads the answer until the server closes the connection.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        // A server may close without TLS's close_notify once its answer is sent (`Connection:
        // close`); the answer's length is checked against its head below.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {
            Ok(answer)
        }
        Err(error) => Err(error),
    }
}

fn dechunk(body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").context("a malformed chunk")?;
        let size = usize::from_str_radix(size.trim(), 16).context("a malformed chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).context("a short chunk")?;
        out.push_str(chunk);
        rest = after.get(size + 2..).context("a short chunk")?;
    }
}
