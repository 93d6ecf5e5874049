//! Condition helpers shared by both resources' status writers: set a condition so that
//! `lastTransitionTime` moves only when the status really changes, and read one back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition status values.
pub const TRUE: &str = "True";
/// Condition status values.
pub const FALSE: &str = "False";
/// Condition status values.
pub const UNKNOWN: &str = "Unknown";

/// Builds a condition stamped with `now`; `set_condition` keeps the old transition time
/// when the status did not change.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Inserts or replaces the condition of the same type. When the status is unchanged the
/// previous `lastTransitionTime` is kept, so a reconcile that changes nothing produces a
/// condition list equal to the one it read.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == TRUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conds = Vec::new();
        let mut first = new_condition("Ready", FALSE, "Pending", "waiting", Some(1));
        first.last_transition_time = Time(Timestamp::from_second(1_000).unwrap());
        set_condition(&mut conds, first);

        // Same status, new reason and generation: the old transition time stays.
        set_condition(
            &mut conds,
            new_condition("Ready", FALSE, "Other", "still", Some(2)),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time.0.as_second(), 1_000);
        assert_eq!(conds[0].reason, "Other");
        assert_eq!(conds[0].observed_generation, Some(2));

        // A real transition stamps a new time.
        set_condition(
            &mut conds,
            new_condition("Ready", TRUE, "Up", "ok", Some(2)),
        );
        assert!(conds[0].last_transition_time.0.as_second() > 1_000);
        assert!(is_true(&conds, "Ready"));
        assert!(!is_true(&conds, "Missing"));
    }
}
