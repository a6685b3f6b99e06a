//! Tuning knobs of the [`Server`](crate::Server): timeouts, back-off, fairness, scheduling.

use crate::time::Duration;

/// How the caller learns that a connection may make progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scheduling {
    /// The textbook loop: every polling pass tries every connection (and `accept`); a
    /// would-block means "next pass". Passes that make no progress back off with a growing
    /// [`Action::Wait`](crate::Action::Wait), so an idle server sleeps.
    #[default]
    Polling,
    /// A readiness source (epoll, smoltcp socket state) reports what became ready with
    /// [`Server::on_ready`](crate::Server::on_ready) and
    /// [`Server::on_listener_ready`](crate::Server::on_listener_ready); only those are
    /// tried, and with nothing ready the server waits for readiness or its next timer.
    /// A pass serves what was ready when it began; when work is left after it, the
    /// server asks the driver to look for new readiness without blocking
    /// ([`Action::Wait`](crate::Action::Wait) until now) before the next pass.
    Readiness,
    /// Readiness scheduling whose reads and writes *complete* later, in any order
    /// (io_uring, a task per connection): per connection, one `Recv` and one `Send` may
    /// be in flight at once, across all connections as many as there are, and each is
    /// reported when it completes. Needs [`Storage::with_completions`](crate::Storage::with_completions)
    /// (without it the server runs in `Readiness`). See [`Action::Recv`](crate::Action::Recv)
    /// for the buffer it lends, and [`Action::Cancel`](crate::Action::Cancel).
    Completion,
}

/// Server configuration. Build it from [`Config::default`] and change fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Polling or readiness-driven.
    pub scheduling: Scheduling,
    /// Close a connection that made no progress (nothing received or sent) for this long.
    /// `None` turns it off; at least 1 µs. Default: 300 s.
    pub idle_timeout: Option<Duration>,
    /// Operations (receives and sends) one connection may take per visit before the next
    /// connection's turn: round-robin fairness. At least 1; default 4.
    pub visit_budget: u16,
    /// A read that returns fewer bytes than its buffer held means the stream has nothing
    /// more to give now, and new data will make it ready again (in readiness scheduling,
    /// a new readiness event): the connection is not read again until then, which saves
    /// the read that would only would-block. True of TCP sockets with edge-triggered
    /// epoll, kqueue or plain polling (a short read means the receive queue was emptied,
    /// and any later arrival raises a new edge); not of streams that may return less than
    /// they have (`embedded-io` allows it). Default: false.
    pub short_reads_drain: bool,
    /// Connections a pass may accept (or refuse at capacity) before it serves the
    /// connections that were ready when it began. At least 1; default 16.
    pub accepts_per_pass: u16,
    /// First [`Wait`](crate::Action::Wait) after a polling pass without progress.
    /// Default 50 µs.
    pub idle_backoff_min: Duration,
    /// The idle back-off doubles up to this. Default 10 ms: an idle polling server makes
    /// at most 100 passes a second.
    pub idle_backoff_max: Duration,
    /// First pause of `accept` after it failed (for example out of file descriptors).
    /// Default 10 ms.
    pub accept_backoff_min: Duration,
    /// The accept pause doubles up to this, while failures go on. Default 1 s. A closed
    /// connection (a freed descriptor) ends the pause early.
    pub accept_backoff_max: Duration,
    /// First pause before a lingering connection whose output is still in flight is
    /// probed again ([`Action::Probe`](crate::Action::Probe)). Default 1 ms.
    pub probe_backoff_min: Duration,
    /// The pause between probe rounds doubles up to this while connections wait for
    /// their output to be acknowledged. Default 50 ms: a connection is closed at most
    /// that long after its last byte is acknowledged, and each waiting connection costs
    /// at most 20 probes a second.
    pub probe_backoff_max: Duration,
    /// [`Scheduling::Completion`] only: after a read that brought data, the next read of
    /// the connection may *wait* in the transport for more ([`Action::Recv`] with `wait`;
    /// io_uring without `MSG_DONTWAIT`) instead of waiting for readiness first: a reply's
    /// next request then costs no readiness round trip (for io_uring, one
    /// `io_uring_enter` fewer per message). It is asked to wait whether or not readiness
    /// was reported meanwhile: with data there it completes at once, and io_uring
    /// reports the read-ready edge for the data a read took after that read, where a
    /// read that may not wait would find nothing. While other connections are queued, or
    /// one waits for a buffer, reads do not wait. A waiting read holds its buffer, so it holds
    /// it for at most this long: then the server cancels it ([`Action::CancelRecv`]),
    /// and the connection waits for readiness holding no buffer, as before. A connection
    /// that needs a buffer while none is free takes the oldest waiting read's back at
    /// once. At least 1 µs; `None` (the default): no read waits.
    ///
    /// [`Action::Recv`]: crate::Action::Recv
    /// [`Action::CancelRecv`]: crate::Action::CancelRecv
    pub read_wait: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            scheduling: Scheduling::Polling,
            idle_timeout: Some(Duration::from_secs(300)),
            visit_budget: 4,
            short_reads_drain: false,
            accepts_per_pass: 16,
            idle_backoff_min: Duration::from_micros(50),
            idle_backoff_max: Duration::from_millis(10),
            accept_backoff_min: Duration::from_millis(10),
            accept_backoff_max: Duration::from_secs(1),
            probe_backoff_min: Duration::from_millis(1),
            probe_backoff_max: Duration::from_millis(50),
            read_wait: None,
        }
    }
}
