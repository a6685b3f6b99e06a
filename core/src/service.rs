//! What the server does with what it receives, in general: a [`Service`], replying through
//! a [`Reply`]. Every [`Transform`] is a service (the byte-for-byte, zero-cost case);
//! [`NumberedLines`] is an example of one that is not.

use core::fmt;

use crate::conn::ConnId;
use crate::transform::Transform;

/// The application: per connection, it turns received bytes into replies.
///
/// For each connection, the server calls [`open`](Self::open) when it is admitted, then
/// [`receive`](Self::receive) each time bytes arrive (with every byte received and not
/// consumed yet), [`end`](Self::end) once after the peer's end-of-stream, and
/// [`close`](Self::close) when it is gone. Per-connection state lives in the service,
/// keyed by [`ConnId::index`] (the ids of live connections never share an index), so it
/// can be a fixed array: nothing allocates.
///
/// A connection's buffer is split in two while a general service serves it: half for
/// input not consumed yet, half for replies not sent yet. `receive` consumes what it can
/// answer, and leaves the rest, for example a partial line, to be offered again with the
/// bytes that follow. If the input half is full, nothing was consumed and every reply is
/// sent, the service can never make progress: the connection fails
/// ([`CloseReason::Failed`](crate::CloseReason::Failed) with `OutOfMemory`). Input not
/// consumed when a connection is finished (the service closed it, or a graceful stop) is
/// discarded ([`Stats::bytes_discarded`](crate::Stats::bytes_discarded)).
///
/// Whatever the chunks the network delivers, a service that replies only from the bytes
/// it consumes (and its state) sends the same bytes.
pub trait Service {
    /// `conn` was admitted: its state starts here.
    fn open(&mut self, conn: ConnId) {
        let _ = conn;
    }

    /// `input` is everything received on `conn` and not consumed yet, oldest first.
    /// Writes replies with `reply` (they go out in order, after earlier ones) and returns
    /// how many bytes of `input` it consumed; the rest comes back with more input. A
    /// service that cannot reply for lack of room ([`Reply::room`]) consumes less: it is
    /// called again when replies have gone out.
    fn receive(&mut self, conn: ConnId, input: &[u8], reply: &mut Reply<'_>) -> usize;

    /// The peer ended its stream, and every reply so far is sent: `input` is what was
    /// never consumed (often empty). Called once; the last replies it writes go out
    /// before the FIN. The default writes nothing.
    fn end(&mut self, conn: ConnId, input: &[u8], reply: &mut Reply<'_>) {
        let _ = (conn, input, reply);
    }

    /// `conn` is closed: its state may go.
    fn close(&mut self, conn: ConnId) {
        let _ = conn;
    }

    /// True if the service is a byte-for-byte transform: then the server uses the whole
    /// buffer of a connection as its reply queue, [`transform`](Self::transform)s each
    /// read where it landed, and never calls `receive` or `end`: the zero-copy path of
    /// [`Uppercase`](crate::Uppercase) and [`Identity`](crate::Identity), where it is a
    /// constant and every branch on it is compiled away. It must not change.
    fn is_transform(&self) -> bool {
        false
    }

    /// With [`is_transform`](Self::is_transform): transforms `bytes` in place, keeping
    /// their length. Not called otherwise; the default does nothing.
    fn transform(&mut self, bytes: &mut [u8]) {
        let _ = bytes;
    }
}

/// Every [`Transform`] is a service: byte for byte, in place, no per-connection state.
impl<T: Transform> Service for T {
    fn receive(&mut self, _: ConnId, input: &[u8], reply: &mut Reply<'_>) -> usize {
        // Not called by the server (`is_transform`): correct all the same.
        let n = input.len().min(reply.room());
        let at = reply.len;
        if reply.write(&input[..n]).is_ok() {
            reply.transform_written(at, |bytes| self.apply(bytes));
        }
        n
    }

    fn is_transform(&self) -> bool {
        true
    }

    #[inline(always)]
    fn transform(&mut self, bytes: &mut [u8]) {
        self.apply(bytes);
    }
}

/// The room for a connection's replies: free space in its buffer, possibly in two parts
/// (where the buffer wraps around). Writes are all or nothing.
pub struct Reply<'b> {
    first: &'b mut [u8],
    second: &'b mut [u8],
    len: usize,
    close: bool,
}

