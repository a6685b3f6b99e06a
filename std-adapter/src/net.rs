//! Non-blocking sockets (`std::net`, or `mio::net` for the epoll driver) behind the core's
//! [`Listener`] and [`Stream`] traits.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use nbecho_core::{nb, CloseReason, ErrorKind, Listener, Stream};
use rustix::io::Errno;
use rustix::net::SendFlags;
use socket2::{Domain, Protocol, Socket as RawSocket, Type};

/// `io::Error` → the core's outcome: would-block is "not now", anything else a failure.
pub(crate) fn outcome(error: &io::Error) -> nb::Error<ErrorKind> {
    match error.kind() {
        io::ErrorKind::WouldBlock => nb::Error::WouldBlock,
        kind => nb::Error::Other(kind.into()),
    }
}

/// [`outcome`] of a failed system call: would-block inline, failures out of line.
#[inline(always)]
fn errno_outcome(errno: Errno) -> nb::Error<ErrorKind> {
    if errno == Errno::AGAIN {
        nb::Error::WouldBlock
    } else {
        failure(errno)
    }
}

#[cold]
fn failure(errno: Errno) -> nb::Error<ErrorKind> {
    outcome(&io::Error::from(errno))
}

/// Binds `addr` (with `SO_REUSEADDR`, so a restart does not wait for `TIME_WAIT`; with
/// `SO_REUSEPORT` when `reuse_port`, so several threads can each listen on the port),
/// listens with room for `backlog` pending connections, and sets non-blocking mode.
pub fn bind(addr: SocketAddr, backlog: i32, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = RawSocket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A connected TCP socket in non-blocking mode.
pub trait Socket: Read + Write + std::os::fd::AsFd {
    /// Shuts down the write side (FIN).
    fn shutdown_write(&self) -> io::Result<()>;
    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Bytes written, the FIN counting as one, that the peer has not acknowledged yet.
    /// Linux only (`SIOCOUTQ`); elsewhere `Unsupported`.
    fn unacked(&self) -> io::Result<usize> {
        crate::sys::unacked_bytes(self)
    }
    /// Makes the coming close a reset (RST): `SO_LINGER` with a zero timeout.
    fn reset_on_close(&self) -> io::Result<()>
    where
        Self: Sized,
    {
        socket2::SockRef::from(self).set_linger(Some(std::time::Duration::ZERO))
    }
}

/// A listening TCP socket in non-blocking mode.
pub trait Accept {
    /// The sockets it accepts.
    type Socket: Socket;
    /// Accepts one connection, non-blocking, with `TCP_NODELAY` (an echo answers small
    /// writes at once: waiting to coalesce them only adds latency).
    fn accept_socket(&self) -> io::Result<Self::Socket>;
}

impl Socket for std::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Self::peer_addr(self)
    }
}

impl Socket for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Self::peer_addr(self)
    }
}

impl Accept for std::net::TcpListener {
    type Socket = std::net::TcpStream;
    fn accept_socket(&self) -> io::Result<std::net::TcpStream> {
        let (stream, _) = self.accept()?;
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

impl Accept for mio::net::TcpListener {
    type Socket = mio::net::TcpStream;
    fn accept_socket(&self) -> io::Result<mio::net::TcpStream> {
        // mio accepts with SOCK_NONBLOCK already.
        let (stream, _) = self.accept()?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A listener behind the core's [`Listener`] trait.
#[derive(Debug)]
pub struct NetListener<L> {
    inner: L,
    last_error: Option<io::Error>,
}

/// The polling driver's listener.
pub type StdListener = NetListener<std::net::TcpListener>;
/// The epoll driver's listener.
pub type MioListener = NetListener<mio::net::TcpListener>;

impl<L> NetListener<L> {
    /// Wraps a listening socket.
    pub fn new(inner: L) -> Self {
        Self {
            inner,
            last_error: None,
        }
    }

    /// The socket.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The socket, mutably (to register it with mio).
    pub fn get_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    /// The full OS error of the last failed accept, for logs (the core only sees its kind).
    pub fn take_last_error(&mut self) -> Option<io::Error> {
        self.last_error.take()
    }
}

impl<L: Accept> Listener for NetListener<L> {
    type Stream = NetStream<L::Socket>;

    fn accept(&mut self, _: &mut ()) -> nb::Result<Self::Stream, ErrorKind> {
        self.inner.accept_socket().map(NetStream).map_err(|error| {
            let out = outcome(&error);
            if matches!(out, nb::Error::Other(_)) {
                self.last_error = Some(error);
            }
            out
        })
    }
}

/// An accepted connection behind the core's [`Stream`] trait.
#[derive(Debug)]
pub struct NetStream<S>(pub S);

/// The polling driver's connection.
pub type StdStream = NetStream<std::net::TcpStream>;
/// The epoll driver's connection.
pub type MioStream = NetStream<mio::net::TcpStream>;

impl<S: Socket> NetStream<S> {
    /// The peer's address, for logs.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

// `read` and `write` are forced inline: once per request each, and as calls (which the
// link-time optimiser chose for `write` even when hinted) their frames and argument moves
// were paid on every request (BENCHMARKS.md). They make the system call through rustix,
// inline too, where std's and mio's `read` and `write` are calls into libc's wrappers.
impl<S: Socket> Stream for NetStream<S> {
    #[inline(always)]
    fn read(&mut self, _: &mut (), buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        // `read(2)`, a `recv` without flags: rustix's `recv` also reports the length of
        // a truncated datagram, which a stream never has, and clamps to it.
        rustix::io::read(&self.0, buf).map_err(errno_outcome)
    }

    #[inline(always)]
    fn write(&mut self, _: &mut (), bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        // As std's: no SIGPIPE when the peer has gone (an embedding program may not
        // ignore it as Rust's runtime does); the write fails with `EPIPE` instead.
        rustix::net::send(&self.0, bytes, SendFlags::NOSIGNAL).map_err(errno_outcome)
    }

    fn write_vectored(
        &mut self,
        _: &mut (),
        first: &[u8],
        second: &[u8],
    ) -> nb::Result<usize, ErrorKind> {
        let parts = [io::IoSlice::new(first), io::IoSlice::new(second)];
        self.0.write_vectored(&parts).map_err(|e| outcome(&e))
    }

    fn shutdown_write(&mut self, _: &mut ()) -> Result<(), ErrorKind> {
        self.0.shutdown_write().map_err(|e| e.kind().into())
    }

    fn unacked(&mut self, _: &mut ()) -> Result<usize, ErrorKind> {
        self.0.unacked().map_err(|e| e.kind().into())
    }

    fn close(self, _: &mut (), reason: CloseReason) {
        if reason.is_abortive() {
            // Best effort: if it fails, dropping still closes (with a FIN).
            let _ = self.0.reset_on_close();
        }
    }
}
