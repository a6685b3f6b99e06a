//! Any [`embedded_io`] stream as a non-blocking [`Stream`].
//!
//! embedded-io's traits block by definition and have no would-block; [`EmbeddedIo`] makes
//! them non-blocking by asking [`ReadReady::read_ready`] / [`WriteReady::write_ready`]
//! before each call, and answers "would block" when the stream is not ready.

use embedded_io::{Error as _, ErrorKind, Read, ReadReady, Write, WriteReady};

use crate::driver::Stream;

/// An [`embedded_io`] stream driven without blocking.
///
/// embedded-io has no half-close: [`Stream::shutdown_write`] does nothing (not even
/// `flush`, which embedded-io defines as blocking; a write was only ever asked for when
/// [`WriteReady::write_ready`] said it would not block), and the peer sees the end of the
/// connection when the stream is dropped at [`Action::Close`](crate::Action::Close).
/// During a graceful server shutdown such a connection lingers until the peer closes or
/// the deadline passes.
#[derive(Debug, Default)]
pub struct EmbeddedIo<S>(pub S);

/// Any context: the stream needs none.
impl<C: ?Sized, S: Read + ReadReady + Write + WriteReady> Stream<C> for EmbeddedIo<S> {
    fn read(&mut self, _: &mut C, buf: &mut [u8]) -> nb::Result<usize, ErrorKind> {
        match self.0.read_ready() {
            Ok(true) => self.0.read(buf).map_err(|e| nb::Error::Other(e.kind())),
            Ok(false) => Err(nb::Error::WouldBlock),
            Err(e) => Err(nb::Error::Other(e.kind())),
        }
    }

    fn write(&mut self, _: &mut C, bytes: &[u8]) -> nb::Result<usize, ErrorKind> {
        match self.0.write_ready() {
            Ok(true) => self.0.write(bytes).map_err(|e| nb::Error::Other(e.kind())),
            Ok(false) => Err(nb::Error::WouldBlock),
            Err(e) => Err(nb::Error::Other(e.kind())),
        }
    }

    fn shutdown_write(&mut self, _: &mut C) -> Result<(), ErrorKind> {
        Ok(())
    }
}
