//! `tern sub`: subscribes to filters and prints messages, as text or JSON with properties.

use std::io::Write;
use std::time::Duration;

use tern_client::codec::{PayloadFormat, SubscribeProperties};
use tern_client::{Publish, QoS, RetainHandling, SubscriptionOptions};

use super::{parse_qos, ConnectArgs, HelpFlag};

/// Options of `tern sub`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    help: HelpFlag,
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long = "topic", required = true)]
    topics: Vec<String>,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Print each message as one JSON object, with its properties.
    #[arg(long)]
    json: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    count: Option<u64>,
    /// Exit after this many seconds (with an error if -C was not reached).
    #[arg(short = 'W', long)]
    timeout: Option<u64>,
    /// Do not print retained messages (those sent because of the subscription).
    #[arg(short = 'R', long)]
    no_retained: bool,
    /// Retain handling (MQTT 5): 0 send retained, 1 only for new subscriptions, 2 never.
    #[arg(long, default_value_t = 0)]
    retain_handling: u8,
    /// Retain as published (MQTT 5): keep the retain flag of forwarded messages.
    #[arg(long)]
    retain_as_published: bool,
    /// Do not receive messages this client publishes (MQTT 5).
    #[arg(long)]
    no_local: bool,
    /// Print no newline after each message.
    #[arg(short = 'N')]
    no_newline: bool,
    /// Report the subscription and connection changes on standard error.
    #[arg(short = 'd', long)]
    debug: bool,
}

pub(crate) fn run(args: SubArgs) -> anyhow::Result<()> {
    super::run(async move {
        let client = args.connect.connect(args.connect.options("sub")?).await?;
        let retain_handling = match args.retain_handling {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            other => anyhow::bail!("retain handling must be 0, 1 or 2, not {other}"),
        };
        let options = SubscriptionOptions {
            qos: args.qos,
            no_local: args.no_local,
            retain_as_published: args.retain_as_published,
            retain_handling,
        };
        let filters: Vec<(&str, SubscriptionOptions)> =
            args.topics.iter().map(|t| (t.as_str(), options)).collect();
        let mut messages = client
            .subscribe_with(&filters, SubscribeProperties::default())
            .await?;
        if args.debug {
            eprintln!("subscribed: {:?}", messages.reason_codes());
            let mut state = client.state();
            tokio::spawn(async move {
                while state.changed().await.is_ok() {
                    eprintln!("connection: {:?}", *state.borrow_and_update());
                }
            });
        }
        let deadline = args
            .timeout
            .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
        let mut received = 0u64;
        let mut stdout = std::io::stdout().lock();
        while args.count.is_none_or(|count| received < count) {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, messages.recv()).await {
                    Ok(next) => next,
                    Err(_) if args.count.is_some() => {
                        client.disconnect().await;
                        anyhow::bail!("timed out after {received} messages");
                    }
                    Err(_) => break,
                },
                None => messages.recv().await,
            };
            let Some(message) = next else { break };
            if args.no_retained && message.retain {
                continue;
            }
            received += 1;
            print_message(&mut stdout, &args, &message)?;
        }
        client.disconnect().await;
        Ok(())
    })
}

fn print_message(out: &mut impl Write, args: &SubArgs, message: &Publish) -> anyhow::Result<()> {
    if args.json {
        serde_json::to_writer(&mut *out, &to_json(message))?;
    } else {
        if args.verbose {
            write!(out, "{} ", message.topic.as_str())?;
        }
        out.write_all(&message.payload)?;
    }
    if !args.no_newline {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// A message as JSON: the payload as text when it is UTF-8, else as hex in `payload_hex`.
pub(crate) fn to_json(message: &Publish) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut object = Map::new();
    object.insert("topic".into(), json!(message.topic.as_str()));
    object.insert("qos".into(), json!(message.qos as u8));
    object.insert("retain".into(), json!(message.retain));
    match std::str::from_utf8(&message.payload) {
        Ok(text) => object.insert("payload".into(), json!(text)),
        Err(_) => object.insert("payload_hex".into(), json!(hex(&message.payload))),
    };
    let p = &message.properties;
    let mut props = Map::new();
    if let Some(format) = p.payload_format_indicator {
        props.insert(
            "payload_format_indicator".into(),
            json!(u8::from(format == PayloadFormat::Utf8)),
        );
    }
    if let Some(expiry) = p.message_expiry_interval {
        props.insert("message_expiry_interval".into(), json!(expiry));
    }
    if let Some(content_type) = &p.content_type {
        props.insert("content_type".into(), json!(content_type.as_str()));
    }
    if let Some(topic) = &p.response_topic {
        props.insert("response_topic".into(), json!(topic.as_str()));
    }
    if let Some(data) = &p.correlation_data {
        match std::str::from_utf8(data) {
            Ok(text) => props.insert("correlation_data".into(), json!(text)),
            Err(_) => props.insert("correlation_data_hex".into(), json!(hex(data))),
        };
    }
    let ids: Vec<u32> = p.subscription_identifiers.iter().collect();
    if !ids.is_empty() {
        props.insert("subscription_identifiers".into(), json!(ids));
    }
    if !p.user_properties.is_empty() {
        let pairs: Vec<Value> = p
            .user_properties
            .iter()
            .map(|(k, v)| json!([k, v]))
            .collect();
        props.insert("user_properties".into(), Value::Array(pairs));
    }
    object.insert("properties".into(), Value::Object(props));
    Value::Object(object)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
