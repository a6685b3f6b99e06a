//! The simulated network: an in-memory listener and streams implementing the core's
//! [`Listener`] and [`Stream`] traits, the client peers at their other ends, and seeded
//! fault injection. Single-threaded and ordered (no hash maps, no clock): the same
//! schedule gives the same trace.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use nbecho_core::{nb, CloseReason, ErrorKind, Instant, Listener, Stream};

use crate::rng::Rng;
use crate::schedule::{Behaviour, ClientPlan, Faults};

/// The echo the server owes for one received byte, modelled without the core's code: ASCII
/// `a`-`z` become `A`-`Z` (as Python's `bytes.upper()`), every other byte is unchanged; with
/// `identity`, nothing changes.
pub const fn model_echo(identity: bool, byte: u8) -> u8 {
    if !identity && byte >= b'a' && byte <= b'z' {
        byte - (b'a' - b'A')
    } else {
        byte
    }
}

/// What the simulated server must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Uppercase, byte for byte.
    Upper,
    /// The bytes unchanged.
    Echo,
    /// [`NumberedLines`](nbecho_core::NumberedLines), modelled by [`LinesModel`].
    Lines,
}

/// An independent model of [`NumberedLines`](nbecho_core::NumberedLines), fed the bytes
/// the server reads one at a time: the replies it owes for them, as soon as they are
/// decided (a line's number and first bytes once the line cannot be `quit` any more).
#[derive(Debug, Default)]
pub struct LinesModel {
    number: u32,
    /// The current line's number is out; its bytes follow.
    in_line: bool,
    /// The start of a line that may yet be `quit`.
    undecided: Vec<u8>,
    /// `quit` was read: nothing more is answered.
    quit: bool,
    /// The end of the stream was answered.
    ended: bool,
}

impl LinesModel {
    fn is_quit(line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        line.strip_suffix(b"\r").unwrap_or(line) == b"quit"
    }

    fn open_line(&mut self, out: &mut Vec<u8>) {
        self.number += 1;
        out.extend_from_slice(format!("{}: ", self.number).as_bytes());
        out.append(&mut self.undecided);
        self.in_line = true;
    }

    /// The replies owed for one more byte read.
    pub fn feed(&mut self, byte: u8, out: &mut Vec<u8>) {
        if self.quit || self.ended {
            return;
        }
        if self.in_line {
            out.push(byte);
            self.in_line = byte != b'\n';
            return;
        }
        self.undecided.push(byte);
        if byte == b'\n' && Self::is_quit(&self.undecided) {
            out.extend_from_slice(b"bye\n");
            self.quit = true;
        } else if byte == b'\n' {
            self.open_line(out);
            self.in_line = false;
        } else if !b"quit\r".starts_with(&self.undecided) {
            self.open_line(out);
        }
    }

    /// The replies owed at the end of the stream.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if self.quit || self.ended {
            return;
        }
        self.ended = true;
        if !self.undecided.is_empty() {
            if Self::is_quit(&self.undecided) {
                out.extend_from_slice(b"bye\n");
                return;
            }
            self.open_line(out);
        }
        if self.in_line {
            out.push(b'\n');
            self.in_line = false;
        }
    }

    /// `quit` was read: the server finishes the connection.
    pub fn quit(&self) -> bool {
        self.quit
    }
}

/// Bytes a client can have in flight towards the server (its socket buffer), and the
/// server towards a client.
pub const WINDOW: usize = 4096;

/// One connection as both ends and an observer see it.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Sent by the client, not yet read by the server.
    pub to_server: VecDeque<u8>,
    /// The client shut down its write side.
    pub client_eof: bool,
    /// Written by the server, not yet read by the client.
    pub to_client: VecDeque<u8>,
    /// The server shut down its write side.
    pub server_fin: bool,
    /// The client has read everything up to the server's FIN. The simulated transport
    /// acknowledges bytes only as the client reads them (as if ACKs were slow), so a
    /// probe sees as in flight everything the client has not read, FIN included.
    pub fin_acked: bool,
    /// The client reset the connection.
    pub reset: bool,
    /// The server released its stream.
    pub server_closed: bool,
    /// Why, as the server's stream was told at its close.
    pub closed_with: Option<CloseReason>,
    /// The server accepted it.
    pub accepted: bool,
    /// Everything the server read before its FIN (what it must echo).
    pub server_read: Vec<u8>,
    /// [`model_echo`] of `server_read`: the only bytes the server may ever write.
    pub expected: Vec<u8>,
    /// How many of `expected` the server has written.
    pub written: usize,
    /// Read by the server after its FIN and thrown away (lingering).
    pub discarded: u64,
    /// Everything the client has read.
    pub client_received: Vec<u8>,
    /// With [`Answer::Lines`]: the model that computes `expected`.
    pub lines: LinesModel,
}

