//! The core in one tokio task, readiness-driven: [`serve`].
//!
//! Each connection gets a waker of its own for each direction. When a read or write
//! would block, that waker is registered with the socket's readiness
//! (`poll_read_ready`/`poll_write_ready`); when tokio wakes it, it records which
//! connection became ready and wakes the task, which reports exactly that to the core
//! ([`Driver::on_ready_with`]: a quiet connection's request is answered there and then,
//! the express lane). So a wake-up costs work for the connections that became ready
//! and nothing for the others, however many are idle: no scan of every connection, no
//! task per connection. The core's `Wait` becomes a tokio sleep.
//!
//! Everything about *when* is the core's, as with the other drivers: the core's
//! [`Driver`] performs the actions through this module's listener and streams, and this
//! module turns tokio's readiness into the core's.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration as StdDuration;

use crate::net::outcome;
use crate::serve::{config, micros, Memory};
use ::tokio::io::Interest;
use ::tokio::net::{TcpListener, TcpStream};
use nbecho_core::{
    nb, Alarm, CloseReason, ConnId, Driver, Duration, ErrorKind, Instant, Listener, Scheduling,
    Server, Service, Stats, Step, StorageError, Stream,
};

/// What [`serve`] runs with: the [`Limits`](crate::serve::Limits) every driver takes.
pub type Options = crate::serve::Limits;

/// Operations in a row before the task yields to the runtime (tokio's own tasks have a
/// budget of 128 I/O operations): a busy server does not starve the other tasks.
const BUDGET: u32 = 512;

/// Whose readiness a waker reports: the listener's, or a connection's, by its whole id
/// (so that a wake of a connection closed since is stale to the server rather than
/// readiness of the one reusing its slot, and needs no lookup).
#[derive(Clone, Copy, Debug)]
enum Source {
    Listener,
    Conn(ConnId),
}

/// Readiness reported by the wakers since the task last looked: (source, readable), and
/// the task's own waker.
#[derive(Debug, Default)]
struct Ready {
    events: Mutex<Vec<(Source, bool)>>,
    task: Mutex<Option<Waker>>,
}

/// The waker of one connection (or the listener) for one direction.
#[derive(Debug)]
struct Edge {
    ready: Arc<Ready>,
    source: Source,
    readable: bool,
}

impl Wake for Edge {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.source, self.readable));
        if let Some(task) = &*self
            .ready
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            task.wake_by_ref();
        }
    }
}

fn edge(ready: &Arc<Ready>, source: Source, readable: bool) -> Waker {
    Waker::from(Arc::new(Edge {
        ready: Arc::clone(ready),
        source,
        readable,
    }))
}

/// One accepted connection and its two wakers (made when it is admitted: they name its
/// slot).
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    read: Waker,
    write: Waker,
}

impl Conn {
    /// Registers `waker` with the socket's readiness through `poll` (tokio's
    /// `poll_read_ready` or `poll_write_ready`). If tokio says the socket is ready already
    /// (it became so since), the waker is woken at once, so the readiness is reported
    /// like any other.
    fn register(
        &self,
        waker: &Waker,
        poll: fn(&TcpStream, &mut Context<'_>) -> Poll<io::Result<()>>,
    ) {
        if poll(&self.stream, &mut Context::from_waker(waker)).is_ready() {
            waker.wake_by_ref();
        }
    }

    /// A write's failure: a would-block registers the write waker.
    fn write_failed(&self, e: &io::Error) -> nb::Error<ErrorKind> {
        if e.kind() == io::ErrorKind::WouldBlock {
            self.register(&self.write, TcpStream::poll_write_ready);
        }
        outcome(e)
    }
}

/// The core's streams are the connections; the context every call gets is where their
/// wakers report.
impl Stream<Arc<Ready>> for Conn {
    fn admitted(&mut self, ready: &mut Arc<Ready>, conn: ConnId) {
        self.read = edge(ready, Source::Conn(conn), true);
        self.write = edge(ready, Source::Conn(conn), false);
    }

