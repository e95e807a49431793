use super::*;
use crate::policy::default_policy;

fn node(i: usize) -> String {
    format!("i-{i:017x}")
}

fn fleet(n: usize) -> Fleet {
    Fleet {
        online: (0..n).map(node).collect(),
        ..Fleet::default()
    }
}

fn patch(i: usize) -> Finding {
    Finding {
        patch_states: vec!["Missing".into()],
        ..Finding::new(&node(i), PATCH)
    }
}

fn open_policy() -> Policy {
    let mut p = default_policy().unwrap();
    p.budget.max_nodes = None;
    p.budget.max_percent = None;
    p
}

fn run(findings: &[Finding], policy: &Policy, ledger: &LedgerState, fleet: &Fleet) -> Plan {
    plan(&Input {
        findings,
        policy,
        ledger,
        fleet,
        now: 1_000_000,
        calendar_open: None,
        verify: true,
        automation_role: None,
    })
}

fn reasons(p: &Plan) -> BTreeMap<String, Reason> {
    p.skipped
        .iter()
        .chain(&p.deferred)
        .map(|s| (format!("{}/{}", s.resource_id, s.compliance_type), s.reason))
        .collect()
}

#[test]
fn patch_batches_hold_at_most_fifty_ids_and_cover_every_node_once() {
    let findings: Vec<Finding> = (0..173).map(patch).collect();
    let p = run(
        &findings,
        &open_policy(),
        &LedgerState::default(),
        &fleet(200),
    );
    assert_eq!(p.patch_batches.len(), 4);
    assert!(
        p.patch_batches
            .iter()
            .all(|b| !b.is_empty() && b.len() <= 50)
    );
    let all: BTreeSet<&String> = p.patch_batches.iter().flatten().collect();
    assert_eq!(all.len(), 173);
    assert_eq!(p.targets.len(), 173);
    let mut policy = open_policy();
    policy.patch.batch_size = 20;
    let p = run(&findings, &policy, &LedgerState::default(), &fleet(200));
    assert!(p.patch_batches.iter().all(|b| b.len() <= 20));
    assert_eq!(p.patch_batches.len(), 9);
}

#[test]
fn budget_caps_nodes_by_count_and_by_percent_of_the_online_fleet() {
    let findings: Vec<Finding> = (0..60).map(patch).collect();
    let mut policy = open_policy();
    policy.budget.max_nodes = Some(10);
    let p = run(&findings, &policy, &LedgerState::default(), &fleet(200));
    assert_eq!(p.target_nodes().len(), 10);
    assert_eq!(p.deferred.len(), 50);
    assert!(p.deferred.iter().all(|d| d.reason == Reason::Budget));
    assert_eq!((p.budget.used, p.budget.limit), (10, 10));

    policy.budget.max_nodes = Some(100);
    policy.budget.max_percent = Some(5.0);
    let p = run(&findings, &policy, &LedgerState::default(), &fleet(200));
    assert_eq!(p.target_nodes().len(), 10, "5% of 200 online nodes");
}

#[test]
fn budget_counts_nodes_not_findings_and_prefers_severe_findings() {
    let mut findings = vec![patch(1), patch(2), patch(3)];
    findings[2].severity = Some("CRITICAL".into());
    let mut assoc = Finding::new(&node(3), ASSOCIATION);
    assoc.association_ids = vec!["a-1".into()];
    findings.push(assoc);
    let mut f = fleet(10);
    f.known_associations.insert("a-1".into());
    let mut policy = open_policy();
    policy.budget.max_nodes = Some(1);
    let p = run(&findings, &policy, &LedgerState::default(), &f);
    assert_eq!(p.target_nodes(), BTreeSet::from([node(3).as_str()]));
    assert_eq!(p.targets.len(), 2, "both findings of the chosen node");
    assert_eq!(p.association_batches, vec![vec!["a-1".to_owned()]]);
}

#[test]
fn exempt_and_excepted_nodes_are_skipped_until_the_exception_expires() {
    let findings = vec![patch(1), patch(2), patch(3), patch(4)];
    let mut f = fleet(10);
    f.exempt.insert(node(1));
    let mut ledger = LedgerState::default();
    ledger
        .exceptions
        .insert(Key::new(&node(2), PATCH), 2_000_000);
    ledger.exceptions.insert(Key::new(&node(3), "*"), 2_000_000);
    ledger.exceptions.insert(Key::new(&node(4), PATCH), 999_999); // expired
    let p = run(&findings, &open_policy(), &ledger, &f);
    let r = reasons(&p);
    assert_eq!(r[&format!("{}/Patch", node(1))], Reason::ExemptTag);
    assert_eq!(r[&format!("{}/Patch", node(2))], Reason::Exception);
    assert_eq!(r[&format!("{}/Patch", node(3))], Reason::Exception);
    assert_eq!(p.target_nodes(), BTreeSet::from([node(4).as_str()]));
}

