//! The portable async driver on tokio, over real loopback sockets.
#![cfg(feature = "tokio")]

use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration as StdDuration;

use embedded_io_async::{ErrorType, Read, Write};
use nbecho_async::tokio::{Clock, Listener};
use nbecho_async::{serve, AsyncListener, AsyncStream, Conn, Cx, Listen, TooFewWakers, Wakers};
use nbecho_core::{
    CloseReason, Config, Driver, Duration, ErrorKind, Scheduling, Server, Slot, Stats, Storage,
    Uppercase,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

const LIMIT: StdDuration = StdDuration::from_secs(10);

fn config() -> Config {
    let mut config = Config::default();
    config.scheduling = Scheduling::Readiness;
    config
}

/// Runs a server of `conns` connections on `listener` until `client` is done, then stops
/// it; returns the server's counters and the client's result.
async fn with_server<L, F, R>(
    wakers: &'static Wakers<256>,
    conns: usize,
    listener: L,
    client: F,
) -> (Result<Stats, TooFewWakers>, R)
where
    L: AsyncListener,
    F: core::future::Future<Output = R>,
{
    with_server_configured(config(), wakers, conns, listener, client).await
}

/// [`with_server`] with its own configuration.
async fn with_server_configured<L, F, R>(
    config: Config,
    wakers: &'static Wakers<256>,
    conns: usize,
    listener: L,
    client: F,
) -> (Result<Stats, TooFewWakers>, R)
where
    L: AsyncListener,
    F: core::future::Future<Output = R>,
{
    let mut slots = vec![Slot::EMPTY; conns];
    let mut arena = vec![0u8; conns * 512];
    let storage = Storage::new(&mut slots, &mut arena, 512).unwrap();
    let server = Server::new(config, storage, Uppercase);
    let mut streams: Vec<Option<Conn<L::Stream>>> = (0..conns).map(|_| None).collect();
    let mut driver = Driver::new(server, Listen(listener), &mut streams).unwrap();
    let mut io = ();
    let mut cx = Cx::new(wakers, &mut io);
    let (done, stopped) = oneshot::channel::<()>();
    let stop = async {
        stopped.await.ok();
    };
    let client = async {
        let r = client.await;
        done.send(()).ok();
        r
    };
    let served = serve(
        &mut driver,
        &mut cx,
        Clock::new(),
        stop,
        Duration::from_secs(2),
    );
    timeout(LIMIT, async { tokio::join!(served, client) })
        .await
        .expect("the server did not stop in time")
}

async fn bind() -> (TcpListener, core::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Sends `msg`, expects exactly its uppercase back.
async fn echo(conn: &mut TcpStream, msg: &[u8]) {
    conn.write_all(msg).await.unwrap();
    let mut reply = vec![0; msg.len()];
    conn.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply, msg.to_ascii_uppercase());
}

#[tokio::test(flavor = "current_thread")]
async fn many_clients_echo_byte_exact_then_close_cleanly() {
    static WAKERS: Wakers<256> = Wakers::new();
    let (listener, addr) = bind().await;
    let clients = async {
        let tasks = (0..40u8).map(|c| async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            for round in 0..20u8 {
                let msg: Vec<u8> = (0..(1 + (c as usize * 37 + round as usize * 11) % 900))
                    .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n\xc3"[i % 38])
                    .collect();
                echo(&mut conn, &msg).await;
            }
            // Half-close: the server flushes, shuts down, closes.
            conn.shutdown().await.unwrap();
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        });
        futures_join_all(tasks).await;
    };
    let (stats, ()) = with_server(&WAKERS, 64, Listener(listener), clients).await;
    let stats = stats.unwrap();
    assert_eq!(stats.accepted, 40);
    assert_eq!((stats.closed, stats.peer_closed), (40, 40), "{stats:?}");
    assert_eq!(stats.bytes_in, stats.bytes_out);
    assert_eq!(stats.failed + stats.forced + stats.aborted, 0, "{stats:?}");
}

