//! Executing a plan: the plan becomes ordered steps; each step records its attempts in the
//! ledger before it acts, and the run stops (leaving the rest as a checkpoint) when the
//! invocation's remaining time drops under the margin.
//!
//! Delivery is at-least-once, so any step may be a retry of one that failed or died halfway.
//! A record this sweep claimed but linked to nothing is its own unfinished claim: the retry
//! includes it, and for a patch step first asks Run Command's history whether the earlier
//! delivery's SendCommand went out (the sweep is named in the command's comment), so each
//! node gets one command per sweep and none is left claimed with nothing sent.
//!
//! Other deliveries plan from the same ledger at the same time (a sweep and a compliance
//! event, two sweeps): a claim is conditional on the record as this delivery's plan read it,
//! so of two that planned one node only the first claims it; the other skips it
//! (`claimed-concurrently`), sends nothing and counts nothing. Another sweep's claim older than
//! any invocation lives was left by a delivery that died for good: its command, when Run
//! Command's history has one (one look-up per such sweep), is linked; else the claim is void
//! and taken afresh (an association's too). A runbook's stays an attempt of unknown outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::RemediatorError;
use crate::lease_store::SweepLease;
use crate::ledger::{Claims, Ledger, Seen, needs_renewal, voidable};
use crate::plan::{
    ASSOCIATION, ActionKind, AutomationRun, Key, MAX_ASSOCIATIONS_PER_CALL, PATCH, Plan, Reason,
    Skip,
};
use crate::policy::PatchAction;
use crate::remediate::{Remediator, SentCommand, client_token};

/// How far Run Command's clock may be behind ours when looking for an earlier send.
const CLOCK_SKEW_SECONDS: i64 = 300;
/// An own claim is renewed before acting once it is this close to passing for stale: more than
/// a step's look-up and send take.
const RENEW_MARGIN_SECONDS: i64 = 60;

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
    /// sweep that reached them, or given back; a runbook's claim is kept, an attempt of
    /// unknown outcome. `since`: the earliest claim time.
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
    /// The remediation records as the plan read them (claims are conditional on them);
    /// `None` in a checkpoint written before records were versioned.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "seen_list")]
    pub read: Option<BTreeMap<Key, Seen>>,
}

/// A map keyed by [`Key`] as a JSON list of pairs (JSON object keys are strings).
mod seen_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::ledger::Seen;
    use crate::plan::Key;

    pub fn serialize<S: Serializer>(
        m: &Option<BTreeMap<Key, Seen>>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        m.as_ref()
            .map(|m| m.iter().collect::<Vec<_>>())
            .serialize(ser)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<BTreeMap<Key, Seen>>, D::Error> {
        Ok(Option::<Vec<(Key, Seen)>>::deserialize(de)?.map(|v| v.into_iter().collect()))
    }
}

/// What a run did: side effects, steps left for a continuation, keys skipped at claim time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ran {
    pub executed: Vec<Executed>,
    pub rest: Vec<Step>,
    pub skipped: Vec<Skip>,
}

fn skip(k: &Key, reason: Reason, detail: Option<String>) -> Skip {
    Skip {
        resource_id: k.resource_id.clone(),
        compliance_type: k.compliance_type.clone(),
        reason,
        detail,
    }
}

