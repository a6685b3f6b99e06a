//! Runs the nbecho core in an async task, over any [`embedded_io_async`] stream: on
//! embassy (with [`embassy-net`](https://docs.rs/embassy-net), feature `embassy-net`), on
//! tokio (feature `tokio`), or on any other executor. `no_std`, no allocation.
//!
//! One task serves every connection, readiness-driven: each connection has its own
//! [`Waker`] ([`Wakers`]), so a wake-up touches only the connections that woke it, never a
//! scan of all of them. The core itself is unchanged: it asks for one operation at a time
//! ([`Driver`]), and each operation is one poll of the stream's future.
//!
//! # How a read (or write) is tried
//!
//! [`Conn`] polls `read(buf)` once, with the connection's waker. `Ready` is the outcome;
//! `Pending` is "would block": the future is dropped, and the waker it registered wakes the
//! task when the stream is readable. That needs two things of the stream, which
//! [`AsyncStream`] asks its implementors to promise:
//!
//! - its `read` and `write` are cancel-safe (embedded-io-async encourages it: a dropped,
//!   unfinished future has read or written nothing);
//! - a `Pending` poll registers the waker it was given, and it stays registered when the
//!   future is dropped (true of every `poll_fn`-style stream: embassy-net's `TcpSocket`,
//!   tokio's streams through embedded-io-adapters).
//!
//! The core runs in [`Scheduling::Readiness`](nbecho_core::Scheduling::Readiness): a
//! connection that answered "would block" is not tried again until its waker is woken.
//!
//! # Example
//!
//! An echo server on tokio, and one client (the embassy one is the same with
//! `embassy::Pool` as the transport's context: the `embassy` module, feature `embassy-net`):
//!
#![cfg_attr(feature = "tokio", doc = "```")]
#![cfg_attr(not(feature = "tokio"), doc = "```ignore")]
//! use nbecho_async::tokio::{Clock, Listener};
//! use nbecho_async::{serve, Conn, Cx, Listen, Wakers};
//! use nbecho_core::{Config, Driver, Duration, Scheduling, Server, Slot, Storage, Uppercase};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! static WAKERS: Wakers<8> = Wakers::new();
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (mut slots, mut arena) = ([Slot::EMPTY; 8], [0u8; 8 * 1024]);
//! let mut config = Config::default();
//! config.scheduling = Scheduling::Readiness;
//! let server = Server::new(config, Storage::new(&mut slots, &mut arena, 1024)?, Uppercase);
//! let mut streams: [Option<Conn<_>>; 8] = Default::default();
//! let mut driver = Driver::new(server, Listen(Listener(listener)), &mut streams)?;
//! let mut io = (); // the streams own everything: no context
//! let mut cx = Cx::new(&WAKERS, &mut io);
//!
//! let (done, stop) = tokio::sync::oneshot::channel::<()>();
//! let client = async move {
//!     let mut conn = tokio::net::TcpStream::connect(addr).await?;
//!     conn.write_all(b"hello").await?;
//!     let mut reply = [0; 5];
//!     conn.read_exact(&mut reply).await?;
//!     done.send(()).ok(); // stop the server
//!     Ok::<_, std::io::Error>(reply)
//! };
//! let stop = async { stop.await.ok(); };
//! let (stats, reply) = tokio::join!(
//!     serve(&mut driver, &mut cx, Clock::new(), stop, Duration::from_secs(1)),
//!     client,
//! );
//! assert_eq!(&reply?, b"HELLO");
//! assert_eq!(stats?.bytes_out, 5);
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "embassy-net")]
pub mod embassy;
#[cfg(feature = "tokio")]
pub mod tokio;
mod wakers;

use core::fmt;
use core::future::{poll_fn, Future};
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embassy_futures::select::{select, select3, Either3};
use embedded_io_async::{ErrorKind, Read, Write};
use nbecho_core::{
    Alarm, CloseReason, ConnId, Driver, Duration, Instant, Listener, Service, Stats, Step, Stream,
};

pub use wakers::{Ready, Wakers};

