//! `tern req`: sends a request (MQTT 5 response topic and correlation data, or the 3.1.1
//! envelope) and prints the response.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use super::{ConnectArgs, HelpFlag, PayloadArgs};

/// Options of `tern req`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct ReqArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    payload: PayloadArgs,
    #[command(flatten)]
    help: HelpFlag,
    /// Topic to send the request to.
    #[arg(short = 't', long)]
    topic: String,
    /// Seconds to wait for the response.
    #[arg(short = 'W', long, default_value_t = 10.0)]
    timeout: f64,
    /// Print the response as JSON, with its properties.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ReqArgs) -> anyhow::Result<()> {
    super::run(async move {
        let client = args.connect.connect(args.connect.options("req")?).await?;
        let payload = args.payload.read()?;
        let timeout = Duration::from_secs_f64(args.timeout.max(0.0));
        let outcome = client.request(&args.topic, payload, timeout).await;
        client.disconnect().await;
        let response = outcome.with_context(|| format!("request to {}", args.topic))?;
        let mut stdout = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut stdout, &super::subscribe::to_json(&response.publish))?;
        } else {
            stdout.write_all(&response.payload)?;
        }
        writeln!(stdout)?;
        Ok(())
    })
}
