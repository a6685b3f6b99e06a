//! `nbecho serve`: the core's driver over non-blocking std sockets, polling model.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use nbecho_core::{
    Config, ConnId, Driver, Duration, Instant, Scheduling, Server, Service, Slot, Stats, Step,
    Storage, StorageError,
};
use tracing::{debug, info, warn};

use crate::arena::Arena;
use crate::clock::Clock;
use crate::net::{self, Accept, MioListener, MioStream, NetListener, NetStream};

/// Evaluates `$body` with `$service` bound to the service that `$options.mode` asks for,
/// so that each driver loop is compiled once per service (a transform's branches compile
/// away). A macro rather than a function taking a closure: the loop is generic over the
/// service, and one body is an `async` block's.
macro_rules! with_service {
    ($options:expr, |$service:ident| $body:expr) => {
        // A type per protocol, not `Mode`'s one with a branch per message: the uppercase
        // is then inlined into the loop (10 fewer instructions per 64 B message, for a
        // binary 1% larger).
        match $options.mode {
            $crate::serve::Protocol::Upper => {
                let $service = ::nbecho_core::Uppercase;
                $body
            }
            $crate::serve::Protocol::Echo => {
                let $service = ::nbecho_core::Identity;
                $body
            }
            $crate::serve::Protocol::Lines => {
                // A line counter per connection, made once like the rest of the memory.
                let mut lines = vec![::nbecho_core::LineState::NEW; $options.limits.max_conns];
                let $service = ::nbecho_core::NumberedLines::new(&mut lines);
                $body
            }
        }
    };
}
#[cfg(all(feature = "uring", target_os = "linux"))]
pub(crate) use with_service;

/// The most buffer memory `serve` reserves (address space; pages are committed only when
/// used). Past this, asking is almost certainly a typo, and an allocation failure would
/// abort the process instead of giving a clear error.
pub const MAX_BUFFER_MEMORY: usize = 4 << 30;

/// How much a server holds and how long it waits: the part of [`Options`] every driver
/// takes, and the whole of the tokio driver's options (`tokio::Options`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Connections held at once; more are refused. Default 1024.
    pub max_conns: usize,
    /// Bytes per connection buffer. Default 4096.
    pub buffer_size: usize,
    /// Buffers in the pool, lent only to connections that hold data. Default 1024.
    pub buffers: usize,
    /// Bytes per large buffer, lent to connections that move data in bulk (used only if
    /// larger than `buffer_size`). Default 64 KiB.
    pub large_buffer_size: usize,
    /// Large buffers in their pool; 0: none. Default 64.
    pub large_buffers: usize,
    /// Close connections idle this long; `None`: never. Default 300 s.
    pub idle_timeout: Option<StdDuration>,
    /// How long a graceful stop may take before connections are forced closed. Default
    /// 5 s.
    pub shutdown_timeout: StdDuration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_conns: 1024,
            buffer_size: 4096,
            buffers: 1024,
            large_buffer_size: 64 * 1024,
            large_buffers: 64,
            idle_timeout: Some(StdDuration::from_secs(300)),
            shutdown_timeout: StdDuration::from_secs(5),
        }
    }
}

/// What `serve` runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Connections, buffers and timeouts.
    pub limits: Limits,
    /// [`DriverKind::Uring`]: how long a read may wait in the kernel for a connection's
    /// next data, holding its buffer ([`Config::read_wait`]); `None`: reads never wait.
    pub read_wait: Option<StdDuration>,
    /// What the server answers.
    pub mode: Protocol,
    /// How connections are driven.
    pub driver: DriverKind,
    /// Independent servers, one per thread, each with its own listener on the same port
    /// (`SO_REUSEPORT`); `max_conns` and `buffers` are split between them.
    pub threads: usize,
}

/// What the server answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// An echo, ASCII letters uppercased (the core's [`Mode::Upper`](nbecho_core::Mode::Upper)).
    #[default]
    Upper,
    /// A plain echo ([`Mode::Echo`](nbecho_core::Mode::Echo)).
    Echo,
    /// Numbered lines ([`NumberedLines`](nbecho_core::NumberedLines)): `1: first line`,
    /// ..., `bye` and a close on `quit`.
    Lines,
}

