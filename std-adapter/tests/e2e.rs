//! End-to-end: the real `nbecho` binary over loopback. Every test is bounded in time and
//! asserts exact bytes and exact behaviour.
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

#[macro_use]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{echo, pattern, run, spawn, try_echo, upper, write_until_stalled, Server, BIN, LIMIT};

// ---- echo --------------------------------------------------------------------------------

all_drivers! {
    fn one_mib_comes_back_uppercased_exactly_then_eof_after_half_close(driver) {
    let server = Server::start(&["--driver", driver]);
    let data = pattern(1 << 20, 1);
    let reply = echo(server.connect(), &data);
    assert_eq!(reply.len(), data.len());
    assert!(reply == upper(&data), "reply differs from upper(sent)");
}
}

both_drivers! {
    fn all_256_byte_values_follow_python_bytes_upper(driver) {
    let server = Server::start(&["--driver", driver]);
    let data: Vec<u8> = (0..=255u8).cycle().take(256 * 4).collect();
    let reply = echo(server.connect(), &data);
    let expected: Vec<u8> = data
        .iter()
        .map(|&b| if b.is_ascii_lowercase() { b - 32 } else { b })
        .collect();
    assert_eq!(reply, expected);
}
}

both_drivers! {
    fn echo_mode_returns_bytes_unchanged(driver) {
    let server = Server::start(&["--driver", driver, "--mode", "echo"]);
    let data = pattern(100_000, 2);
    assert!(echo(server.connect(), &data) == data);
}
}

all_drivers! {
    fn lines_mode_numbers_lines_and_closes_on_quit(driver) {
    // The core's Service API on real sockets: replies of other lengths, a line counter
    // per connection, the application closing.
    let server = Server::start(&["--driver", driver, "--mode", "lines", "--buffer-size", "256"]);
    // A line far longer than the buffer streams, and the end of the stream finishes it.
    let long = pattern(100_000, 3)
        .into_iter()
        .map(|b| if b == b'\n' { b'.' } else { b })
        .collect::<Vec<u8>>();
    let streaming = {
        let stream = server.connect();
        let long = long.clone();
        thread::spawn(move || echo(stream, &long))
    };
    let mut conn = server.connect();
    conn.write_all(b"hello\r\nwor").unwrap();
    thread::sleep(Duration::from_millis(50));
    conn.write_all(b"ld\n\nqu").unwrap();
    thread::sleep(Duration::from_millis(50));
    conn.write_all(b"it\nnot answered\n").unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap(); // the server closes after `bye`
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "1: hello\r\n2: world\n3: \nbye\n"
    );
    let mut expected = b"1: ".to_vec();
    expected.extend_from_slice(&long);
    expected.push(b'\n');
    let streamed = streaming.join().unwrap();
    assert_eq!(streamed.len(), expected.len());
    assert!(streamed == expected, "the long line came back different");
}
}

