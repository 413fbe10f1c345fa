//! `tern token` manages the operator tokens of the HTTP bridge's operator API in a data
//! directory (the broker reads the file again when it changes): a new token is shown once,
//! and only its hash is kept.

use std::path::PathBuf;

use anyhow::bail;
use tern_http::tokens::{self, Scope};

/// `tern token`.
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The broker's data directory (default ./tern-data).
    #[arg(long, global = true, default_value = "tern-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Add a token and show it, once.
    Add {
        /// Its id (1-64 of A-Z a-z 0-9 . _ -).
        id: String,
        /// What it may do: read, write, keys, events, metrics; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Only client identifiers starting with this (default: every client).
        #[arg(long, default_value = "")]
        clients: String,
        /// Only topics this filter covers; repeatable (default: #).
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Seconds it stays valid (default: until revoked).
        #[arg(long)]
        valid_secs: Option<u64>,
        /// Bind it to this owner of the device fleet: it sees that owner's devices, their
        /// sessions, events and topics, and nothing else (scopes read, write, events).
        #[arg(long, conflicts_with = "clients")]
        owner: Option<String>,
        /// Write nothing: print the token and the `[[http.token]]` entry (its hash) for the
        /// configuration file instead.
        #[arg(long)]
        config: bool,
    },
    /// List the tokens: ids, scopes, realms and dates (never the tokens).
    List,
    /// Revoke a token.
    Revoke {
        /// Its id.
        id: String,
    },
}

pub(crate) fn run_token(args: TokenArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let mut set = tokens::read(dir).map_err(anyhow::Error::msg)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match args.command {
        TokenCommand::Add {
            id,
            scopes,
            clients,
            topics,
            valid_secs,
            owner,
            config,
        } => {
            let mut parsed = Vec::new();
            for name in &scopes {
                match Scope::parse(name) {
                    Some(scope) => parsed.push(scope),
                    None => bail!("unknown scope {name:?}: read, write, keys, events or metrics"),
                }
            }
            let expires = valid_secs.map(|secs| now + secs);
            let (text, mut record) = tokens::new_token(&id, parsed, clients, topics, now, expires)
                .map_err(anyhow::Error::msg)?;
            if let Some(owner) = &owner {
                tokens::bind_owner(&mut record, owner).map_err(anyhow::Error::msg)?;
            }
            if config {
                println!("{text}");
                eprintln!("shown once; put this in the configuration file:\n");
                eprint!("{}", tokens::config_entry(&record));
                return Ok(());
            }
            set.add(record).map_err(anyhow::Error::msg)?;
            tokens::write(dir, &set).map_err(anyhow::Error::msg)?;
            println!("{text}");
            eprintln!("shown once: send it as Authorization: Bearer TOKEN");
        }
        TokenCommand::List => {
            for token in set.tokens() {
                let scopes: Vec<&str> = token.scopes.iter().map(|s| s.name()).collect();
                let expires = token
                    .expires
                    .map_or_else(|| "never".to_owned(), |at| at.to_string());
                let realm = match &token.owner {
                    Some(owner) => format!("owner: {owner}"),
                    None => format!("clients: {:?}", token.clients),
                };
                println!(
                    "{}  scopes: {}  {realm}  topics: {}  made {}  expires {expires}",
                    token.id,
                    scopes.join(","),
                    token.topics.join(","),
                    token.created
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !set.revoke(&id) {
                bail!("no token {id}");
            }
            tokens::write(dir, &set).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(())
}
