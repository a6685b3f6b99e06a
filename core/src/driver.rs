//! The generic driver: runs poll → operate → report against small [`Listener`] and
//! [`Stream`] traits, so that every adapter is a few trait methods.
//!
//! Both traits take a *context* `C`, passed to every call by [`Driver::step_with`]: what
//! the streams need and do not own, such as the network stack's socket set. An adapter
//! over a stack then holds plain handles and needs no interior mutability (`RefCell`);
//! one that needs nothing uses the default, `()`, and [`Driver::step`].

use core::marker::PhantomData;

use embedded_io::ErrorKind;

use crate::action::{Action, Admission, ReportError};
use crate::conn::{CloseReason, ConnId};
use crate::server::Server;
use crate::service::Service;
use crate::time::Instant;

/// A non-blocking byte stream: one accepted connection. `C` is the context every call
/// gets: what the stream needs and does not own (a network stack's socket set, say),
/// lent by [`Driver::step_with`] at each step, so the stream needs no interior
/// mutability. `()` for streams that own everything they need.
pub trait Stream<C: ?Sized = ()> {
    /// The stream was admitted as `conn`, and will be asked for `conn`'s operations from
    /// now on: for streams that key something by connection (a waker per connection, an
    /// interrupt line, a log). The default does nothing.
    fn admitted(&mut self, cx: &mut C, conn: ConnId) {
        let _ = (cx, conn);
    }
    /// Reads into `buf`: `Ok(0)` is end-of-stream, `Err(WouldBlock)` means nothing yet.
    fn read(&mut self, cx: &mut C, buf: &mut [u8]) -> nb::Result<usize, ErrorKind>;
    /// Writes a prefix of `bytes`: `Err(WouldBlock)` means no room now.
    fn write(&mut self, cx: &mut C, bytes: &[u8]) -> nb::Result<usize, ErrorKind>;
    /// Writes a prefix of `first` followed by `second`, in one operation where the
    /// transport can (`writev`). The default writes `first` alone.
    fn write_vectored(
        &mut self,
        cx: &mut C,
        first: &[u8],
        second: &[u8],
    ) -> nb::Result<usize, ErrorKind> {
        let _ = second;
        self.write(cx, first)
    }
    /// Shuts down the write side (TCP FIN), keeping the read side open.
    fn shutdown_write(&mut self, cx: &mut C) -> Result<(), ErrorKind>;
    /// Cancels the reads and writes in flight ([`Action::Cancel`], completion scheduling
    /// only: the [`Driver`] reports every operation as soon as it asked for it, so it never
    /// has any in flight). The default does nothing.
    fn cancel(&mut self, cx: &mut C) {
        let _ = cx;
    }
    /// After [`shutdown_write`](Self::shutdown_write): how many bytes written, the FIN
    /// counting as one, the peer has not acknowledged yet (`Ok(0)`: everything
    /// delivered), for [`Action::Probe`]. The default answers `Unsupported`, and the
    /// server then lingers until the peer's end-of-stream.
    fn unacked(&mut self, cx: &mut C) -> Result<usize, ErrorKind> {
        let _ = cx;
        Err(ErrorKind::Unsupported)
    }
    /// Releases the stream, closing it for `reason`: reset it (TCP RST) if
    /// [`reason.is_abortive()`](CloseReason::is_abortive), otherwise close it in order
    /// (FIN, if not sent already). The default drops it.
    fn close(self, cx: &mut C, reason: CloseReason)
    where
        Self: Sized,
    {
        let _ = (cx, reason);
    }
}

/// A non-blocking source of new [`Stream`]s, with the same context `C`.
pub trait Listener<C: ?Sized = ()> {
    /// The streams it accepts.
    type Stream: Stream<C>;
    /// Accepts one connection: `Err(WouldBlock)` means none is waiting.
    fn accept(&mut self, cx: &mut C) -> nb::Result<Self::Stream, ErrorKind>;
}

/// A [`Listener`] made of an accept function, for transports without a listener type of
/// their own (an embedded stack, a test): `AcceptFn(|_: &mut ()| my_stack.accept())`, or
/// `AcceptFn(|stack: &mut Stack| stack.accept())` with the stack as the context.
#[derive(Clone, Copy, Debug)]
pub struct AcceptFn<F>(pub F);

impl<C: ?Sized, S: Stream<C>, F: FnMut(&mut C) -> nb::Result<S, ErrorKind>> Listener<C>
    for AcceptFn<F>
{
    type Stream = S;

    fn accept(&mut self, cx: &mut C) -> nb::Result<S, ErrorKind> {
        (self.0)(cx)
    }
}

