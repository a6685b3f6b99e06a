//! Runs a range of seeds and tallies the failures by kind, instead of stopping at the
//! first: `cargo run --release -p nbecho-tests --example sweep -- [FROM] [COUNT]`.
//!
//! Prints one line per kind of failure with how many seeds hit it and the first one, to
//! replay with `NBECHO_SEED=N cargo test -p nbecho-tests --test sim replay_seed`. With
//! `NBECHO_COMPLETION=1`, the simulation's completion mode (replay with
//! `NBECHO_SEED=N cargo test -p nbecho-tests --test completion`).
// A std tool: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use std::collections::BTreeMap;

use nbecho_tests::{run, run_completion, Schedule};

/// The kind of a failure: its message without numbers, ids and times.
fn kind(what: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for c in what.lines().next().unwrap_or("").chars() {
        let digit = c.is_ascii_digit() || c == '#' || c == '.';
        if digit && !skipping {
            out.push('N');
        }
        skipping = digit;
        if !digit {
            out.push(c);
        }
    }
    out
}

fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (from, count) = (arg(1, 0), arg(2, 1_000));
    // NBECHO_COMPLETION=1: the simulation's completion mode instead.
    let completion = std::env::var_os("NBECHO_COMPLETION").is_some();
    let mut kinds: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let (mut passed, mut longest) = (0u64, 0u64);
    for seed in from..from + count {
        let schedule = Schedule::from_seed(seed);
        let outcome = if completion {
            run_completion(&schedule).map(|_| 0)
        } else {
            run(&schedule).map(|report| report.longest_wait_ops)
        };
        match outcome {
            Ok(wait) => {
                passed += 1;
                longest = longest.max(wait);
            }
            Err(failure) => {
                let entry = kinds.entry(kind(&failure.what)).or_insert((0, seed));
                entry.0 += 1;
            }
        }
    }
    for (kind, (n, first)) in &kinds {
        println!("{n:>6} seeds (first {first}): {kind}");
    }
    println!(
        "{passed} passed, {} failed (seeds {from}..{}); longest wait for service in a passing run: {longest} operations",
        count - passed,
        from + count
    );
}
