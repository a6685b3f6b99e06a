//! The interactive client on a real (pseudo-)terminal, as a user meets it: the prompt,
//! line editing and history, a server that stops or refuses while the prompt waits,
//! Ctrl-C and Ctrl-D, and the terminal's settings put back whatever the way out.
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, BIN, LIMIT};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags};

/// `nbecho client ADDR` with a pseudo-terminal as its stdin, stdout and stderr.
struct Terminal {
    child: Child,
    /// The terminal's side, kept to read its settings after the client exits.
    tty: OwnedFd,
    /// Our side: what we type.
    keyboard: File,
    /// Everything the client showed, escape sequences included.
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    fn open(addr: &str) -> Self {
        let size = Winsize {
            ws_row: 24,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None).expect("openpty");
        let tty = pty.slave;
        let stdio = || Stdio::from(tty.try_clone().unwrap());
        let child = Command::new(BIN)
            .args(["client", addr])
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .expect("spawn nbecho client");
        let keyboard = File::from(pty.master);
        let mut display = keyboard.try_clone().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let shown = Arc::clone(&screen);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends when the terminal closes (EIO), or with the test.
            while let Ok(n @ 1..) = display.read(&mut buf) {
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            tty,
            keyboard,
            screen,
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the screen shows `text` `times` times.
    #[track_caller]
    fn expect(&self, text: &str, times: usize) {
        let start = Instant::now();
        while self.screen().matches(text).count() < times {
            assert!(
                start.elapsed() < LIMIT,
                "{text:?} not shown {times} time(s); the screen: {:?}",
                self.screen()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.keyboard.write_all(keys).unwrap();
    }

    /// Waits for the client to exit, at most `within`.
    #[track_caller]
    fn exit(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the screen's reader catch up with the last bytes.
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("the client did not exit; the screen: {:?}", self.screen());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The terminal is back in its usual mode: lines, and what is typed is shown.
    #[track_caller]
    fn assert_restored(&self) {
        let settings = tcgetattr(&self.tty).unwrap();
        assert!(
            settings
                .local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO),
            "the terminal was left raw: {:?}",
            settings.local_flags
        );
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lines_can_be_edited_and_recalled_and_ctrl_d_ends() {
    let server = Server::start(&[]);
    let mut term = Terminal::open(&server.addr.to_string());
    term.expect("msg>>: ", 1);
    // "abc", two steps left, "X": the line sent is "aXbc", not what the arrows' escape
    // sequences would make of it.
    term.type_keys(b"abc\x1b[D\x1b[DX\r");
    term.expect("AXBC", 1);
    term.expect("msg>>: ", 2);
    // Up: the last line again.
    term.type_keys(b"\x1b[A\r");
    term.expect("AXBC", 2);
    // A line longer than a terminal's line limit (4095 in canonical mode) goes whole.
    term.expect("msg>>: ", 3);
    let long = vec![b'q'; 5000];
    term.type_keys(&long);
    term.type_keys(b"\r");
    term.expect(&"Q".repeat(5000), 1);
    // Ctrl-D on an empty line: end of input, exit 0.
    term.expect("msg>>: ", 4);
    term.type_keys(b"\x04");
    let status = term.exit(LIMIT);
    assert!(status.success(), "{status}: {:?}", term.screen());
    // The prompt's line ended once, no empty line after it.
    let screen = term.screen();
    assert!(
        screen.ends_with('\n') && !screen.ends_with("\n\r\n"),
        "{screen:?}"
    );
    term.assert_restored();
}

#[test]
fn ctrl_c_at_the_prompt_ends_the_line_and_exits_130() {
    let server = Server::start(&[]);
    let mut term = Terminal::open(&server.addr.to_string());
    term.expect("msg>>: ", 1);
    term.type_keys(b"half a line\x03");
    let status = term.exit(LIMIT);
    assert_eq!(status.code(), Some(130), "{:?}", term.screen());
    term.assert_restored();
    // The half line was not sent: nothing came back; the shell's prompt that follows
    // starts on a line of its own.
    let screen = term.screen();
    assert!(!screen.contains("HALF"), "{screen:?}");
    assert!(screen.ends_with('\n'), "{screen:?}");
}

#[test]
fn a_server_stop_at_the_prompt_is_reported_at_once() {
    let server = Server::start(&[]);
    let mut term = Terminal::open(&server.addr.to_string());
    term.type_keys(b"hello\r");
    term.expect("HELLO", 1);
    term.expect("msg>>: ", 2);
    // Half a line typed, then the server stops.
    term.type_keys(b"unsent");
    term.expect("unsent", 1);
    server.signal("TERM");
    let status = term.exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(1), "{:?}", term.screen());
    term.expect("nbecho: the server closed the connection", 1);
    term.assert_restored();
    // No terminal mode left on that the terminal's settings do not show.
    assert!(
        !term.screen().contains("\x1b[?2004h"),
        "bracketed paste left on"
    );
    let (status, log) = server.wait();
    assert!(status.success(), "{log}");
}

#[test]
fn a_refusal_is_reported_without_any_input() {
    let server = Server::start(&["--max-conns", "1"]);
    let mut held = server.connect();
    held.write_all(b"hi").unwrap();
    let mut reply = [0u8; 2];
    held.read_exact(&mut reply).unwrap();
    let mut term = Terminal::open(&server.addr.to_string());
    let status = term.exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(1), "{:?}", term.screen());
    term.expect("nbecho: the server closed the connection", 1);
    term.assert_restored();
    drop(held);
}