all_drivers! {
    fn many_clients_at_once_each_get_their_own_bytes(driver) {
    let server = Server::start(&["--driver", driver, "--buffer-size", "512"]);
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let stream = server.connect();
            thread::spawn(move || {
                let data = pattern(64 * 1024 + i * 777, i as u64 + 10);
                assert!(echo(stream, &data) == upper(&data), "client {i}");
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}
}

all_drivers! {
    fn a_burst_of_600_connections_is_accepted_and_each_answered(driver) {
    // Faster than a pass accepts them (16 a pass), so they wait in the listener's backlog,
    // and with io_uring in the driver's queue of accepted connections, which is bounded
    // (its multishot accept is cancelled and armed again).
    let server = Server::start(&["--driver", driver, "--max-conns", "1000"]);
    let mut clients: Vec<TcpStream> = (0..600).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(format!("client {i}\n").as_bytes()).unwrap();
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let expected = format!("CLIENT {i}\n");
        let mut reply = vec![0; expected.len()];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(reply, expected.as_bytes(), "client {i}");
    }
    // A graceful stop with all of them open: each was answered, so each closes at once.
    server.signal("TERM");
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
    assert_eq!(Server::stat(&log, "accepted"), 600, "{log}");
    assert_eq!(Server::stat(&log, "refused"), 0, "{log}");
}
}

// ---- the client ----------------------------------------------------------------------------

both_drivers! {
    fn piped_client_prints_the_reply_and_exits(driver) {
    let server = Server::start(&["--driver", driver]);
    let addr = server.addr.to_string();
    let out = run(&["client", "--connect", &addr], b"hello\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"HELLO\n");

    let data = pattern(300_000, 3);
    let out = run(&["client", "--connect", &addr], &data);
    assert!(out.status.success());
    assert!(out.stdout == upper(&data));
}
}

both_drivers! {
    fn interactive_client_prompts_like_the_textbook(driver) {
    let server = Server::start(&["--driver", driver]);
    let addr = server.addr.to_string();
    let out = run(
        &["client", "--connect", &addr, "--interactive"],
        b"hello\nmixed Case 1\r\n\nbye",
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "msg>>: HELLO\nmsg>>: MIXED CASE 1\nmsg>>: msg>>: BYE\nmsg>>: \n"
    );
}
}

/// Starts `nbecho client ADDR --interactive` with its stdin open and silent; returns the
/// child and its stdin (keep it to keep the input open).
fn silent_interactive_client(addr: &str) -> (std::process::Child, std::process::ChildStdin) {
    let mut child = spawn(&["client", addr, "--interactive"]);
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Waits for a child to exit, at most `limit`.
fn exits_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn the_interactive_client_notices_a_refusal_without_input() {
    let server = Server::start(&["--max-conns", "1"]);
    // One connection holds the only slot (admitted: its echo came back).
    let mut held = server.connect();
    held.write_all(b"hi").unwrap();
    let mut reply = [0u8; 2];
    held.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HI");
    let (mut child, _stdin) = silent_interactive_client(&server.addr.to_string());
    let status =
        exits_within(&mut child, Duration::from_secs(3)).expect("the client noticed nothing");
    let stderr = common::stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the server closed the connection"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    drop(held);
}

#[test]
fn the_interactive_client_notices_a_server_stop_at_its_prompt() {
    let server = Server::start(&[]);
    let (mut child, _stdin) = silent_interactive_client(&server.addr.to_string());
    // Admitted and waiting at its prompt...
    let mut stdout = child.stdout.take().unwrap();
    let mut prompt = [0u8; 7];
    stdout.read_exact(&mut prompt).unwrap();
    assert_eq!(&prompt, b"msg>>: ");
    // ...when the server stops.
    server.signal("TERM");
    let status =
        exits_within(&mut child, Duration::from_secs(3)).expect("the client noticed nothing");
    assert_eq!(status.code(), Some(1));
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
}

#[test]
fn the_interactive_client_shows_control_bytes_escaped() {
    let server = Server::start(&["--mode", "echo"]);
    let out = run(
        &["client", &server.addr.to_string(), "--interactive"],
        b"a\x1b[31mb\x07 \xc3\xbc \xff\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert_eq!(shown, "msg>>: a\\x1b[31mb\\x07 \u{fc} \\xff\nmsg>>: \n");
}

#[test]
fn a_piped_client_whose_reader_goes_away_stops_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let server = Server::start(&[]);
    let mut child = spawn(&["client", &server.addr.to_string()]);
    // `yes hello | nbecho client | head -1`: endless input, and the reader leaves.
    let mut stdin = child.stdin.take().unwrap();
    thread::spawn(move || while stdin.write_all(b"hello\n").is_ok() {});
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 6];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HELLO\n");
    drop(stdout);
    let status = exits_within(&mut child, Duration::from_secs(5)).expect("the client hung");
    let stderr = common::stderr_of(&mut child);
    assert_eq!(
        status.signal(),
        Some(13),
        "like cat, by SIGPIPE: {status:?} {stderr}"
    );
    assert_eq!(stderr, "");
}

#[test]
fn client_reports_an_unreachable_server() {
    // Bind and drop to find a port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&["client", "--connect", &format!("127.0.0.1:{port}")], b"x");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("nbecho: cannot connect to 127.0.0.1:"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A client the server has accepted and cannot flush to: it sends without reading until
/// the server stops taking its bytes (both sides' buffers are full).
fn stuck_client(server: &Server) -> TcpStream {
    let mut client = server.connect();
    // A round trip first: the connection is accepted before anything else happens.
    client.write_all(b"x").unwrap();
    let mut reply = [0u8; 1];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"X");
    let sent = write_until_stalled(
        &mut client,
        &vec![b'a'; 64 << 20],
        Duration::from_millis(300),
    );
    assert!(
        sent < 64 << 20,
        "{sent} bytes sent and the server still reads: it never pushed back"
    );
    client
}

/// Runs `nbecho serve ARGS`, expects it to refuse with exit code 1 and one line on
/// stderr, and returns that line.
#[track_caller]
fn serve_refuses(args: &[&str]) -> String {
    let out = run(&[&["serve"], args].concat(), b"");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

// ---- bad input -------------------------------------------------------------------------------

#[test]
fn bad_flags_are_clean_errors() {
    for args in [
        &["serve", "--bogus"][..],
        &["serve", "--max-conns", "0"],
        &["serve", "--max-conns", "-5"],
        &["serve", "--buffer-size", "8"],
        &["serve", "--listen", "not-an-address"],
        &["serve", "--driver", "telepathy"],
        &["serve", "--buffer-size", "64Q"],
        &["serve", "--idle-timeout", "1.5x"],
        &["serve", "--listen", "70000"],
        &["client", "not an address"],
        &["bench", "--duration", "0"],
        &["bench", "--rate", "-3"],
        &["bench", "--server-pid", "4000000"],
        &["frobnicate"],
    ] {
        let out = run(args, b"");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn values_take_their_usual_forms() {
    // `:PORT`, durations with fractions, sizes with suffixes, short flags.
    let server = Server::start(&[
        "-l", ":0", "-i", "1.5", "-b", "64K", "-n", "8", "-d", "epoll",
    ]);
    let log = server.log();
    assert!(log.contains("buffer_size=65536"), "{log}");
    assert!(log.contains("mode=upper driver=epoll"), "{log}");
    let port = server.addr.port().to_string();
    // A positional address, as PORT, :PORT or HOST:PORT.
    for addr in [
        port.clone(),
        format!(":{port}"),
        format!("localhost:{port}"),
    ] {
        let out = run(&["client", &addr], b"hello\n");
        assert_eq!(
            (out.status.code(), out.stdout.as_slice()),
            (Some(0), &b"HELLO\n"[..]),
            "client {addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(
        &[
            "bench",
            &format!(":{port}"),
            "-c",
            "2",
            "-s",
            "1K",
            "-d",
            "0.3",
            "--json",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("\"conns\":2,\"size\":1024"), "{stdout}");
}

#[test]
fn settings_come_from_the_environment_too() {
    let mut command = Command::new(BIN);
    command
        .env("NBECHO_DRIVER", "epoll")
        .env("NBECHO_MAX_CONNS", "3");
    let server = Server::start_command(command, &[]);
    let log = server.log();
    assert!(log.contains("max_conns=3"), "{log}");
    assert!(log.contains("driver=epoll"), "{log}");
}

#[test]
fn an_invalid_rust_log_is_a_warning_not_silence() {
    for value in ["garbage!!", ""] {
        let mut command = Command::new(BIN);
        command.env("RUST_LOG", value);
        let server = Server::start_command(command, &[]);
        let log = server.log();
        assert!(
            log.contains("is not a valid filter"),
            "RUST_LOG={value:?}: {log}"
        );
        assert!(log.contains("listening on"), "RUST_LOG={value:?}: {log}");
    }
}

#[test]
fn a_port_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_eq!(
        serve_refuses(&["--listen", &addr]),
        format!("nbecho: cannot listen on {addr}: Address already in use (os error 98)\n")
    );
}

#[test]
fn absurd_memory_is_refused_not_an_abort() {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--max-conns",
        "10000000",
        "--buffer-size",
        "16777216",
    ];
    let stderr = serve_refuses(&args);
    assert!(stderr.starts_with("nbecho: buffers would take"), "{stderr}");
}

// ---- limits and timers ---------------------------------------------------------------------

both_drivers! {
    fn beyond_max_conns_clients_are_refused_then_served_again(driver) {
    let server = Server::start(&["--driver", driver, "--max-conns", "2"]);
    let a = server.connect();
    let b = server.connect();
    // Make sure both are admitted before the third arrives.
    for mut s in [&a, &b] {
        s.write_all(b"hi").unwrap();
        let mut r = [0; 2];
        s.read_exact(&mut r).unwrap();
        assert_eq!(&r, b"HI");
    }
    let mut refused = server.connect();
    let mut buf = [0; 1];
    // Accepted and closed at once: end-of-stream (or a reset if our byte raced it).
    let _ = refused.write_all(b"x");
    assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)));
    drop((a, b));
    // Slots free again: served. (Retry while the server notices the closes.)
    let start = Instant::now();
    loop {
        let reply = try_echo(server.connect(), b"again");
        if reply.as_deref().is_ok_and(|r| r == b"AGAIN") {
            break;
        }
        assert!(start.elapsed() < LIMIT, "never served again");
        thread::sleep(Duration::from_millis(20));
    }
    server.signal("TERM");
    let (status, log) = server.wait();
    assert!(status.success());
    assert!(Server::stat(&log, "refused") >= 1, "{log}");
}
}

both_drivers! {
    fn idle_connections_are_closed_after_the_timeout(driver) {
    let server = Server::start(&["--driver", driver, "--idle-timeout", "1"]);
    let mut idle = server.connect();
    let start = Instant::now();
    let mut buf = [0; 1];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "closed with a FIN");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
}

// ---- graceful shutdown ---------------------------------------------------------------------

both_drivers! {
    fn sigterm_echoes_every_byte_read_then_exits_zero(driver) {
    let server = Server::start(&["--driver", driver, "--buffer-size", "65536"]);
    let mut client = server.connect();
    // A round trip first, so the connection is accepted before the signal.
    client.write_all(b"x").unwrap();
    let mut first = [0u8; 1];
    client.read_exact(&mut first).unwrap();
    let data = pattern(32 * 1024, 4);
    client.write_all(&data).unwrap();
    thread::sleep(Duration::from_millis(200)); // the server reads it
    server.signal("TERM");
    // Everything the server read comes back, then its FIN; then we close.
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    drop(client);
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
    assert!(
        reply == upper(&data),
        "{} of {} bytes",
        reply.len(),
        data.len()
    );
    assert_eq!(Server::stat(&log, "bytes_out"), 1 + data.len() as u64);
    assert_eq!(Server::stat(&log, "forced"), 0);
}
}

all_drivers! {
    fn sigterm_with_idle_clients_that_stay_open_stops_at_once_and_exits_zero(driver) {
    let server = Server::start(&["--driver", driver]);
    // Clients that read everything and keep their side open (a terminal client at its
    // prompt, nc): nothing is at stake once their replies are acknowledged.
    let mut clients: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.write_all(b"hi").unwrap();
        let mut reply = [0u8; 2];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"HI");
    }
    let start = Instant::now();
    server.signal("TERM");
    let (status, log) = server.wait();
    let took = start.elapsed();
    assert!(status.success(), "{log}");
    assert!(took < Duration::from_millis(500), "the stop took {took:?}: {log}");
    assert_eq!(Server::stat(&log, "forced"), 0, "{log}");
    for mut client in clients {
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "a FIN, nothing more");
    }
}
}

