//! Unit tests of the server state machine: one section per rule of the contract.

use super::*;
use crate::transform::Uppercase;

const T0: Instant = Instant::ZERO;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A server whose passes accept one connection each, which keeps the expected sequences
/// short; [`server_as_configured`] keeps `accepts_per_pass`.
fn server(conns: usize, blocks: usize, block: usize, config: Config) -> Server<'static, Uppercase> {
    server_as_configured(
        conns,
        blocks,
        block,
        Config {
            accepts_per_pass: 1,
            ..config
        },
    )
}

fn server_as_configured(
    conns: usize,
    blocks: usize,
    block: usize,
    config: Config,
) -> Server<'static, Uppercase> {
    let slots = Box::leak(vec![Slot::EMPTY; conns].into_boxed_slice());
    let arena = Box::leak(vec![0u8; blocks * block].into_boxed_slice());
    Server::new(
        config,
        Storage::new(slots, arena, block).unwrap(),
        Uppercase,
    )
}

fn polling() -> Server<'static, Uppercase> {
    server(4, 4, 16, Config::default())
}

/// What `poll` asked for, without the borrow.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    Accept,
    Recv(ConnId, usize),
    Send(ConnId, Vec<u8>),
    Shutdown(ConnId),
    Probe(ConnId),
    Close(ConnId, CloseReason),
    Wait(Option<Instant>),
    Finished,
}

fn op(s: &mut Server<'static, Uppercase>, now: Instant) -> Op {
    match s.poll(now) {
        Action::Accept => Op::Accept,
        Action::Recv { conn, buf, .. } => Op::Recv(conn, buf.len()),
        Action::Send {
            conn,
            bytes,
            wrapped,
        } => Op::Send(conn, [bytes, wrapped].concat()),
        Action::Shutdown { conn } => Op::Shutdown(conn),
        Action::Probe { conn } => Op::Probe(conn),
        Action::Cancel { conn } | Action::CancelRecv { conn } => {
            panic!("a cancel of {conn} outside completion scheduling")
        }
        Action::Close { conn, reason } => Op::Close(conn, reason),
        Action::Wait { until } => Op::Wait(until),
        Action::Finished => Op::Finished,
    }
}

#[track_caller]
fn accept(s: &mut Server<'static, Uppercase>, now: Instant) -> ConnId {
    assert_eq!(op(s, now), Op::Accept);
    match s.on_accepted(now).unwrap() {
        Admission::Admitted(conn) => conn,
        Admission::Refused => panic!("refused"),
    }
}

/// Expects `Recv` on `conn` and delivers `data` (empty = end-of-stream).
#[track_caller]
fn recv(s: &mut Server<'static, Uppercase>, now: Instant, conn: ConnId, data: &[u8]) {
    match s.poll(now) {
        Action::Recv { conn: c, buf, .. } => {
            assert_eq!(c, conn);
            assert!(
                data.len() <= buf.len(),
                "{} bytes offered to a {} byte buffer",
                data.len(),
                buf.len()
            );
            buf[..data.len()].copy_from_slice(data);
        }
        other => panic!("expected Recv on {conn}, got {other:?}"),
    }
    s.on_recv(now, conn, Ok(data.len())).unwrap();
}

/// Expects `Recv` on `conn` and reports an outcome that carries no data.
#[track_caller]
fn recv_outcome(
    s: &mut Server<'static, Uppercase>,
    now: Instant,
    conn: ConnId,
    e: nb::Error<ErrorKind>,
) {
    assert!(matches!(op(s, now), Op::Recv(c, _) if c == conn));
    s.on_recv(now, conn, Err(e)).unwrap();
}

/// Expects `Send` of exactly `expected` on `conn`; reports `written` bytes written.
#[track_caller]
fn send(
    s: &mut Server<'static, Uppercase>,
    now: Instant,
    conn: ConnId,
    expected: &[u8],
    written: usize,
) {
    assert_eq!(op(s, now), Op::Send(conn, expected.to_vec()));
    s.on_send(now, conn, Ok(written)).unwrap();
}

#[track_caller]
fn send_outcome(
    s: &mut Server<'static, Uppercase>,
    now: Instant,
    conn: ConnId,
    e: nb::Error<ErrorKind>,
) {
    assert!(matches!(op(s, now), Op::Send(c, _) if c == conn));
    s.on_send(now, conn, Err(e)).unwrap();
}

/// Expects `Recv` on `conn` offering exactly `window` bytes, and delivers `data`.
#[track_caller]
fn recv_sized(
    s: &mut Server<'static, Uppercase>,
    now: Instant,
    conn: ConnId,
    window: usize,
    data: &[u8],
) {
    match s.poll(now) {
        Action::Recv { conn: c, buf, .. } => {
            assert_eq!((c, buf.len()), (conn, window));
            buf[..data.len()].copy_from_slice(data);
        }
        other => panic!("expected Recv on {conn}, got {other:?}"),
    }
    s.on_recv(now, conn, Ok(data.len())).unwrap();
}

#[track_caller]
fn accept_would_block(s: &mut Server<'static, Uppercase>, now: Instant) {
    assert_eq!(op(s, now), Op::Accept);
    s.on_accept_error(now, nb::Error::WouldBlock).unwrap();
}

#[track_caller]
fn wait(s: &mut Server<'static, Uppercase>, now: Instant) -> Option<Instant> {
    match op(s, now) {
        Op::Wait(until) => {
            assert!(
                until.is_none_or(|t| t >= now),
                "Wait in the past: {until:?} at {now}"
            );
            if until == Some(now) {
                assert_eq!(
                    s.config().scheduling,
                    Scheduling::Readiness,
                    "only readiness passes poll for events between them"
                );
            }
            until
        }
        other => panic!("expected Wait, got {other:?}"),
    }
}

fn balanced(s: &Server<'static, Uppercase>) {
    let st = s.stats();
    assert_eq!(
        st.bytes_in,
        st.bytes_out + st.bytes_dropped + st.bytes_buffered()
    );
}

/// Admits `n` connections (every other operation would-blocks), then runs to the end of
/// the pass: the next `poll` starts a new pass, with `Accept`.
#[track_caller]
fn connect(s: &mut Server<'static, Uppercase>, now: Instant, n: usize) -> Vec<ConnId> {
    let mut conns = Vec::new();
    loop {
        match op(s, now) {
            Op::Accept if conns.len() < n => match s.on_accepted(now).unwrap() {
                Admission::Admitted(c) => conns.push(c),
                Admission::Refused => panic!("refused"),
            },
            Op::Accept => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Op::Recv(c, _) => s.on_recv(now, c, Err(nb::Error::WouldBlock)).unwrap(),
            Op::Wait(_) if conns.len() == n => return conns,
            Op::Wait(_) => {}
            other => panic!("while connecting: {other:?}"),
        }
    }
}

