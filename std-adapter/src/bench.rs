//! `nbecho bench`: a load generator that verifies every byte of every reply.
//!
//! One mio event loop drives all connections. Messages are lowercase letters whose value
//! follows from their position, so each reply byte is checked against the uppercase it must
//! be without storing what was sent. Latency goes into an HDR histogram; in fixed-rate mode
//! it is measured from when each message *should* have been sent, so a stalled server is
//! not hidden by the client waiting for it (coordinated omission).

use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

/// What `bench` does on each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Send a message, wait for its whole echo, repeat.
    PingPong,
    /// Send continuously while reading the echo.
    Stream,
    /// Open the connections and hold them, silent (to measure idle cost).
    Idle,
    /// Again and again: open a new connection, send one message, wait for its echo,
    /// close; the latency is from `connect` to the last byte of the first echo (how long a
    /// newcomer waits, for example while other connections stream). `conns` connections
    /// do it side by side, each pausing 10 ms between tries.
    Connect,
}

/// What the server is expected to reply to each byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expect {
    /// ASCII uppercase (`nbecho serve`, the default).
    #[default]
    Upper,
    /// The byte as sent (a plain echo server, `nbecho serve --mode echo`).
    Echo,
}

impl Expect {
    /// The reply expected for `sent`.
    pub fn reply(self, sent: u8) -> u8 {
        match self {
            Self::Upper => sent.to_ascii_uppercase(),
            Self::Echo => sent,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Upper => "upper",
            Self::Echo => "echo",
        }
    }
}

/// What `bench` runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server.
    pub connect: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Bytes per message.
    pub size: usize,
    /// How long to run.
    pub duration: Duration,
    /// Ping-pong, stream or idle.
    pub mode: Mode,
    /// Ping-pong at this many messages per second in total, instead of as fast as possible.
    pub rate: Option<f64>,
    /// The server's pid, to read its CPU time from /proc.
    pub server_pid: Option<u32>,
    /// Draw a progress bar on stderr (only if it is a terminal).
    pub progress: bool,
    /// What each reply byte must be.
    pub expect: Expect,
}

/// Why `bench` could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A connection could not be made.
    Connect(SocketAddr, io::Error),
    /// The event loop failed.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// Wall time measured.
    pub elapsed: Duration,
    /// Messages whose whole echo came back and was verified.
    pub messages: u64,
    /// Echo bytes received and verified.
    pub bytes: u64,
    /// Connections that failed (reset, closed early).
    pub errors: u64,
    /// Reply bytes that were not what [`Options::expect`] says.
    pub mismatches: u64,
    /// Connections made: fewer than asked for when `duration` ran out while connecting.
    pub connected: usize,
    /// Latency percentiles in microseconds: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// The server's CPU time during the run, if its pid was given.
    pub server_cpu: Option<Duration>,
}

impl Report {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// Megabytes (10^6) of verified echo per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6
    }

    /// Server CPU microseconds per message.
    pub fn server_cpu_us_per_msg(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.messages > 0).then(|| cpu.as_secs_f64() * 1e6 / self.messages as f64)
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        let o = &self.options;
        let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.3}"));
        format!(
            "{{\"mode\":\"{}\",\"expect\":\"{}\",\"connected\":{},\"conns\":{},\"size\":{},\"rate\":{},\"elapsed_s\":{:.3},\"messages\":{},\
             \"bytes\":{},\"msgs_per_s\":{:.1},\"mb_per_s\":{:.3},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\
             \"max_us\":{},\"errors\":{},\"mismatches\":{},\"server_cpu_s\":{},\"server_cpu_us_per_msg\":{}}}",
            mode_name(o.mode),
            o.expect.name(),
            self.connected,
            o.conns,
            o.size,
            opt(o.rate),
            self.elapsed.as_secs_f64(),
            self.messages,
            self.bytes,
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.latency_us[0],
            self.latency_us[1],
            self.latency_us[2],
            self.latency_us[3],
            self.errors,
            self.mismatches,
            opt(self.server_cpu.map(|d| d.as_secs_f64())),
            opt(self.server_cpu_us_per_msg()),
        )
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::PingPong => "pingpong",
        Mode::Stream => "stream",
        Mode::Idle => "idle",
        Mode::Connect => "connect",
    }
}

/// The server's CPU time since `before`, if its pid was given and readable.
fn cpu_since(pid: Option<u32>, before: Option<Duration>) -> Option<Duration> {
    let after = process_cpu(pid?).ok()?;
    Some(after.saturating_sub(before?))
}