impl Protocol {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Upper => "upper",
            Self::Echo => "echo",
            Self::Lines => "lines",
        }
    }
}

/// How connections are driven.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DriverKind {
    /// The textbook loop: every connection tried each pass; sleeps with a growing
    /// back-off while nothing happens.
    #[default]
    Poll,
    /// Readiness from epoll (mio, edge-triggered): only connections that became ready are
    /// tried; with nothing ready the thread blocks until readiness, a timer or a signal.
    Epoll,
    /// The core in a tokio task ([`crate::tokio`]), one current-thread runtime per
    /// thread: readiness through tokio's reactor. No per-connection log lines (`-v`).
    #[cfg(feature = "tokio")]
    Tokio,
    /// Completion I/O ([`crate::uring`], Linux 6.0 or later): readiness from multishot
    /// polls, and the reads and writes of every ready connection submitted together, one
    /// system call for a whole batch.
    #[cfg(feature = "uring")]
    Uring,
}

impl DriverKind {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Epoll => "epoll",
            #[cfg(feature = "tokio")]
            Self::Tokio => "tokio",
            #[cfg(feature = "uring")]
            Self::Uring => "uring",
        }
    }
}

/// Why `serve` could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Binding or listening failed (address in use, permission, ...).
    Listen(SocketAddr, io::Error),
    /// The epoll driver could not be set up.
    Epoll(io::Error),
    /// SIGINT and SIGTERM could not be caught.
    Signals(io::Error),
    /// io_uring is missing, disabled, or lacks what the driver needs.
    #[cfg(feature = "uring")]
    Uring(io::Error),
    /// The tokio runtime could not be set up.
    #[cfg(feature = "tokio")]
    Tokio(io::Error),
    /// The sizes do not make a valid server.
    Storage(StorageError),
    /// `buffers * buffer_size` is over [`MAX_BUFFER_MEMORY`].
    TooMuchMemory(usize),
    /// Fewer connection slots or buffers than threads.
    TooManyThreads(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Self::Epoll(e) => write!(f, "cannot set up epoll: {e}"),
            Self::Signals(e) => write!(f, "cannot install signal handlers: {e}"),
            #[cfg(feature = "tokio")]
            Self::Tokio(e) => write!(f, "cannot set up tokio: {e}"),
            #[cfg(feature = "uring")]
            Self::Uring(e) => write!(
                f,
                "cannot use io_uring: {e}; run with --driver epoll instead"
            ),
            Self::Storage(e) => write!(f, "invalid sizes: {e}"),
            Self::TooManyThreads(n) => {
                write!(f, "{n} threads need at least {n} connections (--max-conns) and buffers (--buffers)")
            }
            Self::TooMuchMemory(n) => write!(
                f,
                "buffers would take {n} bytes, over the limit of {MAX_BUFFER_MEMORY}; \
                 lower --buffers or --buffer-size"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// How a server that ran ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The counters at the end.
    pub stats: Stats,
    /// A second stop signal ended the graceful stop at once.
    pub stopped_at_once: bool,
}

impl Outcome {
    /// True when every connection was closed cleanly: none forced at the deadline, which
    /// only happens to connections whose replies were not all delivered (a connection
    /// whose output the peer acknowledged is closed at once, even if the peer keeps its
    /// side open).
    pub fn is_clean(&self) -> bool {
        self.stats.forced == 0
    }
}

/// SIGINT and SIGTERM, counted through a self-pipe: signal-hook's handler writes one byte
/// per signal, which also wakes a thread blocked in epoll. One per server thread.
#[derive(Debug)]
pub(crate) struct SignalPipe {
    pub(crate) read: mio::net::UnixStream,
}

impl SignalPipe {
    pub(crate) fn new() -> io::Result<Self> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
        }
        Ok(Self {
            read: mio::net::UnixStream::from_std(read),
        })
    }

    /// Signals received since the last call.
    pub(crate) fn take(&mut self) -> usize {
        let mut count = 0;
        let mut bytes = [0u8; 64];
        while let Ok(n @ 1..) = io::Read::read(&mut self.read, &mut bytes) {
            count += n;
        }
        count
    }
}