    fn read(&mut self, _: &mut Arc<Ready>, buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        match self.stream.try_read(buf) {
            Ok(n) if n < buf.len() => {
                // A short read drained the socket (the core stops reading): clear tokio's
                // readiness as its own `poll_read` does (only if no event came since), and
                // register for the next data or the end-of-stream.
                let _ = self.stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
                self.register(&self.read, TcpStream::poll_read_ready);
                Ok(n)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.register(&self.read, TcpStream::poll_read_ready);
                }
                Err(outcome(&e))
            }
        }
    }

    fn write(&mut self, _: &mut Arc<Ready>, bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        self.stream
            .try_write(bytes)
            .map_err(|e| self.write_failed(&e))
    }

    fn write_vectored(
        &mut self,
        _: &mut Arc<Ready>,
        first: &[u8],
        second: &[u8],
    ) -> nb::Result<usize, ErrorKind> {
        let parts = [io::IoSlice::new(first), io::IoSlice::new(second)];
        self.stream
            .try_write_vectored(&parts)
            .map_err(|e| self.write_failed(&e))
    }

    fn shutdown_write(&mut self, _: &mut Arc<Ready>) -> Result<(), ErrorKind> {
        socket2::SockRef::from(&self.stream)
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.kind().into())
    }

    fn unacked(&mut self, _: &mut Arc<Ready>) -> Result<usize, ErrorKind> {
        crate::sys::unacked_bytes(&self.stream).map_err(|e| e.kind().into())
    }

    fn close(self, _: &mut Arc<Ready>, reason: CloseReason) {
        if reason.is_abortive() {
            // Best effort: if it fails, dropping still closes (with a FIN).
            let _ = socket2::SockRef::from(&self.stream).set_linger(Some(StdDuration::ZERO));
        }
    }
}

/// tokio's listener as the core's: its waker reports [`Source::Listener`].
#[derive(Debug)]
struct Listen {
    listener: TcpListener,
    waker: Waker,
}

impl Listener<Arc<Ready>> for Listen {
    type Stream = Conn;

    fn accept(&mut self, _: &mut Arc<Ready>) -> nb::Result<Conn, ErrorKind> {
        match self
            .listener
            .poll_accept(&mut Context::from_waker(&self.waker))
        {
            Poll::Ready(Ok((stream, _))) => {
                let _ = stream.set_nodelay(true);
                // Its wakers are made when it is admitted (`Stream::admitted`).
                Ok(Conn {
                    stream,
                    read: Waker::noop().clone(),
                    write: Waker::noop().clone(),
                })
            }
            Poll::Ready(Err(e)) => Err(outcome(&e)),
            Poll::Pending => Err(nb::Error::WouldBlock),
        }
    }
}

/// Serves on `listener` with `transform` until `stop` completes, then stops gracefully
/// (at most [`Options::shutdown_timeout`]) and returns the final counters. Runs in the
/// calling task; all its memory is allocated here, once.
pub async fn serve<T: Service>(
    listener: TcpListener,
    options: &Options,
    transform: T,
    stop: impl Future<Output = ()>,
) -> Result<Stats, StorageError> {
    let mut stop = pin!(stop);
    let mut stopped = false;
    let requests = move |cx: &mut Context<'_>| {
        stopped = stopped || stop.as_mut().poll(cx).is_ready();
        u32::from(stopped)
    };
    serve_until(listener, options, transform, requests).await
}

