//! Runs the nbecho core on [smoltcp](https://docs.rs/smoltcp) TCP sockets: `no_std`, no
//! allocation, what a firmware would use.
//!
//! smoltcp has no `accept`: a socket in `LISTEN` becomes the connection. [`Sockets`] keeps
//! `N` sockets listening on one port; [`SmolListener::accept`] hands out one that has
//! become established. So `N` bounds the handshakes in progress, while the core's capacity
//! bounds the connections served (a connection beyond it is accepted and refused, and
//! counted).
//!
//! A stream is closed as the core's [`CloseReason`] says, as the std adapter's kernel
//! does: reset when [abortive](CloseReason::is_abortive), otherwise in order (FIN). A
//! socket given back in order finishes its close handshake on its own, like an orphaned
//! socket in an OS: [`Sockets::service`] throws away what the peer still sends, resets it
//! if the handshake is not over after [`Timeouts::release`], and puts sockets back to
//! listening once closed. [`Timeouts`] also sets smoltcp's own timeout and keep-alive, so
//! that a peer that vanishes does not hold a socket for ever.
//!
//! [`Sockets`] is the context of the listener and streams: they are plain indices, and
//! the driver lends them the sockets at each step
//! ([`step_with`](nbecho_core::Driver::step_with)), so nothing needs a `RefCell`, and the
//! caller keeps the set between steps to poll the interface or drive sockets of its own.
//!
//! The caller owns the interface. One turn of its loop: poll the interface, call
//! [`Sockets::service`], run [`Driver`](nbecho_core::Driver) steps until the core waits,
//! poll the interface again (to send what the core wrote), then sleep until
//! [`next_wake`]: the earlier of the core's timer and the stack's
//! ([`Interface::poll_at`](smoltcp::iface::Interface::poll_at)), or until a packet comes
//! in. The core runs in [`Scheduling::Polling`](nbecho_core::Scheduling::Polling): a
//! smoltcp socket's state is cheap to poll, and the core's waits back off while nothing
//! happens. The whole thing, on smoltcp's loopback device with a smoltcp client:
//!
//! ```
//! use nbecho_core::{Config, Driver, Server, Slot, Step, Storage, Uppercase};
//! use nbecho_smoltcp::{core_time, next_wake, SmolStream, Sockets};
//! use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
//! use smoltcp::phy::{Loopback, Medium};
//! use smoltcp::socket::tcp;
//! use smoltcp::time::Instant;
//! use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
//!
//! let mut device = Loopback::new(Medium::Ip);
//! let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut device, Instant::ZERO);
//! iface.update_ip_addrs(|ips| ips.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
//! let socket = || tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 512]), tcp::SocketBuffer::new(vec![0; 512]));
//! let mut storage = [SocketStorage::EMPTY; 3];
//! let mut set = SocketSet::new(&mut storage[..]);
//! let listening = [set.add(socket()), set.add(socket())];
//! let client = set.add(socket());
//! let mut sockets = Sockets::new(set, listening, 7);
//!
//! let (mut slots, mut arena) = ([Slot::EMPTY; 2], [0u8; 2 * 256]);
//! let storage = Storage::new(&mut slots, &mut arena, 256)?;
//! let server = Server::new(Config::default(), storage, Uppercase);
//! let mut streams: [Option<SmolStream<2>>; 2] = [None, None];
//! let mut driver = Driver::new(server, sockets.listener(), &mut streams)?;
//!
//! let (mut now, mut reply, mut sent) = (Instant::ZERO, Vec::new(), false);
//! while reply.len() < 5 {
//!     assert!(now < Instant::from_secs(10), "no echo");
//!     iface.poll(now, &mut device, sockets.set_mut());
//!     sockets.service(now);
//!     let until = loop {
//!         if let Step::Wait(until) = driver.step_with(core_time(now), &mut sockets) {
//!             break until;
//!         }
//!     };
//!     iface.poll(now, &mut device, sockets.set_mut());
//!     // The client, on the same interface.
//!     let peer = sockets.set_mut().get_mut::<tcp::Socket>(client);
//!     if !peer.is_open() && !sent {
//!         peer.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), 7), 49152)?;
//!     } else if peer.can_send() && !sent {
//!         peer.send_slice(b"hello")?;
//!         sent = true;
//!     }
//!     while peer.can_recv() {
//!         peer.recv(|data| { reply.extend_from_slice(data); (data.len(), ()) })?;
//!     }
//!     // Sleep until the core's timer or the stack's (a board would WFI until then, or
//!     // until the network interrupt); here time just moves on.
//!     let wake = next_wake(until, iface.poll_at(now, sockets.set()));
//!     now = wake.map_or(now, |wake| wake.max(now));
//! }
//! assert_eq!(reply, b"HELLO");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `tests/tests/smoltcp.rs` runs it on smoltcp's loopback device with smoltcp clients, and
//! `tests/examples/smoltcp_echo.rs` is the same as a program.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::fmt;