/// A client peer: its plan, payload and progress.
#[derive(Debug)]
pub struct Client {
    /// What it was told to do.
    pub plan: ClientPlan,
    /// What it sends.
    pub payload: Vec<u8>,
    /// When it connects.
    pub connect_at: Instant,
    /// It has connected (queued on the listener).
    pub connected: bool,
    /// Bytes of `payload` sent.
    pub sent: usize,
    /// It writes again no sooner than this ([`ClientPlan::write_gap_us`],
    /// [`ClientPlan::pause_us`]).
    pub next_write_at: Instant,
}

impl Client {
    fn read_resumes_at(&self) -> Instant {
        self.connect_at + nbecho_core::Duration::from_millis(self.plan.read_pause_ms.into())
    }
}

/// The whole simulated network.
#[derive(Debug)]
pub struct Net {
    rng: Rng,
    faults: Faults,
    /// What the server answers.
    answer: Answer,
    /// A read that leaves data behind raises a readable edge (see
    /// [`ServerPlan::short_reads_drain`](crate::ServerPlan::short_reads_drain)).
    pub short_reads_drain: bool,
    /// Clients that connected and wait to be accepted, oldest first.
    pub backlog: VecDeque<usize>,
    /// One pipe per client, by client index.
    pub pipes: Vec<Pipe>,
    /// The clients, by index.
    pub clients: Vec<Client>,
    /// Contract breaches seen at the stream level (operations after close, bytes sent that
    /// were never received, ...). Must stay empty.
    pub violations: Vec<String>,
    /// Faults injected so far.
    pub injected: u64,
    /// The client the last successful accept returned.
    pub last_accepted: Option<usize>,
    /// Readiness edges not yet reported: (client, readable, writable, read closed: the
    /// client's FIN, which epoll reports as `EPOLLRDHUP`).
    pub edges: Vec<(usize, bool, bool, bool)>,
    /// The listener became ready.
    pub listener_edge: bool,
}

/// A shared handle: the listener, the streams and the harness all see one network.
pub type SharedNet = Rc<RefCell<Net>>;

impl Net {
    /// What the server must answer.
    pub fn answer(&self) -> Answer {
        self.answer
    }

    /// A network with these clients, nobody connected yet, whose server owes `answer`
    /// of what it reads. For [`Answer::Lines`] the payloads are made into lines: a random
    /// byte below 20 becomes a newline, 21 a carriage return, and a 20 followed by a byte
    /// below 128 the line `quit` (with `\r\n` or `\n`), so that about one payload in
    /// four of a kilobyte quits; the random draws are the same.
    pub fn new(seed: u64, faults: Faults, plans: &[ClientPlan], answer: Answer) -> SharedNet {
        let mut rng = Rng::new(seed);
        let clients = plans
            .iter()
            .map(|plan| Client {
                plan: plan.clone(),
                payload: {
                    let mut payload = rng.bytes(plan.bytes.into());
                    if answer == Answer::Lines {
                        make_lines(&mut payload);
                    }
                    payload
                },
                connect_at: Instant::from_millis(plan.connect_at_ms.into()),
                connected: false,
                sent: 0,
                next_write_at: Instant::ZERO,
            })
            .collect::<Vec<_>>();
        let pipes = clients.iter().map(|_| Pipe::default()).collect();
        Rc::new(RefCell::new(Self {
            rng,
            faults,
            answer,
            short_reads_drain: false,
            backlog: VecDeque::new(),
            pipes,
            clients,
            violations: Vec::new(),
            injected: 0,
            last_accepted: None,
            edges: Vec::new(),
            listener_edge: false,
        }))
    }

    fn inject(&mut self, percent: u8) -> bool {
        let hit = self.rng.chance(percent);
        self.injected += u64::from(hit);
        hit
    }

    /// A transfer size: all of `max`, or with a short-I/O fault anything down to 1.
    fn size(&mut self, max: usize) -> usize {
        if max > 1 && self.inject(self.faults.short_io) {
            self.rng.range(1, max as u64) as usize
        } else {
            max
        }
    }

    fn edge(&mut self, client: usize, readable: bool, writable: bool) {
        self.edges.push((client, readable, writable, false));
    }

