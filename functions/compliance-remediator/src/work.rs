//! Executing a plan: the plan becomes ordered steps; each step records its attempts in the
//! ledger before it acts, and the run stops (leaving the rest as a checkpoint) when the
//! invocation's remaining time drops under the margin.
//!
//! Delivery is at-least-once, so any step may be a retry of one that failed or died halfway.
//! A record this sweep claimed but linked to nothing is its own unfinished claim: the retry
//! includes it, and for a patch step first asks Run Command's history whether the earlier
//! delivery's SendCommand went out (the sweep is named in the command's comment), so each
//! node gets one command per sweep and none is left claimed with nothing sent.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::RemediatorError;
use crate::ledger::{Claims, Ledger};
use crate::plan::{ASSOCIATION, ActionKind, AutomationRun, Key, PATCH, Plan};
use crate::policy::PatchAction;
use crate::remediate::{Remediator, SentCommand, client_token};

/// How far Run Command's clock may be behind ours when looking for an earlier send.
const CLOCK_SKEW_SECONDS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Step {
    Patch {
        nodes: Vec<String>,
    },
    Associations {
        ids: Vec<String>,
        keys: Vec<Key>,
    },
    Automation {
        run: AutomationRun,
    },
    /// Claims an earlier delivery of this sweep made that the sweep no longer plans (the node
    /// became compliant, went offline, a gate closed): linked to the patch command of this
    /// sweep that reached them, or given back. `since`: the earliest claim time.
    Settle {
        keys: Vec<Key>,
        since: i64,
    },
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

/// The keys a step records attempts for.
fn step_keys(step: &Step) -> Vec<Key> {
    match step {
        Step::Patch { nodes } => nodes.iter().map(|n| Key::new(n, PATCH)).collect(),
        Step::Associations { keys, .. } | Step::Settle { keys, .. } => keys.clone(),
        Step::Automation { run } => vec![Key::new(&run.resource_id, &run.compliance_type)],
    }
}

/// `steps` plus, first, a settle step for the sweep's own claims that no step covers.
pub fn with_own_claims(steps: Vec<Step>, own: &BTreeMap<Key, i64>) -> Vec<Step> {
    let covered: BTreeSet<Key> = steps.iter().flat_map(step_keys).collect();
    let left: Vec<(&Key, &i64)> = own.iter().filter(|(k, _)| !covered.contains(*k)).collect();
    let Some(since) = left.iter().map(|(_, at)| **at).min() else {
        return steps;
    };
    let mut out = vec![Step::Settle {
        keys: left.into_iter().map(|(k, _)| k.clone()).collect(),
        since,
    }];
    out.extend(steps);
    out
}

/// Splits claimed patch keys into those a command already reached (per command id, in the
/// order found) and those no command reached.
pub fn reached(keys: &[Key], sent: &[SentCommand]) -> (Vec<(String, Vec<Key>)>, Vec<Key>) {
    let mut by_node: BTreeMap<&str, &str> = BTreeMap::new();
    for c in sent {
        for n in &c.nodes {
            by_node.entry(n.as_str()).or_insert(c.command_id.as_str());
        }
    }
    let mut found: Vec<(String, Vec<Key>)> = Vec::new();
    let mut unsent = Vec::new();
    for k in keys {
        match by_node.get(k.resource_id.as_str()) {
            Some(cid) => match found.iter_mut().find(|(c, _)| c == cid) {
                Some((_, ks)) => ks.push(k.clone()),
                None => found.push(((*cid).to_owned(), vec![k.clone()])),
            },
            None => unsent.push(k.clone()),
        }
    }
    (found, unsent)
}

fn executed(action: ActionKind, reference: &str, keys: &[Key]) -> Executed {
    Executed {
        action,
        reference: reference.to_owned(),
        resources: keys.iter().map(|k| k.resource_id.clone()).collect(),
    }
}

/// The already linked part of a step's claims, one entry per reference.
fn already_sent(action: ActionKind, claims: &Claims) -> Vec<Executed> {
    let mut out: Vec<Executed> = Vec::new();
    for (k, reference) in &claims.sent {
        match out.iter_mut().find(|e| &e.reference == reference) {
            Some(e) => e.resources.push(k.resource_id.clone()),
            None => out.push(executed(action, reference, std::slice::from_ref(k))),
        }
    }
    out
}

pub struct Runner<'a> {
    pub ledger: &'a Ledger,
    pub remediator: &'a Remediator,
    pub function: &'a str,
    pub now: i64,
    pub deadline: SystemTime,
    pub margin: Duration,
    /// This sweep's unfinished claims as loaded before planning (no need to claim them again).
    pub own: &'a BTreeMap<Key, i64>,
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
            done.extend(self.step(work, step).await?);
        }
        Ok((done, Vec::new()))
    }

    /// Claims `keys` for the sweep; the ones already known as its own are not written again.
    async fn claim(&self, work: &Work, keys: &[Key]) -> Result<Claims, RemediatorError> {
        let (known, unknown): (Vec<Key>, Vec<Key>) =
            keys.iter().cloned().partition(|k| self.own.contains_key(k));
        let mut claims = self
            .ledger
            .begin_attempts(&work.account, &unknown, &work.sweep_id, self.now)
            .await?;
        claims.own.extend(known.into_iter().map(|k| {
            let at = self.own.get(&k).copied().unwrap_or(self.now);
            (k, at)
        }));
        Ok(claims)
    }

    /// Own claims of patch keys: links the ones a command of this sweep already reached and
    /// returns them, with the keys still to send.
    async fn recover_patch(
        &self,
        work: &Work,
        own: &[(Key, i64)],
    ) -> Result<(Vec<Executed>, Vec<Key>), RemediatorError> {
        let Some(since) = own.iter().map(|(_, at)| *at).min() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let sent = self
            .remediator
            .sent_patch_commands(self.function, &work.sweep_id, since - CLOCK_SKEW_SECONDS)
            .await?;
        let keys: Vec<Key> = own.iter().map(|(k, _)| k.clone()).collect();
        let (found, unsent) = reached(&keys, &sent);
        let mut done = Vec::new();
        for (cid, ks) in found {
            self.ledger
                .link(&work.account, &ks, &cid, &work.sweep_id)
                .await?;
            tracing::info!(command_id = %cid, nodes = ks.len(), "earlier patch send recovered");
            done.push(executed(ActionKind::Patch, &cid, &ks));
        }
        Ok((done, unsent))
    }

    async fn step(&self, work: &Work, step: &Step) -> Result<Vec<Executed>, RemediatorError> {
        let acct = work.account.as_str();
        let sid = work.sweep_id.as_str();
        match step {
            Step::Patch { .. } => {
                let claims = self.claim(work, &step_keys(step)).await?;
                let mut done = already_sent(ActionKind::Patch, &claims);
                let (recovered, unsent) = self.recover_patch(work, &claims.own).await?;
                done.extend(recovered);
                let mut fresh = claims.fresh;
                fresh.extend(unsent);
                if fresh.is_empty() {
                    return Ok(done);
                }
                let ids: Vec<String> = fresh.iter().map(|k| k.resource_id.clone()).collect();
                let cid = match self
                    .remediator
                    .patch(&ids, &work.patch, self.function, sid)
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        // Unless SSM rejected it, the command may have gone out (a 5xx, a
                        // timeout, no id): the claims stay, and the retry looks it up first.
                        if e.gives_back() {
                            self.give_back(work, &fresh).await;
                        }
                        return Err(e.into());
                    }
                };
                self.ledger.link(acct, &fresh, &cid, sid).await?;
                tracing::info!(command_id = %cid, nodes = ids.len(), "patch install sent");
                done.push(executed(ActionKind::Patch, &cid, &fresh));
                Ok(done)
            }
            Step::Associations { ids, keys } => {
                let claims = self.claim(work, keys).await?;
                if !keys.is_empty() && claims.fresh.is_empty() && claims.own.is_empty() {
                    return Ok(Vec::new());
                }
                let resumed = !claims.own.is_empty();
                let mut open = claims.fresh;
                open.extend(claims.own.into_iter().map(|(k, _)| k));
                // StartAssociationsOnce has no token: a retried step, or a batch whose
                // attempts were recorded with the first one, skips the ids the sweep ran.
                let ran = if resumed || keys.is_empty() {
                    self.ledger.association_runs(acct, sid).await?
                } else {
                    BTreeSet::new()
                };
                let to_run: Vec<String> =
                    ids.iter().filter(|i| !ran.contains(*i)).cloned().collect();
                if !to_run.is_empty() {
                    if let Err(e) = self.remediator.associations(&to_run).await {
                        if e.gives_back() {
                            self.give_back(work, &open).await;
                        }
                        return Err(e.into());
                    }
                    self.ledger
                        .record_association_runs(acct, sid, &to_run, self.now)
                        .await?;
                }
                let reference = ids.join(",");
                self.ledger
                    .link(acct, &open, &format!("associations:{reference}"), sid)
                    .await?;
                Ok(vec![executed(ActionKind::Association, &reference, &open)])
            }
            Step::Automation { run } => {
                let claims = self.claim(work, &step_keys(step)).await?;
                if !claims.sent.is_empty() {
                    return Ok(already_sent(ActionKind::Automation, &claims));
                }
                let mut open = claims.fresh;
                open.extend(claims.own.into_iter().map(|(k, _)| k));
                // The token makes a retried start return the same execution.
                let token = client_token(&[self.function, sid, &run.runbook, &run.resource_id]);
                let id = match self.remediator.automation(run, &token).await {
                    Ok(id) => id,
                    Err(e) => {
                        if e.gives_back() {
                            self.give_back(work, &open).await;
                        }
                        return Err(e.into());
                    }
                };
                self.ledger.link(acct, &open, &id, sid).await?;
                Ok(vec![executed(ActionKind::Automation, &id, &open)])
            }
            Step::Settle { keys, since } => {
                let (patch, other): (Vec<Key>, Vec<Key>) = keys
                    .iter()
                    .cloned()
                    .partition(|k| k.compliance_type == PATCH);
                let own: Vec<(Key, i64)> = patch.into_iter().map(|k| (k, *since)).collect();
                let (done, mut unsent) = self.recover_patch(work, &own).await?;
                // Whether an association run or automation went out is not known from here:
                // giving the claim back lets a later sweep decide afresh.
                unsent.extend(other);
                self.ledger.abandon(acct, &unsent, sid).await?;
                Ok(done)
            }
        }
    }

    /// A call that was rejected had no effect: the claims are given back so a later sweep may
    /// run them.
    async fn give_back(&self, work: &Work, keys: &[Key]) {
        if let Err(e) = self
            .ledger
            .abandon(&work.account, keys, &work.sweep_id)
            .await
        {
            tracing::warn!(error = %e, "could not give back attempts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::is_own_claim;

    fn patch(n: &str) -> Key {
        Key::new(n, PATCH)
    }

    #[test]
    fn only_a_record_of_this_sweep_without_a_reference_is_its_own_claim() {
        assert!(is_own_claim("s1", false, "s1"));
        assert!(!is_own_claim("s1", true, "s1"), "linked: sent");
        assert!(!is_own_claim("s0", false, "s1"), "another sweep's attempt");
        assert!(!is_own_claim("", false, ""), "given back, no sweep");
    }

    #[test]
    fn own_claims_outside_every_step_settle_first() {
        let steps = vec![Step::Patch {
            nodes: vec!["i-1".into(), "i-2".into()],
        }];
        let own = BTreeMap::from([
            (patch("i-2"), 50),
            (patch("i-9"), 40),
            (Key::new("i-3", ASSOCIATION), 45),
        ]);
        let out = with_own_claims(steps.clone(), &own);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Step::Settle {
                keys: vec![Key::new("i-3", ASSOCIATION), patch("i-9")],
                since: 40
            }
        );
        assert_eq!(out[1], steps[0]);
        // Everything covered: the steps are unchanged.
        let covered = BTreeMap::from([(patch("i-1"), 5)]);
        assert_eq!(with_own_claims(steps.clone(), &covered), steps);
    }

    #[test]
    fn claims_a_command_reached_are_split_from_the_unsent() {
        let sent = vec![
            SentCommand {
                command_id: "c1".into(),
                nodes: vec!["i-1".into(), "i-2".into()],
            },
            SentCommand {
                command_id: "c2".into(),
                nodes: vec!["i-4".into()],
            },
        ];
        let keys = [patch("i-1"), patch("i-3"), patch("i-4"), patch("i-2")];
        let (found, unsent) = reached(&keys, &sent);
        assert_eq!(
            found,
            vec![
                ("c1".to_owned(), vec![patch("i-1"), patch("i-2")]),
                ("c2".to_owned(), vec![patch("i-4")]),
            ]
        );
        assert_eq!(unsent, vec![patch("i-3")]);
        let (none, all) = reached(&keys, &[]);
        assert!(none.is_empty());
        assert_eq!(all, keys.to_vec());
    }

    #[test]
    fn already_linked_claims_are_reported_once_per_reference() {
        let claims = Claims {
            sent: vec![
                (patch("i-1"), "c1".into()),
                (patch("i-2"), "c2".into()),
                (patch("i-3"), "c1".into()),
            ],
            ..Claims::default()
        };
        let out = already_sent(ActionKind::Patch, &claims);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].reference, "c1");
        assert_eq!(out[0].resources, vec!["i-1", "i-3"]);
        assert_eq!(out[1].resources, vec!["i-2"]);
    }

    #[test]
    fn settle_steps_survive_a_checkpoint() {
        let s = Step::Settle {
            keys: vec![patch("i-1")],
            since: 7,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Step>(&text).unwrap(), s);
    }
}