/// Runs until the server waits: each connection in `data` reads its bytes once, every
/// other read and accept would-blocks, every write completes. Returns the closes.
#[track_caller]
fn round(
    s: &mut Server<'static, Uppercase>,
    now: Instant,
    data: &[(ConnId, &[u8])],
) -> Vec<(ConnId, CloseReason)> {
    let mut unread: Vec<(ConnId, Vec<u8>)> = data.iter().map(|(c, d)| (*c, d.to_vec())).collect();
    let mut closes = Vec::new();
    for _ in 0..10_000 {
        match s.poll(now) {
            Action::Accept => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Action::Recv { conn, buf, .. } => {
                let outcome = match unread.iter_mut().find(|(c, _)| *c == conn) {
                    Some((_, d)) if !d.is_empty() => {
                        let n = d.len().min(buf.len());
                        buf[..n].copy_from_slice(&d[..n]);
                        d.drain(..n);
                        Ok(n)
                    }
                    _ => Err(nb::Error::WouldBlock),
                };
                s.on_recv(now, conn, outcome).unwrap();
            }
            Action::Send {
                conn,
                bytes,
                wrapped,
            } => {
                let n = bytes.len() + wrapped.len();
                s.on_send(now, conn, Ok(n)).unwrap();
            }
            Action::Close { conn, reason } => closes.push((conn, reason)),
            // As a transport that cannot tell: lingering lasts until the peer's FIN.
            Action::Probe { conn } => s.on_probe(now, conn, Err(ErrorKind::Unsupported)).unwrap(),
            Action::Shutdown { .. } => {}
            Action::Cancel { conn } | Action::CancelRecv { conn } => {
                panic!("a cancel of {conn} outside completion scheduling")
            }
            Action::Wait { .. } | Action::Finished => return closes,
        }
    }
    panic!("no Wait after 10000 operations: the server spins");
}

// ---- echo and half-close ----------------------------------------------------------------

#[test]
fn echoes_uppercase_then_half_closes() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"hello, World!");
    send(&mut s, T0, c, b"HELLO, WORLD!", 13);
    recv(&mut s, T0, c, b"");
    assert_eq!(s.conn_state(c), Ok(ConnState::PeerClosed));
    assert_eq!(op(&mut s, T0), Op::Shutdown(c));
    assert_eq!(op(&mut s, T0), Op::Close(c, CloseReason::Done));
    let st = *s.stats();
    assert_eq!(
        (st.accepted, st.closed, st.active, st.peer_closed),
        (1, 1, 0, 1)
    );
    assert_eq!((st.bytes_in, st.bytes_out, st.bytes_dropped), (13, 13, 0));
    assert_eq!(s.buffers(), (4, 0));
}

#[test]
fn flushes_everything_before_shutdown_after_peer_eof() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"abc");
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    recv(&mut s, T0, c, b"def");
    recv(&mut s, T0, c, b"");
    // The pass ends (the connection cannot write); the next pass flushes, then FIN.
    accept_would_block(&mut s, T0);
    send(&mut s, T0, c, b"ABCDEF", 6);
    assert_eq!(op(&mut s, T0), Op::Shutdown(c));
    assert_eq!(op(&mut s, T0), Op::Close(c, CloseReason::Done));
}

// ---- partial writes, would-block, backpressure, the ring ----------------------------------

#[test]
fn partial_writes_keep_their_offset() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"abcdef");
    send(&mut s, T0, c, b"ABCDEF", 2);
    send(&mut s, T0, c, b"CDEF", 1);
    send(&mut s, T0, c, b"DEF", 3);
    assert_eq!(s.pending_output(c), Ok(0));
}

#[test]
fn a_full_buffer_stops_reads_until_sends_drain_it() {
    let mut s = polling(); // 16-byte buffers, visit budget 4
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"0123456789");
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    // Only the 6 bytes of free space are offered.
    recv_sized(&mut s, T0, c, 6, b"abcdef");
    assert_eq!(s.pending_output(c), Ok(16));
    // Full: the next pass retries the send only, never a read; without progress it waits.
    accept_would_block(&mut s, T0);
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    wait(&mut s, T0);
    accept_would_block(&mut s, T0);
    // The peer drains 4 bytes; the 4 free bytes at the ring's start are offered.
    send(&mut s, T0, c, b"0123456789ABCDEF", 4);
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    recv_sized(&mut s, T0, c, 4, b"wxyz");
    accept_would_block(&mut s, T0);
    // The pending output now wraps around the ring: both parts in one Send.
    send(&mut s, T0, c, b"456789ABCDEFWXYZ", 16);
    assert_eq!(s.stats().bytes_out, 20);
    balanced(&s);
}

#[test]
fn the_ring_wraps_and_keeps_order() {
    let mut s = polling(); // 16-byte ring, visit budget 4
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"abcdefghijkl");
    send(&mut s, T0, c, b"ABCDEFGHIJKL", 10); // head 10, 2 pending
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    recv_sized(&mut s, T0, c, 4, b"mnop"); // [12, 16)
    accept_would_block(&mut s, T0); // budget spent: next pass
    send(&mut s, T0, c, b"KLMNOP", 1); // pending runs to the ring's end; head 11
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    recv_sized(&mut s, T0, c, 11, b"qrstuvwxyz"); // wrapped: [0, 11)
    recv_sized(&mut s, T0, c, 1, b""); // [10, 11); end-of-stream
    assert_eq!(s.conn_state(c), Ok(ConnState::PeerClosed));
    accept_would_block(&mut s, T0);
    // Pending output wraps around the ring: one Send offers both parts.
    match s.poll(T0) {
        Action::Send { bytes, wrapped, .. } => {
            assert_eq!((bytes, wrapped), (&b"LMNOP"[..], &b"QRSTUVWXYZ"[..]))
        }
        other => panic!("{other:?}"),
    }
    // A write that ends inside the wrapped part keeps the offset across the wrap.
    s.on_send(T0, c, Ok(7)).unwrap();
    send(&mut s, T0, c, b"STUVWXYZ", 8);
    assert_eq!(op(&mut s, T0), Op::Shutdown(c));
    balanced(&s);
}

#[test]
fn idle_connections_hold_no_buffer() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(s.buffers(), (4, 0));
    accept_would_block(&mut s, T0);
    recv(&mut s, T0, c, b"x");
    assert_eq!(s.buffers(), (4, 1));
    send(&mut s, T0, c, b"X", 1);
    // Drained, it keeps its buffer for the read that follows...
    assert_eq!(s.buffers(), (4, 1));
    // ...and gives it back when that read finds nothing: idle, it holds none.
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(s.buffers(), (4, 0));
}

#[test]
fn connections_wait_for_a_buffer_when_all_are_lent() {
    let mut s = server(2, 1, 16, Config::default());
    let [a, b] = connect(&mut s, T0, 2)[..] else {
        unreachable!()
    };
    // a holds the only buffer with output its peer does not read.
    accept_would_block(&mut s, T0);
    recv(&mut s, T0, a, b"aaa");
    send_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    // b gets no buffer, so nothing is asked of it.
    accept_would_block(&mut s, T0);
    send_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    wait(&mut s, T0);
    accept_would_block(&mut s, T0);
    // a drains: its buffer goes to b, first in line, not back to a (which could take it
    // again at once and keep b waiting as long as it has data).
    send(&mut s, T0, a, b"AAA", 3);
    recv(&mut s, T0, b, b"bb");
    send(&mut s, T0, b, b"BB", 2);
    // Now a, which asked for a buffer after b, has it.
    accept_would_block(&mut s, T0);
    recv(&mut s, T0, a, b"a");
    assert_eq!(s.buffers(), (1, 1));
}

