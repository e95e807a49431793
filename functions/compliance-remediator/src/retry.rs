//! Page-level retry on throttling, on top of the SDK's adaptive retry: a fleet-wide sweep makes
//! hundreds of list calls, and one page that exhausts its SDK attempts must not lose the sweep.

use std::future::Future;
use std::time::Duration;

use autopilot_shared::error::AwsCallError;

const ROUNDS: u32 = 4;

pub async fn throttled<T, F, Fut>(mut f: F) -> Result<T, AwsCallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsCallError>>,
{
    let mut round = 0;
    loop {
        match f().await {
            Err(e) if e.is_throttling() && round < ROUNDS => {
                round += 1;
                tracing::debug!(op = e.op, round, "throttled page, backing off");
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            other => return other,
        }
    }
}
