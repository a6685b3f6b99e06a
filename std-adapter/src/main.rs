//! `nbecho`: a non-blocking uppercase echo server (`serve`) and its client (`client`).
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use nbecho_core::MIN_BLOCK;
use nbecho_std::args::{parse_addr, parse_duration, parse_positive_duration, parse_size_in};
use nbecho_std::{bench, client, serve};

/// The textbook non-blocking echo server, done right: it echoes what it reads, uppercased
/// (ASCII, like Python's bytes.upper()), over non-blocking sockets driven by a sans-IO core.
#[derive(Debug, Parser)]
#[command(
    name = "nbecho",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = EXIT_CODES
)]
struct Cli {
    /// More log output (-v debug: one line per connection event; -vv trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings only; -qq errors only). RUST_LOG overrides both.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    /// Colored log output: `auto` (on a terminal, unless NO_COLOR is set), `always`, `never`.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorArg::Auto, global = true)]
    color: ColorArg,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success (serve: a graceful stop with every connection finished)
  1  failure: cannot listen or connect, a bench that saw errors or wrong bytes, a stop
     that left replies undelivered (connections force-closed at its deadline)
  2  bad command line";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the echo server. SIGINT/SIGTERM drain it gracefully; a second one exits at once.
    #[command(after_help = "\
Examples:
  nbecho serve                          on 127.0.0.1:8088
  nbecho serve -l 9000 --driver epoll   on 127.0.0.1:9000, epoll readiness
  nbecho serve --driver uring           io_uring: batched reads and writes
  nbecho serve -l 0.0.0.0:8088 -n 10000 --idle-timeout 30s
  NBECHO_THREADS=2 nbecho serve")]
    Serve(ServeArgs),
    /// Connect to a server: prompts on a terminal, streams stdin to stdout otherwise.
    #[command(after_help = "\
Examples:
  nbecho client                         to 127.0.0.1:8088, prompting msg>>:
  nbecho client :9000
  printf 'hello\\n' | nbecho client localhost:8088")]
    Client(ClientArgs),
    /// Load a server and verify every reply byte; print msgs/s, MB/s and latency.
    #[command(after_help = "\
Examples:
  nbecho bench -c 64 -s 1K -d 10        64 connections, 1 KiB messages, 10 s
  nbecho bench --mode stream -s 64K     throughput
  nbecho bench --rate 5000 -c 50        fixed rate; latency from each message's due time
  nbecho bench --server-pid $(pidof nbecho) --json")]
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Server address: PORT, :PORT or HOST:PORT.
    #[arg(value_name = "ADDR", value_parser = parse_addr, conflicts_with = "connect")]
    addr: Option<SocketAddr>,
    /// Server address (the same as ADDR).
    #[arg(long, value_name = "ADDR", env = "NBECHO_CONNECT", value_parser = parse_addr)]
    connect: Option<SocketAddr>,
    /// Concurrent connections.
    #[arg(short, long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    conns: u32,
    /// Bytes per message (sent lowercase, expected back uppercase): 64, 1K, 64K, ...
    #[arg(short, long, value_name = "BYTES", default_value = "64", value_parser = message_size)]
    size: u64,
    /// How long to run: 10, 0.5, 90s, 2m, ...
    #[arg(short, long, value_name = "DURATION", default_value = "10", value_parser = parse_positive_duration)]
    duration: Duration,
    /// `pingpong`: one message in flight per connection; `stream`: send continuously;
    /// `idle`: open the connections and hold them without traffic; `connect`: open a new
    /// connection for each message and time its first echo (every 10 ms per connection).
    #[arg(short, long, value_enum, default_value_t = BenchMode::Pingpong)]
    mode: BenchMode,
    /// Ping-pong at this many messages per second in total (latency is measured from when
    /// each message was due).
    #[arg(short, long, value_name = "MSGS_PER_S", value_parser = positive_rate)]
    rate: Option<f64>,
    /// What each reply byte must be: `upper` (ASCII uppercase of what was sent, like
    /// `nbecho serve`) or `echo` (as sent, like `nbecho serve --mode echo`).
    #[arg(short, long, value_enum, default_value_t = ExpectArg::Upper)]
    expect: ExpectArg,
    /// Add the server's CPU time per message, read from /proc/PID (for example
    /// `$(pidof nbecho)`).
    #[arg(long, value_name = "PID", value_parser = running_pid)]
    server_pid: Option<u32>,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExpectArg {
    Upper,
    Echo,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchMode {
    Pingpong,
    Stream,
    Idle,
    Connect,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on: PORT, :PORT (both on 127.0.0.1) or HOST:PORT; port 0 picks a
    /// free port (the real address is logged).
    #[arg(short, long, value_name = "ADDR", env = "NBECHO_LISTEN", default_value = "127.0.0.1:8088", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Connections held at once; more are accepted and closed at once (refused).
    #[arg(short = 'n', long, value_name = "N", env = "NBECHO_MAX_CONNS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    max_conns: u32,
    /// Bytes of buffer per connection, lent while it holds data (16 B to 16 MiB): 4096, 4K, ...
    #[arg(short, long, value_name = "BYTES", default_value = "4K", value_parser = buffer_size)]
    buffer_size: u64,
    /// Buffers in the pool [default: --max-conns]; fewer means connections may wait for one.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    buffers: Option<u32>,
    /// Bytes of a large buffer, lent instead to a connection whose last read filled its
    /// buffer (bulk transfers: fewer, larger reads and writes); used only if larger than
    /// --buffer-size.
    #[arg(long, value_name = "BYTES", default_value = "64K", value_parser = buffer_size)]
    large_buffer_size: u64,
    /// Large buffers in their pool [default: --max-conns / 16, at least 1]; 0 turns them off.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    large_buffers: Option<u32>,
    /// Close connections that make no progress this long (0 turns it off): 300, 1.5, 90s, 5m, ...
    #[arg(short, long, value_name = "DURATION", env = "NBECHO_IDLE_TIMEOUT", default_value = "300", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// How long a graceful stop may take: a connection closes as soon as its replies are
    /// acknowledged; any still owed bytes at this deadline is force-closed (exit 1).
    #[arg(long, value_name = "DURATION", default_value = "5", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// `--driver uring`: after a read that brought data, the connection's next read waits
    /// in the kernel for more (no readiness round trip: 2 `io_uring_enter` per message of
    /// a lone request-response connection instead of 3), holding its buffer for at most
    /// this long, or until a connection without one needs it. Off (0) by default: on
    /// Linux 6.18 it did not reliably lower server CPU or latency per message
    /// (BENCHMARKS.md).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    read_wait: Duration,
    /// How connections are driven: `poll` tries every connection each pass (the textbook
    /// model), sleeping with a growing back-off while nothing happens; `epoll` tries only
    /// connections that epoll reports ready, and blocks while nothing is; `tokio` runs the
    /// core in a tokio task, readiness from tokio's reactor; `uring` submits the reads and
    /// writes of all ready connections to io_uring at once (Linux 6.0 or later).
    #[arg(short, long, value_enum, env = "NBECHO_DRIVER", default_value_t = DriverArg::Poll)]
    driver: DriverArg,
    /// Independent servers, one per thread, sharing the port with SO_REUSEPORT; --max-conns
    /// and --buffers are split between them.
    #[arg(short, long, value_name = "N", env = "NBECHO_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// `upper` echoes ASCII letters uppercased (like Python's bytes.upper()); `echo` as is;
    /// `lines` numbers each connection's lines (`1: first line`) and says `bye` and closes
    /// on a line `quit` (the core's Service API, not a byte-for-byte echo).
    #[arg(short, long, value_enum, env = "NBECHO_MODE", default_value_t = ModeArg::Upper)]
    mode: ModeArg,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Server address: PORT, :PORT or HOST:PORT [default: 127.0.0.1:8088].
    #[arg(value_name = "ADDR", value_parser = parse_addr, conflicts_with = "connect")]
    addr: Option<SocketAddr>,
    /// Server address (the same as ADDR).
    #[arg(long, value_name = "ADDR", env = "NBECHO_CONNECT", value_parser = parse_addr)]
    connect: Option<SocketAddr>,
    /// Prompt for messages even when stdin is not a terminal.
    #[arg(short, long)]
    interactive: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DriverArg {
    Poll,
    Epoll,
    Tokio,
    Uring,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Upper,
    Echo,
    Lines,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ColorArg {
    Auto,
    Always,
    Never,
}

/// Where `client` and `bench` connect without an address.
const DEFAULT_SERVER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8088);

fn buffer_size(s: &str) -> Result<u64, String> {
    parse_size_in(s, MIN_BLOCK as u64, 16 << 20)
}

fn message_size(s: &str) -> Result<u64, String> {
    parse_size_in(s, 1, 64 << 20)
}

fn running_pid(s: &str) -> Result<u32, String> {
    let pid: u32 = s.parse().map_err(|_| format!("{s} is not a process id"))?;
    if std::path::Path::new(&format!("/proc/{pid}")).exists() {
        Ok(pid)
    } else {
        Err(format!("no process {pid} is running"))
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s} is not a positive number of messages per second"
        )),
    }
}

