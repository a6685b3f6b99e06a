//! Counters the server keeps, readable at any time.

use core::fmt;

/// What the server has done so far. Every counter only grows, except `active`.
///
/// Byte accounting always balances:
/// `bytes_in == bytes_out + bytes_dropped + bytes_buffered()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections admitted.
    pub accepted: u64,
    /// Connections refused because every slot was taken.
    pub refused: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections closed, for any reason.
    pub closed: u64,
    /// End-of-stream received from a peer.
    pub peer_closed: u64,
    /// Connections that failed on a read or write (reset, broken pipe, ...).
    pub failed: u64,
    /// Connections closed by the idle timeout.
    pub timeouts: u64,
    /// Connections force-closed at the graceful shutdown deadline.
    pub forced: u64,
    /// Connections dropped at the caller's request ([`Server::abort`](crate::Server::abort)).
    pub aborted: u64,
    /// Failed accepts other than would-block (out of file descriptors, ...).
    pub accept_errors: u64,
    /// Bytes received and kept for echoing.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Received bytes never sent because their connection failed, timed out or was
    /// forced closed.
    pub bytes_dropped: u64,
    /// Bytes read and thrown away while lingering after shutdown (never echoed, so not
    /// part of `bytes_in`).
    pub bytes_discarded: u64,
    /// Bytes that connections force-closed at the shutdown deadline had written and the
    /// peer had not acknowledged at their last [`Action::Probe`](crate::Action::Probe):
    /// sent, maybe never delivered (a forced close resets the connection).
    pub bytes_unacked: u64,
    /// Reads asked to wait in the transport for data ([`Config::read_wait`](crate::Config::read_wait)).
    pub waiting_reads: u64,
    /// Waiting reads cancelled to give their buffer back (their hold ended, a connection
    /// needed the buffer, or the connection was stopping): [`Action::CancelRecv`](crate::Action::CancelRecv).
    pub waits_given_back: u64,
}

impl Stats {
    /// Bytes received and not yet sent or dropped: what sits in buffers now, with a
    /// [`Transform`](crate::Transform) (byte for byte). With a general
    /// [`Service`](crate::Service), whose replies need not be as long as their input,
    /// it is only `bytes_in - bytes_out - bytes_dropped`, and 0 when that is negative.
    pub const fn bytes_buffered(&self) -> u64 {
        self.bytes_in
            .saturating_sub(self.bytes_out)
            .saturating_sub(self.bytes_dropped)
    }
}

impl core::ops::AddAssign for Stats {
    /// Sums the counters of several servers (for example one per thread).
    fn add_assign(&mut self, other: Self) {
        let Self {
            accepted,
            refused,
            active,
            closed,
            peer_closed,
            failed,
            timeouts,
            forced,
            aborted,
            accept_errors,
            bytes_in,
            bytes_out,
            bytes_dropped,
            bytes_discarded,
            bytes_unacked,
            waiting_reads,
            waits_given_back,
        } = other;
        self.accepted += accepted;
        self.refused += refused;
        self.active += active;
        self.closed += closed;
        self.peer_closed += peer_closed;
        self.failed += failed;
        self.timeouts += timeouts;
        self.forced += forced;
        self.aborted += aborted;
        self.accept_errors += accept_errors;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.bytes_dropped += bytes_dropped;
        self.bytes_discarded += bytes_discarded;
        self.bytes_unacked += bytes_unacked;
        self.waiting_reads += waiting_reads;
        self.waits_given_back += waits_given_back;
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted={} refused={} active={} closed={} peer_closed={} failed={} timeouts={} \
             forced={} aborted={} accept_errors={} bytes_in={} bytes_out={} bytes_dropped={} bytes_discarded={} \
             bytes_unacked={} waiting_reads={} waits_given_back={}",
            self.accepted,
            self.refused,
            self.active,
            self.closed,
            self.peer_closed,
            self.failed,
            self.timeouts,
            self.forced,
            self.aborted,
            self.accept_errors,
            self.bytes_in,
            self.bytes_out,
            self.bytes_dropped,
            self.bytes_discarded,
            self.bytes_unacked,
            self.waiting_reads,
            self.waits_given_back,
        )
    }
}