both_drivers! {
    fn replies_unacknowledged_at_the_deadline_are_counted(driver) {
    let server = Server::start(&["--driver", driver, "--shutdown-timeout", "1"]);
    // A client with a small receive window that never reads: the whole echo fits in the
    // server's socket, but most of it cannot be delivered.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&server.addr.into(), LIMIT).unwrap();
    let mut client: TcpStream = socket.into();
    client.write_all(b"x").unwrap();
    let mut reply = [0u8; 1];
    client.read_exact(&mut reply).unwrap();
    client.write_all(&[b'a'; 12_000]).unwrap();
    thread::sleep(Duration::from_millis(300)); // the server reads and writes it all
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(Server::stat(&log, "forced"), 1, "{log}");
    assert_eq!(Server::stat(&log, "bytes_dropped"), 0, "{log}");
    let unacked = Server::stat(&log, "bytes_unacked");
    assert!((1..=12_001).contains(&unacked), "{log}");
    assert!(
        log.contains(&format!(
            "1 connection(s) force-closed with replies undelivered: 0 byte(s) read and not \
             echoed, {unacked} byte(s) sent and not acknowledged"
        )),
        "{log}"
    );
    drop(client);
}
}

both_drivers! {
    fn the_shutdown_deadline_forces_exit_one(driver) {
    let server = Server::start(&["--driver", driver, "--shutdown-timeout", "1", "--buffer-size", "1024"]);
    // A client that sends and never reads: the server's output is stuck.
    let client = stuck_client(&server);
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(Server::stat(&log, "forced"), 1);
    drop(client);
}
}

