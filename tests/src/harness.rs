//! Runs a [`Schedule`] through the real [`Driver`] over the simulated network, checking
//! the core's guarantees after every step against a model built from what the network
//! carried and what the driver did, never from the core's own code or counters.
//!
//! What is checked, and when:
//!
//! - **every write**: the bytes are the next ones of [`model_echo`](crate::net::model_echo)
//!   of what the server read on that connection (in the network, [`crate::net`]);
//! - **every read and write**: before the connection's idle deadline and the shutdown
//!   deadline (a connection past either is closed first, even when its readiness is
//!   reported before the timers run, as after a late wake-up);
//! - **every step**: stream-contract breaches (I/O after close, FIN with echo unsent, ...);
//!   ids (`conn_id` of each slot is the live connection the driver admitted there, or none);
//!   counters against the network and the model (`accepted`, `refused`, `active`, `closed`,
//!   `peer_closed`, `failed`, `accept_errors`, bytes in, out, dropped, discarded) and each
//!   connection's `pending_output` against the echo it still owes; buffer bounds;
//!   timers (a connection idle for the idle timeout is closing; one that made progress is
//!   not; no connection outlives the shutdown deadline); **fairness and liveness** (below);
//! - **every close**: a refusal only when every slot is live; a clean close only after
//!   `Shutdown`; an idle-timeout close only after the configured time without progress; a
//!   forced close only at the shutdown deadline; a failure only after a reset;
//! - **every wait**: never in the past, never past the next idle deadline or the shutdown
//!   deadline, never forever for a polling server; never twice at one instant with nothing
//!   new (a spin);
//! - **the end**: every connection closed, its echo complete if it closed cleanly, counters
//!   of reasons equal to the closes seen.
//!
//! # Fairness and liveness
//!
//! A connection is *serviceable* when the network and its state let an operation make
//! progress or end it: the peer sent bytes, end-of-stream or a reset and there is buffer
//! room to read them; or output is pending and the peer's window has room; or its flushed
//! state calls for `Shutdown`; or it is closing. A serviceable connection must see an
//! operation within [`Bounds::serve_ops`] operations (any of `Recv`, `Send`, `Shutdown`,
//! `Close`, whatever the outcome) and within [`SERVE_WITHIN_TIME`] of virtual time (plus
//! [`Bounds::slack`] for waits that end late). The
//! oldest connection in the listen backlog must see an `accept` within the same bounds,
//! except while accepting backs off after an error, or during a shutdown.
//!
//! The operation bound is two passes: a pass tries at most `accepts_per_pass` accepts and
//! visits each of the `capacity` connections once, for at most `visit_budget` reads and
//! writes plus its `Shutdown` and `Close`. Readiness that arrives during pass *P* is
//! reported to the core when that pass ends (the driver polls for events), and served in
//! pass *P + 1*. The time bound covers a polling server's idle back-off (at most 10 ms).
//!
//! In the [`edge_batches`](crate::ServerPlan::edge_batches) mode, readiness reaches the
//! core only when the driver waits, as from `epoll_wait`: a core that serves whatever is
//! ready until nothing is and only then waits starves everything that became ready
//! meanwhile, and these bounds catch it.
//!
//! # The time the core is told
//!
//! As the std adapter's loop, the driver here tells the core the time it last read: it
//! reads the clock every few operations and after each wait, except after a wait the core
//! began needing no time ([`Server::needs_time`]: nothing timed, nothing to do), where it
//! reports the readiness the wait brought at the old time and reads the clock only if the
//! core then needs it. The checks use the true time: a core that says it needs no time
//! when it arms a deadline (an accept back-off, a probe round, a hold) or has work sets it
//! from an old time, and the deadline comes early.

use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;

use nbecho_core::{
    nb, CloseReason, Config, ConnId, ConnState, Driver, Duration, ErrorKind, Instant, LineState,
    Mode, NumberedLines, Reply, Scheduling, Served, Server, Service, Slot, Stats, Step, Storage,
};

use crate::net::{Answer, Net, Pipe, SharedNet, SimListener, SimStream, WINDOW};
use crate::schedule::{Behaviour, Schedule, ServerPlan};

/// Steps a run may take before it counts as stuck.
pub const MAX_STEPS: u64 = 2_000_000;
/// The final graceful shutdown's deadline: long enough for every slow reader.
const FINAL_GRACE: Duration = Duration::from_secs(30);
/// A mid-traffic shutdown's deadline.
const MID_GRACE: Duration = Duration::from_secs(2);
/// Virtual time one operation takes.
const OP_TIME: Duration = Duration::from_micros(1);
/// The driver reads its clock once per wake-up and every few steps (the std adapter: every
/// 64), not before every step: here every 4, so that polls see one instant several times,
/// as the core meets them in the binary.
const CLOCK_EVERY: u32 = 4;
/// Virtual time within which a serviceable connection, or the oldest connection in the
/// backlog, must be served: five times the polling back-off's cap of 10 ms.
pub const SERVE_WITHIN_TIME: Duration = Duration::from_millis(50);

/// A lingering connection whose output is all acknowledged is closed within this: the
/// longest pause between probe rounds (`Config::probe_backoff_max`, 50 ms) plus the
/// service bound.
pub const CLOSE_WHEN_DELIVERED_WITHIN: Duration = Duration::from_millis(100);
/// Steps a connection may stay open once its peer is done with it.
const CLOSE_WITHIN: u64 = 50_000;
/// After a shutdown begins, `begin_shutdown` is called again every this many steps with a
/// later deadline, which must not move the first one.
const SHUTDOWN_AGAIN_EVERY: u64 = 997;
/// With `stop_at_once`: steps after a mid-traffic graceful stop began before the second
/// request stops at once.
const STOP_AT_ONCE_AFTER: u64 = 40;

/// What a successful run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Driver steps taken.
    pub steps: u64,
    /// Operations among them (steps other than waits), and those the driver performed
    /// as readiness came (the express lane).
    pub ops: u64,
    /// Operations the driver performed as readiness came (see [`Driver::on_ready`]).
    pub served_ops: u64,
    /// Echo bytes checked against the model of the transform as they were written.
    pub bytes_checked: u64,
    /// Faults the network injected.
    pub faults: u64,
    /// Connections admitted.
    pub accepted: u64,
    /// Connections refused at capacity.
    pub refused: u64,
    /// Connections that reset before they were accepted (`ConnectionAborted`).
    pub aborted: u64,
    /// The longest any serviceable connection or backlog entry waited, in operations.
    pub longest_wait_ops: u64,
    /// The largest buffer a connection held, in bytes.
    pub largest_buffer: usize,
    /// FNV-1a hash of the whole trace (every step and the time it ran).
    pub trace_hash: u64,
    /// The server's counters at the end.
    pub stats: Stats,
}