/// What one [`Driver::step`] did, for logs and for the caller's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// A read of `conn` was tried; `outcome` went to the server.
    Recv {
        /// The connection read.
        conn: ConnId,
        /// What the stream answered.
        outcome: nb::Result<usize, ErrorKind>,
    },
    /// A write to `conn` was tried; `outcome` went to the server.
    Send {
        /// The connection written.
        conn: ConnId,
        /// What the stream answered.
        outcome: nb::Result<usize, ErrorKind>,
    },
    /// Nothing was waiting to be accepted.
    AcceptWouldBlock,
    /// A connection was admitted.
    Accepted(ConnId),
    /// A connection was refused at capacity and closed.
    Refused,
    /// `accept` failed; accepting backs off.
    AcceptFailed(ErrorKind),
    /// The write side of a connection was shut down.
    Shutdown(ConnId),
    /// What a connection had in flight was cancelled.
    Cancelled(ConnId),
    /// A lingering connection was probed for delivery; `outcome` went to the server.
    Probe {
        /// The connection probed.
        conn: ConnId,
        /// What the stream answered: bytes not yet acknowledged.
        outcome: Result<usize, ErrorKind>,
    },
    /// A connection was closed.
    Closed(ConnId, CloseReason),
    /// Nothing to do: sleep (or wait for readiness) until `until` at the latest.
    Wait(Option<Instant>),
    /// Graceful shutdown complete.
    Finished,
}

/// What [`Driver::on_ready`] did at once for a quiet connection: its read, and after data
/// its write, both reported to the server already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// The connection served.
    pub conn: ConnId,
    /// What the stream answered to the read.
    pub recv: nb::Result<usize, ErrorKind>,
    /// What it answered to the write of what was read (after a read of data only).
    pub send: Option<nb::Result<usize, ErrorKind>>,
}

impl Served {
    /// The same, as the [`Step`]s that [`Driver::step`] would have returned: a
    /// [`Step::Recv`], then perhaps a [`Step::Send`].
    pub fn steps(&self) -> impl Iterator<Item = Step> {
        let conn = self.conn;
        let recv = Step::Recv {
            conn,
            outcome: self.recv,
        };
        let send = self.send.map(|outcome| Step::Send { conn, outcome });
        core::iter::once(recv).chain(send)
    }
}

/// The table of streams was shorter than the server's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooFewStreams {
    /// Streams the table can hold.
    pub streams: usize,
    /// Connections the server can hold.
    pub capacity: usize,
}

impl core::fmt::Display for TooFewStreams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} stream entries for a server of capacity {}",
            self.streams, self.capacity
        )
    }
}

impl core::error::Error for TooFewStreams {}

/// A [`Server`] wired to a [`Listener`] and a caller-provided table of its streams,
/// indexed by [`ConnId::index`]; `C` is the context of their calls.
#[derive(Debug)]
pub struct Driver<'a, L: Listener<C>, T, C: ?Sized = ()> {
    server: Server<'a, T>,
    listener: L,
    streams: &'a mut [Option<L::Stream>],
    context: PhantomData<fn(&mut C)>,
}

impl<'a, L: Listener, T: Service> Driver<'a, L, T> {
    /// Performs the server's next action and reports its outcome (for transports that
    /// need no context: [`step_with`](Self::step_with) and `()`).
    pub fn step(&mut self, now: Instant) -> Step {
        self.step_with(now, &mut ())
    }

    /// Readiness drivers: `conn` may now make progress reading and/or writing (for
    /// transports that need no context: [`on_ready_with`](Self::on_ready_with)).
    pub fn on_ready(
        &mut self,
        now: Instant,
        conn: ConnId,
        readable: bool,
        writable: bool,
    ) -> Result<Option<Served>, ReportError> {
        self.on_ready_with(now, conn, readable, writable, &mut ())
    }
}

impl<'a, L: Listener<C>, T: Service, C: ?Sized> Driver<'a, L, T, C> {
    /// Wires them together; `streams` needs one entry per connection the server can hold.
    pub fn new(
        server: Server<'a, T>,
        listener: L,
        streams: &'a mut [Option<L::Stream>],
    ) -> Result<Self, TooFewStreams> {
        if streams.len() < server.capacity() {
            return Err(TooFewStreams {
                streams: streams.len(),
                capacity: server.capacity(),
            });
        }
        Ok(Self {
            server,
            listener,
            streams,
            context: PhantomData,
        })
    }