/// Allows one log line per interval and counts the ones it holds back.
#[derive(Debug, Default)]
struct Throttle {
    last: Option<std::time::Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now - last < StdDuration::from_secs(1))
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// The longest single sleep of the polling driver: how quickly a signal is noticed.
pub(crate) const MAX_NAP: StdDuration = StdDuration::from_millis(20);

/// Binds and serves until `stop` is set or SIGINT/SIGTERM arrives, then shuts down
/// gracefully; a second signal stops at once (every connection force-closed).
///
/// `on_listening` is called with the bound address once the socket listens.
pub fn run(
    options: &Options,
    stop: &AtomicBool,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<Outcome, Error> {
    let memory = options
        .limits
        .buffers
        .saturating_mul(options.limits.buffer_size)
        .saturating_add(large_arena_len(&options.limits));
    if memory > MAX_BUFFER_MEMORY {
        return Err(Error::TooMuchMemory(memory));
    }
    let threads = options.threads.max(1);
    if options.limits.max_conns < threads || options.limits.buffers < threads {
        return Err(Error::TooManyThreads(threads));
    }
    // A driver that cannot run here says so before anything listens.
    #[cfg(all(feature = "uring", target_os = "linux"))]
    if options.driver == DriverKind::Uring {
        crate::uring::check().map_err(Error::Uring)?;
    }
    let listen_error = |e| Error::Listen(options.listen, e);
    let first = net::bind(options.listen, 1024, threads > 1).map_err(listen_error)?;
    let addr = first.local_addr().map_err(listen_error)?;
    // The others bind the real port (port 0 picked one).
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(net::bind(addr, 1024, true).map_err(listen_error)?);
    }
    info!(
        max_conns = options.limits.max_conns,
        buffer_size = options.limits.buffer_size,
        buffers = options.limits.buffers,
        large_buffer_size = options.limits.large_buffer_size,
        large_buffers = large_arena_len(&options.limits) / options.limits.large_buffer_size.max(1),
        mode = %options.mode.name(),
        driver = %options.driver.name(),
        threads,
        "listening on {addr}"
    );
    on_listening(addr);
    if threads == 1 {
        return serve_on(options, stop, listeners.pop().expect("one listener"));
    }
    // Split the per-process caps: the first threads take the remainders.
    let share = |total: usize, i: usize| total / threads + usize::from(i < total % threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let options = Options {
                    limits: Limits {
                        max_conns: share(options.limits.max_conns, i),
                        buffers: share(options.limits.buffers, i),
                        large_buffers: share(options.limits.large_buffers, i),
                        ..options.limits.clone()
                    },
                    ..options.clone()
                };
                std::thread::Builder::new()
                    .name(format!("nbecho-{i}"))
                    .spawn_scoped(scope, move || {
                        // Every line of this thread says which it is: `thread{n=1}: ...
                        // conn=#0.0` names one connection of the whole server.
                        let span = tracing::info_span!("thread", n = i);
                        let _entered = span.enter();
                        info!(
                            max_conns = options.limits.max_conns,
                            buffers = options.limits.buffers,
                            large_buffers = options.limits.large_buffers,
                            "serving this thread's share"
                        );
                        serve_on(&options, stop, listener)
                    })
                    .expect("spawn a server thread")
            })
            .collect();
        let mut stats = Stats::default();
        let mut stopped_at_once = false;
        for worker in workers {
            let outcome = worker.join().expect("a server thread panicked")?;
            stats += outcome.stats;
            stopped_at_once |= outcome.stopped_at_once;
        }
        info!(%stats, threads, "stopped: all threads");
        Ok(Outcome {
            stats,
            stopped_at_once,
        })
    })
}

/// One server on one listener, in this thread.
fn serve_on(
    options: &Options,
    stop: &AtomicBool,
    listener: std::net::TcpListener,
) -> Result<Outcome, Error> {
    match options.driver {
        DriverKind::Poll => serve_as(
            options,
            stop,
            Polling {
                signals: SignalPipe::new().map_err(Error::Signals)?,
            },
            NetListener::new(listener),
        ),
        DriverKind::Epoll => {
            let mut listener = NetListener::new(mio::net::TcpListener::from_std(listener));
            let epoll = Epoll::new(&mut listener).map_err(Error::Epoll)?;
            serve_as(options, stop, epoll, listener)
        }
        #[cfg(feature = "tokio")]
        DriverKind::Tokio => serve_tokio(options, stop, listener),
        #[cfg(all(feature = "uring", target_os = "linux"))]
        DriverKind::Uring => crate::uring::serve(options, stop, listener),
        #[cfg(all(feature = "uring", not(target_os = "linux")))]
        DriverKind::Uring => Err(Error::Uring(io::ErrorKind::Unsupported.into())),
    }
}