/// The log filter: RUST_LOG if it is set and valid, else the level of -v/-q; a warning
/// says when RUST_LOG was not usable.
fn log_filter(level: &str) -> (tracing_subscriber::EnvFilter, Option<String>) {
    let fallback = || tracing_subscriber::EnvFilter::new(level);
    let Some(value) = std::env::var_os("RUST_LOG") else {
        return (fallback(), None);
    };
    let value = value.to_string_lossy().into_owned();
    // A directive is a level, `target`, or `target=level`; the filter parser takes almost
    // anything as a target name, which would silently filter everything out.
    let plausible = |d: &str| {
        let target = d.split('=').next().unwrap_or_default();
        !target.is_empty()
            && target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'))
    };
    let valid = !value.trim().is_empty() && value.split(',').all(|d| plausible(d.trim()));
    match tracing_subscriber::EnvFilter::builder().parse(&value) {
        Ok(filter) if valid => (filter, None),
        _ => (
            fallback(),
            Some(format!(
                "RUST_LOG={value:?} is not a valid filter (for example info, or nbecho_std=debug); using {level}"
            )),
        ),
    }
}

fn init_logging(verbose: u8, quiet: u8, color: ColorArg) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let (filter, warning) = log_filter(level);
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = match color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => !no_color && std::io::stderr().is_terminal(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet, cli.color);
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Client(args) => run_client(args),
        Command::Bench(args) => run_bench(args),
    };
    result.unwrap_or_else(|message| {
        eprintln!("nbecho: {message}");
        ExitCode::FAILURE
    })
}