/// Two connections, `small` buffers of 16 bytes and one large buffer of 64.
fn two_sizes(small: usize) -> Server<'static, Uppercase> {
    let slots = Box::leak(vec![Slot::EMPTY; 2].into_boxed_slice());
    let small = Box::leak(vec![0u8; small * 16].into_boxed_slice());
    let large = Box::leak(vec![0u8; 64].into_boxed_slice());
    let storage = Storage::new(slots, small, 16)
        .unwrap()
        .with_large_buffers(large, 64)
        .unwrap();
    let config = Config {
        accepts_per_pass: 1,
        ..Config::default()
    };
    Server::new(config, storage, Uppercase)
}

#[test]
fn buffers_follow_the_load_small_for_messages_large_for_bulk() {
    let mut s = two_sizes(2);
    assert_eq!((s.buffer_size(), s.large_buffer_size()), (16, Some(64)));
    assert_eq!(s.buffers(), (3, 0));
    let c = accept(&mut s, T0);
    // A first read gets a small buffer, and fills it: c sends in bulk.
    recv_sized(&mut s, T0, c, 16, &[b'a'; 16]);
    assert_eq!(s.buffer_capacity(c), Ok(16));
    send(&mut s, T0, c, &[b'A'; 16], 16);
    assert_eq!(
        s.buffer_capacity(c),
        Ok(0),
        "an empty buffer goes back at once"
    );
    // So its next buffer is a large one, where a message that does not fill a small
    // buffer's worth...
    recv_sized(&mut s, T0, c, 64, b"hello");
    assert_eq!(s.buffer_capacity(c), Ok(64));
    send(&mut s, T0, c, b"HELLO", 5);
    // ...makes it a small talker again (next pass: the visit's budget is spent).
    accept_would_block(&mut s, T0);
    recv_sized(&mut s, T0, c, 16, b"hi");
    send(&mut s, T0, c, b"HI", 2);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(s.buffers(), (3, 0));
}

#[test]
fn a_bulk_connection_takes_a_small_buffer_when_no_large_one_is_free() {
    let mut s = two_sizes(1);
    let [a, b] = connect(&mut s, T0, 2)[..] else {
        unreachable!()
    };
    // a fills the small buffer, so it gets the large one next, and keeps it (its peer
    // does not read).
    accept_would_block(&mut s, T0);
    recv_sized(&mut s, T0, a, 16, &[b'a'; 16]);
    send(&mut s, T0, a, &[b'A'; 16], 16);
    recv_sized(&mut s, T0, a, 64, &[b'a'; 20]);
    send_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    // b sends in bulk too, but the only large buffer is a's: b gets the small one.
    recv_sized(&mut s, T0, b, 16, &[b'b'; 16]);
    send(&mut s, T0, b, &[b'B'; 16], 16);
    recv_sized(&mut s, T0, b, 16, &[b'b'; 16]);
    assert_eq!(
        (s.buffer_capacity(a), s.buffer_capacity(b)),
        (Ok(64), Ok(16))
    );
    assert_eq!(s.buffers(), (2, 2));
}

#[test]
fn large_buffers_must_be_larger() {
    let mut slots = [Slot::EMPTY; 1];
    let (mut small, mut large) = ([0u8; 64], [0u8; 64]);
    let err = Storage::new(&mut slots, &mut small, 32)
        .unwrap()
        .with_large_buffers(&mut large, 32)
        .unwrap_err();
    assert_eq!(err, StorageError::LargeNotLarger);
}

#[test]
fn abort_drops_a_connection_at_once_and_resets_it() {
    let mut s = polling();
    let [a, b] = connect(&mut s, T0, 2)[..] else {
        unreachable!()
    };
    accept_would_block(&mut s, T0);
    recv(&mut s, T0, a, b"lost");
    send_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    // Asked to read a again, the adapter aborts it instead (say, it could not register it).
    assert!(matches!(op(&mut s, T0), Op::Recv(c, _) if c == a));
    s.abort(a).unwrap();
    assert_eq!(
        s.on_recv(T0, a, Ok(1)),
        Err(ReportError::Unexpected),
        "the read asked for is cancelled"
    );
    assert_eq!(op(&mut s, T0), Op::Close(a, CloseReason::Aborted));
    assert!(CloseReason::Aborted.is_abortive());
    let st = *s.stats();
    assert_eq!((st.aborted, st.bytes_dropped, st.active), (1, 4, 1));
    assert_eq!(s.abort(a), Err(ReportError::StaleConn(a)));
    // b is unaffected.
    recv(&mut s, T0, b, b"kept");
    send(&mut s, T0, b, b"KEPT", 4);
    balanced(&s);
}

#[test]
fn close_finishes_a_connection_in_order() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"last");
    s.close(c).unwrap();
    // No more reads: the pending bytes go out, then FIN, then it lingers for the peer's.
    send(&mut s, T0, c, b"LAST", 4);
    assert_eq!(op(&mut s, T0), Op::Shutdown(c));
    assert_eq!(s.conn_state(c), Ok(ConnState::Lingering));
    assert_eq!(op(&mut s, T0), Op::Probe(c));
    s.on_probe(T0, c, Ok(5)).unwrap();
    s.close(c).unwrap();
    assert_eq!(
        s.conn_state(c),
        Ok(ConnState::Lingering),
        "already on its way out"
    );
    recv(&mut s, T0, c, b"");
    assert_eq!(op(&mut s, T0), Op::Close(c, CloseReason::Done));
    assert_eq!(s.stats().aborted, 0);
}

#[test]
fn only_giving_up_resets() {
    for reason in [CloseReason::Forced, CloseReason::Aborted] {
        assert!(reason.is_abortive(), "{reason}");
    }
    for reason in [
        CloseReason::Done,
        CloseReason::Refused,
        CloseReason::TimedOut,
        CloseReason::Failed(ErrorKind::ConnectionReset),
    ] {
        assert!(!reason.is_abortive(), "{reason}");
    }
}

#[test]
fn polling_passes_accept_up_to_their_budget_then_serve() {
    let config = Config {
        accepts_per_pass: 2,
        ..Config::default()
    };
    let mut s = server_as_configured(4, 4, 16, config);
    let a = accept(&mut s, T0);
    let b = accept(&mut s, T0);
    // The budget is spent: what was admitted is served before the next accept.
    recv(&mut s, T0, a, b"a");
    send(&mut s, T0, a, b"A", 1);
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, b, nb::Error::WouldBlock);
    let c = accept(&mut s, T0);
    accept_would_block(&mut s, T0);
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, b, nb::Error::WouldBlock);
    recv(&mut s, T0, c, b"c");
}

