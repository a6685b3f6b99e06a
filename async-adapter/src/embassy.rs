//! The async driver on [embassy-net](https://docs.rs/embassy-net) (feature `embassy-net`):
//! a [`Pool`] of `TcpSocket`s serving one port, and embassy-time's [`Clock`].
//!
//! embassy-net (smoltcp underneath) has no accept backlog: a socket listens, and becomes
//! the connection. The pool keeps every socket it holds listening on the port; the
//! [`PoolListener`] hands out one that became established, and takes it back when the
//! core closes the connection. So the pool's size bounds the connections served plus the
//! handshakes in progress; with more sockets than the core's capacity, a connection
//! beyond capacity is accepted and refused (a FIN), as the std adapter does.
//!
//! A socket given back finishes its close on its own, like an orphaned socket in an OS:
//! reset at once for an [abortive](CloseReason::is_abortive) reason, otherwise a FIN
//! after the data still queued; the pool discards what the peer still sends and puts the
//! socket back to listening once it is closed (after the reset went out, or in
//! `TIME-WAIT`). [`Timeouts`] sets smoltcp's timeout and keep-alive on every connection,
//! so that a peer that vanishes does not hold a socket for ever.
//!
//! The pool is the transport's context ([`Cx::new`](crate::Cx::new)'s `io`): streams own
//! their socket while the core serves them, and give it back through the context.
//!
//! Cost: an accept looks at every socket of the pool (a handful, on a microcontroller);
//! reads and writes touch one socket.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn run(stack: embassy_net::Stack<'static>) -> Result<(), Box<dyn core::error::Error>> {
//! use embassy_net::tcp::TcpSocket;
//! use nbecho_async::embassy::{Clock, Pool, PoolListener, Timeouts};
//! use nbecho_async::{serve, Conn, Cx, Listen, Wakers};
//! use nbecho_core::{Config, Driver, Duration, Scheduling, Server, Slot, Storage, Uppercase};
//!
//! static WAKERS: Wakers<4> = Wakers::new();
//! // Socket buffers: 4 sockets, 1 KiB each way.
//! let mut buffers = [[0u8; 1024]; 8];
//! let [a, b, c, d, e, f, g, h] = &mut buffers;
//! let sockets = [
//!     TcpSocket::new(stack, a, b),
//!     TcpSocket::new(stack, c, d),
//!     TcpSocket::new(stack, e, f),
//!     TcpSocket::new(stack, g, h),
//! ];
//! let mut pool = Pool::new(sockets, 7, Timeouts::default());
//!
//! let (mut slots, mut arena) = ([Slot::EMPTY; 3], [0u8; 3 * 512]);
//! let mut config = Config::default();
//! config.scheduling = Scheduling::Readiness;
//! let server = Server::new(config, Storage::new(&mut slots, &mut arena, 512)?, Uppercase);
//! let mut streams: [Option<Conn<_>>; 3] = Default::default();
//! let mut driver = Driver::new(server, Listen(PoolListener), &mut streams)?;
//! let mut cx = Cx::new(&WAKERS, &mut pool);
//! let never = core::future::pending();
//! serve(&mut driver, &mut cx, Clock, never, Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embassy_net::tcp::{State, TcpSocket};
use embassy_time::Duration;
use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use nbecho_core::{CloseReason, Instant};

use crate::{AsyncListener, AsyncStream};

/// smoltcp's per-connection timers, set on every connection the pool hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Reset the connection when the peer acknowledges nothing for this long while data
    /// is in flight (or keep-alives go unanswered). Default 60 s.
    pub silence: Option<Duration>,
    /// Send a keep-alive after this much silence, so that a vanished peer is found even
    /// when nothing is in flight. Default 20 s.
    pub keep_alive: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            silence: Some(Duration::from_secs(60)),
            keep_alive: Some(Duration::from_secs(20)),
        }
    }
}

/// `M` embassy-net TCP sockets serving one port: the listener's and streams' context.
pub struct Pool<'d, const M: usize> {
    /// `None` while lent to the core as a [`Socket`].
    sockets: [Option<TcpSocket<'d>>; M],
    port: u16,
    timeouts: Timeouts,
    /// The listener's waker, woken when a socket comes back.
    listener: Option<Waker>,
}

impl<const M: usize> core::fmt::Debug for Pool<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pool")
            .field("port", &self.port)
            .field("sockets", &M)
            .field("lent", &self.sockets.iter().filter(|s| s.is_none()).count())
            .finish()
    }
}