/// A broken guarantee, with what is needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The schedule's seed.
    pub seed: u64,
    /// The step at which it was seen.
    pub step: u64,
    /// What went wrong.
    pub what: String,
    /// The cargo test that reruns one seed (`--test sim replay_seed -- --nocapture`).
    pub rerun: &'static str,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}\n  rerun: NBECHO_SEED={} cargo test -p nbecho-tests {}",
            self.seed, self.step, self.what, self.seed, self.rerun
        )
    }
}

impl std::error::Error for Failure {}

/// FNV-1a, 64 bits: small, stable, enough to compare traces.
#[derive(Debug)]
struct Fnv(u64);

impl fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

/// The fairness bounds of one run (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Accepts one pass may try.
    pub accepts_per_pass: u64,
    /// Operations in one pass at most.
    pub pass_ops: u64,
    /// Operations within which a serviceable connection, or the oldest connection in the
    /// backlog, must be served: two passes.
    pub serve_ops: u64,
    /// Added to the time bounds ([`SERVE_WITHIN_TIME`], [`CLOSE_WHEN_DELIVERED_WITHIN`]):
    /// each of the waits they span (at most six) may end late
    /// ([`Faults::late_wake_us`](crate::Faults::late_wake_us)).
    pub slack: Duration,
}

impl Bounds {
    /// The bounds for a server of this configuration and capacity.
    pub fn new(config: &Config, capacity: usize) -> Self {
        let pass_ops = u64::from(config.accepts_per_pass)
            + capacity as u64 * (u64::from(config.visit_budget) + 2);
        Self {
            accepts_per_pass: u64::from(config.accepts_per_pass),
            pass_ops,
            serve_ops: 2 * pass_ops,
            slack: Duration::ZERO,
        }
    }
}

/// A wait for service that started at `ops` operations and time `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Since {
    ops: u64,
    at: Instant,
}

/// What the simulated application asked of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppCall {
    /// [`Server::abort`]: it must close, reset, within the service bound.
    Abort,
    /// [`Server::close`]: no more reads before its FIN, then an orderly end.
    Close,
}

/// What the harness knows, from the driver's steps and the network alone.
#[derive(Debug)]
struct Model {
    /// Per slot: the live connection there and its client.
    slots: Vec<Option<(ConnId, usize)>>,
    /// Per client:
    reasons: Vec<Option<CloseReason>>,
    refused: Vec<bool>,
    shut_down: Vec<bool>,
    eof_read: Vec<bool>,
    /// The last probe's answer: bytes in flight (0: all delivered).
    unacked: Vec<Option<usize>>,
    /// Since when everything, FIN included, was delivered to a connection still open.
    acked_since: Vec<Option<Instant>>,
    /// When the server last moved a byte of this connection (or admitted it).
    last_progress: Vec<Instant>,
    /// Since when the connection has been serviceable without being served.
    ready_since: Vec<Option<Since>>,
    /// Since when the oldest backlog entry has waited for an `accept`, and which it is.
    backlog_since: Option<(usize, Since)>,
    /// An accept failed (not would-block, not interrupted): accepting may back off until
    /// the next attempt, or until a connection closes (a descriptor is freed).
    accept_backing_off: bool,
    /// Accept failures since the last success, and the earliest the next attempt may
    /// come (the back-off doubles from 10 ms up to 1 s; a close ends it).
    accept_failures: u32,
    accept_retry_at: Option<Instant>,
    /// Accept attempts in a row, with no other step between (at most one pass's worth).
    accepts_in_a_row: u64,
    accepts_per_pass: u64,
    /// Every id ever admitted: none may be issued twice.
    issued: BTreeSet<ConnId>,
    /// Per client: what the application asked of its connection, if anything.
    app: Vec<Option<AppCall>>,
    /// Operations at the application's last call, and how many calls it made.
    app_last_ops: u64,
    app_calls: u64,
    ops: u64,
    /// Of `ops`, those of the express lane.
    served_ops: u64,
    longest_wait: u64,
    largest_buffer: usize,
    /// The earliest shutdown deadline asked for.
    shutdown_deadline: Option<Instant>,
    /// Counters, as the steps showed them.
    accepted: u64,
    refused_count: u64,
    closed: u64,
    peer_closed: u64,
    failed: u64,
    accept_errors: u64,
    timeouts: u64,
    forced: u64,
    /// Echo owed to connections when they closed, never sent.
    dropped: u64,
    /// In flight at their last probe, for connections force-closed.
    unacked_forced: u64,
}

impl Model {
    fn new(capacity: usize, clients: usize, accepts_per_pass: u64) -> Self {
        Self {
            slots: vec![None; capacity],
            reasons: vec![None; clients],
            refused: vec![false; clients],
            shut_down: vec![false; clients],
            eof_read: vec![false; clients],
            unacked: vec![None; clients],
            acked_since: vec![None; clients],
            last_progress: vec![Instant::ZERO; clients],
            ready_since: vec![None; clients],
            backlog_since: None,
            accept_backing_off: false,
            accept_failures: 0,
            accept_retry_at: None,
            accepts_in_a_row: 0,
            accepts_per_pass,
            issued: BTreeSet::new(),
            app: vec![None; clients],
            app_last_ops: 0,
            app_calls: 0,
            ops: 0,
            served_ops: 0,
            longest_wait: 0,
            largest_buffer: 0,
            shutdown_deadline: None,
            accepted: 0,
            refused_count: 0,
            closed: 0,
            peer_closed: 0,
            failed: 0,
            accept_errors: 0,
            timeouts: 0,
            forced: 0,
            dropped: 0,
            unacked_forced: 0,
        }
    }

    fn live(&self, conn: ConnId) -> Result<usize, String> {
        match self.slots.get(conn.index()).copied().flatten() {
            Some((id, client)) if id == conn => Ok(client),
            _ => Err(format!(
                "operation on {conn}, which is not a live connection"
            )),
        }
    }

    fn is_open(&self, client: usize) -> bool {
        self.slots.iter().flatten().any(|&(_, c)| c == client)
    }
}

type SimDriver<'a> = Driver<'a, SimListener, SimService<'a>>;

/// The server's service in a run: a transform (the in-place path) or a general service.
#[derive(Debug)]
pub(crate) enum SimService<'s> {
    Transform(Mode),
    Lines(NumberedLines<'s>),
}

impl<'s> SimService<'s> {
    /// The service `plan` asks for (with the line counters it needs), and what the
    /// network must then expect.
    pub(crate) fn for_plan(plan: &ServerPlan, lines: &'s mut [LineState]) -> (Answer, Self) {
        if plan.lines {
            (Answer::Lines, Self::Lines(NumberedLines::new(lines)))
        } else if plan.identity {
            (Answer::Echo, Self::Transform(Mode::Echo))
        } else {
            (Answer::Upper, Self::Transform(Mode::Upper))
        }
    }
}

