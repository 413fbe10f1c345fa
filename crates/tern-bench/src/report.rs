//! One report per scenario run: a JSON line for scripts, a summary for people, a progress line
//! while it runs, and the generator's own CPU time.

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http_flow::{HttpIdleFigures, HttpPublishFigures};
use crate::track::Totals;
use crate::{BenchArgs, Scenario};

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest seen.
    pub max: u64,
    /// Latency scenario only: every recorded bucket as `[microseconds, count]`, so runs repeated
    /// on the same broker can be pooled into one distribution (a p99 over several runs' samples
    /// is steadier than any one run's p99, which rests on its few slowest messages).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub histogram: Vec<[u64; 2]>,
}

/// Idle-connection figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionFigures {
    /// Connections opened and acknowledged.
    pub connections: usize,
    /// Seconds from the first connect to the last CONNACK.
    pub connect_s: f64,
    /// Connections per second.
    pub connect_rate: f64,
    /// Broker resident memory before, in KiB (with `--broker-pid`).
    pub rss_before_kib: Option<u64>,
    /// Broker resident memory with every connection open, in KiB.
    pub rss_after_kib: Option<u64>,
    /// Extra resident bytes per connection.
    pub rss_per_connection_bytes: Option<f64>,
    /// Broker CPU time (all its threads) per connection opened, in microseconds, over the
    /// connect window (with `--broker-pid`): with the connect rate, it says whether the broker
    /// was busy all along or waiting.
    pub broker_cpu_per_connect_us: Option<f64>,
    /// This generator's CPU time per connection opened over the same window.
    pub generator_cpu_per_connect_us: f64,
    /// Subscriptions granted (`--subscribe-qos`: one per connection, made before the
    /// connection counts as open).
    pub subscribed: usize,
    /// Subscriptions refused, or left unanswered or cut off by a closed connection.
    pub subscribe_failed: usize,
    /// Why the first failed subscription failed.
    pub first_subscribe_failure: Option<String>,
}

/// Retained-delivery figures.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedFigures {
    /// Retained topics published.
    pub retained: usize,
    /// Seconds to publish them all (QoS 1, every PUBACK received).
    pub publish_s: f64,
    /// Seconds from SUBSCRIBE to the last retained message arriving.
    pub deliver_s: f64,
    /// Retained messages delivered per second.
    pub deliver_rate: f64,
}

