//! `nbecho client`: talk to an echo server, interactively like the textbook client or as
//! a pipe.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// The textbook client's prompt.
pub const PROMPT: &str = "msg>>: ";

/// How long `connect` may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the client failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached.
    Connect(SocketAddr, io::Error),
    /// The connection failed while talking.
    Io(io::Error),
    /// The server closed before echoing everything back.
    ClosedEarly {
        /// Bytes of the reply still expected.
        missing: usize,
    },
    /// The server closed the connection before we did (a stop, an idle timeout, a
    /// refusal at capacity).
    ServerClosed {
        /// Bytes of replies still expected.
        missing: usize,
    },
    /// Our output was closed (the reader of a pipe went away).
    OutputClosed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            Self::Io(e) => write!(f, "connection failed: {e}"),
            Self::ClosedEarly { missing } => {
                write!(
                    f,
                    "the server closed the connection with {missing} reply bytes missing"
                )
            }
            Self::ServerClosed { missing: 0 } => f.write_str(
                "the server closed the connection (stopped, idle timeout, or at capacity)",
            ),
            Self::ServerClosed { missing } => write!(
                f,
                "the server closed the connection with {missing} reply bytes missing"
            ),
            Self::OutputClosed => f.write_str("the output was closed"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Connects, with [`CONNECT_TIMEOUT`].
pub fn connect(addr: SocketAddr) -> Result<TcpStream, Error> {
    let stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| Error::Connect(addr, e))?;
    stream.set_nodelay(true).map_err(Error::Io)?;
    Ok(stream)
}

/// Where [`interactive`] gets its lines.
pub trait Lines {
    /// Shows `prompt`: on `out` (the replies' output), or in a line editor of its own.
    fn prompt(&mut self, prompt: &str, out: &mut dyn Write) -> io::Result<()>;
    /// The next line, without its line end; `None` at end of input. A user's Ctrl-C is
    /// `Err` of kind [`Interrupted`](io::ErrorKind::Interrupted).
    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>>;
    /// At end of input: ends the prompt's line on `out`, unless the source did already
    /// (a line editor does).
    fn ended(&mut self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// Lines of bytes from any reader (a pipe, a file), sent as they are; the prompt goes to
/// the replies' output.
#[derive(Debug)]
pub struct Plain<R>(pub R);

impl<R: BufRead> Lines for Plain<R> {
    fn prompt(&mut self, prompt: &str, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(prompt.as_bytes())?;
        out.flush()
    }

    fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        if self.0.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(Some(line))
    }
}

/// The textbook client, done right: prompts `msg>>: `, sends each line (without its line
/// end) and prints the reply once all of it has come back (the echo has the length of the
/// message: the textbook's single `recv(1024)` could split or merge replies). Empty lines
/// are skipped; end of input half-closes and returns after the last reply.
///
/// The connection is read all the time, on a thread of its own, not only after a line is
/// sent: when the server closes (a stop, an idle timeout, a refusal at capacity) or resets
/// while the prompt waits for input, `on_lost` is called at once with the reason (the
/// binary prints it in one line and exits). Bytes from the server are shown with control
/// characters escaped (`\x1b`), so a server cannot drive the terminal.
pub fn interactive<W: Write + Send>(
    stream: TcpStream,
    mut input: impl Lines,
    output: W,
    on_lost: impl FnOnce(&Error) + Send,
) -> Result<(), Error> {
    let output = Mutex::new(output);
    let (sent_tx, sent_rx) = mpsc::channel::<usize>();
    let (echoed_tx, echoed_rx) = mpsc::channel::<()>();
    let mut writer = stream.try_clone()?;
    let reader = stream;
    std::thread::scope(|scope| {
        let output = &output;
        let listener = scope.spawn(move || -> Result<(), Error> {
            let result = read_replies(reader, &sent_rx, &echoed_tx, output);
            if let Err(e) = &result {
                on_lost(e);
            }
            result
        });
        let talk = (|| -> Result<(), Error> {
            loop {
                {
                    let mut out = output.lock().map_err(|_| io::Error::other("poisoned"))?;
                    input.prompt(PROMPT, &mut *out)?;
                }
                // Not under the output's lock: the listener may have to report a loss.
                let Some(line) = input.read_line()? else {
                    break;
                };
                let msg = line.strip_suffix(b"\r").unwrap_or(&line);
                if msg.is_empty() {
                    continue;
                }
                // The listener learns the reply's length before the reply can arrive, then
                // prints it; wait for that before the next prompt (it hangs up instead if
                // the connection is lost).
                if sent_tx.send(msg.len()).is_err() {
                    return Ok(());
                }
                writer.write_all(msg)?;
                if echoed_rx.recv().is_err() {
                    return Ok(());
                }
            }
            let mut out = output.lock().map_err(|_| io::Error::other("poisoned"))?;
            input.ended(&mut *out)?;
            Ok(())
        })();
        // End of input (or a failed send): tell the listener, then half-close; it returns
        // after the server's end-of-stream (in this order, so that it never takes the
        // server's answer to our end for a close of its own).
        drop(sent_tx);
        let _ = writer.shutdown(Shutdown::Write);
        let heard = listener
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("listener panicked").into()));
        talk.and(heard)
    })
}

