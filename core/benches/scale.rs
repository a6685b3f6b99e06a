//! The core's cost per echoed message with 1,000 to 1,000,000 connections admitted, a few
//! of them busy and the rest idle (each with a live idle timer): it must stay flat, so
//! that the core is never what limits how many connections a server holds.
//!
//! `cargo bench -p nbecho-core --bench scale`
// A std bench: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nbecho_core::{
    nb, Action, Admission, Config, ConnId, Instant, Scheduling, Server, Slot, Storage, Uppercase,
};

/// Connections that carry traffic; the others are idle.
const BUSY: usize = 8;
const MESSAGE: &[u8] = b"the quick brown fox jumps over the lazy dog, 64 bytes of message.";

/// A readiness-driven server holding `conns` connections, all idle.
fn server_with(conns: usize) -> (Server<'static, Uppercase>, Vec<ConnId>) {
    let slots = Box::leak(vec![Slot::EMPTY; conns].into_boxed_slice());
    let arena = Box::leak(vec![0u8; 64 * 4096].into_boxed_slice());
    let mut config = Config::default();
    config.scheduling = Scheduling::Readiness;
    let storage = Storage::new(slots, arena, 4096).expect("valid storage");
    let mut server = Server::new(config, storage, Uppercase);
    let now = Instant::ZERO;
    let mut ids = Vec::with_capacity(conns);
    server.on_listener_ready();
    while ids.len() < conns {
        match server.poll(now) {
            Action::Accept => match server.on_accepted(now) {
                Ok(Admission::Admitted(id)) => ids.push(id),
                other => panic!("{other:?}"),
            },
            Action::Recv { conn, .. } => server
                .on_recv(now, conn, Err(nb::Error::WouldBlock))
                .expect("asked for"),
            Action::Wait { .. } => server.on_listener_ready(),
            other => panic!("while connecting: {other:?}"),
        }
    }
    // The last accepts' connections are still queued: let their reads would-block.
    loop {
        match server.poll(now) {
            Action::Accept => server
                .on_accept_error(now, nb::Error::WouldBlock)
                .expect("asked for"),
            Action::Recv { conn, .. } => server
                .on_recv(now, conn, Err(nb::Error::WouldBlock))
                .expect("asked for"),
            Action::Wait { until: Some(t) } if t == now => {}
            Action::Wait { .. } => break,
            other => panic!("while settling: {other:?}"),
        }
    }
    (server, ids)
}

/// One message on each busy connection: readable, read, echo, read would-block, wait.
fn round(server: &mut Server<'static, Uppercase>, busy: &[ConnId], now: Instant) {
    for &conn in busy {
        server.on_ready(conn, true, false).expect("live");
    }
    // Which busy connections have had their message this round.
    let mut delivered = [false; BUSY];
    loop {
        match server.poll(now) {
            Action::Recv { conn, buf, .. } => {
                let fresh = busy
                    .iter()
                    .position(|&c| c == conn)
                    .is_some_and(|i| !std::mem::replace(&mut delivered[i], true));
                if fresh && buf.len() >= MESSAGE.len() {
                    buf[..MESSAGE.len()].copy_from_slice(MESSAGE);
                    server
                        .on_recv(now, conn, Ok(MESSAGE.len()))
                        .expect("asked for");
                } else {
                    server
                        .on_recv(now, conn, Err(nb::Error::WouldBlock))
                        .expect("asked for");
                }
            }
            Action::Send {
                conn,
                bytes,
                wrapped,
            } => {
                let n = black_box(bytes).len() + wrapped.len();
                server.on_send(now, conn, Ok(n)).expect("asked for");
            }
            Action::Wait { until: Some(t) } if t == now => {}
            Action::Wait { .. } => break,
            other => panic!("in a round: {other:?}"),
        }
    }
}

fn scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("scale");
    group.sample_size(20);
    group.throughput(Throughput::Elements(BUSY as u64));
    for conns in [1_000usize, 10_000, 100_000, 1_000_000] {
        let (mut server, ids) = server_with(conns);
        // Busy connections spread over the slots.
        let busy: Vec<ConnId> = (0..BUSY).map(|i| ids[i * (conns / BUSY)]).collect();
        let mut now = Instant::ZERO;
        group.bench_function(BenchmarkId::new("busy-8-of", conns), |b| {
            b.iter(|| {
                // Time moves, so every message moves its connection's idle timer.
                now = now + nbecho_core::Duration::from_micros(1);
                round(&mut server, &busy, now);
            })
        });
        assert_eq!(server.stats().active, conns as u64, "nobody timed out");
    }
    group.finish();
}

criterion_group!(benches, scale);
criterion_main!(benches);