    /// True once the client has nothing more to do: it reset, or the server closed and
    /// the client has read everything that was in flight.
    pub fn client_done(&self, i: usize) -> bool {
        let pipe = &self.pipes[i];
        pipe.reset || (pipe.server_closed && pipe.to_client.is_empty())
    }

    /// Lets every client act once at `now`: connect, write a chunk, reset, half-close,
    /// read. Returns true if any of them did something.
    pub fn clients_act(&mut self, now: Instant) -> bool {
        let mut acted = false;
        for i in 0..self.clients.len() {
            acted |= self.client_act(i, now);
        }
        acted
    }

    fn client_act(&mut self, i: usize, now: Instant) -> bool {
        let client = &self.clients[i];
        if !client.connected {
            if now < client.connect_at {
                return false;
            }
            self.clients[i].connected = true;
            self.backlog.push_back(i);
            self.listener_edge = true;
            return true;
        }
        if self.client_done(i) {
            return false;
        }
        let mut acted = false;
        let (plan, sent, total) = (client.plan.clone(), client.sent, client.payload.len());
        let pipe = &self.pipes[i];
        // Write a chunk (not once the server has closed: the write would fail).
        if !pipe.client_eof
            && !pipe.server_closed
            && sent < total
            && pipe.to_server.len() < WINDOW
            && now >= client.next_write_at
        {
            let n = usize::from(plan.write_chunk)
                .min(total - sent)
                .min(WINDOW - pipe.to_server.len());
            let chunk = self.clients[i].payload[sent..sent + n].to_vec();
            self.pipes[i].to_server.extend(chunk);
            self.clients[i].sent += n;
            let gap = if sent == 0 && plan.pause_us > 0 {
                plan.pause_us
            } else {
                plan.write_gap_us.into()
            };
            self.clients[i].next_write_at = now + nbecho_core::Duration::from_micros(gap.into());
            self.edge(i, true, false);
            acted = true;
        }
        let sent = self.clients[i].sent;
        match plan.behaviour {
            Behaviour::ResetAfter(after)
                if sent >= total.min(after.into()) && !self.pipes[i].server_closed =>
            {
                self.pipes[i].reset = true;
                self.edge(i, true, true);
                return true;
            }
            Behaviour::HalfClose
                if sent == total && !self.pipes[i].client_eof && !self.pipes[i].server_closed =>
            {
                self.pipes[i].client_eof = true;
                self.edges.push((i, true, false, true));
                acted = true;
            }
            _ => {}
        }
        // Read (unless pausing, as a slow reader).
        if now >= self.clients[i].read_resumes_at() {
            let pipe = &mut self.pipes[i];
            if !pipe.to_client.is_empty() {
                pipe.client_received.extend(pipe.to_client.drain(..));
                self.edge(i, false, true);
                acted = true;
            }
            let pipe = &mut self.pipes[i];
            if pipe.to_client.is_empty() && pipe.server_fin && !pipe.fin_acked {
                pipe.fin_acked = true;
                acted = true;
            }
            // The server's FIN is read: a client cut short by a server shutdown closes
            // its side too; an idle one keeps it open (like a terminal client at its
            // prompt), and the server must see for itself that nothing is at stake.
            if pipe.fin_acked && !pipe.client_eof && plan.behaviour != Behaviour::Idle {
                pipe.client_eof = true;
                self.edges.push((i, true, false, true));
                acted = true;
            }
        }
        acted
    }

    /// The earliest future time at which a client will act by the clock alone.
    pub fn next_client_event(&self, now: Instant) -> Option<Instant> {
        self.clients
            .iter()
            .enumerate()
            .filter(|&(i, _)| !self.client_done(i))
            .flat_map(|(i, c)| {
                let writes = c.sent < c.payload.len() && !self.pipes[i].client_eof;
                [
                    Some(c.connect_at),
                    Some(c.read_resumes_at()),
                    writes.then_some(c.next_write_at),
                ]
            })
            .flatten()
            .filter(|&t| t > now)
            .min()
    }

    /// True if some client would act again at `now`, without time passing.
    pub fn clients_busy(&self, now: Instant) -> bool {
        self.clients.iter().enumerate().any(|(i, c)| {
            let pipe = &self.pipes[i];
            !self.client_done(i)
                && c.connected
                && ((!pipe.client_eof
                    && c.sent < c.payload.len()
                    && pipe.to_server.len() < WINDOW
                    && now >= c.next_write_at)
                    || (c.plan.behaviour == Behaviour::HalfClose
                        && c.sent == c.payload.len()
                        && !pipe.client_eof))
        })
    }
}