all_drivers! {
    fn a_second_signal_exits_at_once(driver) {
    let server = Server::start(&["--driver", driver, "--shutdown-timeout", "30"]);
    let client = stuck_client(&server);
    server.signal("TERM");
    thread::sleep(Duration::from_millis(200));
    server.signal("INT");
    let start = Instant::now();
    let (status, log) = server.wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // The first signal says what a second does; the second says what it dropped, and the
    // stats are still printed.
    assert!(log.contains("a second signal stops at once"), "{log}");
    assert!(log.contains("second signal: stopping now"), "{log}");
    assert!(log.contains("stopped stats=accepted=1"), "{log}");
    assert!(
        log.contains("nbecho: stopped by a second signal: 1 connection(s) force-closed"),
        "{log}"
    );
    drop(client);
}
}

/// A connection to `server` whose reads time out at [`LIMIT`].
fn ping_stream(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream
}

/// One request and its reply, byte for byte: `ping!` answered `PING!`.
fn ping(stream: &mut TcpStream, round: usize) {
    let mut reply = [0u8; 5];
    stream.write_all(b"ping!").unwrap();
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"PING!", "round {round}");
}

/// io_uring's reads that wait in the kernel for data (`--read-wait`): a ping-pong is
/// answered through them, and a pause longer than the hold gives the waiting read's
/// buffer back (the hold's cancel); the exchange goes on after it.
#[test]
fn uring_reads_that_wait_for_data_answer_and_give_back_at_the_end_of_their_hold() {
    if common::skipped("uring") {
        return;
    }
    let server = Server::start(&["--driver", "uring", "--read-wait", "20ms"]);
    let mut stream = ping_stream(&server);
    for round in 0..50 {
        if round == 25 {
            thread::sleep(Duration::from_millis(300)); // well past the hold
        }
        ping(&mut stream, round);
    }
    drop(stream);
    server.signal("TERM");
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
    assert_eq!(Server::stat(&log, "bytes_out"), 250, "{log}");
    // At least the read before the pause waited and gave its buffer back, and one after
    // it waited again. (How many more did depends on timing: a pause of the client's
    // longer than the hold ends one too.)
    assert!(Server::stat(&log, "waiting_reads") >= 2, "{log}");
    assert!(Server::stat(&log, "waits_given_back") >= 1, "{log}");
}

