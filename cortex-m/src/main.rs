//! The nbecho core on a Cortex-M3, bare metal: no `std`, no allocator, no OS. QEMU's
//! lm3s6965evb board runs it; semihosting carries the report out and the exit status
//! (0: every echo byte-exact) back to `.ci/run`.
//!
//! The network is in memory: a few clients, each a pair of byte queues, behind the core's
//! `Listener` and `Stream` traits, on a clock of ticks. The network is the driver's
//! context (`step_with`): the listener and the streams are plain indices into it, with no
//! `RefCell` anywhere. The clients send, half-close and
//! read; the server echoes uppercased through a buffer smaller than their messages (so
//! backpressure and partial writes happen), then shuts down gracefully.
//!
//! `cd cortex-m && cargo run --release` (needs `qemu-system-arm` and the
//! `thumbv7m-none-eabi` target).
#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use heapless::{Deque, String, Vec};
use nbecho_core::{
    nb, CloseReason, Config, Driver, ErrorKind, Instant, Listener, Server, Slot, Step, Storage,
    Stream, Uppercase,
};

/// Connection slots, and buffers of `BLOCK` bytes: 4 × 128 B of echo memory in all.
const CONNS: usize = 4;
const BLOCK: usize = 128;
/// What a client may have in flight each way (its "socket buffers").
const WINDOW: usize = 64;
const CLIENTS: usize = 3;
const MESSAGE: usize = 700;

/// One connection as both ends see it.
struct Pipe {
    to_server: Deque<u8, WINDOW>,
    to_client: Deque<u8, WINDOW>,
    client_eof: bool,
    server_fin: bool,
    server_closed: Option<CloseReason>,
    sent: usize,
    received: Vec<u8, MESSAGE>,
}

impl Pipe {
    const fn new() -> Self {
        Self {
            to_server: Deque::new(),
            to_client: Deque::new(),
            client_eof: false,
            server_fin: false,
            server_closed: None,
            sent: 0,
            received: Vec::new(),
        }
    }
}

struct Net {
    pipes: [Pipe; CLIENTS],
    /// Clients that connected and wait to be accepted.
    backlog: Deque<usize, CLIENTS>,
}

struct Accepting;

/// A connection: which client it is.
struct Conn(usize);

impl Listener<Net> for Accepting {
    type Stream = Conn;

    fn accept(&mut self, net: &mut Net) -> nb::Result<Conn, ErrorKind> {
        net.backlog
            .pop_front()
            .map(Conn)
            .ok_or(nb::Error::WouldBlock)
    }
}

impl Stream<Net> for Conn {
    fn read(&mut self, net: &mut Net, buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        let pipe = &mut net.pipes[self.0];
        let mut n = 0;
        while n < buf.len() {
            match pipe.to_server.pop_front() {
                Some(byte) => {
                    buf[n] = byte;
                    n += 1;
                }
                None => break,
            }
        }
        match n {
            0 if pipe.client_eof => Ok(0),
            0 => Err(nb::Error::WouldBlock),
            n => Ok(n),
        }
    }

    fn write(&mut self, net: &mut Net, bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        let pipe = &mut net.pipes[self.0];
        let mut n = 0;
        for &byte in bytes {
            if pipe.to_client.push_back(byte).is_err() {
                break;
            }
            n += 1;
        }
        if n == 0 {
            return Err(nb::Error::WouldBlock);
        }
        Ok(n)
    }

    fn shutdown_write(&mut self, net: &mut Net) -> Result<(), ErrorKind> {
        net.pipes[self.0].server_fin = true;
        Ok(())
    }

    fn close(self, net: &mut Net, reason: CloseReason) {
        net.pipes[self.0].server_closed = Some(reason);
    }
}

/// Client `i`'s message: text, then a pattern of every letter case and digit.
fn message_byte(i: usize, at: usize) -> u8 {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    ALPHABET[(at * 7 + i * 13) % ALPHABET.len()]
}

fn message_len(i: usize) -> usize {
    [15, 200, MESSAGE][i]
}

