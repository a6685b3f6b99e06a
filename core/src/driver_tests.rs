//! Unit tests of the driver's express lane ([`Driver::on_ready`]): a quiet connection's
//! request answered as its readiness comes, and every other outcome handed to the passes
//! exactly as a pass would have left it.

use super::*;
use crate::config::{Config, Scheduling};
use crate::conn::Slot;
use crate::server::Storage;
use crate::transform::Uppercase;

const T0: Instant = Instant::ZERO;
const BLOCK: usize = 16;

/// A stream that answers what each test scripts: each read and write takes the next
/// scripted outcome, first in first out (would-block when none is left); a write's
/// `Ok(n)` takes `n` bytes. (The test build's prelude `Vec`: a handful of entries each.)
#[derive(Debug, Default)]
struct Script {
    reads: Vec<nb::Result<Vec<u8>, ErrorKind>>,
    writes: Vec<nb::Result<usize, ErrorKind>>,
    /// Every byte written, in order.
    written: Vec<u8>,
}

/// The oldest scripted outcome, or would-block.
fn next<T>(script: &mut Vec<nb::Result<T, ErrorKind>>) -> nb::Result<T, ErrorKind> {
    if script.is_empty() {
        Err(nb::Error::WouldBlock)
    } else {
        script.remove(0)
    }
}

