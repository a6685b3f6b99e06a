//! The nbecho core inside one tokio task: `cargo run -p nbecho-std --example tokio_echo`
//! serves on 127.0.0.1:8089 until Ctrl-C.
//!
//! The core decides everything; the task performs its actions with tokio's non-blocking
//! `try_read`/`try_write`/`poll_accept`. When an operation would block, the task registers
//! its waker with that socket's readiness (`poll_read_ready`/`poll_write_ready`), and a
//! `Wait` becomes a tokio sleep: the task sleeps until a socket is ready or the core's
//! timer fires, with no busy loop and no extra tasks.
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use nbecho_core::{
    nb, Action, Admission, Config, ErrorKind, Instant, Server, Slot, Stats, Storage, Uppercase,
};
use tokio::net::{TcpListener, TcpStream};

/// Serves on `listener` until `stop` completes, then shuts down gracefully (deadline 5 s)
/// and returns the final counters.
pub(crate) async fn serve(
    listener: TcpListener,
    max_conns: usize,
    stop: impl Future<Output = ()>,
) -> Stats {
    let mut slots = vec![Slot::EMPTY; max_conns];
    let mut arena = vec![0u8; max_conns * 4096];
    let storage = Storage::new(&mut slots, &mut arena, 4096).expect("valid sizes");
    let mut server = Server::new(Config::default(), storage, Uppercase);
    let mut streams: Vec<Option<TcpStream>> = (0..max_conns).map(|_| None).collect();
    let origin = tokio::time::Instant::now();
    let clock = || Instant::from_micros(origin.elapsed().as_micros() as u64);
    let mut stop = pin!(stop);
    let mut stopping = false;
    let mut sleep = pin!(tokio::time::sleep_until(origin));

    poll_fn(|cx| loop {
        if !stopping && stop.as_mut().poll(cx).is_ready() {
            stopping = true;
            server.begin_shutdown(clock() + nbecho_core::Duration::from_secs(5));
        }
        let now = clock();
        match server.poll(now) {
            Action::Accept => match listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    let _ = stream.set_nodelay(true);
                    match server.on_accepted(now) {
                        Ok(Admission::Admitted(conn)) => streams[conn.index()] = Some(stream),
                        _ => drop(stream), // refused at capacity
                    }
                }
                Poll::Ready(Err(e)) => {
                    let _ = server.on_accept_error(now, nb::Error::Other(e.kind().into()));
                }
                // The waker is registered: a new connection wakes the task.
                Poll::Pending => {
                    let _ = server.on_accept_error(now, nb::Error::WouldBlock);
                }
            },
            Action::Recv { conn, buf } => {
                let outcome = match &streams[conn.index()] {
                    Some(stream) => match stream.try_read(buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // Wake the task when it becomes readable.
                            let _ = stream.poll_read_ready(cx);
                            Err(nb::Error::WouldBlock)
                        }
                        other => other.map_err(|e| nb::Error::Other(e.kind().into())),
                    },
                    None => Err(nb::Error::Other(ErrorKind::NotConnected)),
                };
                let _ = server.on_recv(now, conn, outcome);
            }
            Action::Send { conn, bytes, .. } => {
                let outcome = match &streams[conn.index()] {
                    Some(stream) => match stream.try_write(bytes) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            let _ = stream.poll_write_ready(cx);
                            Err(nb::Error::WouldBlock)
                        }
                        other => other.map_err(|e| nb::Error::Other(e.kind().into())),
                    },
                    None => Err(nb::Error::Other(ErrorKind::NotConnected)),
                };
                let _ = server.on_send(now, conn, outcome);
            }
            Action::Shutdown { conn } => {
                if let Some(stream) = &streams[conn.index()] {
                    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
                }
            }
            // tokio cannot tell what the peer acknowledged: linger until its FIN.
            Action::Probe { conn } => {
                let _ = server.on_probe(now, conn, Err(ErrorKind::Unsupported));
            }
            Action::Close { conn, .. } => streams[conn.index()] = None,
            Action::Wait { until } => {
                let until = until.map_or(origin + std::time::Duration::from_secs(3600), |t| {
                    origin + std::time::Duration::from_micros(t.total_micros())
                });
                sleep.as_mut().reset(until);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            Action::Finished => return Poll::Ready(*server.stats()),
        }
    })
    .await
}

#[allow(dead_code)] // the test includes this file for `serve` only
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:8089").await?;
    println!("tokio_echo: listening on {}", listener.local_addr()?);
    let stats = serve(listener, 1024, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    println!("tokio_echo: stopped: {stats}");
    Ok(())
}
