//! Runs a [`Schedule`] through the real [`Driver`] over the simulated network, checking
//! the core's guarantees after every step.

use std::fmt;
use std::rc::Rc;

use nbecho_core::{
    nb, CloseReason, Config, ConnId, Driver, Duration, Instant, Scheduling, Server, Slot, Stats,
    Step, Storage, Uppercase,
};

use crate::net::{Net, SharedNet, SimListener, SimStream};
use crate::schedule::{Behaviour, Schedule};

/// Steps a run may take before it counts as stuck.
pub const MAX_STEPS: u64 = 2_000_000;
/// The final graceful shutdown's deadline: long enough for every slow reader.
const FINAL_GRACE: Duration = Duration::from_secs(30);
/// A mid-traffic shutdown's deadline.
const MID_GRACE: Duration = Duration::from_secs(2);
/// Virtual time one operation takes.
const OP_TIME: Duration = Duration::from_micros(1);

/// What a successful run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Driver steps taken.
    pub steps: u64,
    /// Echo bytes checked against `transform(received)` as they were written.
    pub bytes_checked: u64,
    /// Faults the network injected.
    pub faults: u64,
    /// Connections admitted.
    pub accepted: u64,
    /// Connections refused at capacity.
    pub refused: u64,
    /// FNV-1a hash of the whole trace (every step and the time it ran).
    pub trace_hash: u64,
    /// The server's counters at the end.
    pub stats: Stats,
}

/// A broken guarantee, with what is needed to replay it.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The schedule's seed.
    pub seed: u64,
    /// The step at which it was seen.
    pub step: u64,
    /// What went wrong.
    pub what: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}\n  rerun: NBECHO_SEED={} cargo test -p nbecho-tests --test sim replay_seed -- --nocapture",
            self.seed, self.step, self.what, self.seed
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

/// Which client each connection slot serves, as the harness saw the driver admit them.
#[derive(Debug)]
struct Model {
    slots: Vec<Option<(ConnId, usize)>>,
    reasons: Vec<Option<CloseReason>>,
    refused: Vec<bool>,
}

impl Model {
    fn live(&self, conn: ConnId) -> Result<usize, String> {
        match self.slots.get(conn.index()).copied().flatten() {
            Some((id, client)) if id == conn => Ok(client),
            _ => Err(format!(
                "operation on {conn}, which is not a live connection"
            )),
        }
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
    };

    let capacity = usize::from(s.server.capacity);
    let buffer_size = usize::from(s.server.buffer_size);
    let mut slots = vec![Slot::EMPTY; capacity];
    let mut arena = vec![0u8; usize::from(s.server.buffers) * buffer_size];
    let mut streams: Vec<Option<SimStream>> = (0..capacity).map(|_| None).collect();
    let mut config = Config::default();
    config.scheduling = if s.server.readiness {
        Scheduling::Readiness
    } else {
        Scheduling::Polling
    };
    config.idle_timeout = s
        .server
        .idle_timeout_ms
        .map(|t| Duration::from_millis(t.into()));
    config.visit_budget = s.server.visit_budget.into();
    let storage = Storage::new(&mut slots, &mut arena, buffer_size)
        .map_err(|e| fail(0, format!("storage: {e}")))?;
    let server = Server::new(config, storage, Uppercase);
    let net: SharedNet = Net::new(s.seed, s.faults.clone(), &s.clients);
    let mut driver = Driver::new(server, SimListener(Rc::clone(&net)), &mut streams)
        .map_err(|e| fail(0, e.to_string()))?;