/// What became of one publisher's messages (message-flow scenarios).
#[derive(Debug, Clone, Serialize)]
pub struct PublisherFigures {
    /// Messages it published.
    pub sent: u64,
    /// Of those, the broker acknowledged (PUBACK; PUBREC at QoS 2).
    pub acknowledged: u64,
    /// Of those, acknowledged inside the measured window.
    pub acknowledged_in_window: u64,
    /// `acknowledged_in_window` per second of window.
    pub acknowledged_per_s: f64,
    /// Of those, the broker refused (a reason code of 0x80 or above).
    pub refused: u64,
    /// Unique deliveries of its messages, over every subscriber group.
    pub delivered: u64,
    /// Of those, delivered inside the measured window.
    pub delivered_in_window: u64,
    /// `delivered_in_window` per second of window.
    pub delivered_per_s: f64,
    /// Deliveries owed and never made (see [`Report::lost`]).
    pub lost: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Deliveries older than one a connection had already received from it.
    pub out_of_order: u64,
}

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: Scenario,
    /// The `--label` given (the broker's name).
    pub label: String,
    /// "3.1.1" or "5.0".
    pub mqtt: &'static str,
    /// QoS of publishes and subscriptions.
    pub qos: u8,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Messages per second per publisher; 0 is closed-loop (or `open_loop`).
    pub rate_per_publisher: f64,
    /// Publishers bounded only by their in-flight window, not by delivery (`--open-loop`).
    pub open_loop: bool,
    /// QoS 1/2 publishes a publisher kept unacknowledged at most (the smallest over the
    /// publishers, after the broker's Receive Maximum); 0 at QoS 0.
    pub inflight_max: u64,
    /// Seconds the publishers ran.
    pub window_s: f64,
    /// Messages published.
    pub sent: u64,
    /// Deliveries the subscriptions called for (messages sent times the groups they match).
    pub expected: u64,
    /// QoS 1/2 messages the broker acknowledged (PUBACK; PUBREC at QoS 2): it owes their
    /// delivery.
    pub acknowledged: u64,
    /// QoS 1/2 messages the broker refused (a reason code of 0x80 or above): not owed.
    pub refused: u64,
    /// QoS 1/2 messages the broker had neither acknowledged nor refused when the run ended:
    /// not owed, and not counted as lost.
    pub unacknowledged: u64,
    /// Messages acknowledged inside the window.
    pub acknowledged_in_window: u64,
    /// `acknowledged_in_window` per second of window.
    pub acknowledged_per_s: f64,
    /// Deliveries owed for messages acknowledged inside the window that had not been made when
    /// it closed: the backlog the broker held (or had dropped) at its end.
    pub undelivered_at_window_end: u64,
    /// Unique deliveries that arrived inside the window.
    pub delivered_in_window: u64,
    /// Unique deliveries that arrived after the publishers stopped.
    pub backlog: u64,
    /// Deliveries owed that never arrived, not even in the drain after the window: for every
    /// message the broker acknowledged (QoS 1/2), or every message sent (QoS 0), one per
    /// subscriber group its topic matches. At QoS 1/2 this is what the broker acknowledged and
    /// then did not deliver.
    pub lost: u64,
    /// Deliveries that arrived more than once (each extra copy counted).
    pub duplicated: u64,
    /// Deliveries older than one already received from the same publisher.
    pub out_of_order: u64,
    /// Messages not from this run (left over on the broker).
    pub foreign: u64,
    /// Subscriber connections the broker closed during the run (what they were owed is lost).
    pub subscribers_closed: u64,
    /// `delivered_in_window` per second of window: the headline throughput.
    pub delivered_per_s: f64,
    /// Delivery latency (send to receipt).
    pub latency_us: Option<Latency>,
    /// CPU seconds the generator used (user + system).
    pub generator_cpu_s: f64,
    /// Generator CPU time over wall time, in percent of one core.
    pub generator_cpu_pct: f64,
    /// Idle-connection figures (connections scenario).
    pub connections: Option<ConnectionFigures>,
    /// Retained figures (retained scenario).
    pub retained: Option<RetainedFigures>,
    /// Signed HTTP publish figures (http-publish scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_publish: Option<HttpPublishFigures>,
    /// Idle long-poll figures (http-idle scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_idle: Option<HttpIdleFigures>,
    /// Each publisher's figures (message-flow scenarios), in publisher order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_publisher: Vec<PublisherFigures>,
}

/// Inputs of a message-flow report.
pub(crate) struct FlowFigures<'a> {
    pub(crate) publishers: usize,
    pub(crate) subscribers: usize,
    pub(crate) rate: f64,
    pub(crate) window: f64,
    pub(crate) expected: u64,
    pub(crate) per_publisher: Vec<PublisherFigures>,
    pub(crate) undelivered_at_window_end: u64,
    pub(crate) inflight_max: u64,
    pub(crate) subscribers_closed: u64,
    pub(crate) totals: &'a Totals,
    pub(crate) cpu: Duration,
    pub(crate) wall: Duration,
}

impl Report {
    fn base(args: &BenchArgs, scenario: Scenario, cpu: Duration, wall: Duration) -> Self {
        Self {
            scenario,
            label: args.label.clone(),
            mqtt: if args.mqtt == 5 { "5.0" } else { "3.1.1" },
            qos: args.qos,
            payload_bytes: args.payload,
            publishers: 0,
            subscribers: 0,
            rate_per_publisher: 0.0,
            open_loop: args.open_loop,
            inflight_max: 0,
            window_s: 0.0,
            sent: 0,
            expected: 0,
            acknowledged: 0,
            refused: 0,
            unacknowledged: 0,
            acknowledged_in_window: 0,
            acknowledged_per_s: 0.0,
            undelivered_at_window_end: 0,
            delivered_in_window: 0,
            backlog: 0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            foreign: 0,
            subscribers_closed: 0,
            delivered_per_s: 0.0,
            latency_us: None,
            generator_cpu_s: cpu.as_secs_f64(),
            generator_cpu_pct: percent(cpu, wall),
            connections: None,
            retained: None,
            http_publish: None,
            http_idle: None,
            per_publisher: Vec::new(),
        }
    }

