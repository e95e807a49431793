//! One live delivery per sweep: the pure lease decision.
//!
//! SendCommand and StartAssociationsOnce have no idempotency token; a sweep's redelivery takes
//! the sweep's unlinked claims as its own and sends what Run Command's history does not show.
//! That is only safe while no other delivery of the same sweep is between its claim and its
//! send — a Lambda retry of the original event and the sweep's continuation are different
//! event ids, so the idempotency guard does not keep them apart. The lease does: one record per
//! sweep, held until the holder's deadline, handed to the continuation by a token the
//! continuation event carries, and marked when the sweep has nothing left to run.

use serde::{Deserialize, Serialize};

/// How far a sweep has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Planned and running in the delivery that planned it.
    Running,
    /// The rest is in the checkpoint, handed to a continuation.
    Continued,
    /// Every step ran: nothing is left to send.
    Done,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Running => "running",
            Stage::Continued => "continued",
            Stage::Done => "done",
        }
    }

    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "running" => Some(Stage::Running),
            "continued" => Some(Stage::Continued),
            "done" => Some(Stage::Done),
            _ => None,
        }
    }
}

/// The lease record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Token of the delivery holding the sweep (empty: given back).
    pub holder: String,
    /// Epoch milliseconds: the holder's deadline.
    pub until_ms: i64,
    pub stage: Stage,
    /// The continuation whose token is `holder` was published (known only after PutEvents
    /// answered).
    pub emitted: bool,
    /// Bumped by every write: a take is a compare-and-swap on it.
    pub version: i64,
}

/// Which delivery asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A delivery of the event that plans the sweep (first delivery or a retry of it).
    Plan,
    /// A continuation event of the sweep (its token came with the event).
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Take the lease. `resume`: run the stored checkpoint rather than planning again (the
    /// sweep already continued once, and its continuation may never have been published).
    Take { resume: bool },
    /// Another live delivery holds the sweep until `until_ms`.
    Busy { until_ms: i64 },
    /// A planning delivery of a sweep whose continuation was published: the continuation
    /// carries the sweep on; planning again would fork it.
    Continued,
    /// The sweep ran every step: a later delivery has nothing to send.
    Finished,
}

/// Decides what a delivery holding `token` may do with the sweep at `now_ms`.
pub fn decide(
    record: Option<&LeaseRecord>,
    delivery: Delivery,
    token: &str,
    now_ms: i64,
) -> LeaseDecision {
    let Some(r) = record else {
        return LeaseDecision::Take {
            resume: delivery == Delivery::Continue,
        };
    };
    let mine = !token.is_empty() && r.holder == token;
    if !mine && !r.holder.is_empty() && r.until_ms > now_ms {
        return LeaseDecision::Busy {
            until_ms: r.until_ms,
        };
    }
    match (r.stage, delivery) {
        (Stage::Done, _) => LeaseDecision::Finished,
        (_, Delivery::Continue) => LeaseDecision::Take { resume: true },
        (Stage::Running, Delivery::Plan) => LeaseDecision::Take { resume: false },
        (Stage::Continued, Delivery::Plan) if r.emitted && !mine => LeaseDecision::Continued,
        (Stage::Continued, Delivery::Plan) => LeaseDecision::Take { resume: true },
    }
}

/// Whether a holder may still send at `now_ms`: its lease must outlast the call by `guard_ms`.
pub fn may_send(record: Option<&LeaseRecord>, token: &str, now_ms: i64, guard_ms: i64) -> bool {
    record.is_some_and(|r| {
        r.holder == token && r.stage != Stage::Done && now_ms + guard_ms < r.until_ms
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, until_ms: i64, stage: Stage, emitted: bool) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            until_ms,
            stage,
            emitted,
            version: 3,
        }
    }

    use Delivery::{Continue, Plan};
    use LeaseDecision::*;

    #[test]
    fn a_first_delivery_takes_the_sweep() {
        assert_eq!(decide(None, Plan, "a", 10), Take { resume: false });
        // A continuation without a record (expired by TTL) still runs its checkpoint.
        assert_eq!(decide(None, Continue, "t", 10), Take { resume: true });
    }

    #[test]
    fn a_live_holder_keeps_every_other_delivery_out() {
        for stage in [Stage::Running, Stage::Continued, Stage::Done] {
            let r = rec("a", 100, stage, true);
            assert_eq!(decide(Some(&r), Plan, "b", 99), Busy { until_ms: 100 });
            assert_eq!(decide(Some(&r), Continue, "t", 99), Busy { until_ms: 100 });
        }
    }

    #[test]
    fn an_expired_or_given_back_lease_can_be_taken() {
        let expired = rec("a", 100, Stage::Running, false);
        assert_eq!(
            decide(Some(&expired), Plan, "b", 100),
            Take { resume: false }
        );
        let given_back = rec("", 0, Stage::Running, false);
        assert_eq!(
            decide(Some(&given_back), Plan, "b", 5),
            Take { resume: false }
        );
    }

    #[test]
    fn the_holder_takes_its_own_lease_again() {
        let r = rec("a", 100, Stage::Running, false);
        assert_eq!(decide(Some(&r), Plan, "a", 50), Take { resume: false });
        // An empty token never matches a given-back record.
        assert_eq!(
            decide(Some(&rec("", 100, Stage::Running, false)), Plan, "", 50),
            Take { resume: false }
        );
    }

    #[test]
    fn the_continuation_takes_the_sweep_handed_to_its_token_at_once() {
        // Handed over: held for the continuation's token until the handing delivery's deadline.
        let r = rec("t", 100, Stage::Continued, false);
        assert_eq!(decide(Some(&r), Continue, "t", 50), Take { resume: true });
        // The planning event's retry meets the hand-over as a live holder.
        assert_eq!(decide(Some(&r), Plan, "b", 50), Busy { until_ms: 100 });
    }

    #[test]
    fn a_planning_redelivery_never_plans_a_continued_sweep_again() {
        // The continuation was published: it carries the sweep on.
        let published = rec("t", 100, Stage::Continued, true);
        assert_eq!(decide(Some(&published), Plan, "b", 200), Continued);
        let given_back = rec("", 0, Stage::Continued, true);
        assert_eq!(decide(Some(&given_back), Plan, "b", 200), Continued);
        // Not known to be published (the handing delivery died around PutEvents): the
        // redelivery resumes the checkpoint itself, under the lease, instead of planning anew.
        let unknown = rec("t", 100, Stage::Continued, false);
        assert_eq!(
            decide(Some(&unknown), Plan, "b", 200),
            Take { resume: true }
        );
    }

    #[test]
    fn a_finished_sweep_sends_nothing_more() {
        let r = rec("", 0, Stage::Done, true);
        assert_eq!(decide(Some(&r), Plan, "b", 5), Finished);
        assert_eq!(decide(Some(&r), Continue, "t", 5), Finished);
    }

    #[test]
    fn a_send_needs_the_lease_held_past_the_call() {
        let r = rec("a", 1_000, Stage::Running, false);
        assert!(may_send(Some(&r), "a", 0, 500));
        assert!(
            !may_send(Some(&r), "a", 600, 500),
            "expires during the call"
        );
        assert!(!may_send(Some(&r), "b", 0, 500), "taken over");
        assert!(!may_send(None, "a", 0, 500));
        let done = rec("a", 1_000, Stage::Done, false);
        assert!(!may_send(Some(&done), "a", 0, 500));
    }
}
