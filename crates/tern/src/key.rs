//! `tern key` manages the HTTP bridge's keys in a data directory (the broker need not be
//! stopped: it reads the key file again when it changes), and `tern http sign` prints the
//! headers of a signed request, for scripting with curl.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tern_auth::keyring::{derive_device_secret, parse_key_id, KeyKind};
use tern_auth::{Grant, KeyRing, RuleAccess};
use tern_http::keys;
use tern_http::signing::{self, RequestParts};

/// `tern key`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    /// The broker's data directory (default ./tern-data).
    #[arg(long, global = true, default_value = "tern-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// Add a key (d:CLIENT, g:GROUP with --prefix, a:APP) and show its secret, once.
    Add {
        /// The key id.
        id: String,
        /// For a group: the client identifiers whose devices derive their secret from it
        /// ("" for every client without a key of its own).
        #[arg(long)]
        prefix: Option<String>,
        /// Allow publishing to this filter (%c: client id, %u: the key's name); repeatable.
        #[arg(long)]
        publish: Vec<String>,
        /// Allow subscribing with this filter; repeatable.
        #[arg(long)]
        subscribe: Vec<String>,
        /// Allow both on this filter; repeatable. Without any grant, the ACL rules alone decide.
        #[arg(long)]
        both: Vec<String>,
        /// For an app key: each device needs an operator's approval (an access request,
        /// `/v1/admin/access-requests`) before it may act.
        #[arg(long)]
        approve: bool,
    },
    /// List the keys: ids, secrets (numbers and dates, never the secrets), grants.
    List,
    /// Give a key a new secret and show it, once; of two active secrets the older goes.
    Rotate {
        /// The key id.
        id: String,
    },
    /// Retire one secret of a key (--secret N), or the whole key.
    Revoke {
        /// The key id.
        id: String,
        /// The number of the secret to retire.
        #[arg(long)]
        secret: Option<u32>,
    },
    /// Show the secret of device CLIENT of group g:GROUP, to provision it.
    Derive {
        /// The group's key id (g:GROUP).
        group: String,
        /// The device's client identifier.
        client: String,
    },
}

/// `tern http`.
#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    #[command(subcommand)]
    command: HttpCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HttpCommand {
    /// Print the signing headers of a request (one per line, "Name: value", for curl -H).
    Sign {
        /// The method, e.g. POST.
        method: String,
        /// The path and query as sent, e.g. "/v1/pub/sensors/1?qos=1".
        path: String,
        /// The key id (Tern-Key).
        #[arg(long)]
        key: String,
        /// The secret, 64 hex digits (as `tern key add` showed it).
        #[arg(long)]
        secret: String,
        /// The body: a file, or - for standard input (default: empty).
        #[arg(long)]
        body: Option<PathBuf>,
        /// Further signed headers, "Name: value" (Tern-Client, Mqtt-*, If-Match, If-None-Match);
        /// repeatable.
        #[arg(long, short = 'H')]
        header: Vec<String>,
        /// The nonce (default: a random one, r:...).
        #[arg(long)]
        nonce: Option<String>,
        /// Tern-Time (default: now; "-" with a counter nonce).
        #[arg(long)]
        time: Option<String>,
    },
}

pub(crate) fn run_key(args: KeyArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let (mut ring, master) = keys::read(dir).map_err(anyhow::Error::msg)?;
    let now = unix_now();
    let save = |ring: &KeyRing| -> anyhow::Result<()> {
        let master = match &master {
            Some(master) => master.clone(),
            None => keys::master_key(dir, true)
                .map_err(anyhow::Error::msg)?
                .context("no master key")?,
        };
        keys::write(dir, ring, &master).map_err(anyhow::Error::msg)
    };
    match args.command {
        KeyCommand::Add {
            id,
            prefix,
            publish,
            subscribe,
            both,
            approve,
        } => {
            let grants = [
                (RuleAccess::Publish, publish),
                (RuleAccess::Subscribe, subscribe),
                (RuleAccess::Both, both),
            ]
            .into_iter()
            .flat_map(|(access, topics)| {
                topics.into_iter().map(move |topic| Grant { access, topic })
            })
            .collect();
            let secret = ring.add(&id, prefix, grants, now)?;
            if approve {
                ring.set_approval(&id, true)?;
            }
            save(&ring)?;
            println!("{id} secret 1: {}", signing::hex(&secret));
            eprintln!("shown once: keep it on the device");
        }
        KeyCommand::List => {
            for key in ring.keys() {
                let secrets: Vec<String> = key
                    .secrets
                    .iter()
                    .map(|s| format!("{} (made {})", s.n, s.created))
                    .collect();
                let mut line = format!("{}  secrets: {}", key.id, secrets.join(", "));
                if let Some(prefix) = &key.prefix {
                    line.push_str(&format!("  prefix: {prefix:?}"));
                }
                for grant in &key.grants {
                    line.push_str(&format!("  {:?} {}", grant.access, grant.topic));
                }
                if key.approval {
                    line.push_str(&format!("  approval: {} approved", key.devices.len()));
                }
                println!("{line}");
            }
        }
        KeyCommand::Rotate { id } => {
            let (n, secret) = ring.rotate(&id, now)?;
            save(&ring)?;
            println!("{id} secret {n}: {}", signing::hex(&secret));
            eprintln!("shown once: the previous secret stays valid until revoked");
        }
        KeyCommand::Revoke { id, secret } => {
            ring.revoke(&id, secret)?;
            save(&ring)?;
        }
        KeyCommand::Derive { group, client } => {
            if parse_key_id(&group)?.0 != KeyKind::Group {
                bail!("{group} is not a group (g:GROUP)");
            }
            let key = ring
                .keys()
                .find(|k| k.id == group)
                .with_context(|| format!("no key {group}"))?;
            for secret in &key.secrets {
                let derived = derive_device_secret(secret.bytes(), &client);
                println!(
                    "d:{client} secret (group secret {}): {}",
                    secret.n,
                    signing::hex(&derived)
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn run_http(args: HttpArgs) -> anyhow::Result<()> {
    let HttpCommand::Sign {
        method,
        path,
        key,
        secret,
        body,
        header,
        nonce,
        time,
    } = args.command;
    let secret = parse_secret(&secret)?;
    let body = match body {
        None => Vec::new(),
        Some(file) if file.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes)?;
            bytes
        }
        Some(file) => {
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
        }
    };
    let nonce =
        nonce.unwrap_or_else(|| format!("r:{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)));
    let time = time.unwrap_or_else(|| unix_now().to_string());
    let mut headers: Vec<(String, String)> = vec![
        ("Tern-Key".into(), key),
        ("Tern-Time".into(), time),
        ("Tern-Nonce".into(), nonce),
    ];
    for line in header {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("{line:?}: a header is \"Name: value\""))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let (path_only, query) = path.split_once('?').unwrap_or((&path, ""));
    let borrowed: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let canonical = signing::canonical_request(&RequestParts {
        method: &method,
        path: path_only,
        query,
        headers: &borrowed,
        body: &body,
    })?;
    let signature = signing::sign(&secret, canonical.as_bytes());
    for (name, value) in &headers[..3] {
        println!("{name}: {value}");
    }
    println!("Tern-Signature: {}", signing::signature_header(&signature));
    Ok(())
}

fn parse_secret(text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        bail!("the secret is 64 hex digits");
    }
    let mut secret = [0; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).context("the secret is hex")?;
    }
    Ok(secret)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
