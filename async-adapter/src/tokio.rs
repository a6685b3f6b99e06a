//! The async driver on tokio (feature `tokio`): tokio's `TcpStream` through
//! embedded-io-adapters' [`FromTokio`], a [`Listener`] and a [`Clock`].
//!
//! For a production server on tokio, `nbecho_std::tokio` is the tuned driver (vectored
//! writes, short reads that drain, delivery probes with `SIOCOUTQ`); this module shows
//! the portable driver on a runtime anyone can run, and is what its tests run on.

extern crate std;

use core::pin::Pin;
use core::task::{Context, Poll};

use core::time::Duration;
use embedded_io_adapters::tokio_1::FromTokio;
use embedded_io_async::ErrorKind;
use nbecho_core::{CloseReason, Instant};
use tokio::net::{TcpListener, TcpStream};

use crate::{AsyncListener, AsyncStream};

/// A tokio `TcpStream` as the driver's stream.
pub type Stream = FromTokio<TcpStream>;

impl AsyncStream for FromTokio<TcpStream> {
    fn shutdown_write(&mut self, _: &mut ()) -> Result<(), ErrorKind> {
        // tokio shuts a TCP stream's write side down at once; the poll is never pending.
        let shutdown = tokio::io::AsyncWrite::poll_shutdown(
            Pin::new(self.inner_mut()),
            &mut Context::from_waker(core::task::Waker::noop()),
        );
        match shutdown {
            Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
            Poll::Ready(Err(e)) => Err(embedded_io::Error::kind(&e)),
        }
    }

    fn close(self, _: &mut (), reason: CloseReason) {
        if reason.is_abortive() {
            // A zero linger makes the close a reset.
            let _ = self.inner().set_zero_linger();
        }
    }
}

/// A tokio `TcpListener` as the driver's listener; accepted streams get `TCP_NODELAY`.
#[derive(Debug)]
pub struct Listener(pub TcpListener);

impl AsyncListener for Listener {
    type Stream = Stream;

    fn poll_accept(&mut self, _: &mut (), cx: &mut Context<'_>) -> Poll<Result<Stream, ErrorKind>> {
        self.0.poll_accept(cx).map(|accepted| match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                Ok(FromTokio::new(stream))
            }
            Err(e) => Err(embedded_io::Error::kind(&e)),
        })
    }
}

/// tokio's clock and timer; its origin is when it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    /// A clock at zero now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::Clock for Clock {
    fn now(&self) -> Instant {
        let micros = self.origin.elapsed().as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    async fn sleep_until(&self, deadline: Instant) {
        let at = self.origin + Duration::from_micros(deadline.total_micros());
        tokio::time::sleep_until(at).await;
    }
}
