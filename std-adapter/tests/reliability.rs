//! Reliability of the shipped binary over real loopback sockets: the faults and abuse a
//! public TCP service meets. Each test starts its own `nbecho serve`, is bounded in time,
//! and asserts exact bytes and exact behaviour.
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

#[macro_use]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{echo, pattern, try_echo, upper, write_until_stalled, Server, LIMIT};

/// Closes `stream` with a reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// One 64-byte round trip; returns its latency.
fn ping(stream: &mut TcpStream, i: u64) -> Duration {
    let msg = pattern(64, i);
    let start = Instant::now();
    stream.write_all(&msg).unwrap();
    let mut reply = [0; 64];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply.to_vec(), upper(&msg));
    start.elapsed()
}

/// Stops the server with SIGTERM and returns its final log.
#[track_caller]
fn stop(server: Server) -> String {
    server.signal("TERM");
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
    assert_eq!(Server::stat(&log, "active"), 0, "{log}");
    assert_eq!(
        Server::stat(&log, "accepted"),
        Server::stat(&log, "closed"),
        "{log}"
    );
    let (bytes_in, out, dropped) = (
        Server::stat(&log, "bytes_in"),
        Server::stat(&log, "bytes_out"),
        Server::stat(&log, "bytes_dropped"),
    );
    assert_eq!(bytes_in, out + dropped, "{log}");
    log
}

// ---- half-close, slow readers --------------------------------------------------------------

both_drivers! {
    fn half_close_after_2_mib_gets_exactly_the_echo_then_a_clean_fin(driver) {
    let server = Server::start(&["--driver", driver]);
    let data = pattern(2 << 20, 21);
    // `echo` reads while it writes, half-closes, and reads to EOF: a reset would be an Err.
    let reply = echo(server.connect(), &data);
    assert!(
        reply == upper(&data),
        "{} bytes back of {}",
        reply.len(),
        data.len()
    );
    let log = stop(server);
    assert_eq!(Server::stat(&log, "failed"), 0);
    assert_eq!(Server::stat(&log, "bytes_out"), 2 << 20);
}
}

both_drivers! {
    fn a_slow_reader_is_paused_without_memory_growth_or_delaying_others(driver) {
    let server = Server::start(&["--driver", driver]);
    let mut prompt = server.connect();
    ping(&mut prompt, 0);
    let rss_before = server.rss_kib();

    // The slow reader sends for as long as anyone takes its bytes, reading nothing.
    let mut slow = server.connect();
    let data = pattern(64 << 20, 22);
    let sent = write_until_stalled(&mut slow, &data, Duration::from_millis(500));
    assert!(sent < data.len(), "the server never pushed back");

    // Stalled: the server stopped reading it. Others still get prompt replies.
    let rss_stalled = server.rss_kib();
    let worst = (1..=50).map(|i| ping(&mut prompt, i)).max().unwrap();
    assert!(worst < Duration::from_millis(100), "a reply took {worst:?}");
    // Memory stays flat: one 4 KiB buffer for the slow connection, nothing per byte sent.
    let growth = rss_stalled.saturating_sub(rss_before);
    assert!(
        growth <= 512,
        "RSS grew {growth} KiB with {sent} bytes held back"
    );
    println!("slow reader: {sent} bytes sent before the stall, server RSS +{growth} KiB, worst ping {worst:?}");

    // When it finally reads, every byte comes back, in order.
    slow.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    slow.read_to_end(&mut reply).unwrap();
    assert!(
        reply == upper(&data[..sent]),
        "{} of {sent} bytes back",
        reply.len()
    );
    drop((slow, prompt));
    stop(server);
}
}

// ---- resets and broken pipes ---------------------------------------------------------------

both_drivers! {
    fn resets_mid_stream_free_their_connections_and_others_are_served(driver) {
    let server = Server::start(&["--driver", driver]);
    let good = {
        let stream = server.connect();
        thread::spawn(move || {
            let data = pattern(1 << 20, 23);
            assert!(echo(stream, &data) == upper(&data));
        })
    };
    for i in 0..8 {
        let mut stream = server.connect();
        // Sent without reading: the server holds echo bytes for it when the RST comes.
        let sent = write_until_stalled(
            &mut stream,
            &pattern(4 << 20, i),
            Duration::from_millis(100),
        );
        assert!(sent > 0);
        reset(stream);
    }
    good.join().unwrap();
    assert!(echo(server.connect(), b"still here") == b"STILL HERE");
    let log = stop(server);
    assert!(Server::stat(&log, "failed") >= 8, "{log}");
    assert!(Server::stat(&log, "bytes_dropped") > 0, "{log}");
}
}