/// [`Reply::write`] had not enough room: nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full {
    /// Bytes asked to be written.
    pub wanted: usize,
    /// Bytes of room there were.
    pub room: usize,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a reply of {} bytes with room for {}",
            self.wanted, self.room
        )
    }
}

impl core::error::Error for Full {}

impl<'b> Reply<'b> {
    /// Room in `first`, then `second`.
    pub(crate) fn new(first: &'b mut [u8], second: &'b mut [u8]) -> Self {
        Self {
            first,
            second,
            len: 0,
            close: false,
        }
    }

    /// Bytes that can still be written.
    pub fn room(&self) -> usize {
        self.first.len() + self.second.len() - self.len
    }

    /// Bytes written so far by this call.
    pub fn written(&self) -> usize {
        self.len
    }

    /// Appends `bytes` whole, or nothing if they do not fit.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Full> {
        let room = self.room();
        if bytes.len() > room {
            return Err(Full {
                wanted: bytes.len(),
                room,
            });
        }
        let mut bytes = bytes;
        if self.len < self.first.len() {
            let n = (self.first.len() - self.len).min(bytes.len());
            self.first[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        if !bytes.is_empty() {
            let at = self.len - self.first.len();
            self.second[at..at + bytes.len()].copy_from_slice(bytes);
        }
        self.len += bytes.len();
        Ok(())
    }

    /// Asks the server to finish the connection once the replies written so far are
    /// sent: then its write side is shut down (FIN), what the peer still sends is
    /// discarded, and it closes (as [`Server::close`](crate::Server::close) does).
    pub fn close(&mut self) {
        self.close = true;
    }

    /// True once [`close`](Self::close) was asked.
    pub fn is_closing(&self) -> bool {
        self.close
    }

    /// Applies `f` to the bytes written from offset `at` on, in their one or two parts.
    fn transform_written(&mut self, at: usize, mut f: impl FnMut(&mut [u8])) {
        let first_end = self.len.min(self.first.len());
        if at < first_end {
            f(&mut self.first[at..first_end]);
        }
        let second_start = at.saturating_sub(self.first.len());
        let second_end = self.len.saturating_sub(self.first.len());
        if second_start < second_end {
            f(&mut self.second[second_start..second_end]);
        }
    }

    pub(crate) fn finish(self) -> (usize, bool) {
        (self.len, self.close)
    }
}

impl fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("written", &self.len)
            .field("room", &self.room())
            .field("close", &self.close)
            .finish()
    }
}

/// The state [`NumberedLines`] keeps per connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineState {
    /// Lines started so far.
    number: u32,
    /// The current line's prefix is out: its bytes follow as they come.
    in_line: bool,
}

impl LineState {
    /// A connection's state before its first line.
    pub const NEW: Self = Self {
        number: 0,
        in_line: false,
    };
}

/// An example [`Service`] that is not byte for byte: it numbers each connection's lines.
///
/// - `hello\n` is answered `1: hello\n`, the next line `2: ...`, per connection (the
///   counter is per-connection state, in a caller-provided array);
/// - a line `quit` (or `quit\r`) is answered `bye\n`, and the server finishes the
///   connection (the application closes it);
/// - a line longer than the buffer streams: its prefix goes out with its first bytes;
/// - at the end of the stream, an unfinished line is finished with a newline.
///
/// One client sends `hello\nwor`, `ld\nquit\n`, and is answered line by line, then
/// finished by the service:
///
/// ```
/// use nbecho_core::{Action, Config, Instant, LineState, NumberedLines, Server, Slot, Storage};
///
/// let (mut slots, mut buffers) = ([Slot::EMPTY; 2], [0u8; 2 * 64]);
/// let mut lines = [LineState::NEW; 2]; // one per slot
/// let storage = Storage::new(&mut slots, &mut buffers, 64)?;
/// let mut server = Server::new(Config::default(), storage, NumberedLines::new(&mut lines));
///
/// let now = Instant::ZERO;
/// let mut chunks: &[&[u8]] = &[b"hello\nwor", b"ld\nquit\n"];
/// let (mut replies, mut connected) = (Vec::new(), false);
/// loop {
///     match server.poll(now) {
///         Action::Accept if !connected => {
///             connected = true;
///             let _ = server.on_accepted(now)?;
///         }
///         Action::Accept => server.on_accept_error(now, nb::Error::WouldBlock)?,
///         Action::Recv { conn, buf, .. } => match chunks.split_first() {
///             Some((chunk, rest)) => {
///                 buf[..chunk.len()].copy_from_slice(chunk);
///                 chunks = rest;
///                 server.on_recv(now, conn, Ok(chunk.len()))?;
///             }
///             None => server.on_recv(now, conn, Err(nb::Error::WouldBlock))?,
///         },
///         Action::Send { conn, bytes, wrapped } => {
///             let n = bytes.len() + wrapped.len();
///             replies.extend_from_slice(bytes);
///             replies.extend_from_slice(wrapped);
///             server.on_send(now, conn, Ok(n))?;
///         }
///         Action::Shutdown { .. } => break, // `quit`: the service finished it
///         other => panic!("{other:?}"),
///     }
/// }
/// assert_eq!(replies, b"1: hello\n2: world\nbye\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct NumberedLines<'s> {
    lines: &'s mut [LineState],
}