use nbecho_core::{nb, CloseReason, ErrorKind, Listener, Stream};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

/// The core's time for smoltcp's: microseconds since smoltcp's zero (before it: zero).
pub fn core_time(now: Instant) -> nbecho_core::Instant {
    nbecho_core::Instant::from_micros(u64::try_from(now.total_micros()).unwrap_or(0))
}

/// When the loop must run again: the earlier of the core's
/// [`Wait { until }`](nbecho_core::Action::Wait) and the stack's
/// [`poll_at`](smoltcp::iface::Interface::poll_at); `None` when neither has a timer (run
/// again when a packet comes in).
pub fn next_wake(
    core_until: Option<nbecho_core::Instant>,
    stack: Option<Instant>,
) -> Option<Instant> {
    let core = core_until
        .map(|t| Instant::from_micros(i64::try_from(t.total_micros()).unwrap_or(i64::MAX)));
    match (core, stack) {
        (Some(core), Some(stack)) => Some(core.min(stack)),
        (core, stack) => core.or(stack),
    }
}

/// How long the server's sockets wait on their peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Reset a connection whose peer sends nothing for this long while data is in flight
    /// (or, with `keep_alive`, at all): smoltcp's `set_timeout`. Default 60 s.
    pub silence: Option<Duration>,
    /// Probe a quiet connection this often, so that a peer that vanished is noticed by
    /// `silence`: smoltcp's `set_keep_alive`. Default 20 s.
    pub keep_alive: Option<Duration>,
    /// A socket given back in order may take this long to finish its close handshake
    /// (the peer's FIN), then it is reset: what Linux's `tcp_fin_timeout` bounds for an
    /// orphaned socket. Default 60 s.
    pub release: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            silence: Some(Duration::from_secs(60)),
            keep_alive: Some(Duration::from_secs(20)),
            release: Duration::from_secs(60),
        }
    }
}

/// The socket set, and `N` of its TCP sockets that listen on `port` for the server: the
/// context of [`SmolListener`] and [`SmolStream`] (the driver's
/// [`step_with`](nbecho_core::Driver::step_with) passes it to every call).
pub struct Sockets<'a, const N: usize> {
    set: SocketSet<'a>,
    handles: [SocketHandle; N],
    /// Handed out as a stream (not listening, not to be re-armed).
    taken: [bool; N],
    /// Given back by its stream with an orderly close still under way: not a new
    /// connection, and re-armed only once closed.
    releasing: [bool; N],
    /// When [`Sockets::service`] first saw it releasing.
    released_at: [Option<Instant>; N],
    port: u16,
    timeouts: Timeouts,
}

impl<const N: usize> fmt::Debug for Sockets<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sockets")
            .field("handles", &self.handles)
            .field("taken", &self.taken)
            .field("releasing", &self.releasing)
            .field("port", &self.port)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl<'a, const N: usize> Sockets<'a, N> {
    /// Takes the set; `handles` name `N` TCP sockets in it for the server, which listen on
    /// `port` from the first [`service`](Self::service) (or accept) on, with the default
    /// [`Timeouts`].
    pub fn new(set: SocketSet<'a>, handles: [SocketHandle; N], port: u16) -> Self {
        Self {
            set,
            handles,
            taken: [false; N],
            releasing: [false; N],
            released_at: [None; N],
            port,
            timeouts: Timeouts::default(),
        }
    }

    /// Other [`Timeouts`] than the defaults.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The socket set, to poll the interface with.
    pub fn set(&self) -> &SocketSet<'a> {
        &self.set
    }

    /// The socket set, mutably: to poll the interface, or drive other sockets.
    pub fn set_mut(&mut self) -> &mut SocketSet<'a> {
        &mut self.set
    }

    /// The listener over these sockets (it holds nothing: they are its context).
    pub fn listener(&self) -> SmolListener<N> {
        SmolListener(())
    }

    /// Housekeeping, after each poll of the interface: sockets given back in order throw
    /// away what their peer still sends and are reset if their close handshake outlasts
    /// [`Timeouts::release`]; closed sockets listen again.
    pub fn service(&mut self, now: Instant) {
        self.tidy(Some(now));
    }

    fn socket(&mut self, index: usize) -> &mut tcp::Socket<'a> {
        self.set.get_mut::<tcp::Socket>(self.handles[index])
    }

    /// [`service`](Self::service), with `now` only when the caller gave one (accept has
    /// none: it re-arms and drains, and leaves the release timeout to `service`).
    fn tidy(&mut self, now: Option<Instant>) {
        for i in 0..N {
            if self.taken[i] {
                continue;
            }
            let (releasing, since, timeouts, port) = (
                self.releasing[i],
                self.released_at[i],
                self.timeouts,
                self.port,
            );
            let socket = self.socket(i);
            if releasing {
                // Nobody reads it any more: keep its window open so the peer can finish.
                while socket.can_recv() {
                    let _ = socket.recv(|data| (data.len(), ()));
                }
                // Reset, and the RST not sent yet (smoltcp forgets the peer once it is):
                // listening now would swallow it.
                let reset_pending =
                    socket.state() == tcp::State::Closed && socket.remote_endpoint().is_some();
                if reset_pending {
                    continue;
                }
                if socket.is_open() {
                    if let Some(now) = now {
                        let since = since.unwrap_or(now);
                        if now >= since + timeouts.release {
                            socket.abort();
                        }
                        self.released_at[i] = Some(since);
                    }
                    continue;
                }
                self.releasing[i] = false;
                self.released_at[i] = None;
            }
            let socket = self.socket(i);
            if !socket.is_open() {
                // Closed (or in TIME-WAIT): listen again. The port is never 0, and a
                // socket that is not open can always listen.
                socket.set_timeout(timeouts.silence);
                socket.set_keep_alive(timeouts.keep_alive);
                let _ = socket.listen(port);
            }
        }
    }
}

