//! The portable async driver on tokio: an uppercasing echo server on 127.0.0.1:8088 (or
//! the address given), stopped gracefully by Ctrl-C.
//!
//! `cargo run -p nbecho-async --features tokio --example async_tokio_echo`

use nbecho_async::tokio::{Clock, Listener};
use nbecho_async::{serve, Conn, Cx, Listen, Wakers};
use nbecho_core::{Config, Driver, Duration, Scheduling, Server, Slot, Storage, Uppercase};

const CONNS: usize = 1024;
static WAKERS: Wakers<CONNS> = Wakers::new();

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn core::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:8088".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);

    let mut slots = vec![Slot::EMPTY; CONNS];
    let mut arena = vec![0u8; 256 * 4096];
    let storage = Storage::new(&mut slots, &mut arena, 4096)?;
    let mut config = Config::default();
    config.scheduling = Scheduling::Readiness;
    let server = Server::new(config, storage, Uppercase);
    let mut streams: Vec<Option<Conn<_>>> = (0..CONNS).map(|_| None).collect();
    let mut driver = Driver::new(server, Listen(Listener(listener)), &mut streams)?;

    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let mut io = (); // the streams own everything: no context
    let mut cx = Cx::new(&WAKERS, &mut io);
    let grace = Duration::from_secs(5);
    let stats = serve(&mut driver, &mut cx, Clock::new(), stop, grace).await?;
    println!("{stats}");
    Ok(())
}
