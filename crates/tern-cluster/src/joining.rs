//! Waiting, while a node joins, for NATS to place its stream and buckets: each request is
//! bounded well under the join's deadline and tried again until then, so servers still electing
//! their leaders, or busy with other nodes joining at once, delay a node instead of stopping it.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::settings::ClusterError;

/// The longest one attempt may take. JetStream's own request timeout (5 s) is half the join's
/// default deadline: a request to servers without a leader would leave no time to try again.
pub(crate) const ATTEMPT_BOUND: Duration = Duration::from_secs(2);
/// Wait between attempts.
const RETRY_DELAY: Duration = Duration::from_millis(250);

/// Runs `attempt` until it succeeds, each run bounded by [`ATTEMPT_BOUND`], until `deadline`;
/// every failure is logged with how long `what` has been waited for.
pub(crate) async fn until_ready<T, E, Fut>(
    what: &str,
    deadline: Instant,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, ClusterError>
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let bound = ATTEMPT_BOUND.min(deadline.saturating_duration_since(Instant::now()));
        let error = match tokio::time::timeout(bound, attempt()).await {
            Ok(Ok(ready)) => return Ok(ready),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {bound:?}"),
        };
        if Instant::now() >= deadline {
            return Err(ClusterError::Stream(format!(
                "{what}: {error} (after {tries} attempts in {:.1?})",
                started.elapsed()
            )));
        }
        info!(
            "{what} not ready yet ({error}); attempt {tries} after {:.1?}, trying again",
            started.elapsed()
        );
        tokio::time::sleep(RETRY_DELAY).await;
    }
}
