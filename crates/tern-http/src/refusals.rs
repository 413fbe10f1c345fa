//! Refused requests: each is counted by its code and logged with its reason, at most 20 lines
//! a second (as refused MQTT connections are), the rest summed up in one line, so a flood of
//! bad requests cannot become a flood of log writes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use tracing::warn;

/// Refusals logged per second at most.
const LOGGED_PER_SEC: u32 = 20;

#[derive(Debug)]
struct Budget {
    second: u64,
    logged: u32,
    suppressed: u64,
}

/// The counts and the log budget.
#[derive(Debug)]
pub(crate) struct Refusals {
    epoch: Instant,
    counts: Mutex<BTreeMap<&'static str, u64>>,
    budget: Mutex<Budget>,
}

impl Refusals {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            counts: Mutex::new(BTreeMap::new()),
            budget: Mutex::new(Budget {
                second: 0,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Counts a refusal with `code` and logs `line` if the budget allows.
    pub(crate) fn refused(&self, code: &'static str, line: impl FnOnce() -> String) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(code).or_default() += 1;
        }
        let second = self.epoch.elapsed().as_secs();
        let admitted = {
            let Ok(mut budget) = self.budget.lock() else {
                return;
            };
            if budget.second != second {
                if budget.suppressed > 0 {
                    warn!(
                        "{} more refused HTTP requests not logged (limit {LOGGED_PER_SEC}/s)",
                        budget.suppressed
                    );
                }
                *budget = Budget {
                    second,
                    logged: 0,
                    suppressed: 0,
                };
            }
            if budget.logged < LOGGED_PER_SEC {
                budget.logged += 1;
                true
            } else {
                budget.suppressed += 1;
                false
            }
        };
        if admitted {
            warn!("HTTP request refused: {}", line());
        }
    }

    /// Refusals so far, by code.
    pub(crate) fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}
