//! Property tests: proptest generates schedules of client behaviour and faults and
//! shrinks a failure to a minimal one. `PROPTEST_CASES=N` runs more.

use nbecho_tests::schedule::strategy;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        // A failure is replayed by its printed schedule and seed, not a file in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_schedule_keeps_every_guarantee(schedule in strategy::schedule()) {
        if let Err(failure) = nbecho_tests::run(&schedule) {
            prop_assert!(false, "{failure}");
        }
    }

    #[test]
    fn the_same_schedule_runs_the_same_way(schedule in strategy::schedule()) {
        let a = nbecho_tests::run(&schedule);
        let b = nbecho_tests::run(&schedule);
        // Whole outcomes: the report with its stats and trace hash, or the failure.
        prop_assert_eq!(a, b);
    }
}