// ---- failures -----------------------------------------------------------------------------

#[test]
fn a_reset_drops_that_connection_only() {
    let mut s = polling();
    let a = accept(&mut s, T0);
    recv(&mut s, T0, a, b"lost");
    send_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, a, nb::Error::Other(ErrorKind::ConnectionReset));
    assert_eq!(
        op(&mut s, T0),
        Op::Close(a, CloseReason::Failed(ErrorKind::ConnectionReset))
    );
    let b = accept(&mut s, T0);
    assert_eq!(b.index(), a.index(), "the slot is reused");
    assert_ne!(b, a, "under a new generation");
    recv(&mut s, T0, b, b"kept");
    send(&mut s, T0, b, b"KEPT", 4);
    recv_outcome(&mut s, T0, b, nb::Error::WouldBlock);
    let st = *s.stats();
    assert_eq!((st.failed, st.bytes_dropped, st.bytes_out), (1, 4, 4));
    assert_eq!(s.buffers(), (4, 0));
    balanced(&s);
}

#[test]
fn broken_pipe_and_write_zero_close() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"abc");
    send_outcome(&mut s, T0, c, nb::Error::Other(ErrorKind::BrokenPipe));
    assert_eq!(
        op(&mut s, T0),
        Op::Close(c, CloseReason::Failed(ErrorKind::BrokenPipe))
    );
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"abc");
    send(&mut s, T0, c, b"ABC", 0);
    assert_eq!(
        op(&mut s, T0),
        Op::Close(c, CloseReason::Failed(ErrorKind::WriteZero))
    );
}

#[test]
fn interrupted_is_retried_not_fatal() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv_outcome(&mut s, T0, c, nb::Error::Other(ErrorKind::Interrupted));
    recv(&mut s, T0, c, b"a");
    send(&mut s, T0, c, b"A", 1);
    assert_eq!(s.stats().failed, 0);
}

// ---- capacity and accept errors -------------------------------------------------------------

#[test]
fn refuses_cleanly_at_capacity_and_admits_again_after_a_close() {
    let mut s = server(2, 2, 16, Config::default());
    let [a, b] = connect(&mut s, T0, 2)[..] else {
        unreachable!()
    };
    assert_eq!(op(&mut s, T0), Op::Accept);
    assert_eq!(s.on_accepted(T0), Ok(Admission::Refused));
    assert_eq!((s.stats().refused, s.stats().active), (1, 2));
    recv_outcome(&mut s, T0, a, nb::Error::Other(ErrorKind::ConnectionReset));
    assert_eq!(
        op(&mut s, T0),
        Op::Close(a, CloseReason::Failed(ErrorKind::ConnectionReset))
    );
    recv_outcome(&mut s, T0, b, nb::Error::WouldBlock);
    let c = accept(&mut s, T0);
    assert_eq!(c.index(), a.index());
    assert_eq!(
        (s.stats().accepted, s.stats().refused, s.stats().active),
        (3, 1, 2)
    );
}

#[test]
fn accept_errors_back_off_exponentially_without_spinning() {
    let mut s = polling();
    let mut now = T0;
    let mut accepts = Vec::new();
    let mut polls = 0;
    while accepts.len() < 5 {
        polls += 1;
        match op(&mut s, now) {
            Op::Accept => {
                accepts.push(now);
                s.on_accept_error(now, nb::Error::Other(ErrorKind::Other))
                    .unwrap();
            }
            Op::Wait(Some(until)) => {
                assert!(until > now);
                now = until;
            }
            other => panic!("{other:?}"),
        }
    }
    let gaps: Vec<u64> = accepts
        .windows(2)
        .map(|w| (w[1] - w[0]).total_millis())
        .collect();
    assert_eq!(gaps, [10, 20, 40, 80]);
    assert!(
        polls < 60,
        "{polls} polls for 150 ms of back-off: no spinning"
    );
    assert_eq!(s.stats().accept_errors, 5);
    // A success resets the back-off.
    while op(&mut s, now) != Op::Accept {
        now = now + ms(1);
    }
    assert!(matches!(s.on_accepted(now), Ok(Admission::Admitted(_))));
    assert_eq!(s.accept_backoff, Duration::ZERO);
}

#[test]
fn an_aborted_connection_is_counted_and_accepting_goes_on_at_once() {
    let mut s = server_as_configured(4, 4, 16, Config::default());
    assert_eq!(op(&mut s, T0), Op::Accept);
    s.on_accept_error(T0, nb::Error::Other(ErrorKind::ConnectionAborted))
        .unwrap();
    // No back-off: the next accept is in the same pass.
    let c = accept(&mut s, T0);
    assert_eq!(s.stats().accept_errors, 1);
    // Out of descriptors does back off.
    assert_eq!(op(&mut s, T0), Op::Accept);
    s.on_accept_error(T0, nb::Error::Other(ErrorKind::Other))
        .unwrap();
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    // The pass made progress (c was admitted): another pass, without accepting.
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, T0), Some(T0 + Duration::from_micros(50)));
    assert_eq!(s.stats().accept_errors, 2);
    recv_outcome(&mut s, T0 + ms(1), c, nb::Error::WouldBlock);
    assert_eq!(
        op(&mut s, T0 + ms(10)),
        Op::Accept,
        "after the 10 ms back-off"
    );
}

#[test]
fn accept_back_off_caps_and_ends_early_when_a_descriptor_is_freed() {
    let config = Config {
        accept_backoff_max: ms(40),
        ..Config::default()
    };
    let mut s = server(4, 4, 16, config);
    let c = accept(&mut s, T0);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    for _ in 0..5 {
        // Fail; the next accept is not before now + back-off.
        while op(&mut s, T0) != Op::Accept {}
        s.on_accept_error(T0, nb::Error::Other(ErrorKind::Other))
            .unwrap();
        s.accept_retry_at = T0;
    }
    assert_eq!(s.accept_backoff, ms(40));
    s.accept_retry_at = T0 + ms(40);
    // The connection fails and is closed: accept is retried at once.
    recv_outcome(&mut s, T0, c, nb::Error::Other(ErrorKind::ConnectionReset));
    assert!(matches!(op(&mut s, T0), Op::Close(..)));
    assert_eq!(op(&mut s, T0), Op::Accept);
}

// ---- timers -----------------------------------------------------------------------------

#[test]
fn idle_connections_time_out_and_active_ones_do_not() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(10)),
        ..Config::default()
    };
    let mut s = server(4, 4, 16, config);
    let [idle, busy] = connect(&mut s, T0, 2)[..] else {
        unreachable!()
    };
    for secs in [4, 8] {
        let closes = round(&mut s, T0 + Duration::from_secs(secs), &[(busy, b"b")]);
        assert_eq!(closes, []);
    }
    let closes = round(&mut s, T0 + Duration::from_secs(10), &[]);
    assert_eq!(closes, [(idle, CloseReason::TimedOut)]);
    assert_eq!(round(&mut s, T0 + Duration::from_secs(17), &[]), []);
    assert_eq!(
        round(&mut s, T0 + Duration::from_secs(18), &[]),
        [(busy, CloseReason::TimedOut)]
    );
    assert_eq!(s.stats().timeouts, 2);
    assert_eq!(s.conn_state(idle), Err(ReportError::StaleConn(idle)));
}