impl<'s> NumberedLines<'s> {
    /// The service, with the state of each connection in `lines`, indexed by
    /// [`ConnId::index`]: one entry per slot of the server. A connection without one is
    /// closed at its first bytes.
    pub fn new(lines: &'s mut [LineState]) -> Self {
        Self { lines }
    }
}

const QUIT: &[u8] = b"quit";

/// `line` without its newline and one `\r` before it is `quit`.
fn is_quit(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line) == QUIT
}

/// `n: ` in decimal, into `buf`; the bytes written.
fn prefix(n: u32, buf: &mut [u8; 12]) -> &[u8] {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - at;
    buf[..len].copy_from_slice(&digits[at..]);
    buf[len..len + 2].copy_from_slice(b": ");
    &buf[..len + 2]
}

impl Service for NumberedLines<'_> {
    fn open(&mut self, conn: ConnId) {
        if let Some(state) = self.lines.get_mut(conn.index()) {
            *state = LineState::NEW;
        }
    }

    fn receive(&mut self, conn: ConnId, input: &[u8], reply: &mut Reply<'_>) -> usize {
        let Some(state) = self.lines.get_mut(conn.index()) else {
            reply.close();
            return input.len();
        };
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            if !state.in_line {
                let end = rest.iter().position(|&b| b == b'\n');
                if let Some(end) = end.filter(|&end| is_quit(&rest[..end])) {
                    if reply.write(b"bye\n").is_ok() {
                        reply.close();
                        used += end + 1;
                    }
                    return used;
                }
                if end.is_none() && b"quit\r".starts_with(rest) {
                    return used; // it may yet be `quit`: wait for the rest
                }
                let mut buf = [0; 12];
                let head = prefix(state.number + 1, &mut buf);
                // The prefix and at least one byte of the line, or wait for room.
                if reply.room() <= head.len() || reply.write(head).is_err() {
                    return used;
                }
                state.number += 1;
                state.in_line = true;
            }
            let rest = &input[used..];
            let line_end = rest.iter().position(|&b| b == b'\n').map(|end| end + 1);
            let n = line_end.unwrap_or(rest.len()).min(reply.room());
            if n == 0 || reply.write(&rest[..n]).is_err() {
                return used;
            }
            used += n;
            if line_end == Some(n) {
                state.in_line = false;
            }
        }
        used
    }

    fn end(&mut self, conn: ConnId, input: &[u8], reply: &mut Reply<'_>) {
        let Some(state) = self.lines.get_mut(conn.index()) else {
            return;
        };
        if !state.in_line && !input.is_empty() {
            if is_quit(input) {
                let _ = reply.write(b"bye\n");
                return;
            }
            let mut buf = [0; 12];
            if reply.write(prefix(state.number + 1, &mut buf)).is_err() {
                return;
            }
            state.number += 1;
            state.in_line = true;
        }
        if state.in_line {
            let _ = reply.write(input).and_then(|()| reply.write(b"\n"));
            state.in_line = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Action, Admission, CloseReason, Config, Instant, Server, Slot, Storage, Uppercase,
    };
    use embedded_io::ErrorKind;

    #[test]
    fn reply_writes_are_all_or_nothing_across_the_wrap() {
        let (mut a, mut b) = ([0u8; 3], [0u8; 4]);
        let mut reply = Reply::new(&mut a, &mut b);
        assert_eq!(reply.room(), 7);
        reply.write(b"hello").unwrap();
        assert_eq!(reply.write(b"abc"), Err(Full { wanted: 3, room: 2 }));
        reply.write(b"!?").unwrap();
        assert_eq!((reply.room(), reply.written()), (0, 7));
        assert!(!reply.is_closing());
        reply.close();
        assert_eq!(reply.finish(), (7, true));
        assert_eq!((&a, &b), (b"hel", b"lo!?"));
    }

    #[test]
    fn a_transform_answers_receive_correctly_too() {
        let (mut a, mut b) = ([0u8; 2], [0u8; 8]);
        let mut reply = Reply::new(&mut a, &mut b);
        reply.write(b"x").unwrap();
        let used = Uppercase.receive(
            ConnId {
                index: 0,
                generation: 0,
            },
            b"abcdefghijk",
            &mut reply,
        );
        assert_eq!((used, reply.room()), (9, 0));
        assert_eq!((&a, &b), (b"xA", b"BCDEFGHI"));
    }

    /// Serves `chunks` (then end-of-stream) on one connection, writing at most `send`
    /// bytes per `Send`; returns the replies and the close reason.
    fn serve<S: Service>(
        service: S,
        block: usize,
        chunks: &[&[u8]],
        send: usize,
    ) -> (Vec<u8>, CloseReason, crate::Stats) {
        let mut slots = [Slot::EMPTY; 1];
        let mut buffers = vec![0u8; block];
        let storage = Storage::new(&mut slots, &mut buffers, block).unwrap();
        let mut server = Server::new(Config::default(), storage, service);
        let now = Instant::ZERO;
        let (mut next, mut offset, mut connected) = (0, 0, false);
        let mut out = Vec::new();
        for _ in 0..100_000 {
            match server.poll(now) {
                Action::Accept if !connected => {
                    connected = true;
                    assert!(matches!(
                        server.on_accepted(now),
                        Ok(Admission::Admitted(_))
                    ));
                }
                Action::Accept => server.on_accept_error(now, nb::Error::WouldBlock).unwrap(),
                Action::Recv { conn, buf, .. } => {
                    let outcome = match chunks.get(next) {
                        Some(chunk) => {
                            let n = (chunk.len() - offset).min(buf.len());
                            buf[..n].copy_from_slice(&chunk[offset..offset + n]);
                            offset += n;
                            if offset == chunk.len() {
                                (next, offset) = (next + 1, 0);
                            }
                            Ok(n)
                        }
                        None => Ok(0),
                    };
                    server.on_recv(now, conn, outcome).unwrap();
                }
                Action::Send {
                    conn,
                    bytes,
                    wrapped,
                } => {
                    let all = [bytes, wrapped].concat();
                    let n = all.len().min(send);
                    out.extend_from_slice(&all[..n]);
                    server.on_send(now, conn, Ok(n)).unwrap();
                }
                Action::Shutdown { .. } => {}
                Action::Probe { conn } => server.on_probe(now, conn, Ok(0)).unwrap(),
                Action::Close { reason, .. } => return (out, reason, *server.stats()),
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("no close");
    }

    /// A tiny deterministic generator (xorshift), for payloads and chunkings.
    fn rng(seed: u64) -> impl FnMut(usize) -> usize {
        let mut x = seed | 1;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        }
    }

    #[test]
    fn numbered_lines_answer_the_same_however_the_stream_is_cut() {
        for seed in 1..300u64 {
            let mut r = rng(seed);
            let len = r(400);
            let payload: Vec<u8> = (0..len)
                .map(|_| match r(12) {
                    0 | 1 => b'\n',
                    2 => b'\r',
                    _ => b"quitxy"[r(6)],
                })
                .collect();
            // The reference: the whole payload at once, a buffer large enough for all.
            let mut lines = [LineState::NEW];
            let (expected, why, _) = serve(
                NumberedLines::new(&mut lines),
                16 * 1024,
                &[&payload],
                usize::MAX,
            );
            // The same through a 32-byte buffer (16 for input, 16 for replies), in random
            // chunks, with random partial writes.
            let mut cuts = Vec::new();
            let mut rest = &payload[..];
            while !rest.is_empty() {
                let n = 1 + r(rest.len().min(20));
                cuts.push(&rest[..n]);
                rest = &rest[n..];
            }
            let mut lines = [LineState::NEW];
            let send = 1 + r(8);
            let (got, why_small, _) = serve(NumberedLines::new(&mut lines), 32, &cuts, send);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "seed {seed}: {:?} in {} chunks, {send}-byte writes",
                String::from_utf8_lossy(&payload),
                cuts.len()
            );
            assert_eq!(
                (why, why_small),
                (CloseReason::Done, CloseReason::Done),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn numbered_lines_examples() {
        let mut lines = [LineState::NEW];
        let (out, ..) = serve(NumberedLines::new(&mut lines), 64, &[b"a\r\n\nb", b"c"], 64);
        assert_eq!(out, b"1: a\r\n2: \n3: bc\n"); // the last line ended at end-of-stream
        let (out, ..) = serve(
            NumberedLines::new(&mut lines),
            64,
            &[b"x\nqu", b"it\r\nlost\n"],
            64,
        );
        assert_eq!(out, b"1: x\nbye\n");
        let (out, ..) = serve(NumberedLines::new(&mut lines), 64, &[b"qu"], 64);
        assert_eq!(out, b"1: qu\n");
        let (out, ..) = serve(NumberedLines::new(&mut lines), 64, &[b"quit"], 64);
        assert_eq!(out, b"bye\n");
    }

    /// Takes nothing, ever.
    struct Stubborn;

    impl Service for Stubborn {
        fn receive(&mut self, _: ConnId, _: &[u8], _: &mut Reply<'_>) -> usize {
            0
        }
    }

    #[test]
    fn a_service_that_cannot_take_a_full_input_fails_the_connection() {
        let (out, why, stats) = serve(Stubborn, 16, &[b"0123456789"], 16);
        assert!(out.is_empty());
        assert_eq!(why, CloseReason::Failed(ErrorKind::OutOfMemory));
        assert_eq!((stats.bytes_in, stats.bytes_discarded), (8, 8));
    }

    /// Answers each byte with two, and counts opens and closes.
    #[derive(Default)]
    struct Doubler {
        opened: u32,
        closed: u32,
    }

    impl Service for Doubler {
        fn open(&mut self, _: ConnId) {
            self.opened += 1;
        }

        fn receive(&mut self, _: ConnId, input: &[u8], reply: &mut Reply<'_>) -> usize {
            let n = input.len().min(reply.room() / 2);
            for &b in &input[..n] {
                reply.write(&[b, b]).unwrap();
            }
            n
        }

        fn close(&mut self, _: ConnId) {
            self.closed += 1;
        }
    }

    #[test]
    fn longer_replies_wait_for_room_and_all_go_out() {
        let mut doubler = Doubler::default();
        let payload: Vec<u8> = (0..200u8).collect();
        let (out, why, stats) = serve(&mut doubler, 16, &[&payload], 3);
        let expected: Vec<u8> = payload.iter().flat_map(|&b| [b, b]).collect();
        assert_eq!((out, why), (expected, CloseReason::Done));
        assert_eq!((stats.bytes_in, stats.bytes_out), (200, 400));
        assert_eq!((doubler.opened, doubler.closed), (1, 1));
    }

    /// Takes one byte a call, silently, and says at the end how many it took.
    struct Counter(u8);

    impl Service for Counter {
        fn receive(&mut self, _: ConnId, input: &[u8], _: &mut Reply<'_>) -> usize {
            self.0 += u8::from(!input.is_empty());
            usize::from(!input.is_empty())
        }

        fn end(&mut self, _: ConnId, input: &[u8], reply: &mut Reply<'_>) {
            reply.write(&[self.0, input.len() as u8]).unwrap();
        }
    }

    #[test]
    fn a_service_may_take_input_without_replying_and_answer_at_the_end() {
        // 40 bytes through an 8-byte input half, one byte a call: all are offered again
        // until taken, before `end`.
        let (out, why, stats) = serve(Counter(0), 16, &[&[b'x'; 40]], 16);
        assert_eq!((out, why), (vec![40, 0], CloseReason::Done));
        assert_eq!(
            (stats.bytes_in, stats.bytes_out, stats.bytes_discarded),
            (40, 2, 0)
        );
    }

    impl Service for &mut Doubler {
        fn open(&mut self, conn: ConnId) {
            (**self).open(conn);
        }
        fn receive(&mut self, conn: ConnId, input: &[u8], reply: &mut Reply<'_>) -> usize {
            (**self).receive(conn, input, reply)
        }
        fn close(&mut self, conn: ConnId) {
            (**self).close(conn);
        }
    }
}
