//! The pure planner: findings + policy + ledger state + fleet facts → plan. No I/O; every
//! safety gate is decided here and unit-tested directly.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::policy::{Policy, render_parameters};

pub const PATCH: &str = "Patch";
pub const ASSOCIATION: &str = "Association";
/// Prefix of findings that come from AWS Config rules (`config:<rule name>`).
pub const CONFIG_PREFIX: &str = "config:";
/// StartAssociationsOnce takes at most 10 association ids.
pub const MAX_ASSOCIATIONS_PER_CALL: usize = 10;
/// Patch states that are not "missing": a patch that does not apply is not a finding.
const NOT_MISSING: [&str; 1] = ["NotApplicable"];

/// One non-compliant (resource, compliance type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub resource_id: String,
    /// `Patch`, `Association`, `Custom:<name>` or `config:<rule>`.
    pub compliance_type: String,
    #[serde(default)]
    pub severity: Option<String>,
    /// Patch states of the NON_COMPLIANT items (empty when unknown).
    #[serde(default)]
    pub patch_states: Vec<String>,
    /// Ids of the NON_COMPLIANT association items.
    #[serde(default)]
    pub association_ids: Vec<String>,
}

impl Finding {
    pub fn new(resource_id: &str, compliance_type: &str) -> Self {
        Self {
            resource_id: resource_id.to_owned(),
            compliance_type: compliance_type.to_owned(),
            severity: None,
            patch_states: Vec::new(),
            association_ids: Vec::new(),
        }
    }

    fn key(&self) -> Key {
        Key {
            resource_id: self.resource_id.clone(),
            compliance_type: self.compliance_type.clone(),
        }
    }