/// p50, p99, p99.9 and max.
fn percentiles(histogram: &Histogram<u64>) -> [u64; 4] {
    [
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
    ]
}

/// Pause between two tries of one lane in [`Mode::Connect`].
const CONNECT_PAUSE: Duration = Duration::from_millis(10);

/// [`Mode::Connect`]: `conns` threads, each trying new connections until the end.
fn run_connect(options: &Options) -> Result<Report, Error> {
    let start = Instant::now();
    let end = start + options.duration;
    let cpu_start = options.server_pid.and_then(|pid| process_cpu(pid).ok());
    let lanes: Vec<_> = (0..options.conns)
        .map(|lane| {
            let options = options.clone();
            std::thread::spawn(move || connect_lane(&options, lane, end))
        })
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut tally = Tally::default();
    for lane in lanes {
        let (lane_tally, lane_histogram) = lane.join().expect("a bench lane panicked")?;
        tally.messages += lane_tally.messages;
        tally.bytes += lane_tally.bytes;
        tally.errors += lane_tally.errors;
        tally.mismatches += lane_tally.mismatches;
        histogram.add(lane_histogram).expect("same bounds");
    }
    let elapsed = start.elapsed();
    let server_cpu = cpu_since(options.server_pid, cpu_start);
    Ok(Report {
        options: options.clone(),
        elapsed,
        messages: tally.messages,
        bytes: tally.bytes,
        errors: tally.errors,
        mismatches: tally.mismatches,
        connected: options.conns,
        latency_us: percentiles(&histogram),
        server_cpu,
    })
}

/// One lane of [`Mode::Connect`]: blocking sockets, one connection at a time.
fn connect_lane(
    options: &Options,
    lane: usize,
    end: Instant,
) -> Result<(Tally, Histogram<u64>), Error> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut tally = Tally::default();
    let size = options.size.max(1);
    let message: Vec<u8> = (0..size as u64).map(|i| sent_byte(lane, i)).collect();
    let mut reply = vec![0u8; size];
    while Instant::now() < end {
        let began = Instant::now();
        let echoed = (|| -> io::Result<()> {
            let mut stream = std::net::TcpStream::connect(options.connect)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(
                end.saturating_duration_since(Instant::now())
                    .max(Duration::from_secs(1)),
            ))?;
            stream.write_all(&message)?;
            stream.read_exact(&mut reply)
        })();
        match echoed {
            Ok(()) => {
                let micros = began.elapsed().as_micros() as u64;
                histogram.saturating_record(micros.max(1));
                tally.messages += 1;
                tally.bytes += size as u64;
                tally.mismatches += reply
                    .iter()
                    .zip(&message)
                    .filter(|(got, sent)| **got != options.expect.reply(**sent))
                    .count() as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && tally.messages == 0 => {
                return Err(Error::Connect(options.connect, e));
            }
            Err(_) => tally.errors += 1,
        }
        std::thread::sleep(CONNECT_PAUSE);
    }
    Ok((tally, histogram))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let rate = o.rate.map_or(String::new(), |r| format!(" at {r} msgs/s"));
        writeln!(
            f,
            "nbecho bench: {} conns, {} B, {}{rate}, expecting {}, {:.1} s",
            o.conns,
            o.size,
            mode_name(o.mode),
            o.expect.name(),
            self.elapsed.as_secs_f64()
        )?;
        if self.connected < o.conns {
            writeln!(
                f,
                "  connected   only {} of {} before --duration ran out",
                self.connected, o.conns
            )?;
        }
        if o.mode == Mode::Idle {
            // Nothing is sent: what there is to see is whether the connections held.
            write!(
                f,
                "  held        {} connections, silent, for {:.1} s; {} failed",
                self.connected,
                self.elapsed.as_secs_f64(),
                self.errors
            )?;
        } else {
            writeln!(
                f,
                "  messages    {} ({:.0} msgs/s)",
                self.messages,
                self.msgs_per_sec()
            )?;
            if self.mismatches == 0 {
                writeln!(
                    f,
                    "  throughput  {:.2} MB/s of verified echo",
                    self.mb_per_sec()
                )?;
            } else {
                writeln!(
                    f,
                    "  throughput  {:.2} MB/s of replies, NOT verified: {} bytes were not what --expect {} says",
                    self.mb_per_sec(),
                    self.mismatches,
                    o.expect.name()
                )?;
            }
            let [p50, p99, p999, max] = self.latency_us;
            writeln!(
                f,
                "  latency     p50 {p50} us, p99 {p99} us, p99.9 {p999} us, max {max} us"
            )?;
            write!(
                f,
                "  errors      {}, mismatches {}",
                self.errors, self.mismatches
            )?;
        }
        if let Some(cpu) = self.server_cpu {
            match self.server_cpu_us_per_msg() {
                Some(per) if o.mode != Mode::Idle => write!(
                    f,
                    "\n  server CPU  {:.2} s, {per:.2} us per message",
                    cpu.as_secs_f64()
                )?,
                _ => write!(f, "\n  server CPU  {:.2} s", cpu.as_secs_f64())?,
            }
        }
        Ok(())
    }
}

