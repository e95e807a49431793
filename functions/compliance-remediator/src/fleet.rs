//! Adapter: reads the fleet and its compliance from Systems Manager. Every list call pages at
//! ≤ 50 and retries throttled pages; independent listings run concurrently (4 streams).

use std::collections::{BTreeMap, BTreeSet};

use autopilot_shared::error::AwsCallError;
use aws_sdk_ssm::types::{
    AssociationFilter, AssociationFilterKey, ComplianceQueryOperatorType, ComplianceStringFilter,
    InstanceInformationStringFilter, PingStatus,
};

use crate::plan::{ASSOCIATION, Finding, Fleet, PATCH};
use crate::policy::ExemptionTag;
use crate::retry::throttled;

const PAGE: i32 = 50;

/// (resource, type) → [(item id, patch state)].
type Items = BTreeMap<(String, String), Vec<(String, Option<String>)>>;

pub struct FleetReader {
    ssm: aws_sdk_ssm::Client,
}

fn build_err(op: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> AwsCallError {
    AwsCallError {
        op,
        code: None,
        retryable: false,
        source: Box::new(e),
    }
}

fn compliance_filter(key: &str, value: &str) -> Result<ComplianceStringFilter, AwsCallError> {
    Ok(ComplianceStringFilter::builder()
        .key(key)
        .values(value)
        .r#type(ComplianceQueryOperatorType::Equal)
        .build())
}

impl FleetReader {
    pub fn new(ssm: aws_sdk_ssm::Client) -> Self {
        Self { ssm }
    }

    /// Fleet facts; `only` restricts everything to one node (event-driven remediation).
    pub async fn fleet(
        &self,
        exemption: Option<&ExemptionTag>,
        only: Option<&str>,
    ) -> Result<Fleet, AwsCallError> {
        let (nodes, exempt, (known, by_node)) = tokio::try_join!(
            self.nodes(only, None),
            async {
                match exemption {
                    Some(tag) => self.nodes(only, Some(tag)).await.map(|(on, off)| {
                        on.into_iter()
                            .chain(off.into_keys())
                            .collect::<BTreeSet<_>>()
                    }),
                    None => Ok(BTreeSet::new()),
                }
            },
            self.associations(only),
        )?;
        Ok(Fleet {
            online: nodes.0,
            not_online: nodes.1,
            exempt,
            associations: by_node,
            known_associations: known,
        })
    }

    /// DescribeInstanceInformation: Online nodes, and the others with their ping status.
    async fn nodes(
        &self,
        only: Option<&str>,
        tag: Option<&ExemptionTag>,
    ) -> Result<(BTreeSet<String>, BTreeMap<String, String>), AwsCallError> {
        let mut filters = Vec::new();
        if let Some(id) = only {
            filters.push(
                InstanceInformationStringFilter::builder()
                    .key("InstanceIds")
                    .values(id)
                    .build()
                    .map_err(|e| build_err("DescribeInstanceInformation", e))?,
            );
        }
        if let Some(t) = tag {
            let f = if t.values.is_empty() {
                InstanceInformationStringFilter::builder()
                    .key("tag-key")
                    .values(&t.key)
            } else {
                InstanceInformationStringFilter::builder()
                    .key(format!("tag:{}", t.key))
                    .set_values(Some(t.values.clone()))
            };
            filters.push(
                f.build()
                    .map_err(|e| build_err("DescribeInstanceInformation", e))?,
            );
        }
        let mut online = BTreeSet::new();
        let mut other = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = throttled(|| async {
                self.ssm
                    .describe_instance_information()
                    .set_filters((!filters.is_empty()).then(|| filters.clone()))
                    .max_results(PAGE)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("DescribeInstanceInformation", e))
            })
            .await?;
            for i in page.instance_information_list() {
                let Some(id) = i.instance_id() else { continue };
                match i.ping_status() {
                    Some(PingStatus::Online) => {
                        online.insert(id.to_owned());
                    }
                    s => {
                        other.insert(
                            id.to_owned(),
                            s.map(|s| s.as_str().to_owned())
                                .unwrap_or_else(|| "Unknown".into()),
                        );
                    }
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok((online, other))
    }

    /// ListAssociations: every association id, and the nodes each one targets by instance id.
    async fn associations(
        &self,
        only: Option<&str>,
    ) -> Result<(BTreeSet<String>, BTreeMap<String, BTreeSet<String>>), AwsCallError> {
        let filter = match only {
            Some(id) => Some(vec![
                AssociationFilter::builder()
                    .key(AssociationFilterKey::InstanceId)
                    .value(id)
                    .build()
                    .map_err(|e| build_err("ListAssociations", e))?,
            ]),
            None => None,
        };
        let mut known = BTreeSet::new();
        let mut by_node: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = throttled(|| async {
                self.ssm
                    .list_associations()
                    .set_association_filter_list(filter.clone())
                    .max_results(PAGE)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("ListAssociations", e))
            })
            .await?;
            for a in page.associations() {
                let Some(aid) = a.association_id() else {
                    continue;
                };
                known.insert(aid.to_owned());
                let mut nodes: Vec<&str> = a.instance_id().into_iter().collect();
                for t in a.targets() {
                    if t.key() == Some("InstanceIds") {
                        nodes.extend(t.values().iter().map(String::as_str));
                    }
                }
                for n in nodes {
                    by_node
                        .entry(n.to_owned())
                        .or_default()
                        .insert(aid.to_owned());
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok((known, by_node))
    }

    /// NON_COMPLIANT (resource, type) pairs from ListResourceComplianceSummaries, enriched with
    /// the NON_COMPLIANT items of ListComplianceItems (patch states, association ids).
    pub async fn findings(&self, only: Option<&str>) -> Result<Vec<Finding>, AwsCallError> {
        let (summaries, items) = tokio::try_join!(self.summaries(only), self.items(only))?;
        Ok(summaries
            .into_iter()
            .map(|(key, severity)| {
                let mut f = Finding::new(&key.0, &key.1);
                f.severity = severity;
                if let Some(list) = items.get(&key) {
                    for (id, state) in list {
                        match key.1.as_str() {
                            PATCH => f
                                .patch_states
                                .push(state.clone().unwrap_or_else(|| "Missing".into())),
                            ASSOCIATION => f.association_ids.push(id.clone()),
                            _ => {}
                        }
                    }
                }
                f
            })
            .collect())
    }

    async fn summaries(
        &self,
        only: Option<&str>,
    ) -> Result<BTreeMap<(String, String), Option<String>>, AwsCallError> {
        let mut filters = vec![compliance_filter("Status", "NON_COMPLIANT")?];
        if let Some(id) = only {
            filters.push(compliance_filter("ResourceId", id)?);
        }
        let mut out = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = throttled(|| async {
                self.ssm
                    .list_resource_compliance_summaries()
                    .set_filters(Some(filters.clone()))
                    .max_results(PAGE)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("ListResourceComplianceSummaries", e))
            })
            .await?;
            for s in page.resource_compliance_summary_items() {
                let (Some(rid), Some(ct)) = (s.resource_id(), s.compliance_type()) else {
                    continue;
                };
                out.insert(
                    (rid.to_owned(), ct.to_owned()),
                    s.overall_severity().map(|v| v.as_str().to_owned()),
                );
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// (resource, type) → [(item id, patch state)] of NON_COMPLIANT items.
    async fn items(&self, only: Option<&str>) -> Result<Items, AwsCallError> {
        let filters = vec![compliance_filter("Status", "NON_COMPLIANT")?];
        let mut out: Items = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = throttled(|| async {
                self.ssm
                    .list_compliance_items()
                    .set_filters(Some(filters.clone()))
                    .set_resource_ids(only.map(|id| vec![id.to_owned()]))
                    .max_results(PAGE)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| AwsCallError::from_sdk("ListComplianceItems", e))
            })
            .await?;
            for i in page.compliance_items() {
                let (Some(rid), Some(ct)) = (i.resource_id(), i.compliance_type()) else {
                    continue;
                };
                let state = i.details().and_then(|d| d.get("PatchState")).cloned();
                out.entry((rid.to_owned(), ct.to_owned()))
                    .or_default()
                    .push((i.id().unwrap_or_default().to_owned(), state));
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// GetCalendarState: `true` when OPEN, plus the next transition time when AWS gives one.
    pub async fn calendar(&self, name: &str) -> Result<(bool, Option<String>), AwsCallError> {
        let out = throttled(|| async {
            self.ssm
                .get_calendar_state()
                .calendar_names(name)
                .send()
                .await
                .map_err(|e| AwsCallError::from_sdk("GetCalendarState", e))
        })
        .await?;
        Ok((
            out.state().map(|s| s.as_str()) == Some("OPEN"),
            out.next_transition_time().map(str::to_owned),
        ))
    }
}
