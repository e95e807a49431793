//! Adapter: where incidents are mirrored — OpsCenter (a high-severity OpsItem) or Incident
//! Manager (`StartIncident`). The ledger stays the record; the backend shows it to people.

use autopilot_shared::error::AwsCallError;
use aws_sdk_ssm::operation::create_ops_item::CreateOpsItemError;
use aws_sdk_ssm::types::{OpsItemDataType, OpsItemDataValue, OpsItemStatus};
use aws_sdk_ssmincidents::types::{
    IncidentRecordStatus, ItemIdentifier, ItemType, ItemValue, RelatedItem, TriggerDetails,
};

use crate::decide::{OpenIncident, deterministic_uuid};
use crate::ledger::Entry;

pub const OPSITEM_SOURCE: &str = "ssm-autopilot";
/// OperationalData values are limited to 20 KB; the mirrored timeline keeps the newest entries.
const MAX_DATA_VALUE: usize = 20 * 1024;

pub enum Backend {
    OpsCenter(aws_sdk_ssm::Client),
    IncidentManager {
        client: aws_sdk_ssmincidents::Client,
        response_plan_arn: String,
    },
}

/// What triggered the incident (Incident Manager's `triggerDetails`).
pub struct Trigger<'a> {
    pub source: &'a str,
    pub time: chrono::DateTime<chrono::Utc>,
    pub raw: &'a str,
}

fn build_error<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
) -> impl FnOnce(E) -> AwsCallError {
    move |e| AwsCallError {
        op,
        code: None,
        retryable: false,
        source: Box::new(e),
    }
}

/// Incident impact 1–5 → OpsItem severity "1"–"4": impacts 1 and 2 are both critical.
pub fn severity_for(impact: u8) -> String {
    match impact {
        0..=2 => "1",
        3 => "2",
        4 => "3",
        _ => "4",
    }
    .to_owned()
}

fn data(t: OpsItemDataType, v: impl Into<String>) -> OpsItemDataValue {
    OpsItemDataValue::builder().r#type(t).value(v).build()
}

fn timeline_json(full: &[Entry]) -> String {
    let mut keep = full.len();
    loop {
        let json = serde_json::to_string(&full[full.len() - keep..]).unwrap_or_default();
        if json.len() <= MAX_DATA_VALUE || keep == 0 {
            return json;
        }
        keep -= 1;
    }
}