fn run_serve(args: ServeArgs) -> Result<ExitCode, String> {
    // SIGINT and SIGTERM are caught by the server itself: the first stops it gracefully,
    // a second at once. Nothing else asks it to stop.
    let stop = AtomicBool::new(false);
    let mut limits = serve::Limits::default();
    limits.max_conns = args.max_conns as usize;
    limits.buffer_size = args.buffer_size as usize;
    limits.buffers = args.buffers.unwrap_or(args.max_conns) as usize;
    limits.large_buffer_size = args.large_buffer_size as usize;
    limits.large_buffers = args.large_buffers.unwrap_or((args.max_conns / 16).max(1)) as usize;
    limits.idle_timeout = (!args.idle_timeout.is_zero()).then_some(args.idle_timeout);
    limits.shutdown_timeout = args.shutdown_timeout;
    let options = serve::Options {
        listen: args.listen,
        limits,
        read_wait: (!args.read_wait.is_zero()).then_some(args.read_wait),
        mode: match args.mode {
            ModeArg::Upper => serve::Protocol::Upper,
            ModeArg::Echo => serve::Protocol::Echo,
            ModeArg::Lines => serve::Protocol::Lines,
        },
        driver: match args.driver {
            DriverArg::Poll => serve::DriverKind::Poll,
            DriverArg::Epoll => serve::DriverKind::Epoll,
            DriverArg::Tokio => serve::DriverKind::Tokio,
            DriverArg::Uring => serve::DriverKind::Uring,
        },
        threads: args.threads as usize,
    };
    let outcome = serve::run(&options, &stop, |_| {}).map_err(|e| e.to_string())?;
    let stats = outcome.stats;
    if outcome.is_clean() {
        Ok(ExitCode::SUCCESS)
    } else if outcome.stopped_at_once {
        eprintln!(
            "nbecho: stopped by a second signal: {} connection(s) force-closed, {} byte(s) read \
             and not echoed, {} byte(s) sent and not acknowledged",
            stats.forced, stats.bytes_dropped, stats.bytes_unacked
        );
        Ok(ExitCode::FAILURE)
    } else {
        eprintln!(
            "nbecho: shutdown deadline passed: {} connection(s) force-closed with replies \
             undelivered: {} byte(s) read and not echoed, {} byte(s) sent and not acknowledged",
            stats.forced, stats.bytes_dropped, stats.bytes_unacked
        );
        Ok(ExitCode::FAILURE)
    }
}