    let mut model = Model {
        slots: vec![None; capacity],
        reasons: vec![None; s.clients.len()],
        refused: vec![false; s.clients.len()],
    };
    let mut trace = Fnv(0xcbf2_9ce4_8422_2325);
    let mut now = Instant::ZERO;
    let mid_shutdown = s
        .server
        .shutdown_at_ms
        .map(|t| Instant::from_millis(t.into()));
    let mut finished = false;
    // A polling pass without progress ends in a Wait: a run of steps that move nothing
    // is at most two passes long (the end of a pass that made progress, then one that
    // did not).
    let pass_len = capacity as u64 * u64::from(s.server.visit_budget) + 2;
    let spin_limit = 2 * pass_len + 2;
    let mut idle_steps = 0;
    // When each client's peer side was finished (reset, or end-of-stream sent and its
    // echo read): its connection must close within `CLOSE_WITHIN` steps after that.
    let mut peer_done_at: Vec<Option<u64>> = vec![None; s.clients.len()];
    // NBECHO_TRACE=1 prints every step, for replaying a failure.
    let print_trace = std::env::var_os("NBECHO_TRACE").is_some();

    while step < MAX_STEPS {
        step += 1;
        net.borrow_mut().clients_act(now);

        // The readiness role: report what the clients' actions made ready.
        if s.server.readiness {
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
            for (client, readable, writable) in edges {
                let conn = model
                    .slots
                    .iter()
                    .flatten()
                    .find(|(_, c)| *c == client)
                    .map(|(id, _)| *id);
                if let Some(conn) = conn {
                    driver
                        .server_mut()
                        .on_ready(conn, readable, writable)
                        .map_err(|e| fail(step, format!("on_ready({conn}): {e}")))?;
                }
            }
        }

        if !driver.server().is_shutting_down() {
            let all_done = {
                let n = net.borrow();
                (0..s.clients.len()).all(|i| n.clients[i].connected && n.client_done(i))
            };
            let idle_left = quiet_since_all_connected(&net.borrow(), now);
            if mid_shutdown.is_some_and(|t| now >= t) {
                driver.server_mut().begin_shutdown(now + MID_GRACE);
            } else if all_done || idle_left {
                driver.server_mut().begin_shutdown(now + FINAL_GRACE);
            }
        }

        let taken = driver.step(now);
        fmt::Write::write_fmt(&mut trace, format_args!("{now:?} {taken:?}\n")).ok();
        if print_trace {
            eprintln!("{step:>7} {now} {taken:?}");
        }
        let mut waited = false;
        match taken {
            Step::Accepted(conn) => {
                let client = net
                    .borrow()
                    .last_accepted
                    .expect("an accept returned a stream");
                if model.slots[conn.index()].is_some() {
                    return Err(fail(step, format!("{conn} admitted into a busy slot")));
                }
                model.slots[conn.index()] = Some((conn, client));
            }
            Step::Refused => {
                let client = net
                    .borrow()
                    .last_accepted
                    .expect("an accept returned a stream");
                model.refused[client] = true;
            }
            Step::Recv { conn, .. } | Step::Send { conn, .. } | Step::Shutdown(conn) => {
                model.live(conn).map_err(|e| fail(step, e))?;
            }
            Step::Closed(conn, reason) => {
                let client = model.live(conn).map_err(|e| fail(step, e))?;
                model.reasons[client] = Some(reason);
                model.slots[conn.index()] = None;
                if driver.server().conn_state(conn).is_ok() {
                    return Err(fail(
                        step,
                        format!("{conn} is closed but its id still works"),
                    ));
                }
            }
            Step::Wait(until) => {
                waited = true;
                let n = net.borrow();
                let next_client = n.next_client_event(now);
                match until {
                    Some(t) if t <= now => {
                        return Err(fail(
                            step,
                            format!("Wait until {t} is not after now ({now})"),
                        ))
                    }
                    None if !s.server.readiness => {
                        return Err(fail(step, "a polling server waited forever".into()))
                    }
                    _ => {}
                }
                let target = [until, next_client].into_iter().flatten().min();
                match target {
                    Some(t) => now = t,
                    None if n.clients_busy() || !n.edges.is_empty() || n.listener_edge => {}
                    None => {
                        return Err(fail(
                            step,
                            "the server waits forever with connections left".into(),
                        ))
                    }
                }
            }
            Step::Finished => {
                finished = true;
                break;
            }
            _ => {}
        }
        if !waited {
            now = now + OP_TIME;
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
        idle_steps = if moved || waited { 0 } else { idle_steps + 1 };
        if !s.server.readiness && idle_steps > spin_limit {
            let what =
                format!("{idle_steps} steps in a row moved nothing without a Wait: spinning");
            return Err(fail(step, what));
        }
        check_step(&driver, &net, buffer_size, &model).map_err(|e| fail(step, e))?;
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
        bytes_checked: n.pipes.iter().map(|p| p.written as u64).sum(),
        faults: n.injected,
        accepted: stats.accepted,
        refused: stats.refused,
        trace_hash: trace.0,
        stats,
    })
}