/// A connection the async driver can serve: an [`embedded_io_async`] stream whose `read`
/// and `write` are cancel-safe and keep the waker of a `Pending` poll registered after
/// the future is dropped (see the [crate docs](crate)), plus what embedded-io-async has
/// no word for. `P` is the context the calls get, as in [`Stream`]: what the stream needs
/// and does not own (embassy's socket pool), `()` for streams that own everything.
pub trait AsyncStream<P: ?Sized = ()>: Read + Write {
    /// Shuts down the write side (TCP FIN) without waiting, keeping the read side open.
    fn shutdown_write(&mut self, io: &mut P) -> Result<(), ErrorKind>;
    /// After [`shutdown_write`](Self::shutdown_write): bytes written, the FIN counting as
    /// one, that the peer has not acknowledged ([`Stream::unacked`]). The default answers
    /// `Unsupported`: the connection then lingers until the peer's end-of-stream.
    fn unacked(&mut self, io: &mut P) -> Result<usize, ErrorKind> {
        let _ = io;
        Err(ErrorKind::Unsupported)
    }
    /// Releases the stream: reset if [`reason.is_abortive()`](CloseReason::is_abortive),
    /// otherwise closed in order. The default drops it.
    fn close(self, io: &mut P, reason: CloseReason)
    where
        Self: Sized,
    {
        let _ = (io, reason);
    }
}

/// A source of [`AsyncStream`]s, polled like tokio's `TcpListener::poll_accept`: `Pending`
/// registers the context's waker, which is woken when a connection may be waiting.
pub trait AsyncListener<P: ?Sized = ()> {
    /// The streams it accepts.
    type Stream: AsyncStream<P>;
    /// Accepts one connection if one is waiting.
    fn poll_accept(
        &mut self,
        io: &mut P,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Stream, ErrorKind>>;
}

/// The runtime's clock and timer, in the core's time ([`Instant`], microseconds from an
/// origin the clock chooses).
pub trait Clock {
    /// The time now.
    fn now(&self) -> Instant;
    /// Resolves at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()>;
}

/// The context the async driver lends its listener and streams at each step: the wakers,
/// and the transport's own context `P`.
pub struct Cx<'p, P: ?Sized, const N: usize> {
    wakers: &'static Wakers<N>,
    io: &'p mut P,
}

impl<'p, P: ?Sized, const N: usize> Cx<'p, P, N> {
    /// The wakers for the server's connections (at least one per connection it can hold)
    /// and the transport's context (`&mut ()` if it needs none).
    pub fn new(wakers: &'static Wakers<N>, io: &'p mut P) -> Self {
        Self { wakers, io }
    }

    /// The transport's context.
    pub fn io(&mut self) -> &mut P {
        self.io
    }
}

impl<P: ?Sized, const N: usize> fmt::Debug for Cx<'_, P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx").field("wakers", self.wakers).finish()
    }
}

/// An [`AsyncListener`] as the core's [`Listener`].
#[derive(Debug)]
pub struct Listen<L>(pub L);

impl<P: ?Sized, L: AsyncListener<P>, const N: usize> Listener<Cx<'_, P, N>> for Listen<L> {
    type Stream = Conn<L::Stream>;

    fn accept(&mut self, cx: &mut Cx<'_, P, N>) -> nb::Result<Self::Stream, ErrorKind> {
        let waker = cx.wakers.listener();
        match self.0.poll_accept(cx.io, &mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(io)) => Ok(Conn {
                io,
                waker: Waker::noop().clone(),
            }),
            Poll::Ready(Err(kind)) => Err(nb::Error::Other(kind)),
            Poll::Pending => Err(nb::Error::WouldBlock),
        }
    }
}

/// An [`AsyncStream`] as the core's [`Stream`]: each operation is one poll of its future,
/// with the connection's own waker.
#[derive(Debug)]
pub struct Conn<S> {
    io: S,
    waker: Waker,
}

impl<S> Conn<S> {
    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

/// Polls `future` once with `waker`: its outcome, or would-block.
fn poll_once<E: embedded_io_async::Error>(
    future: impl Future<Output = Result<usize, E>>,
    waker: &Waker,
) -> nb::Result<usize, ErrorKind> {
    match pin!(future).poll(&mut Context::from_waker(waker)) {
        Poll::Ready(Ok(n)) => Ok(n),
        Poll::Ready(Err(e)) => Err(nb::Error::Other(e.kind())),
        Poll::Pending => Err(nb::Error::WouldBlock),
    }
}

impl<P: ?Sized, S: AsyncStream<P>, const N: usize> Stream<Cx<'_, P, N>> for Conn<S> {
    fn admitted(&mut self, cx: &mut Cx<'_, P, N>, conn: ConnId) {
        if let Some(waker) = cx.wakers.conn(conn.index()) {
            self.waker = waker;
        }
        // Nothing was tried on it yet, so nothing registered its waker: its first
        // readiness is ours to give (epoll's registration edge).
        cx.wakers.mark(Ready::Conn(conn.index()));
    }

    fn read(&mut self, _: &mut Cx<'_, P, N>, buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        poll_once(self.io.read(buf), &self.waker)
    }

    fn write(&mut self, _: &mut Cx<'_, P, N>, bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        poll_once(self.io.write(bytes), &self.waker)
    }

