//! `GET /metrics` (scope `metrics`): the broker's figures in the Prometheus text format
//! (version 0.0.4). The core's counters and queue depths, the runtime's bytes and the store's
//! commit times are read on the broker thread in one input; the HTTP side adds what it counts
//! itself: requests by route, method and status, refusals by code, event streams.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Response};
use axum::middleware::Next;
use tern_core::{Broker, Stats, TrafficTotals};
use tern_net::{BrokerHandle, CommitLatencySnapshot, ListenerConnections, COMMIT_BUCKETS_SECS};
use tokio::sync::oneshot;

use crate::admin::authorize;
use crate::error::ApiError;
use crate::server::Shared;
use crate::tokens::Scope;

/// What the broker thread reads for a scrape.
#[derive(Debug)]
pub(crate) struct CoreFigures {
    stats: Stats,
    /// Queued, in-flight and dead deliveries over every session.
    depths: (usize, usize, usize),
    traffic: TrafficTotals,
    commits: Option<CommitLatencySnapshot>,
    tap_dropped: u64,
    listeners: Vec<ListenerConnections>,
}

impl CoreFigures {
    /// Messages received and sent since the broker started, over every QoS.
    pub(crate) fn message_totals(&self) -> (u64, u64) {
        let stats = &self.stats;
        (
            stats.publish_received_by_qos.iter().sum(),
            stats.publish_sent_by_qos.iter().sum(),
        )
    }

    /// Reads them, on the broker thread.
    pub(crate) fn read(broker: &Broker, handle: &BrokerHandle) -> Self {
        Self {
            stats: broker.stats(),
            depths: broker.queue_depths(),
            traffic: handle.traffic(),
            commits: handle.commit_latency(),
            tap_dropped: broker.tap_dropped(),
            listeners: handle.listener_connections(),
        }
    }
}

/// HTTP requests answered, by (route, method, status). Routes are the router's patterns (or
/// `unmatched`) and methods the five served (or `OTHER`), so the labels stay few.
#[derive(Debug, Default)]
pub(crate) struct RequestCounts(Mutex<BTreeMap<(String, &'static str, u16), u64>>);

/// Counts every request by its route and the status it was answered with.
pub(crate) async fn count_requests(
    State(counts): State<Arc<RequestCounts>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "OTHER",
    };
    let response = next.run(request).await;
    counts.count(route, method, response.status().as_u16());
    response
}

impl RequestCounts {
    /// Counts one request to `route` answered with `status`.
    pub(crate) fn count(&self, route: impl Into<String>, method: &'static str, status: u16) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry((route.into(), method, status)).or_default() += 1;
        }
    }
}