impl Service for SimService<'_> {
    fn open(&mut self, conn: ConnId) {
        match self {
            Self::Transform(mode) => mode.open(conn),
            Self::Lines(lines) => lines.open(conn),
        }
    }

    fn receive(&mut self, conn: ConnId, input: &[u8], reply: &mut Reply<'_>) -> usize {
        match self {
            Self::Transform(mode) => mode.receive(conn, input, reply),
            Self::Lines(lines) => lines.receive(conn, input, reply),
        }
    }

    fn end(&mut self, conn: ConnId, input: &[u8], reply: &mut Reply<'_>) {
        match self {
            Self::Transform(mode) => mode.end(conn, input, reply),
            Self::Lines(lines) => lines.end(conn, input, reply),
        }
    }

    fn close(&mut self, conn: ConnId) {
        match self {
            Self::Transform(mode) => mode.close(conn),
            Self::Lines(lines) => lines.close(conn),
        }
    }

    fn is_transform(&self) -> bool {
        matches!(self, Self::Transform(_))
    }

    fn transform(&mut self, bytes: &mut [u8]) {
        if let Self::Transform(mode) = self {
            Service::transform(mode, bytes);
        }
    }
}

/// The configuration a plan asks for, in `scheduling`.
pub(crate) fn sim_config(plan: &ServerPlan, scheduling: Scheduling) -> Config {
    let mut config = Config::default();
    config.scheduling = scheduling;
    config.idle_timeout = plan
        .idle_timeout_ms
        .map(|t| Duration::from_millis(t.into()));
    config.visit_budget = plan.visit_budget.into();
    config.short_reads_drain = plan.short_reads_drain;
    config
}

/// The memory of a simulated server, made from its plan: slot headers, the small and
/// large buffer arenas, and the line counters of a `NumberedLines` service.
pub(crate) struct SimMemory {
    slots: Vec<Slot>,
    arena: Vec<u8>,
    large_arena: Vec<u8>,
    buffer_size: usize,
    large_size: usize,
    lines: Vec<LineState>,
}

impl SimMemory {
    pub(crate) fn new(plan: &ServerPlan) -> Self {
        let capacity = usize::from(plan.capacity);
        let buffer_size = usize::from(plan.buffer_size);
        let large_size = buffer_size * usize::from(plan.large_factor);
        Self {
            slots: vec![Slot::EMPTY; capacity],
            arena: vec![0u8; usize::from(plan.buffers) * buffer_size],
            large_arena: vec![0u8; usize::from(plan.large_buffers) * large_size],
            buffer_size,
            large_size,
            lines: vec![LineState::NEW; capacity],
        }
    }

    /// The largest buffer a connection may hold.
    pub(crate) fn largest_buffer(&self) -> usize {
        if self.large_arena.is_empty() {
            self.buffer_size
        } else {
            self.buffer_size.max(self.large_size)
        }
    }

    /// The core's storage in it, and the service the plan asks for (with what the
    /// network model answers).
    pub(crate) fn parts(
        &mut self,
        plan: &ServerPlan,
    ) -> Result<(Storage<'_>, Answer, SimService<'_>), nbecho_core::StorageError> {
        let mut storage = Storage::new(&mut self.slots, &mut self.arena, self.buffer_size)?;
        if !self.large_arena.is_empty() {
            storage = storage.with_large_buffers(&mut self.large_arena, self.large_size)?;
        }
        let (answer, service) = SimService::for_plan(plan, &mut self.lines);
        Ok((storage, answer, service))
    }
}

