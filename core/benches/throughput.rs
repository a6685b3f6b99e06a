//! Bytes per second through the state machine (read into the lent buffer, transform,
//! send), next to the in-process limit measured in the same run: `copy +
//! make_ascii_uppercase` of the same bytes. `core`: the server's own calls, one per
//! operation (the general path); `express`: through the driver's readiness reports, as
//! the epoll driver runs it.
//!
//! `cargo bench -p nbecho-core --bench throughput`
// A std bench: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core, missing_docs)]

use std::cell::Cell;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nbecho_core::{
    nb, AcceptFn, Action, Admission, Config, Driver, ErrorKind, Instant, Scheduling, Server, Slot,
    Step, Storage, Stream, Uppercase,
};

/// Larger than the largest chunk: every read is short, as a request is.
const BUFFER: usize = 32 * 1024;

/// A buffer of `len` bytes whose first is `offset` bytes into a 4 KiB page. Every bench
/// reads its source at 2 KiB into a page and writes its destination at a page's start:
/// where the allocator happened to put them, a destination a multiple of 4 KiB from its
/// source (the processor's check of a load against earlier stores compares the low 12
/// bits of addresses first) made the reference 2.5 times slower in some builds than in
/// others (2.8 or 7.1 ns at 64 B, the same code).
struct Placed {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Placed {
    const PAGE: usize = 4096;

    fn new(len: usize, offset: usize) -> Self {
        let buf = vec![0u8; len + Self::PAGE];
        let start = (offset + Self::PAGE - buf.as_ptr() as usize % Self::PAGE) % Self::PAGE;
        Self { buf, start, len }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Where sources and destinations begin in their page (see [`Placed`]).
const SOURCE: usize = 2048;
const DESTINATION: usize = 0;

/// A socket that has `input` to read once each time `ready` is set (as one request
/// arrives), and takes every write whole.
struct Request<'a> {
    input: &'a [u8],
    ready: &'a Cell<bool>,
}

impl Stream for Request<'_> {
    fn read(&mut self, _: &mut (), buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        if !self.ready.replace(false) {
            return Err(nb::Error::WouldBlock);
        }
        buf[..self.input.len()].copy_from_slice(black_box(self.input));
        Ok(self.input.len())
    }

    fn write(&mut self, _: &mut (), bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        Ok(black_box(bytes).len())
    }

    fn shutdown_write(&mut self, _: &mut ()) -> Result<(), ErrorKind> {
        Ok(())
    }
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    for chunk in [64usize, 1024, 16 * 1024] {
        let mut source = Placed::new(chunk, SOURCE);
        for (i, b) in source.bytes_mut().iter_mut().enumerate() {
            *b = b'a' + (i % 26) as u8;
        }
        let input = source.bytes();
        group.throughput(Throughput::Bytes(chunk as u64));

        // The limit: what any echo must do with the bytes, and nothing else.
        let mut out = Placed::new(chunk, DESTINATION);
        group.bench_with_input(
            BenchmarkId::new("copy+uppercase", chunk),
            &input,
            |b, input| {
                // The slice made once, outside the measured loop, as the core's arena is,
                // and moved into it: captured by reference instead, the loop ran 64 B in
                // 2.7 ns but 1 KiB in 32 ns (27.4 moved), so the code generator's choices
                // move the reference by about 15% either way.
                let out = out.bytes_mut();
                b.iter(move || {
                    out.copy_from_slice(black_box(input));
                    out.make_ascii_uppercase();
                    black_box(&out);
                })
            },
        );

        // The core: one connection that always has `chunk` bytes to read and room to write.
        let mut slots = [Slot::EMPTY; 1];
        let mut arena = Placed::new(BUFFER, DESTINATION);
        let mut config = Config::default();
        config.scheduling = Scheduling::Readiness;
        let storage = Storage::new(&mut slots, arena.bytes_mut(), BUFFER).unwrap();
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

        // The core as the epoll driver runs it: each request answered as its readiness is
        // reported (the express lane), then the pass that finds nothing else to do.
        let ready = Cell::new(false);
        let mut slots = [Slot::EMPTY; 1];
        let mut arena = Placed::new(BUFFER, DESTINATION);
        let mut config = Config::default();
        config.scheduling = Scheduling::Readiness;
        config.short_reads_drain = true;
        let storage = Storage::new(&mut slots, arena.bytes_mut(), BUFFER).unwrap();
        let server = Server::new(config, storage, Uppercase);
        let mut stream = Some(Request {
            input,
            ready: &ready,
        });
        let listener = AcceptFn(|_: &mut ()| stream.take().ok_or(nb::Error::WouldBlock));
        let mut streams = [None];
        let mut driver = Driver::new(server, listener, &mut streams).unwrap();
        driver.server_mut().on_listener_ready();
        let Step::Accepted(conn) = driver.step(now) else {
            unreachable!()
        };
        while !matches!(driver.step(now), Step::Wait(_)) {}
        group.bench_function(BenchmarkId::new("express", chunk), |b| {
            b.iter(|| {
                ready.set(true);
                // What the epoll driver takes from the report: that it is not refused
                // (`Err`, a stale id). The bytes are the stream's; the report's details,
                // forced to memory here (`black_box`), cost about 0.5 ns that no driver pays.
                let served = driver.on_ready(now, conn, true, false);
                debug_assert!(served.is_ok_and(|s| s.is_some_and(|s| s.send == Some(Ok(chunk)))));
                assert!(served.is_ok());
                assert!(matches!(driver.step(now), Step::Wait(_)));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