/// [`DriverKind::Tokio`]: [`crate::tokio::serve_until`] on a current-thread runtime, with
/// the same stop requests as the other drivers (the signal pipe is watched by tokio's
/// reactor; `stop` is looked at whenever the task wakes).
#[cfg(feature = "tokio")]
fn serve_tokio(
    options: &Options,
    stop: &AtomicBool,
    listener: std::net::TcpListener,
) -> Result<Outcome, Error> {
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Error::Tokio)?;
    let signals = SignalPipe::new().map_err(Error::Signals)?;
    runtime.block_on(async {
        let listener = ::tokio::net::TcpListener::from_std(listener).map_err(Error::Tokio)?;
        let signals =
            std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(signals.read));
        let signals = ::tokio::net::UnixStream::from_std(signals).map_err(Error::Signals)?;
        let mut count = 0;
        let mut announced = 0;
        let requests = |cx: &mut std::task::Context<'_>| {
            // One byte per signal. Read until would-block, then poll again: that poll is
            // what registers the task for the next signal.
            while signals.poll_read_ready(cx).is_ready() {
                let mut bytes = [0u8; 64];
                match signals.try_read(&mut bytes) {
                    Ok(n @ 1..) => count += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => break,
                }
            }
            let asked = count.max(usize::from(stop.load(Ordering::Relaxed)));
            log_stop_requests(asked, &mut announced, options.limits.shutdown_timeout, None);
            u32::try_from(asked).unwrap_or(u32::MAX)
        };
        let served = with_service!(options, |service| {
            crate::tokio::serve_until(listener, &options.limits, service, requests).await
        });
        let stats = served.map_err(Error::Storage)?;
        info!(%stats, "stopped");
        Ok(Outcome {
            stats,
            stopped_at_once: announced >= 2,
        })
    })
}

/// What differs between drivers: how to wait, and what to do with a new connection.
/// Everything else (what to do, when) is the core's.
trait Io {
    type Raw: Accept;
    const SCHEDULING: Scheduling;
    /// A new connection; an error means it cannot be served (the loop aborts it).
    fn accepted(
        &mut self,
        conn: ConnId,
        stream: &mut NetStream<<Self::Raw as Accept>::Socket>,
    ) -> io::Result<()>;
    /// Blocks until the core's `until` at the latest; `now` is the loop's last reading of
    /// `clock` (with `until` set, at most [`CLOCK_EVERY`] steps old: see [`Clock::left`];
    /// a reading skipped after a wake-up is one where the core had no deadline).
    fn wait(&mut self, clock: &Clock, now: Instant, until: Option<Instant>);
    /// Reports to the core what the wait found, at `now` (read after it, unless the core
    /// needed no time: [`Server::needs_time`]).
    fn dispatch<S: Service>(&mut self, driver: &mut IoDriver<'_, Self::Raw, S>, now: Instant);
    /// Stop signals received since the last call (checked after each wait, and every
    /// `CLOCK_EVERY` steps while the server does not wait).
    fn signals(&mut self) -> usize;
}

/// The polling driver: sleep until the core's `Wait`.
struct Polling {
    signals: SignalPipe,
}

impl Io for Polling {
    type Raw = std::net::TcpListener;
    const SCHEDULING: Scheduling = Scheduling::Polling;

    fn accepted(&mut self, _: ConnId, _: &mut NetStream<std::net::TcpStream>) -> io::Result<()> {
        Ok(())
    }

    fn wait(&mut self, clock: &Clock, _: Instant, until: Option<Instant>) {
        clock.sleep_until(until, MAX_NAP);
    }

