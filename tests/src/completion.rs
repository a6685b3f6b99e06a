//! The simulation's completion mode: the same network, clients and faults as
//! [`run`](crate::run), with a server in [`Scheduling::Completion`] whose reads and writes
//! are submitted now and complete later, in random order across connections (a read of
//! one connection, a write of another, the write of the first...), the way io_uring
//! completes them. Half of the reads and writes, at random, are performed when they are
//! submitted and only reported later (what io_uring does with `MSG_DONTWAIT`: the kernel
//! reads or writes within the call that submits, and the completion is reaped after);
//! the others are performed when they complete (an operation that waits in the kernel).
//! A cancel stops only an operation not yet performed.
//!
//! Most seeds also let reads wait for data ([`Config::read_wait`](nbecho_core::Config::read_wait),
//! [`read_wait_for`]): a read asked to wait that finds nothing stays in flight until data
//! comes, or until it is cancelled. More oracles then: a waiting read gives its
//! buffer back (is cancelled) within its hold and [`SERVE_WITHIN_TIME`], and within
//! [`SERVE_WITHIN_TIME`] of a graceful stop; and a
//! connection that has data and lacks only a buffer, while waiting reads hold some, gets
//! one within [`SERVE_WITHIN_TIME`] (the core takes buffers back from waiting reads for
//! it).
//!
//! The network's own oracles hold as in the other modes (every byte written is a prefix
//! of what the server owes for what it read; no write after a shutdown; no clean close
//! with bytes unacknowledged before the peer's FIN; no double close), and at the end:
//! every accepted connection closed, every clean close delivered everything owed, the
//! counters match what the network carried, and no buffer is still lent.
//!
//! Fairness and liveness, as in the main harness ([`crate::harness`]): a connection with
//! nothing in flight that is *serviceable* (the peer sent something and there is buffer
//! room, or output is pending and the peer's window has room, or it is flushed and due
//! its `Shutdown`, or it is closing) must be asked for an operation within two passes'
//! worth of operations ([`Bounds`]) and [`SERVE_WITHIN_TIME`] of virtual time, however
//! many operations of other connections are in flight or complete meanwhile.

use std::collections::HashMap;
use std::rc::Rc;

use nbecho_core::{
    nb, Action, Admission, CloseReason, ConnId, ConnState, Duration, ErrorKind, InFlight, Instant,
    Listener, Scheduling, Server, Stream,
};

use crate::harness::{
    sim_config, Bounds, Failure, Fill, SimMemory, SimService, MAX_STEPS, SERVE_WITHIN_TIME,
};
use crate::net::{Net, SharedNet, SimListener, SimStream};
use crate::rng::Rng;
use crate::schedule::Schedule;

/// What a completion run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompletionReport {
    /// Steps taken.
    pub steps: u64,
    /// Reads and writes that completed while one submitted before them was still in
    /// flight (out of order).
    pub reordered: u64,
    /// Most operations in flight at once.
    pub most_in_flight: usize,
    /// Reads asked to wait for data.
    pub waiting_reads: u64,
    /// Reads that waited, found nothing for a while, and then brought data.
    pub waited_for_data: u64,
    /// Waiting reads cancelled to give their buffers back (`CancelRecv`).
    pub given_back: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Recv(ConnId),
    Send(ConnId),
}

impl Op {
    fn conn(self) -> ConnId {
        match self {
            Self::Recv(c) | Self::Send(c) => c,
        }
    }
}

/// How long a waiting read may hold its buffer in the run of `seed`
/// ([`Config::read_wait`](nbecho_core::Config::read_wait)): for two seeds in five no read
/// waits; for one, 1 s (longer than most runs: buffers come back at the stop, or to a
/// connection that needs one); for two, 1 to 300 µs (holds end all the time).
pub fn read_wait_for(seed: u64) -> Option<Duration> {
    let mut rng = Rng::new(seed ^ 0x4ead_4a17);
    match rng.range(0, 4) {
        0 | 1 => None,
        2 => Some(Duration::from_secs(1)),
        _ => Some(Duration::from_micros(rng.range(1, 300))),
    }
}

