//! A `no_std`, allocation-free, sans-IO state machine for a non-blocking TCP echo server.
//!
//! This is the textbook non-blocking echo loop (try `accept`, try `recv` on every
//! connection, send the bytes back uppercased, would-block means "later", an empty read
//! means "closed", a reset means "gone") with every decision moved into a pure state
//! machine, [`Server`], that performs no I/O and reads no clock. It asks its caller for one
//! operation at a time and is told the outcome, so the same logic runs over std sockets,
//! epoll, smoltcp or a simulated network, and can be tested without any of them.
//!
//! # The contract
//!
//! [`Server`]'s methods come in four kinds:
//!
//! - **getters**: [`stats`](Server::stats), [`conn_state`](Server::conn_state),
//!   [`capacity`](Server::capacity), ...;
//! - **`poll`**: [`Server::poll`] returns the next [`Action`] to perform: `Accept`,
//!   `Recv { conn, buf }`, `Send { conn, bytes, wrapped }`, `Shutdown { conn }`,
//!   `Probe { conn }`, `Close { conn, reason }`, `Wait { until }`, or `Finished` after a
//!   graceful shutdown (and `Cancel { conn }`, in completion scheduling only);
//! - **`on_*`**: report the outcome of the `Accept`, `Recv`, `Send` or `Probe` just asked
//!   for, as `nb::Result`s: [`on_accepted`](Server::on_accepted) /
//!   [`on_accept_error`](Server::on_accept_error), [`on_recv`](Server::on_recv) (`Ok(0)` is
//!   end-of-stream), [`on_send`](Server::on_send) (partial writes are normal),
//!   [`on_probe`](Server::on_probe) (bytes the peer has not acknowledged). Would-block is
//!   `Err(nb::Error::WouldBlock)`; a failure is `Err(nb::Error::Other(kind))` with an
//!   [`ErrorKind`] (embedded-io's). `Shutdown` and `Close` need no report;
//! - **events from outside**: readiness ([`on_ready`](Server::on_ready),
//!   [`on_listener_ready`](Server::on_listener_ready)) for readiness-driven callers,
//!   [`begin_shutdown`](Server::begin_shutdown), and the caller's own decisions about one
//!   connection: [`close`](Server::close) (finish it in order) and
//!   [`abort`](Server::abort) (drop it now). Every `Close` carries a [`CloseReason`];
//!   [`Stream::close`] receives it, and [`CloseReason::is_abortive`] says whether to reset
//!   the stream or close it in order, the same rule for every adapter.
//!
//! The order is: `poll`, perform the action, report it (if it is `Accept`, `Recv`, `Send`
//! or `Probe`), `poll` again. In [`Scheduling::Completion`] (io_uring, a task per connection),
//! a `Recv` and a `Send` may instead be reported when they complete, after other polls and
//! in any order: per connection one of each may be in flight, the buffer of a `Recv` and
//! the bytes of a `Send` stay lent until their report, and a connection that must close
//! while something is in flight is first asked to `Cancel` it. With
//! [`Config::read_wait`] a `Recv` may *wait* in the transport for data; the core bounds
//! how long it holds its buffer and takes it back with [`Action::CancelRecv`]. `Accept` and `Probe` are
//! always reported before the next `poll`. This needs the table of
//! [`Storage::with_completions`]; a server without it has no completion code at all. Time is an input: every call that needs it takes `now`. A report
//! that does not match the last action, or names a closed connection, is a
//! [`ReportError`] and changes nothing; peer behaviour (resets, half-closes, silence) is
//! never an error, only an outcome.
//!
//! The [`Driver`] runs that loop for anything implementing the small [`Listener`] and
//! [`Stream`] traits; [`EmbeddedIo`] makes any `embedded_io::{Read, ReadReady, Write,
//! WriteReady}` stream one, and [`AcceptFn`] makes an accept function a listener.
//!
//! A readiness driver reports readiness through [`Driver::on_ready`], which is also the
//! *express lane*: a connection that was quiet (open, holding no buffer and so no output,
//! nothing queued) and is now readable is served at once, a read into a small buffer and
//! the write of what it read, each reported to the server as `on_recv` and `on_send`
//! would be. That is the common case of a request and its answer, and it skips the run
//! queue, the pass and a `poll` per operation (in the core, about a quarter of the
//! general path's instructions per 64 B message). A read that drained the stream, whose
//! answer was written whole, leaves the connection quiet; any other outcome (a partial
//! write, a full buffer, the end of the stream, a failure) leaves it exactly as the pass
//! would have, and what is left to do goes to the run queue.
//!
//! # Guarantees
//!
//! - Bytes asked to be sent are always a prefix of `transform(bytes received)`, per
//!   connection; after the peer's end-of-stream, all of it, then `Shutdown`, then `Close`.
//!   With a general [`Service`] (replies of any length, per-connection state, the
//!   application closing: see [`NumberedLines`]), they are the service's replies, in the
//!   order it wrote them, every one sent before the FIN.
//! - Memory is fixed and provided by the caller ([`Storage`]): a [`Slot`] header per
//!   connection and an arena of buffers lent only to connections that hold data. A full
//!   buffer stops reads from that connection (backpressure) until sends drain it.
//! - A connection we finish (graceful shutdown, [`close`](Server::close)) lingers after its
//!   `Shutdown`, reading and discarding, until the peer's end-of-stream or until the
//!   transport reports every byte and the FIN acknowledged (`Probe`, asked again with a
//!   back-off while some are in flight): a peer that keeps its side open does not hold a
//!   graceful shutdown to its deadline, and nothing is reset while in flight.
//! - At capacity, new connections are refused ([`Admission::Refused`]) and counted.
//! - Failing accepts back off; idle polling passes back off ([`Action::Wait`] grows);
//!   idle connections time out; connection ids are generational.
//! - Passes are bounded (fairness): a pass accepts at most
//!   [`accepts_per_pass`](Config::accepts_per_pass) connections, then visits each
//!   connection that was queued when it began once, for at most
//!   [`visit_budget`](Config::visit_budget) reads and writes. What becomes ready meanwhile
//!   is served in the next pass; in readiness scheduling the driver looks for new events
//!   between passes that leave work behind (`Wait` until now). So a connection that
//!   becomes ready is served within two passes, however busy the others are. The express
//!   lane serves a quiet connection once per readiness report, for one read and one
//!   write, before the next pass: a connection with work left is never quiet, so a busy
//!   one cannot use it to go round the passes.
//! - A connection that can get no buffer waits in line: a released buffer goes to the
//!   connection that has waited longest.
//! - Buffers follow the load ([`Storage::with_large_buffers`]): a connection gets a large
//!   buffer when its last read filled its buffer (bulk), a small one otherwise; either way
//!   it gives it back once it holds no data and a read finds nothing.
//! - Cost per operation does not grow with the number of connections: the run queue, the
//!   idle timers (a list ordered by last progress) and the line for buffers are intrusive
//!   lists through the slots, O(1) per operation.
//!
//! # Example
//!
//! One client sends `hello` and closes its write side; the server echoes `HELLO`, shuts
//! down and closes.
//!
//! ```
//! use nbecho_core::{Action, Admission, Config, Instant, Server, Slot, Storage, Uppercase};
//!
//! let mut slots = [Slot::EMPTY; 4];
//! let mut buffers = [0u8; 4 * 64];
//! let storage = Storage::new(&mut slots, &mut buffers, 64)?;
//! let mut server = Server::new(Config::default(), storage, Uppercase);
//!
//! let now = Instant::ZERO;
//! let mut unread: &[u8] = b"hello"; // sent by the client, then end-of-stream
//! let mut echoed = Vec::new();
//! let mut connected = false;
//! loop {
//!     match server.poll(now) {
//!         Action::Accept if !connected => {
//!             connected = true;
//!             assert!(matches!(server.on_accepted(now)?, Admission::Admitted(_)));
//!         }
//!         Action::Accept => server.on_accept_error(now, nb::Error::WouldBlock)?,
//!         Action::Recv { conn, buf, .. } => {
//!             let n = unread.len().min(buf.len());
//!             buf[..n].copy_from_slice(&unread[..n]);
//!             unread = &unread[n..];
//!             server.on_recv(now, conn, Ok(n))?; // Ok(0) once all is read: end-of-stream
//!         }
//!         Action::Send { conn, bytes, .. } => {
//!             echoed.extend_from_slice(bytes);
//!             let n = bytes.len();
//!             server.on_send(now, conn, Ok(n))?;
//!         }
//!         Action::Shutdown { .. } => assert_eq!(echoed, b"HELLO"),
//!         Action::Probe { .. } => unreachable!("only after a shutdown of ours"),
//!         Action::Cancel { .. } | Action::CancelRecv { .. } => {
//!             unreachable!("only in completion scheduling")
//!         }
//!         Action::Close { reason, .. } => {
//!             assert!(reason.is_clean());
//!             break;
//!         }
//!         Action::Wait { .. } | Action::Finished => unreachable!("work was pending"),
//!     }
//! }
//! assert_eq!(server.stats().bytes_out, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! None: the crate is always `no_std` and never allocates.
// no_std, except that unit tests use the std prelude (Vec, Box, format!).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![doc(test(attr(deny(warnings))))]

mod action;
mod buffer;
mod config;
mod conn;
mod driver;
mod embedded_io;
mod list;
mod server;
mod service;
mod stats;
mod time;
mod transform;

pub use ::embedded_io::ErrorKind;
pub use action::{Action, Admission, ReportError};
pub use buffer::{StorageError, MAX_BLOCK, MIN_BLOCK};
pub use config::{Config, Scheduling};
pub use conn::{CloseReason, ConnId, ConnState, FlightTable, Flights, InFlight, NoFlights, Slot};
pub use driver::{AcceptFn, Driver, Listener, Served, Step, Stream, TooFewStreams};
pub use embedded_io::EmbeddedIo;
pub use nb;
pub use server::{Server, Storage};
pub use service::{Full, LineState, NumberedLines, Reply, Service};
pub use stats::Stats;
pub use time::{Alarm, Duration, Instant};
pub use transform::{Identity, Mode, Transform, Uppercase};
