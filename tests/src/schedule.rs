//! What a simulation run does: the server's configuration, the faults the network
//! injects, and each client's behaviour. Generated from a seed, by proptest (with
//! shrinking), or decoded from fuzzer bytes with `arbitrary`; [`Schedule::normalized`]
//! brings any of them into range.

use arbitrary::Arbitrary;

use crate::rng::Rng;

/// One simulation run.
#[derive(Clone, Debug, PartialEq, Eq, Arbitrary)]
pub struct Schedule {
    /// Seeds the network's fault injection and the clients' payloads.
    pub seed: u64,
    /// The server under test.
    pub server: ServerPlan,
    /// Fault rates.
    pub faults: Faults,
    /// The clients, in the order they are created.
    pub clients: Vec<ClientPlan>,
}

/// The server's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Arbitrary)]
pub struct ServerPlan {
    /// Connection slots (1..=8).
    pub capacity: u8,
    /// Buffers in the pool (1..=capacity).
    pub buffers: u8,
    /// Bytes per buffer (16..=2048).
    pub buffer_size: u16,
    /// Idle timeout in ms (50..=5000), or none.
    pub idle_timeout_ms: Option<u16>,
    /// Operations per visit (1..=8).
    pub visit_budget: u8,
    /// Readiness scheduling (the epoll role) instead of polling.
    pub readiness: bool,
    /// With `readiness`: readiness is delivered the way the kernel does it, in a batch of
    /// the edges that arrived since the last wait, only when the driver waits or polls for
    /// events (`epoll_wait`, with or without a timeout). Without it, every edge is
    /// delivered before the next step, which no kernel does.
    pub edge_batches: bool,
    /// A plain echo ([`Mode::Echo`](nbecho_core::Mode::Echo)) instead of uppercase.
    pub identity: bool,
    /// A general service instead of a transform:
    /// [`NumberedLines`](nbecho_core::NumberedLines) (replies of other lengths,
    /// per-connection state, the application closing on `quit`); the clients' payloads
    /// are then made of lines (see [`Net::new`](crate::net::Net::new)).
    pub lines: bool,
    /// Large buffers for bulk transfers (0..=4; 0: none).
    pub large_buffers: u8,
    /// How many times larger than `buffer_size` they are (2..=8).
    pub large_factor: u8,
    /// Every this many operations (50..=20000), the application takes a hand: it aborts
    /// or closes (in turn) the live connection in the lowest slot; or never.
    pub app_every: Option<u16>,
    /// Start a graceful shutdown at this time (ms), mid-traffic, with a 2 s deadline.
    pub shutdown_at_ms: Option<u16>,
    /// The server takes a short read for a drained stream
    /// ([`Config::short_reads_drain`](nbecho_core::Config::short_reads_drain)); the network
    /// keeps its side of that bargain as a kernel does: a read that leaves data behind (a
    /// short-I/O fault) raises a new readable edge.
    pub short_reads_drain: bool,
    /// With `shutdown_at_ms`: a little after the graceful stop began, a second request
    /// stops at once (`begin_shutdown(now)`, the binary's second signal).
    pub stop_at_once: bool,
}

/// Fault rates, in percent of the operations concerned (each 0..=60).
#[derive(Clone, Debug, Default, PartialEq, Eq, Arbitrary)]
pub struct Faults {
    /// `accept` would-blocks although a connection is waiting.
    pub accept_would_block: u8,
    /// `accept` fails: as if out of file descriptors (the connection stays in the
    /// backlog), or, half the time, with `ConnectionAborted` (the client reset first).
    pub accept_error: u8,
    /// A read would-blocks although data is there.
    pub read_would_block: u8,
    /// A write would-blocks although there is room.
    pub write_would_block: u8,
    /// A read or write moves fewer bytes than it could (down to 1).
    pub short_io: u8,
    /// `accept`, a read or a write fails with `Interrupted` (EINTR): to be retried, never
    /// a failure.
    pub interrupted: u8,
    /// A wait for the server's next deadline returns this many µs late (0..=1000), as a
    /// sleeping thread's timer slack or a busy machine makes it: what became ready
    /// meanwhile is reported before the timers run, so the express lane meets connections
    /// whose idle deadline has just passed.
    pub late_wake_us: u16,
}

/// One client.
#[derive(Clone, Debug, PartialEq, Eq, Arbitrary)]
pub struct ClientPlan {
    /// When it connects (ms).
    pub connect_at_ms: u16,
    /// How many bytes it sends (0..=20000).
    pub bytes: u16,
    /// The most it writes at once (1..=4096).
    pub write_chunk: u16,
    /// It does not read before this many ms after connecting (a slow reader), 0..=3000.
    pub read_pause_ms: u16,
    /// What it does once its bytes are sent.
    pub behaviour: Behaviour,
    /// Pause between two of its writes, in µs (0..=2000): 0 writes whenever the window
    /// has room; more is a paced sender (requests with gaps between them), whose
    /// connection's reads find nothing between two writes.
    pub write_gap_us: u16,
    /// After its first write, it writes again no sooner than this many µs (0..=6,000,000):
    /// a client that goes quiet for about the idle timeout, then speaks again. Its bytes
    /// may come just after its connection's idle deadline, as readiness that is reported
    /// before the timers run (see [`Faults::late_wake_us`]).
    pub pause_us: u32,
}