#[test]
fn the_wait_covers_the_idle_deadline_exactly() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(10)),
        idle_backoff_max: Duration::from_secs(60),
        ..Config::default()
    };
    let mut s = server(1, 1, 16, config);
    let [c] = connect(&mut s, T0, 1)[..] else {
        unreachable!()
    };
    assert_eq!(round(&mut s, T0 + Duration::from_secs(9), &[(c, b"a")]), []);
    // The deadline moved to 19 s; the growing idle back-off never sleeps past it.
    let mut now = T0 + Duration::from_secs(9);
    loop {
        match op(&mut s, now) {
            Op::Accept => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Op::Recv(..) => s.on_recv(now, c, Err(nb::Error::WouldBlock)).unwrap(),
            Op::Wait(Some(until)) => {
                assert!(
                    until > now && until <= T0 + Duration::from_secs(19),
                    "{until}"
                );
                now = until;
            }
            Op::Close(conn, reason) => {
                assert_eq!(
                    (conn, reason, now),
                    (c, CloseReason::TimedOut, T0 + Duration::from_secs(19))
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_idle_timeout_can_be_off() {
    let config = Config {
        idle_timeout: None,
        ..Config::default()
    };
    let mut s = server(1, 1, 16, config);
    let c = accept(&mut s, T0);
    let later = Instant::from_secs(1_000_000);
    recv_outcome(&mut s, later, c, nb::Error::WouldBlock);
    assert_eq!(s.conn_state(c), Ok(ConnState::Open));
}

#[test]
fn an_idle_polling_server_backs_off_to_the_cap() {
    let mut s = polling();
    let mut now = T0;
    let mut waits = Vec::new();
    for _ in 0..12 {
        accept_would_block(&mut s, now);
        let until = wait(&mut s, now).unwrap();
        waits.push((until - now).total_micros());
        now = until;
    }
    assert_eq!(
        waits,
        [50, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000, 10_000]
    );
    // Progress resets the back-off.
    let c = accept(&mut s, now);
    recv_outcome(&mut s, now, c, nb::Error::WouldBlock);
    accept_would_block(&mut s, now);
    recv_outcome(&mut s, now, c, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, now), Some(now + Duration::from_micros(50)));
}

#[test]
fn the_wait_stops_at_the_next_idle_deadline() {
    let config = Config {
        idle_timeout: Some(ms(1)),
        idle_backoff_max: Duration::from_secs(1),
        ..Config::default()
    };
    let mut s = server(1, 1, 16, config);
    let c = accept(&mut s, T0);
    let mut now = T0;
    loop {
        match op(&mut s, now) {
            Op::Recv(..) => s.on_recv(now, c, Err(nb::Error::WouldBlock)).unwrap(),
            Op::Accept => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Op::Wait(Some(until)) => {
                assert!(until > now && until <= T0 + ms(1));
                now = until;
            }
            Op::Close(_, reason) => {
                assert_eq!((reason, now), (CloseReason::TimedOut, T0 + ms(1)));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

// ---- fairness ------------------------------------------------------------------------------

#[test]
fn a_fast_connection_cannot_starve_the_others() {
    let config = Config {
        visit_budget: 2,
        ..Config::default()
    };
    let mut s = server(2, 2, 16, config);
    let [fast, slow] = connect(&mut s, T0, 2)[..] else {
        unreachable!()
    };
    // `fast` always has data, but after its budget of 2 operations it is `slow`'s turn.
    accept_would_block(&mut s, T0);
    recv(&mut s, T0, fast, b"f");
    send(&mut s, T0, fast, b"F", 1);
    recv(&mut s, T0, slow, b"s");
    send(&mut s, T0, slow, b"S", 1);
    assert_eq!(op(&mut s, T0), Op::Accept, "a new pass");
    s.on_accept_error(T0, nb::Error::WouldBlock).unwrap();
    recv(&mut s, T0, fast, b"f");
}

// ---- graceful shutdown --------------------------------------------------------------------

#[test]
fn shutdown_flushes_lingers_and_finishes() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"in flight");
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    s.begin_shutdown(T0 + Duration::from_secs(5));
    assert_eq!(s.conn_state(c), Ok(ConnState::Draining));
    // No more reads of new data, no accepts: flush, FIN, then read to the peer's FIN.
    send(&mut s, T0, c, b"IN FLIGHT", 9);
    assert_eq!(op(&mut s, T0), Op::Shutdown(c));
    assert_eq!(s.conn_state(c), Ok(ConnState::Lingering));
    // The transport cannot tell whether the output was delivered: wait for the peer.
    assert_eq!(op(&mut s, T0), Op::Probe(c));
    s.on_probe(T0, c, Err(ErrorKind::Unsupported)).unwrap();
    recv(&mut s, T0, c, b"late");
    recv(&mut s, T0, c, b"");
    assert_eq!(op(&mut s, T0), Op::Close(c, CloseReason::Done));
    assert_eq!(op(&mut s, T0), Op::Finished);
    assert_eq!(op(&mut s, T0), Op::Finished);
    let st = *s.stats();
    assert_eq!(
        (st.bytes_in, st.bytes_out, st.bytes_discarded, st.forced),
        (9, 9, 4, 0)
    );
}

/// A readiness-mode server whose listener is ready.
fn ready_server(config: Config) -> Server<'static, Uppercase> {
    let mut s = server(
        4,
        4,
        16,
        Config {
            scheduling: Scheduling::Readiness,
            ..config
        },
    );
    s.on_listener_ready();
    s
}

/// The next operation that is not a read or an accept, which all would-block.
#[track_caller]
fn quiet(s: &mut Server<'static, Uppercase>, now: Instant) -> Op {
    for _ in 0..100 {
        match op(s, now) {
            Op::Accept => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Op::Recv(conn, _) => s.on_recv(now, conn, Err(nb::Error::WouldBlock)).unwrap(),
            // The end of a pass that left work: the driver looks for events and goes on.
            Op::Wait(Some(until)) if until == now => {}
            other => return other,
        }
    }
    panic!("only reads and accepts");
}

/// Lingers through `Shutdown` and the first probe, which reports `unacked` bytes in flight.
#[track_caller]
fn linger(s: &mut Server<'static, Uppercase>, now: Instant, unacked: usize) -> ConnId {
    let c = accept(s, now);
    recv(s, now, c, b"bye");
    s.close(c).unwrap();
    send(s, now, c, b"BYE", 3);
    assert_eq!(op(s, now), Op::Shutdown(c));
    assert_eq!(op(s, now), Op::Probe(c));
    s.on_probe(now, c, Ok(unacked)).unwrap();
    c
}

#[test]
fn lingering_ends_once_the_output_is_acknowledged() {
    let mut s = ready_server(Config::default());
    let c = linger(&mut s, T0, 4);
    // The peer keeps its side open and silent: without the probe it would linger until
    // its idle timeout. Probes come back after 1, then 2 ms ...
    assert_eq!(quiet(&mut s, T0), Op::Wait(Some(T0 + ms(1))));
    assert_eq!(quiet(&mut s, T0 + ms(1)), Op::Probe(c));
    s.on_probe(T0 + ms(1), c, Ok(1)).unwrap();
    assert_eq!(s.conn_state(c), Ok(ConnState::Lingering));
    assert_eq!(quiet(&mut s, T0 + ms(1)), Op::Wait(Some(T0 + ms(3))));
    // ... and not before their time.
    assert_eq!(quiet(&mut s, T0 + ms(2)), Op::Wait(Some(T0 + ms(3))));
    assert_eq!(quiet(&mut s, T0 + ms(3)), Op::Probe(c));
    // Everything and the FIN acknowledged: closed in order, nothing at stake.
    s.on_probe(T0 + ms(3), c, Ok(0)).unwrap();
    assert_eq!(op(&mut s, T0 + ms(3)), Op::Close(c, CloseReason::Done));
    assert_eq!(s.stats().bytes_unacked, 0);
    // Nobody left to probe: no timer.
    assert_eq!(quiet(&mut s, T0 + ms(3)), Op::Wait(None));
}

#[test]
fn probe_rounds_back_off_to_their_cap_and_stop_when_nobody_waits() {
    let mut s = ready_server(Config {
        idle_timeout: None,
        probe_backoff_min: ms(1),
        probe_backoff_max: ms(4),
        ..Config::default()
    });
    let c = linger(&mut s, T0, 9);
    let mut now = T0;
    let mut pauses = Vec::new();
    for _ in 0..5 {
        let Op::Wait(Some(until)) = quiet(&mut s, now) else {
            panic!("expected a timed wait")
        };
        pauses.push((until - now).total_micros() / 1000);
        now = until;
        assert_eq!(quiet(&mut s, now), Op::Probe(c));
        s.on_probe(now, c, Ok(9)).unwrap();
    }
    assert_eq!(pauses, [1, 2, 4, 4, 4]);
    // The peer's FIN ends it too, and then nothing is probed any more.
    s.on_ready(c, true, false).unwrap();
    assert_eq!(quiet(&mut s, now), Op::Wait(Some(now + ms(4))));
    s.on_ready(c, true, false).unwrap();
    recv(&mut s, now, c, b"");
    assert_eq!(op(&mut s, now), Op::Close(c, CloseReason::Done));
    assert_eq!(quiet(&mut s, now), Op::Wait(None));
}

#[test]
fn a_transport_that_cannot_tell_is_probed_once() {
    let mut s = ready_server(Config::default());
    let c = accept(&mut s, T0);
    s.close(c).unwrap();
    assert_eq!(op(&mut s, T0), Op::Shutdown(c));
    assert_eq!(op(&mut s, T0), Op::Probe(c));
    s.on_probe(T0, c, Err(ErrorKind::Unsupported)).unwrap();
    let idle = T0 + Config::default().idle_timeout.unwrap();
    assert_eq!(quiet(&mut s, T0), Op::Wait(Some(idle)));
    // A failed probe fails the connection like a failed read.
    let mut s = ready_server(Config::default());
    let c = linger(&mut s, T0, 1);
    assert_eq!(quiet(&mut s, T0), Op::Wait(Some(T0 + ms(1))));
    assert_eq!(quiet(&mut s, T0 + ms(1)), Op::Probe(c));
    s.on_probe(T0 + ms(1), c, Err(ErrorKind::ConnectionReset))
        .unwrap();
    assert_eq!(
        op(&mut s, T0 + ms(1)),
        Op::Close(c, CloseReason::Failed(ErrorKind::ConnectionReset))
    );
}

#[test]
fn a_probe_is_reported_on_the_connection_it_named() {
    let mut s = ready_server(Config::default());
    let c = accept(&mut s, T0);
    assert_eq!(s.on_probe(T0, c, Ok(0)), Err(ReportError::Unexpected));
    s.close(c).unwrap();
    assert_eq!(op(&mut s, T0), Op::Shutdown(c));
    assert_eq!(op(&mut s, T0), Op::Probe(c));
    let stale = ConnId {
        index: c.index,
        generation: c.generation + 1,
    };
    assert_eq!(
        s.on_probe(T0, stale, Ok(0)),
        Err(ReportError::StaleConn(stale))
    );
    // Aborting cancels the probe asked for.
    s.abort(c).unwrap();
    assert_eq!(s.on_probe(T0, c, Ok(0)), Err(ReportError::Unexpected));
    assert_eq!(op(&mut s, T0), Op::Close(c, CloseReason::Aborted));
}

#[test]
fn the_deadline_counts_what_was_still_unacknowledged() {
    let mut s = ready_server(Config::default());
    let c = linger(&mut s, T0, 7);
    s.begin_shutdown(T0 + ms(10));
    let mut now = T0;
    loop {
        match op(&mut s, now) {
            Op::Probe(conn) => s.on_probe(now, conn, Ok(7)).unwrap(),
            Op::Recv(conn, _) => s.on_recv(now, conn, Err(nb::Error::WouldBlock)).unwrap(),
            Op::Accept => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Op::Wait(Some(until)) => {
                assert!(until <= T0 + ms(10), "never past the deadline");
                now = until;
            }
            Op::Close(conn, reason) => {
                assert_eq!((conn, reason, now), (c, CloseReason::Forced, T0 + ms(10)));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(op(&mut s, now), Op::Finished);
    let st = *s.stats();
    assert_eq!((st.forced, st.bytes_unacked, st.bytes_dropped), (1, 7, 0));
}

#[test]
fn a_shutdown_deadline_of_now_forces_at_once() {
    // Polls at one `now` run the timers once; a deadline set at that same `now` must still
    // be seen by the next poll.
    let mut s = ready_server(Config::default());
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"stuck");
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(
        quiet(&mut s, T0),
        Op::Wait(Some(T0 + Config::default().idle_timeout.unwrap()))
    );
    s.begin_shutdown(T0);
    assert_eq!(op(&mut s, T0), Op::Close(c, CloseReason::Forced));
    assert_eq!(op(&mut s, T0), Op::Finished);
}

#[test]
fn shutdown_forces_closes_at_the_deadline() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv(&mut s, T0, c, b"stuck");
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    let deadline = T0 + Duration::from_secs(5);
    s.begin_shutdown(deadline);
    // The peer never reads: sends would-block, the server sleeps, never past the deadline.
    let mut now = T0;
    for polls in 0.. {
        assert!(polls < 2_000, "spinning");
        match op(&mut s, now) {
            Op::Send(conn, bytes) => {
                assert_eq!((conn, &bytes[..]), (c, &b"STUCK"[..]));
                s.on_send(now, c, Err(nb::Error::WouldBlock)).unwrap();
            }
            Op::Wait(Some(until)) => {
                assert!(until > now && until <= deadline);
                now = until;
            }
            Op::Close(conn, reason) => {
                assert_eq!((conn, reason, now), (c, CloseReason::Forced, deadline));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(op(&mut s, now), Op::Finished);
    let st = *s.stats();
    assert_eq!((st.forced, st.bytes_dropped), (1, 5));
    balanced(&s);
}

#[test]
fn shutdown_with_no_connections_finishes_at_once() {
    let mut s = polling();
    s.begin_shutdown(T0 + Duration::from_secs(5));
    assert_eq!(op(&mut s, T0), Op::Finished);
}

// ---- stale ids and caller mistakes -----------------------------------------------------------

#[test]
fn stale_ids_and_mismatched_reports_are_errors_not_panics() {
    let mut s = polling();
    let c = accept(&mut s, T0);
    recv_outcome(&mut s, T0, c, nb::Error::Other(ErrorKind::ConnectionReset));
    assert!(matches!(op(&mut s, T0), Op::Close(..)));
    assert_eq!(s.conn_state(c), Err(ReportError::StaleConn(c)));
    assert_eq!(s.on_ready(c, true, true), Err(ReportError::StaleConn(c)));
    assert_eq!(s.on_recv(T0, c, Ok(1)), Err(ReportError::StaleConn(c)));
    let unknown = ConnId {
        index: 99,
        generation: 0,
    };
    assert_eq!(
        s.pending_output(unknown),
        Err(ReportError::StaleConn(unknown))
    );

    let c = accept(&mut s, T0);
    assert_eq!(s.conn_id(c.index()), Some(c));
    assert_eq!(s.conn_id(99), None);
    assert_eq!(s.on_send(T0, c, Ok(1)), Err(ReportError::Unexpected));
    assert_eq!(s.on_accepted(T0), Err(ReportError::Unexpected));
    assert!(matches!(op(&mut s, T0), Op::Recv(_, 16)));
    assert_eq!(
        s.on_recv(T0, c, Ok(17)),
        Err(ReportError::Overrun {
            reported: 17,
            max: 16
        })
    );
    // The failed report changed nothing: the right one is still accepted.
    assert_eq!(s.on_recv(T0, c, Ok(0)), Ok(()));
}

#[test]
fn an_unreported_operation_counts_as_not_done() {
    let mut s = polling();
    assert_eq!(op(&mut s, T0), Op::Accept);
    // Polled again without a report: the Accept is abandoned.
    assert!(matches!(op(&mut s, T0), Op::Wait(_)));
    assert_eq!(s.on_accepted(T0), Err(ReportError::Unexpected));
    let c = accept(&mut s, T0);
    assert!(matches!(op(&mut s, T0), Op::Recv(..)));
    // An abandoned Recv is simply offered again, with nothing lost or lent for good.
    assert!(matches!(op(&mut s, T0), Op::Recv(..)));
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(s.buffers(), (4, 0));
}

// ---- readiness scheduling -----------------------------------------------------------------

#[test]
fn a_short_read_drains_only_where_the_transport_says_so() {
    for drains in [false, true] {
        let mut s = ready_server(Config {
            idle_timeout: None,
            short_reads_drain: drains,
            ..Config::default()
        });
        let c = accept(&mut s, T0);
        // 4 bytes into a 16-byte buffer: short.
        recv(&mut s, T0, c, b"ping");
        send(&mut s, T0, c, b"PING", 4);
        if !drains {
            // Nothing says the stream is empty: read until it would-block.
            let next = op(&mut s, T0);
            assert_eq!(next, Op::Recv(c, 16));
            s.on_recv(T0, c, Err(nb::Error::WouldBlock)).unwrap();
        }
        assert_eq!(quiet(&mut s, T0), Op::Wait(None), "drains: {drains}");
        // A full read says nothing either way: read on.
        s.on_ready(c, true, false).unwrap();
        recv(&mut s, T0, c, &[b'x'; 16]);
        send(&mut s, T0, c, &[b'X'; 16], 16);
        recv(&mut s, T0, c, b"y");
        send(&mut s, T0, c, b"Y", 1);
        assert_eq!(quiet(&mut s, T0), Op::Wait(None), "drains: {drains}");
    }
}

/// Readiness mode, the listener ready with one connection: accepts it, finds it has
/// nothing to read, and waits.
#[track_caller]
fn accept_one_ready(s: &mut Server<'static, Uppercase>, now: Instant) -> ConnId {
    let c = accept(s, now);
    recv_outcome(s, now, c, nb::Error::WouldBlock);
    // The pass is over and the listener may have more: the driver polls for events
    // without blocking before the next pass (which accepts again).
    assert_eq!(wait(s, now), Some(now));
    accept_would_block(s, now);
    assert_eq!(wait(s, now), None);
    c
}

/// Readiness scheduling without an idle timeout: nothing timed unless a test arms it.
fn readiness_untimed() -> Config {
    Config {
        scheduling: Scheduling::Readiness,
        idle_timeout: None,
        ..Config::default()
    }
}

#[test]
fn readiness_mode_only_tries_what_is_ready() {
    let config = readiness_untimed();
    let mut s = server(2, 2, 16, config);
    assert_eq!(wait(&mut s, T0), None, "no listener readiness yet");
    s.on_listener_ready();
    let c = accept_one_ready(&mut s, T0);
    assert_eq!(
        wait(&mut s, T0),
        None,
        "no back-off in readiness mode: it blocks"
    );
    s.on_ready(c, true, false).unwrap();
    recv(&mut s, T0, c, b"ping");
    send_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, T0), None);
    s.on_ready(c, false, true).unwrap();
    send(&mut s, T0, c, b"PING", 4);
    assert_eq!(wait(&mut s, T0), None);
}

#[test]
fn a_server_with_nothing_timed_needs_no_time_until_it_has_work() {
    let config = readiness_untimed();
    let mut s = server(2, 2, 16, config);
    assert!(s.needs_time(), "not polled yet");
    assert_eq!(wait(&mut s, T0), None);
    assert!(!s.needs_time(), "idle, nothing armed");
    s.on_listener_ready();
    assert!(s.needs_time(), "a ready listener: accepting may back off");
    let c = accept_one_ready(&mut s, T0);
    assert!(
        !s.needs_time(),
        "a quiet connection without an idle timeout"
    );
    s.on_ready(c, true, false).unwrap();
    assert!(s.needs_time(), "queued work");
    recv(&mut s, T0, c, b"ping");
    send(&mut s, T0, c, b"PING", 4);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, T0), None);
    assert!(s.needs_time(), "a pass ended, with no look at what is left");
    assert_eq!(wait(&mut s, T0), None);
    assert!(!s.needs_time(), "the next poll found nothing to do");
    s.begin_shutdown(T0 + ms(5));
    assert!(s.needs_time(), "a stop's deadline");

    // An idle timeout arms a deadline per connection: only a server without any is
    // untimed.
    let mut s = server(
        2,
        2,
        16,
        Config {
            idle_timeout: Some(ms(10)),
            ..config
        },
    );
    assert_eq!(wait(&mut s, T0), None);
    assert!(!s.needs_time(), "no connection");
    s.on_listener_ready();
    let c = accept(&mut s, T0);
    recv_outcome(&mut s, T0, c, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, T0), Some(T0));
    accept_would_block(&mut s, T0);
    assert_eq!(wait(&mut s, T0), Some(T0 + ms(10)), "{c}'s idle deadline");
    assert!(s.needs_time(), "an idle deadline");
}

#[test]
fn readiness_mode_keeps_unfinished_work_queued() {
    let config = Config {
        scheduling: Scheduling::Readiness,
        visit_budget: 1,
        ..Config::default()
    };
    let mut s = server(2, 2, 16, config);
    s.on_listener_ready();
    let a = accept(&mut s, T0);
    // Budget 1: one Recv, then the visit ends; `a` still has work, so it stays queued
    // (an edge-triggered source would not report it again) for the next pass, and the
    // driver polls for new events between the two.
    recv(&mut s, T0, a, b"x");
    assert_eq!(wait(&mut s, T0), Some(T0));
    accept_would_block(&mut s, T0);
    send(&mut s, T0, a, b"X", 1);
    assert_eq!(wait(&mut s, T0), Some(T0));
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    assert_eq!(
        wait(&mut s, T0),
        Some(T0 + Duration::from_secs(300)),
        "only the idle timer"
    );
}

/// Readiness scheduling, two connections, one 16-byte buffer, the listener ready.
fn readiness_with_one_buffer() -> Server<'static, Uppercase> {
    let config = Config {
        scheduling: Scheduling::Readiness,
        ..Config::default()
    };
    let mut s = server(2, 1, 16, config);
    s.on_listener_ready();
    s
}

/// Found by the simulation (seed 16): in readiness mode a readable connection that could
/// get no buffer was requeued forever, and `poll` never returned.
#[test]
fn readiness_mode_waits_for_a_buffer_instead_of_spinning() {
    let mut s = readiness_with_one_buffer();
    let a = accept(&mut s, T0);
    recv(&mut s, T0, a, b"aaa");
    send_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, T0), Some(T0));
    let b = accept(&mut s, T0);
    // b is readable but the only buffer is a's: nothing to do but wait.
    assert_eq!(wait(&mut s, T0), Some(T0));
    accept_would_block(&mut s, T0);
    assert_eq!(wait(&mut s, T0), Some(T0 + Duration::from_secs(300)));
    // a drains; the buffer comes back and goes to b without any new readiness.
    s.on_ready(a, false, true).unwrap();
    send(&mut s, T0, a, b"AAA", 3);
    assert_eq!(wait(&mut s, T0), Some(T0));
    recv(&mut s, T0, b, b"bb");
    send(&mut s, T0, b, b"BB", 2);
}