/// Runs the schedule to completion: every client served, then a graceful shutdown until
/// [`Step::Finished`].
pub fn run(schedule: &Schedule) -> Result<Report, Failure> {
    let s = schedule.normalized();
    let mut step = 0;
    let fail = |step: u64, what: String| Failure {
        seed: s.seed,
        step,
        what,
        rerun: "--test sim replay_seed -- --nocapture",
    };

    let capacity = usize::from(s.server.capacity);
    let mut streams: Vec<Option<SimStream>> = (0..capacity).map(|_| None).collect();
    let scheduling = if s.server.readiness {
        Scheduling::Readiness
    } else {
        Scheduling::Polling
    };
    let config = sim_config(&s.server, scheduling);
    let idle_timeout = config.idle_timeout;
    let mut memory = SimMemory::new(&s.server);
    // The most any connection may buffer.
    let buffer_size = memory.largest_buffer();
    let (storage, answer, service) = memory
        .parts(&s.server)
        .map_err(|e| fail(0, format!("storage: {e}")))?;
    let server = Server::new(config, storage, service);
    let mut bounds = Bounds::new(server.config(), capacity);
    bounds.slack = Duration::from_micros(s.faults.late_wake_us.into()).saturating_mul(6);
    let net: SharedNet = Net::new(s.seed, s.faults.clone(), &s.clients, answer);
    net.borrow_mut().short_reads_drain = s.server.short_reads_drain;
    let mut driver = Driver::new(server, SimListener(Rc::clone(&net)), &mut streams)
        .map_err(|e| fail(0, e.to_string()))?;

    let mut model = Model::new(capacity, s.clients.len(), bounds.accepts_per_pass);
    let mut trace = Fnv(0xcbf2_9ce4_8422_2325);
    let mut now = Instant::ZERO;
    // The time the server is told: `now` as the driver last read it. The std adapter's
    // epoll loop skips the clock after a wait the server began needing no time
    // (`Server::needs_time`), and reads it once the wake-up brings work; so does this.
    let mut told = Instant::ZERO;
    let mut skip_clock = false;
    let mut ops_at_now = 0u32;
    let mid_shutdown = s
        .server
        .shutdown_at_ms
        .map(|t| Instant::from_millis(t.into()));
    let mut shutdown_began = None;
    let mut finished = false;
    // A polling pass without progress ends in a Wait: a run of steps that move nothing
    // is at most two passes long (the end of a pass that made progress, then one that
    // did not).
    let spin_limit = 2 * bounds.pass_ops + 2;
    let mut idle_steps = 0;
    // The last wait's instant, if nothing happened since (no operation, no readiness).
    let mut quiet_wait_at: Option<Instant> = None;
    // The time of the last step (its poll ran the timers for it).
    let mut last_poll = Instant::ZERO;
    // Readiness in edge-batch mode reaches the core only after a wait (and at the start).
    let mut waited = true;
    // When each client's peer side was finished (reset, or end-of-stream sent and its
    // echo read): its connection must close within `CLOSE_WITHIN` steps after that.
    let mut peer_done_at: Vec<Option<u64>> = vec![None; s.clients.len()];
    // NBECHO_TRACE=1 prints every step, for replaying a failure.
    let print_trace = std::env::var_os("NBECHO_TRACE").is_some();

    while step < MAX_STEPS {
        step += 1;
        net.borrow_mut().clients_act(now);
        if !skip_clock {
            told = now;
        }

        // The readiness role: report what the clients' actions (and the server's own
        // would-blocks) made ready; in edge-batch mode only when the driver polls for
        // events, which it does when it waits.
        if s.server.readiness && (waited || !s.server.edge_batches) {
            let (delivered, served) =
                deliver_readiness(&mut driver, &net, &model, told).map_err(|e| fail(step, e))?;
            if delivered {
                quiet_wait_at = None;
                idle_steps = 0;
            }
            // What the express lane did as readiness came: observed as steps, then checked
            // as one (the server's counters include them all).
            for taken in served.iter().flat_map(Served::steps) {
                fmt::Write::write_fmt(&mut trace, format_args!("{now:?} ready {taken:?}\n")).ok();
                if print_trace {
                    eprintln!("{step:>7} {now} ready {taken:?}");
                }
                model.ops += 1;
                model.served_ops += 1;
                observe(&s, &mut model, &driver, &net, &taken, now, idle_timeout)
                    .map_err(|e| fail(step, e))?;
            }
            if !served.is_empty() {
                // Timers as of the last poll: a late wake-up may have passed deadlines
                // that the next poll, not the readiness reports, acts on.
                check_step(&driver, &net, buffer_size, &model, last_poll)
                    .map_err(|e| fail(step, e))?;
                // The clients see what was written (they act between any two steps).
                net.borrow_mut().clients_act(now);
            }
        }

        if !driver.server().is_shutting_down() {
            let all_done = {
                let n = net.borrow();
                (0..s.clients.len()).all(|i| n.clients[i].connected && n.client_done(i))
            };
            let idle_left = quiet_since_all_connected(&net.borrow(), now);
            let grace = if mid_shutdown.is_some_and(|t| now >= t) {
                Some(MID_GRACE)
            } else if all_done || idle_left {
                Some(FINAL_GRACE)
            } else {
                None
            };
            if let Some(grace) = grace {
                driver.server_mut().begin_shutdown(now + grace);
                model.shutdown_deadline = Some(now + grace);
                shutdown_began = Some((step, grace));
            }
        } else if let Some((began, grace)) = shutdown_began {
            if s.server.stop_at_once && grace == MID_GRACE && step - began == STOP_AT_ONCE_AFTER {
                driver.server_mut().begin_shutdown(now);
                model.shutdown_deadline = model.shutdown_deadline.map(|d| d.min(now));
            }
            // Asking again, later, changes nothing: only an earlier deadline would.
            if (step - began) % SHUTDOWN_AGAIN_EVERY == 1 {
                let later = now + grace.saturating_mul(2);
                driver.server_mut().begin_shutdown(later);
                model.shutdown_deadline = model.shutdown_deadline.map(|d| d.min(later));
            }
        }

        if let Some(every) = s.server.app_every {
            app_acts(&mut driver, &mut model, u64::from(every)).map_err(|e| fail(step, e))?;
        }

        if skip_clock && driver.server().needs_time() {
            told = now;
        }
        let taken = driver.step(told);
        last_poll = told;
        fmt::Write::write_fmt(&mut trace, format_args!("{now:?} {taken:?}\n")).ok();
        if print_trace {
            eprintln!("{step:>7} {now} {taken:?}");
        }
        waited = matches!(taken, Step::Wait(_));
        if !waited {
            model.ops += 1;
            quiet_wait_at = None;
        }
        let before = now;
        observe(&s, &mut model, &driver, &net, &taken, now, idle_timeout)
            .map_err(|e| fail(step, e))?;
        skip_clock = matches!(taken, Step::Wait(_)) && !driver.server().needs_time();
        match taken {
            Step::Wait(until) => {
                ops_at_now = 0; // a wait reads the clock anew (unless it skips it)
                                // A wait "until now" (readiness: poll for events, then go on) that finds
                                // nothing new must be followed by work or a real wait, not another.
                if until == Some(now) && quiet_wait_at == Some(now) {
                    return Err(fail(
                        step,
                        format!("waited until now twice at {now} with nothing done or reported between: spinning"),
                    ));
                }
                quiet_wait_at = (until == Some(now)).then_some(now);
                check_wait(&s, &model, &driver, until, now).map_err(|e| fail(step, e))?;
                let n = net.borrow();
                // Like epoll_wait, a wait returns at once when readiness is pending.
                let events_pending = s.server.readiness && (!n.edges.is_empty() || n.listener_edge);
                if !events_pending {
                    let next_client = n.next_client_event(now);
                    // A wait ended by the server's own deadline may return late; clients
                    // act meanwhile, and what they make ready is reported first.
                    let late = Duration::from_micros(s.faults.late_wake_us.into());
                    let woke = |t: Instant| match until {
                        Some(u) if u == t && u > now => t + late,
                        _ => t,
                    };
                    match [until, next_client].into_iter().flatten().min() {
                        Some(t) => now = now.max(woke(t)),
                        None if n.clients_busy(now) => {}
                        None => {
                            return Err(fail(
                                step,
                                "the server waits forever with connections left".into(),
                            ))
                        }
                    }
                }
            }
            Step::Finished => {
                finished = true;
                break;
            }
            _ => {
                ops_at_now += 1;
                if ops_at_now == CLOCK_EVERY {
                    ops_at_now = 0;
                    now = now + OP_TIME.saturating_mul(CLOCK_EVERY.into());
                }
            }
        }
        let moved = matches!(
            taken,
            Step::Recv {
                outcome: Ok(_) | Err(nb::Error::Other(_)),
                ..
            } | Step::Send {
                outcome: Ok(_) | Err(nb::Error::Other(_)),
                ..
            } | Step::Accepted(_)
                | Step::Refused
                | Step::Shutdown(_)
                | Step::Closed(..)
        );
        idle_steps = if moved || (waited && now > before) {
            0
        } else {
            idle_steps + 1
        };
        if idle_steps > spin_limit {
            let what =
                format!("{idle_steps} steps in a row moved nothing without waiting: spinning");
            return Err(fail(step, what));
        }
        check_step(&driver, &net, buffer_size, &model, before).map_err(|e| fail(step, e))?;
        check_service(&mut model, &driver, &net, bounds, now).map_err(|e| fail(step, e))?;
        check_closes(&net.borrow(), &model, now, step, &mut peer_done_at)
            .map_err(|e| fail(step, e))?;
    }
    if !finished {
        return Err(fail(step, format!("not finished after {MAX_STEPS} steps")));
    }
    // Slow readers still read what is in flight to them.
    loop {
        let next = net.borrow().next_client_event(now);
        let Some(t) = next else { break };
        now = t;
        net.borrow_mut().clients_act(now);
    }
    net.borrow_mut().clients_act(now);
    check_end(&s, &driver, &net, &model).map_err(|e| fail(step, e))?;
    let stats = *driver.server().stats();
    let n = net.borrow();
    Ok(Report {
        steps: step,
        ops: model.ops,
        served_ops: model.served_ops,
        bytes_checked: n.pipes.iter().map(|p| p.written as u64).sum(),
        faults: n.injected,
        accepted: stats.accepted,
        refused: stats.refused,
        aborted: n.pipes.iter().filter(|p| p.reset && !p.accepted).count() as u64,
        longest_wait_ops: model.longest_wait,
        largest_buffer: model.largest_buffer,
        trace_hash: trace.0,
        stats,
    })
}