/// The byte a message carries at a position: lowercase letters, varying by connection,
/// message and offset.
fn sent_byte(conn: usize, position: u64) -> u8 {
    b'a' + ((position.wrapping_mul(7) + conn as u64 * 3) % 26) as u8
}

struct Conn {
    stream: mio::net::TcpStream,
    alive: bool,
    /// Stream position of the next byte to send / the next reply byte expected.
    sent: u64,
    received: u64,
    /// Bytes to send in all, so far (ping-pong: up to the end of the current message).
    send_limit: u64,
    /// When each message in flight was (or should have been) sent, oldest first.
    in_flight: std::collections::VecDeque<Instant>,
    /// Fixed rate: when the next message is due.
    next_due: Option<Instant>,
}

/// CPU time of a process so far, all threads, in nanoseconds of precision (the first
/// field of each `/proc/PID/task/TID/schedstat`).
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        let ns = schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok());
        total += ns.ok_or_else(|| io::Error::other("unexpected schedstat format"))?;
    }
    Ok(Duration::from_nanos(total))
}

/// Runs the load and returns what it measured.
pub fn run(options: &Options) -> Result<Report, Error> {
    if options.mode == Mode::Connect {
        return run_connect(options);
    }
    let mut poll = Poll::new().map_err(Error::Io)?;
    let mut conns = Vec::with_capacity(options.conns);
    // `duration` bounds the whole run, connecting included.
    let end = Instant::now() + options.duration;
    for i in 0..options.conns {
        if Instant::now() >= end {
            break;
        }
        let std = std::net::TcpStream::connect(options.connect)
            .map_err(|e| Error::Connect(options.connect, e))?;
        std.set_nodelay(true).map_err(Error::Io)?;
        std.set_nonblocking(true).map_err(Error::Io)?;
        let mut stream = mio::net::TcpStream::from_std(std);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(Error::Io)?;
        conns.push(Conn {
            stream,
            alive: true,
            sent: 0,
            received: 0,
            send_limit: 0,
            in_flight: Default::default(),
            next_due: None,
        });
    }

    let size = options.size.max(1) as u64;
    let per_conn_interval = options
        .rate
        .filter(|&r| r > 0.0)
        .map(|r| Duration::from_secs_f64(options.conns as f64 / r));
    let start = Instant::now();
    let cpu_start = options.server_pid.and_then(|pid| process_cpu(pid).ok());
    for (i, c) in conns.iter_mut().enumerate() {
        match options.mode {
            Mode::Idle | Mode::Connect => {}
            Mode::Stream => c.send_limit = u64::MAX,
            Mode::PingPong => match per_conn_interval {
                // Spread the first sends over one interval.
                Some(every) => {
                    c.next_due = Some(start + every.mul_f64(i as f64 / options.conns as f64))
                }
                None => {
                    c.send_limit = size;
                    c.in_flight.push_back(start);
                }
            },
        }
    }

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let progress = progress_bar(options);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = vec![0u8; 64 * 1024];
    let mut last_tick = start;
    // Every connection is pumped once to start; then only those with events, or with a
    // fixed-rate message come due.
    let mut ready: Vec<usize> = (0..conns.len()).collect();
    let mut tally = Tally::default();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut next_wake = end;
        if let Some(every) = per_conn_interval {
            for (i, c) in conns.iter_mut().enumerate().filter(|(_, c)| c.alive) {
                let Some(due) = c.next_due else { continue };
                if due <= now {
                    c.send_limit += size;
                    c.in_flight.push_back(due);
                    c.next_due = Some(due + every);
                    ready.push(i);
                }
                next_wake = next_wake.min(c.next_due.unwrap_or(end));
            }
        }
        for i in ready.drain(..) {
            let c = &mut conns[i];
            if c.alive
                && pump(
                    i,
                    c,
                    size,
                    options.mode,
                    options.expect,
                    &mut buf,
                    &mut out,
                    &mut histogram,
                    &mut tally,
                )
                .is_err()
            {
                tally.errors += 1;
                c.alive = false;
            }
        }
        if let Some(bar) = &progress {
            if now.duration_since(last_tick) >= Duration::from_millis(200) {
                last_tick = now;
                bar.set_position(now.duration_since(start).as_millis() as u64);
                bar.set_message(format!(
                    "{} msgs, {} errors, {} mismatches",
                    tally.messages, tally.errors, tally.mismatches
                ));
            }
        }
        let timeout = next_wake
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => ready.extend(events.iter().map(|e| e.token().0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    let elapsed = start.elapsed();
    let server_cpu = cpu_since(options.server_pid, cpu_start);
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if options.mode == Mode::Idle {
        // Still open? A read must would-block, not report end-of-stream or a reset.
        for c in &mut conns {
            match c.stream.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => tally.errors += 1,
            }
        }
    }
    let latency_us = percentiles(&histogram);
    let connected = conns.len();
    let Tally {
        messages,
        bytes,
        errors,
        mismatches,
    } = tally;
    Ok(Report {
        options: options.clone(),
        elapsed,
        messages,
        bytes,
        errors,
        mismatches,
        connected,
        latency_us,
        server_cpu,
    })
}

fn progress_bar(options: &Options) -> Option<indicatif::ProgressBar> {
    if !options.progress || !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(options.duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
            .expect("a valid template"),
    );
    Some(bar)
}

/// Counts of a run so far.
#[derive(Debug, Default)]
struct Tally {
    messages: u64,
    bytes: u64,
    errors: u64,
    mismatches: u64,
}

/// Writes and reads one connection until both would block (edge-triggered readiness
/// reports it again only after that), counting into `tally`.
#[allow(clippy::too_many_arguments)]
fn pump(
    i: usize,
    c: &mut Conn,
    size: u64,
    mode: Mode,
    expect: Expect,
    buf: &mut [u8],
    out: &mut [u8],
    histogram: &mut Histogram<u64>,
    tally: &mut Tally,
) -> io::Result<()> {
    loop {
        send(i, c, size, mode, out)?;
        let completed = receive(i, c, size, mode, expect, buf, histogram, tally)?;
        // Ping-pong as fast as possible: a completed echo released the next message,
        // which can go at once.
        if mode != Mode::PingPong || completed == 0 || c.sent >= c.send_limit {
            return Ok(());
        }
    }
}

/// Sends what is due until the socket would block.
fn send(i: usize, c: &mut Conn, size: u64, mode: Mode, out: &mut [u8]) -> io::Result<()> {
    while c.sent < c.send_limit {
        let n = (c.send_limit - c.sent).min(out.len() as u64) as usize;
        for (k, b) in out[..n].iter_mut().enumerate() {
            *b = sent_byte(i, c.sent + k as u64);
        }
        match c.stream.write(&out[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                let before = c.sent;
                c.sent += written as u64;
                if mode == Mode::Stream {
                    // A message boundary crossed: its latency clock starts now.
                    let now = Instant::now();
                    for _ in before / size..c.sent / size {
                        c.in_flight.push_back(now);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and verifies the echo until the socket would block; returns the messages it
/// completed.
#[allow(clippy::too_many_arguments)]
fn receive(
    i: usize,
    c: &mut Conn,
    size: u64,
    mode: Mode,
    expect: Expect,
    buf: &mut [u8],
    histogram: &mut Histogram<u64>,
    tally: &mut Tally,
) -> io::Result<u64> {
    let mut completed = 0;
    loop {
        match c.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                for (k, &b) in buf[..n].iter().enumerate() {
                    if b != expect.reply(sent_byte(i, c.received + k as u64)) {
                        tally.mismatches += 1;
                    }
                }
                let before = c.received;
                c.received += n as u64;
                tally.bytes += n as u64;
                let now = Instant::now();
                for _ in before / size..c.received / size {
                    if let Some(sent_at) = c.in_flight.pop_front() {
                        let us = now.duration_since(sent_at).as_micros() as u64;
                        let _ = histogram.record(us.max(1));
                    }
                    completed += 1;
                    if mode == Mode::PingPong && c.next_due.is_none() {
                        c.send_limit += size;
                        c.in_flight.push_back(now);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    tally.messages += completed;
    Ok(completed)
}