/// How a client ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Arbitrary)]
pub enum Behaviour {
    /// Shuts down its write side after sending, reads to end-of-stream (the normal case).
    HalfClose,
    /// Resets the connection once it has sent this many bytes (before, during or after
    /// the echo).
    ResetAfter(u16),
    /// Sends, then keeps the connection open and silent until the server ends it.
    Idle,
}

impl Schedule {
    /// The most clients a schedule keeps.
    pub const MAX_CLIENTS: usize = 24;

    /// A random schedule: everything follows from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let small = |rng: &mut Rng, hi: u64| rng.range(0, hi) as u8;
        let mut server = ServerPlan {
            capacity: rng.range(1, 8) as u8,
            buffers: rng.range(1, 8) as u8,
            buffer_size: rng.range(16, 2048) as u16,
            idle_timeout_ms: rng.chance(40).then(|| rng.range(50, 5000) as u16),
            visit_budget: rng.range(1, 8) as u8,
            readiness: rng.chance(50),
            shutdown_at_ms: rng.chance(20).then(|| rng.range(0, 3000) as u16),
            edge_batches: false,
            identity: false,
            large_buffers: 0,
            large_factor: 2,
            app_every: None,
            short_reads_drain: false,
            stop_at_once: false,
            lines: false,
        };
        let mut faults = Faults {
            accept_would_block: small(&mut rng, 40),
            accept_error: small(&mut rng, 20),
            read_would_block: small(&mut rng, 40),
            write_would_block: small(&mut rng, 40),
            short_io: small(&mut rng, 60),
            interrupted: 0,
            late_wake_us: 0,
        };
        let clients = (0..rng.range(1, 16))
            .map(|_| ClientPlan {
                connect_at_ms: rng.range(0, 2000) as u16,
                bytes: if rng.chance(10) {
                    0
                } else {
                    rng.range(1, 20_000) as u16
                },
                write_chunk: rng.range(1, 4096) as u16,
                read_pause_ms: if rng.chance(30) {
                    rng.range(1, 3000) as u16
                } else {
                    0
                },
                behaviour: match rng.range(0, 9) {
                    0..=5 => Behaviour::HalfClose,
                    6 | 7 => Behaviour::ResetAfter(rng.range(0, 20_000) as u16),
                    _ => Behaviour::Idle,
                },
                write_gap_us: 0,
                pause_us: 0,
            })
            .collect::<Vec<_>>();
        // Drawn last, so that every seed keeps the shape it had before these existed.
        server.edge_batches = server.readiness && rng.chance(60);
        server.identity = rng.chance(25);
        if rng.chance(50) {
            server.large_buffers = rng.range(1, 4) as u8;
            server.large_factor = rng.range(2, 8) as u8;
        }
        server.app_every = rng.chance(25).then(|| rng.range(50, 5000) as u16);
        faults.interrupted = if rng.chance(50) {
            small(&mut rng, 20)
        } else {
            0
        };
        server.short_reads_drain = rng.chance(50);
        server.stop_at_once = rng.chance(30);
        server.lines = rng.chance(25);
        let mut clients = clients;
        for client in &mut clients {
            client.write_gap_us = if rng.chance(30) {
                rng.range(1, 2000) as u16
            } else {
                0
            };
        }
        faults.late_wake_us = if rng.chance(30) {
            rng.range(1, 1000) as u16
        } else {
            0
        };
        if let Some(timeout) = server.idle_timeout_ms {
            for client in &mut clients {
                if rng.chance(25) {
                    // Around the idle timeout: a little before, at, or just after it.
                    client.pause_us =
                        (u32::from(timeout) * 1000 + rng.range(0, 2000) as u32).saturating_sub(500);
                }
            }
        }
        Self {
            seed,
            server,
            faults,
            clients,
        }
    }

    /// The same schedule with every field brought into its documented range.
    pub fn normalized(&self) -> Self {
        let clamp = |v: u64, lo: u64, hi: u64| v.clamp(lo, hi);
        let s = &self.server;
        let capacity = clamp(s.capacity.into(), 1, 8) as u8;
        let server = ServerPlan {
            capacity,
            buffers: clamp(s.buffers.into(), 1, capacity.into()) as u8,
            buffer_size: clamp(s.buffer_size.into(), 16, 2048) as u16,
            idle_timeout_ms: s.idle_timeout_ms.map(|t| clamp(t.into(), 50, 5000) as u16),
            visit_budget: clamp(s.visit_budget.into(), 1, 8) as u8,
            readiness: s.readiness,
            shutdown_at_ms: s.shutdown_at_ms.map(|t| clamp(t.into(), 0, 5000) as u16),
            edge_batches: s.readiness && s.edge_batches,
            identity: s.identity,
            large_buffers: s.large_buffers.min(4),
            large_factor: clamp(s.large_factor.into(), 2, 8) as u8,
            app_every: s.app_every.map(|n| clamp(n.into(), 50, 20_000) as u16),
            short_reads_drain: s.short_reads_drain,
            stop_at_once: s.stop_at_once,
            lines: s.lines,
        };
        let f = &self.faults;
        let rate = |r: u8| r.min(60);
        let faults = Faults {
            accept_would_block: rate(f.accept_would_block),
            accept_error: rate(f.accept_error),
            read_would_block: rate(f.read_would_block),
            write_would_block: rate(f.write_would_block),
            short_io: rate(f.short_io),
            interrupted: rate(f.interrupted),
            late_wake_us: f.late_wake_us.min(1000),
        };
        let clients = self
            .clients
            .iter()
            .take(Self::MAX_CLIENTS)
            .map(|c| ClientPlan {
                connect_at_ms: clamp(c.connect_at_ms.into(), 0, 5000) as u16,
                bytes: clamp(c.bytes.into(), 0, 20_000) as u16,
                write_chunk: clamp(c.write_chunk.into(), 1, 4096) as u16,
                read_pause_ms: clamp(c.read_pause_ms.into(), 0, 3000) as u16,
                behaviour: c.behaviour,
                write_gap_us: clamp(c.write_gap_us.into(), 0, 2000) as u16,
                pause_us: c.pause_us.min(6_000_000),
            })
            .collect();
        Self {
            seed: self.seed,
            server,
            faults,
            clients,
        }
    }
}