    /// Polling: every pass tries every connection; there is nothing to report.
    fn dispatch<S: Service>(&mut self, _: &mut IoDriver<'_, Self::Raw, S>, _: Instant) {}

    fn signals(&mut self) -> usize {
        self.signals.take()
    }
}

// No connection's token: a slot index is at most `u32::MAX - 2` (a server holds at most
// `u32::MAX - 1` slots), and these two end in `u32::MAX` and `u32::MAX - 1`.
const LISTENER: mio::Token = mio::Token(usize::MAX);
const SIGNALS: mio::Token = mio::Token(usize::MAX - 1);

/// The epoll driver: block in epoll until readiness, the core's next timer, or a signal.
struct Epoll {
    poll: mio::Poll,
    events: mio::Events,
    /// Woken by SIGINT/SIGTERM (signal-hook writes to the other end), so that blocking in
    /// epoll without a timeout still notices a shutdown at once.
    signals: SignalPipe,
    /// Signals read from the pipe and not yet taken.
    signalled: usize,
}

impl Epoll {
    fn new(listener: &mut MioListener) -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        poll.registry()
            .register(listener.get_mut(), LISTENER, mio::Interest::READABLE)?;
        let mut signals = SignalPipe::new()?;
        poll.registry()
            .register(&mut signals.read, SIGNALS, mio::Interest::READABLE)?;
        Ok(Self {
            poll,
            events: mio::Events::with_capacity(1024),
            signals,
            signalled: 0,
        })
    }

    /// `epoll_wait` failed: no events (`dispatch` finds the list empty), and a nap unless a
    /// signal interrupted it, so that a lasting failure does not spin.
    #[cold]
    fn wait_failed(&mut self, e: io::Error) {
        self.events.clear();
        if e.kind() != io::ErrorKind::Interrupted {
            warn!(error = %e, "epoll_wait failed");
            std::thread::sleep(MAX_NAP);
        }
    }
}

impl Io for Epoll {
    type Raw = mio::net::TcpListener;
    const SCHEDULING: Scheduling = Scheduling::Readiness;

    fn accepted(&mut self, conn: ConnId, stream: &mut MioStream) -> io::Result<()> {
        // Edge-triggered, both directions, for the connection's whole life: an edge fires
        // only when readiness changes, so write interest costs nothing while the socket
        // stays writable, and registering once saves an epoll_ctl per would-block.
        let interest = mio::Interest::READABLE | mio::Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut stream.0, token(conn), interest)
    }

    // Inline, with its failure out of line: called once per wake-up, and as a call the
    // link-time optimiser left it, its frame (sized for the log line) was paid every time.
    #[inline(always)]
    fn wait(&mut self, clock: &Clock, now: Instant, until: Option<Instant>) {
        let timeout = until.map(|t| clock.left(now, t));
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            self.wait_failed(e);
        }
    }

    fn dispatch<S: Service>(&mut self, driver: &mut IoDriver<'_, Self::Raw, S>, now: Instant) {
        for event in self.events.iter() {
            match event.token() {
                // Connections first: one comparison tells them from the two others.
                mio::Token(token) if token < SIGNALS.0 => {
                    let Some(conn) = conn_of(token, driver.server()) else {
                        continue;
                    };
                    let failed = event.is_error();
                    let readable = event.is_readable() || failed;
                    let writable = event.is_writable() || event.is_write_closed() || failed;
                    // A quiet connection's request is answered here and now. A stale id
                    // (an event of a socket closed earlier in this batch) is refused.
                    if driver.on_ready(now, conn, readable, writable).is_ok()
                        && event.is_read_closed()
                    {
                        // The end-of-stream must be read even after a short read.
                        let _ = driver.server_mut().on_read_closed(conn);
                    }
                }
                LISTENER => driver.server_mut().on_listener_ready(),
                // SIGNALS, the only token left.
                _ => self.signalled += self.signals.take(),
            }
        }
    }

    fn signals(&mut self) -> usize {
        std::mem::take(&mut self.signalled)
    }
}

/// A connection's epoll token: its whole id ([`ConnId::to_bits`]) where a token holds
/// 64 bits, so that an event of a socket closed earlier in a batch is stale to the server
/// rather than readiness of the connection reusing its slot, and needs no lookup; else
/// its index.
fn token(conn: ConnId) -> mio::Token {
    mio::Token(usize::try_from(conn.to_bits()).unwrap_or(conn.index()))
}

