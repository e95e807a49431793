//! Executing a plan: the plan becomes ordered steps; each step records its attempts in the
//! ledger before it acts, and the run stops (leaving the rest as a checkpoint) when the
//! invocation's remaining time drops under the margin.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::RemediatorError;
use crate::ledger::Ledger;
use crate::plan::{ASSOCIATION, ActionKind, AutomationRun, Key, PATCH, Plan};
use crate::policy::PatchAction;
use crate::remediate::{Remediator, client_token};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Step {
    Patch { nodes: Vec<String> },
    Associations { ids: Vec<String>, keys: Vec<Key> },
    Automation { run: AutomationRun },
}

/// Everything a continuation needs to finish a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Work {
    pub sweep_id: String,
    pub account: String,
    pub patch: PatchAction,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Executed {
    pub action: ActionKind,
    /// Command id, execution id, or the association ids run.
    pub reference: String,
    pub resources: Vec<String>,
}

pub fn steps(plan: &Plan) -> Vec<Step> {
    let mut out: Vec<Step> = plan
        .patch_batches
        .iter()
        .map(|b| Step::Patch { nodes: b.clone() })
        .collect();
    let assoc_keys: Vec<Key> = plan
        .targets
        .iter()
        .filter(|t| t.action == ActionKind::Association)
        .map(|t| Key::new(&t.resource_id, ASSOCIATION))
        .collect();
    for (i, ids) in plan.association_batches.iter().enumerate() {
        out.push(Step::Associations {
            ids: ids.clone(),
            // The attempts are recorded with the first run; the later runs belong to them.
            keys: if i == 0 {
                assoc_keys.clone()
            } else {
                Vec::new()
            },
        });
    }
    out.extend(
        plan.automations
            .iter()
            .map(|r| Step::Automation { run: r.clone() }),
    );
    out
}

pub struct Runner<'a> {
    pub ledger: &'a Ledger,
    pub remediator: &'a Remediator,
    pub function: &'a str,
    pub now: i64,
    pub deadline: SystemTime,
    pub margin: Duration,
}

impl Runner<'_> {
    fn short_of_time(&self) -> bool {
        self.deadline
            .duration_since(SystemTime::now())
            .map_or(true, |left| left < self.margin)
    }

    /// Runs steps until done or short of time; returns what ran and what is left.
    pub async fn run(&self, work: &Work) -> Result<(Vec<Executed>, Vec<Step>), RemediatorError> {
        let mut done = Vec::new();
        for (i, step) in work.steps.iter().enumerate() {
            // At least one step per invocation, so a continuation always makes progress.
            if i > 0 && self.short_of_time() {
                tracing::warn!(
                    remaining_steps = work.steps.len() - i,
                    "sweep short of time: checkpointing"
                );
                return Ok((done, work.steps[i..].to_vec()));
            }
            if let Some(e) = self.step(work, step).await? {
                done.push(e);
            }
        }
        Ok((done, Vec::new()))
    }

    async fn step(&self, work: &Work, step: &Step) -> Result<Option<Executed>, RemediatorError> {
        let acct = work.account.as_str();
        match step {
            Step::Patch { nodes } => {
                let keys: Vec<Key> = nodes.iter().map(|n| Key::new(n, PATCH)).collect();
                let fresh = self
                    .ledger
                    .begin_attempts(acct, &keys, &work.sweep_id, self.now)
                    .await?;
                if fresh.is_empty() {
                    return Ok(None);
                }
                let ids: Vec<String> = fresh.iter().map(|k| k.resource_id.clone()).collect();
                let cid = match self
                    .remediator
                    .patch(&ids, &work.patch, &work.sweep_id)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        self.give_back(acct, &fresh).await;
                        return Err(e.into());
                    }
                };
                self.ledger.link(acct, &fresh, &cid).await?;
                tracing::info!(command_id = %cid, nodes = ids.len(), "patch install sent");
                Ok(Some(Executed {
                    action: ActionKind::Patch,
                    reference: cid,
                    resources: ids,
                }))
            }
            Step::Associations { ids, keys } => {
                let fresh = self
                    .ledger
                    .begin_attempts(acct, keys, &work.sweep_id, self.now)
                    .await?;
                if !keys.is_empty() && fresh.is_empty() {
                    return Ok(None);
                }
                if let Err(e) = self.remediator.associations(ids).await {
                    self.give_back(acct, &fresh).await;
                    return Err(e.into());
                }
                let reference = ids.join(",");
                self.ledger
                    .link(acct, &fresh, &format!("associations:{reference}"))
                    .await?;
                Ok(Some(Executed {
                    action: ActionKind::Association,
                    reference,
                    resources: fresh.into_iter().map(|k| k.resource_id).collect(),
                }))
            }
            Step::Automation { run } => {
                let key = Key::new(&run.resource_id, &run.compliance_type);
                let fresh = self
                    .ledger
                    .begin_attempts(acct, std::slice::from_ref(&key), &work.sweep_id, self.now)
                    .await?;
                // The token makes a retried start return the same execution.
                let token = client_token(&[
                    self.function,
                    &work.sweep_id,
                    &run.runbook,
                    &run.resource_id,
                ]);
                let id = match self.remediator.automation(run, &token).await {
                    Ok(id) => id,
                    Err(e) => {
                        self.give_back(acct, &fresh).await;
                        return Err(e.into());
                    }
                };
                self.ledger.link(acct, &[key], &id).await?;
                Ok(Some(Executed {
                    action: ActionKind::Automation,
                    reference: id,
                    resources: vec![run.resource_id.clone()],
                }))
            }
        }
    }

    /// A call that failed had no effect: the attempt is given back so the retry may run it.
    async fn give_back(&self, acct: &str, keys: &[Key]) {
        if let Err(e) = self.ledger.abandon(acct, keys).await {
            tracing::warn!(error = %e, "could not give back attempts");
        }
    }
}