/// The server's listening socket on the simulated network.
#[derive(Debug)]
pub struct SimListener(pub SharedNet);

impl Listener for SimListener {
    type Stream = SimStream;

    fn accept(&mut self, _: &mut ()) -> nb::Result<SimStream, ErrorKind> {
        let mut guard = self.0.borrow_mut();
        let net = &mut *guard;
        if net.backlog.is_empty() {
            return Err(nb::Error::WouldBlock);
        }
        if net.inject(net.faults.interrupted) {
            return Err(nb::Error::Other(ErrorKind::Interrupted));
        }
        if net.inject(net.faults.accept_error) {
            if net.rng.chance(50) {
                // ECONNABORTED: the client reset before it was accepted, and is gone.
                let i = net.backlog.pop_front().expect("checked non-empty");
                net.pipes[i].reset = true;
                return Err(nb::Error::Other(ErrorKind::ConnectionAborted));
            }
            // Like EMFILE: the connection stays in the backlog.
            return Err(nb::Error::Other(ErrorKind::Other));
        }
        if net.inject(net.faults.accept_would_block) {
            net.listener_edge = true; // spurious: readiness will be reported again
            return Err(nb::Error::WouldBlock);
        }
        let i = net.backlog.pop_front().expect("checked non-empty");
        net.pipes[i].accepted = true;
        net.last_accepted = Some(i);
        // Registering a socket with epoll reports what it already is: readable, writable,
        // and read-closed if the client's FIN came first.
        let eof = net.pipes[i].client_eof;
        net.edges.push((i, true, true, eof));
        Ok(SimStream {
            net: Rc::clone(&self.0),
            client: i,
        })
    }
}

/// The server's end of one simulated connection.
#[derive(Debug)]
pub struct SimStream {
    net: SharedNet,
    /// The client at the other end.
    pub client: usize,
}

impl Stream for SimStream {
    fn read(&mut self, _: &mut (), buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        let mut guard = self.net.borrow_mut();
        let net = &mut *guard;
        let i = self.client;
        if net.pipes[i].server_closed || buf.is_empty() {
            let why = if buf.is_empty() {
                "an empty buffer"
            } else {
                "a closed stream"
            };
            net.violations.push(format!("client {i}: read into {why}"));
            return Err(nb::Error::Other(ErrorKind::InvalidInput));
        }
        if net.pipes[i].reset {
            return Err(nb::Error::Other(ErrorKind::ConnectionReset));
        }
        if net.inject(net.faults.interrupted) {
            return Err(nb::Error::Other(ErrorKind::Interrupted));
        }
        if net.inject(net.faults.read_would_block) {
            net.edge(i, true, false);
            return Err(nb::Error::WouldBlock);
        }
        let available = net.pipes[i].to_server.len();
        if available == 0 {
            return if net.pipes[i].client_eof {
                let pipe = &mut net.pipes[i];
                if net.answer == Answer::Lines && !pipe.server_fin {
                    // The end of the stream is answered too (an unfinished line).
                    pipe.lines.end(&mut pipe.expected);
                }
                Ok(0)
            } else {
                Err(nb::Error::WouldBlock)
            };
        }
        let n = net.size(buf.len().min(available));
        if net.short_reads_drain && n < available && n < buf.len() {
            // A short read that leaves data: as if it arrived after, a new edge.
            net.edge(i, true, false);
        }
        let answer = net.answer;
        let pipe = &mut net.pipes[i];
        for (dst, src) in buf[..n].iter_mut().zip(pipe.to_server.drain(..n)) {
            *dst = src;
        }
        if pipe.server_fin {
            pipe.discarded += n as u64;
        } else {
            pipe.server_read.extend_from_slice(&buf[..n]);
            match answer {
                Answer::Lines => {
                    for &b in &buf[..n] {
                        pipe.lines.feed(b, &mut pipe.expected);
                    }
                }
                _ => pipe.expected.extend(
                    buf[..n]
                        .iter()
                        .map(|&b| model_echo(answer == Answer::Echo, b)),
                ),
            }
        }
        Ok(n)
    }