/// The connection a [`token`] names (`None`: the slot is free).
fn conn_of<S: Service>(token: usize, server: &Server<'_, S>) -> Option<ConnId> {
    if usize::BITS >= u64::BITS {
        Some(ConnId::from_bits(token as u64))
    } else {
        server.conn_id(token)
    }
}

/// The generic driver over an [`Io`]'s sockets.
type IoDriver<'a, R, S> = Driver<'a, NetListener<R>, S>;

/// [`serve`] with the service the options ask for.
fn serve_as<I: Io>(
    options: &Options,
    stop: &AtomicBool,
    io: I,
    listener: NetListener<I::Raw>,
) -> Result<Outcome, Error> {
    with_service!(options, |service| serve(
        options, stop, io, listener, service
    ))
}

/// The driver loop: the core's steps, the driver's waits, logs and shutdown.
fn serve<I: Io, S: Service>(
    options: &Options,
    stop: &AtomicBool,
    mut io: I,
    listener: NetListener<I::Raw>,
    service: S,
) -> Result<Outcome, Error> {
    let mut memory = Memory::new(&options.limits);
    let mut streams: Vec<Option<NetStream<<I::Raw as Accept>::Socket>>> =
        std::iter::repeat_with(|| None)
            .take(options.limits.max_conns)
            .collect();
    let storage = memory.storage(&options.limits).map_err(Error::Storage)?;
    let config = config(&options.limits, I::SCHEDULING, options.read_wait);
    let server = Server::new(config, storage, service);
    let mut driver = Driver::new(server, listener, &mut streams)
        .expect("the stream table is made with one entry per slot");

    let clock = Clock::new();
    let mut control = Control::default();
    let mut pace = Pace::new(clock);
    pace.woke(&mut control, 0, options, stop, driver.server_mut());
    loop {
        match driver.step(pace.now) {
            Step::Recv { .. } | Step::Send { .. } | Step::AcceptWouldBlock => {}
            Step::Wait(until) => {
                // With nothing timed, the express lane and an idle poll use no time: the
                // clock is read only when the wake-up brings other work.
                let timed = driver.server().needs_time();
                io.wait(&clock, pace.now, until);
                if timed {
                    pace.read_clock();
                }
                io.dispatch(&mut driver, pace.now);
                let signals = io.signals();
                pace.woke(&mut control, signals, options, stop, driver.server_mut());
                if !timed && driver.server().needs_time() {
                    pace.read_clock();
                }
                // Counted from zero again (`woke`): no tick for the wait.
                continue;
            }
            Step::Finished => break,
            Step::Accepted(conn) => {
                if let Some(stream) = driver.stream_mut(conn) {
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        log_accepted(conn, stream.peer_addr());
                    }
                    if let Err(e) = io.accepted(conn, stream) {
                        // Unserved, it would wait for its idle timeout (or for ever).
                        warn!(%conn, error = %e, "cannot register with epoll; closing the connection");
                        let _ = driver.server_mut().abort(conn);
                    }
                }
            }
            Step::Refused => control.refused(options, driver.server().stats()),
            Step::AcceptFailed(kind) => {
                let error = driver.listener_mut().take_last_error();
                control.accept_failed(kind, error, driver.server().stats());
            }
            Step::Shutdown(conn) => log_shutdown(conn),
            Step::Closed(conn, reason) => log_closed(conn, reason),
            _ => {}
        }
        if pace.tick() {
            pace.read_clock();
            let signals = io.signals();
            pace.woke(&mut control, signals, options, stop, driver.server_mut());
        }
    }
    Ok(control.outcome(driver.server().stats()))
}

/// When a driver loop reads the clock and acts on stop requests: after each wait, and
/// every [`CLOCK_EVERY`] steps so that a server that never waits still sees time pass and
/// signals (a signal also ends a wait). Once per wake-up, not once per operation: reading
/// the clock costs more than a step of the core, and deadlines set from a `now` a few steps
/// old come that much earlier, which is negligible. The loop also skips the reading
/// after a wake-up when the core needs no time ([`Server::needs_time`]: no deadline armed,
/// nothing to do but wait), until the wake-up brings work.
#[derive(Debug)]
pub(crate) struct Pace {
    /// The time the core is told.
    pub(crate) now: Instant,
    steps: u32,
    clock: Clock,
}