fn run_client(args: ClientArgs) -> Result<ExitCode, String> {
    let addr = args.addr.or(args.connect).unwrap_or(DEFAULT_SERVER);
    let stream = client::connect(addr).map_err(|e| e.to_string())?;
    let stdin = std::io::stdin();
    if args.interactive || stdin.is_terminal() {
        // The terminal's settings, to put back if we exit in the middle of a line edit.
        let terminal = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
        let restore = move || {
            if let Some(settings) = &terminal {
                let _ = nix::sys::termios::tcsetattr(
                    std::io::stdin(),
                    nix::sys::termios::SetArg::TCSANOW,
                    settings,
                );
            }
        };
        // Ctrl-C while a reply is awaited ends the line cleanly: a line end, then exit
        // 130, as a shell reports SIGINT. (At the prompt the line editor sees it.)
        let mut interrupts = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])
            .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
        let interrupted = restore.clone();
        std::thread::spawn(move || {
            if interrupts.forever().next().is_some() {
                interrupted();
                println!();
                std::process::exit(130);
            }
        });
        // The server went away while we wait for input: say so now, not at the next line.
        let on_lost = move |e: &client::Error| {
            restore();
            println!();
            eprintln!("nbecho: {e}");
            std::process::exit(1);
        };
        let output = std::io::stdout();
        let talked = if stdin.is_terminal() {
            let lines = Editing::new().map_err(|e| format!("cannot set up the terminal: {e}"))?;
            client::interactive(stream, lines, output, on_lost)
        } else {
            client::interactive(stream, client::Plain(stdin.lock()), output, on_lost)
        };
        match talked {
            Err(client::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                // Ctrl-C at the prompt: the line editor has ended the line.
                return Ok(ExitCode::from(130));
            }
            other => other.map_err(|e| e.to_string())?,
        }
    } else {
        match client::pipe(stream, stdin, std::io::stdout().lock()) {
            // Our reader went away (`... | head -1`): end quietly, as `cat` does, by the
            // signal a broken pipe raises by default.
            Err(client::Error::OutputClosed) => {
                let _ =
                    signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
                return Ok(ExitCode::from(141));
            }
            other => {
                other.map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The interactive client's lines on a terminal: rustyline's line editing (arrows, Home,
/// End, Ctrl-A/E/K/U/W, ...) and the session's history (up and down), with no limit on the
/// length of a line.
struct Editing {
    editor: rustyline::DefaultEditor,
    prompt: String,
}

impl Editing {
    fn new() -> rustyline::Result<Self> {
        // No bracketed paste: it is a terminal mode that would stay on if the client exits
        // in the middle of an edit (the server went away); a pasted block is then sent
        // line by line, as typed lines are.
        let config = rustyline::Config::builder().bracketed_paste(false).build();
        Ok(Self {
            editor: rustyline::DefaultEditor::with_config(config)?,
            prompt: String::new(),
        })
    }
}

impl client::Lines for Editing {
    fn prompt(&mut self, prompt: &str, _: &mut dyn std::io::Write) -> std::io::Result<()> {
        prompt.clone_into(&mut self.prompt);
        Ok(())
    }

    fn read_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        use rustyline::error::ReadlineError;
        match self.editor.readline(&self.prompt) {
            Ok(line) => {
                if !line.is_empty() {
                    let _ = self.editor.add_history_entry(line.as_str());
                }
                Ok(Some(line.into_bytes()))
            }
            Err(ReadlineError::Eof) => Ok(None),
            Err(ReadlineError::Interrupted) => Err(std::io::ErrorKind::Interrupted.into()),
            Err(ReadlineError::Io(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    fn ended(&mut self, _: &mut dyn std::io::Write) -> std::io::Result<()> {
        Ok(()) // rustyline ended the line at Ctrl-D
    }
}

fn run_bench(args: BenchArgs) -> Result<ExitCode, String> {
    let options = bench::Options {
        connect: args.addr.or(args.connect).unwrap_or(DEFAULT_SERVER),
        conns: args.conns as usize,
        size: args.size as usize,
        duration: args.duration,
        mode: match args.mode {
            BenchMode::Pingpong => bench::Mode::PingPong,
            BenchMode::Stream => bench::Mode::Stream,
            BenchMode::Idle => bench::Mode::Idle,
            BenchMode::Connect => bench::Mode::Connect,
        },
        rate: args.rate,
        server_pid: args.server_pid,
        progress: !args.json,
        expect: match args.expect {
            ExpectArg::Upper => bench::Expect::Upper,
            ExpectArg::Echo => bench::Expect::Echo,
        },
    };
    let report = bench::run(&options).map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    let nothing = report.messages == 0 && options.mode != bench::Mode::Idle;
    let short = report.connected < options.conns;
    if report.mismatches > 0 || report.errors > 0 || nothing || short {
        let mut why = Vec::new();
        if report.mismatches > 0 {
            why.push(format!(
                "{} reply bytes were not what --expect {} says",
                report.mismatches,
                match args.expect {
                    ExpectArg::Upper => "upper",
                    ExpectArg::Echo => "echo",
                }
            ));
        }
        if report.errors > 0 {
            why.push(format!("{} connections failed", report.errors));
        }
        if short {
            why.push(format!(
                "only {} of {} connections were made before --duration ran out",
                report.connected, options.conns
            ));
        }
        if nothing {
            why.push("no message completed".into());
        }
        eprintln!("nbecho: bench failed: {}", why.join("; "));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
