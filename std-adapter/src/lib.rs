//! std adapter for [`nbecho_core`]: non-blocking `std::net` sockets behind the core's
//! [`Listener`](nbecho_core::Listener)/[`Stream`](nbecho_core::Stream) traits, a clock,
//! and the pieces of the `nbecho` binary (`serve`, `client`, `bench`).
//!
//! # Features
//!
//! - `cli` (default): what the `nbecho` binary needs (clap, tracing-subscriber, rustyline
//!   and nix for the terminal) and `bench`.
//! - `bench`: the [`bench`](mod@bench) load generator (hdrhistogram, indicatif).
//! - `tokio` (in `cli` too): [`tokio::serve`], the core in one tokio task, driven by
//!   readiness.
//! - `uring` (in `cli` too): `serve`'s io_uring driver (`--driver uring`, Linux only),
//!   the core in completion scheduling.
//!
//! Without them (`default-features = false`) the library is the adapter alone: sockets,
//! the clock, [`serve`], [`client`] and [`args`], on mio, socket2, signal-hook and tracing.
//!
//! The adapter decides nothing about *when* to do things: [`serve::run`] is the core's
//! [`Driver`](nbecho_core::Driver) loop plus what a process needs (a clock, sleeping for
//! [`Wait`](nbecho_core::Action::Wait), signals, logs).
// Two audited system calls (`sys`) and the io_uring submissions (`uring`) are the only
// exceptions, allowed where they are.
#![deny(unsafe_code)]
#![deny(missing_docs)]
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

pub mod arena;
pub mod args;
#[cfg(feature = "bench")]
pub mod bench;
pub mod client;
pub mod clock;
pub mod net;
pub mod serve;
mod sys;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(all(feature = "uring", target_os = "linux"))]
pub mod uring;
