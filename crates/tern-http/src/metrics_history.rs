//! The overview's history: the message rates in and out, sampled every `every` (10 s by
//! default) for the last hour in a bounded ring, so the console's chart is full as soon as it
//! opens rather than from then on. `GET /metrics/history` (scope `metrics`) serves it as JSON.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::admin::authorize;
use crate::server::{unsigned, Shared};
use crate::tokens::Scope;

/// How far back the ring reaches.
const SPAN: Duration = Duration::from_secs(3600);

/// One sample: the mean rates since the one before.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Sample {
    /// When it was taken (Unix seconds).
    at: u64,
    /// Messages received per second.
    #[serde(rename = "in")]
    rate_in: f64,
    /// Messages sent per second.
    #[serde(rename = "out")]
    rate_out: f64,
}

/// A reading of the totals the rates are made of.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at_millis: u64,
    received: u64,
    sent: u64,
}

/// The ring of samples, and the last reading.
#[derive(Debug)]
pub(crate) struct History {
    every: Duration,
    capacity: usize,
    state: Mutex<(VecDeque<Sample>, Option<Reading>)>,
}

impl History {
    pub(crate) fn new(every: Duration) -> Self {
        let every = every.max(Duration::from_secs(1));
        let capacity = (SPAN.as_secs() / every.as_secs()).max(1) as usize;
        Self {
            every,
            capacity,
            state: Mutex::new((VecDeque::with_capacity(capacity), None)),
        }
    }

    /// Takes a reading of the totals at `at_millis` (Unix milliseconds): a sample of the rates
    /// since the reading before, if there was one. Whether it was the ring's first.
    fn record(&self, at_millis: u64, received: u64, sent: u64) -> bool {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (ring, last) = &mut *state;
        let reading = Reading {
            at_millis,
            received,
            sent,
        };
        let Some(before) = last.replace(reading) else {
            return false;
        };
        let secs = at_millis.saturating_sub(before.at_millis).max(1) as f64 / 1000.0;
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(Sample {
            at: at_millis / 1000,
            rate_in: rate(received, before.received),
            rate_out: rate(sent, before.sent),
        });
        ring.len() == 1
    }

    fn samples(&self) -> Vec<Sample> {
        match self.state.lock() {
            Ok(state) => state.0.iter().copied().collect(),
            Err(poisoned) => poisoned.into_inner().0.iter().copied().collect(),
        }
    }
}

/// Samples the broker's totals every `every`, for as long as the bridge runs.
pub(crate) async fn sample(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.history.every);
    loop {
        tick.tick().await;
        let (reply, figures) = oneshot::channel();
        let asked = shared
            .observe
            .send(crate::events::Observe::Metrics(reply))
            .await;
        let (Ok(()), Ok(figures)) = (asked, figures.await) else {
            // The broker is shutting down.
            return;
        };
        let (received, sent) = figures.message_totals();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if shared.history.record(now, received, sent) {
            tracing::info!(
                "overview history: first sample taken (one every {} s, the last hour kept)",
                shared.history.every.as_secs()
            );
        }
    }
}

/// `GET /metrics/history`: the samples of the last hour, oldest first.
#[utoipa::path(get, path = "/metrics/history", tag = "admin",
    responses((status = 200, description = "{\"every_secs\", \"samples\": [{\"at\" (Unix seconds), \"in\", \"out\" (messages per second since the sample before)}]}, oldest first, the last hour at most: the history the console's overview chart opens with."),
              (status = "4XX", description = "No token, a bad token, or one without the metrics scope.", body = crate::error::ErrorBody)),
    security(("bearer" = ["metrics"])))]
pub(crate) async fn history(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    if let Err(response) = authorize(&shared, &request, Scope::Metrics, "/metrics/history") {
        return *response;
    }
    let body = serde_json::json!({
        "every_secs": shared.history.every.as_secs(),
        "samples": shared.history.samples(),
    });
    unsigned(
        200,
        bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_mean_since_the_reading_before_and_the_ring_keeps_an_hour() {
        let history = History::new(Duration::from_secs(600));
        assert_eq!(history.capacity, 6);
        assert!(
            !history.record(1_000_000, 10, 5),
            "no rate from one reading"
        );
        assert!(history.samples().is_empty());
        assert!(history.record(1_002_000, 30, 5), "the first sample");
        assert_eq!(
            history.samples(),
            [Sample {
                at: 1002,
                rate_in: 10.0,
                rate_out: 0.0
            }]
        );
        for step in 2..10 {
            assert!(!history.record(1_000_000 + step * 1000, 30, 5 + step));
        }
        let samples = history.samples();
        assert_eq!(samples.len(), 6, "the oldest go");
        assert_eq!(samples[0].at, 1004);
        assert_eq!(samples[5].at, 1009);
        assert_eq!(samples[5].rate_out, 1.0);
    }
}