/// Found by the stricter simulation (seed 16 again): readiness reported while every
/// buffer was lent was forgotten, and the connection waited until its idle timeout.
#[test]
fn readiness_reported_while_no_buffer_is_free_is_not_forgotten() {
    let mut s = readiness_with_one_buffer();
    let a = accept(&mut s, T0);
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, T0), Some(T0));
    let b = accept(&mut s, T0);
    recv_outcome(&mut s, T0, b, nb::Error::WouldBlock);
    assert_eq!(wait(&mut s, T0), Some(T0));
    accept_would_block(&mut s, T0);
    assert!(wait(&mut s, T0).is_some());
    // a takes the only buffer and keeps it (its peer reads slowly).
    s.on_ready(a, true, false).unwrap();
    recv(&mut s, T0, a, b"aaa");
    send_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    recv_outcome(&mut s, T0, a, nb::Error::WouldBlock);
    assert!(wait(&mut s, T0).is_some());
    // b becomes readable while a holds the only buffer: nothing to do yet...
    s.on_ready(b, true, false).unwrap();
    assert!(wait(&mut s, T0).is_some());
    // ...until a's buffer comes back, and goes to b with no new readiness for it.
    s.on_ready(a, false, true).unwrap();
    send(&mut s, T0, a, b"AAA", 3);
    assert_eq!(wait(&mut s, T0), Some(T0));
    recv(&mut s, T0, b, b"bb");
}

