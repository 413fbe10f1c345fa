//! `tern pub`: publishes one message (or each line of stdin), optionally repeated, with
//! mosquitto_pub's options.

use std::collections::VecDeque;
use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use tern_client::codec::{PayloadFormat, PublishProperties};
use tern_client::{Bytes, Client, Pending, QoS};

use super::connect::ConnectArgs;
use super::{parse_qos, HelpFlag, PayloadArgs};

/// Options of `tern pub`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true, version)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    payload: PayloadArgs,
    #[command(flatten)]
    help: HelpFlag,
    /// Topic to publish to (or the topic of -L's URL).
    #[arg(short = 't', long)]
    topic: Option<String>,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
    /// Publish each line of standard input as a message.
    #[arg(short = 'l', long, group = "payload")]
    stdin_line: bool,
    /// Publish the message this many times (-m, -f, -s, -n).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Seconds between a message's delivery and the next repeat (fractions allowed).
    #[arg(long, default_value_t = 0.0)]
    repeat_delay: f64,
    /// Most QoS 1/2 messages awaiting acknowledgement at once.
    #[arg(short = 'M', long = "max-inflight")]
    max_inflight: Option<u16>,
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
    #[arg(short = 'e', long)]
    response_topic: Option<String>,
    /// Correlation data (MQTT 5).
    #[arg(long)]
    correlation_data: Option<String>,
}

impl PubArgs {
    fn properties(&self, base: &PublishProperties) -> anyhow::Result<PublishProperties> {
        let mut properties = base.clone();
        for (key, value) in self.connect.user_properties()?.iter() {
            properties.user_properties.push(
                &tern_client::codec::MqttString::new(key)?,
                &tern_client::codec::MqttString::new(value)?,
            );
        }
        if let Some(expiry) = self.message_expiry {
            properties.message_expiry_interval = Some(expiry);
        }
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
        Ok(properties)
    }
}

/// Publishes and keeps at most `max_inflight` acknowledgements outstanding.
struct Sender<'a> {
    client: &'a Client,
    template: tern_client::Publish,
    outstanding: VecDeque<Pending>,
    max_inflight: usize,
    debug: bool,
}

impl Sender<'_> {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        let mut message = self.template.clone();
        message.payload = payload;
        self.outstanding.push_back(self.client.send(message).await?);
        while self.outstanding.len() > self.max_inflight {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn settle_one(&mut self) -> anyhow::Result<()> {
        if let Some(pending) = self.outstanding.pop_front() {
            let code = pending.await?;
            if self.debug {
                eprintln!("acknowledged: {code:?}");
            }
        }
        Ok(())
    }

    async fn settle_all(&mut self) -> anyhow::Result<()> {
        while !self.outstanding.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }
}

/// Lines of standard input, read on a thread of their own so the client keeps its link alive
/// while waiting for the next line. Each line loses its newline; a last line without one counts.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (lines, receiver) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if lines.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = lines.blocking_send(Err(error));
                    return;
                }
            }
        }
    });
    receiver
}

pub(crate) fn run(args: PubArgs) -> anyhow::Result<()> {
    let quiet = args.connect.quiet;
    super::quieten(super::run(publish(args)), quiet)
}

async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let properties = args.connect.property_set()?;
    properties.only_for("pub", &["connect", "publish", "disconnect", "will"])?;
    let topic = match (&args.topic, args.connect.url()?) {
        (Some(topic), _) => topic.clone(),
        (None, Some(url)) => url.topic,
        (None, None) => {
            bail!("both a topic (-t or -L) and a message (-m, -f, -l, -n or -s) must be given")
        }
    };
    if !args.payload.given() && !args.stdin_line {
        bail!("both a topic (-t or -L) and a message (-m, -f, -l, -n or -s) must be given");
    }
    let mut template = tern_client::message(&topic, Bytes::new())
        .with_context(|| format!("invalid publish topic {topic:?}"))?;
    template.qos = args.qos;
    template.retain = args.retain;
    template.properties = args.properties(&properties.publish)?;
    // A file or stdin is read before connecting, as mosquitto_pub does.
    let payload = if args.stdin_line {
        None
    } else {
        Some(args.payload.read()?)
    };
    let (client, _) = args
        .connect
        .connect(args.connect.options("pub", &properties)?, false)
        .await?;
    let mut sender = Sender {
        client: &client,
        template,
        outstanding: VecDeque::new(),
        max_inflight: args
            .max_inflight
            .map_or(usize::MAX, |m| usize::from(m.max(1))),
        debug: args.connect.debug,
    };
    let outcome = async {
        match payload {
            None => {
                let mut lines = stdin_lines();
                while let Some(line) = lines.recv().await {
                    sender
                        .send(Bytes::from(line.context("cannot read stdin")?))
                        .await?;
                }
            }
            Some(payload) => {
                let delay = Duration::from_secs_f64(args.repeat_delay.max(0.0));
                for round in 0..args.repeat.max(1) {
                    if round > 0 && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    sender.send(payload.clone()).await?;
                    // The next repeat waits for this one's delivery.
                    sender.settle_all().await?;
                }
            }
        }
        sender.settle_all().await
    }
    .await;
    client.disconnect_with(properties.disconnect.clone()).await;
    outcome
}
