//! Helpers shared by the end-to-end tests: a `nbecho serve` process on a free loopback
//! port, deterministic payloads, and an echo client.
#![allow(dead_code)] // each test file uses its own subset

/// Defines `$name::poll`, `$name::epoll`, `$name::uring` and `$name::uring_wait`: the
/// same test body once per driver of `serve`'s own loop, with `$driver` bound to the
/// driver's `--driver` value (`uring_wait`: the io_uring driver whose reads wait in the
/// kernel for data, `--driver uring --read-wait 10ms`, which [`Server::start`] spells
/// out). Where io_uring is unavailable the `uring` tests say they were skipped and pass.
macro_rules! both_drivers {
    ($($(#[$attr:meta])* fn $name:ident($driver:ident) $body:block)*) => {$(
        per_driver!([poll epoll uring uring_wait] $(#[$attr])* fn $name($driver) $body);
    )*};
}

/// [`both_drivers`], and `$name::tokio` too.
#[allow(unused_macros)] // not every test file has tests for all of them
macro_rules! all_drivers {
    ($($(#[$attr:meta])* fn $name:ident($driver:ident) $body:block)*) => {$(
        per_driver!([poll epoll tokio uring uring_wait] $(#[$attr])* fn $name($driver) $body);
    )*};
}

/// One module per test, one `#[test]` in it per driver listed.
macro_rules! per_driver {
    ([$($drv:ident)*] $(#[$attr:meta])* fn $name:ident($driver:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($driver: &'static str) $body

            per_driver!(@tests [$($drv)*] [$(#[$attr])*]);
        }
    };
    (@tests [$($drv:ident)*] $attrs:tt) => {
        $(per_driver!(@test $drv $attrs);)*
    };
    (@test $drv:ident [$(#[$attr:meta])*]) => {
        #[test]
        $(#[$attr])*
        fn $drv() {
            if $crate::common::skipped(stringify!($drv)) {
                return;
            }
            body(stringify!($drv))
        }
    };
}

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// True (and says so) when `driver` cannot run on this machine: `uring` without a usable
/// io_uring (an old kernel, `kernel.io_uring_disabled`, a seccomp filter).
pub(crate) fn skipped(driver: &str) -> bool {
    // Asked once, on a thread of its own: a ring's teardown queues work on the thread that
    // made it, which would interrupt (EINTR) that thread's next read with a timeout.
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        std::thread::spawn(nbecho_std::uring::is_available)
            .join()
            .unwrap_or(false)
    });
    if driver.starts_with("uring") && !available {
        eprintln!(
            "skipped: io_uring is unavailable here (the server would say to use --driver epoll)"
        );
        return true;
    }
    false
}

/// All a finished child wrote to its piped stderr.
pub(crate) fn stderr_of(child: &mut Child) -> String {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .expect("stderr is UTF-8");
    stderr
}

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_nbecho");
pub(crate) const LIMIT: Duration = Duration::from_secs(20);

/// A running `nbecho serve` on a free loopback port, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<String>>,
}

impl Server {
    #[track_caller]
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_command(Command::new(BIN), args)
    }

    /// Starts the server with at most `files` open file descriptors (`ulimit -n`).
    #[track_caller]
    pub(crate) fn start_with_fd_limit(files: u32, args: &[&str]) -> Self {
        let mut shell = Command::new("sh");
        shell.args([
            "-c",
            &format!("ulimit -n {files} && exec \"$0\" \"$@\""),
            BIN,
        ]);
        Self::start_command(shell, args)
    }

    /// Starts `command serve --listen 127.0.0.1:0 ARGS` (without the `--listen` when ARGS
    /// have their own; the driver `uring_wait` is `uring --read-wait 10ms`).
    #[track_caller]
    pub(crate) fn start_command(mut command: Command, args: &[&str]) -> Self {
        command.arg("serve");
        if !args.iter().any(|a| matches!(*a, "--listen" | "-l")) {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if args.contains(&"uring_wait") {
            command.args(["--read-wait", "10ms"]);
        }
        let args = args
            .iter()
            .map(|&a| if a == "uring_wait" { "uring" } else { a });
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nbecho serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged first, so that the log holds the line once the address is known.
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.parse::<SocketAddr>().expect("logged address"));
                }
            }
        });
        let addr = rx
            .recv_timeout(LIMIT)
            .expect("server did not log its address");
        Self { child, addr, log }
    }

    pub(crate) fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        stream.set_write_timeout(Some(LIMIT)).unwrap();
        stream
    }

    /// Resident memory of the server process, in KiB (from /proc).
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// CPU time the server has used so far, all threads.
    pub(crate) fn cpu_time(&self) -> Duration {
        nbecho_std::bench::process_cpu(self.child.id()).unwrap()
    }

    /// True while the process runs.
    pub(crate) fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The log so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself.
    #[track_caller]
    pub(crate) fn wait(mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the stderr reader catch up with the last lines.
                thread::sleep(Duration::from_millis(100));
                return (status, self.log.lock().unwrap().clone());
            }
            assert!(
                start.elapsed() < LIMIT,
                "server did not exit: {}",
                self.log.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The number after `name=` in the final stats line.
    pub(crate) fn stat(log: &str, name: &str) -> u64 {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("stopped"))
            .expect("stats line");
        let mut tokens = line.split([' ', '=']);
        tokens
            .find(|&t| t == name)
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        tokens
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad {name} in {line}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's `bytes.upper()`.
pub(crate) fn upper(data: &[u8]) -> Vec<u8> {
    data.iter().map(u8::to_ascii_uppercase).collect()
}

/// Deterministic bytes covering every value, lowercase letters included.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `data` from a thread (so neither side's buffers can deadlock us), half-closes,
/// and reads the reply to end-of-stream.
pub(crate) fn try_echo(stream: TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let data = data.to_vec();
    let sender = thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&data)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut reply = Vec::new();
    let mut reader = stream;
    let read = reader.read_to_end(&mut reply);
    sender.join().unwrap()?;
    read.map(|_| reply)
}

#[track_caller]
pub(crate) fn echo(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    try_echo(stream, data).expect("echo")
}

/// Starts `nbecho ARGS` with its stdin, stdout and stderr piped to the test.
pub(crate) fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nbecho")
}

pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn(args);
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    output
}

/// Writes with single `write` calls until the peer stops taking bytes for `stall` (its
/// buffers and ours are full) or `max` bytes are sent; returns how many were sent.
pub(crate) fn write_until_stalled(stream: &mut TcpStream, data: &[u8], stall: Duration) -> usize {
    stream.set_write_timeout(Some(stall)).unwrap();
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..(sent + 65_536).min(data.len())]) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    sent
}
