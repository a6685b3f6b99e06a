//! Runs the nbecho core on [smoltcp](https://docs.rs/smoltcp) TCP sockets: `no_std`, no
//! allocation, what a firmware would use.
//!
//! smoltcp has no `accept`: a socket in `LISTEN` becomes the connection. [`Sockets`] keeps
//! `N` sockets listening on one port; [`SmolListener::accept`] hands out one that has
//! become established and re-arms sockets once their connections are fully closed. So `N`
//! bounds the handshakes in progress, while the core's capacity bounds the connections
//! served (a connection beyond it is accepted and refused with a reset, and counted).
//!
//! The caller owns the interface and polls it between [`Driver`](nbecho_core::Driver)
//! steps (the core runs in [`Scheduling::Polling`](nbecho_core::Scheduling::Polling); a
//! smoltcp socket's state is cheap to poll):
//!
//! ```ignore
//! let sockets = Sockets::new(socket_set, listening_handles, 7);
//! let mut driver = Driver::new(server, sockets.listener(), &mut streams)?;
//! loop {
//!     iface.poll(now, &mut device, &mut sockets.set());
//!     while let Step::Recv { .. } | Step::Send { .. } /* ... */ = driver.step(core_now) {}
//! }
//! ```
//!
//! `tests/tests/smoltcp.rs` runs it on smoltcp's loopback device with smoltcp clients, and
//! `tests/examples/smoltcp_echo.rs` is the same as a program.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use core::cell::{Cell, RefCell, RefMut};
use core::fmt;

use nbecho_core::{nb, CloseReason, ErrorKind, Listener, Stream};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

/// The socket set, and `N` of its TCP sockets that listen on `port` for the server.
pub struct Sockets<'a, const N: usize> {
    set: RefCell<SocketSet<'a>>,
    handles: [SocketHandle; N],
    /// Handed out as a stream (not listening, not to be re-armed).
    taken: [Cell<bool>; N],
    /// Given back by its stream with an orderly close still under way: not a new
    /// connection, and re-armed only once closed.
    releasing: [Cell<bool>; N],
    port: u16,
}

impl<const N: usize> fmt::Debug for Sockets<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sockets")
            .field("handles", &self.handles)
            .field("port", &self.port)
            .finish()
    }
}

impl<'a, const N: usize> Sockets<'a, N> {
    /// Takes the set; `handles` name `N` TCP sockets in it for the server, which listen on
    /// `port` from the first accept on.
    pub fn new(set: SocketSet<'a>, handles: [SocketHandle; N], port: u16) -> Self {
        Self {
            set: RefCell::new(set),
            handles,
            taken: core::array::from_fn(|_| Cell::new(false)),
            releasing: core::array::from_fn(|_| Cell::new(false)),
            port,
        }
    }

    /// The socket set, to poll the interface or drive other sockets between steps.
    ///
    /// # Panics
    ///
    /// If a borrow is already held (only the listener and streams borrow it, and only
    /// inside their calls).
    pub fn set(&self) -> RefMut<'_, SocketSet<'a>> {
        self.set.borrow_mut()
    }

    /// The listener over these sockets.
    pub fn listener(&self) -> SmolListener<'_, 'a, N> {
        SmolListener { sockets: self }
    }
}

/// The core's [`Listener`] over [`Sockets`].
#[derive(Debug)]
pub struct SmolListener<'s, 'a, const N: usize> {
    sockets: &'s Sockets<'a, N>,
}

impl<'s, 'a, const N: usize> Listener for SmolListener<'s, 'a, N> {
    type Stream = SmolStream<'s, 'a, N>;

    fn accept(&mut self) -> nb::Result<Self::Stream, ErrorKind> {
        let sockets = self.sockets;
        let mut set = sockets.set.borrow_mut();
        let mut accepted = None;
        for (i, &handle) in sockets.handles.iter().enumerate() {
            if sockets.taken[i].get() {
                continue;
            }
            let socket = set.get_mut::<tcp::Socket>(handle);
            if sockets.releasing[i].get() {
                if socket.is_open() {
                    continue; // its close handshake is not over
                }
                sockets.releasing[i].set(false);
            }
            if !socket.is_open() {
                // Closed (or in TIME-WAIT): listen again. The port is never 0, and a
                // socket that is not open can always listen.
                let _ = socket.listen(sockets.port);
            } else if accepted.is_none() && (socket.may_send() || socket.may_recv()) {
                // Past the handshake: this is the new connection.
                accepted = Some(i);
            }
        }
        let index = accepted.ok_or(nb::Error::WouldBlock)?;
        sockets.taken[index].set(true);
        Ok(SmolStream { sockets, index })
    }
}

/// One accepted connection: a smoltcp TCP socket behind the core's [`Stream`].
#[derive(Debug)]
pub struct SmolStream<'s, 'a, const N: usize> {
    sockets: &'s Sockets<'a, N>,
    index: usize,
}

impl<const N: usize> SmolStream<'_, '_, N> {
    fn with<R>(&self, f: impl FnOnce(&mut tcp::Socket<'_>) -> R) -> R {
        let mut set = self.sockets.set.borrow_mut();
        f(set.get_mut::<tcp::Socket>(self.sockets.handles[self.index]))
    }
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

impl<const N: usize> Stream for SmolStream<'_, '_, N> {
    fn read(&mut self, buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        self.with(|socket| match socket.recv_slice(buf) {
            Ok(0) => Err(nb::Error::WouldBlock),
            Ok(n) => Ok(n),
            Err(tcp::RecvError::Finished) => Ok(0),
            Err(_) => Err(gone(socket, ErrorKind::NotConnected)),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        self.with(|socket| match socket.send_slice(bytes) {
            Ok(0) => Err(nb::Error::WouldBlock),
            Ok(n) => Ok(n),
            Err(_) => Err(gone(socket, ErrorKind::BrokenPipe)),
        })
    }

    fn shutdown_write(&mut self) -> Result<(), ErrorKind> {
        // smoltcp's `close` is a half-close: FIN, and the socket still receives.
        self.with(|socket| socket.close());
        Ok(())
    }

    fn unacked(&mut self) -> Result<usize, ErrorKind> {
        self.with(|socket| {
            // The send buffer holds what is unsent or unacknowledged; our FIN is in flight
            // until the state moves past it.
            let fin = matches!(
                socket.state(),
                tcp::State::FinWait1 | tcp::State::Closing | tcp::State::LastAck
            );
            Ok(socket.send_queue() + usize::from(fin))
        })
    }

    fn close(self, reason: CloseReason) {
        self.with(|socket| {
            if reason.is_abortive() || socket.may_send() {
                // Giving up on output (forced at the deadline, aborted): RST. And an
                // orderly close before our FIN (refused, timed out, failed) resets too:
                // smoltcp cannot throw away what the peer goes on sending once the socket
                // is given back, so a FIN would leave the socket pinned in FIN-WAIT while
                // the peer writes into a full window; the std adapter's kernel resets a
                // socket closed with unread input in the same way.
                socket.abort();
            }
            // After our FIN, smoltcp finishes the close handshake by itself.
        });
        // Re-armed by `accept` once the socket is closed.
        self.sockets.releasing[self.index].set(true);
        self.sockets.taken[self.index].set(false);
    }
}
