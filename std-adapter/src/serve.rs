//! `nbecho serve`: the core's driver over non-blocking std sockets, polling model.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use nbecho_core::{
    Config, Driver, Duration, Mode, Scheduling, Server, Slot, Stats, Step, Storage, StorageError,
};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::net::{StdListener, StdStream};

/// The most buffer memory `serve` reserves (address space; pages are committed only when
/// used). Past this, asking is almost certainly a typo, and an allocation failure would
/// abort the process instead of giving a clear error.
pub const MAX_BUFFER_MEMORY: usize = 4 << 30;

/// What `serve` runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Connections held at once; more are refused.
    pub max_conns: usize,
    /// Bytes per connection buffer.
    pub buffer_size: usize,
    /// Buffers in the pool, lent to connections that hold data.
    pub buffers: usize,
    /// Close connections idle this long; `None`: never.
    pub idle_timeout: Option<StdDuration>,
    /// How long a graceful shutdown may take before connections are forced closed.
    pub shutdown_timeout: StdDuration,
    /// Uppercase or plain echo.
    pub mode: Mode,
}

/// Why `serve` could not run.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Binding or listening failed (address in use, permission, ...).
    Listen(SocketAddr, io::Error),
    /// The sizes do not make a valid server.
    Storage(StorageError),
    /// `buffers * buffer_size` is over [`MAX_BUFFER_MEMORY`].
    TooMuchMemory(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Self::Storage(e) => write!(f, "invalid sizes: {e}"),
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
}

impl Outcome {
    /// True when every connection was closed cleanly (none forced at the deadline).
    pub fn is_clean(&self) -> bool {
        self.stats.forced == 0
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

/// The longest single sleep: how quickly a shutdown signal is noticed.
const MAX_NAP: StdDuration = StdDuration::from_millis(20);

/// Binds and serves until `stop` is set, then shuts down gracefully.
///
/// `on_listening` is called with the bound address once the socket listens.
pub fn run(
    options: &Options,
    stop: &AtomicBool,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<Outcome, Error> {
    let arena_len = options
        .buffers
        .checked_mul(options.buffer_size)
        .filter(|&n| n <= MAX_BUFFER_MEMORY)
        .ok_or(Error::TooMuchMemory(
            options.buffers.saturating_mul(options.buffer_size),
        ))?;
    let listener =
        StdListener::bind(options.listen, 1024).map_err(|e| Error::Listen(options.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Listen(options.listen, e))?;

    // All the memory the server will ever use, made once. `vec![0; n]` asks the OS for
    // zeroed pages, which cost nothing until a buffer is first lent.
    let mut slots = vec![Slot::EMPTY; options.max_conns];
    let mut arena = vec![0u8; arena_len];
    let mut streams: Vec<Option<StdStream>> = std::iter::repeat_with(|| None)
        .take(options.max_conns)
        .collect();
    let storage =
        Storage::new(&mut slots, &mut arena, options.buffer_size).map_err(Error::Storage)?;
    let mut config = Config::default();
    config.scheduling = Scheduling::Polling;
    config.idle_timeout = options
        .idle_timeout
        .map(|t| Duration::from_micros(micros(t)));
    let server = Server::new(config, storage, options.mode);
    let mut driver = Driver::new(server, listener, &mut streams)
        .expect("the stream table is made with one entry per slot");

    info!(
        %addr,
        max_conns = options.max_conns,
        buffer_size = options.buffer_size,
        buffers = options.buffers,
        mode = ?options.mode,
        "listening on {addr}"
    );
    on_listening(addr);

    let clock = Clock::new();
    let mut refusals = Throttle::default();
    let mut accept_errors = Throttle::default();
    loop {
        if stop.load(Ordering::Relaxed) && !driver.server().is_shutting_down() {
            let deadline = clock.now() + Duration::from_micros(micros(options.shutdown_timeout));
            info!(
                active = driver.server().stats().active,
                "shutting down: flushing open connections (deadline in {:?})",
                options.shutdown_timeout
            );
            driver.server_mut().begin_shutdown(deadline);
        }
        match driver.step(clock.now()) {
            Step::Recv { .. } | Step::Send { .. } | Step::AcceptWouldBlock => {}
            Step::Wait(until) => clock.sleep_until(until, MAX_NAP),
            Step::Finished => break,
            Step::Accepted(conn) => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let peer = driver.stream(conn).and_then(|s| s.peer_addr().ok());
                    debug!(%conn, ?peer, "accepted");
                }
            }
            Step::Refused => {
                if let Some(held) = refusals.ready() {
                    warn!(
                        max_conns = options.max_conns,
                        refused_total = driver.server().stats().refused,
                        held_back = held,
                        "at capacity: refusing connections"
                    );
                }
            }
            Step::AcceptFailed(kind) => {
                let error = driver.listener_mut().take_last_error();
                if let Some(held) = accept_errors.ready() {
                    warn!(
                        ?kind,
                        error = error.as_ref().map(|e| e.to_string()),
                        errors_total = driver.server().stats().accept_errors,
                        held_back = held,
                        "accept failed; backing off"
                    );
                }
            }
            Step::Shutdown(conn) => debug!(%conn, "flushed; write side shut down"),
            Step::Closed(conn, reason) => debug!(%conn, %reason, "closed"),
            _ => {}
        }
    }
    let stats = *driver.server().stats();
    info!(%stats, "stopped");
    Ok(Outcome { stats })
}

fn micros(d: StdDuration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