/// A graceful stop cancels a read that waits for data (with a hold of a minute, it
/// would otherwise keep the server until the shutdown deadline), then ends the
/// connection in order. One connection's reads all wait once the first brought data:
/// nine more pings and the one that waits at the stop.
#[test]
fn uring_a_stop_cancels_a_read_that_waits_for_data() {
    if common::skipped("uring") {
        return;
    }
    let server = Server::start(&["--driver", "uring", "--read-wait", "60s"]);
    let mut stream = ping_stream(&server);
    for round in 0..10 {
        ping(&mut stream, round);
    }
    let start = Instant::now();
    server.signal("TERM");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    drop(stream);
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
    assert!(start.elapsed() < Duration::from_secs(3), "{log}");
    assert_eq!(Server::stat(&log, "waiting_reads"), 10, "{log}");
    assert_eq!(Server::stat(&log, "waits_given_back"), 1, "{log}");
    assert_eq!(Server::stat(&log, "bytes_out"), 50, "{log}");
}

// ---- logging ---------------------------------------------------------------------------------

both_drivers! {
    fn verbose_logs_one_line_per_connection_event(driver) {
    let server = Server::start(&["--driver", driver, "-v"]);
    assert!(echo(server.connect(), b"log me") == b"LOG ME");
    server.signal("TERM");
    let (status, log) = server.wait();
    assert!(status.success());
    let events: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("conn=#0.0"))
        .map(|l| l.split("nbecho_std::serve: ").nth(1).unwrap_or(l))
        .collect();
    assert_eq!(events.len(), 3, "{log}");
    assert!(
        events[0].starts_with("accepted conn=#0.0 peer=127.0.0.1:"),
        "{log}"
    );
    assert_eq!(events[1], "flushed; write side shut down conn=#0.0");
    assert_eq!(events[2], "closed conn=#0.0 reason=done");
}
}