#[test]
fn offline_stopped_and_terminated_nodes_are_skipped_never_failed() {
    let findings = vec![patch(1), patch(2), patch(99)];
    let mut f = fleet(3);
    f.online.remove(&node(1));
    f.not_online.insert(node(1), "ConnectionLost".into());
    let p = run(&findings, &open_policy(), &LedgerState::default(), &f);
    let r = reasons(&p);
    assert_eq!(r[&format!("{}/Patch", node(1))], Reason::NodeNotOnline);
    assert_eq!(r[&format!("{}/Patch", node(99))], Reason::NodeNotManaged);
    assert_eq!(p.target_nodes(), BTreeSet::from([node(2).as_str()]));
    assert!(p.deferred.is_empty());
}

#[test]
fn not_applicable_patches_are_not_missing() {
    let mut na = patch(1);
    na.patch_states = vec!["NotApplicable".into(), "NotApplicable".into()];
    let mut mixed = patch(2);
    mixed.patch_states = vec!["NotApplicable".into(), "Missing".into()];
    let unknown = Finding::new(&node(3), PATCH);
    let p = run(
        &[na, mixed, unknown],
        &open_policy(),
        &LedgerState::default(),
        &fleet(5),
    );
    assert_eq!(
        reasons(&p)[&format!("{}/Patch", node(1))],
        Reason::NotApplicableOnly
    );
    assert_eq!(
        p.target_nodes(),
        BTreeSet::from([node(2).as_str(), node(3).as_str()])
    );
}

#[test]
fn cooldown_retry_window_and_retry_limit() {
    let policy = open_policy();
    let now = 1_000_000;
    let at = |mins: i64, status, attempts| Attempt {
        attempts,
        last_attempt_at: now - mins * 60,
        status,
        sweep_id: "s".into(),
    };
    let mut ledger = LedgerState::default();
    ledger
        .attempts
        .insert(Key::new(&node(1), PATCH), at(10, AttemptStatus::Pending, 1));
    ledger.attempts.insert(
        Key::new(&node(2), PATCH),
        at(400, AttemptStatus::Succeeded, 1),
    );
    ledger
        .attempts
        .insert(Key::new(&node(3), PATCH), at(30, AttemptStatus::Failed, 1));
    ledger
        .attempts
        .insert(Key::new(&node(4), PATCH), at(90, AttemptStatus::Failed, 1));
    ledger
        .attempts
        .insert(Key::new(&node(5), PATCH), at(900, AttemptStatus::Failed, 3));
    ledger.attempts.insert(
        Key::new(&node(6), PATCH),
        at(90, AttemptStatus::Undeliverable, 0),
    );
    let findings: Vec<Finding> = (1..=6).map(patch).collect();
    let p = run(&findings, &policy, &ledger, &fleet(10));
    let r = reasons(&p);
    assert_eq!(r[&format!("{}/Patch", node(1))], Reason::Cooldown);
    assert_eq!(
        r[&format!("{}/Patch", node(3))],
        Reason::Cooldown,
        "retry waits retryAfter"
    );
    assert_eq!(r[&format!("{}/Patch", node(5))], Reason::RetryLimit);
    assert_eq!(
        p.target_nodes(),
        BTreeSet::from([node(2).as_str(), node(4).as_str(), node(6).as_str()]),
        "cooldown over, failed retry due, undeliverable retry due"
    );
}

#[test]
fn change_calendar_closed_defers_everything_that_would_run() {
    let mut f = fleet(5);
    f.exempt.insert(node(1));
    let findings = vec![patch(1), patch(2), patch(3)];
    let p = plan(&Input {
        findings: &findings,
        policy: &open_policy(),
        ledger: &LedgerState::default(),
        fleet: &f,
        now: 0,
        calendar_open: Some(false),
        verify: false,
        automation_role: None,
    });
    assert!(p.is_empty() && p.patch_batches.is_empty());
    assert_eq!(p.deferred.len(), 2);
    assert!(
        p.deferred
            .iter()
            .all(|d| d.reason == Reason::ChangeCalendarClosed)
    );
    assert_eq!(
        p.skipped.len(),
        1,
        "the exempt node is a skip, not a deferral"
    );
}