/// The listener of [`interactive`]: reads the connection until its end, printing each
/// reply when it is complete.
fn read_replies(
    mut stream: TcpStream,
    sent: &mpsc::Receiver<usize>,
    echoed: &mpsc::Sender<()>,
    output: &Mutex<impl Write>,
) -> Result<(), Error> {
    let mut expected: VecDeque<usize> = VecDeque::new();
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut input_done = false;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io(e)),
        };
        loop {
            match sent.try_recv() {
                Ok(len) => expected.push_back(len),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    input_done = true;
                    break;
                }
            }
        }
        if n == 0 {
            let missing = expected.iter().sum::<usize>().saturating_sub(reply.len());
            let mut out = output.lock().map_err(|_| io::Error::other("poisoned"))?;
            if !reply.is_empty() && expected.is_empty() {
                write_escaped(&mut *out, &reply)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            return if input_done && missing == 0 {
                Ok(())
            } else {
                Err(Error::ServerClosed { missing })
            };
        }
        reply.extend_from_slice(&buf[..n]);
        // Complete replies, in order.
        while let Some(&len) = expected.front() {
            if reply.len() < len {
                break;
            }
            let mut out = output.lock().map_err(|_| io::Error::other("poisoned"))?;
            write_escaped(&mut *out, &reply[..len])?;
            out.write_all(b"\n")?;
            out.flush()?;
            reply.drain(..len);
            expected.pop_front();
            let _ = echoed.send(());
        }
    }
}

/// Writes `bytes` for a terminal: text as it is (UTF-8 included), control characters and
/// bytes that are not UTF-8 escaped (`\x1b`, `\u{9b}`), never interpreted.
pub fn write_escaped(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                c if (c as u32) < 0x80 && c.is_control() => write!(out, "\\x{:02x}", c as u32)?,
                c if c.is_control() => write!(out, "\\u{{{:x}}}", c as u32)?,
                c => write!(out, "{c}")?,
            }
        }
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// Streams `input` to the server and the replies to `output` at the same time (a
/// sequential copy would deadlock once both sides' socket buffers fill), half-closes at
/// end of input, and returns after the last reply byte. Returns the bytes sent and
/// received, which are equal unless the server failed.
///
/// If `output` is closed (a reader such as `head` went away), both directions of the
/// connection are shut down at once, so that the sending side stops too, and the result
/// is [`Error::OutputClosed`].
pub fn pipe(
    stream: TcpStream,
    mut input: impl Read + Send,
    mut output: impl Write,
) -> Result<(u64, u64), Error> {
    let mut writer = stream.try_clone()?;
    let mut reader = stream;
    std::thread::scope(|scope| {
        let sender = scope.spawn(move || -> io::Result<u64> {
            let sent = io::copy(&mut input, &mut writer)?;
            writer.shutdown(Shutdown::Write)?;
            Ok(sent)
        });
        let received = copy_out(&mut reader, &mut output);
        if matches!(received, Err(Error::OutputClosed)) {
            let _ = reader.shutdown(Shutdown::Both);
        }
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("sender panicked")));
        let received = received?;
        let sent = sent?;
        if received < sent {
            return Err(Error::ClosedEarly {
                missing: (sent - received) as usize,
            });
        }
        Ok((sent, received))
    })
}

/// Copies the connection to `output` until its end: errors of the connection are
/// [`Error::Io`], a closed `output` is [`Error::OutputClosed`].
fn copy_out(reader: &mut TcpStream, output: &mut impl Write) -> Result<u64, Error> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::Io(e)),
        };
        output.write_all(&buf[..n]).map_err(output_error)?;
        total += n as u64;
    }
    output.flush().map_err(output_error)?;
    Ok(total)
}

fn output_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::OutputClosed
    } else {
        Error::Io(e)
    }
}