/// Runs `schedule` with completion scheduling.
pub fn run_completion(schedule: &Schedule) -> Result<CompletionReport, Failure> {
    let s = schedule.normalized();
    let mut step = 0;
    let fail = |step: u64, what: String| Failure {
        seed: s.seed,
        step,
        what,
        rerun: "--test completion",
    };
    let capacity = usize::from(s.server.capacity);
    let mut memory = SimMemory::new(&s.server);
    let mut table = vec![InFlight::EMPTY; capacity];
    let mut config = sim_config(&s.server, Scheduling::Completion);
    config.read_wait = read_wait_for(s.seed);
    let (storage, answer, service) = memory
        .parts(&s.server)
        .map_err(|e| fail(0, format!("storage: {e}")))?;
    let storage = storage
        .with_completions(&mut table)
        .map_err(|e| fail(0, format!("storage: {e}")))?;
    let mut server = Server::new(config, storage, service);
    let bounds = Bounds::new(&config, capacity);
    let mut fairness = Fairness {
        ops: 0,
        ready_since: vec![None; s.clients.len()],
        starved_since: vec![None; s.clients.len()],
        read_wait: config.read_wait,
        eof_read: vec![false; s.clients.len()],
        bounds,
        stopped_at: None,
    };
    let net: SharedNet = Net::new(s.seed, s.faults.clone(), &s.clients, answer);
    net.borrow_mut().short_reads_drain = s.server.short_reads_drain;
    let mut listener = SimListener(Rc::clone(&net));
    let mut streams: Vec<Option<SimStream>> = (0..capacity).map(|_| None).collect();
    let mut rng = Rng::new(s.seed ^ 0x00c0_ffee);
    let mut in_flight: Vec<Op> = Vec::new();
    // Where each operation in flight was lent its memory: (address, length) of `buf`, or
    // of `bytes` and of `wrapped` (empty ones compare by length only).
    let mut lent_at: HashMap<Op, [(usize, usize); 2]> = HashMap::new();
    // Operations performed when submitted, with their outcome, not reported yet.
    let mut performed: HashMap<Op, nb::Result<usize, ErrorKind>> = HashMap::new();
    // Reads that wait for data and have found none yet, since when.
    let mut waiting: HashMap<ConnId, Instant> = HashMap::new();
    // Bytes read for connections already closing, which the core discards (not `bytes_in`).
    let mut read_while_closing = 0u64;
    let mut report = CompletionReport::default();
    let mut now = Instant::ZERO;
    let mut shutting_down = false;
    // NBECHO_TRACE=1 prints every step, for replaying a failure (as the main harness does).
    let print_trace = std::env::var_os("NBECHO_TRACE").is_some();
    let trace = |step: u64, what: std::fmt::Arguments<'_>| {
        if print_trace {
            eprintln!("{step:>7} {what}");
        }
    };

    while step < MAX_STEPS {
        step += 1;
        if step % 4 == 0 {
            now = now + Duration::from_micros(1);
        }
        net.borrow_mut().clients_act(now);
        // Readiness, as a poll ring reports it.
        let (edges, listener_edge) = {
            let mut n = net.borrow_mut();
            (
                std::mem::take(&mut n.edges),
                std::mem::take(&mut n.listener_edge),
            )
        };
        if listener_edge {
            server.on_listener_ready();
        }
        for (client, readable, writable, read_closed) in edges {
            let conn = streams
                .iter()
                .enumerate()
                .find(|(_, st)| st.as_ref().is_some_and(|st| st.client == client))
                .and_then(|(index, _)| server.conn_id(index));
            if let Some(conn) = conn {
                trace(
                    step,
                    format_args!("ready {conn} r={readable} w={writable} fin={read_closed}"),
                );
                server
                    .on_ready(conn, readable, writable)
                    .map_err(|e| fail(step, format!("on_ready: {e}")))?;
                if read_closed {
                    server
                        .on_read_closed(conn)
                        .map_err(|e| fail(step, format!("on_read_closed: {e}")))?;
                }
            }
        }
        if !shutting_down {
            let n = net.borrow();
            let done = (0..s.clients.len()).all(|i| n.clients[i].connected && n.client_done(i));
            let quiet = n.next_client_event(now).is_none()
                && !n.clients_busy(now)
                && only_waiting(&in_flight, &waiting, &streams, &n);
            if done || (quiet && step > 100_000) {
                drop(n);
                server.begin_shutdown(now + Duration::from_secs(30));
                shutting_down = true;
                fairness.stopped_at = Some(now);
            }
        }
        report.most_in_flight = report.most_in_flight.max(in_flight.len());
        if !in_flight.is_empty() && rng.chance(40) {
            // Complete one operation in flight, any of them.
            let k = rng.range(0, in_flight.len() as u64 - 1) as usize;
            let op = in_flight.remove(k);
            if k > 0 {
                // Something submitted before it is still in flight.
                report.reordered += 1;
            }
            let conn = op.conn();
            let stream = streams[conn.index()]
                .as_mut()
                .ok_or_else(|| fail(step, format!("{op:?} on a closed connection")))?;
            // The memory lent when the operation was asked for must still be where it was:
            // a real transport reads or writes through the pointer it was given.
            let lent = lent_at.remove(&op);
            match op {
                Op::Recv(_) => {
                    let buf = server
                        .in_flight_recv(conn)
                        .ok_or_else(|| fail(step, format!("{conn}: its read's buffer is gone")))?;
                    if lent != Some([(buf.as_ptr() as usize, buf.len()), (0, 0)]) {
                        return Err(fail(step, format!("{conn}: its read's buffer moved")));
                    }
                    let outcome = match performed.remove(&op) {
                        Some(outcome) => outcome,
                        None => stream.read(&mut (), buf),
                    };
                    if outcome == Err(nb::Error::WouldBlock) && waiting.contains_key(&conn) {
                        // A read that waits for data, and there is none: it goes on waiting.
                        in_flight.insert(k, op);
                        lent_at.insert(op, [(buf.as_ptr() as usize, buf.len()), (0, 0)]);
                        continue;
                    }
                    if waiting.remove(&conn).is_some() && matches!(outcome, Ok(1..)) {
                        report.waited_for_data += 1;
                    }
                    trace(step, format_args!("recv {conn} done: {outcome:?}"));
                    read_while_closing += read_for_closing(&server, conn, outcome);
                    if outcome == Ok(0) {
                        fairness.eof_read[stream.client] = true;
                    }
                    server
                        .on_recv(now, conn, outcome)
                        .map_err(|e| fail(step, format!("on_recv({conn}): {e}")))?;
                }
                Op::Send(_) => {
                    let (bytes, wrapped) = server
                        .in_flight_send(conn)
                        .ok_or_else(|| fail(step, format!("{conn}: its write's bytes are gone")))?;
                    if lent != Some(places(bytes, wrapped)) {
                        return Err(fail(step, format!("{conn}: its write's bytes moved")));
                    }
                    let outcome = match performed.remove(&op) {
                        Some(outcome) => outcome,
                        None => stream.write_vectored(&mut (), bytes, wrapped),
                    };
                    trace(step, format_args!("send {conn} done: {outcome:?}"));
                    server
                        .on_send(now, conn, outcome)
                        .map_err(|e| fail(step, format!("on_send({conn}): {e}")))?;
                }
            }
            continue;
        }
        let action = server.poll(now);
        if print_trace {
            trace(step, format_args!("{}", describe(&action)));
        }
        if let Some(conn) = action_conn(&action) {
            fairness.served(streams[conn.index()].as_ref().map(|st| st.client));
        } else if action == Action::Accept {
            fairness.served(None);
        }
        match action {
            Action::Accept => match listener.accept(&mut ()) {
                Ok(stream) => match server.on_accepted(now) {
                    Ok(Admission::Admitted(conn)) => {
                        if streams[conn.index()].is_some() {
                            return Err(fail(step, format!("{conn}: its slot holds a stream")));
                        }
                        streams[conn.index()] = Some(stream);
                    }
                    Ok(Admission::Refused) => stream.close(&mut (), CloseReason::Refused),
                    Err(e) => return Err(fail(step, format!("on_accepted: {e}"))),
                },
                Err(e) => server
                    .on_accept_error(now, e)
                    .map_err(|e| fail(step, format!("on_accept_error: {e}")))?,
            },
            Action::Recv { conn, buf, wait } => {
                if in_flight.contains(&Op::Recv(conn)) {
                    return Err(fail(step, format!("{conn}: a second read in flight")));
                }
                if wait && config.read_wait.is_none() {
                    return Err(fail(step, format!("{conn}: a waiting read, never allowed")));
                }
                in_flight.push(Op::Recv(conn));
                lent_at.insert(Op::Recv(conn), [(buf.as_ptr() as usize, buf.len()), (0, 0)]);
                let mut tried = false;
                if rng.chance(50) {
                    if let Some(stream) = streams[conn.index()].as_mut() {
                        let outcome = stream.read(&mut (), buf);
                        trace(step, format_args!("recv {conn} performed: {outcome:?}"));
                        // A waiting read that finds nothing waits (it is not performed).
                        if !(wait && outcome == Err(nb::Error::WouldBlock)) {
                            performed.insert(Op::Recv(conn), outcome);
                            tried = true;
                        }
                    }
                }
                if wait && !tried {
                    waiting.insert(conn, now);
                }
                report.waiting_reads += u64::from(wait);
            }
            Action::Send {
                conn,
                bytes,
                wrapped,
            } => {
                if in_flight.contains(&Op::Send(conn)) {
                    return Err(fail(step, format!("{conn}: a second write in flight")));
                }
                in_flight.push(Op::Send(conn));
                lent_at.insert(Op::Send(conn), places(bytes, wrapped));
                if rng.chance(50) {
                    if let Some(stream) = streams[conn.index()].as_mut() {
                        let outcome = stream.write_vectored(&mut (), bytes, wrapped);
                        trace(step, format_args!("send {conn} performed: {outcome:?}"));
                        performed.insert(Op::Send(conn), outcome);
                    }
                }
            }
            Action::Cancel { conn } | Action::CancelRecv { conn } => {
                let ops: &[Op] = if matches!(action, Action::Cancel { .. }) {
                    &[Op::Recv(conn), Op::Send(conn)]
                } else if waiting.contains_key(&conn) || performed.contains_key(&Op::Recv(conn)) {
                    report.given_back += 1;
                    &[Op::Recv(conn)]
                } else {
                    return Err(fail(step, format!("{conn}: CancelRecv, but no read waits")));
                };
                // Cancelled: each reports that it was interrupted, before doing anything.
                for &op in ops {
                    if let Some(k) = in_flight.iter().position(|&o| o == op) {
                        in_flight.remove(k);
                        lent_at.remove(&op);
                        waiting.remove(&conn);
                        // One already performed cannot be stopped: it reports what it did.
                        let cancelled = performed
                            .remove(&op)
                            .unwrap_or(Err(nb::Error::Other(ErrorKind::Interrupted)));
                        let reported = match op {
                            Op::Recv(_) => {
                                read_while_closing += read_for_closing(&server, conn, cancelled);
                                server.on_recv(now, conn, cancelled)
                            }
                            Op::Send(_) => server.on_send(now, conn, cancelled),
                        };
                        reported.map_err(|e| fail(step, format!("cancel {op:?}: {e}")))?;
                    }
                }
            }
            Action::Shutdown { conn } => {
                if in_flight.contains(&Op::Send(conn)) {
                    return Err(fail(step, format!("{conn}: FIN with a write in flight")));
                }
                if let Some(stream) = streams[conn.index()].as_mut() {
                    let _ = stream.shutdown_write(&mut ());
                }
            }
            Action::Probe { conn } => {
                let outcome = streams[conn.index()]
                    .as_mut()
                    .map_or(Err(ErrorKind::NotConnected), |st| st.unacked(&mut ()));
                server
                    .on_probe(now, conn, outcome)
                    .map_err(|e| fail(step, format!("on_probe({conn}): {e}")))?;
            }
            Action::Close { conn, reason } => {
                if in_flight.iter().any(|op| op.conn() == conn) {
                    return Err(fail(
                        step,
                        format!("{conn}: closed with an operation in flight"),
                    ));
                }
                match streams[conn.index()].take() {
                    Some(stream) => stream.close(&mut (), reason),
                    None => return Err(fail(step, format!("{conn}: closed twice"))),
                }
            }
            Action::Wait { until } => {
                if only_waiting(&in_flight, &waiting, &streams, &net.borrow()) {
                    let next = net.borrow().next_client_event(now);
                    let wake = match (until, next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    now = wake.map_or(now + Duration::from_millis(1), |t| t.max(now));
                }
            }
            Action::Finished => {
                report.steps = step;
                return check_end(&server, &net, &streams, read_while_closing, &report)
                    .map(|()| report)
                    .map_err(|what| fail(step, what));
            }
        }
        if let Some(v) = net.borrow().violations.first() {
            return Err(fail(step, v.clone()));
        }
        fairness
            .check(&server, &net, &streams, &in_flight, &waiting, now)
            .map_err(|what| fail(step, what))?;
    }
    Err(fail(step, format!("not finished after {MAX_STEPS} steps")))
}

