//! `tern firmware` manages the device fleet's firmware catalogue of a running broker, through
//! its operator API (`/v1/admin/firmware`, with a token of the whole broker): releases added
//! (for a platform, with a semantic version, the URL devices download from, its SHA-256 and
//! size, for one owner or all, devices with some tags, a share of them), listed, shown and
//! deleted. With `--file` the file is uploaded and kept by the broker, which serves it to the
//! devices. A registering device is offered the newest matching release above its version.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::json;

use crate::device::{encode, print, Api, ApiArgs};

/// `tern firmware`.
#[derive(Debug, clap::Args)]
pub(crate) struct FirmwareArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: FirmwareCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FirmwareCommand {
    /// Add release ID: offered to registering devices of PLATFORM that run an older version.
    Add {
        /// Its identifier (letters, digits, '-', '_', '.').
        id: String,
        /// The platform it is for, as devices register theirs (e.g. esp32).
        #[arg(long)]
        platform: String,
        /// Its semantic version (e.g. 1.7.25).
        #[arg(long)]
        version: String,
        /// Where devices download it (an external URL); or --file.
        #[arg(
            long = "download-url",
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        download_url: Option<String>,
        /// Upload this file: the broker keeps it and serves it at /v1/fleet/firmware/ID.
        #[arg(long)]
        file: Option<PathBuf>,
        /// The SHA-256 of the file (64 hex digits); with --file, checked against the file's.
        #[arg(long, required_unless_present = "file")]
        sha256: Option<String>,
        /// The size of the file in bytes; with --file, checked against the file's.
        #[arg(long, required_unless_present = "file")]
        size: Option<u64>,
        /// Only this owner's devices (default: every owner's).
        #[arg(long)]
        owner: Option<String>,
        /// Only devices with this tag; repeatable (all of them).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// The share of matching devices offered it, 0 to 100.
        #[arg(long, default_value_t = 100)]
        rollout: u8,
    },
    /// List the releases.
    List,
    /// Show one release.
    Show {
        /// Its id.
        id: String,
    },
    /// Delete a release: it is offered no more.
    Delete {
        /// Its id.
        id: String,
    },
}

pub(crate) fn run(args: FirmwareArgs) -> anyhow::Result<()> {
    let api = Api::from_args(&args.api)?;
    let path = |id: &str| format!("/v1/admin/firmware/{}", encode(id));
    let answer = match args.command {
        FirmwareCommand::Add {
            id,
            platform,
            version,
            download_url,
            file,
            sha256,
            size,
            owner,
            tags,
            rollout,
        } => {
            if rollout > 100 {
                bail!("--rollout is a percentage: 0 to 100");
            }
            if let Some(file) = file {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let mut query = vec![
                    ("platform", platform),
                    ("version", version),
                    ("rollout_percent", rollout.to_string()),
                    ("tags", tags.join(",")),
                ];
                query.extend(owner.map(|owner| ("owner", owner)));
                query.extend(sha256.map(|sha256| ("sha256", sha256)));
                query.extend(size.map(|size| ("size", size.to_string())));
                let query: Vec<String> = query
                    .into_iter()
                    .map(|(name, value)| format!("{name}={}", encode(&value)))
                    .collect();
                let path = format!("{}/file?{}", path(&id), query.join("&"));
                let answer = api.send("PUT", &path, "application/octet-stream", &bytes)?;
                return print(&answer);
            }
            let body = json!({
                "id": id, "platform": platform, "version": version, "url": download_url,
                "sha256": sha256, "size": size, "owner": owner, "tags": tags,
                "rollout_percent": rollout,
            });
            api.call("POST", "/v1/admin/firmware", Some(&body))?
        }
        FirmwareCommand::List => api.call("GET", "/v1/admin/firmware", None)?,
        FirmwareCommand::Show { id } => api.call("GET", &path(&id), None)?,
        FirmwareCommand::Delete { id } => api.call("DELETE", &path(&id), None)?,
    };
    print(&answer)
}
