//! The core in one tokio task, readiness-driven: [`serve`].
//!
//! Each connection gets a waker of its own for each direction. When a read or write
//! would block, that waker is registered with the socket's readiness
//! (`poll_read_ready`/`poll_write_ready`); when tokio wakes it, it records which
//! connection became ready and wakes the task, which reports exactly that to the core
//! ([`Server::on_ready`]). So a wake-up costs work for the connections that became ready
//! and nothing for the others, however many are idle: no scan of every connection, no
//! task per connection. The core's `Wait` becomes a tokio sleep.
//!
//! Everything about *when* is the core's, as with the other drivers: this module only
//! performs the actions and turns tokio's readiness into the core's.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration as StdDuration;

use crate::serve::{config, micros, Memory};
use ::tokio::io::Interest;
use ::tokio::net::{TcpListener, TcpStream};
use nbecho_core::{
    nb, Action, Admission, Duration, ErrorKind, Instant, Scheduling, Server, Service, Stats,
    StorageError,
};

/// What [`serve`] runs with: the [`Limits`](crate::serve::Limits) every driver takes.
pub type Options = crate::serve::Limits;

/// Operations in a row before the task yields to the runtime (tokio's own tasks have a
/// budget of 128 I/O operations): a busy server does not starve the other tasks.
const BUDGET: u32 = 512;

/// The index the listener's waker reports.
const LISTENER: usize = usize::MAX;

/// Readiness reported by the wakers since the task last looked: (connection index or
/// [`LISTENER`], readable), and the task's own waker.
#[derive(Debug, Default)]
struct Ready {
    events: Mutex<Vec<(usize, bool)>>,
    task: Mutex<Option<Waker>>,
}

/// The waker of one connection (or the listener) for one direction.
#[derive(Debug)]
struct Edge {
    ready: Arc<Ready>,
    index: usize,
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
            .push((self.index, self.readable));
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

fn edge(ready: &Arc<Ready>, index: usize, readable: bool) -> Waker {
    Waker::from(Arc::new(Edge {
        ready: Arc::clone(ready),
        index,
        readable,
    }))
}

/// One accepted connection and its two wakers.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    read: Waker,
    write: Waker,
}