both_drivers! {
    fn a_client_that_closes_during_a_large_echo_is_a_broken_pipe_not_a_crash(driver) {
    let mut server = Server::start(&["--driver", driver]);
    for i in 0..4 {
        let mut stream = server.connect();
        let sent = write_until_stalled(
            &mut stream,
            &pattern(8 << 20, 30 + i),
            Duration::from_millis(100),
        );
        assert!(sent > 0);
        // Close both directions with echo bytes in flight; the server's next write fails.
        stream.shutdown(Shutdown::Both).unwrap();
        drop(stream);
    }
    thread::sleep(Duration::from_millis(300));
    assert!(server.is_alive(), "killed by SIGPIPE? {}", server.log());
    assert!(echo(server.connect(), b"alive") == b"ALIVE");
    let log = stop(server);
    assert!(Server::stat(&log, "failed") >= 4, "{log}");
}
}

// ---- capacity and file descriptors -------------------------------------------------------------

both_drivers! {
    fn beyond_capacity_refusals_are_counted_and_logged_at_most_once_a_second(driver) {
    let server = Server::start(&["--driver", driver, "--max-conns", "4"]);
    let mut held: Vec<TcpStream> = (0..4).map(|_| server.connect()).collect();
    for (i, s) in held.iter_mut().enumerate() {
        ping(s, i as u64);
    }
    let start = Instant::now();
    let mut refused = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let mut s = server.connect();
        let mut buf = [0; 1];
        // Refused: accepted and closed at once, never served.
        match s.read(&mut buf) {
            Ok(0) => refused += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => refused += 1,
            other => panic!("a refused connection answered {other:?}"),
        }
    }
    assert!(refused >= 20, "{refused}");
    // Held connections were not disturbed.
    for (i, s) in held.iter_mut().enumerate() {
        ping(s, 100 + i as u64);
    }
    drop(held);
    let log = stop(server);
    assert_eq!(Server::stat(&log, "refused"), refused, "{log}");
    let lines = log.lines().filter(|l| l.contains("at capacity")).count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} capacity warnings in 1.5 s:\n{log}"
    );
}
}

both_drivers! {
    fn out_of_file_descriptors_backs_off_without_spinning_and_recovers(driver) {
    // 40 descriptors: stdin/out/err, the listener and a few for the runtime leave room for
    // about 35 connections; 80 clients connect.
    let server = Server::start_with_fd_limit(40, &["--driver", driver]);
    let mut clients: Vec<TcpStream> = (0..80).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("client {i:02}").as_bytes()).unwrap();
    }
    thread::sleep(Duration::from_millis(500));

    // At the limit: accept keeps failing, and the server backs off instead of spinning.
    let (cpu0, t0) = (server.cpu_time(), Instant::now());
    thread::sleep(Duration::from_secs(2));
    let cpu = server.cpu_time() - cpu0;
    let share = cpu.as_secs_f64() / t0.elapsed().as_secs_f64();
    println!("at the descriptor limit: {:.1}% of a core", share * 100.0);
    assert!(
        share < 0.10,
        "{:.1}% of a core while out of descriptors",
        share * 100.0
    );
    let log = server.log();
    let warnings = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=4).contains(&warnings),
        "{warnings} accept warnings in ~2.5 s:\n{log}"
    );

    // The first 40 leave: every remaining client is accepted and served, in full.
    let late = clients.split_off(40);
    for c in clients.iter_mut() {
        c.shutdown(Shutdown::Write).unwrap();
    }
    drop(clients);
    for (i, mut c) in late.into_iter().enumerate() {
        let msg = format!("client {:02}", 40 + i);
        let mut reply = vec![0; msg.len()];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(reply, msg.to_uppercase().as_bytes());
    }
    let log = stop(server);
    assert!(Server::stat(&log, "accept_errors") >= 1, "{log}");
    assert_eq!(Server::stat(&log, "accepted"), 80, "{log}");
}
}

// ---- timers ------------------------------------------------------------------------------------

both_drivers! {
    fn the_idle_timeout_closes_idle_connections_and_spares_active_ones(driver) {
    let server = Server::start(&["--driver", driver, "--idle-timeout", "1"]);
    let mut idle = server.connect();
    let mut active = server.connect();
    let start = Instant::now();
    let idle_closed = thread::spawn(move || {
        let mut buf = [0; 1];
        assert_eq!(idle.read(&mut buf).unwrap(), 0);
        start.elapsed()
    });
    for i in 0..6 {
        thread::sleep(Duration::from_millis(400));
        ping(&mut active, i);
    }
    let idle_after = idle_closed.join().unwrap();
    assert!(
        idle_after >= Duration::from_millis(900) && idle_after < Duration::from_secs(2),
        "{idle_after:?}"
    );
    assert!(
        start.elapsed() > Duration::from_millis(2400),
        "the active one lived past 2 timeouts"
    );
    drop(active);
    let log = stop(server);
    assert_eq!(Server::stat(&log, "timeouts"), 1, "{log}");
}
}

// ---- bad input ---------------------------------------------------------------------------------