    fn severity_rank(&self) -> u8 {
        match self
            .severity
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("CRITICAL") => 0,
            Some("HIGH") => 1,
            Some("MEDIUM") => 2,
            Some("LOW") => 3,
            Some("INFORMATIONAL") => 4,
            _ => 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    pub resource_id: String,
    pub compliance_type: String,
}

impl Key {
    pub fn new(resource_id: &str, compliance_type: &str) -> Self {
        Self {
            resource_id: resource_id.to_owned(),
            compliance_type: compliance_type.to_owned(),
        }
    }
}

/// What the fleet looks like right now (from DescribeInstanceInformation and ListAssociations).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    /// Managed nodes with PingStatus Online.
    pub online: BTreeSet<String>,
    /// Managed nodes that are listed but not Online (ConnectionLost, Inactive: stopped or
    /// unreachable) → their ping status. Terminated nodes are not listed at all.
    pub not_online: BTreeMap<String, String>,
    /// Nodes carrying the exemption tag.
    pub exempt: BTreeSet<String>,
    /// Node → ids of the associations that target it by instance id.
    pub associations: BTreeMap<String, BTreeSet<String>>,
    /// Every association id that exists.
    pub known_associations: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptStatus {
    /// Sent; outcome not known yet.
    Pending,
    /// The command/run reported success; compliance not re-checked yet.
    Succeeded,
    Failed,
    /// Could not reach the node (offline/stopped): not a failed remediation.
    Undeliverable,
    /// Re-checked COMPLIANT after an attempt.
    Remediated,
}

/// A remediation record (`remediation#<node>#<type>` in the ledger).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// Attempts that reached the node (undeliverable ones are given back).
    pub attempts: u32,
    pub last_attempt_at: i64,
    pub status: AttemptStatus,
    #[serde(default)]
    pub sweep_id: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerState {
    /// (node, compliance type or `*`) → expiry (epoch seconds).
    pub exceptions: BTreeMap<Key, i64>,
    pub attempts: BTreeMap<Key, Attempt>,
}

impl LedgerState {
    fn exception(&self, f: &Finding, now: i64) -> Option<i64> {
        [
            f.key(),
            Key {
                resource_id: f.resource_id.clone(),
                compliance_type: "*".into(),
            },
        ]
        .iter()
        .filter_map(|k| self.exceptions.get(k).copied())
        .find(|exp| *exp > now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Listed but not Online (stopped, connection lost): skipped, never a failure.
    NodeNotOnline,
    /// Not a managed node any more (terminated or deregistered).
    NodeNotManaged,
    ExemptTag,
    Exception,
    Cooldown,
    /// Only NotApplicable patch states: nothing is missing.
    NotApplicableOnly,
    NoAction,
    NoAssociation,
    Disabled,
    /// Failed `maxAttempts` times: reported as a failure for a human, not retried.
    RetryLimit,
    ChangeCalendarClosed,
    Budget,
    /// Another delivery claimed the record after this one read it: nothing sent, no attempt.
    ClaimedConcurrently,
    /// Another sweep's abandoned claim whose command had reached the node: linked to it.
    EarlierCommand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skip {
    pub resource_id: String,
    pub compliance_type: String,
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Patch,
    Association,
    Automation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub resource_id: String,
    pub compliance_type: String,
    pub action: ActionKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutomationRun {
    pub resource_id: String,
    pub compliance_type: String,
    pub runbook: String,
    pub parameters: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetUse {
    pub limit: usize,
    pub used: usize,
    pub online_nodes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// AWS-RunPatchBaseline Install calls, ≤ 50 instance ids each.
    pub patch_batches: Vec<Vec<String>>,
    /// StartAssociationsOnce calls, ≤ 10 association ids each.
    pub association_batches: Vec<Vec<String>>,
    pub automations: Vec<AutomationRun>,
    /// Every (resource, type) the plan remediates.
    pub targets: Vec<Target>,
    pub skipped: Vec<Skip>,
    pub deferred: Vec<Skip>,
    /// Earlier attempts whose compliance now re-checks COMPLIANT.
    pub verified: Vec<Key>,
    pub budget: BudgetUse,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn target_nodes(&self) -> BTreeSet<&str> {
        self.targets
            .iter()
            .map(|t| t.resource_id.as_str())
            .collect()
    }
}

pub struct Input<'a> {
    pub findings: &'a [Finding],
    pub policy: &'a Policy,
    pub ledger: &'a LedgerState,
    pub fleet: &'a Fleet,
    pub now: i64,
    /// `Some(false)` when the Change Calendar is CLOSED; `None` when no calendar is configured.
    pub calendar_open: Option<bool>,
    /// Sweeps re-check earlier attempts; a single-resource event does not.
    pub verify: bool,
    pub automation_role: Option<&'a str>,
}

enum Decision {
    Skip(Reason, Option<String>),
    Patch,
    Associations(Vec<String>),
    Automation(String, BTreeMap<String, Vec<String>>),
}

/// Decides the plan. Deterministic: the same input gives the same plan.
pub fn plan(input: &Input<'_>) -> Plan {
    let Input {
        policy,
        ledger,
        fleet,
        now,
        ..
    } = *input;
    let mut findings: Vec<&Finding> = input.findings.iter().collect();
    // Most severe first, so a capped sweep fixes what matters most; then stable by id.
    findings.sort_by(|a, b| {
        (a.severity_rank(), &a.resource_id, &a.compliance_type).cmp(&(
            b.severity_rank(),
            &b.resource_id,
            &b.compliance_type,
        ))
    });
    findings.dedup_by(|a, b| a.key() == b.key());

    let online = fleet.online.len().max(1);
    let mut limit = policy.budget.max_nodes.unwrap_or(usize::MAX);
    if let Some(pct) = policy.budget.max_percent {
        limit = limit.min(((online as f64) * pct / 100.0).ceil() as usize);
    }

    let mut out = Plan::default();
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut patch_nodes: BTreeSet<String> = BTreeSet::new();
    let mut associations: BTreeSet<String> = BTreeSet::new();
    for f in findings {
        let skip = |reason, detail: Option<String>| Skip {
            resource_id: f.resource_id.clone(),
            compliance_type: f.compliance_type.clone(),
            reason,
            detail,
        };
        let decision = decide(f, input);
        let action = match decision {
            Decision::Skip(reason, detail) => {
                out.skipped.push(skip(reason, detail));
                continue;
            }
            d => d,
        };
        if input.calendar_open == Some(false) {
            out.deferred.push(skip(Reason::ChangeCalendarClosed, None));
            continue;
        }
        if !chosen.contains(&f.resource_id) {
            if chosen.len() >= limit {
                out.deferred.push(skip(Reason::Budget, None));
                continue;
            }
            chosen.insert(f.resource_id.clone());
        }
        let kind = match action {
            Decision::Patch => {
                patch_nodes.insert(f.resource_id.clone());
                ActionKind::Patch
            }
            Decision::Associations(ids) => {
                associations.extend(ids);
                ActionKind::Association
            }
            Decision::Automation(runbook, parameters) => {
                out.automations.push(AutomationRun {
                    resource_id: f.resource_id.clone(),
                    compliance_type: f.compliance_type.clone(),
                    runbook,
                    parameters,
                });
                ActionKind::Automation
            }
            Decision::Skip(..) => continue,
        };
        out.targets.push(Target {
            resource_id: f.resource_id.clone(),
            compliance_type: f.compliance_type.clone(),
            action: kind,
        });
    }
    let batch = policy
        .patch
        .batch_size
        .clamp(1, crate::policy::MAX_INSTANCE_IDS);
    let patch_nodes: Vec<String> = patch_nodes.into_iter().collect();
    out.patch_batches = patch_nodes.chunks(batch).map(<[String]>::to_vec).collect();
    let associations: Vec<String> = associations.into_iter().collect();
    out.association_batches = associations
        .chunks(MAX_ASSOCIATIONS_PER_CALL)
        .map(<[String]>::to_vec)
        .collect();
    out.budget = BudgetUse {
        limit: limit.min(online.max(chosen.len())),
        used: chosen.len(),
        online_nodes: fleet.online.len(),
    };
    if input.verify {
        let open: BTreeSet<Key> = input.findings.iter().map(Finding::key).collect();
        out.verified = ledger
            .attempts
            .iter()
            .filter(|(k, a)| {
                matches!(a.status, AttemptStatus::Pending | AttemptStatus::Succeeded)
                    && fleet.online.contains(&k.resource_id)
                    && !open.contains(*k)
                    && a.last_attempt_at <= now
            })
            .map(|(k, _)| k.clone())
            .collect();
    }
    out
}

fn decide(f: &Finding, input: &Input<'_>) -> Decision {
    let Input {
        policy,
        ledger,
        fleet,
        now,
        ..
    } = *input;
    let config_rule = f.compliance_type.strip_prefix(CONFIG_PREFIX);
    // Config remediations act through AWS APIs, not the agent: no managed node needed.
    if config_rule.is_none() {
        if let Some(ping) = fleet.not_online.get(&f.resource_id) {
            return Decision::Skip(Reason::NodeNotOnline, Some(ping.clone()));
        }
        if !fleet.online.contains(&f.resource_id) {
            return Decision::Skip(Reason::NodeNotManaged, None);
        }
    }
    if fleet.exempt.contains(&f.resource_id) {
        return Decision::Skip(Reason::ExemptTag, None);
    }
    if let Some(exp) = ledger.exception(f, now) {
        return Decision::Skip(Reason::Exception, Some(format!("until {exp}")));
    }
    let action = match (f.compliance_type.as_str(), config_rule) {
        (_, Some(rule)) => match policy.config_rules.get(rule) {
            Some(r) => Decision::Automation(
                r.runbook.clone(),
                render_parameters(&r.parameters, &f.resource_id, input.automation_role),
            ),
            None => return Decision::Skip(Reason::NoAction, None),
        },
        (PATCH, None) => {
            if !policy.patch.enabled {
                return Decision::Skip(Reason::Disabled, None);
            }
            if !f.patch_states.is_empty()
                && f.patch_states
                    .iter()
                    .all(|s| NOT_MISSING.iter().any(|n| n.eq_ignore_ascii_case(s)))
            {
                return Decision::Skip(Reason::NotApplicableOnly, None);
            }
            Decision::Patch
        }
        (ASSOCIATION, None) => {
            if !policy.association.enabled {
                return Decision::Skip(Reason::Disabled, None);
            }
            let mut ids: BTreeSet<String> = f
                .association_ids
                .iter()
                .filter(|id| fleet.known_associations.contains(*id))
                .cloned()
                .collect();
            if ids.is_empty() {
                // The item ids are not (or no longer) associations: re-apply what targets the node.
                ids = fleet
                    .associations
                    .get(&f.resource_id)
                    .cloned()
                    .unwrap_or_default();
            }
            if ids.is_empty() {
                return Decision::Skip(Reason::NoAssociation, None);
            }
            Decision::Associations(ids.into_iter().collect())
        }
        (custom, None) => match policy.custom.get(custom) {
            Some(r) => Decision::Automation(
                r.runbook.clone(),
                render_parameters(&r.parameters, &f.resource_id, input.automation_role),
            ),
            None => return Decision::Skip(Reason::NoAction, None),
        },
    };
    if let Some(a) = ledger.attempts.get(&f.key()) {
        let minutes = |m: u32| i64::from(m) * 60;
        if a.status != AttemptStatus::Remediated && a.attempts >= policy.max_attempts {
            return Decision::Skip(
                Reason::RetryLimit,
                Some(format!("{} attempts, last {:?}", a.attempts, a.status)),
            );
        }
        let wait = match a.status {
            AttemptStatus::Failed | AttemptStatus::Undeliverable => {
                minutes(policy.retry_after_minutes)
            }
            _ => minutes(policy.cooldown_minutes),
        };
        if now < a.last_attempt_at + wait {
            return Decision::Skip(
                Reason::Cooldown,
                Some(format!("until {}", a.last_attempt_at + wait)),
            );
        }
    }
    action
}

#[cfg(test)]
mod tests;
