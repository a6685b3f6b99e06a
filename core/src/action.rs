//! What the server asks its caller to do next: [`Action`]; and the caller's mistakes in
//! reporting back: [`ReportError`].

use core::fmt;

use crate::conn::{CloseReason, ConnId};
use crate::time::Instant;

/// The next operation, from [`Server::poll`](crate::Server::poll).
///
/// Every `Accept`, `Recv`, `Send` and `Probe` must be reported with the matching `on_*`
/// call before the next `poll` (a `poll` without a report counts the operation as not
/// done). `Shutdown` and `Close` need no report.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an action is an operation the caller must perform"]
pub enum Action<'a> {
    /// Try to accept one connection, then report with
    /// [`on_accepted`](crate::Server::on_accepted) or
    /// [`on_accept_error`](crate::Server::on_accept_error).
    Accept,
    /// Try to read into `buf`, then report with [`on_recv`](crate::Server::on_recv).
    ///
    /// `buf` is free space in the connection's own buffer: reading straight into it costs
    /// no copy, and its size is the backpressure window.
    ///
    /// In [`Scheduling::Completion`](crate::Scheduling::Completion) the read may complete
    /// later, after other actions: `buf` stays lent until [`on_recv`](crate::Server::on_recv)
    /// for `conn` (the server neither uses nor moves that memory, and the caller may keep
    /// a pointer to it; [`Server::in_flight_recv`](crate::Server::in_flight_recv) lends it
    /// again to safe code). Likewise a `Send`'s bytes stay in place until its
    /// [`on_send`](crate::Server::on_send).
    ///
    /// `wait` (only with [`Config::read_wait`](crate::Config::read_wait)): the read may
    /// wait in the transport until data comes (io_uring without `MSG_DONTWAIT`), rather
    /// than report a would-block; it is reported when data, the end of the stream or an
    /// error comes, or when [`CancelRecv`](Self::CancelRecv) cancels it. A read without
    /// `wait` must not wait: it reports a would-block instead.
    Recv {
        /// The connection to read.
        conn: ConnId,
        /// Where to read to.
        buf: &'a mut [u8],
        /// The read may wait for data.
        wait: bool,
    },
    /// Try to write `bytes` then `wrapped`, the oldest pending output of `conn`, then
    /// report with [`on_send`](crate::Server::on_send) how many bytes were written, counting
    /// through both. Partial writes are normal.
    ///
    /// `wrapped` is the rest of the output where it wraps around the connection's ring
    /// buffer (usually empty): a transport with vectored writes sends both at once, any
    /// other may write `bytes` alone and be asked for the rest next.
    Send {
        /// The connection to write.
        conn: ConnId,
        /// What to write first.
        bytes: &'a [u8],
        /// What follows `bytes` (the output's continuation from the ring's start).
        wrapped: &'a [u8],
    },
    /// [`Scheduling::Completion`](crate::Scheduling::Completion) only: `conn` must close
    /// while a `Recv` or `Send` is in flight; cancel them (io_uring's `ASYNC_CANCEL`)
    /// and report each as it completes (a cancelled one with any error, or what it did
    /// before it was cancelled). `Close` comes when nothing is in flight. Asked once.
    Cancel {
        /// The connection whose operations to cancel.
        conn: ConnId,
    },
    /// [`Config::read_wait`](crate::Config::read_wait) only: the read of `conn` that waits
    /// for data (a `Recv` with `wait`) is to give its buffer back: cancel it (io_uring's
    /// `ASYNC_CANCEL`) and report it with [`on_recv`](crate::Server::on_recv) as it
    /// completes: cancelled, with any error (`Interrupted`), or with what it read before
    /// the cancel reached it. Any `Send` in flight goes on. Asked once per waiting read.
    CancelRecv {
        /// The connection whose waiting read to cancel.
        conn: ConnId,
    },
    /// Every byte is flushed: shut down the write side of `conn` (TCP FIN).
    Shutdown {
        /// The connection to shut down.
        conn: ConnId,
    },
    /// `conn` is lingering (write side shut, output flushed to the transport): find out
    /// how many bytes it wrote, FIN included, the peer has not acknowledged yet, and
    /// report with [`on_probe`](crate::Server::on_probe). With all delivered the server
    /// closes it rather than wait for a peer that keeps its side open; while some are in
    /// flight it asks again with a growing pause ([`Config::probe_backoff_min`]); a
    /// transport that cannot tell answers `Unsupported` and the connection lingers until
    /// the peer's end-of-stream (or a timeout), as it always may.
    ///
    /// [`Config::probe_backoff_min`]: crate::Config::probe_backoff_min
    Probe {
        /// The connection to probe.
        conn: ConnId,
    },
    /// Release the socket of `conn`. Its id is stale from now on.
    Close {
        /// The connection to close.
        conn: ConnId,
        /// Why, for logs.
        reason: CloseReason,
    },
    /// Nothing to do before `until`; `None` means "until readiness changes" (only in
    /// [`Scheduling::Readiness`](crate::Scheduling::Readiness)). Never in the past.
    ///
    /// `Some(now)`, only in readiness scheduling, ends a pass that left work queued: look
    /// for new readiness without blocking (`epoll_wait` with a zero timeout), report it,
    /// and poll again. Passes are bounded so that connections that stay ready cannot keep
    /// newly ready ones, or new arrivals, waiting; a driver that simply waits until
    /// `until` does the right thing.
    Wait {
        /// When to poll again at the latest.
        until: Option<Instant>,
    },
    /// A graceful shutdown has completed: every connection is closed and the server will
    /// ask for nothing more.
    Finished,
}

/// A report that does not fit what the server asked for: a bug in the caller, never a
/// network condition (peer misbehaviour is reported as an outcome, not an error).
///
/// The server's state is unchanged by a call that returns an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// The connection was closed: its id is stale (or was never issued).
    StaleConn(ConnId),
    /// The last [`Action`] was not this operation on this connection.
    Unexpected,
    /// More bytes reported than the action's buffer held.
    Overrun {
        /// Bytes reported.
        reported: usize,
        /// The buffer's length.
        max: usize,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StaleConn(id) => write!(f, "connection {id} is closed (stale id)"),
            Self::Unexpected => f.write_str("report does not match the last action"),
            Self::Overrun { reported, max } => {
                write!(f, "reported {reported} bytes for a buffer of {max}")
            }
        }
    }
}

impl core::error::Error for ReportError {}

/// The answer to [`on_accepted`](crate::Server::on_accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a refused connection must be closed by the caller"]
pub enum Admission {
    /// Admitted under this id: keep its socket under `id.index()`.
    Admitted(ConnId),
    /// Every slot is taken: close the new socket at once (counted in
    /// [`Stats::refused`](crate::Stats::refused)).
    Refused,
}