both_drivers! {
    fn odd_clients_do_no_harm(driver) {
    let server = Server::start(&["--driver", driver]);
    // Every byte value and invalid UTF-8, in one stream.
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend_from_slice(b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc");
    assert_eq!(echo(server.connect(), &data), upper(&data));
    // Zero-byte writes are nothing on the wire: the bytes around them echo as usual.
    let mut s = server.connect();
    for part in [&b""[..], b"a", b"", b"", b"b"] {
        s.write_all(part).unwrap();
    }
    let mut reply = [0; 2];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"AB");
    // Clients that connect and leave at once, with a FIN or a reset.
    for i in 0..200 {
        let c = server.connect();
        if i % 2 == 0 {
            drop(c);
        } else {
            reset(c);
        }
    }
    // An empty session: connect, half-close, EOF back.
    assert_eq!(echo(server.connect(), b""), b"");
    drop(s);
    thread::sleep(Duration::from_millis(200));
    let log = stop(server);
    assert_eq!(Server::stat(&log, "accepted"), 203, "{log}");
}
}

// ---- soak --------------------------------------------------------------------------------------

/// What the soak clients did, summed.
#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    bytes_verified: AtomicU64,
    resets: AtomicU64,
    slow_reads: AtomicU64,
}

/// A small seeded generator for the soak's choices.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// 16 concurrent clients for `duration`, each opening connections of random sizes (1 B to
/// 256 KiB) that end normally (verified byte for byte), with a reset mid-stream, or after a
/// slow start to reading.
fn soak(driver: &str, duration: Duration, seed: u64) {
    println!("soak {driver}: seed {seed} (rerun: NBECHO_SOAK_SEED={seed})");
    let mut server = Server::start(&["--driver", driver, "--max-conns", "64"]);
    let rss_start = server.rss_kib();
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..16u64)
        .map(|w| {
            let (addr, tally) = (server.addr, Arc::clone(&tally));
            thread::spawn(move || {
                let mut rng = XorShift(seed.wrapping_mul(31).wrapping_add(w) | 1);
                while Instant::now() < deadline {
                    let size = 1 + rng.below(256 * 1024) as usize;
                    let data = pattern(size, rng.below(u64::MAX));
                    let stream = TcpStream::connect(addr).unwrap();
                    stream.set_read_timeout(Some(LIMIT)).unwrap();
                    match rng.below(10) {
                        0 | 1 => {
                            let mut s = stream;
                            let cut = size / 2;
                            let _ = s.write_all(&data[..cut]);
                            reset(s);
                            tally.resets.fetch_add(1, Ordering::Relaxed);
                        }
                        2 | 3 => {
                            let mut s = stream;
                            let sent =
                                write_until_stalled(&mut s, &data, Duration::from_millis(50));
                            thread::sleep(Duration::from_millis(rng.below(100)));
                            s.shutdown(Shutdown::Write).unwrap();
                            let mut reply = Vec::new();
                            s.read_to_end(&mut reply).unwrap();
                            assert!(reply == upper(&data[..sent]), "slow reader: mismatch");
                            tally.slow_reads.fetch_add(1, Ordering::Relaxed);
                            tally
                                .bytes_verified
                                .fetch_add(sent as u64, Ordering::Relaxed);
                        }
                        _ => {
                            let reply = try_echo(stream, &data).expect("echo");
                            assert!(
                                reply == upper(&data),
                                "mismatch: {} of {size} bytes back",
                                reply.len()
                            );
                            tally
                                .bytes_verified
                                .fetch_add(size as u64, Ordering::Relaxed);
                        }
                    }
                    tally.sessions.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a soak client found a mismatch");
    }
    assert!(server.is_alive());
    let rss_end = server.rss_kib();
    let log = stop(server);
    let t = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak {driver} {duration:?}: {} sessions, {} bytes verified, {} resets, {} slow readers, 0 mismatches, \
         RSS {rss_start} -> {rss_end} KiB",
        t(&tally.sessions),
        t(&tally.bytes_verified),
        t(&tally.resets),
        t(&tally.slow_reads),
    );
    assert_eq!(Server::stat(&log, "accepted"), t(&tally.sessions), "{log}");
    assert_eq!(Server::stat(&log, "refused"), 0, "{log}");
    // 64 slots × 4 KiB of buffers at most, plus allocator slack.
    assert!(
        rss_end.saturating_sub(rss_start) < 2048,
        "RSS {rss_start} -> {rss_end} KiB"
    );
}

fn soak_seed() -> u64 {
    std::env::var("NBECHO_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
}

all_drivers! {
    fn soak_short(driver) {
    soak(driver, Duration::from_secs(3), soak_seed());
}
}

// `cargo test --release -p nbecho-std --test reliability soak_long -- --ignored --nocapture`
all_drivers! {
    #[ignore = "a minute of load; run on demand"]
    fn soak_long(driver) {
    soak(driver, Duration::from_secs(60), soak_seed());
}
}
