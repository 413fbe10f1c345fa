//! `tern pub`: publishes one message (or each line of stdin), optionally repeated.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context;
use tern_client::codec::PayloadFormat;
use tern_client::{Bytes, QoS};

use super::{parse_qos, ConnectArgs, HelpFlag, PayloadArgs};

/// Options of `tern pub`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    payload: PayloadArgs,
    #[command(flatten)]
    help: HelpFlag,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    topic: String,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
    /// Publish each line of standard input as a message.
    #[arg(short = 'l', long, conflicts_with = "payload")]
    stdin_line: bool,
    /// Publish the message this many times.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Seconds between repeats (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    repeat_delay: f64,
    /// Message expiry interval in seconds (MQTT 5).
    #[arg(long)]
    message_expiry: Option<u32>,
    /// Content type (MQTT 5).
    #[arg(long)]
    content_type: Option<String>,
    /// Mark the payload as UTF-8 text (MQTT 5 payload format indicator).
    #[arg(long)]
    utf8: bool,
    /// Response topic (MQTT 5).
    #[arg(long)]
    response_topic: Option<String>,
    /// Correlation data (MQTT 5).
    #[arg(long)]
    correlation_data: Option<String>,
}

impl PubArgs {
    fn message(&self, payload: Bytes) -> anyhow::Result<tern_client::Publish> {
        let mut message = tern_client::message(&self.topic, payload)?;
        message.qos = self.qos;
        message.retain = self.retain;
        let properties = &mut message.properties;
        properties.user_properties = self.connect.user_properties()?;
        properties.message_expiry_interval = self.message_expiry;
        if let Some(content_type) = &self.content_type {
            properties.content_type = Some(tern_client::codec::MqttString::new(content_type)?);
        }
        if self.utf8 {
            properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        }
        if let Some(topic) = &self.response_topic {
            properties.response_topic = Some(tern_client::message(topic, "")?.topic);
        }
        if let Some(data) = &self.correlation_data {
            properties.correlation_data = Some(Bytes::from(data.clone()));
        }
        Ok(message)
    }
}

pub(crate) fn run(args: PubArgs) -> anyhow::Result<()> {
    super::run(async move {
        let client = args.connect.connect(args.connect.options("pub")?).await?;
        if args.stdin_line {
            let mut pending = Vec::new();
            for line in std::io::stdin().lock().lines() {
                let line = line.context("cannot read stdin")?;
                pending.push(client.send(args.message(Bytes::from(line))?).await?);
            }
            for ack in pending {
                ack.await?;
            }
        } else {
            let payload = args.payload.read()?;
            let delay = Duration::from_secs_f64(args.repeat_delay.max(0.0));
            for round in 0..args.repeat.max(1) {
                if round > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                client.send(args.message(payload.clone())?).await?.await?;
            }
        }
        client.disconnect().await;
        Ok(())
    })
}
