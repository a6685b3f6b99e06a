//! The tokio driver (`nbecho_std::tokio`) over loopback: concurrent clients get exact
//! echoes, idle connections cost nothing, a graceful stop returns balanced stats.
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]
#![cfg(feature = "tokio")]

use nbecho_core::Uppercase;
use nbecho_std::tokio::{serve, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Served = tokio::task::JoinHandle<Result<nbecho_core::Stats, nbecho_core::StorageError>>;

/// `serve` in a task of its own on a free loopback port: its address, the stop, the task.
async fn start(
    options: Options,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    Served,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(listener, &options, Uppercase, async {
            let _ = stop_rx.await;
        })
        .await
    });
    (addr, stop_tx, server)
}

/// Asks `server` to stop and returns its stats, within 10 s.
async fn stop(stop_tx: tokio::sync::oneshot::Sender<()>, server: Served) -> nbecho_core::Stats {
    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("stopped within 10 s")
        .expect("the server task")
        .expect("valid sizes")
}

#[tokio::test(flavor = "current_thread")]
async fn the_core_in_a_tokio_task_echoes_exactly() {
    let mut options = Options::default();
    options.max_conns = 8;
    let (addr, stop_tx, server) = start(options).await;

    let clients: Vec<_> = (0..6u8)
        .map(|i| {
            tokio::spawn(async move {
                let data: Vec<u8> = (0..200_000u32 + u32::from(i) * 999)
                    .map(|j| (j * 7 + u32::from(i)) as u8)
                    .collect();
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut rd, mut wr) = stream.into_split();
                let expected = data.to_ascii_uppercase();
                let writer = tokio::spawn(async move {
                    wr.write_all(&data).await.unwrap();
                    wr.shutdown().await.unwrap();
                });
                let mut reply = Vec::new();
                rd.read_to_end(&mut reply).await.unwrap();
                writer.await.unwrap();
                assert!(
                    reply == expected,
                    "client {i}: {} of {} bytes",
                    reply.len(),
                    expected.len()
                );
                expected.len() as u64
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += tokio::time::timeout(std::time::Duration::from_secs(20), c)
            .await
            .unwrap()
            .unwrap();
    }
    let stats = stop(stop_tx, server).await;
    assert_eq!(
        (stats.accepted, stats.closed, stats.failed, stats.forced),
        (6, 6, 0, 0)
    );
    assert_eq!((stats.bytes_in, stats.bytes_out), (total, total));
}

#[tokio::test(flavor = "current_thread")]
async fn many_idle_connections_and_a_busy_one_then_a_prompt_stop() {
    let (addr, stop_tx, server) = start(Options::default()).await;
    // 300 connections that say one thing and then keep their side open, silent.
    let mut idle = Vec::new();
    for i in 0..300u32 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let hello = format!("idle {i}");
        stream.write_all(hello.as_bytes()).await.unwrap();
        let mut reply = vec![0u8; hello.len()];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, hello.to_ascii_uppercase().into_bytes());
        idle.push(stream);
    }
    // A busy one, ping-pong.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    for i in 0..2_000u32 {
        let msg = format!("message {i}");
        busy.write_all(msg.as_bytes()).await.unwrap();
        let mut reply = vec![0u8; msg.len()];
        busy.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, msg.to_ascii_uppercase().into_bytes());
    }
    drop(busy);
    // The stop ends once every reply is acknowledged, although the idle peers keep their
    // side open: long before the 5 s deadline.
    let start = std::time::Instant::now();
    let stats = stop(stop_tx, server).await;
    assert!(
        start.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!((stats.accepted, stats.closed, stats.forced), (301, 301, 0));
    assert_eq!(stats.bytes_in, stats.bytes_out);
    for mut stream in idle {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "a FIN after the echo");
    }
}

/// The idle timeout counts from a connection's last progress: progress after the timer
/// was set moves the deadline later, and the earlier wake-up it leaves finds nothing due.
#[tokio::test(flavor = "current_thread")]
async fn an_idle_connection_is_closed_a_timeout_after_its_last_message() {
    let timeout = std::time::Duration::from_millis(300);
    let mut options = Options::default();
    options.idle_timeout = Some(timeout);
    let (addr, stop_tx, server) = start(options).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut reply = [0u8; 1];
    stream.write_all(b"a").await.unwrap();
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"A");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stream.write_all(b"b").await.unwrap();
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"B");
    let (last, cpu) = (std::time::Instant::now(), thread_cpu());
    // Then silence: the server closes it in order (a FIN: a timeout is not abortive),
    // not at the deadline the first message set, but a timeout after the second.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut rest),
    )
    .await
    .expect("closed within 5 s");
    let (idle, cpu) = (last.elapsed(), thread_cpu() - cpu);
    assert_eq!(read.unwrap(), 0, "nothing after the echo: {rest:?}");
    // Waiting, not spinning: the first deadline's wake-up set the timer again.
    assert!(
        cpu < std::time::Duration::from_millis(60),
        "{cpu:?} of CPU in {idle:?} of silence"
    );
    // At the first message's deadline it would be 100 ms; the margin is for a busy CI.
    assert!(
        idle >= timeout - std::time::Duration::from_millis(100),
        "closed {idle:?} after the last message, before the timeout of {timeout:?}"
    );
    let stats = stop(stop_tx, server).await;
    assert_eq!((stats.accepted, stats.timeouts), (1, 1));
}

/// CPU time this thread has used: a current-thread runtime runs the server's task on the
/// test's thread.
fn thread_cpu() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns = stat.split_whitespace().next().unwrap().parse().unwrap();
    std::time::Duration::from_nanos(ns)
}