/// Every `every` operations, the application aborts or closes (in turn) the live
/// connection in the lowest slot it has not yet touched.
fn app_acts(driver: &mut SimDriver<'_>, model: &mut Model, every: u64) -> Result<(), String> {
    if model.ops == 0 || !model.ops.is_multiple_of(every) || model.app_last_ops == model.ops {
        return Ok(());
    }
    model.app_last_ops = model.ops;
    let target = model
        .slots
        .iter()
        .flatten()
        .find(|&&(_, client)| model.app[client].is_none())
        .copied();
    let Some((conn, client)) = target else {
        return Ok(());
    };
    let call = if model.app_calls.is_multiple_of(2) {
        AppCall::Abort
    } else {
        AppCall::Close
    };
    model.app_calls += 1;
    model.app[client] = Some(call);
    let server = driver.server_mut();
    match call {
        AppCall::Abort => server.abort(conn),
        AppCall::Close => server.close(conn),
    }
    .map_err(|e| format!("{call:?} on the live {conn}: {e}"))
}

/// Reports the pending readiness edges through the driver, at `now`: true if there were
/// any, and what the driver served at once.
fn deliver_readiness(
    driver: &mut SimDriver<'_>,
    net: &SharedNet,
    model: &Model,
    now: Instant,
) -> Result<(bool, Vec<Served>), String> {
    let mut served = Vec::new();
    let (edges, listener) = {
        let mut n = net.borrow_mut();
        (
            std::mem::take(&mut n.edges),
            std::mem::take(&mut n.listener_edge),
        )
    };
    if listener {
        driver.server_mut().on_listener_ready();
    }
    for &(client, readable, writable, read_closed) in &edges {
        let conn = model
            .slots
            .iter()
            .flatten()
            .find(|(_, c)| *c == client)
            .map(|(id, _)| *id);
        if let Some(conn) = conn {
            served.extend(
                driver
                    .on_ready(now, conn, readable, writable)
                    .map_err(|e| format!("on_ready({conn}): {e}"))?,
            );
            if read_closed {
                driver
                    .server_mut()
                    .on_read_closed(conn)
                    .map_err(|e| format!("on_read_closed({conn}): {e}"))?;
            }
        }
    }
    Ok((listener || !edges.is_empty(), served))
}

/// A read or write of `conn` (`client`'s) at `now` comes before its idle deadline: one
/// whose deadline has passed is closed first, whether its readiness comes before the
/// timers run (the express lane) or after (a pass), so that new data never revives it.
fn not_expired(
    model: &Model,
    conn: ConnId,
    client: usize,
    now: Instant,
    idle_timeout: Option<Duration>,
) -> Result<(), String> {
    match idle_timeout {
        Some(t) if now >= model.last_progress[client] + t => Err(format!(
            "{conn} read or written at {now}, idle since {}: past its idle deadline {}, it is \
             closed first",
            model.last_progress[client],
            model.last_progress[client] + t
        )),
        _ => Ok(()),
    }
}

