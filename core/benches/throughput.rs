//! Bytes per second through the state machine (read into the lent buffer, transform,
//! send), next to the in-process limit measured in the same run: `copy +
//! make_ascii_uppercase` of the same bytes.
//!
//! `cargo bench -p nbecho-core --bench throughput`
// A std bench: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core, missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nbecho_core::{
    nb, Action, Admission, Config, Instant, Scheduling, Server, Slot, Storage, Uppercase,
};

const BUFFER: usize = 16 * 1024;

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    for chunk in [64usize, 1024, 16 * 1024] {
        let input: Vec<u8> = (0..chunk).map(|i| b'a' + (i % 26) as u8).collect();
        group.throughput(Throughput::Bytes(chunk as u64));

        // The limit: what any echo must do with the bytes, and nothing else.
        let mut out = vec![0u8; chunk];
        group.bench_with_input(
            BenchmarkId::new("copy+uppercase", chunk),
            &input,
            |b, input| {
                b.iter(|| {
                    out.copy_from_slice(black_box(input));
                    out.make_ascii_uppercase();
                    black_box(&out);
                })
            },
        );

        // The core: one connection that always has `chunk` bytes to read and room to write.
        let mut slots = [Slot::EMPTY; 1];
        let mut arena = vec![0u8; BUFFER];
        let mut config = Config::default();
        config.scheduling = Scheduling::Readiness;
        let storage = Storage::new(&mut slots, &mut arena, BUFFER).unwrap();
        let mut server = Server::new(config, storage, Uppercase);
        let now = Instant::ZERO;
        server.on_listener_ready();
        assert_eq!(server.poll(now), Action::Accept);
        let Ok(Admission::Admitted(_)) = server.on_accepted(now) else {
            unreachable!()
        };
        group.bench_with_input(BenchmarkId::new("core", chunk), &input, |b, input| {
            b.iter(|| {
                // One Recv of the chunk, then its Send, and whatever the core asks between
                // (the end of a pass: a look for events; the listener: nothing waiting).
                loop {
                    match server.poll(now) {
                        Action::Recv { conn, buf, .. } => {
                            buf[..input.len()].copy_from_slice(black_box(input));
                            server.on_recv(now, conn, Ok(input.len())).unwrap();
                            break;
                        }
                        Action::Accept => {
                            server.on_accept_error(now, nb::Error::WouldBlock).unwrap()
                        }
                        Action::Wait { until: Some(t) } if t == now => {}
                        other => panic!("{other:?}"),
                    }
                }
                match server.poll(now) {
                    Action::Send { conn, bytes, .. } => {
                        let n = black_box(bytes).len();
                        server.on_send(now, conn, Ok(n)).unwrap();
                    }
                    other => panic!("{other:?}"),
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