/// The core's [`Listener`] over [`Sockets`], its context.
#[derive(Debug)]
pub struct SmolListener<const N: usize>(());

impl<'a, const N: usize> Listener<Sockets<'a, N>> for SmolListener<N> {
    type Stream = SmolStream<N>;

    fn accept(&mut self, sockets: &mut Sockets<'a, N>) -> nb::Result<SmolStream<N>, ErrorKind> {
        // Re-arm here too, for a loop that does not call `service`.
        sockets.tidy(None);
        let index = (0..N)
            .find(|&i| {
                let (taken, releasing) = (sockets.taken[i], sockets.releasing[i]);
                let socket = sockets.socket(i);
                // Past the handshake, and neither ours nor on its way out: a new connection.
                !taken && !releasing && socket.is_open() && (socket.may_send() || socket.may_recv())
            })
            .ok_or(nb::Error::WouldBlock)?;
        sockets.taken[index] = true;
        Ok(SmolStream { index })
    }
}

/// One accepted connection: the index of a smoltcp TCP socket of [`Sockets`], behind the
/// core's [`Stream`].
#[derive(Debug)]
pub struct SmolStream<const N: usize> {
    index: usize,
}

/// A socket that can no longer be used: reset (smoltcp moves a reset connection to
/// `CLOSED`) or otherwise gone.
fn gone(socket: &tcp::Socket<'_>, otherwise: ErrorKind) -> nb::Error<ErrorKind> {
    if socket.state() == tcp::State::Closed {
        nb::Error::Other(ErrorKind::ConnectionReset)
    } else {
        nb::Error::Other(otherwise)
    }
}

impl<'a, const N: usize> Stream<Sockets<'a, N>> for SmolStream<N> {
    fn read(
        &mut self,
        sockets: &mut Sockets<'a, N>,
        buf: &mut [u8],
    ) -> nb::Result<usize, ErrorKind> {
        let socket = sockets.socket(self.index);
        match socket.recv_slice(buf) {
            Ok(0) => Err(nb::Error::WouldBlock),
            Ok(n) => Ok(n),
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(_) => Err(gone(socket, ErrorKind::NotConnected)),
        }
    }

    fn write(
        &mut self,
        sockets: &mut Sockets<'a, N>,
        bytes: &[u8],
    ) -> nb::Result<usize, ErrorKind> {
        let socket = sockets.socket(self.index);
        match socket.send_slice(bytes) {
            Ok(0) => Err(nb::Error::WouldBlock),
            Ok(n) => Ok(n),
            Err(_) => Err(gone(socket, ErrorKind::BrokenPipe)),
        }
    }

    fn shutdown_write(&mut self, sockets: &mut Sockets<'a, N>) -> Result<(), ErrorKind> {
        // smoltcp's `close` is a half-close: FIN, and the socket still receives.
        sockets.socket(self.index).close();
        Ok(())
    }

    fn unacked(&mut self, sockets: &mut Sockets<'a, N>) -> Result<usize, ErrorKind> {
        let socket = sockets.socket(self.index);
        // The send buffer holds what is unsent or unacknowledged; our FIN is in flight
        // until the state moves past it.
        let fin = matches!(
            socket.state(),
            tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck
        );
        Ok(socket.send_queue() + usize::from(fin))
    }

    fn close(self, sockets: &mut Sockets<'a, N>, reason: CloseReason) {
        let socket = sockets.socket(self.index);
        if reason.is_abortive() {
            // Giving up on output (forced at the deadline, aborted): RST.
            socket.abort();
        } else {
            // In order (done, refused, timed out, failed): our FIN if not sent yet;
            // `Sockets::service` sees the close handshake through.
            socket.close();
        }
        sockets.releasing[self.index] = true;
        sockets.taken[self.index] = false;
    }
}
