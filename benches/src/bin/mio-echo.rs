//! The reference: a hand-written single-thread mio (epoll, edge-triggered) uppercase echo
//! server, with no framework between the loop and the sockets.
// A std benchmark peer: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Uppercased bytes not yet written.
    pending: Vec<u8>,
    read_closed: bool,
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or("127.0.0.1:9100".into())
        .parse()
        .unwrap();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            stream.set_nodelay(true)?;
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(i),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns[i] = Some(Conn {
                                stream,
                                pending: Vec::new(),
                                read_closed: false,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let i = event.token().0;
            let Some(conn) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if serve(conn, &mut buf).is_err() {
                conns[i] = None;
                free.push(i);
            }
        }
    }
}

/// Reads until would-block, writing each chunk back at once; keeps what did not fit.
/// Returns `Err` when the connection is finished.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> Result<(), ()> {
    flush(conn)?;
    while !conn.read_closed && conn.pending.is_empty() {
        match conn.stream.read(buf) {
            Ok(0) => conn.read_closed = true,
            Ok(n) => {
                buf[..n].make_ascii_uppercase();
                match conn.stream.write(&buf[..n]) {
                    Ok(w) => conn.pending.extend_from_slice(&buf[w..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        conn.pending.extend_from_slice(&buf[..n])
                    }
                    Err(_) => return Err(()),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return Err(()),
        }
    }
    if conn.read_closed && conn.pending.is_empty() {
        let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        return Err(());
    }
    Ok(())
}

fn flush(conn: &mut Conn) -> Result<(), ()> {
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(()),
        }
    }
    Ok(())
}