impl Stream for Script {
    fn read(&mut self, _: &mut (), buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        let data = next(&mut self.reads)?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    fn write(&mut self, _: &mut (), bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        let n = next(&mut self.writes)?;
        self.written.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn shutdown_write(&mut self, _: &mut ()) -> Result<(), ErrorKind> {
        Ok(())
    }
}

type Accept = AcceptFn<fn(&mut ()) -> nb::Result<Script, ErrorKind>>;
type TestDriver = Driver<'static, Accept, Uppercase>;

fn one_stream(_: &mut ()) -> nb::Result<Script, ErrorKind> {
    Ok(Script::default())
}

fn no_stream(_: &mut ()) -> nb::Result<Script, ErrorKind> {
    Err(nb::Error::WouldBlock)
}

/// A server of two connections and two buffers of [`BLOCK`] bytes, its first connection
/// accepted.
fn accepted(config: Config) -> (TestDriver, ConnId) {
    let slots = Box::leak(vec![Slot::EMPTY; 2].into_boxed_slice());
    let arena = Box::leak(vec![0u8; 2 * BLOCK].into_boxed_slice());
    let server = Server::new(
        config,
        Storage::new(slots, arena, BLOCK).unwrap(),
        Uppercase,
    );
    let streams = Box::leak((0..2).map(|_| None).collect::<Vec<_>>().into_boxed_slice());
    let mut driver = Driver::new(server, AcceptFn(one_stream as _), streams).unwrap();
    driver.server_mut().on_listener_ready();
    let Step::Accepted(conn) = driver.step(T0) else {
        panic!("an accept")
    };
    (driver, conn)
}

/// A readiness server (as the epoll driver configures it, with `short_reads_drain`) of
/// two connections and two small buffers, one connection accepted and settled: its first
/// read found nothing, so it is quiet.
fn settled(config: Config) -> (TestDriver, ConnId) {
    settled_until(config, None)
}

/// [`settled`], its server then waiting until `until` (its idle deadline, if any).
fn settled_until(config: Config, until: Option<Instant>) -> (TestDriver, ConnId) {
    let (mut driver, conn) = accepted(config);
    // The listener would answer another stream: it is not ready any more.
    driver.listener = AcceptFn(no_stream as _);
    assert_eq!(driver.step(T0), Step::AcceptWouldBlock);
    assert_eq!(
        driver.step(T0),
        Step::Recv {
            conn,
            outcome: Err(nb::Error::WouldBlock)
        }
    );
    assert_eq!(driver.step(T0), Step::Wait(until));
    (driver, conn)
}

fn readiness() -> Config {
    Config {
        scheduling: Scheduling::Readiness,
        short_reads_drain: true,
        idle_timeout: None,
        ..Config::default()
    }
}

fn script(driver: &mut TestDriver, conn: ConnId) -> &mut Script {
    driver.streams[conn.index()].as_mut().unwrap()
}

/// The steps up to and including the next wait.
fn until_wait(driver: &mut TestDriver) -> Vec<Step> {
    let mut steps = Vec::new();
    for _ in 0..20 {
        let step = driver.step(T0);
        steps.push(step);
        if matches!(step, Step::Wait(_) | Step::Finished) {
            return steps;
        }
    }
    panic!("no wait in 20 steps: {steps:?}")
}

fn served(
    conn: ConnId,
    recv: nb::Result<usize, ErrorKind>,
    send: Option<nb::Result<usize, ErrorKind>>,
) -> Result<Option<Served>, ReportError> {
    Ok(Some(Served { conn, recv, send }))
}

#[test]
fn a_quiet_connections_request_is_answered_as_its_readiness_comes() {
    let (mut d, conn) = settled(readiness());
    script(&mut d, conn).reads.push(Ok(b"hello".to_vec()));
    script(&mut d, conn).writes.push(Ok(5));
    assert_eq!(
        d.on_ready(T0, conn, true, false),
        served(conn, Ok(5), Some(Ok(5)))
    );
    assert_eq!(script(&mut d, conn).written, b"HELLO");
    // Quiet again: no buffer held, nothing queued, nothing to do.
    assert_eq!(d.server().buffers().1, 0, "buffers lent");
    assert_eq!(d.step(T0), Step::Wait(None));
    let stats = d.server().stats();
    assert_eq!((stats.bytes_in, stats.bytes_out), (5, 5));
    // And the same again for the next request.
    script(&mut d, conn).reads.push(Ok(b"x".to_vec()));
    script(&mut d, conn).writes.push(Ok(1));
    assert_eq!(
        d.on_ready(T0, conn, true, true),
        served(conn, Ok(1), Some(Ok(1)))
    );
    assert_eq!(script(&mut d, conn).written, b"HELLOX");
    assert_eq!(until_wait(&mut d), [Step::Wait(None)]);
}

#[test]
fn the_rest_of_a_partial_write_goes_on_in_the_next_pass() {
    let (mut d, conn) = settled(readiness());
    script(&mut d, conn).reads.push(Ok(b"hello".to_vec()));
    script(&mut d, conn).writes.extend([Ok(2), Ok(3)]);
    assert_eq!(
        d.on_ready(T0, conn, true, false),
        served(conn, Ok(5), Some(Ok(2)))
    );
    assert_eq!(d.server().pending_output(conn), Ok(3));
    let send = Step::Send {
        conn,
        outcome: Ok(3),
    };
    assert_eq!(until_wait(&mut d), [send, Step::Wait(None)]);
    assert_eq!(script(&mut d, conn).written, b"HELLO");
    assert_eq!(d.server().buffers().1, 0, "the buffer went back once empty");
}

#[test]
fn a_write_that_would_block_waits_for_the_writable_edge() {
    let (mut d, conn) = settled(readiness());
    script(&mut d, conn).reads.push(Ok(b"hi".to_vec()));
    let would_block = Err(nb::Error::WouldBlock);
    assert_eq!(
        d.on_ready(T0, conn, true, false),
        served(conn, Ok(2), Some(would_block))
    );
    // Not writable: nothing to do until the edge.
    assert_eq!(until_wait(&mut d), [Step::Wait(None)]);
    assert_eq!(d.server().pending_output(conn), Ok(2));
    // The edge finds the connection holding output: not quiet, so queued.
    script(&mut d, conn).writes.push(Ok(2));
    assert_eq!(d.on_ready(T0, conn, false, true), Ok(None));
    let send = Step::Send {
        conn,
        outcome: Ok(2),
    };
    assert_eq!(until_wait(&mut d), [send, Step::Wait(None)]);
    assert_eq!(script(&mut d, conn).written, b"HI");
}

#[test]
fn nothing_to_read_leaves_the_connection_quiet() {
    let (mut d, conn) = settled(readiness());
    let would_block = Err(nb::Error::WouldBlock);
    assert_eq!(
        d.on_ready(T0, conn, true, false),
        served(conn, would_block, None)
    );
    assert_eq!(d.server().buffers().1, 0);
    assert_eq!(until_wait(&mut d), [Step::Wait(None)]);
}

#[test]
fn the_peers_end_of_stream_is_shut_down_and_closed_by_the_passes() {
    let (mut d, conn) = settled(readiness());
    script(&mut d, conn).reads.push(Ok(Vec::new()));
    assert_eq!(d.on_ready(T0, conn, true, false), served(conn, Ok(0), None));
    assert_eq!(
        until_wait(&mut d),
        [
            Step::Shutdown(conn),
            Step::Closed(conn, CloseReason::Done),
            Step::Wait(None)
        ]
    );
    assert_eq!(d.server().stats().peer_closed, 1);
}

#[test]
fn a_reset_closes_the_connection() {
    let (mut d, conn) = settled(readiness());
    let reset = Err(nb::Error::Other(ErrorKind::ConnectionReset));
    script(&mut d, conn)
        .reads
        .push(reset.map(|_: ()| Vec::new()));
    assert_eq!(
        d.on_ready(T0, conn, true, false),
        served(conn, reset.map(|_: ()| 0), None)
    );
    let closed = Step::Closed(conn, CloseReason::Failed(ErrorKind::ConnectionReset));
    assert_eq!(until_wait(&mut d), [closed, Step::Wait(None)]);
    assert_eq!(d.server().stats().failed, 1);
}

#[test]
fn a_read_that_fills_the_buffer_leaves_the_rest_to_the_next_pass() {
    let (mut d, conn) = settled(readiness());
    let full = vec![b'a'; BLOCK];
    script(&mut d, conn)
        .reads
        .extend([Ok(full.clone()), Ok(b"b".to_vec())]);
    script(&mut d, conn).writes.extend([Ok(BLOCK), Ok(1)]);
    assert_eq!(
        d.on_ready(T0, conn, true, false),
        served(conn, Ok(BLOCK), Some(Ok(BLOCK)))
    );
    // A full read may have left data behind: the connection is queued to read on.
    let recv = Step::Recv {
        conn,
        outcome: Ok(1),
    };
    let send = Step::Send {
        conn,
        outcome: Ok(1),
    };
    assert_eq!(until_wait(&mut d), [recv, send, Step::Wait(None)]);
    let mut want = vec![b'A'; BLOCK];
    want.push(b'B');
    assert_eq!(script(&mut d, conn).written, want);
}

#[test]
fn only_quiet_connections_take_the_express_lane() {
    // Polling scheduling: every pass tries every connection anyway.
    let config = Config {
        scheduling: Scheduling::Polling,
        ..Config::default()
    };
    let (mut d, conn) = accepted(config);
    script(&mut d, conn).reads.push(Ok(b"a".to_vec()));
    assert_eq!(d.on_ready(T0, conn, true, true), Ok(None));

    // A stop has begun: nothing more is read.
    let (mut d, conn) = settled(readiness());
    script(&mut d, conn).reads.push(Ok(b"a".to_vec()));
    d.server_mut()
        .begin_shutdown(T0 + crate::time::Duration::from_secs(1));
    assert_eq!(d.on_ready(T0, conn, true, true), Ok(None));

    // A write edge alone: nothing to read.
    let (mut d, conn) = settled(readiness());
    script(&mut d, conn).reads.push(Ok(b"a".to_vec()));
    assert_eq!(d.on_ready(T0, conn, false, true), Ok(None));
    assert_eq!(script(&mut d, conn).reads.len(), 1, "not read");

    // A stale id: an error, nothing done.
    let (mut d, conn) = settled(readiness());
    let stale = ConnId {
        index: conn.index,
        generation: conn.generation + 1,
    };
    assert!(d.on_ready(T0, stale, true, true).is_err());
    assert_eq!(until_wait(&mut d), [Step::Wait(None)]);
}

#[test]
fn a_connection_past_its_idle_deadline_is_timed_out_not_served() {
    let timeout = crate::time::Duration::from_millis(10);
    let config = Config {
        idle_timeout: Some(timeout),
        ..readiness()
    };
    let (mut d, conn) = settled_until(config, Some(T0 + timeout));
    // Just before the deadline: served, and the deadline moves.
    let before = T0 + crate::time::Duration::from_millis(9);
    script(&mut d, conn).reads.push(Ok(b"a".to_vec()));
    script(&mut d, conn).writes.push(Ok(1));
    assert_eq!(
        d.on_ready(before, conn, true, false),
        served(conn, Ok(1), Some(Ok(1)))
    );
    assert_eq!(d.step(before), Step::Wait(Some(before + timeout)));
    // At the deadline: the pass times it out; its data is not read.
    let late = before + timeout;
    script(&mut d, conn).reads.push(Ok(b"b".to_vec()));
    assert_eq!(d.on_ready(late, conn, true, false), Ok(None));
    assert_eq!(d.step(late), Step::Closed(conn, CloseReason::TimedOut));
    assert_eq!(script_len(&d), 0, "the stream is closed");
}

fn script_len(driver: &TestDriver) -> usize {
    driver.streams.iter().flatten().count()
}

/// A readiness driver with two connections accepted, the listener done, and both
/// waited on once (settled: nothing to do).
fn two_settled() -> (TestDriver, ConnId, ConnId) {
    let (mut d, first) = accepted(readiness());
    let Step::Accepted(second) = d.step(T0) else {
        panic!("a second accept")
    };
    d.listener = AcceptFn(no_stream as _);
    assert!(matches!(until_wait(&mut d)[..], [.., Step::Wait(_)]));
    assert!(matches!(until_wait(&mut d)[..], [Step::Wait(None)]));
    (d, first, second)
}

#[test]
fn the_express_lane_waits_for_the_operation_pending_and_the_visit_under_way() {
    let recv = |conn| Step::Recv {
        conn,
        outcome: Ok(1),
    };
    let send = |conn| Step::Send {
        conn,
        outcome: Ok(1),
    };
    // An accept pending (asked, not yet reported): the quiet connection's readiness is
    // queued, not served, until the accept's outcome is in.
    let (mut d, conn) = settled(readiness());
    d.server_mut().on_listener_ready();
    assert_eq!(d.server_mut().poll(T0), Action::Accept);
    script(&mut d, conn).reads.push(Ok(b"a".to_vec()));
    script(&mut d, conn).writes.push(Ok(1));
    assert_eq!(d.on_ready(T0, conn, true, true), Ok(None));
    assert_eq!(script(&mut d, conn).reads.len(), 1, "not read");
    d.server_mut()
        .on_accept_error(T0, nb::Error::WouldBlock)
        .unwrap();
    // The pass that asked for the accept ends with a look for events; the next serves
    // the connection.
    assert_eq!(until_wait(&mut d), [Step::Wait(Some(T0))]);
    assert_eq!(
        until_wait(&mut d),
        [recv(conn), send(conn), Step::Wait(None)]
    );
    assert_eq!(script(&mut d, conn).written, b"A");

    // A visit under way (another connection's read reported, its write not yet asked):
    // the quiet connection's readiness is queued, then served by the pass.
    let (mut d, first, second) = two_settled();
    script(&mut d, first).reads.push(Ok(b"a".to_vec()));
    script(&mut d, first).writes.push(Ok(1));
    d.server_mut().on_ready(first, true, true).unwrap();
    assert_eq!(d.step(T0), recv(first));
    script(&mut d, second).reads.push(Ok(b"b".to_vec()));
    script(&mut d, second).writes.push(Ok(1));
    assert_eq!(d.on_ready(T0, second, true, true), Ok(None));
    assert_eq!(script(&mut d, second).reads.len(), 1, "not read");
    // The visit ends, the pass with a look for events; the next pass serves the other.
    assert_eq!(until_wait(&mut d), [send(first), Step::Wait(Some(T0))]);
    assert_eq!(
        until_wait(&mut d),
        [recv(second), send(second), Step::Wait(None)]
    );
    assert_eq!(script(&mut d, first).written, b"A");
    assert_eq!(script(&mut d, second).written, b"B");
}

#[test]
fn the_express_lane_leaves_a_queued_connection_its_turn() {
    // Both connections on the run queue, the first ahead, between steps (no operation
    // pending, no visit under way): a readiness report of the second, otherwise quiet,
    // does not serve it ahead of the first.
    let (mut d, first, second) = two_settled();
    for (conn, byte) in [(first, b'a'), (second, b'b')] {
        script(&mut d, conn).reads.push(Ok(vec![byte]));
        script(&mut d, conn).writes.push(Ok(1));
        d.server_mut().on_ready(conn, true, true).unwrap();
    }
    assert_eq!(d.on_ready(T0, second, true, true), Ok(None));
    assert_eq!(script(&mut d, second).reads.len(), 1, "not read");
    let served: Vec<ConnId> = until_wait(&mut d)
        .iter()
        .filter_map(|step| match step {
            Step::Recv {
                conn,
                outcome: Ok(1),
            } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(served, [first, second], "in the queue's order");
    assert_eq!(script(&mut d, first).written, b"A");
    assert_eq!(script(&mut d, second).written, b"B");
}