/// Each client: connect at its tick, send what fits, half-close once all is sent, read.
fn clients_act(net: &mut Net, tick: u64) {
    for i in 0..CLIENTS {
        if tick == i as u64 * 3 {
            let _ = net.backlog.push_back(i);
        }
        if tick < i as u64 * 3 {
            continue;
        }
        let pipe = &mut net.pipes[i];
        while pipe.sent < message_len(i)
            && pipe.to_server.push_back(message_byte(i, pipe.sent)).is_ok()
        {
            pipe.sent += 1;
        }
        if pipe.sent == message_len(i) {
            pipe.client_eof = true;
        }
        while let Some(byte) = pipe.to_client.pop_front() {
            let _ = pipe.received.push(byte);
        }
    }
}

#[entry]
fn main() -> ! {
    let slots = cortex_m::singleton!(: [Slot; CONNS] = [Slot::EMPTY; CONNS]).expect("once");
    let arena = cortex_m::singleton!(: [u8; CONNS * BLOCK] = [0; CONNS * BLOCK]).expect("once");
    let storage = Storage::new(slots, arena, BLOCK).expect("valid sizes");
    let server = Server::new(Config::default(), storage, Uppercase);

    let mut net = Net {
        pipes: [Pipe::new(), Pipe::new(), Pipe::new()],
        backlog: Deque::new(),
    };
    let mut streams: [Option<Conn>; CONNS] = [None, None, None, None];
    let mut driver = Driver::new(server, Accepting, &mut streams).expect("a stream per slot");

    let mut steps: u32 = 0;
    let mut tick: u64 = 0;
    loop {
        let now = Instant::from_millis(tick);
        clients_act(&mut net, tick);
        let all_closed = net.pipes.iter().all(|p| p.server_closed.is_some());
        if all_closed && !driver.server().is_shutting_down() {
            driver.server_mut().begin_shutdown(now);
        }
        let finished = loop {
            steps += 1;
            match driver.step_with(now, &mut net) {
                Step::Wait(_) => break false,
                Step::Finished => break true,
                _ => {}
            }
        };
        if finished || tick > 10_000 {
            break;
        }
        tick += 1;
    }

    let mut out = hio::hstdout().ok();
    let mut report: String<256> = String::new();
    let mut exact = true;
    for (i, pipe) in net.pipes.iter().enumerate() {
        let same = pipe.received.len() == message_len(i)
            && pipe
                .received
                .iter()
                .enumerate()
                .all(|(at, &b)| b == message_byte(i, at).to_ascii_uppercase());
        let clean = pipe.server_fin && pipe.server_closed == Some(CloseReason::Done);
        exact &= same && clean;
        report.clear();
        let _ = writeln!(
            report,
            "client {i}: {} bytes sent, {} echoed, {}",
            pipe.sent,
            pipe.received.len(),
            if same && clean {
                "exact, then FIN"
            } else {
                "WRONG"
            }
        );
        if let Some(out) = out.as_mut() {
            let _ = out.write_str(&report);
        }
    }
    let stats = *driver.server().stats();
    report.clear();
    let _ = writeln!(
        report,
        "{} steps over {} ticks; accepted={} closed={} bytes_in={} bytes_out={}; slot header {} B, \
         stream entry {} B",
        steps,
        tick,
        stats.accepted,
        stats.closed,
        stats.bytes_in,
        stats.bytes_out,
        core::mem::size_of::<Slot>(),
        core::mem::size_of::<Option<Conn>>()
    );
    if let Some(out) = out.as_mut() {
        let _ = out.write_str(&report);
        let _ = out.write_str(if exact {
            "nbecho-cortex-m: every echo byte-exact\n"
        } else {
            "nbecho-cortex-m: FAILED\n"
        });
    }
    debug::exit(if exact {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Ok(mut out) = hio::hstderr() {
        let _ = writeln!(out, "nbecho-cortex-m: panic: {info}");
    }
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::bkpt();
    }
}
