//! `tern bench`: an MQTT load generator built directly on `tern-codec`, with one scenario per
//! question (fan-in, fan-out, pairs, shared subscriptions, latency, idle connections, retained,
//! and the HTTP bridge's signed publishes and idle long polls).
//!
//! Everything runs on one thread (a current-thread tokio runtime): the generator is meant to be
//! pinned to one core while the broker under test has the other, and it reports its own CPU
//! time so a run can show it was not the bottleneck. Every message carries its publisher, its
//! sequence number and its send time in the payload, so losses, duplicates, reordering and
//! latency are all measured at the receiver.

mod client;
mod connections;
mod flow;
mod http;
mod http_flow;
mod inflight;
mod ledger;
mod pace;
mod payload;
mod report;
mod retained;
mod track;

use std::time::Duration;

pub use http_flow::{HttpIdleFigures, HttpPublishFigures};
pub use report::Report;

/// Errors that end a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The broker sent something the generator cannot work with.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The broker did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The options do not make sense together.
    #[error("invalid options: {0}")]
    Options(String),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// P publishers on their own topics, one wildcard subscriber.
    FanIn,
    /// One publisher, S subscribers to its topic.
    FanOut,
    /// N publisher/subscriber pairs on distinct topics.
    Pairs,
    /// P publishers, S subscribers in one `$share` group.
    Shared,
    /// One publisher at a fixed rate, one subscriber: latency percentiles.
    Latency,
    /// C idle connections with keep alive: connect rate, broker memory per connection.
    Connections,
    /// R retained topics, then one wildcard subscriber: time until all have arrived.
    Retained,
    /// Signed HTTP publishes over P keep-alive connections, one request in flight on each,
    /// every acknowledged one checked delivered to an MQTT subscriber.
    HttpPublish,
    /// C devices each with a mailbox and a long poll waiting on it: the broker's memory per
    /// waiting poll.
    HttpIdle,
}

