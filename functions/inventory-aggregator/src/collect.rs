//! SSM Inventory reads: GetInventorySchema (which types exist), GetInventory pages of 50 with
//! one result attribute (rows inline), ListInventoryEntries per node where configured.

use std::collections::HashMap;

use aws_sdk_ssm::types::ResultAttribute;

use crate::error::{InventoryError, aws};

/// SSM's page limit for these operations.
pub const PAGE_SIZE: i32 = 50;

/// One node's data of one type.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeItem {
    pub node: String,
    pub capture_time: String,
    pub schema_version: String,
    /// `None` when the rows must be fetched with ListInventoryEntries.
    pub rows: Option<Vec<HashMap<String, String>>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<NodeItem>,
    pub next_token: Option<String>,
}

pub struct Inventory {
    ssm: aws_sdk_ssm::Client,
}

impl Inventory {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Self { ssm }
    }

    /// Every type name with its schema version, sorted by name.
    pub async fn types(&self) -> Result<Vec<(String, String)>, InventoryError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .ssm
                .get_inventory_schema()
                .max_results(PAGE_SIZE)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| aws("GetInventorySchema", e))?;
            for s in resp.schemas() {
                out.push((
                    s.type_name().to_owned(),
                    s.version().unwrap_or_default().to_owned(),
                ));
            }
            token = resp.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    /// The attribute names GetInventorySchema reports for one type, in its order.
    pub async fn attributes(&self, type_name: &str) -> Result<Vec<String>, InventoryError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .ssm
                .get_inventory_schema()
                .type_name(type_name)
                .max_results(PAGE_SIZE)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| aws("GetInventorySchema", e))?;
            for s in resp.schemas().iter().filter(|s| s.type_name() == type_name) {
                for a in s.attributes() {
                    if !out.iter().any(|o| o == a.name()) {
                        out.push(a.name().to_owned());
                    }
                }
            }
            token = resp.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// One GetInventory page of the nodes reporting `type_name`. With `inline` the rows come
    /// with the page; otherwise only node, capture time and schema version do.
    pub async fn page(
        &self,
        type_name: &str,
        token: Option<String>,
        inline: bool,
    ) -> Result<Page, InventoryError> {
        let attr = ResultAttribute::builder()
            .type_name(type_name)
            .build()
            .map_err(|e| InventoryError::CorruptCheckpoint {
                run: String::new(),
                reason: e.to_string(),
            })?;
        let resp = self
            .ssm
            .get_inventory()
            .result_attributes(attr)
            .max_results(PAGE_SIZE)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| aws("GetInventory", e))?;
        let mut items = Vec::with_capacity(resp.entities().len());
        for entity in resp.entities() {
            let (Some(node), Some(data)) = (entity.id(), entity.data()) else {
                continue;
            };
            let Some(item) = data.get(type_name) else {
                continue;
            };
            items.push(NodeItem {
                node: node.to_owned(),
                capture_time: item.capture_time().unwrap_or_default().to_owned(),
                schema_version: item.schema_version().to_owned(),
                rows: inline.then(|| item.content().to_vec()),
            });
        }
        // Sorted within the page: the snapshot part's bytes do not depend on response order.
        items.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(Page {
            items,
            next_token: resp
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }

    /// Every entry of one node's type, all pages.
    pub async fn entries(
        &self,
        node: &str,
        type_name: &str,
    ) -> Result<(Vec<HashMap<String, String>>, Option<String>, Option<String>), InventoryError>
    {
        let mut rows = Vec::new();
        let mut token: Option<String> = None;
        let (mut capture, mut version) = (None, None);
        loop {
            let resp = self
                .ssm
                .list_inventory_entries()
                .instance_id(node)
                .type_name(type_name)
                .max_results(PAGE_SIZE)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| aws("ListInventoryEntries", e))?;
            rows.extend(resp.entries().iter().cloned());
            capture = capture.or_else(|| resp.capture_time().map(str::to_owned));
            version = version.or_else(|| resp.schema_version().map(str::to_owned));
            token = resp
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok((rows, capture, version))
    }
}