impl Pace {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            now: clock.now(),
            steps: 0,
            clock,
        }
    }

    /// Reads the clock (after a wait, before reporting what it brought).
    pub(crate) fn read_clock(&mut self) -> Instant {
        self.now = self.clock.now();
        self.now
    }

    /// Counts a step other than a wait (after a wait, [`woke`](Self::woke) starts the
    /// count again); true when it is time to read the clock and the signals again.
    pub(crate) fn tick(&mut self) -> bool {
        self.steps += 1;
        self.steps >= CLOCK_EVERY
    }

    /// After a wait (and [`read_clock`](Self::read_clock)), or when [`tick`](Self::tick)
    /// says so: counts the `signals` the driver saw and acts on stop requests.
    #[inline]
    pub(crate) fn woke<S: Service, F: nbecho_core::Flights>(
        &mut self,
        control: &mut Control,
        signals: usize,
        options: &Options,
        stop: &AtomicBool,
        server: &mut Server<'_, S, F>,
    ) {
        self.steps = 0;
        if control.stop_requested(signals, options, stop, server, &self.clock) {
            self.read_clock();
        }
    }
}

/// What every driver loop shares around the core: stop requests (the caller's `stop`,
/// then each SIGINT/SIGTERM: the first starts a graceful stop, a second one stops at
/// once) and the log lines that are throttled.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Signals received so far.
    pub(crate) signals: usize,
    /// Stop requests acted on so far.
    handled: usize,
    refusals: Throttle,
    accept_errors: Throttle,
}

impl Control {
    /// Counts `signals` new ones and acts on stop requests not acted on yet; true when it
    /// did (it read the clock).
    #[inline]
    fn stop_requested<S: Service, F: nbecho_core::Flights>(
        &mut self,
        signals: usize,
        options: &Options,
        stop: &AtomicBool,
        server: &mut Server<'_, S, F>,
        clock: &Clock,
    ) -> bool {
        // No new signal and no stop asked by the caller: nothing new, since every request
        // seen before was acted on when it was seen.
        if signals == 0 && !stop.load(Ordering::Relaxed) {
            return false;
        }
        self.signals += signals;
        let requests = self.signals.max(usize::from(stop.load(Ordering::Relaxed)));
        if requests <= self.handled {
            return false;
        }
        self.stop(requests, options, server, clock);
        true
    }

    /// Acts on `requests` stop requests: the first begins a graceful stop, a second one
    /// stops at once. Out of line: once or twice in a server's life.
    #[cold]
    #[inline(never)]
    fn stop<S: Service, F: nbecho_core::Flights>(
        &mut self,
        requests: usize,
        options: &Options,
        server: &mut Server<'_, S, F>,
        clock: &Clock,
    ) {
        let first = self.handled == 0;
        log_stop_requests(
            requests,
            &mut self.handled,
            options.limits.shutdown_timeout,
            Some(server.stats()),
        );
        let now = clock.now();
        if first {
            let grace = Duration::from_micros(micros(options.limits.shutdown_timeout));
            server.begin_shutdown(now + grace);
        }
        if requests >= 2 {
            server.begin_shutdown(now);
        }
    }

    /// A connection was refused at capacity: a warning at most once a second.
    pub(crate) fn refused(&mut self, options: &Options, stats: &Stats) {
        if let Some(held) = self.refusals.ready() {
            warn!(
                max_conns = options.limits.max_conns,
                refused_total = stats.refused,
                held_back = held,
                "at capacity: refusing connections"
            );
        }
    }

    /// An accept failed (`error` is the OS's, when known): a warning at most once a second.
    pub(crate) fn accept_failed(
        &mut self,
        kind: nbecho_core::ErrorKind,
        error: Option<io::Error>,
        stats: &Stats,
    ) {
        if let Some(held) = self.accept_errors.ready() {
            warn!(
                ?kind,
                error = error.as_ref().map(|e| e.to_string()),
                errors_total = stats.accept_errors,
                held_back = held,
                "accept failed; backing off"
            );
        }
    }

