//! Adapter: SSM Automation (runbooks), Change Calendar, and the exemption-tag lookup.

use std::collections::BTreeMap;

use autopilot_shared::error::AwsCallError;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationError;
use aws_sdk_ssm::types::{CalendarState, InstanceInformationStringFilter};

use crate::decide::Gate;

pub struct Automation {
    ssm: aws_sdk_ssm::Client,
}

fn build_error(op: &'static str) -> impl FnOnce(aws_sdk_ssm::error::BuildError) -> AwsCallError {
    move |e| AwsCallError {
        op,
        code: None,
        retryable: false,
        source: Box::new(e),
    }
}

impl Automation {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Self { ssm }
    }

    /// Starts a runbook. The same `client_token` returns the same execution instead of a
    /// second one, so a retried event never runs a runbook twice.
    pub async fn start(
        &self,
        document: &str,
        parameters: &BTreeMap<String, Vec<String>>,
        client_token: &str,
    ) -> Result<String, AwsCallError> {
        let out = self
            .ssm
            .start_automation_execution()
            .document_name(document)
            .set_parameters(Some(
                parameters
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
            .client_token(client_token)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("StartAutomationExecution", e))?;
        Ok(out.automation_execution_id.unwrap_or_default())
    }

    pub async fn calendar(&self, name: &str) -> Result<Gate, AwsCallError> {
        let out = self
            .ssm
            .get_calendar_state()
            .calendar_names(name)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("GetCalendarState", e))?;
        Ok(match out.state {
            Some(CalendarState::Open) => Gate::Open,
            // Anything but an explicit OPEN keeps disruptive runbooks waiting.
            _ => Gate::Closed {
                calendar: name.to_owned(),
                next_transition: out.next_transition_time,
            },
        })
    }

    /// Whether managed node `instance_id` carries tag key `tag`. Nodes Systems Manager does not
    /// manage cannot be looked up here and count as not tagged.
    pub async fn tagged(&self, instance_id: &str, tag: &str) -> Result<bool, AwsCallError> {
        let ids = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .map_err(build_error("DescribeInstanceInformation"))?;
        let key = InstanceInformationStringFilter::builder()
            .key("tag-key")
            .values(tag)
            .build()
            .map_err(build_error("DescribeInstanceInformation"))?;
        match self
            .ssm
            .describe_instance_information()
            .filters(ids)
            .filters(key)
            .send()
            .await
        {
            Ok(out) => Ok(!out.instance_information_list().is_empty()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(DescribeInstanceInformationError::is_invalid_instance_id) =>
            {
                tracing::info!(instance_id, "not a managed node; exemption tag not checked");
                Ok(false)
            }
            Err(e) => Err(AwsCallError::from_sdk("DescribeInstanceInformation", e)),
        }
    }
}
