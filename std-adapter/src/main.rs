//! `nbecho`: a non-blocking uppercase echo server (`serve`) and its client (`client`).
// A std crate by definition: the workspace's `core`-over-`std` lint is for no_std code.
#![allow(clippy::std_instead_of_core)]

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use nbecho_core::{Mode, MIN_BLOCK};
use nbecho_std::{bench, client, serve};

/// A non-blocking uppercase echo server, and its client.
#[derive(Debug, Parser)]
#[command(name = "nbecho", version, about, propagate_version = true)]
struct Cli {
    /// More log output (-v debug: one line per connection event; -vv trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings only; -qq errors only). RUST_LOG overrides both.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the echo server. SIGINT/SIGTERM drain it gracefully; a second one exits at once.
    Serve(ServeArgs),
    /// Connect to a server: prompts on a terminal, streams stdin to stdout otherwise.
    Client(ClientArgs),
    /// Load a server and verify every reply byte; print msgs/s, MB/s and latency.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8088", value_parser = parse_addr)]
    connect: SocketAddr,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    conns: u32,
    /// Bytes per message (sent lowercase, expected back uppercase).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=64 << 20))]
    size: u32,
    /// Seconds to run.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// `pingpong`: one message in flight per connection; `stream`: send continuously;
    /// `idle`: open the connections and hold them without traffic; `connect`: open a new
    /// connection for each message and time its first echo (every 10 ms per connection).
    #[arg(long, value_enum, default_value_t = BenchMode::Pingpong)]
    mode: BenchMode,
    /// Ping-pong at this many messages per second in total (latency is measured from when
    /// each message was due).
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// Add the server's CPU time per message, read from /proc/PID/stat.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Print the report as one JSON line.
    #[arg(long)]
    json: bool,
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
    /// Address to listen on (port 0 picks a free port; the real address is logged).
    #[arg(long, default_value = "127.0.0.1:8088", value_parser = parse_addr)]
    listen: SocketAddr,
    /// Connections held at once; more are accepted and closed at once (refused).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    max_conns: u32,
    /// Bytes of buffer per connection, lent while it holds data (16 B to 16 MiB).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(MIN_BLOCK as i64..=16 << 20))]
    buffer_size: u32,
    /// Buffers in the pool [default: --max-conns]; fewer means connections may wait for one.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    buffers: Option<u32>,
    /// Bytes of a large buffer, lent instead to a connection whose last read filled its
    /// buffer (bulk transfers: fewer, larger reads and writes); used only if larger than
    /// --buffer-size.
    #[arg(long, value_name = "BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(MIN_BLOCK as i64..=16 << 20))]
    large_buffer_size: u32,
    /// Large buffers in their pool [default: --max-conns / 16, at least 1]; 0 turns them off.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    large_buffers: Option<u32>,
    /// Seconds without progress before a connection is closed; 0 turns it off.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// Seconds a graceful shutdown may take before connections are forced closed (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    shutdown_timeout: u64,
    /// How connections are driven: `poll` tries every connection each pass (the textbook
    /// model), sleeping with a growing back-off while nothing happens; `epoll` tries only
    /// connections that epoll reports ready, and blocks while nothing is.
    #[arg(long, value_enum, default_value_t = DriverArg::Poll)]
    driver: DriverArg,
    /// Independent servers, one per thread, sharing the port with SO_REUSEPORT; --max-conns
    /// and --buffers are split between them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// `upper` echoes ASCII letters uppercased (like Python's bytes.upper()); `echo` as is.
    #[arg(long, value_enum, default_value_t = ModeArg::Upper)]
    mode: ModeArg,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8088", value_parser = parse_addr)]
    connect: SocketAddr,
    /// Prompt for messages even when stdin is not a terminal.
    #[arg(long)]
    interactive: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DriverArg {
    Poll,
    Epoll,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Upper,
    Echo,
}

/// `host:port`, resolved (so `localhost:8088` works); the first address is used.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("not an address (HOST:PORT): {e}"))?
        .next()
        .ok_or_else(|| format!("{s} resolves to no address"))
}

fn init_logging(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
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
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal sets `stop` (graceful); a second one finds it set and exits 1.
        // The shutdown must be registered first.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    let options = serve::Options {
        listen: args.listen,
        max_conns: args.max_conns as usize,
        buffer_size: args.buffer_size as usize,
        buffers: args.buffers.unwrap_or(args.max_conns) as usize,
        large_buffer_size: args.large_buffer_size as usize,
        large_buffers: args.large_buffers.unwrap_or((args.max_conns / 16).max(1)) as usize,
        idle_timeout: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        mode: match args.mode {
            ModeArg::Upper => Mode::Upper,
            ModeArg::Echo => Mode::Echo,
        },
        driver: match args.driver {
            DriverArg::Poll => serve::DriverKind::Poll,
            DriverArg::Epoll => serve::DriverKind::Epoll,
        },
        threads: args.threads as usize,
    };
    let outcome = serve::run(&options, &stop, |_| {}).map_err(|e| e.to_string())?;
    if outcome.is_clean() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "nbecho: shutdown deadline passed: {} connection(s) force-closed",
            outcome.stats.forced
        );
        Ok(ExitCode::FAILURE)
    }
}

fn run_client(args: ClientArgs) -> Result<ExitCode, String> {
    let stream = client::connect(args.connect).map_err(|e| e.to_string())?;
    let stdin = std::io::stdin();
    if args.interactive || stdin.is_terminal() {
        client::interactive(stream, stdin.lock(), std::io::stdout().lock())
    } else {
        client::pipe(stream, stdin, std::io::stdout().lock()).map(|_| ())
    }
    .map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

fn run_bench(args: BenchArgs) -> Result<ExitCode, String> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0) {
        return Err(format!(
            "--duration must be between 0 and 86400 seconds, not {}",
            args.duration
        ));
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number of messages per second".into());
    }
    let options = bench::Options {
        connect: args.connect,
        conns: args.conns as usize,
        size: args.size as usize,
        duration: Duration::from_secs_f64(args.duration),
        mode: match args.mode {
            BenchMode::Pingpong => bench::Mode::PingPong,
            BenchMode::Stream => bench::Mode::Stream,
            BenchMode::Idle => bench::Mode::Idle,
            BenchMode::Connect => bench::Mode::Connect,
        },
        rate: args.rate,
        server_pid: args.server_pid,
        progress: !args.json,
    };
    let report = bench::run(&options).map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    let nothing = report.messages == 0 && options.mode != bench::Mode::Idle;
    if report.mismatches > 0 || report.errors > 0 || nothing {
        eprintln!(
            "nbecho: bench failed: {} mismatched bytes, {} failed connections{}",
            report.mismatches,
            report.errors,
            if nothing {
                ", no message completed"
            } else {
                ""
            }
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
