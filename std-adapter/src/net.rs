//! Non-blocking `std::net` sockets behind the core's [`Listener`] and [`Stream`] traits.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use nbecho_core::{nb, ErrorKind, Listener, Stream};
use socket2::{Domain, Protocol, Socket, Type};

/// `io::Error` → the core's outcome: would-block is "not now", anything else a failure.
fn outcome(error: &io::Error) -> nb::Error<ErrorKind> {
    match error.kind() {
        io::ErrorKind::WouldBlock => nb::Error::WouldBlock,
        kind => nb::Error::Other(kind.into()),
    }
}

/// A non-blocking TCP listener.
#[derive(Debug)]
pub struct StdListener {
    inner: TcpListener,
    last_error: Option<io::Error>,
}

impl StdListener {
    /// Binds `addr` (with `SO_REUSEADDR`, so a restart does not wait for `TIME_WAIT`),
    /// listens with room for `backlog` pending connections, and sets non-blocking mode.
    pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            inner: socket.into(),
            last_error: None,
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The full OS error of the last failed accept, for logs (the core only sees its kind).
    pub fn take_last_error(&mut self) -> Option<io::Error> {
        self.last_error.take()
    }
}

impl Listener for StdListener {
    type Stream = StdStream;

    fn accept(&mut self) -> nb::Result<StdStream, ErrorKind> {
        let accepted = self.inner.accept().and_then(|(stream, _)| {
            stream.set_nonblocking(true)?;
            // An echo answers small writes at once: do not wait to coalesce them.
            stream.set_nodelay(true)?;
            Ok(stream)
        });
        accepted.map(StdStream).map_err(|error| {
            let out = outcome(&error);
            if matches!(out, nb::Error::Other(_)) {
                self.last_error = Some(error);
            }
            out
        })
    }
}

/// A non-blocking accepted TCP connection.
#[derive(Debug)]
pub struct StdStream(TcpStream);

impl StdStream {
    /// The peer's address, for logs.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

impl Stream for StdStream {
    fn read(&mut self, buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        self.0.read(buf).map_err(|e| outcome(&e))
    }

    fn write(&mut self, bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        self.0.write(bytes).map_err(|e| outcome(&e))
    }

    fn shutdown_write(&mut self) -> Result<(), ErrorKind> {
        self.0
            .shutdown(Shutdown::Write)
            .map_err(|e| e.kind().into())
    }
}