#[test]
fn readiness_passes_are_bounded_so_newcomers_are_not_starved() {
    let config = Config {
        scheduling: Scheduling::Readiness,
        visit_budget: 2,
        idle_timeout: None,
        ..Config::default()
    };
    let mut s = server_as_configured(3, 3, 16, config);
    s.on_listener_ready();
    let a = accept(&mut s, T0);
    let b = accept(&mut s, T0);
    accept_would_block(&mut s, T0);
    // a and b stay readable for ever (a bulk sender each): every visit spends its budget.
    for _ in 0..3 {
        for c in [a, b] {
            recv(&mut s, T0, c, b"x");
            send(&mut s, T0, c, b"X", 1);
        }
        // Each pass ends with a look for new events, although a and b still have work.
        assert_eq!(wait(&mut s, T0), Some(T0));
    }
    // A newcomer's readiness is served in the next pass, after the new arrival.
    s.on_listener_ready();
    let c = accept(&mut s, T0);
    accept_would_block(&mut s, T0);
    recv(&mut s, T0, a, b"x");
    send(&mut s, T0, a, b"X", 1);
    recv(&mut s, T0, b, b"x");
    send(&mut s, T0, b, b"X", 1);
    recv(&mut s, T0, c, b"hello");
}

/// Found by the simulation (seed 345): listener readiness reported after the pass's
/// accept would-blocked was ignored, and the server waited forever.
#[test]
fn readiness_mode_accepts_after_late_listener_readiness() {
    let config = Config {
        scheduling: Scheduling::Readiness,
        ..Config::default()
    };
    let mut s = server(2, 2, 16, config);
    s.on_listener_ready();
    accept_would_block(&mut s, T0);
    s.on_listener_ready();
    assert_eq!(wait(&mut s, T0), Some(T0));
    assert_eq!(op(&mut s, T0), Op::Accept);
}

/// A transport that answers every probe `Interrupted` gets the probe again at once, but
/// the retries count in the visit's budget: the other connections are still served.
#[test]
fn probes_retried_after_interrupted_do_not_starve_the_others() {
    let mut s = polling();
    let lingering = linger(&mut s, T0, 10);
    let later = T0 + ms(2); // the next probe round
    let mut other = None;
    for _ in 0..100 {
        match op(&mut s, later) {
            Op::Probe(conn) => s
                .on_probe(later, conn, Err(ErrorKind::Interrupted))
                .unwrap(),
            Op::Accept if other.is_none() => match s.on_accepted(later).unwrap() {
                Admission::Admitted(c) => other = Some(c),
                Admission::Refused => panic!("refused"),
            },
            Op::Accept => accept_would_block(&mut s, later),
            Op::Recv(conn, _) if conn == lingering => {
                s.on_recv(later, conn, Err(nb::Error::WouldBlock)).unwrap()
            }
            Op::Recv(conn, _) => {
                assert_eq!(Some(conn), other);
                return;
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    panic!("{other:?} was never read: the lingering connection's probes took every turn");
}