/// Nothing is in flight but reads that wait for data, with nothing to read yet: nothing
/// completes before the clients act (or the server's next timer).
fn only_waiting(
    in_flight: &[Op],
    waiting: &HashMap<ConnId, Instant>,
    streams: &[Option<SimStream>],
    net: &Net,
) -> bool {
    in_flight.iter().all(|op| match op {
        Op::Recv(conn) if waiting.contains_key(conn) => {
            streams[conn.index()].as_ref().is_some_and(|st| {
                let pipe = &net.pipes[st.client];
                pipe.to_server.is_empty() && !pipe.client_eof && !pipe.reset
            })
        }
        _ => false,
    })
}

/// Where a `Send`'s two parts are (an empty part's address means nothing).
fn places(bytes: &[u8], wrapped: &[u8]) -> [(usize, usize); 2] {
    let place = |b: &[u8]| (if b.is_empty() { 0 } else { b.as_ptr() as usize }, b.len());
    [place(bytes), place(wrapped)]
}

/// Bytes a read brought for a connection already closing (the core discards them).
fn read_for_closing(
    server: &Server<'_, SimService<'_>, nbecho_core::FlightTable<'_>>,
    conn: ConnId,
    outcome: nb::Result<usize, ErrorKind>,
) -> u64 {
    match (server.conn_state(conn), outcome) {
        (Ok(ConnState::Closing), Ok(n)) => n as u64,
        _ => 0,
    }
}

