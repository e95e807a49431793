use inventory_aggregator::config::Config;
use inventory_aggregator::{Deps, handle};
use lambda_runtime::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    autopilot_shared::logging::init();
    let config = Config::from_env()?;
    let sdk = autopilot_shared::clients::load_sdk_config().await;
    let deps = Deps::new(config, &sdk);
    run(service_fn(|event| handle(&deps, event))).await
}
