//! `tern sub`: subscribes and prints what arrives, with mosquitto_sub's options: output as
//! payload, `-v`, `-F` format or `--json`; `-C`, `-W`, `-E` and `--retained-only` to stop;
//! `-R`, `-T` and `--random-filter` to leave messages out; `-U`, `--remove-retained`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use tern_client::codec::{MqttString, PayloadFormat, TopicFilter};
use tern_client::{Client, Publish, QoS, RetainHandling, SubscriptionOptions};

use super::connect::ConnectArgs;
use super::format::{hex, Format};
use super::properties::PropertySet;
use super::{parse_qos, Exit, HelpFlag};

/// mosquitto_sub's exit status when -W runs out.
const TIMED_OUT: u8 = 27;

/// Options of `tern sub`.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true, version)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    help: HelpFlag,
    /// Topic filter to subscribe to (repeatable; -L's URL may give one).
    #[arg(short = 't', long = "topic")]
    topics: Vec<String>,
    /// Do not print messages whose topic matches this filter (repeatable).
    #[arg(short = 'T', long = "filter-out")]
    filter_out: Vec<String>,
    /// Unsubscribe from this filter after subscribing (repeatable; for persistent sessions).
    #[arg(short = 'U', long = "unsubscribe")]
    unsubscribe: Vec<String>,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Output format, as mosquitto_sub's -F (%t topic, %p payload, %j JSON, ...).
    #[arg(short = 'F', long = "format", conflicts_with = "json")]
    format: Option<String>,
    /// Print each message as one JSON object, with its properties.
    #[arg(long)]
    json: bool,
    /// Indent the JSON of -F %j and %J.
    #[arg(long)]
    pretty: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    count: Option<u64>,
    /// Exit (status 27) after this many seconds from connecting.
    #[arg(short = 'W', long)]
    timeout: Option<u64>,
    /// Exit once the subscriptions (and unsubscriptions) are acknowledged.
    #[arg(short = 'E')]
    exit_after_subscribe: bool,
    /// Do not print retained messages.
    #[arg(short = 'R', conflicts_with = "retained_only")]
    no_retained: bool,
    /// Print only retained messages; exit at the first message that is not.
    #[arg(long)]
    retained_only: bool,
    /// Clear every retained message received (except those -T leaves out).
    #[arg(long)]
    remove_retained: bool,
    /// Print only this percentage of messages, chosen at random (0.1 to 100).
    #[arg(long, value_name = "CHANCE")]
    random_filter: Option<f64>,
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
}

/// How each message is printed.
enum Output {
    Payload { verbose: bool },
    Format(Format),
    Json,
}

/// What to do with a received message.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Print,
    Skip,
    Stop,
}

fn filters(list: &[String]) -> anyhow::Result<Vec<TopicFilter>> {
    list.iter()
        .map(|f| {
            let string = MqttString::new(f).with_context(|| format!("bad filter {f:?}"))?;
            TopicFilter::new(string).with_context(|| format!("bad filter {f:?}"))
        })
        .collect()
}

impl SubArgs {
    fn output(&self) -> anyhow::Result<Output> {
        Ok(match (&self.format, self.json) {
            (Some(format), _) => Output::Format(
                Format::parse(format, self.pretty).map_err(|e| anyhow::anyhow!("-F: {e}"))?,
            ),
            (None, true) => Output::Json,
            (None, false) => Output::Payload {
                verbose: self.verbose,
            },
        })
    }

    fn subscription_options(&self) -> anyhow::Result<SubscriptionOptions> {
        let retain_handling = match self.retain_handling {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            other => bail!("retain handling must be 0, 1 or 2, not {other}"),
        };
        Ok(SubscriptionOptions {
            qos: self.qos,
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling,
        })
    }

    /// mosquitto_sub's order: --retained-only, -R, -T, --random-filter; then the message is
    /// printed (and counted).
    fn verdict(&self, message: &Publish, filtered_out: &[TopicFilter]) -> Verdict {
        if self.retained_only && !message.retain {
            return Verdict::Stop;
        }
        if self.no_retained && message.retain {
            return Verdict::Skip;
        }
        if filtered_out
            .iter()
            .any(|f| f.matches(message.topic.as_str()))
        {
            return Verdict::Skip;
        }
        if let Some(chance) = self.random_filter {
            if fastrand::f64() * 100.0 >= chance {
                return Verdict::Skip;
            }
        }
        Verdict::Print
    }
}