#[test]
fn quiet_logs_nothing_for_normal_traffic() {
    // `-q` hides the line that says which port port 0 became, so the test picks a free
    // port itself; another test may take it meanwhile (then our server cannot bind and
    // exits): try again with another.
    for _attempt in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(["serve", "-q", "--listen", &addr])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let stream = loop {
            if child.try_wait().unwrap().is_some() {
                break None; // it could not bind
            }
            match TcpStream::connect(&addr) {
                // Before the server listens, a connect to a free port in the ephemeral
                // range can pick that port as its source and connect to itself.
                Ok(s) if s.local_addr().ok() == s.peer_addr().ok() => {
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(s) => break Some(s),
                Err(_) if start.elapsed() < LIMIT => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("{e}"),
            }
        };
        // Still running once connected: the connection is to it, not to another test's.
        thread::sleep(Duration::from_millis(100));
        let Some(stream) = stream.filter(|_| child.try_wait().unwrap().is_none()) else {
            let _ = child.kill();
            let _ = child.wait();
            continue;
        };
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        assert!(echo(stream, b"shh") == b"SHH");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        let stderr = common::stderr_of(&mut child);
        assert!(status.success());
        assert_eq!(stderr, "");
        return;
    }
    panic!("no free port held long enough for the server to bind it, 5 times");
}

// ---- bench ---------------------------------------------------------------------------------------

/// A number from the bench's JSON line.
fn json_number(json: &str, key: &str) -> f64 {
    let rest = json
        .split(&format!("\"{key}\":"))
        .nth(1)
        .unwrap_or_else(|| panic!("{key} in {json}"));
    rest.split([',', '}']).next().unwrap().parse().unwrap()
}