/// An action in a trace line (a `Recv`'s or `Send`'s length, not its bytes).
fn describe(action: &Action<'_>) -> String {
    match action {
        Action::Recv { conn, buf, wait } => {
            let waits = if *wait { ", waits" } else { "" };
            format!("asks Recv {conn} ({} B{waits})", buf.len())
        }
        Action::Send {
            conn,
            bytes,
            wrapped,
        } => format!("asks Send {conn} ({} + {} B)", bytes.len(), wrapped.len()),
        other => format!("asks {other:?}"),
    }
}

/// The connection an action names, if any.
fn action_conn(action: &Action<'_>) -> Option<ConnId> {
    match *action {
        Action::Recv { conn, .. }
        | Action::Send { conn, .. }
        | Action::Cancel { conn }
        | Action::CancelRecv { conn }
        | Action::Shutdown { conn }
        | Action::Probe { conn }
        | Action::Close { conn, .. } => Some(conn),
        _ => None,
    }
}

/// The fairness and liveness oracle (see the module docs).
struct Fairness {
    /// Operations asked for so far (every action but `Wait` and `Finished`).
    ops: u64,
    /// Per client: since when (operations, time) its connection has been serviceable.
    ready_since: Vec<Option<(u64, Instant)>>,
    /// Per client: since when its connection has had data and lacked only a buffer
    /// while reads that wait for data held some.
    starved_since: Vec<Option<(u64, Instant)>>,
    /// Per client: its end-of-stream was read.
    eof_read: Vec<bool>,
    bounds: Bounds,
    read_wait: Option<Duration>,
    /// When the graceful stop began, if it has.
    stopped_at: Option<Instant>,
}

