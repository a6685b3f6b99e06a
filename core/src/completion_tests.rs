//! Completion scheduling: reads and writes in flight at once, reported in any order.
//! A small seeded world: clients whose bytes the test hands to the core's lent buffers
//! when it chooses to complete a read, in random order across connections.

use super::*;
use crate::service::{Reply, Service};
use crate::transform::Uppercase;

/// xorshift: payloads and choices, from a printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Answers each byte twice: replies longer than the input, through the service path.
struct Twice;

impl Service for Twice {
    fn receive(&mut self, _: ConnId, input: &[u8], reply: &mut Reply<'_>) -> usize {
        let n = input.len().min(reply.room() / 2);
        for &b in &input[..n] {
            reply.write(&[b, b]).unwrap();
        }
        n
    }
}

#[derive(Default)]
struct Client {
    payload: Vec<u8>,
    sent: usize,
    eof_read: bool,
    received: Vec<u8>,
    fin: bool,
    closed: Option<CloseReason>,
}

/// Runs `clients` through a server in completion scheduling; returns the clients.
fn run<S: Service>(seed: u64, service: S, expected: impl Fn(&[u8]) -> Vec<u8>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let conns = 1 + rng.below(5);
    let blocks = 1 + rng.below(conns);
    let block = [16, 24, 64][rng.below(3)];
    let slots: &'static mut [Slot] = Box::leak(vec![Slot::EMPTY; conns].into_boxed_slice());
    let arena: &'static mut [u8] = Box::leak(vec![0u8; blocks * block].into_boxed_slice());
    let flights: &'static mut [InFlight] =
        Box::leak(vec![InFlight::EMPTY; conns].into_boxed_slice());
    let storage = Storage::new(slots, arena, block)
        .unwrap()
        .with_completions(flights)
        .unwrap();
    let config = Config {
        scheduling: Scheduling::Completion,
        visit_budget: 1 + rng.below(4) as u16,
        ..Config::default()
    };
    let mut s = Server::new(config, storage, service);
    assert_eq!(s.config().scheduling, Scheduling::Completion);
    let mut clients: Vec<Client> = (0..conns)
        .map(|_| Client {
            payload: (0..rng.below(300))
                .map(|_| b"abcXYZ\n"[rng.below(7)])
                .collect(),
            ..Client::default()
        })
        .collect();
    let mut ids: Vec<Option<ConnId>> = vec![None; conns];
    let mut recvs: Vec<ConnId> = Vec::new(); // reads in flight
    let mut sends: Vec<ConnId> = Vec::new(); // writes in flight
    let client_of = |ids: &[Option<ConnId>], conn: ConnId| {
        ids.iter()
            .position(|&id| id == Some(conn))
            .expect("a known connection")
    };
    let now = Instant::ZERO;
    s.on_listener_ready();
    let mut quiet = 0;
    for step in 0..200_000 {
        let why = |what: &str| format!("seed {seed}, step {step}: {what}");
        // Readiness: whatever a client has for the server (level, as a poll ring says).
        for (i, c) in clients.iter().enumerate() {
            if let Some(conn) = ids[i] {
                if c.closed.is_none() && !c.eof_read {
                    let _ = s.on_ready(conn, true, true);
                }
            }
        }
        let in_flight = recvs.len() + sends.len();
        if in_flight > 0 && rng.below(3) == 0 {
            // Complete one operation in flight, any of them.
            let k = rng.below(in_flight);
            if k < recvs.len() {
                let conn = recvs.swap_remove(k);
                let i = client_of(&ids, conn);
                let c = &mut clients[i];
                let buf = s
                    .in_flight_recv(conn)
                    .expect("the read's buffer is still lent");
                let left = c.payload.len() - c.sent;
                let outcome = if left == 0 {
                    c.eof_read = true;
                    Ok(0)
                } else if rng.below(8) == 0 {
                    Err(nb::Error::WouldBlock)
                } else {
                    let n = 1 + rng.below(left.min(buf.len()));
                    buf[..n].copy_from_slice(&c.payload[c.sent..c.sent + n]);
                    c.sent += n;
                    Ok(n)
                };
                s.on_recv(now, conn, outcome)
                    .map_err(|e| why(&e.to_string()))
                    .unwrap();
            } else {
                let conn = sends.swap_remove(k - recvs.len());
                let i = client_of(&ids, conn);
                let (bytes, wrapped) = s.in_flight_send(conn).expect("the write's bytes");
                let all = [bytes, wrapped].concat();
                let n = 1 + rng.below(all.len());
                clients[i].received.extend_from_slice(&all[..n]);
                s.on_send(now, conn, Ok(n))
                    .map_err(|e| why(&e.to_string()))
                    .unwrap();
            }
            quiet = 0;
            continue;
        }
        match s.poll(now) {
            Action::Accept => match ids.iter().position(Option::is_none) {
                Some(i) => match s.on_accepted(now).unwrap() {
                    Admission::Admitted(conn) => ids[i] = Some(conn),
                    Admission::Refused => panic!("{}", why("refused")),
                },
                None => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            },
            Action::Recv { conn, .. } => {
                assert!(!recvs.contains(&conn), "{}", why("a second read in flight"));
                recvs.push(conn);
            }
            Action::Send { conn, .. } => {
                assert!(
                    !sends.contains(&conn),
                    "{}",
                    why("a second write in flight")
                );
                sends.push(conn);
            }
            Action::Shutdown { conn } => {
                let i = client_of(&ids, conn);
                assert!(
                    !sends.contains(&conn),
                    "{}",
                    why("FIN with a write in flight")
                );
                clients[i].fin = true;
            }
            Action::Probe { conn } => s.on_probe(now, conn, Ok(0)).unwrap(),
            Action::Cancel { conn } | Action::CancelRecv { conn } => {
                panic!("{}", why(&format!("nothing asked to cancel {conn}")))
            }
            Action::Close { conn, reason } => {
                assert!(
                    !recvs.contains(&conn) && !sends.contains(&conn),
                    "{}",
                    why("closed with an operation in flight")
                );
                let i = client_of(&ids, conn);
                clients[i].closed = Some(reason);
            }
            Action::Wait { .. } => {
                quiet += 1;
                if clients.iter().all(|c| c.closed.is_some()) {
                    break;
                }
                assert!(
                    quiet < 50 || in_flight > 0,
                    "{}",
                    why("waits with nothing in flight and clients unserved")
                );
            }
            Action::Finished => unreachable!(),
        }
    }
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(c.closed, Some(CloseReason::Done), "seed {seed}, client {i}");
        assert!(c.fin, "seed {seed}, client {i}: no FIN");
        assert_eq!(
            c.received,
            expected(&c.payload),
            "seed {seed}, client {i}: {} bytes sent",
            c.payload.len()
        );
    }
    let st = s.stats();
    assert_eq!(st.closed, conns as u64);
    assert_eq!(s.buffers().1, 0, "seed {seed}: a buffer is still lent");
}