both_drivers! {
    fn bench_verifies_every_reply(driver) {
        let server = Server::start(&["--driver", driver]);
        let addr = server.addr.to_string();
        for mode in ["pingpong", "stream"] {
            let out = run(
                &["bench", "--connect", &addr, "--conns", "8", "--size", "1000", "--duration", "0.5", "--mode", mode, "--json"],
                b"",
            );
            let json = String::from_utf8(out.stdout).unwrap();
            assert!(out.status.success(), "{mode}: {json} {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(json_number(&json, "mismatches"), 0.0, "{json}");
            assert_eq!(json_number(&json, "errors"), 0.0, "{json}");
            assert!(json_number(&json, "messages") > 0.0, "{json}");
            assert!(json_number(&json, "p50_us") > 0.0, "{json}");
        }
    }

    fn bench_catches_wrong_replies(driver) {
        // A plain echo sends lowercase back: every byte is a mismatch.
        let server = Server::start(&["--driver", driver, "--mode", "echo"]);
        let out = run(&["bench", "--connect", &server.addr.to_string(), "--duration", "0.3", "--json"], b"");
        let json = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1), "{json}");
        assert!(json_number(&json, "mismatches") > 0.0, "{json}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("nbecho: bench failed: ") && stderr.contains("not what --expect upper says"),
            "{stderr}"
        );
        // The text report does not call them verified.
        let out = run(&["bench", &server.addr.to_string(), "-d", "0.3"], b"");
        let report = String::from_utf8(out.stdout).unwrap();
        assert!(report.contains("NOT verified"), "{report}");
        // Told what to expect, it verifies the plain echo.
        let out = run(&["bench", &server.addr.to_string(), "-d", "0.3", "--expect", "echo", "--json"], b"");
        let json = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{json}");
        assert_eq!(json_number(&json, "mismatches"), 0.0, "{json}");
    }

    fn bench_idle_reports_what_it_held(driver) {
        let server = Server::start(&["--driver", driver]);
        let out = run(&["bench", &server.addr.to_string(), "--mode", "idle", "-c", "20", "-d", "0.3"], b"");
        let report = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert!(report.contains("held        20 connections"), "{report}");
        assert!(!report.contains("latency"), "{report}");
    }
}

#[test]
fn bench_says_when_the_server_pid_is_not_running() {
    // A bad flag like the others (exit 2, see above), and it says why.
    let stderr = String::from_utf8(run(&["bench", "--server-pid", "4000000"], b"").stderr).unwrap();
    assert!(stderr.contains("no process 4000000 is running"), "{stderr}");
}

// ---- threads ---------------------------------------------------------------------------------------

both_drivers! {
    fn threads_share_the_port_and_the_caps(driver) {
        let server = Server::start(&["--driver", driver, "--threads", "2", "--max-conns", "64"]);
        let clients: Vec<_> = (0..16)
            .map(|i| {
                let stream = server.connect();
                thread::spawn(move || {
                    let data = pattern(50_000 + i * 101, i as u64 + 40);
                    assert!(echo(stream, &data) == upper(&data), "client {i}");
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        server.signal("TERM");
        let (status, log) = server.wait();
        assert!(status.success(), "{log}");
        // The stats line sums both threads.
        assert_eq!(Server::stat(&log, "accepted"), 16, "{log}");
        assert_eq!(Server::stat(&log, "closed"), 16, "{log}");
        assert!(log.contains("threads=2"), "{log}");
        // Each thread's lines say which thread, with its share of the caps.
        for n in 0..2 {
            assert!(
                log.contains(&format!("thread{{n={n}}}: nbecho_std::serve: serving this thread's share max_conns=32")),
                "{log}"
            );
            assert!(log.contains(&format!("thread{{n={n}}}: nbecho_std::serve: stopped")), "{log}");
        }
    }
}

#[test]
fn more_threads_than_connections_is_a_clean_error() {
    let stderr = serve_refuses(&[
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "8",
        "--max-conns",
        "4",
    ]);
    assert!(
        stderr.contains("8 threads need at least 8 connections"),
        "{stderr}"
    );
}