    pub(crate) fn flow(args: &BenchArgs, scenario: Scenario, f: FlowFigures<'_>) -> Self {
        let t = f.totals;
        let latency = &t.latency;
        let sum = |field: fn(&PublisherFigures) -> u64| f.per_publisher.iter().map(field).sum();
        let sent: u64 = sum(|p| p.sent);
        let acknowledged: u64 = sum(|p| p.acknowledged);
        let refused: u64 = sum(|p| p.refused);
        let acknowledged_in_window: u64 = sum(|p| p.acknowledged_in_window);
        let qos0 = args.qos == 0;
        Self {
            publishers: f.publishers,
            subscribers: f.subscribers,
            rate_per_publisher: f.rate,
            inflight_max: f.inflight_max,
            window_s: f.window,
            sent,
            expected: f.expected,
            acknowledged,
            refused,
            unacknowledged: if qos0 {
                0
            } else {
                sent.saturating_sub(acknowledged + refused)
            },
            acknowledged_in_window,
            acknowledged_per_s: acknowledged_in_window as f64 / f.window.max(1e-9),
            undelivered_at_window_end: f.undelivered_at_window_end,
            delivered_in_window: t.in_window,
            backlog: t.backlog,
            lost: sum(|p| p.lost),
            duplicated: t.duplicated,
            out_of_order: t.out_of_order,
            foreign: t.foreign,
            subscribers_closed: f.subscribers_closed,
            delivered_per_s: t.in_window as f64 / f.window.max(1e-9),
            latency_us: (!latency.is_empty()).then(|| Latency {
                p50: latency.value_at_quantile(0.50),
                p99: latency.value_at_quantile(0.99),
                p999: latency.value_at_quantile(0.999),
                max: latency.max(),
                histogram: if scenario == Scenario::Latency {
                    latency
                        .iter_recorded()
                        .map(|bucket| [bucket.value_iterated_to(), bucket.count_at_value()])
                        .collect()
                } else {
                    Vec::new()
                },
            }),
            per_publisher: f.per_publisher,
            ..Self::base(args, scenario, f.cpu, f.wall)
        }
    }

    pub(crate) fn with_connections(
        args: &BenchArgs,
        figures: ConnectionFigures,
        cpu: Duration,
        wall: Duration,
    ) -> Self {
        Self {
            subscribers: figures.connections,
            connections: Some(figures),
            ..Self::base(args, Scenario::Connections, cpu, wall)
        }
    }

    pub(crate) fn with_retained(
        args: &BenchArgs,
        figures: RetainedFigures,
        totals: &Totals,
        cpu: Duration,
        wall: Duration,
    ) -> Self {
        let expected = figures.retained as u64;
        Self {
            publishers: 1,
            subscribers: 1,
            sent: expected,
            expected,
            delivered_in_window: totals.in_window,
            lost: expected.saturating_sub(totals.unique()),
            duplicated: totals.duplicated,
            foreign: totals.foreign,
            delivered_per_s: figures.deliver_rate,
            retained: Some(figures),
            ..Self::base(args, Scenario::Retained, cpu, wall)
        }
    }

    pub(crate) fn with_http_publish(
        args: &BenchArgs,
        figures: HttpPublishFigures,
        window: f64,
        cpu: Duration,
        wall: Duration,
    ) -> Self {
        Self {
            publishers: figures.connections,
            subscribers: 1,
            window_s: window,
            sent: figures.acknowledged + figures.refused,
            expected: figures.acknowledged,
            acknowledged: figures.acknowledged,
            refused: figures.refused,
            acknowledged_in_window: figures.published_in_window,
            acknowledged_per_s: figures.published_per_s,
            lost: figures.lost,
            duplicated: figures.duplicated,
            inflight_max: 1,
            http_publish: Some(figures),
            ..Self::base(args, Scenario::HttpPublish, cpu, wall)
        }
    }