    /// The server finished with these counters.
    pub(crate) fn outcome(&self, stats: &Stats) -> Outcome {
        let stats = *stats;
        info!(%stats, "stopped");
        Outcome {
            stats,
            stopped_at_once: self.handled >= 2,
        }
    }
}

pub(crate) fn log_accepted(conn: ConnId, peer: io::Result<SocketAddr>) {
    match peer {
        Ok(peer) => debug!(%conn, %peer, "accepted"),
        Err(_) => debug!(%conn, "accepted"),
    }
}

pub(crate) fn log_shutdown(conn: ConnId) {
    debug!(%conn, "flushed; write side shut down");
}

pub(crate) fn log_closed(conn: ConnId, reason: nbecho_core::CloseReason) {
    debug!(%conn, %reason, "closed");
}

/// Logs the stop requests (signals, or the caller's `stop`) not logged yet: the first
/// starts the graceful stop, a second one stops at once. `logged` is how many were.
fn log_stop_requests(
    asked: usize,
    logged: &mut usize,
    timeout: StdDuration,
    stats: Option<&Stats>,
) {
    let active = stats.map(|s| s.active);
    if asked >= 1 && *logged == 0 {
        info!(
            active,
            "shutting down: flushing open connections (deadline in {timeout:?}; a second signal stops at once)"
        );
    }
    if asked >= 2 && *logged < 2 {
        warn!(
            active,
            unsent_bytes = stats.map(Stats::bytes_buffered),
            "second signal: stopping now, closing every connection"
        );
    }
    *logged = (*logged).max(asked);
}

/// All the memory a server will ever use, made once: slot headers, and buffer arenas of
/// zeroed pages (which cost nothing until a buffer is first lent), page-aligned (see
/// [`Arena`]).
pub(crate) struct Memory {
    slots: Vec<Slot>,
    arena: Arena,
    large_arena: Arena,
}

impl Memory {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            slots: vec![Slot::EMPTY; limits.max_conns],
            arena: Arena::new(limits.buffers.saturating_mul(limits.buffer_size)),
            large_arena: Arena::new(large_arena_len(limits)),
        }
    }

    /// The core's storage in it.
    pub(crate) fn storage(&mut self, limits: &Limits) -> Result<Storage<'_>, StorageError> {
        let storage = Storage::new(
            &mut self.slots,
            self.arena.as_mut_slice(),
            limits.buffer_size,
        )?;
        if self.large_arena.is_empty() {
            return Ok(storage);
        }
        storage.with_large_buffers(self.large_arena.as_mut_slice(), limits.large_buffer_size)
    }
}

/// The core's configuration for `limits`, for TCP sockets; `read_wait` as
/// [`Options::read_wait`].
pub(crate) fn config(
    limits: &Limits,
    scheduling: Scheduling,
    read_wait: Option<StdDuration>,
) -> Config {
    let mut config = Config::default();
    config.scheduling = scheduling;
    // TCP sockets: a short read emptied the receive queue, and what arrives later raises a
    // new readiness edge (polling tries again next pass anyway); the peer's FIN is
    // reported apart (`on_read_closed`), so it is read however short the read before it.
    config.short_reads_drain = true;
    config.idle_timeout = limits
        .idle_timeout
        .map(|t| Duration::from_micros(micros(t)));
    // The first idle back-off steps are short and waited precisely (see
    // `Clock::sleep_until`): a connection idle for a few microseconds is served at once.
    config.idle_backoff_min = Duration::from_micros(5);
    // Only completion scheduling has reads that wait.
    config.read_wait = read_wait.map(|t| Duration::from_micros(micros(t)));
    config
}

/// Bytes of large buffers: none unless they are larger than the small ones.
fn large_arena_len(limits: &Limits) -> usize {
    if limits.large_buffer_size > limits.buffer_size {
        limits
            .large_buffers
            .saturating_mul(limits.large_buffer_size)
    } else {
        0
    }
}

/// Steps between two clock reads while the server does not wait.
const CLOCK_EVERY: u32 = 64;

/// `d` in microseconds, the core's unit (saturating: `u64` microseconds last 584,000
/// years).
pub(crate) fn micros(d: StdDuration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