    fn shutdown_write(&mut self, cx: &mut Cx<'_, P, N>) -> Result<(), ErrorKind> {
        self.io.shutdown_write(cx.io)
    }

    fn unacked(&mut self, cx: &mut Cx<'_, P, N>) -> Result<usize, ErrorKind> {
        self.io.unacked(cx.io)
    }

    fn close(self, cx: &mut Cx<'_, P, N>, reason: CloseReason) {
        self.io.close(cx.io, reason);
    }
}

/// [`serve`] was given fewer wakers than the server has connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooFewWakers {
    /// Connections the wakers cover.
    pub wakers: usize,
    /// Connections the server can hold.
    pub capacity: usize,
}

impl fmt::Display for TooFewWakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wakers for {} connections, for a server of capacity {}",
            self.wakers, self.capacity
        )
    }
}

impl core::error::Error for TooFewWakers {}

/// Operations between two yields to the executor, so that a busy server lets the
/// executor's other tasks (the network stack's runner, on embassy) run.
const BUDGET: u32 = 128;

/// Serves until `stop` resolves, then stops gracefully (the core's
/// [`begin_shutdown`](nbecho_core::Server::begin_shutdown)) with `grace` to finish, and
/// returns the final counters once every connection is closed.
///
/// Each wake-up reads the clock once, reports what woke (the listener, or each
/// connection whose waker was woken) and runs the core's operations until it waits; then
/// the task sleeps until a waker is woken, the core's timer, or `stop`. Every 128
/// operations it yields to the executor, and looks at `stop`.
pub async fn serve<'p, L, T, P, K, const N: usize>(
    driver: &mut Driver<'_, Listen<L>, T, Cx<'p, P, N>>,
    cx: &mut Cx<'p, P, N>,
    clock: K,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Result<Stats, TooFewWakers>
where
    L: AsyncListener<P>,
    T: Service,
    P: ?Sized,
    K: Clock,
{
    let capacity = driver.server().capacity();
    if N < capacity {
        return Err(TooFewWakers {
            wakers: N,
            capacity,
        });
    }
    let wakers = cx.wakers;
    let mut stop = pin!(stop);
    let mut stopping = false;
    wakers.mark(Ready::Listener);
    let mut now = clock.now();
    let mut budget = BUDGET;
    // The timer, kept from one wait to the next ([`Alarm`] says when it is made again),
    // and dropped once it fires: a future is not polled after it finished.
    let mut sleep = pin!(None);
    let mut alarm = Alarm::new();
    loop {
        if wakers.is_pending() {
            // A waker does not say which way its connection became ready: both are
            // reported. A quiet connection's request is answered here and now (the
            // express lane); its read or write that would block registers its waker, as
            // on any other path.
            wakers.drain(|ready| match ready {
                Ready::Listener => driver.server_mut().on_listener_ready(),
                Ready::Conn(index) => {
                    if let Some(conn) = driver.server().conn_id(index) {
                        let _ = driver.on_ready_with(now, conn, true, true, cx);
                    }
                }
            });
        }
        let until = match driver.step_with(now, cx) {
            Step::Finished => return Ok(*driver.server().stats()),
            Step::Wait(until) => until,
            _ => {
                budget -= 1;
                if budget == 0 {
                    budget = BUDGET;
                    embassy_futures::yield_now().await;
                    now = clock.now();
                    if !stopping
                        && poll_fn(|task| Poll::Ready(stop.as_mut().poll(task)))
                            .await
                            .is_ready()
                    {
                        stopping = true;
                        driver.server_mut().begin_shutdown(now + grace);
                    }
                }
                continue;
            }
        };
        budget = BUDGET;
        if until.is_some_and(|until| until <= now) {
            // A pass ended with work left: let the executor run, then look for wakes.
            embassy_futures::yield_now().await;
        } else {
            if let Some(until) = until {
                if alarm.set(until, now) {
                    sleep.set(Some(clock.sleep_until(until)));
                }
            }
            let timer = poll_fn(|task| {
                let Some(timer) = sleep.as_mut().as_pin_mut().filter(|_| until.is_some()) else {
                    return Poll::Pending;
                };
                let fired = timer.poll(task);
                if fired.is_ready() {
                    sleep.set(None);
                    alarm.rang();
                }
                fired
            });
            if stopping {
                select(wakers.woken(), timer).await;
            } else if let Either3::Third(()) = select3(wakers.woken(), timer, stop.as_mut()).await {
                stopping = true;
                driver.server_mut().begin_shutdown(clock.now() + grace);
            }
        }
        now = clock.now();
    }
}
