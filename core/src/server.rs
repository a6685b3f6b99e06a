//! The echo server state machine: [`Server`] and the [`Storage`] it runs in.

use embedded_io::ErrorKind;

use crate::action::{Action, Admission, ReportError};
use crate::buffer::{Buffers, Pool, StorageError};
use crate::config::{Config, Scheduling};
use crate::conn::{
    CloseReason, ConnId, ConnState, Flags, FlightTable, Flights, InFlight, NoFlights, Slot, NIL,
};
use crate::driver::{Served, Stream};
use crate::list::{Links, List};
use crate::service::{Reply, Service};
use crate::stats::Stats;
use crate::time::{Duration, Instant};

/// The memory a [`Server`] runs in, all of it provided by the caller: one [`Slot`] header
/// per connection and one byte arena cut into buffers of `buffer_size` bytes, and
/// optionally a second arena of larger buffers for bulk transfers
/// ([`with_large_buffers`](Self::with_large_buffers)).
///
/// An idle connection costs its slot only; a buffer is lent to a connection while it
/// holds data. With fewer buffers than slots, connections wait for a buffer to read
/// (backpressure) rather than failing.
pub struct Storage<'a, F: Flights = NoFlights> {
    slots: &'a mut [Slot],
    buffers: Buffers<'a>,
    in_flight: F,
}

impl<'a> Storage<'a> {
    /// Checks the geometry and resets every slot to free.
    pub fn new(
        slots: &'a mut [Slot],
        buffers: &'a mut [u8],
        buffer_size: usize,
    ) -> Result<Self, StorageError> {
        if slots.is_empty() {
            return Err(StorageError::NoSlots);
        }
        if slots.len() >= NIL as usize {
            return Err(StorageError::TooLarge);
        }
        let pool = Pool::new(buffers, buffer_size)?;
        slots.fill(Slot::EMPTY);
        Ok(Self {
            slots,
            buffers: Buffers::new(pool),
            in_flight: NoFlights::default(),
        })
    }

    /// Adds the table of what each connection has in flight, one entry per slot, which
    /// [`Scheduling::Completion`] needs. A server made from storage without it has no
    /// completion scheduling at all: not a branch of it is compiled in.
    pub fn with_completions(
        self,
        in_flight: &'a mut [InFlight],
    ) -> Result<Storage<'a, FlightTable<'a>>, StorageError> {
        if in_flight.len() < self.slots.len() {
            return Err(StorageError::TooFewCompletions);
        }
        in_flight.fill(InFlight::EMPTY);
        Ok(Storage {
            slots: self.slots,
            buffers: self.buffers,
            in_flight: FlightTable(in_flight),
        })
    }
}

impl<'a, F: Flights> Storage<'a, F> {
    /// Adds large buffers, cut from `arena` in blocks of `size` bytes (larger than the
    /// small ones), for connections that move data in bulk.
    ///
    /// Buffers follow the load: a connection gets a buffer when it has data to hold, and
    /// gives it back as soon as it holds none; it gets a large one when its last read
    /// filled its buffer (or a whole small buffer's worth), a small one otherwise, and
    /// either when the other kind is all lent. A bulk sender so moves `size` bytes per
    /// read and write, while total memory stays what the caller provided.
    pub fn with_large_buffers(
        self,
        arena: &'a mut [u8],
        size: usize,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            slots: self.slots,
            buffers: self.buffers.with_large(Pool::new(arena, size)?)?,
            in_flight: self.in_flight,
        })
    }
}

/// The shape, never the slots one by one or the buffers' bytes.
impl<F: Flights> core::fmt::Debug for Storage<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Storage")
            .field("slots", &self.slots.len())
            .field("buffers", &self.buffers)
            .finish()
    }
}

/// An operation the server asked for and has not had reported yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Accept,
    Recv { conn: ConnId, start: u32, max: u32 },
    Send { conn: ConnId, max: u32 },
    Probe { conn: ConnId },
}

/// An [`Action`] before it borrows the server's buffers.
#[derive(Clone, Debug)]
enum Plan {
    Accept,
    Recv(ConnId, core::ops::Range<usize>, bool),
    Send(ConnId, core::ops::Range<usize>, core::ops::Range<usize>),
    Cancel(ConnId),
    CancelRecv(ConnId),
    Shutdown(ConnId),
    Probe(ConnId),
    Close(ConnId, CloseReason),
    Wait(Option<Instant>),
    Finished,
}

/// The sans-IO echo server: decides every operation, performs none.
///
/// See the [crate documentation](crate) for the calling contract.
pub struct Server<'a, T, F: Flights = NoFlights> {
    config: Config,
    slots: &'a mut [Slot],
    pool: Buffers<'a>,
    /// What each connection has in flight (completion scheduling; nothing otherwise).
    in_flight: F,
    service: T,
    stats: Stats,

    /// Free slots: an intrusive LIFO list through `Slot::next`, then the never-used tail.
    free_slot: u32,
    fresh_slots: u32,

    /// The run queue: an intrusive FIFO through `Slot::next` of connections that may have
    /// work. `current` is the connection being visited (never also on the queue).
    queue_head: u32,
    queue_tail: u32,
    queue_len: u32,
    current: u32,
    visit_ops: u16,
    /// The connection being visited was probed in this visit.
    visit_probed: bool,
    /// The visit of `current` ended because its budget was spent (not for want of work).
    visit_spent: bool,
    /// Connections of this pass still on the queue: those queued when it began. Whatever
    /// is queued later (requeued after its budget, newly ready) waits for the next pass.
    pass_left: u32,
    /// Accepts this pass may still try.
    accepts_left: u16,
    /// An operation was asked for since the last `Wait`: the driver has had no chance to
    /// learn of new readiness since.
    busy_since_wait: bool,

    /// This pass made progress (bytes moved, a connection admitted, refused or closed).
    pass_progress: bool,
    listener_ready: bool,
    /// Connections that want to read and could get no buffer, in the order they asked: a
    /// released buffer goes straight to the first, so a busy connection cannot take it
    /// back first, and nobody waiting is forgotten.
    buffer_waiters: List,
    /// Current idle back-off; zero while passes make progress.
    idle_backoff: Duration,
    /// Current accept back-off; zero while accepts succeed.
    accept_backoff: Duration,
    accept_retry_at: Instant,
    /// Live connections in the order of their last progress: as the idle timeout is the
    /// same for all, the first has the earliest deadline. Empty without an idle timeout.
    timers: List,
    /// Lingering connections whose output is still in flight, probed again each round:
    /// rounds start `probe_backoff_min` after the list was empty and the pause doubles.
    probes: List,
    probe_backoff: Duration,
    probe_at: Instant,
    /// Reads that wait for data ([`Config::read_wait`]), oldest first, through the flight
    /// table: the first is the first to give its buffer back.
    holds: List,
    shutdown_deadline: Option<Instant>,
    /// When the timers may next have work: at or before every deadline they keep (the
    /// shutdown deadline, the first idle deadline, the next probe round, the first hold's
    /// end). Made exact each time they run; a deadline set since only lowers it.
    timers_due: Instant,
    forced: bool,
    /// True only while the server has nothing to do but wait: set by a poll that finds
    /// it so, cleared by whatever gives it work (a connection queued, the listener
    /// ready, a stop). The next poll then need not look again, and
    /// [`needs_time`](Self::needs_time) reads it.
    waiting: bool,
    /// Whether readiness may take the express lane at all (fixed by the configuration
    /// and the service: see [`is_quiet`](Self::is_quiet)).
    express: bool,
    pending: Option<Pending>,
}

/// The shape and the counters: capacity, buffers, configuration, stats; never the slots
/// one by one or the buffers' bytes.
impl<T: core::fmt::Debug, F: Flights> core::fmt::Debug for Server<'_, T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server")
            .field("capacity", &self.slots.len())
            .field("pool", &self.pool)
            .field("service", &self.service)
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .finish_non_exhaustive()
    }
}

impl<'a, T: Service, F: Flights> Server<'a, T, F> {
    /// A server with no connections, ready to accept, serving with `service`: a
    /// [`Transform`](crate::Transform) such as [`Uppercase`](crate::Uppercase) for an
    /// echo, or any [`Service`].
    pub fn new(config: Config, storage: Storage<'a, F>, service: T) -> Self {
        let mut config = config;
        config.visit_budget = config.visit_budget.max(1);
        config.accepts_per_pass = config.accepts_per_pass.max(1);
        // A zero back-off would let an idle polling server spin.
        config.idle_backoff_min = config.idle_backoff_min.max(Duration::from_micros(1));
        config.idle_backoff_max = config.idle_backoff_max.max(config.idle_backoff_min);
        config.accept_backoff_min = config.accept_backoff_min.max(Duration::from_micros(1));
        config.accept_backoff_max = config.accept_backoff_max.max(config.accept_backoff_min);
        config.probe_backoff_min = config.probe_backoff_min.max(Duration::from_micros(1));
        config.probe_backoff_max = config.probe_backoff_max.max(config.probe_backoff_min);
        // A deadline is always later than the progress that set it (see `plan`).
        config.idle_timeout = config.idle_timeout.map(|t| t.max(Duration::from_micros(1)));
        config.read_wait = config.read_wait.map(|t| t.max(Duration::from_micros(1)));
        if config.scheduling == Scheduling::Completion && !F::ENABLED {
            config.scheduling = Scheduling::Readiness;
        }
        // A transform in readiness mode, whose visits allow a read and its write.
        let express = config.scheduling == Scheduling::Readiness
            && service.is_transform()
            && config.visit_budget >= 2;
        Self {
            config,
            slots: storage.slots,
            pool: storage.buffers,
            in_flight: storage.in_flight,
            service,
            stats: Stats::default(),
            free_slot: NIL,
            fresh_slots: 0,
            queue_head: NIL,
            queue_tail: NIL,
            queue_len: 0,
            current: NIL,
            visit_ops: 0,
            visit_probed: false,
            visit_spent: false,
            pass_left: 0,
            accepts_left: config.accepts_per_pass,
            busy_since_wait: false,
            pass_progress: false,
            listener_ready: config.scheduling == Scheduling::Polling,
            buffer_waiters: List::EMPTY,
            idle_backoff: Duration::ZERO,
            accept_backoff: Duration::ZERO,
            accept_retry_at: Instant::ZERO,
            timers: List::EMPTY,
            probes: List::EMPTY,
            holds: List::EMPTY,
            probe_backoff: Duration::ZERO,
            probe_at: Instant::MAX,
            shutdown_deadline: None,
            timers_due: Instant::MAX,
            forced: false,
            waiting: false,
            express,
            pending: None,
        }
    }