/// Runs futures concurrently on this task (tokio's `JoinSet` would need `Send + 'static`).
async fn futures_join_all<F: core::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    core::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            core::task::Poll::Ready(())
        } else {
            core::task::Poll::Pending
        }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn at_capacity_a_connection_is_refused_with_a_fin() {
    static WAKERS: Wakers<256> = Wakers::new();
    let (listener, addr) = bind().await;
    let client = async {
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        echo(&mut a, b"first").await;
        echo(&mut b, b"second").await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap(); // FIN, not a reset
        assert!(got.is_empty());
        echo(&mut a, b"still served").await;
    };
    let (stats, ()) = with_server(&WAKERS, 2, Listener(listener), client).await;
    let stats = stats.unwrap();
    assert_eq!((stats.accepted, stats.refused), (2, 1), "{stats:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_stop_ends_idle_connections_with_a_fin_and_finishes() {
    static WAKERS: Wakers<256> = Wakers::new();
    let (listener, addr) = bind().await;
    let (connected, ready) = oneshot::channel::<Vec<TcpStream>>();
    let client = async {
        let mut idle = Vec::new();
        for _ in 0..10 {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            echo(&mut conn, b"hi").await;
            idle.push(conn);
        }
        connected.send(idle).ok();
    };
    // The client returns (and the stop begins) with ten idle connections open; the
    // server sends each a FIN; they close when they see it.
    let closer = async {
        let idle = ready.await.unwrap();
        for mut conn in idle {
            let mut rest = Vec::new();
            timeout(LIMIT, conn.read_to_end(&mut rest))
                .await
                .unwrap()
                .unwrap();
            assert!(rest.is_empty());
        }
    };
    let started = std::time::Instant::now();
    let ((stats, ()), ()) =
        tokio::join!(with_server(&WAKERS, 16, Listener(listener), client), closer);
    let stats = stats.unwrap();
    assert_eq!(stats.accepted, 10);
    assert_eq!(
        stats.forced, 0,
        "every idle connection closed before the deadline: {stats:?}"
    );
    assert!(
        started.elapsed() < StdDuration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn too_few_wakers_is_an_error() {
    static WAKERS: Wakers<4> = Wakers::new();
    let (listener, _) = bind().await;
    let (mut slots, mut arena) = ([Slot::EMPTY; 8], [0u8; 8 * 64]);
    let server = Server::new(
        config(),
        Storage::new(&mut slots, &mut arena, 64).unwrap(),
        Uppercase,
    );
    let mut streams: [Option<Conn<_>>; 8] = Default::default();
    let mut driver = Driver::new(server, Listen(Listener(listener)), &mut streams).unwrap();
    let mut io = ();
    let mut cx = Cx::new(&WAKERS, &mut io);
    let err = serve(
        &mut driver,
        &mut cx,
        Clock::new(),
        core::future::pending(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        TooFewWakers {
            wakers: 4,
            capacity: 8
        }
    );
    assert_eq!(
        err.to_string(),
        "wakers for 4 connections, for a server of capacity 8"
    );
}

/// Counts the reads the driver tries.
struct Counted(nbecho_async::tokio::Stream, &'static AtomicUsize);

impl ErrorType for Counted {
    type Error = std::io::Error;
}

impl Read for Counted {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.read(buf).await
    }
}

impl Write for Counted {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf).await
    }

    async fn flush(&mut self) -> Result<(), Self::Error> {
        self.0.flush().await
    }
}

impl AsyncStream for Counted {
    fn shutdown_write(&mut self, io: &mut ()) -> Result<(), ErrorKind> {
        self.0.shutdown_write(io)
    }

    fn close(self, io: &mut (), reason: CloseReason) {
        self.0.close(io, reason);
    }
}

struct CountingListener(Listener, &'static AtomicUsize);

impl AsyncListener for CountingListener {
    type Stream = Counted;

    fn poll_accept(
        &mut self,
        io: &mut (),
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<Result<Counted, ErrorKind>> {
        self.0
            .poll_accept(io, cx)
            .map(|r| r.map(|s| Counted(s, self.1)))
    }
}

/// Readiness, not a scan: with 100 idle connections open, 200 round trips on one
/// connection try about two reads each (the data, then would-block), not one read of
/// every connection per wake-up.
#[tokio::test(flavor = "current_thread")]
async fn a_wake_up_touches_only_the_connection_that_woke() {
    static WAKERS: Wakers<256> = Wakers::new();
    static READS: AtomicUsize = AtomicUsize::new(0);
    let (listener, addr) = bind().await;
    let client = async {
        let mut idle = Vec::new();
        for _ in 0..100 {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            echo(&mut conn, b"x").await;
            idle.push(conn);
        }
        let mut busy = TcpStream::connect(addr).await.unwrap();
        echo(&mut busy, b"warm up").await;
        let before = READS.load(Ordering::Relaxed);
        for _ in 0..200 {
            echo(&mut busy, b"ping").await;
        }
        READS.load(Ordering::Relaxed) - before
    };
    let listener = CountingListener(Listener(listener), &READS);
    let (stats, reads) = with_server(&WAKERS, 128, listener, client).await;
    stats.unwrap();
    assert!(reads <= 3 * 200, "{reads} reads for 200 round trips");
    assert!(reads >= 200, "{reads} reads for 200 round trips");
}

/// The idle timeout counts from a connection's last progress: progress after the timer
/// was set moves the deadline later, and the earlier wake-up it leaves finds nothing due
/// and sets the timer again (no spinning until the later deadline).
#[tokio::test(flavor = "current_thread")]
async fn an_idle_connection_is_closed_a_timeout_after_its_last_message() {
    static WAKERS: Wakers<256> = Wakers::new();
    let idle_timeout = StdDuration::from_millis(300);
    let mut config = config();
    config.idle_timeout = Some(Duration::from_millis(300));
    let (listener, addr) = bind().await;
    let client = async {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        echo(&mut conn, b"a").await;
        tokio::time::sleep(StdDuration::from_millis(200)).await;
        echo(&mut conn, b"b").await;
        let (last, cpu) = (std::time::Instant::now(), thread_cpu());
        // Then silence: closed in order (a timeout is not abortive), a timeout after the
        // second message, not at the deadline the first one set (100 ms after it).
        let mut rest = Vec::new();
        let read = conn.read_to_end(&mut rest).await.unwrap();
        (read, last.elapsed(), thread_cpu() - cpu)
    };
    let (stats, (read, idle, cpu)) =
        with_server_configured(config, &WAKERS, 4, Listener(listener), client).await;
    assert_eq!(read, 0, "nothing after the echo");
    assert!(
        idle >= idle_timeout - StdDuration::from_millis(100),
        "closed {idle:?} after the last message, before the timeout of {idle_timeout:?}"
    );
    // Waiting, not spinning: the server runs on this thread too.
    assert!(
        cpu < StdDuration::from_millis(60),
        "{cpu:?} of CPU in {idle:?} of silence"
    );
    let stats = stats.unwrap();
    assert_eq!((stats.accepted, stats.timeouts), (1, 1));
}

/// CPU time this thread has used: a current-thread runtime runs the server on it too.
fn thread_cpu() -> StdDuration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    StdDuration::from_nanos(stat.split_whitespace().next().unwrap().parse().unwrap())
}
