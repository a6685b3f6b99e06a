//! Connections: generational [`ConnId`]s, the [`ConnState`] machine, [`CloseReason`]s and
//! the fixed per-connection header [`Slot`] that the caller provides storage for.

use core::fmt;

use embedded_io::ErrorKind;

use crate::list::Links;
use crate::time::Instant;

/// Names one connection for as long as it lives.
///
/// Ids are generational: when a connection is closed its slot's generation moves on, so
/// an id kept after [`Action::Close`](crate::Action::Close) is *stale* and every call that
/// takes it answers [`ReportError::StaleConn`](crate::ReportError::StaleConn) instead of
/// touching whichever connection reuses the slot. (The generation is 32 bits: an id would
/// alias only after its slot was reused 2^32 times.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// The slot index, `0..capacity`: a dense key for the caller's own per-connection
    /// table (its sockets). At most one live connection has a given index.
    pub const fn index(self) -> usize {
        self.index as usize
    }

    /// The slot's generation when this connection was admitted.
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The whole id as one number (the generation in the high 32 bits, the index in the
    /// low ones): a key for readiness sources that carry one (an epoll token), so that
    /// an event of a connection closed since is seen as stale rather than taken for the
    /// connection reusing its slot. The index part is never `u32::MAX`.
    pub const fn to_bits(self) -> u64 {
        (self.generation as u64) << 32 | self.index as u64
    }

    /// The id [`to_bits`](Self::to_bits) gave. Any number makes an id: one the server
    /// did not hand out is stale or unknown to every call that takes it.
    pub const fn from_bits(bits: u64) -> Self {
        Self {
            index: bits as u32,
            generation: (bits >> 32) as u32,
        }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// Where a live connection is in its life.
///
/// ```text
///            peer EOF                flushed: Shutdown
///   Open ─────────────▶ PeerClosed ─────────────────────▶ Closing ──▶ (Close)
///    │                                                       ▲
///    │ server shutdown        flushed: Shutdown  peer EOF,   │
///    │ or close()                                 or output  │
///    └──────────────▶ Draining ─────────────────▶ Lingering ─┘
///                                                 delivered
///
///   reset, broken pipe, idle timeout, shutdown deadline: any state ──▶ Closing
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnState {
    /// Reading and echoing.
    Open,
    /// The peer sent end-of-stream: no more reads; flushing what is left, then
    /// [`Shutdown`](crate::Action::Shutdown) and close.
    PeerClosed,
    /// The server is shutting down: no more echo reads; flushing what was read, then
    /// [`Shutdown`](crate::Action::Shutdown).
    Draining,
    /// Our write side is shut: reading and discarding until the peer's end-of-stream, or
    /// until the transport confirms that every byte and the FIN were acknowledged
    /// ([`Action::Probe`](crate::Action::Probe)), so that closing never resets a
    /// connection whose last bytes are still in flight.
    Lingering,
    /// Finished: the next [`Action::Close`](crate::Action::Close) releases it.
    Closing,
}

impl ConnState {
    /// True in the states that read from the peer.
    pub const fn may_recv(self) -> bool {
        matches!(self, Self::Open | Self::Lingering)
    }

    /// True in the states that may still send (not after [`Shutdown`](crate::Action::Shutdown)).
    pub const fn may_send(self) -> bool {
        matches!(self, Self::Open | Self::PeerClosed | Self::Draining)
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::PeerClosed => "peer-closed",
            Self::Draining => "draining",
            Self::Lingering => "lingering",
            Self::Closing => "closing",
        })
    }
}

/// Why a connection was closed, carried by [`Action::Close`](crate::Action::Close).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The normal end: everything echoed, write side shut down, peer done.
    Done,
    /// A read or write failed: reset by the peer, broken pipe, and so on. Output still
    /// pending for this connection is dropped (counted in
    /// [`Stats::bytes_dropped`](crate::Stats::bytes_dropped)).
    Failed(ErrorKind),
    /// No progress for the idle timeout (slowloris defence).
    TimedOut,
    /// The graceful shutdown deadline passed first.
    Forced,
    /// Refused at capacity: accepted and closed at once, never read.
    Refused,
    /// Dropped at the caller's request ([`Server::abort`](crate::Server::abort)).
    Aborted,
}

impl CloseReason {
    /// True for [`CloseReason::Done`], the only close after which nothing was lost.
    pub const fn is_clean(self) -> bool {
        matches!(self, Self::Done)
    }

    /// True when the stream should be reset (TCP RST) rather than closed with a FIN: the
    /// server gives up on output it could not deliver ([`Forced`](Self::Forced),
    /// [`Aborted`](Self::Aborted)). Every other close is orderly: after a clean end, a
    /// refusal, an idle timeout, or a failure (the connection is broken either way). One
    /// rule for every adapter.
    pub const fn is_abortive(self) -> bool {
        matches!(self, Self::Forced | Self::Aborted)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("done"),
            Self::Failed(kind) => write!(f, "failed: {kind:?}"),
            Self::TimedOut => f.write_str("idle timeout"),
            Self::Forced => f.write_str("forced at shutdown deadline"),
            Self::Refused => f.write_str("refused at capacity"),
            Self::Aborted => f.write_str("aborted"),
        }
    }
}