#[test]
fn associations_resolve_through_items_or_the_node_targets() {
    let mut f = fleet(5);
    f.known_associations = BTreeSet::from(["real".to_owned(), "other".to_owned()]);
    f.associations
        .insert(node(2), BTreeSet::from(["other".to_owned()]));
    let mut a1 = Finding::new(&node(1), ASSOCIATION);
    a1.association_ids = vec!["real".into()];
    let mut a2 = Finding::new(&node(2), ASSOCIATION);
    a2.association_ids = vec!["gone".into()];
    let mut a3 = Finding::new(&node(3), ASSOCIATION);
    a3.association_ids = vec!["gone".into()];
    let p = run(&[a1, a2, a3], &open_policy(), &LedgerState::default(), &f);
    assert_eq!(
        p.association_batches,
        vec![vec!["other".to_owned(), "real".to_owned()]]
    );
    assert_eq!(
        reasons(&p)[&format!("{}/Association", node(3))],
        Reason::NoAssociation
    );
    let many: Vec<Finding> = (0..25)
        .map(|i| {
            let mut f = Finding::new(&node(i), ASSOCIATION);
            f.association_ids = vec![format!("assoc-{i:02}")];
            f
        })
        .collect();
    let mut f = fleet(25);
    f.known_associations = (0..25).map(|i| format!("assoc-{i:02}")).collect();
    let p = run(&many, &open_policy(), &LedgerState::default(), &f);
    assert_eq!(p.association_batches.len(), 3);
    assert!(p.association_batches.iter().all(|b| b.len() <= 10));
}

#[test]
fn config_rules_map_to_runbooks_without_needing_a_managed_node() {
    let f = Finding::new("i-0fedcba9876543210", "config:ec2-imdsv2-check");
    let unknown = Finding::new("i-0fedcba9876543210", "config:some-other-rule");
    let p = plan(&Input {
        findings: &[f, unknown],
        policy: &default_policy().unwrap(),
        ledger: &LedgerState::default(),
        fleet: &Fleet::default(),
        now: 0,
        calendar_open: Some(true),
        verify: false,
        automation_role: Some("arn:aws:iam::123456789012:role/r"),
    });
    assert_eq!(p.automations.len(), 1);
    let a = &p.automations[0];
    assert_eq!(a.runbook, "AWSConfigRemediation-EnforceEC2InstanceIMDSv2");
    assert_eq!(
        a.parameters["InstanceId"],
        vec!["i-0fedcba9876543210".to_owned()]
    );
    assert_eq!(p.skipped[0].reason, Reason::NoAction);
}

#[test]
fn custom_types_need_a_policy_entry() {
    let mut policy = open_policy();
    let c = Finding::new(&node(1), "Custom:Baseline");
    let p = run(
        std::slice::from_ref(&c),
        &policy,
        &LedgerState::default(),
        &fleet(3),
    );
    assert_eq!(p.skipped[0].reason, Reason::NoAction);
    policy.custom.insert(
        "Custom:Baseline".into(),
        crate::policy::RunbookAction {
            runbook: "AWS-RunShellScript-Baseline".into(),
            parameters: BTreeMap::from([("InstanceId".into(), vec!["{{ resource_id }}".into()])]),
        },
    );
    let p = run(&[c], &policy, &LedgerState::default(), &fleet(3));
    assert_eq!(p.automations[0].parameters["InstanceId"], vec![node(1)]);
}

#[test]
fn success_is_only_reported_after_compliance_rechecks() {
    let mut ledger = LedgerState::default();
    let pending = Attempt {
        attempts: 1,
        last_attempt_at: 10,
        status: AttemptStatus::Succeeded,
        sweep_id: "s".into(),
    };
    ledger
        .attempts
        .insert(Key::new(&node(1), PATCH), pending.clone());
    ledger
        .attempts
        .insert(Key::new(&node(2), PATCH), pending.clone());
    ledger
        .attempts
        .insert(Key::new(&node(3), PATCH), pending.clone());
    ledger.attempts.insert(
        Key::new(&node(4), PATCH),
        Attempt {
            status: AttemptStatus::Failed,
            ..pending
        },
    );
    let mut f = fleet(5);
    f.online.remove(&node(3));
    // node 1 still non-compliant; 2 compliant now; 3 not scanned (offline); 4 failed.
    let p = run(&[patch(1)], &open_policy(), &ledger, &f);
    assert_eq!(p.verified, vec![Key::new(&node(2), PATCH)]);
}

#[test]
fn the_plan_is_deterministic_and_ignores_duplicate_findings() {
    let mut findings: Vec<Finding> = (0..80).map(patch).collect();
    findings.extend((0..80).rev().map(patch));
    let a = run(
        &findings,
        &open_policy(),
        &LedgerState::default(),
        &fleet(100),
    );
    findings.reverse();
    let b = run(
        &findings,
        &open_policy(),
        &LedgerState::default(),
        &fleet(100),
    );
    assert_eq!(a, b);
    assert_eq!(a.targets.len(), 80);
}

#[test]
fn disabled_actions_are_skipped() {
    let mut policy = open_policy();
    policy.patch.enabled = false;
    let p = run(&[patch(1)], &policy, &LedgerState::default(), &fleet(3));
    assert_eq!(p.skipped[0].reason, Reason::Disabled);
}
