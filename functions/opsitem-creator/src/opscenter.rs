//! Adapter: OpsCenter (SSM OpsItem APIs).

use std::collections::{BTreeMap, HashMap};

use autopilot_shared::error::AwsCallError;
use aws_sdk_ssm::operation::create_ops_item::CreateOpsItemError;
use aws_sdk_ssm::operation::get_ops_item::GetOpsItemError;
use aws_sdk_ssm::types::{
    OpsItemDataType, OpsItemDataValue, OpsItemFilter, OpsItemFilterKey, OpsItemFilterOperator,
    OpsItemStatus,
};

use crate::decide::{DataType, Draft};

pub enum Created {
    New(String),
    /// An Open/InProgress item with the same dedup string exists (AWS returns its id).
    Exists(String),
    /// The account's OpsItem quota is reached: retrying cannot help.
    LimitExceeded,
}

pub struct OpsCenter {
    ssm: aws_sdk_ssm::Client,
}

fn data_value((t, v): &(DataType, String)) -> OpsItemDataValue {
    let ty = match t {
        DataType::SearchableString => OpsItemDataType::SearchableString,
        DataType::String => OpsItemDataType::String,
    };
    OpsItemDataValue::builder().r#type(ty).value(v).build()
}

/// The OpsItem fields the function reads back.
pub struct Existing {
    pub status: Option<OpsItemStatus>,
    pub data: HashMap<String, OpsItemDataValue>,
}

impl Existing {
    pub fn value(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(|v| v.value())
    }
}

impl OpsCenter {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Self { ssm }
    }

    pub async fn create(&self, d: &Draft) -> Result<Created, AwsCallError> {
        let mut req = self
            .ssm
            .create_ops_item()
            .title(&d.title)
            .description(&d.description)
            .source(crate::decide::OPSITEM_SOURCE)
            .severity(&d.severity)
            .set_category(d.category.clone())
            .set_priority(d.priority)
            .set_ops_item_type(d.ops_item_type.clone());
        for (k, v) in &d.operational_data {
            req = req.operational_data(k, data_value(v));
        }
        match req.send().await {
            Ok(out) => Ok(Created::New(out.ops_item_id.unwrap_or_default())),
            Err(e) => match e.as_service_error() {
                Some(CreateOpsItemError::OpsItemAlreadyExistsException(x))
                    if x.ops_item_id().is_some() =>
                {
                    Ok(Created::Exists(
                        x.ops_item_id().unwrap_or_default().to_owned(),
                    ))
                }
                Some(CreateOpsItemError::OpsItemAlreadyExistsException(_)) => {
                    match self.find_open(&d.dedup).await? {
                        Some(id) => Ok(Created::Exists(id)),
                        None => Err(AwsCallError::from_sdk("CreateOpsItem", e)),
                    }
                }
                Some(CreateOpsItemError::OpsItemLimitExceededException(_)) => {
                    Ok(Created::LimitExceeded)
                }
                _ => Err(AwsCallError::from_sdk("CreateOpsItem", e)),
            },
        }
    }

    pub async fn get(&self, id: &str) -> Result<Existing, AwsCallError> {
        let out = self
            .ssm
            .get_ops_item()
            .ops_item_id(id)
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("GetOpsItem", e))?;
        let item = out
            .ops_item
            .unwrap_or_else(|| aws_sdk_ssm::types::OpsItem::builder().build());
        Ok(Existing {
            status: item.status,
            data: item.operational_data.unwrap_or_default(),
        })
    }

    /// The item, or `None` when OpsCenter has no item with that id (deleted, or an id the
    /// ledger holds for another account's OpsCenter): the ledger is only an index.
    pub async fn find(&self, id: &str) -> Result<Option<Existing>, AwsCallError> {
        match self.ssm.get_ops_item().ops_item_id(id).send().await {
            Ok(out) => {
                let item = out
                    .ops_item
                    .unwrap_or_else(|| aws_sdk_ssm::types::OpsItem::builder().build());
                Ok(Some(Existing {
                    status: item.status,
                    data: item.operational_data.unwrap_or_default(),
                }))
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(GetOpsItemError::OpsItemNotFoundException(_))
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(AwsCallError::from_sdk("GetOpsItem", e)),
        }
    }

    pub async fn update_data(
        &self,
        id: &str,
        data: &BTreeMap<String, (DataType, String)>,
    ) -> Result<(), AwsCallError> {
        let mut req = self.ssm.update_ops_item().ops_item_id(id);
        for (k, v) in data {
            req = req.operational_data(k, data_value(v));
        }
        req.send()
            .await
            .map_err(|e| AwsCallError::from_sdk("UpdateOpsItem", e))?;
        Ok(())
    }

    pub async fn resolve(&self, id: &str, note: &str, event_id: &str) -> Result<(), AwsCallError> {
        self.ssm
            .update_ops_item()
            .ops_item_id(id)
            .status(OpsItemStatus::Resolved)
            .operational_data(
                "autopilot:resolution",
                data_value(&(DataType::String, note.to_owned())),
            )
            .operational_data(
                "autopilot:resolvedByEvent",
                data_value(&(DataType::String, event_id.to_owned())),
            )
            .send()
            .await
            .map_err(|e| AwsCallError::from_sdk("UpdateOpsItem", e))?;
        Ok(())
    }

    /// The Open or InProgress item carrying `dedup`, found through searchable operational data
    /// (works even when the ledger has no record of it).
    pub async fn find_open(&self, dedup: &str) -> Result<Option<String>, AwsCallError> {
        let by_dedup = OpsItemFilter::builder()
            .key(OpsItemFilterKey::OperationalData)
            .values(serde_json::json!({ "key": "autopilot:dedup", "value": dedup }).to_string())
            .operator(OpsItemFilterOperator::Equal)
            .build()
            .map_err(|e| AwsCallError {
                op: "DescribeOpsItems",
                code: None,
                retryable: false,
                source: Box::new(e),
            })?;
        let open = OpsItemFilter::builder()
            .key(OpsItemFilterKey::Status)
            .values("Open")
            .values("InProgress")
            .operator(OpsItemFilterOperator::Equal)
            .build()
            .map_err(|e| AwsCallError {
                op: "DescribeOpsItems",
                code: None,
                retryable: false,
                source: Box::new(e),
            })?;
        let mut pages = self
            .ssm
            .describe_ops_items()
            .ops_item_filters(by_dedup)
            .ops_item_filters(open)
            .max_results(50)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsCallError::from_sdk("DescribeOpsItems", e))?;
            if let Some(id) = page
                .ops_item_summaries()
                .iter()
                .find_map(|s| s.ops_item_id())
            {
                return Ok(Some(id.to_owned()));
            }
        }
        Ok(None)
    }
}