#[test]
fn reads_and_writes_complete_in_any_order_and_every_byte_comes_back_once() {
    for seed in 1..400 {
        run(seed, Uppercase, |p| p.to_ascii_uppercase());
    }
}

#[test]
fn a_service_with_longer_replies_too() {
    for seed in 1..400 {
        run(seed, Twice, |p| p.iter().flat_map(|&b| [b, b]).collect());
    }
}

/// A completion server of one slot and a 64-byte buffer, with its connection admitted.
fn one_connection(
    idle_timeout: Option<Duration>,
) -> (Server<'static, Uppercase, FlightTable<'static>>, ConnId) {
    let slots: &'static mut [Slot] = Box::leak(vec![Slot::EMPTY; 1].into_boxed_slice());
    let arena: &'static mut [u8] = Box::leak(vec![0u8; 64].into_boxed_slice());
    let flights: &'static mut [InFlight] = Box::leak(vec![InFlight::EMPTY; 1].into_boxed_slice());
    let storage = Storage::new(slots, arena, 64)
        .unwrap()
        .with_completions(flights)
        .unwrap();
    let config = Config {
        scheduling: Scheduling::Completion,
        idle_timeout,
        ..Config::default()
    };
    let mut s = Server::new(config, storage, Uppercase);
    s.on_listener_ready();
    assert_eq!(s.poll(Instant::ZERO), Action::Accept);
    let Ok(Admission::Admitted(c)) = s.on_accepted(Instant::ZERO) else {
        panic!("not admitted")
    };
    (s, c)
}

