//! Deterministic verification of nbecho: a simulated network that runs the core's real
//! [`Driver`](nbecho_core::Driver) against in-memory clients with seeded faults, and a
//! harness that checks the core's guarantees after every step.
//!
//! - [`schedule`]: what a run does (server configuration, fault rates, client behaviours),
//!   from a seed, a proptest strategy, or fuzzer bytes;
//! - [`net`]: the in-memory listener, streams and client peers;
//! - [`smol`]: the core on smoltcp's loopback device with smoltcp clients;
//! - [`harness`]: [`run`] a schedule and get a [`Report`] or a [`Failure`] that names the
//!   seed to replay.
//!
//! Same schedule, same trace: nothing here reads a clock, a thread or a hash map's order.
// A std test crate: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]
#![deny(missing_docs)]

pub mod completion;
pub mod harness;
pub mod net;
pub mod rng;
pub mod schedule;
pub mod smol;

pub use completion::{read_wait_for, run_completion, CompletionReport};
pub use harness::{fuzz_one, run, Failure, Report};
pub use schedule::{Behaviour, ClientPlan, Faults, Schedule, ServerPlan};

/// The README's Rust examples, compiled and run as doctests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