pub(crate) fn run(args: SubArgs) -> anyhow::Result<()> {
    let quiet = args.connect.quiet;
    super::quieten(super::run(subscribe(args)), quiet)
}

async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    let properties = args.connect.property_set()?;
    properties.only_for(
        "sub",
        &[
            "connect",
            "subscribe",
            "unsubscribe",
            "disconnect",
            "will",
            "publish",
        ],
    )?;
    let output = args.output()?;
    let mut topics = args.topics.clone();
    if let Some(url) = args.connect.url()? {
        if !url.topic.is_empty() {
            topics.push(url.topic);
        }
    }
    if topics.is_empty() {
        bail!("give a topic to subscribe to (-t, or -L with a topic)");
    }
    let filtered_out = filters(&args.filter_out)?;
    filters(&args.unsubscribe)?;
    if let Some(chance) = args.random_filter {
        if !(0.1..=100.0).contains(&chance) {
            bail!("--random-filter must be between 0.1 and 100");
        }
    }
    let options = args.connect.options("sub", &properties)?;
    let (client, inbox) = args.connect.connect(options, true).await?;
    let mut inbox = inbox.context("the client has no inbox")?;
    let deadline = args
        .timeout
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs));
    let subscription = args.subscription_options()?;
    let requested: Vec<(&str, SubscriptionOptions)> =
        topics.iter().map(|t| (t.as_str(), subscription)).collect();
    let codes = client
        .subscribe_to_inbox(&requested, properties.subscribe.clone())
        .await?;
    if args.connect.debug {
        eprintln!("subscribed: {codes:?}");
    }
    if !args.unsubscribe.is_empty() {
        let list: Vec<&str> = args.unsubscribe.iter().map(String::as_str).collect();
        let codes = client
            .unsubscribe_with(&list, properties.unsubscribe.clone())
            .await?;
        if args.connect.debug {
            eprintln!("unsubscribed: {codes:?}");
        }
    }
    let outcome = if args.exit_after_subscribe {
        Ok(())
    } else {
        receive(
            &args,
            &client,
            &mut inbox,
            &properties,
            &output,
            &filtered_out,
            deadline,
        )
        .await
    };
    client.disconnect_with(properties.disconnect.clone()).await;
    outcome
}

async fn receive(
    args: &SubArgs,
    client: &Client,
    inbox: &mut tern_client::Messages,
    properties: &PropertySet,
    output: &Output,
    filtered_out: &[TopicFilter],
    deadline: Option<tokio::time::Instant>,
) -> anyhow::Result<()> {
    let mut printed = 0u64;
    let mut clearing = Vec::new();
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|count| printed < count) {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(next) => next,
                Err(_) => return Err(Exit::new(TIMED_OUT, "timed out").into()),
            },
            None => inbox.recv().await,
        };
        let Some(message) = next else { break };
        match args.verdict(&message, filtered_out) {
            Verdict::Stop => break,
            Verdict::Skip => continue,
            Verdict::Print => {}
        }
        if args.remove_retained && message.retain {
            let mut clear = tern_client::message(message.topic.as_str(), "")?;
            clear.qos = QoS::AtLeastOnce;
            clear.retain = true;
            clear.properties = properties.publish.clone();
            clearing.push(client.send(clear).await?);
        }
        print_message(&mut stdout, args, output, &message)?;
        printed += 1;
    }
    // Exit only once the retained messages are cleared, as mosquitto_sub does.
    for pending in clearing {
        pending.await?;
    }
    Ok(())
}

fn print_message(
    out: &mut impl Write,
    args: &SubArgs,
    output: &Output,
    message: &Publish,
) -> anyhow::Result<()> {
    match output {
        Output::Json => serde_json::to_writer(&mut *out, &to_json(message))?,
        Output::Format(format) => match format.render(message, chrono::Local::now()) {
            Ok(bytes) => out.write_all(&bytes)?,
            Err(error) => {
                // As mosquitto_sub: the message is reported, not printed, and the run goes on.
                if !args.connect.quiet {
                    eprintln!("tern: {error}");
                }
                return Ok(());
            }
        },
        Output::Payload { verbose } => {
            if *verbose {
                write!(out, "{} ", message.topic.as_str())?;
            }
            out.write_all(&message.payload)?;
        }
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