/// "No index": the end of an intrusive list, or no buffer block.
pub(crate) const NIL: u32 = u32::MAX;

/// Four of a slot's marks, one bit each in one byte, so that the express lane asks them
/// with one test (as four `bool`s: four loads and four branches; the lane in criterion,
/// per 64-byte message: 8.12 ns against 7.89).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags(u8);

impl Flags {
    pub(crate) const NONE: Self = Self(0);
    /// A new connection's: writable, nothing else.
    pub(crate) const OPENED: Self = Self(Self::WRITABLE);
    /// Readiness: "a write may make progress". Cleared by would-block, set by a new
    /// polling pass or by a readiness event.
    pub(crate) const WRITABLE: u8 = 1;
    /// On the run queue.
    pub(crate) const QUEUED: u8 = 1 << 1;
    /// The last read filled its buffer: prefer a large buffer next time.
    pub(crate) const BULK: u8 = 1 << 2;
    /// The peer's end-of-stream is known and not yet dealt with. Before it is read: the
    /// readiness source reported it ([`Server::on_read_closed`](crate::Server::on_read_closed)),
    /// so reads go on to it, short reads or not. After (`PeerClosed`): a general
    /// service's `end` is still to be called.
    pub(crate) const PEER_FIN: u8 = 1 << 3;

    #[inline(always)]
    pub(crate) fn has(self, mark: u8) -> bool {
        self.0 & mark != 0
    }

    /// Sets `mark` to `on`, without a branch.
    #[inline(always)]
    pub(crate) fn set(&mut self, mark: u8, on: bool) {
        self.0 = (self.0 & !mark) | (u8::from(on) * mark);
    }

    /// Sets `mark` if `on`, else leaves it as it was.
    #[inline(always)]
    pub(crate) fn add(&mut self, mark: u8, on: bool) {
        self.0 |= u8::from(on) * mark;
    }

    /// Writable, and neither queued, bulk nor with an end-of-stream to deal with: the
    /// marks' part of the express lane's "quiet".
    #[inline(always)]
    pub(crate) fn quiet(self) -> bool {
        self.0 & (Self::WRITABLE | Self::QUEUED | Self::BULK | Self::PEER_FIN) == Self::WRITABLE
    }
}

/// The fixed header of one connection slot: the only memory an idle connection costs.
///
/// The caller provides an array of these (one per connection the server may hold) and
/// never looks inside; a buffer block is lent to a slot only while it holds data.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// `None` while the slot is free.
    pub(crate) state: Option<ConnState>,
    /// Set with `state = Closing`.
    pub(crate) close_reason: CloseReason,
    /// Readiness: "a read may make progress" (a write's: [`Flags::WRITABLE`]). Cleared by
    /// would-block, set by a new polling pass or by a readiness event.
    pub(crate) readable: bool,
    /// Writable readiness, and three marks (see [`Flags`]).
    pub(crate) flags: Flags,
    /// Lingering: ask the transport whether its output is delivered
    /// ([`Action::Probe`](crate::Action::Probe)) at the next visit.
    pub(crate) probe_due: bool,
    pub(crate) generation: u32,
    /// Next slot on the run queue (live slots) or on the free list (free slots).
    pub(crate) next: u32,
    /// The lent buffer block, or `NIL`.
    pub(crate) block: u32,
    /// Pending output: `len` bytes from `head`, wrapping around the block (a ring; with a
    /// general service, the block's second half).
    pub(crate) head: u32,
    pub(crate) len: u32,
    /// Idle deadline: last progress plus the idle timeout.
    pub(crate) deadline: Instant,
    /// Place in the list of live connections ordered by last progress (so by deadline).
    pub(crate) timer: Links,
    /// Place in the FIFO of connections waiting for a buffer to read into.
    pub(crate) wait: Links,
    /// While a general service serves the connection: its input not consumed yet, at the
    /// start of the block (whose first half is for input). While lingering with output
    /// not yet acknowledged: bytes (and FIN) in flight at the last probe. The two never
    /// meet: input left when a connection is finished is discarded. Then the place in
    /// the list of connections probed again each round.
    pub(crate) held: u32,
    pub(crate) probe: Links,
}

impl Slot {
    /// A free slot, for initialising storage: `[Slot::EMPTY; N]`.
    pub const EMPTY: Self = Self {
        state: None,
        close_reason: CloseReason::Done,
        readable: false,
        flags: Flags::NONE,
        probe_due: false,
        generation: 0,
        next: NIL,
        block: NIL,
        head: 0,
        len: 0,
        deadline: Instant::MAX,
        timer: Links::UNLINKED,
        wait: Links::UNLINKED,
        held: 0,
        probe: Links::UNLINKED,
    };
}