impl Fairness {
    /// An operation was asked for, on `client`'s connection if any.
    fn served(&mut self, client: Option<usize>) {
        self.ops += 1;
        if let Some(client) = client {
            self.ready_since[client] = None;
        }
    }

    fn check(
        &mut self,
        server: &Server<'_, SimService<'_>, nbecho_core::FlightTable<'_>>,
        net: &SharedNet,
        streams: &[Option<SimStream>],
        in_flight: &[Op],
        waiting: &HashMap<ConnId, Instant>,
        now: Instant,
    ) -> Result<(), String> {
        if let Some(hold) = self.read_wait {
            for (conn, since) in waiting {
                if now - *since > hold + SERVE_WITHIN_TIME {
                    return Err(format!(
                        "{conn}: a read has waited for data since {since}, holding its buffer \
                         past its hold of {hold} (and {SERVE_WITHIN_TIME} more)"
                    ));
                }
                // A stop cancels reads that wait: they would hold it up to their hold.
                if let Some(stop) = self.stopped_at {
                    if now - stop.max(*since) > SERVE_WITHIN_TIME {
                        return Err(format!(
                            "{conn}: a read has waited for data since {since}, and the stop \
                             began at {stop}: not cancelled within {SERVE_WITHIN_TIME}"
                        ));
                    }
                }
            }
        }
        let n = net.borrow();
        let (blocks, lent) = server.buffers();
        for (index, stream) in streams.iter().enumerate() {
            let (Some(stream), Some(conn)) = (stream, server.conn_id(index)) else {
                continue;
            };
            let client = stream.client;
            let fill = Fill::of(server, conn, n.answer())?;
            // A read that waits for data leaves the connection's other work to check.
            let waits = waiting.contains_key(&conn);
            let idle = !in_flight
                .iter()
                .any(|&op| op.conn() == conn && !(op == Op::Recv(conn) && waits));
            let ready_if = |can_lend: bool| {
                idle && fill.serviceable(can_lend, &n.pipes[client], self.eof_read[client], waits)
            };
            let ready = ready_if(lent < blocks);
            let starved = &mut self.starved_since[client];
            match (*starved, !ready && ready_if(true) && !waiting.is_empty()) {
                (_, false) => *starved = None,
                (None, true) => *starved = Some((self.ops, now)),
                (Some((ops, at)), true) => {
                    if now - at > SERVE_WITHIN_TIME {
                        return Err(format!(
                            "{conn} (client {client}) has lacked only a buffer since operation \
                             {ops} ({at}) while reads that wait for data hold buffers: none \
                             was taken back for it in {}",
                            now - at
                        ));
                    }
                }
            }
            let since = &mut self.ready_since[client];
            match (*since, ready) {
                (_, false) => *since = None,
                (None, true) => *since = Some((self.ops, now)),
                (Some((ops, at)), true) => {
                    if self.ops - ops > self.bounds.serve_ops || now - at > SERVE_WITHIN_TIME {
                        return Err(format!(
                            "{conn} (client {client}, {state}) has been serviceable with nothing \
                             in flight since operation {ops} ({at}) and was not served in {} \
                             operations / {}: unfair or stalled (the bound is {} operations, \
                             {SERVE_WITHIN_TIME})",
                            self.ops - ops,
                            now - at,
                            self.bounds.serve_ops,
                            state = fill.state,
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_end(
    server: &Server<'_, SimService<'_>, nbecho_core::FlightTable<'_>>,
    net: &SharedNet,
    streams: &[Option<SimStream>],
    read_while_closing: u64,
    report: &CompletionReport,
) -> Result<(), String> {
    let n = net.borrow();
    if let Some(v) = n.violations.first() {
        return Err(v.clone());
    }
    if streams.iter().any(Option::is_some) {
        return Err("finished with a stream not closed".into());
    }
    for (i, pipe) in n.pipes.iter().enumerate() {
        if pipe.accepted && !pipe.server_closed {
            return Err(format!("client {i} was never closed"));
        }
        if pipe.closed_with == Some(CloseReason::Done) && pipe.written != pipe.expected.len() {
            return Err(format!(
                "client {i} closed cleanly with {} of {} bytes written",
                pipe.written,
                pipe.expected.len()
            ));
        }
    }
    let st = server.stats();
    let read: u64 = n.pipes.iter().map(|p| p.server_read.len() as u64).sum();
    let written: u64 = n.pipes.iter().map(|p| p.written as u64).sum();
    if (st.bytes_in + read_while_closing, st.bytes_out) != (read, written) {
        return Err(format!(
            "bytes in (with {read_while_closing} read while closing) and out are {:?}, the network carried {:?}",
            (st.bytes_in + read_while_closing, st.bytes_out),
            (read, written)
        ));
    }
    if server.buffers().1 != 0 {
        return Err(format!("{} buffers still lent", server.buffers().1));
    }
    if (st.waiting_reads, st.waits_given_back) != (report.waiting_reads, report.given_back) {
        return Err(format!(
            "the stats count {} waiting reads and {} given back, the run saw {} and {}",
            st.waiting_reads, st.waits_given_back, report.waiting_reads, report.given_back
        ));
    }
    Ok(())
}