impl<'d, const M: usize> Pool<'d, M> {
    /// A pool serving `port` with `sockets` (closed ones: the pool makes them listen).
    pub fn new(sockets: [TcpSocket<'d>; M], port: u16, timeouts: Timeouts) -> Self {
        Self {
            sockets: sockets.map(Some),
            port,
            timeouts,
            listener: None,
        }
    }

    /// How many sockets listen on the port now.
    pub fn listening(&self) -> usize {
        self.sockets
            .iter()
            .flatten()
            .filter(|s| s.state() == State::Listen)
            .count()
    }

    /// Looks after socket `i` (not lent): `Some` if it became a connection to hand out.
    /// Otherwise it is listening or closing, with `cx`'s waker registered for its next
    /// change.
    fn tend(&mut self, i: usize, cx: &mut Context<'_>) -> bool {
        let Some(socket) = self.sockets[i].as_mut() else {
            return false;
        };
        match socket.state() {
            State::Established | State::CloseWait => return true,
            // Closed with a reset still to send: wait until it is out.
            State::Closed if socket.remote_endpoint().is_some() => {
                let _ = poll_once(socket.flush(), cx);
            }
            // Listen again (embassy-net 0.9 listens from `accept`, in its first poll:
            // polled once, it also registers the waker for the handshake).
            State::Closed | State::TimeWait => {
                let _ = poll_once(socket.accept(self.port), cx);
            }
            State::Listen | State::SynSent | State::SynReceived => {
                let _ = poll_once(socket.wait_write_ready(), cx);
            }
            // Closing: discard what the peer sends, and wait for the close to finish.
            State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck => {
                let mut scratch = [0u8; 64];
                while let Poll::Ready(Ok(1..)) = poll_once(socket.read(&mut scratch), cx) {}
                let _ = poll_once(socket.flush(), cx);
            }
        }
        false
    }

    fn give_back(&mut self, index: usize, socket: TcpSocket<'d>) {
        self.sockets[index] = Some(socket);
        if let Some(listener) = &self.listener {
            listener.wake_by_ref();
        }
    }
}

fn poll_once<F: Future>(future: F, cx: &mut Context<'_>) -> Poll<F::Output> {
    pin!(future).poll(cx)
}

/// The pool's listener (the pool itself is the context; this is a handle).
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolListener;

impl<'d, const M: usize> AsyncListener<Pool<'d, M>> for PoolListener {
    type Stream = Socket<'d>;

    fn poll_accept(
        &mut self,
        pool: &mut Pool<'d, M>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Socket<'d>, ErrorKind>> {
        if !pool
            .listener
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            pool.listener = Some(cx.waker().clone());
        }
        for i in 0..M {
            if pool.tend(i, cx) {
                if let Some(mut socket) = pool.sockets[i].take() {
                    socket.set_timeout(pool.timeouts.silence);
                    socket.set_keep_alive(pool.timeouts.keep_alive);
                    return Poll::Ready(Ok(Socket { socket, index: i }));
                }
            }
        }
        Poll::Pending
    }
}

/// A connection: a socket lent by the [`Pool`] until the core closes it.
pub struct Socket<'d> {
    socket: TcpSocket<'d>,
    index: usize,
}

impl<'d> Socket<'d> {
    /// The socket (for its endpoints, say).
    pub fn get_ref(&self) -> &TcpSocket<'d> {
        &self.socket
    }
}

impl core::fmt::Debug for Socket<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Socket")
            .field("index", &self.index)
            .field("state", &self.socket.state())
            .field("remote", &self.socket.remote_endpoint())
            .finish()
    }
}

impl ErrorType for Socket<'_> {
    type Error = embassy_net::tcp::Error;
}

/// Cancel-safe, and keeps the waker of a pending poll: embassy-net reads with a `poll_fn`.
impl Read for Socket<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.socket.read(buf).await
    }
}

/// Cancel-safe, and keeps the waker of a pending poll: embassy-net writes with a `poll_fn`.
impl Write for Socket<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.socket.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.socket.flush().await
    }
}

impl<'d, const M: usize> AsyncStream<Pool<'d, M>> for Socket<'d> {
    fn shutdown_write(&mut self, _: &mut Pool<'d, M>) -> Result<(), ErrorKind> {
        // smoltcp sends the FIN after the data still queued.
        self.socket.close();
        Ok(())
    }

    fn unacked(&mut self, _: &mut Pool<'d, M>) -> Result<usize, ErrorKind> {
        let fin = matches!(
            self.socket.state(),
            State::FinWait1 | State::Closing | State::LastAck
        );
        Ok(self.socket.send_queue() + usize::from(fin))
    }

    fn close(mut self, pool: &mut Pool<'d, M>, reason: CloseReason) {
        if reason.is_abortive() {
            self.socket.abort();
        } else {
            self.socket.close();
        }
        pool.give_back(self.index, self.socket);
    }
}

/// embassy-time's clock (its `Instant`s, in microseconds) and timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock;

impl crate::Clock for Clock {
    fn now(&self) -> Instant {
        Instant::from_micros(embassy_time::Instant::now().as_micros())
    }

    async fn sleep_until(&self, deadline: Instant) {
        embassy_time::Timer::at(embassy_time::Instant::from_micros(deadline.total_micros())).await;
    }
}