/// Another sweep's dead patch claims among `keys`, per sweep, with the earliest claim time.
pub fn stale_claims(
    keys: impl IntoIterator<Item = Key>,
    read: Option<&BTreeMap<Key, Seen>>,
) -> BTreeMap<String, (i64, Vec<Key>)> {
    let mut out: BTreeMap<String, (i64, Vec<Key>)> = BTreeMap::new();
    for k in keys {
        let Some((sweep, at)) = read
            .and_then(|m| m.get(&k))
            .and_then(|s| s.stale_of.as_ref().map(|sw| (sw, s.claimed_at)))
        else {
            continue;
        };
        let e = out.entry(sweep.clone()).or_insert((at, Vec::new()));
        e.0 = e.0.min(at);
        e.1.push(k);
    }
    out
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
    // One step for every association batch: the nodes' records are linked once all the
    // batches ran. Linked after the first one, a delivery dying before the next left nodes
    // whose associations never ran looking attempted (cooldown) to its redelivery.
    let ids: Vec<String> = plan.association_batches.iter().flatten().cloned().collect();
    if !ids.is_empty() {
        out.push(Step::Associations {
            ids,
            keys: assoc_keys,
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

/// The records as read of the keys `steps` claim: what a checkpoint of them keeps (a sweep
/// reads every online node's records, far more than it plans).
pub fn read_for(steps: &[Step], seen: &BTreeMap<Key, Seen>) -> BTreeMap<Key, Seen> {
    steps
        .iter()
        .flat_map(step_keys)
        .filter_map(|k| seen.get(&k).map(|s| (k, s.clone())))
        .collect()
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

/// The ids of a step not yet run by the sweep, in the step's order, each once.
pub fn associations_to_run(ids: &[String], ran: &BTreeSet<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    ids.iter()
        .filter(|i| !ran.contains(*i) && seen.insert(i.as_str()))
        .cloned()
        .collect()
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
    /// The longest an invocation lives (the function's timeout): a claim older than that is
    /// held by no live delivery.
    pub stale_after: Duration,
    /// The sweep's lease, checked before each send (none: nothing else runs the sweep).
    pub lease: Option<&'a SweepLease>,
}

impl Runner<'_> {
    /// A delivery whose lease expired or was taken over sends nothing more: its claims stay
    /// the sweep's, for the holder to look up and send.
    async fn may_send(&self) -> Result<(), RemediatorError> {
        match self.lease {
            Some(lease) => lease.check().await,
            None => Ok(()),
        }
    }

    fn short_of_time(&self) -> bool {
        self.deadline
            .duration_since(SystemTime::now())
            .map_or(true, |left| left < self.margin)
    }

    /// Seconds after which an own claim is renewed before acting (`None`: never).
    fn renew_after(&self) -> Option<i64> {
        let stale = i64::try_from(self.stale_after.as_secs()).unwrap_or(i64::MAX);
        (stale > 0).then(|| stale.saturating_sub(RENEW_MARGIN_SECONDS))
    }

    /// Runs steps until done or short of time; returns what ran and what is left.
    pub async fn run(&self, work: &Work) -> Result<Ran, RemediatorError> {
        let mut ran = Ran::default();
        let found = self.stale_lookups(work).await?;
        for (i, step) in work.steps.iter().enumerate() {
            // At least one step per invocation, so a continuation always makes progress.
            if i > 0 && self.short_of_time() {
                tracing::warn!(
                    remaining_steps = work.steps.len() - i,
                    "sweep short of time: checkpointing"
                );
                ran.rest = work.steps[i..].to_vec();
                return Ok(ran);
            }
            let done = self.step(work, step, &found, &mut ran.skipped).await?;
            ran.executed.extend(done);
        }
        Ok(ran)
    }

    /// Run Command's history of every sweep that left dead patch claims in the steps: one
    /// look-up per sweep, whatever the number of its claims.
    async fn stale_lookups(
        &self,
        work: &Work,
    ) -> Result<BTreeMap<String, Vec<SentCommand>>, RemediatorError> {
        let keys = work.steps.iter().flat_map(|s| match s {
            Step::Patch { .. } => step_keys(s),
            _ => Vec::new(),
        });
        let mut out = BTreeMap::new();
        for (sweep, (since, ks)) in stale_claims(keys, work.read.as_ref()) {
            let sent = self
                .remediator
                .sent_patch_commands(self.function, &sweep, since - CLOCK_SKEW_SECONDS)
                .await?;
            tracing::info!(sweep_id = %sweep, claims = ks.len(), commands = sent.len(), "stale claims looked up");
            out.insert(sweep, sent);
        }
        Ok(out)
    }

    /// Links the dead claims of other sweeps among `keys` that those sweeps' commands reached;
    /// returns the keys still to claim.
    async fn adopt(
        &self,
        work: &Work,
        keys: Vec<Key>,
        found: &BTreeMap<String, Vec<SentCommand>>,
        skipped: &mut Vec<Skip>,
    ) -> Result<Vec<Key>, RemediatorError> {
        let mut adopted: BTreeSet<Key> = BTreeSet::new();
        for (sweep, (_, ks)) in stale_claims(keys.iter().cloned(), work.read.as_ref()) {
            let (reached, _) = reached(&ks, found.get(&sweep).map_or(&[][..], Vec::as_slice));
            for (cid, linked) in reached {
                self.ledger
                    .link(&work.account, &linked, &cid, &sweep)
                    .await?;
                tracing::info!(command_id = %cid, sweep_id = %sweep, nodes = linked.len(), "stale claims linked to their command");
                for k in linked {
                    skipped.push(skip(&k, Reason::EarlierCommand, Some(cid.clone())));
                    adopted.insert(k);
                }
            }
        }
        Ok(keys.into_iter().filter(|k| !adopted.contains(k)).collect())
    }

    /// Claims `keys` for the sweep; the ones already known as its own are not written again
    /// unless they are old enough to pass for stale (then renewed). Keys another delivery
    /// claimed since the plan read them are skipped.
    async fn claim(
        &self,
        work: &Work,
        keys: &[Key],
        skipped: &mut Vec<Skip>,
    ) -> Result<Claims, RemediatorError> {
        let (known, unknown): (Vec<Key>, Vec<Key>) =
            keys.iter().cloned().partition(|k| self.own.contains_key(k));
        let renew_after = self.renew_after();
        let mut claims = self
            .ledger
            .begin_attempts(
                &work.account,
                &unknown,
                &work.sweep_id,
                self.now,
                work.read.as_ref(),
                renew_after,
            )
            .await?;
        let now = chrono::Utc::now().timestamp();
        for k in known {
            let at = self.own.get(&k).copied().unwrap_or(self.now);
            let seen = work.read.as_ref().and_then(|m| m.get(&k));
            if let Some(seen) = seen.filter(|s| needs_renewal(s.held_at, now, renew_after))
                && !self
                    .ledger
                    .renew(&work.account, &k, &work.sweep_id, seen.rev)
                    .await?
            {
                claims.lost.push(k);
                continue;
            }
            claims.own.push((k, at));
        }
        for k in &claims.lost {
            tracing::warn!(node = %k.resource_id, compliance_type = %k.compliance_type, "claimed concurrently: skipped");
        }
        skipped.extend(
            claims
                .lost
                .iter()
                .map(|k| skip(k, Reason::ClaimedConcurrently, None)),
        );
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

    async fn step(
        &self,
        work: &Work,
        step: &Step,
        found: &BTreeMap<String, Vec<SentCommand>>,
        skipped: &mut Vec<Skip>,
    ) -> Result<Vec<Executed>, RemediatorError> {
        let acct = work.account.as_str();
        let sid = work.sweep_id.as_str();
        match step {
            Step::Patch { .. } => {
                let keys = self.adopt(work, step_keys(step), found, skipped).await?;
                let claims = self.claim(work, &keys, skipped).await?;
                let mut done = already_sent(ActionKind::Patch, &claims);
                let (recovered, unsent) = self.recover_patch(work, &claims.own).await?;
                done.extend(recovered);
                let mut fresh = claims.fresh;
                fresh.extend(unsent);
                if fresh.is_empty() {
                    return Ok(done);
                }
                let ids: Vec<String> = fresh.iter().map(|k| k.resource_id.clone()).collect();
                self.may_send().await?;
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
                let claims = self.claim(work, keys, skipped).await?;
                let mut done = already_sent(ActionKind::Association, &claims);
                let mut open = claims.fresh;
                open.extend(claims.own.into_iter().map(|(k, _)| k));
                // StartAssociationsOnce has no token. What runs is decided per association id
                // against the ids this sweep ran in any delivery and batch, never by the
                // claims of the nodes: a redelivery's plan may batch the ids differently
                // (ids moved, some no longer planned, new ones) or mix sent and fresh claims.
                let ran = self.ledger.association_runs(acct, sid).await?;
                let to_run = associations_to_run(ids, &ran);
                if to_run.is_empty() && open.is_empty() {
                    return Ok(done);
                }
                // Each call recorded before the next: a failure later keeps what ran, and the
                // claims are given back only while nothing of the sweep's has run.
                let mut any_ran = !ran.is_empty();
                for batch in to_run.chunks(MAX_ASSOCIATIONS_PER_CALL) {
                    self.may_send().await?;
                    if let Err(e) = self.remediator.associations(batch).await {
                        if e.gives_back() && !any_ran {
                            self.give_back(work, &open).await;
                        }
                        return Err(e.into());
                    }
                    any_ran = true;
                    self.ledger
                        .record_association_runs(acct, sid, batch, self.now)
                        .await?;
                }
                let reference = ids.join(",");
                self.ledger
                    .link(acct, &open, &format!("associations:{reference}"), sid)
                    .await?;
                done.push(executed(ActionKind::Association, &reference, &open));
                Ok(done)
            }
            Step::Automation { run } => {
                let claims = self.claim(work, &step_keys(step), skipped).await?;
                if !claims.sent.is_empty() {
                    return Ok(already_sent(ActionKind::Automation, &claims));
                }
                if claims.fresh.is_empty() && claims.own.is_empty() {
                    // Claimed concurrently: the other delivery starts it.
                    return Ok(Vec::new());
                }
                let mut open = claims.fresh;
                open.extend(claims.own.into_iter().map(|(k, _)| k));
                // The token makes a retried start return the same execution.
                let token = client_token(&[self.function, sid, &run.runbook, &run.resource_id]);
                self.may_send().await?;
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
                // Whether an association run or automation went out is not known from here. An
                // association run repeats safely: giving its claim back lets a later sweep
                // decide afresh. A runbook's claim is kept: an attempt of unknown outcome.
                unsent.extend(other.into_iter().filter(voidable));
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
    fn dead_claims_are_grouped_per_sweep_from_their_earliest_claim() {
        let seen = |sweep: Option<&str>, at| Seen {
            rev: 1,
            held_at: at,
            claimed_at: at,
            stale_of: sweep.map(str::to_owned),
        };
        let read = BTreeMap::from([
            (patch("i-1"), seen(Some("s0"), 50)),
            (patch("i-2"), seen(Some("s0"), 40)),
            (patch("i-3"), seen(Some("s9"), 70)),
            (patch("i-4"), seen(None, 10)),
        ]);
        let keys = [
            patch("i-1"),
            patch("i-2"),
            patch("i-3"),
            patch("i-4"),
            patch("i-5"),
        ];
        let got = stale_claims(keys.iter().cloned(), Some(&read));
        assert_eq!(
            got,
            BTreeMap::from([
                ("s0".to_owned(), (40, vec![patch("i-1"), patch("i-2")])),
                ("s9".to_owned(), (70, vec![patch("i-3")])),
            ])
        );
        assert!(stale_claims(keys.iter().cloned(), None).is_empty());
    }

    #[test]
    fn a_checkpoint_keeps_only_the_records_its_steps_claim() {
        let seen = BTreeMap::from([
            (patch("i-1"), Seen::default()),
            (patch("i-2"), Seen::default()),
            (Key::new("i-1", ASSOCIATION), Seen::default()),
        ]);
        let steps = vec![Step::Patch {
            nodes: vec!["i-1".into(), "i-3".into()],
        }];
        assert_eq!(
            read_for(&steps, &seen),
            BTreeMap::from([(patch("i-1"), Seen::default())])
        );
    }

    #[test]
    fn a_checkpoint_keeps_the_records_as_read_and_an_old_one_reads_as_unversioned() {
        let work = Work {
            sweep_id: "s1".into(),
            account: "a".into(),
            patch: crate::policy::default_policy().unwrap().patch,
            steps: vec![Step::Patch {
                nodes: vec!["i-1".into()],
            }],
            read: Some(BTreeMap::from([(
                patch("i-1"),
                Seen {
                    rev: 2,
                    held_at: 9,
                    claimed_at: 8,
                    stale_of: Some("s0".into()),
                },
            )])),
        };
        let text = serde_json::to_string(&work).unwrap();
        assert_eq!(serde_json::from_str::<Work>(&text).unwrap(), work);
        let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
        old.as_object_mut().unwrap().remove("read");
        let old: Work = serde_json::from_value(old).unwrap();
        assert_eq!(old.read, None);
    }

    #[test]
    fn association_ids_run_by_any_earlier_delivery_or_batch_are_not_run_again() {
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // The first delivery ran a1..a3 as one batch; the redelivery's plan batches a2 with a
        // new a4 (a1 no longer planned, a3 moved to another batch): only a4 runs.
        let ran: BTreeSet<String> = ids(&["a1", "a2", "a3"]).into_iter().collect();
        assert_eq!(associations_to_run(&ids(&["a2", "a4"]), &ran), ids(&["a4"]));
        assert!(associations_to_run(&ids(&["a3"]), &ran).is_empty());
        // Nothing ran yet: every id, once.
        assert_eq!(
            associations_to_run(&ids(&["a5", "a5", "a6"]), &BTreeSet::new()),
            ids(&["a5", "a6"])
        );
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
