//! `nbecho client`: talk to an echo server, interactively like the textbook client or as
//! a pipe.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

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

/// The textbook client, done right: prompts `msg>>: `, sends each line (without its line
/// end) and prints the reply. The echo has exactly the length of the message, so it
/// reads exactly that many bytes (the textbook's single `recv(1024)` could split or merge
/// replies). Empty lines are skipped; end of input half-closes and returns.
pub fn interactive(
    mut stream: TcpStream,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<(), Error> {
    let mut lines = input.lines();
    let mut reply = Vec::new();
    loop {
        output.write_all(b"msg>>: ")?;
        output.flush()?;
        let Some(line) = lines.next().transpose()? else {
            break;
        };
        let msg = line.strip_suffix('\r').unwrap_or(&line);
        if msg.is_empty() {
            continue;
        }
        stream.write_all(msg.as_bytes())?;
        reply.resize(msg.len(), 0);
        read_all(&mut stream, &mut reply)?;
        output.write_all(&reply)?;
        output.write_all(b"\n")?;
    }
    output.write_all(b"\n")?;
    stream.shutdown(Shutdown::Write)?;
    // The server closes after our half-close; anything before that is a stray reply.
    io::copy(&mut stream, &mut output)?;
    output.flush()?;
    Ok(())
}

/// Streams `input` to the server and the replies to `output` at the same time (a
/// sequential copy would deadlock once both sides' socket buffers fill), half-closes at
/// end of input, and returns after the last reply byte. Returns the bytes sent and
/// received, which are equal unless the server failed.
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
        let received = io::copy(&mut reader, &mut output).and_then(|n| output.flush().map(|()| n));
        let sent = sender
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("sender panicked")));
        let (sent, received) = (sent?, received?);
        if received < sent {
            return Err(Error::ClosedEarly {
                missing: (sent - received) as usize,
            });
        }
        Ok((sent, received))
    })
}

fn read_all(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(Error::ClosedEarly {
                    missing: buf.len() - filled,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