    pub(crate) fn with_http_idle(
        args: &BenchArgs,
        figures: HttpIdleFigures,
        cpu: Duration,
        wall: Duration,
    ) -> Self {
        Self {
            subscribers: figures.polls,
            http_idle: Some(figures),
            ..Self::base(args, Scenario::HttpIdle, cpu, wall)
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A short human summary.
    pub fn summary(&self) -> String {
        let name = serde_json::to_value(self.scenario)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" [{}]", self.label)
        };
        let head = format!("{name}{label} MQTT {} QoS {}", self.mqtt, self.qos);
        let cpu = format!(
            "generator CPU {:.2} s ({:.0}% of a core)",
            self.generator_cpu_s, self.generator_cpu_pct
        );
        if let Some(c) = &self.connections {
            let memory = match (c.rss_per_connection_bytes, c.rss_after_kib) {
                (Some(per), Some(after)) => {
                    format!("; broker RSS {after} KiB, {per:.0} bytes per connection")
                }
                _ => String::new(),
            };
            let broker_cpu = match c.broker_cpu_per_connect_us {
                Some(us) => format!("broker {us:.1} µs, "),
                None => String::new(),
            };
            let subscribed = match &c.first_subscribe_failure {
                None if c.subscribed == 0 => String::new(),
                None => format!(", {} subscriptions granted", c.subscribed),
                Some(why) => format!(
                    ", {} subscriptions granted and {} failed (first: {why})",
                    c.subscribed, c.subscribe_failed
                ),
            };
            return format!(
                "{head}: {} connections{subscribed} in {:.2} s ({:.0}/s; CPU per connect: \
                 {broker_cpu}generator {:.1} µs){memory}; {cpu}",
                c.connections, c.connect_s, c.connect_rate, c.generator_cpu_per_connect_us
            );
        }
        if let Some(h) = &self.http_publish {
            let broker = match (h.broker_cpu_per_publish_us, h.broker_cpu_per_request_us) {
                (Some(message), Some(request)) if h.messages_per_request > 1 => format!(
                    ", broker CPU {message:.2} µs per message ({request:.1} µs per request)"
                ),
                (Some(message), _) => format!(", broker CPU {message:.1} µs per publish"),
                _ => String::new(),
            };
            let requests = if h.messages_per_request > 1 {
                format!(
                    " in {:.0} signed requests/s of {} messages",
                    h.requests_per_s, h.messages_per_request
                )
            } else {
                String::new()
            };
            let refusal = h
                .first_refusal
                .as_ref()
                .map(|r| format!(" (first: {r})"))
                .unwrap_or_default();
            return format!(
                "{head}: {} connections, {:.0} signed publishes/s{requests} acknowledged in the \
                 {:.1} s window{broker}; {} acknowledged, {} delivered, lost {}, duplicated {}, refused \
                 {}{refusal}; {cpu}",
                h.connections,
                h.published_per_s,
                self.window_s,
                h.acknowledged,
                h.delivered,
                h.lost,
                h.duplicated,
                h.refused
            );
        }
        if let Some(h) = &self.http_idle {
            let kib = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
            let bytes = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
            return format!(
                "{head}: {} idle long polls; broker RSS {} → {} (mailboxes) → {} KiB (waiting): \
                 {} bytes per waiting poll, {} per device all told; answered early {}; {cpu}",
                h.polls,
                kib(h.rss_before_kib),
                kib(h.rss_mailboxes_kib),
                kib(h.rss_waiting_kib),
                bytes(h.per_poll_bytes),
                bytes(h.per_device_bytes),
                h.answered_early
            );
        }
        if let Some(r) = &self.retained {
            return format!(
                "{head}: {} retained published in {:.2} s; all delivered to one subscriber in \
                 {:.3} s ({:.0}/s); lost {}, duplicated {}; {cpu}",
                r.retained, r.publish_s, r.deliver_s, r.deliver_rate, self.lost, self.duplicated
            );
        }
        let latency = self
            .latency_us
            .as_ref()
            .map(|l| {
                format!(
                    "; latency p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                    l.p50, l.p99, l.p999, l.max
                )
            })
            .unwrap_or_default();
        let mode = if self.open_loop {
            format!(" open loop (in flight {})", self.inflight_max)
        } else {
            String::new()
        };
        let acknowledged = if self.qos > 0 {
            format!(
                "{:.0} msg/s acknowledged, {} owed at the window's end, ",
                self.acknowledged_per_s, self.undelivered_at_window_end
            )
        } else {
            String::new()
        };
        // Loss first: a broker that acknowledges what it then drops is not fast.
        let lost = if self.lost > 0 {
            let owed = if self.qos > 0 { " acknowledged" } else { "" };
            format!("LOST {} of {}{owed} deliveries; ", self.lost, self.owed())
        } else {
            String::new()
        };
        let closed = if self.subscribers_closed > 0 {
            format!(
                ", {} subscribers closed by the broker",
                self.subscribers_closed
            )
        } else {
            String::new()
        };
        format!(
            "{head}{mode}, {} pub / {} sub, {} B: {lost}{:.0} msg/s delivered in the {:.1} s \
             window ({} msgs), {acknowledged}backlog {}, lost {}, duplicated {}, out of order \
             {}{closed}{}{latency}; {cpu}",
            self.publishers,
            self.subscribers,
            self.payload_bytes,
            self.delivered_per_s,
            self.window_s,
            self.delivered_in_window,
            self.backlog,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.publisher_spread(),
        )
    }