/// proptest strategies for [`Schedule`]: structured, so failures shrink to fewer clients,
/// fewer bytes and lower fault rates.
pub mod strategy {
    use proptest::prelude::*;

    use super::*;

    fn behaviour() -> impl Strategy<Value = Behaviour> {
        prop_oneof![
            6 => Just(Behaviour::HalfClose),
            2 => (0..20_000u16).prop_map(Behaviour::ResetAfter),
            1 => Just(Behaviour::Idle),
        ]
    }

    fn client() -> impl Strategy<Value = ClientPlan> {
        (
            0..2000u16,
            0..20_000u16,
            1..4096u16,
            prop_oneof![3 => Just(0u16), 1 => 1..3000u16],
            behaviour(),
            prop_oneof![7 => Just(0u16), 3 => 1..2000u16],
            prop_oneof![7 => Just(0u32), 1 => 1..6_000_000u32],
        )
            .prop_map(|c| ClientPlan {
                connect_at_ms: c.0,
                bytes: c.1,
                write_chunk: c.2,
                read_pause_ms: c.3,
                behaviour: c.4,
                write_gap_us: c.5,
                pause_us: c.6,
            })
    }

    fn server() -> impl Strategy<Value = ServerPlan> {
        (
            1..=8u8,
            1..=8u8,
            16..=2048u16,
            proptest::option::of(50..5000u16),
            1..=8u8,
            any::<bool>(),
            proptest::option::weighted(0.2, 0..3000u16),
            any::<bool>(),
            proptest::bool::weighted(0.25),
            (
                prop_oneof![Just(0u8), 1..=4u8],
                2..=8u8,
                proptest::option::weighted(0.25, 50..5000u16),
                any::<bool>(),
                proptest::bool::weighted(0.3),
                proptest::bool::weighted(0.25),
            ),
        )
            .prop_map(
                |(
                    capacity,
                    buffers,
                    buffer_size,
                    idle_timeout_ms,
                    visit_budget,
                    readiness,
                    shutdown_at_ms,
                    edge_batches,
                    identity,
                    (
                        large_buffers,
                        large_factor,
                        app_every,
                        short_reads_drain,
                        stop_at_once,
                        lines,
                    ),
                )| {
                    ServerPlan {
                        capacity,
                        buffers,
                        buffer_size,
                        idle_timeout_ms,
                        visit_budget,
                        readiness,
                        shutdown_at_ms,
                        edge_batches: readiness && edge_batches,
                        identity,
                        large_buffers,
                        large_factor,
                        app_every,
                        short_reads_drain,
                        stop_at_once,
                        lines,
                    }
                },
            )
    }

    fn faults() -> impl Strategy<Value = Faults> {
        (
            0..=40u8,
            0..=20u8,
            0..=40u8,
            0..=40u8,
            0..=60u8,
            prop_oneof![Just(0u8), 0..=20u8],
            prop_oneof![Just(0u16), 0..=1000u16],
        )
            .prop_map(
                |(
                    accept_would_block,
                    accept_error,
                    read_would_block,
                    write_would_block,
                    short_io,
                    interrupted,
                    late_wake_us,
                )| Faults {
                    accept_would_block,
                    accept_error,
                    read_would_block,
                    write_would_block,
                    short_io,
                    interrupted,
                    late_wake_us,
                },
            )
    }

    /// Any schedule of up to 12 clients.
    pub fn schedule() -> impl Strategy<Value = Schedule> {
        (
            any::<u64>(),
            server(),
            faults(),
            proptest::collection::vec(client(), 1..12),
        )
            .prop_map(|(seed, server, faults, clients)| Schedule {
                seed,
                server,
                faults,
                clients,
            })
    }
}