/// One metric's HELP and TYPE lines, then its samples.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The process's resident set, from `/proc/self/status` (`VmRSS`, in kB); `None` where
/// there is no such file.
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition.
fn render(core: &CoreFigures, shared: &Shared) -> String {
    let mut out = Text(String::new());
    let stats = &core.stats;
    out.one(
        "tern_connections",
        "gauge",
        "MQTT clients connected now.",
        stats.clients_connected,
    );
    let name = "tern_listener_connections";
    out.family(
        name,
        "gauge",
        "Connections open on each MQTT listener (handshakes included), by protocol and address.",
    );
    for listener in &core.listeners {
        let address = listener.address.to_string();
        out.sample(
            name,
            &[("protocol", listener.protocol), ("address", &address)],
            listener.open,
        );
    }
    if let Some(resident) = resident_memory_bytes() {
        out.one(
            "process_resident_memory_bytes",
            "gauge",
            "Memory the whole process holds in RAM (its resident set).",
            resident,
        );
    }
    out.one(
        "tern_sessions",
        "gauge",
        "Sessions held, connected or not.",
        stats.sessions,
    );
    out.one(
        "tern_subscriptions",
        "gauge",
        "Subscriptions held.",
        stats.subscriptions,
    );
    for (name, help, by_qos) in [
        (
            "tern_messages_received_total",
            "Messages received (MQTT PUBLISH and HTTP publishes), by QoS.",
            stats.publish_received_by_qos,
        ),
        (
            "tern_messages_sent_total",
            "PUBLISH packets sent to clients, by QoS.",
            stats.publish_sent_by_qos,
        ),
    ] {
        out.family(name, "counter", help);
        for (qos, count) in by_qos.iter().enumerate() {
            out.sample(name, &[("qos", &qos.to_string())], count);
        }
    }
    out.one(
        "tern_bytes_received_total",
        "counter",
        "Bytes read from MQTT clients.",
        core.traffic.bytes_received,
    );
    out.one(
        "tern_bytes_sent_total",
        "counter",
        "Bytes written to MQTT clients.",
        core.traffic.bytes_sent,
    );
    out.one(
        "tern_messages_dropped_total",
        "counter",
        "Deliveries dropped, for any reason (expired ones included).",
        stats.publish_dropped,
    );
    out.one(
        "tern_messages_expired_total",
        "counter",
        "Deliveries dropped because they expired first.",
        stats.publish_expired,
    );
    out.one(
        "tern_messages_dropped_memory_total",
        "counter",
        "Deliveries dropped for the memory limit.",
        stats.publish_dropped_memory,
    );
    out.family(
        "tern_queue_messages",
        "gauge",
        "Deliveries held for sessions, by state.",
    );
    let (queued, inflight, dead) = core.depths;
    for (state, count) in [("queued", queued), ("inflight", inflight), ("dead", dead)] {
        out.sample("tern_queue_messages", &[("state", state)], count);
    }
    out.one(
        "tern_held_bytes",
        "gauge",
        "Bytes of messages held for receivers.",
        stats.held_bytes,
    );
    out.one(
        "tern_retained_messages",
        "gauge",
        "Retained messages held.",
        stats.retained,
    );
    out.one(
        "tern_events_tap_dropped_total",
        "counter",
        "Messages and events the event tap dropped, its queue full.",
        core.tap_dropped,
    );
    if let Some(commits) = &core.commits {
        let name = "tern_store_commit_seconds";
        out.family(
            name,
            "histogram",
            "Time to make one group commit durable (one write and one sync).",
        );
        let mut cumulative = 0;
        for (index, count) in commits.buckets.iter().enumerate() {
            cumulative += count;
            let bound = COMMIT_BUCKETS_SECS
                .get(index)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            out.sample(&format!("{name}_bucket"), &[("le", &bound)], cumulative);
        }
        out.sample(&format!("{name}_sum"), &[], commits.sum_secs);
        out.sample(&format!("{name}_count"), &[], commits.count);
    }
    let name = "tern_http_requests_total";
    out.family(
        name,
        "counter",
        "HTTP requests answered, by route, method and status.",
    );
    if let Ok(counts) = shared.request_counts.0.lock() {
        for ((route, method, status), count) in counts.iter() {
            let status = status.to_string();
            out.sample(
                name,
                &[("route", route), ("method", method), ("status", &status)],
                count,
            );
        }
    }
    let name = "tern_http_refused_total";
    out.family(name, "counter", "HTTP requests refused, by error code.");
    for (code, count) in shared.refused_counts() {
        out.sample(name, &[("code", code)], count);
    }
    out.one(
        "tern_http_access_requests_refused_total",
        "counter",
        "New devices refused an access request: too many were kept.",
        shared.access.refused.load(Ordering::Relaxed),
    );
    let streams = &shared.stream_counts;
    out.one(
        "tern_http_event_streams",
        "gauge",
        "Event streams open.",
        streams.open.load(Ordering::Relaxed) as u64,
    );
    out.one(
        "tern_http_event_streams_dropped_total",
        "counter",
        "Event streams dropped because their readers fell behind.",
        streams.dropped_slow.load(Ordering::Relaxed),
    );
    out.0
}

/// The broker's metrics, in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "admin",
    responses((status = 200, description = "Prometheus text format 0.0.4: connections (also by listener), messages in and out by QoS, bytes, dropped and expired messages, queue depths, resident memory, the store's commit time histogram, HTTP requests by route and status.", content_type = "text/plain"),
              (status = "4XX", description = "No token, a bad token, or one without the metrics scope.", body = crate::error::ErrorBody)),
    security(("bearer" = ["metrics"])))]
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Metrics, "/metrics") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let (reply, figures) = oneshot::channel();
    let gone = || ApiError::unavailable("the broker is shutting down");
    if shared
        .observe
        .send(crate::events::Observe::Metrics(reply))
        .await
        .is_err()
    {
        return who.refuse(&shared, &gone());
    }
    let Ok(figures) = figures.await else {
        return who.refuse(&shared, &gone());
    };
    let mut response = Response::new(Body::from(render(&figures, &shared)));
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
