//! `tern req`: sends a request (MQTT 5 response topic and correlation data, or the 3.1.1
//! envelope) and prints the response, as mosquitto_rr does.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use tern_client::{Bytes, QoS};

use super::connect::ConnectArgs;
use super::{HelpFlag, PayloadArgs};

/// Options of `tern req`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true, version)]
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
    /// Response topic to subscribe to and name in the request (MQTT 5; default: a topic of
    /// the client's own under tern/reply/).
    #[arg(short = 'e', long)]
    response_topic: Option<String>,
    /// Seconds to wait for the response.
    #[arg(short = 'W', long, default_value_t = 10.0)]
    timeout: f64,
    /// Print the response as JSON, with its properties.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: ReqArgs) -> anyhow::Result<()> {
    let quiet = args.connect.quiet;
    super::quieten(super::run(request(args)), quiet)
}

async fn request(args: ReqArgs) -> anyhow::Result<()> {
    let properties = args.connect.property_set()?;
    properties.only_for(
        "req",
        &["connect", "publish", "subscribe", "disconnect", "will"],
    )?;
    let payload = args.payload.read()?;
    let (client, _) = args
        .connect
        .connect(args.connect.options("req", &properties)?, false)
        .await?;
    let timeout = Duration::from_secs_f64(args.timeout.max(0.0));
    let outcome = match &args.response_topic {
        None => client
            .request(&args.topic, payload, timeout)
            .await
            .map(|response| (response.payload, response.publish))
            .with_context(|| format!("request to {}", args.topic)),
        Some(response_topic) => {
            let exchange = async {
                let mut replies = client.subscribe(response_topic, QoS::AtLeastOnce).await?;
                let correlation = Bytes::from(fastrand::u128(..).to_be_bytes().to_vec());
                let mut message = tern_client::message(&args.topic, payload)?;
                message.qos = QoS::AtLeastOnce;
                message.properties = properties.publish.clone();
                message.properties.response_topic =
                    Some(tern_client::message(response_topic, "")?.topic);
                message.properties.correlation_data = Some(correlation.clone());
                client.send(message).await?.await?;
                // The first reply that carries our correlation data, or none at all.
                while let Some(reply) = replies.recv().await {
                    match &reply.properties.correlation_data {
                        Some(data) if *data != correlation => continue,
                        _ => return Ok((reply.payload.clone(), reply)),
                    }
                }
                bail!("the client stopped before a response arrived")
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!("request to {}: timed out", args.topic)),
            }
        }
    };
    client.disconnect_with(properties.disconnect.clone()).await;
    let (payload, response) = outcome?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut stdout, &super::subscribe::to_json(&response))?;
    } else {
        stdout.write_all(&payload)?;
    }
    writeln!(stdout)?;
    Ok(())
}