    // ---- getters ------------------------------------------------------------------------

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration in force (after clamping nonsensical values).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many connections the server can hold at once.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes per (small) connection buffer.
    pub fn buffer_size(&self) -> usize {
        self.pool.small_size() as usize
    }

    /// Bytes per large buffer, if there are any
    /// ([`Storage::with_large_buffers`]).
    pub fn large_buffer_size(&self) -> Option<usize> {
        self.pool.large_size().map(|s| s as usize)
    }

    /// Buffers of all sizes, and how many are lent now.
    pub fn buffers(&self) -> (usize, usize) {
        let (blocks, in_use) = self.pool.counts();
        (blocks as usize, in_use as usize)
    }

    /// Bytes of the buffer lent to a live connection, 0 if it holds none: the most it can
    /// hold before reads stop (backpressure).
    pub fn buffer_capacity(&self, conn: ConnId) -> Result<usize, ReportError> {
        let idx = self.live(conn)?;
        let block = self.slots[idx as usize].block;
        Ok(if block == NIL {
            0
        } else {
            self.pool.capacity(block) as usize
        })
    }

    /// The state of a live connection.
    pub fn conn_state(&self, conn: ConnId) -> Result<ConnState, ReportError> {
        self.live(conn).map(|idx| self.slot_state(idx))
    }

    /// The live connection in slot `index`, if any: readiness sources that key their
    /// events by [`ConnId::index`] use it to recover the full id.
    pub fn conn_id(&self, index: usize) -> Option<ConnId> {
        let slot = self.slots.get(index)?;
        slot.state.map(|_| ConnId {
            index: index as u32,
            generation: slot.generation,
        })
    }

    /// Bytes received from `conn` and not yet sent back.
    pub fn pending_output(&self, conn: ConnId) -> Result<usize, ReportError> {
        self.live(conn)
            .map(|idx| self.slots[idx as usize].len as usize)
    }

    /// Bytes received from `conn` that a general [`Service`] has not consumed yet (always
    /// 0 for a [`Transform`](crate::Transform), which takes every byte as it comes). They
    /// fill the first half of the connection's buffer; reads stop while it is full.
    pub fn pending_input(&self, conn: ConnId) -> Result<usize, ReportError> {
        self.live(conn)
            .map(|idx| input_held(self.service.is_transform(), &self.slots[idx as usize]) as usize)
    }

    /// Completion scheduling: the buffer of `conn`'s `Recv` in flight, lent again (to fill
    /// it before [`on_recv`](Self::on_recv), for a caller that cannot keep the pointer
    /// from [`Action::Recv`]). `None` if no `Recv` is in flight.
    pub fn in_flight_recv(&mut self, conn: ConnId) -> Option<&mut [u8]> {
        let idx = self.live(conn).ok()?;
        if !F::ENABLED {
            return None;
        }
        let (start, max) = self.in_flight[idx as usize].recv?;
        let range = self.pool.range(self.slots[idx as usize].block, start, max);
        Some(self.pool.bytes_mut(range))
    }

    /// Completion scheduling: the bytes of `conn`'s `Send` in flight, as
    /// [`Action::Send`] gave them (`bytes`, then `wrapped`). `None` if no `Send` is in
    /// flight.
    pub fn in_flight_send(&self, conn: ConnId) -> Option<(&[u8], &[u8])> {
        let idx = self.live(conn).ok()?;
        if !F::ENABLED {
            return None;
        }
        let max = self.in_flight[idx as usize].send?;
        let (bytes, wrapped) = self.output(idx, max);
        Some((self.pool.bytes(bytes), self.pool.bytes(wrapped)))
    }

    /// Whether the server needs the present time for what it does next. False when it
    /// has no deadline armed (with an idle timeout: no connection) and nothing to do
    /// but wait for readiness. Then readiness reports use no time (they only move idle
    /// deadlines), and neither does a poll that finds nothing to do (it has no deadline
    /// to compare). So a readiness driver that finds this false when told to wait may
    /// skip the clock when the wait ends, report what the wait brought at the time it
    /// last read, and read the clock only if this has become true by then (a report
    /// queued work, or the listener is ready): a server with nothing timed that serves
    /// its requests in the express lane never reads the clock. The time told must
    /// still never go back: an old time is fine, one earlier than a time already told
    /// is not.
    #[inline]
    pub fn needs_time(&self) -> bool {
        // The deadlines' bound is at its maximum only with none armed.
        !self.waiting || self.timers_due != Instant::MAX
    }

    /// True once [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    // ---- poll ---------------------------------------------------------------------------

