//! The core's share of one echoed message, as the epoll driver drives it: readiness, a
//! short read of 64 bytes, its send, and the wait that follows; N times. No sockets, no
//! clock: run it under callgrind to count the core's instructions per message
//! (`benches/callgrind.sh` does, next to the whole server's).
//!
//! `cargo run --release -p nbecho-core --example hotpath -- 100000 [SIZE] [poll]`: through
//! the driver's readiness reports (the express lane), or with `poll` the server's own calls.
// A std example: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use std::hint::black_box;

use nbecho_core::{
    nb, AcceptFn, Action, Admission, Config, Driver, ErrorKind, Instant, Scheduling, Server, Slot,
    Step, Storage, Stream, Uppercase,
};

/// A stream with a message always waiting, that takes every write whole. The kernel's
/// copy is not the core's work: the message is put in once, and the same block comes
/// back each time (its free list is LIFO).
#[derive(Clone)]
struct Echo<'m> {
    size: usize,
    filled: bool,
    message: &'m [u8],
}

impl Stream for Echo<'_> {
    fn read(&mut self, _: &mut (), buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        if !self.filled {
            buf[..self.size].copy_from_slice(self.message);
            self.filled = true;
        }
        black_box(&mut buf[..self.size]);
        Ok(self.size)
    }

    fn write(&mut self, _: &mut (), bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        Ok(black_box(bytes).len())
    }

    fn shutdown_write(&mut self, _: &mut ()) -> Result<(), ErrorKind> {
        Ok(())
    }
}

fn main() {
    let messages: u64 = std::env::args()
        .nth(1)
        .map_or(100_000, |n| n.parse().expect("a number of messages"));
    let size: usize = std::env::args()
        .nth(2)
        .map_or(64, |n| n.parse().expect("a message size"));
    // `poll`: the server's own calls, one per operation (any driver's general path).
    let express = std::env::args().nth(3).is_none_or(|mode| mode != "poll");
    // The binary's defaults, as `nbecho serve --driver epoll --idle-timeout 0` sets them.
    let mut slots = vec![Slot::EMPTY; 1024];
    let mut arena = vec![0u8; 1024 * 4096];
    let mut config = Config::default();
    config.scheduling = Scheduling::Readiness;
    config.short_reads_drain = true;
    config.idle_timeout = None;
    let storage = Storage::new(&mut slots, &mut arena, 4096).expect("valid sizes");
    let mut server = Server::new(config, storage, Uppercase);
    let now = Instant::ZERO;
    server.on_listener_ready();
    assert_eq!(server.poll(now), Action::Accept);
    let Ok(Admission::Admitted(conn)) = server.on_accepted(now) else {
        unreachable!("a free slot")
    };
    // Settle: the first read finds nothing, the listener nothing more.
    loop {
        match server.poll(now) {
            Action::Accept => server.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Action::Recv { conn, .. } => server
                .on_recv(now, conn, Err(nb::Error::WouldBlock))
                .unwrap(),
            Action::Wait { until: None } => break,
            Action::Wait { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    let message = vec![b'a'; size];
    if express {
        // Through the driver, as the epoll server does: each readiness report of the quiet
        // connection is served at once (`Driver::on_ready`), then the pass finds nothing.
        let mut streams = vec![None; 1024];
        streams[conn.index()] = Some(Echo {
            size,
            filled: false,
            message: &message,
        });
        let listener = AcceptFn(|_: &mut ()| -> nb::Result<Echo<'_>, ErrorKind> {
            Err(nb::Error::WouldBlock)
        });
        let mut driver = Driver::new(server, listener, &mut streams).expect("one per slot");
        for _ in 0..messages {
            let served = driver.on_ready(now, conn, true, false).unwrap();
            assert_eq!(served.map(|s| s.send), Some(Some(Ok(size))));
            assert_eq!(driver.step(now), Step::Wait(None));
        }
        assert_eq!(driver.server().stats().bytes_out, messages * size as u64);
        return;
    }
    let message = vec![b'a'; size];
    for i in 0..messages {
        server.on_ready(conn, true, false).unwrap();
        match server.poll(now) {
            Action::Recv { conn, buf, .. } => {
                // The kernel's copy is not the core's work: the message is put in once,
                // and the same block comes back each time (its free list is LIFO).
                if i == 0 {
                    buf[..size].copy_from_slice(&message);
                }
                black_box(&mut buf[..size]);
                server.on_recv(now, conn, Ok(size)).unwrap();
            }
            other => panic!("{other:?}"),
        }
        match server.poll(now) {
            Action::Send { conn, bytes, .. } => {
                assert!(i > 0 || bytes.iter().all(|&b| b == b'A'), "uppercased");
                let sent = black_box(bytes).len();
                server.on_send(now, conn, Ok(sent)).unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(server.poll(now), Action::Wait { until: None });
    }
    assert_eq!(server.stats().bytes_out, messages * size as u64);
}