/// Updates the model with one step and checks what the step itself must respect.
fn observe(
    s: &Schedule,
    model: &mut Model,
    driver: &SimDriver<'_>,
    net: &SharedNet,
    taken: &Step,
    now: Instant,
    idle_timeout: Option<Duration>,
) -> Result<(), String> {
    let accept_attempt = matches!(
        taken,
        Step::Accepted(_) | Step::Refused | Step::AcceptWouldBlock | Step::AcceptFailed(_)
    );
    if accept_attempt {
        model.backlog_since = None;
        model.accept_backing_off = false;
        if let Some(earliest) = model.accept_retry_at.take() {
            if now < earliest {
                return Err(format!(
                    "accept retried at {now} after {} failure(s); the back-off runs to {earliest}",
                    model.accept_failures
                ));
            }
        }
        model.accepts_in_a_row += 1;
        if model.accepts_in_a_row > model.accepts_per_pass {
            return Err(format!(
                "{} accepts in a row: a pass may try {}",
                model.accepts_in_a_row, model.accepts_per_pass
            ));
        }
    } else {
        model.accepts_in_a_row = 0;
    }
    match *taken {
        Step::Accepted(conn) => {
            let client = net
                .borrow()
                .last_accepted
                .ok_or("an accept returned no stream")?;
            if model.slots[conn.index()].is_some() {
                return Err(format!("{conn} admitted into a busy slot"));
            }
            if !model.issued.insert(conn) {
                return Err(format!(
                    "{conn} issued twice: a stale id would name a new connection"
                ));
            }
            model.accept_failures = 0;
            model.slots[conn.index()] = Some((conn, client));
            model.last_progress[client] = now;
            model.accepted += 1;
        }
        Step::Refused => {
            let client = net
                .borrow()
                .last_accepted
                .ok_or("an accept returned no stream")?;
            let free = model.slots.iter().filter(|s| s.is_none()).count();
            if free > 0 {
                return Err(format!(
                    "client {client} refused with {free} free slot(s) of {}",
                    model.slots.len()
                ));
            }
            model.refused[client] = true;
            model.refused_count += 1;
            model.accept_failures = 0;
        }
        Step::AcceptFailed(ErrorKind::ConnectionAborted) => {
            // That connection is gone; the listener is fine: no back-off.
            model.accept_errors += 1;
        }
        Step::AcceptFailed(kind) if kind != ErrorKind::Interrupted => {
            model.accept_errors += 1;
            model.accept_backing_off = true;
            // The simulation's accept errors are all "out of descriptors" (EMFILE).
            model.accept_failures += 1;
            let doublings = (model.accept_failures - 1).min(10);
            let backoff = Duration::from_millis(10)
                .saturating_mul(1 << doublings)
                .min(Duration::from_secs(1));
            model.accept_retry_at = Some(now + backoff);
        }
        Step::Recv { conn, .. } | Step::Send { conn, .. }
            if model.shutdown_deadline.is_some_and(|d| now >= d) =>
        {
            return Err(format!(
                "{conn} read or written at {now}, at or past the shutdown deadline {:?}: every \
                 connection is force-closed first",
                model.shutdown_deadline
            ));
        }
        Step::Recv { conn, outcome } => {
            let client = model.live(conn)?;
            not_expired(model, conn, client, now, idle_timeout)?;
            model.ready_since[client] = None;
            if model.shutdown_deadline.is_some() && !model.shut_down[client] {
                return Err(format!(
                    "{conn} read after the shutdown began, before its FIN: a shutdown stops reading"
                ));
            }
            if model.app[client] == Some(AppCall::Close) && !model.shut_down[client] {
                return Err(format!(
                    "{conn} read after the application closed it, before its FIN"
                ));
            }
            match outcome {
                Ok(0) => {
                    model.peer_closed += 1;
                    model.eof_read[client] = true;
                }
                Ok(_) => model.last_progress[client] = now,
                Err(nb::Error::Other(kind)) if kind != ErrorKind::Interrupted => {
                    model.failed += 1;
                }
                Err(_) => {}
            }
        }
        Step::Send { conn, outcome } => {
            let client = model.live(conn)?;
            not_expired(model, conn, client, now, idle_timeout)?;
            model.ready_since[client] = None;
            match outcome {
                Ok(0) => model.failed += 1,
                Ok(_) => model.last_progress[client] = now,
                Err(nb::Error::Other(kind)) if kind != ErrorKind::Interrupted => {
                    model.failed += 1;
                }
                Err(_) => {}
            }
        }
        Step::Shutdown(conn) => {
            let client = model.live(conn)?;
            model.ready_since[client] = None;
            model.shut_down[client] = true;
        }
        Step::Probe { conn, outcome } => {
            let client = model.live(conn)?;
            if !model.shut_down[client] {
                return Err(format!("{conn} probed for delivery before its Shutdown"));
            }
            match outcome {
                Ok(n) => model.unacked[client] = Some(n),
                Err(ErrorKind::Interrupted) => {}
                Err(_) => model.failed += 1,
            }
        }
        Step::Closed(conn, reason) => {
            let client = model.live(conn)?;
            check_close_reason(s, model, client, reason, now, idle_timeout)?;
            model.reasons[client] = Some(reason);
            model.slots[conn.index()] = None;
            // A descriptor is free: accepting resumes without waiting out its back-off.
            model.accept_backing_off = false;
            model.accept_retry_at = None;
            model.ready_since[client] = None;
            model.closed += 1;
            let n = net.borrow();
            let pipe = &n.pipes[client];
            model.dropped += (pipe.expected.len() - pipe.written) as u64;
            if driver.server().conn_state(conn).is_ok() {
                return Err(format!("{conn} is closed but its id still works"));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_close_reason(
    s: &Schedule,
    model: &mut Model,
    client: usize,
    reason: CloseReason,
    now: Instant,
    idle_timeout: Option<Duration>,
) -> Result<(), String> {
    match reason {
        CloseReason::Done if !model.shut_down[client] => Err(format!(
            "client {client} closed cleanly without a Shutdown (FIN) first"
        )),
        CloseReason::Done if !model.eof_read[client] && model.unacked[client] != Some(0) => {
            Err(format!(
                "client {client} closed cleanly before the peer's FIN, while a probe last saw \
                 {:?} bytes in flight",
                model.unacked[client]
            ))
        }
        CloseReason::TimedOut => {
            model.timeouts += 1;
            let idle = now - model.last_progress[client];
            match idle_timeout {
                None => Err(format!("client {client} timed out with no idle timeout")),
                Some(t) if idle < t => Err(format!(
                    "client {client} closed as idle after {idle} without progress; the timeout is {t}"
                )),
                Some(_) => Ok(()),
            }
        }
        CloseReason::Forced => {
            model.forced += 1;
            model.unacked_forced += model.unacked[client].unwrap_or(0) as u64;
            match model.shutdown_deadline {
                Some(deadline) if now >= deadline && s.server.shutdown_at_ms.is_some() => Ok(()),
                Some(deadline) if now >= deadline => Err(format!(
                    "client {client} force-closed in a final shutdown of {FINAL_GRACE}"
                )),
                _ => Err(format!(
                    "client {client} force-closed at {now}, before the shutdown deadline {:?}",
                    model.shutdown_deadline
                )),
            }
        }
        CloseReason::Aborted if model.app[client] != Some(AppCall::Abort) => Err(format!(
            "client {client} closed as aborted, which nobody asked for"
        )),
        CloseReason::Failed(_) => Ok(()),
        _ => Ok(()),
    }
}

/// A wait must not sleep through a deadline the core is responsible for.
fn check_wait(
    s: &Schedule,
    model: &Model,
    driver: &SimDriver<'_>,
    until: Option<Instant>,
    now: Instant,
) -> Result<(), String> {
    match until {
        Some(t) if t < now => return Err(format!("Wait until {t} is in the past ({now})")),
        Some(t) if t == now && !s.server.readiness => {
            return Err(format!("a polling server waits until now ({now})"))
        }
        None if !s.server.readiness => return Err("a polling server waited forever".into()),
        _ => {}
    }
    let until = until.unwrap_or(Instant::MAX);
    let server = driver.server();
    let timeout = server.config().idle_timeout;
    for &(conn, client) in model.slots.iter().flatten() {
        if server.conn_state(conn) == Ok(ConnState::Closing) {
            continue;
        }
        if let Some(t) = timeout {
            let deadline = model.last_progress[client] + t;
            if until > deadline {
                return Err(format!(
                    "waits until {until}, past {conn}'s idle deadline {deadline}"
                ));
            }
        }
        if let Some(deadline) = model.shutdown_deadline {
            if until > deadline {
                return Err(format!(
                    "waits until {until}, past the shutdown deadline {deadline} with {conn} open"
                ));
            }
        }
    }
    Ok(())
}

/// Idle clients keep their connections open; once everyone has connected and nothing
/// but idle clients is left, the harness starts the final shutdown.
fn quiet_since_all_connected(net: &Net, now: Instant) -> bool {
    let pending_time = net.next_client_event(now).is_some();
    !pending_time
        && !net.clients_busy(now)
        && net.clients.iter().enumerate().all(|(i, c)| {
            let pipe = &net.pipes[i];
            c.connected
                && (net.client_done(i)
                    || (c.plan.behaviour == Behaviour::Idle
                        && c.sent == c.payload.len()
                        && pipe.to_server.is_empty()
                        && pipe.written == pipe.expected.len()
                        && pipe.to_client.is_empty()))
        })
}

fn check_closes(
    net: &Net,
    model: &Model,
    now: Instant,
    step: u64,
    peer_done_at: &mut [Option<u64>],
) -> Result<(), String> {
    for (i, done_at) in peer_done_at.iter_mut().enumerate() {
        if !model.is_open(i) {
            *done_at = None;
            continue;
        }
        let (pipe, client) = (&net.pipes[i], &net.clients[i]);
        let reading =
            now >= client.connect_at + Duration::from_millis(client.plan.read_pause_ms.into());
        let finished = pipe.reset
            || (pipe.client_eof
                && pipe.to_server.is_empty()
                && pipe.to_client.is_empty()
                && reading);
        match *done_at {
            None if finished => *done_at = Some(step),
            Some(at) if step - at > CLOSE_WITHIN => {
                return Err(format!(
                    "client {i}'s peer was done at step {at}; still open {CLOSE_WITHIN} steps later"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What [`serviceable`] needs to know of a live connection, from the server's getters.
pub(crate) struct Fill {
    pub(crate) state: ConnState,
    /// Output not sent yet.
    pub(crate) pending: usize,
    /// Bytes in the part of the buffer that reads fill, and that part's size: a general
    /// service reads into the first half, after the input it has not consumed yet.
    pub(crate) filled: usize,
    pub(crate) capacity: usize,
    /// The whole buffer's size (0: it holds none).
    pub(crate) buffer: usize,
}

impl Fill {
    pub(crate) fn of<S: Service, F: nbecho_core::Flights>(
        server: &Server<'_, S, F>,
        conn: ConnId,
        answer: Answer,
    ) -> Result<Self, String> {
        let err = |e| format!("{conn}: {e}");
        let state = server.conn_state(conn).map_err(err)?;
        let pending = server.pending_output(conn).map_err(err)?;
        let buffer = server.buffer_capacity(conn).map_err(err)?;
        let (filled, capacity) = if answer == Answer::Lines {
            (server.pending_input(conn).map_err(err)?, buffer / 2)
        } else {
            (pending, buffer)
        };
        Ok(Self {
            state,
            pending,
            filled,
            capacity,
            buffer,
        })
    }

    /// True if an operation on this connection can make progress or end it now. With no
    /// buffer (`capacity` 0) it needs one the pool `can_lend`.
    ///
    /// `reading`: a read is in flight already (completion scheduling: a read that waits
    /// for data), so that only the other work counts.
    pub(crate) fn serviceable(
        &self,
        can_lend: bool,
        pipe: &Pipe,
        eof_read: bool,
        reading: bool,
    ) -> bool {
        let state = self.state;
        let peer_sent = !reading
            && (!pipe.to_server.is_empty() || (pipe.client_eof && !eof_read) || pipe.reset);
        let room = if self.capacity == 0 {
            can_lend
        } else {
            self.filled < self.capacity
        };
        let read = state.may_recv() && peer_sent && room;
        let write =
            state.may_send() && self.pending > 0 && (pipe.to_client.len() < WINDOW || pipe.reset);
        let shutdown =
            self.pending == 0 && matches!(state, ConnState::PeerClosed | ConnState::Draining);
        state == ConnState::Closing || read || write || shutdown
    }
}

/// Fairness and liveness: see the module docs.
fn check_service(
    model: &mut Model,
    driver: &SimDriver<'_>,
    net: &SharedNet,
    bounds: Bounds,
    now: Instant,
) -> Result<(), String> {
    let server = driver.server();
    let n = net.borrow();
    let (blocks, lent) = server.buffers();
    let can_lend = lent < blocks;
    let (ops, mut longest) = (model.ops, model.longest_wait);
    let within = SERVE_WITHIN_TIME + bounds.slack;
    let late = |since: Since| ops - since.ops > bounds.serve_ops || now - since.at > within;
    for &(conn, client) in model.slots.iter().flatten() {
        let fill = Fill::of(server, conn, n.answer())?;
        let state = fill.state;
        model.largest_buffer = model.largest_buffer.max(fill.buffer);
        let ready = model.app[client] == Some(AppCall::Abort)
            || fill.serviceable(can_lend, &n.pipes[client], model.eof_read[client], false);
        let since = &mut model.ready_since[client];
        match (*since, ready) {
            (_, false) => *since = None,
            (None, true) => *since = Some(Since { ops, at: now }),
            (Some(s), true) => {
                longest = longest.max(ops - s.ops);
                if late(s) {
                    return Err(format!(
                        "{conn} (client {client}, {state}) has been serviceable since operation {} ({}) \
                         and was not served in {} operations / {}: unfair or stalled \
                         (the bound is {} operations, {within})",
                        s.ops, s.at, ops - s.ops, now - s.at, bounds.serve_ops
                    ));
                }
            }
        }
        // Lingering with everything delivered: the next probe round must end it.
        let delivered = state == ConnState::Lingering && n.pipes[client].fin_acked;
        let acked = &mut model.acked_since[client];
        match (*acked, delivered) {
            (_, false) => *acked = None,
            (None, true) => *acked = Some(now),
            (Some(since), true) if now - since > CLOSE_WHEN_DELIVERED_WITHIN + bounds.slack => {
                return Err(format!(
                    "{conn} (client {client}) still lingers {} after its output and FIN were \
                     acknowledged (the bound is {})",
                    now - since,
                    CLOSE_WHEN_DELIVERED_WITHIN + bounds.slack
                ));
            }
            (Some(_), true) => {}
        }
    }
    let head = n.backlog.front().copied();
    match (head, model.backlog_since) {
        _ if server.is_shutting_down() || model.accept_backing_off => model.backlog_since = None,
        (None, _) => model.backlog_since = None,
        (Some(c), Some((waiting, s))) if c == waiting => {
            longest = longest.max(ops - s.ops);
            if late(s) {
                return Err(format!(
                    "client {c} has waited in the listen backlog since operation {} ({}) with no \
                     accept in {} operations / {} (the bound is {} operations, {within})",
                    s.ops,
                    s.at,
                    ops - s.ops,
                    now - s.at,
                    bounds.serve_ops
                ));
            }
        }
        (Some(c), _) => model.backlog_since = Some((c, Since { ops, at: now })),
    }
    model.longest_wait = longest;
    Ok(())
}

fn check_step(
    driver: &SimDriver<'_>,
    net: &SharedNet,
    buffer_size: usize,
    model: &Model,
    polled_at: Instant,
) -> Result<(), String> {
    let n = net.borrow();
    if let Some(v) = n.violations.first() {
        return Err(v.clone());
    }
    let server = driver.server();
    let st = server.stats();

    // Ids: each slot holds exactly the connection the driver admitted there.
    for (index, expected) in model.slots.iter().enumerate() {
        let got = server.conn_id(index);
        if got != expected.map(|(id, _)| id) {
            return Err(format!(
                "conn_id({index}) is {got:?}, but the slot holds {:?}",
                expected.map(|(id, _)| id)
            ));
        }
    }

    // Counters against what the network carried and the steps showed.
    let read: u64 = n.pipes.iter().map(|p| p.server_read.len() as u64).sum();
    let written: u64 = n.pipes.iter().map(|p| p.written as u64).sum();
    let discarded: u64 = n.pipes.iter().map(|p| p.discarded).sum();
    let live = model.slots.iter().flatten().count() as u64;
    let seen = (
        model.accepted,
        model.refused_count,
        live,
        model.closed,
        model.peer_closed,
        model.failed,
        model.accept_errors,
    );
    let counted = (
        st.accepted,
        st.refused,
        st.active,
        st.closed,
        st.peer_closed,
        st.failed,
        st.accept_errors,
    );
    if seen != counted {
        return Err(format!(
            "counters (accepted, refused, active, closed, peer_closed, failed, accept_errors) \
             are {counted:?}, the steps showed {seen:?}"
        ));
    }
    let bytes = (read, written, model.dropped, discarded);
    let counted = (
        st.bytes_in,
        st.bytes_out,
        st.bytes_dropped,
        st.bytes_discarded,
    );
    // A general service owes replies as it consumes input: the model, which answers
    // every byte at once, bounds what was dropped (replies not sent) and what was
    // discarded (input the service never consumed: after `quit`, at a stop, a timeout).
    let lines = n.answer() == Answer::Lines;
    let within = lines
        && (counted.0, counted.1) == (read, written)
        && counted.2 <= model.dropped
        && (discarded..=discarded + read).contains(&counted.3);
    if bytes != counted && !within {
        return Err(format!(
            "byte counters (in, out, dropped, discarded) are {counted:?}, the network carried {bytes:?}"
        ));
    }
    // The deadline counts every forced connection at once; the steps show them one by one.
    if st.bytes_unacked < model.unacked_forced
        || (st.active == 0 && st.bytes_unacked != model.unacked_forced)
    {
        return Err(format!(
            "{} bytes counted unacknowledged at forced closes, the probes showed {}",
            st.bytes_unacked, model.unacked_forced
        ));
    }
    if st.timeouts < model.timeouts || st.forced < model.forced {
        return Err(format!(
            "{} timeouts and {} forced closes counted, {} and {} seen",
            st.timeouts, st.forced, model.timeouts, model.forced
        ));
    }

    // Pending output: per connection, exactly the echo it still owes.
    let mut buffered = 0;
    let timeout = server.config().idle_timeout;
    for &(conn, client) in model.slots.iter().flatten() {
        let pending = server
            .pending_output(conn)
            .map_err(|e| format!("{conn}: {e}"))?;
        let pipe = &n.pipes[client];
        let owed = pipe.expected.len() - pipe.written;
        // A general service may not have replied yet to input it holds.
        if pending != owed && !(n.answer() == Answer::Lines && pending < owed) {
            return Err(format!(
                "{conn} says {pending} bytes pending; it owes {owed} bytes of echo"
            ));
        }
        let capacity = server
            .buffer_capacity(conn)
            .map_err(|e| format!("{conn}: {e}"))?;
        if pending > capacity || capacity > buffer_size {
            return Err(format!(
                "{conn} buffers {pending} bytes in a buffer of {capacity} (the largest is {buffer_size})"
            ));
        }
        buffered += pending as u64;
        // Timers: an idle deadline that has passed (as of this step's poll) closes the
        // connection at once; the shutdown deadline closes every connection.
        let state = server
            .conn_state(conn)
            .map_err(|e| format!("{conn}: {e}"))?;
        if state != ConnState::Closing {
            if let Some(t) = timeout {
                let deadline = model.last_progress[client] + t;
                if polled_at >= deadline && model.last_progress[client] < polled_at {
                    return Err(format!(
                        "{conn} ({state}) idle since {} is still open at {polled_at}, past its idle deadline {deadline}",
                        model.last_progress[client]
                    ));
                }
            }
            if model.shutdown_deadline.is_some_and(|d| polled_at >= d) {
                return Err(format!(
                    "{conn} ({state}) is still open at {polled_at}, past the shutdown deadline {:?}",
                    model.shutdown_deadline
                ));
            }
        }
    }
    if st.bytes_buffered() != buffered && n.answer() != Answer::Lines {
        return Err(format!(
            "stats say {} bytes buffered; live connections hold {buffered}",
            st.bytes_buffered()
        ));
    }
    let (blocks, lent) = server.buffers();
    if lent > blocks || lent as u64 > st.active {
        return Err(format!(
            "{lent} buffers lent of {blocks}, with {} connections",
            st.active
        ));
    }
    Ok(())
}

fn check_end(
    s: &Schedule,
    driver: &SimDriver<'_>,
    net: &SharedNet,
    model: &Model,
) -> Result<(), String> {
    let n = net.borrow();
    let st = driver.server().stats();
    let accepted = n.pipes.iter().filter(|p| p.accepted).count() as u64;
    let refused = model.refused.iter().filter(|&&r| r).count() as u64;
    if (st.accepted + st.refused, st.refused) != (accepted, refused) {
        return Err(format!(
            "stats {st} vs {accepted} accepted, {refused} refused by the network"
        ));
    }
    if st.active != 0 || st.closed != st.accepted {
        return Err(format!("finished with connections open: {st}"));
    }
    let reasons = |f: fn(&CloseReason) -> bool| {
        model.reasons.iter().flatten().filter(|r| f(r)).count() as u64
    };
    let seen = (
        reasons(|r| matches!(r, CloseReason::TimedOut)),
        reasons(|r| matches!(r, CloseReason::Forced)),
        reasons(|r| matches!(r, CloseReason::Failed(_))),
        reasons(|r| matches!(r, CloseReason::Aborted)),
    );
    let counted = (st.timeouts, st.forced, st.failed, st.aborted);
    if counted != seen {
        return Err(format!(
            "(timeouts, forced, failed, aborted) counted {counted:?}, closes seen {seen:?}"
        ));
    }
    let mid_shutdown = s.server.shutdown_at_ms.is_some();
    for (i, pipe) in n.pipes.iter().enumerate() {
        let client = &n.clients[i];
        let echoed = &pipe.expected[..pipe.written];
        if pipe.client_received.len() > pipe.written || !echoed.starts_with(&pipe.client_received) {
            return Err(format!(
                "client {i} received bytes that were never sent to it"
            ));
        }
        if model.refused[i] {
            if !pipe.server_read.is_empty() || pipe.written != 0 {
                return Err(format!("refused client {i} was served"));
            }
            if pipe.closed_with != Some(CloseReason::Refused) {
                return Err(format!(
                    "refused client {i}'s stream was closed with {:?}",
                    pipe.closed_with
                ));
            }
            continue;
        }
        if pipe.accepted && pipe.closed_with != model.reasons[i] {
            return Err(format!(
                "client {i}'s stream was closed with {:?}, the close said {:?}",
                pipe.closed_with, model.reasons[i]
            ));
        }
        if !pipe.accepted {
            // Connected after the shutdown began: never accepted, never served.
            continue;
        }
        let reason = model.reasons[i].ok_or_else(|| format!("client {i} was never closed"))?;
        match reason {
            CloseReason::Done => {
                if pipe.written != pipe.expected.len() || pipe.client_received != pipe.expected {
                    return Err(format!(
                        "client {i} closed cleanly with {} of {} echo bytes delivered",
                        pipe.client_received.len(),
                        pipe.expected.len()
                    ));
                }
                let complete = pipe.server_read == client.payload;
                let app_closed = model.app[i].is_some() || pipe.lines.quit();
                if client.plan.behaviour == Behaviour::HalfClose
                    && !mid_shutdown
                    && !app_closed
                    && !complete
                {
                    return Err(format!(
                        "client {i} half-closed but the server read {} of {} bytes",
                        pipe.server_read.len(),
                        client.payload.len()
                    ));
                }
            }
            CloseReason::Failed(_) if !pipe.reset => {
                return Err(format!("client {i} failed ({reason}) without a reset"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the fuzz target does with one input: decode a [`Schedule`] from the bytes with
/// `arbitrary` and [`run`] it. Bytes that decode to no schedule pass.
pub fn fuzz_one(data: &[u8]) -> Result<(), Failure> {
    use arbitrary::{Arbitrary, Unstructured};
    let Ok(schedule) = Schedule::arbitrary(&mut Unstructured::new(data)) else {
        return Ok(());
    };
    run(&schedule).map(|_| ()).map_err(|mut failure| {
        failure.what = format!("{}\n{schedule:#?}", failure.what);
        failure
    })
}
