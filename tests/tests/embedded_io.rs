//! Any `embedded_io::{Read, ReadReady, Write, WriteReady}` stream works with the driver
//! through `EmbeddedIo`, non-blocking by asking `*_ready()` first.
// A std test crate: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use nbecho_core::{
    AcceptFn, CloseReason, Config, Driver, EmbeddedIo, Instant, Server, Slot, Step, Storage,
    Uppercase,
};

/// Both directions of one connection, as the client sees them.
#[derive(Debug, Default)]
struct Wire {
    to_server: VecDeque<u8>,
    client_eof: bool,
    to_client: Vec<u8>,
    /// The client reads (drains `to_client`) at most this far ahead: a small window makes
    /// the server's writes not ready.
    window: usize,
    broken: bool,
    closed: bool,
}

/// The server's end: blocking embedded-io traits, only ever called when ready.
#[derive(Debug)]
struct MemStream(Rc<RefCell<Wire>>);

impl ErrorType for MemStream {
    type Error = ErrorKind;
}

impl ReadReady for MemStream {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        let w = self.0.borrow();
        Ok(w.broken || w.client_eof || !w.to_server.is_empty())
    }
}

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let mut w = self.0.borrow_mut();
        assert!(
            w.broken || w.client_eof || !w.to_server.is_empty(),
            "read would have blocked"
        );
        if w.broken {
            return Err(ErrorKind::ConnectionReset);
        }
        let n = buf.len().min(w.to_server.len());
        for (dst, src) in buf.iter_mut().zip(w.to_server.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl WriteReady for MemStream {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        let w = self.0.borrow();
        Ok(w.broken || w.to_client.len() < w.window)
    }
}

impl Write for MemStream {
    fn write(&mut self, bytes: &[u8]) -> Result<usize, ErrorKind> {
        let mut w = self.0.borrow_mut();
        if w.broken {
            return Err(ErrorKind::BrokenPipe);
        }
        let n = bytes.len().min(w.window - w.to_client.len());
        assert!(n > 0, "write would have blocked");
        w.to_client.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

impl Drop for MemStream {
    fn drop(&mut self) {
        self.0.borrow_mut().closed = true;
    }
}

struct Client {
    wire: Rc<RefCell<Wire>>,
    payload: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    break_after: Option<usize>,
}

fn run(payloads: &[(usize, Option<usize>)]) -> (Vec<Client>, nbecho_core::Stats, Vec<CloseReason>) {
    let mut clients: Vec<Client> = payloads
        .iter()
        .enumerate()
        .map(|(i, &(len, break_after))| Client {
            wire: Rc::new(RefCell::new(Wire {
                window: 37 + i * 11,
                ..Wire::default()
            })),
            payload: (0..len).map(|j| (j * 7 + i) as u8).collect(),
            sent: 0,
            received: Vec::new(),
            break_after,
        })
        .collect();
    let backlog: Rc<RefCell<VecDeque<MemStream>>> = Rc::new(RefCell::new(
        clients
            .iter()
            .map(|c| MemStream(Rc::clone(&c.wire)))
            .collect(),
    ));
    let listener = {
        let backlog = Rc::clone(&backlog);
        AcceptFn(move |_: &mut ()| {
            backlog
                .borrow_mut()
                .pop_front()
                .map(EmbeddedIo)
                .ok_or(nb::Error::WouldBlock)
        })
    };
    let mut slots = [Slot::EMPTY; 4];
    let mut arena = [0u8; 4 * 64];
    let server = Server::new(
        Config::default(),
        Storage::new(&mut slots, &mut arena, 64).unwrap(),
        Uppercase,
    );
    let mut streams: [Option<EmbeddedIo<MemStream>>; 4] = Default::default();
    let mut driver = Driver::new(server, listener, &mut streams).unwrap();
    let mut reasons = Vec::new();
    let mut now = Instant::ZERO;
    for _ in 0..1_000_000 {
        for c in &mut clients {
            let mut w = c.wire.borrow_mut();
            if w.closed || w.broken {
                continue;
            }
            let end = c
                .break_after
                .map_or(c.payload.len(), |b| b.min(c.payload.len()));
            let n = (end - c.sent).min(13);
            w.to_server.extend(&c.payload[c.sent..c.sent + n]);
            c.sent += n;
            if c.break_after.is_some() && c.sent == end {
                w.broken = true;
            } else if c.sent == c.payload.len() {
                w.client_eof = true;
            }
            let drained: Vec<u8> = w.to_client.drain(..).collect();
            c.received.extend(drained);
        }
        match driver.step(now) {
            Step::Wait(until) => now = until.unwrap_or(now),
            Step::Closed(_, reason) => reasons.push(reason),
            _ => {}
        }
        if clients.iter().all(|c| c.wire.borrow().closed) {
            break;
        }
    }
    let stats = *driver.server().stats();
    for c in &mut clients {
        let drained: Vec<u8> = c.wire.borrow_mut().to_client.drain(..).collect();
        c.received.extend(drained);
    }
    (clients, stats, reasons)
}

#[test]
fn embedded_io_streams_get_exact_echoes() {
    let (clients, stats, reasons) = run(&[(5_000, None), (1, None), (777, None), (0, None)]);
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.received, c.payload.to_ascii_uppercase(), "client {i}");
    }
    assert_eq!(reasons, [CloseReason::Done; 4]);
    assert_eq!(
        (stats.accepted, stats.closed, stats.bytes_out),
        (4, 4, 5_778)
    );
}

#[test]
fn an_embedded_io_error_closes_only_that_stream() {
    let (clients, stats, reasons) = run(&[(3_000, None), (3_000, Some(1_000)), (3_000, None)]);
    assert_eq!(clients[0].received, clients[0].payload.to_ascii_uppercase());
    assert_eq!(clients[2].received, clients[2].payload.to_ascii_uppercase());
    assert!(clients[1]
        .payload
        .to_ascii_uppercase()
        .starts_with(&clients[1].received));
    assert_eq!(reasons.iter().filter(|r| !r.is_clean()).count(), 1);
    assert_eq!((stats.failed, stats.closed), (1, 3));
}