/// Idle clients keep their connections open; once everyone has connected and nothing
/// but idle clients is left, the harness starts the final shutdown.
fn quiet_since_all_connected(net: &Net, now: Instant) -> bool {
    let pending_time = net.next_client_event(now).is_some();
    !pending_time
        && !net.clients_busy()
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

/// Steps a connection may stay open once its peer is done with it.
const CLOSE_WITHIN: u64 = 50_000;

fn check_closes(
    net: &Net,
    model: &Model,
    now: Instant,
    step: u64,
    peer_done_at: &mut [Option<u64>],
) -> Result<(), String> {
    for (i, done_at) in peer_done_at.iter_mut().enumerate() {
        let open = model.slots.iter().flatten().any(|&(_, c)| c == i);
        if !open {
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

fn check_step(
    driver: &Driver<'_, SimListener, Uppercase>,
    net: &SharedNet,
    buffer_size: usize,
    model: &Model,
) -> Result<(), String> {
    let n = net.borrow();
    if let Some(v) = n.violations.first() {
        return Err(v.clone());
    }
    let server = driver.server();
    let st = server.stats();
    if st.bytes_in != st.bytes_out + st.bytes_dropped + st.bytes_buffered() {
        return Err(format!("byte counters do not add up: {st}"));
    }
    let (blocks, lent) = server.buffers();
    if lent > blocks || lent as u64 > st.active {
        return Err(format!(
            "{lent} buffers lent of {blocks}, with {} connections",
            st.active
        ));
    }
    let read: u64 = n.pipes.iter().map(|p| p.server_read.len() as u64).sum();
    let written: u64 = n.pipes.iter().map(|p| p.written as u64).sum();
    if (st.bytes_in, st.bytes_out) != (read, written) {
        return Err(format!(
            "stats say {} in / {} out, the network saw {read} / {written}",
            st.bytes_in, st.bytes_out
        ));
    }
    for &(conn, _) in model.slots.iter().flatten() {
        let pending = server
            .pending_output(conn)
            .map_err(|e| format!("{conn}: {e}"))?;
        if pending > buffer_size {
            return Err(format!(
                "{conn} buffers {pending} bytes, over its {buffer_size}"
            ));
        }
    }
    Ok(())
}

fn check_end(
    s: &Schedule,
    driver: &Driver<'_, SimListener, Uppercase>,
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
    let discarded: u64 = n.pipes.iter().map(|p| p.discarded).sum();
    if st.bytes_discarded != discarded {
        return Err(format!(
            "discarded {} vs {discarded} by the network",
            st.bytes_discarded
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
            continue;
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
                if client.plan.behaviour == Behaviour::HalfClose && !mid_shutdown && !complete {
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
            CloseReason::TimedOut if s.server.idle_timeout_ms.is_none() => {
                return Err(format!("client {i} timed out with no idle timeout"));
            }
            CloseReason::Forced if !mid_shutdown => {
                return Err(format!(
                    "client {i} force-closed in a final shutdown of {FINAL_GRACE}"
                ));
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
