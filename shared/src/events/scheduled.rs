//! Scheduled triggers: EventBridge rules ("Scheduled Event") and EventBridge Scheduler, plus
//! the on-demand request events ssm-autopilot accepts from operators.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Detail of a scheduled trigger. Rules send `{}`; a Scheduler target may carry a JSON
/// input with options (`dryRun`, `reason`); unknown keys are kept for the handler.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledDetail {
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