    /// The least and most of each publisher's figures, for an open-loop run with more than one
    /// publisher: whether the broker served (and lost) them alike.
    fn publisher_spread(&self) -> String {
        if !self.open_loop || self.per_publisher.len() < 2 {
            return String::new();
        }
        let range = |field: fn(&PublisherFigures) -> f64| {
            let values = self.per_publisher.iter().map(field);
            let low = values.clone().fold(f64::INFINITY, f64::min);
            let high = values.fold(0.0, f64::max);
            if low == high {
                format!("{low:.0}")
            } else {
                format!("{low:.0}–{high:.0}")
            }
        };
        format!(
            "; per publisher {} msg/s delivered, {} acknowledged, lost {}, duplicated {}, out \
             of order {}",
            range(|p| p.delivered_per_s),
            range(|p| p.acknowledged_per_s),
            range(|p| p.lost as f64),
            range(|p| p.duplicated as f64),
            range(|p| p.out_of_order as f64),
        )
    }

    /// Deliveries owed: of every message acknowledged (QoS 1/2) or sent (QoS 0).
    fn owed(&self) -> u64 {
        let groups = self.expected.checked_div(self.sent).unwrap_or(0);
        if self.qos > 0 {
            self.acknowledged * groups
        } else {
            self.expected
        }
    }
}

fn percent(cpu: Duration, wall: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

/// CPU time (user + system) this process has used, from `getrusage`.
pub(crate) fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let to = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64)
                    + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            to(usage.user_time()) + to(usage.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// A name for this run that keeps its topics and client identifiers apart from other runs.
pub(crate) fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", std::process::id(), nanos)
}

/// The progress line on stderr, at most once a second.
pub(crate) struct Progress {
    name: String,
    quiet: bool,
    terminal: bool,
    last: Cell<Option<(Instant, u64)>>,
}

impl Progress {
    pub(crate) fn new(scenario: Scenario, quiet: bool) -> Self {
        Self {
            name: serde_json::to_value(scenario)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            quiet,
            terminal: std::io::stderr().is_terminal(),
            last: Cell::new(None),
        }
    }

    pub(crate) fn tick(&self, elapsed: Duration, sent: u64, received: u64) {
        if self.quiet {
            return;
        }
        let now = Instant::now();
        let Some((at, count)) = self.last.get() else {
            self.last.set(Some((now, received)));
            return;
        };
        let since = now - at;
        if since < Duration::from_secs(1) {
            return;
        }
        self.last.set(Some((now, received)));
        let rate = (received - count.min(received)) as f64 / since.as_secs_f64();
        let line = format!(
            "{} {:>5.1} s  sent {sent}  received {received}  {rate:.0} msg/s",
            self.name,
            elapsed.as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
    }

    pub(crate) fn finish(&self) {
        if !self.quiet && self.terminal && self.last.get().is_some() {
            eprintln!();
        }
    }
}