/// Reports `c` ready and polls until its first read is asked for (in flight from then on).
fn start_reading(s: &mut Server<'static, Uppercase, FlightTable<'static>>, c: ConnId, t0: Instant) {
    s.on_ready(c, true, true).unwrap();
    for _ in 0..10 {
        match s.poll(t0) {
            Action::Recv { conn, .. } => {
                assert_eq!(conn, c);
                return;
            }
            Action::Accept => s.on_accept_error(t0, nb::Error::WouldBlock).unwrap(),
            Action::Wait { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    panic!("no Recv asked for");
}

/// An idle timeout while a read is in flight: the server asks to cancel it once, and
/// closes only when it was reported.
#[test]
fn a_connection_closes_only_when_nothing_is_in_flight() {
    let (mut s, c) = one_connection(Some(Duration::from_millis(10)));
    let t0 = Instant::ZERO;
    start_reading(&mut s, c, t0);
    // The read is in flight; a second is not asked for, and its buffer stays lent.
    assert!(!matches!(s.poll(t0), Action::Recv { .. }));
    assert_eq!(s.in_flight_recv(c).map(|b| b.len()), Some(64));
    assert_eq!(s.on_send(t0, c, Ok(1)), Err(ReportError::Unexpected));
    // Idle past the timeout: Cancel, once, then nothing until the read is reported.
    let later = t0 + Duration::from_millis(20);
    assert_eq!(s.poll(later), Action::Cancel { conn: c });
    assert!(matches!(s.poll(later), Action::Wait { .. }));
    assert_eq!(s.buffers().1, 1, "the lent buffer is kept");
    // The cancelled read reports what it did: its bytes are discarded, then Close.
    s.in_flight_recv(c).unwrap()[..3].copy_from_slice(b"abc");
    s.on_recv(later, c, Ok(3)).unwrap();
    assert_eq!(
        s.poll(later),
        Action::Close {
            conn: c,
            reason: CloseReason::TimedOut
        }
    );
    let st = s.stats();
    assert_eq!((st.timeouts, st.bytes_in, st.bytes_discarded), (1, 0, 3));
    assert_eq!(s.buffers().1, 0);
}

#[test]
fn completion_needs_its_table() {
    let slots: &'static mut [Slot] = Box::leak(vec![Slot::EMPTY; 2].into_boxed_slice());
    let arena: &'static mut [u8] = Box::leak(vec![0u8; 64].into_boxed_slice());
    let flights: &'static mut [InFlight] = Box::leak(vec![InFlight::EMPTY; 1].into_boxed_slice());
    let storage = Storage::new(slots, arena, 32).unwrap();
    assert_eq!(
        storage.with_completions(flights).err(),
        Some(StorageError::TooFewCompletions)
    );
    let slots: &'static mut [Slot] = Box::leak(vec![Slot::EMPTY; 2].into_boxed_slice());
    let arena: &'static mut [u8] = Box::leak(vec![0u8; 64].into_boxed_slice());
    let config = Config {
        scheduling: Scheduling::Completion,
        ..Config::default()
    };
    let s = Server::new(config, Storage::new(slots, arena, 32).unwrap(), Uppercase);
    assert_eq!(s.config().scheduling, Scheduling::Readiness);
}

/// Readiness reported while a read is in flight is not lost: if the read then comes back
/// with nothing, the connection is read again (an edge-triggered source says it once).
#[test]
fn readiness_during_a_read_in_flight_is_kept_for_after_it() {
    let (mut s, c) = one_connection(None);
    let t0 = Instant::ZERO;
    s.on_ready(c, true, true).unwrap();
    let recv = |s: &mut Server<'static, Uppercase, FlightTable<'static>>| {
        for _ in 0..10 {
            match s.poll(t0) {
                Action::Recv { conn, .. } => return Some(conn),
                Action::Accept => s.on_accept_error(t0, nb::Error::WouldBlock).unwrap(),
                // Not the end of a busy pass: nothing more to do now.
                Action::Wait { until } if until != Some(t0) => return None,
                Action::Wait { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        panic!("no Recv and no Wait");
    };
    assert_eq!(recv(&mut s), Some(c));
    s.on_ready(c, true, false).unwrap(); // new data while the read is in flight
    s.on_recv(t0, c, Err(nb::Error::WouldBlock)).unwrap();
    assert_eq!(recv(&mut s), Some(c), "the edge was forgotten");
    // Without an edge, a read that found nothing is not tried again.
    s.on_recv(t0, c, Err(nb::Error::WouldBlock)).unwrap();
    assert_eq!(recv(&mut s), None);
}

/// A graceful stop that begins while a read is in flight: in a real transport that read
/// may already have taken bytes from the peer, so they are answered before the FIN. The
/// server waits for the read, sends its bytes, and only then shuts down.
#[test]
fn a_stop_waits_for_the_read_in_flight_and_answers_it_before_the_fin() {
    let (mut s, c) = one_connection(None);
    let t0 = Instant::ZERO;
    start_reading(&mut s, c, t0);
    s.begin_shutdown(t0 + Duration::from_secs(5));
    // The read is in flight: no FIN yet, whatever is polled.
    for _ in 0..5 {
        match s.poll(t0) {
            Action::Wait { .. } => {}
            other => panic!("{other:?} while the read is in flight"),
        }
    }
    s.in_flight_recv(c).unwrap()[..3].copy_from_slice(b"abc");
    s.on_recv(t0, c, Ok(3)).unwrap();
    let mut sent = Vec::new();
    for polls in 0.. {
        assert!(polls < 20, "no FIN after the read's bytes ({sent:?} sent)");
        match s.poll(t0) {
            Action::Send { conn, bytes, .. } => {
                assert_eq!(conn, c);
                sent.extend_from_slice(bytes);
                let n = bytes.len();
                s.on_send(t0, c, Ok(n)).unwrap();
            }
            Action::Shutdown { conn } => {
                assert_eq!(conn, c);
                break;
            }
            Action::Wait { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, b"ABC", "the bytes read are answered before the FIN");
    assert_eq!(s.stats().bytes_discarded, 0);
}

// ---- reads that wait for data (`Config::read_wait`) ------------------------------------

type Completing = Server<'static, Uppercase, FlightTable<'static>>;

/// A completion server whose reads may wait `hold`, with `conns` connections admitted
/// and `blocks` buffers of 64 bytes.
fn waiting_reads(conns: usize, blocks: usize, hold: Duration) -> (Completing, Vec<ConnId>) {
    let slots: &'static mut [Slot] = Box::leak(vec![Slot::EMPTY; conns].into_boxed_slice());
    let arena: &'static mut [u8] = Box::leak(vec![0u8; blocks * 64].into_boxed_slice());
    let flights: &'static mut [InFlight] =
        Box::leak(vec![InFlight::EMPTY; conns].into_boxed_slice());
    let storage = Storage::new(slots, arena, 64)
        .unwrap()
        .with_completions(flights)
        .unwrap();
    let config = Config {
        scheduling: Scheduling::Completion,
        short_reads_drain: true,
        idle_timeout: None,
        read_wait: Some(hold),
        ..Config::default()
    };
    let mut s = Server::new(config, storage, Uppercase);
    s.on_listener_ready();
    let mut ids = Vec::new();
    while ids.len() < conns {
        match s.poll(Instant::ZERO) {
            Action::Accept => match s.on_accepted(Instant::ZERO).unwrap() {
                Admission::Admitted(c) => ids.push(c),
                Admission::Refused => panic!("refused"),
            },
            Action::Wait { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // Each new connection is read once: nothing yet.
    loop {
        match s.poll(Instant::ZERO) {
            Action::Recv { conn, wait, .. } => {
                assert!(!wait, "a first read does not wait");
                s.on_recv(Instant::ZERO, conn, Err(nb::Error::WouldBlock))
                    .unwrap();
            }
            Action::Accept => s
                .on_accept_error(Instant::ZERO, nb::Error::WouldBlock)
                .unwrap(),
            Action::Wait { until: None } => break,
            Action::Wait { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    (s, ids)
}

/// An action, owned (so that polling may go on past it).
#[derive(Debug, PartialEq)]
enum Got {
    Recv {
        conn: ConnId,
        len: usize,
        wait: bool,
    },
    Send(ConnId, Vec<u8>),
    CancelRecv(ConnId),
    Shutdown(ConnId),
    Wait(Option<Instant>),
    Other(String),
}

/// Polls at `now` past `Accept`s and the `Wait`s that end a busy pass.
fn next(s: &mut Completing, now: Instant) -> Got {
    for _ in 0..10 {
        match s.poll(now) {
            Action::Accept => s.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
            Action::Wait { until } if until == Some(now) => {}
            Action::Wait { until } => return Got::Wait(until),
            Action::Recv { conn, buf, wait } => {
                return Got::Recv {
                    conn,
                    len: buf.len(),
                    wait,
                }
            }
            Action::Send {
                conn,
                bytes,
                wrapped,
            } => return Got::Send(conn, [bytes, wrapped].concat()),
            Action::CancelRecv { conn } => return Got::CancelRecv(conn),
            Action::Shutdown { conn } => return Got::Shutdown(conn),
            other => return Got::Other(format!("{other:?}")),
        }
    }
    panic!("only busy waits");
}

/// The next action is a read of `c` that waits (or not): its length.
fn expect_recv(s: &mut Completing, now: Instant, c: ConnId, waits: bool) -> usize {
    match next(s, now) {
        Got::Recv { conn, len, wait } if conn == c && wait == waits => len,
        other => panic!("expected a read of {c} (wait: {waits}), got {other:?}"),
    }
}

/// `c`'s read in flight brings `data`, which the next poll sends back (uppercased).
fn read_and_echo(s: &mut Completing, now: Instant, c: ConnId, data: &[u8]) {
    s.in_flight_recv(c).unwrap()[..data.len()].copy_from_slice(data);
    s.on_recv(now, c, Ok(data.len())).unwrap();
    assert_eq!(next(s, now), Got::Send(c, data.to_ascii_uppercase()));
}

/// `c` becomes readable, reads `data` (a read that does not wait), echoes it, and asks
/// for a read that waits: that read's length. The echo is in flight.
fn echo_then_wait(s: &mut Completing, now: Instant, c: ConnId, data: &[u8]) -> usize {
    s.on_ready(c, true, true).unwrap();
    expect_recv(s, now, c, false);
    read_and_echo(s, now, c, data);
    expect_recv(s, now, c, true)
}

/// `c`'s waiting read reports that it was cancelled.
fn cancelled(s: &mut Completing, now: Instant, c: ConnId) {
    s.on_recv(now, c, Err(nb::Error::Other(ErrorKind::Interrupted)))
        .unwrap();
}

/// After a read that brings data the next read waits for more, holding the buffer; at
/// the end of the hold the server cancels it (once), and once it is reported the
/// connection holds no buffer and reads only on readiness again.
#[test]
fn a_read_after_data_waits_then_gives_its_buffer_back_at_the_end_of_its_hold() {
    let hold = Duration::from_millis(1);
    let (mut s, c) = waiting_reads(1, 1, hold);
    let (c, t0) = (c[0], Instant::ZERO);
    // In the same visit as the echo: a read that waits, into the rest of the buffer.
    assert_eq!(echo_then_wait(&mut s, t0, c, b"abc"), 61);
    s.on_send(t0, c, Ok(3)).unwrap();
    assert_eq!(s.buffers().1, 1, "the waiting read holds the buffer");
    assert_eq!(next(&mut s, t0), Got::Wait(Some(t0 + hold)));
    assert_eq!(next(&mut s, t0 + hold), Got::CancelRecv(c));
    assert_eq!(next(&mut s, t0 + hold), Got::Wait(None), "asked once");
    cancelled(&mut s, t0 + hold, c);
    assert_eq!(s.buffers().1, 0, "an idle connection holds no buffer");
    assert_eq!(next(&mut s, t0 + hold), Got::Wait(None));
    s.on_ready(c, true, false).unwrap();
    expect_recv(&mut s, t0 + hold, c, false);
    let st = s.stats();
    assert_eq!((st.waiting_reads, st.waits_given_back), (1, 1));
}

/// A waiting read that brings data: the next read waits too, even though a read-ready
/// edge came meanwhile (it announced the data this read took: a read that does not wait
/// would only find nothing).
#[test]
fn a_waiting_read_that_brings_data_is_followed_by_another() {
    let (mut s, c) = waiting_reads(1, 1, Duration::from_secs(1));
    let (c, t0) = (c[0], Instant::ZERO);
    echo_then_wait(&mut s, t0, c, b"one");
    s.on_send(t0, c, Ok(3)).unwrap();
    s.on_ready(c, true, false).unwrap(); // the edge for the next data
    read_and_echo(&mut s, t0, c, b"two");
    expect_recv(&mut s, t0, c, true);
    s.on_send(t0, c, Ok(3)).unwrap();
    assert_eq!(s.stats().bytes_out, 6);
}

/// The order io_uring reports them in: a waiting read's completion, then the poll's
/// read-ready edge for the data that read took. The next read still waits (with data
/// there it completes at once; without, it waits): a read that does not wait would only
/// find nothing, one failed read per message.
#[test]
fn a_read_ready_edge_after_a_waiting_reads_data_does_not_stop_the_next_from_waiting() {
    let (mut s, c) = waiting_reads(1, 1, Duration::from_secs(1));
    let (c, t0) = (c[0], Instant::ZERO);
    echo_then_wait(&mut s, t0, c, b"one");
    s.on_send(t0, c, Ok(3)).unwrap();
    read_and_echo(&mut s, t0, c, b"two");
    s.on_ready(c, true, false).unwrap(); // the edge for "two", after its read
    expect_recv(&mut s, t0, c, true);
    s.on_send(t0, c, Ok(3)).unwrap();
    // Cancelled at the end of its hold, it leaves the connection readable, as it was
    // when asked for: the edge may have announced data that came after "two".
    let end = t0 + Duration::from_secs(1);
    assert_eq!(next(&mut s, end), Got::CancelRecv(c));
    cancelled(&mut s, end, c);
    assert_eq!(expect_recv(&mut s, end, c, false), 64);
}

/// A read-ready edge that came while a waiting read brought data is kept: when the
/// connection's next read may not wait (another connection is queued), the edge makes
/// it a plain read. Dropping it would leave the data it announced unread, with no edge
/// to come, until the peer sent more.
#[test]
fn an_edge_during_a_waiting_read_is_kept_for_a_read_that_may_not_wait() {
    let (mut s, ids) = waiting_reads(2, 2, Duration::from_secs(1));
    let (a, b, t0) = (ids[0], ids[1], Instant::ZERO);
    echo_then_wait(&mut s, t0, a, b"one");
    s.on_send(t0, a, Ok(3)).unwrap();
    assert_eq!(
        next(&mut s, t0),
        Got::Wait(Some(t0 + Duration::from_secs(1)))
    );
    s.on_ready(a, true, false).unwrap(); // "two" and "three" came while it waited
    s.in_flight_recv(a).unwrap()[..3].copy_from_slice(b"two");
    s.on_recv(t0, a, Ok(3)).unwrap();
    s.on_ready(b, true, true).unwrap(); // b is queued behind a
    assert_eq!(next(&mut s, t0), Got::Send(a, b"TWO".to_vec()));
    // b is queued, so a's read may not wait; the edge makes it a plain read, into the
    // rest of a's buffer.
    assert_eq!(expect_recv(&mut s, t0, a, false), 58);
    s.in_flight_recv(a).unwrap()[..5].copy_from_slice(b"three");
    s.on_recv(t0, a, Ok(5)).unwrap();
    expect_recv(&mut s, t0, b, false);
}

/// With every buffer held by waiting reads, a connection that has data takes one back:
/// the oldest waiting read is cancelled, and its buffer goes to that connection.
#[test]
fn a_connection_with_data_takes_a_buffer_back_from_a_waiting_read() {
    let (mut s, ids) = waiting_reads(2, 1, Duration::from_secs(1));
    let (a, b, t0) = (ids[0], ids[1], Instant::ZERO);
    echo_then_wait(&mut s, t0, a, b"abc");
    s.on_send(t0, a, Ok(3)).unwrap();
    assert_eq!(s.buffers(), (1, 1));
    s.on_ready(b, true, true).unwrap();
    assert_eq!(next(&mut s, t0), Got::CancelRecv(a));
    cancelled(&mut s, t0, a);
    expect_recv(&mut s, t0, b, false);
    read_and_echo(&mut s, t0, b, b"xyz");
}

/// A graceful stop cancels a waiting read (it would wait for ever), then shuts down.
#[test]
fn a_stop_cancels_a_waiting_read() {
    let (mut s, c) = waiting_reads(1, 1, Duration::from_secs(60));
    let (c, t0) = (c[0], Instant::ZERO);
    echo_then_wait(&mut s, t0, c, b"abc");
    s.on_send(t0, c, Ok(3)).unwrap();
    s.begin_shutdown(t0 + Duration::from_secs(5));
    assert_eq!(next(&mut s, t0), Got::CancelRecv(c));
    cancelled(&mut s, t0, c);
    assert_eq!(next(&mut s, t0), Got::Shutdown(c));
    assert_eq!(s.buffers().1, 0);
}

/// While a connection waits for a buffer, no read waits for data holding one: the
/// buffer goes to the connection that has data as soon as its output is sent.
#[test]
fn no_read_waits_while_a_connection_waits_for_a_buffer() {
    let (mut s, ids) = waiting_reads(2, 1, Duration::from_secs(1));
    let (a, b, t0) = (ids[0], ids[1], Instant::ZERO);
    s.on_ready(a, true, true).unwrap();
    expect_recv(&mut s, t0, a, false);
    s.on_ready(b, true, true).unwrap();
    assert_eq!(next(&mut s, t0), Got::Wait(None), "b waits for the buffer");
    read_and_echo(&mut s, t0, a, b"abc");
    assert_eq!(
        next(&mut s, t0),
        Got::Wait(None),
        "a's next read would wait"
    );
    s.on_send(t0, a, Ok(3)).unwrap();
    expect_recv(&mut s, t0, b, false);
    assert_eq!(s.stats().waiting_reads, 0);
}

/// A read waits only when no other connection is queued: while others are busy, their
/// operations carry a read that does not wait to the transport at no extra cost.
#[test]
fn a_read_waits_only_when_no_other_connection_is_queued() {
    let (mut s, ids) = waiting_reads(2, 2, Duration::from_secs(1));
    let (a, b, t0) = (ids[0], ids[1], Instant::ZERO);
    for c in [a, b] {
        s.on_ready(c, true, true).unwrap();
        expect_recv(&mut s, t0, c, false);
    }
    for (c, data) in [(a, b"abc"), (b, b"xyz")] {
        s.in_flight_recv(c).unwrap()[..3].copy_from_slice(data);
        s.on_recv(t0, c, Ok(3)).unwrap();
    }
    // The first served reads no more: the other is queued. The last one's read waits.
    let first = match next(&mut s, t0) {
        Got::Send(c, bytes) => {
            assert_eq!(bytes, if c == a { b"ABC" } else { b"XYZ" });
            c
        }
        other => panic!("{other:?}"),
    };
    let last = if first == a { b } else { a };
    assert!(matches!(next(&mut s, t0), Got::Send(c, _) if c == last));
    expect_recv(&mut s, t0, last, true);
}

/// A connection that needs a buffer takes one back even when the oldest waiting read's
/// buffer still holds output (its write is stuck): the next waiting read gives its back.
#[test]
fn a_buffer_comes_back_past_a_waiting_read_whose_buffer_holds_output() {
    let (mut s, ids) = waiting_reads(3, 2, Duration::from_secs(1));
    let (a, b, c, t0) = (ids[0], ids[1], ids[2], Instant::ZERO);
    // a: its echo is in flight (its peer does not read), and a read waits.
    echo_then_wait(&mut s, t0, a, b"abc");
    // b: echoed, and a read waits.
    echo_then_wait(&mut s, t0, b, b"xyz");
    s.on_send(t0, b, Ok(3)).unwrap();
    // c has data and no buffer: a's read gives its back first, but a's buffer holds
    // output; so b's read gives its back too, and c gets b's buffer.
    s.on_ready(c, true, true).unwrap();
    assert_eq!(next(&mut s, t0), Got::CancelRecv(a));
    cancelled(&mut s, t0, a);
    assert_eq!(next(&mut s, t0), Got::CancelRecv(b));
    cancelled(&mut s, t0, b);
    expect_recv(&mut s, t0, c, false);
}