/// [`serve`], with stop requests counted by `requests`, which is polled at every wake-up
/// (and must wake the task, through the context it gets, when its count changes): the
/// first starts the graceful stop, a second one forces every connection closed at once.
pub async fn serve_until<T: Service>(
    listener: TcpListener,
    options: &Options,
    transform: T,
    mut requests: impl FnMut(&mut Context<'_>) -> u32,
) -> Result<Stats, StorageError> {
    // The memory and configuration of `nbecho serve`: page-aligned arenas, and a short
    // read taken for a drained socket (the driver clears tokio's readiness then and
    // registers for more, as tokio's own `poll_read` does, so the read that would only
    // would-block is saved).
    let mut memory = Memory::new(options);
    let storage = memory.storage(options)?;
    let config = config(options, Scheduling::Readiness, None);
    let server = Server::new(config, storage, transform);
    let mut ready = Arc::new(Ready::default());
    let listener = Listen {
        listener,
        waker: edge(&ready, Source::Listener, true),
    };
    let mut streams: Vec<Option<Conn>> = (0..options.max_conns).map(|_| None).collect();
    let mut driver = Driver::new(server, listener, &mut streams)
        .expect("the stream table is made with one entry per slot");
    driver.server_mut().on_listener_ready();

    let origin = ::tokio::time::Instant::now();
    let clock = || Instant::from_micros(micros(origin.elapsed()));
    let grace = Duration::from_micros(micros(options.shutdown_timeout));
    let mut handled = 0;
    let mut sleep = pin!(::tokio::time::sleep_until(origin));
    // When `sleep` is set again: only for an earlier deadline, or once it is due.
    let mut alarm = Alarm::new();
    // Swapped with the wakers' list at each look, so that both keep their capacity: no
    // allocation per wake-up once they have grown.
    let mut events: Vec<(Source, bool)> = Vec::new();

    let stats = poll_fn(|cx| {
        {
            let mut task = ready.task.lock().unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // The clock is read once per wake-up, as the other drivers do (reading it costs
        // more than a step of the core), and again when a deadline passes meanwhile.
        let mut now = clock();
        let asked = requests(cx);
        if asked > handled {
            handled = asked;
            // A later deadline never replaces an earlier one.
            driver
                .server_mut()
                .begin_shutdown(if asked >= 2 { now } else { now + grace });
        }
        let mut budget = BUDGET;
        let mut look = true;
        loop {
            if look {
                // What tokio reported since the last look: only those connections are
                // tried, a quiet one's request answered at once (the express lane).
                // Looked at on each wake-up and between two passes.
                look = false;
                std::mem::swap(
                    &mut events,
                    &mut *ready.events.lock().unwrap_or_else(PoisonError::into_inner),
                );
                for (source, readable) in events.drain(..) {
                    match source {
                        Source::Listener => driver.server_mut().on_listener_ready(),
                        // A connection closed since is stale: nothing is done.
                        Source::Conn(conn) => {
                            let _ =
                                driver.on_ready_with(now, conn, readable, !readable, &mut ready);
                        }
                    }
                }
            }
            budget = budget.saturating_sub(1);
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match driver.step_with(now, &mut ready) {
                // The end of a busy pass: look at what tokio reported, and go on.
                Step::Wait(Some(until)) if until <= now => look = true,
                Step::Wait(until) => {
                    let Some(until) = until else {
                        return Poll::Pending; // every would-block registered its waker
                    };
                    if alarm.set(until, now) {
                        sleep
                            .as_mut()
                            .reset(origin + StdDuration::from_micros(until.total_micros()));
                    }
                    let rang = sleep.as_mut().poll(cx).is_ready();
                    if !rang
                        && ready
                            .events
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .is_empty()
                    {
                        return Poll::Pending;
                    }
                    if rang {
                        // The deadline passed during this wake-up: time moved on, or the
                        // core, told the same `now`, would answer the same wait until
                        // the budget ran out.
                        now = clock();
                    }
                    look = true;
                }
                Step::Finished => return Poll::Ready(*driver.server().stats()),
                // Accepted (its wakers were made), refused (closed), and every operation
                // done and reported by the driver.
                _ => {}
            }
        }
    })
    .await;
    Ok(stats)
}