    /// The server, for stats and state.
    pub fn server(&self) -> &Server<'a, T> {
        &self.server
    }

    /// The server, for [`begin_shutdown`](Server::begin_shutdown) and readiness reports.
    pub fn server_mut(&mut self) -> &mut Server<'a, T> {
        &mut self.server
    }

    /// The listener.
    pub fn listener(&self) -> &L {
        &self.listener
    }

    /// The listener, mutably (for adapter-specific queries; accepting is the driver's).
    pub fn listener_mut(&mut self) -> &mut L {
        &mut self.listener
    }

    /// The stream of a live connection.
    pub fn stream(&self, conn: ConnId) -> Option<&L::Stream> {
        self.server.conn_state(conn).ok()?;
        self.streams.get(conn.index())?.as_ref()
    }

    /// The stream of a live connection, mutably (to register it with a readiness source).
    pub fn stream_mut(&mut self, conn: ConnId) -> Option<&mut L::Stream> {
        self.server.conn_state(conn).ok()?;
        self.streams.get_mut(conn.index())?.as_mut()
    }

    /// Readiness drivers: `conn` may now make progress reading and/or writing, as
    /// [`Server::on_ready`] reports it. If the connection was quiet (open and holding
    /// nothing: no buffer, no output, no work queued) and is now readable, it is served at
    /// once rather than at the next pass: read into a small buffer and, after data, what
    /// was read written back, both reported to the server, which is what its next visit
    /// would have done, less the run queue and a [`step`](Self::step) per operation. That
    /// is the common case of a request and its answer, and costs the core a fraction of
    /// the general path. `Ok(Some(_))` says what was done; `Ok(None)`: the readiness is
    /// queued for the next pass. `Err`: `conn` is stale or unknown (nothing done).
    pub fn on_ready_with(
        &mut self,
        now: Instant,
        conn: ConnId,
        readable: bool,
        writable: bool,
        cx: &mut C,
    ) -> Result<Option<Served>, ReportError> {
        self.server
            .on_ready_express(now, conn, readable, writable, self.streams, cx)
    }

    /// Performs the server's next action with `cx` for the listener and streams, and
    /// reports its outcome.
    // Forced inline: as a call (the optimiser's choice where the caller is not the
    // driver's own loop, as in criterion), a step that finds the server still waiting
    // paid its frame, 1.8 ns of 9.9 per 64-byte message. (The epoll loop, which inlined it
    // anyway, counts 5 instructions more per message with it forced: BENCHMARKS.md.)
    #[inline(always)]
    pub fn step_with(&mut self, now: Instant, cx: &mut C) -> Step {
        // The driver only reports what the server just asked for, so the server cannot
        // answer `Err`: a debug assertion guards that, a release build carries on.
        match self.server.poll(now) {
            Action::Accept => match self.listener.accept(cx) {
                Ok(stream) => match self.server.on_accepted(now) {
                    Ok(Admission::Admitted(conn)) => {
                        self.streams[conn.index()].insert(stream).admitted(cx, conn);
                        Step::Accepted(conn)
                    }
                    other => {
                        debug_assert_eq!(other, Ok(Admission::Refused));
                        stream.close(cx, CloseReason::Refused);
                        Step::Refused
                    }
                },
                Err(error) => {
                    let reported = self.server.on_accept_error(now, error);
                    debug_assert_eq!(reported, Ok(()));
                    match error {
                        nb::Error::WouldBlock => Step::AcceptWouldBlock,
                        nb::Error::Other(kind) => Step::AcceptFailed(kind),
                    }
                }
            },
            // A read asked to wait is tried as any other: the streams never block, and the
            // driver reports each operation at once (a would-block, then).
            Action::Recv { conn, buf, .. } => {
                let outcome = match self.streams[conn.index()].as_mut() {
                    Some(stream) => stream.read(cx, buf),
                    None => Err(nb::Error::Other(ErrorKind::NotConnected)),
                };
                let reported = self.server.on_recv(now, conn, outcome);
                debug_assert_eq!(reported, Ok(()));
                Step::Recv { conn, outcome }
            }
            Action::Send {
                conn,
                bytes,
                wrapped,
            } => {
                let outcome = match self.streams[conn.index()].as_mut() {
                    Some(stream) if wrapped.is_empty() => stream.write(cx, bytes),
                    Some(stream) => stream.write_vectored(cx, bytes, wrapped),
                    None => Err(nb::Error::Other(ErrorKind::NotConnected)),
                };
                let reported = self.server.on_send(now, conn, outcome);
                debug_assert_eq!(reported, Ok(()));
                Step::Send { conn, outcome }
            }
            Action::Cancel { conn } => {
                if let Some(stream) = self.streams[conn.index()].as_mut() {
                    stream.cancel(cx);
                }
                Step::Cancelled(conn)
            }
            // Nothing is ever in flight here (see above).
            Action::CancelRecv { conn } => Step::Cancelled(conn),
            Action::Shutdown { conn } => {
                if let Some(stream) = self.streams[conn.index()].as_mut() {
                    // A failed shutdown (the peer already reset) shows up on the next read
                    // of a lingering connection; a peer-closed one is closed next anyway.
                    let _ = stream.shutdown_write(cx);
                }
                Step::Shutdown(conn)
            }
            Action::Probe { conn } => {
                let outcome = match self.streams[conn.index()].as_mut() {
                    Some(stream) => stream.unacked(cx),
                    None => Err(ErrorKind::NotConnected),
                };
                let reported = self.server.on_probe(now, conn, outcome);
                debug_assert_eq!(reported, Ok(()));
                Step::Probe { conn, outcome }
            }
            Action::Close { conn, reason } => {
                if let Some(stream) = self.streams[conn.index()].take() {
                    stream.close(cx, reason);
                }
                Step::Closed(conn, reason)
            }
            Action::Wait { until } => Step::Wait(until),
            Action::Finished => Step::Finished,
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