    fn write(&mut self, _: &mut (), bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        let mut guard = self.net.borrow_mut();
        let net = &mut *guard;
        let i = self.client;
        let pipe = &net.pipes[i];
        if pipe.server_closed || pipe.server_fin || bytes.is_empty() {
            let why = if bytes.is_empty() {
                "an empty write"
            } else {
                "a write after shutdown or close"
            };
            net.violations.push(format!("client {i}: {why}"));
            return Err(nb::Error::Other(ErrorKind::InvalidInput));
        }
        if pipe.reset {
            return Err(nb::Error::Other(ErrorKind::ConnectionReset));
        }
        if net.inject(net.faults.interrupted) {
            return Err(nb::Error::Other(ErrorKind::Interrupted));
        }
        if net.inject(net.faults.write_would_block) {
            net.edge(i, false, true);
            return Err(nb::Error::WouldBlock);
        }
        let room = WINDOW - net.pipes[i].to_client.len();
        if room == 0 {
            return Err(nb::Error::WouldBlock); // the client's read makes it writable again
        }
        let n = net.size(bytes.len().min(room));
        let pipe = &mut net.pipes[i];
        let at = pipe.written;
        if pipe.expected.get(at..at + n) != Some(&bytes[..n]) {
            let msg = format!(
                "client {i}: wrote {n} bytes at offset {at} that are not transform(received) \
                 (received {} bytes)",
                pipe.expected.len()
            );
            net.violations.push(msg);
            return Err(nb::Error::Other(ErrorKind::InvalidData));
        }
        let pipe = &mut net.pipes[i];
        pipe.written += n;
        pipe.to_client.extend(&bytes[..n]);
        Ok(n)
    }

    fn write_vectored(
        &mut self,
        cx: &mut (),
        first: &[u8],
        second: &[u8],
    ) -> nb::Result<usize, ErrorKind> {
        // One write of both parts, as writev would do.
        self.write(cx, &[first, second].concat())
    }

    fn shutdown_write(&mut self, _: &mut ()) -> Result<(), ErrorKind> {
        let mut guard = self.net.borrow_mut();
        let net = &mut *guard;
        let i = self.client;
        let pipe = &mut net.pipes[i];
        let (again, written, expected) = (
            pipe.server_fin || pipe.server_closed,
            pipe.written,
            pipe.expected.len(),
        );
        pipe.server_fin = true;
        if again {
            net.violations
                .push(format!("client {i}: shut down twice, or after close"));
            return Err(ErrorKind::InvalidInput);
        }
        if written != expected {
            net.violations.push(format!(
                "client {i}: FIN with {written} of {expected} echo bytes unsent"
            ));
        }
        Ok(())
    }

    fn unacked(&mut self, _: &mut ()) -> Result<usize, ErrorKind> {
        let mut guard = self.net.borrow_mut();
        let net = &mut *guard;
        let i = self.client;
        let pipe = &net.pipes[i];
        if pipe.server_closed || !pipe.server_fin {
            net.violations.push(format!(
                "client {i}: delivery probed before shutdown or after close"
            ));
            return Err(ErrorKind::InvalidInput);
        }
        if pipe.reset {
            return Err(ErrorKind::ConnectionReset);
        }
        if net.inject(net.faults.interrupted) {
            return Err(ErrorKind::Interrupted);
        }
        let pipe = &net.pipes[i];
        Ok(pipe.to_client.len() + usize::from(!pipe.fin_acked))
    }

    fn close(self, _: &mut (), reason: CloseReason) {
        let mut guard = self.net.borrow_mut();
        let net = &mut *guard;
        let pipe = &mut net.pipes[self.client];
        if reason == CloseReason::Done && !pipe.client_eof && !pipe.fin_acked && !pipe.reset {
            net.violations.push(format!(
                "client {}: closed in order with {} bytes and the FIN unacknowledged, \
                 before the client's FIN",
                self.client,
                pipe.to_client.len()
            ));
        }
        let pipe = &mut net.pipes[self.client];
        pipe.closed_with = Some(reason);
        let again = std::mem::replace(&mut pipe.server_closed, true);
        if again {
            net.violations
                .push(format!("client {}: closed twice", self.client));
        }
    }
}

/// Makes a random payload into lines (see [`Net::new`]).
fn make_lines(payload: &mut [u8]) {
    let mut i = 0;
    while i < payload.len() {
        match payload[i] {
            0..20 => payload[i] = b'\n',
            21 => payload[i] = b'\r',
            20 if payload.get(i + 1).is_some_and(|&b| b < 128) => {
                let quit: &[u8] = if payload[i + 1].is_multiple_of(2) {
                    b"\nquit\n"
                } else {
                    b"\nquit\r\n"
                };
                let n = quit.len().min(payload.len() - i);
                payload[i..i + n].copy_from_slice(&quit[..n]);
                i += n;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
}