fn smithy_time(t: chrono::DateTime<chrono::Utc>) -> aws_smithy_types::DateTime {
    aws_smithy_types::DateTime::from_millis(t.timestamp_millis())
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::OpsCenter(_) => "opscenter",
            Backend::IncidentManager { .. } => "incident-manager",
        }
    }

    /// Opens the incident; returns its id there (OpsItem id or incident record ARN). Retries
    /// return the same one: the OpsItem's dedup string and `StartIncident`'s client token
    /// are both derived from the incident id.
    pub async fn open(&self, o: &OpenIncident, t: &Trigger<'_>) -> Result<String, AwsCallError> {
        match self {
            Backend::OpsCenter(ssm) => {
                let resources = serde_json::to_string(
                    &o.resource_arns
                        .iter()
                        .map(|a| serde_json::json!({ "arn": a }))
                        .collect::<Vec<_>>(),
                )
                .unwrap_or_else(|_| "[]".into());
                let mut req = ssm
                    .create_ops_item()
                    .title(&o.title)
                    .description(format!(
                        "Incident {} opened by response plan {} for {} (impact {}).",
                        o.incident_id, o.plan, o.resource_key, o.impact
                    ))
                    .source(OPSITEM_SOURCE)
                    .severity(severity_for(o.impact))
                    .priority(i32::from(o.impact))
                    .set_category(o.category.clone())
                    .ops_item_type("/aws/issue")
                    .operational_data(
                        "/aws/dedup",
                        data(
                            OpsItemDataType::SearchableString,
                            serde_json::json!({ "dedupString": format!("ssm-autopilot/incident/{}", o.incident_id) })
                                .to_string(),
                        ),
                    )
                    .operational_data(
                        "autopilot:incident",
                        data(OpsItemDataType::SearchableString, &o.incident_id),
                    )
                    .operational_data(
                        "autopilot:responsePlan",
                        data(OpsItemDataType::SearchableString, &o.plan),
                    )
                    .operational_data("autopilot:impact", data(OpsItemDataType::String, o.impact.to_string()));
                if !o.resource_arns.is_empty() {
                    req = req.operational_data(
                        "/aws/resources",
                        data(OpsItemDataType::SearchableString, resources),
                    );
                }
                match req.send().await {
                    Ok(out) => Ok(out.ops_item_id.unwrap_or_default()),
                    Err(e) => match e.as_service_error() {
                        Some(CreateOpsItemError::OpsItemAlreadyExistsException(x))
                            if x.ops_item_id().is_some() =>
                        {
                            Ok(x.ops_item_id().unwrap_or_default().to_owned())
                        }
                        _ => Err(AwsCallError::from_sdk("CreateOpsItem", e)),
                    },
                }
            }
            Backend::IncidentManager {
                client,
                response_plan_arn,
            } => {
                let trigger = TriggerDetails::builder()
                    .source(t.source)
                    .timestamp(smithy_time(t.time))
                    .raw_data(t.raw.chars().take(10_000).collect::<String>())
                    .build()
                    .map_err(build_error("StartIncident"))?;
                let mut req = client
                    .start_incident()
                    .client_token(deterministic_uuid(&["StartIncident", &o.incident_id]))
                    .response_plan_arn(response_plan_arn)
                    .title(&o.title)
                    .impact(i32::from(o.impact))
                    .trigger_details(trigger);
                for arn in &o.resource_arns {
                    let id = ItemIdentifier::builder()
                        .r#type(ItemType::InvolvedResource)
                        .value(ItemValue::Arn(arn.clone()))
                        .build()
                        .map_err(build_error("StartIncident"))?;
                    req = req.related_items(RelatedItem::builder().identifier(id).build());
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("StartIncident", e))?;
                Ok(out.incident_record_arn)
            }
        }
    }

    /// Mirrors the timeline: OpsCenter keeps the whole (newest 20 KB) timeline in
    /// OperationalData; Incident Manager gets one timeline event per new entry.
    pub async fn mirror(&self, r: &str, full: &[Entry], new: &[Entry]) -> Result<(), AwsCallError> {
        match self {
            Backend::OpsCenter(ssm) => {
                ssm.update_ops_item()
                    .ops_item_id(r)
                    .operational_data(
                        "autopilot:timeline",
                        data(OpsItemDataType::String, timeline_json(full)),
                    )
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("UpdateOpsItem", e))?;
                Ok(())
            }
            Backend::IncidentManager { client, .. } => {
                for e in new {
                    let at = chrono::DateTime::parse_from_rfc3339(&e.at)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .unwrap_or_else(|_| chrono::Utc::now());
                    client
                        .create_timeline_event()
                        .client_token(deterministic_uuid(&["CreateTimelineEvent", r, &e.id]))
                        .incident_record_arn(r)
                        .event_time(smithy_time(at))
                        .event_type("Custom Event")
                        .event_data(serde_json::to_string(e).unwrap_or_default())
                        .send()
                        .await
                        .map_err(|err| AwsCallError::from_sdk("CreateTimelineEvent", err))?;
                }
                Ok(())
            }
        }
    }

    pub async fn escalate(&self, r: &str, impact: u8, token: &str) -> Result<(), AwsCallError> {
        match self {
            Backend::OpsCenter(ssm) => {
                ssm.update_ops_item()
                    .ops_item_id(r)
                    .severity(severity_for(impact))
                    .priority(i32::from(impact))
                    .operational_data(
                        "autopilot:impact",
                        data(OpsItemDataType::String, impact.to_string()),
                    )
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("UpdateOpsItem", e))?;
                Ok(())
            }
            Backend::IncidentManager { client, .. } => {
                client
                    .update_incident_record()
                    .arn(r)
                    .impact(i32::from(impact))
                    .client_token(token)
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("UpdateIncidentRecord", e))?;
                Ok(())
            }
        }
    }

    pub async fn resolve(&self, r: &str, note: &str, token: &str) -> Result<(), AwsCallError> {
        match self {
            Backend::OpsCenter(ssm) => {
                ssm.update_ops_item()
                    .ops_item_id(r)
                    .status(OpsItemStatus::Resolved)
                    .operational_data("autopilot:resolution", data(OpsItemDataType::String, note))
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("UpdateOpsItem", e))?;
                Ok(())
            }
            Backend::IncidentManager { client, .. } => {
                client
                    .update_incident_record()
                    .arn(r)
                    .status(IncidentRecordStatus::Resolved)
                    .client_token(token)
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("UpdateIncidentRecord", e))?;
                Ok(())
            }
        }
    }
}