    /// The next operation to perform. See [`Action`] for what each one asks.
    ///
    /// An `Accept`, `Recv` or `Send` from the previous call that was not reported is
    /// counted as not performed.
    #[inline(always)]
    pub fn poll(&mut self, now: Instant) -> Action<'_> {
        if now >= self.timers_due {
            self.run_timers(now);
        }
        debug_assert!(
            !self.waiting || self.is_idle(),
            "waiting, but there is work"
        );
        // Still waiting since the last poll (nothing gave the server work), or idle.
        if !self.waiting {
            if !self.is_idle() {
                return self.poll_general(now);
            }
            // Nothing queued, nothing to accept, no stop, the timers run for `now`: the
            // common answer after the express lane served what a wake-up brought. The
            // general path would end the pass and begin an empty one, as here, then wait.
            self.pending = None;
            self.busy_since_wait = false;
            self.pass_progress = false;
            self.accepts_left = self.config.accepts_per_pass;
            self.waiting = true;
        }
        // Still waiting: all of this is as the poll that began the wait left it.
        debug_assert!(
            self.pending.is_none()
                && !self.busy_since_wait
                && !self.pass_progress
                && self.accepts_left == self.config.accepts_per_pass,
            "waiting, but not as the idle poll left the server"
        );
        Action::Wait {
            until: self.idle_wait_until(now),
        }
    }

    /// No operation pending and no visit under way: a driver may report readiness and
    /// have it served at once (the express lane).
    #[inline(always)]
    fn between_steps(&self) -> bool {
        self.pending.is_none() && self.current == NIL
    }

    /// See [`poll`](Self::poll).
    #[inline]
    fn is_idle(&self) -> bool {
        self.queue_head == NIL
            && self.current == NIL
            && self.pass_left == 0
            && !self.listener_ready
            && self.shutdown_deadline.is_none()
            && self.config.scheduling == Scheduling::Readiness
    }

    /// [`poll`](Self::poll), whatever there is to do: kept out of line, so that the idle
    /// answer does not pay for its frame.
    #[inline(never)]
    fn poll_general(&mut self, now: Instant) -> Action<'_> {
        self.pending = None;
        let plan = self.plan(now);
        self.busy_since_wait = !matches!(plan, Plan::Wait(_));
        match plan {
            Plan::Accept => {
                self.pending = Some(Pending::Accept);
                Action::Accept
            }
            Plan::Recv(conn, range, wait) => Action::Recv {
                conn,
                buf: self.pool.bytes_mut(range),
                wait,
            },
            Plan::Send(conn, range, wrapped) => Action::Send {
                conn,
                bytes: self.pool.bytes(range),
                wrapped: self.pool.bytes(wrapped),
            },
            Plan::Cancel(conn) => Action::Cancel { conn },
            Plan::CancelRecv(conn) => Action::CancelRecv { conn },
            Plan::Shutdown(conn) => Action::Shutdown { conn },
            Plan::Probe(conn) => Action::Probe { conn },
            Plan::Close(conn, reason) => Action::Close { conn, reason },
            Plan::Wait(until) => Action::Wait { until },
            Plan::Finished => Action::Finished,
        }
    }

    /// A pass: like the textbook loop, accept first (up to `accepts_per_pass`), then visit
    /// each connection that was queued when the pass began, once, for at most
    /// `visit_budget` reads and writes. A pass is bounded whatever the load: what becomes
    /// ready meanwhile, or still has work after its visit, waits for the next pass, and in
    /// readiness mode the driver polls for new events (`Wait { until: Some(now) }`) between
    /// two passes, so newly ready connections and new arrivals are seen promptly.
    fn plan(&mut self, now: Instant) -> Plan {
        loop {
            if self.current != NIL {
                if let Some(plan) = self.plan_visit(self.current, now) {
                    return plan;
                }
                self.end_visit();
                continue;
            }
            if self.may_accept(now) {
                self.accepts_left -= 1;
                return Plan::Accept;
            }
            if self.pass_left > 0 {
                if let Some(idx) = self.dequeue() {
                    self.pass_left -= 1;
                    self.current = idx;
                    self.visit_ops = 0;
                    self.visit_probed = false;
                    self.visit_spent = false;
                    continue;
                }
                self.pass_left = 0;
            }
            // The pass is over.
            if self.shutdown_deadline.is_some() && self.stats.active == 0 {
                return Plan::Finished;
            }
            let progressed = self.pass_progress;
            self.begin_pass();
            match self.config.scheduling {
                Scheduling::Polling if progressed => {
                    self.idle_backoff = Duration::ZERO;
                    continue;
                }
                Scheduling::Polling => {}
                Scheduling::Readiness | Scheduling::Completion
                    if self.pass_left > 0 || self.may_accept(now) =>
                {
                    if self.busy_since_wait {
                        // Work is left: look for new readiness first, without blocking.
                        return Plan::Wait(Some(now));
                    }
                    continue;
                }
                Scheduling::Readiness | Scheduling::Completion => {}
            }
            return Plan::Wait(self.wait_until(now));
        }
    }

    fn may_accept(&self, now: Instant) -> bool {
        self.shutdown_deadline.is_none()
            && self.listener_ready
            && self.accepts_left > 0
            && now >= self.accept_retry_at
    }

    /// Starts a pass: in polling mode every live connection is "maybe ready" again.
    fn begin_pass(&mut self) {
        self.pass_progress = false;
        self.accepts_left = self.config.accepts_per_pass;
        if self.config.scheduling == Scheduling::Polling {
            self.listener_ready = true;
            for idx in 0..self.fresh_slots {
                let slot = &mut self.slots[idx as usize];
                if slot.state.is_some() {
                    slot.readable = true;
                    slot.flags.set(Flags::WRITABLE, true);
                    self.schedule(idx);
                }
            }
        }
        self.pass_left = self.queue_len;
    }

    /// [`wait_until`](Self::wait_until) for an idle server: in readiness mode, with the
    /// listener not ready (so no accept to retry) and no stop, only the timers count.
    #[inline]
    fn idle_wait_until(&mut self, now: Instant) -> Option<Instant> {
        let until = self.timers_wait(now);
        (until != Instant::MAX).then_some(until)
    }

    /// The earliest deadline the timers keep after `now` (`Instant::MAX`: none).
    #[inline]
    fn timers_wait(&mut self, now: Instant) -> Instant {
        if self.timers_due == Instant::MAX {
            // No deadline kept (their bound says so): nothing to list.
            return Instant::MAX;
        }
        self.timer_deadlines(|t| if t > now { t } else { Instant::MAX })
    }

    /// When to be polled again after a pass without progress; never `now` or earlier.
    fn wait_until(&mut self, now: Instant) -> Option<Instant> {
        let later = |t: Instant| if t > now { t } else { Instant::MAX };
        let mut until = self.timers_wait(now);
        if !self.accept_backoff.is_zero() && self.listener_ready {
            until = until.min(later(self.accept_retry_at));
        }
        if self.config.scheduling == Scheduling::Polling {
            self.idle_backoff = if self.idle_backoff.is_zero() {
                self.config.idle_backoff_min
            } else {
                self.idle_backoff
                    .saturating_mul(2)
                    .min(self.config.idle_backoff_max)
            };
            until = until.min(now + self.idle_backoff);
        }
        (until != Instant::MAX).then_some(until)
    }

    /// The next operation on the connection being visited, or `None` when its visit is
    /// over (nothing to do, or its budget is spent).
    fn plan_visit(&mut self, idx: u32, now: Instant) -> Option<Plan> {
        let budget_left = self.visit_ops < self.config.visit_budget;
        let slot = &mut self.slots[idx as usize];
        let state = slot.state?;
        let conn = ConnId {
            index: idx,
            generation: slot.generation,
        };
        if state == ConnState::Closing {
            if Self::completes(&self.config) {
                let flight = self.in_flight[idx as usize];
                if flight.recv.is_some() || flight.send.is_some() {
                    return self.cancel_in_flight(conn);
                }
            }
            return Some(self.release(idx, now));
        }
        if self.waits_for_data() {
            if let Some(plan) = self.give_back(conn, state) {
                return Some(plan);
            }
        }
        let slot = &mut self.slots[idx as usize];
        if !budget_left {
            self.visit_spent = true;
            return None;
        }
        let slot = if !self.service.is_transform()
            && slot.len == 0
            && ((state == ConnState::PeerClosed && slot.flags.has(Flags::PEER_FIN))
                || (state == ConnState::Draining
                    && slot.held > 0
                    && !(Self::completes(&self.config)
                        && self.in_flight[idx as usize].recv.is_some())))
        {
            // Every reply is sent, and no more input comes: the service takes what it
            // can of what is left, and ends the stream if the peer ended it.
            if slot.block == NIL {
                match self.pool.alloc(false) {
                    Some(block) => slot.block = block,
                    None => {
                        self.wait_for_buffer(idx);
                        return None;
                    }
                }
            }
            self.finish_input(idx, state == ConnState::PeerClosed);
            &mut self.slots[idx as usize]
        } else {
            slot
        };
        // (In completion scheduling a read or write in flight keeps its direction marked
        // not ready: no second one is asked for.)
        if slot.len > 0 && slot.flags.has(Flags::WRITABLE) && state.may_send() {
            let max = slot.len;
            let (range, wrapped) = self.output(idx, max);
            self.visit_ops += 1;
            self.ask(Pending::Send { conn, max });
            return Some(Plan::Send(conn, range, wrapped));
        }
        if state == ConnState::Draining && self.reading(idx) {
            // A read in flight when the stop began (completion scheduling) may bring
            // bytes already taken from the peer: they are answered before the FIN, so it
            // waits for that read (its completion queues the connection again).
            return None;
        }
        let slot = &mut self.slots[idx as usize];
        if slot.len == 0 && matches!(state, ConnState::PeerClosed | ConnState::Draining) {
            // Everything is flushed: FIN. After the peer's FIN there is nothing left to
            // read, so close; otherwise linger until the peer's FIN.
            slot.state = Some(if state == ConnState::PeerClosed {
                slot.close_reason = CloseReason::Done;
                ConnState::Closing
            } else {
                slot.probe_due = true;
                ConnState::Lingering
            });
            if state == ConnState::Draining {
                // Lingering reads what the peer still sends, to its FIN.
                self.mark_ready(idx, true, false);
            }
            self.pass_progress = true;
            return Some(Plan::Shutdown(conn));
        }
        if slot.probe_due {
            // The budget is for reads and writes: a probe moves nothing, so the first of
            // a visit is free (or probe rounds could take every visit of a connection
            // that also has to read); a retry after `Interrupted` counts.
            slot.probe_due = false;
            if self.visit_probed {
                self.visit_ops += 1;
            }
            self.visit_probed = true;
            self.pending = Some(Pending::Probe { conn });
            return Some(Plan::Probe(conn));
        }
        // A read that may wait for data waits whether or not readiness was reported: with
        // data there it completes at once, as one that does not wait would; without, it
        // waits rather than failing. (A read-ready edge for the data a waiting read took
        // can come after that read's completion, so "readable" after a waiting read is
        // often stale: a read that may not wait would cost a failed read per message.)
        let wait = self.may_wait(idx, state);
        let slot = &self.slots[idx as usize];
        if state.may_recv()
            && (slot.readable || wait)
            && has_room(&self.pool, self.service.is_transform(), slot)
        {
            if slot.block == NIL {
                match self.pool.alloc(slot.flags.has(Flags::BULK)) {
                    Some(block) => self.slots[idx as usize].block = block,
                    // A read that would only wait for data does not queue for a buffer.
                    None if wait && !slot.readable => return None,
                    None => {
                        // Backpressure: wait in line for a buffer to come back.
                        self.wait_for_buffer(idx);
                        return None;
                    }
                }
            }
            let slot = &self.slots[idx as usize];
            let block_size = self.pool.capacity(slot.block);
            // A general service's input goes after what it has not consumed yet.
            // Otherwise: free space after the pending bytes, up to the end of the ring or
            // the head.
            let (start, len) = if !self.service.is_transform() {
                let held = input_held(false, slot);
                (held, block_size / 2 - held)
            } else if slot.head + slot.len >= block_size {
                (slot.head + slot.len - block_size, block_size - slot.len)
            } else {
                (slot.head + slot.len, block_size - slot.head - slot.len)
            };
            let range = self.pool.range(slot.block, start, len);
            let readable = slot.readable;
            self.visit_ops += 1;
            self.ask(Pending::Recv {
                conn,
                start,
                max: len,
            });
            if wait {
                self.hold(idx, now, readable);
            }
            return Some(Plan::Recv(conn, range, wait));
        }
        None
    }

    fn end_visit(&mut self) {
        let idx = self.current;
        self.current = NIL;
        // A readiness driver will not tell us again about readiness we did not use up:
        // keep the connection on the queue. A polling pass revisits everyone anyway. A
        // visit that ended with nothing to do has nothing to keep (and a connection that
        // lacked only a buffer went in line for one as it ended).
        if self.config.scheduling != Scheduling::Polling && self.visit_spent {
            self.requeue(idx);
        }
    }

    /// Queues a connection that has work; one that only lacks a buffer waits in line.
    fn requeue(&mut self, idx: u32) {
        if self.has_work(idx) {
            self.schedule(idx);
        } else {
            let slot = &self.slots[idx as usize];
            if slot.readable && slot.block == NIL && slot.state.is_some_and(ConnState::may_recv) {
                self.wait_for_buffer(idx);
            }
        }
    }

    fn wait_for_buffer(&mut self, idx: u32) {
        if !self.buffer_waiters.contains(self.slots, wait_links, idx) {
            self.buffer_waiters.push_back(self.slots, wait_links, idx);
            if self.waits_for_data() {
                // A buffer held by a read that waits for data goes to one that has data.
                self.reclaim_oldest_hold();
            }
        }
    }

    fn has_work(&self, idx: u32) -> bool {
        let slot = &self.slots[idx as usize];
        let Some(state) = slot.state else {
            return false;
        };
        state == ConnState::Closing
            || slot.probe_due
            || (slot.len > 0 && slot.flags.has(Flags::WRITABLE) && state.may_send())
            || (slot.len == 0 && matches!(state, ConnState::PeerClosed | ConnState::Draining))
            || (self.waits_for_data() && self.gives_back(idx))
            || (state.may_recv()
                && (slot.readable || self.may_wait(idx, state))
                && has_room(&self.pool, self.service.is_transform(), slot)
                // Without a buffer to read into there is nothing to do until one comes
                // back (`release_block` hands it to the first in line).
                && (slot.block != NIL || self.pool.can_lend()))
    }

    fn schedule(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.flags.has(Flags::QUEUED) || idx == self.current {
            return;
        }
        slot.flags.set(Flags::QUEUED, true);
        slot.next = NIL;
        match self.queue_tail {
            NIL => self.queue_head = idx,
            tail => self.slots[tail as usize].next = idx,
        }
        self.queue_tail = idx;
        self.queue_len += 1;
        self.waiting = false;
    }

    fn dequeue(&mut self) -> Option<u32> {
        let idx = self.queue_head;
        if idx == NIL {
            return None;
        }
        let slot = &mut self.slots[idx as usize];
        self.queue_head = slot.next;
        slot.flags.set(Flags::QUEUED, false);
        slot.next = NIL;
        self.queue_len -= 1;
        if self.queue_head == NIL {
            self.queue_tail = NIL;
        }
        Some(idx)
    }

    /// Frees the slot of the connection being visited and says why.
    fn release(&mut self, idx: u32, now: Instant) -> Plan {
        self.buffer_waiters.unlink(self.slots, wait_links, idx);
        self.timers.unlink(self.slots, timer_links, idx);
        self.probes.unlink(self.slots, probe_links, idx);
        let slot = self.slots[idx as usize];
        if slot.block != NIL {
            self.release_block(slot.block);
        }
        self.stats.bytes_dropped += u64::from(slot.len);
        self.stats.closed += 1;
        self.stats.active -= 1;
        self.pass_progress = true;
        if !self.accept_backoff.is_zero() {
            // A socket is about to be released: a descriptor is free for accept again.
            self.accept_retry_at = now;
        }
        self.slots[idx as usize] = Slot {
            generation: slot.generation.wrapping_add(1),
            next: self.free_slot,
            ..Slot::EMPTY
        };
        self.free_slot = idx;
        self.current = NIL;
        if self.completion() {
            self.holds.unlink(self.in_flight.entries(), hold_links, idx);
            self.in_flight[idx as usize] = InFlight::EMPTY;
        }
        let conn = ConnId {
            index: idx,
            generation: slot.generation,
        };
        self.service.close(conn);
        Plan::Close(conn, slot.close_reason)
    }

    /// A connection whose output is all sent keeps its (empty) buffer for the read that
    /// usually follows, rather than give it back and take one again at once: while it may
    /// read, nobody waits for a buffer, and the buffer is of the size it now wants. It
    /// gives it back when a read finds nothing (an idle connection holds no buffer).
    fn keeps_empty_buffer(&self, idx: u32) -> bool {
        let slot = &self.slots[idx as usize];
        slot.readable
            && slot.state.is_some_and(ConnState::may_recv)
            && self.buffer_waiters.front().is_none()
            && self.pool.is_large(slot.block)
                == (slot.flags.has(Flags::BULK) && self.pool.large_size().is_some())
    }

    /// Where the oldest `len` pending bytes of `idx` are: up to the end of its ring, then
    /// the rest from the ring's start (one vectored write where the transport has them).
    #[inline]
    fn output(&self, idx: u32, len: u32) -> (core::ops::Range<usize>, core::ops::Range<usize>) {
        let slot = &self.slots[idx as usize];
        let (base, ring) = ring(&self.pool, self.service.is_transform(), slot.block);
        let first = len.min(ring - slot.head);
        (
            self.pool.range(slot.block, base + slot.head, first),
            self.pool.range(slot.block, base, len - first),
        )
    }

    /// A live connection gives back its empty buffer. Its ring starts again at 0: the
    /// next buffer may be of the other size, where the old position means nothing (in
    /// completion scheduling a write can empty the ring while a read is in flight, which
    /// keeps the position for that read until it completes).
    #[inline]
    fn give_back_block(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        let block = slot.block;
        slot.block = NIL;
        slot.head = 0;
        self.release_block(block);
    }

    /// Takes a buffer back: it goes to the first connection waiting for one, if any, and
    /// to the pool otherwise.
    fn release_block(&mut self, block: u32) {
        while let Some(idx) = self.buffer_waiters.pop_front(self.slots, wait_links) {
            let slot = &mut self.slots[idx as usize];
            // Those that read, and those whose service still has to end.
            let wants = |s: ConnState| {
                s.may_recv() || (s == ConnState::PeerClosed && slot.flags.has(Flags::PEER_FIN))
            };
            if slot.block == NIL && slot.state.is_some_and(wants) {
                slot.block = block;
                self.schedule(idx);
                return;
            }
        }
        self.pool.release(block);
    }

    /// Marks a live connection for closing (from outside its visit: schedules it).
    fn mark_closing(&mut self, idx: u32, reason: CloseReason) {
        self.discard_input(idx);
        let slot = &mut self.slots[idx as usize];
        slot.state = Some(ConnState::Closing);
        slot.close_reason = reason;
        self.schedule(idx);
    }

    /// Runs the timers due at `now`, then sets when they are next due. Most polls come
    /// before that: progress only moves idle deadlines later, and a deadline set earlier
    /// than the bound lowers it ([`due`](Self::due)). Out of line: most polls do not come
    /// here.
    #[inline(never)]
    fn run_timers(&mut self, now: Instant) {
        if let Some(deadline) = self.shutdown_deadline {
            if now >= deadline && !self.forced {
                self.forced = true;
                for idx in 0..self.fresh_slots {
                    let slot = &self.slots[idx as usize];
                    if slot.state.is_some_and(|s| s != ConnState::Closing) {
                        self.stats.forced += 1;
                        if slot.state == Some(ConnState::Lingering) {
                            self.stats.bytes_unacked += u64::from(slot.held);
                        }
                        self.mark_closing(idx, CloseReason::Forced);
                    }
                }
            }
        }
        if now >= self.probe_at {
            self.probe_round(now);
        }
        if self.waits_for_data() {
            self.expire_holds(now);
        }
        // O(1) per expiry: the first connection has the earliest deadline.
        while let Some(idx) = self.timers.front() {
            let Slot {
                deadline, state, ..
            } = self.slots[idx as usize];
            if deadline > now {
                break;
            }
            self.timers.remove(self.slots, timer_links, idx);
            if state.is_some_and(|s| s != ConnState::Closing) {
                self.stats.timeouts += 1;
                self.mark_closing(idx, CloseReason::TimedOut);
            }
        }
        // Every deadline left lies after `now`: the bound is exact again.
        self.timers_due = self.timer_deadlines(|t| t);
    }

    /// The earliest of the deadlines the timers keep, each passed through `keep` (which
    /// leaves one out by mapping it to `Instant::MAX`): the first idle deadline, the
    /// shutdown deadline until it has forced its closes, the next probe round, the first
    /// hold's end. What the timers are next due for, and what a wait may not sleep past.
    #[inline]
    fn timer_deadlines(&mut self, keep: impl Fn(Instant) -> Instant) -> Instant {
        let mut at = keep(self.next_deadline());
        if let Some(deadline) = self.shutdown_deadline.filter(|_| !self.forced) {
            at = at.min(keep(deadline));
        }
        if self.probes.front().is_some() {
            at = at.min(keep(self.probe_at));
        }
        if self.waits_for_data() {
            if let Some(end) = self.first_hold_end() {
                at = at.min(keep(end));
            }
        }
        at
    }

    /// A deadline the timers keep was set at `at`: they are due by then.
    #[inline]
    fn due(&mut self, at: Instant) {
        self.timers_due = self.timers_due.min(at);
    }

    /// Asks every connection on the probe list for another probe, and sets the next round.
    fn probe_round(&mut self, now: Instant) {
        let mut next = self.probes.front();
        if next.is_none() {
            self.probe_at = Instant::MAX;
            return;
        }
        while let Some(idx) = next {
            self.slots[idx as usize].probe_due = true;
            self.schedule(idx);
            next = List::next(self.slots, probe_links, idx);
        }
        self.probe_backoff = self
            .probe_backoff
            .saturating_mul(2)
            .min(self.config.probe_backoff_max);
        self.probe_at = now + self.probe_backoff;
    }

    /// The earliest idle deadline.
    fn next_deadline(&self) -> Instant {
        // A list's ids are its slots' (`get`: no panic to keep where the answer is unused).
        self.timers
            .front()
            .and_then(|idx| self.slots.get(idx as usize))
            .map_or(Instant::MAX, |slot| slot.deadline)
    }

    /// Progress on `idx` at `now`: its idle deadline moves to `now` plus the timeout, and
    /// it goes to the end of the timer list.
    #[inline(always)]
    fn progressed(&mut self, idx: u32, now: Instant) {
        if Self::moves_deadline(&self.config, &mut self.slots[idx as usize], now) {
            self.deadline_moved(idx);
        }
    }

    /// The first half of [`progressed`](Self::progressed), on a borrowed slot: sets its
    /// idle deadline; true when that moved it (then [`deadline_moved`](Self::deadline_moved)
    /// must follow).
    #[inline(always)]
    fn moves_deadline(config: &Config, slot: &mut Slot, now: Instant) -> bool {
        let Some(timeout) = config.idle_timeout else {
            return false;
        };
        let deadline = now + timeout;
        // Drivers read the clock once per wake-up: most operations find the deadline
        // already where it goes, and among equal deadlines order does not matter.
        let moved = slot.deadline != deadline;
        slot.deadline = deadline;
        moved
    }

    /// The second half of [`progressed`](Self::progressed): the timers follow the moved
    /// deadline of `idx`.
    #[inline(always)]
    fn deadline_moved(&mut self, idx: u32) {
        // Later than before, unless the clock went back: then due earlier.
        self.due(self.slots[idx as usize].deadline);
        if !self.timers.is_back(idx) {
            self.postpone(idx);
        }
    }

    /// `idx` goes to the end of the timer list, if it is on it. Out of line: a connection
    /// that is busy alone is there already.
    #[inline(never)]
    fn postpone(&mut self, idx: u32) {
        if self.timers.contains(self.slots, timer_links, idx) {
            self.timers.move_to_back(self.slots, timer_links, idx);
        }
    }

    fn idle_deadline(&self, now: Instant) -> Instant {
        self.config.idle_timeout.map_or(Instant::MAX, |t| now + t)
    }

    /// Completion scheduling is on (a constant `false` without a flight table, so that
    /// every branch on it is compiled away). Takes the configuration alone, so that it can
    /// be asked while a slot is borrowed.
    fn completes(config: &Config) -> bool {
        F::ENABLED && config.scheduling == Scheduling::Completion
    }

    fn completion(&self) -> bool {
        Self::completes(&self.config)
    }

    /// Asks for the `Recv` or `Send` being planned: in completion scheduling it stays in
    /// flight until reported; otherwise it is the one operation pending.
    fn ask(&mut self, op: Pending) {
        if self.completion() {
            self.put_in_flight(op);
        } else {
            self.pending = Some(op);
        }
    }

    /// Marks directions of `idx` ready. In completion scheduling a direction with an
    /// operation in flight is marked for when it completes instead: no second one is
    /// asked for meanwhile, and the readiness is not lost.
    fn mark_ready(&mut self, idx: u32, readable: bool, writable: bool) {
        let (readable, writable) = if self.completion() {
            self.edges_in_flight(idx, readable, writable)
        } else {
            (readable, writable)
        };
        let slot = &mut self.slots[idx as usize];
        slot.readable |= readable;
        slot.flags.add(Flags::WRITABLE, writable);
    }

    /// Completion scheduling: the `Recv` or `Send` being planned stays in flight until it
    /// is reported. Out of line: the other modes never come here.
    #[cold]
    #[inline(never)]
    fn put_in_flight(&mut self, op: Pending) {
        match op {
            Pending::Recv { conn, start, max } => {
                self.in_flight[conn.index()].recv = Some((start, max));
                self.slots[conn.index()].readable = false;
            }
            Pending::Send { conn, max } => {
                self.in_flight[conn.index()].send = Some(max);
                self.slots[conn.index()].flags.set(Flags::WRITABLE, false);
            }
            _ => {}
        }
    }

    /// A closing connection with operations in flight: its buffer may still be written
    /// or read by them; ask once to cancel them, and close when all are reported.
    #[cold]
    #[inline(never)]
    fn cancel_in_flight(&mut self, conn: ConnId) -> Option<Plan> {
        let flight = &mut self.in_flight[conn.index()];
        if flight.cancel {
            return None;
        }
        flight.cancel = true;
        Some(Plan::Cancel(conn))
    }

    #[cold]
    #[inline(never)]
    fn recv_in_flight(&self, conn: ConnId) -> Result<(u32, u32), ReportError> {
        let idx = self.live(conn)?;
        self.in_flight[idx as usize]
            .recv
            .ok_or(ReportError::Unexpected)
    }

    #[cold]
    #[inline(never)]
    fn send_in_flight(&self, conn: ConnId) -> Result<u32, ReportError> {
        let idx = self.live(conn)?;
        self.in_flight[idx as usize]
            .send
            .ok_or(ReportError::Unexpected)
    }

    /// Whether `idx` has a read in flight (never, outside completion scheduling).
    fn reading(&self, idx: u32) -> bool {
        self.completion() && self.in_flight[idx as usize].recv.is_some()
    }

    /// Reads may wait for data ([`Config::read_wait`], completion scheduling): a constant
    /// `false` without a flight table.
    #[inline]
    fn waits_for_data(&self) -> bool {
        self.completion() && self.config.read_wait.is_some()
    }

    /// Whether `idx` may be asked for a read that waits for data: its last read brought
    /// some, it is open, no read is in flight, no connection waits for a buffer (a read
    /// that only waits must not keep one from a connection that has data), and no other
    /// connection is queued. A waiting read saves a round trip only when the server would
    /// otherwise go idle until this connection's readiness; while others are busy their
    /// operations carry this one's read to the transport at no extra cost, and a read
    /// that waits costs the transport more than one that does not (io_uring arms a poll
    /// for it: measured, 6 to 37% more CPU per message at 64 connections).
    #[inline]
    fn may_wait(&self, idx: u32, state: ConnState) -> bool {
        self.waits_for_data()
            && state == ConnState::Open
            && self.buffer_waiters.front().is_none()
            && self.queue_len == 0
            && {
                let flight = &self.in_flight[idx as usize];
                flight.wait_next && flight.recv.is_none()
            }
    }

    /// `idx`'s waiting read is due to give its buffer back and was not asked to yet.
    fn gives_back(&self, idx: u32) -> bool {
        let flight = &self.in_flight[idx as usize];
        flight.waits && flight.give_back && !flight.cancel_recv
    }

    /// The `Recv` being planned for `idx` waits for data: it holds its buffer until
    /// `now` plus the hold, at the end of the list. `readable`: readiness was reported
    /// when it was asked for.
    #[cold]
    #[inline(never)]
    fn hold(&mut self, idx: u32, now: Instant, readable: bool) {
        self.stats.waiting_reads += 1;
        let flight = &mut self.in_flight[idx as usize];
        flight.waits = true;
        flight.waited_ready = readable;
        flight.waiting_since = now;
        self.holds
            .push_back(self.in_flight.entries(), hold_links, idx);
        if let Some(hold) = self.config.read_wait {
            self.due(now + hold);
        }
    }

    /// A waiting read whose time is up, or whose connection stopped reading (a graceful
    /// stop, the service's close), gives its buffer back: `CancelRecv`, once.
    #[cold]
    #[inline(never)]
    fn give_back(&mut self, conn: ConnId, state: ConnState) -> Option<Plan> {
        let flight = &mut self.in_flight[conn.index()];
        if flight.waits && !flight.cancel_recv && (flight.give_back || state != ConnState::Open) {
            flight.cancel_recv = true;
            flight.give_back = false;
            self.stats.waits_given_back += 1;
            return Some(Plan::CancelRecv(conn));
        }
        None
    }

    /// Waiting reads held since `now - read_wait` or earlier give their buffers back.
    #[cold]
    #[inline(never)]
    fn expire_holds(&mut self, now: Instant) {
        while let Some(end) = self.first_hold_end() {
            if end > now {
                break;
            }
            self.reclaim_oldest_hold();
        }
    }

    /// When the oldest waiting read's hold ends, if any read waits.
    fn first_hold_end(&mut self) -> Option<Instant> {
        let hold = self.config.read_wait?;
        let idx = self.holds.front()?;
        Some(self.in_flight[idx as usize].waiting_since + hold)
    }

    /// The oldest waiting read gives its buffer back at its connection's next visit.
    fn reclaim_oldest_hold(&mut self) {
        if let Some(idx) = self.holds.pop_front(self.in_flight.entries(), hold_links) {
            self.in_flight[idx as usize].give_back = true;
            self.schedule(idx);
        }
    }

    /// A read of `idx` completed: if it was one that waited (it leaves the list of
    /// holds), whether readiness was reported when it was asked for.
    ///
    /// Once a read brings data the next may wait, and so on until a waiting read gives
    /// its buffer back, or the stream ends or fails; a would-block changes nothing.
    ///
    /// Read-ready edges are never dropped here. The edge for the data a waiting read
    /// took often comes after that read's completion (io_uring posts the poll's
    /// completion after the read's), so it cannot be told from an edge for new data;
    /// instead a read that may wait is asked to wait even with readiness reported (it
    /// completes at once if data is there). Where the next read may not wait (other
    /// connections are queued), the edge makes it a plain read, which may find nothing:
    /// dropping it instead could leave data unread with no edge to come.
    #[cold]
    #[inline(never)]
    fn end_wait(&mut self, idx: u32, outcome: &nb::Result<usize, ErrorKind>) -> Option<bool> {
        self.holds.unlink(self.in_flight.entries(), hold_links, idx);
        let flight = &mut self.in_flight[idx as usize];
        let waited = flight.waits.then_some(flight.waited_ready);
        flight.waits = false;
        flight.give_back = false;
        flight.cancel_recv = false;
        match outcome {
            Ok(1..) => flight.wait_next = true,
            Err(nb::Error::WouldBlock) => {}
            _ => flight.wait_next = false,
        }
        waited
    }

    /// A general service's input not consumed when its connection is finished: discarded.
    fn discard_input(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if !self.service.is_transform() && slot.state != Some(ConnState::Lingering) && slot.held > 0
        {
            self.stats.bytes_discarded += u64::from(slot.held);
            slot.held = 0;
        }
    }

    /// Offers a general service the input of `idx` not consumed yet, with the free space
    /// of its reply ring. `end`: the peer is done and the service ends it.
    fn call_service(&mut self, idx: u32, end: bool) -> (u32, bool) {
        let slot = &self.slots[idx as usize];
        let conn = ConnId {
            index: idx,
            generation: slot.generation,
        };
        let (base, ring) = ring(&self.pool, self.service.is_transform(), slot.block);
        let (held, head, len) = (slot.held, slot.head, slot.len);
        let block = self.pool.range(slot.block, 0, base + ring);
        let (input, ring_bytes) = self.pool.bytes_mut(block).split_at_mut(base as usize);
        // Free space: from the tail to the end of the ring, then from its start.
        let tail = (head + len) % ring;
        let free = ring - len;
        let first = free.min(ring - tail);
        let (before, after) = ring_bytes.split_at_mut(tail as usize);
        let mut reply = Reply::new(
            &mut after[..first as usize],
            &mut before[..(free - first) as usize],
        );
        let consumed = if end {
            self.service.end(conn, &input[..held as usize], &mut reply);
            held
        } else {
            let n = self
                .service
                .receive(conn, &input[..held as usize], &mut reply);
            u32::try_from(n).unwrap_or(u32::MAX).min(held)
        };
        input.copy_within(consumed as usize..held as usize, 0);
        let (written, close) = reply.finish();
        let slot = &mut self.slots[idx as usize];
        slot.held -= consumed;
        slot.len += written as u32;
        (consumed, close)
    }

    /// Runs the service over the input of `idx` (an open connection, or one whose peer is
    /// done), and acts on what it asks.
    fn serve(&mut self, idx: u32) {
        let (consumed, close) = self.call_service(idx, false);
        let slot = &self.slots[idx as usize];
        if close {
            self.service_closed(idx);
        } else if consumed == 0 && slot.len == 0 && slot.held == self.pool.capacity(slot.block) / 2
        {
            // A full input the service takes none of, with nothing left to send: it can
            // never go on.
            self.fail(idx, ErrorKind::OutOfMemory);
        }
    }

    /// The service closed `idx`: no more calls for it (not even `end`; while the peer is
    /// not done, `peer_fin` says that its FIN is known, which lingering reads need), its
    /// input is discarded, and it is finished in order.
    fn service_closed(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.state == Some(ConnState::PeerClosed) {
            slot.flags.set(Flags::PEER_FIN, false);
        }
        self.discard_input(idx);
        self.drain(idx);
    }

    /// No more input comes and every reply is sent: the service takes what it can of the
    /// input left; when it takes no more, it ends the stream (`end`: the peer ended it),
    /// or the rest is discarded (a graceful stop).
    fn finish_input(&mut self, idx: u32, end: bool) {
        while self.slots[idx as usize].held > 0 {
            let (consumed, close) = self.call_service(idx, false);
            if close {
                self.service_closed(idx);
                return;
            }
            let slot = &self.slots[idx as usize];
            if slot.len > 0 {
                return; // the replies first; then the rest is offered again
            }
            if consumed == 0 {
                break;
            }
        }
        if end {
            self.call_service(idx, true);
            let slot = &mut self.slots[idx as usize];
            slot.held = 0;
            slot.flags.set(Flags::PEER_FIN, false);
        } else {
            self.discard_input(idx);
        }
    }

    // ---- handle_* / on_*: outcomes ------------------------------------------------------

    /// The `Accept` succeeded: admits the new connection, or refuses it at capacity.
    pub fn on_accepted(&mut self, now: Instant) -> Result<Admission, ReportError> {
        if self.pending != Some(Pending::Accept) {
            return Err(ReportError::Unexpected);
        }
        self.pending = None;
        self.accept_backoff = Duration::ZERO;
        self.pass_progress = true;
        let idx = if self.free_slot != NIL {
            let idx = self.free_slot;
            self.free_slot = self.slots[idx as usize].next;
            idx
        } else if (self.fresh_slots as usize) < self.slots.len() {
            self.fresh_slots += 1;
            self.fresh_slots - 1
        } else {
            self.stats.refused += 1;
            return Ok(Admission::Refused);
        };
        let deadline = self.idle_deadline(now);
        let slot = &mut self.slots[idx as usize];
        *slot = Slot {
            state: Some(ConnState::Open),
            readable: true,
            flags: Flags::OPENED,
            generation: slot.generation,
            deadline,
            ..Slot::EMPTY
        };
        let conn = ConnId {
            index: idx,
            generation: slot.generation,
        };
        if self.config.idle_timeout.is_some() {
            self.timers.push_back(self.slots, timer_links, idx);
            self.due(deadline);
        }
        self.stats.accepted += 1;
        self.stats.active += 1;
        // Accepts open a pass: what they admit is served in the same pass.
        self.schedule(idx);
        self.pass_left += 1;
        self.service.open(conn);
        Ok(Admission::Admitted(conn))
    }

    /// The `Accept` failed: would-block (nothing to accept now), or an error. An error
    /// that concerns only the connection being accepted (`ConnectionAborted`,
    /// `ConnectionReset`, `ConnectionRefused`, `PermissionDenied`, `TimedOut`,
    /// `NotConnected`) is counted and accepting goes on at once; any other (out of file
    /// descriptors, buffers or memory: `OutOfMemory`, `Other`, ...) pauses accepting with
    /// a growing back-off. `Interrupted` is retried and not counted.
    pub fn on_accept_error(
        &mut self,
        now: Instant,
        error: nb::Error<ErrorKind>,
    ) -> Result<(), ReportError> {
        if self.pending != Some(Pending::Accept) {
            return Err(ReportError::Unexpected);
        }
        self.pending = None;
        match error {
            nb::Error::WouldBlock => self.listener_ready = false,
            nb::Error::Other(ErrorKind::Interrupted) => {}
            nb::Error::Other(kind) if fails_one_connection(kind) => {
                // That connection is gone (reset or aborted before it was accepted): the
                // next one may be fine, so try again at once, within the pass's budget.
                self.stats.accept_errors += 1;
            }
            nb::Error::Other(_) => {
                // Out of descriptors, buffers or memory: retrying at once would spin.
                self.stats.accept_errors += 1;
                self.accept_backoff = if self.accept_backoff.is_zero() {
                    self.config.accept_backoff_min
                } else {
                    self.accept_backoff
                        .saturating_mul(2)
                        .min(self.config.accept_backoff_max)
                };
                self.accept_retry_at = now + self.accept_backoff;
            }
        }
        Ok(())
    }

    /// The outcome of `Recv`: `Ok(n)` bytes read into the buffer, `Ok(0)` end-of-stream,
    /// `Err(WouldBlock)` nothing yet, `Err(Other(kind))` the connection failed.
    pub fn on_recv(
        &mut self,
        now: Instant,
        conn: ConnId,
        outcome: nb::Result<usize, ErrorKind>,
    ) -> Result<(), ReportError> {
        let (start, max) = if self.completion() {
            self.recv_in_flight(conn)?
        } else {
            let Some(Pending::Recv {
                conn: asked,
                start,
                max,
            }) = self.pending
            else {
                return Err(self.mismatch(conn));
            };
            if asked != conn {
                return Err(self.mismatch(conn));
            }
            (start, max)
        };
        if let Ok(n) = outcome {
            if n > max as usize {
                return Err(ReportError::Overrun {
                    reported: n,
                    max: max as usize,
                });
            }
        }
        let idx = conn.index;
        let mut waited = None;
        if self.completion() {
            self.in_flight[idx as usize].recv = None;
            if self.waits_for_data() {
                waited = self.end_wait(idx, &outcome);
            }
            // Readable as it was when the read was asked for (a waiting read: it may be
            // again if it filled its buffer); the outcome says the rest.
            self.slots[idx as usize].readable = true;
        } else {
            self.pending = None;
        }
        let state = self.slot_state(idx);
        if self.completion() && state == ConnState::Closing {
            // A read that completed after its connection began closing (completion
            // scheduling): its bytes are thrown away, and the close may go on.
            if let Ok(n) = outcome {
                self.stats.bytes_discarded += n as u64;
            }
            self.schedule(idx);
            return Ok(());
        }
        match outcome {
            Ok(0) => {
                self.stats.peer_closed += 1;
                self.pass_progress = true;
                let slot = &mut self.slots[idx as usize];
                slot.readable = false;
                // A general service still has to end the stream.
                slot.flags.set(
                    Flags::PEER_FIN,
                    !self.service.is_transform() && state == ConnState::Open,
                );
                slot.state = Some(if state == ConnState::Lingering {
                    slot.close_reason = CloseReason::Done;
                    ConnState::Closing
                } else {
                    ConnState::PeerClosed
                });
            }
            Ok(n) => {
                self.pass_progress = true;
                self.progressed(idx, now);
                let slot = &mut self.slots[idx as usize];
                if self.config.short_reads_drain
                    && n < max as usize
                    && !slot.flags.has(Flags::PEER_FIN)
                {
                    slot.readable = false;
                }
                if state == ConnState::Lingering {
                    self.stats.bytes_discarded += n as u64;
                } else {
                    let range = self.pool.range(slot.block, start, n as u32);
                    // A read that filled the space offered, or a small buffer's worth, is
                    // bulk: the next buffer this connection gets is a large one.
                    slot.flags
                        .set(Flags::BULK, n as u32 >= max.min(self.pool.small_size()));
                    self.stats.bytes_in += n as u64;
                    if self.service.is_transform() {
                        slot.len += n as u32;
                        self.service.transform(self.pool.bytes_mut(range));
                    } else {
                        slot.held += n as u32;
                        self.serve(idx);
                    }
                }
            }
            Err(nb::Error::WouldBlock) => self.slots[idx as usize].readable = false,
            // Interrupted (a waiting read cancelled, too): readable as when it was asked
            // for; edges that came meanwhile are kept.
            Err(nb::Error::Other(ErrorKind::Interrupted)) => {
                if let Some(ready) = waited {
                    self.slots[idx as usize].readable = ready;
                }
            }
            Err(nb::Error::Other(kind)) => self.fail(idx, kind),
        }
        let slot = &self.slots[idx as usize];
        if slot.len == 0 && input_held(self.service.is_transform(), slot) == 0 && slot.block != NIL
        {
            self.give_back_block(idx);
        } else if waited.is_some()
            && slot.block != NIL
            && outcome == Err(nb::Error::Other(ErrorKind::Interrupted))
            && self.buffer_waiters.front().is_some()
        {
            // A waiting read gave its buffer back for a connection that needs one, but
            // the buffer still holds output: the next waiting read gives its back.
            self.reclaim_oldest_hold();
        }
        self.completed(idx);
        Ok(())
    }

    /// The outcome of `Send`: `Ok(n)` bytes written (partial writes are normal),
    /// `Err(WouldBlock)` nothing now, `Err(Other(kind))` the connection failed. `Ok(0)`
    /// for a non-empty write means the stream will take no more (`WriteZero`).
    #[inline(always)]
    pub fn on_send(
        &mut self,
        now: Instant,
        conn: ConnId,
        outcome: nb::Result<usize, ErrorKind>,
    ) -> Result<(), ReportError> {
        let max = if self.completion() {
            self.send_in_flight(conn)?
        } else {
            let Some(Pending::Send { conn: asked, max }) = self.pending else {
                return Err(self.mismatch(conn));
            };
            if asked != conn {
                return Err(self.mismatch(conn));
            }
            max
        };
        if let Ok(n) = outcome {
            if n > max as usize {
                return Err(ReportError::Overrun {
                    reported: n,
                    max: max as usize,
                });
            }
        }
        let idx = conn.index;
        if self.completion() {
            self.in_flight[idx as usize].send = None;
        } else {
            self.pending = None;
        }
        // A read still in flight keeps the buffer, and where it writes.
        let reading = self.reading(idx);
        let closing = self.completion() && self.slot_state(idx) == ConnState::Closing;
        if self.completion() {
            // Writable as it was when the write was asked for; the outcome says the rest.
            self.slots[idx as usize].flags.set(Flags::WRITABLE, true);
        }
        match outcome {
            // A write that failed after its connection began closing changes nothing.
            Ok(0) | Err(_) if closing => {}
            Ok(0) => self.fail(idx, ErrorKind::WriteZero),
            Ok(n) => {
                self.pass_progress = true;
                self.stats.bytes_out += n as u64;
                self.progressed(idx, now);
                let (_, ring) = ring(
                    &self.pool,
                    self.service.is_transform(),
                    self.slots[idx as usize].block,
                );
                let slot = &mut self.slots[idx as usize];
                slot.len -= n as u32;
                slot.head = if slot.len == 0 && !reading {
                    0
                } else {
                    (slot.head + n as u32) % ring
                };
                if !self.service.is_transform()
                    && slot.held > 0
                    && slot.state == Some(ConnState::Open)
                    && !reading
                {
                    // Room for replies again: the service may take more of its input.
                    self.serve(idx);
                }
                let slot = &self.slots[idx as usize];
                if slot.len == 0
                    && !reading
                    && input_held(self.service.is_transform(), slot) == 0
                    && slot.block != NIL
                    && !self.keeps_empty_buffer(idx)
                {
                    self.give_back_block(idx);
                }
            }
            Err(nb::Error::WouldBlock) => {
                self.slots[idx as usize].flags.set(Flags::WRITABLE, false);
            }
            Err(nb::Error::Other(ErrorKind::Interrupted)) => {}
            Err(nb::Error::Other(kind)) => self.fail(idx, kind),
        }
        self.completed(idx);
        Ok(())
    }

    /// Completion scheduling: a read or write of `idx` was reported, perhaps long after it
    /// was asked for, outside its visit: what it allows (the next read or write, the
    /// close) is queued.
    fn completed(&mut self, idx: u32) {
        if self.completion() {
            let flight = &mut self.in_flight[idx as usize];
            let slot = &mut self.slots[idx as usize];
            if flight.recv.is_none() && flight.read_edge {
                flight.read_edge = false;
                slot.readable = true;
            }
            if flight.send.is_none() && flight.write_edge {
                flight.write_edge = false;
                slot.flags.set(Flags::WRITABLE, true);
            }
            if idx != self.current {
                self.requeue(idx);
            }
        }
    }

    /// Completion scheduling: readiness of a direction with an operation in flight is
    /// kept for when it completes (a second one is not asked for meanwhile).
    #[cold]
    #[inline(never)]
    fn edges_in_flight(&mut self, idx: u32, readable: bool, writable: bool) -> (bool, bool) {
        let flight = &mut self.in_flight[idx as usize];
        flight.read_edge |= readable && flight.recv.is_some();
        flight.write_edge |= writable && flight.send.is_some();
        (
            readable && flight.recv.is_none(),
            writable && flight.send.is_none(),
        )
    }

    /// The outcome of `Probe`: `Ok(n)` bytes written (the FIN counts as one) that the
    /// peer has not acknowledged yet, `Ok(0)` all delivered, which closes the connection
    /// ([`CloseReason::Done`]). `Err(Unsupported)`: the transport cannot tell, and the
    /// connection lingers until the peer's end-of-stream. `Err(Interrupted)` is asked
    /// again at once; any other error fails the connection.
    pub fn on_probe(
        &mut self,
        now: Instant,
        conn: ConnId,
        outcome: Result<usize, ErrorKind>,
    ) -> Result<(), ReportError> {
        if self.pending != Some(Pending::Probe { conn }) {
            return Err(self.mismatch(conn));
        }
        self.pending = None;
        let idx = conn.index;
        match outcome {
            Ok(0) => {
                self.probes.unlink(self.slots, probe_links, idx);
                self.pass_progress = true;
                self.mark_closing(idx, CloseReason::Done);
            }
            Err(ErrorKind::Interrupted) => self.slots[idx as usize].probe_due = true,
            Ok(n) => {
                self.slots[idx as usize].held = u32::try_from(n).unwrap_or(u32::MAX);
                if !self.probes.contains(self.slots, probe_links, idx) {
                    if self.probes.front().is_none() {
                        self.probe_backoff = self.config.probe_backoff_min;
                        self.probe_at = now + self.probe_backoff;
                        self.due(self.probe_at);
                    }
                    self.probes.push_back(self.slots, probe_links, idx);
                }
            }
            Err(ErrorKind::Unsupported) => {
                self.probes.unlink(self.slots, probe_links, idx);
            }
            Err(kind) => self.fail(idx, kind),
        }
        Ok(())
    }

    /// Drops `conn` now: its pending output is given up (counted in
    /// [`Stats::bytes_dropped`]) and the next [`poll`](Self::poll) asks to close it with
    /// [`CloseReason::Aborted`], which resets it. For an adapter that cannot go on with a
    /// connection (for example one it could not register with its readiness source). An
    /// `Accept`, `Recv` or `Send` asked for and not yet reported on `conn` is cancelled.
    pub fn abort(&mut self, conn: ConnId) -> Result<(), ReportError> {
        let idx = self.live(conn)?;
        if self.slot_state(idx) != ConnState::Closing {
            self.stats.aborted += 1;
            self.mark_closing(idx, CloseReason::Aborted);
        }
        if matches!(self.pending, Some(Pending::Recv { conn: c, .. } | Pending::Send { conn: c, .. } | Pending::Probe { conn: c }) if c == conn)
        {
            self.pending = None;
        }
        Ok(())
    }

    /// Finishes `conn` in order, as a graceful shutdown does for every connection: no more
    /// reads, every byte already read is sent, then `Shutdown` (FIN), then `Close` once the
    /// peer is done. Nothing to do for a connection already on its way out.
    pub fn close(&mut self, conn: ConnId) -> Result<(), ReportError> {
        let idx = self.live(conn)?;
        self.drain(idx);
        Ok(())
    }

    /// Readiness drivers: `conn` may now make progress reading and/or writing.
    pub fn on_ready(
        &mut self,
        conn: ConnId,
        readable: bool,
        writable: bool,
    ) -> Result<(), ReportError> {
        let idx = self.live(conn)?;
        self.mark_ready(idx, readable, writable);
        if idx != self.current {
            self.requeue(idx);
        }
        Ok(())
    }

    /// A readiness report through the [`Driver`](crate::Driver), which lends the
    /// connection's `stream`: as [`on_ready`](Self::on_ready), and if the connection was
    /// quiet and is now readable, its visit at once (the express lane). Quiet: readiness
    /// scheduling, a transform service, no operation pending, no visit under way, no stop
    /// begun, nobody waiting for a buffer, and the connection open, ready both ways,
    /// holding no buffer (so no output), not queued, its last read not bulk, its
    /// end-of-stream not reported, before its idle deadline. Such a connection would be
    /// the next pass's to read into a small buffer, then to write what it read: the express
    /// lane does just that, now, without the run queue, a pass or a `poll` per operation.
    /// A read of data that is written back whole, and found the stream drained, leaves the
    /// connection as it found it; any other outcome is reported as
    /// [`on_recv`](Self::on_recv) or [`on_send`](Self::on_send) would be, and what is
    /// left to do goes to the run queue. `Ok(None)`: not quiet, so only queued.
    pub(crate) fn on_ready_express<C: ?Sized, S: Stream<C>>(
        &mut self,
        now: Instant,
        conn: ConnId,
        readable: bool,
        writable: bool,
        streams: &mut [Option<S>],
        cx: &mut C,
    ) -> Result<Option<Served>, ReportError> {
        // The server's part of being quiet; short of it, the readiness is only queued.
        // A waiting server is between steps, and one load says so (the core alone: 143 ->
        // 139 instructions per message): it began waiting with no operation pending and no
        // visit under way, and only a poll that does not answer `Wait` starts either.
        debug_assert!(
            !self.waiting || self.between_steps(),
            "waiting, but an operation is pending or a visit under way"
        );
        if !(self.express && readable && (self.waiting || self.between_steps())) {
            return self.on_ready(conn, readable, writable).map(|()| None);
        }
        // One borrow of the slot for the whole lane, its bounds checked once: the server's
        // fields beside it are disjoint, so reading and writing them needs no new lookup.
        let idx = conn.index;
        // Open and of this generation: live, and the first of the quiet conditions (one
        // test of the state where liveness and quiet would ask it twice).
        let (slot, open) = match self.slots.get_mut(conn.index()) {
            Some(slot)
                if slot.state == Some(ConnState::Open) && slot.generation == conn.generation =>
            {
                (slot, true)
            }
            Some(slot) if Self::holds(slot, conn) => (slot, false),
            _ => return Err(ReportError::StaleConn(conn)),
        };
        // Readiness scheduling (the lane's condition): readiness is marked as reported,
        // the readable flag only on the ways out that do not set it from the read (marked
        // here, once for all, it cost 7 instructions per message in the epoll driver).
        slot.flags.add(Flags::WRITABLE, writable);
        // The stream is looked up only for a quiet connection.
        let stream = streams
            .get_mut(conn.index())
            .filter(|_| open && Self::is_quiet(slot, now));
        let Some(stream) = stream.and_then(Option::as_mut) else {
            // Not the current visit's connection: there is none.
            slot.readable = true;
            self.requeue(idx);
            return Ok(None);
        };
        let Some((block, buf)) = self.pool.peek_small() else {
            slot.readable = true;
            self.requeue(idx);
            return Ok(None);
        };
        let max = buf.len();
        let recv = stream.read(cx, buf);
        let n = match recv {
            Ok(n) if n > 0 && n <= max => n,
            _ => {
                // Nothing, the end, a failure (or a report out of bounds): as a pass.
                slot.readable = true;
                self.pool.take_small(block);
                slot.block = block;
                self.pending = Some(Pending::Recv {
                    conn,
                    start: 0,
                    max: max as u32,
                });
                self.on_recv(now, conn, recv)?;
                self.requeue(idx);
                return Ok(Some(Served {
                    conn,
                    recv,
                    send: None,
                }));
            }
        };
        self.service.transform(&mut buf[..n]);
        let send = stream.write(cx, &buf[..n]);
        self.stats.bytes_in += n as u64;
        // As `on_recv`: a read that filled its buffer is bulk (the next buffer is large),
        // and with `short_reads_drain` a short one took everything there was.
        let drained = self.config.short_reads_drain && n < max;
        slot.readable = !drained;
        let moved = Self::moves_deadline(&self.config, slot, now);
        if send == Ok(n) && drained {
            // Echoed whole, nothing more to read: quiet again, holding nothing, and not
            // bulk (the read was short), as it was.
            self.stats.bytes_out += n as u64;
            if moved {
                self.deadline_moved(idx);
            }
            return Ok(Some(Served {
                conn,
                recv,
                send: Some(send),
            }));
        }
        // The rest as a pass: the output is pending, then the write's outcome.
        slot.flags.set(Flags::BULK, n == max);
        self.pool.take_small(block);
        slot.block = block;
        slot.len = n as u32;
        if moved {
            self.deadline_moved(idx);
        }
        self.pending = Some(Pending::Send {
            conn,
            max: n as u32,
        });
        self.on_send(now, conn, send)?;
        self.requeue(idx);
        Ok(Some(Served {
            conn,
            recv,
            send: Some(send),
        }))
    }

    /// See [`on_ready_express`](Self::on_ready_express): the slot's part of being quiet, once
    /// it is known open (the caller checks that, with its liveness, and the server's part:
    /// express lane on, no operation pending, no visit under way). Two conditions hold without
    /// a test: a stop drains every open connection at once (so an open one means no stop
    /// began), and a connection waits for a buffer only when none can be lent, each one
    /// released going to the first in line (so with any waiting, no small block is free for the
    /// lane, and the readiness is queued).
    #[inline(always)]
    fn is_quiet(slot: &Slot, now: Instant) -> bool {
        slot.block == NIL && slot.flags.quiet() && slot.deadline > now
    }

    /// Readiness drivers: the peer of `conn` closed its side (epoll's `EPOLLRDHUP`), so
    /// its end-of-stream waits to be read. With
    /// [`short_reads_drain`](crate::Config::short_reads_drain) a read that drains the
    /// data before it would otherwise be taken for "nothing more", and the end-of-stream,
    /// whose edge came with or before that data, never read: after this call the
    /// connection is read until the end-of-stream, short reads or not.
    pub fn on_read_closed(&mut self, conn: ConnId) -> Result<(), ReportError> {
        let idx = self.live(conn)?;
        self.slots[idx as usize].flags.set(Flags::PEER_FIN, true);
        self.on_ready(conn, true, false)
    }

    /// Readiness drivers: the listener may have connections to accept.
    pub fn on_listener_ready(&mut self) {
        self.waiting = false;
        self.listener_ready = true;
    }

    /// Starts a graceful shutdown: stop accepting, stop reading, flush every byte already
    /// read, shut down and close each connection. Connections still open at `deadline`
    /// are force-closed. When all are closed, [`poll`](Self::poll) answers
    /// [`Action::Finished`]. A second call can only bring the deadline forward.
    pub fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown_deadline = Some(self.shutdown_deadline.map_or(deadline, |d| d.min(deadline)));
        self.waiting = false;
        self.due(Instant::ZERO);
        for idx in 0..self.fresh_slots {
            self.drain(idx);
        }
    }

    /// An open connection stops reading and flushes what it read, then `Shutdown`.
    fn drain(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.state == Some(ConnState::Open) {
            slot.state = Some(ConnState::Draining);
            self.mark_ready(idx, false, true);
            self.buffer_waiters.unlink(self.slots, wait_links, idx);
            self.schedule(idx);
        }
    }

    fn fail(&mut self, idx: u32, kind: ErrorKind) {
        self.discard_input(idx);
        self.stats.failed += 1;
        self.pass_progress = true;
        let slot = &mut self.slots[idx as usize];
        slot.state = Some(ConnState::Closing);
        slot.close_reason = CloseReason::Failed(kind);
    }

    fn slot_state(&self, idx: u32) -> ConnState {
        self.slots[idx as usize].state.unwrap_or(ConnState::Closing)
    }

    /// The slot index of a live connection.
    fn live(&self, conn: ConnId) -> Result<u32, ReportError> {
        match self.slots.get(conn.index()) {
            Some(slot) if Self::holds(slot, conn) => Ok(conn.index),
            _ => Err(ReportError::StaleConn(conn)),
        }
    }

    /// Whether `slot` (the one at `conn`'s index) holds `conn`: in use, and not reused
    /// since (its generation).
    #[inline(always)]
    fn holds(slot: &Slot, conn: ConnId) -> bool {
        slot.state.is_some() && slot.generation == conn.generation
    }

    fn mismatch(&self, conn: ConnId) -> ReportError {
        match self.live(conn) {
            Ok(_) => ReportError::Unexpected,
            Err(stale) => stale,
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "completion_tests.rs"]
mod completion_tests;

fn wait_links(slot: &mut Slot) -> &mut Links {
    &mut slot.wait
}

fn timer_links(slot: &mut Slot) -> &mut Links {
    &mut slot.timer
}

fn probe_links(slot: &mut Slot) -> &mut Links {
    &mut slot.probe
}

fn hold_links(flight: &mut InFlight) -> &mut Links {
    &mut flight.hold
}

/// Accept errors that concern the one connection being accepted, not the listener or the
/// process (so no reason to back off).
const fn fails_one_connection(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::PermissionDenied
            | ErrorKind::TimedOut
            | ErrorKind::NotConnected
    )
}

/// Where the reply ring of `block` starts, and its size: the whole block for a transform,
/// the second half for a general service (the first is its input).
fn ring(pool: &Buffers<'_>, in_place: bool, block: u32) -> (u32, u32) {
    let size = pool.capacity(block);
    if in_place {
        (0, size)
    } else {
        (size / 2, size - size / 2)
    }
}

/// Room to read into: no buffer yet (one is lent on the first read), or room in the ring
/// for a transform, in the input half for a general service.
fn has_room(pool: &Buffers<'_>, in_place: bool, slot: &Slot) -> bool {
    slot.block == NIL
        || if in_place {
            slot.len < pool.capacity(slot.block)
        } else {
            input_held(false, slot) < pool.capacity(slot.block) / 2
        }
}

/// A general service's input held by `slot` (`held` counts unacknowledged bytes instead
/// while lingering, and means nothing to a transform).
fn input_held(in_place: bool, slot: &Slot) -> u32 {
    if in_place || slot.state == Some(ConnState::Lingering) {
        0
    } else {
        slot.held
    }
}