/// Options of `tern bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run, in order.
    #[arg(required = true, value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, short, default_value_t = 1883)]
    pub port: u16,
    /// Host the subscribers connect to (flow scenarios), when not `--host`: with `--sub-port`,
    /// publishers on one node of a cluster and subscribers on another, so that every message
    /// crosses between nodes.
    #[arg(long)]
    pub sub_host: Option<String>,
    /// Port the subscribers connect to (flow scenarios), when not `--port`.
    #[arg(long)]
    pub sub_port: Option<u16>,
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=5))]
    pub mqtt: u8,
    /// QoS of publishes and subscriptions (0, 1 or 2).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload bytes per message (at least 20: publisher, sequence number, send time).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Seconds the publishers run (the measured window).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Most seconds to wait after the window for the backlog to arrive.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Publishers (fan-in, shared).
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,
    /// Subscribers (fan-out, shared).
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Publisher/subscriber pairs (pairs).
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Messages per second per publisher; 0 means as fast as the window allows.
    /// The latency scenario defaults to 1000. Sends are spaced evenly (a high-resolution timer
    /// on Linux), not bunched at millisecond ticks.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Messages a publisher may have sent but not yet seen delivered to every subscriber
    /// (closed-loop runs).
    #[arg(long, default_value_t = 1000)]
    pub window: u64,
    /// Open loop: publishers are bounded only by their in-flight window (`--inflight`) of
    /// unacknowledged QoS 1/2 publishes, never by delivery, as a device's client library is.
    /// Messages the broker acknowledged (PUBACK; PUBREC at QoS 2) and never delivered by the
    /// end of the drain are reported as lost.
    #[arg(long)]
    pub open_loop: bool,
    /// QoS 1/2 publishes a publisher keeps unacknowledged, capped by the broker's Receive
    /// Maximum (retained, and flow scenarios with `--open-loop`; closed-loop publishers keep as
    /// many as the broker's Receive Maximum and `--window` allow). 100 is rumqttc's default;
    /// libmosquitto and Paho Python keep 20, Paho Java 10.
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Topic Alias Maximum the subscribers announce in CONNECT (MQTT 5; 0: none), so that a
    /// broker may send them topic aliases.
    #[arg(long, default_value_t = 0)]
    pub topic_alias_maximum: u16,
    /// Idle connections to open (connections).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connection attempts in progress at once (connections).
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds to hold the idle connections open after measuring them (connections).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Keep alive of the idle connections, in seconds.
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// QoS of one subscription each idle connection makes to a topic of its own, once
    /// connected (connections); without it they subscribe to nothing. A refused or unanswered
    /// SUBSCRIBE is counted, with the first reason, rather than ending the run.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub subscribe_qos: Option<u8>,
    /// PID of the broker, to read its resident memory from /proc (connections).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// User name every connection logs in with (connections); with `--users N`, followed by
    /// the connection's number modulo N (`dev0`, `dev1`, ...).
    #[arg(long)]
    pub username: Option<String>,
    /// Password every connection logs in with (connections).
    #[arg(long)]
    pub password: Option<String>,
    /// Distinct user names `--username` makes (connections); 0 uses it as given.
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    /// Retained topics to publish (retained).
    #[arg(long, default_value_t = 100_000)]
    pub retained: usize,
    /// First topic level of the retained tree; the subscriber uses `<root>/#`.
    #[arg(long, default_value = "site")]
    pub retained_root: String,
    /// The bridge's HTTP port (HTTP scenarios).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,
    /// Secret (64 hex digits) of the group key the HTTP scenarios' devices belong to:
    /// `tern key add g:bench --prefix bench-` prints it.
    #[arg(long)]
    pub http_secret: Option<String>,
    /// How the HTTP devices' client identifiers start: the group key's `--prefix`.
    #[arg(long, default_value = "bench-")]
    pub http_prefix: String,
    /// Messages per signed request (http-publish): 1 sends each as `POST /v1/pub/{topic}`,
    /// more sends them together as a `POST /v1/pub` batch, as a device flushing the readings
    /// it queued while asleep does.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub http_batch: u16,
    /// Name of the broker under test, copied into the JSON.
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    pub(crate) fn version(&self) -> tern_codec::ProtocolVersion {
        if self.mqtt == 5 {
            tern_codec::ProtocolVersion::V5
        } else {
            tern_codec::ProtocolVersion::V311
        }
    }

    pub(crate) fn qos(&self) -> tern_codec::QoS {
        tern_codec::QoS::from_u8(self.qos).unwrap_or_default()
    }

    /// Where the subscribers of a flow scenario connect: `--sub-host`/`--sub-port`, each
    /// defaulting to `--host`/`--port`.
    pub(crate) fn subscriber_address(&self) -> (&str, u16) {
        (
            self.sub_host.as_deref().unwrap_or(&self.host),
            self.sub_port.unwrap_or(self.port),
        )
    }

    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.0))
    }

    pub(crate) fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain.max(0.0))
    }

    fn check(&self) -> Result<(), BenchError> {
        if self.mqtt == 4 {
            return Err(BenchError::Options("--mqtt is 3 or 5".into()));
        }
        if self.payload < payload::HEADER_BYTES {
            return Err(BenchError::Options(format!(
                "--payload must be at least {} bytes",
                payload::HEADER_BYTES
            )));
        }
        if self.inflight == 0 || self.window == 0 {
            return Err(BenchError::Options(
                "--inflight and --window must be at least 1".into(),
            ));
        }
        if self.open_loop && self.qos == 0 {
            return Err(BenchError::Options(
                "--open-loop needs --qos 1 or 2: a QoS 0 publisher has no acknowledgement to \
                 bound it"
                    .into(),
            ));
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return Err(BenchError::Options("--duration must be positive".into()));
        }
        Ok(())
    }
}

/// Runs one scenario and returns its report. `on_report` is not needed: each call is one
/// scenario, so the caller prints as results come.
pub fn run(args: &BenchArgs, scenario: Scenario) -> Result<Report, BenchError> {
    args.check()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("starting the runtime", e))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        match scenario {
            Scenario::Connections => connections::run(args).await,
            Scenario::Retained => retained::run(args).await,
            Scenario::HttpPublish => http_flow::publish(args).await,
            Scenario::HttpIdle => http_flow::idle(args).await,
            _ => flow::run(args, scenario).await,
        }
    })
}