impl Default for Slot {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// What one connection has in flight, in [`Scheduling::Completion`](crate::Scheduling::Completion):
/// the caller provides one per slot ([`Storage::with_completions`](crate::Storage::with_completions)),
/// so that the other modes pay nothing for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// A `Recv` in flight: where its buffer starts in the block, and its length.
    pub(crate) recv: Option<(u32, u32)>,
    /// A `Send` in flight: how many bytes it was given.
    pub(crate) send: Option<u32>,
    /// `Cancel` was asked for what is in flight.
    pub(crate) cancel: bool,
    /// Readiness reported while the read (write) was in flight: the direction is ready
    /// again once it completes.
    pub(crate) read_edge: bool,
    pub(crate) write_edge: bool,
    /// The read in flight may wait in the transport for data
    /// ([`Config::read_wait`](crate::Config::read_wait)): since `waiting_since`, on the
    /// list of waiting reads (`hold`), oldest first.
    pub(crate) waits: bool,
    /// The waiting read was asked for with readiness reported (it need not have been):
    /// what the connection is again if the read is cancelled or interrupted.
    pub(crate) waited_ready: bool,
    /// The last read brought data: the next one may wait for more.
    pub(crate) wait_next: bool,
    /// The waiting read is to give its buffer back: ask `CancelRecv` at the next visit.
    pub(crate) give_back: bool,
    /// `CancelRecv` was asked for the waiting read.
    pub(crate) cancel_recv: bool,
    pub(crate) waiting_since: Instant,
    pub(crate) hold: Links,
}

impl InFlight {
    /// Nothing in flight.
    pub const EMPTY: Self = Self {
        recv: None,
        send: None,
        cancel: false,
        read_edge: false,
        write_edge: false,
        waits: false,
        waited_ready: false,
        wait_next: false,
        give_back: false,
        cancel_recv: false,
        waiting_since: Instant::ZERO,
        hold: Links::UNLINKED,
    };
}

mod sealed {
    pub trait Sealed {}
}

/// Where a server keeps what its connections have in flight: [`NoFlights`] (the default:
/// no completion scheduling, not a branch of it compiled in) or a [`FlightTable`]
/// ([`Storage::with_completions`](crate::Storage::with_completions)). Sealed.
pub trait Flights:
    sealed::Sealed + core::ops::Index<usize, Output = InFlight> + core::ops::IndexMut<usize>
{
    /// Completion scheduling can run.
    const ENABLED: bool;
    /// Every entry, for the lists threaded through them.
    #[doc(hidden)]
    fn entries(&mut self) -> &mut [InFlight];
}

/// No table: the server runs its one-operation-at-a-time modes only.
#[derive(Debug, Default)]
pub struct NoFlights(InFlight);

impl sealed::Sealed for NoFlights {}

impl Flights for NoFlights {
    const ENABLED: bool = false;

    fn entries(&mut self) -> &mut [InFlight] {
        core::slice::from_mut(&mut self.0)
    }
}

/// Never used: `ENABLED` is false, so every use is compiled away.
impl core::ops::Index<usize> for NoFlights {
    type Output = InFlight;

    fn index(&self, _: usize) -> &InFlight {
        &self.0
    }
}

impl core::ops::IndexMut<usize> for NoFlights {
    fn index_mut(&mut self, _: usize) -> &mut InFlight {
        &mut self.0
    }
}

/// The caller's table of what each connection has in flight, an entry per slot.
#[derive(Debug)]
pub struct FlightTable<'a>(pub(crate) &'a mut [InFlight]);

impl sealed::Sealed for FlightTable<'_> {}

impl Flights for FlightTable<'_> {
    const ENABLED: bool = true;

    fn entries(&mut self) -> &mut [InFlight] {
        self.0
    }
}

impl core::ops::Index<usize> for FlightTable<'_> {
    type Output = InFlight;

    fn index(&self, idx: usize) -> &InFlight {
        &self.0[idx]
    }
}

impl core::ops::IndexMut<usize> for FlightTable<'_> {
    fn index_mut(&mut self, idx: usize) -> &mut InFlight {
        &mut self.0[idx]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_stays_small() {
        // An idle connection costs only this (plus the caller's socket handle).
        assert!(
            core::mem::size_of::<Slot>() <= 64,
            "{}",
            core::mem::size_of::<Slot>()
        );
    }

    #[test]
    fn bits_round_trip() {
        for (index, generation) in [(0, 0), (1, 7), (u32::MAX - 1, u32::MAX)] {
            let id = ConnId { index, generation };
            assert_eq!(ConnId::from_bits(id.to_bits()), id);
        }
        let id = ConnId {
            index: 3,
            generation: 2,
        };
        assert_eq!(id.to_bits(), 0x2_0000_0003);
    }

    #[test]
    fn predicates() {
        assert!(ConnState::Open.may_recv() && ConnState::Open.may_send());
        assert!(!ConnState::PeerClosed.may_recv() && ConnState::PeerClosed.may_send());
        assert!(!ConnState::Draining.may_recv() && ConnState::Draining.may_send());
        assert!(ConnState::Lingering.may_recv() && !ConnState::Lingering.may_send());
        assert!(!ConnState::Closing.may_recv() && !ConnState::Closing.may_send());
    }
}