fn outcome(e: &io::Error) -> nb::Error<ErrorKind> {
    match e.kind() {
        io::ErrorKind::WouldBlock => nb::Error::WouldBlock,
        kind => nb::Error::Other(kind.into()),
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
    let mut server = Server::new(config, storage, transform);
    server.on_listener_ready();
    let mut conns: Vec<Option<Conn>> = (0..options.max_conns).map(|_| None).collect();

    let ready = Arc::new(Ready::default());
    let listener_waker = edge(&ready, LISTENER, true);
    let origin = ::tokio::time::Instant::now();
    let clock = || Instant::from_micros(micros(origin.elapsed()));
    let grace = Duration::from_micros(micros(options.shutdown_timeout));
    let mut handled = 0;
    let mut sleep = pin!(::tokio::time::sleep_until(origin));
    // The deadline `sleep` is set to. It is set again only when the core's comes earlier,
    // or when it has passed: a later one (an idle deadline that moved with progress, at
    // every message) lets the earlier one fire, at the cost of one wake-up that finds
    // nothing due, where setting it each time cost a timer update per wake-up (about 500
    // instructions per message, callgrind).
    let mut armed = Instant::ZERO;
    // Swapped with the wakers' list at each look, so that both keep their capacity: no
    // allocation per wake-up once they have grown.
    let mut events: Vec<(usize, bool)> = Vec::new();

    let stats = poll_fn(|cx| {
        {
            let mut task = ready.task.lock().unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // The clock is read once per wake-up, as the other drivers do (reading it costs
        // more than a step of the core).
        let now = clock();
        let asked = requests(cx);
        if asked > handled {
            handled = asked;
            // A later deadline never replaces an earlier one.
            server.begin_shutdown(if asked >= 2 { now } else { now + grace });
        }
        let mut budget = BUDGET;
        let mut look = true;
        loop {
            if look {
                // What tokio reported since the last look: only those connections are
                // tried. Looked at on each wake-up and between two passes.
                look = false;
                std::mem::swap(
                    &mut events,
                    &mut *ready.events.lock().unwrap_or_else(PoisonError::into_inner),
                );
                for (index, readable) in events.drain(..) {
                    match server.conn_id(index) {
                        _ if index == LISTENER => server.on_listener_ready(),
                        Some(conn) => {
                            let _ = server.on_ready(conn, readable, !readable);
                        }
                        None => {} // closed since: nothing to report
                    }
                }
            }
            budget = budget.saturating_sub(1);
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match server.poll(now) {
                Action::Accept => {
                    let mut lcx = Context::from_waker(&listener_waker);
                    match listener.poll_accept(&mut lcx) {
                        Poll::Ready(Ok((stream, _))) => {
                            let _ = stream.set_nodelay(true);
                            if let Ok(Admission::Admitted(conn)) = server.on_accepted(now) {
                                let i = conn.index();
                                conns[i] = Some(Conn {
                                    stream,
                                    read: edge(&ready, i, true),
                                    write: edge(&ready, i, false),
                                });
                            } // refused at capacity: dropped, closed
                        }
                        Poll::Ready(Err(e)) => {
                            let _ = server.on_accept_error(now, outcome(&e));
                        }
                        Poll::Pending => {
                            let _ = server.on_accept_error(now, nb::Error::WouldBlock);
                        }
                    }
                }
                Action::Recv { conn, buf, .. } => {
                    let wanted = buf.len();
                    let result = match &conns[conn.index()] {
                        Some(c) => {
                            let register =
                                || c.stream.poll_read_ready(&mut Context::from_waker(&c.read));
                            match c.stream.try_read(buf) {
                                Ok(n) if n < wanted => {
                                    // A short read drained the socket (the core stops
                                    // reading): clear tokio's readiness as its own
                                    // `poll_read` does (only if no event came since), and
                                    // register for the next data or the end-of-stream.
                                    let _ = c.stream.try_io(Interest::READABLE, || {
                                        Err::<(), _>(io::ErrorKind::WouldBlock.into())
                                    });
                                    if register().is_ready() {
                                        c.read.wake_by_ref();
                                    }
                                    Ok(n)
                                }
                                Ok(n) => Ok(n),
                                Err(e) => Err(would_block(&e, register, &c.read)),
                            }
                        }
                        None => Err(nb::Error::Other(ErrorKind::NotConnected)),
                    };
                    let _ = server.on_recv(now, conn, result);
                }
                Action::Send { conn, bytes, .. } => {
                    let result = match &conns[conn.index()] {
                        Some(c) => c.stream.try_write(bytes).map_err(|e| {
                            would_block(
                                &e,
                                || {
                                    c.stream
                                        .poll_write_ready(&mut Context::from_waker(&c.write))
                                },
                                &c.write,
                            )
                        }),
                        None => Err(nb::Error::Other(ErrorKind::NotConnected)),
                    };
                    let _ = server.on_send(now, conn, result);
                }
                Action::Shutdown { conn } => {
                    if let Some(c) = &conns[conn.index()] {
                        let _ =
                            socket2::SockRef::from(&c.stream).shutdown(std::net::Shutdown::Write);
                    }
                }
                Action::Probe { conn } => {
                    let unacked = match &conns[conn.index()] {
                        Some(c) => {
                            crate::sys::unacked_bytes(&c.stream).map_err(|e| e.kind().into())
                        }
                        None => Err(ErrorKind::NotConnected),
                    };
                    let _ = server.on_probe(now, conn, unacked);
                }
                // Only in completion scheduling; this driver reads and writes at once.
                Action::Cancel { .. } | Action::CancelRecv { .. } => {}
                Action::Close { conn, reason } => {
                    if let Some(c) = conns[conn.index()].take() {
                        if reason.is_abortive() {
                            let _ = socket2::SockRef::from(&c.stream)
                                .set_linger(Some(StdDuration::ZERO));
                        }
                    }
                }
                // The end of a busy pass: look at what tokio reported, and go on.
                Action::Wait { until: Some(until) } if until <= now => look = true,
                Action::Wait { until } => {
                    let Some(until) = until else {
                        return Poll::Pending; // every would-block registered its waker
                    };
                    if until < armed || armed <= now {
                        armed = until;
                        sleep
                            .as_mut()
                            .reset(origin + StdDuration::from_micros(until.total_micros()));
                    }
                    if sleep.as_mut().poll(cx).is_pending()
                        && ready
                            .events
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .is_empty()
                    {
                        return Poll::Pending;
                    }
                    look = true;
                }
                Action::Finished => return Poll::Ready(*server.stats()),
            }
        }
    })
    .await;
    Ok(stats)
}

/// A would-block: registers `waker` with the socket's readiness. If tokio says the socket
/// is ready already (it became so since), that waker is woken at once, so the readiness
/// is reported like any other.
fn would_block(
    e: &io::Error,
    register: impl FnOnce() -> Poll<io::Result<()>>,
    waker: &Waker,
) -> nb::Error<ErrorKind> {
    if e.kind() == io::ErrorKind::WouldBlock && register().is_ready() {
        waker.wake_by_ref();
    }
    outcome(e)
}
